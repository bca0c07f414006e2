//! Every provider stream fixture, fed whole and in random chunkings, against its
//! hand-derived expected usage; hostile streams never panic.

use std::fs;
use std::path::Path;

use proptest::prelude::*;
use routero_core::extract::{ExtractError, Extraction, StreamExtractor, eventstream};
use routero_core::{Provider, ServiceTier};
use serde_json::Value;

mod common;

use common::count;

fn provider_of(dir: &str) -> Provider {
    match dir {
        "openai_chat" | "openai_responses" => Provider::OpenAi,
        "azure_openai" => Provider::Azure,
        other => Provider::parse(other).unwrap(),
    }
}

/// A stream fixture: its provider, raw bytes as sent on the wire, and expectation.
struct Sample {
    name: String,
    provider: Provider,
    bytes: Vec<u8>,
    expected: Value,
}

/// Bedrock fixtures are decoded frames (`[{"eventType": payload}, …]`): encode them
/// into the binary frames the wire carries.
fn encode_events(path: &Path) -> Vec<u8> {
    let events: Vec<serde_json::Map<String, Value>> =
        serde_json::from_slice(&fs::read(path).unwrap()).unwrap();
    let mut bytes = Vec::new();
    for event in events {
        for (event_type, payload) in event {
            let headers = [
                (":event-type", event_type.as_str()),
                (":content-type", "application/json"),
                (":message-type", "event"),
            ];
            bytes.extend(eventstream::encode(
                &headers,
                &serde_json::to_vec(&payload).unwrap(),
            ));
        }
    }
    bytes
}

fn samples() -> Vec<Sample> {
    let mut out = Vec::new();
    for (dir_name, file, path) in common::fixture_files() {
        let (stem, bytes) = if let Some(stem) = file.strip_suffix(".sse") {
            (stem.to_owned(), fs::read(&path).unwrap())
        } else if let Some(stem) = file.strip_suffix(".events.json") {
            (stem.to_owned(), encode_events(&path))
        } else {
            continue;
        };
        let expected = common::expected(&path, &stem);
        out.push(Sample {
            name: format!("{dir_name}/{file}"),
            provider: provider_of(&dir_name),
            bytes,
            expected,
        });
    }
    out
}

fn run(
    provider: &Provider,
    chunks: impl IntoIterator<Item = Vec<u8>>,
) -> Result<Extraction, ExtractError> {
    let mut stream = StreamExtractor::new(provider);
    for chunk in chunks {
        stream.push(&chunk)?;
    }
    stream.finish()
}

fn check(sample: &Sample, got: Result<Extraction, ExtractError>) {
    let what = &sample.name;
    if sample.expected.get("usage_available") == Some(&Value::Bool(false)) {
        assert!(
            matches!(got, Err(ExtractError::NoUsage { .. })),
            "{what}: {got:?}"
        );
        return;
    }
    let got = got.unwrap_or_else(|e| panic!("{what}: {e}"));
    let u = got.usage;
    let e = &sample.expected;
    assert_eq!(
        Some(u.input_tokens),
        count(e, "input_tokens"),
        "{what} input"
    );
    assert_eq!(
        Some(u.cache_read_tokens),
        count(e, "cache_read_tokens"),
        "{what} cache read"
    );
    assert_eq!(
        Some(u.cache_write_tokens()),
        count(e, "cache_write_tokens"),
        "{what} cache write"
    );
    assert_eq!(
        Some(u.output_tokens),
        count(e, "output_tokens"),
        "{what} output"
    );
    match e.get("reasoning_tokens") {
        Some(Value::Null) | None => assert_eq!(u.reasoning_tokens, None, "{what} reasoning"),
        Some(v) => assert_eq!(
            u.reasoning_tokens.unwrap_or(0),
            v.as_u64().unwrap(),
            "{what} reasoning"
        ),
    }
    for (key, value) in [
        ("cache_write_5m_tokens", u.cache_write_5m_tokens),
        ("cache_write_1h_tokens", u.cache_write_1h_tokens),
        ("web_search_requests", u.web_search_requests),
        ("web_search_calls", u.web_search_requests),
    ] {
        if let Some(want) = count(e, key) {
            assert_eq!(value, want, "{what} {key}");
        }
    }
    if let Some(tier) = e.get("service_tier").and_then(Value::as_str) {
        assert_eq!(
            Some(u.service_tier),
            ServiceTier::from_provider(tier),
            "{what} tier"
        );
    }
    if let Some(cost) = e.get("provider_reported_cost_usd") {
        let want = routero_core::money::parse_decimal_exact(&cost.to_string()).unwrap();
        assert_eq!(got.provider_cost, Some(want), "{what} cost");
    }
}

#[test]
fn every_stream_fixture_whole() {
    let samples = samples();
    assert_eq!(samples.len(), 20, "every stream fixture is checked");
    for sample in &samples {
        check(sample, run(&sample.provider, [sample.bytes.clone()]));
    }
}

#[test]
fn every_stream_fixture_byte_by_byte() {
    for sample in samples() {
        let got = run(&sample.provider, sample.bytes.iter().map(|b| vec![*b]));
        check(&sample, got);
    }
}

#[test]
fn claude_on_vertex_follows_anthropic_rules() {
    for sample in samples()
        .into_iter()
        .filter(|s| s.name.starts_with("anthropic/"))
    {
        let vertex = Sample {
            provider: Provider::VertexAi,
            ..sample
        };
        check(&vertex, run(&vertex.provider, [vertex.bytes.clone()]));
    }
}

#[test]
fn a_cut_stream_reports_what_it_knew() {
    let sample = samples()
        .into_iter()
        .find(|s| s.name == "anthropic/message_stream.sse")
        .unwrap();
    let text = String::from_utf8(sample.bytes.clone()).unwrap();
    let cut = text.find("event: message_delta").unwrap();
    let mut stream = StreamExtractor::new(&Provider::Anthropic);
    stream.push(&sample.bytes[..cut]).unwrap();
    let partial = stream.usage_so_far().unwrap();
    assert_eq!(partial.usage.input_tokens, 472);
    assert_eq!(
        partial.usage.output_tokens, 1,
        "the placeholder from message_start"
    );
    let none = StreamExtractor::new(&Provider::OpenAi);
    assert!(matches!(
        none.usage_so_far(),
        Err(ExtractError::NoUsage { .. })
    ));
}

#[test]
fn corrupt_bedrock_frames_are_typed_errors() {
    let sample = samples()
        .into_iter()
        .find(|s| s.name == "bedrock/converse_stream.events.json")
        .unwrap();
    let mut bytes = sample.bytes.clone();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x40;
    let err = run(&Provider::Bedrock, [bytes]).unwrap_err();
    assert!(matches!(err, ExtractError::Malformed { .. }), "{err:?}");
    let truncated = sample.bytes[..sample.bytes.len() - 5].to_vec();
    assert!(matches!(
        run(&Provider::Bedrock, [truncated]),
        Err(ExtractError::Malformed { .. })
    ));
}

fn chunked(bytes: &[u8], cuts: &[usize]) -> Vec<Vec<u8>> {
    let mut points: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
    points.sort_unstable();
    let mut out = Vec::new();
    let mut start = 0;
    for point in points {
        out.push(bytes[start..point].to_vec());
        start = point;
    }
    out.push(bytes[start..].to_vec());
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn any_chunking_gives_the_same_usage(cuts in proptest::collection::vec(any::<usize>(), 0..40)) {
        for sample in samples() {
            let whole = run(&sample.provider, [sample.bytes.clone()]);
            let pieces = run(&sample.provider, chunked(&sample.bytes, &cuts));
            prop_assert_eq!(format!("{whole:?}"), format!("{pieces:?}"), "{}", sample.name);
        }
    }

    #[test]
    fn truncated_and_random_bytes_never_panic(cut in any::<usize>(), noise in proptest::collection::vec(any::<u8>(), 0..512)) {
        for sample in samples() {
            let end = cut % (sample.bytes.len() + 1);
            let _ = run(&sample.provider, [sample.bytes[..end].to_vec()]);
            let mut mixed = sample.bytes[..end].to_vec();
            mixed.extend_from_slice(&noise);
            let _ = run(&sample.provider, [mixed]);
        }
        for provider in Provider::KNOWN {
            let _ = run(&provider, [noise.clone()]);
        }
    }
}

/// An SSE stream of `events` (each a data payload), in one piece and cut at every
/// byte.
fn sse_every_way(provider: &Provider, events: &[&str]) -> Vec<Result<Extraction, ExtractError>> {
    let bytes: Vec<u8> = events
        .iter()
        .flat_map(|e| format!("data: {e}\n\n").into_bytes())
        .collect();
    let mut results = vec![run(provider, [bytes.clone()])];
    for cut in 1..bytes.len() {
        results.push(run(
            provider,
            [bytes[..cut].to_vec(), bytes[cut..].to_vec()],
        ));
    }
    results
}

/// Events a long stream is skipped over unparsed when they cannot change its usage;
/// whatever could is still read: usage-like text inside content, a tier that changes
/// mid-stream, keys nested in content, escaped event types, non-JSON.
#[test]
fn events_that_cannot_matter_are_skipped_and_those_that_can_are_read() {
    let first = r#"{"model":"gpt-4o","service_tier":"default","choices":[{"delta":{"role":"assistant"}}],"usage":null}"#;
    let text = r#"{"model":"gpt-4o","service_tier":"default","choices":[{"delta":{"content":"say \"usage\": {\"prompt_tokens\": 999}, \"service_tier\":\"flex\""}}],"usage":null}"#;
    let flex = r#"{"model":"gpt-4o","service_tier":"flex","choices":[{"delta":{"content":"x"}}],"usage":null}"#;
    let nested = r#"{"model":"gpt-4o","service_tier":"default","choices":[{"delta":{"content":"x"},"usage":{"prompt_tokens":1}}],"usage":null}"#;
    let usage =
        r#"{"model":"gpt-4o","choices":[],"usage":{"prompt_tokens":10,"completion_tokens":4}}"#;
    for result in sse_every_way(&Provider::OpenAi, &[first, text, text, usage]) {
        let usage = result.unwrap().usage;
        assert_eq!((usage.input_tokens, usage.output_tokens), (10, 4));
        assert_eq!(usage.service_tier, ServiceTier::Standard);
    }
    // The tier changes in a content chunk, the usage chunk names none: the last one
    // stands, whichever way it changed.
    for result in sse_every_way(&Provider::OpenAi, &[first, text, flex, usage]) {
        assert_eq!(result.unwrap().usage.service_tier, ServiceTier::Flex);
    }
    for result in sse_every_way(&Provider::OpenAi, &[first, flex, text, usage]) {
        assert_eq!(result.unwrap().usage.service_tier, ServiceTier::Standard);
    }
    // JSON allows whitespace before a key's colon: such a usage is still read.
    let spaced =
        r#"{"model":"gpt-4o","choices":[],"usage" : {"prompt_tokens":10,"completion_tokens":4}}"#;
    for result in sse_every_way(&Provider::OpenAi, &[first, text, spaced]) {
        let usage = result.unwrap().usage;
        assert_eq!((usage.input_tokens, usage.output_tokens), (10, 4));
    }
    // A usage object nested in a chunk is not the chunk's usage.
    for result in sse_every_way(&Provider::OpenAi, &[first, nested, usage]) {
        assert_eq!(result.unwrap().usage.input_tokens, 10);
    }
    // A content chunk that is not JSON is refused, skipped or not.
    let broken = r#"not json, "usage":null"#;
    assert!(matches!(
        run(
            &Provider::OpenAi,
            [format!("data: {first}\n\ndata: {broken}\n\ndata: {usage}\n\n").into_bytes()]
        ),
        Err(ExtractError::Malformed { .. })
    ));

    let start = r#"{"type":"message_start","message":{"model":"claude-sonnet-4-5","usage":{"input_tokens":20,"output_tokens":1}}}"#;
    let delta_text = r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"a message_delta with \"usage\":{\"output_tokens\":999}"}}"#;
    let plain =
        r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"plain"}}"#;
    let escaped_delta = r#"{"type":"\u006dessage_delta","delta":{},"usage":{"output_tokens":7}}"#;
    for result in sse_every_way(
        &Provider::Anthropic,
        &[start, plain, delta_text, plain, escaped_delta, plain],
    ) {
        let usage = result.unwrap().usage;
        assert_eq!((usage.input_tokens, usage.output_tokens), (20, 7));
    }
}

/// Gemini's chunks each repeat `usageMetadata`: the last one is the stream's usage,
/// parsed when asked for. One a later chunk replaces is checked for structure only;
/// the last one, a `null` after it, one nested in the content, and broken JSON keep
/// their meaning.
#[test]
fn gemini_usage_is_the_last_metadata_parsed_when_asked() {
    let chunk = |usage: &str| {
        format!(
            r#"{{"candidates":[{{"content":{{"parts":[{{"text":"hi \"usageMetadata\": {{}}"}}],"role":"model"}}}}],"usageMetadata":{usage},"modelVersion":"gemini-2.5-flash"}}"#
        )
    };
    let mistyped = chunk(r#"{"promptTokenCount":"12"}"#);
    let good = chunk(r#"{"promptTokenCount":12,"candidatesTokenCount":5}"#);
    let null = chunk("null");
    let nested = r#"{"candidates":[{"usageMetadata":{"promptTokenCount":999}}]}"#;
    for provider in [Provider::Gemini, Provider::VertexAi] {
        for events in [
            vec![&mistyped[..], &good],
            vec![&good, &null],
            vec![&good, nested],
            vec![&mistyped, &good, nested, &null],
        ] {
            for result in sse_every_way(&provider, &events) {
                let extraction = result.unwrap();
                assert_eq!(extraction.model.as_deref(), Some("gemini-2.5-flash"));
                let usage = extraction.usage;
                assert_eq!((usage.input_tokens, usage.output_tokens), (12, 5));
            }
        }
        for events in [
            vec![&good[..], &mistyped],
            vec![&good, r#"{"usageMetadata":{"promptTokenCount":1}"#],
            vec![&good, r#"{"usageMetadata":{"promptTokenCount":1]}"#],
        ] {
            for result in sse_every_way(&provider, &events) {
                assert!(
                    matches!(result, Err(ExtractError::Malformed { .. })),
                    "{events:?}: {result:?}"
                );
            }
        }
        assert!(matches!(
            run(&provider, [format!("data: {nested}\n\n").into_bytes()]),
            Err(ExtractError::NoUsage { .. })
        ));
        // A stream cut short reports the last metadata it saw, or why it cannot.
        let mut stream = StreamExtractor::new(&provider);
        stream.push(format!("data: {good}\n\n").as_bytes()).unwrap();
        assert_eq!(stream.usage_so_far().unwrap().usage.input_tokens, 12);
        stream
            .push(format!("data: {mistyped}\n\n").as_bytes())
            .unwrap();
        assert!(matches!(
            stream.usage_so_far(),
            Err(ExtractError::Malformed { .. })
        ));
    }
}
