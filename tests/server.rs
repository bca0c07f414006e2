//! The `server` example run as a user runs it: it starts on a free port over the demo
//! traffic, and its printed token and address answer real HTTP requests.

mod common;

use common::{exchange, request, server};
use serde_json::Value;

#[test]
fn the_server_answers_with_its_token_and_refuses_without() {
    let (_server, addr, token) = server(&[]);
    let bearer = format!("Bearer {token}");
    let auth = [("authorization", bearer.as_str())];

    let (status, body) = request(
        &addr,
        "GET",
        "/billing/overview?workspace=acme-prod",
        &auth,
        "",
    );
    assert_eq!(status, 200, "{body}");
    let overview: Value = serde_json::from_str(&body).unwrap();
    let balance: rust_decimal::Decimal = overview["balance"].as_str().unwrap().parse().unwrap();
    let spent: rust_decimal::Decimal = overview["managed_month_to_date"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        spent > rust_decimal::Decimal::ZERO,
        "the demo traffic is there: {overview}"
    );
    assert!(
        balance < rust_decimal::Decimal::from(50),
        "usage was debited: {overview}"
    );

    let (status, _) = request(
        &addr,
        "GET",
        "/billing/overview?workspace=acme-prod",
        &[],
        "",
    );
    assert_eq!(status, 401);

    // The month's chargeback CSV streams in chunks: Acme's rows only.
    // Yesterday's month: the demo traffic of the last fortnight always reaches it.
    let month = (chrono::Utc::now() - chrono::Duration::days(1))
        .format("%Y-%m")
        .to_string();
    let export = format!("/billing/export.csv?month={month}");
    let (status, body) = request(&addr, "GET", &export, &auth, "");
    assert_eq!(status, 200, "{body}");
    let csv = body;
    let mut lines = csv.lines();
    assert!(
        lines
            .next()
            .unwrap()
            .starts_with("date,org,workspace,team,"),
        "{csv}"
    );
    let rows: Vec<&str> = lines.collect();
    assert!(!rows.is_empty(), "this month's demo traffic is exported");
    assert!(
        rows.iter().all(|r| r.split(',').nth(1) == Some("acme")),
        "{csv}"
    );
    let (status, _) = request(&addr, "GET", &export, &[], "");
    assert_eq!(status, 401);
    let (status, _) = request(
        &addr,
        "GET",
        "/billing/wallet?workspace=globex-main",
        &auth,
        "",
    );
    assert_eq!(status, 404, "another org's workspace is not revealed");

    let top_up = [
        ("authorization", bearer.as_str()),
        ("idempotency-key", "t1"),
        ("content-type", "application/json"),
    ];
    let (status, body) = request(
        &addr,
        "POST",
        "/billing/wallet/topup?workspace=acme-prod",
        &top_up,
        r#"{"amount": "10.00", "currency": "USD"}"#,
    );
    assert_eq!(status, 201, "{body}");
    let (_, body) = request(
        &addr,
        "GET",
        "/billing/wallet?workspace=acme-prod",
        &auth,
        "",
    );
    let wallet: Value = serde_json::from_str(&body).unwrap();
    let after: rust_decimal::Decimal = wallet["balance"].as_str().unwrap().parse().unwrap();
    assert_eq!(after, balance + rust_decimal::Decimal::TEN);
}

#[test]
fn the_dashboard_is_served_to_anyone_and_its_data_to_the_token_only() {
    let (_server, addr, _) = server(&[]);
    for (path, kind) in [
        ("/", "text/html"),
        ("/dashboard.js", "text/javascript"),
        ("/dashboard.css", "text/css"),
    ] {
        let (status, head, body) = exchange(&addr, "GET", path, &[], "");
        assert_eq!(status, 200, "{path}");
        assert!(!body.is_empty(), "{path}");
        assert!(head.contains(&format!("content-type: {kind}")), "{head}");
        assert!(
            head.contains("content-security-policy: default-src 'self'"),
            "{head}"
        );
    }
    let (status, _) = request(&addr, "GET", "/billing/principal", &[], "");
    assert_eq!(status, 401);
}

#[test]
fn demo_requests_keep_arriving_when_asked() {
    let (_server, addr, token) = server(&[("ROUTERO_DEMO_EVERY_MS", "20")]);
    let bearer = format!("Bearer {token}");
    let today = chrono::Utc::now().format("%Y-%m-%d").to_string();
    let requests = || {
        let target = format!("/billing/daily-spend?start_date={today}&end_date={today}");
        let (status, body) = request(&addr, "GET", &target, &[("authorization", &bearer)], "");
        assert_eq!(status, 200, "{body}");
        let days: Value = serde_json::from_str(&body).unwrap();
        days[0]["api_requests"].as_u64().unwrap_or(0)
    };
    let first = requests();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while requests() < first + 5 {
        assert!(
            std::time::Instant::now() < deadline,
            "no new request drained"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

#[test]
fn oversized_and_slow_bodies_are_problems_and_idle_connections_close() {
    let (_server, addr, token) = server(&[
        ("ROUTERO_HEADER_READ_TIMEOUT_SECS", "1"),
        ("ROUTERO_BODY_READ_TIMEOUT_SECS", "1"),
    ]);
    let bearer = format!("Bearer {token}");
    let auth = [("authorization", bearer.as_str())];

    let body = format!(
        r#"{{"amount": "5", "currency": "USD", "pad": "{}"}}"#,
        "x".repeat(70 * 1024)
    );
    let (status, head, answer) = exchange(
        &addr,
        "POST",
        "/billing/wallet/topup?workspace=acme-prod",
        &auth,
        &body,
    );
    assert_eq!(status, 413, "{answer}");
    assert!(
        head.contains("content-type: application/problem+json"),
        "{head}"
    );
    let problem: Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(
        problem["type"],
        "https://routero.dev/problems/payload-too-large"
    );

    // A body that stops half-way is answered 408 after the body-read timeout, as a
    // problem, and the connection is not held.
    use std::io::Write;
    let mut slow = std::net::TcpStream::connect(&addr).unwrap();
    write!(
        slow,
        "POST /billing/wallet/topup?workspace=acme-prod HTTP/1.1\r\nhost: x\r\n\
         authorization: {bearer}\r\ncontent-type: application/json\r\n\
         content-length: 100\r\n\r\n{{\"amount\":"
    )
    .unwrap();
    slow.set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    let mut answer = String::new();
    let _ = std::io::Read::read_to_string(&mut slow, &mut answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("application/problem+json"), "{answer}");
    assert!(answer.contains("/problems/request-timeout"), "{answer}");

    // A connection that never sends a request is closed after the header-read
    // timeout (the read ends instead of waiting for ever).
    use std::io::{ErrorKind, Read};
    let mut idle = std::net::TcpStream::connect(&addr).unwrap();
    idle.set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    let mut buf = [0u8; 16];
    match idle.read(&mut buf) {
        Ok(0) => {}
        Ok(n) => panic!("an answer to no request: {:?}", &buf[..n]),
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
            panic!("the idle connection is still open after 30 s")
        }
        Err(_) => {} // reset: closed as well
    }
}

#[test]
fn the_product_pages_requests_work_as_written_for_a_one_workspace_principal() {
    let (_server, addr, _, _, token) = common::server_with_tokens(&[]);
    assert!(!token.is_empty(), "the server prints a one-workspace token");
    let bearer = format!("Bearer {token}");
    let auth = [("authorization", bearer.as_str())];
    let (status, body) = request(
        &addr,
        "POST",
        "/billing/wallet/topup",
        &auth,
        r#"{ "amount": 1000.00, "currency": "USD" }"#,
    );
    assert_eq!(status, 201, "{body}");
    for path in [
        "/billing/wallet",
        "/billing/transactions",
        "/billing/invoices",
        "/billing/daily-spend",
        "/billing/spend-trend",
        "/billing/overview",
        "/team/daily/activity",
        "/user/daily/activity",
        "/customer/daily/activity",
    ] {
        let (status, body) = request(&addr, "GET", path, &auth, "");
        assert_eq!(status, 200, "{path}: {body}");
    }
}

#[test]
fn the_server_serves_its_metrics_and_probes() {
    let metrics = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().to_string()
    };
    let (_server, addr, token) = server(&[("ROUTERO_METRICS_LISTEN", &metrics)]);
    let bearer = format!("Bearer {token}");
    let (status, _) = request(
        &addr,
        "GET",
        "/billing/overview?workspace=acme-prod",
        &[("authorization", &bearer)],
        "",
    );
    assert_eq!(status, 200);
    let (status, _) = request(&addr, "GET", "/billing/overview", &[], "");
    assert_eq!(status, 401);
    let (status, scrape) = request(&metrics, "GET", "/metrics", &[], "");
    assert_eq!(status, 200);
    assert!(
        scrape.contains(r#"routero_http_requests_total{route="/billing/overview",status="200"} 1"#),
        "{scrape}"
    );
    assert!(
        scrape.contains(r#"routero_http_requests_total{route="/billing/overview",status="401"} 1"#),
        "{scrape}"
    );
    assert!(
        scrape.contains("# HELP routero_http_requests_total"),
        "{scrape}"
    );
    assert_eq!(request(&metrics, "GET", "/healthz", &[], "").0, 200);
    assert_eq!(request(&metrics, "GET", "/readyz", &[], "").0, 200);
    assert_eq!(
        request(&metrics, "GET", "/admin/quarantine", &[], "").0,
        404,
        "no admin token"
    );
}

/// The in-memory demo has no coworker: the server closes last month itself, on the
/// scheduler (a grace of 0 hours, so whatever today's date), and lists it.
#[test]
fn the_demo_server_closes_last_month_itself() {
    let (_server, addr, _, _, prod_token) =
        common::server_with_tokens(&[("ROUTERO_CLOSE_GRACE_HOURS", "0")]);
    let bearer = format!("Bearer {prod_token}");
    let last_month = routero::invoice::Month::of(chrono::Utc::now().date_naive()).previous();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let invoices = loop {
        let (status, body) = request(
            &addr,
            "GET",
            "/billing/invoices",
            &[("authorization", &bearer)],
            "",
        );
        assert_eq!(status, 200, "{body}");
        let invoices: Value = serde_json::from_str(&body).unwrap();
        if !invoices.as_array().unwrap().is_empty() {
            break invoices;
        }
        assert!(std::time::Instant::now() < deadline, "no month closed");
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    assert_eq!(invoices[0]["month"], last_month.to_string());
    assert_eq!(invoices[0]["status"], "final");
    assert!(invoices[0]["number"].as_str().unwrap().starts_with("INV-"));
}
