//! The load generator: synthetic gateway traffic recorded into Redis at a target rate,
//! with the exact totals the system of record must end up with.
//!
//! ```text
//! ROUTERO_REDIS_URL=redis://127.0.0.1:6379 cargo run --release --example loadgen -- \
//!     [--events N] [--rate EVENTS_PER_SECOND] [--orgs N] [--run NAME] [--probe]
//! ```
//!
//! Records N requests (default 100,000) through the recorder into the Redis queue
//! (`ROUTERO_REDIS_PREFIX` as the coworkers have it; the shards as the queue's stored
//! layout says, `ROUTERO_SHARDS` for a new one) at the given
//! rate (0, the default: as fast as the recorder takes them). The requests are the
//! demo traffic's real provider responses, JSON and streamed, extracted and priced
//! with the bundled table (some unpriced, some failed), spread over `--orgs` orgs
//! (default 16), each with the demo's workspaces, teams, keys, users and customers,
//! managed and bring-your-own-key. Request ids start with the run name (`--run`,
//! default a fresh one), so runs never collide.
//!
//! At the end it prints one JSON line: the events, the unpriced ones, the exact cost
//! overall, per org and per team (decimal strings, with each one's request count), the
//! recorder's counters, the time taken and the rate reached.
//!
//! With `--probe` and `ROUTERO_DATABASE_URL`, it also measures the drain lag: every
//! 100 ms it records one request of the org `probe` and watches the daily-spend
//! analytics of that org in PostgreSQL until it shows; the JSON line then carries the
//! lag's p50, p99 and maximum in milliseconds. It waits (up to two minutes) for the
//! last probe to show. The probes are part of the totals.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use routero::attribution::{OrgId, RequestId};
use routero::port::{RollupFilter, SpendReader};
use routero::postgres::{PgConfig, PgStore};
use routero::recorder::{RecordError, Recorder, RecorderConfig};
use routero::redis::{Redis, RedisConfig};
use routero::spend::SpendEvent;
use rust_decimal::Decimal;

#[path = "demo/mod.rs"]
mod demo;

type Error = Box<dyn std::error::Error + Send + Sync>;

#[derive(Default)]
struct Totals {
    events: u64,
    unpriced: u64,
    cost: Decimal,
}

impl Totals {
    fn add(&mut self, event: &SpendEvent) {
        self.events += 1;
        match event.cost() {
            Some(cost) => self.cost += cost,
            None => self.unpriced += 1,
        }
    }

    fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "events": self.events,
            "unpriced": self.unpriced,
            "cost": self.cost.to_string(),
        })
    }
}

struct Options {
    events: u64,
    rate: u64,
    orgs: usize,
    run: String,
    probe: bool,
}

fn options() -> Result<Options, Error> {
    let mut options = Options {
        events: 100_000,
        rate: 0,
        orgs: 16,
        run: format!("lg{}", Utc::now().timestamp_millis()),
        probe: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--events" => options.events = value()?.parse()?,
            "--rate" => options.rate = value()?.parse()?,
            "--orgs" => options.orgs = value()?.parse::<usize>()?.max(1),
            "--run" => options.run = value()?,
            "--probe" => options.probe = true,
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    Ok(options)
}

#[tokio::main]
async fn main() -> ExitCode {
    let outcome = if std::env::args().nth(1).as_deref() == Some("check") {
        check().await
    } else {
        run().await
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("loadgen: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Drain lag samples: when each probe was recorded, and when it showed.
struct Probes {
    store: PgStore,
    org: OrgId,
    sent: Vec<Instant>,
    lags: Vec<Duration>,
}

impl Probes {
    /// Counts the probe requests the analytics show, and dates the new ones.
    async fn poll(&mut self) -> Result<(), Error> {
        let today = Utc::now().date_naive();
        let filter = RollupFilter::new(self.org.clone(), today.pred_opt().unwrap_or(today), today);
        let shown: u64 = self
            .store
            .rollups(&filter)
            .await?
            .iter()
            .map(|r| r.totals.requests())
            .sum();
        let now = Instant::now();
        let shown = usize::try_from(shown)
            .unwrap_or(usize::MAX)
            .min(self.sent.len());
        while self.lags.len() < shown {
            self.lags.push(now - self.sent[self.lags.len()]);
        }
        Ok(())
    }

    fn percentile(&self, p: usize) -> u128 {
        let mut lags = self.lags.clone();
        lags.sort();
        lags.get((lags.len() * p / 100).min(lags.len().saturating_sub(1)))
            .map_or(0, Duration::as_millis)
    }
}

async fn run() -> Result<(), Error> {
    let options = options()?;
    let config = RedisConfig::from_env()?.ok_or("set ROUTERO_REDIS_URL")?;
    let redis = Redis::connect(config).await?;
    let mut probes = match (options.probe, std::env::var("ROUTERO_DATABASE_URL")) {
        (false, _) => None,
        (true, Ok(url)) => {
            let mut pg = PgConfig::new(url);
            pg.schema = std::env::var("ROUTERO_DB_SCHEMA").ok();
            Some(Probes {
                store: PgStore::connect(pg).await?,
                org: "probe".parse()?,
                sent: Vec::new(),
                lags: Vec::new(),
            })
        }
        (true, Err(_)) => return Err("--probe needs ROUTERO_DATABASE_URL".into()),
    };

    // Templates: the demo's requests, a day of them, then spread over the orgs.
    let templates = demo::traffic(Utc::now(), 2_000, chrono::Duration::seconds(1));
    let orgs: Vec<OrgId> = (0..options.orgs)
        .map(|i| format!("org-{i}").parse())
        .collect::<Result<_, _>>()?;

    let (recorder, handle) = Recorder::spawn(
        Arc::new(redis.queue()),
        RecorderConfig {
            buffer_capacity: 1 << 18,
            max_batch_events: 1_000,
            flush_interval: Duration::from_millis(20),
            ..RecorderConfig::default()
        },
    );
    let mut overall = Totals::default();
    let mut per_org: BTreeMap<String, Totals> = BTreeMap::new();
    let mut per_team: BTreeMap<String, Totals> = BTreeMap::new();
    let mut count = |event: &SpendEvent| {
        overall.add(event);
        let org = event.attribution.who.org.as_str();
        per_org.entry(org.to_owned()).or_default().add(event);
        let team = event
            .attribution
            .who
            .team
            .as_ref()
            .map_or("", |t| t.as_str());
        per_team
            .entry(format!("{org}/{team}"))
            .or_default()
            .add(event);
    };

    let start = Instant::now();
    let mut next_probe = start;
    let mut probe_seq = 0u64;
    let mut refusals = 0u64;
    for i in 0..options.events {
        if options.rate > 0 {
            // Pace: event i is due at i / rate seconds.
            let nanos = u128::from(i) * 1_000_000_000 / u128::from(options.rate);
            let due = start + Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX));
            if let Some(wait) = due.checked_duration_since(Instant::now())
                && wait > Duration::from_millis(1)
            {
                tokio::time::sleep(wait).await;
            }
        }
        let template = &templates[usize::try_from(i).unwrap_or(0) % templates.len()];
        let mut event = template.clone();
        event.request_id = RequestId::new(&format!("{}-{i}", options.run))?;
        event.attribution.who.org = orgs[usize::try_from(i).unwrap_or(0) % orgs.len()].clone();
        event.event_time = Utc::now();
        count(&event);
        record(&recorder, event, &mut refusals).await?;

        if let Some(probes) = probes.as_mut()
            && Instant::now() >= next_probe
        {
            let mut event = templates[0].clone();
            event.request_id = RequestId::new(&format!("{}-probe-{probe_seq}", options.run))?;
            event.attribution.who.org = probes.org.clone();
            event.event_time = Utc::now();
            probe_seq += 1;
            count(&event);
            probes.sent.push(Instant::now());
            record(&recorder, event, &mut refusals).await?;
            probes.poll().await?;
            next_probe += Duration::from_millis(100);
        }
    }
    let recorded_in = start.elapsed();
    let counts = handle.shutdown().await;
    if let Some(probes) = probes.as_mut() {
        let waiting = Instant::now();
        while probes.lags.len() < probes.sent.len() && waiting.elapsed() < Duration::from_secs(120)
        {
            probes.poll().await?;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let elapsed = start.elapsed();
    let teams: serde_json::Map<String, serde_json::Value> = per_team
        .iter()
        .map(|(k, t)| (k.clone(), t.json()))
        .collect();
    let orgs: serde_json::Map<String, serde_json::Value> =
        per_org.iter().map(|(k, t)| (k.clone(), t.json())).collect();
    let mut line = serde_json::json!({
        "run": options.run,
        "events": overall.events,
        "unpriced": overall.unpriced,
        "cost": overall.cost.to_string(),
        "orgs": orgs,
        "teams": teams,
        "flushed_events": counts.flushed_events,
        "refusals": refusals,
        "flush_errors": counts.flush_errors,
        "duplicate_batches": counts.duplicate_batches,
        "record_millis": recorded_in.as_millis(),
        "events_per_second": u128::from(overall.events) * 1_000_000 / recorded_in.as_micros().max(1),
        "millis": elapsed.as_millis(),
    });
    if let Some(probes) = &probes {
        line["lag_samples"] = probes.lags.len().into();
        line["lag_missing"] = (probes.sent.len() - probes.lags.len()).into();
        line["lag_p50_ms"] =
            serde_json::Value::from(u64::try_from(probes.percentile(50)).unwrap_or(u64::MAX));
        line["lag_p99_ms"] =
            serde_json::Value::from(u64::try_from(probes.percentile(99)).unwrap_or(u64::MAX));
        line["lag_max_ms"] =
            serde_json::Value::from(u64::try_from(probes.percentile(100)).unwrap_or(u64::MAX));
    }
    println!("{line}");
    redis.quit().await;
    if counts.flushed_events != overall.events {
        return Err(format!(
            "{} events recorded, {} in Redis",
            overall.events, counts.flushed_events
        )
        .into());
    }
    Ok(())
}

/// Records `event`, offering it again while the buffer is full.
async fn record(recorder: &Recorder, event: SpendEvent, refusals: &mut u64) -> Result<(), Error> {
    let mut pending = event;
    loop {
        match recorder.record(pending) {
            Ok(()) => return Ok(()),
            Err(RecordError::BufferFull(back)) => {
                *refusals += 1;
                pending = *back;
                tokio::time::sleep(Duration::from_micros(200)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Per org and per team: requests, unpriced requests, cost.
type Counted = BTreeMap<String, (u64, u64, Decimal)>;

fn counted(section: &serde_json::Value) -> Result<Counted, Error> {
    let mut out = Counted::new();
    for (key, value) in section.as_object().ok_or("expected an object")? {
        let number = |field: &str| value[field].as_u64().ok_or(format!("{key}: {field}"));
        let cost = value["cost"].as_str().ok_or(format!("{key}: cost"))?;
        out.insert(
            key.clone(),
            (
                number("events")?,
                number("unpriced")?,
                Decimal::from_str_exact(cost)?,
            ),
        );
    }
    Ok(out)
}

/// What PostgreSQL holds, per org and per `org/team`.
async fn stored(store: &PgStore) -> Result<(Counted, Counted), Error> {
    let client = store.client().await?;
    let rows = client
        .query(
            "SELECT org, team, SUM(successes + failures)::BIGINT, SUM(unpriced)::BIGINT, SUM(cost) \
             FROM routero_daily_rollups GROUP BY org, team",
            &[],
        )
        .await?;
    let (mut orgs, mut teams) = (Counted::new(), Counted::new());
    for row in rows {
        let (org, team): (String, String) = (row.get(0), row.get(1));
        let requests = u64::try_from(row.get::<_, i64>(2))?;
        let unpriced = u64::try_from(row.get::<_, i64>(3))?;
        let cost: Decimal = row.get(4);
        let entry = orgs.entry(org.clone()).or_insert((0, 0, Decimal::ZERO));
        entry.0 += requests;
        entry.1 += unpriced;
        entry.2 += cost;
        teams.insert(format!("{org}/{team}"), (requests, unpriced, cost));
    }
    Ok((orgs, teams))
}

async fn check() -> Result<(), Error> {
    let mut args = std::env::args().skip(2);
    let path = args.next().ok_or("check EXPECTED.json")?;
    let mut wait = Duration::ZERO;
    let mut request_log = true;
    while let Some(flag) = args.next() {
        match flag.as_str() {
            "--wait" => wait = Duration::from_secs(args.next().ok_or("--wait SECONDS")?.parse()?),
            "--no-request-log" => request_log = false,
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    let text = std::fs::read_to_string(&path)?;
    let expected: serde_json::Value = serde_json::from_str(text.lines().last().ok_or("empty")?)?;
    let (want_orgs, want_teams) = (counted(&expected["orgs"])?, counted(&expected["teams"])?);
    let want_events = expected["events"].as_u64().ok_or("events")?;
    let run = expected["run"].as_str().ok_or("run")?.to_owned();

    let mut pg = PgConfig::new(
        std::env::var("ROUTERO_DATABASE_URL").map_err(|_| "set ROUTERO_DATABASE_URL")?,
    );
    pg.schema = std::env::var("ROUTERO_DB_SCHEMA").ok();
    let store = PgStore::connect(pg).await?;
    let started = Instant::now();
    let (orgs, teams) = loop {
        let (orgs, teams) = stored(&store).await?;
        let total: u64 = orgs.values().map(|o| o.0).sum();
        if total >= want_events || started.elapsed() >= wait {
            break (orgs, teams);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };

    let (mut lost, mut doubled) = (0u64, 0u64);
    let mut differences = Vec::new();
    for (what, want, got) in [("org", &want_orgs, &orgs), ("team", &want_teams, &teams)] {
        let keys: std::collections::BTreeSet<&String> = want.keys().chain(got.keys()).collect();
        for key in keys {
            let zero = (0, 0, Decimal::ZERO);
            let (w, g) = (
                want.get(key).unwrap_or(&zero),
                got.get(key).unwrap_or(&zero),
            );
            if what == "team" {
                lost += w.0.saturating_sub(g.0);
                doubled += g.0.saturating_sub(w.0);
            }
            if w != g {
                differences.push(serde_json::json!({
                    what: key,
                    "expected": {"events": w.0, "unpriced": w.1, "cost": w.2.to_string()},
                    "stored": {"events": g.0, "unpriced": g.1, "cost": g.2.to_string()},
                }));
            }
        }
    }
    let client = store.client().await?;
    let log = client
        .query_one(
            "SELECT COUNT(*), COUNT(DISTINCT request_id) FROM routero_spend_log WHERE request_id LIKE $1",
            &[&format!("{run}-%")],
        )
        .await?;
    let (log_rows, log_ids) = (
        u64::try_from(log.get::<_, i64>(0))?,
        u64::try_from(log.get::<_, i64>(1))?,
    );
    if request_log && (log_rows != want_events || log_ids != want_events) {
        differences.push(serde_json::json!({
            "request_log": {"expected": want_events, "rows": log_rows, "distinct_ids": log_ids}
        }));
    }
    let stored_cost: Decimal = orgs.values().map(|o| o.2).sum();
    let line = serde_json::json!({
        "events": want_events,
        "stored_events": orgs.values().map(|o| o.0).sum::<u64>(),
        "cost": expected["cost"],
        "stored_cost": stored_cost.to_string(),
        "request_log_rows": log_rows,
        "lost": lost,
        "doubled": doubled,
        "differences": differences,
    });
    println!("{line}");
    if differences.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{} differences, {lost} lost, {doubled} doubled",
            differences.len()
        )
        .into())
    }
}
