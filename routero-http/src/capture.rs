//! Streaming responses: the cost captured as the bytes go by.
//!
//! [`CostCapture`] wraps a response body. Every frame passes through unchanged and at
//! once; its bytes also feed a [`StreamExtractor`]. When the body ends, the usage is
//! priced and the cost is delivered as HTTP trailers (the `x-routero-…` names of
//! [`crate::headers`]) and, where enabled, as a final SSE comment line that SSE
//! clients ignore; then the [`Captured`] outcome goes to the sink (to record the
//! spend). When the body is dropped before its end (the client went away), the sink
//! gets what was known, marked incomplete — never a silent zero.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use routero_core::attribution::{Attribution, BillingMode, RequestId};
use routero_core::extract::{ExtractError, Extraction, StreamExtractor};
use routero_core::spend::SpendEvent;
use routero_core::{Cost, CostError, PriceTable, Provider};

use crate::headers;

/// What a captured stream turned out to be.
#[derive(Debug)]
pub struct Captured {
    /// The usage the stream reported (so far, when incomplete).
    pub extraction: Result<Extraction, ExtractError>,
    /// Its cost, when the usage is known.
    pub cost: Option<Result<Cost, CostError>>,
    /// The model priced: the stream's own, else the one the request asked for.
    pub model: String,
    /// Whether the body reached its end (false: the client went away first).
    pub complete: bool,
}

impl Captured {
    /// Prices an extraction: with the model the response names, else the one the
    /// request asked for. A JSON response goes through here as well as a stream.
    pub fn price(
        extraction: Result<Extraction, ExtractError>,
        provider: &Provider,
        requested_model: &str,
        prices: &PriceTable,
        at: DateTime<Utc>,
        complete: bool,
    ) -> Captured {
        let model = extraction
            .as_ref()
            .ok()
            .and_then(|e| e.model.clone())
            .unwrap_or_else(|| requested_model.to_owned());
        let cost = extraction
            .as_ref()
            .ok()
            .map(|e| prices.cost(provider, &model, &e.usage, at));
        Captured {
            extraction,
            cost,
            model,
            complete,
        }
    }

    /// The cost headers of the outcome: the `x-routero-cost` family when priced,
    /// `x-routero-unpriced` with the reason otherwise.
    pub fn insert_headers(&self, headers: &mut HeaderMap) {
        match self.priced() {
            Ok(cost) => headers::insert_cost(headers, cost),
            Err(reason) => headers::insert_unpriced(headers, &reason),
        }
    }

    /// The cost, or why there is none (the pricing's or the extraction's reason).
    fn priced(&self) -> Result<&Cost, String> {
        match (&self.cost, &self.extraction) {
            (Some(Ok(cost)), _) => Ok(cost),
            (Some(Err(e)), _) => Err(e.to_string()),
            (None, Err(e)) => Err(e.to_string()),
            (None, Ok(_)) => Err("not priced".to_owned()),
        }
    }

    /// The spend event of the outcome: priced or unpriced with its reason, and
    /// marked partial when the body did not reach its end.
    pub fn into_event(
        self,
        request_id: RequestId,
        at: DateTime<Utc>,
        attribution: Attribution,
        billing_mode: BillingMode,
        provider: Provider,
    ) -> SpendEvent {
        let usage = self.extraction.as_ref().ok().map(|e| e.usage);
        let cost = self.priced();
        let event = SpendEvent::from_result(
            request_id,
            at,
            attribution,
            billing_mode,
            provider,
            &self.model,
            usage,
            cost,
        );
        if self.complete {
            event
        } else {
            event.into_partial()
        }
    }
}

/// Where a captured outcome goes (a closure that records the spend).
pub type Sink = Box<dyn FnOnce(Captured) + Send>;

/// How to price a captured stream.
#[derive(Clone)]
pub struct CaptureConfig {
    /// The provider streaming.
    pub provider: Provider,
    /// The model the request asked for, when the stream names none.
    pub requested_model: String,
    /// The prices.
    pub prices: Arc<PriceTable>,
    /// The request's time.
    pub at: DateTime<Utc>,
    /// Whether to end an SSE body with `: x-routero-cost=…` comment line.
    pub sse_comment: bool,
}

impl std::fmt::Debug for CaptureConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaptureConfig")
            .field("provider", &self.provider)
            .field("requested_model", &self.requested_model)
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
    /// Why extraction stopped early (a malformed stream).
    failed: Option<String>,
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
            extractor: Some(StreamExtractor::new(&config.provider)),
            inner,
            config,
            sink: Some(sink),
            tail: VecDeque::new(),
            ended: false,
            failed: None,
        }
    }

    fn outcome(&self, extraction: Result<Extraction, ExtractError>, complete: bool) -> Captured {
        let c = &self.config;
        Captured::price(
            extraction,
            &c.provider,
            &c.requested_model,
            &c.prices,
            c.at,
            complete,
        )
    }

    /// The inner body ended: price it, queue the comment and trailers, tell the sink.
    fn finish(&mut self, inner_trailers: Option<HeaderMap>) {
        let mut trailers = inner_trailers.unwrap_or_default();
        let Some(extractor) = self.extractor.take() else {
            // Extraction failed earlier; the sink already has the outcome.
            headers::insert_unpriced(&mut trailers, self.failed.as_deref().unwrap_or("no usage"));
            self.push_tail(trailers);
            return;
        };
        let captured = self.outcome(extractor.finish(), true);
        captured.insert_headers(&mut trailers);
        self.push_tail(trailers);
        if let Some(sink) = self.sink.take() {
            sink(captured);
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
                        this.failed = Some(e.to_string());
                        let captured = this.outcome(Err(e), true);
                        if let Some(sink) = this.sink.take() {
                            sink(captured);
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
        // The client went away: record what the stream had said, marked incomplete.
        let captured = self.outcome(extractor.usage_so_far(), false);
        sink(captured);
    }
}
