//! The recorder's contract: no allocation on the hot path, a full buffer hands the
//! event back, shutdown flushes everything and refuses what comes after.

use std::sync::Arc;
use std::time::Duration;

use routero_core::conformance::sample_event;
use routero_core::memory::MemoryQueue;
use routero_core::port::SpendQueue;
use routero_core::recorder::{RecordError, Recorder, RecorderConfig};
use routero_core::spend::ShardId;

#[tokio::test(flavor = "current_thread")]
async fn record_allocates_nothing_beyond_the_event() {
    let queue = Arc::new(MemoryQueue::new(4));
    let (recorder, handle) = Recorder::spawn(queue.clone(), RecorderConfig::default());
    let events: Vec<_> = (0..2_000)
        .map(|i| sample_event("alloc", i, "0.001"))
        .collect();
    let info = allocation_counter::measure(|| {
        for event in events {
            recorder.record(event).unwrap();
        }
    });
    // Dropping the emptied Vec frees its buffer: that is the only allocator call.
    assert_eq!(info.count_total, 0, "record allocated: {info:?}");
    let counts = handle.shutdown().await;
    assert_eq!(counts.flushed_events, 2_000);
}

#[tokio::test(flavor = "current_thread")]
async fn a_full_buffer_hands_the_event_back_and_shutdown_flushes() {
    let queue = Arc::new(MemoryQueue::new(1));
    let (recorder, handle) = Recorder::spawn(
        queue.clone(),
        RecorderConfig {
            buffer_capacity: 3,
            flush_interval: Duration::from_secs(3600),
            max_batch_events: 1_000,
            ..RecorderConfig::default()
        },
    );
    for i in 0..3 {
        recorder.record(sample_event("full", i, "0.5")).unwrap();
    }
    let refused = recorder.record(sample_event("full", 3, "0.5")).unwrap_err();
    assert!(matches!(refused, RecordError::BufferFull(_)));
    assert_eq!(
        refused.into_event(),
        sample_event("full", 3, "0.5"),
        "the event comes back"
    );
    let counts = handle.shutdown().await;
    assert_eq!(
        (counts.recorded, counts.refused, counts.flushed_events),
        (3, 1, 3)
    );
    let stored = queue.read_after(ShardId(0), None, 10).await.unwrap();
    assert_eq!(
        stored.iter().map(|b| b.batch.events.len()).sum::<usize>(),
        3
    );
    let late = recorder.record(sample_event("full", 4, "0.5")).unwrap_err();
    assert!(
        matches!(late, RecordError::Closed(_)),
        "after shutdown: {late:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_recording_loses_nothing_at_shutdown() {
    let queue = Arc::new(MemoryQueue::new(4));
    let (recorder, handle) = Recorder::spawn(queue.clone(), RecorderConfig::default());
    let tasks: Vec<_> = (0..4)
        .map(|t| {
            let recorder = recorder.clone();
            tokio::spawn(async move {
                let mut accepted = 0u64;
                for i in 0..5_000 {
                    if recorder
                        .record(sample_event(&format!("org-{t}"), i, "0.01"))
                        .is_ok()
                    {
                        accepted += 1;
                    }
                    if i % 500 == 0 {
                        tokio::task::yield_now().await;
                    }
                }
                accepted
            })
        })
        .collect();
    let stop_midway = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(1)).await;
        handle.shutdown().await
    });
    let mut accepted = 0;
    for task in tasks {
        accepted += task.await.unwrap();
    }
    let counts = stop_midway.await.unwrap();
    assert_eq!(counts.recorded, accepted);
    assert_eq!(
        counts.flushed_events, accepted,
        "every accepted event reached the queue"
    );
    let mut queued = 0;
    for shard in 0..4 {
        queued += queue
            .read_after(ShardId(shard), None, usize::MAX)
            .await
            .unwrap()
            .iter()
            .map(|b| b.batch.events.len() as u64)
            .sum::<u64>();
    }
    assert_eq!(queued, accepted);
}

/// `record_wait` is back-pressure: with a buffer of 3 and a flusher that only runs on
/// a full batch, 300 events recorded as fast as the caller can all land, none refused;
/// after shutdown it refuses with the event handed back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn record_wait_waits_for_room_instead_of_refusing() {
    let queue = Arc::new(MemoryQueue::new(1));
    let (recorder, handle) = Recorder::spawn(
        queue.clone(),
        RecorderConfig {
            buffer_capacity: 3,
            max_batch_events: 3,
            flush_interval: Duration::from_secs(3600),
            ..RecorderConfig::default()
        },
    );
    let callers: Vec<_> = (0..3u64)
        .map(|c| {
            let recorder = recorder.clone();
            tokio::spawn(async move {
                for i in 0..100 {
                    recorder
                        .record_wait(sample_event("wait", c * 1_000 + i, "0.25"))
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for caller in callers {
        tokio::time::timeout(Duration::from_secs(30), caller)
            .await
            .expect("every caller got room")
            .unwrap();
    }
    let counts = handle.shutdown().await;
    assert_eq!(
        (counts.recorded, counts.refused, counts.flushed_events),
        (300, 0, 300)
    );
    let late = recorder
        .record_wait(sample_event("wait", 9_999, "0.25"))
        .await
        .unwrap_err();
    assert!(matches!(late, RecordError::Closed(_)));
    assert_eq!(late.into_event(), sample_event("wait", 9_999, "0.25"));
}
