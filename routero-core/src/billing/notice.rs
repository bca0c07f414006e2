//! Balance changes reaching running spend controls.
//!
//! A gateway's spend control learns each wallet's balance with
//! [`SpendControl::refresh_wallet`]. [`refresh_wallets`] reads it from the
//! [`Wallets`] port; a gateway calls it at start-up, on a schedule, and whenever a
//! [`WalletNotices`] implementation tells it a wallet changed (`routero-redis` sends
//! and receives them over Redis pub/sub). [`Notifying`] wraps the writer's wallets so
//! that every write sends its notice: a top-up lifts a gateway's 402 as soon as the
//! notice lands, and the schedule catches any notice lost on the way.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::attribution::{OrgId, WorkspaceId};
use crate::control::SpendControl;
use crate::money::Currency;
use crate::port::BackendError;
use crate::wallet::{
    Balance, LedgerEntry, TransactionPage, TransactionQuery, WalletError, WalletWrite, Wallets,
    Written,
};

/// Where wallet changes are announced.
#[async_trait]
pub trait WalletNotices: fmt::Debug + Send + Sync + 'static {
    /// Announces that `workspace`'s wallet changed.
    async fn wallet_changed(&self, workspace: &WorkspaceId) -> Result<(), BackendError>;
}

/// Wallets that announce every change they write (see the module's documentation).
/// A notice that cannot be sent never fails the write: it is logged (feature
/// `runtime`), and the listeners' schedule finds the change.
#[derive(Debug)]
pub struct Notifying {
    inner: Arc<dyn Wallets>,
    notices: Arc<dyn WalletNotices>,
}

impl Notifying {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn Wallets>, notices: Arc<dyn WalletNotices>) -> Notifying {
        Notifying { inner, notices }
    }

    async fn announce(&self, workspace: &WorkspaceId) {
        if let Err(_e) = self.notices.wallet_changed(workspace).await {
            #[cfg(feature = "runtime")]
            tracing::warn!(workspace = %workspace, error = %_e, "wallet change not announced; listeners find it on their schedule");
        }
    }
}

#[async_trait]
impl Wallets for Notifying {
    async fn open(&self, workspace: &WorkspaceId, currency: Currency) -> Result<(), WalletError> {
        self.inner.open(workspace, currency).await
    }

    async fn write(
        &self,
        workspace: &WorkspaceId,
        currency: Currency,
        write: &WalletWrite<'_>,
        key: &str,
        at: DateTime<Utc>,
    ) -> Result<Written, WalletError> {
        let written = self
            .inner
            .write(workspace, currency, write, key, at)
            .await?;
        if !written.replayed {
            self.announce(workspace).await;
        }
        Ok(written)
    }

    async fn expire(
        &self,
        workspace: &WorkspaceId,
        at: DateTime<Utc>,
    ) -> Result<Vec<LedgerEntry>, WalletError> {
        let expired = self.inner.expire(workspace, at).await?;
        if !expired.is_empty() {
            self.announce(workspace).await;
        }
        Ok(expired)
    }

    async fn balance(
        &self,
        workspace: &WorkspaceId,
        at: DateTime<Utc>,
    ) -> Result<Balance, WalletError> {
        self.inner.balance(workspace, at).await
    }

    async fn transactions(
        &self,
        workspace: &WorkspaceId,
        query: &TransactionQuery,
    ) -> Result<TransactionPage, WalletError> {
        self.inner.transactions(workspace, query).await
    }
}

/// Tells `control` what `wallets` hold now for each of `workspaces` (its balance and
/// cumulative usage debits). Every workspace is tried; the first error, if any, is
/// returned after the others were refreshed.
pub async fn refresh_wallets(
    control: &dyn SpendControl,
    wallets: &dyn Wallets,
    workspaces: &[(OrgId, WorkspaceId)],
    at: DateTime<Utc>,
) -> Result<(), WalletError> {
    let mut first = None;
    for (org, workspace) in workspaces {
        let refreshed = async {
            let balance = wallets.balance(workspace, at).await?;
            control
                .refresh_wallet(org, workspace, balance.balance, balance.usage_debited)
                .await?;
            Ok::<(), WalletError>(())
        }
        .await;
        if let Err(e) = refreshed {
            first.get_or_insert(e);
        }
    }
    first.map_or(Ok(()), Err)
}
