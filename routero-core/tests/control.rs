//! Spend controls on the in-memory port, and the cost estimate.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use routero_core::conformance;
use routero_core::control::{self, MemoryControl, Period};
use routero_core::{PriceTable, Provider};
use rust_decimal::Decimal;

fn at() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-11-25T10:00:00Z")
        .unwrap()
        .to_utc()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reservations_never_overspend() {
    conformance::control_reservations_never_overspend(Arc::new(MemoryControl::new())).await;
}

#[tokio::test]
async fn budgets_hold_per_period() {
    conformance::control_budgets_hold_per_period(Arc::new(MemoryControl::new())).await;
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
        Decimal::from_str_exact("0.075").unwrap(),
        "10k prompt tokens as 1h writes + 1k output"
    );
    assert!(control::max_cost(&prices, &Provider::Anthropic, "no-such-model", 1, 1, at()).is_err());
}

/// Counts the calls that reach the shared control: its round trips.
#[derive(Debug)]
struct Counting {
    inner: MemoryControl,
    reserves: std::sync::atomic::AtomicUsize,
}

#[async_trait::async_trait]
impl control::SpendControl for Counting {
    async fn reserve(
        &self,
        request: &control::SpendRequest<'_>,
        budgets: &[control::Budget],
    ) -> Result<control::Decision, routero_core::port::BackendError> {
        self.reserves
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.inner.reserve(request, budgets).await
    }
    async fn settle(
        &self,
        r: &control::Reservation,
        actual: Decimal,
    ) -> Result<(), routero_core::port::BackendError> {
        self.inner.settle(r, actual).await
    }
    async fn release(
        &self,
        r: &control::Reservation,
    ) -> Result<(), routero_core::port::BackendError> {
        self.inner.release(r).await
    }
    async fn refresh_wallet(
        &self,
        org: &routero_core::attribution::OrgId,
        w: &routero_core::attribution::WorkspaceId,
        balance: Decimal,
        debited: Decimal,
    ) -> Result<(), routero_core::port::BackendError> {
        self.inner.refresh_wallet(org, w, balance, debited).await
    }
}

fn d(text: &str) -> Decimal {
    Decimal::from_str_exact(text).unwrap()
}

#[tokio::test]
async fn a_local_allowance_needs_no_round_trip_far_from_exhaustion() {
    use control::{Decision, LocalAllowance, SpendControl, SpendRequest};
    use routero_core::attribution::{Attribution, BillingMode};
    let shared = Arc::new(Counting {
        inner: MemoryControl::new(),
        reserves: Default::default(),
    });
    let org = "acme".parse().unwrap();
    let ws: routero_core::attribution::WorkspaceId = "ws".parse().unwrap();
    shared
        .refresh_wallet(&org, &ws, d("100.00"), Decimal::ZERO)
        .await
        .unwrap();
    let local = LocalAllowance::new(shared.clone(), d("10.00"));
    let who = Attribution::new(org.clone(), ws.clone());
    let ask = |estimate: &str| SpendRequest {
        attribution: &who,
        billing_mode: BillingMode::Managed,
        estimate: d(estimate),
        at: at(),
    };
    for _ in 0..50 {
        let Decision::Allowed(r) = local.reserve(&ask("0.10"), &[]).await.unwrap() else {
            panic!("allowed")
        };
        local.settle(&r, d("0.08")).await.unwrap();
    }
    assert_eq!(
        shared.reserves.load(std::sync::atomic::Ordering::Relaxed),
        1,
        "one chunk for fifty requests"
    );
    local.flush().await.unwrap();
    // The shared control now holds the local spend: 100 − 50 × 0.08 = 96 available.
    assert!(matches!(
        shared.reserve(&ask("96.00"), &[]).await.unwrap(),
        Decision::Allowed(_)
    ));
}

#[tokio::test]
async fn replicas_with_allowances_still_never_overspend() {
    use control::{Decision, LocalAllowance, SpendControl, SpendRequest};
    use routero_core::attribution::{Attribution, BillingMode};
    let shared = Arc::new(MemoryControl::new());
    let org = "acme".parse().unwrap();
    let ws: routero_core::attribution::WorkspaceId = "ws".parse().unwrap();
    shared
        .refresh_wallet(&org, &ws, d("10.00"), Decimal::ZERO)
        .await
        .unwrap();
    let replicas = [
        LocalAllowance::new(shared.clone(), d("4.00")),
        LocalAllowance::new(shared.clone(), d("4.00")),
    ];
    let who = Attribution::new(org, ws);
    let mut allowed = 0;
    for i in 0..40 {
        let request = SpendRequest {
            attribution: &who,
            billing_mode: BillingMode::Managed,
            estimate: d("1.00"),
            at: at(),
        };
        if let Decision::Allowed(_) = replicas[i % 2].reserve(&request, &[]).await.unwrap() {
            allowed += 1;
        }
    }
    assert_eq!(
        allowed, 10,
        "two replicas together reserve exactly the wallet"
    );
}
