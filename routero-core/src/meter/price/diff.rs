//! What changed between two price tables: models added and removed, and every rate
//! of a model in both whose value changed, with its relative change.

use std::collections::BTreeMap;

use rust_decimal::Decimal;
use serde::Serialize;

use super::{ModelPrice, PriceTable, RateKind, Rates};
use crate::usage::ServiceTier;

/// A model in a table.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct PricedModel {
    /// The provider.
    pub provider: String,
    /// The model.
    pub model: String,
}

/// One rate of a model in both tables whose value differs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RateChange {
    /// The model.
    #[serde(flatten)]
    pub model: PricedModel,
    /// The rate: `{tier}.{kind}` (`standard.input`, `batch.output`), a long-context
    /// card's `{tier}.above_{tokens}.{kind}`, or `fees.{fee}`. Token rates are per
    /// million tokens, as price files write them; fees per unit.
    pub rate: String,
    /// Its value in the old table (`None`: not priced there).
    #[serde(with = "rust_decimal::serde::str_option")]
    pub old: Option<Decimal>,
    /// Its value in the new table.
    #[serde(with = "rust_decimal::serde::str_option")]
    pub new: Option<Decimal>,
    /// `(new - old) / old`, rounded to 6 places; `None` when either is missing or the
    /// old one is zero.
    #[serde(with = "rust_decimal::serde::str_option")]
    pub relative: Option<Decimal>,
}

/// What changed from one table to another.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PriceDiff {
    /// Models only the new table prices.
    pub added: Vec<PricedModel>,
    /// Models only the old table prices.
    pub removed: Vec<PricedModel>,
    /// Rates that differ, model by model.
    pub changed: Vec<RateChange>,
}

/// Each model's newest price (the version in force last).
fn newest(table: &PriceTable) -> BTreeMap<PricedModel, &ModelPrice> {
    let mut out: BTreeMap<PricedModel, &ModelPrice> = BTreeMap::new();
    for price in table.prices() {
        let key = PricedModel {
            provider: price.provider().as_str().to_owned(),
            model: price.model().to_owned(),
        };
        match out.get(&key) {
            Some(seen) if seen.effective_from() >= price.effective_from() => {}
            _ => {
                out.insert(key, price);
            }
        }
    }
    out
}

fn tier_name(tier: ServiceTier) -> &'static str {
    match tier {
        ServiceTier::Standard => "standard",
        ServiceTier::Flex => "flex",
        ServiceTier::Priority => "priority",
        ServiceTier::Batch => "batch",
    }
}

/// A card's rates, per million tokens as price files write them.
fn card(rates: &Rates, prefix: &str, out: &mut BTreeMap<String, Decimal>) {
    for kind in RateKind::ALL {
        if let Some(rate) = rates
            .get(kind)
            .and_then(|r| r.checked_mul(Decimal::from(1_000_000)))
        {
            out.insert(format!("{prefix}.{}", kind.as_str()), rate.normalize());
        }
    }
}

/// Every rate of a price, by name.
fn rates(price: &ModelPrice) -> BTreeMap<String, Decimal> {
    let mut out = BTreeMap::new();
    for tier in ServiceTier::ALL {
        if let Some(schedule) = price.schedule(tier) {
            let name = tier_name(tier);
            card(&schedule.base, name, &mut out);
            for above in &schedule.above {
                card(
                    &above.rates,
                    &format!("{name}.above_{}", above.above_tokens),
                    &mut out,
                );
            }
        }
    }
    let fees = price.fees();
    for (name, fee) in [
        ("per_request", fees.per_request),
        ("per_web_search", fees.per_web_search),
        ("per_image", fees.per_image),
        ("per_input_second", fees.per_input_second),
        ("per_output_second", fees.per_output_second),
    ] {
        if let Some(fee) = fee {
            out.insert(format!("fees.{name}"), fee);
        }
    }
    out
}

/// The differences from `old` to `new`, each list sorted by provider and model.
pub fn diff(old: &PriceTable, new: &PriceTable) -> PriceDiff {
    let (old, new) = (newest(old), newest(new));
    let mut out = PriceDiff::default();
    for (model, price) in &new {
        let Some(before) = old.get(model) else {
            out.added.push(model.clone());
            continue;
        };
        let (was, now) = (rates(before), rates(price));
        let names: std::collections::BTreeSet<&String> = was.keys().chain(now.keys()).collect();
        for name in names {
            let (a, b) = (was.get(name).copied(), now.get(name).copied());
            if a == b
                || a.zip(b)
                    .is_some_and(|(a, b)| a.normalize() == b.normalize())
            {
                continue;
            }
            let relative = match (a, b) {
                (Some(a), Some(b)) if !a.is_zero() => {
                    (b - a).checked_div(a).map(|r| r.round_dp(6).normalize())
                }
                _ => None,
            };
            out.changed.push(RateChange {
                model: model.clone(),
                rate: name.clone(),
                old: a,
                new: b,
                relative,
            });
        }
    }
    out.removed = old
        .keys()
        .filter(|m| !new.contains_key(*m))
        .cloned()
        .collect();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(text: &str) -> PriceTable {
        super::super::file::parse(text).unwrap()
    }

    #[test]
    fn added_removed_and_changed_rates() {
        let old = table(
            r#"format = 1
version = "a"
currency = "USD"
[[model]]
provider = "openai"
name = "o4-mini"
input = "1.1"
output = "4.4"
[model.tier.batch]
input = "0.55"
[[model]]
provider = "openai"
name = "gone"
input = "1"
output = "2"
"#,
        );
        let new = table(
            r#"format = 1
version = "b"
currency = "USD"
[[model]]
provider = "openai"
name = "o4-mini"
input = "1.10"
output = "4"
cache_read = "0.275"
[model.tier.batch]
input = "0.5"
[model.fees]
web_search = "0.01"
[[model]]
provider = "anthropic"
name = "claude-new"
input = "3"
output = "15"
"#,
        );
        let d = diff(&old, &new);
        let key = |p: &str, m: &str| PricedModel {
            provider: p.into(),
            model: m.into(),
        };
        assert_eq!(d.added, [key("anthropic", "claude-new")]);
        assert_eq!(d.removed, [key("openai", "gone")]);
        type Row<'a> = (&'a str, Option<String>, Option<String>, Option<String>);
        let changed: Vec<Row<'_>> = d
            .changed
            .iter()
            .map(|c| {
                (
                    c.rate.as_str(),
                    c.old.map(|v| v.to_string()),
                    c.new.map(|v| v.to_string()),
                    c.relative.map(|v| v.to_string()),
                )
            })
            .collect();
        let s = |v: &str| Some(v.to_owned());
        // 1.1 and 1.10 are one rate; the batch card's cache reads are derived from
        // standard's at the batch discount.
        assert_eq!(
            changed,
            [
                ("batch.cache_read", None, s("0.125"), None),
                ("batch.input", s("0.55"), s("0.5"), s("-0.090909")),
                ("fees.per_web_search", None, s("0.01"), None),
                ("standard.cache_read", None, s("0.275"), None),
                ("standard.output", s("4.4"), s("4"), s("-0.090909")),
            ]
        );
    }
}
