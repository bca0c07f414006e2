//! routero-redis against a real redis-server.
//!
//! The server comes from `ROUTERO_TEST_REDIS_URL` (scripts/test.sh starts one). With
//! `ROUTERO_TEST_REQUIRE_SERVICES=1` a missing server fails the run; otherwise these
//! tests skip with a notice. The tests that do not depend on the topology run on a
//! Redis Cluster too (`ROUTERO_TEST_REDIS_CLUSTER_URL`, three masters with a replica
//! each, started by the same script). Each test uses its own key prefix. The restart
//! test starts and kills its own redis-server.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use routero_core::attribution::OrgId;
use routero_core::conformance::{self, sample_day, sample_event};
use routero_core::drainer::{Drainer, DrainerConfig, StepOutcome};
use routero_core::memory::MemoryStore;
use routero_core::port::{
    AppendOutcome, ErrorKind, LeaderElector, RollupFilter, SpendQueue, SpendReader,
};
use routero_core::recorder::{Recorder, RecorderConfig};
use routero_core::spend::{BatchId, ShardId, SpendBatch};
use routero_redis::{Redis, RedisConfig};
use rust_decimal::Decimal;

fn require_services() -> bool {
    std::env::var("ROUTERO_TEST_REQUIRE_SERVICES").is_ok_and(|v| v == "1")
}

/// The test server's URL, or `None` (after a notice) when there is none to use.
fn redis_url() -> Option<String> {
    match std::env::var("ROUTERO_TEST_REDIS_URL") {
        Ok(url) => Some(url),
        Err(_) if require_services() => {
            panic!("ROUTERO_TEST_REDIS_URL is not set and services are required")
        }
        Err(_) => {
            eprintln!("skipped: ROUTERO_TEST_REDIS_URL is not set (run scripts/test.sh)");
            None
        }
    }
}

/// Every server the topology-independent tests run on: the single server, then the
/// Redis Cluster of `ROUTERO_TEST_REDIS_CLUSTER_URL` (three masters, a replica each).
fn servers() -> Vec<String> {
    let mut urls: Vec<String> = redis_url().into_iter().collect();
    match std::env::var("ROUTERO_TEST_REDIS_CLUSTER_URL") {
        Ok(url) => urls.push(url),
        Err(_) if require_services() => {
            panic!("ROUTERO_TEST_REDIS_CLUSTER_URL is not set and services are required")
        }
        Err(_) => eprintln!("not on a cluster: ROUTERO_TEST_REDIS_CLUSTER_URL is not set"),
    }
    urls
}

fn unique_prefix(test: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("test-{test}-{}-{nanos}", std::process::id())
}

async fn connect(url: &str, test: &str, shards: u16) -> Redis {
    let mut config = RedisConfig::new(url);
    config.prefix = unique_prefix(test);
    config.shards = shards;
    Redis::connect(config)
        .await
        .expect("connect to the test redis-server")
}

#[tokio::test]
async fn conformance_queue() {
    for url in servers() {
        conformance::queue_suite(|name| {
            let url = url.clone();
            async move { connect(&url, name, 4).await.queue() }
        })
        .await;
    }
}

#[tokio::test]
async fn conformance_elector() {
    for url in servers() {
        conformance::elector_single_holder(&connect(&url, "e1", 4).await.elector()).await;
        // Two electors on two separate connection pools race for one lease.
        let first = connect(&url, "race", 4).await;
        let mut config = first.config().clone();
        config.pool_size = 1;
        let second = Redis::connect(config).await.unwrap();
        conformance::elector_race_has_one_winner(&first.elector(), &second.elector()).await;
        conformance::elector_expiry_and_takeover(
            &connect(&url, "e3", 4).await.elector(),
            Duration::from_millis(200),
            tokio::time::sleep,
        )
        .await;
    }
}

#[tokio::test]
async fn conformance_pipeline() {
    for url in servers() {
        let redis = connect(&url, "pipeline", 4).await;
        conformance::pipeline_is_exactly_once(
            Arc::new(redis.queue()),
            Arc::new(redis.elector()),
            Arc::new(MemoryStore::new()),
        )
        .await;
        if redis.is_cluster() {
            // Appends, drain reads and leases that wait for a replica.
            let mut config = connect(&url, "pipeline-wait", 4).await.config().clone();
            config.wait_replicas = 1;
            config.wait_timeout = Duration::from_secs(2);
            let waiting = Redis::connect(config).await.unwrap();
            conformance::pipeline_is_exactly_once(
                Arc::new(waiting.queue()),
                Arc::new(waiting.elector()),
                Arc::new(MemoryStore::new()),
            )
            .await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_spend_control() {
    for url in servers() {
        conformance::control_reservations_never_overspend(Arc::new(
            connect(&url, "ctl1", 1).await.control(),
        ))
        .await;
        conformance::control_budgets_hold_per_period(Arc::new(
            connect(&url, "ctl2", 1).await.control(),
        ))
        .await;
    }
}

#[tokio::test]
async fn a_retried_flush_whose_reply_was_lost_adds_nothing() {
    for url in servers() {
        let queue = connect(&url, "lost-reply", 2).await.queue();
        let batch = SpendBatch {
            id: BatchId::new(42, 1),
            shard: ShardId(1),
            events: vec![sample_event("acme", 1, "0.3")],
        };
        assert!(matches!(
            queue.append(&batch).await.unwrap(),
            AppendOutcome::Appended(_)
        ));
        // The first reply never reached the recorder: it sends the same batch again.
        assert_eq!(
            queue.append(&batch).await.unwrap(),
            AppendOutcome::Duplicate
        );
        assert_eq!(
            queue.read_after(ShardId(1), None, 10).await.unwrap().len(),
            1
        );
    }
}

#[tokio::test]
async fn a_paused_leader_is_fenced_off_by_the_store() {
    for url in servers() {
        let redis = connect(&url, "paused", 1).await;
        let queue = Arc::new(redis.queue());
        let elector = Arc::new(redis.elector());
        let store = Arc::new(MemoryStore::new());
        let drainer = |holder: &str| {
            Drainer::new(
                queue.clone(),
                elector.clone(),
                store.clone(),
                DrainerConfig::new(holder),
            )
        };
        let (paused, successor) = (drainer("paused"), drainer("successor"));

        let old = elector
            .acquire(ShardId(0), "paused", Duration::from_millis(300))
            .await
            .unwrap()
            .unwrap();
        // The holder pauses (GC, SIGSTOP) past its lease; another coworker takes over.
        tokio::time::sleep(Duration::from_millis(700)).await;
        let new = elector
            .acquire(ShardId(0), "successor", Duration::from_secs(30))
            .await
            .unwrap()
            .unwrap();
        assert!(new.token > old.token, "the successor's token is larger");

        let batch = |seq| SpendBatch {
            id: BatchId::new(7, seq),
            shard: ShardId(0),
            events: vec![sample_event("acme", seq, "1.5")],
        };
        queue.append(&batch(1)).await.unwrap();
        assert!(matches!(
            successor.step(&new).await.unwrap(),
            StepOutcome::Drained { .. }
        ));
        queue.append(&batch(2)).await.unwrap();
        // The paused leader wakes up and drains with its old token: refused.
        assert_eq!(paused.step(&old).await.unwrap(), StepOutcome::Fenced);
        assert!(!elector.renew(&old).await.unwrap(), "and its lease is gone");
        assert_eq!(
            store.totals().cost,
            Decimal::new(15, 1),
            "only the successor's step counted"
        );
        assert!(matches!(
            successor.step(&new).await.unwrap(),
            StepOutcome::Drained { .. }
        ));
        assert_eq!(store.totals().cost, Decimal::new(30, 1));
    }
}

#[tokio::test]
async fn an_append_waits_for_its_replicas_when_asked() {
    let urls = servers();
    let batch = |seq| SpendBatch {
        id: BatchId::new(9, seq),
        shard: ShardId(2),
        events: vec![sample_event("acme", seq, "0.25")],
    };
    for url in &urls {
        let redis = connect(url, "wait", 4).await;
        let mut config = redis.config().clone();
        config.wait_timeout = Duration::from_millis(100);
        // More replicas than there are (the single server has none, each cluster
        // master one): the append is not acknowledged, and says why.
        config.wait_replicas = 2;
        let strict = Redis::connect(config.clone()).await.unwrap().queue();
        let err = strict.append(&batch(1)).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
        assert!(err.is_retryable());
        assert!(err.to_string().contains("of 2 replicas"), "{err}");
        if !redis.is_cluster() {
            continue;
        }
        // On the cluster one replica holds it: the recorder's retry finds the batch
        // there already, is acknowledged once the replica has it, and adds nothing.
        config.wait_replicas = 1;
        config.wait_timeout = Duration::from_secs(2);
        let waiting = Redis::connect(config).await.unwrap().queue();
        assert_eq!(
            waiting.append(&batch(1)).await.unwrap(),
            AppendOutcome::Duplicate
        );
        assert!(matches!(
            waiting.append(&batch(2)).await.unwrap(),
            AppendOutcome::Appended(_)
        ));
        assert_eq!(
            waiting
                .read_after(ShardId(2), None, 10)
                .await
                .unwrap()
                .len(),
            2
        );
    }
}

/// Appends an entry with `payload` as its batch field, as another writer would, with
/// redis-cli; `false` (after a notice) when redis-cli is not installed.
fn xadd_with_cli(url: &str, stream: &str, payload: &str) -> bool {
    let status = Command::new("redis-cli")
        .args(["-u", url, "XADD", stream, "*", "b", payload])
        .stdout(Stdio::null())
        .status();
    let Ok(status) = status else {
        eprintln!("skipped: redis-cli is not installed");
        return false;
    };
    assert!(status.success());
    true
}

#[tokio::test]
async fn corrupt_entries_are_reported_not_skipped() {
    let Some(url) = redis_url() else { return };
    let redis = connect(&url, "corrupt", 1).await;
    let queue = redis.queue();
    let stream = format!("{}:{{0}}:stream", redis.config().prefix);
    if !xadd_with_cli(&url, &stream, "{not a batch") {
        return;
    }
    let err = queue.read_after(ShardId(0), None, 10).await.unwrap_err();
    assert_eq!(err.kind(), routero_core::port::ErrorKind::Corrupt, "{err}");
    assert!(!err.is_retryable());
}

#[tokio::test]
async fn entries_queued_by_an_earlier_build_still_drain() {
    let Some(url) = redis_url() else { return };
    let redis = connect(&url, "v1-entries", 1).await;
    let queue = redis.queue();
    let stream = format!("{}:{{0}}:stream", redis.config().prefix);
    // A batch as version 1 (JSON) wrote it, then one this build appends (version 2).
    let v1 = r#"{"v":1,"id":"00000000000000000000000000000007-3","shard":0,"events":[{"rid":"acme-req-1","t":1793620801000000,"org":"acme","ws":"acme-ws","team":"team-1","p":"openai","m":"gpt-4o","u":{"i":101,"cr":1,"cw5":0,"cw1":0,"o":11,"tier":"standard"},"cost":"0.000012345678901234567","cur":"USD","pv":"conformance","pm":"gpt-4o","mode":"byok","ok":true}]}"#;
    if !xadd_with_cli(&url, &stream, v1) {
        return;
    }
    let mut next = sample_event("acme", 2, "0.5");
    next.event_time += chrono::Duration::seconds(1);
    let appended = SpendBatch {
        id: BatchId::new(8, 1),
        shard: ShardId(0),
        events: vec![next],
    };
    assert!(matches!(
        queue.append(&appended).await.unwrap(),
        AppendOutcome::Appended(_)
    ));
    let read = queue.read_after(ShardId(0), None, 10).await.unwrap();
    assert_eq!(read.len(), 2);
    let old = &read[0].batch;
    assert_eq!(old.id, BatchId::new(7, 3));
    assert_eq!(old.events[0].request_id.as_str(), "acme-req-1");
    assert_eq!(
        old.events[0].cost().map(|c| c.to_string()).as_deref(),
        Some("0.000012345678901234567")
    );
    assert_eq!(read[1].batch, appended);
}

/// A redis-server of the test's own, with the append-only file on.
struct OwnRedis {
    port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl OwnRedis {
    fn start() -> Option<OwnRedis> {
        let port = TcpListener::bind("127.0.0.1:0")
            .ok()?
            .local_addr()
            .ok()?
            .port();
        let dir = std::env::temp_dir().join(unique_prefix("own-redis"));
        std::fs::create_dir_all(&dir).ok()?;
        let mut server = OwnRedis {
            port,
            dir,
            child: None,
        };
        server.spawn().then_some(server)
    }

    fn spawn(&mut self) -> bool {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--dir",
                self.dir.to_str().unwrap_or("."),
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--save",
                "",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let Ok(child) = child else { return false };
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// kill -9, then start again on the same files.
    fn crash_and_restart(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        assert!(self.spawn(), "redis-server restarts");
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_crash_with_aof_loses_nothing() {
    let Some(mut server) = OwnRedis::start() else {
        assert!(
            !require_services(),
            "redis-server could not be started and services are required"
        );
        eprintln!("skipped: redis-server is not installed");
        return;
    };
    let mut config = RedisConfig::new(server.url());
    config.shards = 4;
    config.command_timeout = Duration::from_millis(500);
    let redis = Redis::connect(config).await.unwrap();
    let queue = Arc::new(redis.queue());
    let store = Arc::new(MemoryStore::new());
    let (recorder, recorder_handle) = Recorder::spawn(
        queue.clone(),
        RecorderConfig {
            flush_interval: Duration::from_millis(5),
            max_batch_events: 50,
            ..RecorderConfig::default()
        },
    );
    let drainer = Arc::new(Drainer::new(
        queue.clone(),
        Arc::new(redis.elector()),
        store.clone(),
        DrainerConfig {
            idle_wait: Duration::from_millis(5),
            initial_backoff: Duration::from_millis(20),
            max_backoff: Duration::from_millis(200),
            ..DrainerConfig::new("restart")
        },
    ));
    let running = drainer.clone().spawn();

    let orgs = ["a", "b", "c", "d", "e", "f"];
    let mut expected = Decimal::ZERO;
    for seq in 0..3_000u64 {
        let cost = format!("0.{:05}", (seq * 7_919) % 100_000);
        expected += Decimal::from_str_exact(&cost).unwrap();
        let org = orgs[usize::try_from(seq % 6).unwrap()];
        recorder.record(sample_event(org, seq, &cost)).unwrap();
        if seq % 100 == 99 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        if seq == 1_500 {
            server.crash_and_restart();
        }
    }
    let flushed = recorder_handle.shutdown().await;
    assert_eq!(flushed.flushed_events, 3_000);

    let deadline = Instant::now() + Duration::from_secs(60);
    let mut got = Decimal::ZERO;
    while Instant::now() < deadline {
        let mut sum = Decimal::ZERO;
        for org in orgs {
            let filter = RollupFilter::new(OrgId::new(org).unwrap(), sample_day(), sample_day());
            sum += store
                .rollups(&filter)
                .await
                .unwrap()
                .iter()
                .map(|r| r.totals.cost)
                .sum::<Decimal>();
        }
        got = sum;
        if got == expected {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let stats = running.stop().await;
    assert_eq!(
        got, expected,
        "exact totals after a Redis crash ({stats:?}, recorder {flushed:?})"
    );
    assert_eq!(store.totals().successes, 3_000, "nothing counted twice");
}

/// The TLS server's URL and the test certificates' directory (scripts/test.sh makes
/// them), or `None` after a notice.
fn tls() -> Option<(String, std::path::PathBuf)> {
    match (
        std::env::var("ROUTERO_TEST_REDIS_TLS_URL"),
        std::env::var("ROUTERO_TEST_TLS_DIR"),
    ) {
        (Ok(url), Ok(dir)) => Some((url, dir.into())),
        _ if require_services() => {
            panic!("ROUTERO_TEST_REDIS_TLS_URL and ROUTERO_TEST_TLS_DIR are required")
        }
        _ => {
            eprintln!("skipped: no Redis TLS port (run scripts/test.sh)");
            None
        }
    }
}

fn tls_config(url: &str, dir: &std::path::Path, ca: &str, client: bool) -> RedisConfig {
    let mut config = RedisConfig::new(url);
    config.prefix = unique_prefix("tls");
    config.shards = 4;
    config.ca_file = Some(dir.join(ca));
    if client {
        config.client_identity = Some(routero_redis::Identity {
            cert: dir.join("client.crt"),
            key: dir.join("client.key"),
        });
    }
    config.connect_timeout = Duration::from_secs(2);
    config
}

/// The queue's and the elector's conformance over `rediss://`, with the test CA and a
/// client certificate (the server requires one).
#[tokio::test]
async fn conformance_over_tls() {
    let Some((url, dir)) = tls() else { return };
    conformance::queue_suite(|name| {
        let mut config = tls_config(&url, &dir, "ca.crt", true);
        config.prefix = unique_prefix(name);
        async move { Redis::connect(config).await.expect("rediss://").queue() }
    })
    .await;
    let redis = Redis::connect(tls_config(&url, &dir, "ca.crt", true))
        .await
        .unwrap();
    conformance::elector_single_holder(&redis.elector()).await;
    redis.ping().await.unwrap();
}

/// A server certificate from another CA, one for another host name, and no client
/// certificate where the server asks for one are all refused.
#[tokio::test]
async fn tls_refuses_what_it_cannot_trust() {
    let Some((url, dir)) = tls() else { return };
    let refused = async |config: RedisConfig| match tokio::time::timeout(
        Duration::from_secs(20),
        Redis::connect(config),
    )
    .await
    {
        Ok(Ok(_)) => panic!("connected"),
        Ok(Err(e)) => e.to_string(),
        Err(_) => panic!("neither connected nor refused"),
    };
    let wrong_ca = refused(tls_config(&url, &dir, "other-ca.crt", true)).await;
    assert!(
        wrong_ca.contains("UnknownIssuer") || wrong_ca.contains("certificate"),
        "{wrong_ca}"
    );
    let by_ip = url.replace("localhost", "127.0.0.1");
    let wrong_host = refused(tls_config(&by_ip, &dir, "ca.crt", true)).await;
    assert!(
        wrong_host.contains("NotValidForName") || wrong_host.contains("not valid for name"),
        "{wrong_host}"
    );
    refused(tls_config(&url, &dir, "ca.crt", false)).await;
    // A CA file with a plain URL is a mistake, said at once.
    let mut plain = tls_config(&url.replace("rediss://", "redis://"), &dir, "ca.crt", false);
    plain.prefix = unique_prefix("plain");
    let mistake = Redis::connect(plain).await.unwrap_err();
    assert_eq!(mistake.kind(), ErrorKind::Invalid);
}

/// The number of shards changes while spend flows (the conformance check), and a
/// second process that still has the old layout is turned to the new one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resharding_under_load() {
    for url in servers() {
        let redis = connect(&url, "reshard", 4).await;
        // Another process of the deployment, started before the change.
        let stale = Redis::connect(redis.config().clone()).await.unwrap();
        let old = stale.queue().layout();
        assert_eq!(
            (old.version, old.first, old.shards, old.retiring),
            (0, 0, 4, None)
        );
        let resharded = redis.clone();
        conformance::resharding_loses_and_doubles_nothing(
            Arc::new(redis.queue()),
            Arc::new(redis.elector()),
            Arc::new(MemoryStore::new()),
            |shards| {
                let redis = resharded.clone();
                async move { redis.reshard(shards).await }
            },
        )
        .await;
        // The stale process appends to a shard of its old layout: nothing is added,
        // and reading the layout again shows it where its spend goes now.
        let queue = stale.queue();
        assert_eq!(queue.layout(), old, "nothing read the layout again yet");
        let batch = SpendBatch {
            id: BatchId::parse("stale-process").unwrap(),
            shard: ShardId(1),
            events: vec![sample_event("stale", 1, "0.5")],
        };
        assert_eq!(queue.append(&batch).await.unwrap(), AppendOutcome::Moved);
        let now = queue.refresh_layout().await.unwrap();
        assert_eq!((now.version, now.first, now.shards), (2, 11, 2));
        assert!(now.is_current(now.shard_for(&OrgId::new("stale").unwrap())));
        // A third process configured with another number follows the stored layout.
        let mut config = redis.config().clone();
        config.shards = 64;
        assert_eq!(Redis::connect(config).await.unwrap().layout(), now);
    }
}
