//! One test per pricing dimension, against hand-computed exact values.

use chrono::{DateTime, Utc};
use routero_core::price::{self, file};
use routero_core::{CostCategory, CostError, PriceTable, Provider, ServiceTier, Usage};
use rust_decimal::Decimal;

fn at(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text).unwrap().to_utc()
}

fn now() -> DateTime<Utc> {
    at("2026-11-28T12:00:00Z")
}

fn d(text: &str) -> Decimal {
    Decimal::from_str_exact(text).unwrap()
}

const TABLE: &str = r#"
format = 1
version = "test-1"
currency = "USD"

[[fallback]]
provider = "azure"
to = "openai"

[[alias]]
provider = "azure"
name = "prod-gpt"
target_provider = "openai"
model = "gpt-test"

[[model]]
provider = "openai"
name = "gpt-test"
input = "2.50"
cache_read = "1.25"
output = "10"
[model.tier.batch]
multiplier = "0.5"
[model.tier.priority]
input = "4.25"
cache_read = "2.125"
output = "17"

[[model]]
provider = "openai"
name = "gpt-test-2024-08-06"
input = "5"
output = "15"

[[model]]
provider = "openai"
name = "reasoner"
input = "1"
output = "4"
reasoning = "8"

[[model]]
provider = "openai"
name = "audio"
input = "2.5"
output = "10"
audio_input = "40"
audio_output = "80"

[[model]]
provider = "anthropic"
name = "claude-test"
input = "3"
cache_read = "0.30"
cache_write_5m = "3.75"
cache_write_1h = "6"
output = "15"
[model.fees]
web_search = "0.01"
[[model.above]]
tokens = 200000
input = "6"
output = "22.50"
[model.tier.batch]
input = "1.5"
output = "7.5"

[[model]]
provider = "anthropic"
name = "no-1h"
input = "3"
cache_write_5m = "3.75"
output = "15"

[[model]]
provider = "openai"
name = "image-gen"
[model.fees]
image = "0.04"
request = "0.001"

[[model]]
provider = "openai"
name = "whisper"
[model.fees]
input_second = "0.0001"

[[model]]
provider = "openai"
name = "versioned"
effective_from = "2026-01-01"
input = "1"
output = "2"

[[model]]
provider = "openai"
name = "versioned"
effective_from = "2026-11-15T00:00:00Z"
input = "0.5"
output = "1"
"#;

fn table() -> PriceTable {
    file::parse(TABLE).unwrap()
}

#[test]
fn input_and_output_tokens() {
    let cost = table()
        .cost(
            &Provider::OpenAi,
            "gpt-test",
            &Usage::tokens(1_000, 500),
            now(),
        )
        .unwrap();
    // 1000 × 0.0000025 + 500 × 0.00001
    assert_eq!(cost.total(), d("0.0075"));
    assert_eq!(cost.amount(CostCategory::Input), d("0.0025"));
    assert_eq!(cost.amount(CostCategory::Output), d("0.005"));
    assert_eq!(cost.price_version(), "test-1");
    assert_eq!(cost.currency().code(), "USD");
}

#[test]
fn cache_reads_and_writes_by_lifetime() {
    let mut usage = Usage::tokens(2_113, 612);
    usage.cache_read_tokens = 12_288;
    usage.cache_write_5m_tokens = 1_024;
    usage.cache_write_1h_tokens = 2_048;
    let cost = table()
        .cost(&Provider::Anthropic, "claude-test", &usage, now())
        .unwrap();
    assert_eq!(cost.amount(CostCategory::Input), d("0.006339"));
    assert_eq!(cost.amount(CostCategory::CacheRead), d("0.0036864"));
    assert_eq!(cost.amount(CostCategory::CacheWrite5m), d("0.00384"));
    assert_eq!(cost.amount(CostCategory::CacheWrite1h), d("0.012288"));
    assert_eq!(cost.amount(CostCategory::Output), d("0.00918"));
    assert_eq!(cost.total(), d("0.0353334"));
    let sum: Decimal = cost.lines().map(|l| l.amount).sum();
    assert_eq!(sum, cost.total());
}

#[test]
fn one_hour_writes_are_never_priced_at_the_five_minute_rate() {
    let mut usage = Usage::tokens(10, 10);
    usage.cache_write_1h_tokens = 100;
    let err = table()
        .cost(&Provider::Anthropic, "no-1h", &usage, now())
        .unwrap_err();
    assert!(matches!(
        err,
        CostError::MissingRate {
            category: CostCategory::CacheWrite1h,
            ..
        }
    ));
}

#[test]
fn cache_reads_without_a_discount_are_input() {
    let mut usage = Usage::tokens(0, 0);
    usage.cache_read_tokens = 1_000;
    let cost = table()
        .cost(&Provider::OpenAi, "reasoner", &usage, now())
        .unwrap();
    assert_eq!(cost.total(), d("0.001"));
}

#[test]
fn reasoning_with_its_own_rate_splits_off_output() {
    let mut usage = Usage::tokens(100, 1_000);
    usage.reasoning_tokens = Some(600);
    let cost = table()
        .cost(&Provider::OpenAi, "reasoner", &usage, now())
        .unwrap();
    assert_eq!(cost.amount(CostCategory::Output), d("0.0016"));
    assert_eq!(cost.amount(CostCategory::Reasoning), d("0.0048"));
    assert_eq!(cost.total(), d("0.0065"));
    // Where reasoning has no rate of its own, it is output and gets no line.
    let cost = table()
        .cost(&Provider::OpenAi, "gpt-test", &usage, now())
        .unwrap();
    assert_eq!(cost.line(CostCategory::Reasoning), None);
    assert_eq!(cost.amount(CostCategory::Output), d("0.01"));
}

#[test]
fn audio_tokens_take_their_modality_rate() {
    let mut usage = Usage::tokens(312, 186);
    usage.audio_input_tokens = 271;
    usage.audio_output_tokens = 147;
    let cost = table()
        .cost(&Provider::OpenAi, "audio", &usage, now())
        .unwrap();
    assert_eq!(cost.amount(CostCategory::Input), d("0.0001025")); // 41 text
    assert_eq!(cost.amount(CostCategory::AudioInput), d("0.01084")); // 271 × 0.00004
    assert_eq!(cost.amount(CostCategory::Output), d("0.00039")); // 39 text
    assert_eq!(cost.amount(CostCategory::AudioOutput), d("0.01176")); // 147 × 0.00008
    assert_eq!(cost.total(), d("0.0230925"));
}

#[test]
fn long_context_tier_reprices_the_whole_request_on_the_full_prompt() {
    // The prompt is 150k uncached + 60k cached: 210k > 200k, although uncached is below.
    let mut usage = Usage::tokens(150_000, 1_000);
    usage.cache_read_tokens = 60_000;
    let cost = table()
        .cost(&Provider::Anthropic, "claude-test", &usage, now())
        .unwrap();
    assert_eq!(cost.context_tier(), Some(200_000));
    assert_eq!(cost.amount(CostCategory::Input), d("0.9")); // 150k × 6/M
    // Cache reads move with input: 0.30 × 6/3 = 0.60 per million.
    assert_eq!(cost.amount(CostCategory::CacheRead), d("0.036"));
    assert_eq!(cost.amount(CostCategory::Output), d("0.0225"));
}

#[test]
fn service_tiers_by_multiplier_and_by_rates() {
    let mut usage = Usage::tokens(1_000, 500);
    usage.service_tier = ServiceTier::Batch;
    let batch = table()
        .cost(&Provider::OpenAi, "gpt-test", &usage, now())
        .unwrap();
    assert_eq!(batch.total(), d("0.00375"));
    assert_eq!(batch.service_tier(), ServiceTier::Batch);
    usage.service_tier = ServiceTier::Priority;
    let priority = table()
        .cost(&Provider::OpenAi, "gpt-test", &usage, now())
        .unwrap();
    assert_eq!(priority.total(), d("0.01275"));
    usage.service_tier = ServiceTier::Flex;
    let err = table()
        .cost(&Provider::OpenAi, "gpt-test", &usage, now())
        .unwrap_err();
    assert!(matches!(
        err,
        CostError::UnsupportedServiceTier {
            service_tier: ServiceTier::Flex,
            ..
        }
    ));
}

#[test]
fn batch_tier_derives_unnamed_cache_rates_exactly() {
    let mut usage = Usage::tokens(0, 0);
    usage.cache_write_1h_tokens = 100_000;
    usage.service_tier = ServiceTier::Batch;
    let cost = table()
        .cost(&Provider::Anthropic, "claude-test", &usage, now())
        .unwrap();
    assert_eq!(cost.total(), d("0.3")); // 100k × 6/M × 1.5/3
    // Above the long-context threshold the batch card follows the long-context card:
    // 6/M × 6/3 (long context) × 1.5/3 (batch) = 6/M.
    usage.cache_write_1h_tokens = 1_000_000;
    let cost = table()
        .cost(&Provider::Anthropic, "claude-test", &usage, now())
        .unwrap();
    assert_eq!(cost.total(), d("6"));
}

#[test]
fn per_call_fees() {
    let mut usage = Usage::tokens(100, 10);
    usage.web_search_requests = 2;
    let cost = table()
        .cost(&Provider::Anthropic, "claude-test", &usage, now())
        .unwrap();
    assert_eq!(cost.amount(CostCategory::WebSearch), d("0.02"));
    let err = table()
        .cost(&Provider::OpenAi, "gpt-test", &usage, now())
        .unwrap_err();
    assert!(matches!(
        err,
        CostError::MissingRate {
            category: CostCategory::WebSearch,
            ..
        }
    ));
}

#[test]
fn per_image_per_second_and_per_request_prices() {
    let mut images = Usage::default();
    images.images_generated = 3;
    let cost = table()
        .cost(&Provider::OpenAi, "image-gen", &images, now())
        .unwrap();
    assert_eq!(cost.amount(CostCategory::Images), d("0.12"));
    assert_eq!(cost.amount(CostCategory::Request), d("0.001"));
    assert_eq!(cost.total(), d("0.121"));

    let mut audio = Usage::default();
    audio.input_duration_ms = 61_500;
    let cost = table()
        .cost(&Provider::OpenAi, "whisper", &audio, now())
        .unwrap();
    assert_eq!(cost.amount(CostCategory::InputSeconds), d("0.00615"));
}

#[test]
fn unknown_models_are_errors_naming_provider_and_model() {
    let err = table()
        .cost(&Provider::OpenAi, "gpt-nope", &Usage::tokens(1, 1), now())
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "unknown model \"gpt-nope\" for provider openai"
    );
    let err = table()
        .cost(
            &Provider::Mistral,
            "evil\n\u{1b}[31m",
            &Usage::tokens(1, 1),
            now(),
        )
        .unwrap_err();
    assert!(!err.to_string().contains('\n'));
}

#[test]
fn absurd_counts_are_errors() {
    let err = table()
        .cost(
            &Provider::OpenAi,
            "gpt-test",
            &Usage::tokens(u64::MAX, 1),
            now(),
        )
        .unwrap_err();
    assert!(matches!(err, CostError::InvalidUsage(_)));
}

#[test]
fn dated_names_use_their_own_entry_else_the_base() {
    let t = table();
    let own = t
        .cost(
            &Provider::OpenAi,
            "gpt-test-2024-08-06",
            &Usage::tokens(1_000, 0),
            now(),
        )
        .unwrap();
    assert_eq!(own.priced_model(), "gpt-test-2024-08-06");
    assert_eq!(own.total(), d("0.005"));
    let base = t
        .cost(
            &Provider::OpenAi,
            "gpt-test-2025-01-01",
            &Usage::tokens(1_000, 0),
            now(),
        )
        .unwrap();
    assert_eq!(base.priced_model(), "gpt-test");
    let prefixed = t
        .cost(
            &Provider::OpenAi,
            "openai/gpt-test",
            &Usage::tokens(1_000, 0),
            now(),
        )
        .unwrap();
    assert_eq!(prefixed.priced_model(), "gpt-test");
}

#[test]
fn aliases_and_fallbacks_record_what_was_priced() {
    let t = table();
    let alias = t
        .cost(
            &Provider::Azure,
            "prod-gpt",
            &Usage::tokens(1_000, 0),
            now(),
        )
        .unwrap();
    assert_eq!(alias.priced_provider(), &Provider::OpenAi);
    assert_eq!(alias.priced_model(), "gpt-test");
    let fallback = t
        .cost(
            &Provider::Azure,
            "gpt-test-2024-11-20",
            &Usage::tokens(1_000, 0),
            now(),
        )
        .unwrap();
    assert_eq!(fallback.priced_provider(), &Provider::OpenAi);
    assert_eq!(fallback.priced_model(), "gpt-test");
}

#[test]
fn the_price_in_force_at_the_request_time_applies() {
    let t = table();
    let usage = Usage::tokens(1_000_000, 0);
    let before = t
        .cost(
            &Provider::OpenAi,
            "versioned",
            &usage,
            at("2026-11-14T23:59:59Z"),
        )
        .unwrap();
    assert_eq!(before.total(), d("1"));
    let after = t
        .cost(
            &Provider::OpenAi,
            "versioned",
            &usage,
            at("2026-11-15T00:00:00Z"),
        )
        .unwrap();
    assert_eq!(after.total(), d("0.5"));
    let err = t
        .cost(
            &Provider::OpenAi,
            "versioned",
            &usage,
            at("2025-06-01T00:00:00Z"),
        )
        .unwrap_err();
    assert!(matches!(err, CostError::NoPriceInForce { .. }));
}

#[test]
fn workspace_overrides_layer_over_the_table() {
    let negotiated = file::parse(
        r#"
format = 1
version = "acme-q4"
currency = "USD"
[[model]]
provider = "openai"
name = "gpt-test"
input = "2"
output = "8"
"#,
    )
    .unwrap();
    let layered = table().with_overrides(&negotiated).unwrap();
    let cost = layered
        .cost(
            &Provider::OpenAi,
            "gpt-test",
            &Usage::tokens(1_000, 500),
            now(),
        )
        .unwrap();
    assert_eq!(cost.total(), d("0.006"));
    assert_eq!(cost.price_version(), "test-1+acme-q4");
    // Models the overrides do not name keep their prices.
    let other = layered
        .cost(
            &Provider::OpenAi,
            "reasoner",
            &Usage::tokens(1_000, 0),
            now(),
        )
        .unwrap();
    assert_eq!(other.total(), d("0.001"));
}

#[test]
fn price_files_refuse_floats_unknown_fields_and_other_formats() {
    let float = TABLE.replace("input = \"2.50\"", "input = 2.50");
    assert!(file::parse(&float).is_err());
    let unknown = TABLE.replace("cache_read = \"1.25\"", "cache_reed = \"1.25\"");
    let err = file::parse(&unknown).unwrap_err();
    assert!(err.to_string().contains("cache_reed"), "{err}");
    let v2 = TABLE.replace("format = 1", "format = 2");
    assert!(matches!(
        file::parse(&v2),
        Err(price::LoadError::UnsupportedFormat(2))
    ));
    let negative = TABLE.replace("output = \"10\"", "output = \"-10\"");
    assert!(file::parse(&negative).is_err());
}

#[test]
fn the_bundled_table_is_current_and_complete() {
    let table = PriceTable::bundled();
    let models = table.prices().count();
    assert!(models >= 60, "{models} models");
    for price in table.prices() {
        assert!(price.as_of().is_some(), "{} has no as_of", price.model());
        assert!(
            price.source().is_some_and(|s| s.starts_with("https://")),
            "{} has no source",
            price.model()
        );
    }
    for provider in [
        Provider::OpenAi,
        Provider::Anthropic,
        Provider::Gemini,
        Provider::Mistral,
        Provider::DeepSeek,
        Provider::Xai,
        Provider::Bedrock,
    ] {
        assert!(
            table.prices().any(|p| p.provider() == &provider),
            "no {provider} model"
        );
    }
}

#[test]
fn bundled_normalisation_of_real_model_ids() {
    let table = PriceTable::bundled();
    let usage = Usage::tokens(1_000, 100);
    for (provider, model, priced) in [
        (Provider::OpenAi, "gpt-4o-2024-08-06", "gpt-4o"),
        (Provider::OpenAi, "openai/gpt-4o", "gpt-4o"),
        (Provider::Azure, "gpt-4o-2024-11-20", "gpt-4o"),
        (
            Provider::Anthropic,
            "claude-sonnet-4-5-20250929",
            "claude-sonnet-4-5",
        ),
        (
            Provider::VertexAi,
            "claude-sonnet-4-5@20250929",
            "claude-sonnet-4-5",
        ),
        (Provider::VertexAi, "gemini-2.5-pro", "gemini-2.5-pro"),
        (
            Provider::Bedrock,
            "anthropic.claude-3-5-sonnet-20241022-v2:0",
            "anthropic.claude-3-5-sonnet-20241022-v2:0",
        ),
        (
            Provider::Bedrock,
            "eu.anthropic.claude-haiku-4-5-20251001-v1:0",
            "anthropic.claude-haiku-4-5-20251001-v1:0",
        ),
        (
            Provider::Bedrock,
            "us.anthropic.claude-sonnet-4-5-20250929-v1:0",
            "us.anthropic.claude-sonnet-4-5-20250929-v1:0",
        ),
        (
            Provider::Bedrock,
            "global.anthropic.claude-opus-4-8",
            "claude-opus-4-8",
        ),
        (
            Provider::OpenRouter,
            "anthropic/claude-sonnet-4.5",
            "claude-sonnet-4-5",
        ),
        (
            Provider::Mistral,
            "mistral-medium-2508",
            "mistral-medium-2508",
        ),
        (Provider::Gemini, "gemini-1.5-flash-002", "gemini-1.5-flash"),
    ] {
        let cost = table
            .cost(&provider, model, &usage, now())
            .unwrap_or_else(|e| panic!("{model}: {e}"));
        assert_eq!(cost.priced_model(), priced, "{provider} {model}");
    }
    // The US inference profile carries its 10% regional premium.
    let us = table
        .cost(
            &Provider::Bedrock,
            "us.anthropic.claude-sonnet-4-5-20250929-v1:0",
            &usage,
            now(),
        )
        .unwrap();
    let plain = table
        .cost(
            &Provider::Bedrock,
            "anthropic.claude-sonnet-4-5-20250929-v1:0",
            &usage,
            now(),
        )
        .unwrap();
    assert_eq!(us.total(), plain.total() * d("1.1"));
}
