//! The `axum-gateway` example end to end: a real process between a hyper client and
//! a fake upstream replaying the provider fixtures; the one `CostLayer` prices a JSON
//! response and a stream, and the spend it recorded is printed per team at the end.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use routero::Provider;

use common::{Process, fake_upstream, fixture, fixture_cost};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_axum_gateway_is_costed_by_one_layer() {
    let (upstream, received) = fake_upstream();
    let mut child = Command::new(common::example("axum-gateway"))
        .env("ROUTERO_LISTEN", "127.0.0.1:0")
        .env("ROUTERO_UPSTREAM", format!("http://{upstream}"))
        .env("ROUTERO_UPSTREAM_KEY", "sk-upstream")
        .env(
            "ROUTERO_KEYS",
            "rk-search=acme/acme-prod/search,rk-support=acme/acme-prod/support",
        )
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let gateway = Process(child);
    let (lines_tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = lines_tx.send(line);
        }
    });
    let listening = lines.recv_timeout(Duration::from_secs(30)).unwrap();
    let addr = listening
        .strip_prefix("listening on http://")
        .unwrap()
        .to_owned();
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let post = |key: &str, fixture: &str, body: serde_json::Value| {
        Request::post(format!("http://{addr}/v1/chat/completions"))
            .header("authorization", format!("Bearer {key}"))
            .header("x-fixture", fixture)
            .header("te", "trailers")
            .body(Full::new(Bytes::from(body.to_string())))
            .unwrap()
    };

    let json = "openai_chat/chat_completion_reasoning_cached.json";
    let response = client
        .request(post(
            "rk-search",
            json,
            serde_json::json!({"model": "o4-mini"}),
        ))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let json_cost = fixture_cost(&Provider::OpenAi, json, "o4-mini");
    assert_eq!(
        response.headers()["x-routero-cost"],
        json_cost.normalize().to_string().as_str()
    );
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, fixture(json));
    let seen = received.lock().unwrap().last().cloned().unwrap();
    assert_eq!(seen.headers["authorization"], "Bearer sk-upstream");

    let stream = "openai_chat/chat_stream_include_usage.sse";
    let response = client
        .request(post(
            "rk-support",
            stream,
            serde_json::json!({"model": "gpt-4o-mini", "stream": true}),
        ))
        .await
        .unwrap();
    let collected = response.into_body().collect().await.unwrap();
    let stream_cost = fixture_cost(&Provider::OpenAi, stream, "gpt-4o-mini");
    let trailers = collected.trailers().cloned().expect("trailers");
    assert_eq!(
        trailers["x-routero-cost"],
        stream_cost.normalize().to_string().as_str()
    );
    assert!(collected.to_bytes().starts_with(&fixture(stream)));
    let seen = received.lock().unwrap().last().cloned().unwrap();
    assert_eq!(seen.body["stream_options"]["include_usage"], true);

    let refused = client
        .request(post(
            "rk-nobody",
            json,
            serde_json::json!({"model": "o4-mini"}),
        ))
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);

    // Stopped, it prints the spend per team: each the exact cost of its request.
    let pid = gateway.0.id();
    let _ = Command::new("kill")
        .arg("-INT")
        .arg(pid.to_string())
        .status();
    let mut spend = Vec::new();
    while let Ok(line) = lines.recv_timeout(Duration::from_secs(30)) {
        if line.starts_with("spend ") {
            spend.push(line);
        }
    }
    let line_of = |team: &str| {
        spend
            .iter()
            .find(|l| l.contains(&format!(" {team} ")))
            .unwrap_or_else(|| panic!("no spend line for {team}: {spend:?}"))
            .clone()
    };
    assert!(line_of("search").contains(&format!(" {} USD", json_cost.normalize())));
    assert!(line_of("support").contains(&format!(" {} USD", stream_cost.normalize())));
}
