//! The billing calendar's jobs for the [`Scheduler`](crate::schedule::Scheduler)
//! (feature `runtime`): [`MonthClose`] closes every workspace's month after a grace,
//! [`ErpPush`] posts each final invoice to the ERP once.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::attribution::WorkspaceId;
use crate::erp::{
    CoupaSupplier, ErpError, ErpTransport, NetSuiteAccounts, PushOutcome, Pusher, coupa_invoice,
    netsuite_journal_entry,
};
use crate::invoice::{Billing, BillingDirectory, InvoiceStatus, InvoiceStore, Month};
use crate::money::ExchangeRates;
use crate::port::SpendReader;
use crate::schedule::{Job, JobError};
use crate::wallet::Wallets;

/// The exchange rates in force when a job runs (a store's reloadable table).
pub type RatesSource = Arc<dyn Fn() -> Arc<dyn ExchangeRates> + Send + Sync>;

/// Closes the previous month of every workspace of a [`BillingDirectory`], once the
/// grace after the month's end has passed: each invoice is numbered and frozen
/// ([`Billing::close_month`], idempotent per workspace and month). The period is the
/// month (`2026-11`). Spend drained after the close lands on the next month's
/// invoice.
#[derive(Clone)]
pub struct MonthClose {
    reader: Arc<dyn SpendReader>,
    wallets: Arc<dyn Wallets>,
    invoices: Arc<dyn InvoiceStore>,
    rates: RatesSource,
    directory: Arc<BillingDirectory>,
    grace: Duration,
}

impl std::fmt::Debug for MonthClose {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MonthClose")
            .field("workspaces", &self.directory.iter().count())
            .field("grace", &self.grace)
            .finish_non_exhaustive()
    }
}

impl MonthClose {
    /// The job over one store's ports (PostgreSQL's `PgStore` is all three) and the
    /// workspaces billed; `grace` after each UTC month boundary (6 h is usual).
    pub fn new(
        reader: Arc<dyn SpendReader>,
        wallets: Arc<dyn Wallets>,
        invoices: Arc<dyn InvoiceStore>,
        rates: RatesSource,
        directory: Arc<BillingDirectory>,
        grace: Duration,
    ) -> MonthClose {
        MonthClose {
            reader,
            wallets,
            invoices,
            rates,
            directory,
            grace,
        }
    }

    /// The month due for closing at `now`, if the grace has passed.
    pub fn due_month(&self, now: DateTime<Utc>) -> Option<Month> {
        let current = Month::of(now.date_naive());
        let start = current.start()?;
        let due = start.checked_add_signed(chrono::Duration::from_std(self.grace).ok()?)?;
        (now >= due).then(|| current.previous())
    }
}

#[async_trait]
impl Job for MonthClose {
    fn name(&self) -> &str {
        "month-close"
    }

    async fn due(&self, now: DateTime<Utc>) -> Result<Vec<String>, JobError> {
        Ok(self
            .due_month(now)
            .map(|m| m.to_string())
            .into_iter()
            .collect())
    }

    async fn run(&self, period: &str, now: DateTime<Utc>) -> Result<String, JobError> {
        let month = Month::parse(period)
            .ok_or_else(|| JobError::permanent(format!("{period:?} is not a month")))?;
        let rates = (self.rates)();
        let billing = Billing {
            reader: &*self.reader,
            wallets: &*self.wallets,
            invoices: &*self.invoices,
            rates: &*rates,
        };
        let (mut closed, mut already) = (0usize, 0usize);
        let mut failed = Vec::new();
        for (workspace, config) in self.directory.iter() {
            let known = match self.invoices.finalized(workspace).await {
                Ok(invoices) => invoices.iter().any(|i| i.month == month),
                Err(e) => {
                    failed.push(format!("{workspace}: {e}"));
                    continue;
                }
            };
            if known {
                already += 1;
                continue;
            }
            // One workspace's failure (a missing exchange rate, say) never holds the
            // others back; the run fails and the next attempt closes what is left.
            match billing
                .close_month(&config.org, workspace, month, config.plan, now)
                .await
            {
                Ok(invoice) => {
                    closed += 1;
                    tracing::info!(
                        workspace = %invoice.workspace, month = %invoice.month,
                        number = invoice.number.as_deref().unwrap_or("-"),
                        total = %invoice.total, "month closed"
                    );
                }
                Err(e) => failed.push(format!("{workspace}: {e}")),
            }
        }
        if failed.is_empty() {
            Ok(format!("{closed} closed, {already} closed before"))
        } else {
            Err(JobError::transient(format!(
                "{closed} closed, {} failed: {}",
                failed.len(),
                failed.join("; ")
            )))
        }
    }
}

/// Where final invoices are posted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ErpTarget {
    /// A NetSuite journal entry per invoice.
    NetSuite(NetSuiteAccounts),
    /// A Coupa supplier invoice per invoice.
    Coupa(CoupaSupplier),
}

/// Posts each final invoice of the directory's workspaces to the ERP, once. The
/// period is `{workspace}/{month}`. A refused record (a 4xx) is a permanent failure
/// (the run is `refused` until an operator retries it); a transport error, a 429 or
/// a 5xx after the pusher's own attempts fails the run, retried on a later tick. A
/// retry never posts twice (NetSuite's upsert by external id, Coupa's existence
/// check).
#[derive(Debug)]
pub struct ErpPush<T> {
    pusher: Pusher<T>,
    target: ErpTarget,
    invoices: Arc<dyn InvoiceStore>,
    directory: Arc<BillingDirectory>,
    since: Option<Month>,
}

impl<T: ErpTransport + 'static> ErpPush<T> {
    /// The job: `pusher` (its transport carries the ERP's authentication; a few
    /// attempts per run is enough, the scheduler retries across runs), the mapping,
    /// the invoices and the workspaces. `since`: the first month pushed (earlier
    /// invoices are left alone); `None`: every final invoice.
    pub fn new(
        pusher: Pusher<T>,
        target: ErpTarget,
        invoices: Arc<dyn InvoiceStore>,
        directory: Arc<BillingDirectory>,
        since: Option<Month>,
    ) -> ErpPush<T> {
        ErpPush {
            pusher,
            target,
            invoices,
            directory,
            since,
        }
    }
}

/// An ERP push's period of an invoice.
pub fn erp_period(workspace: &WorkspaceId, month: Month) -> String {
    format!("{workspace}/{month}")
}

#[async_trait]
impl<T: ErpTransport + 'static> Job for ErpPush<T> {
    fn name(&self) -> &str {
        "erp-push"
    }

    async fn due(&self, _now: DateTime<Utc>) -> Result<Vec<String>, JobError> {
        let mut due = Vec::new();
        for (workspace, _) in self.directory.iter() {
            for invoice in self.invoices.finalized(workspace).await? {
                if self.since.is_none_or(|since| invoice.month >= since) {
                    due.push((invoice.month, erp_period(workspace, invoice.month)));
                }
            }
        }
        due.sort();
        Ok(due.into_iter().map(|(_, p)| p).collect())
    }

    async fn run(&self, period: &str, _now: DateTime<Utc>) -> Result<String, JobError> {
        let (workspace, month) = period
            .rsplit_once('/')
            .and_then(|(w, m)| Some((WorkspaceId::new(w).ok()?, Month::parse(m)?)))
            .ok_or_else(|| JobError::permanent(format!("{period:?} is not workspace/month")))?;
        let invoice = self
            .invoices
            .finalized(&workspace)
            .await?
            .into_iter()
            .find(|i| i.month == month && i.status == InvoiceStatus::Final)
            .ok_or_else(|| JobError::permanent(format!("no final invoice for {period}")))?;
        let request = match &self.target {
            ErpTarget::NetSuite(accounts) => netsuite_journal_entry(&invoice, accounts),
            ErpTarget::Coupa(supplier) => coupa_invoice(&invoice, supplier),
        };
        let request = match request {
            Ok(request) => request,
            Err(ErpError::Empty) => return Ok("nothing to post".to_owned()),
            Err(e) => return Err(JobError::permanent(e.to_string())),
        };
        let number = invoice.number.as_deref().unwrap_or("-");
        match self.pusher.push(&request).await {
            Ok(PushOutcome::Posted { attempts }) => Ok(format!(
                "invoice {number} posted ({attempts} attempt(s) this run)"
            )),
            Ok(PushOutcome::AlreadyPosted) => Ok(format!("invoice {number} was posted before")),
            Err(e @ ErpError::GaveUp { .. }) => Err(JobError::transient(e.to_string())),
            Err(e) => Err(JobError::permanent(e.to_string())),
        }
    }
}
