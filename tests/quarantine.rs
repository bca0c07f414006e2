//! Poison on real Redis and PostgreSQL: an entry the queue cannot decode and a batch
//! the store cannot apply (managed euros for a dollar wallet, with no rate) are
//! quarantined, the first with its bytes, while the shard's other 10,000 events drain
//! with exact totals; the waiting batch replays once its rate is known, once; the
//! undecodable one can only be discarded.

mod common;

use std::io::{Read, Write};
use std::sync::Arc;

use chrono::{TimeZone, Utc};
use common::{services, unique};
use routero::Currency;
use routero::attribution::{BillingMode, WorkspaceId};
use routero::drainer::{Drainer, DrainerConfig};
use routero::money::RateTable;
use routero::port::{ErrorKind, SpendQueue};
use routero::postgres::{PgConfig, PgStore};
use routero::quarantine::{Quarantine, QuarantineReason, QuarantineState, Release};
use routero::redis::{Redis, RedisConfig};
use routero::spend::{BatchId, Pricing, ShardId, SpendBatch, SpendEvent};
use routero::wallet::Wallets;
use routero_core::conformance::{cost_in, sample_day, sample_event};
use rust_decimal::Decimal;

fn money(text: &str) -> Decimal {
    Decimal::from_str_exact(text).unwrap()
}

/// `XADD key * b <raw>` over a plain connection: an entry no recorder would write.
fn xadd_raw(redis_url: &str, key: &str, raw: &[u8]) {
    let addr = redis_url
        .trim_start_matches("redis://")
        .trim_end_matches('/');
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    let mut command = Vec::new();
    let args: [&[u8]; 5] = [b"XADD", key.as_bytes(), b"*", b"b", raw];
    command.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
    for arg in args {
        command.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        command.extend_from_slice(arg);
        command.extend_from_slice(b"\r\n");
    }
    stream.write_all(&command).unwrap();
    let mut reply = [0u8; 64];
    let n = stream.read(&mut reply).unwrap();
    assert!(
        reply[..n].starts_with(b"$"),
        "{:?}",
        String::from_utf8_lossy(&reply[..n])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_never_stalls_a_shard_on_redis_and_postgres() {
    let Some((redis_url, pg_url)) = services() else {
        return;
    };
    let unique = unique("q");
    let mut redis_config = RedisConfig::new(&redis_url);
    redis_config.prefix = format!("quarantine-{unique}");
    redis_config.shards = 1;
    let redis = Redis::connect(redis_config.clone()).await.unwrap();
    let queue = redis.queue();
    let mut pg_config = PgConfig::new(&pg_url);
    pg_config.schema = Some(format!("t_quarantine_{unique}"));
    let store = Arc::new(PgStore::connect(pg_config).await.unwrap());

    let org = "poisonorg";
    let w = WorkspaceId::new("ws-fx").unwrap();
    let day = |d: u32| Utc.with_ymd_and_hms(2026, 11, d, 12, 0, 0).unwrap();
    store.open(&w, Currency::USD).await.unwrap();
    store
        .top_up(&w, money("1000.00"), Currency::USD, "seed", day(1))
        .await
        .unwrap();

    let (mut usd, mut usd_managed, mut euros) = (Decimal::ZERO, Decimal::ZERO, Decimal::ZERO);
    let garbage = b"\x00\x01not a batch\xff".to_vec();
    for b in 0..51u64 {
        if b == 10 {
            xadd_raw(
                &redis_url,
                &format!("{}:{{0}}:stream", redis_config.prefix),
                &garbage,
            );
        }
        let events: Vec<SpendEvent> = if b == 30 {
            (0..3)
                .map(|i| {
                    let mut e = sample_event(org, 1_000_000 + 2 * i, "0.5");
                    e.attribution.who.workspace = w.clone();
                    if let Pricing::Priced { currency, .. } = &mut e.pricing {
                        *currency = Currency::EUR;
                    }
                    euros += money("0.5");
                    e
                })
                .collect()
        } else {
            (0..200)
                .map(|i| {
                    let mut e = sample_event(org, b * 200 + i, "0.001");
                    e.attribution.who.workspace = w.clone();
                    usd += money("0.001");
                    if e.billing_mode == BillingMode::Managed {
                        usd_managed += money("0.001");
                    }
                    e
                })
                .collect()
        };
        let batch = SpendBatch {
            id: BatchId::new(77, b),
            shard: ShardId(0),
            events,
        };
        queue.append(&batch).await.unwrap();
    }

    let mut config = DrainerConfig::new("quarantine-test");
    config.max_batches = 8;
    let drainer = Drainer::new(redis.queue(), redis.elector(), store.clone(), config);
    let stats = drainer.drain_all().await.unwrap();
    assert_eq!((stats.events, stats.quarantined), (10_000, 2), "{stats:?}");
    assert!(
        queue
            .read_after(ShardId(0), None, 10)
            .await
            .unwrap()
            .is_empty(),
        "trimmed past both"
    );

    let cost_in = |currency: Currency| {
        let store = store.clone();
        async move { cost_in(&*store, org, currency).await }
    };
    assert_eq!(cost_in(Currency::USD).await, usd);
    assert_eq!(cost_in(Currency::EUR).await, Decimal::ZERO);
    let balance = store.balance(&w, day(3)).await.unwrap().balance;
    assert_eq!(balance, money("1000") - usd_managed);

    let held = store.quarantined().await.unwrap();
    assert_eq!(held.len(), 2, "{held:?}");
    let unreadable = held.iter().find(|q| q.raw.is_some()).unwrap();
    assert_eq!(unreadable.reason, QuarantineReason::Corrupt);
    assert_eq!(unreadable.raw.as_deref(), Some(&garbage[..]));
    assert!(unreadable.batch.events.is_empty());
    let waiting = held.iter().find(|q| q.raw.is_none()).unwrap();
    assert_eq!(waiting.reason, QuarantineReason::MissingExchangeRate);
    assert_eq!(waiting.batch.events.len(), 3);

    // The rate arrives: the batch lands once, however often it is replayed.
    let mut rates = RateTable::new();
    let rate = money("1.0825");
    rates.insert(Currency::EUR, Currency::USD, sample_day(), rate);
    store.set_rates(Arc::new(rates));
    assert_eq!(
        store.replay(waiting.id, day(4)).await.unwrap(),
        Release::Released
    );
    assert!(matches!(
        store.replay(waiting.id, day(5)).await.unwrap(),
        Release::AlreadyReleased(QuarantineState::Replayed { .. })
    ));
    assert_eq!(cost_in(Currency::EUR).await, euros);
    let managed_euros: Decimal = (0..3u64)
        .filter(|i| {
            sample_event(org, 1_000_000 + 2 * i, "0.5").billing_mode == BillingMode::Managed
        })
        .map(|_| money("0.5"))
        .sum();
    let balance = store.balance(&w, day(5)).await.unwrap().balance;
    assert_eq!(balance, money("1000") - usd_managed - managed_euros * rate);

    // Undecodable bytes hold no events to apply: a replay is refused, a discard
    // releases it, with its reason kept.
    let refused = store.replay(unreadable.id, day(5)).await.unwrap_err();
    assert_eq!(refused.kind(), ErrorKind::Invalid, "{refused}");
    assert_eq!(
        store
            .discard(unreadable.id, "garbage written by hand", day(5))
            .await
            .unwrap(),
        Release::Released
    );
    let after = store.quarantined().await.unwrap();
    assert!(
        after
            .iter()
            .all(|q| q.state != QuarantineState::Quarantined),
        "{after:?}"
    );
    redis.quit().await;
}
