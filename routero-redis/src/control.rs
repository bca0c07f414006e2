//! Spend controls shared by every gateway replica, on Redis.
//!
//! Counters are Redis hashes of integers in nano-units of the currency (10⁻⁹), which
//! `HINCRBY` changes exactly; amounts are rounded against the spender (estimates and
//! actual costs up, the wallet balance down), so the control is conservative by at
//! most a nano-unit per request while the ledger stays exact. A reservation is one
//! round trip: a `MULTI` that adds the estimate to the wallet's and every applying
//! budget's reserved counter and reads them back. The check happens on what the
//! transaction returned; when it does not fit, a second round trip takes the
//! estimate back. Because the estimate is added before the check, concurrent requests
//! can never together exceed a limit (near a limit they may both be refused).
//!
//! Keys carry the org as a hash tag, so one org's counters share a cluster slot:
//! `{prefix}:ctl:{org}:wallet:{workspace}` and
//! `{prefix}:ctl:{org}:budget:{scope}:{period}:{start}` (expiring a period after it ends).

use async_trait::async_trait;
use fred::prelude::{HashesInterface, KeysInterface, TransactionInterface};
use fred::types::Value;
use routero_core::attribution::{BillingMode, OrgId, WorkspaceId};
use routero_core::control::{
    Budget, BudgetCounter, BudgetScope, Decision, Denial, Period, Reservation, SpendControl,
    SpendRequest,
};
use routero_core::port::{BackendError, ErrorKind};
use rust_decimal::prelude::ToPrimitive;
use rust_decimal::{Decimal, RoundingStrategy};

use crate::{Redis, backend};

/// Spend controls on Redis.
#[derive(Debug, Clone)]
pub struct RedisControl {
    redis: Redis,
}

impl Redis {
    /// The spend controls on this connection.
    pub fn control(&self) -> RedisControl {
        RedisControl {
            redis: self.clone(),
        }
    }
}

const NANO: u32 = 9;

fn to_nano(amount: Decimal, up: bool) -> Result<i64, BackendError> {
    let strategy = if up {
        RoundingStrategy::AwayFromZero
    } else {
        RoundingStrategy::ToZero
    };
    let scaled = amount.round_dp_with_strategy(NANO, strategy) * Decimal::from(1_000_000_000u64);
    scaled.to_i64().ok_or_else(|| {
        BackendError::new(
            ErrorKind::Invalid,
            format!("{amount} is beyond the control's range"),
        )
    })
}

fn from_nano(nano: i64) -> Decimal {
    Decimal::new(nano, NANO)
}

fn scope_key(scope: &BudgetScope) -> String {
    match scope {
        BudgetScope::ApiKey(k) => format!("key:{k}"),
        BudgetScope::Team(t) => format!("team:{t}"),
        BudgetScope::Customer(c) => format!("customer:{c}"),
    }
}

fn period_name(period: Period) -> &'static str {
    match period {
        Period::Day => "day",
        Period::Week => "week",
        Period::Month => "month",
    }
}

/// How long a period's counter is kept: its length and a day.
fn ttl_seconds(period: Period) -> i64 {
    let days = match period {
        Period::Day => 2,
        Period::Week => 8,
        Period::Month => 32,
    };
    days * 86_400
}

fn number(value: &Value) -> i64 {
    match value {
        Value::Integer(i) => *i,
        Value::String(s) => s.parse().unwrap_or(0),
        Value::Bytes(b) => std::str::from_utf8(b)
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0),
        _ => 0,
    }
}

impl RedisControl {
    fn wallet_key(&self, org: &OrgId, workspace: &WorkspaceId) -> String {
        format!(
            "{}:ctl:{{{org}}}:wallet:{workspace}",
            self.redis.config.prefix
        )
    }

    fn counter_key(&self, org: &OrgId, counter: &BudgetCounter) -> String {
        format!(
            "{}:ctl:{{{org}}}:budget:{}:{}:{}",
            self.redis.config.prefix,
            scope_key(&counter.scope),
            period_name(counter.period),
            counter.start
        )
    }

    /// Adds `by` to the reserved counters of a reservation (and `spent` to the spent
    /// ones), in one transaction.
    async fn move_counters(
        &self,
        reservation: &Reservation,
        reserved: i64,
        spent: i64,
    ) -> Result<(), BackendError> {
        let trx = self.redis.pool.next().multi();
        let managed = reservation.billing_mode == BillingMode::Managed;
        if managed {
            let wallet = self.wallet_key(&reservation.org, &reservation.workspace);
            let _: Value = trx
                .hincrby(&wallet, "reserved", reserved)
                .await
                .map_err(backend)?;
            if spent != 0 {
                let _: Value = trx
                    .hincrby(&wallet, "settled", spent)
                    .await
                    .map_err(backend)?;
            }
        }
        for counter in &reservation.budgets {
            let key = self.counter_key(&reservation.org, counter);
            let _: Value = trx
                .hincrby(&key, "reserved", reserved)
                .await
                .map_err(backend)?;
            if spent != 0 {
                let _: Value = trx.hincrby(&key, "spent", spent).await.map_err(backend)?;
            }
        }
        let _: Value = trx.exec(true).await.map_err(backend)?;
        Ok(())
    }
}

#[async_trait]
impl SpendControl for RedisControl {
    async fn reserve(
        &self,
        request: &SpendRequest<'_>,
        budgets: &[Budget],
    ) -> Result<Decision, BackendError> {
        let org = &request.attribution.who.org;
        let workspace = &request.attribution.who.workspace;
        let estimate = to_nano(request.estimate, true)?;
        let managed = request.billing_mode == BillingMode::Managed;
        let applying = Reservation::counters(request, budgets);
        let trx = self.redis.pool.next().multi();
        let wallet = self.wallet_key(org, workspace);
        if managed {
            let _: Value = trx
                .hincrby(&wallet, "reserved", estimate)
                .await
                .map_err(backend)?;
            let _: Value = trx
                .hmget(&wallet, vec!["balance", "debited", "settled", "reserved"])
                .await
                .map_err(backend)?;
        }
        for (_, counter) in &applying {
            let key = self.counter_key(org, counter);
            let _: Value = trx
                .hincrby(&key, "reserved", estimate)
                .await
                .map_err(backend)?;
            let _: Value = trx
                .hmget(&key, vec!["spent", "reserved"])
                .await
                .map_err(backend)?;
            let _: Value = trx
                .expire(&key, ttl_seconds(counter.period), None)
                .await
                .map_err(backend)?;
        }
        let replies: Vec<Value> = trx.exec(true).await.map_err(backend)?;
        let mut replies = replies.into_iter();
        let mut denial = None;
        if managed {
            let _ = replies.next();
            let values = match replies.next() {
                Some(Value::Array(values)) => values,
                _ => {
                    return Err(BackendError::new(
                        ErrorKind::Corrupt,
                        "redis control: wallet reply",
                    ));
                }
            };
            let [balance, debited, settled, reserved] =
                [0, 1, 2, 3].map(|i| values.get(i).map_or(0, number));
            let available_after = balance - (settled - debited) - reserved;
            if available_after < 0 {
                denial = Some(Denial::WalletExhausted {
                    available: from_nano(available_after + estimate),
                    estimate: request.estimate,
                });
            }
        }
        for (budget, _) in &applying {
            let _ = replies.next();
            let values = match replies.next() {
                Some(Value::Array(values)) => values,
                _ => {
                    return Err(BackendError::new(
                        ErrorKind::Corrupt,
                        "redis control: budget reply",
                    ));
                }
            };
            let _ = replies.next();
            let (spent, reserved) = (
                values.first().map_or(0, number),
                values.get(1).map_or(0, number),
            );
            if denial.is_none() && spent + reserved > to_nano(budget.limit, false)? {
                denial = Some(Denial::BudgetExceeded {
                    scope: budget.scope.to_string(),
                    period: budget.period,
                    limit: budget.limit,
                    committed: from_nano(spent + reserved - estimate),
                    estimate: request.estimate,
                });
            }
        }
        let reservation = Reservation {
            id: 0,
            org: org.clone(),
            workspace: workspace.clone(),
            billing_mode: request.billing_mode,
            amount: request.estimate,
            budgets: applying.into_iter().map(|(_, c)| c).collect(),
        };
        match denial {
            Some(denial) => {
                self.move_counters(&reservation, -estimate, 0).await?;
                Ok(Decision::Denied(denial))
            }
            None => Ok(Decision::Allowed(reservation)),
        }
    }

    async fn settle(&self, reservation: &Reservation, actual: Decimal) -> Result<(), BackendError> {
        let estimate = to_nano(reservation.amount, true)?;
        self.move_counters(reservation, -estimate, to_nano(actual, true)?)
            .await
    }

    async fn release(&self, reservation: &Reservation) -> Result<(), BackendError> {
        self.move_counters(reservation, -to_nano(reservation.amount, true)?, 0)
            .await
    }

    async fn refresh_wallet(
        &self,
        org: &OrgId,
        workspace: &WorkspaceId,
        balance: Decimal,
        debited: Decimal,
    ) -> Result<(), BackendError> {
        let wallet = self.wallet_key(org, workspace);
        let _: Value = self
            .redis
            .pool
            .hset(
                &wallet,
                vec![
                    ("balance", to_nano(balance, false)?),
                    ("debited", to_nano(debited, false)?),
                ],
            )
            .await
            .map_err(backend)?;
        Ok(())
    }
}
