//! The `gateway` example end to end: a real process between a real HTTP client and a
//! fake upstream that replays the provider fixtures, JSON and streamed.

mod common;

use common::{fake_upstream, fixture, fixture_cost};

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use routero::Provider;
use rust_decimal::Decimal;
use serde_json::Value;

/// The gateway process, killed when the test ends; its `spend` lines by request id.
struct Gateway {
    child: Child,
    addr: String,
    metrics: String,
    spends: mpsc::Receiver<Value>,
    _config: TempFile,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct TempFile(std::path::PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

impl Gateway {
    /// The next spend line the gateway printed.
    fn next_spend(&self) -> Value {
        self.spends
            .recv_timeout(Duration::from_secs(20))
            .expect("the gateway records the spend")
    }
}

fn start_gateway(upstream: &str) -> Gateway {
    let labs_key = std::env::temp_dir().join(format!("routero-labs-key-{}", std::process::id()));
    std::fs::write(&labs_key, "sk-labs-own-anthropic\n").unwrap();
    let labs_key = labs_key.display();
    let config = format!(
        r#"
default_max_tokens = 1000
[openai]
base_url = "http://{upstream}"
api_key_env = "GATEWAY_TEST_OPENAI_KEY"
[anthropic]
base_url = "http://{upstream}/"
api_key_env = "GATEWAY_TEST_ANTHROPIC_KEY"

[[keys]]
key = "caller-acme"
id = "acme-support-key"
org = "acme"
workspace = "acme-prod"
team = "support"
customer = "initech"

[[keys]]
key = "caller-globex"
id = "globex-key"
org = "globex"
workspace = "globex-main"

[[keys]]
key = "caller-labs"
id = "labs-key"
org = "acme"
workspace = "acme-labs"

# Globex is BYOK and holds its own Anthropic key only; Acme Labs is managed but
# brings its own Anthropic key (a file), so it mixes both modes.
[[workspaces]]
workspace = "globex-main"
billing_mode = "byok"

[[credentials]]
id = "globex-anthropic"
workspace = "globex-main"
upstream = "anthropic"
api_key_env = "GATEWAY_TEST_GLOBEX_ANTHROPIC_KEY"

[[credentials]]
id = "labs-anthropic"
workspace = "acme-labs"
upstream = "anthropic"
api_key_file = "{labs_key}"

[[keys]]
key = "caller-poor"
id = "poor-key"
org = "acme"
workspace = "acme-poor"

[[wallets]]
org = "acme"
workspace = "acme-prod"
balance = "25.00"

[[wallets]]
org = "acme"
workspace = "acme-poor"
balance = "0.00"

[[wallets]]
org = "acme"
workspace = "acme-labs"
balance = "25.00"

[[budgets]]
customer = "initech"
period = "day"
limit = "20.00"
"#
    );
    let path = std::env::temp_dir().join(format!("routero-gateway-{}.toml", std::process::id()));
    std::fs::write(&path, config).unwrap();
    let binary = common::example("gateway");
    let metrics = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().to_string()
    };
    let mut child = Command::new(&binary)
        .arg(&path)
        .env("ROUTERO_METRICS_LISTEN", &metrics)
        .env("ROUTERO_LISTEN", "127.0.0.1:0")
        .env("GATEWAY_TEST_OPENAI_KEY", "sk-upstream-openai")
        .env("GATEWAY_TEST_ANTHROPIC_KEY", "sk-upstream-anthropic")
        .env(
            "GATEWAY_TEST_GLOBEX_ANTHROPIC_KEY",
            "sk-globex-own-anthropic",
        )
        .env_remove("ROUTERO_REDIS_URL")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (addr_tx, addr_rx) = mpsc::channel();
    let (spend_tx, spends) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            if let Some(addr) = line.strip_prefix("listening on http://") {
                let _ = addr_tx.send(addr.to_owned());
            } else if let Some(json) = line.strip_prefix("spend ") {
                let _ = spend_tx.send(serde_json::from_str::<Value>(json).unwrap());
            }
        }
    });
    let addr = addr_rx
        .recv_timeout(Duration::from_secs(30))
        .expect("the gateway says where it listens");
    Gateway {
        child,
        addr,
        metrics,
        spends,
        _config: TempFile(path),
    }
}

type TestClient = Client<HttpConnector, Full<Bytes>>;

fn post(
    gateway: &Gateway,
    path: &str,
    headers: &[(&str, &str)],
    body: Value,
) -> Request<Full<Bytes>> {
    let mut request = Request::post(format!("http://{}{path}", gateway.addr))
        .header("content-type", "application/json")
        .header("accept-encoding", "gzip")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap();
    for (name, value) in headers {
        request.headers_mut().insert(
            http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            value.parse().unwrap(),
        );
    }
    request
}

fn header<'a>(headers: &'a http::HeaderMap, name: &str) -> &'a str {
    headers
        .get(name)
        .unwrap_or_else(|| panic!("no {name} header"))
        .to_str()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_costs_records_and_controls_every_request() {
    let (upstream, received) = fake_upstream();
    let gateway = start_gateway(&upstream);
    let client: TestClient = Client::builder(TokioExecutor::new()).build_http();
    let upstream_calls = || received.lock().unwrap().len();

    // An unknown key is refused before anything is forwarded.
    let response = client
        .request(post(
            &gateway,
            "/v1/chat/completions",
            &[("authorization", "Bearer nobody")],
            serde_json::json!({"model": "gpt-4o-mini"}),
        ))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(upstream_calls(), 0);

    // OpenAI JSON: the body passes unchanged, the cost is on the headers, the upstream
    // sees its own credential and no compression.
    let name = "openai_chat/chat_completion_reasoning_cached.json";
    let response = client
        .request(post(
            &gateway,
            "/v1/chat/completions",
            &[("authorization", "Bearer caller-acme"), ("x-fixture", name)],
            serde_json::json!({"model": "o4-mini", "max_completion_tokens": 2000,
                "messages": [{"role": "user", "content": "hi"}]}),
        ))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let cost = fixture_cost(&Provider::OpenAi, name, "o4-mini");
    assert_eq!(
        header(response.headers(), "x-routero-cost"),
        cost.normalize().to_string()
    );
    let request_id = header(response.headers(), "x-routero-request-id").to_owned();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, fixture(name));
    let seen = received.lock().unwrap().last().cloned().unwrap();
    assert_eq!(seen.path, "/v1/chat/completions");
    assert_eq!(seen.headers["authorization"], "Bearer sk-upstream-openai");
    assert!(!seen.headers.contains_key("accept-encoding"));
    let spend = gateway.next_spend();
    assert_eq!(spend["request_id"], request_id);
    assert_eq!(spend["pricing"]["cost"], cost.normalize().to_string());
    assert_eq!(spend["attribution"]["team"], "support");
    assert_eq!(spend["attribution"]["customer"], "initech");
    assert_eq!(spend["billing_mode"], "managed");
    assert_eq!(spend["partial"], false);

    // An OpenAI stream: include_usage is asked for, every byte passes, and the cost
    // follows as a final SSE comment and as trailers.
    let name = "openai_chat/chat_stream_include_usage.sse";
    let response = client
        .request(post(
            &gateway,
            "/v1/chat/completions",
            &[
                ("authorization", "Bearer caller-acme"),
                ("x-fixture", name),
                ("te", "trailers"),
            ],
            serde_json::json!({"model": "gpt-4o-mini", "stream": true, "max_tokens": 100}),
        ))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let collected = response.into_body().collect().await.unwrap();
    let trailers = collected.trailers().cloned();
    let body = collected.to_bytes();
    let original = fixture(name);
    assert_eq!(&body[..original.len()], original.as_slice());
    let cost = fixture_cost(&Provider::OpenAi, name, "gpt-4o-mini");
    let tail = std::str::from_utf8(&body[original.len()..]).unwrap();
    assert_eq!(tail, format!(": x-routero-cost={}\n\n", cost.normalize()));
    let trailers = trailers.expect("a client that accepts trailers gets them");
    assert_eq!(
        header(&trailers, "x-routero-cost"),
        cost.normalize().to_string()
    );
    let seen = received.lock().unwrap().last().cloned().unwrap();
    assert_eq!(seen.body["stream_options"]["include_usage"], true);
    assert_eq!(
        gateway.next_spend()["pricing"]["cost"],
        cost.normalize().to_string()
    );

    // An Anthropic stream, keyed by x-api-key, is priced from its own events.
    let name = "anthropic/message_stream.sse";
    let response = client
        .request(post(
            &gateway,
            "/v1/messages",
            &[("x-api-key", "caller-acme"), ("x-fixture", name)],
            serde_json::json!({"model": "claude-sonnet-4-5", "stream": true, "max_tokens": 500}),
        ))
        .await
        .unwrap();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let cost = fixture_cost(&Provider::Anthropic, name, "claude-sonnet-4-5");
    assert!(body.ends_with(format!(": x-routero-cost={}\n\n", cost.normalize()).as_bytes()));
    let seen = received.lock().unwrap().last().cloned().unwrap();
    assert_eq!(seen.headers["x-api-key"], "sk-upstream-anthropic");
    assert_eq!(
        gateway.next_spend()["pricing"]["cost"],
        cost.normalize().to_string()
    );

    // A BYOK Anthropic JSON response: priced and recorded as BYOK.
    let name = "anthropic/message_thinking.json";
    let response = client
        .request(post(
            &gateway,
            "/v1/messages",
            &[("x-api-key", "caller-globex"), ("x-fixture", name)],
            serde_json::json!({"model": "claude-sonnet-4-5", "max_tokens": 2000}),
        ))
        .await
        .unwrap();
    let cost = fixture_cost(&Provider::Anthropic, name, "claude-sonnet-4-5");
    assert_eq!(
        header(response.headers(), "x-routero-cost"),
        cost.normalize().to_string()
    );
    let spend = gateway.next_spend();
    assert_eq!(spend["billing_mode"], "byok");
    assert_eq!(spend["attribution"]["org"], "globex");
    let seen = received.lock().unwrap().last().cloned().unwrap();
    assert_eq!(
        seen.headers["x-api-key"], "sk-globex-own-anthropic",
        "BYOK traffic goes upstream on the workspace's own key, never the operator's"
    );

    // A BYOK workspace asking an upstream it holds no key for is refused, and
    // nothing is forwarded on the operator's key.
    let calls = upstream_calls();
    let response = client
        .request(post(
            &gateway,
            "/v1/chat/completions",
            &[
                ("authorization", "Bearer caller-globex"),
                (
                    "x-fixture",
                    "openai_chat/chat_completion_reasoning_cached.json",
                ),
            ],
            serde_json::json!({"model": "o4-mini"}),
        ))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    let body: Value =
        serde_json::from_slice(&response.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(body["error"]["type"], "byok_credential_missing");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("globex-main is billed BYOK and holds no openai credential"),
        "{body}"
    );
    assert_eq!(upstream_calls(), calls, "nothing was forwarded");

    // A workspace that mixes both modes: its own Anthropic key is BYOK, its OpenAI
    // traffic managed on the operator's key.
    let name = "anthropic/message_thinking.json";
    client
        .request(post(
            &gateway,
            "/v1/messages",
            &[("x-api-key", "caller-labs"), ("x-fixture", name)],
            serde_json::json!({"model": "claude-sonnet-4-5", "max_tokens": 2000}),
        ))
        .await
        .unwrap();
    let spend = gateway.next_spend();
    assert_eq!(
        (
            spend["billing_mode"].as_str(),
            spend["attribution"]["workspace"].as_str()
        ),
        (Some("byok"), Some("acme-labs"))
    );
    let seen = received.lock().unwrap().last().cloned().unwrap();
    assert_eq!(seen.headers["x-api-key"], "sk-labs-own-anthropic");
    let name = "openai_chat/chat_completion_reasoning_cached.json";
    client
        .request(post(
            &gateway,
            "/v1/chat/completions",
            &[("authorization", "Bearer caller-labs"), ("x-fixture", name)],
            serde_json::json!({"model": "o4-mini", "max_completion_tokens": 2000}),
        ))
        .await
        .unwrap();
    let spend = gateway.next_spend();
    assert_eq!(spend["billing_mode"], "managed");
    let seen = received.lock().unwrap().last().cloned().unwrap();
    assert_eq!(seen.headers["authorization"], "Bearer sk-upstream-openai");

    // A stream without usage is recorded unpriced, never as zero.
    let name = "openai_chat/chat_stream_no_usage.sse";
    let response = client
        .request(post(
            &gateway,
            "/v1/chat/completions",
            &[("authorization", "Bearer caller-acme"), ("x-fixture", name)],
            serde_json::json!({"model": "gpt-4o-mini", "stream": true}),
        ))
        .await
        .unwrap();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert!(String::from_utf8_lossy(&body).contains(": x-routero-unpriced="));
    let spend = gateway.next_spend();
    assert_eq!(spend["pricing"]["state"], "unpriced");
    assert!(
        spend["pricing"]["reason"]
            .as_str()
            .unwrap()
            .contains("usage")
    );

    // A client that goes away mid-stream leaves a partial spend: the prompt the
    // stream had reported, priced.
    let name = "anthropic/message_stream.sse";
    let response = client
        .request(post(
            &gateway,
            "/v1/messages",
            &[
                ("x-api-key", "caller-acme"),
                ("x-fixture", name),
                ("x-pause-after-events", "3"),
            ],
            serde_json::json!({"model": "claude-sonnet-4-5", "stream": true, "max_tokens": 500}),
        ))
        .await
        .unwrap();
    let mut body = response.into_body();
    let first = body.frame().await.unwrap().unwrap();
    assert!(first.data_ref().is_some_and(|d| !d.is_empty()));
    drop(body);
    let spend = gateway.next_spend();
    assert_eq!(spend["partial"], true);
    assert_eq!(spend["pricing"]["state"], "priced");
    assert_eq!(spend["usage"]["input_tokens"], 472);
    let partial: Decimal = spend["pricing"]["cost"].as_str().unwrap().parse().unwrap();
    assert!(
        partial > Decimal::ZERO && partial <= cost_of_full_stream(),
        "{partial}"
    );

    // A wallet that cannot cover the estimate: 402, nothing forwarded.
    let before = upstream_calls();
    let response = client
        .request(post(
            &gateway,
            "/v1/messages",
            &[("x-api-key", "caller-poor"), ("x-fixture", name)],
            serde_json::json!({"model": "claude-sonnet-4-5", "max_tokens": 500}),
        ))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::PAYMENT_REQUIRED);
    let body: Value =
        serde_json::from_slice(&response.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(body["type"], "error");
    assert_eq!(body["error"]["type"], "insufficient_quota");

    // The customer's budget: a request whose estimate exceeds it is refused with 429.
    let response = client
        .request(post(
            &gateway,
            "/v1/chat/completions",
            &[("authorization", "Bearer caller-acme"), ("x-fixture", name)],
            serde_json::json!({"model": "o4-mini", "max_completion_tokens": 5_000_000}),
        ))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);

    // A managed key asking for a model without a price cannot be billed: 400.
    let response = client
        .request(post(
            &gateway,
            "/v1/chat/completions",
            &[("authorization", "Bearer caller-acme")],
            serde_json::json!({"model": "no-such-model-anywhere"}),
        ))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(upstream_calls(), before);

    // An upstream error passes through, unbilled.
    let response = client
        .request(post(
            &gateway,
            "/v1/chat/completions",
            &[("authorization", "Bearer caller-acme"), ("x-status", "529")],
            serde_json::json!({"model": "gpt-4o-mini"}),
        ))
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 529);
    assert_eq!(upstream_calls(), before + 1);
    assert!(
        gateway
            .spends
            .recv_timeout(Duration::from_millis(300))
            .is_err(),
        "an upstream error records no spend"
    );

    // Its metrics: requests by route and status, the recorder's counters.
    let (status, scrape) = common::request(&gateway.metrics, "GET", "/metrics", &[], "");
    assert_eq!(status, 200);
    let count = |series: &str| {
        scrape.lines().find_map(|l| {
            l.strip_prefix(series)?
                .strip_prefix(' ')?
                .parse::<f64>()
                .ok()
        })
    };
    assert!(
        count(r#"routero_http_requests_total{route="/v1/chat/completions",status="200"}"#)
            >= Some(1.0),
        "{scrape}"
    );
    assert!(
        count(r#"routero_http_requests_total{route="/v1/messages",status="402"}"#) >= Some(1.0),
        "{scrape}"
    );
    assert!(
        count("routero_recorder_events_recorded_total") >= Some(1.0),
        "{scrape}"
    );
    assert!(
        scrape.contains("routero_http_request_duration_seconds_bucket"),
        "{scrape}"
    );
    let (status, _) = common::request(&gateway.metrics, "GET", "/readyz", &[], "");
    assert_eq!(status, 200, "no Redis to wait for");
}

fn cost_of_full_stream() -> Decimal {
    fixture_cost(
        &Provider::Anthropic,
        "anthropic/message_stream.sse",
        "claude-sonnet-4-5",
    )
}
