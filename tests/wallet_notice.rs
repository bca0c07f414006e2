//! A top-up reaches a running gateway: the example server (PostgreSQL and Redis)
//! announces every wallet write on Redis, and the example gateway, which refused a
//! managed request with 402 for an empty wallet, serves the next one as soon as the
//! notice lands; its scheduled refresh is an hour away, so only the notice can lift it.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Process, example, exchange, fake_upstream, server_with_tokens, services, unique};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_top_up_lifts_the_gateways_402() {
    let Some((redis_url, pg_url)) = services() else {
        return;
    };
    // A schema of its own, through the connection's search path.
    let schema = unique("t_notice");
    let (client, connection) = tokio_postgres::connect(&pg_url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client
        .batch_execute(&format!("CREATE SCHEMA {schema}"))
        .await
        .unwrap();
    let sep = if pg_url.contains('?') { '&' } else { '?' };
    let database = format!("{pg_url}{sep}options=-c%20search_path%3D{schema}");

    let (upstream, _received) = fake_upstream();
    let config = format!(
        r#"
default_max_tokens = 1000
[openai]
base_url = "http://{upstream}"
api_key_env = "NOTICE_TEST_OPENAI_KEY"

[[keys]]
key = "caller-prod"
id = "prod-key"
org = "acme"
workspace = "acme-prod"
"#
    );
    let path = std::env::temp_dir().join(format!("routero-notice-{}.toml", std::process::id()));
    std::fs::write(&path, config).unwrap();

    tokio::task::spawn_blocking(move || {
        // The server migrates the schema and opens the wallets; then the gateway.
        let (_server, server_addr, _token, _org, prod_token) = server_with_tokens(&[
            ("ROUTERO_DATABASE_URL", &database),
            ("ROUTERO_REDIS_URL", &redis_url),
        ]);
        let mut gateway = Command::new(example("gateway"));
        gateway
            .arg(&path)
            .env("ROUTERO_LISTEN", "127.0.0.1:0")
            .env("NOTICE_TEST_OPENAI_KEY", "sk-upstream")
            .env("ROUTERO_DATABASE_URL", &database)
            .env("ROUTERO_REDIS_URL", &redis_url)
            .env("ROUTERO_WALLET_REFRESH_SECS", "3600")
            .stdout(Stdio::piped());
        let mut child = gateway.spawn().unwrap();
        let stdout = child.stdout.take().unwrap();
        let _gateway = Process(child);
        let mut lines = BufReader::new(stdout).lines();
        let gateway_addr = lines
            .by_ref()
            .map(Result::unwrap)
            .find_map(|l| l.strip_prefix("listening on http://").map(str::to_owned))
            .expect("the gateway says where it listens");
        std::thread::spawn(move || lines.for_each(drop));

        let ask = || {
            exchange(
                &gateway_addr,
                "POST",
                "/v1/chat/completions",
                &[
                    ("authorization", "Bearer caller-prod"),
                    ("content-type", "application/json"),
                    ("x-fixture", "openai_chat/chat_completion_reasoning_cached.json"),
                ],
                r#"{"model": "o4-mini", "max_completion_tokens": 2000, "messages": [{"role": "user", "content": "hi"}]}"#,
            )
        };
        let (status, _, body) = ask();
        assert_eq!(status, 402, "an empty wallet refuses: {body}");

        let bearer = format!("Bearer {prod_token}");
        let (status, _, body) = exchange(
            &server_addr,
            "POST",
            "/billing/wallet/topup",
            &[
                ("authorization", &bearer),
                ("content-type", "application/json"),
                ("idempotency-key", "notice-test-1"),
            ],
            r#"{"amount": 25.00, "currency": "USD"}"#,
        );
        assert_eq!(status, 201, "{body}");
        let topped_up = Instant::now();
        let served = loop {
            let (status, _, body) = ask();
            if status == 200 {
                break topped_up.elapsed();
            }
            assert_eq!(status, 402, "{body}");
            assert!(
                topped_up.elapsed() < Duration::from_secs(60),
                "the top-up never reached the gateway"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        eprintln!("served {} ms after the top-up", served.as_millis());
        std::fs::remove_file(&path).ok();
    })
    .await
    .unwrap();
}
