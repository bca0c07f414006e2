//! `CostLayer` on an axum router: one `.layer(…)` prices JSON and streamed responses,
//! sets the headers or trailers, and records the spend, which drains to the exact
//! total.

mod common;

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use axum::response::Response;
use axum::routing::post;
use chrono::Utc;
use http_body_util::BodyExt;
use routero::attribution::{Attribution, RequestId};
use routero::drainer::{Drainer, DrainerConfig};
use routero::http::layer::CostLayer;
use routero::memory::{MemoryElector, MemoryQueue, MemoryStore};
use routero::port::SystemClock;
use routero::recorder::{Recorder, RecorderConfig};
use routero::spend::{Pricing, RequestContext, UnpricedReason};
use routero::{PriceTable, Provider};
use tower::ServiceExt;

use common::{fixture, fixture_cost};

/// A handler's answer: the fixture, with the request's context when `priced`.
fn answer(name: &str, status: StatusCode, context: Option<RequestContext>) -> Response {
    let content_type = if name.ends_with(".sse") {
        "text/event-stream"
    } else {
        "application/json"
    };
    let mut response = Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, content_type)
        .body(Body::from(fixture(name)))
        .unwrap();
    if let Some(context) = context {
        response.extensions_mut().insert(context);
    }
    response
}

fn context(id: &str, team: &str, provider: Provider, model: &str) -> RequestContext {
    let attribution = Attribution::new("acme".parse().unwrap(), "acme-prod".parse().unwrap())
        .with_team(team.parse().unwrap());
    RequestContext::new(
        RequestId::new(id).unwrap(),
        Utc::now(),
        attribution,
        provider,
        model,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_layer_prices_and_records_every_response() {
    let queue = Arc::new(MemoryQueue::new(2));
    let (recorder, handle) = Recorder::spawn(queue.clone(), RecorderConfig::default());
    const JSON: &str = "openai_chat/chat_completion_reasoning_cached.json";
    const STREAM: &str = "anthropic/message_stream.sse";
    const NO_USAGE: &str = "openai_chat/chat_stream_no_usage.sse";
    let app = Router::new()
        .route(
            "/json",
            post(|| async {
                answer(
                    JSON,
                    StatusCode::OK,
                    Some(context("r-json", "search", Provider::OpenAi, "o4-mini")),
                )
            }),
        )
        .route(
            "/stream",
            post(|| async {
                answer(
                    STREAM,
                    StatusCode::OK,
                    Some(context(
                        "r-sse",
                        "support",
                        Provider::Anthropic,
                        "claude-sonnet-4-5",
                    )),
                )
            }),
        )
        .route(
            "/no-usage",
            post(|| async {
                answer(
                    NO_USAGE,
                    StatusCode::OK,
                    Some(context(
                        "r-none",
                        "support",
                        Provider::OpenAi,
                        "gpt-4o-mini",
                    )),
                )
            }),
        )
        .route(
            "/refused",
            post(|| async {
                answer(
                    JSON,
                    StatusCode::TOO_MANY_REQUESTS,
                    Some(context("r-429", "search", Provider::OpenAi, "o4-mini")),
                )
            }),
        )
        .route(
            "/plain",
            post(|| async { answer(JSON, StatusCode::OK, None) }),
        )
        // The one line a gateway adds:
        .layer(CostLayer::recording(PriceTable::bundled(), recorder));

    let call = |path: &str| {
        let app = app.clone();
        let request = Request::post(path).body(Body::empty()).unwrap();
        async move { app.oneshot(request).await.unwrap() }
    };

    // JSON: the body passes unchanged, the cost is on the headers.
    let response = call("/json").await;
    assert_eq!(response.status(), StatusCode::OK);
    let json_cost = fixture_cost(&Provider::OpenAi, JSON, "o4-mini");
    assert_eq!(
        response.headers()["x-routero-cost"],
        json_cost.normalize().to_string().as_str()
    );
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, fixture(JSON));

    // A stream: every byte first, then the comment; the cost as trailers too.
    let response = call("/stream").await;
    assert!(
        response.headers()[header::TRAILER]
            .to_str()
            .unwrap()
            .contains("x-routero-cost")
    );
    let collected = response.into_body().collect().await.unwrap();
    let trailers = collected.trailers().cloned().expect("trailers");
    let bytes = collected.to_bytes();
    let stream = fixture(STREAM);
    assert!(bytes.starts_with(&stream));
    let stream_cost = fixture_cost(&Provider::Anthropic, STREAM, "claude-sonnet-4-5");
    assert_eq!(
        std::str::from_utf8(&bytes[stream.len()..]).unwrap(),
        format!(": x-routero-cost={}\n\n", stream_cost.normalize())
    );
    assert_eq!(
        trailers["x-routero-cost"],
        stream_cost.normalize().to_string().as_str()
    );

    // A stream without usage: unpriced, with its reason, never a zero.
    let response = call("/no-usage").await;
    let collected = response.into_body().collect().await.unwrap();
    let trailers = collected.trailers().cloned().expect("trailers");
    assert_eq!(trailers["x-routero-unpriced"], "no_usage");
    assert!(trailers.get("x-routero-cost").is_none());

    // No context, or an error status: passed through, nothing billed.
    for path in ["/plain", "/refused"] {
        let response = call(path).await;
        assert!(response.headers().get("x-routero-cost").is_none(), "{path}");
        let _ = response.into_body().collect().await.unwrap();
    }

    // What was recorded drains to the exact total, attributed.
    let counts = handle.shutdown().await;
    assert_eq!(counts.recorded, 3, "{counts:?}");
    let store = Arc::new(MemoryStore::new());
    let drainer = Drainer::new(
        queue,
        Arc::new(MemoryElector::new(Arc::new(SystemClock))),
        store.clone(),
        DrainerConfig::new("tower-test"),
    );
    let stats = drainer.drain_all().await.unwrap();
    assert_eq!(stats.events, 3);
    assert_eq!(store.totals().cost, json_cost + stream_cost);
    assert_eq!(store.totals().unpriced, 1);
    let unpriced = store.unpriced();
    assert!(matches!(
        unpriced[0].pricing,
        Pricing::Unpriced {
            reason: UnpricedReason::NoUsage,
            ..
        }
    ));
    let logged = store.logged(&RequestId::new("r-sse").unwrap()).unwrap();
    assert_eq!(logged.attribution.who.team.unwrap().as_str(), "support");
}
