//! Spend controls: concurrent reservations never overspend; budgets per period; the
//! wallet counts spend not yet drained.

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use routero_core::attribution::{Attribution, BillingMode, TeamId, WorkspaceId};
use routero_core::control::{
    self, Budget, BudgetScope, Decision, Denial, MemoryControl, Period, SpendControl, SpendRequest,
};
use routero_core::{PriceTable, Provider};
use rust_decimal::Decimal;

fn d(text: &str) -> Decimal {
    Decimal::from_str_exact(text).unwrap()
}

fn at() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-11-25T10:00:00Z")
        .unwrap()
        .to_utc()
}

fn who(team: &str) -> Attribution {
    Attribution::new("acme".parse().unwrap(), "ws".parse().unwrap())
        .with_team(team.parse().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_reservations_never_reserve_more_than_is_available() {
    let control = MemoryControl::new();
    let ws: WorkspaceId = "ws".parse().unwrap();
    control
        .refresh_wallet(&ws, d("10.00"), Decimal::ZERO)
        .await
        .unwrap();
    let attribution = Arc::new(who("search"));
    let tasks: Vec<_> = (0..100)
        .map(|_| {
            let control = control.clone();
            let attribution = attribution.clone();
            tokio::spawn(async move {
                let request = SpendRequest {
                    attribution: &attribution,
                    billing_mode: BillingMode::Managed,
                    estimate: d("1.00"),
                    at: at(),
                };
                control.reserve(&request, &[]).await.unwrap()
            })
        })
        .collect();
    let mut allowed = Vec::new();
    for task in tasks {
        if let Decision::Allowed(r) = task.await.unwrap() {
            allowed.push(r);
        }
    }
    assert_eq!(
        allowed.len(),
        10,
        "exactly the wallet's worth of reservations"
    );
    // Each request costs 0.60 in the end: 6.00 settled, not drained yet.
    for r in &allowed {
        control.settle(r, d("0.60")).await.unwrap();
    }
    assert_eq!(
        control.available(&ws),
        d("4.00"),
        "undrained spend counts against the balance"
    );
    // The drain debits the 6.00: the ledger's balance and debits move together.
    control
        .refresh_wallet(&ws, d("4.00"), d("6.00"))
        .await
        .unwrap();
    assert_eq!(control.available(&ws), d("4.00"));
    let request = SpendRequest {
        attribution: &attribution,
        billing_mode: BillingMode::Managed,
        estimate: d("4.01"),
        at: at(),
    };
    let denied = control.reserve(&request, &[]).await.unwrap();
    assert_eq!(
        denied,
        Decision::Denied(Denial::WalletExhausted {
            available: d("4.00"),
            estimate: d("4.01")
        })
    );
}

#[tokio::test]
async fn budgets_hold_per_period_and_byok_skips_the_wallet() {
    let control = MemoryControl::new();
    let team: TeamId = "research".parse().unwrap();
    let budgets = [Budget {
        scope: BudgetScope::Team(team.clone()),
        period: Period::Day,
        limit: d("2.00"),
    }];
    let research = who("research");
    let other = who("other");
    let ask = |attribution, estimate: &str, when| SpendRequest {
        attribution,
        billing_mode: BillingMode::Byok,
        estimate: d(estimate),
        at: when,
    };
    let Decision::Allowed(first) = control
        .reserve(&ask(&research, "1.50", at()), &budgets)
        .await
        .unwrap()
    else {
        panic!("within budget, and BYOK needs no wallet")
    };
    let second = control
        .reserve(&ask(&research, "1.00", at()), &budgets)
        .await
        .unwrap();
    assert!(
        matches!(second, Decision::Denied(Denial::BudgetExceeded { .. })),
        "{second:?}"
    );
    assert!(
        matches!(
            control
                .reserve(&ask(&other, "1.00", at()), &budgets)
                .await
                .unwrap(),
            Decision::Allowed(_)
        ),
        "another team's budget is not this one"
    );
    control.release(&first).await.unwrap();
    let Decision::Allowed(third) = control
        .reserve(&ask(&research, "1.00", at()), &budgets)
        .await
        .unwrap()
    else {
        panic!("released reservations free the budget")
    };
    control.settle(&third, d("1.75")).await.unwrap();
    assert!(
        matches!(
            control
                .reserve(&ask(&research, "0.50", at()), &budgets)
                .await
                .unwrap(),
            Decision::Denied(_)
        ),
        "1.75 spent + 0.50 > 2.00"
    );
    let tomorrow = at() + Duration::days(1);
    assert!(
        matches!(
            control
                .reserve(&ask(&research, "2.00", tomorrow), &budgets)
                .await
                .unwrap(),
            Decision::Allowed(_)
        ),
        "a new day, a new budget"
    );
    assert_eq!(Period::Week.start(at()).to_string(), "2026-11-23");
    assert_eq!(Period::Month.start(at()).to_string(), "2026-11-01");
}

#[test]
fn the_estimate_is_the_maximum_cost() {
    let prices = PriceTable::bundled();
    // claude-sonnet-4-5: input 3/M, 1h writes 6/M, output 15/M.
    let estimate = control::max_cost(
        &prices,
        &Provider::Anthropic,
        "claude-sonnet-4-5",
        10_000,
        1_000,
        at(),
    )
    .unwrap();
    assert_eq!(
        estimate,
        d("0.075"),
        "10k prompt tokens as 1h writes (0.06) + 1k output (0.015)"
    );
    assert!(control::max_cost(&prices, &Provider::Anthropic, "no-such-model", 1, 1, at()).is_err());
}
