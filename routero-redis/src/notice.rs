//! Wallet change notices over Redis pub/sub, on the channel `<prefix>:wallets`: the
//! billing API's writes announce each change ([`RedisWalletNotices`], with
//! [`routero_core::notice::Notifying`]), and every gateway listens
//! ([`Redis::listen_wallet_notices`]) and refreshes that workspace's wallet at once.
//! Pub/sub delivers at most once: a gateway refreshes every wallet on a schedule too.

use async_trait::async_trait;
use fred::clients::SubscriberClient;
use fred::prelude::{ClientLike, EventInterface, PubsubInterface};
use routero_core::attribution::WorkspaceId;
use routero_core::notice::WalletNotices;
use routero_core::port::BackendError;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::mpsc;

use crate::{Redis, backend, builder};

/// Announces wallet changes on `<prefix>:wallets` (see the module's documentation).
#[derive(Debug, Clone)]
pub struct RedisWalletNotices {
    pub(crate) redis: Redis,
}

fn channel(redis: &Redis) -> String {
    format!("{}:wallets", redis.config.prefix)
}

#[async_trait]
impl WalletNotices for RedisWalletNotices {
    async fn wallet_changed(&self, workspace: &WorkspaceId) -> Result<(), BackendError> {
        let _: i64 = self
            .redis
            .pool
            .next()
            .publish(channel(&self.redis), workspace.as_str())
            .await
            .map_err(backend)?;
        Ok(())
    }
}

impl Redis {
    /// Listens for wallet change notices on a subscriber connection of its own
    /// (resubscribed after a reconnect): each announced workspace comes out of the
    /// receiver. The listener stops when the receiver is dropped.
    pub async fn listen_wallet_notices(&self) -> Result<mpsc::Receiver<WorkspaceId>, BackendError> {
        let subscriber: SubscriberClient = builder(&self.config)?
            .build_subscriber_client()
            .map_err(backend)?;
        subscriber.init().await.map_err(backend)?;
        let _resubscribe = subscriber.manage_subscriptions();
        let mut messages = subscriber.message_rx();
        subscriber.subscribe(channel(self)).await.map_err(backend)?;
        let (tx, rx) = mpsc::channel(1024);
        tokio::spawn(async move {
            loop {
                match messages.recv().await {
                    Ok(message) => {
                        let Some(workspace) = message
                            .value
                            .as_str()
                            .and_then(|name| WorkspaceId::new(&name).ok())
                        else {
                            tracing::warn!(value = ?message.value, "a wallet notice without a workspace; ignored");
                            continue;
                        };
                        if tx.send(workspace).await.is_err() {
                            break;
                        }
                    }
                    // Missed notices: the listener's schedule catches them.
                    Err(RecvError::Lagged(missed)) => {
                        tracing::warn!(
                            missed,
                            "wallet notices missed; the next scheduled refresh covers them"
                        );
                    }
                    Err(RecvError::Closed) => break,
                }
            }
            let _ = subscriber.quit().await;
        });
        Ok(rx)
    }
}
