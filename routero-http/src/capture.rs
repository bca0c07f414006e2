//! Streaming responses: the cost captured as the bytes go by.
//!
//! [`CostCapture`] wraps a response body. Every frame passes through unchanged and at
//! once; its bytes also feed a [`StreamExtractor`]. When the body ends, the usage is
//! priced with the request's [`RequestContext`] and the cost is delivered as HTTP
//! trailers (the `x-routero-…` names of [`crate::headers`]) and, where enabled, as a
//! final SSE comment line that SSE clients ignore; then the [`Metered`] outcome (the
//! spend event, and the cost when priced) goes to the sink, to be recorded. When the
//! body is dropped before its end (the client went away), the sink gets what was
//! known, marked partial — never a silent zero.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use routero_core::PriceTable;
use routero_core::extract::{ExtractError, Extraction, StreamExtractor};
use routero_core::spend::{Metered, RequestContext};

use crate::headers;

/// Where a captured outcome goes (a closure that records the spend).
pub type Sink = Box<dyn FnOnce(Metered) + Send>;

/// How to price a captured stream.
#[derive(Clone)]
pub struct CaptureConfig {
    /// The request: its id, time, attribution, billing mode, provider and the model
    /// it asked for (priced when the stream names none).
    pub context: RequestContext,
    /// The prices.
    pub prices: Arc<PriceTable>,
    /// Whether to end an SSE body with `: x-routero-cost=…` comment line.
    pub sse_comment: bool,
}

impl std::fmt::Debug for CaptureConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaptureConfig")
            .field("context", &self.context)
            .field("sse_comment", &self.sse_comment)
            .finish_non_exhaustive()
    }
}

/// A body that passes its inner body through and captures its cost.
pub struct CostCapture<B> {
    inner: B,
    extractor: Option<StreamExtractor>,
    config: CaptureConfig,
    sink: Option<Sink>,
    /// Frames to send after the inner body ended.
    tail: VecDeque<Frame<Bytes>>,
    ended: bool,
    /// The outcome of an extraction that stopped early (a malformed stream), for the
    /// trailers.
    failed: Option<Metered>,
}

impl<B> std::fmt::Debug for CostCapture<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CostCapture")
            .field("config", &self.config)
            .field("ended", &self.ended)
            .finish_non_exhaustive()
    }
}

impl<B> CostCapture<B> {
    /// Wraps `inner`; `sink` receives the outcome once.
    pub fn new(inner: B, config: CaptureConfig, sink: Sink) -> CostCapture<B> {
        CostCapture {
            extractor: Some(StreamExtractor::new(&config.context.provider)),
            inner,
            config,
            sink: Some(sink),
            tail: VecDeque::new(),
            ended: false,
            failed: None,
        }
    }

    fn outcome(&self, extraction: Result<Extraction, ExtractError>, complete: bool) -> Metered {
        let mut metered = self.config.context.price(&self.config.prices, extraction);
        metered.event.partial = !complete;
        metered
    }

    /// The inner body ended: price it, queue the comment and trailers, tell the sink.
    fn finish(&mut self, inner_trailers: Option<HeaderMap>) {
        let mut trailers = inner_trailers.unwrap_or_default();
        let Some(extractor) = self.extractor.take() else {
            // Extraction failed earlier; the sink already has the outcome.
            if let Some(failed) = &self.failed {
                headers::insert_metered(&mut trailers, failed);
            }
            self.push_tail(trailers);
            return;
        };
        let metered = self.outcome(extractor.finish(), true);
        headers::insert_metered(&mut trailers, &metered);
        self.push_tail(trailers);
        if let Some(sink) = self.sink.take() {
            sink(metered);
        }
    }

    /// Queues the comment line (when enabled) and the trailers.
    fn push_tail(&mut self, trailers: HeaderMap) {
        if self.config.sse_comment {
            let value = trailers
                .get("x-routero-cost")
                .or_else(|| trailers.get("x-routero-unpriced"))
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            let name = if trailers.contains_key("x-routero-cost") {
                "cost"
            } else {
                "unpriced"
            };
            self.tail.push_back(Frame::data(Bytes::from(format!(
                ": x-routero-{name}={value}\n\n"
            ))));
        }
        self.tail.push_back(Frame::trailers(trailers));
    }
}

impl<B> Body for CostCapture<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = &mut *self;
        if this.ended {
            return Poll::Ready(this.tail.pop_front().map(Ok));
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if frame.is_trailers() {
                    // The inner body's own trailers: merged into ours at the end.
                    let trailers = frame.into_trailers().ok();
                    this.ended = true;
                    this.finish(trailers);
                    return Poll::Ready(this.tail.pop_front().map(Ok));
                }
                if let (Some(data), Some(extractor)) = (frame.data_ref(), this.extractor.as_mut()) {
                    // A malformed stream stops the extraction, never the bytes.
                    if let Err(e) = extractor.push(data) {
                        this.extractor = None;
                        let metered = this.outcome(Err(e), true);
                        this.failed = Some(metered.clone());
                        if let Some(sink) = this.sink.take() {
                            sink(metered);
                        }
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e))),
            Poll::Ready(None) => {
                this.ended = true;
                this.finish(None);
                Poll::Ready(this.tail.pop_front().map(Ok))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.ended && self.tail.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        // The comment line (when enabled) adds bytes: the exact length is unknown.
        let mut hint = SizeHint::new();
        hint.set_lower(self.inner.size_hint().lower());
        hint
    }
}

impl<B> Drop for CostCapture<B> {
    fn drop(&mut self) {
        let (Some(extractor), Some(sink)) = (self.extractor.take(), self.sink.take()) else {
            return;
        };
        // The client went away: record what the stream had said, marked partial.
        sink(self.outcome(extractor.usage_so_far(), false));
    }
}
