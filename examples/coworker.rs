//! The coworker: drains spend from Redis into PostgreSQL, exactly once.
//!
//! ```text
//! ROUTERO_REDIS_URL=redis://127.0.0.1:6379 ROUTERO_DATABASE_URL=postgres://routero@127.0.0.1/routero \
//!     cargo run --example coworker
//! ```
//!
//! Runs the drainer for every shard until SIGTERM or Ctrl-C, then releases its leases
//! and exits. Start as many as you like: they share the shards through the leases.
//! `ROUTERO_REDIS_URL` may name a Redis Cluster (`redis-cluster://host:port,host:port`).
//! Optional: `ROUTERO_SHARDS` (16: the number of shards of a new deployment; once
//! `coworker shards --set N` has changed it, the layout stored in Redis rules),
//! `ROUTERO_REDIS_PREFIX` (`routero`), `ROUTERO_REDIS_WAIT_REPLICAS` (acknowledge an
//! append once that many replicas hold it; for the recorders), `ROUTERO_DB_SCHEMA`, `ROUTERO_HOLDER` (this
//! coworker's name in the leases), `ROUTERO_LOG_RETENTION_MONTHS`,
//! `ROUTERO_ROLLUP_RETENTION_MONTHS` and `ROUTERO_QUARANTINE_RETENTION_MONTHS` (whole
//! months of the request log, of the daily rollups and of released quarantine rows to
//! keep before the current one; unset: everything), `ROUTERO_SPEND_LOG` (`0`: do not
//! write the request log), `ROUTERO_MAX_BATCHES` (the most queued batches one drain
//! step applies; 512), `ROUTERO_LEASE_TTL_SECS` (10), `ROUTERO_LEASE_RENEW_SECS` (a
//! third of the ttl), `ROUTERO_PG_LOCK_TIMEOUT_SECS` (2) and
//! `ROUTERO_PG_STATEMENT_TIMEOUT_SECS` (4; a drain transaction with no answer for
//! twice this long is abandoned and its connection closed: keep it under half the
//! ttl), TLS: a `rediss://` URL, with `ROUTERO_REDIS_CA_FILE` (the CA's PEM; else the
//! system's roots) and, where the server asks, `ROUTERO_REDIS_CLIENT_CERT` and
//! `ROUTERO_REDIS_CLIENT_KEY`; for PostgreSQL, libpq's settings in the URL
//! (`?sslmode=verify-full&sslrootcert=/etc/routero/rds-ca.pem`).
//! `ROUTERO_METRICS_LISTEN` (an address such as `0.0.0.0:9464`: Prometheus metrics on
//! `/metrics`, `/healthz`, and `/readyz`, ready when Redis and PostgreSQL answer and
//! the schema is current; with `ROUTERO_ADMIN_TOKEN`, 16 characters or more, also the
//! quarantine's and the jobs' admin API under `/admin/`, see `routero::http::ops::Admin`),
//! `RUST_LOG` (`info`).
//!
//! Each shard this coworker holds drains on its own: a shard whose database
//! connection hangs never holds back the others, nor their lease renewals.
//!
//! Beside the drain, a scheduler runs the billing calendar's jobs, each period once
//! across every coworker (a job lease and a run record in `routero_job_runs`; see
//! `coworker --help` for the jobs and their settings, and `GET /admin/jobs` for their
//! runs). `coworker close-month YYYY-MM [--workspace W]` closes a month by hand;
//! `coworker quarantine list|replay ID|discard ID --reason TEXT` tends the quarantine.
//! `coworker shards [--set N]` shows the queue's shard layout, or changes the number
//! of shards while gateways record and coworkers drain.

use std::process::ExitCode;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use chrono::Utc;
use routero::drainer::{Drainer, DrainerConfig};
use routero::erp::{CoupaSupplier, NetSuiteAccounts, Pusher};
use routero::http::erp::{ErpAuth, HyperTransport};
use routero::http::oauth::{ClientAuth, ClientCredentials, JwtAssertion, OAuth1, Secret};
use routero::http::ops::Ops;
use routero::invoice::{Billing, BillingDirectory, Month};
use routero::jobs::{ErpPush, ErpTarget, MonthClose};
use routero::money::{ExchangeRates, RateTable};
use routero::port::{BackendError, FencingToken, SpendQueue, SystemClock};
use routero::postgres::{PgConfig, PgStore, RetentionJob};
use routero::quarantine::{Quarantine, QuarantineState, Release, replay_waiting};
use routero::redis::{Redis, RedisConfig};
use routero::schedule::{
    Claim, Job, JobRun, JobRuns, RunFilter, RunOutcome, RunState, Scheduler, SchedulerConfig,
};
use routero::warehouse::{LocalDir, WarehouseSync};

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// Retries `connect` with backoff until it succeeds or a signal arrives.
async fn until_connected<T, F, Fut>(what: &str, mut connect: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, BackendError>>,
{
    let mut backoff = Duration::from_millis(200);
    loop {
        match connect().await {
            Ok(connected) => return Some(connected),
            Err(e) => {
                tracing::warn!(error = %e, retry_in_ms = backoff.as_millis(), "cannot reach {what}; waiting");
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    () = shutdown_signal() => return None,
                }
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
        }
    }
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(_) => return std::future::pending().await,
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// The exchange rates of `ROUTERO_FX_RATES_FILE`, if set.
fn read_rates() -> Option<Result<RateTable, String>> {
    let path = env("ROUTERO_FX_RATES_FILE")?;
    Some(
        std::fs::read_to_string(&path)
            .map_err(|e| format!("{path}: {e}"))
            .and_then(|text| RateTable::from_csv(&text).map_err(|e| format!("{path}: {e}"))),
    )
}

/// Reloads the rates file into the store; a bad file keeps the rates it had.
fn reload_rates(store: &PgStore) {
    match read_rates() {
        Some(Ok(rates)) => {
            tracing::debug!(rates = rates.len(), "exchange rates loaded");
            store.set_rates(Arc::new(rates) as Arc<dyn ExchangeRates>);
        }
        Some(Err(e)) => {
            tracing::error!(error = %e, "exchange rates not reloaded; keeping the last ones")
        }
        None => {}
    }
}

/// The store a one-off command works on (`ROUTERO_DB_SCHEMA`, the exchange rates of
/// `ROUTERO_FX_RATES_FILE`).
async fn command_store(url: String, pool_size: usize) -> Result<PgStore, ExitCode> {
    let mut config = PgConfig::new(url);
    config.schema = env("ROUTERO_DB_SCHEMA");
    config.pool_size = pool_size;
    match PgStore::connect(config).await {
        Ok(store) => {
            reload_rates(&store);
            Ok(store)
        }
        Err(e) => {
            eprintln!("coworker: {e}");
            Err(ExitCode::FAILURE)
        }
    }
}

/// `coworker quarantine list|replay ID|discard ID --reason TEXT`.
async fn quarantine_command(args: &[String]) -> ExitCode {
    let usage = "usage: coworker quarantine list | replay ID | discard ID --reason TEXT";
    let Some(url) = env("ROUTERO_DATABASE_URL") else {
        eprintln!("coworker: set ROUTERO_DATABASE_URL");
        return ExitCode::from(2);
    };
    let store = match command_store(url, 1).await {
        Ok(store) => store,
        Err(code) => return code,
    };
    let id = |text: Option<&String>| text.and_then(|t| t.parse::<u64>().ok());
    let result = match (args.first().map(String::as_str), id(args.get(1))) {
        (Some("list"), _) => match store.quarantined().await {
            Ok(batches) => {
                println!(
                    "id\tstate\treason\tshard\tposition\tbatch\tevents\tquarantined_at\tdetail"
                );
                for b in batches {
                    let state = match &b.state {
                        QuarantineState::Quarantined => "quarantined".to_owned(),
                        QuarantineState::Replayed { at } => format!("replayed {at}"),
                        QuarantineState::Discarded { at, reason } => {
                            format!("discarded {at}: {reason}")
                        }
                    };
                    println!(
                        "{}\t{state}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
                        b.id,
                        b.reason,
                        b.shard.0,
                        b.position,
                        b.batch.id,
                        b.batch.events.len(),
                        b.quarantined_at,
                        match &b.raw {
                            // An undecodable entry: its size here, its bytes in the
                            // admin API's JSON (base64).
                            Some(raw) => format!("{} ({} raw bytes kept)", b.detail, raw.len()),
                            None => b.detail.clone(),
                        }
                    );
                }
                Ok(None)
            }
            Err(e) => Err(e),
        },
        (Some("replay"), Some(id)) if args.len() == 2 => {
            store.replay(id, Utc::now()).await.map(Some)
        }
        (Some("discard"), Some(id)) if args.len() == 4 && args[2] == "--reason" => {
            store.discard(id, &args[3], Utc::now()).await.map(Some)
        }
        _ => {
            eprintln!("{usage}");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(None) => ExitCode::SUCCESS,
        Ok(Some(Release::Released)) => {
            println!("batch {} released", args[1]);
            ExitCode::SUCCESS
        }
        Ok(Some(Release::AlreadyReleased(state))) => {
            println!(
                "batch {} was released before ({state:?}); nothing changed",
                args[1]
            );
            ExitCode::SUCCESS
        }
        Ok(Some(Release::NotFound)) => {
            eprintln!("coworker: no quarantined batch {}", args[1]);
            ExitCode::from(3)
        }
        Err(e) => {
            eprintln!("coworker: {e}");
            ExitCode::FAILURE
        }
    }
}

const HELP: &str = "\
coworker: drains spend from Redis into PostgreSQL, exactly once, and runs the
billing calendar's jobs.

usage: coworker                      drain and schedule until SIGTERM
       coworker close-month YYYY-MM [--workspace W]
       coworker quarantine list|replay ID|discard ID --reason TEXT
       coworker reprice (--dry-run | --apply --reason TEXT [--actor A])
                --from DAY --to DAY --prices FILE [--org O] [--workspace W]
                [--provider P] [--model M] [--billing-mode M] [--csv] [--page N]
       coworker reprice --list [--org O]
       coworker shards [--set N]       show the queue's shard layout, or change
                                       the number of shards while spend flows
       coworker --help

Required: ROUTERO_REDIS_URL, ROUTERO_DATABASE_URL.

Scheduled jobs (each period once across every coworker; a failed run is retried
with backoff from 1 minute to 1 hour, a refused one waits for
POST /admin/jobs/retry; runs are listed by GET /admin/jobs and counted in
routero_job_runs{job,state}):
  retention               daily (period YYYY-MM-DD): drops request-log
                          partitions, rollups and released quarantine rows older
                          than ROUTERO_LOG_RETENTION_MONTHS,
                          ROUTERO_ROLLUP_RETENTION_MONTHS and
                          ROUTERO_QUARANTINE_RETENTION_MONTHS (unset: kept)
  month-close             with ROUTERO_BILLING_FILE: ROUTERO_CLOSE_GRACE_HOURS (6)
                          after each UTC month ends (period YYYY-MM), numbers and
                          freezes every workspace's invoice
  erp-push                with ROUTERO_BILLING_FILE and ROUTERO_ERP=netsuite|coupa:
                          each final invoice once (period WORKSPACE/YYYY-MM), from
                          ROUTERO_ERP_SINCE=YYYY-MM if set
      netsuite: ROUTERO_NETSUITE_ACCOUNT, ROUTERO_NETSUITE_SUBSIDIARY,
                ROUTERO_NETSUITE_EXPENSE_ACCOUNT, ROUTERO_NETSUITE_PAYABLE_ACCOUNT,
                optional ROUTERO_NETSUITE_CURRENCY, ROUTERO_NETSUITE_DEPARTMENT,
                ROUTERO_ERP_URL (default https://ACCOUNT.suitetalk.api.netsuite.com);
                token-based auth: ROUTERO_NETSUITE_CONSUMER_KEY,
                ROUTERO_NETSUITE_CONSUMER_SECRET, ROUTERO_NETSUITE_TOKEN_ID,
                ROUTERO_NETSUITE_TOKEN_SECRET; or OAuth 2.0 client credentials:
                ROUTERO_NETSUITE_CLIENT_ID, ROUTERO_NETSUITE_CERTIFICATE_ID,
                ROUTERO_NETSUITE_PRIVATE_KEY_FILE (PEM, RSA or P-256)
      coupa:    ROUTERO_ERP_URL (https://INSTANCE.coupahost.com),
                ROUTERO_COUPA_SUPPLIER_ID, ROUTERO_COUPA_CLIENT_ID,
                ROUTERO_COUPA_CLIENT_SECRET, ROUTERO_COUPA_SCOPE
                (core.invoice.read core.invoice.write)
      Every secret may come from a file instead: NAME_FILE=/run/secrets/...
  warehouse-sync/warehouse  hourly (period YYYY-MM-DDTHH), with
                          ROUTERO_WAREHOUSE_URL (built --features object-store;
                          s3://bucket/prefix, gs://...,
                          az://..., file:///...; the store's settings from AWS_*,
                          GOOGLE_*, AZURE_*) or ROUTERO_WAREHOUSE_DIR

Scheduler: ROUTERO_SCHEDULE_INTERVAL_SECS (60), job leases last
ROUTERO_LEASE_TTL_SECS (10).
Drain, TLS, metrics and admin settings: see the example's documentation
(examples/coworker.rs) and the README's \"Operating it\".
";

/// The rates reload and the replay of batches waiting for a rate, every five minutes.
async fn housekeeping(store: PgStore) {
    let mut tick = tokio::time::interval(Duration::from_secs(300));
    loop {
        tick.tick().await;
        reload_rates(&store);
        match replay_waiting(&store, Utc::now()).await {
            Ok(w) if w.replayed > 0 || w.waiting > 0 => {
                tracing::info!(
                    replayed = w.replayed,
                    waiting = w.waiting,
                    "batches waiting for an exchange rate"
                );
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "replaying waiting batches failed; next time"),
        }
    }
}

/// Months to close on their own: the billing file's workspaces, after the grace.
struct Closing {
    directory: Arc<BillingDirectory>,
    grace: Duration,
}

/// A setting that may be a secret: `NAME` or the file `NAME_FILE` names.
fn secret(name: &str) -> Result<Secret, String> {
    Secret::from_env(name)?.ok_or_else(|| format!("set {name} or {name}_FILE"))
}

fn required(name: &str) -> Result<String, String> {
    env(name).ok_or_else(|| format!("set {name}"))
}

/// The ERP push job of `ROUTERO_ERP` (`netsuite`, `coupa`; unset or `none`: none).
fn erp_job(
    directory: &Arc<BillingDirectory>,
    store: &PgStore,
) -> Result<Option<Arc<dyn Job>>, String> {
    let kind = env("ROUTERO_ERP").unwrap_or_default();
    let (base_url, target, auth) = match kind.as_str() {
        "" | "none" => return Ok(None),
        "netsuite" => {
            let account = required("ROUTERO_NETSUITE_ACCOUNT")?;
            let host = account.to_ascii_lowercase().replace('_', "-");
            let base = env("ROUTERO_ERP_URL")
                .unwrap_or_else(|| format!("https://{host}.suitetalk.api.netsuite.com"));
            let target = ErpTarget::NetSuite(NetSuiteAccounts {
                subsidiary: required("ROUTERO_NETSUITE_SUBSIDIARY")?,
                expense_account: required("ROUTERO_NETSUITE_EXPENSE_ACCOUNT")?,
                payable_account: required("ROUTERO_NETSUITE_PAYABLE_ACCOUNT")?,
                currency: env("ROUTERO_NETSUITE_CURRENCY"),
                department: env("ROUTERO_NETSUITE_DEPARTMENT"),
            });
            let auth = if let Some(client_id) = env("ROUTERO_NETSUITE_CLIENT_ID") {
                let key_file = required("ROUTERO_NETSUITE_PRIVATE_KEY_FILE")?;
                let pem = std::fs::read(&key_file).map_err(|e| format!("{key_file}: {e}"))?;
                let jwt = JwtAssertion::from_pem(
                    client_id,
                    required("ROUTERO_NETSUITE_CERTIFICATE_ID")?,
                    vec!["rest_webservices".to_owned()],
                    &pem,
                )
                .map_err(|e| format!("{key_file}: {e}"))?;
                ErpAuth::ClientCredentials(Box::new(ClientCredentials {
                    token_url: format!("{base}/services/rest/auth/oauth2/v1/token"),
                    auth: ClientAuth::Assertion(Box::new(jwt)),
                    scope: String::new(),
                    refresh_margin: Duration::from_secs(120),
                }))
            } else {
                ErpAuth::OAuth1(OAuth1::netsuite(
                    account,
                    required("ROUTERO_NETSUITE_CONSUMER_KEY")?,
                    secret("ROUTERO_NETSUITE_CONSUMER_SECRET")?,
                    required("ROUTERO_NETSUITE_TOKEN_ID")?,
                    secret("ROUTERO_NETSUITE_TOKEN_SECRET")?,
                ))
            };
            (base, target, auth)
        }
        "coupa" => {
            let base = required("ROUTERO_ERP_URL")?;
            let target = ErpTarget::Coupa(CoupaSupplier {
                supplier_id: required("ROUTERO_COUPA_SUPPLIER_ID")?,
            });
            let auth = ErpAuth::ClientCredentials(Box::new(ClientCredentials {
                token_url: format!("{}/oauth2/token", base.trim_end_matches('/')),
                auth: ClientAuth::Secret {
                    client_id: required("ROUTERO_COUPA_CLIENT_ID")?,
                    client_secret: secret("ROUTERO_COUPA_CLIENT_SECRET")?,
                },
                scope: env("ROUTERO_COUPA_SCOPE")
                    .unwrap_or_else(|| "core.invoice.read core.invoice.write".to_owned()),
                refresh_margin: Duration::from_secs(120),
            }));
            (base, target, auth)
        }
        other => return Err(format!("ROUTERO_ERP={other:?}: netsuite, coupa or none")),
    };
    let since = env("ROUTERO_ERP_SINCE")
        .map(|m| Month::parse(&m).ok_or_else(|| format!("ROUTERO_ERP_SINCE={m:?}: YYYY-MM")))
        .transpose()?;
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_webpki_roots()
        .https_or_http()
        .enable_http1()
        .build();
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build(connector);
    let mut pusher = Pusher::new(HyperTransport::new(client, &base_url, auth));
    // A few attempts per run; the scheduler retries across runs with its backoff.
    pusher.max_attempts = 3;
    Ok(Some(Arc::new(ErpPush::new(
        pusher,
        target,
        Arc::new(store.clone()),
        Arc::clone(directory),
        since,
    ))))
}

/// The warehouse sync job of `ROUTERO_WAREHOUSE_URL` (`s3://…`, `gs://…`, `az://…`,
/// `file:///…`; the store's settings from `AWS_*`, `GOOGLE_*`, `AZURE_*`) or
/// `ROUTERO_WAREHOUSE_DIR`.
fn warehouse_job(store: &PgStore) -> Result<Option<Arc<dyn Job>>, String> {
    let source = Arc::new(store.clone());
    if let Some(url) = env("ROUTERO_WAREHOUSE_URL") {
        #[cfg(feature = "object-store")]
        {
            use routero::warehouse::{ObjectStoreSink, options_from_env};
            let sink =
                ObjectStoreSink::from_url(&url, options_from_env()).map_err(|e| e.to_string())?;
            let sync = WarehouseSync::new(source, Arc::new(sink), "warehouse")
                .map_err(|e| e.to_string())?;
            return Ok(Some(Arc::new(sync)));
        }
        #[cfg(not(feature = "object-store"))]
        return Err(format!(
            "ROUTERO_WAREHOUSE_URL={url}: this build has no object storage \
             (cargo build --features object-store)"
        ));
    }
    if let Some(dir) = env("ROUTERO_WAREHOUSE_DIR") {
        let sync = WarehouseSync::new(source, Arc::new(LocalDir::new(dir)), "warehouse")
            .map_err(|e| e.to_string())?;
        return Ok(Some(Arc::new(sync)));
    }
    Ok(None)
}

/// The scheduler's jobs: retention always; the month close with a billing file;
/// the ERP push with `ROUTERO_ERP` (and a billing file); the warehouse sync with a
/// sink.
fn jobs(store: &PgStore, closing: Option<&Closing>) -> Result<Vec<Arc<dyn Job>>, String> {
    let mut jobs: Vec<Arc<dyn Job>> = vec![Arc::new(RetentionJob::new(store.clone()))];
    if let Some(closing) = closing {
        let rates_of = store.clone();
        jobs.push(Arc::new(MonthClose::new(
            Arc::new(store.clone()),
            Arc::new(store.clone()),
            Arc::new(store.clone()),
            Arc::new(move || rates_of.rates()),
            Arc::clone(&closing.directory),
            closing.grace,
        )));
        if let Some(erp) = erp_job(&closing.directory, store)? {
            jobs.push(erp);
        }
    } else if env("ROUTERO_ERP").is_some_and(|e| e != "none") {
        return Err("ROUTERO_ERP needs ROUTERO_BILLING_FILE (the workspaces invoiced)".into());
    }
    if let Some(sync) = warehouse_job(store)? {
        jobs.push(sync);
    }
    Ok(jobs)
}

/// The quarantine of a store still connecting: the admin API answers 503 until then.
#[derive(Debug)]
struct Connecting(Arc<OnceLock<PgStore>>);

impl Connecting {
    fn store(&self) -> Result<&PgStore, BackendError> {
        self.0.get().ok_or_else(|| {
            BackendError::new(
                routero::port::ErrorKind::Unavailable,
                "still connecting to PostgreSQL",
            )
        })
    }
}

#[async_trait::async_trait]
impl Quarantine for Connecting {
    async fn quarantined(
        &self,
    ) -> Result<Vec<routero::quarantine::QuarantinedBatch>, BackendError> {
        self.store()?.quarantined().await
    }

    async fn replay(
        &self,
        id: u64,
        at: chrono::DateTime<chrono::Utc>,
    ) -> Result<Release, BackendError> {
        self.store()?.replay(id, at).await
    }

    async fn discard(
        &self,
        id: u64,
        reason: &str,
        at: chrono::DateTime<chrono::Utc>,
    ) -> Result<Release, BackendError> {
        self.store()?.discard(id, reason, at).await
    }
}

#[async_trait::async_trait]
impl JobRuns for Connecting {
    async fn claim(
        &self,
        job: &str,
        period: &str,
        token: FencingToken,
        holder: &str,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<Claim, BackendError> {
        self.store()?.claim(job, period, token, holder, now).await
    }

    async fn finish(
        &self,
        job: &str,
        period: &str,
        token: FencingToken,
        outcome: &RunOutcome,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<bool, BackendError> {
        self.store()?.finish(job, period, token, outcome, now).await
    }

    async fn runs(&self, filter: &RunFilter) -> Result<Vec<JobRun>, BackendError> {
        self.store()?.runs(filter).await
    }

    async fn retry(&self, job: &str, period: &str) -> Result<Option<bool>, BackendError> {
        self.store()?.retry(job, period).await
    }

    async fn counts(&self, job: &str) -> Result<Vec<(RunState, u64)>, BackendError> {
        self.store()?.counts(job).await
    }
}

/// The prices in force: `ROUTERO_PRICES_FILE` over the bundled table (as the gateway
/// prices), else the bundled table.
fn current_prices() -> Result<routero::PriceTable, String> {
    use routero::price::layered;
    let bundled = routero::PriceTable::bundled();
    match env("ROUTERO_PRICES_FILE") {
        Some(path) => std::fs::read_to_string(&path)
            .map_err(|e| e.to_string())
            .and_then(|text| layered(&bundled, &text).map_err(|e| e.to_string()))
            .map_err(|e| format!("ROUTERO_PRICES_FILE {path}: {e}")),
        None => Ok((*bundled).clone()),
    }
}

/// `coworker reprice (--dry-run | --apply --reason TEXT [--actor A]) --from DAY --to DAY
/// --prices FILE [filters] [--csv] [--page N]`, or `coworker reprice --list [--org O]`:
/// every logged request in range priced again with FILE layered over the prices in
/// force. A dry run prints the report (JSON, or CSV) and writes nothing; `--apply`
/// applies the corrections, each once, and prints the audit record. A repricing
/// stopped midway (a crash, a kill) is finished by running the same command again.
async fn reprice_command(args: &[String]) -> ExitCode {
    use routero::price::layered;
    use routero::reprice::{RepricingRequest, RepricingScope, Repricings, apply, dry_run};
    let usage = "usage: coworker reprice (--dry-run | --apply --reason TEXT [--actor A]) \
                 --from YYYY-MM-DD --to YYYY-MM-DD --prices FILE [--org O] [--workspace W] \
                 [--provider P] [--model M] [--billing-mode managed|byok] [--csv] [--page N]\n   \
                 or: coworker reprice --list [--org O]  (ROUTERO_DATABASE_URL set)";
    let mut flags: std::collections::HashMap<&str, &str> = std::collections::HashMap::new();
    let (mut dry, mut csv, mut apply_it, mut list) = (false, false, false, false);
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        match arg.as_str() {
            "--dry-run" => dry = true,
            "--apply" => apply_it = true,
            "--list" => list = true,
            "--csv" => csv = true,
            flag @ ("--from" | "--to" | "--prices" | "--org" | "--workspace" | "--provider"
            | "--model" | "--billing-mode" | "--reason" | "--actor" | "--page") => {
                match rest.next() {
                    Some(value) => {
                        flags.insert(flag, value);
                    }
                    None => {
                        eprintln!("coworker: {flag} needs a value\n{usage}");
                        return ExitCode::from(2);
                    }
                }
            }
            other => {
                eprintln!("coworker: unexpected {other:?}\n{usage}");
                return ExitCode::from(2);
            }
        }
    }
    if u8::from(dry) + u8::from(apply_it) + u8::from(list) != 1 {
        eprintln!(
            "coworker: say --dry-run (report, write nothing), --apply (apply the \
             corrections) or --list\n{usage}"
        );
        return ExitCode::from(2);
    }
    let org = match flags
        .get("--org")
        .map(|o| routero::attribution::OrgId::new(o))
        .transpose()
    {
        Ok(org) => org,
        Err(e) => {
            eprintln!("coworker: --org: {e}");
            return ExitCode::from(2);
        }
    };
    let Some(url) = env("ROUTERO_DATABASE_URL") else {
        eprintln!("coworker: set ROUTERO_DATABASE_URL");
        return ExitCode::from(2);
    };
    if list {
        let store = match command_store(url, 2).await {
            Ok(store) => store,
            Err(code) => return code,
        };
        return match store.repricings(org.as_ref()).await {
            Ok(all) => {
                println!("{}", serde_json::to_string_pretty(&all).unwrap_or_default());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("coworker: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let day = |name: &str| -> Result<chrono::NaiveDate, String> {
        let text = flags
            .get(name)
            .ok_or_else(|| format!("{name} is required"))?;
        text.parse()
            .map_err(|_| format!("{name} {text:?}: a day, YYYY-MM-DD"))
    };
    let scope = (|| -> Result<RepricingScope, String> {
        let mut scope = RepricingScope::days(day("--from")?, day("--to")?);
        if scope.to < scope.from {
            return Err("--to is before --from".to_owned());
        }
        scope.org = org.clone();
        scope.workspace = flags
            .get("--workspace")
            .map(|w| routero::attribution::WorkspaceId::new(w).map_err(|e| e.to_string()))
            .transpose()?;
        scope.provider = flags
            .get("--provider")
            .map(|p| routero::Provider::parse(p).map_err(|e| e.to_string()))
            .transpose()?;
        scope.model = flags.get("--model").map(|m| (*m).to_owned());
        scope.billing_mode = flags
            .get("--billing-mode")
            .map(|m| m.parse::<routero::attribution::BillingMode>())
            .transpose()?;
        Ok(scope)
    })();
    let scope = match scope {
        Ok(scope) => scope,
        Err(e) => {
            eprintln!("coworker: {e}\n{usage}");
            return ExitCode::from(2);
        }
    };
    let page = match flags.get("--page").map(|n| n.parse::<usize>()) {
        None => 2_000,
        Some(Ok(n)) if (1..=100_000).contains(&n) => n,
        Some(_) => {
            eprintln!("coworker: --page is 1 to 100000 requests");
            return ExitCode::from(2);
        }
    };
    let reason = flags.get("--reason").map(|r| r.trim()).unwrap_or_default();
    if apply_it && (reason.is_empty() || reason.chars().count() > 500) {
        eprintln!("coworker: --apply needs a --reason of 1 to 500 characters\n{usage}");
        return ExitCode::from(2);
    }
    let Some(file) = flags.get("--prices") else {
        eprintln!("coworker: --prices is required\n{usage}");
        return ExitCode::from(2);
    };
    let current = match current_prices() {
        Ok(current) => current,
        Err(e) => {
            eprintln!("coworker: {e}");
            return ExitCode::from(2);
        }
    };
    let prices = match std::fs::read_to_string(file)
        .map_err(|e| e.to_string())
        .and_then(|text| layered(&current, &text).map_err(|e| e.to_string()))
    {
        Ok(prices) => prices,
        Err(e) => {
            eprintln!("coworker: {file}: {e}");
            return ExitCode::from(2);
        }
    };
    let store = match command_store(url, 2).await {
        Ok(store) => store,
        Err(code) => return code,
    };
    if apply_it {
        let actor = flags
            .get("--actor")
            .map(|a| (*a).to_owned())
            .or_else(|| env("USER").map(|u| format!("coworker:{u}")))
            .unwrap_or_else(|| "coworker".to_owned());
        let id = routero::reprice::RepricingId::derive(&scope, prices.version());
        eprintln!("coworker: applying repricing {id}");
        let request = RepricingRequest {
            scope,
            reason: reason.to_owned(),
            actor,
            current: &current,
            prices: &prices,
        };
        return match apply(&store, request, page, chrono::Utc::now()).await {
            Ok(done) => {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&done).unwrap_or_default()
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!(
                    "coworker: repricing {id}: {e} (run the same command again to finish it)"
                );
                ExitCode::FAILURE
            }
        };
    }
    match dry_run(&store, &scope, &prices, page).await {
        Ok(report) if csv => {
            print!("{}", report.to_csv());
            ExitCode::SUCCESS
        }
        Ok(report) => {
            println!(
                "{}",
                serde_json::to_string_pretty(&report).unwrap_or_default()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("coworker: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `coworker close-month YYYY-MM [--workspace W]`: closes a month that is over for
/// every workspace of `ROUTERO_BILLING_FILE` (or one): each invoice is numbered and
/// frozen, once; closing it again prints the same invoice.
async fn close_month_command(args: &[String]) -> ExitCode {
    let usage = "usage: coworker close-month YYYY-MM [--workspace W]  \
                 (ROUTERO_DATABASE_URL and ROUTERO_BILLING_FILE set)";
    let (month, only) = match args {
        [month] => (month, None),
        [month, flag, workspace] if flag == "--workspace" => (month, Some(workspace)),
        _ => {
            eprintln!("{usage}");
            return ExitCode::from(2);
        }
    };
    let Some(month) = Month::parse(month) else {
        eprintln!("coworker: {month:?} is not a month (YYYY-MM)");
        return ExitCode::from(2);
    };
    let (Some(url), Some(file)) = (env("ROUTERO_DATABASE_URL"), env("ROUTERO_BILLING_FILE")) else {
        eprintln!("{usage}");
        return ExitCode::from(2);
    };
    let directory = match std::fs::read_to_string(&file)
        .map_err(|e| e.to_string())
        .and_then(|text| BillingDirectory::from_toml(&text))
    {
        Ok(directory) => directory,
        Err(e) => {
            eprintln!("coworker: {file}: {e}");
            return ExitCode::from(2);
        }
    };
    let workspaces: Vec<_> = directory
        .iter()
        .filter(|(w, _)| only.is_none_or(|o| w.as_str() == o))
        .collect();
    if workspaces.is_empty() {
        eprintln!(
            "coworker: {} names no such workspace",
            only.map_or_else(|| file.clone(), |w| format!("{file} ({w})"))
        );
        return ExitCode::from(2);
    }
    if let Some(Err(e)) = read_rates() {
        eprintln!("coworker: {e}");
        return ExitCode::from(2);
    }
    let store = match command_store(url, 2).await {
        Ok(store) => store,
        Err(code) => return code,
    };
    let rates = store.rates();
    let billing = Billing {
        reader: &store,
        wallets: &store,
        invoices: &store,
        rates: &*rates,
    };
    let mut failed = false;
    println!("workspace\tinvoice\tcurrency\ttotal\tfinalized_at");
    for (workspace, config) in workspaces {
        match billing
            .close_month(&config.org, workspace, month, config.plan, Utc::now())
            .await
        {
            Ok(invoice) => println!(
                "{workspace}\t{}\t{}\t{}\t{}",
                invoice.number.as_deref().unwrap_or("-"),
                invoice.currency,
                invoice.total,
                invoice
                    .finalized_at
                    .map(|t| t.to_rfc3339())
                    .unwrap_or_default()
            ),
            Err(e) => {
                failed = true;
                eprintln!("coworker: {workspace}: {e}");
            }
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// `coworker shards [--set N]`: the queue's shard layout, as JSON; with `--set`, the
/// number of shards changed (see `routero_redis::Redis::reshard`): the new shards
/// take the spend at once, the old ones are sealed, and the running coworkers drain
/// them to the end before they start on the new ones. No process restarts.
async fn shards_command(args: &[String]) -> ExitCode {
    let set = match args {
        [] => None,
        [flag, n] if flag == "--set" => match n.parse::<u16>() {
            Ok(n) if n > 0 => Some(n),
            _ => {
                eprintln!("coworker shards: --set takes a number of shards from 1 to 65535");
                return ExitCode::from(2);
            }
        },
        _ => {
            eprintln!("usage: coworker shards [--set N]");
            return ExitCode::from(2);
        }
    };
    let config = match RedisConfig::from_env() {
        Ok(Some(config)) => config,
        Ok(None) => {
            eprintln!("coworker shards: set ROUTERO_REDIS_URL");
            return ExitCode::from(2);
        }
        Err(e) => {
            eprintln!("coworker shards: {e}");
            return ExitCode::from(2);
        }
    };
    let result = async {
        let redis = Redis::connect(config).await?;
        let layout = match set {
            Some(n) => redis.reshard(n).await?,
            None => redis.queue().refresh_layout().await?,
        };
        let queue = redis.queue();
        let mut backlog = Vec::new();
        for shard in layout.retiring_shards().chain(layout.current()) {
            let entries = queue.backlog(shard).await?;
            backlog.push(serde_json::json!({ "shard": shard.0, "entries": entries }));
        }
        redis.quit().await;
        Ok::<_, BackendError>(serde_json::json!({
            "version": layout.version,
            "shards": layout.current().map(|s| s.0).collect::<Vec<_>>(),
            "retiring": layout.retiring_shards().map(|s| s.0).collect::<Vec<_>>(),
            "backlog": backlog,
            "layout": layout.to_string(),
        }))
    }
    .await;
    match result {
        Ok(json) => {
            println!("{json}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("coworker shards: {e}");
            ExitCode::FAILURE
        }
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    // Logs go to standard error; standard output is the quarantine command's answer.
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    if matches!(
        args.first().map(String::as_str),
        Some("--help" | "-h" | "help")
    ) {
        print!("{HELP}");
        return ExitCode::SUCCESS;
    }
    if args.first().map(String::as_str) == Some("quarantine") {
        return quarantine_command(&args[1..]).await;
    }
    if args.first().map(String::as_str) == Some("close-month") {
        return close_month_command(&args[1..]).await;
    }
    if args.first().map(String::as_str) == Some("reprice") {
        return reprice_command(&args[1..]).await;
    }
    if args.first().map(String::as_str) == Some("shards") {
        return shards_command(&args[1..]).await;
    }
    if let Some(Err(e)) = read_rates() {
        eprintln!("coworker: {e}");
        return ExitCode::from(2);
    }
    let redis_config = match RedisConfig::from_env() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("coworker: {e}");
            return ExitCode::from(2);
        }
    };
    let (Some(redis_config), Some(database_url)) = (redis_config, env("ROUTERO_DATABASE_URL"))
    else {
        eprintln!("coworker: set ROUTERO_REDIS_URL and ROUTERO_DATABASE_URL");
        return ExitCode::from(2);
    };
    let mut pg_config = PgConfig::new(database_url);
    pg_config.schema = env("ROUTERO_DB_SCHEMA");
    pg_config.pool_size = 4;
    let months = |name: &str| -> Result<Option<u32>, String> {
        env(name)
            .map(|m| {
                m.parse::<u32>()
                    .map_err(|_| format!("{name} must be a number of months"))
            })
            .transpose()
    };
    match (
        months("ROUTERO_LOG_RETENTION_MONTHS"),
        months("ROUTERO_ROLLUP_RETENTION_MONTHS"),
        months("ROUTERO_QUARANTINE_RETENTION_MONTHS"),
    ) {
        (Ok(log), Ok(rollups), Ok(quarantine)) => {
            pg_config.log_retention_months = log;
            pg_config.rollup_retention_months = rollups;
            pg_config.quarantine_retention_months = quarantine;
        }
        (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => {
            eprintln!("coworker: {e}");
            return ExitCode::from(2);
        }
    }
    pg_config.spend_log = env("ROUTERO_SPEND_LOG").is_none_or(|v| v != "0");
    let mut drainer_config = DrainerConfig::new(
        env("ROUTERO_HOLDER").unwrap_or_else(|| format!("coworker-{}", std::process::id())),
    );
    let seconds = |name: &str| -> Result<Option<Duration>, ExitCode> {
        match env(name).map(|v| v.parse::<u64>()) {
            None => Ok(None),
            Some(Ok(s)) if (1..=86_400).contains(&s) => Ok(Some(Duration::from_secs(s))),
            Some(_) => {
                eprintln!("coworker: {name} must be whole seconds from 1 to 86400");
                Err(ExitCode::from(2))
            }
        }
    };
    let timings = (|| {
        Ok::<_, ExitCode>((
            seconds("ROUTERO_LEASE_TTL_SECS")?,
            seconds("ROUTERO_LEASE_RENEW_SECS")?,
            seconds("ROUTERO_PG_LOCK_TIMEOUT_SECS")?,
            seconds("ROUTERO_PG_STATEMENT_TIMEOUT_SECS")?,
        ))
    })();
    let (ttl, renew, lock_timeout, statement_timeout) = match timings {
        Ok(t) => t,
        Err(code) => return code,
    };
    if let Some(ttl) = ttl {
        drainer_config.lease_ttl = ttl;
        drainer_config.renew_every = ttl / 3;
    }
    if let Some(renew) = renew {
        drainer_config.renew_every = renew;
    }
    if let Some(t) = lock_timeout {
        pg_config.lock_timeout = t;
    }
    if let Some(t) = statement_timeout {
        pg_config.statement_timeout = t;
    }
    if drainer_config.renew_every >= drainer_config.lease_ttl {
        eprintln!("coworker: the lease renewal interval must be shorter than its ttl");
        return ExitCode::from(2);
    }
    if pg_config.statement_timeout.saturating_mul(2) > drainer_config.lease_ttl {
        tracing::warn!(
            "twice ROUTERO_PG_STATEMENT_TIMEOUT_SECS is not under the lease ttl: a stuck step may outlive its lease"
        );
    }
    // With a billing file, months close on their own after the grace.
    let closing = match env("ROUTERO_BILLING_FILE") {
        None => None,
        Some(file) => {
            let directory = std::fs::read_to_string(&file)
                .map_err(|e| e.to_string())
                .and_then(|text| BillingDirectory::from_toml(&text));
            let grace = match env("ROUTERO_CLOSE_GRACE_HOURS").map(|h| h.parse::<u64>()) {
                None => Ok(6),
                Some(Ok(h)) if h <= 24 * 27 => Ok(h),
                Some(_) => {
                    Err("ROUTERO_CLOSE_GRACE_HOURS must be whole hours, at most 648".to_owned())
                }
            };
            match (directory, grace) {
                (Ok(directory), Ok(hours)) => Some(Closing {
                    directory: Arc::new(directory),
                    grace: Duration::from_secs(hours * 3600),
                }),
                (Err(e), _) => {
                    eprintln!("coworker: {file}: {e}");
                    return ExitCode::from(2);
                }
                (_, Err(e)) => {
                    eprintln!("coworker: {e}");
                    return ExitCode::from(2);
                }
            }
        }
    };
    if let Some(max) = env("ROUTERO_MAX_BATCHES") {
        match max.parse() {
            Ok(n) if n > 0 => drainer_config.max_batches = n,
            _ => {
                eprintln!("coworker: ROUTERO_MAX_BATCHES must be a positive number");
                return ExitCode::from(2);
            }
        }
    }

    // The operations listener comes up first: alive while the coworker waits for its
    // services, ready once both answer and the schema is current.
    let redis_slot: Arc<OnceLock<Redis>> = Arc::default();
    let store_slot: Arc<OnceLock<PgStore>> = Arc::default();
    match routero::http::ops::listen_from_env() {
        Ok(None) => {}
        Ok(Some(addr)) => {
            let ops = match Ops::install() {
                Ok(ops) => ops,
                Err(e) => {
                    eprintln!("coworker: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let (r, p) = (Arc::clone(&redis_slot), Arc::clone(&store_slot));
            let ops = ops
                .ready_when("redis", move || {
                    let redis = r.get().cloned();
                    async move {
                        match redis {
                            Some(redis) => redis.ping().await.map_err(|e| e.to_string()),
                            None => Err("connecting".to_owned()),
                        }
                    }
                })
                .ready_when("postgres", move || {
                    let store = p.get().cloned();
                    async move {
                        match store {
                            Some(store) => store.check_ready().await.map_err(|e| e.to_string()),
                            None => Err("connecting and migrating".to_owned()),
                        }
                    }
                });
            let ops = match env("ROUTERO_ADMIN_TOKEN") {
                Some(token) if token.len() >= 16 => ops
                    .admin(&token, Arc::new(Connecting(Arc::clone(&store_slot))))
                    .admin_jobs(Arc::new(Connecting(Arc::clone(&store_slot)))),
                Some(_) => {
                    eprintln!("coworker: ROUTERO_ADMIN_TOKEN must be at least 16 characters");
                    return ExitCode::from(2);
                }
                None => ops,
            };
            let listener = match tokio::net::TcpListener::bind(addr).await {
                Ok(listener) => listener,
                Err(e) => {
                    eprintln!("coworker: ROUTERO_METRICS_LISTEN={addr}: {e}");
                    return ExitCode::from(2);
                }
            };
            tracing::info!(addr = %addr, "metrics on /metrics, /healthz, /readyz");
            tokio::spawn(ops.serve(listener, std::future::pending()));
        }
        Err(e) => {
            eprintln!("coworker: {e}");
            return ExitCode::from(2);
        }
    }
    let Some(redis) = until_connected("Redis", || Redis::connect(redis_config.clone())).await
    else {
        return ExitCode::SUCCESS;
    };
    let _ = redis_slot.set(redis.clone());
    let Some(store) = until_connected("PostgreSQL", || PgStore::connect(pg_config.clone())).await
    else {
        return ExitCode::SUCCESS;
    };
    let _ = store_slot.set(store.clone());
    reload_rates(&store);
    tracing::info!(holder = %drainer_config.holder, shards = redis_config.shards, "draining");
    let housekeeping = tokio::spawn(housekeeping(store.clone()));
    let jobs = match jobs(&store, closing.as_ref()) {
        Ok(jobs) => jobs,
        Err(e) => {
            eprintln!("coworker: {e}");
            return ExitCode::from(2);
        }
    };
    let mut schedule = SchedulerConfig::new(drainer_config.holder.clone());
    schedule.lease_ttl = drainer_config.lease_ttl;
    match seconds("ROUTERO_SCHEDULE_INTERVAL_SECS") {
        Ok(Some(every)) => schedule.interval = every,
        Ok(None) => {}
        Err(code) => return code,
    }
    let scheduler = match Scheduler::new(
        Arc::new(redis.job_elector()),
        Arc::new(store.clone()),
        Arc::new(SystemClock),
        jobs,
        schedule,
    ) {
        Ok(scheduler) => scheduler,
        Err(e) => {
            eprintln!("coworker: {e}");
            return ExitCode::from(2);
        }
    };
    tracing::info!(jobs = ?scheduler.jobs(), "scheduling");
    let scheduler = tokio::spawn(scheduler.run(std::future::pending()));
    let drainer = Drainer::new(redis.queue(), redis.elector(), store, drainer_config);
    let stats = drainer.run(shutdown_signal()).await;
    // A job cut here is finished by the next holder (its run record stays running).
    housekeeping.abort();
    scheduler.abort();
    tracing::info!(
        batches = stats.batches,
        events = stats.events,
        replays = stats.replays,
        leases_lost = stats.leases_lost,
        errors = stats.errors,
        quarantined = stats.quarantined,
        "stopped; leases released"
    );
    redis.quit().await;
    ExitCode::SUCCESS
}
