//! Properties of the cost engine: additivity, monotonicity, exact tier switches.

use chrono::{DateTime, Utc};
use proptest::prelude::*;
use routero_core::price::file;
use routero_core::{PriceTable, Provider, Usage};
use rust_decimal::Decimal;

const THRESHOLD: u64 = 200_000;

fn table() -> PriceTable {
    file::parse(
        r#"
format = 1
version = "prop"
currency = "USD"
[[model]]
provider = "anthropic"
name = "m"
input = "3"
cache_read = "0.3"
cache_write_5m = "3.75"
cache_write_1h = "6"
output = "15"
reasoning = "15"
audio_input = "9"
image_input = "3"
audio_output = "30"
image_output = "40"
[model.fees]
web_search = "0.01"
image = "0.04"
[[model.above]]
tokens = 200000
input = "6"
output = "22.5"
audio_output = "45"
image_output = "60"
"#,
    )
    .unwrap()
}

fn at() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-11-28T00:00:00Z")
        .unwrap()
        .to_utc()
}

fn total(table: &PriceTable, usage: &Usage) -> Decimal {
    table
        .cost(&Provider::Anthropic, "m", usage, at())
        .unwrap()
        .total()
}

prop_compose! {
    /// A consistent usage whose prompt stays within `max_prompt` tokens.
    fn usage(max_prompt: u64)(
        parts in proptest::array::uniform4(0..=max_prompt / 4),
        output in 0u64..50_000,
        reasoning_share in 0u64..=100,
        audio_in in 0u64..=100,
        audio_out in 0u64..=50,
        image_out in 0u64..=50,
        searches in 0u64..5,
        images in 0u64..5,
    ) -> Usage {
        let mut u = Usage::tokens(parts[0], output);
        u.cache_read_tokens = parts[1];
        u.cache_write_5m_tokens = parts[2];
        u.cache_write_1h_tokens = parts[3];
        u.reasoning_tokens = Some(output * reasoning_share / 100 / 2);
        u.audio_input_tokens = parts[0] * audio_in / 100;
        u.audio_output_tokens = output * audio_out / 200;
        u.image_output_tokens = output * image_out / 200;
        u.web_search_requests = searches;
        u.images_generated = images;
        u
    }
}

/// The usage with only one of its categories kept.
fn parts_of(u: &Usage) -> Vec<Usage> {
    let mut out = Vec::new();
    let mut input = Usage::tokens(u.input_tokens, 0);
    input.audio_input_tokens = u.audio_input_tokens;
    out.push(input);
    let mut read = Usage::default();
    read.cache_read_tokens = u.cache_read_tokens;
    out.push(read);
    let mut w5 = Usage::default();
    w5.cache_write_5m_tokens = u.cache_write_5m_tokens;
    out.push(w5);
    let mut w1 = Usage::default();
    w1.cache_write_1h_tokens = u.cache_write_1h_tokens;
    out.push(w1);
    let mut output = Usage::tokens(0, u.output_tokens);
    output.reasoning_tokens = u.reasoning_tokens;
    output.audio_output_tokens = u.audio_output_tokens;
    output.image_output_tokens = u.image_output_tokens;
    out.push(output);
    let mut fees = Usage::default();
    fees.web_search_requests = u.web_search_requests;
    fees.images_generated = u.images_generated;
    out.push(fees);
    out
}

proptest! {
    #[test]
    fn cost_is_additive_over_categories(u in usage(THRESHOLD)) {
        let table = table();
        let cost = table.cost(&Provider::Anthropic, "m", &u, at()).unwrap();
        let lines: Decimal = cost.lines().map(|l| l.amount).sum();
        prop_assert_eq!(lines, cost.total());
        // Within one context tier, pricing each category alone and adding gives the whole.
        let parts: Decimal = parts_of(&u).iter().map(|p| total(&table, p)).sum();
        prop_assert_eq!(parts, cost.total());
    }

    #[test]
    fn cost_is_monotone_in_every_count(u in usage(2 * THRESHOLD), field in 0usize..9, extra in 1u64..100_000) {
        let table = table();
        let mut more = u;
        match field {
            0 => more.input_tokens += extra,
            1 => more.cache_read_tokens += extra,
            2 => more.cache_write_5m_tokens += extra,
            3 => more.cache_write_1h_tokens += extra,
            4 => more.output_tokens += extra,
            5 => { more.output_tokens += extra; more.audio_output_tokens += extra; }
            6 => { more.input_tokens += extra; more.audio_input_tokens += extra; }
            7 => more.web_search_requests += extra % 10,
            _ => more.images_generated += extra % 10,
        }
        prop_assert!(total(&table, &more) >= total(&table, &u));
    }

    #[test]
    fn the_tier_switches_exactly_above_its_threshold(split in 0u64..=THRESHOLD, output in 0u64..10_000) {
        let table = table();
        let mut at_threshold = Usage::tokens(THRESHOLD - split, output);
        at_threshold.cache_read_tokens = split;
        let below = table.cost(&Provider::Anthropic, "m", &at_threshold, at()).unwrap();
        prop_assert_eq!(below.context_tier(), None);
        let mut over = at_threshold;
        over.input_tokens += 1;
        let above = table.cost(&Provider::Anthropic, "m", &over, at()).unwrap();
        prop_assert_eq!(above.context_tier(), Some(THRESHOLD));
        let input_rate = above.line(routero_core::CostCategory::Input).unwrap().unit_price;
        prop_assert_eq!(input_rate, Decimal::from_str_exact("0.000006").unwrap());
    }
}
