//! The ports the spend pipeline runs on: a queue, a leader elector, a store and its
//! read side. Adapters (Redis, PostgreSQL) implement them; [`crate::memory`] holds the
//! in-memory implementations that are the embedded default and the test oracle.
//!
//! The exactly-once protocol the ports serve:
//!
//! 1. A recorder appends batches to a shard of the [`SpendQueue`]. Each batch has a
//!    unique [`BatchId`](crate::spend::BatchId); appending an id twice stores it once,
//!    so a flush retried after a lost reply is no duplicate.
//! 2. A drainer takes the shard's lease from the [`LeaderElector`]; every acquisition
//!    carries a larger [`FencingToken`].
//! 3. It reads the shard's [`DrainState`] from the [`SpendStore`], the batches after
//!    its watermark from the queue, aggregates them, and asks the store to
//!    [`apply`](SpendStore::apply) them. In one transaction the store refuses a token
//!    older than the last one it saw, refuses a watermark that moved since it was
//!    read, recognises a batch range it already applied, and otherwise adds the
//!    rollups, logs the events and advances the watermark.
//! 4. Only then does the drainer trim the queue through the committed watermark. A
//!    crash anywhere replays from the store's watermark: nothing lost, nothing twice.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, Utc};

use crate::attribution::{
    ApiKeyId, BillingMode, CustomerId, Dimensions, OrgId, TeamId, UserId, WorkspaceId,
};
use crate::money::Currency;
use crate::provider::Provider;
use crate::quarantine::QuarantineApply;
use crate::spend::{
    QueuePosition, QueuedBatch, RollupTotals, Rollups, ShardId, ShardLayout, SpendBatch, SpendEvent,
};

/// The kind of a [`BackendError`], portable across backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The backend cannot be reached or refused the connection.
    Unavailable,
    /// The backend did not answer in time.
    Timeout,
    /// A conflicting concurrent write; retrying may succeed.
    Conflict,
    /// The backend holds data Routero cannot read (a corrupt entry, an unknown format).
    Corrupt,
    /// The request is invalid for the backend (a constraint, a bad argument).
    Invalid,
    /// Anything else.
    Other,
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(match self {
            ErrorKind::Unavailable => "backend unavailable",
            ErrorKind::Timeout => "backend timeout",
            ErrorKind::Conflict => "conflicting write",
            ErrorKind::Corrupt => "corrupt backend data",
            ErrorKind::Invalid => "invalid request",
            ErrorKind::Other => "backend error",
        })
    }
}

/// A classified error from a port's backend.
#[derive(Debug, thiserror::Error)]
#[error("{kind}: {message}")]
pub struct BackendError {
    kind: ErrorKind,
    message: String,
    #[source]
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl BackendError {
    /// An error of a kind.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> BackendError {
        BackendError {
            kind,
            message: message.into(),
            source: None,
        }
    }

    /// With the client error that caused it.
    pub fn with_source(
        mut self,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> BackendError {
        self.source = Some(Box::new(source));
        self
    }

    /// Its kind.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The queue entry that could not be decoded, when this error reports one
    /// ([`SpendQueue::read_after`]).
    pub fn unreadable(&self) -> Option<&UnreadableEntry> {
        let mut cause = std::error::Error::source(self);
        while let Some(error) = cause {
            if let Some(entry) = error.downcast_ref::<UnreadableEntry>() {
                return Some(entry);
            }
            cause = error.source();
        }
        None
    }

    /// Whether the same call may succeed later: the backend was unavailable, slow or
    /// busy with a conflicting write. Corrupt data and invalid requests are final.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self.kind,
            ErrorKind::Unavailable | ErrorKind::Timeout | ErrorKind::Conflict
        )
    }
}

/// A queue entry that cannot be decoded (a corrupt entry, or a wire format this build
/// does not know): its position and its bytes as stored, for the quarantine.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("entry {position} of shard {shard} cannot be decoded: {reason}")]
pub struct UnreadableEntry {
    /// Its shard.
    pub shard: ShardId,
    /// Its position.
    pub position: QueuePosition,
    /// Its bytes, as stored.
    pub raw: Vec<u8>,
    /// Why it cannot be decoded.
    pub reason: String,
}

impl UnreadableEntry {
    /// The [`ErrorKind::Corrupt`] error [`SpendQueue::read_after`] reports it with.
    pub fn into_error(self) -> BackendError {
        BackendError::new(ErrorKind::Corrupt, self.to_string()).with_source(self)
    }
}

impl BackendError {
    /// The [`ErrorKind::Invalid`] error for an append to a shard that is neither one
    /// of `layout`'s nor a sealed one of an earlier layout.
    pub fn unknown_shard(shard: ShardId, layout: &ShardLayout) -> BackendError {
        BackendError::new(
            ErrorKind::Invalid,
            format!("shard {shard} is not a shard of the queue's layout ({layout})"),
        )
    }
}

/// What appending a batch did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppendOutcome {
    /// Appended at this position.
    Appended(QueuePosition),
    /// A batch with this id was appended before: nothing was added.
    Duplicate,
    /// The batch's shard is sealed: a newer [`ShardLayout`] replaced its layout.
    /// Nothing was added; the events go again to their shards in the new layout
    /// ([`SpendQueue::refresh_layout`]), as new batches.
    Moved,
}

/// The durable spend queue, sharded.
#[async_trait]
pub trait SpendQueue: fmt::Debug + Send + Sync + 'static {
    /// The queue's shard layout as this handle last read it: where an org's spend
    /// goes, and which shards there are to drain.
    fn layout(&self) -> ShardLayout;

    /// Reads the layout again from the backend (another process may have changed
    /// it) and returns it; [`layout`](Self::layout) answers it from then on. A
    /// queue whose layout never changes answers [`layout`](Self::layout).
    async fn refresh_layout(&self) -> Result<ShardLayout, BackendError> {
        Ok(self.layout())
    }

    /// Retires a shard of the previous layout once it is sealed and empty (every
    /// entry applied and trimmed): `true` when it is retired (now or before), `false`
    /// when it still holds entries. When the last retiring shard goes, the layout
    /// forgets them and its own shards are drained from then on. A queue whose
    /// layout never changes has nothing to retire.
    async fn retire(&self, shard: ShardId) -> Result<bool, BackendError> {
        let _ = shard;
        Ok(false)
    }

    /// Appends a batch to its shard, unless a batch with the same id was appended
    /// before (within the backend's documented deduplication window), or the shard
    /// is sealed ([`AppendOutcome::Moved`]).
    async fn append(&self, batch: &SpendBatch) -> Result<AppendOutcome, BackendError>;

    /// Up to `limit` batches of a shard strictly after `after` (all when `None`),
    /// oldest first. The read stops before an entry that cannot be decoded; when that
    /// entry is the first after `after`, the answer is its [`UnreadableEntry`] (as
    /// [`UnreadableEntry::into_error`]), which the drainer sets aside in the
    /// quarantine with its bytes, so that the shard moves on.
    async fn read_after(
        &self,
        shard: ShardId,
        after: Option<QueuePosition>,
        limit: usize,
    ) -> Result<Vec<QueuedBatch>, BackendError>;

    /// Removes the batches of a shard at or before `through`. Only ever called with a
    /// watermark the store has committed.
    async fn trim_through(
        &self,
        shard: ShardId,
        through: QueuePosition,
    ) -> Result<(), BackendError>;

    /// How many entries the shard holds: those after the store's watermark, and the
    /// applied ones not trimmed yet (at most a drain step's, between its commit and
    /// its trim). The drainer reports it as the shard's backlog.
    async fn backlog(&self, shard: ShardId) -> Result<u64, BackendError>;
}

/// A token that grows with every lease acquisition: the store refuses writes carrying
/// a token older than one it has seen, which fences off a leader that lost its lease
/// while paused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FencingToken(pub u64);

/// A held lease on one shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// The shard.
    pub shard: ShardId,
    /// Who holds it.
    pub holder: Arc<str>,
    /// Its fencing token.
    pub token: FencingToken,
    /// How long it lasts without renewal.
    pub ttl: Duration,
}

/// Per-shard leader election with fencing tokens.
#[async_trait]
pub trait LeaderElector: fmt::Debug + Send + Sync + 'static {
    /// Takes the shard's lease for `holder` if nobody holds it; `None` if somebody does.
    async fn acquire(
        &self,
        shard: ShardId,
        holder: &str,
        ttl: Duration,
    ) -> Result<Option<Lease>, BackendError>;

    /// Extends a held lease by its ttl; `false` when it was lost (expired and taken, or
    /// released).
    async fn renew(&self, lease: &Lease) -> Result<bool, BackendError>;

    /// Gives a held lease up; releasing a lease already lost does nothing.
    async fn release(&self, lease: &Lease) -> Result<(), BackendError>;
}

/// A shard's drain state in the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DrainState {
    /// The position of the last batch applied, if any.
    pub watermark: Option<QueuePosition>,
    /// The newest fencing token that applied a batch.
    pub fencing_token: Option<FencingToken>,
}

impl DrainState {
    /// Why `apply` must not be committed over this state, checked in the protocol's
    /// order: a newer leader's token ([`ApplyOutcome::StaleLeader`]), a watermark at or
    /// past `through` ([`ApplyOutcome::AlreadyApplied`]), a watermark other than the
    /// one the drainer read ([`ApplyOutcome::WatermarkMoved`]). `None`: commit it. Every
    /// store runs this under its own lock or transaction.
    pub fn refuse(&self, apply: &DrainApply<'_>) -> Option<ApplyOutcome> {
        self.refuse_step(apply.token, apply.expected, apply.through)
    }

    /// [`refuse`](Self::refuse) for any step that advances the watermark (a drain
    /// step, or a batch set aside by [`SpendStore::quarantine`]).
    pub fn refuse_step(
        &self,
        token: FencingToken,
        expected: Option<QueuePosition>,
        through: QueuePosition,
    ) -> Option<ApplyOutcome> {
        if let Some(newest) = self.fencing_token.filter(|t| *t > token) {
            return Some(ApplyOutcome::StaleLeader { current: newest });
        }
        if self.watermark.is_some_and(|w| w >= through) {
            return Some(ApplyOutcome::AlreadyApplied);
        }
        if self.watermark != expected {
            return Some(ApplyOutcome::WatermarkMoved {
                current: self.watermark,
            });
        }
        None
    }
}

/// One drain step for [`SpendStore::apply`].
#[derive(Debug, Clone, Copy)]
pub struct DrainApply<'a> {
    /// The shard.
    pub shard: ShardId,
    /// The drainer's lease token.
    pub token: FencingToken,
    /// The watermark the drainer read before reading the queue.
    pub expected: Option<QueuePosition>,
    /// The position of the last batch included.
    pub through: QueuePosition,
    /// The batches' events, aggregated by key.
    pub rollups: &'a Rollups,
    /// The batches' events, for the request log and the unpriced record.
    pub events: &'a [SpendEvent],
    /// When the step runs: the time of the wallet debits it posts (the drainer's
    /// clock; events keep their own times in the rollups).
    pub at: chrono::DateTime<chrono::Utc>,
}

/// What [`SpendStore::apply`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApplyOutcome {
    /// Committed: rollups added, watermark advanced to `through`.
    Applied,
    /// The store's watermark is already at or past `through`: a replay, skipped.
    AlreadyApplied,
    /// A newer leader has written this shard: this drainer must stop.
    StaleLeader {
        /// The newest token the store has seen.
        current: FencingToken,
    },
    /// The watermark moved since it was read, not as far as `through`: read again.
    WatermarkMoved {
        /// The store's watermark now.
        current: Option<QueuePosition>,
    },
}

/// The system of record's write side.
#[async_trait]
pub trait SpendStore: fmt::Debug + Send + Sync + 'static {
    /// A shard's drain state.
    async fn drain_state(&self, shard: ShardId) -> Result<DrainState, BackendError>;

    /// Applies one drain step atomically (see [`ApplyOutcome`] for the checks).
    async fn apply(&self, apply: DrainApply<'_>) -> Result<ApplyOutcome, BackendError>;

    /// Sets one batch aside instead of applying it (see [`crate::quarantine`]): stores
    /// it in the quarantine and advances the watermark to its position, atomically,
    /// under the same checks as [`apply`](Self::apply).
    async fn quarantine(&self, batch: QuarantineApply<'_>) -> Result<ApplyOutcome, BackendError>;
}

/// Which rollup dimensions a read keeps apart; the others are summed over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[allow(clippy::struct_excessive_bools)]
pub struct GroupBy {
    /// Keep workspaces apart.
    pub workspace: bool,
    /// Keep teams apart.
    pub team: bool,
    /// Keep API keys apart.
    pub api_key: bool,
    /// Keep users apart.
    pub user: bool,
    /// Keep customers apart.
    pub customer: bool,
    /// Keep providers apart.
    pub provider: bool,
    /// Keep models apart.
    pub model: bool,
    /// Keep billing modes apart.
    pub billing_mode: bool,
}

impl GroupBy {
    /// Every dimension apart.
    pub const ALL: GroupBy = GroupBy {
        workspace: true,
        team: true,
        api_key: true,
        user: true,
        customer: true,
        provider: true,
        model: true,
        billing_mode: true,
    };

    /// Nothing apart: per day only (`GroupBy::none().team().model()` builds up).
    pub const fn none() -> GroupBy {
        GroupBy {
            workspace: false,
            team: false,
            api_key: false,
            user: false,
            customer: false,
            provider: false,
            model: false,
            billing_mode: false,
        }
    }

    /// Workspaces apart too.
    pub const fn workspace(mut self) -> GroupBy {
        self.workspace = true;
        self
    }

    /// Teams apart too.
    pub const fn team(mut self) -> GroupBy {
        self.team = true;
        self
    }

    /// API keys apart too.
    pub const fn api_key(mut self) -> GroupBy {
        self.api_key = true;
        self
    }

    /// Users apart too.
    pub const fn user(mut self) -> GroupBy {
        self.user = true;
        self
    }

    /// Customers apart too.
    pub const fn customer(mut self) -> GroupBy {
        self.customer = true;
        self
    }

    /// Providers apart too.
    pub const fn provider(mut self) -> GroupBy {
        self.provider = true;
        self
    }

    /// Models apart too.
    pub const fn model(mut self) -> GroupBy {
        self.model = true;
        self
    }

    /// Billing modes apart too.
    pub const fn billing_mode(mut self) -> GroupBy {
        self.billing_mode = true;
        self
    }
}

/// A read of daily rollups, always within one org.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RollupFilter {
    /// The org: no read crosses it.
    pub org: OrgId,
    /// Only these workspaces (`None`: all of the org's).
    pub workspaces: Option<Vec<WorkspaceId>>,
    /// The first day, inclusive.
    pub from: NaiveDate,
    /// The last day, inclusive.
    pub to: NaiveDate,
    /// Only these teams.
    pub teams: Option<Vec<TeamId>>,
    /// Only this API key.
    pub api_key: Option<ApiKeyId>,
    /// Only this user.
    pub user: Option<UserId>,
    /// Only these customers.
    pub customers: Option<Vec<CustomerId>>,
    /// Only this provider.
    pub provider: Option<Provider>,
    /// Only this model.
    pub model: Option<String>,
    /// Only this billing mode.
    pub billing_mode: Option<BillingMode>,
    /// Only spend in this currency (unpriced requests, which carry no money, pass any
    /// currency filter). Rows are always kept apart by currency.
    pub currency: Option<Currency>,
    /// The dimensions to keep apart (the day and the currency always are).
    pub group_by: GroupBy,
}

impl RollupFilter {
    /// Every rollup of an org over a date range, summed per day.
    pub fn new(org: OrgId, from: NaiveDate, to: NaiveDate) -> RollupFilter {
        RollupFilter {
            org,
            workspaces: None,
            from,
            to,
            teams: None,
            api_key: None,
            user: None,
            customers: None,
            provider: None,
            model: None,
            billing_mode: None,
            currency: None,
            group_by: GroupBy::default(),
        }
    }

    /// Only this workspace.
    pub fn workspace(mut self, workspace: WorkspaceId) -> RollupFilter {
        self.workspaces = Some(vec![workspace]);
        self
    }

    /// Only these workspaces.
    pub fn workspaces(mut self, workspaces: impl IntoIterator<Item = WorkspaceId>) -> RollupFilter {
        self.workspaces = Some(workspaces.into_iter().collect());
        self
    }

    /// Only these teams.
    pub fn teams(mut self, teams: impl IntoIterator<Item = TeamId>) -> RollupFilter {
        self.teams = Some(teams.into_iter().collect());
        self
    }

    /// Only this API key.
    pub fn api_key(mut self, key: ApiKeyId) -> RollupFilter {
        self.api_key = Some(key);
        self
    }

    /// Only this user.
    pub fn user(mut self, user: UserId) -> RollupFilter {
        self.user = Some(user);
        self
    }

    /// Only these customers.
    pub fn customers(mut self, customers: impl IntoIterator<Item = CustomerId>) -> RollupFilter {
        self.customers = Some(customers.into_iter().collect());
        self
    }

    /// Only this provider.
    pub fn provider(mut self, provider: Provider) -> RollupFilter {
        self.provider = Some(provider);
        self
    }

    /// Only this model.
    pub fn model(mut self, model: impl Into<String>) -> RollupFilter {
        self.model = Some(model.into());
        self
    }

    /// Only this billing mode.
    pub fn billing_mode(mut self, mode: BillingMode) -> RollupFilter {
        self.billing_mode = Some(mode);
        self
    }

    /// Only spend in this currency.
    pub fn currency(mut self, currency: Currency) -> RollupFilter {
        self.currency = Some(currency);
        self
    }

    /// Rows kept apart by these dimensions (see [`GroupBy`]'s builder).
    pub fn grouped_by(mut self, group_by: GroupBy) -> RollupFilter {
        self.group_by = group_by;
        self
    }

    /// Whether a rollup key passes the filter.
    pub fn matches(&self, key: &crate::spend::RollupKey) -> bool {
        fn equal<T: PartialEq>(want: &Option<T>, value: Option<&T>) -> bool {
            want.as_ref().is_none_or(|w| value == Some(w))
        }
        self.admits(&key.who)
            && key.day >= self.from
            && key.day <= self.to
            && equal(&self.provider, Some(&key.provider))
            && equal(&self.model, Some(&key.model))
            && equal(&self.billing_mode, Some(&key.billing_mode))
            && (self.currency.is_none() || key.currency.is_none() || key.currency == self.currency)
    }

    /// Whether the six dimensions of a spend pass the filter (its org, and the
    /// workspaces, teams, key, user and customers it names).
    pub fn admits(&self, who: &Dimensions) -> bool {
        fn within<T: PartialEq>(list: &Option<Vec<T>>, value: Option<&T>) -> bool {
            list.as_ref()
                .is_none_or(|l| value.is_some_and(|v| l.contains(v)))
        }
        fn equal<T: PartialEq>(want: &Option<T>, value: Option<&T>) -> bool {
            want.as_ref().is_none_or(|w| value == Some(w))
        }
        who.org == self.org
            && within(&self.workspaces, Some(&who.workspace))
            && within(&self.teams, who.team.as_ref())
            && equal(&self.api_key, who.api_key.as_ref())
            && equal(&self.user, who.user.as_ref())
            && within(&self.customers, who.customer.as_ref())
    }

    /// The row a key adds into under this filter's grouping.
    pub fn row_key(&self, key: &crate::spend::RollupKey) -> RollupRowKey {
        let (g, who) = (self.group_by, &key.who);
        RollupRowKey {
            day: key.day,
            workspace: g.workspace.then(|| who.workspace.clone()),
            team: if g.team { who.team.clone() } else { None },
            api_key: if g.api_key { who.api_key.clone() } else { None },
            user: if g.user { who.user.clone() } else { None },
            customer: if g.customer {
                who.customer.clone()
            } else {
                None
            },
            provider: g.provider.then(|| key.provider.clone()),
            model: g.model.then(|| key.model.clone()),
            billing_mode: g.billing_mode.then_some(key.billing_mode),
            currency: key.currency,
        }
    }
}

/// The dimensions of a rollup row: those grouped by; the others are `None` (as is a
/// grouped dimension an event did not have, such as a request with no team).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RollupRowKey {
    /// The UTC day.
    pub day: NaiveDate,
    /// The workspace.
    pub workspace: Option<WorkspaceId>,
    /// The team.
    pub team: Option<TeamId>,
    /// The API key.
    pub api_key: Option<ApiKeyId>,
    /// The user.
    pub user: Option<UserId>,
    /// The customer.
    pub customer: Option<CustomerId>,
    /// The provider.
    pub provider: Option<Provider>,
    /// The model.
    pub model: Option<String>,
    /// The billing mode.
    pub billing_mode: Option<BillingMode>,
    /// The currency of the row's cost (always kept apart; `None`: unpriced requests).
    pub currency: Option<Currency>,
}

/// One row of a rollup read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RollupRow {
    /// Its dimensions.
    pub key: RollupRowKey,
    /// Its sums.
    pub totals: RollupTotals,
}

/// The system of record's read side, which the analytics stand on.
#[async_trait]
pub trait SpendReader: fmt::Debug + Send + Sync + 'static {
    /// The rollups that pass the filter, grouped as it says, ordered by key.
    async fn rollups(&self, filter: &RollupFilter) -> Result<Vec<RollupRow>, BackendError>;
}

/// The time, for the parts of the pipeline that need one (lease expiry in memory).
pub trait Clock: fmt::Debug + Send + Sync + 'static {
    /// Now.
    fn now(&self) -> DateTime<Utc>;
}

/// The system's clock (feature `runtime`); tests use
/// [`ManualClock`](crate::memory::ManualClock).
#[cfg(feature = "runtime")]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SystemClock;

#[cfg(feature = "runtime")]
impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

macro_rules! forward_arc {
    ($trait:ident { $($body:tt)* }) => {
        #[async_trait]
        impl<T: $trait + ?Sized> $trait for Arc<T> {
            $($body)*
        }
    };
}

forward_arc!(SpendQueue {
    fn layout(&self) -> ShardLayout {
        (**self).layout()
    }
    async fn refresh_layout(&self) -> Result<ShardLayout, BackendError> {
        (**self).refresh_layout().await
    }
    async fn retire(&self, shard: ShardId) -> Result<bool, BackendError> {
        (**self).retire(shard).await
    }
    async fn append(&self, batch: &SpendBatch) -> Result<AppendOutcome, BackendError> {
        (**self).append(batch).await
    }
    async fn read_after(
        &self,
        shard: ShardId,
        after: Option<QueuePosition>,
        limit: usize,
    ) -> Result<Vec<QueuedBatch>, BackendError> {
        (**self).read_after(shard, after, limit).await
    }
    async fn trim_through(&self, shard: ShardId, through: QueuePosition) -> Result<(), BackendError> {
        (**self).trim_through(shard, through).await
    }
    async fn backlog(&self, shard: ShardId) -> Result<u64, BackendError> {
        (**self).backlog(shard).await
    }
});

forward_arc!(LeaderElector {
    async fn acquire(&self, shard: ShardId, holder: &str, ttl: Duration) -> Result<Option<Lease>, BackendError> {
        (**self).acquire(shard, holder, ttl).await
    }
    async fn renew(&self, lease: &Lease) -> Result<bool, BackendError> {
        (**self).renew(lease).await
    }
    async fn release(&self, lease: &Lease) -> Result<(), BackendError> {
        (**self).release(lease).await
    }
});

forward_arc!(SpendStore {
    async fn drain_state(&self, shard: ShardId) -> Result<DrainState, BackendError> {
        (**self).drain_state(shard).await
    }
    async fn apply(&self, apply: DrainApply<'_>) -> Result<ApplyOutcome, BackendError> {
        (**self).apply(apply).await
    }
    async fn quarantine(&self, batch: QuarantineApply<'_>) -> Result<ApplyOutcome, BackendError> {
        (**self).quarantine(batch).await
    }
});

forward_arc!(SpendReader {
    async fn rollups(&self, filter: &RollupFilter) -> Result<Vec<RollupRow>, BackendError> {
        (**self).rollups(filter).await
    }
});
