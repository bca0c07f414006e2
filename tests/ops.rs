//! The coworker's operations listener against real Redis and PostgreSQL: the metrics
//! move as a drain runs, and `/readyz` follows PostgreSQL going away and coming back.
//!
//! The servers come from `ROUTERO_TEST_REDIS_URL` and `ROUTERO_TEST_DATABASE_URL`
//! (scripts/test.sh starts them); with `ROUTERO_TEST_REQUIRE_SERVICES=1` a missing one
//! fails the run, otherwise these tests skip.

mod common;

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Process, example, request, services, unique};
use routero::port::SpendQueue;
use routero::redis::{Redis, RedisConfig};
use routero::spend::{BatchId, ShardId, SpendBatch};
use routero_core::conformance::sample_event;
use rust_decimal::Decimal;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

fn free_addr() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().to_string()
}

/// The coworker on the given services, its metrics on a free port.
fn coworker(
    redis: &str,
    pg: &str,
    prefix: &str,
    schema: &str,
    extra: &[(&str, &str)],
) -> (Process, String) {
    let metrics = free_addr();
    let mut command = Command::new(example("coworker"));
    command
        .env("ROUTERO_REDIS_URL", redis)
        .env("ROUTERO_DATABASE_URL", pg)
        .env("ROUTERO_REDIS_PREFIX", prefix)
        .env("ROUTERO_DB_SCHEMA", schema)
        .env("ROUTERO_SHARDS", "2")
        .env("ROUTERO_METRICS_LISTEN", &metrics)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    for (name, value) in extra {
        command.env(name, value);
    }
    (Process(command.spawn().unwrap()), metrics)
}

/// GET on the operations listener, once it answers.
fn get(addr: &str, path: &str) -> (u16, String) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if std::net::TcpStream::connect(addr).is_ok() {
            return request(addr, "GET", path, &[], "");
        }
        assert!(Instant::now() < deadline, "{addr} never listened");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The value of one sample (`name{labels}`) in a scrape; `None` when absent.
fn sample(scrape: &str, series: &str) -> Option<f64> {
    scrape.lines().find_map(|line| {
        let rest = line.strip_prefix(series)?;
        rest.strip_prefix(' ')?.trim().parse().ok()
    })
}

fn until(what: &str, secs: u64, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !done() {
        assert!(Instant::now() < deadline, "timed out: {what}");
        std::thread::sleep(Duration::from_millis(25));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_metrics_move_with_the_drain() {
    let Some((redis_url, pg_url)) = services() else {
        return;
    };
    let prefix = unique("ops");
    let schema = unique("t_ops");
    let mut config = RedisConfig::new(&redis_url);
    config.prefix = prefix.clone();
    config.shards = 2;
    let redis = Redis::connect(config).await.unwrap();
    let queue = redis.queue();
    // 1,200 batches of one event, an hour old, queued before the coworker starts;
    // it applies one batch per step.
    let hour_ago = chrono::Utc::now() - chrono::Duration::hours(1);
    let mut expected = Decimal::ZERO;
    let batches = 1_200u64;
    for seq in 0..batches {
        let cost = Decimal::new(i64::try_from(1_000 + seq).unwrap(), 6);
        expected += cost;
        let mut event = sample_event("acme", seq, &cost.to_string());
        event.event_time = hour_ago;
        let shard = ShardId(u16::try_from(seq % 2).unwrap());
        queue
            .append(&SpendBatch {
                id: BatchId::new(42, seq),
                shard,
                events: vec![event],
            })
            .await
            .unwrap();
    }
    let metrics = tokio::task::spawn_blocking(move || {
        let (_coworker, metrics) = coworker(
            &redis_url,
            &pg_url,
            &prefix,
            &schema,
            &[("ROUTERO_MAX_BATCHES", "1")],
        );
        // While it drains: a backlog, and a lag of about an hour.
        let (mut saw_backlog, mut saw_lag, mut last_events) = (false, false, 0.0);
        let mut monotonic = true;
        let mut scrape = String::new();
        until("the drain ends", 120, || {
            let (status, body) = get(&metrics, "/metrics");
            assert_eq!(status, 200);
            scrape = body;
            let backlog = sample(&scrape, "routero_shard_backlog{shard=\"0\"}").unwrap_or(0.0);
            let lag = sample(&scrape, "routero_shard_lag_seconds{shard=\"0\"}").unwrap_or(0.0);
            let events = sample(&scrape, "routero_drain_events_total").unwrap_or(0.0);
            saw_backlog |= backlog >= 1.0 && events > 0.0;
            saw_lag |= lag >= 3_500.0;
            monotonic &= events >= last_events;
            last_events = events;
            events >= 1_200.0 && backlog == 0.0
        });
        assert!(saw_backlog, "a backlog was seen while draining");
        assert!(saw_lag, "the lag showed the hour-old spend");
        assert!(monotonic, "the applied counter never went back");
        // Drained: the lag falls to 0 on the next idle step.
        until("the lag is 0", 10, || {
            let (_, body) = get(&metrics, "/metrics");
            scrape = body;
            sample(&scrape, "routero_shard_lag_seconds{shard=\"0\"}") == Some(0.0)
                && sample(&scrape, "routero_shard_lag_seconds{shard=\"1\"}") == Some(0.0)
        });
        scrape
    })
    .await
    .unwrap();
    assert_eq!(
        sample(&metrics, "routero_drain_events_total"),
        Some(1_200.0)
    );
    assert_eq!(
        sample(&metrics, "routero_drain_batches_total"),
        Some(1_200.0)
    );
    assert_eq!(
        sample(&metrics, "routero_shard_backlog{shard=\"1\"}"),
        Some(0.0)
    );
    assert_eq!(
        sample(&metrics, "routero_shard_held{shard=\"0\"}"),
        Some(1.0)
    );
    assert!(sample(&metrics, "routero_lease_acquired_total{shard=\"1\"}").is_some());
    let micros = expected * Decimal::from(1_000_000);
    assert_eq!(
        sample(
            &metrics,
            "routero_drain_cost_microunits_total{currency=\"USD\"}"
        ),
        Some(micros.to_string().parse::<f64>().unwrap())
    );
    assert!(metrics.contains("# TYPE routero_drain_steps_total counter"));
    redis.quit().await;
}

/// A TCP relay to PostgreSQL that the test can cut (every connection closed, the port
/// refused) and restore on the same port.
struct Relay {
    addr: SocketAddr,
    target: SocketAddr,
    tasks: Option<JoinSet<()>>,
}

impl Relay {
    async fn start(addr: SocketAddr, target: SocketAddr) -> Relay {
        let mut relay = Relay {
            addr,
            target,
            tasks: None,
        };
        relay.resume().await;
        relay
    }

    async fn resume(&mut self) {
        let listener = TcpListener::bind(self.addr).await.unwrap();
        self.addr = listener.local_addr().unwrap();
        let target = self.target;
        let mut tasks = JoinSet::new();
        tasks.spawn(async move {
            let mut links = JoinSet::new();
            while let Ok((mut inbound, _)) = listener.accept().await {
                links.spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        });
        self.tasks = Some(tasks);
    }

    /// Closes the listener and every relayed connection.
    async fn cut(&mut self) {
        if let Some(mut tasks) = self.tasks.take() {
            tasks.shutdown().await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_follows_postgres() {
    let Some((redis_url, pg_url)) = services() else {
        return;
    };
    // postgres://user@host:port/db → the same through the relay.
    let (head, rest) = pg_url.split_once('@').unwrap();
    let (hostport, tail) = rest.split_once('/').unwrap();
    let target: SocketAddr = tokio::net::lookup_host(hostport)
        .await
        .unwrap()
        .next()
        .unwrap();
    let mut relay = Relay::start("127.0.0.1:0".parse().unwrap(), target).await;
    let relayed = format!("{head}@{}/{tail}", relay.addr);
    let prefix = unique("ready");
    let schema = unique("t_ready");
    let (coworker, metrics) = tokio::task::spawn_blocking(move || {
        coworker(
            &redis_url,
            &relayed,
            &prefix,
            &schema,
            &[("ROUTERO_PG_STATEMENT_TIMEOUT_SECS", "1")],
        )
    })
    .await
    .unwrap();
    let probe = |path: &'static str| {
        let metrics = metrics.clone();
        async move {
            tokio::task::spawn_blocking(move || get(&metrics, path))
                .await
                .unwrap()
        }
    };
    let until_ready = |want: u16, secs: u64| async move {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let (status, body) = probe("/readyz").await;
            if status == want {
                return body;
            }
            assert!(
                Instant::now() < deadline,
                "/readyz never answered {want}: {body}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    let body = until_ready(200, 60).await;
    assert!(
        body.contains(r#""postgres":"ok""#) && body.contains(r#""redis":"ok""#),
        "{body}"
    );

    relay.cut().await;
    let body = until_ready(503, 20).await;
    assert!(body.contains(r#""redis":"ok""#), "{body}");
    assert!(!body.contains(r#""postgres":"ok""#), "{body}");
    assert_eq!(probe("/healthz").await.0, 200, "alive all along");

    relay.resume().await;
    let body = until_ready(200, 30).await;
    assert!(body.contains(r#""postgres":"ok""#), "{body}");
    let (status, scrape) = probe("/metrics").await;
    assert_eq!(status, 200);
    assert!(
        scrape.contains("routero_ready{check=\"postgres\"} 1"),
        "{scrape}"
    );
    drop(coworker);
    relay.cut().await;
}
