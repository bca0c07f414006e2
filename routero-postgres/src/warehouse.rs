//! The warehouse sync's source: runs planned in `routero_sync_runs`, rows scanned
//! by version through a server-side cursor.

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, Utc};
use routero_core::Provider;
use routero_core::attribution::{
    ApiKeyId, BillingMode, CustomerId, Dimensions, OrgId, RequestId, TeamId, UserId, WorkspaceId,
};
use routero_core::port::{BackendError, ErrorKind};
use routero_core::spend::RollupKey;
use routero_core::warehouse::{
    LogRecord, RollupChange, Scan, SinkGuard, SinkLock, SyncRun, SyncStart, SyncedRows,
    WarehouseSource,
};
use rust_decimal::Decimal;
use tokio_postgres::Row;

use crate::drain::{big, count};
use crate::read::{corrupt, currency_from, optional, totals_from};
use crate::{PgStore, backend};

const ROLLUP_COLUMNS: &str = "day, org, workspace, team, api_key, user_id, customer, provider, \
    model, billing_mode, input_tokens, cache_read_tokens, cache_write_5m_tokens, \
    cache_write_1h_tokens, output_tokens, reasoning_tokens, web_search_requests, successes, \
    failures, unpriced, cost, version, currency";

const LOG_COLUMNS: &str = "request_id, event_time, org, workspace, team, api_key, user_id, \
    customer, provider, model, billing_mode, success, partial, input_tokens, cache_read_tokens, \
    cache_write_5m_tokens, cache_write_1h_tokens, output_tokens, reasoning_tokens, cost, \
    price_version, priced_model, unpriced_reason, version, currency";

fn run_from(sink: &str, row: &Row) -> Result<SyncRun, BackendError> {
    Ok(SyncRun {
        sink: sink.to_owned(),
        run: count(row.try_get(0).map_err(backend)?, "run")?,
        hour: row.try_get(1).map_err(backend)?,
        from_version: count(row.try_get(2).map_err(backend)?, "from_version")?,
        to_version: count(row.try_get(3).map_err(backend)?, "to_version")?,
    })
}

fn id<T>(
    row: &Row,
    i: usize,
    parse: impl Fn(&str) -> Result<T, routero_core::attribution::InvalidId>,
    what: &str,
) -> Result<T, BackendError> {
    let text: String = row.try_get(i).map_err(backend)?;
    parse(&text).map_err(|e| corrupt(what, &text, e))
}

pub(crate) fn provider(row: &Row, i: usize) -> Result<Provider, BackendError> {
    let text: String = row.try_get(i).map_err(backend)?;
    Provider::parse(&text).map_err(|e| corrupt("provider", &text, e))
}

pub(crate) fn billing_mode(row: &Row, i: usize) -> Result<BillingMode, BackendError> {
    let text: String = row.try_get(i).map_err(backend)?;
    text.parse().map_err(|e| corrupt("billing mode", &text, e))
}

/// The six dimension columns from column `first` on ('' is none).
pub(crate) fn dimensions(row: &Row, first: usize) -> Result<Dimensions, BackendError> {
    let text = |i: usize| -> Result<Option<String>, BackendError> {
        row.try_get(first + i).map_err(backend)
    };
    Ok(Dimensions {
        org: id(row, first, OrgId::new, "org")?,
        workspace: id(row, first + 1, WorkspaceId::new, "workspace")?,
        team: optional(text(2)?, TeamId::new, "team")?,
        api_key: optional(text(3)?, ApiKeyId::new, "api key")?,
        user: optional(text(4)?, UserId::new, "user")?,
        customer: optional(text(5)?, CustomerId::new, "customer")?,
    })
}

fn rollup_change(row: &Row) -> Result<RollupChange, BackendError> {
    let day: NaiveDate = row.try_get(0).map_err(backend)?;
    Ok(RollupChange {
        key: RollupKey {
            day,
            who: dimensions(row, 1)?,
            provider: provider(row, 7)?,
            model: row.try_get(8).map_err(backend)?,
            billing_mode: billing_mode(row, 9)?,
            currency: currency_from(row.try_get(22).map_err(backend)?)?,
        },
        totals: totals_from(row, 10)?,
        version: count(row.try_get(21).map_err(backend)?, "version")?,
    })
}

fn log_record(row: &Row) -> Result<LogRecord, BackendError> {
    let text =
        |i: usize| -> Result<Option<String>, BackendError> { row.try_get(i).map_err(backend) };
    let mut tokens = [None; 6];
    for (i, slot) in tokens.iter_mut().enumerate() {
        let value: Option<i64> = row.try_get(13 + i).map_err(backend)?;
        *slot = value.map(|v| count(v, "tokens")).transpose()?;
    }
    Ok(LogRecord {
        request_id: id(row, 0, RequestId::new, "request id")?,
        event_time: row.try_get::<_, DateTime<Utc>>(1).map_err(backend)?,
        who: dimensions(row, 2)?,
        provider: provider(row, 8)?,
        model: row.try_get(9).map_err(backend)?,
        billing_mode: billing_mode(row, 10)?,
        success: row.try_get(11).map_err(backend)?,
        partial: row.try_get(12).map_err(backend)?,
        tokens,
        cost: row.try_get::<_, Option<Decimal>>(19).map_err(backend)?,
        price_version: text(20)?,
        priced_model: text(21)?,
        unpriced_reason: text(22)?,
        version: count(row.try_get(23).map_err(backend)?, "version")?,
        currency: text(24)?
            .map(|c| c.parse().map_err(|e| corrupt("currency", &c, e)))
            .transpose()?,
    })
}

/// A read-only snapshot with a cursor over one query, on a connection of its own.
/// Dropped before the scan ends, the connection is closed rather than returned to
/// the pool mid-transaction; the server rolls the transaction back.
struct CursorScan<T> {
    client: Option<deadpool_postgres::Object>,
    parse: fn(&Row) -> Result<T, BackendError>,
}

impl<T> CursorScan<T> {
    async fn open(
        store: &PgStore,
        query: String,
        parse: fn(&Row) -> Result<T, BackendError>,
    ) -> Result<CursorScan<T>, BackendError> {
        let scan = CursorScan {
            client: Some(store.client().await?),
            parse,
        };
        if let Some(client) = &scan.client {
            client
                .batch_execute(&format!(
                    "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY; \
                     DECLARE routero_sync NO SCROLL CURSOR FOR {query}"
                ))
                .await
                .map_err(backend)?;
        }
        Ok(scan)
    }
}

impl<T> Drop for CursorScan<T> {
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            drop(deadpool_postgres::Object::take(client));
        }
    }
}

#[async_trait]
impl<T: Send> Scan<T> for CursorScan<T> {
    async fn next_page(&mut self, limit: usize) -> Result<Vec<T>, BackendError> {
        let Some(client) = &self.client else {
            return Ok(Vec::new());
        };
        let rows = client
            .query(&format!("FETCH {} FROM routero_sync", limit.max(1)), &[])
            .await
            .map_err(backend)?;
        if rows.is_empty() {
            client.batch_execute("COMMIT").await.map_err(backend)?;
            // Done and clean: back to the pool.
            self.client = None;
            return Ok(Vec::new());
        }
        rows.iter().map(self.parse).collect()
    }
}

/// The `WHERE` of a run's rows; the versions are numbers the store planned.
fn in_run(run: &SyncRun) -> String {
    format!(
        "version >= {} AND version < {}",
        run.from_version, run.to_version
    )
}

/// A session advisory lock on a connection of its own: released with
/// `pg_advisory_unlock`, and the connection goes back to the pool; dropped unreleased,
/// the connection is closed, which releases the lock too (so does the death of the
/// process).
struct PgSinkLock {
    client: Option<deadpool_postgres::Object>,
    sink: String,
}

const SINK_LOCK: &str = "hashtextextended($1, 7317020261131)";

#[async_trait]
impl SinkGuard for PgSinkLock {
    async fn release(mut self: Box<Self>) {
        if let Some(client) = self.client.take() {
            let unlocked = client
                .query_one(
                    &format!("SELECT pg_advisory_unlock({SINK_LOCK})"),
                    &[&self.sink],
                )
                .await
                .is_ok_and(|row| row.get::<_, bool>(0));
            if !unlocked {
                drop(deadpool_postgres::Object::take(client));
            }
        }
    }
}

impl Drop for PgSinkLock {
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            drop(deadpool_postgres::Object::take(client));
        }
    }
}

#[async_trait]
impl WarehouseSource for PgStore {
    async fn lock_sink(&self, sink: &str) -> Result<Option<SinkLock>, BackendError> {
        let client = self.client().await?;
        let locked: bool = client
            .query_one(
                &format!("SELECT pg_try_advisory_lock({SINK_LOCK})"),
                &[&sink],
            )
            .await
            .map_err(backend)?
            .try_get(0)
            .map_err(backend)?;
        Ok(locked.then(|| {
            SinkLock::new(PgSinkLock {
                client: Some(client),
                sink: sink.to_owned(),
            })
        }))
    }

    async fn begin_sync(&self, sink: &str, hour: DateTime<Utc>) -> Result<SyncStart, BackendError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(backend)?;
        // One planner per sink at a time.
        tx.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended($1, 7317020261130))",
            &[&sink],
        )
        .await
        .map_err(backend)?;
        let columns = "run, hour, from_version, to_version";
        let open = tx
            .query_opt(
                &format!(
                    "SELECT {columns} FROM routero_sync_runs WHERE sink = $1 AND finished_at IS NULL"
                ),
                &[&sink],
            )
            .await
            .map_err(backend)?;
        if let Some(row) = open {
            tx.commit().await.map_err(backend)?;
            return Ok(SyncStart::Resume(run_from(sink, &row)?));
        }
        let done = tx
            .query_opt(
                &format!("SELECT {columns} FROM routero_sync_runs WHERE sink = $1 AND hour = $2"),
                &[&sink, &hour],
            )
            .await
            .map_err(backend)?;
        if let Some(row) = done {
            tx.commit().await.map_err(backend)?;
            return Ok(SyncStart::Done(run_from(sink, &row)?));
        }
        let last = tx
            .query_opt(
                "SELECT run, to_version FROM routero_sync_runs WHERE sink = $1 \
                 ORDER BY run DESC LIMIT 1",
                &[&sink],
            )
            .await
            .map_err(backend)?;
        let (run, from) = match last {
            Some(row) => (
                count(row.try_get(0).map_err(backend)?, "run")? + 1,
                count(row.try_get(1).map_err(backend)?, "to_version")?,
            ),
            None => (1, 0),
        };
        // This statement's snapshot: every transaction below its xmin has ended.
        let planned = tx
            .query_one(
                "INSERT INTO routero_sync_runs (sink, run, hour, from_version, to_version) \
                 VALUES ($1, $2, $3, $4, \
                         GREATEST($4, pg_snapshot_xmin(pg_current_snapshot())::text::bigint)) \
                 RETURNING run, hour, from_version, to_version",
                &[&sink, &big(run, "run")?, &hour, &big(from, "from_version")?],
            )
            .await
            .map_err(backend)?;
        tx.commit().await.map_err(backend)?;
        Ok(SyncStart::Planned(run_from(sink, &planned)?))
    }

    async fn scan_rollups(
        &self,
        run: &SyncRun,
    ) -> Result<Box<dyn Scan<RollupChange> + '_>, BackendError> {
        let query = format!(
            "SELECT {ROLLUP_COLUMNS} FROM routero_daily_rollups WHERE {} \
             ORDER BY org, day, workspace, team, api_key, user_id, customer, provider, model, billing_mode, currency",
            in_run(run)
        );
        Ok(Box::new(
            CursorScan::open(self, query, rollup_change).await?,
        ))
    }

    async fn scan_log(&self, run: &SyncRun) -> Result<Box<dyn Scan<LogRecord> + '_>, BackendError> {
        let query = format!(
            "SELECT {LOG_COLUMNS} FROM routero_spend_log WHERE {}",
            in_run(run)
        );
        Ok(Box::new(CursorScan::open(self, query, log_record).await?))
    }

    async fn finish_sync(&self, run: &SyncRun, rows: SyncedRows) -> Result<(), BackendError> {
        let client = self.client().await?;
        let updated = client
            .execute(
                "UPDATE routero_sync_runs SET finished_at = COALESCE(finished_at, now()), \
                 rollup_rows = $3, log_rows = $4 WHERE sink = $1 AND run = $2",
                &[
                    &run.sink,
                    &big(run.run, "run")?,
                    &big(rows.rollups, "rollup rows")?,
                    &big(rows.log, "log rows")?,
                ],
            )
            .await
            .map_err(backend)?;
        if updated == 0 {
            return Err(BackendError::new(
                ErrorKind::Invalid,
                format!("run {} of sink {} was never planned", run.run, run.sink),
            ));
        }
        Ok(())
    }
}
