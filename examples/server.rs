//! The billing REST API served over HTTP/1.1 with hyper.
//!
//! ```text
//! cargo run --example server
//! ```
//!
//! It also serves the spend dashboard at `/`: three static files compiled into the
//! binary (`examples/dashboard/`), a page that signs in with the printed token and
//! reads everything it shows from the API below.
//!
//! By default the API runs over the in-memory store, filled with the quickstart's demo
//! traffic spread over the last fourteen days and with two topped-up Acme wallets;
//! Over the in-memory store, with no coworker beside it, the server closes each month
//! itself (`ROUTERO_CLOSE_GRACE_HOURS`, 6, after it ends), on the same scheduler and
//! `month-close` job a coworker runs; over PostgreSQL the coworkers close them.
//! `ROUTERO_DEMO_EVERY_MS=N` keeps demo requests arriving, one every N milliseconds,
//! through the recorder, the in-memory queue and a drainer, as a gateway's would. With
//! `ROUTERO_DATABASE_URL` set it serves that PostgreSQL database instead (migrated on
//! connect), and with `ROUTERO_REDIS_URL` set as well it also drains the spend the
//! gateways record in Redis into it, as one more coworker. With
//! `ROUTERO_DATABASE_READ_URL` (a streaming replica) its analytics and exports read
//! there, and `/readyz` measures the replica's lag into
//! `routero_db_replica_lag_seconds`. It listens
//! on `ROUTERO_LISTEN` (default `127.0.0.1:8080`; port 0 picks a free one) and prints two
//! demo bearer tokens: the Acme admin's, who lists Acme's two workspaces, and an
//! org-wide Acme admin's, who sees every workspace the billing directory gives Acme
//! (`ROUTERO_BILLING_FILE`, TOML, or the demo's), and a curl line to try.
//! `ROUTERO_FX_RATES_FILE` (CSV `date,from,to,rate`) gives the exchange rates usage in
//! another currency than its wallet's is debited and invoiced at. With
//! `ROUTERO_METRICS_LISTEN` (an address) it serves Prometheus metrics on `/metrics`,
//! and `/healthz` and `/readyz` (ready when the database and Redis it uses answer).
//! With both database and Redis, every wallet write is announced on Redis, so that
//! running gateways lift a 402 as soon as a top-up lands. `POST /billing/repricings`
//! layers the prices it is given over those in force: `ROUTERO_PRICES_FILE` over the
//! bundled table, as the gateway prices, else the bundled table. Ctrl-C stops it.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chrono::Utc;
use http::{Request, Response};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use routero::PriceTable;
use routero::attribution::OrgId;
use routero::drainer::{Drainer, DrainerConfig, DrainerHandle};
use routero::http::api::{ApiConfig, BillingApi, Principal, Role};
use routero::http::ops::Ops;
use routero::http::serve::read_body;
use routero::invoice::{BillingDirectory, InvoiceStore};
use routero::memory::{MemoryElector, MemoryQueue, MemoryStore};
use routero::money::RateTable;
use routero::notice::{Notifying, WalletNotices};
use routero::port::{SpendReader, SystemClock};
use routero::postgres::{PgConfig, PgStore};
use routero::price::{LivePrices, layered};
use routero::recorder::{Recorder, RecorderConfig, RecorderHandle};
use routero::redis::{Redis, RedisConfig};
use routero::reprice::Repricings;
use routero::wallet::Wallets;

#[path = "demo/mod.rs"]
mod demo;

/// The largest request body the server reads (a top-up is a few dozen bytes).
const MAX_BODY: usize = 64 * 1024;

/// The dashboard's files: (path, content type, content).
const DASHBOARD: [(&str, &str, &str); 3] = [
    (
        "/",
        "text/html; charset=utf-8",
        include_str!("dashboard/index.html"),
    ),
    (
        "/dashboard.js",
        "text/javascript; charset=utf-8",
        include_str!("dashboard/dashboard.js"),
    ),
    (
        "/dashboard.css",
        "text/css; charset=utf-8",
        include_str!("dashboard/dashboard.css"),
    ),
];

/// One of the dashboard's files, with headers that keep it to its own origin.
fn dashboard_file(path: &str) -> Option<Response<Bytes>> {
    let path = if path == "/index.html" { "/" } else { path };
    let (_, content_type, text) = DASHBOARD.iter().find(|(p, _, _)| *p == path)?;
    Response::builder()
        .header(http::header::CONTENT_TYPE, *content_type)
        .header(http::header::CACHE_CONTROL, "no-cache")
        .header(
            "content-security-policy",
            "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
        )
        .header("x-content-type-options", "nosniff")
        .header("referrer-policy", "no-referrer")
        .body(Bytes::from_static(text.as_bytes()))
        .ok()
}

type Error = Box<dyn std::error::Error + Send + Sync>;

/// The billing directory: `ROUTERO_BILLING_FILE` (TOML, see
/// `BillingDirectory::from_toml`), else the demo's workspaces.
fn directory() -> Result<BillingDirectory, Error> {
    match std::env::var("ROUTERO_BILLING_FILE") {
        Ok(path) => {
            let text = std::fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?;
            Ok(BillingDirectory::from_toml(&text).map_err(|e| format!("{path}: {e}"))?)
        }
        Err(_) => Ok(demo::directory()),
    }
}

/// The exchange rates of `ROUTERO_FX_RATES_FILE` (CSV `date,from,to,rate`), else none.
fn rates() -> Result<Arc<RateTable>, Error> {
    match std::env::var("ROUTERO_FX_RATES_FILE") {
        Ok(path) => {
            let text = std::fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?;
            Ok(Arc::new(
                RateTable::from_csv(&text).map_err(|e| format!("{path}: {e}"))?,
            ))
        }
        Err(_) => Ok(Arc::new(RateTable::new())),
    }
}

/// The API over a store, its wallets opened in their billing currencies first.
/// The in-memory store's month close: the `month-close` job on a scheduler of its
/// own, `ROUTERO_CLOSE_GRACE_HOURS` (6) after each month, for the directory's
/// workspaces.
fn close_months(
    store: Arc<routero::memory::MemoryStore>,
    rates: Arc<RateTable>,
) -> Result<impl std::future::Future<Output = ()>, Error> {
    use routero::schedule::{Job, MemoryJobRuns, Scheduler, SchedulerConfig};
    let hours = match std::env::var("ROUTERO_CLOSE_GRACE_HOURS") {
        Ok(h) => h
            .parse::<u64>()
            .ok()
            .filter(|h| *h <= 24 * 27)
            .ok_or_else(|| format!("ROUTERO_CLOSE_GRACE_HOURS={h:?}: whole hours, at most 648"))?,
        Err(_) => 6,
    };
    let job = routero::jobs::MonthClose::new(
        store.clone(),
        store.clone(),
        store.clone(),
        Arc::new(move || rates.clone() as Arc<dyn routero::money::ExchangeRates>),
        Arc::new(directory()?),
        Duration::from_secs(hours * 3600),
    );
    let clock = Arc::new(routero::port::SystemClock);
    let scheduler = Scheduler::new(
        Arc::new(routero::memory::MemoryElector::new(clock.clone())),
        Arc::new(MemoryJobRuns::new()),
        clock,
        vec![Arc::new(job) as Arc<dyn Job>],
        SchedulerConfig::new("server"),
    )?;
    Ok(scheduler.run(std::future::pending()))
}

/// The prices in force, which a repricing's prices are layered over:
/// `ROUTERO_PRICES_FILE` over the bundled table (as the gateway prices), else the
/// bundled table.
fn prices() -> Result<LivePrices, Error> {
    match std::env::var("ROUTERO_PRICES_FILE") {
        Ok(path) => {
            let text = std::fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?;
            let table =
                layered(&PriceTable::bundled(), &text).map_err(|e| format!("{path}: {e}"))?;
            Ok(LivePrices::new(Arc::new(table)))
        }
        Err(_) => Ok(LivePrices::new(PriceTable::bundled())),
    }
}

async fn api_over<S>(
    store: Arc<S>,
    rates: Arc<RateTable>,
    notices: Option<Arc<dyn WalletNotices>>,
    analytics: Option<Arc<dyn SpendReader>>,
) -> Result<BillingApi, Error>
where
    S: SpendReader + Wallets + InvoiceStore + Repricings,
{
    let billing = directory()?;
    billing.open_wallets(&*store).await?;
    // With notices, every wallet write is announced to the gateways.
    let wallets: Arc<dyn Wallets> = match notices {
        Some(notices) => Arc::new(Notifying::new(store.clone(), notices)),
        None => store.clone(),
    };
    let api = BillingApi::new(
        store.clone(),
        wallets,
        store.clone(),
        Arc::new(SystemClock),
        ApiConfig {
            billing,
            rates,
            ..ApiConfig::default()
        },
    )
    .with_repricing(store, prices()?);
    Ok(match analytics {
        Some(reader) => api.with_analytics_reader(reader),
        None => api,
    })
}

type Body = UnsyncBoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

/// One request: the bearer token resolves to the principal (or none: 401), the body is
/// read up to [`MAX_BODY`], and the API answers; the CSV export streams a day at a
/// time.
async fn serve(
    api: Arc<BillingApi>,
    tokens: Arc<[(String, Principal)]>,
    body_timeout: Duration,
    request: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let full = |bytes: Bytes| {
        Full::new(bytes)
            .map_err(|never| match never {})
            .boxed_unsync()
    };
    let (parts, body) = request.into_parts();
    let bearer = parts
        .headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let caller = tokens
        .iter()
        .find(|(token, _)| Some(token.as_str()) == bearer)
        .map(|(_, principal)| principal);
    if parts.method == http::Method::GET
        && let Some(file) = dashboard_file(parts.uri.path())
    {
        return Ok(file.map(full));
    }
    if parts.uri.path() == "/billing/export.csv" {
        let request = Request::from_parts(parts, ());
        return Ok(match api.export(caller, &request).await {
            Ok(export) => export.map(|body| body.map_err(Into::into).boxed_unsync()),
            Err(refused) => refused.map(full),
        });
    }
    let body = match read_body(body, MAX_BODY, body_timeout).await {
        Ok(body) => body,
        Err(refused) => return Ok(refused.problem().map(full)),
    };
    let response = api.handle(caller, Request::from_parts(parts, body)).await;
    Ok(response.map(full))
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
            eprintln!("server: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Demo requests recorded one every `every`, through the recorder and the in-memory
/// queue, and drained into `store` by a drainer, as a gateway's and a coworker's would.
fn live_traffic(store: Arc<MemoryStore>, every: Duration) -> (DrainerHandle, RecorderHandle) {
    let queue = Arc::new(MemoryQueue::new(1));
    let drainer = Arc::new(Drainer::new(
        queue.clone(),
        Arc::new(MemoryElector::new(Arc::new(SystemClock))),
        store,
        DrainerConfig::new("server-demo"),
    ));
    let (recorder, handle) = Recorder::spawn(queue, RecorderConfig::default());
    tokio::spawn(async move {
        let seed = u64::try_from(Utc::now().timestamp_micros()).unwrap_or(7);
        let mut traffic = demo::Traffic::new(seed);
        let mut tick = tokio::time::interval(every);
        for n in 0u64.. {
            tick.tick().await;
            let event = traffic.event(demo::id(&format!("live-{seed}-{n}")), Utc::now());
            if let Err(e) = recorder.record(event) {
                eprintln!("server: demo traffic: {e}");
                return;
            }
        }
    });
    (drainer.spawn(), handle)
}

async fn run() -> Result<(), Error> {
    let mut drain = None;
    let mut live = None;
    let mut ops = match routero::http::ops::listen_from_env()? {
        Some(addr) => Some((Ops::install()?, addr)),
        None => None,
    };
    let rates = rates()?;
    let mut analytics: Option<Arc<dyn SpendReader>> = None;
    let api = match std::env::var("ROUTERO_DATABASE_URL") {
        Ok(url) => {
            println!("serving PostgreSQL at ROUTERO_DATABASE_URL");
            let mut pg = PgConfig::new(url);
            pg.read_url = std::env::var("ROUTERO_DATABASE_READ_URL")
                .ok()
                .filter(|url| !url.is_empty());
            let store = Arc::new(PgStore::connect(pg).await?);
            let reads = store.reads();
            if reads.is_separate() {
                println!("analytics and exports read ROUTERO_DATABASE_READ_URL");
                analytics = Some(Arc::new(reads.clone()));
            }
            ops = ops.map(|(ops, addr)| {
                let store = store.clone();
                let mut ops = ops.ready_when("postgres", move || {
                    let store = store.clone();
                    async move { store.check_ready().await.map_err(|e| e.to_string()) }
                });
                if reads.is_separate() {
                    // Each /readyz measures the replica's lag into the gauge.
                    ops = ops.ready_when("postgres-read", move || {
                        let reads = reads.clone();
                        async move {
                            let lag = reads.lag().await.map_err(|e| e.to_string())?;
                            routero::http::telemetry::replica_lag(lag.unwrap_or_default());
                            Ok(())
                        }
                    });
                }
                (ops, addr)
            });
            store.set_rates(rates.clone());
            if let Some(redis_config) = RedisConfig::from_env()? {
                // Drain the gateways' spend from Redis into the database served, as
                // one more coworker: leases keep it exactly once beside the others.
                let redis = Redis::connect(redis_config).await?;
                println!("draining ROUTERO_REDIS_URL into it");
                ops = ops.map(|(ops, addr)| {
                    let redis = redis.clone();
                    let ops = ops.ready_when("redis", move || {
                        let redis = redis.clone();
                        async move { redis.ping().await.map_err(|e| e.to_string()) }
                    });
                    (ops, addr)
                });
                let drainer = Arc::new(Drainer::new(
                    redis.queue(),
                    redis.elector(),
                    store.clone(),
                    DrainerConfig::new(format!("server-{}", std::process::id())),
                ));
                drain = Some((drainer.spawn(), redis));
            }
            let notices = drain.as_ref().map(|(_, redis): &(DrainerHandle, Redis)| {
                Arc::new(redis.wallet_notices()) as Arc<dyn WalletNotices>
            });
            api_over(store, rates, notices, analytics.take()).await?
        }
        Err(_) => {
            println!("serving the in-memory store with two weeks of demo traffic");
            if std::env::var_os("ROUTERO_REDIS_URL").is_some() {
                println!("ROUTERO_REDIS_URL is drained only with ROUTERO_DATABASE_URL set");
            }
            let store = demo::store().await?;
            store.set_rates(rates.clone());
            let every = match std::env::var("ROUTERO_DEMO_EVERY_MS") {
                Ok(ms) => ms
                    .parse::<u64>()
                    .map_err(|e| format!("ROUTERO_DEMO_EVERY_MS={ms}: {e}"))?,
                Err(_) => 0,
            };
            if every > 0 {
                println!("a demo request arrives every {every} ms");
                live = Some(live_traffic(store.clone(), Duration::from_millis(every)));
            }
            // No coworker runs beside the in-memory store: the server closes its
            // months itself, on the same scheduler a coworker runs.
            tokio::spawn(close_months(store.clone(), rates.clone())?);
            api_over(store, rates, None, None).await?
        }
    };
    let api = Arc::new(api);
    if let Some((ops, addr)) = ops {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        println!(
            "metrics: http://{}/metrics (and /healthz, /readyz)",
            listener.local_addr()?
        );
        tokio::spawn(ops.serve(listener, std::future::pending()));
    }
    let acme = "acme".parse::<OrgId>()?;
    let principal = Principal {
        org: acme.clone(),
        workspaces: Some(vec!["acme-prod".parse()?, "acme-labs".parse()?]),
        teams: None,
        role: Role::Admin,
    };
    let org_wide = Principal {
        workspaces: None,
        ..principal.clone()
    };
    // One workspace: the product page's requests work as written, with no ?workspace=.
    let prod_only = Principal {
        workspaces: Some(vec!["acme-prod".parse()?]),
        ..principal.clone()
    };
    let token = format!("demo-{}", uuid::Uuid::new_v4().simple());
    let org_token = format!("demo-org-{}", uuid::Uuid::new_v4().simple());
    let prod_token = format!("demo-prod-{}", uuid::Uuid::new_v4().simple());
    let tokens: Arc<[(String, Principal)]> = Arc::from(vec![
        (token.clone(), principal),
        (org_token.clone(), org_wide),
        (prod_token.clone(), prod_only),
    ]);
    let addr: SocketAddr = std::env::var("ROUTERO_LISTEN")
        .unwrap_or_else(|_| "127.0.0.1:8080".to_owned())
        .parse()?;
    let serving = routero::http::serve::Serving::from_env()?;
    let body_timeout = serving.body_read_timeout;
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    println!("org-wide admin token (every Acme workspace): {org_token}");
    println!("acme-prod admin token (one workspace, no ?workspace= needed): {prod_token}");
    println!("listening on http://{addr}  (Acme admin token: {token})");
    println!("dashboard: http://{addr}/  (sign in with the token)");
    println!(
        "try: curl -s -H 'authorization: Bearer {token}' \
         'http://{addr}/billing/overview?workspace=acme-prod'"
    );
    let report = routero::http::serve::serve(
        listener,
        serving,
        move |_peer| {
            let (api, tokens) = (api.clone(), tokens.clone());
            service_fn(move |request| serve(api.clone(), tokens.clone(), body_timeout, request))
        },
        async {
            let _ = tokio::signal::ctrl_c().await;
        },
    )
    .await;
    println!(
        "stopped: {} connections, {} failed accepts{}",
        report.connections,
        report.accept_errors,
        if report.cut { ", responses cut" } else { "" }
    );
    if let Some((draining, recording)) = live {
        recording.shutdown().await;
        draining.stop().await;
    }
    if let Some((draining, redis)) = drain {
        // Stopping releases the drain leases for the other coworkers.
        draining.stop().await;
        redis.quit().await;
    }
    Ok(())
}
