//! The streaming capture on provider fixture streams.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use routero_core::attribution::{Attribution, OrgId, RequestId, WorkspaceId};
use routero_core::spend::{Metered, Pricing, RequestContext, UnpricedReason};
use routero_core::{PriceTable, Provider};
use routero_http::capture::{CaptureConfig, CostCapture};

/// A body of given chunks, as a provider's response arrives.
struct Chunks(VecDeque<Bytes>);

impl Body for Chunks {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Poll::Ready(self.0.pop_front().map(|b| Ok(Frame::data(b))))
    }
}

fn fixture(path: &str) -> Vec<u8> {
    std::fs::read(format!(
        "{}/../routero-core/tests/data/providers/{path}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

fn chunks(bytes: &[u8], size: usize) -> Chunks {
    Chunks(bytes.chunks(size).map(Bytes::copy_from_slice).collect())
}

fn config(provider: Provider, model: &str, comment: bool) -> CaptureConfig {
    let at = chrono::DateTime::parse_from_rfc3339("2026-11-28T12:00:00Z")
        .unwrap()
        .to_utc();
    let attribution = Attribution::new(
        OrgId::new("acme").unwrap(),
        WorkspaceId::new("acme-ws").unwrap(),
    );
    CaptureConfig {
        context: RequestContext::new(
            RequestId::new("req-1").unwrap(),
            at,
            attribution,
            provider,
            model,
        ),
        prices: PriceTable::bundled(),
        sse_comment: comment,
    }
}

fn sink() -> (Arc<Mutex<Option<Metered>>>, routero_http::capture::Sink) {
    let slot = Arc::new(Mutex::new(None));
    let target = slot.clone();
    (
        slot,
        Box::new(move |captured| *target.lock().unwrap() = Some(captured)),
    )
}

#[tokio::test]
async fn bytes_pass_through_and_the_cost_arrives_as_trailers() {
    let stream = fixture("anthropic/message_stream.sse");
    let (slot, sink) = sink();
    let body = CostCapture::new(
        chunks(&stream, 37),
        config(Provider::Anthropic, "claude-sonnet-4-5", true),
        sink,
    );
    let collected = body.collect().await.unwrap();
    let trailers = collected.trailers().cloned().expect("trailers");
    let bytes = collected.to_bytes();
    assert!(
        bytes.starts_with(&stream),
        "every byte passes through unchanged"
    );
    let comment = std::str::from_utf8(&bytes[stream.len()..]).unwrap();
    assert!(
        comment.starts_with(": x-routero-cost=") && comment.ends_with("\n\n"),
        "{comment:?}"
    );
    let cost = trailers
        .get("x-routero-cost")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(comment, format!(": x-routero-cost={cost}\n\n"));
    let captured = slot
        .lock()
        .unwrap()
        .take()
        .expect("the sink got the outcome");
    assert!(!captured.event.partial);
    let priced = captured.cost.unwrap();
    assert_eq!(priced.total().normalize().to_string(), cost);
    assert_eq!(captured.event.cost(), Some(priced.total()));
    assert_eq!(trailers.get("x-routero-input-tokens").unwrap(), "472");
}

#[tokio::test]
async fn a_client_gone_early_records_what_was_known() {
    let stream = fixture("anthropic/message_stream.sse");
    let text = std::str::from_utf8(&stream).unwrap();
    let cut = text.find("event: message_delta").unwrap();
    let (slot, sink) = sink();
    let mut body = CostCapture::new(
        chunks(&stream[..cut], 64),
        config(Provider::Anthropic, "x", false),
        sink,
    );
    // Read past message_start (about 700 bytes), then the client disconnects.
    for _ in 0..12 {
        let _ = body.frame().await;
    }
    drop(body);
    let captured = slot.lock().unwrap().take().expect("recorded on drop");
    assert!(captured.event.partial, "marked as cut short");
    let usage = captured.event.usage.unwrap();
    assert_eq!(usage.input_tokens, 472, "what message_start said");
}

#[tokio::test]
async fn a_stream_without_usage_is_unpriced_not_zero() {
    let stream = fixture("openai_chat/chat_stream_no_usage.sse");
    let (slot, sink) = sink();
    let body = CostCapture::new(
        chunks(&stream, 100),
        config(Provider::OpenAi, "gpt-4o-mini", false),
        sink,
    );
    let collected = body.collect().await.unwrap();
    let trailers = collected.trailers().cloned().expect("trailers");
    assert!(trailers.get("x-routero-cost").is_none());
    assert_eq!(trailers["x-routero-unpriced"], "no_usage");
    assert!(trailers.get("x-routero-unpriced-detail").is_some());
    assert_eq!(collected.to_bytes(), stream, "no comment unless enabled");
    let captured = slot.lock().unwrap().take().unwrap();
    assert!(captured.cost.is_none());
    assert!(matches!(
        captured.event.pricing,
        Pricing::Unpriced {
            reason: UnpricedReason::NoUsage,
            ..
        }
    ));
}
