//! The pipeline: spend events from the request path to the system of record, exactly
//! once.
//!
//! [`spend`] (the request's context, its spend event, batches and daily rollups),
//! [`port`] (the queue, the leader elector, the store and its read side, the clock),
//! [`recorder`] and [`drainer`] with their metrics in [`telemetry`] and the
//! periodic jobs' [`schedule`] (feature `runtime`), [`quarantine`] (batches the
//! drain cannot apply), [`warehouse`] (the port the warehouse sync reads a store
//! through) and [`memory`] (the in-memory implementation of every port: the embedded
//! default and the adapters' oracle). It depends on the meter, and on billing only
//! where a drain step debits a wallet.

#[cfg(feature = "testing")]
pub mod conformance;
#[cfg(feature = "runtime")]
pub mod drainer;
pub mod memory;
pub mod port;
pub mod quarantine;
#[cfg(feature = "runtime")]
pub mod recorder;
#[cfg(feature = "runtime")]
pub mod schedule;
pub mod spend;
#[cfg(feature = "runtime")]
pub mod telemetry;
pub mod warehouse;
