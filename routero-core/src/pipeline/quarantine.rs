//! Poison batches: a batch the drain cannot apply never stalls its shard.
//!
//! When applying a batch fails with an error retrying cannot mend (data the store
//! refuses, spend with no exchange rate for its day, a sum beyond the exact range),
//! the drainer applies the step's batches one at a time, and moves the one that fails
//! into the quarantine with [`SpendStore::quarantine`](crate::port::SpendStore::quarantine):
//! in the same atomic step that advances the shard's watermark past it, under the same
//! fencing and watermark checks as a drain step. The shard moves on; the batch keeps
//! every event and its typed reason.
//!
//! [`Quarantine::replay`] applies a quarantined batch once its cause is mended, exactly
//! once: the replay and the batch's release are one atomic step, so a second replay
//! (or a replay racing another) changes nothing. [`Quarantine::discard`] releases it
//! without applying it, with a reason. Nothing is ever deleted: released batches stay
//! listed with how and when they left.
//!
//! [`replay_waiting`] retries every batch that waits for an exchange rate; the
//! coworker runs it on a schedule, so spend priced in another currency than its
//! wallet's lands as soon as the day's rate is known.

use std::fmt;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::port::{BackendError, ErrorKind, FencingToken};
use crate::spend::{QueuePosition, ShardId, SpendBatch};
use crate::wallet::{DebitError, MissingRate};

/// Why a batch was set aside.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum QuarantineReason {
    /// Managed spend in another currency than its wallet's, with no rate for its day:
    /// it waits for the rate ([`replay_waiting`]).
    MissingExchangeRate,
    /// The store refused the batch's data (a constraint, a sum beyond range, an
    /// amount it cannot hold).
    Invalid,
    /// The batch could not be read.
    Corrupt,
    /// Any other error retrying does not mend.
    Other,
}

impl QuarantineReason {
    /// Every reason.
    pub const ALL: [QuarantineReason; 4] = [
        QuarantineReason::MissingExchangeRate,
        QuarantineReason::Invalid,
        QuarantineReason::Corrupt,
        QuarantineReason::Other,
    ];

    /// Its stable code.
    pub fn as_str(self) -> &'static str {
        match self {
            QuarantineReason::MissingExchangeRate => "missing_exchange_rate",
            QuarantineReason::Invalid => "invalid",
            QuarantineReason::Corrupt => "corrupt",
            QuarantineReason::Other => "other",
        }
    }

    /// Parses a code.
    pub fn parse(code: &str) -> Option<QuarantineReason> {
        QuarantineReason::ALL
            .into_iter()
            .find(|r| r.as_str() == code)
    }

    /// The reason of an error that made a batch unappliable.
    pub fn of(error: &BackendError) -> QuarantineReason {
        let mut source = std::error::Error::source(error);
        while let Some(cause) = source {
            if cause.downcast_ref::<MissingRate>().is_some()
                || matches!(
                    cause.downcast_ref::<DebitError>(),
                    Some(DebitError::MissingRate(_))
                )
            {
                return QuarantineReason::MissingExchangeRate;
            }
            source = cause.source();
        }
        match error.kind() {
            ErrorKind::Invalid => QuarantineReason::Invalid,
            ErrorKind::Corrupt => QuarantineReason::Corrupt,
            _ => QuarantineReason::Other,
        }
    }
}

impl fmt::Display for QuarantineReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// One batch set aside, for [`SpendStore::quarantine`](crate::port::SpendStore::quarantine).
#[derive(Debug, Clone, Copy)]
pub struct QuarantineApply<'a> {
    /// The shard.
    pub shard: ShardId,
    /// The drainer's lease token.
    pub token: FencingToken,
    /// The watermark the drainer read.
    pub expected: Option<QueuePosition>,
    /// The batch's position: the watermark advances to it.
    pub through: QueuePosition,
    /// The batch, every event of it (none for an entry that could not be decoded).
    pub batch: &'a SpendBatch,
    /// The entry's bytes as the queue stored them, when it could not be decoded.
    pub raw: Option<&'a [u8]>,
    /// Why.
    pub reason: QuarantineReason,
    /// The error, for a person.
    pub detail: &'a str,
    /// When.
    pub at: DateTime<Utc>,
}

/// Where a quarantined batch stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum QuarantineState {
    /// Waiting.
    Quarantined,
    /// Applied by a replay.
    Replayed {
        /// When.
        at: DateTime<Utc>,
    },
    /// Released without being applied.
    Discarded {
        /// When.
        at: DateTime<Utc>,
        /// Why, as the operator said (`release_reason` in JSON, beside the batch's
        /// own `reason`).
        #[serde(rename = "release_reason")]
        reason: String,
    },
}

/// A batch in the quarantine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct QuarantinedBatch {
    /// Its id in the quarantine (increasing).
    pub id: u64,
    /// The shard it came from.
    pub shard: ShardId,
    /// Its position in that shard.
    pub position: QueuePosition,
    /// The batch (empty for an entry that could not be decoded).
    pub batch: SpendBatch,
    /// The entry's bytes as the queue stored them, when it could not be decoded
    /// (base64 in JSON).
    #[serde(
        serialize_with = "base64_bytes",
        skip_serializing_if = "Option::is_none"
    )]
    pub raw: Option<Vec<u8>>,
    /// Why it was set aside.
    pub reason: QuarantineReason,
    /// The error, for a person.
    pub detail: String,
    /// When it was set aside.
    pub quarantined_at: DateTime<Utc>,
    /// Where it stands.
    #[serde(flatten)]
    pub state: QuarantineState,
}

fn base64_bytes<S: serde::Serializer>(raw: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
    use base64::Engine;
    match raw {
        Some(bytes) => s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(bytes)),
        None => s.serialize_none(),
    }
}

/// The error a replay of an undecodable entry answers: the store cannot read it either.
pub fn unreadable_replay(id: u64) -> BackendError {
    BackendError::new(
        ErrorKind::Invalid,
        format!(
            "quarantined entry {id} could not be decoded: it holds raw bytes, no events to \
             apply; discard it with a reason once its spend is accounted for"
        ),
    )
}

/// What a replay or a discard did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Release {
    /// Done now.
    Released,
    /// It had been released before (replayed or discarded): nothing changed.
    AlreadyReleased(QuarantineState),
    /// No quarantined batch has this id.
    NotFound,
}

/// The quarantine's admin side.
#[async_trait]
pub trait Quarantine: fmt::Debug + Send + Sync + 'static {
    /// Every batch ever quarantined, oldest first.
    async fn quarantined(&self) -> Result<Vec<QuarantinedBatch>, BackendError>;

    /// Applies a quarantined batch (its rollups, request log, unpriced record and
    /// wallet debits) and releases it, atomically and once. A batch that still cannot
    /// be applied stays quarantined and the error is returned.
    async fn replay(&self, id: u64, at: DateTime<Utc>) -> Result<Release, BackendError>;

    /// Releases a quarantined batch without applying it.
    async fn discard(
        &self,
        id: u64,
        reason: &str,
        at: DateTime<Utc>,
    ) -> Result<Release, BackendError>;
}

/// What [`replay_waiting`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Waiting {
    /// Batches replayed now.
    pub replayed: usize,
    /// Batches still waiting for a rate.
    pub waiting: usize,
}

/// Replays every batch that waits for an exchange rate; one whose rate is still
/// missing keeps waiting. Any other error stops the pass.
pub async fn replay_waiting<Q: Quarantine + ?Sized>(
    store: &Q,
    at: DateTime<Utc>,
) -> Result<Waiting, BackendError> {
    let mut out = Waiting::default();
    for batch in store.quarantined().await? {
        if batch.state != QuarantineState::Quarantined
            || batch.reason != QuarantineReason::MissingExchangeRate
        {
            continue;
        }
        match store.replay(batch.id, at).await {
            Ok(Release::Released) => out.replayed += 1,
            Ok(_) => {}
            Err(e) if QuarantineReason::of(&e) == QuarantineReason::MissingExchangeRate => {
                out.waiting += 1;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}
