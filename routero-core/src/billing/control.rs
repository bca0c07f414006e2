//! Spend controls: may this request spend?
//!
//! Before forwarding a request, a gateway [`reserve`](SpendControl::reserve)s an
//! estimate of its maximum cost (see [`max_cost`]) against the workspace's managed
//! wallet and against every budget of the request's API key, team and customer. The
//! reservation is denied when it does not fit. When the response is priced the
//! gateway [`settle`](SpendControl::settle)s it to the actual cost; when the request
//! fails or times out it [`release`](SpendControl::release)s it.
//!
//! **The wallet check** uses what the ledger says and what it does not know yet:
//! `available = balance − (settled − debited) − reserved`, where `balance` and
//! `debited` (the ledger's cumulative usage debits) come from
//! [`refresh_wallet`](SpendControl::refresh_wallet), `settled` is the cumulative
//! managed spend settled here, and `reserved` the outstanding reservations. So spend
//! recorded but not yet drained counts against the balance. BYOK requests are checked
//! against budgets only.
//!
//! **The bound.** Reservations are taken atomically, so concurrent requests together
//! never reserve more than is available. A request can overspend only by what its
//! actual cost exceeds its estimate; with estimates from [`max_cost`] (the whole
//! prompt at the dearest input rate, `max_tokens` of output) that is zero unless a
//! provider bills beyond `max_tokens` or fees the estimate could not know (tool calls).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Datelike, Duration, NaiveDate, Utc};
use rust_decimal::Decimal;

use crate::attribution::{Attribution, BillingMode, WorkspaceId};
use crate::cost::CostError;
use crate::port::BackendError;
use crate::price::PriceTable;
use crate::provider::Provider;
use crate::usage::Usage;

/// A budget's period.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Period {
    /// A UTC day.
    Day,
    /// An ISO week (Monday to Sunday, UTC).
    Week,
    /// A calendar month (UTC).
    Month,
}

impl Period {
    /// The first day of the period `at` falls in.
    pub fn start(self, at: DateTime<Utc>) -> NaiveDate {
        let day = at.date_naive();
        match self {
            Period::Day => day,
            Period::Week => day - Duration::days(i64::from(day.weekday().num_days_from_monday())),
            Period::Month => day.with_day(1).unwrap_or(day),
        }
    }
}

/// Whose spend a budget limits.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum BudgetScope {
    /// An API key.
    ApiKey(crate::attribution::ApiKeyId),
    /// A team.
    Team(crate::attribution::TeamId),
    /// An end customer.
    Customer(crate::attribution::CustomerId),
}

impl BudgetScope {
    /// Whether the budget limits this attribution's spend.
    pub fn applies_to(&self, a: &Attribution) -> bool {
        match self {
            BudgetScope::ApiKey(k) => a.who.api_key.as_ref() == Some(k),
            BudgetScope::Team(t) => a.who.team.as_ref() == Some(t),
            BudgetScope::Customer(c) => a.who.customer.as_ref() == Some(c),
        }
    }
}

impl std::fmt::Display for BudgetScope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BudgetScope::ApiKey(k) => write!(f, "api key {k}"),
            BudgetScope::Team(t) => write!(f, "team {t}"),
            BudgetScope::Customer(c) => write!(f, "customer {c}"),
        }
    }
}

/// An amount a scope may spend per period.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Budget {
    /// Whose spend.
    pub scope: BudgetScope,
    /// Per what.
    pub period: Period,
    /// How much.
    pub limit: Decimal,
}

/// A request asking to spend.
#[derive(Debug, Clone, Copy)]
pub struct SpendRequest<'a> {
    /// Who.
    pub attribution: &'a Attribution,
    /// Managed (wallet-checked) or BYOK.
    pub billing_mode: BillingMode,
    /// The estimated maximum cost.
    pub estimate: Decimal,
    /// When.
    pub at: DateTime<Utc>,
}

/// Why a request may not spend.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Denial {
    /// The managed wallet cannot cover the estimate.
    #[error("the wallet has {available} available, the request may cost up to {estimate}")]
    WalletExhausted {
        /// What the wallet has available.
        available: Decimal,
        /// The estimate.
        estimate: Decimal,
    },
    /// A budget would be exceeded.
    #[error(
        "the {scope} budget of {limit} per {period:?} has {committed} committed; the request may cost up to {estimate}"
    )]
    BudgetExceeded {
        /// Whose budget.
        scope: String,
        /// Its period.
        period: Period,
        /// Its limit.
        limit: Decimal,
        /// Spent and reserved in the period.
        committed: Decimal,
        /// The estimate.
        estimate: Decimal,
    },
}

/// A held reservation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reservation {
    /// Its id.
    pub id: u64,
    /// The org.
    pub org: crate::attribution::OrgId,
    /// The workspace.
    pub workspace: WorkspaceId,
    /// The billing mode.
    pub billing_mode: BillingMode,
    /// The amount reserved.
    pub amount: Decimal,
    /// The budget counters it holds.
    pub budgets: Vec<BudgetCounter>,
}

impl Reservation {
    /// The budget counters of `budgets` that apply to a request.
    pub fn counters(
        request: &SpendRequest<'_>,
        budgets: &[Budget],
    ) -> Vec<(Budget, BudgetCounter)> {
        budgets
            .iter()
            .filter(|b| b.scope.applies_to(request.attribution))
            .map(|b| {
                (
                    b.clone(),
                    BudgetCounter {
                        scope: b.scope.clone(),
                        period: b.period,
                        start: b.period.start(request.at),
                    },
                )
            })
            .collect()
    }
}

/// The answer to a reservation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Go ahead; settle or release the reservation afterwards.
    Allowed(Reservation),
    /// Do not forward the request.
    Denied(Denial),
}

/// The spend-control port.
#[async_trait::async_trait]
pub trait SpendControl: std::fmt::Debug + Send + Sync + 'static {
    /// Reserves `request.estimate` if the wallet (managed requests) and every applying
    /// budget can take it.
    async fn reserve(
        &self,
        request: &SpendRequest<'_>,
        budgets: &[Budget],
    ) -> Result<Decision, BackendError>;

    /// Replaces a reservation by the actual cost.
    async fn settle(&self, reservation: &Reservation, actual: Decimal) -> Result<(), BackendError>;

    /// Gives a reservation back (the request failed or timed out).
    async fn release(&self, reservation: &Reservation) -> Result<(), BackendError>;

    /// Tells the control what the wallet's ledger says: its balance and its
    /// cumulative usage debits.
    async fn refresh_wallet(
        &self,
        org: &crate::attribution::OrgId,
        workspace: &WorkspaceId,
        balance: Decimal,
        debited: Decimal,
    ) -> Result<(), BackendError>;
}

/// The maximum cost of a request before it is sent: the whole prompt at the dearest
/// of the input and cache-write rates, and `max_tokens` of output.
pub fn max_cost(
    prices: &PriceTable,
    provider: &Provider,
    model: &str,
    prompt_tokens: u64,
    max_tokens: u64,
    at: DateTime<Utc>,
) -> Result<Decimal, CostError> {
    let as_input = prices.cost(
        provider,
        model,
        &Usage::tokens(prompt_tokens, max_tokens),
        at,
    )?;
    let mut as_writes = Usage::tokens(0, max_tokens);
    as_writes.cache_write_1h_tokens = prompt_tokens;
    let writes = prices
        .cost(provider, model, &as_writes, at)
        .map(|c| c.total())
        .unwrap_or(Decimal::ZERO);
    Ok(as_input.total().max(writes))
}

/// One budget's counter: a scope, a period and the period's first day.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BudgetCounter {
    /// Whose spend.
    pub scope: BudgetScope,
    /// The period.
    pub period: Period,
    /// The period's first day.
    pub start: NaiveDate,
}

#[derive(Debug, Default, Clone, Copy)]
struct Counter {
    spent: Decimal,
    reserved: Decimal,
}

#[derive(Debug, Default, Clone, Copy)]
struct WalletView {
    balance: Decimal,
    debited: Decimal,
    settled: Decimal,
    reserved: Decimal,
}

impl WalletView {
    fn available(&self) -> Decimal {
        self.balance - (self.settled - self.debited) - self.reserved
    }
}

#[derive(Debug, Default)]
struct ControlState {
    wallets: HashMap<WorkspaceId, WalletView>,
    counters: HashMap<BudgetCounter, Counter>,
    next: u64,
}

/// Spend controls in one process: the embedded default. (Replicas share controls
/// through a shared store instead.)
#[derive(Debug, Default, Clone)]
pub struct MemoryControl {
    state: Arc<Mutex<ControlState>>,
}

impl MemoryControl {
    /// No wallets known, no counters.
    pub fn new() -> MemoryControl {
        MemoryControl::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ControlState> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// What a managed request could reserve now.
    pub fn available(&self, workspace: &WorkspaceId) -> Decimal {
        self.lock()
            .wallets
            .get(workspace)
            .map(WalletView::available)
            .unwrap_or_default()
    }
}

#[async_trait::async_trait]
impl SpendControl for MemoryControl {
    async fn reserve(
        &self,
        request: &SpendRequest<'_>,
        budgets: &[Budget],
    ) -> Result<Decision, BackendError> {
        let mut state = self.lock();
        let workspace = &request.attribution.who.workspace;
        let estimate = request.estimate;
        if request.billing_mode == BillingMode::Managed {
            let available = state
                .wallets
                .get(workspace)
                .map(WalletView::available)
                .unwrap_or_default();
            if available < estimate {
                return Ok(Decision::Denied(Denial::WalletExhausted {
                    available,
                    estimate,
                }));
            }
        }
        let applying: Vec<(&Budget, BudgetCounter)> = budgets
            .iter()
            .filter(|b| b.scope.applies_to(request.attribution))
            .map(|b| {
                (
                    b,
                    BudgetCounter {
                        scope: b.scope.clone(),
                        period: b.period,
                        start: b.period.start(request.at),
                    },
                )
            })
            .collect();
        for (budget, key) in &applying {
            let counter = state.counters.get(key).copied().unwrap_or_default();
            let committed = counter.spent + counter.reserved;
            if committed + estimate > budget.limit {
                return Ok(Decision::Denied(Denial::BudgetExceeded {
                    scope: budget.scope.to_string(),
                    period: budget.period,
                    limit: budget.limit,
                    committed,
                    estimate,
                }));
            }
        }
        if request.billing_mode == BillingMode::Managed {
            state.wallets.entry(workspace.clone()).or_default().reserved += estimate;
        }
        let keys: Vec<BudgetCounter> = applying.into_iter().map(|(_, k)| k).collect();
        for key in &keys {
            state.counters.entry(key.clone()).or_default().reserved += estimate;
        }
        state.next += 1;
        Ok(Decision::Allowed(Reservation {
            id: state.next,
            org: request.attribution.who.org.clone(),
            workspace: workspace.clone(),
            billing_mode: request.billing_mode,
            amount: estimate,
            budgets: keys,
        }))
    }

    async fn settle(&self, reservation: &Reservation, actual: Decimal) -> Result<(), BackendError> {
        let mut state = self.lock();
        if reservation.billing_mode == BillingMode::Managed {
            let wallet = state
                .wallets
                .entry(reservation.workspace.clone())
                .or_default();
            wallet.reserved -= reservation.amount;
            wallet.settled += actual;
        }
        for key in &reservation.budgets {
            let counter = state.counters.entry(key.clone()).or_default();
            counter.reserved -= reservation.amount;
            counter.spent += actual;
        }
        Ok(())
    }

    async fn release(&self, reservation: &Reservation) -> Result<(), BackendError> {
        let mut state = self.lock();
        if reservation.billing_mode == BillingMode::Managed {
            state
                .wallets
                .entry(reservation.workspace.clone())
                .or_default()
                .reserved -= reservation.amount;
        }
        for key in &reservation.budgets {
            state.counters.entry(key.clone()).or_default().reserved -= reservation.amount;
        }
        Ok(())
    }

    async fn refresh_wallet(
        &self,
        _org: &crate::attribution::OrgId,
        workspace: &WorkspaceId,
        balance: Decimal,
        debited: Decimal,
    ) -> Result<(), BackendError> {
        let mut state = self.lock();
        let wallet = state.wallets.entry(workspace.clone()).or_default();
        wallet.balance = balance;
        wallet.debited = debited;
        Ok(())
    }
}

#[derive(Debug, Default)]
struct Allowance {
    /// The chunks reserved from the shared control, not settled yet.
    chunks: Vec<Reservation>,
    /// Their total.
    granted: Decimal,
    /// Local reservations outstanding plus local spend settled, against `granted`.
    used: Decimal,
    /// Local spend settled since the chunks were taken.
    settled: Decimal,
}

#[derive(Debug, Default)]
struct AllowanceState {
    workspaces: HashMap<WorkspaceId, Allowance>,
    local: HashMap<u64, WorkspaceId>,
    next: u64,
}

/// Serves managed reservations without budgets from a local allowance: a chunk
/// reserved from the shared control in one round trip covers many requests, so the
/// common path — a wallet far from exhausted — costs no round trip. When the
/// allowance cannot cover a request, a new chunk is taken; when the shared control
/// refuses a chunk (the wallet is nearly exhausted), requests are checked one by one
/// against the shared control, so the bound is the same as without the allowance.
/// Requests with budgets always go to the shared control (budgets are shared too).
///
/// Local spend is settled into the shared control when a chunk is replaced and on
/// [`LocalAllowance::flush`] (call it every few seconds and at shutdown); until then
/// the shared control still counts the whole chunk as reserved, which can only make
/// other replicas more cautious, never let them overspend.
#[derive(Debug)]
pub struct LocalAllowance<C> {
    shared: C,
    chunk: Decimal,
    state: Mutex<AllowanceState>,
}

/// Local reservation ids live above this, shared ones below.
const LOCAL_IDS: u64 = 1 << 62;

impl<C: SpendControl> LocalAllowance<C> {
    /// An allowance over `shared`, taking chunks of `chunk` (in the wallet's currency).
    pub fn new(shared: C, chunk: Decimal) -> LocalAllowance<C> {
        LocalAllowance {
            shared,
            chunk,
            state: Mutex::new(AllowanceState::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, AllowanceState> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Reserves locally if the workspace's allowance covers `estimate`.
    fn take_local(
        &self,
        workspace: &WorkspaceId,
        request: &SpendRequest<'_>,
    ) -> Option<Reservation> {
        let mut state = self.lock();
        let allowance = state.workspaces.get_mut(workspace)?;
        if allowance.granted - allowance.used < request.estimate {
            return None;
        }
        allowance.used += request.estimate;
        state.next += 1;
        let id = LOCAL_IDS + state.next;
        state.local.insert(id, workspace.clone());
        Some(Reservation {
            id,
            org: request.attribution.who.org.clone(),
            workspace: workspace.clone(),
            billing_mode: BillingMode::Managed,
            amount: request.estimate,
            budgets: Vec::new(),
        })
    }

    /// Settles every chunk of every workspace into the shared control with the
    /// local spend, and forgets them.
    pub async fn flush(&self) -> Result<(), BackendError> {
        let drained: Vec<(Vec<Reservation>, Decimal)> = {
            let mut state = self.lock();
            state
                .workspaces
                .values_mut()
                .map(|a| {
                    // Outstanding local reservations stay covered by a fresh chunk.
                    let outstanding = a.used - a.settled;
                    let chunks = std::mem::take(&mut a.chunks);
                    let settled = std::mem::take(&mut a.settled);
                    a.granted = Decimal::ZERO;
                    a.used = outstanding;
                    (chunks, settled)
                })
                .collect()
        };
        for (chunks, settled) in drained {
            let mut left = settled;
            for chunk in chunks {
                let part = left.min(chunk.amount);
                left -= part;
                self.shared.settle(&chunk, part).await?;
            }
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl<C: SpendControl> SpendControl for LocalAllowance<C> {
    async fn reserve(
        &self,
        request: &SpendRequest<'_>,
        budgets: &[Budget],
    ) -> Result<Decision, BackendError> {
        let local_eligible = request.billing_mode == BillingMode::Managed
            && Reservation::counters(request, budgets).is_empty();
        if !local_eligible {
            return self.shared.reserve(request, budgets).await;
        }
        let workspace = &request.attribution.who.workspace;
        if let Some(reservation) = self.take_local(workspace, request) {
            return Ok(Decision::Allowed(reservation));
        }
        let chunk_request = SpendRequest {
            estimate: self.chunk.max(request.estimate),
            ..*request
        };
        match self.shared.reserve(&chunk_request, &[]).await? {
            Decision::Allowed(chunk) => {
                {
                    let mut state = self.lock();
                    let allowance = state.workspaces.entry(workspace.clone()).or_default();
                    allowance.granted += chunk.amount;
                    allowance.chunks.push(chunk);
                }
                match self.take_local(workspace, request) {
                    Some(reservation) => Ok(Decision::Allowed(reservation)),
                    None => self.shared.reserve(request, budgets).await,
                }
            }
            // Nearly exhausted: check this request on its own.
            Decision::Denied(_) => self.shared.reserve(request, budgets).await,
        }
    }

    async fn settle(&self, reservation: &Reservation, actual: Decimal) -> Result<(), BackendError> {
        {
            let mut state = self.lock();
            if let Some(workspace) = state.local.remove(&reservation.id) {
                if let Some(a) = state.workspaces.get_mut(&workspace) {
                    a.used += actual - reservation.amount;
                    a.settled += actual;
                }
                return Ok(());
            }
        }
        self.shared.settle(reservation, actual).await
    }

    async fn release(&self, reservation: &Reservation) -> Result<(), BackendError> {
        {
            let mut state = self.lock();
            if let Some(workspace) = state.local.remove(&reservation.id) {
                if let Some(a) = state.workspaces.get_mut(&workspace) {
                    a.used -= reservation.amount;
                }
                return Ok(());
            }
        }
        self.shared.release(reservation).await
    }

    async fn refresh_wallet(
        &self,
        org: &crate::attribution::OrgId,
        workspace: &WorkspaceId,
        balance: Decimal,
        debited: Decimal,
    ) -> Result<(), BackendError> {
        self.shared
            .refresh_wallet(org, workspace, balance, debited)
            .await
    }
}

#[async_trait::async_trait]
impl<C: SpendControl + ?Sized> SpendControl for Arc<C> {
    async fn reserve(
        &self,
        request: &SpendRequest<'_>,
        budgets: &[Budget],
    ) -> Result<Decision, BackendError> {
        (**self).reserve(request, budgets).await
    }

    async fn settle(&self, reservation: &Reservation, actual: Decimal) -> Result<(), BackendError> {
        (**self).settle(reservation, actual).await
    }

    async fn release(&self, reservation: &Reservation) -> Result<(), BackendError> {
        (**self).release(reservation).await
    }

    async fn refresh_wallet(
        &self,
        org: &crate::attribution::OrgId,
        workspace: &WorkspaceId,
        balance: Decimal,
        debited: Decimal,
    ) -> Result<(), BackendError> {
        (**self)
            .refresh_wallet(org, workspace, balance, debited)
            .await
    }
}
