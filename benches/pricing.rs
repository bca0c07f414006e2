//! Price lookup and cost computation.
//!
//! | bench | what it measures |
//! |---|---|
//! | `lookup/exact` | finding `gpt-4o` under OpenAI |
//! | `lookup/dated` | `gpt-4o-2024-08-06` falling back to its base model |
//! | `lookup/bedrock` | a regional Bedrock id, normalised |
//! | `cost/simple` | lookup + cost of a plain input/output usage |
//! | `cost/dated` | lookup of a dated name falling back to its base + cost |
//! | `cost/cached` | lookup + cost with cache reads and 5m/1h writes |
//! | `cost/tiered` | lookup + cost above a long-context threshold |

use std::hint::black_box;

use chrono::{DateTime, Utc};
use criterion::{Criterion, criterion_group, criterion_main};
use routero::{PriceTable, Provider, Usage};

fn at() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-11-28T12:00:00Z")
        .expect("valid timestamp")
        .to_utc()
}

fn lookup(c: &mut Criterion) {
    let table = PriceTable::bundled();
    let at = at();
    let mut group = c.benchmark_group("lookup");
    group.bench_function("exact", |b| {
        b.iter(|| {
            table
                .lookup(black_box(&Provider::OpenAi), black_box("gpt-4o"), at)
                .is_ok()
        })
    });
    group.bench_function("dated", |b| {
        b.iter(|| {
            table
                .lookup(
                    black_box(&Provider::OpenAi),
                    black_box("gpt-4o-2024-08-06"),
                    at,
                )
                .is_ok()
        })
    });
    group.bench_function("bedrock", |b| {
        b.iter(|| {
            table
                .lookup(
                    black_box(&Provider::Bedrock),
                    black_box("eu.anthropic.claude-haiku-4-5-20251001-v1:0"),
                    at,
                )
                .is_ok()
        })
    });
    group.finish();
}

fn cost(c: &mut Criterion) {
    let table = PriceTable::bundled();
    let at = at();
    let simple = Usage::tokens(1_200, 350);
    let mut cached = Usage::tokens(2_113, 612);
    cached.cache_read_tokens = 12_288;
    cached.cache_write_5m_tokens = 1_024;
    cached.cache_write_1h_tokens = 2_048;
    let mut tiered = Usage::tokens(230_000, 4_000);
    tiered.cache_read_tokens = 16_384;
    tiered.reasoning_tokens = Some(1_024);

    let mut group = c.benchmark_group("cost");
    group.bench_function("simple", |b| {
        b.iter(|| {
            table
                .cost(
                    black_box(&Provider::OpenAi),
                    black_box("gpt-4o"),
                    black_box(&simple),
                    at,
                )
                .map(|c| c.total())
        })
    });
    group.bench_function("dated", |b| {
        b.iter(|| {
            table
                .cost(
                    black_box(&Provider::OpenAi),
                    black_box("gpt-4o-2024-08-06"),
                    black_box(&simple),
                    at,
                )
                .map(|c| c.total())
        })
    });
    group.bench_function("cached", |b| {
        b.iter(|| {
            table
                .cost(
                    black_box(&Provider::Anthropic),
                    black_box("claude-sonnet-4-5"),
                    black_box(&cached),
                    at,
                )
                .map(|c| c.total())
        })
    });
    group.bench_function("tiered", |b| {
        b.iter(|| {
            table
                .cost(
                    black_box(&Provider::Gemini),
                    black_box("gemini-2.5-pro"),
                    black_box(&tiered),
                    at,
                )
                .map(|c| c.total())
        })
    });
    group.finish();
}

criterion_group!(benches, lookup, cost);
criterion_main!(benches);
