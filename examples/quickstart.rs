//! A small gateway's day, end to end, on the embedded default: no servers.
//!
//! ```text
//! cargo run --example quickstart
//! ```
//!
//! Four hundred requests from two orgs (several workspaces, teams, keys, users and
//! customers, managed and bring-your-own-key) are answered with real provider
//! response shapes, JSON and streamed. Each response's usage is extracted (streams
//! arrive in random chunks, as off a socket), priced with the bundled table, and
//! recorded. A drainer moves the spend into the in-memory store while traffic flows.
//! The example then prints the spend per team and per model from the store's read
//! side, and checks that the drained total equals the sum of the per-request costs to
//! the last digit.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::Arc;

use chrono::{Duration, NaiveDate};
use routero::attribution::{BillingMode, OrgId};
use routero::drainer::{Drainer, DrainerConfig};
use routero::memory::{MemoryElector, MemoryQueue, MemoryStore};
use routero::port::{GroupBy, RollupFilter, SpendReader, SystemClock};
use routero::recorder::{Recorder, RecorderConfig};
use routero::spend::Pricing;
use rust_decimal::Decimal;

#[path = "demo/mod.rs"]
mod demo;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let queue = Arc::new(MemoryQueue::new(4));
    let elector = Arc::new(MemoryElector::new(Arc::new(SystemClock)));
    let store = Arc::new(MemoryStore::new());
    let (recorder, recorder_handle) = Recorder::spawn(queue.clone(), RecorderConfig::default());
    let drainer = Arc::new(Drainer::new(
        queue.clone(),
        elector.clone(),
        store.clone(),
        DrainerConfig::new("quickstart"),
    ));
    let background = drainer.clone().spawn();

    let day: NaiveDate = NaiveDate::from_ymd_opt(2026, 11, 27).unwrap_or_default();
    let start = day.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc();
    let mut sum_of_requests = Decimal::ZERO;
    let mut unpriced: BTreeMap<String, u64> = BTreeMap::new();
    for (i, event) in demo::traffic(start, 400, Duration::seconds(431))
        .into_iter()
        .enumerate()
    {
        match &event.pricing {
            Pricing::Priced { cost, .. } => sum_of_requests += *cost,
            Pricing::Unpriced { detail, .. } => *unpriced.entry(detail.clone()).or_default() += 1,
        }
        if let Err(e) = recorder.record(event) {
            eprintln!("quickstart: {e}");
            return ExitCode::FAILURE;
        }
        // Traffic arrives over time: let the recorder flush and the drainer drain.
        if i % 10 == 9 {
            tokio::time::sleep(std::time::Duration::from_millis(3)).await;
        }
    }

    // Graceful shutdown: flush the recorder, drain what is left, stop the drainer.
    let flushed = recorder_handle.shutdown().await;
    let running = background.stop().await;
    let last = match drainer.drain_all().await {
        Ok(stats) => stats,
        Err(e) => {
            eprintln!("quickstart: drain failed: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!(
        "recorded {} requests in {} batches; drained {} events while running and {} at shutdown\n",
        flushed.recorded, flushed.flushed_batches, running.events, last.events
    );

    let mut drained_total = Decimal::ZERO;
    for org in ["acme", "globex"] {
        let mut filter = RollupFilter::new(demo::id::<OrgId>(org), day, day + Duration::days(1));
        filter.group_by = GroupBy {
            team: true,
            billing_mode: true,
            ..GroupBy::default()
        };
        let by_team = match store.rollups(&filter).await {
            Ok(rows) => rows,
            Err(e) => {
                eprintln!("quickstart: {e}");
                return ExitCode::FAILURE;
            }
        };
        let mut teams: BTreeMap<String, (u64, u64, u64, Decimal, Decimal)> = BTreeMap::new();
        for row in &by_team {
            let team = row
                .key
                .team
                .as_ref()
                .map_or("(no team)".to_owned(), ToString::to_string);
            let entry = teams.entry(team).or_default();
            entry.0 += row.totals.requests();
            entry.1 += row.totals.prompt_tokens();
            entry.2 += row.totals.output_tokens;
            match row.key.billing_mode {
                Some(BillingMode::Byok) => entry.4 += row.totals.cost,
                _ => entry.3 += row.totals.cost,
            }
            drained_total += row.totals.cost;
        }
        println!("{org}: spend per team, {day} and the day after (USD)");
        println!(
            "  {:<12} {:>8} {:>12} {:>10} {:>16} {:>16}",
            "team", "requests", "prompt tok", "output tok", "managed", "byok (tracked)"
        );
        for (team, (requests, prompt, output, managed, byok)) in &teams {
            println!(
                "  {team:<12} {requests:>8} {prompt:>12} {output:>10} {:>16} {:>16}",
                managed.round_dp(6).normalize(),
                byok.round_dp(6).normalize()
            );
        }
        filter.group_by = GroupBy {
            provider: true,
            model: true,
            ..GroupBy::default()
        };
        let mut models: BTreeMap<String, (u64, u64, Decimal)> = BTreeMap::new();
        for row in store.rollups(&filter).await.unwrap_or_default() {
            let name = format!(
                "{}/{}",
                row.key.provider.map(|p| p.to_string()).unwrap_or_default(),
                row.key.model.unwrap_or_default()
            );
            let entry = models.entry(name).or_default();
            entry.0 += row.totals.requests();
            entry.1 += row.totals.unpriced;
            entry.2 += row.totals.cost;
        }
        println!("{org}: spend per model");
        println!(
            "  {:<56} {:>8} {:>9} {:>14}",
            "provider/model", "requests", "unpriced", "cost"
        );
        for (model, (requests, unpriced, cost)) in &models {
            println!(
                "  {model:<56} {requests:>8} {unpriced:>9} {:>14}",
                cost.round_dp(6).normalize()
            );
        }
        println!();
    }
    for (reason, count) in &unpriced {
        println!("unpriced, kept for repricing ({count}): {reason}");
    }
    println!("drained total (exact):      {}", drained_total.normalize());
    println!(
        "sum of per-request costs:   {}",
        sum_of_requests.normalize()
    );
    if drained_total == sum_of_requests && flushed.refused == 0 {
        println!("check: equal to the last digit");
        ExitCode::SUCCESS
    } else {
        eprintln!("check FAILED");
        ExitCode::FAILURE
    }
}
