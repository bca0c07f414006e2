//! Usage extraction plus pricing of typical response bodies, and SSE scanning.
//!
//! | bench | what it measures |
//! |---|---|
//! | `extract_and_price/<provider>` | `extract::from_body` + `PriceTable::cost` on a fixture body |
//! | `stream/<provider>` | `StreamExtractor` over a whole fixture stream, plus pricing |
//! | `sse_scan/1MiB` | the SSE parser alone over 1 MiB of OpenAI-style chunks (throughput) |
//! | `extract_and_price_100KB/<provider>` | the same on the fixture body with its generated text grown to about 100 KB (escapes included) |
//! | `stream_10MB/<provider>` | `StreamExtractor` over a 10 MB stream made of the fixture's events (its content events repeated between its first and its last ones), fed in 16 KiB pieces, plus pricing |
//! | `stream_10MB/memchr_limit` | one `memchr` pass over the same OpenAI bytes in the same pieces: what reading them costs at all |
//! | `stream_10MB_parts/framing/<provider>` | the SSE parser alone over the same streams in the same pieces |
//! | `stream_10MB_parts/needles/<provider>` | the substring searches that decide which events can matter, alone over the same pieces: OpenAI's four keys in one aho-corasick pass, Anthropic's three `memmem` passes |

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

/// A fixture body with about 100 KB of generated text inserted at the start of the
/// first string after `key` (its generated text), escapes included.
fn long_body(body: &[u8], key: &str) -> Vec<u8> {
    let at = body
        .windows(key.len())
        .position(|w| w == key.as_bytes())
        .expect("the fixture has its text key");
    let open = at
        + key.len()
        + body[at + key.len()..]
            .iter()
            .position(|&b| b == b'"')
            .expect("a string value")
        + 1;
    let line = br#"The invoice total for \"Acme Corp\" is $42.17, due on the 30th.\n"#;
    let mut out = body[..open].to_vec();
    while out.len() < 100_000 {
        out.extend_from_slice(line);
    }
    out.extend_from_slice(&body[open..]);
    out
}

fn extract_and_price_long(c: &mut Criterion) {
    let table = PriceTable::bundled();
    let at = at();
    let mut group = c.benchmark_group("extract_and_price_100KB");
    for ((name, provider, model, body), key) in
        BODIES
            .into_iter()
            .take(3)
            .zip([r#""content":"#, r#""text":"#, r#""text":"#])
    {
        let body = long_body(body, key);
        group.throughput(Throughput::Bytes(body.len() as u64));
        group.bench_function(name, |b| {
            b.iter(|| {
                let extraction =
                    extract::from_body(&provider, black_box(&body), &[]).expect("a valid body");
                let model = extraction.model.as_deref().unwrap_or(model);
                table
                    .cost(&provider, model, &extraction.usage, at)
                    .map(|c| c.total())
            })
        });
    }
    group.throughput(Throughput::Bytes(100_000));
    let plain = long_body(BODIES[0].3, r#""content":"#);
    group.bench_function("memchr_limit", |b| {
        b.iter(|| memchr::memchr_iter(b'"', black_box(&plain)).count())
    });
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

/// A stream of about 10 MB from a fixture's events: the first `head` events, then
/// the content events after them repeated, then the last `tail` events.
fn long_stream(fixture: &[u8], head: usize, tail: usize) -> Vec<u8> {
    let separator: &[u8] = if fixture.windows(4).any(|w| w == b"\r\n\r\n") {
        b"\r\n\r\n"
    } else {
        b"\n\n"
    };
    let mut events: Vec<&[u8]> = Vec::new();
    let mut rest = fixture;
    while let Some(at) = rest.windows(separator.len()).position(|w| w == separator) {
        events.push(&rest[..at + separator.len()]);
        rest = &rest[at + separator.len()..];
    }
    let middle = &events[head..events.len() - tail];
    let mut out: Vec<u8> = events[..head].concat();
    while out.len() < 10_000_000 {
        for event in middle {
            out.extend_from_slice(event);
        }
    }
    for event in &events[events.len() - tail..] {
        out.extend_from_slice(event);
    }
    out
}

fn long_streams(c: &mut Criterion) {
    let table = PriceTable::bundled();
    let at = at();
    let mut group = c.benchmark_group("stream_10MB");
    group.sample_size(20);
    // (fixture, events kept at the start, events kept at the end): OpenAI's role
    // chunk, then its usage chunk and [DONE]; Anthropic's message_start and first
    // content block, then its stop, message_delta and message_stop; Gemini's chunks
    // all carry usageMetadata.
    let mut openai = Vec::new();
    for ((name, provider, fixture), (head, tail)) in
        STREAMS.into_iter().zip([(1, 3), (3, 3), (1, 1)])
    {
        let bytes = long_stream(fixture, head, tail);
        if name == "openai" {
            openai.clone_from(&bytes);
        }
        group.throughput(Throughput::Bytes(bytes.len() as u64));
        group.bench_function(name, |b| {
            b.iter(|| {
                let mut stream = StreamExtractor::new(&provider);
                for piece in black_box(&bytes).chunks(16 << 10) {
                    stream.push(piece).expect("a valid stream");
                }
                let extraction = stream.finish().expect("the stream has usage");
                let model = extraction.model.as_deref().unwrap_or_default();
                table
                    .cost(&provider, model, &extraction.usage, at)
                    .map(|c| c.total())
            })
        });
    }
    group.throughput(Throughput::Bytes(openai.len() as u64));
    group.bench_function("memchr_limit", |b| {
        b.iter(|| {
            black_box(&openai)
                .chunks(16 << 10)
                .map(|piece| memchr::memchr_iter(b'\n', piece).count())
                .sum::<usize>()
        })
    });
    group.finish();
}

/// The two halves of a stream's work by themselves, over the bytes of
/// `stream_10MB`: cutting it into events, and searching it for what can matter.
fn long_stream_parts(c: &mut Criterion) {
    let mut group = c.benchmark_group("stream_10MB_parts");
    group.sample_size(20);
    let mut streams = Vec::new();
    for ((name, _, fixture), (head, tail)) in STREAMS.into_iter().zip([(1, 3), (3, 3), (1, 1)]) {
        streams.push((name, long_stream(fixture, head, tail)));
    }
    for (name, bytes) in &streams {
        group.throughput(Throughput::Bytes(bytes.len() as u64));
        group.bench_function(format!("framing/{name}"), |b| {
            b.iter(|| {
                let mut parser = SseParser::new();
                let mut seen = 0usize;
                let mut count = |e: SseEvent<'_>| -> Result<(), SseTooLarge> {
                    seen += e.data.len();
                    Ok(())
                };
                for piece in black_box(bytes).chunks(16 << 10) {
                    parser.push(piece, &mut count).expect("valid stream");
                }
                parser.finish(&mut count).expect("valid stream");
                seen
            })
        });
    }
    // The same needles as the extractor's (stream.rs): OpenAI's keys, Anthropic's
    // event types, Bedrock's metrics and unicode escapes.
    let openai_keys = aho_corasick::packed::Config::new()
        .match_kind(aho_corasick::packed::MatchKind::LeftmostFirst)
        .builder()
        .extend([
            &br#""response""#[..],
            br#""x_groq""#,
            br#""usage""#,
            br#""service_tier""#,
        ])
        .build()
        .expect("a vectorised searcher on this CPU");
    let anthropic_needles =
        [&b"message_"[..], b"invocationMetrics", br"\u"].map(memchr::memmem::Finder::new);
    for (name, bytes) in &streams[..2] {
        group.throughput(Throughput::Bytes(bytes.len() as u64));
        group.bench_function(format!("needles/{name}"), |b| {
            b.iter(|| {
                black_box(bytes)
                    .chunks(16 << 10)
                    .map(|piece| match *name {
                        "openai" => openai_keys.find_iter(piece).count(),
                        _ => anthropic_needles
                            .iter()
                            .map(|n| n.find_iter(piece).count())
                            .sum(),
                    })
                    .sum::<usize>()
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

criterion_group!(
    benches,
    extract_and_price,
    extract_and_price_long,
    streams,
    long_streams,
    long_stream_parts,
    sse_scan
);
criterion_main!(benches);
