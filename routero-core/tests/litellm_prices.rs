//! Loading LiteLLM's price map: a committed sample, and the full community file when
//! `ROUTERO_LITELLM_PRICES` names it.

use chrono::{DateTime, Utc};
use routero_core::price::{self, litellm};
use routero_core::{PriceTable, Provider, ServiceTier, Usage};
use rust_decimal::Decimal;

fn at() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-11-28T12:00:00Z")
        .unwrap()
        .to_utc()
}

fn d(text: &str) -> Decimal {
    Decimal::from_str_exact(text).unwrap()
}

fn cost(table: &PriceTable, provider: Provider, model: &str, usage: &Usage) -> Decimal {
    table
        .cost(&provider, model, usage, at())
        .unwrap_or_else(|e| panic!("{model}: {e}"))
        .total()
}

#[test]
fn the_sample_map_loads_and_reports_what_it_skips() {
    let text = include_str!("data/litellm_sample.json");
    let (table, report) = price::load(text).unwrap();
    let report = report.expect("a JSON map is read as LiteLLM's");
    assert_eq!(report.entries, 10);
    assert_eq!(report.loaded, 5, "{report:?}");
    assert_eq!(report.duplicates, 1, "openai/gpt-4o is gpt-4o");
    assert_eq!(report.aliases, 1);
    let skipped: Vec<&str> = report.skipped.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(skipped, vec!["broken", "sample_spec", "tts-1"]);
    assert!(report.skipped[2].1.contains("input_cost_per_character"));
    assert_eq!(
        report.partial,
        vec![(
            "vertex_ai/gemini-1.0-pro".to_owned(),
            vec!["input_cost_per_character".to_owned()]
        )]
    );

    let sonnet = {
        let mut u = Usage::tokens(2_113, 612);
        u.cache_read_tokens = 12_288;
        u.cache_write_5m_tokens = 1_024;
        u.cache_write_1h_tokens = 2_048;
        u.web_search_requests = 2;
        u
    };
    assert_eq!(
        cost(&table, Provider::Anthropic, "claude-sonnet-4-5", &sonnet),
        d("0.0553334")
    );
    assert_eq!(
        cost(&table, Provider::Anthropic, "claude-latest", &sonnet),
        d("0.0553334")
    );

    let mut long = Usage::tokens(230_000, 4_000);
    long.cache_read_tokens = 16_384;
    assert_eq!(
        cost(&table, Provider::Gemini, "gemini-2.5-pro", &long),
        d("0.639096")
    );

    let qwen = Usage::tokens(300_000, 1_000);
    assert_eq!(
        cost(
            &table,
            Provider::parse("dashscope").unwrap(),
            "qwen-flash",
            &qwen
        ),
        d("0.077")
    );
    let qwen_short = Usage::tokens(256_000, 1_000);
    assert_eq!(
        cost(
            &table,
            Provider::parse("dashscope").unwrap(),
            "qwen-flash",
            &qwen_short
        ),
        d("0.0132")
    );
}

#[test]
fn scientific_notation_is_read_without_floats() {
    let text = r#"{"m": {"litellm_provider": "openai", "input_cost_per_token": 3.3333333333333333333e-07,
        "output_cost_per_token": 1e-05}}"#;
    let (table, _) = litellm::parse(text).unwrap();
    // An f64 would have rounded this to 3.3333333333333335e-07.
    assert_eq!(
        cost(&table, Provider::OpenAi, "m", &Usage::tokens(3, 0)),
        d("0.00000099999999999999999999")
    );
}

/// The full community map, checked to the exact decimal on a dozen well-known models.
#[test]
fn the_community_price_map() {
    let Ok(path) = std::env::var("ROUTERO_LITELLM_PRICES") else {
        eprintln!("ROUTERO_LITELLM_PRICES is not set: the full LiteLLM map is not checked");
        return;
    };
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let (table, report) = litellm::parse(&text).unwrap();
    eprintln!(
        "LiteLLM map: {} entries, {} loaded, {} aliases, {} duplicates, {} skipped, {} partial",
        report.entries,
        report.loaded,
        report.aliases,
        report.duplicates,
        report.skipped.len(),
        report.partial.len()
    );
    for (reason, count) in report.skip_reasons() {
        eprintln!("  skipped {count:>5}: {reason}");
    }
    assert!(report.loaded > 3_000, "{} loaded", report.loaded);

    let plain = Usage::tokens(1_000, 500);
    assert_eq!(
        cost(&table, Provider::OpenAi, "gpt-4o", &plain),
        d("0.0075")
    );
    assert_eq!(
        cost(&table, Provider::OpenAi, "gpt-4o-2024-08-06", &plain),
        d("0.0075")
    );

    let mut cached = Usage::tokens(1_000, 500);
    cached.cache_read_tokens = 2_000;
    assert_eq!(cost(&table, Provider::OpenAi, "gpt-4o", &cached), d("0.01"));

    let mut priority = plain;
    priority.service_tier = ServiceTier::Priority;
    assert_eq!(
        cost(&table, Provider::OpenAi, "gpt-4o", &priority),
        d("0.01275")
    );

    let mut flex = Usage::tokens(10_000, 2_000);
    flex.service_tier = ServiceTier::Flex;
    assert_eq!(cost(&table, Provider::OpenAi, "gpt-5", &flex), d("0.01625"));

    let mut sonnet = Usage::tokens(2_113, 612);
    sonnet.cache_read_tokens = 12_288;
    sonnet.cache_write_5m_tokens = 1_024;
    sonnet.cache_write_1h_tokens = 2_048;
    sonnet.web_search_requests = 2;
    assert_eq!(
        cost(&table, Provider::Anthropic, "claude-sonnet-4-5", &sonnet),
        d("0.0553334")
    );

    let mut batch = Usage::tokens(1_000, 1_000);
    batch.service_tier = ServiceTier::Batch;
    assert_eq!(
        cost(&table, Provider::Anthropic, "claude-sonnet-4-5", &batch),
        d("0.009")
    );

    let mut opus_1h = Usage::default();
    opus_1h.cache_write_1h_tokens = 10_000;
    opus_1h.service_tier = ServiceTier::Batch;
    assert_eq!(
        cost(&table, Provider::Anthropic, "claude-opus-4-8", &opus_1h),
        d("0.05")
    );

    let mut gemini_long = Usage::tokens(230_000, 4_000);
    gemini_long.cache_read_tokens = 16_384;
    assert_eq!(
        cost(&table, Provider::Gemini, "gemini-2.5-pro", &gemini_long),
        d("0.639096")
    );
    let mut gemini = Usage::tokens(2_038, 1_536);
    gemini.cache_read_tokens = 16_384;
    assert_eq!(
        cost(&table, Provider::Gemini, "gemini-2.5-pro", &gemini),
        d("0.0199555")
    );

    let mut gpt54 = Usage::tokens(300_000, 1_000);
    gpt54.cache_read_tokens = 10_000;
    gpt54.service_tier = ServiceTier::Batch;
    assert_eq!(
        cost(&table, Provider::OpenAi, "gpt-5.4", &gpt54),
        d("0.76375")
    );

    let mut deepseek = Usage::tokens(1_000, 500);
    deepseek.cache_read_tokens = 9_000;
    assert_eq!(
        cost(&table, Provider::DeepSeek, "deepseek-chat", &deepseek),
        d("0.000742")
    );

    let bedrock = Usage::tokens(1_000, 100);
    assert_eq!(
        cost(
            &table,
            Provider::Bedrock,
            "anthropic.claude-3-5-sonnet-20241022-v2:0",
            &bedrock
        ),
        d("0.0045")
    );
    assert_eq!(
        cost(
            &table,
            Provider::OpenAi,
            "text-embedding-3-small",
            &Usage::tokens(1_000, 0)
        ),
        d("0.00002")
    );

    let mut audio = Usage::tokens(312, 186);
    audio.audio_input_tokens = 271;
    audio.audio_output_tokens = 147;
    assert_eq!(
        cost(&table, Provider::OpenAi, "gpt-audio-1.5", &audio),
        d("0.0185725")
    );

    assert_eq!(
        cost(
            &table,
            Provider::parse("dashscope").unwrap(),
            "qwen-flash",
            &Usage::tokens(300_000, 1_000)
        ),
        d("0.077")
    );
}
