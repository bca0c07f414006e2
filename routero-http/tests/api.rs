//! The billing API end to end over the in-memory store: scoping, errors, shapes.

use std::sync::Arc;

use bytes::Bytes;
use chrono::{Duration, TimeZone, Utc};
use http::{Method, Request, Response, StatusCode};
use routero_core::Currency;
use routero_core::PriceTable;
use routero_core::attribution::{OrgId, TeamId, WorkspaceId};
use routero_core::conformance::{apply_first_step, sample_day, sample_event};
use routero_core::invoice::{BillingDirectory, InvoiceStore, WorkspaceBilling};
use routero_core::memory::{ManualClock, MemoryStore};
use routero_core::port::{SpendReader, SpendStore};
use routero_core::price::LivePrices;
use routero_core::reprice::Repricings;
use routero_core::spend::SpendEvent;
use routero_core::wallet::Wallets;
use routero_http::api::{ApiConfig, BillingApi, Principal, Role};
use routero_postgres::{PgConfig, PgStore};
use serde_json::Value;

fn ws(name: &str) -> WorkspaceId {
    WorkspaceId::new(name).unwrap()
}

/// Events of two orgs around the sample day (2026-11-02), drained into `store`; the
/// clock stands at 2026-11-10 12:00.
async fn api_over<S>(store: Arc<S>) -> BillingApi
where
    S: SpendStore + SpendReader + Wallets + InvoiceStore + Repricings,
{
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
    let billing = directory();
    billing.open_wallets(&*store).await.unwrap();
    apply_first_step(
        &*store,
        &events,
        sample_day().and_hms_opt(23, 0, 0).unwrap().and_utc(),
    )
    .await;
    let clock = Arc::new(ManualClock::new(
        Utc.with_ymd_and_hms(2026, 11, 10, 12, 0, 0).unwrap(),
    ));
    BillingApi::new(
        store.clone(),
        store.clone(),
        store.clone(),
        clock,
        ApiConfig {
            billing,
            ..ApiConfig::default()
        },
    )
    .with_repricing(store, LivePrices::new(PriceTable::bundled()))
}

/// Acme bills acme-ws in USD and acme-eu in EUR; the other org bills other-ws.
fn directory() -> BillingDirectory {
    let billing = |org: &str, currency: Currency| WorkspaceBilling {
        org: OrgId::new(org).unwrap(),
        currency,
        plan: None,
    };
    BillingDirectory::new()
        .with(ws("acme-ws"), billing("acme", Currency::USD))
        .with(ws("acme-eu"), billing("acme", Currency::EUR))
        .with(ws("other-ws"), billing("other", Currency::USD))
}

async fn memory_api() -> BillingApi {
    api_over(Arc::new(MemoryStore::new())).await
}

/// A test server's address from the environment; `None` (skipped, with a notice) when
/// it is not set and services are not required.
fn service(variable: &str) -> Option<String> {
    match std::env::var(variable) {
        Ok(url) => Some(url),
        Err(_) if std::env::var("ROUTERO_TEST_REQUIRE_SERVICES").is_ok_and(|v| v == "1") => {
            panic!("{variable} is not set and services are required")
        }
        Err(_) => {
            eprintln!("skipped: {variable} is not set (run scripts/test.sh)");
            None
        }
    }
}

/// The API over a fresh schema of the PostgreSQL server in `ROUTERO_TEST_DATABASE_URL`;
/// `None` (skipped) when there is none and services are not required.
async fn pg_api() -> Option<BillingApi> {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let url = service("ROUTERO_TEST_DATABASE_URL")?;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let mut config = PgConfig::new(url);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    config.schema = Some(format!("api_{}_{nanos}_{n}", std::process::id()));
    let store = PgStore::connect(config).await.expect("connect and migrate");
    Some(api_over(Arc::new(store)).await)
}

/// The API over PostgreSQL with its analytics and exports read from the streaming
/// replica of `ROUTERO_TEST_DATABASE_READ_URL` (scripts/test.sh starts one).
async fn pg_replica_api() -> Option<BillingApi> {
    let read_url = service("ROUTERO_TEST_DATABASE_READ_URL")?;
    let url = service("ROUTERO_TEST_DATABASE_URL")?;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let mut config = PgConfig::new(url);
    config.schema = Some(format!("apir_{}_{nanos}", std::process::id()));
    config.read_url = Some(read_url);
    let store = PgStore::connect(config).await.expect("connect and migrate");
    let reads = store.reads();
    assert!(
        reads.lag().await.unwrap().is_some(),
        "ROUTERO_TEST_DATABASE_READ_URL is a streaming replica"
    );
    let replica = Arc::new(ReplicaReads {
        store: store.clone(),
        reads,
    });
    Some(
        api_over(Arc::new(store))
            .await
            .with_analytics_reader(replica),
    )
}

/// The replica's reads, each after the replica has replayed what the test wrote
/// (the replica lags its primary; the checks read right after their writes).
#[derive(Debug)]
struct ReplicaReads {
    store: PgStore,
    reads: routero_postgres::PgReads,
}

#[async_trait::async_trait]
impl SpendReader for ReplicaReads {
    async fn rollups(
        &self,
        filter: &routero_core::port::RollupFilter,
    ) -> Result<Vec<routero_core::port::RollupRow>, routero_core::port::BackendError> {
        self.store
            .sync_reads(std::time::Duration::from_secs(10))
            .await?;
        self.reads.rollups(filter).await
    }
}

/// Runs each named check on the in-memory store, on PostgreSQL, and on PostgreSQL
/// with the analytics read from a streaming replica.
macro_rules! on_both_stores {
    ($($check:ident),* $(,)?) => {$(
        mod $check {
            #[tokio::test]
            async fn memory() {
                super::$check(super::memory_api().await).await;
            }

            #[tokio::test]
            async fn postgres() {
                if let Some(api) = super::pg_api().await {
                    super::$check(api).await;
                }
            }

            #[tokio::test]
            async fn postgres_replica() {
                if let Some(api) = super::pg_replica_api().await {
                    super::$check(api).await;
                }
            }
        }
    )*};
}

on_both_stores!(
    no_principal_is_401_everywhere,
    the_principal_is_told_who_it_is,
    a_top_up_is_created_once_per_key,
    bad_top_ups_are_refused_with_their_reason,
    another_tenant_is_not_found,
    dates_are_checked,
    team_activity_has_litellms_shape_and_the_principals_teams_only,
    invoices_come_as_json_or_csv,
    the_overview_adds_balance_and_month_to_date,
    the_openapi_document_describes_every_response,
    exports_are_a_months_csv_scoped_to_the_principal,
    hostile_requests_get_problems_and_change_nothing,
    the_product_pages_top_up_works_as_written,
    the_workspace_comes_from_the_principal_or_the_directory,
    the_billing_currency_is_a_setting,
    refunds_and_adjustments_are_admin_writes_with_a_memo,
    repricings_are_exact_once_and_the_orgs_own,
);

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

/// The JSON body; a key written twice in one object fails the test (the parsed value
/// keeps one, so it serialises shorter than the compact body).
fn body(response: &Response<Bytes>) -> Value {
    let value: Value = serde_json::from_slice(response.body())
        .unwrap_or_else(|e| panic!("{e}: {:?}", String::from_utf8_lossy(response.body())));
    assert_eq!(
        serde_json::to_vec(&value).unwrap().len(),
        response.body().len(),
        "a key is written twice: {}",
        String::from_utf8_lossy(response.body())
    );
    value
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

async fn no_principal_is_401_everywhere(api: BillingApi) {
    for uri in [
        "/billing/principal",
        "/billing/wallet",
        "/billing/daily-spend",
        "/team/daily/activity",
        "/nowhere",
    ] {
        let response = api.handle(None, get(uri)).await;
        assert_problem(&response, StatusCode::UNAUTHORIZED, "unauthorized");
    }
}

async fn the_principal_is_told_who_it_is(api: BillingApi) {
    let response = api.handle(Some(&admin()), get("/billing/principal")).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        body(&response),
        serde_json::json!({"org": "acme", "workspaces": ["acme-ws"], "teams": null, "role": "admin"})
    );
    let viewer = Principal {
        teams: Some(vec![TeamId::new("team-1").unwrap()]),
        workspaces: None,
        role: Role::Viewer,
        ..admin()
    };
    let response = api.handle(Some(&viewer), get("/billing/principal")).await;
    assert_eq!(
        body(&response),
        serde_json::json!({"org": "acme", "workspaces": null, "teams": ["team-1"], "role": "viewer"})
    );
}

async fn a_top_up_is_created_once_per_key(api: BillingApi) {
    let p = admin();
    let first = api
        .handle(
            Some(&p),
            top_up(Some("k1"), r#"{"amount": "1000.00", "currency": "USD"}"#),
        )
        .await;
    assert_eq!(first.status(), StatusCode::CREATED, "{:?}", first.body());
    assert!(!first.headers().contains_key("idempotent-replayed"));
    let replay = api
        .handle(
            Some(&p),
            top_up(Some("k1"), r#"{"amount": 1000.00, "currency": "USD"}"#),
        )
        .await;
    assert_eq!(
        replay.status(),
        StatusCode::OK,
        "a replay is not a creation: {:?}",
        replay.body()
    );
    assert_eq!(replay.headers()["idempotent-replayed"], "true");
    let (mut first, mut replay) = (body(&first), body(&replay));
    assert_eq!(first["replayed"], false);
    assert_eq!(replay["replayed"], true);
    first["replayed"] = Value::Null;
    replay["replayed"] = Value::Null;
    assert_eq!(
        first, replay,
        "the replay (the same amount, as a number) answers the same entry"
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
    // The drain already debited the managed usage: 1.5 + 2.
    assert_eq!(body(&wallet)["balance"], "996.50", "one top-up, not two");
}

async fn bad_top_ups_are_refused_with_their_reason(api: BillingApi) {
    let p = admin();
    let unprocessable = StatusCode::UNPROCESSABLE_ENTITY;
    // (body, status, problem type, what the detail must say)
    let mut cases: Vec<(String, StatusCode, &str, &str)> = Vec::new();
    // Every amount outside the grammar, as a string and (where JSON has it) a number.
    for amount in [
        "-5",
        "ten",
        "1_000",
        "1e2",
        "+3.00",
        " 4.00 ",
        "5.",
        ".5",
        "1.5000000",
        "1,000.00",
        "",
    ] {
        cases.push((
            format!(r#"{{"amount": "{amount}", "currency": "USD"}}"#),
            unprocessable,
            "invalid-amount",
            "ASCII digits, optionally followed by '.' and 1 to 2 more digits",
        ));
    }
    for number in ["1e2", "-3", "5.001", "1.5000000", "1E+2"] {
        cases.push((
            format!(r#"{{"amount": {number}, "currency": "USD"}}"#),
            unprocessable,
            "invalid-amount",
            "ASCII digits",
        ));
    }
    for other in ["true", "null", "[5]", r#"{"$gt": 0}"#] {
        cases.push((
            format!(r#"{{"amount": {other}, "currency": "USD"}}"#),
            unprocessable,
            "invalid-amount",
            "JSON number or string",
        ));
    }
    for zero in [r#""0""#, r#""0.00""#, "0", "0.0"] {
        cases.push((
            format!(r#"{{"amount": {zero}, "currency": "USD"}}"#),
            unprocessable,
            "invalid-amount",
            "must be positive",
        ));
    }
    cases.push((
        r#"{"amount": "1000000.01", "currency": "USD"}"#.to_owned(),
        unprocessable,
        "invalid-amount",
        "at most 1000000",
    ));
    for currency in ["usd", "Usd", " USD", "XYZ", ""] {
        cases.push((
            format!(r#"{{"amount": "5", "currency": "{currency}"}}"#),
            unprocessable,
            "invalid-currency",
            "upper-case ISO 4217",
        ));
    }
    cases.push((
        r#"{"amount": "5", "currency": "EUR"}"#.to_owned(),
        unprocessable,
        "invalid-currency",
        "acme-ws is billed in USD, not EUR",
    ));
    cases.push((
        r#"{"amount": "5", "currency": "USD", "memo": "x"}"#.to_owned(),
        StatusCode::BAD_REQUEST,
        "bad-request",
        "only amount and currency",
    ));
    cases.push((
        r#"{"currency": "USD"}"#.to_owned(),
        StatusCode::BAD_REQUEST,
        "bad-request",
        "amount",
    ));
    for (i, (text, status, id, says)) in cases.iter().enumerate() {
        let response = api
            .handle(Some(&p), top_up(Some(&format!("bad-{i}")), text))
            .await;
        assert_problem(&response, *status, id);
        let detail = body(&response)["detail"].as_str().unwrap().to_owned();
        assert!(
            detail.contains(says),
            "{text}: {detail:?} should say {says:?}"
        );
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

async fn another_tenant_is_not_found(api: BillingApi) {
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

    // The other org has a team-0, a key-4 and a cust-1 too; naming them never reaches it.
    let total_of = |value: &Value| {
        value["metadata"]["total_spend"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let range = "start_date=2026-11-01&end_date=2026-11-10";
    for (path, filter, expected) in [
        ("/team/daily/activity", "team_ids=team-0", "1.625"),
        ("/customer/daily/activity", "end_user_ids=cust-1", "0.375"),
        ("/user/daily/activity", "api_key=key-4", "0"),
    ] {
        let response = api
            .handle(Some(&p), get(&format!("{path}?{range}&{filter}")))
            .await;
        assert_eq!(response.status(), StatusCode::OK, "{path}?{filter}");
        assert_eq!(total_of(&body(&response)), expected, "{path}?{filter}");
    }
    // A principal held to team-1 asking for team-0 gets nothing, not team-0's spend.
    let held = Principal {
        teams: Some(vec![TeamId::new("team-1").unwrap()]),
        ..admin()
    };
    let response = api
        .handle(
            Some(&held),
            get(&format!("/team/daily/activity?{range}&team_ids=team-0")),
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(total_of(&body(&response)), "0");
    // Another org's principal sees only its own 100.
    let other = Principal {
        org: OrgId::new("other").unwrap(),
        workspaces: None,
        teams: None,
        role: Role::Viewer,
    };
    let response = api
        .handle(Some(&other), get(&format!("/team/daily/activity?{range}")))
        .await;
    assert_eq!(total_of(&body(&response)), "100");
}

async fn dates_are_checked(api: BillingApi) {
    let p = admin();
    // Both dates left out: the month to date (the clock says 2026-11-10).
    for path in [
        "/billing/daily-spend",
        "/billing/spend-trend",
        "/team/daily/activity",
        "/user/daily/activity",
        "/customer/daily/activity",
    ] {
        let bare = api.handle(Some(&p), get(path)).await;
        assert_eq!(bare.status(), StatusCode::OK, "{path}: {:?}", bare.body());
        let explicit = api
            .handle(
                Some(&p),
                get(&format!("{path}?start_date=2026-11-01&end_date=2026-11-10")),
            )
            .await;
        assert_eq!(bare.body(), explicit.body(), "{path}");
    }
    let bare = body(&api.handle(Some(&p), get("/billing/daily-spend")).await);
    let days = bare.as_array().unwrap();
    assert_eq!(days.len(), 10, "2026-11-01 to 2026-11-10: {bare}");
    let spend: rust_decimal::Decimal = days
        .iter()
        .map(|d| {
            d["spend"]
                .as_str()
                .unwrap()
                .parse::<rust_decimal::Decimal>()
                .unwrap()
        })
        .sum();
    assert_eq!(spend.to_string(), "3.875", "the overview's month to date");
    let cases = [
        ("start_date=2026-13-01&end_date=2026-11-10", "bad-date"),
        ("start_date=2026-11-01", "bad-date"),
        ("end_date=2026-11-10", "bad-date"),
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
    for (query, id) in [
        ("start_date=2026-11-10&end_date=2026-11-01", "date-order"),
        ("start_date=11/01/2026", "bad-date"),
        ("type=gift", "bad-request"),
        ("limit=0", "bad-request"),
    ] {
        let uri = format!("/billing/transactions?workspace=acme-ws&{query}");
        let response = api.handle(Some(&p), get(&uri)).await;
        assert_problem(&response, StatusCode::BAD_REQUEST, id);
    }
    for (query, id) in cases {
        for path in ["/billing/daily-spend", "/team/daily/activity"] {
            let response = api.handle(Some(&p), get(&format!("{path}?{query}"))).await;
            assert_problem(&response, StatusCode::BAD_REQUEST, id);
        }
    }
}

async fn team_activity_has_litellms_shape_and_the_principals_teams_only(api: BillingApi) {
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

async fn invoices_come_as_json_or_csv(api: BillingApi) {
    let p = admin();
    let response = api
        .handle(Some(&p), get("/billing/invoices/2026-11?workspace=acme-ws"))
        .await;
    assert_eq!(response.status(), StatusCode::OK, "{:?}", response.body());
    let invoice = body(&response);
    assert_eq!(invoice["month"], "2026-11", "{invoice}");
    assert_eq!(invoice["status"], "draft");
    assert_eq!(
        invoice["managed_spend"], "3.50",
        "BYOK spend is not billed; at the currency's scale"
    );

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

async fn the_overview_adds_balance_and_month_to_date(api: BillingApi) {
    let p = admin();
    let response = api
        .handle(Some(&p), get("/billing/overview?workspace=acme-ws"))
        .await;
    assert_eq!(response.status(), StatusCode::OK, "{:?}", response.body());
    let value = body(&response);
    assert_eq!(value["month_to_date"], "3.875", "{value}");
    assert_eq!(value["managed_month_to_date"], "3.5");
    assert_eq!(value["byok_month_to_date"], "0.375");
    assert_eq!(
        value["balance"], "-3.50",
        "usage debited, nothing topped up; at the currency's scale"
    );
    assert_eq!(value["days_elapsed"], 10);
    assert_eq!(value["days_in_month"], 30);
}

/// The sum of a CSV export's cost column, and its rows.
fn export_totals(csv: &[u8], cost_column: &str) -> (rust_decimal::Decimal, usize) {
    let text = std::str::from_utf8(csv).unwrap();
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let at = header.iter().position(|h| *h == cost_column).unwrap();
    let mut sum = rust_decimal::Decimal::ZERO;
    let mut rows = 0;
    for line in lines {
        // The fixture's values hold no commas or quotes.
        sum += line
            .split(',')
            .nth(at)
            .unwrap()
            .parse::<rust_decimal::Decimal>()
            .unwrap();
        rows += 1;
    }
    (sum, rows)
}

async fn exports_are_a_months_csv_scoped_to_the_principal(api: BillingApi) {
    use http_body_util::BodyExt;
    let p = admin();
    let uri = "/billing/export.csv?month=2026-11";
    let buffered = api.handle(Some(&p), get(uri)).await;
    assert_eq!(buffered.status(), StatusCode::OK, "{:?}", buffered.body());
    assert_eq!(
        buffered.headers()["content-type"],
        "text/csv; charset=utf-8"
    );
    let (cost, rows) = export_totals(buffered.body(), "cost");
    assert_eq!(cost.to_string(), "3.875", "acme's spend only");
    assert_eq!(rows, 4);

    // The streamed export is the same file, a day per frame.
    let streamed = api.export(Some(&p), &get(uri)).await.unwrap();
    let mut body = streamed.into_body();
    let (mut file, mut frames) = (Vec::new(), 0);
    while let Some(frame) = body.frame().await {
        file.extend_from_slice(frame.unwrap().data_ref().unwrap());
        frames += 1;
    }
    assert_eq!(file, buffered.body().to_vec());
    assert_eq!(frames, 4, "the header, then the three days with spend");

    let focus = api
        .handle(
            Some(&p),
            get("/billing/export.csv?month=2026-11&format=focus"),
        )
        .await;
    assert_eq!(
        export_totals(focus.body(), "BilledCost").0.to_string(),
        "3.875"
    );

    // Another org sees its own spend; acme's workspace is not found.
    let other = Principal {
        org: OrgId::new("other").unwrap(),
        workspaces: Some(vec![ws("other-ws")]),
        teams: None,
        role: Role::Viewer,
    };
    let theirs = api.handle(Some(&other), get(uri)).await;
    assert_eq!(export_totals(theirs.body(), "cost").0.to_string(), "100");
    let response = api
        .handle(
            Some(&other),
            get("/billing/export.csv?month=2026-11&workspace=acme-ws"),
        )
        .await;
    assert_problem(&response, StatusCode::NOT_FOUND, "not-found");

    // A principal limited to one team exports that team's rows.
    let team = Principal {
        teams: Some(vec![TeamId::new("team-0").unwrap()]),
        ..admin()
    };
    let response = api.handle(Some(&team), get(uri)).await;
    assert_eq!(
        export_totals(response.body(), "cost").0.to_string(),
        "1.625"
    );

    let response = api
        .handle(
            Some(&p),
            get("/billing/export.csv?month=2026-11&format=xlsx"),
        )
        .await;
    assert_problem(&response, StatusCode::BAD_REQUEST, "bad-request");
    let refused = api.export(None, &get(uri)).await.unwrap_err();
    assert_problem(&refused, StatusCode::UNAUTHORIZED, "unauthorized");
}

/// The OpenAPI document's schema for one answer: the response of `status` (or its
/// `4XX`/`5XX` class) of the operation, for the content type the answer carries.
fn documented_schema(
    doc: &Value,
    template: &str,
    method: &str,
    status: u16,
    content_type: &str,
) -> Value {
    let operation = &doc["paths"][template][method];
    assert!(
        operation.is_object(),
        "{method} {template} is not in the document"
    );
    let responses = &operation["responses"];
    let mut response = [status.to_string(), format!("{}XX", status / 100)]
        .iter()
        .map(|code| &responses[code.as_str()])
        .find(|r| !r.is_null())
        .unwrap_or_else(|| panic!("{method} {template}: {status} is not documented"))
        .clone();
    if let Some(name) = response["$ref"].as_str() {
        let name = name.trim_start_matches("#/components/responses/");
        response = doc["components"]["responses"][name].clone();
    }
    let media = content_type.split(';').next().unwrap_or_default().trim();
    let mut schema = response["content"][media]["schema"].clone();
    assert!(
        schema.is_object(),
        "{method} {template} {status}: {media} is not documented"
    );
    schema["components"] = doc["components"].clone();
    schema
}

async fn the_openapi_document_describes_every_response(api: BillingApi) {
    let doc: Value =
        serde_json::from_str(include_str!("../openapi.json")).expect("openapi.json is JSON");
    assert_eq!(doc["openapi"], "3.1.0");
    let p = admin();
    let range = "start_date=2026-11-01&end_date=2026-11-10";
    let activity_filters = format!(
        "{range}&team_ids=team-0,team-1&provider=openai&model=gpt-4o&billing_mode=managed&page=1&page_size=5"
    );
    let topup = r#"{"amount": "25.00", "currency": "USD"}"#;
    let reprice = repricing_body(false);
    let reprice_dry = repricing_body(true);
    let reprice_bad = reprice.replace("format = 1", "format = 9");
    let repriced = repricing_id(&api, &p, &reprice).await;
    // (method, uri, the document's path, idempotency key, body)
    let calls: Vec<(&str, String, &str, Option<&str>, &str)> = vec![
        ("post", "/billing/wallet/topup?workspace=acme-ws".into(), "/billing/wallet/topup", Some("oa-1"), topup),
        ("post", "/billing/wallet/topup?workspace=acme-ws".into(), "/billing/wallet/topup", Some("oa-1"), r#"{"amount": "1", "currency": "USD"}"#),
        ("post", "/billing/wallet/topup?workspace=acme-ws".into(), "/billing/wallet/topup", Some("oa-2"), r#"{"amount": "0", "currency": "USD"}"#),
        ("post", "/billing/wallet/topup?workspace=acme-ws".into(), "/billing/wallet/topup", None, r#"{ "amount": 1000.00, "currency": "USD" }"#),
        ("post", "/billing/wallet/refund?workspace=acme-ws".into(), "/billing/wallet/refund", Some("oa-3"), r#"{"amount": "2.50", "currency": "USD", "memo": "goodwill"}"#),
        ("post", "/billing/wallet/adjust?workspace=acme-ws".into(), "/billing/wallet/adjust", Some("oa-4"), r#"{"amount": 1.25, "currency": "USD", "direction": "debit", "memo": "manual charge"}"#),
        ("post", "/billing/wallet/adjust?workspace=acme-ws".into(), "/billing/wallet/adjust", Some("oa-4"), r#"{"amount": 1.25, "currency": "USD", "direction": "debit", "memo": "manual charge"}"#),
        ("post", "/billing/wallet/adjust?workspace=acme-ws".into(), "/billing/wallet/adjust", Some("oa-5"), r#"{"amount": "1", "currency": "USD", "direction": "sideways", "memo": "x"}"#),
        ("get", "/billing/wallets".into(), "/billing/wallets", None, ""),
        ("get", "/billing/principal".into(), "/billing/principal", None, ""),
        ("get", "/billing/wallet?workspace=acme-ws".into(), "/billing/wallet", None, ""),
        ("get", "/billing/transactions?workspace=acme-ws&limit=1".into(), "/billing/transactions", None, ""),
        ("get", "/billing/transactions?workspace=acme-ws&type=top_up,usage_debit&start_date=2026-11-01&end_date=2026-11-30".into(), "/billing/transactions", None, ""),
        ("get", "/billing/invoices?workspace=acme-ws".into(), "/billing/invoices", None, ""),
        ("get", "/billing/invoices/2026-11?workspace=acme-ws".into(), "/billing/invoices/{month}", None, ""),
        ("get", "/billing/invoices/2026-11?workspace=acme-ws&format=csv".into(), "/billing/invoices/{month}", None, ""),
        ("get", "/billing/invoices/2026-13?workspace=acme-ws".into(), "/billing/invoices/{month}", None, ""),
        ("get", format!("/billing/daily-spend?{range}&workspace=acme-ws"), "/billing/daily-spend", None, ""),
        ("get", "/billing/daily-spend?start_date=2026-11-10&end_date=2026-11-01".into(), "/billing/daily-spend", None, ""),
        ("get", format!("/billing/spend-trend?{range}"), "/billing/spend-trend", None, ""),
        ("get", "/billing/spend-trend?start_date=2026-11-11&end_date=2026-11-12".into(), "/billing/spend-trend", None, ""),
        ("get", "/billing/overview?workspace=acme-ws".into(), "/billing/overview", None, ""),
        ("get", "/billing/export.csv?month=2026-11".into(), "/billing/export.csv", None, ""),
        ("get", "/billing/export.csv?month=2026-11&format=focus&workspace=acme-ws".into(), "/billing/export.csv", None, ""),
        ("get", "/billing/export.csv?month=11-2026".into(), "/billing/export.csv", None, ""),
        ("get", format!("/team/daily/activity?{activity_filters}"), "/team/daily/activity", None, ""),
        ("get", format!("/user/daily/activity?{range}&user_id=user-0"), "/user/daily/activity", None, ""),
        ("get", format!("/customer/daily/activity?{range}&end_user_ids=cust-1&api_key=key-1"), "/customer/daily/activity", None, ""),
        ("get", "/customer/daily/activity?start_date=2026-1-1&end_date=2026-11-10".into(), "/customer/daily/activity", None, ""),
        ("post", "/billing/repricings".into(), "/billing/repricings", None, &reprice_dry),
        ("post", "/billing/repricings?format=csv".into(), "/billing/repricings", None, &reprice_dry),
        ("post", "/billing/repricings".into(), "/billing/repricings", None, &reprice_bad),
        ("post", "/billing/repricings".into(), "/billing/repricings", None, &reprice),
        ("post", "/billing/repricings".into(), "/billing/repricings", None, &reprice),
        ("get", "/billing/repricings".into(), "/billing/repricings", None, ""),
        ("get", format!("/billing/repricings/{repriced}"), "/billing/repricings/{id}", None, ""),
        ("get", "/billing/repricings/rp_0000000000000000".into(), "/billing/repricings/{id}", None, ""),
    ];
    let mut seen = std::collections::BTreeSet::new();
    for (method, uri, template, key, text) in calls {
        let mut builder = Request::builder()
            .method(method.to_uppercase().as_str())
            .uri(&uri);
        if let Some(key) = key {
            builder = builder.header("idempotency-key", key);
        }
        let response = api
            .handle(
                Some(&p),
                builder.body(Bytes::from(text.to_owned())).unwrap(),
            )
            .await;
        let status = response.status().as_u16();
        let content_type = response.headers()["content-type"]
            .to_str()
            .unwrap()
            .to_owned();
        let schema = documented_schema(&doc, template, method, status, &content_type);
        let instance = if content_type.starts_with("text/csv") {
            Value::String(String::from_utf8(response.body().to_vec()).unwrap())
        } else {
            body(&response)
        };
        let validator = jsonschema::validator_for(&schema)
            .unwrap_or_else(|e| panic!("{method} {template}: the document's schema: {e}"));
        let errors: Vec<String> = validator
            .iter_errors(&instance)
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .collect();
        assert!(
            errors.is_empty(),
            "{method} {uri} ({status}) breaks the document: {errors:?}\n{instance}"
        );
        if status < 300 {
            seen.insert((method, template));
        }
    }
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            assert!(
                seen.contains(&(method.as_str(), path.as_str())),
                "{method} {path} is documented but never answered here"
            );
        }
    }
}

/// Malformed and adversarial requests: each gets a problem response (4xx, never a
/// 5xx or a panic), and the wallet, the ledger and the analytics are as they were.
async fn hostile_requests_get_problems_and_change_nothing(api: BillingApi) {
    let p = admin();
    let state = |api: &BillingApi| {
        let api = api.clone();
        let p = p.clone();
        async move {
            let mut out = Vec::new();
            for uri in [
                "/billing/wallet?workspace=acme-ws",
                "/billing/transactions?workspace=acme-ws",
                "/billing/daily-spend?start_date=2026-10-01&end_date=2026-12-31",
            ] {
                let response = api.handle(Some(&p), get(uri)).await;
                assert_eq!(response.status(), StatusCode::OK, "{uri}");
                out.push(response.body().clone());
            }
            out
        }
    };
    let before = state(&api).await;

    let big = format!(
        r#"{{"amount": "5", "currency": "USD", "pad": "{}"}}"#,
        "x".repeat(2 << 20)
    );
    let bodies = [
        r#"{"amount": "1e400", "currency": "USD"}"#.to_owned(),
        r#"{"amount": "NaN", "currency": "USD"}"#.to_owned(),
        r#"{"amount": "0", "currency": "USD"}"#.to_owned(),
        r#"{"amount": "-0", "currency": "USD"}"#.to_owned(),
        r#"{"amount": "99999999999999999999999999999999999", "currency": "USD"}"#.to_owned(),
        r#"{"amount": "5.001", "currency": "USD"}"#.to_owned(),
        r#"{"amount": {"$gt": 0}, "currency": "USD"}"#.to_owned(),
        r#"{"amount": "5", "currency": "USD'; DROP TABLE routero_wallet_entries; --"}"#.to_owned(),
        "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[".repeat(2_000),
        "\u{0}\u{1}\u{2}not json".to_owned(),
        String::new(),
        big,
    ];
    for (i, text) in bodies.iter().enumerate() {
        let response = api
            .handle(Some(&p), top_up(Some(&format!("hostile-{i}")), text))
            .await;
        assert_hostile(&response, &text.chars().take(80).collect::<String>());
    }
    let keys: [&[u8]; 4] = [b"", b"tab\tkey", &[b'k'; 4_096], b"caf\xc3\xa9"];
    for key in keys {
        let mut request = top_up(None, r#"{"amount": "5", "currency": "USD"}"#);
        let value = http::HeaderValue::from_bytes(key).unwrap();
        request.headers_mut().insert("idempotency-key", value);
        let response = api.handle(Some(&p), request).await;
        assert_hostile(&response, &String::from_utf8_lossy(key));
    }
    for uri in [
        "/billing/wallet?workspace=acme-ws%27%20OR%201%3D1%20--",
        "/billing/wallet?workspace=acme-ws%0d%0aX-Injected:%201",
        "/billing/wallet?workspace=%00",
        "/billing/daily-spend?start_date=2026-13-45&end_date=2026-12-31",
        "/billing/daily-spend?start_date=2026-10-01&end_date=99999-12-31",
        "/billing/daily-spend?start_date=2026-10-01&end_date=2026-12-31&team_ids=%27%3BDROP%0aTABLE%20x%3B--",
        "/billing/daily-spend?start_date=2026-10-01&end_date=2026-12-31&exclude_team_ids=a",
        "/team/daily/activity?start_date=2026-10-01&end_date=2026-12-31&page_size=-1",
        "/team/daily/activity?start_date=2026-10-01&end_date=2026-12-31&page=99999999999999999999999",
        "/billing/invoices/..%2F..%2Fetc%2Fpasswd?workspace=acme-ws",
        "/billing/invoices/2026-11?workspace=acme-ws&format=%0d%0a",
        "/billing/export.csv?month=2026-99",
        "/billing/export.csv?month=0001-01",
        "/billing/spend-trend?start_date=-262143-01-01&end_date=2026-12-31",
        "/billing/spend-trend?start_date=0001-01-01&end_date=2026-12-31",
        "/billing/daily-spend?start_date=2026-10-01&end_date=+262142-12-31",
        "/billing/transactions?workspace=acme-ws&cursor=18446744073709551615",
        "/billing/invoices/0001-01?workspace=acme-ws",
        "/billing/invoices/262143-12?workspace=acme-ws",
    ] {
        let response = api.handle(Some(&p), get(uri)).await;
        assert_hostile(&response, uri);
    }
    assert_eq!(
        state(&api).await,
        before,
        "a hostile request changed something"
    );
}

fn assert_hostile(response: &Response<Bytes>, what: &str) {
    assert!(
        response.status().is_client_error(),
        "{what:?}: {} {:?}",
        response.status(),
        String::from_utf8_lossy(&response.body()[..response.body().len().min(300)])
    );
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json",
        "{what:?}"
    );
    body(response);
}

fn post(uri: &str, key: Option<&str>, body: &str) -> Request<Bytes> {
    let mut builder = Request::builder().method(Method::POST).uri(uri);
    if let Some(key) = key {
        builder = builder.header("idempotency-key", key);
    }
    builder.body(Bytes::from(body.to_owned())).unwrap()
}

/// The product page's request, byte for byte: a JSON number, no idempotency key.
async fn the_product_pages_top_up_works_as_written(api: BillingApi) {
    let p = admin();
    let page = r#"{ "amount": 1000.00, "currency": "USD" }"#;
    for _ in 0..2 {
        let response = api
            .handle(Some(&p), post("/billing/wallet/topup", None, page))
            .await;
        assert_eq!(
            response.status(),
            StatusCode::CREATED,
            "{:?}",
            response.body()
        );
        let entry = body(&response);
        assert_eq!(entry["amount"], "1000.00");
        assert_eq!(entry["currency"], "USD");
        assert_eq!(entry["replayed"], false);
    }
    let wallet = body(&api.handle(Some(&p), get("/billing/wallet")).await);
    assert_eq!(
        wallet["balance"], "1996.50",
        "without a key every request is a new top-up: 2 × 1000.00 − 3.50 of usage"
    );
    assert_eq!(wallet["paid_remaining"], "2000.00");
    let more_digits = api
        .handle(
            Some(&p),
            post(
                "/billing/wallet/topup",
                None,
                r#"{"amount": 0.1000000000000000055511151231257827, "currency": "USD"}"#,
            ),
        )
        .await;
    assert_problem(
        &more_digits,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid-amount",
    );
    let exact = api
        .handle(
            Some(&p),
            post(
                "/billing/wallet/topup",
                None,
                r#"{"amount": 0.10, "currency": "USD"}"#,
            ),
        )
        .await;
    assert_eq!(
        body(&exact)["amount"],
        "0.10",
        "read by its text, not as a float"
    );
}

async fn the_workspace_comes_from_the_principal_or_the_directory(api: BillingApi) {
    let two = Principal {
        workspaces: Some(vec![ws("acme-ws"), ws("acme-eu")]),
        ..admin()
    };
    let response = api.handle(Some(&two), get("/billing/wallet")).await;
    assert_problem(&response, StatusCode::BAD_REQUEST, "bad-request");
    let detail = body(&response)["detail"].as_str().unwrap().to_owned();
    assert!(
        detail.contains("workspace is required") && detail.contains("acme-ws, acme-eu"),
        "{detail}"
    );
    let response = api
        .handle(
            Some(&two),
            post(
                "/billing/wallet/topup",
                None,
                r#"{"amount": 5, "currency": "USD"}"#,
            ),
        )
        .await;
    assert_problem(&response, StatusCode::BAD_REQUEST, "bad-request");

    // An org-wide principal sees every workspace the directory gives its org.
    let org_wide = Principal {
        workspaces: None,
        ..admin()
    };
    let all = body(&api.handle(Some(&org_wide), get("/billing/wallets")).await);
    let names: Vec<&str> = all["wallets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["workspace"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["acme-eu", "acme-ws"], "acme's, never other-ws");
    let one = api
        .handle(Some(&org_wide), get("/billing/wallet?workspace=acme-ws"))
        .await;
    assert_eq!(one.status(), StatusCode::OK, "not 404: {:?}", one.body());
    assert_eq!(body(&one)["balance"], "-3.50");
    for uri in [
        "/billing/wallet?workspace=other-ws",
        "/billing/transactions?workspace=other-ws",
        "/billing/invoices?workspace=other-ws",
    ] {
        let response = api.handle(Some(&org_wide), get(uri)).await;
        assert_problem(&response, StatusCode::NOT_FOUND, "not-found");
    }
    let invoices = api.handle(Some(&org_wide), get("/billing/invoices")).await;
    assert_eq!(invoices.status(), StatusCode::OK, "{:?}", invoices.body());
    assert_eq!(body(&invoices), serde_json::json!([]));
    let overview = api
        .handle(Some(&org_wide), get("/billing/overview?workspace=acme-ws"))
        .await;
    assert_eq!(overview.status(), StatusCode::OK);
    let topped = api
        .handle(
            Some(&org_wide),
            post(
                "/billing/wallet/topup?workspace=acme-ws",
                None,
                r#"{"amount": 5, "currency": "USD"}"#,
            ),
        )
        .await;
    assert_eq!(topped.status(), StatusCode::CREATED);
}

async fn the_billing_currency_is_a_setting(api: BillingApi) {
    let p = Principal {
        workspaces: Some(vec![ws("acme-eu")]),
        ..admin()
    };
    let before = body(&api.handle(Some(&p), get("/billing/wallet")).await);
    assert_eq!(before["currency"], "EUR", "fixed before any money moves");
    assert_eq!(before["balance"], "0.00");
    let dollars = api
        .handle(
            Some(&p),
            post(
                "/billing/wallet/topup",
                None,
                r#"{"amount": 10, "currency": "USD"}"#,
            ),
        )
        .await;
    assert_problem(
        &dollars,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid-currency",
    );
    assert!(
        body(&dollars)["detail"]
            .as_str()
            .unwrap()
            .contains("acme-eu is billed in EUR, not USD")
    );
    let euros = api
        .handle(
            Some(&p),
            post(
                "/billing/wallet/topup",
                None,
                r#"{"amount": 10, "currency": "EUR"}"#,
            ),
        )
        .await;
    assert_eq!(euros.status(), StatusCode::CREATED);
    let after = body(&api.handle(Some(&p), get("/billing/wallet")).await);
    assert_eq!(
        (after["currency"].as_str(), after["balance"].as_str()),
        (Some("EUR"), Some("10.00"))
    );
}

async fn refunds_and_adjustments_are_admin_writes_with_a_memo(api: BillingApi) {
    let p = admin();
    let viewer = Principal {
        role: Role::Viewer,
        ..admin()
    };
    let refund = r#"{"amount": "2.50", "currency": "USD", "memo": "goodwill"}"#;
    for uri in ["/billing/wallet/refund", "/billing/wallet/adjust"] {
        let response = api.handle(Some(&viewer), post(uri, None, refund)).await;
        assert_problem(&response, StatusCode::FORBIDDEN, "forbidden");
    }
    let refused = [
        (
            "/billing/wallet/refund",
            r#"{"amount": "2.50", "currency": "USD"}"#,
            "memo",
        ),
        (
            "/billing/wallet/refund",
            r#"{"amount": "2.50", "currency": "USD", "memo": "  "}"#,
            "memo",
        ),
        (
            "/billing/wallet/refund",
            r#"{"amount": "2.50", "currency": "USD", "memo": "x", "direction": "debit"}"#,
            "always a credit",
        ),
        (
            "/billing/wallet/adjust",
            r#"{"amount": "2.50", "currency": "USD", "memo": "x"}"#,
            "direction",
        ),
        (
            "/billing/wallet/adjust",
            r#"{"amount": "-2.50", "currency": "USD", "memo": "x", "direction": "credit"}"#,
            "ASCII digits",
        ),
        (
            "/billing/wallet/adjust",
            r#"{"amount": "2.50", "currency": "usd", "memo": "x", "direction": "credit"}"#,
            "ISO 4217",
        ),
    ];
    for (uri, text, says) in refused {
        let response = api.handle(Some(&p), post(uri, None, text)).await;
        assert!(response.status().is_client_error(), "{text}");
        let detail = body(&response)["detail"].as_str().unwrap().to_owned();
        assert!(detail.contains(says), "{text}: {detail}");
    }
    let first = api
        .handle(
            Some(&p),
            post("/billing/wallet/refund", Some("r-1"), refund),
        )
        .await;
    assert_eq!(first.status(), StatusCode::CREATED);
    let replay = api
        .handle(
            Some(&p),
            post("/billing/wallet/refund", Some("r-1"), refund),
        )
        .await;
    assert_eq!(replay.status(), StatusCode::OK);
    assert_eq!(body(&replay)["replayed"], true);
    let debit = api
        .handle(
            Some(&p),
            post(
                "/billing/wallet/adjust",
                Some("a-1"),
                r#"{"amount": 1, "currency": "USD", "direction": "debit", "memo": "manual charge"}"#,
            ),
        )
        .await;
    assert_eq!(debit.status(), StatusCode::CREATED);
    let debit = body(&debit);
    assert_eq!(
        (debit["kind"].as_str(), debit["amount"].as_str()),
        (Some("adjustment"), Some("-1.00"))
    );
    assert_eq!(debit["memo"], "manual charge");
    let credit = api
        .handle(
            Some(&p),
            post(
                "/billing/wallet/adjust",
                Some("a-2"),
                r#"{"amount": "0.75", "currency": "USD", "direction": "credit", "memo": "fix"}"#,
            ),
        )
        .await;
    assert_eq!(body(&credit)["amount"], "0.75");
    let conflict = api
        .handle(
            Some(&p),
            post(
                "/billing/wallet/adjust",
                Some("a-2"),
                r#"{"amount": "0.75", "currency": "USD", "direction": "debit", "memo": "fix"}"#,
            ),
        )
        .await;
    assert_problem(&conflict, StatusCode::CONFLICT, "idempotency-conflict");
    let wallet = body(&api.handle(Some(&p), get("/billing/wallet")).await);
    assert_eq!(wallet["balance"], "-1.25", "−3.50 + 2.50 − 1.00 + 0.75");
    let ledger = body(&api.handle(Some(&p), get("/billing/transactions")).await);
    let kinds: Vec<&str> = ledger["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["adjustment", "adjustment", "refund", "usage_debit"]);
}

/// The API over `store` with, beside the usual acme USD spend, EUR spend in acme-eu
/// (managed, debited from its EUR wallet) on the same days.
async fn api_with_euros<S>(store: Arc<S>) -> BillingApi
where
    S: SpendStore + SpendReader + Wallets + InvoiceStore + Repricings,
{
    use routero_core::port::{DrainApply, FencingToken};
    use routero_core::spend::{Pricing, QueuePosition, Rollups, ShardId};
    let api = api_over(store.clone()).await;
    let mut euros = Vec::new();
    for (seq, day, cost) in [(100u64, 0, "10.5"), (102, 2, "20"), (103, 2, "0.25")] {
        let mut e = sample_event("acme", seq, cost);
        e.event_time += Duration::days(day);
        e.attribution.who.workspace = ws("acme-eu");
        if let Pricing::Priced { currency, .. } = &mut e.pricing {
            *currency = Currency::EUR;
        }
        euros.push(e);
    }
    let mut rollups = Rollups::new();
    for e in &euros {
        rollups.add_event(e).unwrap();
    }
    store
        .apply(DrainApply {
            shard: ShardId(1),
            token: FencingToken(1),
            expected: None,
            through: QueuePosition::new(1, 0),
            rollups: &rollups,
            events: &euros,
            at: sample_day().and_hms_opt(23, 0, 0).unwrap().and_utc(),
        })
        .await
        .unwrap();
    api
}

mod usd_and_eur_are_never_added {
    #[tokio::test]
    async fn memory() {
        let store = std::sync::Arc::new(super::MemoryStore::new());
        super::usd_and_eur_are_never_added(super::api_with_euros(store).await).await;
    }

    #[tokio::test]
    async fn postgres() {
        if let Some(api) = super::pg_api_with_euros().await {
            super::usd_and_eur_are_never_added(api).await;
        }
    }
}

async fn pg_api_with_euros() -> Option<BillingApi> {
    let url = std::env::var("ROUTERO_TEST_DATABASE_URL").ok()?;
    let mut config = PgConfig::new(url);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    config.schema = Some(format!("api_eur_{}_{nanos}", std::process::id()));
    let store = PgStore::connect(config).await.expect("connect and migrate");
    Some(api_with_euros(Arc::new(store)).await)
}

/// One org with USD and EUR spend: every endpoint either answers in one currency, and
/// says which, or refuses to add the two.
async fn usd_and_eur_are_never_added(api: BillingApi) {
    let org_wide = Principal {
        workspaces: None,
        ..admin()
    };
    let p = Some(&org_wide);
    let range = "start_date=2026-11-01&end_date=2026-11-10";
    for path in [
        "/billing/daily-spend",
        "/billing/spend-trend",
        "/team/daily/activity",
        "/user/daily/activity",
        "/customer/daily/activity",
    ] {
        let mixed = api.handle(p, get(&format!("{path}?{range}"))).await;
        assert_problem(&mixed, StatusCode::BAD_REQUEST, "mixed-currencies");
        let detail = body(&mixed)["detail"].as_str().unwrap().to_owned();
        assert!(
            detail.contains("EUR and USD") && detail.contains("currency="),
            "{detail}"
        );
        let bad = api
            .handle(p, get(&format!("{path}?{range}&currency=eur")))
            .await;
        assert_problem(&bad, StatusCode::UNPROCESSABLE_ENTITY, "invalid-currency");
    }
    // Each currency on its own: USD is acme's usual 3.875, EUR the 30.75 of acme-eu.
    for (currency, total) in [("USD", "3.875"), ("EUR", "30.75")] {
        let q = format!("{range}&currency={currency}");
        let days = body(
            &api.handle(p, get(&format!("/billing/daily-spend?{q}")))
                .await,
        );
        let days = days.as_array().unwrap();
        assert!(days.iter().all(|d| d["currency"] == currency), "{days:?}");
        let sum: rust_decimal::Decimal = days
            .iter()
            .map(|d| {
                d["spend"]
                    .as_str()
                    .unwrap()
                    .parse::<rust_decimal::Decimal>()
                    .unwrap()
            })
            .sum();
        assert_eq!(sum.to_string(), total, "{currency}");
        let trend = body(
            &api.handle(p, get(&format!("/billing/spend-trend?{q}")))
                .await,
        );
        assert_eq!(
            (trend["currency"].as_str(), trend["total"].as_str()),
            (Some(currency), Some(total))
        );
        for entity in ["team", "user", "customer"] {
            let activity = body(
                &api.handle(p, get(&format!("/{entity}/daily/activity?{q}")))
                    .await,
            );
            assert_eq!(activity["metadata"]["currency"], currency, "{entity}");
            assert_eq!(activity["metadata"]["total_spend"], total, "{entity}");
        }
    }
    // A workspace's figures are in its own currency without asking.
    let eu = body(
        &api.handle(p, get("/billing/overview?workspace=acme-eu"))
            .await,
    );
    assert_eq!(
        (eu["currency"].as_str(), eu["spend_currency"].as_str()),
        (Some("EUR"), Some("EUR"))
    );
    assert_eq!(eu["month_to_date"], "30.75");
    assert_eq!(
        eu["managed_month_to_date"], "30.5",
        "the managed (even) requests"
    );
    let us = body(
        &api.handle(p, get("/billing/overview?workspace=acme-ws"))
            .await,
    );
    assert_eq!(us["spend_currency"], "USD");
    assert_eq!(us["month_to_date"], "3.875");
    let eu_days = body(
        &api.handle(
            p,
            get(&format!("/billing/daily-spend?{range}&workspace=acme-eu")),
        )
        .await,
    );
    assert!(
        eu_days
            .as_array()
            .unwrap()
            .iter()
            .all(|d| d["currency"] == "EUR")
    );
    // The wallet was debited in its own currency, and the invoice bills it in EUR.
    let wallet = body(
        &api.handle(p, get("/billing/wallet?workspace=acme-eu"))
            .await,
    );
    assert_eq!(
        (wallet["currency"].as_str(), wallet["balance"].as_str()),
        (Some("EUR"), Some("-30.50"))
    );
    let invoice = body(
        &api.handle(p, get("/billing/invoices/2026-11?workspace=acme-eu"))
            .await,
    );
    assert_eq!(
        (invoice["currency"].as_str(), invoice["total"].as_str()),
        (Some("EUR"), Some("30.50"))
    );
    let us_invoice = body(
        &api.handle(p, get("/billing/invoices/2026-11?workspace=acme-ws"))
            .await,
    );
    assert_eq!(
        (
            us_invoice["currency"].as_str(),
            us_invoice["exact_total"].as_str()
        ),
        (Some("USD"), Some("3.50"))
    );
    // The export names every row's currency, and the sums per currency are exact.
    let csv = api
        .handle(p, get("/billing/export.csv?month=2026-11"))
        .await;
    assert_eq!(csv.status(), StatusCode::OK);
    let text = String::from_utf8(csv.body().to_vec()).unwrap();
    let mut reader = csv::Reader::from_reader(text.as_bytes());
    let headers = reader.headers().unwrap().clone();
    let at = |name: &str| headers.iter().position(|h| h == name).unwrap();
    let (cost, currency) = (at("cost"), at("currency"));
    let mut sums: std::collections::BTreeMap<String, rust_decimal::Decimal> = Default::default();
    for record in reader.records() {
        let record = record.unwrap();
        *sums.entry(record[currency].to_owned()).or_default() +=
            record[cost].parse::<rust_decimal::Decimal>().unwrap();
    }
    assert_eq!(sums.len(), 2, "{sums:?}");
    assert_eq!(sums["USD"].to_string(), "3.875");
    assert_eq!(sums["EUR"].to_string(), "30.75");
    let focus = api
        .handle(p, get("/billing/export.csv?month=2026-11&format=focus"))
        .await;
    let focus = String::from_utf8(focus.body().to_vec()).unwrap();
    assert!(
        focus.contains(",EUR,") && focus.contains(",USD,"),
        "BillingCurrency per row"
    );
}

/// gpt-4o's input at 5 per million instead of 2.50.
const CORRECTED: &str = "format = 1\nversion = \"fix-1\"\ncurrency = \"USD\"\n\n[[model]]\nprovider = \"openai\"\nname = \"gpt-4o\"\ninput = \"5\"\ncache_read = \"1.25\"\noutput = \"10\"\n";

/// A repricing of November for acme-ws at [`CORRECTED`] prices.
fn repricing_body(dry_run: bool) -> String {
    serde_json::json!({
        "start_date": "2026-11-01",
        "end_date": "2026-11-30",
        "workspace": "acme-ws",
        "prices": CORRECTED,
        "reason": "gpt-4o input was half its list price",
        "actor": "ops@acme",
        "dry_run": dry_run,
    })
    .to_string()
}

/// The id a dry run of `body` names.
async fn repricing_id(api: &BillingApi, p: &Principal, text: &str) -> String {
    let dry: Value = serde_json::from_str(text).unwrap();
    let mut dry = dry.as_object().unwrap().clone();
    dry.insert("dry_run".into(), Value::Bool(true));
    let response = api
        .handle(
            Some(p),
            post("/billing/repricings", None, &Value::Object(dry).to_string()),
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK, "{:?}", response.body());
    body(&response)["id"].as_str().unwrap().to_owned()
}

async fn repricings_are_exact_once_and_the_orgs_own(api: BillingApi) {
    use rust_decimal::Decimal;
    let p = admin();
    let spend = |api: BillingApi| async move {
        let response = api
            .handle(
                Some(&admin()),
                get("/billing/daily-spend?start_date=2026-11-01&end_date=2026-11-30&workspace=acme-ws"),
            )
            .await;
        assert_eq!(response.status(), StatusCode::OK);
        body(&response)
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["spend"].as_str().unwrap().parse::<Decimal>().unwrap())
            .sum::<Decimal>()
    };
    let before = spend(api.clone()).await;
    // What the corrected prices make of acme's four requests.
    let prices = routero_core::price::layered(&PriceTable::bundled(), CORRECTED).unwrap();
    let mut expected = Decimal::ZERO;
    for (seq, day) in [(0u64, 0), (1, 0), (2, 2), (3, 5)] {
        let mut e = sample_event("acme", seq, "0");
        e.event_time += Duration::days(day);
        expected += prices
            .cost(&e.provider, &e.model, &e.usage.unwrap(), e.event_time)
            .unwrap()
            .total();
    }

    // A viewer may do nothing here.
    let viewer = Principal {
        role: Role::Viewer,
        ..admin()
    };
    for request in [
        post("/billing/repricings", None, &repricing_body(true)),
        get("/billing/repricings"),
    ] {
        assert_problem(
            &api.handle(Some(&viewer), request).await,
            StatusCode::FORBIDDEN,
            "forbidden",
        );
    }

    // The dry run, as JSON and CSV: nothing changes.
    let response = api
        .handle(
            Some(&p),
            post("/billing/repricings", None, &repricing_body(true)),
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let dry = body(&response);
    assert_eq!(dry["report"]["total"]["requests"], 4);
    assert_eq!(dry["report"]["total"]["new_total"], expected.to_string());
    assert_eq!(dry["report"]["total"]["old_total"], before.to_string());
    let response = api
        .handle(
            Some(&p),
            post(
                "/billing/repricings?format=csv",
                None,
                &repricing_body(true),
            ),
        )
        .await;
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/csv")
    );
    assert!(String::from_utf8_lossy(response.body()).starts_with("workspace,provider,model,"));
    assert_eq!(spend(api.clone()).await, before);

    // Bad inputs: typed problems.
    for (body_text, status, id) in [
        (
            repricing_body(false).replace("format = 1", "format = 9"),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-prices",
        ),
        (
            repricing_body(false).replace("gpt-4o input was half its list price", " "),
            StatusCode::BAD_REQUEST,
            "bad-request",
        ),
        (
            repricing_body(false).replace("2026-11-30", "2026-11-31"),
            StatusCode::BAD_REQUEST,
            "bad-date",
        ),
        (
            repricing_body(false).replace("2026-11-01", "2026-12-01"),
            StatusCode::BAD_REQUEST,
            "date-order",
        ),
        (
            repricing_body(false).replace("acme-ws", "other-ws"),
            StatusCode::NOT_FOUND,
            "not-found",
        ),
        (
            repricing_body(false).replace("\"dry_run\"", "\"dry\""),
            StatusCode::BAD_REQUEST,
            "bad-request",
        ),
        ("[1, 2]".to_owned(), StatusCode::BAD_REQUEST, "bad-request"),
    ] {
        let response = api
            .handle(Some(&p), post("/billing/repricings", None, &body_text))
            .await;
        assert_problem(&response, status, id);
    }
    assert_eq!(spend(api.clone()).await, before);

    // Applied: 201 and its audit record; the analytics move by the exact delta.
    let response = api
        .handle(
            Some(&p),
            post("/billing/repricings", None, &repricing_body(false)),
        )
        .await;
    assert_eq!(
        response.status(),
        StatusCode::CREATED,
        "{:?}",
        response.body()
    );
    let record = body(&response);
    assert_eq!(record["id"], dry["id"]);
    assert_eq!(record["state"], "applied");
    assert_eq!(record["corrected"], 4);
    assert_eq!(record["actor"], "ops@acme");
    assert_eq!(record["org"], "acme");
    assert_eq!(record["workspace"], "acme-ws");
    assert_eq!(record["delta"], (expected - before).to_string());
    assert_eq!(record["prices_before"], PriceTable::bundled().version());
    assert_eq!(record["prices_after"], prices.version());
    assert_eq!(spend(api.clone()).await, expected);
    // Asked again: 200, the same record, nothing applied twice.
    let response = api
        .handle(
            Some(&p),
            post("/billing/repricings", None, &repricing_body(false)),
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(body(&response), record);
    assert_eq!(spend(api.clone()).await, expected);

    let id = record["id"].as_str().unwrap();
    let listed = body(&api.handle(Some(&p), get("/billing/repricings")).await);
    assert_eq!(listed["repricings"].as_array().unwrap().len(), 1);
    let one = api
        .handle(Some(&p), get(&format!("/billing/repricings/{id}")))
        .await;
    assert_eq!(body(&one), record);

    // Another org's admin neither sees nor starts acme's.
    let other = Principal {
        org: OrgId::new("other").unwrap(),
        workspaces: None,
        teams: None,
        role: Role::Admin,
    };
    let listed = body(&api.handle(Some(&other), get("/billing/repricings")).await);
    assert_eq!(listed["repricings"], serde_json::json!([]));
    assert_problem(
        &api.handle(Some(&other), get(&format!("/billing/repricings/{id}")))
            .await,
        StatusCode::NOT_FOUND,
        "not-found",
    );
    assert_problem(
        &api.handle(
            Some(&other),
            post("/billing/repricings", None, &repricing_body(false)),
        )
        .await,
        StatusCode::NOT_FOUND,
        "not-found",
    );
    // Its own org-wide repricing covers its own spend only.
    let mut whole: Value = serde_json::from_str(&repricing_body(false)).unwrap();
    whole.as_object_mut().unwrap().remove("workspace");
    let response = api
        .handle(
            Some(&other),
            post("/billing/repricings", None, &whole.to_string()),
        )
        .await;
    assert_eq!(
        response.status(),
        StatusCode::CREATED,
        "{:?}",
        response.body()
    );
    let theirs = body(&response);
    assert_eq!(theirs["org"], "other");
    assert_eq!(theirs["planned"]["requests"], 1);
    assert_eq!(
        spend(api.clone()).await,
        expected,
        "acme's spend is untouched"
    );
    let listed = body(&api.handle(Some(&p), get("/billing/repricings")).await);
    assert_eq!(listed["repricings"].as_array().unwrap().len(), 1);
}
