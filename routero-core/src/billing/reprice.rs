//! Repricing, the dry run: every logged request in a range priced again from its
//! recorded usage with another price table, and the differences reported per
//! workspace, provider and model.
//!
//! A request is repriced exactly when the request log holds its whole usage (every
//! category, the service tier, the per-call meters): the log keeps it beside the
//! six token columns (PostgreSQL migration V11; the in-memory store keeps the event).
//! A request logged before that carries no full usage and is counted as
//! `no_usage`, never guessed from the token columns.

use std::collections::BTreeMap;
use std::fmt;

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::attribution::{BillingMode, Dimensions, OrgId, RequestId, WorkspaceId};
use crate::money::Currency;
use crate::port::BackendError;
use crate::price::PriceTable;
use crate::provider::Provider;
use crate::spend::{Outcome, RollupKey, RollupTotals};
use crate::usage::Usage;

/// Which logged requests a repricing covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepricingScope {
    /// The first UTC day.
    pub from: NaiveDate,
    /// The last UTC day, included.
    pub to: NaiveDate,
    /// Only this org's.
    pub org: Option<OrgId>,
    /// Only this workspace's.
    pub workspace: Option<WorkspaceId>,
    /// Only this provider's.
    pub provider: Option<Provider>,
    /// Only this model's (as the response named it).
    pub model: Option<String>,
    /// Only this billing mode's.
    pub billing_mode: Option<BillingMode>,
}

impl RepricingScope {
    /// Every request from `from` to `to`, UTC days included.
    pub fn days(from: NaiveDate, to: NaiveDate) -> RepricingScope {
        RepricingScope {
            from,
            to,
            org: None,
            workspace: None,
            provider: None,
            model: None,
            billing_mode: None,
        }
    }

    /// The scope's instants: `[from 00:00, to + 1 day 00:00)`.
    pub fn bounds(&self) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
        let start = self.from.and_hms_opt(0, 0, 0)?.and_utc();
        let end = self.to.succ_opt()?.and_hms_opt(0, 0, 0)?.and_utc();
        Some((start, end))
    }

    /// Whether a logged request is in scope.
    pub fn covers(&self, request: &LoggedRequest) -> bool {
        self.bounds()
            .is_some_and(|(start, end)| request.event_time >= start && request.event_time < end)
            && self.org.as_ref().is_none_or(|o| o == request.org())
            && self
                .workspace
                .as_ref()
                .is_none_or(|w| w == request.workspace())
            && self
                .provider
                .as_ref()
                .is_none_or(|p| *p == request.provider)
            && self.model.as_ref().is_none_or(|m| *m == request.model)
            && self.billing_mode.is_none_or(|b| b == request.billing_mode)
    }
}

/// A request as the log keeps it, what a repricing reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggedRequest {
    /// The request.
    pub request_id: RequestId,
    /// When it was made (the time its price is looked up at).
    pub event_time: DateTime<Utc>,
    /// Who spent: org, workspace, team, API key, user, customer.
    pub who: Dimensions,
    /// Whether it succeeded.
    pub outcome: Outcome,
    /// The provider that served it.
    pub provider: Provider,
    /// The model the response (or the request) named.
    pub model: String,
    /// How it is billed.
    pub billing_mode: BillingMode,
    /// Its whole usage; `None` when unknown or logged before the log kept it.
    pub usage: Option<Usage>,
    /// Its cost as it stands: the recorded cost plus the corrections of every
    /// repricing applied since; `None` while it is unpriced.
    pub cost: Option<Decimal>,
    /// The cost's currency.
    pub currency: Option<Currency>,
    /// The price version that priced it last (a repricing's, once corrected).
    pub price_version: Option<String>,
}

impl LoggedRequest {
    /// Its org.
    pub fn org(&self) -> &OrgId {
        &self.who.org
    }

    /// Its workspace.
    pub fn workspace(&self) -> &WorkspaceId {
        &self.who.workspace
    }

    /// The rollup it counts in and what it adds there, at `cost` in `currency`
    /// (`None`: unpriced).
    pub fn rollup(
        &self,
        cost: Option<Decimal>,
        currency: Option<Currency>,
    ) -> (RollupKey, RollupTotals) {
        (
            RollupKey {
                day: self.event_time.date_naive(),
                who: self.who.clone(),
                provider: self.provider.clone(),
                model: self.model.clone(),
                billing_mode: self.billing_mode,
                currency: cost.and(currency),
            },
            RollupTotals::of_parts(self.usage.as_ref(), self.outcome, cost),
        )
    }
}

/// The position after which [`RequestLog::requests`] reads: the org, time and id of
/// the last request of the previous page.
pub type LogCursor = (OrgId, DateTime<Utc>, RequestId);

impl LoggedRequest {
    /// Its position in the order the log is read in.
    pub fn cursor(&self) -> LogCursor {
        (
            self.who.org.clone(),
            self.event_time,
            self.request_id.clone(),
        )
    }
}

/// The request log, read in order for a repricing.
#[async_trait]
pub trait RequestLog: fmt::Debug + Send + Sync {
    /// Up to `limit` requests in scope after `after`, ordered by org, time, then id
    /// (PostgreSQL reads them along its `(org, event_time)` index, so a page costs
    /// the same wherever it starts).
    async fn requests(
        &self,
        scope: &RepricingScope,
        after: Option<&LogCursor>,
        limit: usize,
    ) -> Result<Vec<LoggedRequest>, BackendError>;
}

/// What pricing a logged request again found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Repriced {
    /// Priced again: the old cost (`None` when it was unpriced) and the new.
    Priced {
        /// The recorded cost.
        old: Option<Decimal>,
        /// The cost at the new prices.
        new: Decimal,
    },
    /// The new prices cannot price it either (the reason).
    Unpriced(String),
    /// Its usage is unknown: nothing to price it from.
    NoUsage,
    /// The new prices are in another currency than its recorded cost: not compared.
    OtherCurrency,
}

/// Prices one logged request again with `prices`.
pub fn reprice(request: &LoggedRequest, prices: &PriceTable) -> Repriced {
    let Some(usage) = &request.usage else {
        return Repriced::NoUsage;
    };
    if request
        .currency
        .is_some_and(|c| c != prices.currency() && request.cost.is_some())
    {
        return Repriced::OtherCurrency;
    }
    match prices.cost(&request.provider, &request.model, usage, request.event_time) {
        Ok(cost) => Repriced::Priced {
            old: request.cost,
            new: cost.total(),
        },
        Err(e) => Repriced::Unpriced(e.to_string()),
    }
}

/// One line of a repricing report: a workspace, provider and model.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportRow {
    /// The workspace.
    pub workspace: String,
    /// The provider.
    pub provider: String,
    /// The model.
    pub model: String,
    /// Requests in scope.
    pub requests: u64,
    /// Requests priced before and again, whose cost changes.
    pub changed: u64,
    /// Requests unpriced before that the new prices price.
    pub newly_priced: u64,
    /// Requests the new prices cannot price (their old cost stays).
    pub unpriced: u64,
    /// Requests without a usage to price from (their old cost stays).
    pub no_usage: u64,
    /// The recorded total of the requests priced again.
    #[serde(with = "rust_decimal::serde::str")]
    pub old_total: Decimal,
    /// Their total at the new prices.
    #[serde(with = "rust_decimal::serde::str")]
    pub new_total: Decimal,
    /// `new_total - old_total`.
    #[serde(with = "rust_decimal::serde::str")]
    pub delta: Decimal,
}

/// A dry run's report.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RepricingReport {
    /// The version of the prices applied.
    pub price_version: String,
    /// The currency of every amount.
    pub currency: String,
    /// Per workspace, provider and model, in that order.
    pub rows: Vec<ReportRow>,
    /// Every row added up (its `workspace`, `provider` and `model` empty).
    pub total: ReportRow,
}

impl RepricingReport {
    /// The report as RFC 4180 CSV: a header, a line per row, then the total.
    pub fn to_csv(&self) -> String {
        let mut out = String::from(
            "workspace,provider,model,requests,changed,newly_priced,unpriced,no_usage,old_total,new_total,delta\n",
        );
        let quote = |s: &str| {
            if s.contains([',', '"', '\n', '\r']) {
                format!("\"{}\"", s.replace('"', "\"\""))
            } else {
                s.to_owned()
            }
        };
        for row in self.rows.iter().chain(std::iter::once(&self.total)) {
            let workspace = if row.workspace.is_empty() && std::ptr::eq(row, &self.total) {
                "total".to_owned()
            } else {
                quote(&row.workspace)
            };
            out.push_str(&format!(
                "{workspace},{},{},{},{},{},{},{},{},{},{}\n",
                quote(&row.provider),
                quote(&row.model),
                row.requests,
                row.changed,
                row.newly_priced,
                row.unpriced,
                row.no_usage,
                row.old_total,
                row.new_total,
                row.delta
            ));
        }
        out
    }
}

fn add(row: &mut ReportRow, repriced: &Repriced) {
    row.requests += 1;
    match repriced {
        Repriced::Priced {
            old: Some(old),
            new,
        } => {
            if old != new {
                row.changed += 1;
            }
            row.old_total += old;
            row.new_total += new;
            row.delta += new - old;
        }
        Repriced::Priced { old: None, new } => {
            row.newly_priced += 1;
            row.new_total += new;
            row.delta += new;
        }
        Repriced::Unpriced(_) | Repriced::OtherCurrency => row.unpriced += 1,
        Repriced::NoUsage => row.no_usage += 1,
    }
}

/// Prices every request of `scope` in `log` again with `prices`, reading pages of
/// `page` requests, and reports what would change. Nothing is written.
pub async fn dry_run(
    log: &dyn RequestLog,
    scope: &RepricingScope,
    prices: &PriceTable,
    page: usize,
) -> Result<RepricingReport, BackendError> {
    let mut rows: BTreeMap<(String, String, String), ReportRow> = BTreeMap::new();
    let mut total = ReportRow::default();
    let mut after: Option<LogCursor> = None;
    loop {
        let batch = log.requests(scope, after.as_ref(), page.max(1)).await?;
        let Some(last) = batch.last() else { break };
        after = Some(last.cursor());
        for request in &batch {
            let repriced = reprice(request, prices);
            let key = (
                request.workspace().to_string(),
                request.provider.as_str().to_owned(),
                request.model.clone(),
            );
            let row = rows.entry(key.clone()).or_insert_with(|| ReportRow {
                workspace: key.0,
                provider: key.1,
                model: key.2,
                ..ReportRow::default()
            });
            add(row, &repriced);
            add(&mut total, &repriced);
        }
        if batch.len() < page.max(1) {
            break;
        }
    }
    Ok(RepricingReport {
        price_version: prices.version().to_owned(),
        currency: prices.currency().code().to_owned(),
        rows: rows.into_values().collect(),
        total,
    })
}

/// A repricing's id, `rp_` and 16 hex digits, derived from what it applies (its
/// scope and the version of its prices): the same repricing asked for again, or
/// started again after a crash, is the same repricing, and applies nothing twice.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RepricingId(String);

impl RepricingId {
    /// The id of applying `prices_version` to `scope`.
    pub fn derive(scope: &RepricingScope, prices_version: &str) -> RepricingId {
        let text = format!(
            "{}|{}|{}|{}|{}|{}|{}|{}",
            scope.from,
            scope.to,
            scope.org.as_ref().map_or("", OrgId::as_str),
            scope.workspace.as_ref().map_or("", WorkspaceId::as_str),
            scope.provider.as_ref().map_or("", Provider::as_str),
            scope.model.as_deref().unwrap_or(""),
            scope.billing_mode.map_or("", BillingMode::as_str),
            prices_version,
        );
        RepricingId(format!("rp_{:016x}", fnv1a(text.as_bytes())))
    }

    /// An id from its text (`rp_` and 16 lower-case hex digits).
    pub fn parse(text: &str) -> Option<RepricingId> {
        let hex = text.strip_prefix("rp_")?;
        (hex.len() == 16 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
            .then(|| RepricingId(text.to_owned()))
    }

    /// Its text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RepricingId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(&self.0)
    }
}

/// FNV-1a, 64 bits: the same in every process and release.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Where a repricing stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RepricingState {
    /// Recorded; its corrections are being applied (or were, by a process that
    /// stopped: applying it again finishes it).
    Applying,
    /// Every correction applied.
    Applied,
}

impl RepricingState {
    /// The snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            RepricingState::Applying => "applying",
            RepricingState::Applied => "applied",
        }
    }

    /// Parses a name.
    pub fn parse(text: &str) -> Option<RepricingState> {
        [RepricingState::Applying, RepricingState::Applied]
            .into_iter()
            .find(|s| s.as_str() == text)
    }
}

/// A repricing's audit record: what was asked, by whom and why, with which prices,
/// what it was to change and what it changed. Kept for good.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Repricing {
    /// Its id.
    pub id: RepricingId,
    /// Why.
    pub reason: String,
    /// Who asked.
    pub actor: String,
    /// The requests it covers.
    #[serde(flatten)]
    pub scope: RepricingScope,
    /// The version of the prices in force when it was asked (what the new prices
    /// were layered over).
    pub prices_before: String,
    /// The version of the prices it applies.
    pub prices_after: String,
    /// The currency of every amount.
    pub currency: Currency,
    /// What the dry run before applying found (every request in scope).
    pub planned: ReportRow,
    /// Requests corrected (each once).
    pub corrected: u64,
    /// The sum of the corrections applied.
    #[serde(with = "rust_decimal::serde::str")]
    pub delta: Decimal,
    /// Where it stands.
    pub state: RepricingState,
    /// When it was recorded.
    pub created_at: DateTime<Utc>,
    /// When its last correction was applied.
    pub finished_at: Option<DateTime<Utc>>,
}

impl Serialize for RepricingScope {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("from", &self.from)?;
        map.serialize_entry("to", &self.to)?;
        map.serialize_entry("org", &self.org)?;
        map.serialize_entry("workspace", &self.workspace)?;
        map.serialize_entry("provider", &self.provider)?;
        map.serialize_entry("model", &self.model)?;
        map.serialize_entry("billing_mode", &self.billing_mode)?;
        map.end()
    }
}

/// One request's correction: its cost as it stands and its cost at the new prices.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Correction {
    /// The request, with its cost as it stands.
    pub request: LoggedRequest,
    /// Its cost at the new prices.
    pub new: Decimal,
    /// The new cost's currency.
    pub currency: Currency,
    /// The version of the new prices.
    pub price_version: String,
}

impl Correction {
    /// What the correction adds to the request's cost (negative: a credit).
    pub fn delta(&self) -> Decimal {
        self.new - self.request.cost.unwrap_or(Decimal::ZERO)
    }

    /// Whether the request was unpriced before.
    pub fn newly_priced(&self) -> bool {
        self.request.cost.is_none()
    }

    /// The rollup change: what the request counted for until now (to take out) and
    /// what it counts for corrected (to add). For a request priced before, both keys
    /// are the same and only the cost differs; a request priced for the first time
    /// moves from the unpriced rollup (no currency) to its currency's.
    pub fn rollup_change(&self) -> [(RollupKey, RollupTotals); 2] {
        [
            self.request
                .rollup(self.request.cost, self.request.currency),
            self.request.rollup(Some(self.new), Some(self.currency)),
        ]
    }
}

/// The corrections of a page of requests: every request in scope priced again whose
/// cost changes (or that is priced for the first time).
pub fn corrections(requests: &[LoggedRequest], prices: &PriceTable) -> Vec<Correction> {
    requests
        .iter()
        .filter_map(|request| match reprice(request, prices) {
            Repriced::Priced { old, new } if old != Some(new) => Some(Correction {
                request: request.clone(),
                new: new.normalize(),
                currency: prices.currency(),
                price_version: prices.version().to_owned(),
            }),
            _ => None,
        })
        .collect()
}

/// The managed spend corrections move, per workspace, by currency and UTC day
/// (negative: money back), as [`crate::wallet::debits_in`] converts it into the
/// wallet's currency. BYOK requests move no money.
pub fn managed_corrections(
    corrections: &[Correction],
) -> Result<BTreeMap<WorkspaceId, crate::wallet::ManagedSpend>, BackendError> {
    let mut out: BTreeMap<WorkspaceId, crate::wallet::ManagedSpend> = BTreeMap::new();
    for c in corrections
        .iter()
        .filter(|c| c.request.billing_mode == BillingMode::Managed)
    {
        let sum = out
            .entry(c.request.workspace().clone())
            .or_default()
            .entry((c.currency, c.request.event_time.date_naive()))
            .or_default();
        *sum = sum.checked_add(c.delta()).ok_or_else(|| {
            BackendError::new(crate::port::ErrorKind::Invalid, "a correction overflows")
        })?;
    }
    for spend in out.values_mut() {
        spend.retain(|_, amount| !amount.is_zero());
    }
    out.retain(|_, spend| !spend.is_empty());
    Ok(out)
}

/// The wallet write of one correction of managed spend: more spend is a debit, less
/// a credit (a paid lot), both of kind `price_correction` with `memo`.
pub fn correction_write<'a>(
    debit: &'a crate::wallet::UsageDebit,
    memo: &'a str,
) -> crate::wallet::WalletWrite<'a> {
    use crate::wallet::{EntryKind, LotKind, WalletWrite};
    if debit.amount.is_sign_negative() {
        WalletWrite::Credit {
            kind: EntryKind::PriceCorrection,
            lot: LotKind::Paid,
            amount: -debit.amount,
            expires_at: None,
            memo: Some(memo),
        }
    } else {
        WalletWrite::Debit {
            kind: EntryKind::PriceCorrection,
            amount: debit.amount,
            memo: Some(memo),
            conversion: debit.conversion.as_ref(),
        }
    }
}

/// The idempotency key of the wallet entries of a page of corrections: the
/// repricing and the page's first request (hashed, to fit the key's length).
pub fn correction_key(id: &RepricingId, corrections: &[Correction]) -> String {
    let first = corrections
        .first()
        .map_or("", |c| c.request.request_id.as_str());
    format!("reprice:{id}:{:016x}", fnv1a(first.as_bytes()))
}

/// The store of repricings: the request log it reads, the corrections it applies
/// (each once), and the audit records.
#[async_trait]
pub trait Repricings: RequestLog {
    /// Records `repricing` (state `applying`), or answers the record already kept
    /// under its id, unchanged.
    async fn begin(&self, repricing: &Repricing) -> Result<Repricing, BackendError>;

    /// Applies the corrections of repricing `id`, all or nothing, each at most once
    /// per (request, repricing) however often it is asked: records each beside the
    /// request's log row (the logged cost is never changed), moves the rollups, marks
    /// requests priced for the first time as repriced in the unpriced record, and
    /// moves managed spend in the wallets through `price_correction` entries dated
    /// `at`. Answers how many were applied now.
    async fn correct(
        &self,
        id: &RepricingId,
        corrections: &[Correction],
        at: DateTime<Utc>,
    ) -> Result<u64, BackendError>;

    /// Marks repricing `id` applied at `at`, with the count and sum of its
    /// corrections; `None` if there is no such repricing.
    async fn finish(
        &self,
        id: &RepricingId,
        at: DateTime<Utc>,
    ) -> Result<Option<Repricing>, BackendError>;

    /// A repricing by id.
    async fn repricing(&self, id: &RepricingId) -> Result<Option<Repricing>, BackendError>;

    /// The repricings of `org` (`None`: every org's), newest first.
    async fn repricings(&self, org: Option<&OrgId>) -> Result<Vec<Repricing>, BackendError>;
}

/// What to reprice, and why.
#[derive(Debug, Clone)]
pub struct RepricingRequest<'a> {
    /// The requests.
    pub scope: RepricingScope,
    /// Why (kept in the audit record).
    pub reason: String,
    /// Who asks (kept in the audit record).
    pub actor: String,
    /// The prices in force (what `prices` was layered over).
    pub current: &'a PriceTable,
    /// The prices to apply.
    pub prices: &'a PriceTable,
}

/// Applies a repricing: records it (its dry run as the plan), prices every request in
/// scope again a page of `page` at a time, applies each page's corrections in one
/// step, and marks it applied. Asking again for a repricing already applied changes
/// nothing; one stopped midway (a crash, a kill) is finished by asking again: pages
/// applied before are not applied twice.
pub async fn apply(
    store: &dyn Repricings,
    request: RepricingRequest<'_>,
    page: usize,
    at: DateTime<Utc>,
) -> Result<Repricing, BackendError> {
    let id = RepricingId::derive(&request.scope, request.prices.version());
    let record = match store.repricing(&id).await? {
        Some(found) => found,
        None => {
            let plan = dry_run(store, &request.scope, request.prices, page).await?;
            store
                .begin(&Repricing {
                    id: id.clone(),
                    reason: request.reason,
                    actor: request.actor,
                    scope: request.scope.clone(),
                    prices_before: request.current.version().to_owned(),
                    prices_after: request.prices.version().to_owned(),
                    currency: request.prices.currency(),
                    planned: plan.total,
                    corrected: 0,
                    delta: Decimal::ZERO,
                    state: RepricingState::Applying,
                    created_at: at,
                    finished_at: None,
                })
                .await?
        }
    };
    if record.state == RepricingState::Applied {
        return Ok(record);
    }
    let mut after: Option<LogCursor> = None;
    loop {
        let batch = store
            .requests(&record.scope, after.as_ref(), page.max(1))
            .await?;
        let Some(last) = batch.last() else { break };
        after = Some(last.cursor());
        let found = corrections(&batch, request.prices);
        if !found.is_empty() {
            store.correct(&id, &found, at).await?;
        }
        if batch.len() < page.max(1) {
            break;
        }
    }
    store.finish(&id, at).await?.ok_or_else(|| {
        BackendError::new(
            crate::port::ErrorKind::Corrupt,
            format!("repricing {id} vanished while applied"),
        )
    })
}

impl From<&crate::spend::SpendEvent> for LoggedRequest {
    fn from(event: &crate::spend::SpendEvent) -> LoggedRequest {
        let (_, price_version, _, _) = event.logged_pricing();
        LoggedRequest {
            request_id: event.request_id.clone(),
            event_time: event.event_time,
            who: event.attribution.who.clone(),
            outcome: event.outcome,
            provider: event.provider.clone(),
            model: event.model.clone(),
            billing_mode: event.billing_mode,
            usage: event.usage,
            cost: event.cost(),
            currency: event.currency(),
            price_version: price_version.map(str::to_owned),
        }
    }
}

/// A correction as a store keeps it beside the request's log row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppliedCorrection {
    /// The repricing that applied it.
    pub repricing: RepricingId,
    /// The cost before.
    pub old: Option<Decimal>,
    /// The cost after.
    pub new: Decimal,
    /// The new cost's currency.
    pub currency: Currency,
    /// The version of the prices applied.
    pub price_version: String,
    /// When.
    pub applied_at: DateTime<Utc>,
}

impl crate::memory::MemoryStore {
    /// The corrections applied to a request, oldest first.
    pub fn corrections_of(&self, request: &RequestId) -> Vec<AppliedCorrection> {
        crate::memory::lock(&self.state)
            .corrections
            .get(request)
            .cloned()
            .unwrap_or_default()
    }

    /// When a repricing priced a request that was unpriced, if one did.
    pub fn repriced_at(&self, request: &RequestId) -> Option<DateTime<Utc>> {
        crate::memory::lock(&self.state)
            .repriced
            .get(request)
            .copied()
    }
}

#[async_trait]
impl Repricings for crate::memory::MemoryStore {
    async fn begin(&self, repricing: &Repricing) -> Result<Repricing, BackendError> {
        let mut state = crate::memory::lock(&self.state);
        if let Some(found) = state.repricings.iter().find(|r| r.id == repricing.id) {
            return Ok(found.clone());
        }
        state.repricings.push(repricing.clone());
        Ok(repricing.clone())
    }

    async fn correct(
        &self,
        id: &RepricingId,
        corrections: &[Correction],
        at: DateTime<Utc>,
    ) -> Result<u64, BackendError> {
        let rates = self.rates();
        let mut state = crate::memory::lock(&self.state);
        let fresh: Vec<Correction> = corrections
            .iter()
            .filter(|c| {
                !state
                    .corrections
                    .get(&c.request.request_id)
                    .is_some_and(|applied| applied.iter().any(|a| a.repricing == *id))
            })
            .cloned()
            .collect();
        // Everything computed before anything changes: all or nothing.
        let mut rollups = state.rollups.clone();
        for c in &fresh {
            let [(old_key, old), (new_key, new)] = c.rollup_change();
            rollups.subtract(&old_key, &old)?;
            rollups.add(new_key, &new)?;
        }
        let mut posts = Vec::new();
        for (workspace, spend) in managed_corrections(&fresh)? {
            let currency = match state.wallets.get(&workspace) {
                Some(book) => book.currency,
                None => crate::wallet::first_currency(&spend).unwrap_or(Currency::USD),
            };
            posts.push((
                workspace,
                currency,
                crate::wallet::debits_in(currency, &spend, &*rates)?,
            ));
        }
        let version = state.applies + 1;
        for c in &fresh {
            for (key, _) in c.rollup_change() {
                state.versions.insert(key, version);
            }
        }
        state.rollups = rollups;
        state.applies = version;
        let key = correction_key(id, &fresh);
        let memo = format!("repricing {id}");
        for (workspace, currency, debits) in posts {
            let book = state
                .wallets
                .entry(workspace.clone())
                .or_insert_with(|| crate::billing::memory::WalletBook::new(workspace, currency));
            book.expire(at);
            for debit in &debits {
                let key = format!("{key}{}", debit.key_suffix);
                let write = correction_write(debit, &memo);
                let _ = book.once(&key, write.fingerprint(currency), |book| {
                    vec![book.write(&write, at, &key)]
                });
            }
        }
        for c in &fresh {
            if c.newly_priced() {
                state.repriced.insert(c.request.request_id.clone(), at);
            }
            state
                .corrections
                .entry(c.request.request_id.clone())
                .or_default()
                .push(AppliedCorrection {
                    repricing: id.clone(),
                    old: c.request.cost,
                    new: c.new,
                    currency: c.currency,
                    price_version: c.price_version.clone(),
                    applied_at: at,
                });
        }
        Ok(u64::try_from(fresh.len()).unwrap_or(u64::MAX))
    }

    async fn finish(
        &self,
        id: &RepricingId,
        at: DateTime<Utc>,
    ) -> Result<Option<Repricing>, BackendError> {
        let mut state = crate::memory::lock(&self.state);
        let (mut corrected, mut delta) = (0u64, Decimal::ZERO);
        for applied in state.corrections.values().flatten() {
            if applied.repricing == *id {
                corrected += 1;
                delta += applied.new - applied.old.unwrap_or(Decimal::ZERO);
            }
        }
        let Some(record) = state.repricings.iter_mut().find(|r| r.id == *id) else {
            return Ok(None);
        };
        if record.state != RepricingState::Applied {
            record.state = RepricingState::Applied;
            record.finished_at = Some(at);
            record.corrected = corrected;
            record.delta = delta;
        }
        Ok(Some(record.clone()))
    }

    async fn repricing(&self, id: &RepricingId) -> Result<Option<Repricing>, BackendError> {
        Ok(crate::memory::lock(&self.state)
            .repricings
            .iter()
            .find(|r| r.id == *id)
            .cloned())
    }

    async fn repricings(&self, org: Option<&OrgId>) -> Result<Vec<Repricing>, BackendError> {
        Ok(crate::memory::lock(&self.state)
            .repricings
            .iter()
            .rev()
            .filter(|r| org.is_none_or(|o| r.scope.org.as_ref() == Some(o)))
            .cloned()
            .collect())
    }
}

#[async_trait]
impl RequestLog for crate::memory::MemoryStore {
    async fn requests(
        &self,
        scope: &RepricingScope,
        after: Option<&LogCursor>,
        limit: usize,
    ) -> Result<Vec<LoggedRequest>, BackendError> {
        let state = crate::memory::lock(&self.state);
        let mut found: Vec<LoggedRequest> = state
            .log
            .values()
            .map(|event| {
                let mut request = LoggedRequest::from(event);
                // The cost as it stands: the last correction's.
                if let Some(last) = state
                    .corrections
                    .get(&request.request_id)
                    .and_then(|c| c.last())
                {
                    request.cost = Some(last.new);
                    request.currency = Some(last.currency);
                    request.price_version = Some(last.price_version.clone());
                }
                request
            })
            .filter(|r| scope.covers(r))
            .filter(|r| after.is_none_or(|cursor| r.cursor() > *cursor))
            .collect();
        found.sort_by_key(LoggedRequest::cursor);
        found.truncate(limit);
        Ok(found)
    }
}
