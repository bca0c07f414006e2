//! The recorder: the handle a gateway calls once per request.
//!
//! [`Recorder::record`] never blocks, never does I/O and allocates nothing: it moves the
//! event into a bounded, preallocated lock-free buffer and returns. A background task takes events out, groups
//! them per shard (an org's events always go to the same shard, in order), and
//! flushes a batch per shard when it holds `max_batch_events` events or every
//! `flush_interval`. Each batch has a unique [`BatchId`]; a flush that fails is
//! retried with the same id and exponential backoff, so a retry after a lost reply is
//! not a duplicate.
//!
//! **When the buffer is full** (the queue is down or slower than the traffic for
//! longer than the buffer lasts), `record` refuses the event with
//! [`RecordError::BufferFull`], handing it back: the gateway decides what to do with
//! it (log it, deny further requests with the spend control). Nothing is dropped
//! silently, and the refusals are counted. A caller that prefers back-pressure calls
//! [`Recorder::record_wait`] instead, which waits until the flusher makes room.
//!
//! **The loss window on a hard crash** (kill -9, power loss) is what the buffer holds
//! and has not flushed: at most `flush_interval` of traffic while the queue is up, up
//! to `buffer_capacity` events while it is down. A graceful
//! [`RecorderHandle::shutdown`] flushes everything first.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use crossbeam_queue::ArrayQueue;
use tokio::sync::{Notify, oneshot};
use tokio::task::JoinHandle;

use crate::port::{AppendOutcome, SpendQueue};
use crate::spend::{BatchId, ShardId, ShardLayout, SpendBatch, SpendEvent};

/// How a recorder buffers and flushes.
#[derive(Debug, Clone)]
pub struct RecorderConfig {
    /// The most events buffered before `record` refuses.
    pub buffer_capacity: usize,
    /// The most events in one batch.
    pub max_batch_events: usize,
    /// How often buffered events are flushed.
    pub flush_interval: Duration,
    /// The first pause after a failed flush; doubled up to `max_backoff`.
    pub initial_backoff: Duration,
    /// The longest pause between flush retries.
    pub max_backoff: Duration,
}

impl Default for RecorderConfig {
    /// 65,536 buffered events, batches of up to 1,000, flushed every 50 ms, retried
    /// from 20 ms to 2 s.
    fn default() -> Self {
        RecorderConfig {
            buffer_capacity: 65_536,
            max_batch_events: 1_000,
            flush_interval: Duration::from_millis(50),
            initial_backoff: Duration::from_millis(20),
            max_backoff: Duration::from_secs(2),
        }
    }
}

/// Why an event was not recorded; it is handed back.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RecordError {
    /// The buffer is full: the queue has not kept up.
    #[error("the spend buffer is full; the event was not recorded")]
    BufferFull(Box<SpendEvent>),
    /// The recorder was shut down.
    #[error("the recorder is shut down; the event was not recorded")]
    Closed(Box<SpendEvent>),
}

impl RecordError {
    /// The event that was not recorded.
    pub fn into_event(self) -> SpendEvent {
        match self {
            RecordError::BufferFull(event) | RecordError::Closed(event) => *event,
        }
    }
}

/// Counters of a recorder, readable at any time.
#[derive(Debug, Default)]
pub struct RecorderStats {
    recorded: AtomicU64,
    refused: AtomicU64,
    flushed_events: AtomicU64,
    flushed_batches: AtomicU64,
    duplicate_batches: AtomicU64,
    flush_errors: AtomicU64,
}

/// A snapshot of [`RecorderStats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RecorderCounts {
    /// Events accepted by `record`.
    pub recorded: u64,
    /// Events refused (buffer full or shut down).
    pub refused: u64,
    /// Events the queue holds.
    pub flushed_events: u64,
    /// Batches the queue holds.
    pub flushed_batches: u64,
    /// Retried flushes the queue recognised as already appended.
    pub duplicate_batches: u64,
    /// Failed flush attempts (each retried).
    pub flush_errors: u64,
}

impl RecorderStats {
    /// The counters now.
    pub fn counts(&self) -> RecorderCounts {
        RecorderCounts {
            recorded: self.recorded.load(Ordering::Relaxed),
            refused: self.refused.load(Ordering::Relaxed),
            flushed_events: self.flushed_events.load(Ordering::Relaxed),
            flushed_batches: self.flushed_batches.load(Ordering::Relaxed),
            duplicate_batches: self.duplicate_batches.load(Ordering::Relaxed),
            flush_errors: self.flush_errors.load(Ordering::Relaxed),
        }
    }
}

/// What the handles and the background task share.
#[derive(Debug)]
struct Shared {
    buffer: ArrayQueue<SpendEvent>,
    /// Wakes the task when a batch's worth is buffered.
    full_batch: Notify,
    /// Wakes `record_wait` callers when the task has emptied the buffer (or stopped).
    room: Notify,
    /// Set once at shutdown; `record` refuses from then on.
    closed: AtomicBool,
    /// `record` calls between their `closed` check and their push: shutdown waits for
    /// them, so no event is accepted after the final drain.
    in_flight: AtomicUsize,
    batch_events: usize,
    stats: RecorderStats,
}

/// The per-request handle; cheap to clone and share across tasks.
#[derive(Debug, Clone)]
pub struct Recorder {
    shared: Arc<Shared>,
}

/// Owns the recorder's background task.
#[derive(Debug)]
pub struct RecorderHandle {
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
    shared: Arc<Shared>,
}

impl Recorder {
    /// Starts a recorder flushing into `queue`. Must be called inside a tokio runtime.
    pub fn spawn(queue: Arc<dyn SpendQueue>, config: RecorderConfig) -> (Recorder, RecorderHandle) {
        let shared = Arc::new(Shared {
            buffer: ArrayQueue::new(config.buffer_capacity.max(1)),
            full_batch: Notify::new(),
            room: Notify::new(),
            closed: AtomicBool::new(false),
            in_flight: AtomicUsize::new(0),
            batch_events: config.max_batch_events.max(1),
            stats: RecorderStats::default(),
        });
        let (stop, stopped) = oneshot::channel();
        let flusher = Flusher {
            queue,
            config,
            instance: uuid::Uuid::new_v4().as_u128(),
            seq: 0,
            pending: HashMap::new(),
            shared: Arc::clone(&shared),
        };
        let task = tokio::spawn(flusher.run(stopped));
        (
            Recorder {
                shared: Arc::clone(&shared),
            },
            RecorderHandle { stop, task, shared },
        )
    }

    /// Records a request's spend: never blocks, never does I/O, allocates nothing. A
    /// full buffer hands the event back ([`RecordError::BufferFull`]).
    pub fn record(&self, event: SpendEvent) -> Result<(), RecordError> {
        let result = self.push(event);
        if result.is_err() {
            self.shared.stats.refused.fetch_add(1, Ordering::Relaxed);
        }
        result
    }

    /// Records a request's spend, waiting while the buffer is full until the flusher
    /// makes room (back-pressure) rather than handing the event back. Refuses only
    /// once the recorder is shut down ([`RecordError::Closed`]).
    pub async fn record_wait(&self, mut event: SpendEvent) -> Result<(), RecordError> {
        loop {
            // Registered before trying, so a wake-up between the try and the wait is
            // not missed.
            let room = self.shared.room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            match self.push(event) {
                Err(RecordError::BufferFull(back)) => {
                    event = *back;
                    room.await;
                }
                Err(closed) => {
                    self.shared.stats.refused.fetch_add(1, Ordering::Relaxed);
                    return Err(closed);
                }
                Ok(()) => return Ok(()),
            }
        }
    }

    /// Moves the event into the buffer, counting it when accepted.
    fn push(&self, event: SpendEvent) -> Result<(), RecordError> {
        let shared = &*self.shared;
        shared.in_flight.fetch_add(1, Ordering::SeqCst);
        let result = if shared.closed.load(Ordering::SeqCst) {
            Err(RecordError::Closed(Box::new(event)))
        } else {
            shared
                .buffer
                .push(event)
                .map_err(|event| RecordError::BufferFull(Box::new(event)))
        };
        shared.in_flight.fetch_sub(1, Ordering::SeqCst);
        if result.is_ok() {
            shared.stats.recorded.fetch_add(1, Ordering::Relaxed);
            if shared.buffer.len().is_multiple_of(shared.batch_events) {
                shared.full_batch.notify_one();
            }
        }
        result
    }

    /// The recorder's counters.
    pub fn stats(&self) -> RecorderCounts {
        self.shared.stats.counts()
    }
}

impl RecorderHandle {
    /// Stops taking events, flushes everything buffered (retrying until the queue
    /// takes it), and returns the final counters.
    pub async fn shutdown(self) -> RecorderCounts {
        let _ = self.stop.send(());
        if let Err(e) = self.task.await {
            tracing::error!(error = %e, "the recorder task failed");
        }
        self.shared.stats.counts()
    }

    /// The recorder's counters.
    pub fn stats(&self) -> RecorderCounts {
        self.shared.stats.counts()
    }
}

struct Flusher {
    queue: Arc<dyn SpendQueue>,
    config: RecorderConfig,
    instance: u128,
    seq: u64,
    pending: HashMap<ShardId, Vec<SpendEvent>>,
    shared: Arc<Shared>,
}

impl Flusher {
    async fn run(mut self, mut stop: oneshot::Receiver<()>) {
        let mut tick = tokio::time::interval(self.config.flush_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = self.shared.full_batch.notified() => {}
                _ = tick.tick() => {}
                _ = &mut stop => break,
            }
            self.take_buffered();
            self.flush_all().await;
            crate::telemetry::recorder(&self.shared.stats.counts());
        }
        // Refuse new events, wait for the calls already past the check, take the rest.
        self.shared.closed.store(true, Ordering::SeqCst);
        self.shared.room.notify_waiters();
        while self.shared.in_flight.load(Ordering::SeqCst) > 0 {
            std::hint::spin_loop();
        }
        self.take_buffered();
        self.flush_all().await;
        crate::telemetry::recorder(&self.shared.stats.counts());
    }

    /// Moves every buffered event to its shard's pending batch.
    fn take_buffered(&mut self) {
        let layout = self.queue.layout();
        while let Some(event) = self.shared.buffer.pop() {
            let shard = layout.shard_for(&event.attribution.who.org);
            self.pending.entry(shard).or_default().push(event);
        }
        self.shared.room.notify_waiters();
    }

    /// Flushes every pending batch, those routed again by a layout change included.
    async fn flush_all(&mut self) {
        while let Some(shard) = self.pending.keys().next().copied() {
            self.flush(shard).await;
        }
    }

    /// Flushes a shard's pending events in batches, each retried until the queue
    /// takes it. Events the queue answers [`AppendOutcome::Moved`] for go back to
    /// the pending batches of their shards in the new layout.
    async fn flush(&mut self, shard: ShardId) {
        let Some(mut events) = self.pending.remove(&shard) else {
            return;
        };
        while !events.is_empty() {
            let rest = events.split_off(events.len().min(self.config.max_batch_events));
            self.seq += 1;
            let batch = SpendBatch {
                id: BatchId::new(self.instance, self.seq),
                shard,
                events,
            };
            if !self.append_until_taken(&batch).await {
                let layout = self.refresh_layout().await;
                if layout.is_current(shard) {
                    // Sealed, yet the layout says it is current: a backend that lost
                    // its layout record. Keep the spend and try again later.
                    tracing::error!(shard = shard.0, %layout, "the queue refuses a shard of its own layout as sealed; retrying");
                    tokio::time::sleep(self.config.max_backoff).await;
                } else {
                    tracing::info!(shard = shard.0, %layout, "shard sealed by a new layout; spend routed again");
                }
                for event in batch.events.into_iter().chain(rest) {
                    let shard = layout.shard_for(&event.attribution.who.org);
                    self.pending.entry(shard).or_default().push(event);
                }
                return;
            }
            events = rest;
        }
    }

    /// The queue's layout read again, retried until the backend answers.
    async fn refresh_layout(&self) -> ShardLayout {
        let mut backoff = self.config.initial_backoff;
        loop {
            match self.queue.refresh_layout().await {
                Ok(layout) => return layout,
                Err(e) => {
                    crate::telemetry::error("layout", &e);
                    tracing::warn!(error = %e, "reading the shard layout failed; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(self.config.max_backoff);
                }
            }
        }
    }

    /// Appends a batch, retrying until the queue takes it (`true`) or answers that
    /// its shard is sealed (`false`).
    async fn append_until_taken(&self, batch: &SpendBatch) -> bool {
        let mut backoff = self.config.initial_backoff;
        loop {
            match self.queue.append(batch).await {
                Ok(AppendOutcome::Moved) => return false,
                Ok(outcome) => {
                    if outcome == AppendOutcome::Duplicate {
                        self.shared
                            .stats
                            .duplicate_batches
                            .fetch_add(1, Ordering::Relaxed);
                    }
                    let events = u64::try_from(batch.events.len()).unwrap_or(u64::MAX);
                    self.shared
                        .stats
                        .flushed_events
                        .fetch_add(events, Ordering::Relaxed);
                    self.shared
                        .stats
                        .flushed_batches
                        .fetch_add(1, Ordering::Relaxed);
                    return true;
                }
                Err(e) => {
                    self.shared
                        .stats
                        .flush_errors
                        .fetch_add(1, Ordering::Relaxed);
                    crate::telemetry::error("flush", &e);
                    if e.is_retryable() {
                        tracing::warn!(batch = %batch.id, error = %e, "spend flush failed; retrying");
                    } else {
                        tracing::error!(batch = %batch.id, error = %e, "spend flush refused; retrying, spend is kept");
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(self.config.max_backoff);
                }
            }
        }
    }
}
