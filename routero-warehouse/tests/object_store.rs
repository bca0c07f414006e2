//! The warehouse sync into a real S3-compatible server on loopback (the test script
//! starts `moto_server`; `ROUTERO_TEST_S3_ENDPOINT`): a run that crashes after some
//! files is finished by the next sync and its manifest comes last, a rerun of the
//! hour writes nothing, and the objects read back through S3 to the exact totals.
#![cfg(feature = "object-store")]

use std::io::{Read, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use bytes::Bytes;
use chrono::NaiveDate;
use futures::TryStreamExt as _;
use routero_core::conformance::{a_month_of_events, apply_step};
use routero_core::memory::MemoryStore;
use routero_warehouse::{
    ObjectStoreSink, Sink, SinkError, SinkObject, WarehouseSync, newest_rollups, read_ndjson,
    read_parquet,
};
use rust_decimal::Decimal;

fn endpoint() -> Option<String> {
    match std::env::var("ROUTERO_TEST_S3_ENDPOINT") {
        Ok(url) => Some(url),
        Err(_) if std::env::var("ROUTERO_TEST_REQUIRE_SERVICES").is_ok_and(|v| v == "1") => {
            panic!("ROUTERO_TEST_S3_ENDPOINT is not set and services are required")
        }
        Err(_) => {
            eprintln!("skipped: ROUTERO_TEST_S3_ENDPOINT is not set (run scripts/test.sh)");
            None
        }
    }
}

/// Creates a bucket with a plain `PUT /{bucket}` (the test server takes it unsigned).
fn create_bucket(endpoint: &str, bucket: &str) {
    let host = endpoint.trim_start_matches("http://").trim_end_matches('/');
    let mut stream = std::net::TcpStream::connect(host).unwrap();
    write!(
        stream,
        "PUT /{bucket} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

/// A sink whose `n`th commit fails: the process stops after some files are out.
#[derive(Debug)]
struct CrashOnCommit {
    inner: ObjectStoreSink,
    n: usize,
    commits: Arc<AtomicUsize>,
}

struct Crashing {
    inner: Box<dyn SinkObject>,
    fail: bool,
}

#[async_trait]
impl Sink for CrashOnCommit {
    async fn create(&self, path: &str) -> Result<Box<dyn SinkObject>, SinkError> {
        let fail = self.commits.fetch_add(1, Ordering::SeqCst) + 1 == self.n;
        Ok(Box::new(Crashing {
            inner: self.inner.create(path).await?,
            fail,
        }))
    }
    async fn read(&self, path: &str) -> Result<Option<Bytes>, SinkError> {
        self.inner.read(path).await
    }
}

#[async_trait]
impl SinkObject for Crashing {
    async fn write(&mut self, chunk: Bytes) -> Result<(), SinkError> {
        self.inner.write(chunk).await
    }
    async fn commit(self: Box<Self>) -> Result<(), SinkError> {
        if self.fail {
            return Err(SinkError::new("the process stopped"));
        }
        self.inner.commit().await
    }
}

#[tokio::test]
async fn the_sync_lands_in_s3_once_and_reads_back_exactly() {
    let Some(endpoint) = endpoint() else { return };
    let bucket = format!("routero-{}", std::process::id());
    create_bucket(&endpoint, &bucket);
    let options = [
        ("aws_endpoint", endpoint.as_str()),
        ("aws_allow_http", "true"),
        ("aws_region", "us-east-1"),
        ("aws_access_key_id", "test"),
        ("aws_secret_access_key", "test"),
    ];
    let sink = ObjectStoreSink::from_url(&format!("s3://{bucket}/exports"), options).unwrap();

    let store = Arc::new(MemoryStore::new());
    let events = a_month_of_events();
    let (first, second) = events.split_at(events.len() / 2);
    apply_step(&*store, 1, first).await;
    apply_step(&*store, 2, second).await;
    let hour = NaiveDate::from_ymd_opt(2026, 12, 1)
        .unwrap()
        .and_hms_opt(10, 5, 0)
        .unwrap()
        .and_utc();

    // The first attempt stops on its third file: two are out, no manifest.
    let crashing = Arc::new(CrashOnCommit {
        inner: sink.clone(),
        n: 3,
        commits: Arc::new(AtomicUsize::new(0)),
    });
    let crashed = WarehouseSync::new(store.clone(), crashing, "warehouse")
        .unwrap()
        .sync(hour)
        .await;
    assert!(crashed.is_err(), "{crashed:?}");
    let list = |prefix: &'static str| {
        let sink = sink.clone();
        let bucket_prefix = object_store::path::Path::from(format!("exports/{prefix}"));
        async move {
            let mut listed: Vec<String> = sink
                .store()
                .list(Some(&bucket_prefix))
                .map_ok(|m| m.location.to_string())
                .try_collect()
                .await
                .unwrap();
            listed.sort();
            listed
        }
    };
    assert_eq!(list("warehouse").await.len(), 2, "two files, no manifest");
    assert!(list("warehouse/_runs").await.is_empty());

    // The next sync finishes the run: every file, then the manifest.
    let sync = WarehouseSync::new(store.clone(), Arc::new(sink.clone()), "warehouse").unwrap();
    let report = sync.sync(hour).await.unwrap();
    assert_eq!(report.runs.len(), 1);
    assert!(report.runs[0].resumed);
    let objects = list("warehouse").await;
    assert_eq!(
        objects,
        [
            "exports/warehouse/_runs/run-0000000001.json",
            "exports/warehouse/request_log/date=2026-12-01/hour=10/run-0000000001.ndjson",
            "exports/warehouse/request_log/date=2026-12-01/hour=10/run-0000000001.parquet",
            "exports/warehouse/rollups/date=2026-12-01/hour=10/run-0000000001.ndjson",
            "exports/warehouse/rollups/date=2026-12-01/hour=10/run-0000000001.parquet",
        ]
    );
    let manifest: serde_json::Value = serde_json::from_slice(
        &sink
            .read("warehouse/_runs/run-0000000001.json")
            .await
            .unwrap()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(manifest["run"], 1, "{manifest}");

    // A rerun of the hour writes nothing.
    let again = sync.sync(hour).await.unwrap();
    assert!(
        again.runs.is_empty() && again.already_done.is_some(),
        "{again:?}"
    );
    assert_eq!(list("warehouse").await, objects);

    // Read back through S3: the log's costs add up to the events' exactly, in both
    // formats; the newest rollup states too.
    let expected: Decimal = events.iter().filter_map(|e| e.cost()).sum();
    let total = |rows: &[serde_json::Map<String, serde_json::Value>]| -> Decimal {
        rows.iter()
            .filter_map(|r| r.get("cost").and_then(|c| c.as_str()))
            .map(|c| Decimal::from_str_exact(c).unwrap())
            .sum()
    };
    let get = |path: &str| {
        let sink = sink.clone();
        let path = path.to_owned();
        async move { sink.read(&path).await.unwrap().unwrap() }
    };
    let log = "warehouse/request_log/date=2026-12-01/hour=10/run-0000000001";
    let parquet = read_parquet(get(&format!("{log}.parquet")).await).unwrap();
    let ndjson = read_ndjson(&get(&format!("{log}.ndjson")).await).unwrap();
    assert_eq!(parquet.len(), events.len());
    assert_eq!(parquet, ndjson);
    assert_eq!(total(&parquet), expected);
    let rollups = "warehouse/rollups/date=2026-12-01/hour=10/run-0000000001";
    let rows = read_parquet(get(&format!("{rollups}.parquet")).await).unwrap();
    let newest: Vec<_> = newest_rollups(rows).into_values().collect();
    assert_eq!(total(&newest), expected);
}
