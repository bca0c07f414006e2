//! Prices a day of simulated gateway traffic with the bundled price table and prints
//! what each model cost, exactly.
//!
//! ```text
//! cargo run --example quickstart
//! ```
//!
//! It runs on the embedded default: no servers, no files.

use std::collections::BTreeMap;
use std::process::ExitCode;

use chrono::{DateTime, Duration, Utc};
use routero::{CostError, PriceTable, Provider, ServiceTier, Usage};
use rust_decimal::Decimal;

/// Models the simulated gateway serves, as responses name them.
const MODELS: [(Provider, &str); 10] = [
    (Provider::OpenAi, "gpt-4o-2024-08-06"),
    (Provider::OpenAi, "gpt-5-mini"),
    (Provider::Azure, "gpt-4o-mini-2024-07-18"),
    (Provider::Anthropic, "claude-sonnet-4-5-20250929"),
    (Provider::Anthropic, "claude-haiku-4-5-20251001"),
    (Provider::Gemini, "gemini-2.5-pro"),
    (
        Provider::Bedrock,
        "us.anthropic.claude-sonnet-4-5-20250929-v1:0",
    ),
    (Provider::DeepSeek, "deepseek-chat"),
    (Provider::Mistral, "mistral-small-latest"),
    (Provider::Xai, "grok-4.3"),
];

/// A small deterministic generator, so that every run prints the same report.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, bound: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % bound
    }
}

#[derive(Default)]
struct Line {
    requests: u64,
    input: u64,
    cached: u64,
    output: u64,
    cost: Decimal,
}

fn main() -> ExitCode {
    let table = PriceTable::bundled();
    let start: DateTime<Utc> = DateTime::parse_from_rfc3339("2026-11-28T00:00:00Z")
        .expect("valid timestamp")
        .to_utc();
    let mut rng = Lcg(42);
    let mut by_model: BTreeMap<String, Line> = BTreeMap::new();
    let mut sum_of_requests = Decimal::ZERO;
    let mut unpriced = 0;

    for i in 0..400 {
        let (provider, model) = &MODELS[usize::try_from(rng.next(10)).unwrap_or(0)];
        let mut usage = Usage::tokens(200 + rng.next(8_000), 50 + rng.next(2_000));
        if rng.next(3) == 0 {
            usage.cache_read_tokens = 1_024 * rng.next(32);
        }
        if *provider == Provider::Anthropic && rng.next(5) == 0 {
            usage.cache_write_5m_tokens = 1_024 * rng.next(4);
            usage.cache_write_1h_tokens = 1_024 * rng.next(2);
        }
        if *provider == Provider::OpenAi && rng.next(10) == 0 {
            usage.service_tier = ServiceTier::Batch;
        }
        if *provider == Provider::Gemini && rng.next(20) == 0 {
            usage.input_tokens += 250_000; // a long-context request
        }
        let at = start + Duration::seconds(i * 200);
        match table.cost(provider, model, &usage, at) {
            Ok(cost) => {
                let lines: Decimal = cost.lines().map(|l| l.amount).sum();
                assert_eq!(lines, cost.total(), "the lines add up to the total");
                sum_of_requests += cost.total();
                let line = by_model
                    .entry(format!(
                        "{}/{}",
                        cost.priced_provider(),
                        cost.priced_model()
                    ))
                    .or_default();
                line.requests += 1;
                line.input += usage.input_tokens;
                line.cached += usage.cache_read_tokens;
                line.output += usage.output_tokens;
                line.cost += cost.total();
            }
            Err(CostError::UnsupportedServiceTier { .. }) => unpriced += 1,
            Err(e) => {
                eprintln!("quickstart: {e}");
                return ExitCode::FAILURE;
            }
        }
    }

    println!("Spend by model, price table {}", table.version());
    println!(
        "{:<58} {:>8} {:>12} {:>12} {:>10} {:>14}",
        "provider/model priced", "requests", "input", "cache read", "output", "cost (USD)"
    );
    let mut report_total = Decimal::ZERO;
    for (model, line) in &by_model {
        report_total += line.cost;
        println!(
            "{model:<58} {:>8} {:>12} {:>12} {:>10} {:>14}",
            line.requests,
            line.input,
            line.cached,
            line.output,
            line.cost.round_dp(6)
        );
    }
    println!("{:<58} {:>59}", "total (exact)", report_total.normalize());
    if unpriced > 0 {
        println!(
            "{unpriced} requests on a tier their model is not offered on were left unpriced, not charged $0"
        );
    }
    if report_total == sum_of_requests {
        println!("check: the report total equals the sum of per-request costs to the last digit");
        ExitCode::SUCCESS
    } else {
        eprintln!("check FAILED: report {report_total} != requests {sum_of_requests}");
        ExitCode::FAILURE
    }
}
