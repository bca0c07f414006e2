//! Loader for LiteLLM's `model_prices_and_context_window.json`, the price map the
//! ecosystem shares.
//!
//! Every cost field that maps onto a Routero rate or fee is honoured, including the
//! long-context tiers (`…_above_128k_tokens`, `…_above_200k_tokens`, `tiered_pricing`),
//! the service tiers (`…_batches`, `…_flex`, `…_priority`), 1-hour cache writes
//! (`cache_creation_input_token_cost_above_1hr`) and per-query search fees
//! (`search_context_cost_per_query`, at its `medium` context size). Prices are read from
//! the JSON text straight into `Decimal`; no value passes through binary floating point.
//!
//! What cannot be mapped is reported, never guessed: an entry with no usable price is
//! skipped with its reason, and an entry that loads but carries cost fields Routero does
//! not price (per character, per page, per pixel, …) is listed as partial with those
//! fields. A usage that needs an unpriced dimension fails to price with
//! [`CostError::MissingRate`](crate::CostError::MissingRate) rather than being charged
//! zero.

use std::collections::BTreeMap;

use rust_decimal::Decimal;
use rust_decimal::prelude::ToPrimitive;
use serde_json::{Map, Value};

use crate::money::{Currency, parse_decimal_exact};
use crate::price::LoadError;
use crate::price::model::{
    ContextTier, Fees, ModelPrice, ModelPriceSpec, RateKind, Rates, Schedule, TierPricing,
};
use crate::price::table::PriceTable;
use crate::provider::Provider;
use crate::usage::ServiceTier;

/// What a LiteLLM load kept, and why it left the rest.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LiteLlmReport {
    /// Top-level keys in the file.
    pub entries: usize,
    /// Model entries loaded into the table.
    pub loaded: usize,
    /// `alias_of` entries turned into aliases.
    pub aliases: usize,
    /// Entries that name a model already loaded under the same provider (the same
    /// model with and without a provider prefix); the first one is kept.
    pub duplicates: usize,
    /// Entries not loaded, with the reason.
    pub skipped: Vec<(String, String)>,
    /// Entries loaded without some of their cost fields, and those fields.
    pub partial: Vec<(String, Vec<String>)>,
}

impl LiteLlmReport {
    /// Skip reasons and how many entries each one covers, most frequent first.
    pub fn skip_reasons(&self) -> Vec<(String, usize)> {
        let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
        for (_, reason) in &self.skipped {
            let kind = reason.split(':').next().unwrap_or(reason);
            *counts.entry(kind).or_default() += 1;
        }
        let mut out: Vec<(String, usize)> =
            counts.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
        out.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        out
    }
}

/// Where a cost field goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Rate(RateKind),
    /// `input_cost_per_token_cache_hit` (DeepSeek): the cache-read rate when
    /// `cache_read_input_token_cost` is absent.
    CacheHitRate,
    WebSearch,
    PerImage,
    PerInputSecond,
    PerOutputSecond,
    PerRequest,
}

fn base_target(base: &str) -> Option<Target> {
    let target = match base {
        "input_cost_per_token" => Target::Rate(RateKind::Input),
        "output_cost_per_token" => Target::Rate(RateKind::Output),
        "cache_read_input_token_cost" => Target::Rate(RateKind::CacheRead),
        "input_cost_per_token_cache_hit" => Target::CacheHitRate,
        "cache_creation_input_token_cost" => Target::Rate(RateKind::CacheWrite5m),
        "cache_creation_input_token_cost_above_1hr" => Target::Rate(RateKind::CacheWrite1h),
        "output_cost_per_reasoning_token" => Target::Rate(RateKind::Reasoning),
        "input_cost_per_audio_token" => Target::Rate(RateKind::AudioInput),
        "input_cost_per_image_token" => Target::Rate(RateKind::ImageInput),
        "output_cost_per_audio_token" => Target::Rate(RateKind::AudioOutput),
        "output_cost_per_image_token" => Target::Rate(RateKind::ImageOutput),
        "search_context_cost_per_query" => Target::WebSearch,
        "output_cost_per_image" => Target::PerImage,
        "input_cost_per_second" => Target::PerInputSecond,
        "output_cost_per_second" => Target::PerOutputSecond,
        "input_cost_per_request" => Target::PerRequest,
        _ => return None,
    };
    Some(target)
}

/// Splits `cache_read_input_token_cost_above_200k_tokens_priority` into its base
/// name, its long-context threshold and its service tier. `None` for an unknown
/// tier suffix.
fn split_field(field: &str) -> (&str, Option<u64>, ServiceTier) {
    let mut rest = field;
    let mut tier = ServiceTier::Standard;
    for (suffix, t) in [
        ("_batches", ServiceTier::Batch),
        ("_flex", ServiceTier::Flex),
        ("_priority", ServiceTier::Priority),
    ] {
        if let Some(head) = rest.strip_suffix(suffix) {
            rest = head;
            tier = t;
            break;
        }
    }
    let mut threshold = None;
    if let Some(head) = rest.strip_suffix("k_tokens")
        && let Some((base, digits)) = head.rsplit_once("_above_")
        && let Ok(k) = digits.parse::<u64>()
    {
        threshold = k.checked_mul(1000);
        rest = base;
    }
    (rest, threshold, tier)
}

/// The price parts of one entry, before completion.
#[derive(Default)]
struct Parts {
    cards: BTreeMap<(ServiceTier, Option<u64>), Rates>,
    cache_hit: BTreeMap<(ServiceTier, Option<u64>), Decimal>,
    fees: Fees,
    ignored: Vec<String>,
}

/// Loads a LiteLLM price map.
pub fn parse(text: &str) -> Result<(PriceTable, LiteLlmReport), LoadError> {
    let root: Map<String, Value> =
        serde_json::from_str(text).map_err(|e| LoadError::Syntax(e.to_string()))?;
    let version = format!("litellm-{:016x}", fnv1a(text.as_bytes()));
    let mut table = PriceTable::new(&version, Currency::USD);
    crate::price::add_default_fallbacks(&mut table);
    let mut report = LiteLlmReport {
        entries: root.len(),
        ..LiteLlmReport::default()
    };
    let mut names: BTreeMap<&str, (Provider, String)> = BTreeMap::new();
    let mut aliases: Vec<(&str, &str)> = Vec::new();

    for (key, value) in &root {
        let Some(entry) = value.as_object() else {
            report.skipped.push((key.clone(), "not an object".into()));
            continue;
        };
        if let Some(target) = entry.get("alias_of").and_then(Value::as_str) {
            aliases.push((key, target));
            continue;
        }
        let Some(provider_name) = entry.get("litellm_provider").and_then(Value::as_str) else {
            report
                .skipped
                .push((key.clone(), "not a model entry: no litellm_provider".into()));
            continue;
        };
        let provider = match map_provider(provider_name) {
            Ok(p) => p,
            Err(reason) => {
                report.skipped.push((key.clone(), reason));
                continue;
            }
        };
        let model = strip_provider_prefix(key, &provider);
        match read_entry(entry) {
            Ok((spec, ignored)) => {
                if table.contains(&provider, model) {
                    report.duplicates += 1;
                    continue;
                }
                if !ignored.is_empty() {
                    report.partial.push((key.clone(), ignored));
                }
                names.insert(key, (provider.clone(), model.to_owned()));
                table.insert(ModelPrice::new(provider, model, spec));
                report.loaded += 1;
            }
            Err(reason) => report.skipped.push((key.clone(), reason)),
        }
    }
    for (alias, target) in aliases {
        match names.get(target) {
            Some((provider, model)) => {
                let name = strip_provider_prefix(alias, provider);
                table.add_alias(provider.clone(), name, provider.clone(), model);
                report.aliases += 1;
            }
            None => report.skipped.push((
                alias.to_owned(),
                format!("alias of an entry that did not load: {target}"),
            )),
        }
    }
    Ok((table, report))
}

fn map_provider(name: &str) -> Result<Provider, String> {
    if name.starts_with("vertex_ai") {
        return Ok(Provider::VertexAi);
    }
    if name == "text-completion-openai" {
        return Ok(Provider::OpenAi);
    }
    Provider::parse(name).map_err(|e| format!("invalid provider: {e}"))
}

/// `gemini/gemini-2.5-pro` → `gemini-2.5-pro` when the prefix names the entry's provider.
fn strip_provider_prefix<'a>(key: &'a str, provider: &Provider) -> &'a str {
    match key.split_once('/') {
        Some((prefix, rest))
            if !rest.is_empty() && map_provider(prefix).as_ref() == Ok(provider) =>
        {
            rest
        }
        _ => key,
    }
}

fn read_entry(entry: &Map<String, Value>) -> Result<(ModelPriceSpec, Vec<String>), String> {
    let mut parts = Parts::default();
    for (field, value) in entry {
        if field == "tiered_pricing" {
            read_tiered(value, &mut parts).map_err(|e| format!("invalid tiered_pricing: {e}"))?;
            continue;
        }
        if !field.contains("cost") || field.ends_with("_multiplier") {
            continue;
        }
        let (base, threshold, tier) = split_field(field);
        let Some(target) = base_target(base) else {
            if !is_zero(value) {
                parts.ignored.push(field.clone());
            }
            continue;
        };
        if value.is_null() {
            continue;
        }
        let amount = match target {
            Target::WebSearch => search_fee(value),
            _ => number(value),
        }
        .map_err(|e| format!("invalid value: {field}: {e}"))?;
        let key = (tier, threshold);
        match target {
            Target::Rate(kind) => parts.cards.entry(key).or_default().set(kind, Some(amount)),
            Target::CacheHitRate => {
                parts.cache_hit.insert(key, amount);
            }
            _ if tier != ServiceTier::Standard || threshold.is_some() => {
                parts.ignored.push(field.clone())
            }
            Target::WebSearch => parts.fees.per_web_search = Some(amount),
            Target::PerImage => parts.fees.per_image = Some(amount),
            Target::PerInputSecond => parts.fees.per_input_second = Some(amount),
            Target::PerOutputSecond => parts.fees.per_output_second = Some(amount),
            Target::PerRequest => parts.fees.per_request = Some(amount),
        }
    }
    for (key, rate) in std::mem::take(&mut parts.cache_hit) {
        let card = parts.cards.entry(key).or_default();
        if card.get(RateKind::CacheRead).is_none() {
            card.set(RateKind::CacheRead, Some(rate));
        }
    }
    let schedule_of = |tier: ServiceTier,
                       cards: &BTreeMap<(ServiceTier, Option<u64>), Rates>|
     -> Option<Schedule> {
        let base = cards.get(&(tier, None)).copied();
        let above: Vec<ContextTier> = cards
            .iter()
            .filter_map(|((t, threshold), rates)| match threshold {
                Some(above_tokens) if *t == tier => Some(ContextTier {
                    above_tokens: *above_tokens,
                    rates: *rates,
                }),
                _ => None,
            })
            .collect();
        (base.is_some() || !above.is_empty()).then(|| Schedule {
            base: base.unwrap_or_default(),
            above,
        })
    };
    let standard = schedule_of(ServiceTier::Standard, &parts.cards).unwrap_or_default();
    let has_tokens = standard.base.get(RateKind::Input).is_some()
        || standard.base.get(RateKind::Output).is_some();
    if !has_tokens && parts.fees == Fees::default() {
        let reason = if parts.ignored.is_empty() {
            "no price: the entry has no cost field".to_owned()
        } else {
            format!("no mappable price: only {}", parts.ignored.join(", "))
        };
        return Err(reason);
    }
    let mut spec = ModelPriceSpec {
        standard,
        fees: parts.fees,
        ..ModelPriceSpec::default()
    };
    for tier in [ServiceTier::Flex, ServiceTier::Priority, ServiceTier::Batch] {
        if let Some(schedule) = schedule_of(tier, &parts.cards) {
            spec.tiers
                .push((tier, TierPricing::Schedule(Box::new(schedule))));
        }
    }
    Ok((spec, parts.ignored))
}

/// `tiered_pricing: [{input_cost_per_token, output_cost_per_token, range: [lo, hi]}, …]`:
/// the first range starts at zero and is the base card; each later one is a
/// long-context tier above its start.
fn read_tiered(value: &Value, parts: &mut Parts) -> Result<(), String> {
    let ranges = value.as_array().ok_or("not a list")?;
    for (i, range) in ranges.iter().enumerate() {
        let range = range.as_object().ok_or("a range is not an object")?;
        let bounds = range
            .get("range")
            .and_then(Value::as_array)
            .ok_or("a range has no bounds")?;
        let start = bounds.first().ok_or("empty bounds")?;
        let start = number(start)?;
        let start = start
            .fract()
            .is_zero()
            .then(|| start.to_u64())
            .flatten()
            .ok_or("a bound is not a whole token count")?;
        let threshold = match (i, start) {
            (0, 0) => None,
            (0, _) => return Err("the first range does not start at zero".into()),
            (_, start) => Some(start),
        };
        let mut card = Rates::default();
        for (field, value) in range {
            if field == "range" {
                continue;
            }
            match base_target(field) {
                Some(Target::Rate(kind)) => card.set(kind, Some(number(value)?)),
                _ => return Err(format!("unsupported field {field}")),
            }
        }
        parts.cards.insert((ServiceTier::Standard, threshold), card);
    }
    Ok(())
}

fn number(value: &Value) -> Result<Decimal, String> {
    let Value::Number(n) = value else {
        return Err(format!("{value} is not a number"));
    };
    let d = parse_decimal_exact(&n.to_string()).map_err(|e| e.to_string())?;
    if d.is_sign_negative() {
        return Err(format!("{n} is negative"));
    }
    Ok(d)
}

/// `search_context_cost_per_query`: an object by context size; the medium size is the
/// providers' default.
fn search_fee(value: &Value) -> Result<Decimal, String> {
    match value {
        Value::Object(sizes) => sizes
            .get("search_context_size_medium")
            .or_else(|| sizes.get("search_context_size_low"))
            .ok_or_else(|| "no search_context_size_medium".to_owned())
            .and_then(number),
        other => number(other),
    }
}

fn is_zero(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::Number(_) => number(value).is_ok_and(|d| d.is_zero()),
        Value::Object(map) => map.values().all(is_zero),
        _ => false,
    }
}

/// FNV-1a, 64 bits: a stable content id for the table version.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}
