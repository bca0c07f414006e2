//! Prices that change under a running gateway: a price file edited in place is put in
//! force for the next request (the gateway watches it), or on SIGHUP; a file that
//! does not load leaves the prices in force; every cost names the version that
//! priced it.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{example, fake_upstream, unique};
use rust_decimal::Decimal;

const FIXTURE: &str = "openai_chat/chat_completion_reasoning_cached.json";

/// o4-mini at `scale` times (1, 0.25, 4) dollars per million tokens. The fixture's
/// usage (256 uncached input, 1,792 cached, 864 output tokens) costs
/// `scale × 0.00416`.
fn prices(scale: u32) -> String {
    format!(
        r#"format = 1
version = "acme-negotiated"
currency = "USD"

[[model]]
provider = "openai"
name = "o4-mini"
input = "{scale}"
cache_read = "{}"
output = "{}"
"#,
        Decimal::new(25, 2) * Decimal::from(scale),
        4 * scale
    )
}

struct Gateway {
    child: Child,
    addr: String,
    lines: mpsc::Receiver<String>,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(upstream: &str, prices_file: &std::path::Path, poll_ms: &str) -> Gateway {
    let config = std::env::temp_dir().join(format!("{}.toml", unique("gw_prices")));
    std::fs::write(
        &config,
        format!(
            r#"
[openai]
base_url = "http://{upstream}"
api_key_env = "GATEWAY_TEST_OPENAI_KEY"

[[keys]]
key = "caller-acme"
id = "acme-key"
org = "acme"
workspace = "acme-prod"

[[wallets]]
org = "acme"
workspace = "acme-prod"
balance = "25.00"
"#
        ),
    )
    .unwrap();
    let mut child = Command::new(example("gateway"))
        .arg(&config)
        .env("ROUTERO_LISTEN", "127.0.0.1:0")
        .env("ROUTERO_PRICES_FILE", prices_file)
        .env("ROUTERO_PRICES_POLL_MS", poll_ms)
        .env("GATEWAY_TEST_OPENAI_KEY", "sk-upstream")
        .env_remove("ROUTERO_REDIS_URL")
        .env_remove("ROUTERO_METRICS_LISTEN")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    let addr = loop {
        let line = lines
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("the gateway says where it listens");
        if let Some(addr) = line.strip_prefix("listening on http://") {
            break addr.to_owned();
        }
    };
    std::fs::remove_file(&config).ok();
    Gateway { child, addr, lines }
}

/// One priced request: its cost and price version.
fn priced(gateway: &Gateway) -> (Decimal, String) {
    let body = r#"{"model": "o4-mini", "max_completion_tokens": 2000, "messages": [{"role": "user", "content": "hi"}]}"#;
    let (status, head, answer) = common::exchange(
        &gateway.addr,
        "POST",
        "/v1/chat/completions",
        &[
            ("authorization", "Bearer caller-acme"),
            ("x-fixture", FIXTURE),
            ("content-type", "application/json"),
        ],
        body,
    );
    assert_eq!(status, 200, "{answer}");
    let header = |name: &str| {
        head.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}: ")))
            .unwrap_or_else(|| panic!("no {name} in {head}"))
            .trim()
            .to_owned()
    };
    (
        Decimal::from_str_exact(&header("x-routero-cost")).unwrap(),
        header("x-routero-price-version"),
    )
}

fn until_cost(gateway: &Gateway, cost: Decimal) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (now, version) = priced(gateway);
        if now == cost {
            return version;
        }
        assert!(
            Instant::now() < deadline,
            "still {now} ({version}), not {cost}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_changed_price_file_prices_the_next_requests() {
    let (upstream, _) = fake_upstream();
    let file = std::env::temp_dir().join(format!("{}.toml", unique("prices")));
    std::fs::write(&file, prices(1)).unwrap();
    let gateway = start(&upstream, &file, "100");
    let base = Decimal::from_str_exact("0.00416").unwrap();
    let (cost, first) = priced(&gateway);
    assert_eq!(cost, base);
    assert!(first.contains("+acme-negotiated@"), "{first}");

    // Edited in place, the file's own version unchanged: the next requests pay the new
    // rate, under a version of its own.
    std::fs::write(&file, prices(2)).unwrap();
    let second = until_cost(&gateway, base * Decimal::from(2));
    assert_ne!(second, first);
    assert!(
        gateway
            .lines
            .try_iter()
            .any(|l| l.starts_with("prices ") && l.contains(&second))
    );

    // A file that does not load: the prices in force stay.
    std::fs::write(
        &file,
        "format = 1\nversion = \"broken\"\n[[model]]\nprovider = \"openai\"\n",
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(priced(&gateway), (base * Decimal::from(2), second.clone()));

    // Fixed again: in force again.
    std::fs::write(&file, prices(3)).unwrap();
    until_cost(&gateway, base * Decimal::from(3));
    std::fs::remove_file(&file).ok();
}

#[test]
fn sighup_puts_the_price_file_in_force() {
    let (upstream, _) = fake_upstream();
    let file = std::env::temp_dir().join(format!("{}.toml", unique("prices_hup")));
    std::fs::write(&file, prices(1)).unwrap();
    // Polled once an hour: only the signal reloads it.
    let gateway = start(&upstream, &file, "3600000");
    let base = Decimal::from_str_exact("0.00416").unwrap();
    assert_eq!(priced(&gateway).0, base);
    std::fs::write(&file, prices(5)).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(priced(&gateway).0, base, "not before the signal");
    let status = Command::new("kill")
        .args(["-HUP", &gateway.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    until_cost(&gateway, base * Decimal::from(5));
    std::fs::remove_file(&file).ok();
}
