//! The warehouse sync's port: what a store gives an hourly, incremental export of the
//! daily rollups and the request log (the sync itself, its Parquet and NDJSON files
//! and its sinks are the `routero-warehouse` crate).
//!
//! Every rollup and request-log row carries a **version**: a number that only grows
//! and that the store gives each write (PostgreSQL: the writing transaction's id; in
//! memory: the drain step's number). A *sync run* exports the rows whose version lies
//! in `[from, to)`. [`WarehouseSource::begin_sync`] plans the run in the store and
//! commits it before anything is written: `from` is the previous run's `to`, `to` is
//! the lowest version that may still be uncommitted (PostgreSQL: the snapshot's
//! `xmin`), so the range's rows never change their membership after planning;
//! [`WarehouseSource::finish_sync`] marks it done. An unfinished run is finished
//! before the next is planned. Rollups are state, not deltas: each change of a rollup
//! row gives it a new version, and the next run exports it again.

use std::fmt;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;

use crate::attribution::{BillingMode, Dimensions, RequestId};
use crate::money::Currency;
use crate::port::BackendError;
use crate::provider::Provider;
use crate::spend::{Outcome, RollupKey, RollupTotals, SpendEvent};

/// The decimal scale of exported costs.
pub const COST_SCALE: u32 = 12;

/// One planned export: the rows whose version is in `[from_version, to_version)`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SyncRun {
    /// The sink the run exports to (each sink keeps its own watermark).
    pub sink: String,
    /// The run's number, from 1, per sink.
    pub run: u64,
    /// The UTC hour the run was planned for.
    pub hour: DateTime<Utc>,
    /// The first version exported.
    pub from_version: u64,
    /// The first version not exported.
    pub to_version: u64,
}

/// What [`WarehouseSource::begin_sync`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyncStart {
    /// A run planned earlier never finished: export it (again) first.
    Resume(SyncRun),
    /// A new run was planned for the hour.
    Planned(SyncRun),
    /// The hour's run is done already.
    Done(SyncRun),
}

/// A rollup row as it stands, with the version of its last change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RollupChange {
    /// The rollup's dimensions.
    pub key: RollupKey,
    /// Its totals now.
    pub totals: RollupTotals,
    /// The version of its last change.
    pub version: u64,
}

/// One request-log row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRecord {
    /// The request.
    pub request_id: RequestId,
    /// When it happened.
    pub event_time: DateTime<Utc>,
    /// Who spent: org, workspace, team, API key, user, customer.
    pub who: Dimensions,
    /// The provider.
    pub provider: Provider,
    /// The model as the request named it.
    pub model: String,
    /// How it is billed.
    pub billing_mode: BillingMode,
    /// Whether it succeeded.
    pub success: bool,
    /// A stream cut short.
    pub partial: bool,
    /// Token counts, `None` where unknown: input, cache read, cache write 5 min and
    /// 1 h, output, reasoning.
    pub tokens: [Option<u64>; 6],
    /// The exact cost; `None` when unpriced.
    pub cost: Option<Decimal>,
    /// The cost's currency; `None` when unpriced.
    pub currency: Option<Currency>,
    /// The price table version that priced it.
    pub price_version: Option<String>,
    /// The price entry's model.
    pub priced_model: Option<String>,
    /// Why it could not be priced.
    pub unpriced_reason: Option<String>,
    /// The version of the write that logged it.
    pub version: u64,
}

impl LogRecord {
    /// The log row of an event, as the drain writes it.
    pub fn of(event: &SpendEvent, version: u64) -> LogRecord {
        let (cost, price_version, priced_model, unpriced_reason) = event.logged_pricing();
        LogRecord {
            request_id: event.request_id.clone(),
            event_time: event.event_time,
            who: event.attribution.who.clone(),
            provider: event.provider.clone(),
            model: event.model.clone(),
            billing_mode: event.billing_mode,
            success: event.outcome == Outcome::Success,
            partial: event.partial,
            tokens: event.logged_tokens(),
            cost,
            currency: event.currency(),
            price_version: price_version.map(str::to_owned),
            priced_model: priced_model.map(str::to_owned),
            unpriced_reason: unpriced_reason.map(str::to_owned),
            version,
        }
    }
}

/// Rows of one run, a page at a time.
#[async_trait]
pub trait Scan<T: Send>: Send {
    /// Up to `limit` more rows; empty when the scan is over.
    async fn next_page(&mut self, limit: usize) -> Result<Vec<T>, BackendError>;
}

/// What holds a sink for one exporter.
#[async_trait]
pub trait SinkGuard: Send + Sync {
    /// Lets the next exporter in, now. Dropped without it, a guard must still let
    /// go, if later (PostgreSQL: its connection is closed).
    async fn release(self: Box<Self>);
}

/// A sink held by one exporter; [`SinkLock::release`] (or a drop) lets the next in.
pub struct SinkLock(Option<Box<dyn SinkGuard>>);

impl SinkLock {
    /// A lock held by `guard`.
    pub fn new(guard: impl SinkGuard + 'static) -> SinkLock {
        SinkLock(Some(Box::new(guard)))
    }

    /// Releases the sink before returning.
    pub async fn release(mut self) {
        if let Some(guard) = self.0.take() {
            guard.release().await;
        }
    }
}

impl fmt::Debug for SinkLock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SinkLock")
    }
}

/// A store the warehouse sync reads: plans runs, scans their rows, marks them done.
#[async_trait]
pub trait WarehouseSource: fmt::Debug + Send + Sync + 'static {
    /// Holds `sink` for one exporter until the lock is released, or `None` while
    /// another holds it: replicas that all call the sync export each run once, one at
    /// a time. A lock dropped unreleased, or held by a process that dies, must still
    /// be let go (PostgreSQL: a session advisory lock on a connection of its own).
    async fn lock_sink(&self, sink: &str) -> Result<Option<SinkLock>, BackendError>;

    /// For `sink` at `hour` (a whole UTC hour): the unfinished run if there is one,
    /// else the hour's finished run, else a new run planned and committed.
    async fn begin_sync(&self, sink: &str, hour: DateTime<Utc>) -> Result<SyncStart, BackendError>;

    /// The rollup rows whose version is in the run's range.
    async fn scan_rollups(
        &self,
        run: &SyncRun,
    ) -> Result<Box<dyn Scan<RollupChange> + '_>, BackendError>;

    /// The request-log rows whose version is in the run's range.
    async fn scan_log(&self, run: &SyncRun) -> Result<Box<dyn Scan<LogRecord> + '_>, BackendError>;

    /// Marks the run done. Finishing a run twice is not an error.
    async fn finish_sync(&self, run: &SyncRun, rows: SyncedRows) -> Result<(), BackendError>;
}

/// How many rows a run exported.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SyncedRows {
    /// Rollup rows.
    pub rollups: u64,
    /// Request-log rows.
    pub log: u64,
}

/// A scan over rows already in memory.
#[derive(Debug)]
pub struct VecScan<T>(std::vec::IntoIter<T>);

impl<T> VecScan<T> {
    /// Scans `rows` in order.
    pub fn new(rows: Vec<T>) -> VecScan<T> {
        VecScan(rows.into_iter())
    }
}

#[async_trait]
impl<T: Send> Scan<T> for VecScan<T> {
    async fn next_page(&mut self, limit: usize) -> Result<Vec<T>, BackendError> {
        Ok(self.0.by_ref().take(limit.max(1)).collect())
    }
}

// ---------------------------------------------------------------------------------
// Columns
