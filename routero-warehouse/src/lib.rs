#![doc = include_str!("../README.md")]
//!
//! Warehouse sync: an hourly, incremental export of the daily rollups and of the
//! request log to files Snowflake and BigQuery load natively — Parquet and
//! newline-delimited JSON — written to a local directory or any [`Sink`]. It reads
//! any store through the [`WarehouseSource`] port of `routero-core` (re-exported
//! here with its row types), which the in-memory store and PostgreSQL implement.
//!
//! # Exactly once
//!
//! Every rollup and request-log row carries a **version**: a number that only grows
//! and that the store gives each write (PostgreSQL: the writing transaction's id; in
//! memory: the drain step's number). A *sync run* exports the rows whose version lies
//! in `[from, to)`:
//!
//! 1. [`WarehouseSource::begin_sync`] plans the run in the store and commits it
//!    before anything is written: `from` is the previous run's `to`, `to` is the
//!    lowest version that may still be uncommitted (PostgreSQL: the snapshot's
//!    `xmin`). Every version below `to` is final, so the rows of the range never
//!    change their membership after planning.
//! 2. The run's files are written to fixed paths (the sink name, dataset, hour and run
//!    number), each object published whole (a temporary object renamed into place).
//! 3. The run's **manifest** (`{sink}/_runs/run-{run:010}.json`: its range, row counts
//!    and files) is written after every file.
//! 4. [`WarehouseSource::finish_sync`] marks the run done.
//!
//! A run that crashes anywhere before step 4 stays planned; the next sync finishes
//! it first and only then plans the next hour. Without a manifest, it rewrites the
//! same paths over whatever the crashed attempt left; with one, the files are whole
//! and are left as they are, since loaders may have taken them. Re-running an hour
//! whose run is done exports nothing. Ranges never overlap and leave no gap, so every
//! request-log row lands in exactly one run. **Loaders load a run once its manifest
//! exists**, in run order.
//!
//! **Rollups are state, not deltas.** A rollup row is updated in place as spend
//! drains; each change gives it a new version and the next run exports it again
//! with its new totals. A warehouse keeps, per rollup key, the row with the highest
//! `version` (the README gives the `MERGE`). A key whose row changed again after it
//! was planned into a run is carried by the later run instead; the newest totals of
//! every key are always exported exactly once.
//!
//! # Files
//!
//! `{sink}/{dataset}/date=YYYY-MM-DD/hour=HH/run-{run:010}.{parquet|ndjson}`, where
//! `dataset` is `rollups` or `request_log` and the date and hour are the run's UTC
//! hour: Hive-style partitions both warehouses understand. Every run writes every
//! file, empty or not, so a rerun always replaces what a crashed attempt wrote. The
//! columns are [`Dataset::columns`]; costs are `DECIMAL(38, 12)` in Parquet and exact
//! decimal strings in NDJSON, and a cost with more than 12 decimal places is refused
//! ([`WarehouseError::CostScale`]) rather than rounded.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, NaiveDate, Utc};
use routero_core::attribution::{ApiKeyId, CustomerId, TeamId, UserId};
use routero_core::money::Currency;
use routero_core::port::BackendError;
use rust_decimal::Decimal;

pub use routero_core::warehouse::*;

/// The two exported tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dataset {
    /// The daily rollups, one row per key and change.
    Rollups,
    /// The request log, one row per request.
    RequestLog,
}

impl Dataset {
    /// Both, in export order.
    pub const ALL: [Dataset; 2] = [Dataset::Rollups, Dataset::RequestLog];

    /// The directory and table name.
    pub fn as_str(self) -> &'static str {
        match self {
            Dataset::Rollups => "rollups",
            Dataset::RequestLog => "request_log",
        }
    }

    /// The columns, in file order.
    pub fn columns(self) -> Vec<ColumnInfo> {
        match self {
            Dataset::Rollups => ROLLUP_COLUMNS.iter().map(Column::info).collect(),
            Dataset::RequestLog => LOG_COLUMNS.iter().map(Column::info).collect(),
        }
    }

    /// The BigQuery schema file (`bq load --schema=…`), JSON.
    pub fn bigquery_schema(self) -> String {
        let fields: Vec<serde_json::Value> = self
            .columns()
            .iter()
            .map(|c| {
                serde_json::json!({
                    "name": c.name,
                    "type": c.kind.bigquery_type(),
                    "mode": if c.nullable { "NULLABLE" } else { "REQUIRED" },
                    "description": c.doc,
                })
            })
            .collect();
        serde_json::to_string_pretty(&fields).unwrap_or_default()
    }

    /// Snowflake's `CREATE TABLE` for the dataset, named `routero_{dataset}`.
    pub fn snowflake_table(self) -> String {
        let columns: Vec<String> = self
            .columns()
            .iter()
            .map(|c| {
                format!(
                    "    {} {}{}",
                    c.name,
                    c.kind.snowflake_type(),
                    if c.nullable { "" } else { " NOT NULL" }
                )
            })
            .collect();
        format!(
            "CREATE TABLE IF NOT EXISTS routero_{} (\n{}\n);",
            self.as_str(),
            columns.join(",\n")
        )
    }
}

impl fmt::Display for Dataset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// A column's type, as the files carry it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnKind {
    /// UTF-8 text.
    Text,
    /// A signed 64-bit count.
    Int,
    /// A calendar date.
    Date,
    /// A UTC instant, microseconds.
    Timestamp,
    /// True or false.
    Bool,
    /// An exact amount, `DECIMAL(38, 12)`.
    Cost,
}

impl ColumnKind {
    /// The BigQuery column type.
    pub fn bigquery_type(self) -> &'static str {
        match self {
            ColumnKind::Text => "STRING",
            ColumnKind::Int => "INTEGER",
            ColumnKind::Date => "DATE",
            ColumnKind::Timestamp => "TIMESTAMP",
            ColumnKind::Bool => "BOOLEAN",
            ColumnKind::Cost => "BIGNUMERIC",
        }
    }

    /// The Snowflake column type.
    pub fn snowflake_type(self) -> &'static str {
        match self {
            ColumnKind::Text => "VARCHAR",
            ColumnKind::Int => "NUMBER(19, 0)",
            ColumnKind::Date => "DATE",
            ColumnKind::Timestamp => "TIMESTAMP_TZ",
            ColumnKind::Bool => "BOOLEAN",
            ColumnKind::Cost => "NUMBER(38, 12)",
        }
    }
}

/// A column's description, for schemas and docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ColumnInfo {
    /// The name.
    pub name: &'static str,
    /// The type.
    pub kind: ColumnKind,
    /// Whether it can be null.
    pub nullable: bool,
    /// What it holds.
    pub doc: &'static str,
}

/// How a column reads a row; the variant fixes the column's type.
enum Get<T> {
    Text(fn(&T) -> Option<&str>),
    Int(fn(&T) -> Option<u64>),
    Date(fn(&T) -> NaiveDate),
    Timestamp(fn(&T) -> DateTime<Utc>),
    Bool(fn(&T) -> bool),
    Cost(fn(&T) -> Option<Decimal>),
}

struct Column<T> {
    name: &'static str,
    nullable: bool,
    doc: &'static str,
    get: Get<T>,
}

impl<T> Column<T> {
    fn info(&self) -> ColumnInfo {
        ColumnInfo {
            name: self.name,
            kind: match self.get {
                Get::Text(_) => ColumnKind::Text,
                Get::Int(_) => ColumnKind::Int,
                Get::Date(_) => ColumnKind::Date,
                Get::Timestamp(_) => ColumnKind::Timestamp,
                Get::Bool(_) => ColumnKind::Bool,
                Get::Cost(_) => ColumnKind::Cost,
            },
            nullable: self.nullable,
            doc: self.doc,
        }
    }
}

const fn required<T>(name: &'static str, doc: &'static str, get: Get<T>) -> Column<T> {
    Column {
        name,
        nullable: false,
        doc,
        get,
    }
}

const fn nullable<T>(name: &'static str, doc: &'static str, get: Get<T>) -> Column<T> {
    Column {
        name,
        nullable: true,
        doc,
        get,
    }
}

static ROLLUP_COLUMNS: [Column<RollupChange>; 23] = [
    required("day", "UTC day of the requests", Get::Date(|r| r.key.day)),
    required("org", "org id", Get::Text(|r| Some(r.key.who.org.as_str()))),
    required(
        "workspace",
        "workspace id",
        Get::Text(|r| Some(r.key.who.workspace.as_str())),
    ),
    nullable(
        "team",
        "team id",
        Get::Text(|r| r.key.who.team.as_ref().map(TeamId::as_str)),
    ),
    nullable(
        "api_key",
        "API key id",
        Get::Text(|r| r.key.who.api_key.as_ref().map(ApiKeyId::as_str)),
    ),
    nullable(
        "user_id",
        "user id",
        Get::Text(|r| r.key.who.user.as_ref().map(UserId::as_str)),
    ),
    nullable(
        "customer",
        "end-customer id",
        Get::Text(|r| r.key.who.customer.as_ref().map(CustomerId::as_str)),
    ),
    required(
        "provider",
        "provider",
        Get::Text(|r| Some(r.key.provider.as_str())),
    ),
    required(
        "model",
        "model as requested",
        Get::Text(|r| Some(&r.key.model)),
    ),
    required(
        "billing_mode",
        "managed or byok",
        Get::Text(|r| Some(r.key.billing_mode.as_str())),
    ),
    required(
        "input_tokens",
        "uncached input tokens",
        Get::Int(|r| Some(r.totals.input_tokens)),
    ),
    required(
        "cache_read_tokens",
        "cache-read tokens",
        Get::Int(|r| Some(r.totals.cache_read_tokens)),
    ),
    required(
        "cache_write_5m_tokens",
        "5-minute cache-write tokens",
        Get::Int(|r| Some(r.totals.cache_write_5m_tokens)),
    ),
    required(
        "cache_write_1h_tokens",
        "1-hour cache-write tokens",
        Get::Int(|r| Some(r.totals.cache_write_1h_tokens)),
    ),
    required(
        "output_tokens",
        "output tokens, reasoning included",
        Get::Int(|r| Some(r.totals.output_tokens)),
    ),
    required(
        "reasoning_tokens",
        "reasoning tokens",
        Get::Int(|r| Some(r.totals.reasoning_tokens)),
    ),
    required(
        "web_search_requests",
        "web search calls",
        Get::Int(|r| Some(r.totals.web_search_requests)),
    ),
    required(
        "successes",
        "successful requests",
        Get::Int(|r| Some(r.totals.successes)),
    ),
    required(
        "failures",
        "failed requests",
        Get::Int(|r| Some(r.totals.failures)),
    ),
    required(
        "unpriced",
        "requests that could not be priced (tokens counted, cost not)",
        Get::Int(|r| Some(r.totals.unpriced)),
    ),
    required(
        "cost",
        "exact cost of the priced requests",
        Get::Cost(|r| Some(r.totals.cost)),
    ),
    nullable(
        "currency",
        "ISO 4217 code of the cost; null for a row of unpriced requests (part of the key)",
        Get::Text(|r| r.key.currency.as_ref().map(Currency::code)),
    ),
    required(
        "version",
        "version of this state of the row: keep the highest per key",
        Get::Int(|r| Some(r.version)),
    ),
];

static LOG_COLUMNS: [Column<LogRecord>; 25] = [
    required(
        "request_id",
        "request id",
        Get::Text(|r| Some(r.request_id.as_str())),
    ),
    required(
        "event_time",
        "when the request happened",
        Get::Timestamp(|r| r.event_time),
    ),
    required("org", "org id", Get::Text(|r| Some(r.who.org.as_str()))),
    required(
        "workspace",
        "workspace id",
        Get::Text(|r| Some(r.who.workspace.as_str())),
    ),
    nullable(
        "team",
        "team id",
        Get::Text(|r| r.who.team.as_ref().map(TeamId::as_str)),
    ),
    nullable(
        "api_key",
        "API key id",
        Get::Text(|r| r.who.api_key.as_ref().map(ApiKeyId::as_str)),
    ),
    nullable(
        "user_id",
        "user id",
        Get::Text(|r| r.who.user.as_ref().map(UserId::as_str)),
    ),
    nullable(
        "customer",
        "end-customer id",
        Get::Text(|r| r.who.customer.as_ref().map(CustomerId::as_str)),
    ),
    required(
        "provider",
        "provider",
        Get::Text(|r| Some(r.provider.as_str())),
    ),
    required("model", "model as requested", Get::Text(|r| Some(&r.model))),
    required(
        "billing_mode",
        "managed or byok",
        Get::Text(|r| Some(r.billing_mode.as_str())),
    ),
    required("success", "whether it succeeded", Get::Bool(|r| r.success)),
    required("partial", "a stream cut short", Get::Bool(|r| r.partial)),
    nullable(
        "input_tokens",
        "uncached input tokens",
        Get::Int(|r| r.tokens[0]),
    ),
    nullable(
        "cache_read_tokens",
        "cache-read tokens",
        Get::Int(|r| r.tokens[1]),
    ),
    nullable(
        "cache_write_5m_tokens",
        "5-minute cache-write tokens",
        Get::Int(|r| r.tokens[2]),
    ),
    nullable(
        "cache_write_1h_tokens",
        "1-hour cache-write tokens",
        Get::Int(|r| r.tokens[3]),
    ),
    nullable(
        "output_tokens",
        "output tokens, reasoning included",
        Get::Int(|r| r.tokens[4]),
    ),
    nullable(
        "reasoning_tokens",
        "reasoning tokens, where reported",
        Get::Int(|r| r.tokens[5]),
    ),
    nullable(
        "cost",
        "exact cost; null when unpriced",
        Get::Cost(|r| r.cost),
    ),
    nullable(
        "currency",
        "ISO 4217 code of the cost; null when unpriced",
        Get::Text(|r| r.currency.as_ref().map(Currency::code)),
    ),
    nullable(
        "price_version",
        "price table version",
        Get::Text(|r| r.price_version.as_deref()),
    ),
    nullable(
        "priced_model",
        "price entry's model",
        Get::Text(|r| r.priced_model.as_deref()),
    ),
    nullable(
        "unpriced_reason",
        "why it could not be priced",
        Get::Text(|r| r.unpriced_reason.as_deref()),
    ),
    required(
        "version",
        "version of the write that logged it",
        Get::Int(|r| Some(r.version)),
    ),
];

/// A row type with a column table.
trait Exported: Send + Sync + 'static {
    const DATASET: Dataset;
    fn columns() -> &'static [Column<Self>]
    where
        Self: Sized;
}

impl Exported for RollupChange {
    const DATASET: Dataset = Dataset::Rollups;
    fn columns() -> &'static [Column<RollupChange>] {
        &ROLLUP_COLUMNS
    }
}

impl Exported for LogRecord {
    const DATASET: Dataset = Dataset::RequestLog;
    fn columns() -> &'static [Column<LogRecord>] {
        &LOG_COLUMNS
    }
}

/// A cost as the unscaled integer of `DECIMAL(38, COST_SCALE)`, or why it cannot be.
fn scaled_cost(cost: Decimal) -> Result<i128, WarehouseError> {
    let normal = cost.normalize();
    if normal.scale() > COST_SCALE {
        return Err(WarehouseError::CostScale(cost));
    }
    let factor = 10i128.pow(COST_SCALE - normal.scale());
    let unscaled = normal
        .mantissa()
        .checked_mul(factor)
        .filter(|v| v.unsigned_abs() < 10u128.pow(38))
        .ok_or(WarehouseError::CostScale(cost))?;
    Ok(unscaled)
}

fn int(value: u64, column: &'static str) -> Result<i64, WarehouseError> {
    i64::try_from(value).map_err(|_| WarehouseError::OutOfRange { column, value })
}

// ---------------------------------------------------------------------------------
// Sinks

/// Why a sink failed.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct SinkError {
    message: String,
    #[source]
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl SinkError {
    /// An error with a message.
    pub fn new(message: impl Into<String>) -> SinkError {
        SinkError {
            message: message.into(),
            source: None,
        }
    }

    /// An error with a message and its cause.
    pub fn with_source(
        message: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> SinkError {
        SinkError {
            message: message.into(),
            source: Some(Box::new(source)),
        }
    }
}

/// Where exported files go: a directory, a bucket.
#[async_trait]
pub trait Sink: fmt::Debug + Send + Sync + 'static {
    /// Starts writing the object at `path` (`/`-separated, relative).
    async fn create(&self, path: &str) -> Result<Box<dyn SinkObject>, SinkError>;

    /// The object at `path`, if one was committed. The sync reads only its small
    /// run manifests.
    async fn read(&self, path: &str) -> Result<Option<Bytes>, SinkError>;
}

/// An object being written. It becomes visible at [`SinkObject::commit`], whole,
/// replacing any object at its path; dropped without a commit, it never appears.
#[async_trait]
pub trait SinkObject: Send {
    /// Appends bytes.
    async fn write(&mut self, chunk: Bytes) -> Result<(), SinkError>;
    /// Publishes the object.
    async fn commit(self: Box<Self>) -> Result<(), SinkError>;
}

/// A sink in memory, for tests and for handing files to code that uploads them.
#[derive(Debug, Clone, Default)]
pub struct MemorySink {
    objects: Arc<Mutex<BTreeMap<String, Bytes>>>,
}

impl MemorySink {
    /// An empty sink.
    pub fn new() -> MemorySink {
        MemorySink::default()
    }

    /// The committed objects by path.
    pub fn objects(&self) -> BTreeMap<String, Bytes> {
        self.objects
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

#[async_trait]
impl Sink for MemorySink {
    async fn create(&self, path: &str) -> Result<Box<dyn SinkObject>, SinkError> {
        Ok(Box::new(MemoryObject {
            path: path.to_owned(),
            buffer: Vec::new(),
            objects: Arc::clone(&self.objects),
        }))
    }

    async fn read(&self, path: &str) -> Result<Option<Bytes>, SinkError> {
        Ok(self
            .objects
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(path)
            .cloned())
    }
}

struct MemoryObject {
    path: String,
    buffer: Vec<u8>,
    objects: Arc<Mutex<BTreeMap<String, Bytes>>>,
}

#[async_trait]
impl SinkObject for MemoryObject {
    async fn write(&mut self, chunk: Bytes) -> Result<(), SinkError> {
        self.buffer.extend_from_slice(&chunk);
        Ok(())
    }

    async fn commit(self: Box<Self>) -> Result<(), SinkError> {
        let MemoryObject {
            path,
            buffer,
            objects,
        } = *self;
        objects
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(path, Bytes::from(buffer));
        Ok(())
    }
}

/// Why a sync stopped. The run it was exporting stays planned and is finished by
/// the next sync.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WarehouseError {
    /// The store failed.
    #[error("warehouse sync: {0}")]
    Backend(#[from] BackendError),
    /// The sink failed.
    #[error("warehouse sync: writing {path}: {source}")]
    Sink {
        /// The object.
        path: String,
        /// Why.
        #[source]
        source: SinkError,
    },
    /// Parquet encoding failed.
    #[error("warehouse sync: parquet: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
    /// A cost has more decimal places than the files carry.
    #[error(
        "warehouse sync: cost {0} has more than {COST_SCALE} decimal places or 38 digits; it is not rounded"
    )]
    CostScale(Decimal),
    /// A count beyond a signed 64-bit column.
    #[error("warehouse sync: {column} = {value} exceeds a 64-bit column")]
    OutOfRange {
        /// The column.
        column: &'static str,
        /// The value.
        value: u64,
    },
    /// A required column had no value.
    #[error("warehouse sync: required column {0} is empty")]
    Missing(&'static str),
    /// The sink name is not usable as a path segment.
    #[error("warehouse sync: sink name {0:?} must be 1 to 64 of a-z, 0-9, '-' and '_'")]
    SinkName(String),
    /// A file read back is not what this sync writes.
    #[error("warehouse sync: reading a file back: {0}")]
    Read(String),
    /// The store's plan is inconsistent.
    #[error("warehouse sync: {0}")]
    Plan(String),
}

pub use self::engine::{
    ExportedRow, FileFormat, LocalDir, ROLLUP_KEY, RunReport, SyncReport, WarehouseSync,
    manifest_path, newest_rollups, object_path, read_ndjson, read_parquet, rollup_key,
};

mod engine;
#[cfg(feature = "object-store")]
mod object;
#[cfg(feature = "object-store")]
pub use self::object::{ObjectStoreSink, options_from_env};

#[cfg(feature = "testing")]
pub mod conformance;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn costs_scale_exactly_or_are_refused() {
        let d = |s: &str| Decimal::from_str_exact(s).unwrap_or_else(|e| panic!("{s}: {e}"));
        assert_eq!(scaled_cost(d("0.004576")).ok(), Some(4_576_000_000));
        assert_eq!(scaled_cost(d("-1.5")).ok(), Some(-1_500_000_000_000));
        assert_eq!(scaled_cost(d("0.000000000001")).ok(), Some(1));
        assert_eq!(
            scaled_cost(d("0.0000000000010000")).ok(),
            Some(1),
            "trailing zeros are not precision"
        );
        assert!(matches!(
            scaled_cost(d("0.0000000000001")),
            Err(WarehouseError::CostScale(_))
        ));
        // 27 integer digits + 12 decimals = 39 digits: beyond DECIMAL(38).
        assert!(matches!(
            scaled_cost(d("100000000000000000000000000")),
            Err(WarehouseError::CostScale(_))
        ));
        assert!(scaled_cost(d("10000000000000000000000000")).is_ok());
    }

    #[test]
    fn schemas_name_every_column_once() {
        for dataset in Dataset::ALL {
            let columns = dataset.columns();
            let mut names: Vec<&str> = columns.iter().map(|c| c.name).collect();
            names.sort_unstable();
            names.dedup();
            assert_eq!(names.len(), columns.len(), "{dataset}");
            let schema: serde_json::Value =
                serde_json::from_str(&dataset.bigquery_schema()).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(
                schema.as_array().map(Vec::len),
                Some(columns.len()),
                "{dataset}"
            );
            let ddl = dataset.snowflake_table();
            for column in &columns {
                assert!(ddl.contains(&format!("    {} ", column.name)), "{ddl}");
            }
        }
    }
}
