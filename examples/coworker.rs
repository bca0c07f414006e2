//! The coworker: drains spend from Redis into PostgreSQL, exactly once.
//!
//! ```text
//! ROUTERO_REDIS_URL=redis://127.0.0.1:6379 ROUTERO_DATABASE_URL=postgres://routero@127.0.0.1/routero \
//!     cargo run --example coworker
//! ```
//!
//! Runs the drainer for every shard until SIGTERM or Ctrl-C, then releases its leases
//! and exits. Start as many as you like: they share the shards through the leases.
//! Optional: `ROUTERO_SHARDS` (16; every recorder and coworker must agree),
//! `ROUTERO_REDIS_PREFIX` (`routero`), `ROUTERO_DB_SCHEMA`, `ROUTERO_HOLDER` (this
//! coworker's name in the leases), `ROUTERO_LOG_RETENTION_MONTHS` (months of the
//! request log to keep before the current one), `ROUTERO_SPEND_LOG` (`0`: do not
//! write the request log), `ROUTERO_MAX_BATCHES` (the most queued batches one drain
//! step applies; 512), `ROUTERO_WAREHOUSE_DIR` (run the warehouse sync into this
//! directory), `RUST_LOG` (`info`).
//!
//! Every five minutes a coworker applies the log retention and, with
//! `ROUTERO_WAREHOUSE_DIR`, runs the warehouse sync of the current hour: each hour is
//! exported once, by whichever coworker holds the sink; the others find it busy. A
//! coworker stopped in the middle of a sync leaves its run to the next one.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use routero::drainer::{Drainer, DrainerConfig};
use routero::port::BackendError;
use routero::postgres::{PgConfig, PgStore};
use routero::redis::{Redis, RedisConfig};
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

/// The log retention and, with a directory, the warehouse sync, every five minutes.
async fn housekeeping(store: PgStore, warehouse: Option<String>) {
    let sync = warehouse.and_then(|dir| {
        WarehouseSync::new(
            Arc::new(store.clone()),
            Arc::new(LocalDir::new(dir)),
            "warehouse",
        )
        .inspect_err(|e| tracing::error!(error = %e, "no warehouse sync"))
        .ok()
    });
    let mut tick = tokio::time::interval(Duration::from_secs(300));
    loop {
        tick.tick().await;
        match store.apply_log_retention(Utc::now().date_naive()).await {
            Ok(dropped) if !dropped.is_empty() => {
                tracing::info!(?dropped, "request-log months dropped");
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "log retention failed; next time"),
        }
        let Some(sync) = &sync else { continue };
        match sync.sync(Utc::now()).await {
            Ok(report) if report.busy => tracing::debug!("warehouse sink busy"),
            Ok(report) => {
                for run in report.runs {
                    tracing::info!(
                        run = run.run.run, resumed = run.resumed, rollups = run.rows.rollups,
                        log = run.rows.log, manifest = %run.manifest, "warehouse run exported"
                    );
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "warehouse sync stopped; the next one finishes it")
            }
        }
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let (Some(redis_url), Some(database_url)) =
        (env("ROUTERO_REDIS_URL"), env("ROUTERO_DATABASE_URL"))
    else {
        eprintln!("coworker: set ROUTERO_REDIS_URL and ROUTERO_DATABASE_URL");
        return ExitCode::from(2);
    };
    let mut redis_config = RedisConfig::new(redis_url);
    if let Some(shards) = env("ROUTERO_SHARDS") {
        match shards.parse() {
            Ok(n) if n > 0 => redis_config.shards = n,
            _ => {
                eprintln!("coworker: ROUTERO_SHARDS must be a number from 1 to 65535");
                return ExitCode::from(2);
            }
        }
    }
    if let Some(prefix) = env("ROUTERO_REDIS_PREFIX") {
        redis_config.prefix = prefix;
    }
    let mut pg_config = PgConfig::new(database_url);
    pg_config.schema = env("ROUTERO_DB_SCHEMA");
    pg_config.pool_size = 4;
    pg_config.log_retention_months =
        env("ROUTERO_LOG_RETENTION_MONTHS").and_then(|m| m.parse().ok());
    pg_config.spend_log = env("ROUTERO_SPEND_LOG").is_none_or(|v| v != "0");
    let mut drainer_config = DrainerConfig::new(
        env("ROUTERO_HOLDER").unwrap_or_else(|| format!("coworker-{}", std::process::id())),
    );
    if let Some(max) = env("ROUTERO_MAX_BATCHES") {
        match max.parse() {
            Ok(n) if n > 0 => drainer_config.max_batches = n,
            _ => {
                eprintln!("coworker: ROUTERO_MAX_BATCHES must be a positive number");
                return ExitCode::from(2);
            }
        }
    }

    let Some(redis) = until_connected("Redis", || Redis::connect(redis_config.clone())).await
    else {
        return ExitCode::SUCCESS;
    };
    let Some(store) = until_connected("PostgreSQL", || PgStore::connect(pg_config.clone())).await
    else {
        return ExitCode::SUCCESS;
    };
    tracing::info!(holder = %drainer_config.holder, shards = redis_config.shards, "draining");
    let housekeeping = tokio::spawn(housekeeping(store.clone(), env("ROUTERO_WAREHOUSE_DIR")));
    let drainer = Drainer::new(redis.queue(), redis.elector(), store, drainer_config);
    let stats = drainer.run(shutdown_signal()).await;
    // A sync cut here is finished by the next one.
    housekeeping.abort();
    tracing::info!(
        batches = stats.batches,
        events = stats.events,
        replays = stats.replays,
        leases_lost = stats.leases_lost,
        errors = stats.errors,
        "stopped; leases released"
    );
    redis.quit().await;
    ExitCode::SUCCESS
}
