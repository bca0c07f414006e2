//! How fast the recorder flushes spend into Redis.
//!
//! ```text
//! ROUTERO_REDIS_URL=redis://127.0.0.1:6379 cargo run --release --example redis-load -- [EVENTS]
//! ```
//!
//! Records EVENTS synthetic spend events (default 500,000) across 64 orgs as fast as
//! the recorder takes them, waits until every one is in Redis, and prints one JSON
//! line: events, milliseconds, events per second, batches, and refusals (the buffer
//! was full; the event was offered again). Uses its own key prefix unless
//! `ROUTERO_REDIS_PREFIX` names one (to be drained by coworkers), and deletes nothing.
//! Takes the other settings of `RedisConfig::from_env` (a `redis-cluster://` URL,
//! `ROUTERO_SHARDS`, `ROUTERO_REDIS_WAIT_REPLICAS`).

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use routero::conformance::sample_event;
use routero::recorder::{RecordError, Recorder, RecorderConfig};
use routero::redis::{Redis, RedisConfig};

#[tokio::main]
async fn main() -> ExitCode {
    let mut config = match RedisConfig::from_env() {
        Ok(Some(config)) => config,
        Ok(None) => {
            eprintln!("redis-load: set ROUTERO_REDIS_URL");
            return ExitCode::from(2);
        }
        Err(e) => {
            eprintln!("redis-load: {e}");
            return ExitCode::from(2);
        }
    };
    let events: u64 = std::env::args()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(500_000);
    config.prefix = std::env::var("ROUTERO_REDIS_PREFIX")
        .unwrap_or_else(|_| format!("load-{}", std::process::id()));
    let redis = match Redis::connect(config).await {
        Ok(redis) => redis,
        Err(e) => {
            eprintln!("redis-load: {e}");
            return ExitCode::FAILURE;
        }
    };
    let orgs: Vec<String> = (0..64).map(|i| format!("org-{i}")).collect();
    let template: Vec<_> = orgs
        .iter()
        .map(|org| sample_event(org, 1, "0.0012345"))
        .collect();
    let (recorder, handle) = Recorder::spawn(
        Arc::new(redis.queue()),
        RecorderConfig {
            buffer_capacity: 1 << 18,
            max_batch_events: 1_000,
            flush_interval: Duration::from_millis(20),
            ..RecorderConfig::default()
        },
    );
    let start = Instant::now();
    let mut refusals = 0u64;
    for i in 0..events {
        let mut event = template[usize::try_from(i % 64).unwrap_or(0)].clone();
        event.request_id = match format!("req-{i}").parse() {
            Ok(id) => id,
            Err(_) => return ExitCode::FAILURE,
        };
        let mut pending = event;
        loop {
            match recorder.record(pending) {
                Ok(()) => break,
                Err(RecordError::BufferFull(back)) => {
                    refusals += 1;
                    pending = *back;
                    tokio::task::yield_now().await;
                }
                Err(e) => {
                    eprintln!("redis-load: {e}");
                    return ExitCode::FAILURE;
                }
            }
        }
    }
    let counts = handle.shutdown().await;
    let micros = start.elapsed().as_micros().max(1);
    println!(
        "{{\"events\":{},\"millis\":{},\"events_per_second\":{},\"batches\":{},\"refusals\":{refusals}}}",
        counts.flushed_events,
        micros / 1_000,
        u128::from(counts.flushed_events) * 1_000_000 / micros,
        counts.flushed_batches
    );
    redis.quit().await;
    ExitCode::SUCCESS
}
