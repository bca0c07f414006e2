//! The recorder's hot path: `Recorder::record` of a prebuilt event while the
//! background task flushes into the in-memory queue; and the Redis queue's wire
//! format, which every flush encodes and every drain decodes.
//!
//! | bench | what it measures |
//! |---|---|
//! | `record/one_thread` | `record` from one thread, the flusher on another |
//! | `queue_wire/encode_1000`, `queue_wire/decode_1000` | a batch of 1,000 events to and from the Redis queue's bytes (wire format v2), as a recorder's flush and a drain's read do |
//! | `queue_wire/decode_1000_v1_json` | the same batch as version 1 (JSON) wrote it, still read |

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
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

/// A flushed batch of one org, its teams, keys, users and customers varying as
/// `sample_event` varies them.
fn queue_wire(c: &mut Criterion) {
    use routero::redis::wire;
    use routero::spend::{BatchId, ShardId, SpendBatch};

    let batch = SpendBatch {
        id: BatchId::new(7, 1),
        shard: ShardId(3),
        events: (0..1_000)
            .map(|seq| sample_event("bench-org", seq, "0.000123456"))
            .collect(),
    };
    let bytes = wire::encode(&batch);
    // The same batch as version 1 (JSON) wrote it, which is still read.
    let v1 = serde_json::json!({
        "v": 1, "id": batch.id.as_str(), "shard": batch.shard.0,
        "events": batch.events.iter().map(|e| {
            let who = &e.attribution.who;
            let usage = e.usage.as_ref().expect("sample events have usage");
            serde_json::json!({
                "rid": e.request_id.as_str(), "t": e.event_time.timestamp_micros(),
                "org": who.org.as_str(), "ws": who.workspace.as_str(),
                "team": who.team.as_ref().map(|x| x.as_str()),
                "key": who.api_key.as_ref().map(|x| x.as_str()),
                "user": who.user.as_ref().map(|x| x.as_str()),
                "cust": who.customer.as_ref().map(|x| x.as_str()),
                "p": e.provider.as_str(), "m": e.model,
                "u": {"i": usage.input_tokens, "cr": usage.cache_read_tokens,
                      "cw5": usage.cache_write_5m_tokens, "cw1": usage.cache_write_1h_tokens,
                      "o": usage.output_tokens, "ai": 0, "ii": 0, "ao": 0, "io": 0, "ws": 0,
                      "img": 0, "ims": 0, "oms": 0, "tier": usage.service_tier.as_str()},
                "cost": e.cost().expect("priced").to_string(), "cur": "USD",
                "pv": "conformance", "pm": e.model,
                "mode": e.billing_mode.as_str(), "ok": true, "partial": false,
            })
        }).collect::<Vec<_>>(),
    })
    .to_string();
    assert_eq!(
        wire::decode(v1.as_bytes())
            .expect("a v1 batch")
            .events
            .len(),
        batch.events.len()
    );
    let mut group = c.benchmark_group("queue_wire");
    group.throughput(Throughput::Elements(1_000));
    group.bench_function("encode_1000", |b| {
        b.iter(|| wire::encode(std::hint::black_box(&batch)))
    });
    group.bench_function("decode_1000", |b| {
        b.iter(|| wire::decode(std::hint::black_box(&bytes)).expect("decodes"))
    });
    group.bench_function("decode_1000_v1_json", |b| {
        b.iter(|| wire::decode(std::hint::black_box(v1.as_bytes())).expect("decodes"))
    });
    group.finish();
}

criterion_group!(benches, record, queue_wire);
criterion_main!(benches);
