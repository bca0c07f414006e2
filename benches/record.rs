//! The recorder's hot path: `Recorder::record` of a prebuilt event while the
//! background task flushes into the in-memory queue.
//!
//! | bench | what it measures |
//! |---|---|
//! | `record/one_thread` | `record` from one thread, the flusher on another |

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use routero::conformance::sample_event;
use routero::memory::MemoryQueue;
use routero::port::SpendQueue;
use routero::recorder::{Recorder, RecorderConfig};

fn record(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("a runtime");
    let queue = Arc::new(MemoryQueue::new(4));
    let (recorder, handle) = runtime.block_on(async {
        Recorder::spawn(
            queue.clone(),
            RecorderConfig {
                buffer_capacity: 1 << 20,
                ..RecorderConfig::default()
            },
        )
    });
    let template = sample_event("bench-org", 1, "0.0123");
    let trim = {
        let queue = queue.clone();
        move || {
            // Keep the queue from growing without bound between samples.
            let queue = queue.clone();
            async move {
                for shard in queue.layout().current() {
                    let _ = queue
                        .trim_through(shard, routero::spend::QueuePosition::new(u64::MAX, 0))
                        .await;
                }
            }
        }
    };
    c.bench_function("record/one_thread", |b| {
        b.iter_custom(|iterations| {
            let events: Vec<_> = (0..iterations).map(|_| template.clone()).collect();
            let start = Instant::now();
            for event in events {
                // A refusal (buffer full) is measured too; the bench asserts none below.
                let _ = recorder.record(event);
            }
            let elapsed = start.elapsed();
            runtime.block_on(async {
                while recorder.stats().flushed_events < recorder.stats().recorded {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                trim().await;
            });
            elapsed
        })
    });
    let counts = runtime.block_on(handle.shutdown());
    assert_eq!(counts.refused, 0, "the buffer never filled: {counts:?}");
}

criterion_group!(benches, record);
criterion_main!(benches);
