//! The billing ports in memory: each workspace's wallet ledger and the final invoices
//! of the in-memory store ([`MemoryStore`]), its embedded default and the PostgreSQL
//! adapter's oracle.

use std::collections::HashMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;

use crate::billing::invoice::{Invoice, InvoiceStore};
use crate::billing::wallet::{
    self, Allocation, Balance, EntryKind, LedgerEntry, Lot, LotKind, TransactionPage,
    TransactionQuery, WalletError, WalletWrite, Wallets, Written,
};
use crate::meter::attribution::WorkspaceId;
use crate::meter::money::Currency;
use crate::pipeline::memory::{MemoryStore, lock};
use crate::pipeline::port::BackendError;

/// One workspace's wallet: the ledger, the lots, and the keys written with.
#[derive(Debug)]
pub(crate) struct WalletBook {
    pub(crate) workspace: WorkspaceId,
    pub(crate) currency: Currency,
    pub(crate) entries: Vec<LedgerEntry>,
    pub(crate) lots: Vec<Lot>,
    pub(crate) keys: HashMap<String, (String, Vec<u64>)>,
}

impl WalletBook {
    pub(crate) fn new(workspace: WorkspaceId, currency: Currency) -> WalletBook {
        WalletBook {
            workspace,
            currency,
            entries: Vec::new(),
            lots: Vec::new(),
            keys: HashMap::new(),
        }
    }

    fn entry(&self, kind: EntryKind, amount: Decimal, at: DateTime<Utc>, key: &str) -> LedgerEntry {
        LedgerEntry {
            id: u64::try_from(self.entries.len()).unwrap_or(u64::MAX) + 1,
            workspace: self.workspace.clone(),
            kind,
            amount,
            currency: self.currency,
            at,
            idempotency_key: key.to_owned(),
            lot: None,
            allocations: Vec::new(),
            memo: None,
            conversion: None,
        }
    }

    /// Runs a write once per key: a replay with the same fingerprint returns the
    /// entries of the first, another fingerprint is refused.
    pub(crate) fn once(
        &mut self,
        key: &str,
        fingerprint: String,
        write: impl FnOnce(&mut WalletBook) -> Vec<LedgerEntry>,
    ) -> Result<(Vec<LedgerEntry>, bool), WalletError> {
        if let Some((seen, ids)) = self.keys.get(key) {
            if *seen != fingerprint {
                return Err(WalletError::IdempotencyConflict {
                    key: key.to_owned(),
                });
            }
            let first = ids
                .iter()
                .filter_map(|id| self.entries.get(usize::try_from(*id).ok()? - 1).cloned())
                .collect();
            return Ok((first, true));
        }
        let written = write(self);
        self.keys.insert(
            key.to_owned(),
            (fingerprint, written.iter().map(|e| e.id).collect()),
        );
        Ok((written, false))
    }

    fn push(&mut self, entry: LedgerEntry) -> LedgerEntry {
        self.entries.push(entry.clone());
        entry
    }

    /// Carries out a write: a credit creates a lot, a debit consumes lots.
    pub(crate) fn write(
        &mut self,
        write: &WalletWrite<'_>,
        at: DateTime<Utc>,
        key: &str,
    ) -> LedgerEntry {
        match *write {
            WalletWrite::Credit {
                kind,
                lot,
                amount,
                expires_at,
                memo,
            } => {
                let id = u64::try_from(self.lots.len()).unwrap_or(u64::MAX) + 1;
                self.lots.push(Lot {
                    id,
                    kind: lot,
                    amount,
                    remaining: amount,
                    created_at: at,
                    expires_at,
                });
                let mut entry = self.entry(kind, amount, at, key);
                entry.lot = Some(id);
                entry.memo = memo.map(str::to_owned);
                self.push(entry)
            }
            WalletWrite::Debit {
                kind,
                amount,
                memo,
                conversion,
            } => {
                let allocations = wallet::allocate(&mut self.lots, amount, at);
                let mut entry = self.entry(kind, -amount, at, key);
                entry.allocations = allocations;
                entry.memo = memo.map(str::to_owned);
                entry.conversion = conversion.cloned();
                self.push(entry)
            }
        }
    }

    /// Expiry entries for the lots expired by `at`.
    pub(crate) fn expire(&mut self, at: DateTime<Utc>) -> Vec<LedgerEntry> {
        let expired: Vec<(u64, Decimal, DateTime<Utc>)> = wallet::expired(&self.lots, at)
            .into_iter()
            .map(|l| (l.id, l.remaining, l.expires_at.unwrap_or(at)))
            .collect();
        let mut out = Vec::new();
        for (id, remaining, expires) in expired {
            if let Some(lot) = self.lots.iter_mut().find(|l| l.id == id) {
                lot.remaining = Decimal::ZERO;
            }
            let mut entry = self.entry(
                EntryKind::CreditExpiry,
                -remaining,
                expires,
                &format!("expire:{id}"),
            );
            entry.allocations = vec![Allocation {
                lot: Some(id),
                amount: remaining,
            }];
            out.push(self.push(entry));
        }
        out
    }

    pub(crate) fn balance(&self) -> Balance {
        let open: Vec<Lot> = self
            .lots
            .iter()
            .filter(|l| l.remaining > Decimal::ZERO)
            .cloned()
            .collect();
        let sum = |kind| {
            open.iter()
                .filter(|l| l.kind == kind)
                .map(|l| l.remaining)
                .sum()
        };
        Balance {
            workspace: self.workspace.clone(),
            currency: self.currency,
            balance: self.entries.iter().map(|e| e.amount).sum(),
            usage_debited: -self
                .entries
                .iter()
                .filter(|e| e.kind == EntryKind::UsageDebit)
                .map(|e| e.amount)
                .sum::<Decimal>(),
            paid_remaining: sum(LotKind::Paid),
            granted_remaining: sum(LotKind::Granted),
            open_lots: open,
        }
    }
}

#[async_trait]
impl Wallets for MemoryStore {
    async fn open(&self, workspace: &WorkspaceId, currency: Currency) -> Result<(), WalletError> {
        let mut state = lock(&self.state);
        let book = state
            .wallets
            .entry(workspace.clone())
            .or_insert_with(|| WalletBook::new(workspace.clone(), currency));
        if book.currency != currency {
            return Err(WalletError::CurrencyMismatch {
                wallet: book.currency,
                given: currency,
            });
        }
        Ok(())
    }

    async fn write(
        &self,
        workspace: &WorkspaceId,
        currency: Currency,
        write: &WalletWrite<'_>,
        key: &str,
        at: DateTime<Utc>,
    ) -> Result<Written, WalletError> {
        wallet::validate_key(key)?;
        let mut state = lock(&self.state);
        let book = book_for(&mut state.wallets, workspace, currency)?;
        book.expire(at);
        let (written, replayed) = book.once(key, write.fingerprint(currency), |book| {
            vec![book.write(write, at, key)]
        })?;
        let entry = written
            .into_iter()
            .next()
            .ok_or_else(|| WalletError::Invalid("no entry written".into()))?;
        Ok(Written {
            entry: entry.canonical(),
            replayed,
        })
    }

    async fn expire(
        &self,
        workspace: &WorkspaceId,
        at: DateTime<Utc>,
    ) -> Result<Vec<LedgerEntry>, WalletError> {
        let mut state = lock(&self.state);
        Ok(state
            .wallets
            .get_mut(workspace)
            .map(|book| book.expire(at))
            .unwrap_or_default()
            .into_iter()
            .map(LedgerEntry::canonical)
            .collect())
    }

    async fn balance(
        &self,
        workspace: &WorkspaceId,
        at: DateTime<Utc>,
    ) -> Result<Balance, WalletError> {
        let mut state = lock(&self.state);
        let book = state
            .wallets
            .entry(workspace.clone())
            .or_insert_with(|| WalletBook::new(workspace.clone(), Currency::USD));
        book.expire(at);
        Ok(book.balance().canonical())
    }

    async fn transactions(
        &self,
        workspace: &WorkspaceId,
        query: &TransactionQuery,
    ) -> Result<TransactionPage, WalletError> {
        let state = lock(&self.state);
        let limit = query.limit.clamp(1, 1_000);
        let Some(book) = state.wallets.get(workspace) else {
            return Ok(TransactionPage {
                entries: Vec::new(),
                next_cursor: None,
            });
        };
        let mut matching = book.entries.iter().rev().filter(|e| query.matches(e));
        let entries: Vec<LedgerEntry> = matching
            .by_ref()
            .take(limit)
            .cloned()
            .map(LedgerEntry::canonical)
            .collect();
        let next_cursor = if matching.next().is_some() {
            entries.last().map(|e| e.id)
        } else {
            None
        };
        Ok(TransactionPage {
            entries,
            next_cursor,
        })
    }
}

fn book_for<'a>(
    wallets: &'a mut HashMap<WorkspaceId, WalletBook>,
    workspace: &WorkspaceId,
    currency: Currency,
) -> Result<&'a mut WalletBook, WalletError> {
    let book = wallets
        .entry(workspace.clone())
        .or_insert_with(|| WalletBook::new(workspace.clone(), currency));
    if book.currency != currency {
        return Err(WalletError::CurrencyMismatch {
            wallet: book.currency,
            given: currency,
        });
    }
    Ok(book)
}

#[async_trait]
impl InvoiceStore for MemoryStore {
    async fn finalize(
        &self,
        mut invoice: Invoice,
        at: DateTime<Utc>,
    ) -> Result<Invoice, BackendError> {
        let mut state = lock(&self.state);
        if let Some(done) = state
            .invoices
            .iter()
            .find(|i| i.workspace == invoice.workspace && i.month == invoice.month)
        {
            return Ok(done.clone());
        }
        let seq = state.invoices.len() + 1;
        invoice.number = Some(format!(
            "INV-{}{:02}-{seq:06}",
            invoice.month.year, invoice.month.month
        ));
        invoice.finalized_at = Some(at);
        state.invoices.push(invoice.clone());
        Ok(invoice)
    }

    async fn finalized(&self, workspace: &WorkspaceId) -> Result<Vec<Invoice>, BackendError> {
        let state = lock(&self.state);
        let mut out: Vec<Invoice> = state
            .invoices
            .iter()
            .filter(|i| i.workspace == *workspace)
            .cloned()
            .collect();
        out.sort_by_key(|i| i.month);
        Ok(out)
    }
}
