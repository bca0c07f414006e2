//! A dated or decorated name resolves the same whether or not the thread has
//! resolved it before: the resolved-name cache answers what the candidate walk
//! would, at every time, on every table, on every thread.

use chrono::{DateTime, Utc};
use routero_core::price::LookupError;
use routero_core::price::file;
use routero_core::{PriceTable, Provider};

fn at(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text).unwrap().to_utc()
}

const TABLE: &str = r#"
format = 1
version = "resolution-test"
currency = "USD"

[[model]]
provider = "openai"
name = "base"
input = "1"
output = "2"

# A dated name with a price of its own only from 2026-11-15.
[[model]]
provider = "openai"
name = "base-2026-11-01"
effective_from = "2026-11-15T00:00:00Z"
input = "5"
output = "6"

# Only under a fallback provider.
[[model]]
provider = "anthropic"
name = "elsewhere"
input = "3"
output = "4"
"#;

fn table() -> PriceTable {
    file::parse(TABLE).unwrap()
}

/// The model that priced `name` at `time`, or the error's kind.
fn priced(table: &PriceTable, provider: &Provider, name: &str, time: &str) -> String {
    match table.lookup(provider, name, at(time)) {
        Ok(price) => format!("{}/{}", price.provider(), price.model()),
        Err(LookupError::UnknownModel { .. }) => "unknown".to_owned(),
        Err(LookupError::NoPriceInForce { .. }) => "not in force".to_owned(),
        Err(e) => format!("{e}"),
    }
}

/// Looks up each (name under OpenAI, time, what must price it), in order.
fn check(table: &PriceTable, cases: &[(&str, &str, &str)]) {
    for (name, time, want) in cases {
        assert_eq!(
            priced(table, &Provider::OpenAi, name, time),
            *want,
            "{name} at {time}"
        );
    }
}

const NOW: &str = "2026-11-28T00:00:00Z";
/// Before the dated model's own price starts, and after.
const BEFORE: &str = "2026-11-02T00:00:00Z";
const AFTER: &str = "2026-11-20T00:00:00Z";

#[test]
fn a_dated_name_resolves_to_its_base_again_and_again() {
    let table = table();
    for _ in 0..3 {
        check(
            &table,
            &[
                ("base-2024-08-06", NOW, "openai/base"),
                ("openai/base-latest", NOW, "openai/base"),
                ("nothing-2024-08-06", NOW, "unknown"),
            ],
        );
    }
}

#[test]
fn a_resolution_that_depends_on_the_time_is_never_reused_at_another() {
    let table = table();
    let dated = "openai/base-2026-11-01";
    for _ in 0..3 {
        // Before its own price starts, the dated name falls back to the base; after,
        // it has its own; in either order, as often as asked.
        check(
            &table,
            &[
                ("base-2026-11-01", BEFORE, "openai/base"),
                ("base-2026-11-01", AFTER, dated),
            ],
        );
        // A decorated form of it, resolved to the base before its own price starts,
        // is not resolved to the base after; another, resolved after, is not reused
        // before.
        check(
            &table,
            &[
                ("v1/base-2026-11-01", BEFORE, "openai/base"),
                ("v1/base-2026-11-01", AFTER, dated),
                ("openai/base-2026-11-01", AFTER, dated),
                ("openai/base-2026-11-01", BEFORE, "openai/base"),
            ],
        );
    }
}

#[test]
fn a_changed_table_resolves_afresh() {
    let mut table = table();
    table.add_fallback(Provider::OpenAi, Provider::Anthropic);
    assert_eq!(
        priced(&table, &Provider::OpenAi, "elsewhere-20250101", NOW),
        "anthropic/elsewhere"
    );
    // The same name, now priced under the provider asked: the new entry wins.
    let own = file::parse(
        r#"
format = 1
version = "own"
currency = "USD"
[[model]]
provider = "openai"
name = "elsewhere"
input = "7"
output = "8"
"#,
    )
    .unwrap();
    let changed = table.with_overrides(&own).unwrap();
    let elsewhere =
        |table: &PriceTable| priced(table, &Provider::OpenAi, "elsewhere-20250101", NOW);
    assert_eq!(elsewhere(&changed), "openai/elsewhere");
    // And the old table still answers as before, on this thread and on another.
    assert_eq!(elsewhere(&table), "anthropic/elsewhere");
    std::thread::scope(|s| {
        s.spawn(|| {
            assert_eq!(elsewhere(&changed), "openai/elsewhere");
        });
    });
    let mut aliased = changed.clone();
    aliased.add_alias(Provider::OpenAi, "elsewhere", Provider::OpenAi, "base");
    assert_eq!(elsewhere(&aliased), "openai/base");
}
