//! What an operator scrapes and probes: Prometheus metrics, liveness and readiness on
//! one listener (feature `ops`).
//!
//! [`Ops::install`] makes `metrics-exporter-prometheus` the process's recorder of the
//! [`metrics`] facade, through which the recorder, the drainer
//! ([`routero_core::telemetry`]), the billing API ([`crate::telemetry`]) and the
//! process itself report. [`Ops::serve`] answers on its own listener (the examples
//! read it from `ROUTERO_METRICS_LISTEN`):
//!
//! | path | answer |
//! |---|---|
//! | `GET /metrics` | every metric, in the Prometheus text format |
//! | `GET /healthz` | `200 ok` while the process runs |
//! | `GET /readyz` | `200` when every readiness check passes (each within 2 s), else `503`; a JSON object names each check's result |
//!
//! ```no_run
//! # async fn run(stop: tokio::sync::oneshot::Receiver<()>) -> Result<(), Box<dyn std::error::Error>> {
//! use routero_http::ops::Ops;
//!
//! let ops = Ops::install()?.ready_when("database", || async { Ok(()) });
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:9464").await?;
//! tokio::spawn(ops.serve(listener, async { let _ = stop.await; }));
//! # Ok(())
//! # }
//! ```

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::service::service_fn;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;

use routero_core::quarantine::{Quarantine, Release};
use routero_core::schedule::{JobRuns, RunFilter, RunState};

use crate::api::ProblemType;
use crate::serve::{ServeReport, Serving, read_body, serve};

/// How long one readiness check may take before it counts as failed.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// The buckets of the latency histograms, in seconds.
const LATENCY_BUCKETS: [f64; 14] = [
    0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

type Check =
    Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Result<(), String>> + Send>> + Send + Sync>;

/// The Prometheus recorder could not be installed.
#[derive(Debug, Clone)]
pub struct OpsError(String);

impl fmt::Display for OpsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "metrics recorder: {}", self.0)
    }
}

impl std::error::Error for OpsError {}

/// The metrics handle and the readiness checks of a process.
#[derive(Clone)]
pub struct Ops {
    handle: PrometheusHandle,
    checks: Vec<(Arc<str>, Check)>,
    admin: Option<Arc<Admin>>,
}

impl fmt::Debug for Ops {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ops")
            .field(
                "checks",
                &self.checks.iter().map(|(n, _)| n).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

static HANDLE: OnceLock<Result<PrometheusHandle, String>> = OnceLock::new();

impl Ops {
    /// Installs the Prometheus recorder as the process's metrics recorder (once; later
    /// calls share it) and starts its upkeep on the current tokio runtime. Fails if
    /// another recorder was installed first.
    pub fn install() -> Result<Ops, OpsError> {
        let handle = HANDLE
            .get_or_init(|| {
                let handle = PrometheusBuilder::new()
                    .set_buckets_for_metric(
                        Matcher::Suffix("_seconds".to_owned()),
                        &LATENCY_BUCKETS,
                    )
                    .map_err(|e| e.to_string())?
                    .install_recorder()
                    .map_err(|e| e.to_string())?;
                routero_core::telemetry::describe();
                crate::telemetry::describe();
                metrics::describe_gauge!(
                    "routero_ready",
                    "1 when the readiness check passed at the last /readyz."
                );
                let upkeep = handle.clone();
                tokio::spawn(async move {
                    let mut tick = tokio::time::interval(Duration::from_secs(5));
                    loop {
                        tick.tick().await;
                        upkeep.run_upkeep();
                    }
                });
                Ok(handle)
            })
            .clone()
            .map_err(OpsError)?;
        Ok(Ops {
            handle,
            checks: Vec::new(),
            admin: None,
        })
    }

    /// Adds a readiness check: `/readyz` answers 200 only while every check returns
    /// `Ok` within [`CHECK_TIMEOUT`]. The error text is shown in the answer.
    #[must_use]
    pub fn ready_when<F, Fut>(mut self, name: &str, check: F) -> Ops
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), String>> + Send + 'static,
    {
        self.checks
            .push((Arc::from(name), Arc::new(move || Box::pin(check()))));
        self
    }

    /// Serves the operator's admin API under `/admin/` ([`Admin`]), to callers that
    /// present `token` as a bearer token.
    #[must_use]
    pub fn admin(mut self, token: &str, quarantine: Arc<dyn Quarantine>) -> Ops {
        self.admin = Some(Arc::new(Admin {
            token: token.to_owned(),
            quarantine,
            jobs: None,
        }));
        self
    }

    /// Adds the scheduler's run records to the admin API (`/admin/jobs`); call after
    /// [`admin`](Self::admin).
    #[must_use]
    pub fn admin_jobs(mut self, runs: Arc<dyn JobRuns>) -> Ops {
        if let Some(admin) = self.admin.as_mut().and_then(Arc::get_mut) {
            admin.jobs = Some(runs);
        }
        self
    }

    /// Every metric now, in the Prometheus text format.
    pub fn render(&self) -> String {
        self.handle.render()
    }

    /// Runs every check at once; `true` and each result when all passed.
    pub async fn readiness(&self) -> (bool, BTreeMap<String, String>) {
        let runs = self.checks.iter().map(|(name, check)| {
            let check = Arc::clone(check);
            async move {
                let result = match tokio::time::timeout(CHECK_TIMEOUT, check()).await {
                    Ok(result) => result,
                    Err(_) => Err(format!("no answer within {} s", CHECK_TIMEOUT.as_secs())),
                };
                (name.to_string(), result)
            }
        });
        let results = futures::future::join_all(runs).await;
        let ready = results.iter().all(|(_, r)| r.is_ok());
        for (name, result) in &results {
            let up = if result.is_ok() { 1.0 } else { 0.0 };
            metrics::gauge!("routero_ready", "check" => name.clone()).set(up);
        }
        let answers = results
            .into_iter()
            .map(|(name, r)| (name, r.map_or_else(|e| e, |()| "ok".to_owned())))
            .collect();
        (ready, answers)
    }

    /// Answers one request to the operations listener.
    pub async fn answer<B>(&self, request: Request<B>) -> Response<Full<Bytes>>
    where
        B: hyper::body::Body,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        if request.uri().path().starts_with("/admin/") {
            return match &self.admin {
                Some(admin) => admin.answer(request).await.map(Full::new),
                None => text(StatusCode::NOT_FOUND, "no admin API: set an admin token\n"),
            };
        }
        let path = request.uri().path();
        if request.method() != Method::GET && request.method() != Method::HEAD {
            return text(StatusCode::METHOD_NOT_ALLOWED, "GET only\n");
        }
        match path {
            "/metrics" => {
                let mut response = text(StatusCode::OK, self.render());
                response.headers_mut().insert(
                    header::CONTENT_TYPE,
                    header::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
                );
                response
            }
            "/healthz" => text(StatusCode::OK, "ok\n"),
            "/readyz" => {
                let (ready, checks) = self.readiness().await;
                let body = serde_json::json!({
                    "status": if ready { "ready" } else { "not ready" },
                    "checks": checks,
                });
                let mut response = text(
                    if ready {
                        StatusCode::OK
                    } else {
                        StatusCode::SERVICE_UNAVAILABLE
                    },
                    body.to_string(),
                );
                response.headers_mut().insert(
                    header::CONTENT_TYPE,
                    header::HeaderValue::from_static("application/json"),
                );
                response
            }
            _ => text(
                StatusCode::NOT_FOUND,
                "not found: /metrics, /healthz, /readyz\n",
            ),
        }
    }

    /// Serves [`answer`](Self::answer) on `listener` with the hardened loop of
    /// [`crate::serve`] until `shutdown` completes.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()>,
    ) -> ServeReport {
        let ops = Arc::new(self);
        serve(
            listener,
            Serving::default().max_connections(64),
            move |_peer: SocketAddr| {
                let ops = Arc::clone(&ops);
                service_fn(move |request: Request<hyper::body::Incoming>| {
                    let ops = Arc::clone(&ops);
                    async move { Ok::<_, Infallible>(ops.answer(request).await) }
                })
            },
            shutdown,
        )
        .await
    }
}

/// The operator's admin API, on the operations listener (never on the billing API's):
///
/// | request | answer |
/// |---|---|
/// | `GET /admin/quarantine` | every quarantined batch, oldest first (an undecodable entry's bytes in base64) |
/// | `POST /admin/quarantine/{id}/replay` | `200` applied now; `409` released before; `404`; a batch that still cannot be applied stays and is a `422` problem |
/// | `POST /admin/quarantine/{id}/discard` with `{"reason": "…"}` | `200` released without applying; `409`; `404` |
/// | `GET /admin/jobs[?job=…&state=…&limit=…]` | the scheduler's run records, newest first: job, period, state (`running`, `done`, `failed`, `refused`), attempts, error, next attempt |
/// | `POST /admin/jobs/retry` with `{"job": "…", "period": "…"}` | `200` a failed or refused run becomes due at once; `409` it is not failed or refused; `404` |
///
/// Every request needs `authorization: Bearer <token>`; refusals are problems.
pub struct Admin {
    token: String,
    quarantine: Arc<dyn Quarantine>,
    jobs: Option<Arc<dyn JobRuns>>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Retry {
    job: String,
    period: String,
}

impl fmt::Debug for Admin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Admin").finish_non_exhaustive()
    }
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Discard {
    reason: String,
}

impl Admin {
    async fn answer<B>(&self, request: Request<B>) -> Response<Bytes>
    where
        B: hyper::body::Body,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let presented = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        // Compared in constant time: the token is the only key to this API.
        let allowed = presented.is_some_and(|p| {
            p.len() == self.token.len()
                && p.bytes()
                    .zip(self.token.bytes())
                    .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                    == 0
        });
        if !allowed {
            return ProblemType::Unauthorized
                .response("the admin API needs the admin bearer token");
        }
        let now = chrono::Utc::now();
        let path = request.uri().path().trim_end_matches('/').to_owned();
        let method = request.method().clone();
        let segments: Vec<&str> = path.split('/').skip(1).collect();
        match (method, segments.as_slice()) {
            (Method::GET, ["admin", "quarantine"]) => match self.quarantine.quarantined().await {
                Ok(list) => json(StatusCode::OK, &list),
                Err(e) => ProblemType::Unavailable.response(e.to_string()),
            },
            (Method::POST, ["admin", "quarantine", id, action @ ("replay" | "discard")]) => {
                let Ok(id) = id.parse::<u64>() else {
                    return ProblemType::NotFound.response(format!("no quarantined batch {id:?}"));
                };
                let released = if *action == "replay" {
                    self.quarantine.replay(id, now).await
                } else {
                    let body = match read_body(request.into_body(), 16 * 1024, CHECK_TIMEOUT).await
                    {
                        Ok(body) => body,
                        Err(refused) => return refused.problem(),
                    };
                    let reason = match serde_json::from_slice::<Discard>(&body) {
                        Ok(d) if !d.reason.trim().is_empty() && d.reason.chars().count() <= 500 => {
                            d.reason
                        }
                        _ => {
                            return ProblemType::BadRequest.response(
                                r#"a discard takes {"reason": "…"} (1 to 500 characters)"#,
                            );
                        }
                    };
                    self.quarantine.discard(id, reason.trim(), now).await
                };
                match released {
                    Ok(Release::Released) => json(
                        StatusCode::OK,
                        &serde_json::json!({"id": id, "released": action}),
                    ),
                    Ok(Release::AlreadyReleased(state)) => {
                        ProblemType::AlreadyReleased.response(format!(
                            "batch {id} was released before: {}",
                            serde_json::to_string(&state).unwrap_or_default()
                        ))
                    }
                    Ok(Release::NotFound) => {
                        ProblemType::NotFound.response(format!("no quarantined batch {id}"))
                    }
                    Err(e) if e.is_retryable() => ProblemType::Unavailable.response(e.to_string()),
                    Err(e) => ProblemType::ReplayFailed
                        .response(format!("batch {id} stays quarantined: {e}")),
                }
            }
            (Method::GET, ["admin", "jobs"]) => {
                let Some(jobs) = &self.jobs else {
                    return ProblemType::NotFound.response("this process runs no scheduler");
                };
                let mut filter = RunFilter::default();
                for (name, value) in
                    form_urlencoded::parse(request.uri().query().unwrap_or("").as_bytes())
                {
                    match name.as_ref() {
                        "job" => filter.job = Some(value.into_owned()),
                        "state" => match RunState::parse(&value) {
                            Some(state) => filter.state = Some(state),
                            None => {
                                return ProblemType::BadRequest.response(format!(
                                    "state {value:?}: running, done, failed or refused"
                                ));
                            }
                        },
                        "limit" => match value.parse::<usize>() {
                            Ok(n) if (1..=1000).contains(&n) => filter.limit = n,
                            _ => {
                                return ProblemType::BadRequest
                                    .response("limit is a number from 1 to 1000");
                            }
                        },
                        other => {
                            return ProblemType::BadRequest
                                .response(format!("unknown parameter {other:?}"));
                        }
                    }
                }
                match jobs.runs(&filter).await {
                    Ok(runs) => json(StatusCode::OK, &runs),
                    Err(e) => ProblemType::Unavailable.response(e.to_string()),
                }
            }
            (Method::POST, ["admin", "jobs", "retry"]) => {
                let Some(jobs) = &self.jobs else {
                    return ProblemType::NotFound.response("this process runs no scheduler");
                };
                let body = match read_body(request.into_body(), 16 * 1024, CHECK_TIMEOUT).await {
                    Ok(body) => body,
                    Err(refused) => return refused.problem(),
                };
                let Ok(retry) = serde_json::from_slice::<Retry>(&body) else {
                    return ProblemType::BadRequest
                        .response(r#"a retry takes {"job": "…", "period": "…"}"#);
                };
                match jobs.retry(&retry.job, &retry.period).await {
                    Ok(Some(true)) => json(
                        StatusCode::OK,
                        &serde_json::json!({"job": retry.job, "period": retry.period, "due": true}),
                    ),
                    Ok(Some(false)) => ProblemType::NotRetryable.response(format!(
                        "{} {} is neither failed nor refused",
                        retry.job, retry.period
                    )),
                    Ok(None) => ProblemType::NotFound
                        .response(format!("no run of {} for {}", retry.job, retry.period)),
                    Err(e) => ProblemType::Unavailable.response(e.to_string()),
                }
            }
            (method, _) => ProblemType::NotFound.response(format!("no {method} {path}")),
        }
    }
}

fn json(status: StatusCode, value: &impl serde::Serialize) -> Response<Bytes> {
    let mut response = Response::new(Bytes::from(serde_json::to_vec(value).unwrap_or_default()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    response
}

/// `ROUTERO_METRICS_LISTEN`, parsed: `None` where unset.
pub fn listen_from_env() -> Result<Option<SocketAddr>, String> {
    match std::env::var("ROUTERO_METRICS_LISTEN") {
        Ok(addr) if !addr.trim().is_empty() => addr
            .trim()
            .parse()
            .map(Some)
            .map_err(|e| format!("ROUTERO_METRICS_LISTEN={addr:?}: {e}")),
        _ => Ok(None),
    }
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}
