//! The hostile-input corpus: malformed and adversarial provider responses, ids and
//! events. Each gets its typed error, nothing panics, and a bad request recorded
//! among good ones costs the good ones nothing.
//!
//! The responses are files in `tests/data/hostile/`, listed with the error each must
//! get in `cases.json`; the oversized ones are generated here.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use routero_core::attribution::{Attribution, OrgId, RequestId, WorkspaceId};
use routero_core::conformance::{apply_first_step, sample_event};
use routero_core::extract::{self, ExtractError, Extraction, StreamExtractor};
use routero_core::memory::MemoryStore;
use routero_core::spend::{Pricing, RequestContext, SpendEvent, UnpricedReason};
use routero_core::{CostError, PriceTable, Provider, Usage};

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/hostile");

#[derive(serde::Deserialize)]
struct Case {
    file: String,
    provider: String,
    kind: String,
    expect: String,
    why: String,
}

fn cases() -> Vec<Case> {
    #[derive(serde::Deserialize)]
    struct Cases {
        cases: Vec<Case>,
    }
    let text = std::fs::read_to_string(format!("{DIR}/cases.json")).unwrap();
    serde_json::from_str::<Cases>(&text).unwrap().cases
}

fn name(result: &Result<Extraction, ExtractError>) -> &'static str {
    match result {
        Ok(_) => "ok",
        Err(ExtractError::Malformed { .. }) => "Malformed",
        Err(ExtractError::NoUsage { .. }) => "NoUsage",
        Err(ExtractError::InvalidUsage { .. }) => "InvalidUsage",
        Err(ExtractError::UnpricedTier { .. }) => "UnpricedTier",
        Err(_) => "another error",
    }
}

/// A stream fed in `chunk`-byte pieces; the first error ends it.
fn stream(provider: &Provider, bytes: &[u8], chunk: usize) -> Result<Extraction, ExtractError> {
    let mut extractor = StreamExtractor::new(provider);
    for piece in bytes.chunks(chunk.max(1)) {
        extractor.push(piece)?;
    }
    extractor.finish()
}

fn extract(case: &Case, bytes: &[u8]) -> Vec<Result<Extraction, ExtractError>> {
    let provider = Provider::parse(&case.provider).unwrap();
    match case.kind.as_str() {
        "body" => vec![extract::from_body(&provider, bytes, &[])],
        "stream" => [bytes.len().max(1), 7, 1]
            .into_iter()
            .map(|chunk| stream(&provider, bytes, chunk))
            .collect(),
        other => panic!("{}: kind {other}", case.file),
    }
}

#[test]
fn every_hostile_response_gets_its_typed_error() {
    let cases = cases();
    assert!(cases.len() >= 20);
    for case in &cases {
        let bytes = std::fs::read(format!("{DIR}/{}", case.file)).unwrap();
        for result in extract(case, &bytes) {
            assert_eq!(
                name(&result),
                case.expect,
                "{} ({}): {result:?}",
                case.file,
                case.why
            );
            if let Err(e) = &result {
                // The message names the provider and is printable as one line.
                let message = e.to_string();
                assert!(!message.contains('\n'), "{}: {message:?}", case.file);
            }
        }
    }
}

#[test]
fn oversized_streams_are_refused_not_buffered_forever() {
    // One SSE line beyond the 16 MiB bound.
    let mut line = b"data: {\"usage\":\"".to_vec();
    line.resize(17 << 20, b'a');
    let result = stream(&Provider::OpenAi, &line, 1 << 20);
    assert_eq!(name(&result), "Malformed", "{result:?}");

    // A body of 20 MiB of whitespace around a valid response is still read whole.
    let mut body = vec![b' '; 20 << 20];
    body.extend_from_slice(
        br#"{"model":"gpt-4o","usage":{"prompt_tokens":10,"completion_tokens":5,"total_tokens":15}}"#,
    );
    let result = extract::from_body(&Provider::OpenAi, &body, &[]);
    assert_eq!(result.map(|e| e.usage.input_tokens), Ok(10));
}

#[test]
fn a_corrupt_event_stream_frame_is_refused() {
    let payload = br#"{"usage":{"inputTokens":10,"outputTokens":5,"totalTokens":15},"metrics":{"latencyMs":1}}"#;
    let mut frame = extract::eventstream::encode(
        &[
            (":event-type", "metadata"),
            (":message-type", "event"),
            (":content-type", "application/json"),
        ],
        payload,
    );
    let middle = frame.len() / 2;
    frame[middle] ^= 0x40;
    let result = stream(&Provider::Bedrock, &frame, 5);
    assert_eq!(name(&result), "Malformed", "{result:?}");
}

#[test]
fn hostile_ids_are_refused_or_kept_verbatim() {
    for bad in [
        "",
        "acme\r\nX-Injected: 1",
        "acme\0",
        "tab\there",
        "\u{7f}del",
        "\u{85}next-line",
        &"x".repeat(129),
    ] {
        assert!(OrgId::new(bad).is_err(), "{bad:?} must be refused");
        assert!(RequestId::new(bad).is_err(), "{bad:?} must be refused");
    }
    // Printable text is an id like any other: never interpreted, always bound as a
    // parameter, so it round-trips unchanged.
    for odd in [
        "acme'; DROP TABLE routero_daily_rollups; --",
        "\" OR 1=1 --",
        "<script>alert(1)</script>",
        "\u{202e}gnp.exe",
        "ünïcødé 組織",
        &"x".repeat(128),
    ] {
        assert_eq!(OrgId::new(odd).unwrap().as_str(), odd);
    }
}

#[test]
fn an_unknown_model_is_an_error_never_zero() {
    let prices = PriceTable::bundled();
    let at: DateTime<Utc> = "2026-11-28T12:00:00Z".parse().unwrap();
    for model in ["gpt-9-ultra", "", "gpt-4o\u{0}", &"m".repeat(10_000)] {
        let result = prices.cost(&Provider::OpenAi, model, &Usage::tokens(10, 5), at);
        assert!(
            matches!(result, Err(CostError::UnknownModel { .. })),
            "{model:?}: {result:?}"
        );
    }
}

/// Every hostile response recorded beside good requests: each is kept unpriced with
/// its reason, and the good ones' exact total is untouched.
#[tokio::test]
async fn bad_requests_cost_the_good_ones_nothing() {
    let prices = PriceTable::bundled();
    let at: DateTime<Utc> = "2026-11-02T12:00:00Z".parse().unwrap();
    let attribution = Attribution::new(
        OrgId::new("acme").unwrap(),
        WorkspaceId::new("acme-ws").unwrap(),
    );
    let mut events: Vec<SpendEvent> = (0..50)
        .map(|seq| sample_event("acme", seq, "0.001"))
        .collect();
    let mut hostile = 0;
    for (i, case) in cases().iter().enumerate() {
        let bytes = std::fs::read(format!("{DIR}/{}", case.file)).unwrap();
        let provider = Provider::parse(&case.provider).unwrap();
        let extracted = extract(case, &bytes).remove(0);
        hostile += u64::from(extracted.is_err());
        let context = RequestContext::new(
            RequestId::new(&format!("hostile-{i}")).unwrap(),
            at,
            attribution.clone(),
            provider,
            "gpt-4o",
        );
        let event = context.price(&prices, extracted).event;
        events.push(event);
    }
    let store = Arc::new(MemoryStore::new());
    apply_first_step(&*store, &events, at).await;
    let totals = store.totals();
    assert_eq!(totals.requests(), u64::try_from(events.len()).unwrap());
    assert_eq!(totals.unpriced, hostile);
    // Every hostile response is an error: the total is the 50 good requests', exactly.
    assert_eq!(hostile, u64::try_from(events.len() - 50).unwrap());
    assert_eq!(totals.cost, rust_decimal::Decimal::new(50, 3));
    for kept in store.unpriced() {
        let Pricing::Unpriced { reason, detail } = &kept.pricing else {
            panic!("{kept:?}")
        };
        assert_ne!(*reason, UnpricedReason::Other, "{detail}");
        assert!(!detail.is_empty());
    }
}
