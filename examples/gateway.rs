//! An OpenAI- and Anthropic-compatible reverse proxy that costs every request.
//!
//! ```text
//! cargo run --example gateway -- examples/gateway.toml
//! ```
//!
//! The gateway listens on `ROUTERO_LISTEN` (else the config's `listen`, else
//! `127.0.0.1:8090`; port 0 picks a free one) and serves
//!
//! - `POST /v1/chat/completions`, `/v1/completions`, `/v1/responses` and `/v1/embeddings`
//!   in OpenAI's dialect, forwarded to the `[openai]` upstream (any OpenAI-compatible
//!   provider: set its `provider` to price and extract it as that provider);
//! - `POST /v1/messages` in Anthropic's dialect, forwarded to the `[anthropic]` upstream.
//!
//! Prices are the bundled table, with `ROUTERO_PRICES_FILE` (a price file in either
//! format) layered over it: the file is put in force again on SIGHUP and whenever it
//! changes (checked every `ROUTERO_PRICES_POLL_MS`, 1000), swapped whole between
//! requests, so each request is priced by one table and every cost names its version
//! (`{bundled}+{file}@{crc32}`); a file that does not load leaves the table in force.
//!
//! With `ROUTERO_METRICS_LISTEN` (an address) it also serves Prometheus metrics on
//! `/metrics` (requests by route and status, their latency to the response head, the
//! recorder's counters), `/healthz`, and `/readyz` (ready when Redis answers).
//!
//! For every request it
//!
//! 1. resolves the caller's key (`Authorization: Bearer …` or `x-api-key`) to its
//!    attribution from the config file (unknown key: 401), and the request's billing
//!    mode with a [`BillingPolicy`]: a provider credential the workspace holds itself
//!    (`[[credentials]]`) makes it BYOK, else the workspace's mode (`[[workspaces]]`),
//!    else `default_billing_mode`. A BYOK request for an upstream the workspace holds
//!    no credential for is refused (403) and never sent on the operator's key;
//! 2. asks the spend control to reserve the request's maximum cost
//!    ([`max_cost`]: every byte of the request body counted as a prompt token, which
//!    bounds any byte-level tokenizer, and the request's `max_tokens`, else the
//!    config's `default_max_tokens`), against the workspace's wallet (managed keys) and
//!    every budget of its key, team and customer (denied: 402 or 429, and nothing is
//!    forwarded). A managed key asking for a model without a price is refused (400):
//!    it could not be billed. A BYOK key is forwarded and its spend recorded unpriced;
//! 3. forwards the request with the workspace's own credential (BYOK) or the
//!    operator's upstream credential (managed), asking for an
//!    uncompressed response, and for an OpenAI chat stream with
//!    `stream_options.include_usage` set, since a stream without usage cannot be
//!    priced;
//! 4. prices the response: a JSON body at once, with the `x-routero-…` headers; a
//!    stream as it passes through ([`CostCapture`]), the cost arriving as trailers and
//!    as a final `: x-routero-cost=…` SSE comment. A client that goes away mid-stream
//!    leaves the known part of the usage, recorded as partial;
//! 5. settles the reservation at the actual cost (an unpriced response keeps its
//!    estimate: unknown is never zero) and records the spend event, printing it as one
//!    `spend {json}` line (gathered and written every 10 ms by a thread of its own).
//!
//! A response with an error status is passed through and its reservation released.
//!
//! Recording goes to Redis when `ROUTERO_REDIS_URL` is set (drain it into PostgreSQL
//! with `examples/coworker`), else to the in-memory queue drained into the in-memory
//! store. Wallet balances come from the config file; a production gateway refreshes
//! them from its [`Wallets`](routero::wallet::Wallets) ledger. Ctrl-C or SIGTERM
//! stops accepting, lets open responses finish (up to 30 s), flushes the recorder and
//! exits.

use std::collections::HashMap;
use std::convert::Infallible;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chrono::Utc;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use routero::attribution::{
    ApiKeyId, Attribution, BillingMode, BillingPolicy, CredentialId, CustomerId, OrgId, RequestId,
    TeamId, UserId, WorkspaceId,
};
use routero::control::{
    Budget, BudgetScope, Decision, Denial, MemoryControl, Period, Reservation, SpendControl,
    SpendRequest, max_cost,
};
use routero::drainer::{Drainer, DrainerConfig};
use routero::http::capture::{CaptureConfig, CostCapture};
use routero::http::headers;
use routero::http::serve::{BodyError, read_body};
use routero::memory::{MemoryElector, MemoryQueue, MemoryStore};
use routero::money::parse_amount;
use routero::notice::refresh_wallets;
use routero::port::{SpendQueue, SystemClock};
use routero::postgres::{PgConfig, PgStore};
use routero::price::{LivePrices, layered};
use routero::recorder::{RecordError, Recorder, RecorderConfig};
use routero::redis::{Redis, RedisConfig};
use routero::spend::{Metered, RequestContext, SpendEvent};
use routero::wallet::Wallets;
use routero::{Currency, PriceTable, Provider};
use rust_decimal::Decimal;
use serde::Deserialize;

type Error = Box<dyn std::error::Error + Send + Sync>;

/// The body of every response the gateway sends.
type Out = UnsyncBoxBody<Bytes, Error>;

/// The largest request body forwarded.
const MAX_REQUEST: usize = 32 * 1024 * 1024;
/// The largest JSON response priced (streams are not buffered).
const MAX_RESPONSE: usize = 64 * 1024 * 1024;
/// How long the upstream may take to send its response headers.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(600);
/// How long open responses may run on after a stop signal.
const GRACE: Duration = Duration::from_secs(30);

/// The config file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    listen: Option<String>,
    #[serde(default = "default_max_tokens")]
    default_max_tokens: u64,
    openai: Option<UpstreamConfig>,
    anthropic: Option<UpstreamConfig>,
    /// The billing mode of a workspace the config does not name.
    #[serde(default = "managed")]
    default_billing_mode: String,
    #[serde(default)]
    workspaces: Vec<WorkspaceConfig>,
    #[serde(default)]
    credentials: Vec<CredentialConfig>,
    #[serde(default)]
    keys: Vec<KeyConfig>,
    #[serde(default)]
    wallets: Vec<WalletConfig>,
    #[serde(default)]
    budgets: Vec<BudgetConfig>,
}

fn default_max_tokens() -> u64 {
    4096
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UpstreamConfig {
    base_url: String,
    provider: Option<String>,
    /// The environment variable holding the upstream's API key (none: no credential).
    api_key_env: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyConfig {
    /// The secret the caller presents.
    key: String,
    /// The key's id in the spend records.
    id: String,
    org: String,
    workspace: String,
    team: Option<String>,
    user: Option<String>,
    customer: Option<String>,
}

fn managed() -> String {
    "managed".to_owned()
}

/// A workspace's billing mode.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WorkspaceConfig {
    workspace: String,
    billing_mode: String,
}

/// A provider credential a workspace holds itself: its requests to that upstream go
/// with it, billed BYOK.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CredentialConfig {
    /// The credential's id in the billing policy.
    id: String,
    workspace: String,
    /// `openai` or `anthropic`: the upstream it is for.
    upstream: String,
    /// The environment variable holding the key…
    api_key_env: Option<String>,
    /// …or a file holding it (a mounted secret), surrounding white space trimmed.
    api_key_file: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WalletConfig {
    org: String,
    workspace: String,
    /// In the money grammar (`"25.00"`), USD.
    balance: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BudgetConfig {
    api_key: Option<String>,
    team: Option<String>,
    customer: Option<String>,
    period: String,
    /// In the money grammar (`"5.00"`), USD.
    limit: String,
}

/// The request dialects the gateway speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Dialect {
    OpenAi,
    Anthropic,
}

#[derive(Debug)]
struct Upstream {
    dialect: Dialect,
    provider: Provider,
    base_url: String,
    credential: Option<HeaderValue>,
}

#[derive(Debug)]
struct Caller {
    attribution: Attribution,
}

/// A workspace's own credential for one upstream.
#[derive(Debug)]
struct OwnCredential {
    id: CredentialId,
    header: HeaderValue,
}

type HttpsClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

struct Gateway {
    /// How long a client has to send its request body.
    body_timeout: Duration,
    keys: HashMap<String, Caller>,
    policy: BillingPolicy,
    credentials: OwnCredentials,
    openai: Option<Upstream>,
    anthropic: Option<Upstream>,
    prices: LivePrices,
    control: MemoryControl,
    budgets: Vec<Budget>,
    recorder: Recorder,
    client: HttpsClient,
    default_max_tokens: u64,
    spend_lines: SpendLines,
}

/// The `spend {json}` lines, gathered in memory and written to standard output by a
/// thread of their own every [`SpendLines::EVERY`] (and when the gateway stops): a
/// request never waits on standard output, nor wakes its reader, nor stalls the
/// runtime when that reader is slow. Past [`SpendLines::MOST`] bytes waiting, the
/// request that adds one writes them itself, so a reader that stops reading slows
/// the gateway down rather than growing its memory.
#[derive(Clone, Default)]
struct SpendLines(Arc<std::sync::Mutex<Vec<u8>>>);

impl SpendLines {
    const EVERY: Duration = Duration::from_millis(10);
    const MOST: usize = 4 << 20;

    /// Lines gathered and written every [`SpendLines::EVERY`] from now on.
    fn start() -> SpendLines {
        let lines = SpendLines::default();
        let writer = lines.clone();
        std::thread::Builder::new()
            .name("spend-lines".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(SpendLines::EVERY);
                    writer.flush();
                }
            })
            .expect("a thread for the spend lines");
        lines
    }

    fn push(&self, event: &SpendEvent) {
        let Ok(json) = serde_json::to_vec(event) else {
            eprintln!("gateway: a spend event that is not JSON");
            return;
        };
        let waiting = {
            let mut lines = self
                .0
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            lines.extend_from_slice(b"spend ");
            lines.extend_from_slice(&json);
            lines.push(b'\n');
            lines.len()
        };
        if waiting > SpendLines::MOST {
            self.flush();
        }
    }

    /// Writes what is waiting. Standard output's lock is taken first, so the lines
    /// leave in the order they came whoever writes them.
    fn flush(&self) {
        use std::io::Write;
        let mut stdout = std::io::stdout().lock();
        let waiting = std::mem::take(
            &mut *self
                .0
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        if !waiting.is_empty() {
            let _ = stdout.write_all(&waiting);
            let _ = stdout.flush();
        }
    }
}

/// An error answer in the caller's dialect.
fn error(dialect: Dialect, status: StatusCode, kind: &str, message: &str) -> Response<Out> {
    let body = match dialect {
        Dialect::OpenAi => serde_json::json!({
            "error": { "message": message, "type": kind, "code": kind }
        }),
        Dialect::Anthropic => serde_json::json!({
            "type": "error", "error": { "type": kind, "message": message }
        }),
    };
    let mut response = Response::new(full(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

fn full(bytes: Bytes) -> Out {
    Full::new(bytes)
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// Headers never forwarded: those of one connection (hop-by-hop), and the host and
/// length, which the outgoing message sets for itself.
fn unforwarded(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "proxy-connection"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
            | "host"
            | "content-length"
    )
}

/// The caller's key: `Authorization: Bearer …`, else `x-api-key`.
fn caller_key(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .or_else(|| headers.get("x-api-key").and_then(|v| v.to_str().ok()))
}

/// The output ceiling the request sets, in any dialect's name for it.
fn max_tokens(request: &serde_json::Value) -> Option<u64> {
    ["max_completion_tokens", "max_tokens", "max_output_tokens"]
        .iter()
        .find_map(|name| request.get(name).and_then(serde_json::Value::as_u64))
}

impl Gateway {
    fn route(&self, path: &str) -> Option<&Upstream> {
        match path {
            "/v1/messages" => self.anthropic.as_ref(),
            "/v1/chat/completions" | "/v1/completions" | "/v1/responses" | "/v1/embeddings" => {
                self.openai.as_ref()
            }
            _ => None,
        }
    }

    async fn handle(
        self: Arc<Self>,
        request: Request<Incoming>,
    ) -> Result<Response<Out>, Infallible> {
        let at = Utc::now();
        // One table prices the whole request, estimate and cost, whatever a reload
        // puts in force meanwhile.
        let prices = self.prices.current();
        let path = request.uri().path().to_owned();
        let Some(upstream) = self.route(&path) else {
            let message = format!("no route for {}", path.escape_debug());
            return Ok(error(
                Dialect::OpenAi,
                StatusCode::NOT_FOUND,
                "not_found",
                &message,
            ));
        };
        let dialect = upstream.dialect;
        let Some(caller) = caller_key(request.headers()).and_then(|k| self.keys.get(k)) else {
            return Ok(error(
                dialect,
                StatusCode::UNAUTHORIZED,
                "invalid_api_key",
                "unknown API key",
            ));
        };
        let workspace = &caller.attribution.who.workspace;
        let own = self.credentials.get(&(workspace.clone(), dialect));
        let mode = self
            .policy
            .mode_for(workspace, own.map(|c| &c.id))
            .unwrap_or(BillingMode::Managed);
        let credential = match (mode, own) {
            (BillingMode::Byok, Some(own)) => Some(&own.header),
            (BillingMode::Byok, None) => {
                let message = format!(
                    "{workspace} is billed BYOK and holds no {} credential: \
                     the request was not forwarded",
                    dialect.name()
                );
                return Ok(error(
                    dialect,
                    StatusCode::FORBIDDEN,
                    "byok_credential_missing",
                    &message,
                ));
            }
            (BillingMode::Managed, _) => upstream.credential.as_ref(),
        };
        let (parts, body) = request.into_parts();
        let body = match read_body(body, MAX_REQUEST, self.body_timeout).await {
            Ok(body) => body,
            Err(refused) => {
                let (status, code) = match refused {
                    BodyError::TooLarge { .. } => {
                        (StatusCode::PAYLOAD_TOO_LARGE, "request_too_large")
                    }
                    BodyError::TooSlow { .. } => (StatusCode::REQUEST_TIMEOUT, "request_timeout"),
                    _ => (StatusCode::BAD_REQUEST, "invalid_request_error"),
                };
                return Ok(error(dialect, status, code, &refused.to_string()));
            }
        };
        let mut json: serde_json::Value = match serde_json::from_slice(&body) {
            Ok(json) => json,
            Err(e) => {
                let message = format!("the request body is not JSON: {e}");
                return Ok(error(
                    dialect,
                    StatusCode::BAD_REQUEST,
                    "invalid_request_error",
                    &message,
                ));
            }
        };
        let Some(model) = json
            .get("model")
            .and_then(|m| m.as_str())
            .map(str::to_owned)
        else {
            return Ok(error(
                dialect,
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                "the request names no model",
            ));
        };
        let streamed = json.get("stream") == Some(&serde_json::Value::Bool(true));
        let body = if streamed && path == "/v1/chat/completions" {
            json["stream_options"]["include_usage"] = serde_json::Value::Bool(true);
            Bytes::from(json.to_string())
        } else {
            body
        };
        let output = if path == "/v1/embeddings" {
            0
        } else {
            max_tokens(&json).unwrap_or(self.default_max_tokens)
        };
        let prompt = u64::try_from(body.len()).unwrap_or(u64::MAX);
        let estimate = match max_cost(&prices, &upstream.provider, &model, prompt, output, at) {
            Ok(estimate) => estimate,
            Err(e) if mode == BillingMode::Managed => {
                let message = format!("a managed key cannot be billed for this model: {e}");
                return Ok(error(
                    dialect,
                    StatusCode::BAD_REQUEST,
                    "model_not_priced",
                    &message,
                ));
            }
            // BYOK spend is tracked, not charged: forward it, record it unpriced.
            Err(_) => Decimal::ZERO,
        };
        let ask = SpendRequest {
            attribution: &caller.attribution,
            billing_mode: mode,
            estimate,
            at,
        };
        let reservation = match self.control.reserve(&ask, &self.budgets).await {
            Ok(Decision::Allowed(reservation)) => reservation,
            Ok(Decision::Denied(denial)) => {
                let (status, kind) = match denial {
                    Denial::WalletExhausted { .. } => {
                        (StatusCode::PAYMENT_REQUIRED, "insufficient_quota")
                    }
                    _ => (StatusCode::TOO_MANY_REQUESTS, "budget_exceeded"),
                };
                return Ok(error(dialect, status, kind, &denial.to_string()));
            }
            Err(e) => {
                let message = format!("spend control: {e}");
                return Ok(error(
                    dialect,
                    StatusCode::SERVICE_UNAVAILABLE,
                    "spend_control_unavailable",
                    &message,
                ));
            }
        };

        let mut forward = Request::new(Full::new(body));
        *forward.method_mut() = parts.method.clone();
        let target = format!(
            "{}{}",
            upstream.base_url,
            parts.uri.path_and_query().map_or("/", |p| p.as_str())
        );
        *forward.uri_mut() = match target.parse() {
            Ok(uri) => uri,
            Err(e) => {
                self.release(&reservation).await;
                let message = format!("upstream address {target}: {e}");
                return Ok(error(
                    dialect,
                    StatusCode::BAD_GATEWAY,
                    "bad_gateway",
                    &message,
                ));
            }
        };
        for (name, value) in &parts.headers {
            let credential = name == header::AUTHORIZATION || name.as_str() == "x-api-key";
            if !unforwarded(name) && !credential && name != header::ACCEPT_ENCODING {
                forward.headers_mut().append(name, value.clone());
            }
        }
        if let Some(credential) = credential {
            let name = match dialect {
                Dialect::OpenAi => header::AUTHORIZATION,
                Dialect::Anthropic => HeaderName::from_static("x-api-key"),
            };
            forward.headers_mut().insert(name, credential.clone());
        }
        let response =
            match tokio::time::timeout(UPSTREAM_TIMEOUT, self.client.request(forward)).await {
                Ok(Ok(response)) => response,
                Ok(Err(e)) => {
                    self.release(&reservation).await;
                    let message = format!("upstream: {e}");
                    return Ok(error(
                        dialect,
                        StatusCode::BAD_GATEWAY,
                        "bad_gateway",
                        &message,
                    ));
                }
                Err(_) => {
                    self.release(&reservation).await;
                    return Ok(error(
                        dialect,
                        StatusCode::GATEWAY_TIMEOUT,
                        "upstream_timeout",
                        "the upstream did not answer in time",
                    ));
                }
            };

        let request_id = RequestId::new(&format!("req-{}", uuid::Uuid::new_v4().simple()))
            .expect("a uuid is a valid id");
        let (mut head, body) = response.into_parts();
        strip_unforwarded(&mut head.headers);
        if let Ok(id) = HeaderValue::from_str(request_id.as_str()) {
            head.headers.insert("x-routero-request-id", id);
        }
        if !head.status.is_success() {
            // Not served, not billed.
            self.release(&reservation).await;
            let body = body.map_err(Error::from).boxed_unsync();
            return Ok(Response::from_parts(head, body));
        }
        let event_stream = head
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/event-stream"));
        let context = RequestContext::new(
            request_id,
            at,
            caller.attribution.clone(),
            upstream.provider.clone(),
            model,
        )
        .with_billing_mode(mode);
        let spent = Spent {
            gateway: self.clone(),
            reservation,
        };
        if event_stream {
            let config = CaptureConfig {
                context,
                prices: Arc::clone(&prices),
                sse_comment: true,
            };
            headers::declare_trailers(&mut head.headers);
            let body = CostCapture::new(body, config, Box::new(move |c| spent.record(c)));
            return Ok(Response::from_parts(
                head,
                body.map_err(Error::from).boxed_unsync(),
            ));
        }
        let body = match Limited::new(body, MAX_RESPONSE).collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(e) => {
                // The upstream served (and may bill) it: keep the estimate.
                let message = format!("upstream response: {e}");
                spent.settle(spent.reservation.amount);
                return Ok(error(
                    dialect,
                    StatusCode::BAD_GATEWAY,
                    "bad_gateway",
                    &message,
                ));
            }
        };
        let header_pairs: Vec<(&str, &str)> = head
            .headers
            .iter()
            .filter_map(|(n, v)| Some((n.as_str(), v.to_str().ok()?)))
            .collect();
        let metered = context.price_body(&prices, &body, &header_pairs);
        headers::insert_metered(&mut head.headers, &metered);
        spent.record(metered);
        Ok(Response::from_parts(head, full(body)))
    }

    async fn release(&self, reservation: &Reservation) {
        if let Err(e) = self.control.release(reservation).await {
            eprintln!("gateway: releasing a reservation: {e}");
        }
    }
}

/// Strips the headers of an upstream response that are not passed on.
fn strip_unforwarded(headers: &mut HeaderMap) {
    let names: Vec<HeaderName> = headers.keys().filter(|n| unforwarded(n)).cloned().collect();
    for name in names {
        headers.remove(name);
    }
}

/// A forwarded request waiting for its outcome.
struct Spent {
    gateway: Arc<Gateway>,
    reservation: Reservation,
}

impl Spent {
    /// Records the outcome and settles the reservation: at the cost, or at the
    /// estimate when the cost is unknown.
    fn record(self, metered: Metered) {
        let event = metered.event;
        let actual = event.cost().unwrap_or(self.reservation.amount);
        self.gateway.spend_lines.push(&event);
        let recorder = self.gateway.recorder.clone();
        if let Err(e) = recorder.record(event) {
            // A full buffer hands the event back: keep offering it while the queue
            // catches up rather than lose it.
            let mut event = e.into_event();
            spawn(async move {
                for _ in 0..1000 {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    match recorder.record(event) {
                        Ok(()) => return,
                        Err(RecordError::Closed(back)) => {
                            event = *back;
                            break;
                        }
                        Err(e) => event = e.into_event(),
                    }
                }
                eprintln!(
                    "gateway: not recorded: {}",
                    serde_json::to_string(&event).unwrap_or_default()
                );
            });
        }
        self.settle(actual);
    }

    fn settle(&self, actual: Decimal) {
        let gateway = self.gateway.clone();
        let reservation = self.reservation.clone();
        spawn(async move {
            if let Err(e) = gateway.control.settle(&reservation, actual).await {
                eprintln!("gateway: settling a reservation: {e}");
            }
        });
    }
}

/// Runs `task` on the runtime; a body dropped while the runtime itself shuts down has
/// none, and says so.
fn spawn(task: impl std::future::Future<Output = ()> + Send + 'static) {
    match tokio::runtime::Handle::try_current() {
        Ok(runtime) => drop(runtime.spawn(task)),
        Err(_) => eprintln!("gateway: the runtime is gone; a spend was not settled"),
    }
}

fn budget(config: &BudgetConfig) -> Result<Budget, Error> {
    let scope = match (&config.api_key, &config.team, &config.customer) {
        (Some(k), None, None) => BudgetScope::ApiKey(ApiKeyId::new(k)?),
        (None, Some(t), None) => BudgetScope::Team(TeamId::new(t)?),
        (None, None, Some(c)) => BudgetScope::Customer(CustomerId::new(c)?),
        _ => return Err("a budget names exactly one of api_key, team or customer".into()),
    };
    let period = match config.period.as_str() {
        "day" => Period::Day,
        "week" => Period::Week,
        "month" => Period::Month,
        other => {
            return Err(format!("unknown budget period {other:?} (day, week or month)").into());
        }
    };
    Ok(Budget {
        scope,
        period,
        limit: parse_amount(&config.limit, Currency::USD)
            .map_err(|e| format!("budget limit: {e}"))?,
    })
}

impl Dialect {
    fn name(self) -> &'static str {
        match self {
            Dialect::OpenAi => "openai",
            Dialect::Anthropic => "anthropic",
        }
    }

    /// The header value a key is sent as.
    fn credential(self, key: &str) -> Result<HeaderValue, Error> {
        let value = match self {
            Dialect::OpenAi => format!("Bearer {key}"),
            Dialect::Anthropic => key.to_owned(),
        };
        let mut value = HeaderValue::from_str(&value)?;
        value.set_sensitive(true);
        Ok(value)
    }
}

/// The workspaces' own credentials, by workspace and upstream.
type OwnCredentials = HashMap<(WorkspaceId, Dialect), OwnCredential>;

/// The billing policy and the workspaces' own credentials.
fn billing(config: &Config) -> Result<(BillingPolicy, OwnCredentials), Error> {
    let mut policy = BillingPolicy::new(config.default_billing_mode.parse::<BillingMode>()?);
    for w in &config.workspaces {
        policy.set_workspace(WorkspaceId::new(&w.workspace)?, w.billing_mode.parse()?);
    }
    let mut own = HashMap::new();
    for c in &config.credentials {
        let dialect = match c.upstream.as_str() {
            "openai" => Dialect::OpenAi,
            "anthropic" => Dialect::Anthropic,
            other => {
                return Err(format!(
                    "credential {}: upstream {other:?} (openai or anthropic)",
                    c.id
                )
                .into());
            }
        };
        let key = match (&c.api_key_env, &c.api_key_file) {
            (Some(name), None) => std::env::var(name)
                .map_err(|_| format!("credential {}: {name} is not set", c.id))?,
            (None, Some(path)) => std::fs::read_to_string(path)
                .map_err(|e| format!("credential {}: {}: {e}", c.id, path.display()))?
                .trim()
                .to_owned(),
            _ => {
                return Err(format!(
                    "credential {}: exactly one of api_key_env or api_key_file",
                    c.id
                )
                .into());
            }
        };
        let id = CredentialId::new(&c.id)?;
        policy.set_credential(id.clone(), BillingMode::Byok);
        let workspace = WorkspaceId::new(&c.workspace)?;
        let credential = OwnCredential {
            id,
            header: dialect.credential(&key)?,
        };
        if own.insert((workspace, dialect), credential).is_some() {
            return Err(format!("{} holds two {} credentials", c.workspace, c.upstream).into());
        }
    }
    Ok((policy, own))
}

fn upstream(config: Option<UpstreamConfig>, dialect: Dialect) -> Result<Option<Upstream>, Error> {
    let Some(config) = config else {
        return Ok(None);
    };
    let provider = match (&config.provider, dialect) {
        (Some(name), _) => name.parse()?,
        (None, Dialect::OpenAi) => Provider::OpenAi,
        (None, Dialect::Anthropic) => Provider::Anthropic,
    };
    let credential = match &config.api_key_env {
        None => None,
        Some(name) => {
            let key = std::env::var(name).map_err(|_| format!("{name} is not set"))?;
            Some(dialect.credential(&key)?)
        }
    };
    Ok(Some(Upstream {
        dialect,
        provider,
        base_url: config.base_url.trim_end_matches('/').to_owned(),
        credential,
    }))
}

fn callers(keys: &[KeyConfig]) -> Result<HashMap<String, Caller>, Error> {
    let mut out = HashMap::new();
    for k in keys {
        let mut attribution =
            Attribution::new(OrgId::new(&k.org)?, WorkspaceId::new(&k.workspace)?)
                .with_api_key(ApiKeyId::new(&k.id)?);
        if let Some(team) = &k.team {
            attribution = attribution.with_team(TeamId::new(team)?);
        }
        if let Some(user) = &k.user {
            attribution = attribution.with_user(UserId::new(user)?);
        }
        if let Some(customer) = &k.customer {
            attribution = attribution.with_customer(CustomerId::new(customer)?);
        }
        if out.insert(k.key.clone(), Caller { attribution }).is_some() {
            return Err(format!("key {} is configured twice", k.id).into());
        }
    }
    Ok(out)
}

async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(term) => term,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    // The serving loop's warnings (failed accepts) go to standard error.
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gateway: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Refreshes the spend control's wallets: the one a notice names at once, every one
/// on the schedule (which also catches notices lost while Redis was away).
async fn keep_wallets(
    control: MemoryControl,
    store: Arc<dyn Wallets>,
    workspaces: Vec<(OrgId, WorkspaceId)>,
    every: Duration,
    mut notices: Option<tokio::sync::mpsc::Receiver<WorkspaceId>>,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        let which: Vec<(OrgId, WorkspaceId)> = tokio::select! {
            _ = tick.tick() => workspaces.clone(),
            Some(changed) = async {
                match notices.as_mut() {
                    Some(rx) => rx.recv().await,
                    None => std::future::pending().await,
                }
            } => workspaces.iter().filter(|(_, w)| *w == changed).cloned().collect(),
        };
        if let Err(e) = refresh_wallets(&control, &*store, &which, Utc::now()).await {
            eprintln!("gateway: wallet refresh: {e}");
        }
    }
}

/// What a price file looked like when last read: its size, modification time and
/// checksum.
type Stamp = (u64, Option<std::time::SystemTime>, u32);

/// `ROUTERO_PRICES_FILE` layered over the bundled table, and its stamp.
fn read_prices(path: &str) -> Result<(PriceTable, Stamp), String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
    let meta = std::fs::metadata(path).map_err(|e| format!("{path}: {e}"))?;
    let table = layered(&PriceTable::bundled(), &text).map_err(|e| format!("{path}: {e}"))?;
    Ok((
        table,
        (
            meta.len(),
            meta.modified().ok(),
            crc32fast::hash(text.as_bytes()),
        ),
    ))
}

/// Puts the price file in force again on SIGHUP and whenever it changes (checked
/// every `ROUTERO_PRICES_POLL_MS`, 1000). A file that does not load leaves the table
/// in force as it is.
async fn keep_prices(live: LivePrices, path: String, mut stamp: Stamp, every: Duration) {
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    let mut tick = tokio::time::interval(every);
    loop {
        let signalled = tokio::select! {
            _ = tick.tick() => false,
            Some(()) = async {
                match hup.as_mut() {
                    Some(hup) => hup.recv().await,
                    None => std::future::pending().await,
                }
            } => true,
        };
        if !signalled {
            let Ok(meta) = std::fs::metadata(&path) else {
                continue;
            };
            if (meta.len(), meta.modified().ok()) == (stamp.0, stamp.1) {
                continue;
            }
        }
        match read_prices(&path) {
            Ok((_, new)) if !signalled && new.2 == stamp.2 => stamp = new,
            Ok((table, new)) => {
                stamp = new;
                let old = live.replace(Arc::new(table));
                metrics::counter!("routero_price_reloads_total", "outcome" => "loaded")
                    .increment(1);
                println!(
                    "prices {} in force (was {})",
                    live.current().version(),
                    old.version()
                );
            }
            Err(e) => {
                metrics::counter!("routero_price_reloads_total", "outcome" => "refused")
                    .increment(1);
                eprintln!("gateway: {e}; the prices in force stay");
            }
        }
    }
}

async fn run() -> Result<(), Error> {
    let path: PathBuf = std::env::args_os()
        .nth(1)
        .map(PathBuf::from)
        .ok_or("usage: gateway CONFIG.toml")?;
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let config: Config = toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;

    // Spend goes to Redis (a coworker drains it) or to the in-memory pipeline.
    let redis = match RedisConfig::from_env()? {
        Some(config) => Some(Redis::connect(config).await?),
        None => None,
    };
    let (queue, drainer): (Arc<dyn SpendQueue>, _) = match &redis {
        Some(redis) => (Arc::new(redis.queue()), None),
        None => {
            let queue = Arc::new(MemoryQueue::new(4));
            let drainer = Arc::new(Drainer::new(
                queue.clone(),
                Arc::new(MemoryElector::new(Arc::new(SystemClock))),
                Arc::new(MemoryStore::new()),
                DrainerConfig::new("gateway"),
            ));
            (queue, Some(drainer))
        }
    };
    let (recorder, recorder_handle) = Recorder::spawn(queue, RecorderConfig::default());
    let draining = drainer.clone().map(Drainer::spawn);

    let control = MemoryControl::new();
    let keys = callers(&config.keys)?;
    match std::env::var("ROUTERO_DATABASE_URL") {
        // The wallets of record, kept current: at start, on every notice of a change
        // (with Redis), and every ROUTERO_WALLET_REFRESH_SECS.
        Ok(url) => {
            let store: Arc<dyn Wallets> = Arc::new(PgStore::connect(PgConfig::new(url)).await?);
            let mut workspaces: Vec<(OrgId, WorkspaceId)> = keys
                .values()
                .map(|c| {
                    (
                        c.attribution.who.org.clone(),
                        c.attribution.who.workspace.clone(),
                    )
                })
                .collect();
            workspaces.sort();
            workspaces.dedup();
            let every = match std::env::var("ROUTERO_WALLET_REFRESH_SECS") {
                Ok(s) => Duration::from_secs(
                    s.parse::<u64>()
                        .ok()
                        .filter(|n| *n > 0)
                        .ok_or_else(|| format!("ROUTERO_WALLET_REFRESH_SECS={s:?}"))?,
                ),
                Err(_) => Duration::from_secs(30),
            };
            refresh_wallets(&control, &*store, &workspaces, Utc::now()).await?;
            let notices = match &redis {
                Some(redis) => Some(redis.listen_wallet_notices().await?),
                None => None,
            };
            println!(
                "wallets from ROUTERO_DATABASE_URL, refreshed every {}s{}",
                every.as_secs(),
                if notices.is_some() {
                    " and on every notice"
                } else {
                    ""
                }
            );
            tokio::spawn(keep_wallets(
                control.clone(),
                store,
                workspaces,
                every,
                notices,
            ));
        }
        Err(_) => {
            for w in &config.wallets {
                let (org, workspace) = (OrgId::new(&w.org)?, WorkspaceId::new(&w.workspace)?);
                control
                    .refresh_wallet(
                        &org,
                        &workspace,
                        parse_amount(&w.balance, Currency::USD)
                            .map_err(|e| format!("wallet of {workspace}: {e}"))?,
                        Decimal::ZERO,
                    )
                    .await?;
            }
        }
    }
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_webpki_roots()
        .https_or_http()
        .enable_http1()
        .build();
    let (policy, credentials) = billing(&config)?;
    let prices = match std::env::var("ROUTERO_PRICES_FILE") {
        Ok(file) => {
            let (table, stamp) = read_prices(&file)?;
            println!("prices {} from {file}", table.version());
            let live = LivePrices::new(Arc::new(table));
            let every = match std::env::var("ROUTERO_PRICES_POLL_MS") {
                Ok(ms) => ms
                    .parse::<u64>()
                    .ok()
                    .filter(|ms| *ms > 0)
                    .map(Duration::from_millis)
                    .ok_or_else(|| format!("ROUTERO_PRICES_POLL_MS={ms:?}"))?,
                Err(_) => Duration::from_secs(1),
            };
            tokio::spawn(keep_prices(live.clone(), file, stamp, every));
            live
        }
        Err(_) => LivePrices::new(PriceTable::bundled()),
    };
    let serving = routero::http::serve::Serving::from_env()?.grace(GRACE);
    let spend_lines = SpendLines::start();
    let gateway = Arc::new(Gateway {
        body_timeout: serving.body_read_timeout,
        keys,
        policy,
        credentials,
        openai: upstream(config.openai, Dialect::OpenAi)?,
        anthropic: upstream(config.anthropic, Dialect::Anthropic)?,
        prices: prices.clone(),
        control,
        budgets: config
            .budgets
            .iter()
            .map(budget)
            .collect::<Result<_, _>>()?,
        recorder,
        client: Client::builder(TokioExecutor::new()).build(https),
        default_max_tokens: config.default_max_tokens,
        spend_lines: spend_lines.clone(),
    });

    if let Some(addr) = routero::http::ops::listen_from_env()? {
        let mut ops = routero::http::ops::Ops::install()?;
        if let Some(redis) = redis.clone() {
            ops = ops.ready_when("redis", move || {
                let redis = redis.clone();
                async move { redis.ping().await.map_err(|e| e.to_string()) }
            });
        }
        let listener = tokio::net::TcpListener::bind(addr).await?;
        println!(
            "metrics: http://{}/metrics (and /healthz, /readyz)",
            listener.local_addr()?
        );
        tokio::spawn(ops.serve(listener, std::future::pending()));
    }
    let listen = std::env::var("ROUTERO_LISTEN")
        .ok()
        .or(config.listen)
        .unwrap_or_else(|| "127.0.0.1:8090".to_owned());
    let listener = tokio::net::TcpListener::bind(&listen).await?;
    println!("listening on http://{}", listener.local_addr()?);
    let service = {
        let gateway = gateway.clone();
        move |_peer| {
            let gateway = gateway.clone();
            service_fn(move |request: Request<Incoming>| {
                let gateway = gateway.clone();
                async move {
                    let started = std::time::Instant::now();
                    let route = match request.uri().path() {
                        "/v1/messages" => "/v1/messages",
                        "/v1/chat/completions" => "/v1/chat/completions",
                        "/v1/completions" => "/v1/completions",
                        "/v1/responses" => "/v1/responses",
                        "/v1/embeddings" => "/v1/embeddings",
                        _ => "other",
                    };
                    let response = gateway.handle(request).await?;
                    // Until the head is sent: a stream's body is not timed.
                    routero::http::telemetry::observe(route, response.status(), started.elapsed());
                    Ok::<_, Infallible>(response)
                }
            })
        }
    };
    let report = routero::http::serve::serve(listener, serving, service, shutdown_signal()).await;
    if report.cut {
        eprintln!("gateway: open responses cut after {GRACE:?}");
    }
    drop(gateway);
    spend_lines.flush();
    let counts = recorder_handle.shutdown().await;
    if let (Some(drainer), Some(draining)) = (drainer, draining) {
        // Drain what the recorder flushed last, so the count is the whole run's.
        let events = draining.stop().await.events + drainer.drain_all().await?.events;
        println!(
            "stopped: {} events recorded, {events} drained",
            counts.recorded
        );
    } else {
        println!("stopped: {} events recorded into Redis", counts.recorded);
    }
    if let Some(redis) = redis {
        redis.quit().await;
    }
    Ok(())
}
