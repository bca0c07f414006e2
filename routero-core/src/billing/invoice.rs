//! Monthly invoices per workspace.
//!
//! An invoice has a line per provider and model of the month's managed spend at list
//! price (zero markup), the control-plane subscription line when the workspace has a
//! plan (what BYOK workspaces pay), a line per month whose spend arrived after that
//! month's invoice was finalised, the month's top-ups as payments, and the wallet's
//! opening and closing balances.
//!
//! **Rounding.** Nothing is rounded but what is shown, and the total is rounded once:
//! - the total is the exact sum of the lines rounded half to even at the currency's
//!   minor unit, so it is within half a minor unit of what was spent, however many
//!   lines there are;
//! - each line keeps its exact amount and is shown at two digits past the minor unit
//!   (the product page's $0.0001), rounded on the running sum so that the shown lines
//!   add up to the exact total so rounded, each within one such digit of its own exact
//!   amount;
//! - when the shown lines do not add up to the total, one `rounding` line (exact
//!   amount zero) makes them; it is less than one minor unit.
//!
//! **Finalising** a month numbers the invoice and freezes it; spend that arrives for
//! that month later never edits it and appears as an adjustment line on the next
//! invoice.

use std::collections::BTreeMap;

use chrono::{DateTime, Datelike, NaiveDate, Utc};
use rust_decimal::{Decimal, RoundingStrategy};
use serde::{Deserialize, Serialize};

use crate::attribution::{BillingMode, OrgId, WorkspaceId};
use crate::money::{Currency, ExchangeRates};
use crate::port::{BackendError, GroupBy, RollupFilter, SpendReader};
use crate::wallet::{EntryKind, MissingRate, TransactionQuery, WalletError, Wallets};

/// A calendar month; serialised as `"YYYY-MM"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct Month {
    /// The year.
    pub year: i32,
    /// 1 to 12.
    pub month: u32,
}

impl From<Month> for String {
    fn from(month: Month) -> String {
        month.to_string()
    }
}

impl TryFrom<String> for Month {
    type Error = String;

    fn try_from(text: String) -> Result<Month, String> {
        Month::parse(&text).ok_or_else(|| format!("{text:?} is not a YYYY-MM month"))
    }
}

impl Month {
    /// Parses `YYYY-MM`.
    pub fn parse(text: &str) -> Option<Month> {
        let (year, month) = text.split_once('-')?;
        if year.len() != 4 || month.len() != 2 {
            return None;
        }
        let month = Month {
            year: year.parse().ok()?,
            month: month.parse().ok()?,
        };
        month.first_day().map(|_| month)
    }

    /// The month of a day.
    pub fn of(day: NaiveDate) -> Month {
        Month {
            year: day.year(),
            month: day.month(),
        }
    }

    /// Its first day.
    pub fn first_day(self) -> Option<NaiveDate> {
        NaiveDate::from_ymd_opt(self.year, self.month, 1)
    }

    /// The next month.
    pub fn next(self) -> Month {
        if self.month == 12 {
            Month {
                year: self.year + 1,
                month: 1,
            }
        } else {
            Month {
                year: self.year,
                month: self.month + 1,
            }
        }
    }

    /// The month before.
    pub fn previous(self) -> Month {
        if self.month == 1 {
            Month {
                year: self.year - 1,
                month: 12,
            }
        } else {
            Month {
                year: self.year,
                month: self.month - 1,
            }
        }
    }

    /// Its first and last days.
    pub fn days(self) -> Option<(NaiveDate, NaiveDate)> {
        let first = self.first_day()?;
        let next = self.next().first_day()?;
        Some((first, next.pred_opt()?))
    }

    /// The month's first instant (00:00 UTC of its first day).
    pub fn start(self) -> Option<DateTime<Utc>> {
        Some(self.first_day()?.and_hms_opt(0, 0, 0)?.and_utc())
    }
}

impl std::fmt::Display for Month {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(&format!("{:04}-{:02}", self.year, self.month))
    }
}

/// What a line bills.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum LineKind {
    /// Managed-key usage of one model, at list price.
    Usage {
        /// The provider.
        provider: String,
        /// The model.
        model: String,
        /// Requests.
        requests: u64,
        /// Tokens (prompt and completion).
        tokens: u64,
    },
    /// The control-plane subscription.
    Subscription,
    /// Managed spend of an earlier, finalised month that arrived, or was corrected by
    /// a repricing, after it was finalised (a credit when negative): the finalised
    /// invoice never changes, the next one carries the difference.
    LateSpend {
        /// That month.
        month: Month,
    },
    /// What makes the shown lines add up to the total: less than one minor unit, with
    /// an exact amount of zero.
    Rounding,
}

/// One invoice line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvoiceLine {
    /// What it bills.
    #[serde(flatten)]
    pub kind: LineKind,
    /// A description for a person.
    pub description: String,
    /// The exact amount.
    #[serde(with = "rust_decimal::serde::str")]
    pub exact_amount: Decimal,
    /// The amount shown, at two digits past the currency's minor unit (see the module's
    /// rounding rules).
    #[serde(with = "rust_decimal::serde::str")]
    pub amount: Decimal,
    /// For usage priced in another currency than the invoice's: what was converted,
    /// at which rate of which day.
    #[serde(default)]
    pub conversion: Option<LineConversion>,
}

/// The conversion behind a line of usage priced in another currency.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LineConversion {
    /// The currency the usage was priced in.
    pub from: Currency,
    /// The usage in it, exact.
    #[serde(with = "rust_decimal::serde::str")]
    pub amount: Decimal,
    /// The rate of each day with usage (`to` per unit of `from`); the line is the exact
    /// sum of each day's usage times its rate.
    pub rates: BTreeMap<NaiveDate, Decimal>,
}

/// A top-up received in the month.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Payment {
    /// When.
    pub at: DateTime<Utc>,
    /// How much.
    #[serde(with = "rust_decimal::serde::str")]
    pub amount: Decimal,
    /// Its idempotency key (the payment reference).
    pub reference: String,
}

/// Draft or final.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InvoiceStatus {
    /// The month is open; the invoice may still change.
    Draft,
    /// Numbered and immutable.
    Final,
}

/// A workspace's invoice for a month.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Invoice {
    /// The org.
    pub org: OrgId,
    /// The workspace.
    pub workspace: WorkspaceId,
    /// The month.
    pub month: Month,
    /// Draft or final.
    pub status: InvoiceStatus,
    /// The number, once final.
    pub number: Option<String>,
    /// When it was finalised.
    pub finalized_at: Option<DateTime<Utc>>,
    /// The currency.
    pub currency: Currency,
    /// The lines.
    pub lines: Vec<InvoiceLine>,
    /// What is billed: the exact total rounded once, half to even, at the currency's
    /// minor unit; the sum of the lines' shown amounts.
    #[serde(with = "rust_decimal::serde::str")]
    pub total: Decimal,
    /// The sum of the lines' exact amounts.
    #[serde(with = "rust_decimal::serde::str")]
    pub exact_total: Decimal,
    /// Top-ups received in the month.
    pub payments: Vec<Payment>,
    /// The wallet's balance when the month began, exact.
    #[serde(with = "rust_decimal::serde::str")]
    pub opening_balance: Decimal,
    /// The wallet's balance when the month ended (or now, for an open month), exact.
    #[serde(with = "rust_decimal::serde::str")]
    pub closing_balance: Decimal,
    /// The month's managed spend in the rollups when the invoice was made: what later
    /// spend of the month is measured against.
    #[serde(with = "rust_decimal::serde::str")]
    pub managed_spend: Decimal,
}

/// A workspace's billing configuration: the org it belongs to, the currency its
/// wallet and invoices are kept in (fixed before any money moves), and its
/// control-plane plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkspaceBilling {
    /// The org.
    pub org: OrgId,
    /// The billing currency (USD unless configured).
    pub currency: Currency,
    /// The subscription price per month, if the workspace has a plan.
    #[serde(default, with = "rust_decimal::serde::str_option")]
    pub plan: Option<Decimal>,
}

/// The billing configuration of every workspace a deployment bills: which org each
/// belongs to, its currency and its plan. A workspace it does not name is billed in
/// USD without a plan.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BillingDirectory {
    workspaces: BTreeMap<WorkspaceId, WorkspaceBilling>,
}

impl BillingDirectory {
    /// An empty directory: every workspace in USD, none with a plan.
    pub fn new() -> BillingDirectory {
        BillingDirectory::default()
    }

    /// Adds (or replaces) a workspace's configuration.
    pub fn with(mut self, workspace: WorkspaceId, billing: WorkspaceBilling) -> BillingDirectory {
        self.workspaces.insert(workspace, billing);
        self
    }

    /// A workspace's configuration, if the directory names it.
    pub fn get(&self, workspace: &WorkspaceId) -> Option<&WorkspaceBilling> {
        self.workspaces.get(workspace)
    }

    /// The currency a workspace is billed in (USD when not configured).
    pub fn currency(&self, workspace: &WorkspaceId) -> Currency {
        self.get(workspace).map_or(Currency::USD, |b| b.currency)
    }

    /// A workspace's plan price, if it has a plan.
    pub fn plan(&self, workspace: &WorkspaceId) -> Option<Decimal> {
        self.get(workspace).and_then(|b| b.plan)
    }

    /// Every workspace configured, with its configuration, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&WorkspaceId, &WorkspaceBilling)> {
        self.workspaces.iter()
    }

    /// The workspaces configured for an org, in order.
    pub fn workspaces_of<'a>(&'a self, org: &'a OrgId) -> impl Iterator<Item = &'a WorkspaceId> {
        self.workspaces
            .iter()
            .filter(move |(_, b)| b.org == *org)
            .map(|(w, _)| w)
    }

    /// Reads a directory from TOML, one table per workspace:
    ///
    /// ```toml
    /// [[workspace]]
    /// id = "acme-prod"
    /// org = "acme"
    /// currency = "EUR"   # upper-case ISO 4217; USD when left out
    /// plan = "49.00"     # the monthly subscription, in the money grammar; none when left out
    /// ```
    ///
    /// ```
    /// # use routero_core::invoice::BillingDirectory;
    /// let directory = BillingDirectory::from_toml(
    ///     "[[workspace]]\nid = \"acme-prod\"\norg = \"acme\"\ncurrency = \"EUR\"\nplan = \"49\"\n",
    /// )?;
    /// let acme_prod = "acme-prod".parse()?;
    /// assert_eq!(directory.currency(&acme_prod).code(), "EUR");
    /// assert_eq!(directory.plan(&acme_prod).map(|p| p.to_string()), Some("49.00".into()));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn from_toml(text: &str) -> Result<BillingDirectory, String> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct File {
            #[serde(default)]
            workspace: Vec<Entry>,
        }
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Entry {
            id: String,
            org: String,
            currency: Option<String>,
            plan: Option<String>,
        }
        let file: File = toml::from_str(text).map_err(|e| e.to_string())?;
        let mut out = BillingDirectory::new();
        for entry in file.workspace {
            let at = |e: String| format!("workspace {:?}: {e}", entry.id);
            let workspace = WorkspaceId::new(&entry.id).map_err(|e| at(e.to_string()))?;
            if out.workspaces.contains_key(&workspace) {
                return Err(at("configured twice".into()));
            }
            let currency: Currency = match &entry.currency {
                Some(code) => code
                    .parse()
                    .map_err(|e: crate::money::UnknownCurrency| at(e.to_string()))?,
                None => Currency::USD,
            };
            let plan = entry
                .plan
                .as_deref()
                .map(|p| crate::money::parse_amount(p, currency))
                .transpose()
                .map_err(|e| at(format!("plan: {e}")))?;
            let billing = WorkspaceBilling {
                org: OrgId::new(&entry.org).map_err(|e| at(e.to_string()))?,
                currency,
                plan,
            };
            out.workspaces.insert(workspace, billing);
        }
        Ok(out)
    }

    /// Opens every configured workspace's wallet in its currency, so that the currency
    /// is fixed before money moves; a wallet already kept in another currency is
    /// [`WalletError::CurrencyMismatch`].
    pub async fn open_wallets(&self, wallets: &dyn Wallets) -> Result<(), WalletError> {
        for (workspace, billing) in &self.workspaces {
            wallets.open(workspace, billing.currency).await?;
        }
        Ok(())
    }
}

/// Why an invoice cannot be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InvoiceError {
    /// A month that does not exist or is not over yet (finalising).
    #[error("invalid month: {0}")]
    Month(String),
    /// The backend failed.
    #[error(transparent)]
    Backend(#[from] BackendError),
    /// The wallet failed.
    #[error(transparent)]
    Wallet(#[from] WalletError),
    /// Managed usage in another currency than the invoice's, with no rate for its day.
    #[error(transparent)]
    MissingRate(#[from] MissingRate),
}

/// Where finalised invoices are kept.
#[async_trait::async_trait]
pub trait InvoiceStore: std::fmt::Debug + Send + Sync + 'static {
    /// Saves a final invoice, giving it the next number; a month already finalised
    /// keeps its invoice, which is returned instead.
    async fn finalize(&self, invoice: Invoice, at: DateTime<Utc>) -> Result<Invoice, BackendError>;

    /// The final invoices of a workspace, oldest month first.
    async fn finalized(&self, workspace: &WorkspaceId) -> Result<Vec<Invoice>, BackendError>;
}

fn shown(amount: Decimal, currency: Currency) -> Decimal {
    round(amount, currency.minor_digits())
}

fn round(amount: Decimal, digits: u32) -> Decimal {
    let mut out = amount.round_dp_with_strategy(digits, RoundingStrategy::MidpointNearestEven);
    out.rescale(digits);
    out
}

/// How many digits past the minor unit a line is shown with (the product page's
/// resolution: $0.0001).
pub const LINE_EXTRA_DIGITS: u32 = 2;

fn line(kind: LineKind, description: String, exact: Decimal) -> InvoiceLine {
    InvoiceLine {
        kind,
        description,
        exact_amount: exact,
        amount: exact,
        conversion: None,
    }
}

/// Sets the shown amounts of `lines` from their exact ones, appends a rounding line
/// where one is needed, and answers the total and the exact total (the module's
/// rounding rules).
pub fn settle(lines: &mut Vec<InvoiceLine>, currency: Currency) -> (Decimal, Decimal) {
    let digits = currency.minor_digits() + LINE_EXTRA_DIGITS;
    let mut exact_total = Decimal::ZERO;
    let mut shown_so_far = round(Decimal::ZERO, digits);
    for l in lines.iter_mut() {
        l.exact_amount = currency.canonical(l.exact_amount);
        exact_total += l.exact_amount;
        let running = round(exact_total, digits);
        l.amount = running - shown_so_far;
        shown_so_far = running;
    }
    let total = shown(exact_total, currency);
    if shown_so_far != total {
        lines.push(InvoiceLine {
            kind: LineKind::Rounding,
            description: format!("Rounding to the {currency} minor unit"),
            exact_amount: Decimal::ZERO,
            amount: round(total - shown_so_far, digits),
            conversion: None,
        });
    }
    (total, currency.canonical(exact_total))
}

/// A month's managed usage of a workspace per provider and model, in `currency`:
/// usage priced in it as it is, usage priced in another converted at each day's rate.
#[derive(Debug, Default)]
struct ModelUsage {
    /// In `currency`, exact.
    amount: Decimal,
    requests: u64,
    tokens: u64,
    /// The conversion, for usage priced in another currency.
    conversion: Option<LineConversion>,
}

async fn managed_usage(
    reader: &dyn SpendReader,
    rates: &dyn ExchangeRates,
    org: &OrgId,
    workspace: &WorkspaceId,
    month: Month,
    currency: Currency,
) -> Result<BTreeMap<(String, String, Option<Currency>), ModelUsage>, InvoiceError> {
    let (from, to) = month
        .days()
        .ok_or_else(|| InvoiceError::Month(month.to_string()))?;
    let mut filter = RollupFilter::new(org.clone(), from, to);
    filter.workspaces = Some(vec![workspace.clone()]);
    filter.billing_mode = Some(BillingMode::Managed);
    filter.group_by = GroupBy {
        provider: true,
        model: true,
        ..GroupBy::default()
    };
    let mut out: BTreeMap<(String, String, Option<Currency>), ModelUsage> = BTreeMap::new();
    for row in reader.rollups(&filter).await? {
        // Unpriced requests (no currency) count with the invoice's own currency.
        let foreign = row.key.currency.filter(|c| *c != currency);
        let key = (
            row.key.provider.map(|p| p.to_string()).unwrap_or_default(),
            row.key.model.unwrap_or_default(),
            foreign,
        );
        let usage = out.entry(key).or_default();
        usage.requests += row.totals.requests();
        usage.tokens += row
            .totals
            .prompt_tokens()
            .saturating_add(row.totals.output_tokens);
        match foreign {
            None => usage.amount += row.totals.cost,
            Some(from) if !row.totals.cost.is_zero() => {
                let day = row.key.day;
                let rate = rates.rate(from, currency, day).ok_or(MissingRate {
                    from,
                    to: currency,
                    day,
                })?;
                usage.amount += row.totals.cost * rate;
                let conversion = usage.conversion.get_or_insert_with(|| LineConversion {
                    from,
                    amount: Decimal::ZERO,
                    rates: BTreeMap::new(),
                });
                conversion.amount += row.totals.cost;
                conversion.rates.insert(day, rate);
            }
            Some(_) => {}
        }
    }
    Ok(out)
}

async fn managed_spend(
    reader: &dyn SpendReader,
    rates: &dyn ExchangeRates,
    org: &OrgId,
    workspace: &WorkspaceId,
    month: Month,
    currency: Currency,
) -> Result<Decimal, InvoiceError> {
    Ok(
        managed_usage(reader, rates, org, workspace, month, currency)
            .await?
            .values()
            .map(|u| u.amount)
            .sum(),
    )
}

/// The wallet balance just before `at`: the sum of the entries before it.
async fn balance_before(
    wallets: &dyn Wallets,
    workspace: &WorkspaceId,
    at: DateTime<Utc>,
) -> Result<Decimal, InvoiceError> {
    let mut sum = Decimal::ZERO;
    let mut before = None;
    loop {
        let page = wallets
            .transactions(
                workspace,
                &TransactionQuery {
                    to: Some(at),
                    before,
                    limit: 1_000,
                    ..TransactionQuery::default()
                },
            )
            .await?;
        sum += page.entries.iter().map(|e| e.amount).sum::<Decimal>();
        match page.next_cursor {
            Some(cursor) => before = Some(cursor),
            None => return Ok(sum),
        }
    }
}

/// The ports invoices are made from.
#[derive(Debug, Clone, Copy)]
pub struct Billing<'a> {
    /// The rollups.
    pub reader: &'a dyn SpendReader,
    /// The wallets.
    pub wallets: &'a dyn Wallets,
    /// The finalised invoices.
    pub invoices: &'a dyn InvoiceStore,
    /// What usage priced in another currency than the wallet's converts at (the
    /// rates the drain debited it at).
    pub rates: &'a dyn ExchangeRates,
}

impl Billing<'_> {
    /// The invoice of `month` for a workspace as it stands at `now`: the final one when
    /// the month was finalised, else a draft built from the rollups and the wallet.
    /// `subscription` is the workspace's plan price per month, if it has a plan.
    pub async fn invoice(
        &self,
        org: &OrgId,
        workspace: &WorkspaceId,
        month: Month,
        subscription: Option<Decimal>,
        now: DateTime<Utc>,
    ) -> Result<Invoice, InvoiceError> {
        let (reader, wallets) = (self.reader, self.wallets);
        let finalized = self.invoices.finalized(workspace).await?;
        if let Some(done) = finalized.iter().find(|i| i.month == month) {
            return Ok(done.clone());
        }
        let start = month
            .start()
            .ok_or_else(|| InvoiceError::Month(month.to_string()))?;
        let end = month
            .next()
            .start()
            .ok_or_else(|| InvoiceError::Month(month.to_string()))?;
        let balance = wallets.balance(workspace, now.min(end)).await?;
        let currency = balance.currency;

        let mut lines = Vec::new();
        let mut managed = Decimal::ZERO;
        let usage = managed_usage(reader, self.rates, org, workspace, month, currency).await?;
        for ((provider, model, _), usage) in usage {
            managed += usage.amount;
            let ModelUsage {
                amount,
                requests,
                tokens,
                conversion,
            } = usage;
            let priced = match &conversion {
                Some(c) => format!(
                    "at list price in {}, {} {} converted at each day's rate",
                    c.from, c.amount, c.from
                ),
                None => "at list price".to_owned(),
            };
            let mut usage_line = line(
                LineKind::Usage {
                    provider: provider.clone(),
                    model: model.clone(),
                    requests,
                    tokens,
                },
                format!("{provider} {model}: {requests} requests, {tokens} tokens, {priced}"),
                amount,
            );
            usage_line.conversion = conversion;
            lines.push(usage_line);
        }
        if let Some(price) = subscription {
            lines.push(line(
                LineKind::Subscription,
                format!("Control-plane subscription, {month}"),
                price,
            ));
        }
        // Spend of finalised months that arrived after their invoice.
        for earlier in finalized.iter().filter(|i| i.month < month) {
            let now_total =
                managed_spend(reader, self.rates, org, workspace, earlier.month, currency).await?;
            let carried: Decimal = finalized
                .iter()
                .flat_map(|i| i.lines.iter())
                .filter(|l| {
                    l.kind
                        == LineKind::LateSpend {
                            month: earlier.month,
                        }
                })
                .map(|l| l.exact_amount)
                .sum();
            let late = now_total - earlier.managed_spend - carried;
            if !late.is_zero() {
                lines.push(line(
                    LineKind::LateSpend {
                        month: earlier.month,
                    },
                    format!(
                        "Managed spend of {} recorded or repriced after its invoice {}",
                        earlier.month,
                        earlier.number.as_deref().unwrap_or("")
                    ),
                    late,
                ));
            }
        }
        let payments = wallets
            .transactions(
                workspace,
                &TransactionQuery {
                    kinds: Some(vec![EntryKind::TopUp]),
                    from: Some(start),
                    to: Some(end),
                    limit: 1_000,
                    ..TransactionQuery::default()
                },
            )
            .await?
            .entries
            .into_iter()
            .rev()
            .map(|e| Payment {
                at: e.at,
                amount: e.amount,
                reference: e.idempotency_key,
            })
            .collect();
        let (total, exact_total) = settle(&mut lines, currency);
        Ok(Invoice {
            org: org.clone(),
            workspace: workspace.clone(),
            month,
            status: InvoiceStatus::Draft,
            number: None,
            finalized_at: None,
            currency,
            total,
            exact_total,
            lines,
            payments,
            opening_balance: currency.canonical(balance_before(wallets, workspace, start).await?),
            closing_balance: currency
                .canonical(balance_before(wallets, workspace, now.min(end)).await?),
            managed_spend: currency.canonical(managed),
        })
    }

    /// Finalises a month that is over: numbers and freezes its invoice. Finalising it again
    /// returns the same invoice.
    pub async fn close_month(
        &self,
        org: &OrgId,
        workspace: &WorkspaceId,
        month: Month,
        subscription: Option<Decimal>,
        now: DateTime<Utc>,
    ) -> Result<Invoice, InvoiceError> {
        let end = month
            .next()
            .start()
            .ok_or_else(|| InvoiceError::Month(month.to_string()))?;
        if now < end {
            return Err(InvoiceError::Month(format!("{month} is not over yet")));
        }
        let mut draft = self
            .invoice(org, workspace, month, subscription, now)
            .await?;
        if draft.status == InvoiceStatus::Final {
            return Ok(draft);
        }
        draft.status = InvoiceStatus::Final;
        draft.finalized_at = Some(now);
        Ok(self.invoices.finalize(draft, now).await?)
    }
}

impl Invoice {
    /// The lines at the currency's minor unit, as a ledger that takes no finer amount
    /// (an ERP) books them: rounded on the running sum of the exact amounts, so they
    /// add up to [`total`](Self::total) without a rounding line; lines that round to
    /// zero, and the rounding line, are left out.
    pub fn billed_lines(&self) -> Vec<(&InvoiceLine, Decimal)> {
        let digits = self.currency.minor_digits();
        let mut exact = Decimal::ZERO;
        let mut booked = Decimal::ZERO;
        let mut out = Vec::new();
        for line in self.lines.iter().filter(|l| l.kind != LineKind::Rounding) {
            exact += line.exact_amount;
            let running = round(exact, digits);
            let amount = running - booked;
            booked = running;
            if !amount.is_zero() {
                out.push((line, amount));
            }
        }
        out
    }

    /// The invoice as CSV (RFC 4180): one row per line, then the total, payments and
    /// balances, amounts as decimal strings.
    pub fn to_csv(&self) -> String {
        let mut writer = csv::Writer::from_writer(Vec::new());
        let _ = writer.write_record([
            "number",
            "workspace",
            "month",
            "kind",
            "description",
            "currency",
            "exact_amount",
            "amount",
        ]);
        let number = self.number.clone().unwrap_or_default();
        let mut row = |kind: &str, description: &str, exact: String, shown: String| {
            let _ = writer.write_record([
                number.as_str(),
                self.workspace.as_ref(),
                &self.month.to_string(),
                kind,
                description,
                self.currency.code(),
                &exact,
                &shown,
            ]);
        };
        for l in &self.lines {
            let kind = match l.kind {
                LineKind::Usage { .. } => "usage",
                LineKind::Subscription => "subscription",
                LineKind::LateSpend { .. } => "late_spend",
                LineKind::Rounding => "rounding",
            };
            row(
                kind,
                &l.description,
                l.exact_amount.to_string(),
                l.amount.to_string(),
            );
        }
        row(
            "total",
            "",
            self.exact_total.to_string(),
            self.total.to_string(),
        );
        for p in &self.payments {
            row(
                "payment",
                &p.reference,
                p.amount.to_string(),
                shown(p.amount, self.currency).to_string(),
            );
        }
        row(
            "opening_balance",
            "",
            self.opening_balance.to_string(),
            shown(self.opening_balance, self.currency).to_string(),
        );
        row(
            "closing_balance",
            "",
            self.closing_balance.to_string(),
            shown(self.closing_balance, self.currency).to_string(),
        );
        String::from_utf8(writer.into_inner().unwrap_or_default()).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn usage(exact: Decimal) -> InvoiceLine {
        line(LineKind::Subscription, String::new(), exact)
    }

    /// The rules every settled invoice keeps.
    fn check(exact: &[Decimal], currency: Currency) {
        let mut lines: Vec<InvoiceLine> = exact.iter().copied().map(usage).collect();
        let (total, exact_total) = settle(&mut lines, currency);
        let sum: Decimal = exact.iter().copied().sum();
        assert_eq!(exact_total, sum);
        let unit = currency.minor_unit();
        assert!(
            (total - sum).abs() * Decimal::TWO <= unit,
            "total {total} vs exact {sum}"
        );
        assert_eq!(total.scale(), currency.minor_digits());
        assert_eq!(lines.iter().map(|l| l.amount).sum::<Decimal>(), total);
        assert_eq!(lines.iter().map(|l| l.exact_amount).sum::<Decimal>(), sum);
        let resolution = Decimal::new(1, currency.minor_digits() + LINE_EXTRA_DIGITS);
        for l in &lines[..exact.len()] {
            assert!((l.amount - l.exact_amount).abs() <= resolution, "{l:?}");
        }
        let rounding: Vec<_> = lines
            .iter()
            .filter(|l| l.kind == LineKind::Rounding)
            .collect();
        assert!(rounding.len() <= 1);
        if let Some(r) = rounding.first() {
            assert!(r.amount.abs() < unit, "{r:?}");
            assert_eq!(r.exact_amount, Decimal::ZERO);
        }
    }

    #[test]
    fn ten_thousand_small_lines_bill_what_was_spent() {
        let d = |s: &str| Decimal::from_str_exact(s).unwrap();
        let exact = vec![d("0.004"); 10_000];
        check(&exact, Currency::USD);
        let mut lines: Vec<InvoiceLine> = exact.into_iter().map(usage).collect();
        let (total, exact_total) = settle(&mut lines, Currency::USD);
        assert_eq!(
            total.to_string(),
            "40.00",
            "not 0.00 from 10,000 lines of 0.00"
        );
        assert_eq!(exact_total.to_string(), "40.00");
        assert_eq!(lines[0].amount.to_string(), "0.0040");
        assert_eq!(lines.len(), 10_000, "no rounding line is needed");
    }

    #[test]
    fn the_demo_months_are_no_longer_under_billed() {
        let d = |s: &str| Decimal::from_str_exact(s).unwrap();
        // Lines whose per-line rounding used to lose a cent or more.
        let mut lines = vec![
            usage(d("0.004799")),
            usage(d("0.0049")),
            usage(d("0.103401698")),
        ];
        let (total, exact) = settle(&mut lines, Currency::USD);
        assert_eq!(exact.to_string(), "0.113100698");
        assert_eq!(total.to_string(), "0.11");
        let shown: Vec<String> = lines.iter().map(|l| l.amount.to_string()).collect();
        assert_eq!(shown, ["0.0048", "0.0049", "0.1034", "-0.0031"]);
        assert_eq!(lines[3].kind, LineKind::Rounding);
    }

    #[test]
    fn a_directory_is_read_from_toml_and_refuses_what_is_wrong() {
        let ok = BillingDirectory::from_toml(
            "[[workspace]]\nid = \"a\"\norg = \"o\"\n\n[[workspace]]\nid = \"b\"\norg = \"o\"\ncurrency = \"JPY\"\nplan = \"5000\"\n",
        )
        .unwrap();
        let (a, b) = (
            WorkspaceId::new("a").unwrap(),
            WorkspaceId::new("b").unwrap(),
        );
        assert_eq!(ok.currency(&a), Currency::USD);
        assert_eq!(ok.plan(&b).map(|p| p.to_string()), Some("5000".to_owned()));
        let org = OrgId::new("o").unwrap();
        assert_eq!(ok.workspaces_of(&org).count(), 2);
        for (bad, says) in [
            (
                "[[workspace]]\nid = \"a\"\norg = \"o\"\ncurrency = \"usd\"\n",
                "ISO 4217",
            ),
            (
                "[[workspace]]\nid = \"a\"\norg = \"o\"\nplan = \"4.999\"\n",
                "plan",
            ),
            (
                "[[workspace]]\nid = \"a\"\norg = \"o\"\nplan = 49\n",
                "invalid type",
            ),
            (
                "[[workspace]]\nid = \"a\"\norg = \"o\"\n[[workspace]]\nid = \"a\"\norg = \"o\"\n",
                "twice",
            ),
            (
                "[[workspace]]\nid = \"a\"\norg = \"o\"\nteam = \"x\"\n",
                "unknown field",
            ),
        ] {
            let e = BillingDirectory::from_toml(bad).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    proptest! {
        #[test]
        fn any_lines_settle_within_the_bounds(
            cents in proptest::collection::vec(-5_000_000_000i64..5_000_000_000, 0..300),
            scale in 0u32..12,
            jpy in any::<bool>(),
        ) {
            let exact: Vec<Decimal> = cents.iter().map(|&m| Decimal::new(m, scale)).collect();
            check(&exact, if jpy { Currency::JPY } else { Currency::USD });
        }
    }
}
