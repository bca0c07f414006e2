//! Usage extraction plus pricing of typical 1–2 KB response bodies.
//!
//! | bench | body |
//! |---|---|
//! | `extract_and_price/openai_chat` | Chat Completion with cached input and reasoning |
//! | `extract_and_price/anthropic` | Message with 5m/1h cache writes and web search |
//! | `extract_and_price/gemini` | generateContent with thinking and cached content |

use std::hint::black_box;

use chrono::{DateTime, Utc};
use criterion::{Criterion, criterion_group, criterion_main};
use routero::extract;
use routero::{PriceTable, Provider};

const OPENAI: &[u8] = include_bytes!(
    "../routero-core/tests/data/providers/openai_chat/chat_completion_reasoning_cached.json"
);
const ANTHROPIC: &[u8] =
    include_bytes!("../routero-core/tests/data/providers/anthropic/message_cache_web_search.json");
const GEMINI: &[u8] = include_bytes!(
    "../routero-core/tests/data/providers/gemini/generate_content_thinking_cached.json"
);

fn extract_and_price(c: &mut Criterion) {
    let table = PriceTable::bundled();
    let at: DateTime<Utc> = DateTime::parse_from_rfc3339("2026-11-28T12:00:00Z")
        .expect("valid timestamp")
        .to_utc();
    let mut group = c.benchmark_group("extract_and_price");
    for (name, provider, body) in [
        ("openai_chat", Provider::OpenAi, OPENAI),
        ("anthropic", Provider::Anthropic, ANTHROPIC),
        ("gemini", Provider::Gemini, GEMINI),
    ] {
        group.bench_function(name, |b| {
            b.iter(|| {
                let extraction =
                    extract::from_body(&provider, black_box(body), &[]).expect("fixture extracts");
                let model = extraction.model.as_deref().unwrap_or_default();
                table
                    .cost(&provider, model, &extraction.usage, at)
                    .map(|c| c.total())
            })
        });
    }
    group.finish();
}

criterion_group!(benches, extract_and_price);
criterion_main!(benches);
