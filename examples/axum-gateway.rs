//! A minimal OpenAI-compatible gateway on axum, costed by one layer.
//!
//! ```text
//! ROUTERO_UPSTREAM=https://api.openai.com ROUTERO_UPSTREAM_KEY=sk-… \
//! ROUTERO_KEYS='rk-demo=acme/acme-prod/search' cargo run --example axum-gateway
//! ```
//!
//! `POST /v1/chat/completions` is forwarded to `ROUTERO_UPSTREAM` with the upstream's
//! key (an OpenAI stream is asked for its usage). The handler resolves the caller's
//! key (`ROUTERO_KEYS`: `key=org/workspace[/team]`, comma-separated; unknown key: 401)
//! and puts the request's `RequestContext` on the response; `CostLayer` does the rest:
//! the cost on the headers (JSON) or as trailers and a final SSE comment (streams), and
//! the spend recorded, drained in memory. Ctrl-C prints the spend per team. It listens
//! on `ROUTERO_LISTEN` (default `127.0.0.1:8091`) and prints `listening on http://…`.
//! For the full gateway (Anthropic's dialect, wallets, budgets, BYOK credentials, Redis)
//! see `examples/gateway.rs`.

use std::collections::HashMap;
use std::process::ExitCode;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use bytes::Bytes;
use chrono::Utc;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use routero::attribution::{Attribution, RequestId};
use routero::drainer::{Drainer, DrainerConfig};
use routero::http::layer::CostLayer;
use routero::memory::{MemoryElector, MemoryQueue, MemoryStore};
use routero::port::{GroupBy, RollupFilter, SpendReader, SystemClock};
use routero::recorder::{Recorder, RecorderConfig};
use routero::spend::RequestContext;
use routero::{PriceTable, Provider};

type Error = Box<dyn std::error::Error + Send + Sync>;
type HttpsClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

struct Gateway {
    upstream: String,
    key: Option<String>,
    callers: HashMap<String, Attribution>,
    client: HttpsClient,
}

fn refuse(status: StatusCode, message: &str) -> Response {
    let body =
        serde_json::json!({ "error": { "message": message, "type": "invalid_request_error" } });
    (status, axum::Json(body)).into_response()
}

/// Forwards one chat completion and tells the layer whose request it was.
async fn chat(State(gateway): State<Arc<Gateway>>, headers: HeaderMap, body: Bytes) -> Response {
    let at = Utc::now();
    let key = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let Some(attribution) = key.and_then(|k| gateway.callers.get(k)) else {
        return refuse(StatusCode::UNAUTHORIZED, "unknown API key");
    };
    let Ok(mut json) = serde_json::from_slice::<serde_json::Value>(&body) else {
        return refuse(StatusCode::BAD_REQUEST, "the request body is not JSON");
    };
    let Some(model) = json["model"].as_str().map(str::to_owned) else {
        return refuse(StatusCode::BAD_REQUEST, "the request names no model");
    };
    if json["stream"] == true {
        // A stream without usage cannot be priced: ask for it.
        json["stream_options"]["include_usage"] = true.into();
    }
    let mut forward = hyper::Request::post(format!("{}/v1/chat/completions", gateway.upstream))
        .header(header::CONTENT_TYPE, "application/json");
    // The caller's other headers go on; its key, the length and the hop-by-hop ones
    // do not, and the response comes uncompressed so that it can be read.
    for (name, value) in &headers {
        let skip = matches!(
            name.as_str(),
            "authorization"
                | "host"
                | "content-length"
                | "content-type"
                | "connection"
                | "accept-encoding"
                | "te"
                | "transfer-encoding"
                | "upgrade"
                | "keep-alive"
        );
        if !skip {
            forward = forward.header(name, value);
        }
    }
    if let Some(key) = &gateway.key {
        forward = forward.header(header::AUTHORIZATION, format!("Bearer {key}"));
    }
    let Ok(forward) = forward.body(Full::new(Bytes::from(json.to_string()))) else {
        return refuse(StatusCode::BAD_GATEWAY, "bad upstream address");
    };
    let upstream = match gateway.client.request(forward).await {
        Ok(response) => response,
        Err(e) => return refuse(StatusCode::BAD_GATEWAY, &format!("upstream: {e}")),
    };
    let (parts, body) = upstream.into_parts();
    let mut response = Response::from_parts(parts, Body::new(body.map_err(Error::from)));
    let context = RequestContext::new(
        RequestId::new(&format!("req-{}", uuid::Uuid::new_v4().simple()))
            .unwrap_or_else(|e| panic!("{e}")),
        at,
        attribution.clone(),
        Provider::OpenAi,
        model,
    );
    response.extensions_mut().insert(context);
    response
}

/// `key=org/workspace[/team]`, comma-separated.
fn callers(text: &str) -> Result<HashMap<String, Attribution>, Error> {
    let mut out = HashMap::new();
    for entry in text.split(',').filter(|e| !e.trim().is_empty()) {
        let (key, who) = entry
            .trim()
            .split_once('=')
            .ok_or_else(|| format!("ROUTERO_KEYS: {entry:?} is not key=org/workspace[/team]"))?;
        let parts: Vec<&str> = who.split('/').collect();
        let mut attribution = match parts[..] {
            [org, workspace] | [org, workspace, _] => {
                Attribution::new(org.parse()?, workspace.parse()?)
            }
            _ => return Err(format!("ROUTERO_KEYS: {who:?} is not org/workspace[/team]").into()),
        };
        if let [_, _, team] = parts[..] {
            attribution = attribution.with_team(team.parse()?);
        }
        out.insert(key.to_owned(), attribution);
    }
    Ok(out)
}

async fn run() -> Result<(), Error> {
    let upstream = std::env::var("ROUTERO_UPSTREAM").map_err(|_| "set ROUTERO_UPSTREAM")?;
    let callers = callers(&std::env::var("ROUTERO_KEYS").unwrap_or_default())?;
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_webpki_roots()
        .https_or_http()
        .enable_http1()
        .build();
    let gateway = Arc::new(Gateway {
        upstream: upstream.trim_end_matches('/').to_owned(),
        key: std::env::var("ROUTERO_UPSTREAM_KEY").ok(),
        callers,
        client: Client::builder(TokioExecutor::new()).build(https),
    });

    // The spend pipeline, in memory: recorder → queue → drainer → store.
    let queue = Arc::new(MemoryQueue::new(1));
    let store = Arc::new(MemoryStore::new());
    let drainer = Arc::new(Drainer::new(
        queue.clone(),
        Arc::new(MemoryElector::new(Arc::new(SystemClock))),
        store.clone(),
        DrainerConfig::new("axum-gateway"),
    ));
    let draining = drainer.clone().spawn();
    let (recorder, recording) = Recorder::spawn(queue, RecorderConfig::default());

    let app = Router::new()
        .route("/v1/chat/completions", post(chat))
        .with_state(gateway)
        .layer(CostLayer::recording(PriceTable::bundled(), recorder));

    let listen = std::env::var("ROUTERO_LISTEN").unwrap_or_else(|_| "127.0.0.1:8091".to_owned());
    let listener = tokio::net::TcpListener::bind(&listen).await?;
    println!("listening on http://{}", listener.local_addr()?);
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;

    recording.shutdown().await;
    draining.stop().await;
    drainer.drain_all().await?;
    let today = Utc::now().date_naive();
    let yesterday = today.pred_opt().unwrap_or(today);
    for org in store
        .all_rollups()
        .iter()
        .map(|(key, _)| key.who.org.clone())
        .collect::<std::collections::BTreeSet<_>>()
    {
        let mut filter = RollupFilter::new(org.clone(), yesterday, today);
        filter.group_by = GroupBy {
            team: true,
            ..GroupBy::default()
        };
        for row in store.rollups(&filter).await? {
            let team = row
                .key
                .team
                .map_or_else(|| "(none)".to_owned(), |t| t.to_string());
            println!(
                "spend {org} {team:<12} {:>4} requests {:>14} {}",
                row.totals.requests(),
                row.totals.cost.normalize(),
                row.key.currency.map_or("", |c| c.code())
            );
        }
    }
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("axum-gateway: {e}");
            ExitCode::FAILURE
        }
    }
}
