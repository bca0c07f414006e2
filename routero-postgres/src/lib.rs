#![doc = include_str!("../README.md")]
//!
//! Routero on PostgreSQL, the system of record: what it holds is what customers are
//! billed.
//!
//! [`PgStore`] implements [`routero_core::port::SpendStore`] (the atomic drain step),
//! [`routero_core::port::SpendReader`] (rollup reads for the analytics) and
//! [`routero_core::warehouse::WarehouseSource`] (the warehouse sync's watermark) with
//! `tokio-postgres` on a `deadpool-postgres` pool.
//!
//! # Schema
//!
//! Versioned migrations (`migrations/V*.sql`, embedded with `refinery`) are applied by
//! [`PgStore::connect`] under a PostgreSQL advisory lock, so several coworkers may
//! start at once. Money is `NUMERIC`, token counts `BIGINT` (converted with checks).
//!
//! | table | holds |
//! |---|---|
//! | `routero_drain_state` | per shard: the watermark (last applied queue position) and the newest fencing token |
//! | `routero_daily_rollups` | per UTC day, org, workspace, team, API key, user, customer, provider, model, billing mode and currency: token sums, successes, failures, unpriced count, exact cost |
//! | `routero_unpriced` | every request that could not be priced, with its usage, reason code and words, to be repriced later |
//! | `routero_spend_log` | optional request-level log, partitioned by month, with a retention setting |
//! | `routero_wallets`, `routero_wallet_lots`, `routero_wallet_entries` | each workspace's wallet: its currency, its credit lots, its append-only ledger |
//! | `routero_invoices` | final monthly invoices, numbered and immutable |
//! | `routero_sync_runs` | the warehouse sync's runs per sink: the version range each exports, and whether it finished |
//! | `routero_quarantine` | batches the drain could not apply, and how each left |
//!
//! # The drain step
//!
//! One transaction: lock the shard's drain-state row; refuse a fencing token older
//! than the stored one; recognise a range at or below the stored watermark as a
//! replay; refuse a watermark that moved; upsert the rollups with one
//! `INSERT … SELECT FROM UNNEST(…) ON CONFLICT DO UPDATE`; keep the unpriced events;
//! write the spend log (`COPY … BINARY`; on a request id logged before, again from a
//! savepoint with `ON CONFLICT DO NOTHING`); advance the watermark and store the token.

mod drain;
mod invoice;
mod jobs;
mod quarantine;
mod read;
mod reprice;
mod tls;
mod usage;
mod wallet;
mod warehouse;

pub use jobs::RetentionJob;
pub use read::PgReads;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use routero_core::money::{ExchangeRates, RateTable};
use routero_core::port::{BackendError, ErrorKind};

mod embedded {
    refinery::embed_migrations!("migrations");
}

/// How to reach PostgreSQL and what to keep.
#[derive(Debug, Clone)]
pub struct PgConfig {
    /// `postgres://user[:password]@host[:port]/database`.
    pub url: String,
    /// The schema Routero's tables live in (created if missing); `None`: the
    /// connection's default search path.
    pub schema: Option<String>,
    /// Connections in the pool.
    pub pool_size: usize,
    /// How long to wait for a free connection, and to connect.
    pub timeout: Duration,
    /// Whether to write the request-level spend log.
    pub spend_log: bool,
    /// How many whole months of the spend log to keep before the current one
    /// (`None`: keep everything); applied by [`PgStore::apply_log_retention`].
    pub log_retention_months: Option<u32>,
    /// The longest a drain or quarantine transaction waits for a lock (PostgreSQL's
    /// `lock_timeout`, set for the transaction). A step that waits longer fails as a
    /// timeout and is retried: a shard whose row another connection holds (a frozen
    /// backend, a stuck takeover) costs its drainer a retry, never a hang.
    pub lock_timeout: Duration,
    /// The longest one statement of a drain or quarantine transaction runs
    /// (`statement_timeout`, set for the transaction). A frozen backend cannot enforce
    /// its own timeouts, so a transaction with no answer for twice this long is
    /// abandoned on the client side, and its connection closed rather than pooled.
    /// Keep both well under the drainer's lease ttl.
    pub statement_timeout: Duration,
    /// How many whole months of daily rollups to keep before the current one (`None`:
    /// everything); applied by [`PgStore::apply_retention`]. Final invoices are kept
    /// apart and stay; analytics and drafts of older months then show nothing.
    pub rollup_retention_months: Option<u32>,
    /// How many whole months of released quarantine rows (replayed or discarded) to
    /// keep before the current one (`None`: every one); batches still waiting stay.
    pub quarantine_retention_months: Option<u32>,
    /// A second database to read analytics from, typically a streaming replica of
    /// this one (`None`: the primary serves them): [`PgStore::reads`] queries it with
    /// a pool of its own, of [`pool_size`](Self::pool_size) connections. Nothing
    /// else reads it: the drain, the wallet, invoices and repricing stay on the
    /// primary.
    pub read_url: Option<String>,
}

impl PgConfig {
    /// The defaults for a URL: default schema, 8 connections, 5 s timeout, spend log
    /// on, drain transactions with a 2 s lock timeout and a 4 s statement timeout
    /// (abandoned after 8 s: under the drainer's default 10 s lease).
    pub fn new(url: impl Into<String>) -> PgConfig {
        PgConfig {
            url: url.into(),
            schema: None,
            pool_size: 8,
            timeout: Duration::from_secs(5),
            spend_log: true,
            log_retention_months: None,
            lock_timeout: Duration::from_secs(2),
            statement_timeout: Duration::from_secs(4),
            rollup_retention_months: None,
            quarantine_retention_months: None,
            read_url: None,
        }
    }
}

/// What [`PgStore::apply_retention`] dropped.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Retained {
    /// Request-log partitions (months as `YYYY_MM`).
    pub log_partitions: Vec<String>,
    /// Daily rollup rows.
    pub rollup_rows: u64,
    /// Released quarantine rows.
    pub quarantine_rows: u64,
}

/// The first day kept when `months` whole months before `today`'s are kept.
fn keep_from(today: chrono::NaiveDate, months: u32) -> chrono::NaiveDate {
    use chrono::Datelike;
    let index = today.year() * 12 + i32::try_from(today.month0()).unwrap_or(0)
        - i32::try_from(months).unwrap_or(i32::MAX);
    chrono::NaiveDate::from_ymd_opt(
        index.div_euclid(12),
        u32::try_from(index.rem_euclid(12)).unwrap_or(0) + 1,
        1,
    )
    .unwrap_or(today)
}

/// The store on a connection pool.
#[derive(Clone)]
pub struct PgStore {
    pool: Pool,
    /// The pool of [`PgConfig::read_url`].
    read_pool: Option<Pool>,
    config: Arc<PgConfig>,
    /// Spend-log partitions known to exist (months as `YYYY_MM`).
    partitions: Arc<Mutex<HashSet<String>>>,
    /// What usage priced in another currency than its wallet's converts at.
    rates: Arc<Mutex<Arc<dyn ExchangeRates>>>,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore")
            .field("schema", &self.config.schema)
            .field("spend_log", &self.config.spend_log)
            .finish_non_exhaustive()
    }
}

/// Maps a PostgreSQL client error onto the portable kinds.
pub(crate) fn backend(error: tokio_postgres::Error) -> BackendError {
    use tokio_postgres::error::SqlState;
    let kind = match error.code() {
        Some(code)
            if *code == SqlState::T_R_SERIALIZATION_FAILURE
                || *code == SqlState::T_R_DEADLOCK_DETECTED =>
        {
            ErrorKind::Conflict
        }
        Some(code)
            if *code == SqlState::ADMIN_SHUTDOWN
                || *code == SqlState::CRASH_SHUTDOWN
                || *code == SqlState::CANNOT_CONNECT_NOW
                || *code == SqlState::TOO_MANY_CONNECTIONS =>
        {
            ErrorKind::Unavailable
        }
        Some(code)
            if *code == SqlState::QUERY_CANCELED || *code == SqlState::LOCK_NOT_AVAILABLE =>
        {
            ErrorKind::Timeout
        }
        Some(code) if code.code().starts_with("22") || code.code().starts_with("23") => {
            ErrorKind::Invalid
        }
        Some(_) => ErrorKind::Other,
        // No SQL state: the connection failed or closed.
        None => ErrorKind::Unavailable,
    };
    // tokio-postgres's message leaves out its cause (a TLS refusal says only "error
    // performing TLS handshake"): the chain is spelled out.
    let mut message = format!("postgres: {error}");
    let mut cause = std::error::Error::source(&error);
    while let Some(inner) = cause {
        message.push_str(&format!(": {inner}"));
        cause = inner.source();
    }
    BackendError::new(kind, message).with_source(error)
}

pub(crate) fn pool_error(error: deadpool_postgres::PoolError) -> BackendError {
    use deadpool_postgres::PoolError;
    match error {
        PoolError::Backend(e) => backend(e),
        PoolError::Timeout(_) => {
            BackendError::new(ErrorKind::Timeout, format!("postgres pool: {error}"))
        }
        other => BackendError::new(ErrorKind::Unavailable, format!("postgres pool: {other}")),
    }
}

/// A pool of connections to `url` with the configuration's schema, size and timeouts.
fn connect_pool(url: &str, config: &PgConfig) -> Result<Pool, BackendError> {
    let (url, ssl) = tls::Ssl::split(url)?;
    let mut pg: tokio_postgres::Config = url.parse().map_err(|e: tokio_postgres::Error| {
        BackendError::new(ErrorKind::Invalid, format!("database url: {e}"))
    })?;
    pg.ssl_mode(ssl.mode());
    pg.connect_timeout(config.timeout);
    if let Some(schema) = &config.schema {
        if !valid_schema(schema) {
            return Err(BackendError::new(
                ErrorKind::Invalid,
                format!("schema name {schema:?}"),
            ));
        }
        pg.options(format!("-c search_path={schema}"));
    }
    let manager = Manager::from_config(
        pg,
        ssl.connector()?,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(config.pool_size.max(1))
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(config.timeout))
        .create_timeout(Some(config.timeout))
        .recycle_timeout(Some(config.timeout))
        .build()
        .map_err(|e| BackendError::new(ErrorKind::Invalid, format!("postgres pool: {e}")))
}

/// A schema name: letters, digits and `_`, not starting with a digit.
fn valid_schema(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

impl PgStore {
    /// Connects a pool, creates the schema if needed and applies the migrations; with
    /// a [`PgConfig::read_url`], connects the read pool too (its first connection is
    /// made when [`reads`](Self::reads) are first asked for).
    pub async fn connect(config: PgConfig) -> Result<PgStore, BackendError> {
        let pool = connect_pool(&config.url, &config)?;
        let read_pool = config
            .read_url
            .as_deref()
            .map(|url| connect_pool(url, &config))
            .transpose()?;
        let store = PgStore {
            pool,
            read_pool,
            config: Arc::new(config),
            partitions: Arc::new(Mutex::new(HashSet::new())),
            rates: Arc::new(Mutex::new(Arc::new(RateTable::new()))),
        };
        store.migrate().await?;
        Ok(store)
    }

    /// Replaces the exchange rates drain steps and quarantine replays convert usage at
    /// (none at first: usage in another currency than its wallet's is quarantined
    /// until a rate for its day is given). Shared by every clone of the store.
    pub fn set_rates(&self, rates: Arc<dyn ExchangeRates>) {
        *self
            .rates
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = rates;
    }

    /// The exchange rates the store converts with now (those of the last
    /// [`set_rates`](Self::set_rates)): what invoices of the store's months use too.
    pub fn rates(&self) -> Arc<dyn ExchangeRates> {
        self.rates
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Applies the embedded migrations, one coworker at a time.
    async fn migrate(&self) -> Result<(), BackendError> {
        let mut client = self.pool.get().await.map_err(pool_error)?;
        // One coworker at a time, from the schema's creation on: concurrent
        // `CREATE SCHEMA IF NOT EXISTS` statements collide too.
        client
            .batch_execute("SELECT pg_advisory_lock(7317020261128)")
            .await
            .map_err(backend)?;
        let migrated = async {
            if let Some(schema) = &self.config.schema {
                // The name was validated: letters, digits and '_' only.
                client
                    .batch_execute(&format!("CREATE SCHEMA IF NOT EXISTS {schema}"))
                    .await
                    .map_err(backend)?;
            }
            embedded::migrations::runner()
                .run_async(&mut **client)
                .await
                .map_err(|e| BackendError::new(ErrorKind::Other, format!("migrations: {e}")))
        }
        .await;
        client
            .batch_execute("SELECT pg_advisory_unlock(7317020261128)")
            .await
            .map_err(backend)?;
        migrated?;
        Ok(())
    }

    /// The configuration.
    pub fn config(&self) -> &PgConfig {
        &self.config
    }

    /// Readiness: the database answers, and its schema carries every migration this
    /// build embeds (a coworker of a newer build may have gone further; that is fine).
    pub async fn check_ready(&self) -> Result<(), BackendError> {
        let client = self.client().await?;
        let applied: i32 = client
            .query_one(
                "SELECT COALESCE(max(version), 0)::integer FROM refinery_schema_history",
                &[],
            )
            .await
            .map_err(backend)?
            .get(0);
        let needed = embedded::migrations::runner()
            .get_migrations()
            .iter()
            .map(|m| m.version())
            .max()
            .unwrap_or(0);
        if i64::from(applied) < i64::from(needed) {
            return Err(BackendError::new(
                ErrorKind::Unavailable,
                format!(
                    "migrations behind: the database is at V{applied}, this build needs V{needed}"
                ),
            ));
        }
        Ok(())
    }

    /// A connection from the pool, for queries of the embedding application.
    pub async fn client(&self) -> Result<deadpool_postgres::Object, BackendError> {
        self.pool.get().await.map_err(pool_error)
    }

    /// The read side for analytics and exports: on the pool of
    /// [`PgConfig::read_url`] when there is one, else on the primary's. What it
    /// answers may lag the primary by the replica's replay lag
    /// ([`PgReads::lag`]); reads that must see their own writes (a wallet after its
    /// top-up, an invoice at month close, a repricing) use the store itself.
    pub fn reads(&self) -> PgReads {
        PgReads {
            pool: self.read_pool.clone().unwrap_or_else(|| self.pool.clone()),
            separate: self.read_pool.is_some(),
        }
    }

    /// Waits until the read database has replayed everything the primary has written
    /// so far (its WAL position now), so that the next [`reads`](Self::reads) see
    /// it: for a report that must include the spend just drained. Returns at once
    /// without a read database, or when it is not a replica; fails as a timeout
    /// when the replica is still behind after `timeout`.
    pub async fn sync_reads(&self, timeout: Duration) -> Result<(), BackendError> {
        let Some(read_pool) = &self.read_pool else {
            return Ok(());
        };
        let written: String = self
            .client()
            .await?
            .query_one("SELECT pg_current_wal_lsn()::text", &[])
            .await
            .map_err(backend)?
            .get(0);
        let replica = read_pool.get().await.map_err(pool_error)?;
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let caught_up: Option<bool> = replica
                .query_one(
                    "SELECT pg_last_wal_replay_lsn() >= $1::text::pg_lsn",
                    &[&written],
                )
                .await
                .map_err(backend)?
                .get(0);
            // NULL: not a replica, nothing to wait for.
            if caught_up != Some(false) {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(BackendError::new(
                    ErrorKind::Timeout,
                    format!(
                        "postgres: the read replica has not replayed {written} within {} ms",
                        timeout.as_millis()
                    ),
                ));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Runs one drain-side transaction (`body`, which begins it with
    /// [`begin_guarded`](Self::begin_guarded) and commits it) on a pooled connection,
    /// under the client-side deadline of [`PgConfig::statement_timeout`]: when the
    /// server does not answer in time the work is abandoned and the connection closed,
    /// so a frozen backend never returns to the pool.
    pub(crate) async fn guarded<T>(
        &self,
        body: impl AsyncFnOnce(&mut deadpool_postgres::Object) -> Result<T, BackendError>,
    ) -> Result<T, BackendError> {
        let mut client = self.client().await?;
        let deadline = self.config.statement_timeout.saturating_mul(2);
        match tokio::time::timeout(deadline, body(&mut client)).await {
            Ok(result) => result,
            Err(_) => {
                // Detached from the pool and dropped: the socket closes, and the
                // server rolls the transaction back whenever it wakes.
                drop(deadpool_postgres::Object::take(client));
                Err(BackendError::new(
                    ErrorKind::Timeout,
                    format!(
                        "postgres: no answer within {} ms; connection closed",
                        deadline.as_millis()
                    ),
                ))
            }
        }
    }

    /// Begins a drain-side transaction with the configured lock and statement timeouts.
    pub(crate) async fn begin_guarded<'c>(
        &self,
        client: &'c mut deadpool_postgres::Object,
    ) -> Result<deadpool_postgres::Transaction<'c>, BackendError> {
        let tx = client.transaction().await.map_err(backend)?;
        tx.batch_execute(&format!(
            "SET LOCAL lock_timeout = {}; SET LOCAL statement_timeout = {}",
            self.config.lock_timeout.as_millis().max(1),
            self.config.statement_timeout.as_millis().max(1),
        ))
        .await
        .map_err(backend)?;
        Ok(tx)
    }

    /// Applies [`PgConfig::log_retention_months`] on `today`: drops the spend-log
    /// months older than the retention; returns the partitions dropped.
    pub async fn apply_log_retention(
        &self,
        today: chrono::NaiveDate,
    ) -> Result<Vec<String>, BackendError> {
        let Some(months) = self.config.log_retention_months else {
            return Ok(Vec::new());
        };
        self.prune_spend_log(keep_from(today, months)).await
    }

    /// Applies every retention setting: the request log
    /// ([`apply_log_retention`](Self::apply_log_retention)), the daily rollups
    /// ([`PgConfig::rollup_retention_months`]) and the quarantine's released batches
    /// ([`PgConfig::quarantine_retention_months`]; a batch still waiting is never
    /// dropped). Each keeps its whole months before the current one.
    pub async fn apply_retention(
        &self,
        today: chrono::NaiveDate,
    ) -> Result<Retained, BackendError> {
        let mut retained = Retained {
            log_partitions: self.apply_log_retention(today).await?,
            ..Retained::default()
        };
        let client = self.client().await?;
        if let Some(months) = self.config.rollup_retention_months {
            retained.rollup_rows = client
                .execute(
                    "DELETE FROM routero_daily_rollups WHERE day < $1",
                    &[&keep_from(today, months)],
                )
                .await
                .map_err(backend)?;
        }
        if let Some(months) = self.config.quarantine_retention_months {
            let cutoff = keep_from(today, months)
                .and_hms_opt(0, 0, 0)
                .map(|t| t.and_utc());
            retained.quarantine_rows = client
                .execute(
                    "DELETE FROM routero_quarantine WHERE state <> 'quarantined' AND released_at < $1",
                    &[&cutoff],
                )
                .await
                .map_err(backend)?;
        }
        Ok(retained)
    }

    /// Drops the spend-log partitions of months before `keep_from`; returns the
    /// partitions dropped.
    pub async fn prune_spend_log(
        &self,
        keep_from: chrono::NaiveDate,
    ) -> Result<Vec<String>, BackendError> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
                 JOIN pg_class p ON p.oid = i.inhparent \
                 WHERE p.relname = 'routero_spend_log' AND p.relnamespace = c.relnamespace \
                 AND p.relnamespace = (SELECT oid FROM pg_namespace WHERE nspname = current_schema())",
                &[],
            )
            .await
            .map_err(backend)?;
        let cutoff = keep_from.format("%Y_%m").to_string();
        let mut dropped = Vec::new();
        for row in rows {
            let name: String = row.get(0);
            let Some(month) = name.strip_prefix("routero_spend_log_") else {
                continue;
            };
            let is_month = month.len() == 7
                && month.bytes().enumerate().all(|(i, b)| {
                    if i == 4 {
                        b == b'_'
                    } else {
                        b.is_ascii_digit()
                    }
                });
            if is_month && month < cutoff.as_str() {
                client
                    .batch_execute(&format!("DROP TABLE IF EXISTS {name}"))
                    .await
                    .map_err(backend)?;
                self.partitions
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .remove(month);
                dropped.push(name);
            }
        }
        dropped.sort();
        Ok(dropped)
    }
}
