//! The warehouse sync's conformance (feature `testing`): every store's
//! [`WarehouseSource`](crate::WarehouseSource) exports a month exactly once, through
//! crashes at every step, Parquet and NDJSON agreeing row for row.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use routero_core::attribution::OrgId;
use routero_core::conformance::{a_month_of_events, apply_step, in_acme_november};
use routero_core::money::Currency;
use routero_core::port::{RollupFilter, SpendReader, SpendStore};
use routero_core::spend::{RollupTotals, SpendEvent};
use rust_decimal::Decimal;

// ---------------------------------------------------------------------------------
// Warehouse sync

/// Every conformance test of the warehouse sync over a store, each on a fresh, empty
/// store that `fresh(name)` makes. A store adapter calls this one function, and a
/// test added here reaches it.
pub async fn warehouse_suite<S, F, Fut>(mut fresh: F)
where
    S: SpendStore + SpendReader + crate::WarehouseSource,
    F: FnMut(&'static str) -> Fut,
    Fut: std::future::Future<Output = S>,
{
    warehouse_round_trips_a_month(Arc::new(fresh("month").await)).await;
    warehouse_sync_survives_crashes(Arc::new(fresh("crashes").await)).await;
}

use crate::ExportedRow;

/// Every row of every committed `dataset` file of `format` in `sink`.
fn exported_rows(
    sink: &crate::MemorySink,
    dataset: crate::Dataset,
    format: crate::FileFormat,
) -> Vec<ExportedRow> {
    use crate::{FileFormat, read_ndjson, read_parquet};

    let suffix = format!(".{}", format.extension());
    let mut rows = Vec::new();
    for (path, bytes) in sink.objects() {
        if !path.contains(&format!("/{dataset}/")) || !path.ends_with(&suffix) {
            continue;
        }
        let read = match format {
            FileFormat::Parquet => read_parquet(bytes),
            FileFormat::Ndjson => read_ndjson(&bytes),
        };
        rows.extend(read.unwrap_or_else(|e| panic!("{path}: {e}")));
    }
    rows
}

fn text_of<'a>(row: &'a ExportedRow, column: &str) -> &'a str {
    row.get(column).and_then(|v| v.as_str()).unwrap_or("")
}

fn count_of(row: &ExportedRow, column: &str) -> u64 {
    row.get(column)
        .and_then(serde_json::Value::as_u64)
        .unwrap_or_else(|| panic!("{column} of {row:?}"))
}

fn cost_of(row: &ExportedRow) -> Option<Decimal> {
    row.get("cost")
        .and_then(|v| v.as_str())
        .map(|c| Decimal::from_str_exact(c).unwrap_or_else(|e| panic!("{c}: {e}")))
}

/// Per rollup key, the exported row with the highest version; no rollup state is
/// exported twice.
fn latest_rollups(rows: Vec<ExportedRow>) -> BTreeMap<Vec<String>, ExportedRow> {
    let mut states = BTreeMap::new();
    for row in &rows {
        let state = (crate::rollup_key(row), count_of(row, "version"));
        let n: &mut usize = states.entry(state).or_default();
        *n += 1;
        assert_eq!(*n, 1, "a rollup state exported twice: {row:?}");
    }
    crate::newest_rollups(rows)
}

/// What the sink holds equals the store: Parquet and NDJSON agree row for row; the
/// newest exported state of every rollup adds up, per org, to the store's exact
/// totals; every logged request is exported exactly once.
async fn assert_exported_once<S: SpendReader + ?Sized>(
    store: &S,
    sink: &crate::MemorySink,
    events: &[SpendEvent],
) {
    use crate::{Dataset, FileFormat};

    let sorted = |mut rows: Vec<ExportedRow>| {
        rows.sort_by_cached_key(|r| serde_json::Value::Object(r.clone()).to_string());
        rows
    };
    for dataset in Dataset::ALL {
        let parquet = exported_rows(sink, dataset, FileFormat::Parquet);
        let ndjson = exported_rows(sink, dataset, FileFormat::Ndjson);
        assert_eq!(
            parquet.first().map(|r| r.len()),
            Some(dataset.columns().len()),
            "{dataset}: every column"
        );
        let (parquet, ndjson) = (sorted(parquet), sorted(ndjson));
        assert_eq!(
            parquet.len(),
            ndjson.len(),
            "{dataset}: Parquet and NDJSON rows"
        );
        if let Some((p, n)) = parquet.iter().zip(&ndjson).find(|(p, n)| p != n) {
            panic!("{dataset}: Parquet row {p:?} against NDJSON row {n:?}");
        }
    }

    let latest = latest_rollups(exported_rows(sink, Dataset::Rollups, FileFormat::Parquet));
    for org in ["acme", "globex"] {
        let filter = RollupFilter::new(
            OrgId::new(org).unwrap_or_else(|e| panic!("{e}")),
            NaiveDate::from_ymd_opt(2026, 10, 1).unwrap_or_default(),
            NaiveDate::from_ymd_opt(2026, 12, 31).unwrap_or_default(),
        );
        let mut stored = RollupTotals::default();
        for row in store
            .rollups(&filter)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
        {
            stored.add(&row.totals).unwrap_or_else(|e| panic!("{e}"));
        }
        let (mut cost, mut requests, mut input, mut unpriced) = (Decimal::ZERO, 0, 0, 0);
        for row in latest.values().filter(|r| text_of(r, "org") == org) {
            cost += cost_of(row).unwrap_or_else(|| panic!("rollup cost of {row:?}"));
            requests += count_of(row, "successes") + count_of(row, "failures");
            input += count_of(row, "input_tokens");
            unpriced += count_of(row, "unpriced");
        }
        assert_eq!(
            (cost, requests, input, unpriced),
            (
                stored.cost,
                stored.requests(),
                stored.input_tokens,
                stored.unpriced
            ),
            "{org}: exported rollups against the store"
        );
        let expected: Decimal = events
            .iter()
            .filter(|e| e.attribution.who.org.as_str() == org)
            .filter_map(SpendEvent::cost)
            .sum();
        assert_eq!(cost, expected, "{org}: exported rollups against the events");
    }

    let log = exported_rows(sink, Dataset::RequestLog, FileFormat::Parquet);
    let mut seen = std::collections::BTreeMap::<String, usize>::new();
    for row in &log {
        *seen
            .entry(text_of(row, "request_id").to_owned())
            .or_default() += 1;
    }
    let doubled: Vec<&String> = seen
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(id, _)| id)
        .collect();
    assert!(doubled.is_empty(), "requests exported twice: {doubled:?}");
    let missing: Vec<&str> = events
        .iter()
        .map(|e| e.request_id.as_str())
        .filter(|id| !seen.contains_key(*id))
        .collect();
    assert!(missing.is_empty(), "requests never exported: {missing:?}");
    assert_eq!(log.len(), events.len(), "log rows");
    let logged: Decimal = log.iter().filter_map(cost_of).sum();
    let expected: Decimal = events.iter().filter_map(SpendEvent::cost).sum();
    assert_eq!(logged, expected, "exported request-log cost");
    let unpriced = log
        .iter()
        .filter(|r| cost_of(r).is_none())
        .inspect(|r| assert_eq!(text_of(r, "unpriced_reason"), "unknown_model", "{r:?}"))
        .count();
    assert_eq!(
        unpriced,
        events.iter().filter(|e| e.cost().is_none()).count(),
        "unpriced log rows"
    );
}

/// Syncs the hours after `after`, one by one, until the sink holds `events`
/// request-log rows; returns the last hour synced. In memory the first run holds
/// everything drained; a PostgreSQL run ends below any write transaction open on
/// the server (other tests' included), so the rest may take more runs.
async fn sync_until_exported<S, K>(
    sync: &crate::WarehouseSync<S, K>,
    sink: &crate::MemorySink,
    events: usize,
    after: DateTime<Utc>,
) -> DateTime<Utc>
where
    S: crate::WarehouseSource + ?Sized,
    K: crate::Sink + ?Sized,
{
    use crate::{Dataset, FileFormat};
    let started = std::time::Instant::now();
    let mut hour = after;
    while exported_rows(sink, Dataset::RequestLog, FileFormat::Ndjson).len() < events {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "rows still unexported after two minutes of runs"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
        hour += chrono::Duration::hours(1);
        sync.sync(hour)
            .await
            .unwrap_or_else(|e| panic!("sync: {e}"));
    }
    hour
}

/// A month through the warehouse sync reads back the exact totals, in Parquet and
/// NDJSON alike, equal to the chargeback CSV's; files land at their hourly paths; an
/// hour is exported once however often it is synced; a sink held by another exporter
/// is left alone.
pub async fn warehouse_round_trips_a_month<S>(store: Arc<S>)
where
    S: SpendStore + SpendReader + crate::WarehouseSource,
{
    use crate::{MemorySink, WarehouseSync};
    use routero_core::export::{CsvExport, ExportFormat, ExportRequest};

    let events = a_month_of_events();
    let (first, second) = events.split_at(events.len() / 2);
    apply_step(&*store, 1, first).await;
    apply_step(&*store, 2, second).await;

    let sink = Arc::new(MemorySink::new());
    let sync = WarehouseSync::new(Arc::clone(&store), Arc::clone(&sink), "warehouse")
        .unwrap_or_else(|e| panic!("{e}"))
        .with_page_rows(64);
    let ten = NaiveDate::from_ymd_opt(2026, 12, 1)
        .unwrap_or_default()
        .and_hms_opt(10, 17, 3)
        .unwrap_or_default()
        .and_utc();
    // Another exporter holds the sink: nothing happens until it lets go.
    let held = store
        .lock_sink("warehouse")
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|| panic!("a free sink locks"));
    assert!(
        store
            .lock_sink("warehouse")
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .is_none(),
        "a held sink does not lock twice"
    );
    let busy = sync.sync(ten).await.unwrap_or_else(|e| panic!("sync: {e}"));
    assert!(busy.busy && busy.runs.is_empty(), "{busy:?}");
    assert!(sink.objects().is_empty());
    held.release().await;

    let report = sync.sync(ten).await.unwrap_or_else(|e| panic!("sync: {e}"));
    assert_eq!(report.runs.len(), 1, "{report:?}");
    let run = &report.runs[0];
    assert!(!run.resumed);
    assert!(run.rows.log <= u64::try_from(events.len()).unwrap_or(0));
    assert_eq!(
        run.objects,
        [
            "warehouse/rollups/date=2026-12-01/hour=10/run-0000000001.parquet",
            "warehouse/rollups/date=2026-12-01/hour=10/run-0000000001.ndjson",
            "warehouse/request_log/date=2026-12-01/hour=10/run-0000000001.parquet",
            "warehouse/request_log/date=2026-12-01/hour=10/run-0000000001.ndjson",
        ]
    );
    assert_eq!(run.manifest, "warehouse/_runs/run-0000000001.json");
    assert!(sink.objects().contains_key(&run.manifest));
    let last = sync_until_exported(&sync, &sink, events.len(), ten).await;
    assert_exported_once(&*store, &sink, &events).await;

    // The chargeback CSV of November and the Parquet rollups of November agree.
    let csv = CsvExport::new(
        &*store,
        ExportRequest {
            org: OrgId::new("acme").unwrap_or_else(|e| panic!("{e}")),
            workspaces: None,
            teams: None,
            month: routero_core::invoice::Month::parse("2026-11")
                .unwrap_or_else(|| panic!("month")),
            format: ExportFormat::Chargeback,
            invoice_issuer: "Routero".to_owned(),
        },
    )
    .unwrap_or_else(|e| panic!("{e}"))
    .write_to(std::io::sink())
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let november_cost: Decimal = latest_rollups(exported_rows(
        &sink,
        crate::Dataset::Rollups,
        crate::FileFormat::Parquet,
    ))
    .values()
    .filter(|r| text_of(r, "org") == "acme" && text_of(r, "day").starts_with("2026-11-"))
    .filter_map(cost_of)
    .sum();
    assert_eq!(
        november_cost,
        csv.cost(Currency::USD),
        "Parquet and CSV totals of November"
    );
    let expected: Decimal = events
        .iter()
        .filter(|e| in_acme_november(e))
        .filter_map(SpendEvent::cost)
        .sum();
    assert_eq!(csv.cost(Currency::USD), expected);

    // The same hour again: nothing new, the same files.
    let before = sink.objects();
    let again = sync.sync(ten).await.unwrap_or_else(|e| panic!("{e}"));
    assert!(again.runs.is_empty(), "{again:?}");
    assert_eq!(again.already_done.map(|r| r.run), Some(1));
    assert_eq!(sink.objects(), before);

    // The next hour with nothing drained: a run with empty files.
    let report = sync
        .sync(last + chrono::Duration::hours(1))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(report.runs.len(), 1);
    assert_eq!(report.runs[0].rows, crate::SyncedRows::default());
    assert_exported_once(&*store, &sink, &events).await;
}

/// How [`FailingSink`] fails.
#[derive(Debug, Clone, Copy)]
enum Fault {
    /// The n-th object created fails on its first write.
    Write(usize),
    /// The n-th object created fails on its commit.
    Commit(usize),
    /// The n-th object created never finishes its first write.
    Stall(usize),
}

/// A sink that fails once, as a crash would stop the sync.
#[derive(Debug)]
struct FailingSink {
    inner: crate::MemorySink,
    fault: Fault,
    created: std::sync::atomic::AtomicUsize,
}

struct FailingObject {
    inner: Box<dyn crate::SinkObject>,
    fail_write: bool,
    fail_commit: bool,
    stall: bool,
}

#[async_trait::async_trait]
impl crate::Sink for FailingSink {
    async fn create(&self, path: &str) -> Result<Box<dyn crate::SinkObject>, crate::SinkError> {
        let n = self
            .created
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Ok(Box::new(FailingObject {
            inner: self.inner.create(path).await?,
            fail_write: matches!(self.fault, Fault::Write(at) if at == n),
            fail_commit: matches!(self.fault, Fault::Commit(at) if at == n),
            stall: matches!(self.fault, Fault::Stall(at) if at == n),
        }))
    }

    async fn read(&self, path: &str) -> Result<Option<bytes::Bytes>, crate::SinkError> {
        self.inner.read(path).await
    }
}

#[async_trait::async_trait]
impl crate::SinkObject for FailingObject {
    async fn write(&mut self, chunk: bytes::Bytes) -> Result<(), crate::SinkError> {
        if self.fail_write {
            return Err(crate::SinkError::new("injected write failure"));
        }
        if self.stall {
            std::future::pending::<()>().await;
        }
        self.inner.write(chunk).await
    }

    async fn commit(self: Box<Self>) -> Result<(), crate::SinkError> {
        if self.fail_commit {
            return Err(crate::SinkError::new("injected commit failure"));
        }
        self.inner.commit().await
    }
}

/// A source whose first `finish_sync` fails: the files are out, the run is not
/// marked done.
#[derive(Debug)]
struct FinishFails<S>(Arc<S>, std::sync::atomic::AtomicBool);

#[async_trait::async_trait]
impl<S: crate::WarehouseSource> crate::WarehouseSource for FinishFails<S> {
    async fn lock_sink(
        &self,
        sink: &str,
    ) -> Result<Option<crate::SinkLock>, routero_core::port::BackendError> {
        self.0.lock_sink(sink).await
    }

    async fn begin_sync(
        &self,
        sink: &str,
        hour: DateTime<Utc>,
    ) -> Result<crate::SyncStart, routero_core::port::BackendError> {
        self.0.begin_sync(sink, hour).await
    }

    async fn scan_rollups(
        &self,
        run: &crate::SyncRun,
    ) -> Result<Box<dyn crate::Scan<crate::RollupChange> + '_>, routero_core::port::BackendError>
    {
        self.0.scan_rollups(run).await
    }

    async fn scan_log(
        &self,
        run: &crate::SyncRun,
    ) -> Result<Box<dyn crate::Scan<crate::LogRecord> + '_>, routero_core::port::BackendError> {
        self.0.scan_log(run).await
    }

    async fn finish_sync(
        &self,
        run: &crate::SyncRun,
        rows: crate::SyncedRows,
    ) -> Result<(), routero_core::port::BackendError> {
        if !self.1.swap(true, std::sync::atomic::Ordering::SeqCst) {
            return Err(routero_core::port::BackendError::new(
                routero_core::port::ErrorKind::Unavailable,
                "injected failure before the run was marked done",
            ));
        }
        self.0.finish_sync(run, rows).await
    }
}

/// Syncs that stop half-way — before any file, cut off in the middle of a scan,
/// after some files, after every file but before the manifest, after the manifest
/// but before the run is marked done —
/// with spend draining in between, followed by reruns: every request-log row is
/// exported exactly once, a manifested file is never rewritten, and the newest rollup
/// states add up to the store's totals.
pub async fn warehouse_sync_survives_crashes<S>(store: Arc<S>)
where
    S: SpendStore + SpendReader + crate::WarehouseSource,
{
    use crate::{MemorySink, WarehouseError, WarehouseSync};

    let events = a_month_of_events();
    let chunks: Vec<&[SpendEvent]> = events.chunks(events.len() / 4 + 1).collect();
    assert_eq!(chunks.len(), 4);
    let sink = MemorySink::new();
    let hour = NaiveDate::from_ymd_opt(2026, 12, 1)
        .unwrap_or_default()
        .and_hms_opt(10, 0, 0)
        .unwrap_or_default()
        .and_utc();
    let failing = |fault| {
        Arc::new(FailingSink {
            inner: sink.clone(),
            fault,
            created: std::sync::atomic::AtomicUsize::new(0),
        })
    };
    let sync_to = |sink: Arc<FailingSink>| {
        WarehouseSync::new(Arc::clone(&store), sink, "wh")
            .unwrap_or_else(|e| panic!("{e}"))
            .with_page_rows(16)
    };

    apply_step(&*store, 1, chunks[0]).await;
    apply_step(&*store, 2, chunks[1]).await;
    // Crash before anything is published: the run is planned over steps 1 and 2.
    let crashed = sync_to(failing(Fault::Write(0))).sync(hour).await;
    assert!(
        matches!(crashed, Err(WarehouseError::Sink { .. })),
        "{crashed:?}"
    );
    assert!(sink.objects().is_empty());
    // The process stops mid-scan (the sync's future dropped while the request log is
    // being read): whatever it held is let go.
    let stalled = tokio::time::timeout(
        Duration::from_millis(200),
        sync_to(failing(Fault::Stall(2))).sync(hour),
    )
    .await;
    assert!(stalled.is_err(), "the stalled sync was cut");
    assert_eq!(sink.objects().len(), 2, "the rollup files are out");
    // Its lock, dropped unreleased, goes with its connection: soon, not at once.
    let cut = std::time::Instant::now();
    loop {
        if let Some(lock) = store
            .lock_sink("wh")
            .await
            .unwrap_or_else(|e| panic!("{e}"))
        {
            lock.release().await;
            break;
        }
        assert!(
            cut.elapsed() < Duration::from_secs(30),
            "the cut sync's lock is never let go"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // More spend drains, into rollups the planned run holds.
    apply_step(&*store, 3, chunks[2]).await;
    // Crash after the rollup files are published, on the log's Parquet commit.
    let crashed = sync_to(failing(Fault::Commit(2))).sync(hour).await;
    assert!(
        matches!(crashed, Err(WarehouseError::Sink { .. })),
        "{crashed:?}"
    );
    assert_eq!(sink.objects().len(), 2, "the rollup files are out");
    // Crash on the manifest: every file is out, the manifest is not.
    let crashed = sync_to(failing(Fault::Commit(4))).sync(hour).await;
    assert!(
        matches!(crashed, Err(WarehouseError::Sink { .. })),
        "{crashed:?}"
    );
    assert_eq!(sink.objects().len(), 4, "the files without their manifest");

    apply_step(&*store, 4, chunks[3]).await;
    // Crash after the manifest, before the run is marked done.
    let unfinishing = Arc::new(FinishFails(
        Arc::clone(&store),
        std::sync::atomic::AtomicBool::new(false),
    ));
    let crashed = WarehouseSync::new(unfinishing, Arc::new(sink.clone()), "wh")
        .unwrap_or_else(|e| panic!("{e}"))
        .sync(hour)
        .await;
    assert!(
        matches!(crashed, Err(WarehouseError::Backend(_))),
        "{crashed:?}"
    );
    let published = sink.objects();
    assert_eq!(published.len(), 5, "four files and the manifest");

    // The rerun finishes run 1 from its manifest, leaving the files loaders may
    // have taken untouched, and the hour is done.
    let sync = WarehouseSync::new(Arc::clone(&store), Arc::new(sink.clone()), "wh")
        .unwrap_or_else(|e| panic!("{e}"));
    let report = sync.sync(hour).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(report.runs.len(), 1, "{report:?}");
    assert!(report.runs[0].resumed);
    assert_eq!(report.runs[0].run.run, 1);
    assert_eq!(report.runs[0].objects.len(), 4);
    assert!(
        report.runs[0].rows.log <= u64::try_from(chunks[0].len() + chunks[1].len()).unwrap_or(0),
        "run 1 holds steps 1 and 2 at most"
    );
    assert_eq!(sink.objects(), published, "nothing rewritten");
    let again = sync.sync(hour).await.unwrap_or_else(|e| panic!("{e}"));
    assert!(
        again.runs.is_empty() && again.already_done.is_some(),
        "{again:?}"
    );

    // The next hours carry the rest.
    let last = sync_until_exported(&sync, &sink, events.len(), hour).await;
    let runs = match sync
        .sync(last)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .already_done
    {
        Some(run) => run.run,
        None => panic!("the last hour is done"),
    };
    assert!(runs >= 2);
    assert_eq!(
        sink.objects().len(),
        usize::try_from(runs * 5).unwrap_or(0),
        "four files and a manifest per run"
    );
    assert_exported_once(&*store, &sink, &events).await;
}
