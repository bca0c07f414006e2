//! The warehouse sync as a scheduled job: two schedulers tick through an hour and
//! the next; each hour's run is exported once, by one of them.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use routero_core::conformance::{a_month_of_events, apply_step};
use routero_core::memory::{ManualClock, MemoryElector, MemoryStore};
use routero_core::schedule::{
    Job, JobRuns, MemoryJobRuns, RunFilter, RunState, Scheduler, SchedulerConfig,
};
use routero_warehouse::{MemorySink, WarehouseSync};

#[tokio::test]
async fn each_hour_is_exported_once_whoever_ticks() {
    let start: DateTime<Utc> = DateTime::parse_from_rfc3339("2026-12-01T10:00:00Z")
        .unwrap()
        .to_utc();
    let clock = Arc::new(ManualClock::new(start));
    let elector = Arc::new(MemoryElector::new(clock.clone()));
    let runs = Arc::new(MemoryJobRuns::new());
    let store = Arc::new(MemoryStore::new());
    let sink = Arc::new(MemorySink::new());
    let events = a_month_of_events();
    let (first, second) = events.split_at(events.len() / 2);
    apply_step(&*store, 1, first).await;
    let scheduler = |holder: &str| {
        let sync = WarehouseSync::new(store.clone(), sink.clone(), "warehouse").unwrap();
        Scheduler::new(
            elector.clone(),
            runs.clone(),
            clock.clone(),
            vec![Arc::new(sync) as Arc<dyn Job>],
            SchedulerConfig::new(holder),
        )
        .unwrap()
    };
    let (one, two) = (scheduler("one"), scheduler("two"));
    assert_eq!(one.jobs(), ["warehouse-sync/warehouse"]);
    for _ in 0..3 {
        one.tick().await;
        two.tick().await;
        clock.advance(Duration::from_secs(600));
    }
    apply_step(&*store, 2, second).await;
    clock.advance(Duration::from_secs(1800)); // 11:00
    for _ in 0..2 {
        two.tick().await;
        one.tick().await;
    }
    let done = runs
        .runs(&RunFilter {
            state: Some(RunState::Done),
            ..RunFilter::default()
        })
        .await
        .unwrap();
    let mut periods: Vec<&str> = done.iter().map(|r| r.period.as_str()).collect();
    periods.sort_unstable();
    assert_eq!(periods, ["2026-12-01T10", "2026-12-01T11"]);
    assert!(done.iter().all(|r| r.attempts == 1), "{done:?}");
    let manifests: Vec<String> = sink
        .objects()
        .into_keys()
        .filter(|k| k.starts_with("warehouse/_runs/"))
        .collect();
    assert_eq!(
        manifests,
        [
            "warehouse/_runs/run-0000000001.json",
            "warehouse/_runs/run-0000000002.json"
        ]
    );
}
