//! The billing API end to end over the in-memory store: scoping, errors, shapes.

use std::sync::Arc;

use bytes::Bytes;
use chrono::{Duration, TimeZone, Utc};
use http::{Method, Request, Response, StatusCode};
use routero_core::Currency;
use routero_core::attribution::{OrgId, TeamId, WorkspaceId};
use routero_core::conformance::{sample_day, sample_event};
use routero_core::memory::{ManualClock, MemoryStore};
use routero_core::port::{DrainApply, FencingToken, SpendStore};
use routero_core::spend::{QueuePosition, Rollups, ShardId, SpendEvent};
use routero_core::wallet::Wallets;
use routero_http::api::{ApiConfig, BillingApi, Principal, Role};
use serde_json::Value;

fn ws(name: &str) -> WorkspaceId {
    WorkspaceId::new(name).unwrap()
}

/// Events of two orgs around the sample day (2026-11-02); the clock stands at
/// 2026-11-10 12:00.
async fn api() -> (BillingApi, Arc<MemoryStore>) {
    let store = Arc::new(MemoryStore::new());
    let mut events: Vec<SpendEvent> = Vec::new();
    for (seq, day, cost) in [
        (0u64, 0, "1.5"),
        (1, 0, "0.25"),
        (2, 2, "2"),
        (3, 5, "0.125"),
    ] {
        let mut e = sample_event("acme", seq, cost);
        e.event_time += Duration::days(day);
        events.push(e);
    }
    events.push(sample_event("other", 9, "100"));
    let mut rollups = Rollups::new();
    for e in &events {
        rollups.add_event(e).unwrap();
    }
    store
        .apply(DrainApply {
            shard: ShardId(0),
            token: FencingToken(1),
            expected: None,
            through: QueuePosition::new(1, 0),
            rollups: &rollups,
            events: &events,
            at: sample_day().and_hms_opt(23, 0, 0).unwrap().and_utc(),
        })
        .await
        .unwrap();
    for w in ["acme-ws", "other-ws"] {
        store.open(&ws(w), Currency::USD).await.unwrap();
    }
    let clock = Arc::new(ManualClock::new(
        Utc.with_ymd_and_hms(2026, 11, 10, 12, 0, 0).unwrap(),
    ));
    let api = BillingApi::new(
        store.clone(),
        store.clone(),
        store.clone(),
        clock,
        ApiConfig::default(),
    );
    (api, store)
}

fn admin() -> Principal {
    Principal {
        org: OrgId::new("acme").unwrap(),
        workspaces: Some(vec![ws("acme-ws")]),
        teams: None,
        role: Role::Admin,
    }
}

fn get(uri: &str) -> Request<Bytes> {
    Request::get(uri).body(Bytes::new()).unwrap()
}

fn top_up(key: Option<&str>, body: &str) -> Request<Bytes> {
    let mut builder = Request::builder()
        .method(Method::POST)
        .uri("/billing/wallet/topup?workspace=acme-ws");
    if let Some(key) = key {
        builder = builder.header("idempotency-key", key);
    }
    builder.body(Bytes::from(body.to_owned())).unwrap()
}

fn body(response: &Response<Bytes>) -> Value {
    serde_json::from_slice(response.body())
        .unwrap_or_else(|e| panic!("{e}: {:?}", String::from_utf8_lossy(response.body())))
}

/// Asserts a problem+json answer of `status` and type `id`.
fn assert_problem(response: &Response<Bytes>, status: StatusCode, id: &str) {
    assert_eq!(response.status(), status, "{:?}", response.body());
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    let value = body(response);
    assert_eq!(
        value["type"],
        format!("https://routero.dev/problems/{id}"),
        "{value}"
    );
    assert_eq!(value["status"], status.as_u16());
}

#[tokio::test]
async fn no_principal_is_401_everywhere() {
    let (api, _) = api().await;
    for uri in [
        "/billing/wallet",
        "/billing/daily-spend",
        "/team/daily/activity",
        "/nowhere",
    ] {
        let response = api.handle(None, get(uri)).await;
        assert_problem(&response, StatusCode::UNAUTHORIZED, "unauthorized");
    }
}

#[tokio::test]
async fn a_top_up_is_created_once_per_key() {
    let (api, store) = api().await;
    let p = admin();
    let first = api
        .handle(
            Some(&p),
            top_up(Some("k1"), r#"{"amount": "1000.00", "currency": "USD"}"#),
        )
        .await;
    assert_eq!(first.status(), StatusCode::CREATED, "{:?}", first.body());
    let replay = api
        .handle(
            Some(&p),
            top_up(Some("k1"), r#"{"amount": "1000.00", "currency": "USD"}"#),
        )
        .await;
    assert_eq!(replay.status(), StatusCode::CREATED);
    assert_eq!(
        body(&first),
        body(&replay),
        "the replay answers the same entry"
    );

    let conflict = api
        .handle(
            Some(&p),
            top_up(Some("k1"), r#"{"amount": "5.00", "currency": "USD"}"#),
        )
        .await;
    assert_problem(&conflict, StatusCode::CONFLICT, "idempotency-conflict");

    let wallet = api
        .handle(Some(&p), get("/billing/wallet?workspace=acme-ws"))
        .await;
    assert_eq!(wallet.status(), StatusCode::OK);
    let balance = store
        .balance(&ws("acme-ws"), Utc::now())
        .await
        .unwrap()
        .balance;
    // The drain already debited the managed usage: 1.5 + 2.
    assert_eq!(balance.to_string(), "996.50", "one top-up, not two");
    assert_eq!(body(&wallet)["balance"], "996.50");
}

#[tokio::test]
async fn bad_top_ups_are_refused_with_their_reason() {
    let (api, _) = api().await;
    let p = admin();
    let cases = [
        (
            Some("a"),
            r#"{"amount": "-5", "currency": "USD"}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-amount",
        ),
        (
            Some("b"),
            r#"{"amount": "ten", "currency": "USD"}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-amount",
        ),
        (
            Some("c"),
            r#"{"amount": "5", "currency": "EUR"}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-currency",
        ),
        (
            Some("d"),
            r#"{"amount": "5", "currency": "XYZ"}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-currency",
        ),
        (
            Some("e"),
            r#"{"amount": 5, "currency": "USD"}"#,
            StatusCode::BAD_REQUEST,
            "bad-request",
        ),
        (
            None,
            r#"{"amount": "5", "currency": "USD"}"#,
            StatusCode::BAD_REQUEST,
            "bad-request",
        ),
    ];
    for (key, text, status, id) in cases {
        let response = api.handle(Some(&p), top_up(key, text)).await;
        assert_problem(&response, status, id);
    }
    let viewer = Principal {
        role: Role::Viewer,
        ..admin()
    };
    let response = api
        .handle(
            Some(&viewer),
            top_up(Some("f"), r#"{"amount": "5", "currency": "USD"}"#),
        )
        .await;
    assert_problem(&response, StatusCode::FORBIDDEN, "forbidden");
    let transactions = api
        .handle(Some(&p), get("/billing/transactions?workspace=acme-ws"))
        .await;
    assert_eq!(transactions.status(), StatusCode::OK);
    let entries = body(&transactions);
    let kinds: Vec<&str> = entries["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        ["usage_debit"],
        "no refused top-up left a trace: {entries}"
    );
}

#[tokio::test]
async fn another_tenant_is_not_found() {
    let (api, _) = api().await;
    let p = admin();
    for uri in [
        "/billing/wallet?workspace=other-ws",
        "/billing/transactions?workspace=other-ws",
        "/billing/invoices?workspace=other-ws",
        "/billing/invoices/2026-11?workspace=other-ws",
        "/billing/overview?workspace=other-ws",
        "/billing/daily-spend?start_date=2026-11-01&end_date=2026-11-10&workspace=other-ws",
    ] {
        let response = api.handle(Some(&p), get(uri)).await;
        assert_problem(&response, StatusCode::NOT_FOUND, "not-found");
    }
    // The other org's 100 never counts, even with no workspace named.
    let response = api
        .handle(
            Some(&p),
            get("/billing/daily-spend?start_date=2026-11-01&end_date=2026-11-10"),
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let days = body(&response);
    let days = days.as_array().unwrap();
    assert_eq!(days.len(), 10);
    let total: rust_decimal::Decimal = days
        .iter()
        .map(|d| {
            d["spend"]
                .as_str()
                .unwrap()
                .parse::<rust_decimal::Decimal>()
                .unwrap()
        })
        .sum();
    assert_eq!(total.to_string(), "3.875");
}

#[tokio::test]
async fn dates_are_checked() {
    let (api, _) = api().await;
    let p = admin();
    let cases = [
        ("start_date=2026-13-01&end_date=2026-11-10", "bad-date"),
        ("start_date=2026-11-01", "bad-date"),
        ("start_date=2026-11-10&end_date=2026-11-01", "date-order"),
        (
            "start_date=2024-01-01&end_date=2026-11-10",
            "range-too-long",
        ),
        (
            "start_date=2026-11-01&end_date=2026-11-10&exclude_team_ids=t",
            "bad-request",
        ),
        (
            "start_date=2026-11-01&end_date=2026-11-10&billing_mode=free",
            "bad-request",
        ),
    ];
    for (query, id) in cases {
        for path in ["/billing/daily-spend", "/team/daily/activity"] {
            let response = api.handle(Some(&p), get(&format!("{path}?{query}"))).await;
            assert_problem(&response, StatusCode::BAD_REQUEST, id);
        }
    }
}

#[tokio::test]
async fn team_activity_has_litellms_shape_and_the_principals_teams_only() {
    let (api, _) = api().await;
    let p = Principal {
        teams: Some(vec![TeamId::new("team-0").unwrap()]),
        ..admin()
    };
    let response = api
        .handle(
            Some(&p),
            get("/team/daily/activity?start_date=2026-11-01&end_date=2026-11-10"),
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK, "{:?}", response.body());
    let value = body(&response);
    let metadata = &value["metadata"];
    // team-0 holds sequence numbers 0 and 3: 1.5 + 0.125.
    assert_eq!(metadata["total_spend"], "1.625", "{value}");
    assert_eq!(metadata["total_api_requests"], 2);
    assert_eq!(metadata["page"], 1);
    assert_eq!(metadata["has_more"], false);
    let results = value["results"].as_array().unwrap();
    assert!(!results.is_empty());
    for day in results {
        assert!(day["date"].is_string(), "{day}");
        assert!(day["metrics"]["spend"].is_string(), "{day}");
    }
}

#[tokio::test]
async fn invoices_come_as_json_or_csv() {
    let (api, _) = api().await;
    let p = admin();
    let response = api
        .handle(Some(&p), get("/billing/invoices/2026-11?workspace=acme-ws"))
        .await;
    assert_eq!(response.status(), StatusCode::OK, "{:?}", response.body());
    let invoice = body(&response);
    assert_eq!(invoice["month"], "2026-11", "{invoice}");
    assert_eq!(invoice["status"], "draft");
    assert_eq!(invoice["managed_spend"], "3.5", "BYOK spend is not billed");

    let csv = api
        .handle(
            Some(&p),
            get("/billing/invoices/2026-11?workspace=acme-ws&format=csv"),
        )
        .await;
    assert_eq!(csv.status(), StatusCode::OK);
    assert_eq!(csv.headers()["content-type"], "text/csv; charset=utf-8");
    let text = String::from_utf8(csv.body().to_vec()).unwrap();
    assert!(text.lines().count() > 1, "{text}");

    for month in ["2026-13", "november"] {
        let response = api
            .handle(
                Some(&p),
                get(&format!("/billing/invoices/{month}?workspace=acme-ws")),
            )
            .await;
        assert_problem(&response, StatusCode::NOT_FOUND, "unknown-month");
    }
    let finals = api
        .handle(Some(&p), get("/billing/invoices?workspace=acme-ws"))
        .await;
    assert_eq!(finals.status(), StatusCode::OK);
    assert_eq!(
        body(&finals),
        serde_json::json!([]),
        "nothing finalised yet"
    );
}

#[tokio::test]
async fn the_overview_adds_balance_and_month_to_date() {
    let (api, _) = api().await;
    let p = admin();
    let response = api
        .handle(Some(&p), get("/billing/overview?workspace=acme-ws"))
        .await;
    assert_eq!(response.status(), StatusCode::OK, "{:?}", response.body());
    let value = body(&response);
    assert_eq!(value["month_to_date"], "3.875", "{value}");
    assert_eq!(value["managed_month_to_date"], "3.5");
    assert_eq!(value["byok_month_to_date"], "0.375");
    assert_eq!(value["balance"], "-3.5", "usage debited, nothing topped up");
    assert_eq!(value["days_elapsed"], 10);
    assert_eq!(value["days_in_month"], 30);
}
