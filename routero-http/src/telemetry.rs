//! The HTTP side's metrics, through the [`metrics`] facade: requests by route and
//! status with their latency, and wallet money in. A no-op until the process installs
//! a recorder ([`crate::ops`] does, feature `ops`).
//!
//! | metric | kind | labels |
//! |---|---|---|
//! | `routero_http_requests_total` | counter | `route` (a route template, never a raw path), `status` |
//! | `routero_http_request_duration_seconds` | histogram | `route` |
//! | `routero_wallet_money_in_total` | counter | `kind` (`top_up`, `refund`, `adjustment`), `currency` |
//! | `routero_db_replica_lag_seconds` | gauge | | how far the read database (a streaming replica) is behind its primary, as last measured ([`replica_lag`]) |

use std::time::Duration;

use http::StatusCode;

/// The billing API's route templates; any other path is `"other"`, so that the
/// label's values stay few whatever clients send.
const ROUTES: [&str; 17] = [
    "/billing/principal",
    "/billing/wallet",
    "/billing/wallets",
    "/billing/wallet/topup",
    "/billing/wallet/refund",
    "/billing/wallet/adjust",
    "/billing/transactions",
    "/billing/invoices",
    "/billing/daily-spend",
    "/billing/spend-trend",
    "/billing/overview",
    "/billing/repricings",
    "/billing/export.csv",
    "/team/daily/activity",
    "/user/daily/activity",
    "/customer/daily/activity",
    "/end_user/daily/activity",
];

/// The billing API's route template of `path`, or `"other"`.
pub fn api_route(path: &str) -> &'static str {
    let path = path.trim_end_matches('/');
    if let Some(route) = ROUTES.iter().find(|r| **r == path) {
        return route;
    }
    if path
        .strip_prefix("/billing/invoices/")
        .is_some_and(|n| !n.is_empty() && !n.contains('/'))
    {
        return "/billing/invoices/{number}";
    }
    if path
        .strip_prefix("/billing/repricings/")
        .is_some_and(|n| !n.is_empty() && !n.contains('/'))
    {
        return "/billing/repricings/{id}";
    }
    "other"
}

/// Describes this module's metrics to the installed recorder (its `# HELP` lines).
pub fn describe() {
    metrics::describe_counter!(
        "routero_http_requests_total",
        "HTTP requests answered, by route template and status."
    );
    metrics::describe_histogram!(
        "routero_http_request_duration_seconds",
        metrics::Unit::Seconds,
        "Time to the response head, by route template."
    );
    metrics::describe_counter!(
        "routero_wallet_money_in_total",
        "Wallet top-ups, refunds and adjustments written, by currency."
    );
    metrics::describe_gauge!(
        "routero_db_replica_lag_seconds",
        metrics::Unit::Seconds,
        "How far the database analytics read from is behind its primary."
    );
}

/// Reports the read replica's lag, as measured (`routero_postgres::PgReads::lag`).
pub fn replica_lag(lag: Duration) {
    metrics::gauge!("routero_db_replica_lag_seconds").set(lag.as_secs_f64());
}

/// Counts one answered request of `route` and its latency.
pub fn observe(route: &'static str, status: StatusCode, elapsed: Duration) {
    metrics::counter!(
        "routero_http_requests_total",
        "route" => route,
        "status" => status.as_str().to_owned()
    )
    .increment(1);
    metrics::histogram!("routero_http_request_duration_seconds", "route" => route)
        .record(elapsed.as_secs_f64());
}

/// Counts money written into a wallet (`kind`: `top_up`, `refund`, `adjustment`).
pub(crate) fn money_in(kind: &'static str, currency: &str) {
    metrics::counter!(
        "routero_wallet_money_in_total",
        "kind" => kind,
        "currency" => currency.to_owned()
    )
    .increment(1);
}

#[cfg(test)]
mod tests {
    use super::api_route;

    #[test]
    fn routes_are_templates() {
        assert_eq!(api_route("/billing/overview/"), "/billing/overview");
        assert_eq!(
            api_route("/billing/invoices/INV-2026-000001"),
            "/billing/invoices/{number}"
        );
        assert_eq!(api_route("/billing/invoices/a/b"), "other");
        assert_eq!(api_route("/wp-admin/x"), "other");
    }
}
