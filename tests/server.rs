//! The `server` example run as a user runs it: it starts on a free port over the demo
//! traffic, and its printed token and address answer real HTTP requests.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};

use serde_json::Value;

/// Kills the server when the test ends, passed or not.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One HTTP/1.1 request; the status and the body.
fn request(
    addr: &str,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    let mut text = format!(
        "{method} {target} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\ncontent-length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        text.push_str(&format!("{name}: {value}\r\n"));
    }
    text.push_str("\r\n");
    text.push_str(body);
    stream.write_all(text.as_bytes()).unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    let status = answer[9..12].parse().unwrap();
    let body = answer
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// The payload of a `transfer-encoding: chunked` body.
fn dechunk(body: &str) -> String {
    let mut out = String::new();
    let mut rest = body;
    while let Some((size, tail)) = rest.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16).unwrap();
        if size == 0 {
            break;
        }
        out.push_str(&tail[..size]);
        rest = &tail[size + 2..];
    }
    out
}

#[test]
fn the_server_answers_with_its_token_and_refuses_without() {
    let binary = common::example("server");
    let mut child = Command::new(&binary)
        .env("ROUTERO_LISTEN", "127.0.0.1:0")
        .env_remove("ROUTERO_DATABASE_URL")
        .env_remove("ROUTERO_REDIS_URL")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let _server = Server(child);
    let mut lines = BufReader::new(stdout).lines();
    let listening = lines
        .by_ref()
        .map(Result::unwrap)
        .find(|l| l.starts_with("listening on "))
        .expect("the server says where it listens");
    let addr = listening["listening on http://".len()..]
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned();
    let token = listening
        .rsplit(": ")
        .next()
        .unwrap()
        .trim_end_matches(')')
        .to_owned();
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
    let csv = dechunk(&body);
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
