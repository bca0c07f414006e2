//! [`CostLayer`]: a tower layer that prices every response a gateway serves and
//! records its spend (feature `tower`).
//!
//! A hyper or axum gateway adds it in one line. Its handler, which knows who is
//! calling and which model they asked for, puts the request's
//! [`RequestContext`] in the response's extensions; the layer then
//!
//! - prices a JSON response whole and sets the `x-routero-…` headers on it;
//! - wraps an event stream in a [`CostCapture`], so the bytes pass at once and the
//!   cost follows as trailers (declared on the head) and a final SSE comment;
//! - hands every [`Metered`] outcome to its sink (with [`CostLayer::recording`], a
//!   [`Recorder`]).
//!
//! A response without a context, or with an error status, passes through untouched
//! and unbilled.
//!
//! ```
//! # use std::sync::Arc;
//! # use routero_core::{PriceTable, memory::MemoryQueue, recorder::{Recorder, RecorderConfig}};
//! # use routero_http::layer::CostLayer;
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! # let (recorder, _handle) = Recorder::spawn(Arc::new(MemoryQueue::new(1)), RecorderConfig::default());
//! let layer = CostLayer::recording(PriceTable::bundled(), recorder);
//! // axum: Router::new().route(…).layer(layer)
//! # let _ = layer;
//! # }
//! ```

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderMap, Request, Response, header};
use http_body::Body;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, Limited};
use routero_core::PriceTable;
use routero_core::recorder::{RecordError, Recorder};
use routero_core::spend::{Metered, RequestContext};

use crate::capture::{CaptureConfig, CostCapture};
use crate::headers;

/// The error of a body the layer hands on.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body of every response that leaves the layer.
pub type CostedBody = UnsyncBoxBody<Bytes, BoxError>;

/// What receives each request's metered spend.
pub type MeteredSink = Arc<dyn Fn(Metered) + Send + Sync>;

/// The largest JSON response priced whole (a larger one is answered 502, since its
/// cost could not be known).
pub const MAX_PRICED_BODY: usize = 64 * 1024 * 1024;

/// Prices responses and hands their spend to a sink; see the [module](self).
#[derive(Clone)]
pub struct CostLayer {
    prices: Arc<PriceTable>,
    sink: MeteredSink,
    sse_comment: bool,
}

impl std::fmt::Debug for CostLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CostLayer")
            .field("sse_comment", &self.sse_comment)
            .finish_non_exhaustive()
    }
}

impl CostLayer {
    /// A layer pricing with `prices` and handing each outcome to `sink`.
    pub fn new(prices: Arc<PriceTable>, sink: MeteredSink) -> CostLayer {
        CostLayer {
            prices,
            sink,
            sse_comment: true,
        }
    }

    /// A layer that records every spend event with `recorder`. A full buffer does not
    /// lose the event: it is recorded with back-pressure
    /// ([`Recorder::record_wait`]) on a task of its own.
    pub fn recording(prices: Arc<PriceTable>, recorder: Recorder) -> CostLayer {
        let sink: MeteredSink = Arc::new(move |metered: Metered| {
            if let Err(RecordError::BufferFull(event)) = recorder.record(metered.event) {
                let recorder = recorder.clone();
                tokio::spawn(async move {
                    let _ = recorder.record_wait(*event).await;
                });
            }
        });
        CostLayer::new(prices, sink)
    }

    /// Whether an event stream ends with a `: x-routero-cost=…` comment line (on by
    /// default; SSE clients ignore comments).
    pub fn with_sse_comment(mut self, on: bool) -> CostLayer {
        self.sse_comment = on;
        self
    }
}

impl<S> tower_layer::Layer<S> for CostLayer {
    type Service = CostService<S>;

    fn layer(&self, inner: S) -> CostService<S> {
        CostService {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service [`CostLayer`] wraps around a gateway's.
#[derive(Debug, Clone)]
pub struct CostService<S> {
    inner: S,
    layer: CostLayer,
}

impl<S, ReqBody, ResBody> tower_service::Service<Request<ReqBody>> for CostService<S>
where
    S: tower_service::Service<Request<ReqBody>, Response = Response<ResBody>>,
    S::Future: Send + 'static,
    S::Error: Send,
    ResBody: Body<Data = Bytes> + Send + Unpin + 'static,
    ResBody::Error: Into<BoxError>,
{
    type Response = Response<CostedBody>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response<CostedBody>, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let response = self.inner.call(request);
        let layer = self.layer.clone();
        Box::pin(async move {
            let response = response.await?;
            Ok(layer.costed(response).await)
        })
    }
}

fn boxed<B>(body: B) -> CostedBody
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    body.map_err(Into::into).boxed_unsync()
}

fn header_pairs(headers: &HeaderMap) -> Vec<(&str, &str)> {
    headers
        .iter()
        .filter_map(|(n, v)| Some((n.as_str(), v.to_str().ok()?)))
        .collect()
}

impl CostLayer {
    /// Prices one response (see the module).
    async fn costed<B>(&self, response: Response<B>) -> Response<CostedBody>
    where
        B: Body<Data = Bytes> + Send + Unpin + 'static,
        B::Error: Into<BoxError>,
    {
        let (mut head, body) = response.into_parts();
        let context = head.extensions.remove::<RequestContext>();
        let Some(context) = context.filter(|_| head.status.is_success()) else {
            return Response::from_parts(head, boxed(body));
        };
        let stream = head
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/event-stream"));
        if stream {
            headers::declare_trailers(&mut head.headers);
            head.headers.remove(header::CONTENT_LENGTH);
            let sink = self.sink.clone();
            let config = CaptureConfig {
                context,
                prices: self.prices.clone(),
                sse_comment: self.sse_comment,
            };
            let body = CostCapture::new(body, config, Box::new(move |m| sink(m)));
            return Response::from_parts(head, boxed(body));
        }
        let bytes = match Limited::new(body, MAX_PRICED_BODY).collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(e) => {
                // Served (and maybe billed by the provider) but not readable: unpriced.
                let metered = context.price(
                    &self.prices,
                    Err(routero_core::extract::ExtractError::Malformed {
                        provider: context.provider.clone(),
                        reason: format!("the response body could not be read: {e}"),
                    }),
                );
                (self.sink)(metered);
                let mut response = Response::new(boxed(Full::new(Bytes::from_static(
                    b"the upstream response could not be read",
                ))));
                *response.status_mut() = http::StatusCode::BAD_GATEWAY;
                return response;
            }
        };
        let metered = context.price_body(&self.prices, &bytes, &header_pairs(&head.headers));
        headers::insert_metered(&mut head.headers, &metered);
        (self.sink)(metered);
        Response::from_parts(head, boxed(Full::new(bytes)))
    }
}
