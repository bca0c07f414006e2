//! Usage extraction plus pricing of typical response bodies, and SSE scanning.
//!
//! | bench | what it measures |
//! |---|---|
//! | `extract_and_price/<provider>` | `extract::from_body` + `PriceTable::cost` on a fixture body |
//! | `stream/<provider>` | `StreamExtractor` over a whole fixture stream, plus pricing |
//! | `sse_scan/1MiB` | the SSE parser alone over 1 MiB of OpenAI-style chunks (throughput) |

use std::hint::black_box;

use chrono::{DateTime, Utc};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use routero::extract::sse::{SseEvent, SseParser, SseTooLarge};
use routero::extract::{self, StreamExtractor};
use routero::{PriceTable, Provider};

macro_rules! fixture {
    ($path:literal) => {
        include_bytes!(concat!("../routero-core/tests/data/providers/", $path))
    };
}

const BODIES: [(&str, Provider, &str, &[u8]); 8] = [
    (
        "openai",
        Provider::OpenAi,
        "",
        fixture!("openai_chat/chat_completion_reasoning_cached.json"),
    ),
    (
        "anthropic",
        Provider::Anthropic,
        "",
        fixture!("anthropic/message_thinking.json"),
    ),
    (
        "gemini",
        Provider::Gemini,
        "",
        fixture!("gemini/generate_content_thinking_cached.json"),
    ),
    (
        "deepseek",
        Provider::DeepSeek,
        "",
        fixture!("deepseek/chat_completion_reasoner.json"),
    ),
    (
        "xai",
        Provider::Xai,
        "",
        fixture!("xai/chat_completion_reasoning.json"),
    ),
    (
        "mistral",
        Provider::Mistral,
        "",
        fixture!("mistral/chat_completion.json"),
    ),
    (
        "bedrock",
        Provider::Bedrock,
        "anthropic.claude-haiku-4-5-20251001-v1:0",
        fixture!("bedrock/converse_cache_read.json"),
    ),
    (
        "cohere",
        Provider::Cohere,
        "command-a-03-2025",
        fixture!("cohere/chat_v2.json"),
    ),
];

const STREAMS: [(&str, Provider, &[u8]); 3] = [
    (
        "openai",
        Provider::OpenAi,
        fixture!("openai_chat/chat_stream_include_usage.sse"),
    ),
    (
        "anthropic",
        Provider::Anthropic,
        fixture!("anthropic/message_stream.sse"),
    ),
    (
        "gemini",
        Provider::Gemini,
        fixture!("gemini/stream_generate_content.sse"),
    ),
];

fn at() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-11-28T12:00:00Z")
        .expect("valid timestamp")
        .to_utc()
}

fn extract_and_price(c: &mut Criterion) {
    let table = PriceTable::bundled();
    let at = at();
    let mut group = c.benchmark_group("extract_and_price");
    for (name, provider, model, body) in BODIES {
        group.throughput(Throughput::Bytes(body.len() as u64));
        group.bench_function(name, |b| {
            b.iter(|| {
                let extraction =
                    extract::from_body(&provider, black_box(body), &[]).expect("fixture extracts");
                let model = extraction.model.as_deref().unwrap_or(model);
                table
                    .cost(&provider, model, &extraction.usage, at)
                    .map(|c| c.total())
            })
        });
    }
    group.finish();
}

fn streams(c: &mut Criterion) {
    let table = PriceTable::bundled();
    let at = at();
    let mut group = c.benchmark_group("stream");
    for (name, provider, bytes) in STREAMS {
        group.throughput(Throughput::Bytes(bytes.len() as u64));
        group.bench_function(name, |b| {
            b.iter(|| {
                let mut stream = StreamExtractor::new(&provider);
                stream.push(black_box(bytes)).expect("fixture streams");
                let extraction = stream.finish().expect("fixture has usage");
                let model = extraction.model.as_deref().unwrap_or_default();
                table
                    .cost(&provider, model, &extraction.usage, at)
                    .map(|c| c.total())
            })
        });
    }
    group.finish();
}

fn sse_scan(c: &mut Criterion) {
    let event = b"data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"model\":\"gpt-4o\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hello, world. This is a token.\"}}],\"usage\":null}\n\n";
    let mut stream = Vec::with_capacity(1 << 20);
    while stream.len() + event.len() <= 1 << 20 {
        stream.extend_from_slice(event);
    }
    let mut group = c.benchmark_group("sse_scan");
    group.throughput(Throughput::Bytes(stream.len() as u64));
    group.bench_function("1MiB", |b| {
        b.iter(|| {
            let mut parser = SseParser::new();
            let mut events = 0u64;
            let mut count = |e: SseEvent<'_>| -> Result<(), SseTooLarge> {
                events += e.data.len() as u64;
                Ok(())
            };
            // Network-sized chunks: 16 KiB.
            for chunk in black_box(&stream).chunks(16 << 10) {
                parser.push(chunk, &mut count).expect("valid stream");
            }
            parser.finish(&mut count).expect("valid stream");
            events
        })
    });
    group.finish();
}

criterion_group!(benches, extract_and_price, streams, sse_scan);
criterion_main!(benches);
