//! The wallet on PostgreSQL: every write is one transaction under the wallet row's
//! lock, so concurrent top-ups and debits never lose an update.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use deadpool_postgres::Transaction;
use routero_core::Currency;
use routero_core::attribution::WorkspaceId;
use routero_core::money::Conversion;
use routero_core::port::{BackendError, ErrorKind};
use routero_core::wallet::{
    self, Allocation, Balance, EntryKind, LedgerEntry, Lot, LotKind, TransactionPage,
    TransactionQuery, WalletError, WalletWrite, Wallets, Written,
};
use rust_decimal::Decimal;
use tokio_postgres::Row;

use crate::drain::{big, count};
use crate::{PgStore, backend};

fn corrupt(what: &str) -> BackendError {
    BackendError::new(ErrorKind::Corrupt, format!("wallet: {what}"))
}

/// Locks a workspace's wallet for the transaction, creating it in `currency` when
/// `create`; returns its currency, or `None` when it does not exist.
pub(crate) async fn lock_wallet(
    tx: &Transaction<'_>,
    workspace: &WorkspaceId,
    currency: Currency,
    create: bool,
) -> Result<Option<Currency>, BackendError> {
    let row = if create {
        Some(
            tx.query_one(
                "INSERT INTO routero_wallets AS w (workspace, currency) VALUES ($1, $2) \
                 ON CONFLICT (workspace) DO UPDATE SET workspace = w.workspace RETURNING currency",
                &[&workspace.as_str(), &currency.code()],
            )
            .await
            .map_err(backend)?,
        )
    } else {
        tx.query_opt(
            "SELECT currency FROM routero_wallets WHERE workspace = $1 FOR UPDATE",
            &[&workspace.as_str()],
        )
        .await
        .map_err(backend)?
    };
    row.map(|row| {
        let code: String = row.get(0);
        code.parse::<Currency>()
            .map_err(|_| corrupt("unknown currency"))
    })
    .transpose()
}

fn entry_from(row: &Row, workspace: &WorkspaceId) -> Result<LedgerEntry, BackendError> {
    let kind: String = row.get("kind");
    let currency: String = row.get("currency");
    let allocations: String = row.get("allocations");
    Ok(LedgerEntry {
        id: count(row.get("id"), "entry id")?,
        workspace: workspace.clone(),
        kind: EntryKind::parse(&kind).ok_or_else(|| corrupt("unknown entry kind"))?,
        amount: row.get("amount"),
        currency: currency.parse().map_err(|_| corrupt("unknown currency"))?,
        at: row.get("at"),
        idempotency_key: row.get("idempotency_key"),
        lot: row
            .get::<_, Option<i64>>("lot")
            .map(|l| count(l, "lot"))
            .transpose()?,
        allocations: serde_json::from_str::<Vec<Allocation>>(&allocations)
            .map_err(|_| corrupt("allocations"))?,
        memo: row.get("memo"),
        conversion: row
            .get::<_, Option<String>>("conversion")
            .map(|c| serde_json::from_str::<Conversion>(&c))
            .transpose()
            .map_err(|_| corrupt("conversion"))?,
    }
    .canonical())
}

const ENTRY_COLUMNS: &str =
    "id, kind, amount, currency, at, idempotency_key, lot, allocations, memo, conversion";

/// The entry written with a key before, if any: its fingerprint and the entry.
async fn by_key(
    tx: &Transaction<'_>,
    workspace: &WorkspaceId,
    key: &str,
) -> Result<Option<(String, LedgerEntry)>, BackendError> {
    let row = tx
        .query_opt(
            &format!("SELECT fingerprint, {ENTRY_COLUMNS} FROM routero_wallet_entries WHERE workspace = $1 AND idempotency_key = $2"),
            &[&workspace.as_str(), &key],
        )
        .await
        .map_err(backend)?;
    row.map(|row| {
        Ok((
            row.get::<_, String>("fingerprint"),
            entry_from(&row, workspace)?,
        ))
    })
    .transpose()
}

async fn next_id(
    tx: &Transaction<'_>,
    table: &str,
    workspace: &WorkspaceId,
) -> Result<i64, BackendError> {
    let row = tx
        .query_one(
            &format!("SELECT COALESCE(MAX(id), 0) + 1 FROM {table} WHERE workspace = $1"),
            &[&workspace.as_str()],
        )
        .await
        .map_err(backend)?;
    Ok(row.get(0))
}

/// What a new entry records.
struct NewEntry<'a> {
    kind: EntryKind,
    amount: Decimal,
    currency: Currency,
    at: DateTime<Utc>,
    key: &'a str,
    fingerprint: &'a str,
    lot: Option<i64>,
    allocations: &'a [Allocation],
    memo: Option<&'a str>,
    conversion: Option<&'a Conversion>,
}

async fn insert_entry(
    tx: &Transaction<'_>,
    workspace: &WorkspaceId,
    e: NewEntry<'_>,
) -> Result<LedgerEntry, BackendError> {
    let id = next_id(tx, "routero_wallet_entries", workspace).await?;
    let allocations = serde_json::to_string(e.allocations)
        .map_err(|err| BackendError::new(ErrorKind::Invalid, err.to_string()))?;
    let conversion = e
        .conversion
        .map(serde_json::to_string)
        .transpose()
        .map_err(|err| BackendError::new(ErrorKind::Invalid, err.to_string()))?;
    let row = tx
        .query_one(
            &format!(
                "INSERT INTO routero_wallet_entries \
                 (workspace, id, kind, amount, currency, at, idempotency_key, fingerprint, lot, allocations, memo, conversion) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) RETURNING {ENTRY_COLUMNS}"
            ),
            &[
                &workspace.as_str(),
                &id,
                &e.kind.as_str(),
                &e.amount,
                &e.currency.code(),
                &e.at,
                &e.key,
                &e.fingerprint,
                &e.lot,
                &allocations,
                &e.memo,
                &conversion,
            ],
        )
        .await
        .map_err(backend)?;
    entry_from(&row, workspace)
}

fn lot_from(row: &Row) -> Result<Lot, BackendError> {
    let kind: String = row.get("kind");
    Ok(Lot {
        id: count(row.get("id"), "lot id")?,
        kind: LotKind::parse(&kind).ok_or_else(|| corrupt("unknown lot kind"))?,
        amount: row.get("amount"),
        remaining: row.get("remaining"),
        created_at: row.get("created_at"),
        expires_at: row.get("expires_at"),
    })
}

async fn open_lots(
    tx: &Transaction<'_>,
    workspace: &WorkspaceId,
) -> Result<Vec<Lot>, BackendError> {
    let rows = tx
        .query(
            "SELECT id, kind, amount, remaining, created_at, expires_at FROM routero_wallet_lots \
             WHERE workspace = $1 AND remaining > 0 ORDER BY id FOR UPDATE",
            &[&workspace.as_str()],
        )
        .await
        .map_err(backend)?;
    rows.iter().map(lot_from).collect()
}

async fn save_remaining(
    tx: &Transaction<'_>,
    workspace: &WorkspaceId,
    lots: &[Lot],
    before: &[Lot],
) -> Result<(), BackendError> {
    for lot in lots {
        let changed = before
            .iter()
            .any(|b| b.id == lot.id && b.remaining != lot.remaining);
        if changed {
            tx.execute(
                "UPDATE routero_wallet_lots SET remaining = $3 WHERE workspace = $1 AND id = $2",
                &[&workspace.as_str(), &big(lot.id, "lot id")?, &lot.remaining],
            )
            .await
            .map_err(backend)?;
        }
    }
    Ok(())
}

/// Moves the remainder of every lot expired by `at` out of the balance.
pub(crate) async fn expire_lots(
    tx: &Transaction<'_>,
    workspace: &WorkspaceId,
    currency: Currency,
    at: DateTime<Utc>,
) -> Result<Vec<LedgerEntry>, BackendError> {
    let lots = open_lots(tx, workspace).await?;
    let mut out = Vec::new();
    for lot in wallet::expired(&lots, at) {
        tx.execute(
            "UPDATE routero_wallet_lots SET remaining = 0 WHERE workspace = $1 AND id = $2",
            &[&workspace.as_str(), &big(lot.id, "lot id")?],
        )
        .await
        .map_err(backend)?;
        let key = format!("expire:{}", lot.id);
        let allocation = [Allocation {
            lot: Some(lot.id),
            amount: lot.remaining,
        }];
        out.push(
            insert_entry(
                tx,
                workspace,
                NewEntry {
                    kind: EntryKind::CreditExpiry,
                    amount: -lot.remaining,
                    currency,
                    at: lot.expires_at.unwrap_or(at),
                    key: &key,
                    fingerprint: &key,
                    lot: None,
                    allocations: &allocation,
                    memo: None,
                    conversion: None,
                },
            )
            .await?,
        );
    }
    Ok(out)
}

/// A debit consuming lots (usage, negative adjustments).
#[allow(clippy::too_many_arguments)]
pub(crate) async fn debit(
    tx: &Transaction<'_>,
    workspace: &WorkspaceId,
    kind: EntryKind,
    amount: Decimal,
    currency: Currency,
    at: DateTime<Utc>,
    key: &str,
    fingerprint: &str,
    memo: Option<&str>,
    conversion: Option<&Conversion>,
) -> Result<LedgerEntry, BackendError> {
    let before = open_lots(tx, workspace).await?;
    let mut lots = before.clone();
    let allocations = wallet::allocate(&mut lots, amount, at);
    save_remaining(tx, workspace, &lots, &before).await?;
    insert_entry(
        tx,
        workspace,
        NewEntry {
            kind,
            amount: -amount,
            currency,
            at,
            key,
            fingerprint,
            lot: None,
            allocations: &allocations,
            memo,
            conversion,
        },
    )
    .await
}

impl PgStore {
    /// Runs one wallet write: lock (creating the wallet), check the currency and the
    /// key, expire lots, write, commit.
    async fn write_entry(
        &self,
        workspace: &WorkspaceId,
        currency: Currency,
        key: &str,
        at: DateTime<Utc>,
        write: WalletWrite<'_>,
    ) -> Result<Written, WalletError> {
        wallet::validate_key(key)?;
        let fingerprint = write.fingerprint(currency);
        let fingerprint = fingerprint.as_str();
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(backend)?;
        let wallet_currency = lock_wallet(&tx, workspace, currency, true)
            .await?
            .unwrap_or(currency);
        if wallet_currency != currency {
            return Err(WalletError::CurrencyMismatch {
                wallet: wallet_currency,
                given: currency,
            });
        }
        if let Some((seen, entry)) = by_key(&tx, workspace, key).await? {
            return if seen == fingerprint {
                Ok(Written {
                    entry,
                    replayed: true,
                })
            } else {
                Err(WalletError::IdempotencyConflict {
                    key: key.to_owned(),
                })
            };
        }
        expire_lots(&tx, workspace, currency, at).await?;
        let entry = apply_write(&tx, workspace, currency, &write, key, fingerprint, at).await?;
        tx.commit().await.map_err(backend)?;
        Ok(Written {
            entry,
            replayed: false,
        })
    }
}

/// Carries out a wallet write in `tx` (the wallet locked, its lots expired, the key
/// new): a credit creates a lot, a debit consumes lots.
pub(crate) async fn apply_write(
    tx: &Transaction<'_>,
    workspace: &WorkspaceId,
    currency: Currency,
    write: &WalletWrite<'_>,
    key: &str,
    fingerprint: &str,
    at: DateTime<Utc>,
) -> Result<LedgerEntry, BackendError> {
    match *write {
        WalletWrite::Credit {
            kind,
            lot,
            amount,
            expires_at,
            memo,
        } => {
            credit(
                tx,
                workspace,
                kind,
                lot,
                amount,
                currency,
                expires_at,
                at,
                key,
                fingerprint,
                memo,
            )
            .await
        }
        WalletWrite::Debit {
            kind,
            amount,
            memo,
            conversion,
        } => {
            debit(
                tx,
                workspace,
                kind,
                amount,
                currency,
                at,
                key,
                fingerprint,
                memo,
                conversion,
            )
            .await
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn credit(
    tx: &Transaction<'_>,
    workspace: &WorkspaceId,
    kind: EntryKind,
    lot: LotKind,
    amount: Decimal,
    currency: Currency,
    expires_at: Option<DateTime<Utc>>,
    at: DateTime<Utc>,
    key: &str,
    fingerprint: &str,
    memo: Option<&str>,
) -> Result<LedgerEntry, BackendError> {
    let lot_id = next_id(tx, "routero_wallet_lots", workspace).await?;
    tx.execute(
        "INSERT INTO routero_wallet_lots (workspace, id, kind, amount, remaining, created_at, expires_at) \
         VALUES ($1, $2, $3, $4, $4, $5, $6)",
        &[&workspace.as_str(), &lot_id, &lot.as_str(), &amount, &at, &expires_at],
    )
    .await
    .map_err(backend)?;
    insert_entry(
        tx,
        workspace,
        NewEntry {
            kind,
            amount,
            currency,
            at,
            key,
            fingerprint,
            lot: Some(lot_id),
            allocations: &[],
            memo,
            conversion: None,
        },
    )
    .await
}

#[async_trait]
impl Wallets for PgStore {
    async fn open(&self, workspace: &WorkspaceId, currency: Currency) -> Result<(), WalletError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(backend)?;
        let wallet_currency = lock_wallet(&tx, workspace, currency, true)
            .await?
            .unwrap_or(currency);
        tx.commit().await.map_err(backend)?;
        if wallet_currency != currency {
            return Err(WalletError::CurrencyMismatch {
                wallet: wallet_currency,
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
        self.write_entry(workspace, currency, key, at, *write).await
    }

    async fn expire(
        &self,
        workspace: &WorkspaceId,
        at: DateTime<Utc>,
    ) -> Result<Vec<LedgerEntry>, WalletError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(backend)?;
        let Some(currency) = lock_wallet(&tx, workspace, Currency::USD, false).await? else {
            return Ok(Vec::new());
        };
        let expired = expire_lots(&tx, workspace, currency, at).await?;
        tx.commit().await.map_err(backend)?;
        Ok(expired)
    }

    async fn balance(
        &self,
        workspace: &WorkspaceId,
        at: DateTime<Utc>,
    ) -> Result<Balance, WalletError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(backend)?;
        let Some(currency) = lock_wallet(&tx, workspace, Currency::USD, false).await? else {
            return Ok(Balance {
                workspace: workspace.clone(),
                currency: Currency::USD,
                balance: Decimal::ZERO,
                paid_remaining: Decimal::ZERO,
                granted_remaining: Decimal::ZERO,
                usage_debited: Decimal::ZERO,
                open_lots: Vec::new(),
            });
        };
        expire_lots(&tx, workspace, currency, at).await?;
        let sums = tx
            .query_one(
                "SELECT COALESCE(SUM(amount), 0), COALESCE(-SUM(amount) FILTER (WHERE kind = 'usage_debit'), 0) \
                 FROM routero_wallet_entries WHERE workspace = $1",
                &[&workspace.as_str()],
            )
            .await
            .map_err(backend)?;
        let (balance, usage_debited): (Decimal, Decimal) = (sums.get(0), sums.get(1));
        let lots = open_lots(&tx, workspace).await?;
        tx.commit().await.map_err(backend)?;
        let sum = |kind| {
            lots.iter()
                .filter(|l| l.kind == kind)
                .map(|l| l.remaining)
                .sum()
        };
        Ok(Balance {
            workspace: workspace.clone(),
            currency,
            balance,
            usage_debited,
            paid_remaining: sum(LotKind::Paid),
            granted_remaining: sum(LotKind::Granted),
            open_lots: lots,
        }
        .canonical())
    }

    async fn transactions(
        &self,
        workspace: &WorkspaceId,
        query: &TransactionQuery,
    ) -> Result<TransactionPage, WalletError> {
        let client = self.client().await?;
        let limit = query.limit.clamp(1, 1_000);
        let kinds: Option<Vec<&str>> = query
            .kinds
            .as_ref()
            .map(|k| k.iter().map(|k| k.as_str()).collect());
        let before = query.before.map(|b| big(b, "cursor")).transpose()?;
        let fetch = i64::try_from(limit + 1).unwrap_or(i64::MAX);
        let rows = client
            .query(
                &format!(
                    "SELECT {ENTRY_COLUMNS} FROM routero_wallet_entries WHERE workspace = $1 \
                     AND ($2::text[] IS NULL OR kind = ANY($2)) AND ($3::timestamptz IS NULL OR at >= $3) \
                     AND ($4::timestamptz IS NULL OR at < $4) AND ($5::bigint IS NULL OR id < $5) \
                     ORDER BY id DESC LIMIT $6"
                ),
                &[&workspace.as_str(), &kinds, &query.from, &query.to, &before, &fetch],
            )
            .await
            .map_err(backend)?;
        let mut entries = rows
            .iter()
            .map(|row| entry_from(row, workspace))
            .collect::<Result<Vec<_>, _>>()?;
        let more = entries.len() > limit;
        entries.truncate(limit);
        Ok(TransactionPage {
            next_cursor: if more {
                entries.last().map(|e| e.id)
            } else {
                None
            },
            entries,
        })
    }
}
