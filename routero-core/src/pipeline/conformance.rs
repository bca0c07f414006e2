//! The pipeline's conformance tests: the queue, the elector, the store and its read
//! side, the whole pipeline, and the quarantine (re-exported by [`crate::conformance`]).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use rust_decimal::Decimal;

use crate::Currency;
use crate::attribution::{BillingMode, OrgId, TeamId};
use crate::drainer::{Drainer, DrainerConfig, StepOutcome};
use crate::port::{
    AppendOutcome, ApplyOutcome, BackendError, DrainApply, FencingToken, GroupBy, LeaderElector,
    RollupFilter, SpendQueue, SpendReader, SpendStore,
};
use crate::recorder::{Recorder, RecorderConfig};
use crate::spend::{QueuePosition, ShardId, ShardLayout, SpendEvent};

use crate::conformance::*;

/// Batches come back in append order, after any position, within a limit; trimming
/// removes exactly the batches at or before the position.
pub async fn queue_orders_reads_and_trims(queue: &dyn SpendQueue) {
    let p1 = appended(
        queue,
        &batch("order-1", 0, vec![sample_event("acme", 1, "0.1")]),
    )
    .await;
    let p2 = appended(
        queue,
        &batch("order-2", 0, vec![sample_event("acme", 2, "0.2")]),
    )
    .await;
    let p3 = appended(
        queue,
        &batch("order-3", 0, vec![sample_event("acme", 3, "0.3")]),
    )
    .await;
    assert!(p1 < p2 && p2 < p3, "positions grow: {p1} {p2} {p3}");
    let all = queue
        .read_after(ShardId(0), None, 100)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let ids: Vec<&str> = all.iter().map(|b| b.batch.id.as_str()).collect();
    assert_eq!(ids, ["order-1", "order-2", "order-3"]);
    assert_eq!(
        all[0].batch.events[0],
        sample_event("acme", 1, "0.1"),
        "events round-trip exactly"
    );
    let after = queue
        .read_after(ShardId(0), Some(p1), 1)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(after.len(), 1, "the limit is honoured");
    assert_eq!(after[0].position, p2);
    queue
        .trim_through(ShardId(0), p2)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let left = queue
        .read_after(ShardId(0), None, 100)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].position, p3);
}

/// A batch appended twice with the same id is stored once.
pub async fn queue_ignores_duplicate_batch_ids(queue: &dyn SpendQueue) {
    let b = batch("dup-1", 0, vec![sample_event("acme", 7, "1.5")]);
    appended(queue, &b).await;
    let again = queue.append(&b).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(again, AppendOutcome::Duplicate);
    let stored = queue
        .read_after(ShardId(0), None, 100)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        stored
            .iter()
            .filter(|q| q.batch.id.as_str() == "dup-1")
            .count(),
        1
    );
}

/// Shards are separate queues.
pub async fn queue_keeps_shards_apart(queue: &dyn SpendQueue) {
    assert!(
        queue.layout().shards >= 2,
        "this check needs at least two shards"
    );
    appended(queue, &batch("shard-a", 0, vec![sample_event("a", 1, "1")])).await;
    appended(queue, &batch("shard-b", 1, vec![sample_event("b", 1, "2")])).await;
    let zero = queue
        .read_after(ShardId(0), None, 100)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let one = queue
        .read_after(ShardId(1), None, 100)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(zero.iter().all(|b| b.batch.shard == ShardId(0)));
    assert_eq!(one.len(), 1);
    assert_eq!(one[0].batch.id.as_str(), "shard-b");
}

/// One holder at a time; renewal by the holder only; release frees the lease; every
/// acquisition has a larger fencing token.
pub async fn elector_single_holder(elector: &dyn LeaderElector) {
    let ttl = Duration::from_secs(30);
    let a = elector
        .acquire(ShardId(0), "a", ttl)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let a = a.expect("a free lease is acquired");
    let b = elector
        .acquire(ShardId(0), "b", ttl)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(b.is_none(), "a held lease is not acquired by another");
    assert!(
        elector.renew(&a).await.unwrap_or_else(|e| panic!("{e}")),
        "the holder renews"
    );
    let mut forged = a.clone();
    forged.holder = Arc::from("b");
    assert!(
        !elector
            .renew(&forged)
            .await
            .unwrap_or_else(|e| panic!("{e}")),
        "another cannot renew it"
    );
    elector
        .release(&forged)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        elector
            .acquire(ShardId(0), "c", ttl)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .is_none(),
        "another cannot release it"
    );
    elector.release(&a).await.unwrap_or_else(|e| panic!("{e}"));
    let c = elector
        .acquire(ShardId(0), "c", ttl)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let c = c.expect("a released lease is free");
    assert!(
        c.token > a.token,
        "tokens grow: {:?} then {:?}",
        a.token,
        c.token
    );
    let other = elector
        .acquire(ShardId(1), "a", ttl)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(other.is_some(), "shards have separate leases");
}

/// Two electors race for a lease: exactly one wins.
pub async fn elector_race_has_one_winner(first: &dyn LeaderElector, second: &dyn LeaderElector) {
    let ttl = Duration::from_secs(30);
    let (a, b) = tokio::join!(
        first.acquire(ShardId(3), "a", ttl),
        second.acquire(ShardId(3), "b", ttl)
    );
    let winners = [a, b]
        .into_iter()
        .map(|r| r.unwrap_or_else(|e| panic!("{e}")))
        .filter(Option::is_some)
        .count();
    assert_eq!(winners, 1, "exactly one of two racing electors wins");
}

/// A lease that expired cannot be renewed; another takes it with a larger token; the
/// old holder's release leaves the new lease alone. `pass` lets `ttl` elapse (a
/// manual clock's advance, or a real sleep).
pub async fn elector_expiry_and_takeover<F, Fut>(
    elector: &dyn LeaderElector,
    ttl: Duration,
    pass: F,
) where
    F: Fn(Duration) -> Fut,
    Fut: Future<Output = ()>,
{
    let old = elector
        .acquire(ShardId(2), "old", ttl)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let old = old.expect("a free lease is acquired");
    pass(ttl * 2).await;
    assert!(
        !elector.renew(&old).await.unwrap_or_else(|e| panic!("{e}")),
        "an expired lease is lost"
    );
    let new = elector
        .acquire(ShardId(2), "new", ttl * 20)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let new = new.expect("an expired lease is taken over");
    assert!(new.token > old.token, "the new holder's token is larger");
    elector
        .release(&old)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        elector.renew(&new).await.unwrap_or_else(|e| panic!("{e}")),
        "the old holder's release did nothing"
    );
}

/// A drain step commits once: its replay is recognised and changes nothing; a
/// watermark that moved is reported; the drain state follows.
pub async fn store_applies_exactly_once<S: SpendStore + SpendReader + ?Sized>(store: &S) {
    let events = vec![
        sample_event("once", 1, "0.25"),
        sample_event("once", 2, "0.5"),
    ];
    let rollups = rollups_of(&events);
    let step = |expected, through| DrainApply {
        shard: ShardId(0),
        token: FencingToken(1),
        expected,
        through,
        rollups: &rollups,
        events: &events,
        at: day(28),
    };
    let p1 = QueuePosition::new(10, 0);
    let first = store
        .apply(step(None, p1))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(first, ApplyOutcome::Applied);
    let replay = store
        .apply(step(None, p1))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        replay,
        ApplyOutcome::AlreadyApplied,
        "a replayed step is skipped"
    );
    let sum = sum_of(store, "once").await;
    assert_eq!(
        sum.cost,
        Decimal::from_str_exact("0.75").unwrap_or_default(),
        "counted once"
    );
    assert_eq!(sum.successes, 2);
    let state = store
        .drain_state(ShardId(0))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(state.watermark, Some(p1));
    assert_eq!(state.fencing_token, Some(FencingToken(1)));
    let moved = store
        .apply(step(
            Some(QueuePosition::new(5, 0)),
            QueuePosition::new(20, 0),
        ))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(moved, ApplyOutcome::WatermarkMoved { current: Some(p1) });
    assert_eq!(
        sum_of(store, "once").await,
        sum,
        "a refused step changes nothing"
    );
}

/// A drainer whose token is older than one the store saw is refused, and changes
/// nothing.
pub async fn store_refuses_a_stale_leader<S: SpendStore + SpendReader + ?Sized>(store: &S) {
    let events = vec![sample_event("stale", 1, "1.125")];
    let rollups = rollups_of(&events);
    let apply = |token, expected, through| DrainApply {
        shard: ShardId(1),
        token: FencingToken(token),
        expected,
        through,
        rollups: &rollups,
        events: &events,
        at: day(28),
    };
    let p1 = QueuePosition::new(1, 0);
    assert_eq!(
        store
            .apply(apply(7, None, p1))
            .await
            .unwrap_or_else(|e| panic!("{e}")),
        ApplyOutcome::Applied
    );
    let stale = store
        .apply(apply(6, Some(p1), QueuePosition::new(2, 0)))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        stale,
        ApplyOutcome::StaleLeader {
            current: FencingToken(7)
        }
    );
    assert_eq!(
        sum_of(store, "stale").await.cost,
        Decimal::from_str_exact("1.125").unwrap_or_default()
    );
    let newer = store
        .apply(apply(9, Some(p1), QueuePosition::new(2, 0)))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(newer, ApplyOutcome::Applied, "a newer token proceeds");
}

/// Reads are scoped to one org and group as asked.
pub async fn reader_scopes_and_groups<S: SpendStore + SpendReader + ?Sized>(store: &S) {
    let mine: Vec<SpendEvent> = (0..6).map(|i| sample_event("scoped", i, "0.01")).collect();
    let theirs = vec![sample_event("other-org", 0, "99")];
    for (shard, events) in [(4u16, &mine), (5u16, &theirs)] {
        let rollups = rollups_of(events);
        let outcome = store
            .apply(DrainApply {
                shard: ShardId(shard),
                token: FencingToken(1),
                expected: None,
                through: QueuePosition::new(1, 0),
                rollups: &rollups,
                events,
                at: day(28),
            })
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(outcome, ApplyOutcome::Applied);
    }
    let org = OrgId::new("scoped").unwrap_or_else(|e| panic!("{e}"));
    let mut filter = RollupFilter::new(org, sample_day(), sample_day());
    filter.group_by = GroupBy {
        team: true,
        ..GroupBy::default()
    };
    let rows = store
        .rollups(&filter)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(rows.len(), 3, "three teams: {rows:?}");
    let total: Decimal = rows.iter().map(|r| r.totals.cost).sum();
    assert_eq!(
        total,
        Decimal::from_str_exact("0.06").unwrap_or_default(),
        "another org's spend never shows"
    );
    filter.teams = Some(vec![
        TeamId::new("team-1").unwrap_or_else(|e| panic!("{e}")),
    ]);
    let rows = store
        .rollups(&filter)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].totals.successes, 2);
    filter.teams = None;
    filter.billing_mode = Some(BillingMode::Byok);
    filter.group_by = GroupBy::default();
    let rows = store
        .rollups(&filter)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].totals.successes, 3);
}

/// The whole pipeline: a recorder flushes into the queue, a drainer applies, a crash
/// between commit and trim is replayed without double counting, and the store holds
/// the exact sum of what was recorded.
pub async fn pipeline_is_exactly_once<Q, E, S>(queue: Arc<Q>, elector: Arc<E>, store: Arc<S>)
where
    Q: SpendQueue,
    E: LeaderElector,
    S: SpendStore + SpendReader,
{
    let (recorder, handle) = Recorder::spawn(
        queue.clone(),
        RecorderConfig {
            max_batch_events: 7,
            ..RecorderConfig::default()
        },
    );
    let mut expected = Decimal::ZERO;
    for seq in 0..100u64 {
        let cost = format!("0.{:06}", seq * 37 + 1);
        expected += Decimal::from_str_exact(&cost).unwrap_or_default();
        recorder
            .record(sample_event("pipeline", seq, &cost))
            .unwrap_or_else(|e| panic!("{e}"));
    }
    let counts = handle.shutdown().await;
    assert_eq!(counts.flushed_events, 100);

    // A drainer commits one step, then "crashes" before trimming.
    let shard = queue
        .layout()
        .shard_for(&OrgId::new("pipeline").unwrap_or_else(|e| panic!("{e}")));
    let crashed = Drainer::new(
        queue.clone(),
        elector.clone(),
        store.clone(),
        DrainerConfig {
            max_batches: 3,
            ..DrainerConfig::new("crashed")
        },
    );
    let lease = elector
        .acquire(shard, "crashed", Duration::from_secs(30))
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|| panic!("lease"));
    let state = store
        .drain_state(shard)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let batches = queue
        .read_after(shard, state.watermark, 3)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let events: Vec<SpendEvent> = batches
        .iter()
        .flat_map(|b| b.batch.events.clone())
        .collect();
    let rollups = rollups_of(&events);
    let through = batches
        .last()
        .map(|b| b.position)
        .unwrap_or_else(|| panic!("batches"));
    let applied = store
        .apply(DrainApply {
            shard,
            token: lease.token,
            expected: state.watermark,
            through,
            rollups: &rollups,
            events: &events,
            at: day(28),
        })
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(applied, ApplyOutcome::Applied);
    elector
        .release(&lease)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    drop(crashed);

    // A second drainer takes over: the untrimmed batches are not applied again.
    let drainer = Drainer::new(
        queue.clone(),
        elector.clone(),
        store.clone(),
        DrainerConfig::new("takeover"),
    );
    let stats = drainer.drain_all().await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        stats.events + u64::try_from(events.len()).unwrap_or(0),
        100,
        "{stats:?}"
    );
    let sum = sum_of(&*store, "pipeline").await;
    assert_eq!(
        sum.cost, expected,
        "the store holds the exact recorded total"
    );
    assert_eq!(sum.successes, 100);
    let again = drainer.drain_all().await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(again.events, 0);
    assert!(
        queue
            .read_after(shard, None, 10)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .is_empty(),
        "trimmed"
    );
    let lease = elector
        .acquire(shard, "check", Duration::from_secs(30))
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|| panic!("lease"));
    assert_eq!(
        drainer.step(&lease).await.unwrap_or_else(|e| panic!("{e}")),
        StepOutcome::Idle
    );
    elector
        .release(&lease)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
}

/// Changing the number of shards while spend flows loses and doubles nothing, and
/// keeps an org's spend in order: two drainers run, a recorder records 900 events
/// over 30 orgs, the layout changes after the first 300; while one old shard is held
/// back (its lease taken by the check), the old layout stays retiring, a second
/// change is refused and no new shard is drained; once it is let go every old shard
/// retires, the new ones drain, each org's total is exact, and an append to an old
/// shard is answered [`AppendOutcome::Moved`]. `reshard` changes the queue's layout
/// to the given number of shards (the backend's own call).
pub async fn resharding_loses_and_doubles_nothing<Q, E, S, F, Fut>(
    queue: Arc<Q>,
    elector: Arc<E>,
    store: Arc<S>,
    reshard: F,
) where
    Q: SpendQueue,
    E: LeaderElector,
    S: SpendStore + SpendReader,
    F: Fn(u16) -> Fut,
    Fut: Future<Output = Result<ShardLayout, BackendError>>,
{
    let org = |i: u64| OrgId::new(&format!("reshard-{i}")).unwrap_or_else(|e| panic!("{e}"));
    let before = queue
        .refresh_layout()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(before.retiring.is_none(), "a settled layout to start from");
    let held_back = before.shard_for(&org(0));
    let blocker = elector
        .acquire(held_back, "held-back", Duration::from_secs(120))
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|| panic!("the lease of shard {held_back}"));

    let (stop, stopped) = tokio::sync::watch::channel(false);
    let drainers: Vec<_> = ["a", "b"]
        .into_iter()
        .map(|holder| {
            let drainer = Drainer::new(
                queue.clone(),
                elector.clone(),
                store.clone(),
                DrainerConfig {
                    idle_wait: Duration::from_millis(10),
                    renew_every: Duration::from_secs(1),
                    ..DrainerConfig::new(format!("reshard-{holder}"))
                },
            );
            let mut stopped = stopped.clone();
            tokio::spawn(async move {
                drainer
                    .run(async move {
                        let _ = stopped.wait_for(|s| *s).await;
                    })
                    .await
            })
        })
        .collect();
    let (recorder, handle) = Recorder::spawn(
        queue.clone(),
        RecorderConfig {
            max_batch_events: 5,
            flush_interval: Duration::from_millis(5),
            ..RecorderConfig::default()
        },
    );
    let mut expected = vec![Decimal::ZERO; 30];
    let mut record = |from: u64, to: u64| {
        for seq in from..to {
            let i = seq % 30;
            let cost = format!("0.{:06}", seq * 37 + 1);
            expected[usize::try_from(i).unwrap_or(0)] +=
                Decimal::from_str_exact(&cost).unwrap_or_default();
            recorder
                .record(sample_event(&format!("reshard-{i}"), seq, &cost))
                .unwrap_or_else(|e| panic!("{e}"));
        }
    };
    record(0, 300);
    tokio::time::sleep(Duration::from_millis(50)).await;

    let after = reshard(before.shards + 3)
        .await
        .unwrap_or_else(|e| panic!("reshard: {e}"));
    assert_eq!(after.version, before.version + 1);
    assert_eq!(after.shards, before.shards + 3);
    assert_eq!(after.retiring, Some((before.first, before.shards)));
    assert!(
        before.current().all(|s| !after.is_current(s)),
        "no shard id serves two layouts: {before} then {after}"
    );
    record(300, 900);
    let refused = reshard(4).await.map(|l| l.to_string());
    assert!(
        refused
            .as_ref()
            .is_err_and(|e| e.to_string().contains("still retiring")),
        "a change while the last one retires is refused: {refused:?}"
    );
    // While shard `held_back` is held back, the old layout cannot finish, and no
    // drainer may start on the new shards.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        queue
            .refresh_layout()
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .retiring
            .is_some()
    );
    for shard in after.current() {
        let state = store
            .drain_state(shard)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            state.watermark, None,
            "shard {shard} of the new layout drained before the old one was done"
        );
    }
    elector
        .release(&blocker)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let counts = handle.shutdown().await;
    assert_eq!(counts.flushed_events, 900, "{counts:?}");

    // Wait for the drainers to retire the old layout and empty the new one.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let layout = queue
            .refresh_layout()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let mut backlog = 0;
        for shard in layout.current() {
            backlog += queue.backlog(shard).await.unwrap_or_else(|e| panic!("{e}"));
        }
        let applied: u64 = futures::future::join_all((0..30).map(|i| {
            let store = store.clone();
            async move { sum_of(&*store, &format!("reshard-{i}")).await.successes }
        }))
        .await
        .iter()
        .sum();
        if layout.retiring.is_none() && backlog == 0 && applied == 900 {
            break;
        }
        if std::time::Instant::now() > deadline {
            let mut shards = Vec::new();
            for shard in layout.retiring_shards().chain(layout.current()) {
                let backlog = queue.backlog(shard).await.unwrap_or_else(|e| panic!("{e}"));
                shards.push(format!("{shard}: {backlog}"));
            }
            panic!(
                "not drained after a minute: {layout}, backlog {backlog}, {applied} of 900 applied; per shard {}",
                shards.join(", ")
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = stop.send(true);
    for drainer in drainers {
        drainer.await.unwrap_or_else(|e| panic!("{e}"));
    }
    for (i, expected) in (0..30).zip(expected) {
        let sum = sum_of(&*store, &format!("reshard-{i}")).await;
        assert_eq!(sum.cost, expected, "org reshard-{i}");
        assert_eq!(sum.successes, 30, "org reshard-{i}");
    }
    for shard in before.current() {
        assert_eq!(
            queue.backlog(shard).await.unwrap_or_else(|e| panic!("{e}")),
            0
        );
    }
    let late = batch(
        "late-for-the-old-layout",
        held_back.0,
        vec![sample_event("reshard-0", 1, "1")],
    );
    assert_eq!(
        queue.append(&late).await.unwrap_or_else(|e| panic!("{e}")),
        AppendOutcome::Moved,
        "an old shard takes nothing any more"
    );
    // The next change is possible now.
    let next = reshard(2).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(next.first, after.first + after.shards);
    assert_eq!(next.retiring, Some((after.first, after.shards)));
}

// ---------------------------------------------------------------------------------
// Quarantine

/// A batch the store cannot apply (managed EUR spend for a USD wallet, with no rate
/// for its day) goes to the quarantine while the shard's other 10,000 events drain
/// with exact totals; once the rate is known the waiting batch replays, once, with
/// its conversion recorded on the debit; a second replay, a racing replay and a
/// discard of a released batch change nothing.
pub async fn poison_batches_never_stall_a_shard<S>(
    store: Arc<S>,
    set_rates: impl Fn(Arc<dyn crate::money::ExchangeRates>),
) where
    S: SpendStore
        + SpendReader
        + crate::wallet::Wallets
        + crate::quarantine::Quarantine
        + crate::invoice::InvoiceStore,
{
    use crate::memory::{MemoryElector, MemoryQueue};
    use crate::money::RateTable;
    use crate::quarantine::{QuarantineReason, QuarantineState, Release, replay_waiting};
    use crate::spend::Pricing;
    use crate::wallet::EntryKind;

    let org = "poisonorg";
    let w = ws("ws-fx");
    store
        .open(&w, Currency::USD)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    store
        .top_up(&w, money("1000.00"), Currency::USD, "seed", day(1))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let queue = Arc::new(MemoryQueue::new(1));
    let mut usd = Decimal::ZERO;
    let mut usd_managed = Decimal::ZERO;
    let mut euros = Decimal::ZERO;
    for b in 0..51u64 {
        let events: Vec<SpendEvent> = if b == 25 {
            // The poison: managed spend in euros, for a wallet kept in dollars.
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
                    let seq = b * 200 + i;
                    let mut e = sample_event(org, seq, "0.001");
                    e.attribution.who.workspace = w.clone();
                    usd += money("0.001");
                    if e.billing_mode == BillingMode::Managed {
                        usd_managed += money("0.001");
                    }
                    e
                })
                .collect()
        };
        appended(&*queue, &batch(&format!("poison-{b}"), 0, events)).await;
    }
    let clock = Arc::new(crate::memory::ManualClock::new(day(2)));
    let drainer = Drainer::new(
        queue.clone(),
        Arc::new(MemoryElector::new(clock)),
        store.clone(),
        DrainerConfig::new("poison"),
    );
    let stats = drainer.drain_all().await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((stats.events, stats.quarantined), (10_000, 1), "{stats:?}");
    assert_eq!(cost_in(&*store, org, Currency::USD).await, usd);
    assert_eq!(cost_in(&*store, org, Currency::EUR).await, Decimal::ZERO);
    let balance = |at| {
        let store = store.clone();
        let w = w.clone();
        async move {
            store
                .balance(&w, at)
                .await
                .unwrap_or_else(|e| panic!("{e}"))
                .balance
        }
    };
    assert_eq!(balance(day(3)).await, money("1000") - usd_managed);
    assert!(
        queue
            .read_after(ShardId(0), None, 10)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .is_empty(),
        "the shard moved on and trimmed past the poison"
    );

    let held = store.quarantined().await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(held.len(), 1);
    let poison = &held[0];
    assert_eq!(poison.reason, QuarantineReason::MissingExchangeRate);
    assert_eq!(poison.state, QuarantineState::Quarantined);
    assert_eq!(poison.batch.id.as_str(), "poison-25");
    assert_eq!(poison.batch.events.len(), 3, "every event kept");
    assert!(
        poison.detail.contains("no exchange rate from EUR to USD"),
        "{}",
        poison.detail
    );

    // Without the rate it keeps waiting; with it, it lands once.
    let waiting = replay_waiting(&*store, day(3))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((waiting.replayed, waiting.waiting), (0, 1));
    let mut rates = RateTable::new();
    rates.insert(Currency::EUR, Currency::USD, sample_day(), money("1.0825"));
    set_rates(Arc::new(rates));
    let replays = (0..4).map(|_| store.replay(poison.id, day(4)));
    let results = futures::future::join_all(replays).await;
    let released = results
        .iter()
        .filter(|r| matches!(r, Ok(Release::Released)))
        .count();
    assert_eq!(released, 1, "racing replays apply it once: {results:?}");
    assert!(
        matches!(
            store.replay(poison.id, day(5)).await,
            Ok(Release::AlreadyReleased(QuarantineState::Replayed { .. }))
        ),
        "a second replay is a no-op"
    );
    assert!(matches!(
        store.discard(poison.id, "too late", day(5)).await,
        Ok(Release::AlreadyReleased(_))
    ));
    assert!(matches!(
        store.replay(999_999, day(5)).await,
        Ok(Release::NotFound)
    ));
    assert_eq!(cost_in(&*store, org, Currency::EUR).await, euros);
    assert_eq!(cost_in(&*store, org, Currency::USD).await, usd);
    let converted = euros * money("1.0825");
    assert_eq!(
        balance(day(6)).await,
        money("1000") - usd_managed - converted,
        "debited once, converted at the day's rate"
    );
    let ledger = store
        .transactions(
            &w,
            &crate::wallet::TransactionQuery {
                kinds: Some(vec![EntryKind::UsageDebit]),
                limit: 1_000,
                ..Default::default()
            },
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let conversions: Vec<_> = ledger
        .entries
        .iter()
        .filter_map(|e| e.conversion.clone().map(|c| (e.amount, c)))
        .collect();
    assert_eq!(conversions.len(), 1, "one converted debit");
    let (amount, conversion) = &conversions[0];
    assert_eq!(*amount, -converted);
    assert_eq!(
        (
            conversion.from,
            conversion.amount,
            conversion.rate,
            conversion.day
        ),
        (Currency::EUR, euros, money("1.0825"), sample_day())
    );
    let after = store.quarantined().await.unwrap_or_else(|e| panic!("{e}"));
    assert!(matches!(after[0].state, QuarantineState::Replayed { .. }));

    // The invoice bills the euros converted at the same rate, and says so.
    let mut rates = RateTable::new();
    rates.insert(Currency::EUR, Currency::USD, sample_day(), money("1.0825"));
    let billing = crate::invoice::Billing {
        reader: &*store,
        wallets: &*store,
        invoices: &*store,
        rates: &rates,
    };
    let month = crate::invoice::Month::of(sample_day());
    let invoice = billing
        .invoice(
            &OrgId::new(org).unwrap_or_else(|e| panic!("{e}")),
            &w,
            month,
            None,
            day(6),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(invoice.currency, Currency::USD);
    assert_eq!(invoice.exact_total, usd_managed + converted);
    let converted_lines: Vec<_> = invoice
        .lines
        .iter()
        .filter_map(|l| l.conversion.as_ref().map(|c| (l.exact_amount, c)))
        .collect();
    assert_eq!(converted_lines.len(), 1);
    let (exact, conversion) = converted_lines[0];
    assert_eq!(exact, converted);
    assert_eq!((conversion.from, conversion.amount), (Currency::EUR, euros));
    assert_eq!(
        conversion.rates.get(&sample_day()).copied(),
        Some(money("1.0825"))
    );
    let no_rates = RateTable::new();
    let blind = crate::invoice::Billing {
        rates: &no_rates,
        ..billing
    };
    assert!(
        matches!(
            blind
                .invoice(
                    &OrgId::new(org).unwrap_or_else(|e| panic!("{e}")),
                    &w,
                    month,
                    None,
                    day(6)
                )
                .await,
            Err(crate::invoice::InvoiceError::MissingRate(_))
        ),
        "no invoice at a guessed rate"
    );
}
