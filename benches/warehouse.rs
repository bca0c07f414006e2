//! The warehouse sync: one run over 100,000 logged requests (and their rollups) from
//! the in-memory store, encoded as Parquet and NDJSON into a sink that drops the
//! bytes, so the figure is the scan and the encoders.
//!
//! | bench | what it measures |
//! |---|---|
//! | `warehouse/run_100k/parquet+ndjson` | a whole run, both formats |
//! | `warehouse/run_100k/parquet` | a whole run, Parquet only |

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use routero::conformance::{apply_first_step, sample_event};
use routero::memory::MemoryStore;
use routero::warehouse::{FileFormat, Sink, SinkError, SinkObject, WarehouseSync};

const EVENTS: u64 = 100_000;

#[derive(Debug)]
struct Discard;

struct Dropped;

#[async_trait]
impl Sink for Discard {
    async fn create(&self, _path: &str) -> Result<Box<dyn SinkObject>, SinkError> {
        Ok(Box::new(Dropped))
    }

    async fn read(&self, _path: &str) -> Result<Option<Bytes>, SinkError> {
        Ok(None)
    }
}

#[async_trait]
impl SinkObject for Dropped {
    async fn write(&mut self, chunk: Bytes) -> Result<(), SinkError> {
        std::hint::black_box(chunk);
        Ok(())
    }

    async fn commit(self: Box<Self>) -> Result<(), SinkError> {
        Ok(())
    }
}

fn warehouse(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let store = Arc::new(MemoryStore::new());
    let events: Vec<_> = (0..EVENTS)
        .map(|seq| sample_event(&format!("org-{}", seq % 7), seq, "0.000123456"))
        .collect();
    runtime.block_on(apply_first_step(&*store, &events, chrono::Utc::now()));

    // A new sink name each time starts from version 0: every row, every run.
    let next = AtomicU64::new(0);
    let mut group = c.benchmark_group("warehouse/run_100k");
    group.sample_size(10);
    group.throughput(Throughput::Elements(EVENTS));
    for (name, formats) in [
        (
            "parquet+ndjson",
            &[FileFormat::Parquet, FileFormat::Ndjson][..],
        ),
        ("parquet", &[FileFormat::Parquet][..]),
    ] {
        group.bench_function(name, |b| {
            b.iter(|| {
                let sink = format!("bench-{}", next.fetch_add(1, Ordering::Relaxed));
                let sync = WarehouseSync::new(store.clone(), Arc::new(Discard), &sink)
                    .expect("sink name")
                    .with_formats(formats);
                let report = runtime
                    .block_on(sync.sync(chrono::Utc::now()))
                    .expect("sync");
                assert_eq!(report.runs[0].rows.log, EVENTS);
            });
        });
    }
    group.finish();
}

criterion_group!(benches, warehouse);
criterion_main!(benches);
