//! Routero's own price file format (TOML).
//!
//! ```toml
//! format = 1                       # the format version; this is version 1
//! version = "acme-2026-11"         # the table's version id, recorded by every cost
//! currency = "USD"
//!
//! [[fallback]]                     # lookups for `provider` that find nothing try `to`
//! provider = "azure"
//! to = "openai"
//!
//! [[alias]]                        # a deployment or gateway name for a priced model
//! provider = "azure"
//! name = "prod-gpt4o"
//! target_provider = "openai"       # optional, defaults to `provider`
//! model = "gpt-4o"
//!
//! [[model]]
//! provider = "anthropic"
//! name = "claude-sonnet-4-5"
//! aliases = ["claude-sonnet-4-5-latest"]      # optional, same provider
//! as_of = "2026-11-01"                        # when the price was read
//! source = "https://platform.claude.com/docs/en/about-claude/pricing"
//! effective_from = "2025-09-29"               # optional; RFC 3339 or a UTC date
//! # Per-token rates in currency per MILLION tokens, written as strings so they stay exact.
//! input = "3"
//! cache_read = "0.30"
//! cache_write_5m = "3.75"
//! cache_write_1h = "6"
//! output = "15"
//! # also: reasoning, audio_input, image_input, audio_output, image_output
//!
//! [model.fees]                     # not per token, in plain currency units
//! web_search = "0.01"              # per call; also: request, image, input_second, output_second
//!
//! [[model.above]]                  # long-context tier: prompt (cache included) > tokens
//! tokens = 200000
//! input = "6"
//! output = "22.50"
//!
//! [model.tier.batch]               # a service tier: a multiplier ...
//! multiplier = "0.5"
//!
//! [model.tier.priority]            # ... or rates of its own (and `above` cards)
//! input = "5.10"
//! output = "25.50"
//! ```
//!
//! A tier or long-context card that leaves a rate out gets it from the card it modifies,
//! scaled by the card's input (or output) ratio, where that is exact: see
//! [`Rates::completed_from`](crate::price::Rates::completed_from).

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, Utc};
use rust_decimal::Decimal;
use serde::Deserialize;

use crate::money::{Currency, parse_rate};
use crate::price::LoadError;
use crate::price::model::{
    ContextTier, Fees, ModelPrice, ModelPriceSpec, RateKind, Rates, Schedule, TierPricing,
};
use crate::price::table::PriceTable;
use crate::provider::Provider;
use crate::usage::ServiceTier;

/// The format version this code reads and writes.
pub const FORMAT_VERSION: u32 = 1;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileDoc {
    format: u32,
    version: String,
    currency: String,
    #[serde(default)]
    fallback: Vec<FallbackDoc>,
    #[serde(default)]
    alias: Vec<AliasDoc>,
    #[serde(default)]
    model: Vec<ModelDoc>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FallbackDoc {
    provider: String,
    to: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AliasDoc {
    provider: String,
    name: String,
    target_provider: Option<String>,
    model: String,
}

#[derive(Deserialize, Default)]
struct RatesDoc {
    input: Option<String>,
    cache_read: Option<String>,
    cache_write_5m: Option<String>,
    cache_write_1h: Option<String>,
    output: Option<String>,
    reasoning: Option<String>,
    audio_input: Option<String>,
    image_input: Option<String>,
    audio_output: Option<String>,
    image_output: Option<String>,
}

#[derive(Deserialize)]
struct ModelDoc {
    provider: String,
    name: String,
    #[serde(default)]
    aliases: Vec<String>,
    as_of: Option<String>,
    source: Option<String>,
    effective_from: Option<String>,
    #[serde(default)]
    above: Vec<ContextDoc>,
    #[serde(default)]
    tier: BTreeMap<String, TierDoc>,
    fees: Option<FeesDoc>,
    #[serde(flatten)]
    rates: RatesDoc,
    #[serde(flatten)]
    unknown: BTreeMap<String, toml::Value>,
}

#[derive(Deserialize)]
struct ContextDoc {
    tokens: u64,
    #[serde(flatten)]
    rates: RatesDoc,
    #[serde(flatten)]
    unknown: BTreeMap<String, toml::Value>,
}

#[derive(Deserialize)]
struct TierDoc {
    multiplier: Option<String>,
    #[serde(default)]
    above: Vec<ContextDoc>,
    #[serde(flatten)]
    rates: RatesDoc,
    #[serde(flatten)]
    unknown: BTreeMap<String, toml::Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FeesDoc {
    request: Option<String>,
    web_search: Option<String>,
    image: Option<String>,
    input_second: Option<String>,
    output_second: Option<String>,
}

/// Parses a price file in Routero's format.
pub fn parse(text: &str) -> Result<PriceTable, LoadError> {
    let doc: FileDoc = toml::from_str(text).map_err(|e| LoadError::Syntax(e.to_string()))?;
    if doc.format != FORMAT_VERSION {
        return Err(LoadError::UnsupportedFormat(doc.format));
    }
    let currency: Currency = doc
        .currency
        .parse()
        .map_err(|e: crate::money::UnknownCurrency| {
            LoadError::invalid("currency", e.to_string())
        })?;
    let mut table = PriceTable::new(&doc.version, currency);
    for f in &doc.fallback {
        table.add_fallback(provider(&f.provider)?, provider(&f.to)?);
    }
    for a in &doc.alias {
        let from = provider(&a.provider)?;
        let to = match &a.target_provider {
            Some(p) => provider(p)?,
            None => from.clone(),
        };
        table.add_alias(from, &a.name, to, &a.model);
    }
    for m in doc.model {
        let context = format!("model {}/{}", m.provider, m.name);
        let p = provider(&m.provider)?;
        reject_unknown(&context, &m.unknown)?;
        let mut spec = ModelPriceSpec {
            standard: Schedule {
                base: rates(&context, &m.rates)?,
                above: context_tiers(&context, &m.above)?,
            },
            tiers: Vec::new(),
            fees: m
                .fees
                .as_ref()
                .map(|f| fees(&context, f))
                .transpose()?
                .unwrap_or_default(),
            effective_from: m
                .effective_from
                .as_deref()
                .map(|t| instant(&context, t))
                .transpose()?,
            as_of: m
                .as_of
                .as_deref()
                .map(|t| {
                    NaiveDate::parse_from_str(t, "%Y-%m-%d")
                        .map_err(|e| LoadError::invalid(&context, format!("as_of \"{t}\": {e}")))
                })
                .transpose()?,
            source: m.source.clone(),
        };
        for (name, tier) in &m.tier {
            let tier_context = format!("{context} tier {name}");
            let service_tier = ServiceTier::from_provider(name)
                .filter(|t| *t != ServiceTier::Standard)
                .ok_or_else(|| {
                    LoadError::invalid(&tier_context, "expected flex, priority or batch")
                })?;
            reject_unknown(&tier_context, &tier.unknown)?;
            let pricing = match &tier.multiplier {
                Some(factor) => {
                    let own = rates(&tier_context, &tier.rates)?;
                    if !own.is_empty() || !tier.above.is_empty() {
                        return Err(LoadError::invalid(
                            &tier_context,
                            "a multiplier tier names no rates",
                        ));
                    }
                    TierPricing::Multiplier(decimal(&tier_context, factor)?)
                }
                None => TierPricing::Schedule(Box::new(Schedule {
                    base: rates(&tier_context, &tier.rates)?,
                    above: context_tiers(&tier_context, &tier.above)?,
                })),
            };
            spec.tiers.push((service_tier, pricing));
        }
        if spec.standard.base.get(RateKind::Input).is_none()
            && spec.standard.base.get(RateKind::Output).is_none()
            && spec.fees == Fees::default()
        {
            return Err(LoadError::invalid(
                &context,
                "prices nothing: no input or output rate and no fee",
            ));
        }
        for alias in &m.aliases {
            table.add_alias(p.clone(), alias, p.clone(), &m.name);
        }
        table.insert(ModelPrice::new(p, &m.name, spec));
    }
    Ok(table)
}

fn provider(name: &str) -> Result<Provider, LoadError> {
    Provider::parse(name).map_err(|e| LoadError::invalid("provider", e.to_string()))
}

fn reject_unknown(context: &str, unknown: &BTreeMap<String, toml::Value>) -> Result<(), LoadError> {
    match unknown.keys().next() {
        Some(key) => Err(LoadError::invalid(
            context,
            format!("unknown field \"{key}\""),
        )),
        None => Ok(()),
    }
}

/// A price, in the money grammar ([`parse_rate`]): no sign, exponent or white space.
fn decimal(context: &str, text: &str) -> Result<Decimal, LoadError> {
    parse_rate(text).map_err(|e| LoadError::invalid(context, e.to_string()))
}

/// A per-million rate to a per-token rate, exactly.
fn per_million(context: &str, text: &str) -> Result<Decimal, LoadError> {
    let value = decimal(context, text)?;
    let scale = value.scale() + 6;
    if scale > 28 {
        return Err(LoadError::invalid(
            context,
            format!("\"{text}\" has too many decimal places"),
        ));
    }
    Ok(Decimal::from_i128_with_scale(value.mantissa(), scale).normalize())
}

fn rates(context: &str, doc: &RatesDoc) -> Result<Rates, LoadError> {
    let fields = [
        (RateKind::Input, &doc.input),
        (RateKind::CacheRead, &doc.cache_read),
        (RateKind::CacheWrite5m, &doc.cache_write_5m),
        (RateKind::CacheWrite1h, &doc.cache_write_1h),
        (RateKind::Output, &doc.output),
        (RateKind::Reasoning, &doc.reasoning),
        (RateKind::AudioInput, &doc.audio_input),
        (RateKind::ImageInput, &doc.image_input),
        (RateKind::AudioOutput, &doc.audio_output),
        (RateKind::ImageOutput, &doc.image_output),
    ];
    let mut out = Rates::default();
    for (kind, text) in fields {
        if let Some(text) = text {
            out.set(
                kind,
                Some(per_million(&format!("{context} {}", kind.as_str()), text)?),
            );
        }
    }
    Ok(out)
}

fn context_tiers(context: &str, docs: &[ContextDoc]) -> Result<Vec<ContextTier>, LoadError> {
    let mut out = Vec::with_capacity(docs.len());
    for doc in docs {
        let context = format!("{context} above {}", doc.tokens);
        reject_unknown(&context, &doc.unknown)?;
        if out
            .iter()
            .any(|t: &ContextTier| t.above_tokens == doc.tokens)
        {
            return Err(LoadError::invalid(&context, "duplicate threshold"));
        }
        out.push(ContextTier {
            above_tokens: doc.tokens,
            rates: rates(&context, &doc.rates)?,
        });
    }
    out.sort_by_key(|t| t.above_tokens);
    Ok(out)
}

fn fees(context: &str, doc: &FeesDoc) -> Result<Fees, LoadError> {
    let one = |v: &Option<String>| v.as_deref().map(|t| decimal(context, t)).transpose();
    Ok(Fees {
        per_request: one(&doc.request)?,
        per_web_search: one(&doc.web_search)?,
        per_image: one(&doc.image)?,
        per_input_second: one(&doc.input_second)?,
        per_output_second: one(&doc.output_second)?,
    })
}

fn instant(context: &str, text: &str) -> Result<DateTime<Utc>, LoadError> {
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Ok(t.to_utc());
    }
    NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc())
        .ok_or_else(|| {
            LoadError::invalid(
                context,
                format!("effective_from \"{text}\": expected RFC 3339 or YYYY-MM-DD"),
            )
        })
}
