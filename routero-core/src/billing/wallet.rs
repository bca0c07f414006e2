//! The prepaid wallet: an append-only ledger per workspace, with credit lots.
//!
//! The balance is the sum of the ledger's entries; nothing else holds it. Credits come
//! in lots: paid (top-ups, refunds, positive adjustments) and granted (promotional,
//! optionally expiring). A debit (managed usage, a negative adjustment) consumes
//! granted lots before paid ones, the soonest-expiring first, then the oldest paid
//! lot; what no lot covers takes the balance below zero (spend happened and is owed).
//! An expired lot's remainder leaves the balance through its own `CreditExpiry`
//! entry, so the history always explains the balance.
//!
//! Every write carries an idempotency key: a replay with the same body returns the
//! first result and changes nothing; the same key with another body is refused.

use std::fmt;

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, Utc};
use rust_decimal::Decimal;
use serde::Serialize;

use crate::attribution::WorkspaceId;
use crate::money::{Conversion, Currency, ExchangeRates};
use crate::port::{BackendError, ErrorKind};

/// The largest single credit Routero accepts (one million in the wallet's currency).
pub const MAX_CREDIT: Decimal = Decimal::from_parts(1_000_000, 0, 0, false, 0);

/// What a ledger entry records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryKind {
    /// A paid top-up (a payment).
    TopUp,
    /// Managed-key usage, posted by the drain with the rollups.
    UsageDebit,
    /// Money given back.
    Refund,
    /// A correction, either way.
    Adjustment,
    /// A granted (promotional) credit.
    GrantedCredit,
    /// The remainder of an expired granted credit leaving the balance.
    CreditExpiry,
    /// Managed spend corrected by a repricing: a debit when the new prices cost more,
    /// a credit when less.
    PriceCorrection,
}

impl EntryKind {
    /// Every kind.
    pub const ALL: [EntryKind; 7] = [
        EntryKind::TopUp,
        EntryKind::UsageDebit,
        EntryKind::Refund,
        EntryKind::Adjustment,
        EntryKind::GrantedCredit,
        EntryKind::CreditExpiry,
        EntryKind::PriceCorrection,
    ];

    /// The snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            EntryKind::TopUp => "top_up",
            EntryKind::UsageDebit => "usage_debit",
            EntryKind::Refund => "refund",
            EntryKind::Adjustment => "adjustment",
            EntryKind::GrantedCredit => "granted_credit",
            EntryKind::CreditExpiry => "credit_expiry",
            EntryKind::PriceCorrection => "price_correction",
        }
    }

    /// Parses a name.
    pub fn parse(text: &str) -> Option<EntryKind> {
        EntryKind::ALL.into_iter().find(|k| k.as_str() == text)
    }
}

impl fmt::Display for EntryKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// Paid or granted credit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LotKind {
    /// Money paid in.
    Paid,
    /// Credit granted, possibly expiring.
    Granted,
}

impl LotKind {
    /// `paid` or `granted`.
    pub fn as_str(self) -> &'static str {
        match self {
            LotKind::Paid => "paid",
            LotKind::Granted => "granted",
        }
    }

    /// Parses a name.
    pub fn parse(text: &str) -> Option<LotKind> {
        match text {
            "paid" => Some(LotKind::Paid),
            "granted" => Some(LotKind::Granted),
            _ => None,
        }
    }
}

/// A lot of credit and what is left of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Lot {
    /// The lot's id within its wallet.
    pub id: u64,
    /// Paid or granted.
    pub kind: LotKind,
    /// The amount credited.
    #[serde(with = "rust_decimal::serde::str")]
    pub amount: Decimal,
    /// What is left.
    #[serde(with = "rust_decimal::serde::str")]
    pub remaining: Decimal,
    /// When it was credited.
    pub created_at: DateTime<Utc>,
    /// When a granted credit expires.
    pub expires_at: Option<DateTime<Utc>>,
}

/// A part of a debit taken from one lot (or, with no lot, from below zero).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Allocation {
    /// The lot, or `None` for the part no lot covered.
    pub lot: Option<u64>,
    /// How much.
    #[serde(with = "rust_decimal::serde::str")]
    pub amount: Decimal,
}

/// One ledger entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LedgerEntry {
    /// Increasing within the wallet: the ledger's order.
    pub id: u64,
    /// The workspace whose wallet it is.
    pub workspace: WorkspaceId,
    /// What it records.
    pub kind: EntryKind,
    /// Signed: credits positive, debits negative. Exact.
    #[serde(with = "rust_decimal::serde::str")]
    pub amount: Decimal,
    /// The wallet's currency.
    pub currency: Currency,
    /// When it happened.
    pub at: DateTime<Utc>,
    /// The idempotency key it was written with.
    pub idempotency_key: String,
    /// The lot a credit created.
    pub lot: Option<u64>,
    /// The lots a debit consumed.
    pub allocations: Vec<Allocation>,
    /// A note (refunds, adjustments, the period of a usage debit).
    pub memo: Option<String>,
    /// For a usage debit of spend priced in another currency: what was converted, at
    /// which rate of which day.
    pub conversion: Option<Conversion>,
}

impl LedgerEntry {
    /// The entry with its amount and allocations written at the currency's scale
    /// ([`Currency::canonical`]): what every store answers with.
    pub fn canonical(mut self) -> LedgerEntry {
        self.amount = self.currency.canonical(self.amount);
        for allocation in &mut self.allocations {
            allocation.amount = self.currency.canonical(allocation.amount);
        }
        self
    }
}

/// A ledger write's answer: the entry, and whether the idempotency key had already
/// written it (a replay changes nothing and answers the first entry). It serialises
/// as the entry's fields and `replayed`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Written {
    /// The entry the key wrote.
    #[serde(flatten)]
    pub entry: LedgerEntry,
    /// `true` when this request was a replay of an earlier one with the same key.
    pub replayed: bool,
}

/// A wallet's balance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Balance {
    /// The workspace.
    pub workspace: WorkspaceId,
    /// The wallet's currency.
    pub currency: Currency,
    /// The sum of every entry.
    #[serde(with = "rust_decimal::serde::str")]
    pub balance: Decimal,
    /// What is left of paid lots.
    #[serde(with = "rust_decimal::serde::str")]
    pub paid_remaining: Decimal,
    /// What is left of granted lots.
    #[serde(with = "rust_decimal::serde::str")]
    pub granted_remaining: Decimal,
    /// The sum of every usage debit (positive): what spend controls compare their
    /// settled spend with to know what is not drained yet.
    #[serde(with = "rust_decimal::serde::str")]
    pub usage_debited: Decimal,
    /// The lots with something left.
    pub open_lots: Vec<Lot>,
}

impl Balance {
    /// The balance with every amount written at the currency's scale
    /// ([`Currency::canonical`]): what every store answers with.
    pub fn canonical(mut self) -> Balance {
        let c = self.currency;
        self.balance = c.canonical(self.balance);
        self.paid_remaining = c.canonical(self.paid_remaining);
        self.granted_remaining = c.canonical(self.granted_remaining);
        self.usage_debited = c.canonical(self.usage_debited);
        for lot in &mut self.open_lots {
            lot.amount = c.canonical(lot.amount);
            lot.remaining = c.canonical(lot.remaining);
        }
        self
    }
}

/// A write the wallet refuses.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WalletError {
    /// Zero, negative, too large, or with more decimals than the currency's minor unit.
    #[error("invalid amount {amount}: {reason}")]
    InvalidAmount {
        /// The amount given.
        amount: String,
        /// What is wrong.
        reason: String,
    },
    /// Another currency than the wallet's.
    #[error("the wallet is in {wallet}, not {given}")]
    CurrencyMismatch {
        /// The wallet's currency.
        wallet: Currency,
        /// The currency given.
        given: Currency,
    },
    /// The key was used before with another body.
    #[error("idempotency key {key:?} was used before with another request")]
    IdempotencyConflict {
        /// The key.
        key: String,
    },
    /// An empty or overlong idempotency key, or a bad memo.
    #[error("invalid request: {0}")]
    Invalid(String),
    /// The backend failed.
    #[error(transparent)]
    Backend(#[from] BackendError),
}

/// Checks a credit: positive, at most [`MAX_CREDIT`], no more decimals than the
/// currency's minor unit; answers it at the currency's scale (`1000.00`, never
/// `1000.000000000`), as it is stored.
pub fn validate_credit(amount: Decimal, currency: Currency) -> Result<Decimal, WalletError> {
    let invalid = |reason: String| WalletError::InvalidAmount {
        amount: amount.to_string(),
        reason,
    };
    if amount <= Decimal::ZERO {
        return Err(invalid("must be positive".into()));
    }
    if amount > MAX_CREDIT {
        return Err(invalid(format!("at most {MAX_CREDIT} at a time")));
    }
    if amount.normalize().scale() > currency.minor_digits() {
        return Err(invalid(format!(
            "{currency} has {} decimal places",
            currency.minor_digits()
        )));
    }
    Ok(currency.canonical(amount))
}

/// Checks an idempotency key: 1 to 128 printable characters.
pub fn validate_key(key: &str) -> Result<(), WalletError> {
    if key.is_empty() || key.len() > 128 || key.chars().any(char::is_control) {
        return Err(WalletError::Invalid(
            "an idempotency key is 1 to 128 characters, none of them control characters".into(),
        ));
    }
    Ok(())
}

/// What a write asks for, to recognise a replay: the same key must come with the same
/// body.
pub fn fingerprint(kind: EntryKind, amount: Decimal, currency: Currency, extra: &str) -> String {
    format!("{kind}|{}|{currency}|{extra}", amount.normalize())
}

/// A wallet write, as every store carries it out: a credit creating a lot, or a debit
/// consuming lots. Building one validates it; its fingerprint is what a replay of the
/// same idempotency key must match.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WalletWrite<'a> {
    /// A credit: a new lot of `amount`.
    Credit {
        /// Top-up, granted credit, refund or positive adjustment.
        kind: EntryKind,
        /// Paid or granted.
        lot: LotKind,
        /// Positive.
        amount: Decimal,
        /// When a granted credit expires.
        expires_at: Option<DateTime<Utc>>,
        /// A note.
        memo: Option<&'a str>,
    },
    /// A debit of `amount` (positive) consuming lots.
    Debit {
        /// Usage debit or negative adjustment.
        kind: EntryKind,
        /// Positive: what leaves the balance.
        amount: Decimal,
        /// A note.
        memo: Option<&'a str>,
        /// The conversion of usage priced in another currency.
        conversion: Option<&'a Conversion>,
    },
}

impl<'a> WalletWrite<'a> {
    /// A paid top-up.
    pub fn top_up(amount: Decimal, currency: Currency) -> Result<WalletWrite<'a>, WalletError> {
        let amount = validate_credit(amount, currency)?;
        Ok(WalletWrite::Credit {
            kind: EntryKind::TopUp,
            lot: LotKind::Paid,
            amount,
            expires_at: None,
            memo: None,
        })
    }

    /// A granted credit, expiring after `at` if it expires at all.
    pub fn grant(
        amount: Decimal,
        currency: Currency,
        expires_at: Option<DateTime<Utc>>,
        at: DateTime<Utc>,
    ) -> Result<WalletWrite<'a>, WalletError> {
        let amount = validate_credit(amount, currency)?;
        if expires_at.is_some_and(|e| e <= at) {
            return Err(WalletError::Invalid(
                "a credit's expiry must be after its grant".into(),
            ));
        }
        Ok(WalletWrite::Credit {
            kind: EntryKind::GrantedCredit,
            lot: LotKind::Granted,
            amount,
            expires_at,
            memo: None,
        })
    }

    /// A refund (positive) or an adjustment (positive: a paid lot; negative: a debit).
    pub fn adjustment(
        kind: EntryKind,
        amount: Decimal,
        currency: Currency,
        memo: &'a str,
    ) -> Result<WalletWrite<'a>, WalletError> {
        let amount = if amount.is_sign_negative() {
            -validate_credit(-amount, currency)?
        } else {
            validate_credit(amount, currency)?
        };
        let write = match kind {
            EntryKind::Refund | EntryKind::Adjustment if amount > Decimal::ZERO => {
                WalletWrite::Credit {
                    kind,
                    lot: LotKind::Paid,
                    amount,
                    expires_at: None,
                    memo: Some(memo),
                }
            }
            EntryKind::Adjustment if amount < Decimal::ZERO => WalletWrite::Debit {
                kind,
                amount: -amount,
                memo: Some(memo),
                conversion: None,
            },
            _ => {
                return Err(WalletError::Invalid(format!(
                    "{kind} of {amount}: refunds are positive, adjustments non-zero"
                )));
            }
        };
        Ok(write)
    }

    /// A drain step's usage debit (no validation: spend that happened is owed).
    pub fn usage(debit: &'a UsageDebit) -> WalletWrite<'a> {
        WalletWrite::Debit {
            kind: EntryKind::UsageDebit,
            amount: debit.amount,
            memo: None,
            conversion: debit.conversion.as_ref(),
        }
    }

    /// What a replay of the same key must match.
    pub fn fingerprint(&self, currency: Currency) -> String {
        match *self {
            WalletWrite::Credit {
                kind,
                amount,
                expires_at,
                memo,
                ..
            } => fingerprint(
                kind,
                amount,
                currency,
                &format!("{expires_at:?}|{}", memo.unwrap_or_default()),
            ),
            WalletWrite::Debit {
                kind, amount, memo, ..
            } => fingerprint(kind, -amount, currency, memo.unwrap_or_default()),
        }
    }
}

/// The order debits consume lots: granted before paid, the soonest expiry first
/// (never-expiring granted credit after expiring), then oldest first.
pub fn consumption_order(lots: &mut [Lot]) {
    lots.sort_by(|a, b| {
        let rank = |l: &Lot| u8::from(l.kind == LotKind::Paid);
        rank(a)
            .cmp(&rank(b))
            .then_with(|| match (a.expires_at, b.expires_at) {
                (Some(x), Some(y)) => x.cmp(&y),
                (Some(_), None) => std::cmp::Ordering::Less,
                (None, Some(_)) => std::cmp::Ordering::Greater,
                (None, None) => std::cmp::Ordering::Equal,
            })
            .then_with(|| a.created_at.cmp(&b.created_at))
            .then_with(|| a.id.cmp(&b.id))
    });
}

/// Takes `amount` (positive) from the lots still usable at `at`, in consumption order,
/// reducing their `remaining`; the part no lot covers is an allocation without a lot.
pub fn allocate(lots: &mut [Lot], amount: Decimal, at: DateTime<Utc>) -> Vec<Allocation> {
    consumption_order(lots);
    let mut left = amount;
    let mut out = Vec::new();
    for lot in lots.iter_mut() {
        if left.is_zero() {
            break;
        }
        let usable = lot.remaining > Decimal::ZERO && lot.expires_at.is_none_or(|e| e > at);
        if !usable {
            continue;
        }
        let take = left.min(lot.remaining);
        lot.remaining -= take;
        left -= take;
        out.push(Allocation {
            lot: Some(lot.id),
            amount: take,
        });
    }
    if left > Decimal::ZERO {
        out.push(Allocation {
            lot: None,
            amount: left,
        });
    }
    out
}

/// The lots that have expired by `at` with something left.
pub fn expired(lots: &[Lot], at: DateTime<Utc>) -> Vec<&Lot> {
    lots.iter()
        .filter(|l| l.remaining > Decimal::ZERO && l.expires_at.is_some_and(|e| e <= at))
        .collect()
}

/// One workspace's managed spend in a drain step, by currency and UTC day.
pub type ManagedSpend = BTreeMap<(Currency, NaiveDate), Decimal>;

/// The managed, priced spend of a drain step's events, per workspace. BYOK and
/// unpriced events are never debited. Workspaces with nothing to debit are left out.
pub fn managed_spend(
    events: &[crate::spend::SpendEvent],
) -> Result<BTreeMap<WorkspaceId, ManagedSpend>, DebitError> {
    let mut out: BTreeMap<WorkspaceId, ManagedSpend> = BTreeMap::new();
    for event in events
        .iter()
        .filter(|e| e.billing_mode == crate::attribution::BillingMode::Managed)
    {
        let crate::spend::Pricing::Priced { cost, currency, .. } = &event.pricing else {
            continue;
        };
        let sum = out
            .entry(event.attribution.who.workspace.clone())
            .or_default()
            .entry((*currency, event.day()))
            .or_default();
        *sum = sum.checked_add(*cost).ok_or(DebitError::Overflow)?;
    }
    for spend in out.values_mut() {
        spend.retain(|_, amount| !amount.is_zero());
    }
    out.retain(|_, spend| !spend.is_empty());
    Ok(out)
}

/// The currency a new wallet opens in when the drain debits it first: the currency
/// most of the spend is in (the first by code among equals).
pub fn first_currency(spend: &ManagedSpend) -> Option<Currency> {
    spend.keys().map(|(c, _)| *c).next()
}

/// A usage debit a drain step posts to one wallet, in the wallet's currency.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageDebit {
    /// What leaves the balance (positive), exact.
    pub amount: Decimal,
    /// For spend priced in another currency: the conversion (one debit per currency
    /// and day, each at that day's rate).
    pub conversion: Option<Conversion>,
    /// What tells this debit's idempotency key from the step's other debits of the
    /// same wallet (`""` for spend in the wallet's own currency).
    pub key_suffix: String,
}

/// Why a drain step's usage cannot be debited.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DebitError {
    /// Spend in another currency than the wallet's, with no rate for its day.
    #[error(transparent)]
    MissingRate(#[from] MissingRate),
    /// A sum beyond the exact range.
    #[error("a usage debit overflows")]
    Overflow,
}

impl From<DebitError> for BackendError {
    fn from(e: DebitError) -> BackendError {
        BackendError::new(ErrorKind::Invalid, e.to_string()).with_source(e)
    }
}

/// No exchange rate for a day: the spend is not debited at a guess.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("no exchange rate from {from} to {to} for {day}")]
pub struct MissingRate {
    /// The spend's currency.
    pub from: Currency,
    /// The wallet's.
    pub to: Currency,
    /// The spend's UTC day.
    pub day: NaiveDate,
}

/// The debits of one workspace's spend into a wallet kept in `wallet`: the spend in
/// that currency as one debit, every other currency's spend one debit per day,
/// converted exactly at that day's rate.
pub fn debits_in(
    wallet: Currency,
    spend: &ManagedSpend,
    rates: &dyn ExchangeRates,
) -> Result<Vec<UsageDebit>, DebitError> {
    let mut own = Decimal::ZERO;
    let mut out = Vec::new();
    for (&(currency, day), &amount) in spend {
        if currency == wallet {
            own = own.checked_add(amount).ok_or(DebitError::Overflow)?;
            continue;
        }
        let rate = rates.rate(currency, wallet, day).ok_or(MissingRate {
            from: currency,
            to: wallet,
            day,
        })?;
        out.push(UsageDebit {
            amount: amount.checked_mul(rate).ok_or(DebitError::Overflow)?,
            conversion: Some(Conversion {
                from: currency,
                amount,
                rate,
                day,
            }),
            key_suffix: format!(":{currency}:{day}"),
        });
    }
    if !own.is_zero() {
        out.insert(
            0,
            UsageDebit {
                amount: own,
                conversion: None,
                key_suffix: String::new(),
            },
        );
    }
    out.retain(|d| !d.amount.is_zero());
    Ok(out)
}

/// The idempotency key of a drain step's usage debit: the step is unique per shard
/// and watermark, so a replayed step never debits twice.
pub fn usage_debit_key(
    shard: crate::spend::ShardId,
    through: crate::spend::QueuePosition,
) -> String {
    format!("drain:{shard}:{through}")
}

/// A page of ledger entries, newest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TransactionPage {
    /// The entries.
    pub entries: Vec<LedgerEntry>,
    /// Pass as `before` for the next page; `None` on the last page.
    pub next_cursor: Option<u64>,
}

/// Which entries to list.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TransactionQuery {
    /// Only these kinds (`None`: all).
    pub kinds: Option<Vec<EntryKind>>,
    /// From this instant, inclusive.
    pub from: Option<DateTime<Utc>>,
    /// Before this instant, exclusive.
    pub to: Option<DateTime<Utc>>,
    /// Entries with an id below this (the cursor of the previous page).
    pub before: Option<u64>,
    /// At most this many (1 to 1,000).
    pub limit: usize,
}

impl TransactionQuery {
    /// Whether an entry passes the filters (not the cursor).
    pub fn matches(&self, entry: &LedgerEntry) -> bool {
        self.kinds.as_ref().is_none_or(|k| k.contains(&entry.kind))
            && self.from.is_none_or(|from| entry.at >= from)
            && self.to.is_none_or(|to| entry.at < to)
            && self.before.is_none_or(|before| entry.id < before)
    }
}

/// The wallets' port.
#[async_trait::async_trait]
pub trait Wallets: fmt::Debug + Send + Sync + 'static {
    /// Opens a workspace's wallet in a currency; opening it again in the same currency
    /// does nothing, in another is refused.
    async fn open(&self, workspace: &WorkspaceId, currency: Currency) -> Result<(), WalletError>;

    /// Carries out one ledger write, once per idempotency key: a replay of `key` with
    /// the same write returns the first entry (with [`Written::replayed`] set), with
    /// another write is [`WalletError::IdempotencyConflict`]. A write in another
    /// currency than the wallet's is [`WalletError::CurrencyMismatch`]; a wallet that
    /// was never opened is opened in `currency`. `top_up`, `grant` and `adjust` build
    /// their [`WalletWrite`] and come here.
    async fn write(
        &self,
        workspace: &WorkspaceId,
        currency: Currency,
        write: &WalletWrite<'_>,
        key: &str,
        at: DateTime<Utc>,
    ) -> Result<Written, WalletError>;

    /// A paid top-up: a new paid lot.
    async fn top_up(
        &self,
        workspace: &WorkspaceId,
        amount: Decimal,
        currency: Currency,
        key: &str,
        at: DateTime<Utc>,
    ) -> Result<Written, WalletError> {
        let write = WalletWrite::top_up(amount, currency)?;
        self.write(workspace, currency, &write, key, at).await
    }

    /// A granted credit, optionally expiring: a new granted lot.
    async fn grant(
        &self,
        workspace: &WorkspaceId,
        amount: Decimal,
        currency: Currency,
        expires_at: Option<DateTime<Utc>>,
        key: &str,
        at: DateTime<Utc>,
    ) -> Result<Written, WalletError> {
        let write = WalletWrite::grant(amount, currency, expires_at, at)?;
        self.write(workspace, currency, &write, key, at).await
    }

    /// A refund (positive) or an adjustment (either sign), with a memo.
    #[allow(clippy::too_many_arguments)]
    async fn adjust(
        &self,
        workspace: &WorkspaceId,
        kind: EntryKind,
        amount: Decimal,
        currency: Currency,
        memo: &str,
        key: &str,
        at: DateTime<Utc>,
    ) -> Result<Written, WalletError> {
        let write = WalletWrite::adjustment(kind, amount, currency, memo)?;
        self.write(workspace, currency, &write, key, at).await
    }

    /// Moves the remainder of every granted lot expired by `at` out of the balance,
    /// one `CreditExpiry` entry per lot.
    async fn expire(
        &self,
        workspace: &WorkspaceId,
        at: DateTime<Utc>,
    ) -> Result<Vec<LedgerEntry>, WalletError>;

    /// The balance and open lots (after expiring what expired by `at`).
    async fn balance(
        &self,
        workspace: &WorkspaceId,
        at: DateTime<Utc>,
    ) -> Result<Balance, WalletError>;

    /// Entries newest first, filtered, by cursor.
    async fn transactions(
        &self,
        workspace: &WorkspaceId,
        query: &TransactionQuery,
    ) -> Result<TransactionPage, WalletError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(day: u32) -> DateTime<Utc> {
        chrono::NaiveDate::from_ymd_opt(2026, 11, day)
            .and_then(|d| d.and_hms_opt(0, 0, 0))
            .map(|t| t.and_utc())
            .unwrap()
    }

    fn lot(id: u64, kind: LotKind, remaining: &str, created: u32, expires: Option<u32>) -> Lot {
        let remaining = Decimal::from_str_exact(remaining).unwrap();
        Lot {
            id,
            kind,
            amount: remaining,
            remaining,
            created_at: at(created),
            expires_at: expires.map(at),
        }
    }

    #[test]
    fn granted_before_paid_soonest_expiry_first() {
        let mut lots = vec![
            lot(1, LotKind::Paid, "10", 1, None),
            lot(2, LotKind::Granted, "5", 2, None),
            lot(3, LotKind::Granted, "3", 3, Some(20)),
            lot(4, LotKind::Granted, "4", 4, Some(10)),
            lot(5, LotKind::Granted, "100", 1, Some(5)), // expired by the 6th
        ];
        let taken = allocate(&mut lots, Decimal::from(15), at(6));
        let ids: Vec<_> = taken.iter().map(|a| (a.lot, a.amount)).collect();
        assert_eq!(
            ids,
            vec![
                (Some(4), Decimal::from(4)),
                (Some(3), Decimal::from(3)),
                (Some(2), Decimal::from(5)),
                (Some(1), Decimal::from(3)),
            ]
        );
        let rest = allocate(&mut lots, Decimal::from(10), at(6));
        assert_eq!(rest.last().unwrap().lot, None, "the part beyond every lot");
        assert_eq!(rest.last().unwrap().amount, Decimal::from(3));
        assert_eq!(expired(&lots, at(6)).len(), 1);
    }

    #[test]
    fn credits_are_validated() {
        let usd = Currency::USD;
        assert!(validate_credit(Decimal::from_str_exact("1000.00").unwrap(), usd).is_ok());
        assert!(validate_credit(Decimal::from_str_exact("0.001").unwrap(), usd).is_err());
        assert!(validate_credit(Decimal::ZERO, usd).is_err());
        assert!(validate_credit(Decimal::from(-5), usd).is_err());
        assert!(validate_credit(Decimal::from(1_000_001), usd).is_err());
        assert!(validate_credit(Decimal::from_str_exact("1.5").unwrap(), Currency::JPY).is_err());
        assert!(validate_key("").is_err());
        assert!(validate_key("key\n").is_err());
    }
}
