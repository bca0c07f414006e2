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
