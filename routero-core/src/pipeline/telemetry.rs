//! The pipeline's metrics, through the [`metrics`] facade (feature `runtime`).
//!
//! The recorder and the drainer report what they do as counters and gauges; nothing
//! is collected until the embedding process installs a recorder of the facade (the
//! examples install `metrics-exporter-prometheus` and serve it on
//! `ROUTERO_METRICS_LISTEN`). Without one, each report is a no-op.
//!
//! | metric | kind | labels | what |
//! |---|---|---|---|
//! | `routero_recorder_events_recorded_total` | counter | | events accepted by `record` |
//! | `routero_recorder_events_handed_back_total` | counter | | events refused (buffer full or shut down) and handed back |
//! | `routero_recorder_events_flushed_total` | counter | | events the queue holds |
//! | `routero_recorder_batches_flushed_total` | counter | | batches the queue holds |
//! | `routero_recorder_flush_errors_total` | counter | | failed flush attempts (each retried) |
//! | `routero_drain_steps_total` | counter | `outcome` (`drained`, `replayed`, `idle`, `raced`, `fenced`, `error`) | drain steps |
//! | `routero_drain_batches_total`, `routero_drain_events_total` | counter | | batches and events applied |
//! | `routero_drain_cost_microunits_total` | counter | `currency` | priced cost applied, in millionths of the currency's unit (the exact sums are in the store) |
//! | `routero_shard_backlog` | gauge | `shard` | queue entries after the watermark, measured after each step |
//! | `routero_shard_lag_seconds` | gauge | `shard` | age of the oldest event not yet applied (0 when the shard is drained) |
//! | `routero_shard_held` | gauge | `shard` | 1 while this process holds the shard's lease |
//! | `routero_lease_acquired_total`, `routero_lease_lost_total`, `routero_lease_fenced_total` | counter | `shard` | leases taken, lost on renewal, and refused by the store's fencing |
//! | `routero_backend_errors_total` | counter | `op` (`lease`, `drain`, `flush`), `kind` | backend errors, each retried |
//! | `routero_quarantined_batches_total` | counter | `reason` | batches set aside |

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use rust_decimal::prelude::ToPrimitive;

use crate::port::{BackendError, ErrorKind};
use crate::quarantine::QuarantineReason;
use crate::recorder::RecorderCounts;
use crate::spend::{Pricing, ShardId, SpendEvent};

/// Describes every metric of this module to the installed recorder (its `# HELP`
/// lines); call once after installing one.
pub fn describe() {
    use metrics::{describe_counter, describe_gauge};
    describe_counter!(
        "routero_recorder_events_recorded_total",
        "Spend events accepted by the recorder."
    );
    describe_counter!(
        "routero_recorder_events_handed_back_total",
        "Spend events the recorder refused (buffer full or shut down) and handed back."
    );
    describe_counter!(
        "routero_recorder_events_flushed_total",
        "Spend events the queue holds."
    );
    describe_counter!(
        "routero_recorder_batches_flushed_total",
        "Spend batches the queue holds."
    );
    describe_counter!(
        "routero_recorder_flush_errors_total",
        "Failed flush attempts, each retried."
    );
    describe_counter!("routero_drain_steps_total", "Drain steps by outcome.");
    describe_counter!(
        "routero_drain_batches_total",
        "Batches applied to the store."
    );
    describe_counter!(
        "routero_drain_events_total",
        "Spend events applied to the store."
    );
    describe_counter!(
        "routero_drain_cost_microunits_total",
        "Priced cost applied, in millionths of the currency's unit."
    );
    describe_gauge!(
        "routero_shard_backlog",
        "Queue entries after the shard's watermark."
    );
    describe_gauge!(
        "routero_shard_lag_seconds",
        "Age of the shard's oldest spend not yet applied; 0 when drained."
    );
    describe_gauge!(
        "routero_shard_held",
        "1 while this process holds the shard's lease."
    );
    describe_counter!("routero_lease_acquired_total", "Leases taken.");
    describe_counter!("routero_lease_lost_total", "Leases lost on renewal.");
    describe_counter!(
        "routero_lease_fenced_total",
        "Steps refused because a newer leader wrote the shard."
    );
    describe_counter!(
        "routero_backend_errors_total",
        "Backend errors by operation and kind, each retried."
    );
    describe_counter!(
        "routero_quarantined_batches_total",
        "Batches set aside in the quarantine, by reason."
    );
}

/// The stable code of an error kind, as a label.
pub fn kind_label(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::Unavailable => "unavailable",
        ErrorKind::Timeout => "timeout",
        ErrorKind::Conflict => "conflict",
        ErrorKind::Corrupt => "corrupt",
        ErrorKind::Invalid => "invalid",
        ErrorKind::Other => "other",
    }
}

fn shard_label(shard: ShardId) -> String {
    shard.0.to_string()
}

/// The recorder's counters, as they stand.
pub(crate) fn recorder(counts: &RecorderCounts) {
    metrics::counter!("routero_recorder_events_recorded_total").absolute(counts.recorded);
    metrics::counter!("routero_recorder_events_handed_back_total").absolute(counts.refused);
    metrics::counter!("routero_recorder_events_flushed_total").absolute(counts.flushed_events);
    metrics::counter!("routero_recorder_batches_flushed_total").absolute(counts.flushed_batches);
    metrics::counter!("routero_recorder_flush_errors_total").absolute(counts.flush_errors);
}

/// A drain step's outcome.
pub(crate) fn step(outcome: &'static str) {
    metrics::counter!("routero_drain_steps_total", "outcome" => outcome).increment(1);
}

/// Events applied by a step: counts and priced cost per currency.
pub(crate) fn applied(batches: usize, events: &[SpendEvent]) {
    metrics::counter!("routero_drain_batches_total")
        .increment(u64::try_from(batches).unwrap_or(u64::MAX));
    metrics::counter!("routero_drain_events_total")
        .increment(u64::try_from(events.len()).unwrap_or(u64::MAX));
    let mut sums: Vec<(crate::Currency, Decimal)> = Vec::new();
    for event in events {
        if let Pricing::Priced { cost, currency, .. } = &event.pricing {
            match sums.iter_mut().find(|(c, _)| c == currency) {
                Some((_, sum)) => *sum = sum.saturating_add(*cost),
                None => sums.push((*currency, *cost)),
            }
        }
    }
    for (currency, sum) in sums {
        let micros = (sum * Decimal::from(1_000_000u32))
            .round()
            .to_u64()
            .unwrap_or(0);
        metrics::counter!("routero_drain_cost_microunits_total", "currency" => currency.to_string())
            .increment(micros);
    }
}

/// A shard's backlog (entries after its watermark).
pub(crate) fn backlog(shard: ShardId, entries: u64) {
    #[allow(clippy::cast_precision_loss)] // a gauge; exact up to 2^53 entries
    metrics::gauge!("routero_shard_backlog", "shard" => shard_label(shard)).set(entries as f64);
}

/// A shard's lag: the age of its oldest event not yet applied (`None`: drained).
pub(crate) fn lag(shard: ShardId, oldest: Option<DateTime<Utc>>, now: DateTime<Utc>) {
    let seconds = oldest.map_or(0.0, |t| {
        (now - t).to_std().map_or(0.0, |age| age.as_secs_f64())
    });
    metrics::gauge!("routero_shard_lag_seconds", "shard" => shard_label(shard)).set(seconds);
}

/// A lease taken.
pub(crate) fn lease_acquired(shard: ShardId) {
    metrics::counter!("routero_lease_acquired_total", "shard" => shard_label(shard)).increment(1);
    metrics::gauge!("routero_shard_held", "shard" => shard_label(shard)).set(1.0);
}

/// A lease lost on renewal.
pub(crate) fn lease_lost(shard: ShardId) {
    metrics::counter!("routero_lease_lost_total", "shard" => shard_label(shard)).increment(1);
    metrics::gauge!("routero_shard_held", "shard" => shard_label(shard)).set(0.0);
}

/// A lease released on the way out.
pub(crate) fn lease_released(shard: ShardId) {
    metrics::gauge!("routero_shard_held", "shard" => shard_label(shard)).set(0.0);
}

/// A shard of a previous layout drained to the end and retired: nobody holds it,
/// nor needs to (`routero_shard_retired` 1).
pub(crate) fn retired(shard: ShardId) {
    metrics::gauge!("routero_shard_held", "shard" => shard_label(shard)).set(0.0);
    metrics::gauge!("routero_shard_retired", "shard" => shard_label(shard)).set(1.0);
    metrics::gauge!("routero_shard_backlog", "shard" => shard_label(shard)).set(0.0);
    metrics::gauge!("routero_shard_lag_seconds", "shard" => shard_label(shard)).set(0.0);
}

/// The queue's shard layout version.
pub(crate) fn layout(layout: &crate::spend::ShardLayout) {
    metrics::gauge!("routero_shard_layout_version").set(f64::from(layout.version));
}

/// A step refused by the store's fencing: a newer leader wrote the shard.
pub(crate) fn fenced(shard: ShardId) {
    metrics::counter!("routero_lease_fenced_total", "shard" => shard_label(shard)).increment(1);
    metrics::gauge!("routero_shard_held", "shard" => shard_label(shard)).set(0.0);
}

/// A backend error met by `op` (and retried).
pub(crate) fn error(op: &'static str, error: &BackendError) {
    metrics::counter!("routero_backend_errors_total", "op" => op, "kind" => kind_label(error.kind()))
        .increment(1);
}

/// A batch set aside.
pub(crate) fn quarantined(reason: QuarantineReason) {
    metrics::counter!("routero_quarantined_batches_total", "reason" => reason.as_str())
        .increment(1);
}
