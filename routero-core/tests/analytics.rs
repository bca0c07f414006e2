//! Analytics over the in-memory store, against hand-computed figures.

use chrono::{Duration, NaiveDate};
use routero_core::analytics::{self, Entity};
use routero_core::attribution::{BillingMode, OrgId, TeamId};
use routero_core::conformance::{apply_first_step, sample_day, sample_event};
use routero_core::memory::MemoryStore;
use routero_core::port::RollupFilter;
use routero_core::spend::SpendEvent;
use rust_decimal::Decimal;

fn d(text: &str) -> Decimal {
    Decimal::from_str_exact(text).unwrap()
}

async fn store_with(events: &[SpendEvent]) -> MemoryStore {
    let store = MemoryStore::new();
    apply_first_step(
        &store,
        events,
        sample_day().and_hms_opt(23, 0, 0).unwrap().and_utc(),
    )
    .await;
    store
}

/// Events on days 0, 0, 2 and 5 after the sample day; even sequence numbers are
/// managed, odd ones BYOK.
fn events() -> Vec<SpendEvent> {
    let mut out = Vec::new();
    for (seq, day, cost) in [
        (0u64, 0, "1.5"),
        (1, 0, "0.25"),
        (2, 2, "2"),
        (3, 5, "0.125"),
        (4, -3, "4"),
    ] {
        let mut e = sample_event("acme", seq, cost);
        e.event_time += Duration::days(day);
        out.push(e);
    }
    out.push(sample_event("other", 9, "100"));
    out
}

#[tokio::test]
async fn daily_spend_fills_every_day_and_splits_modes() {
    let store = store_with(&events()).await;
    let filter = RollupFilter::new(
        OrgId::new("acme").unwrap(),
        sample_day(),
        sample_day() + Duration::days(6),
    );
    let days = analytics::daily_spend(&store, &filter).await.unwrap();
    assert_eq!(days.len(), 7);
    assert_eq!(days[0].spend, d("1.75"));
    assert_eq!(days[0].managed_spend, d("1.5"));
    assert_eq!(days[0].byok_spend, d("0.25"));
    assert_eq!(days[0].metrics.api_requests, 2);
    assert_eq!(days[1].spend, Decimal::ZERO);
    assert_eq!(days[5].spend, d("0.125"));
    let total: Decimal = days.iter().map(|d| d.spend).sum();
    assert_eq!(total, d("3.875"), "another org's 100 never shows");
}

#[tokio::test]
async fn the_trend_compares_with_the_period_before() {
    let store = store_with(&events()).await;
    let filter = RollupFilter::new(
        OrgId::new("acme").unwrap(),
        sample_day(),
        sample_day() + Duration::days(5),
    );
    let trend = analytics::spend_trend(&store, &filter).await.unwrap();
    assert_eq!(trend.total, d("3.875"));
    assert_eq!(trend.previous_from, sample_day() - Duration::days(6));
    assert_eq!(trend.previous_total, d("4"));
    assert_eq!(
        (trend.days_with_spend, trend.previous_days_with_spend),
        (3, 1),
        "days 0, 2 and 5; day −3"
    );
    assert_eq!(trend.change, d("-0.125"));
    assert_eq!(
        trend.change_ratio,
        Some(d("-0.0312")),
        "-0.03125 rounds half to even"
    );
    let empty = RollupFilter::new(
        OrgId::new("acme").unwrap(),
        sample_day() + Duration::days(30),
        sample_day() + Duration::days(31),
    );
    assert_eq!(
        analytics::spend_trend(&store, &empty)
            .await
            .unwrap()
            .change_ratio,
        None
    );
}

#[tokio::test]
async fn the_overview_projects_the_month_at_its_pace() {
    let store = store_with(&events()).await;
    let filter = RollupFilter::new(OrgId::new("acme").unwrap(), sample_day(), sample_day());
    // The sample day is 2026-11-02; on 2026-11-07 the month has spent 1.5 + 0.25 + 2 + 0.125
    // (the event three days before the sample day is in October).
    let today = NaiveDate::from_ymd_opt(2026, 11, 7).unwrap();
    let overview = analytics::overview(&store, &filter, today).await.unwrap();
    assert_eq!(overview.month_to_date, d("3.875"));
    assert_eq!(overview.managed_month_to_date, d("3.5"));
    assert_eq!(overview.byok_month_to_date, d("0.375"));
    assert_eq!((overview.days_elapsed, overview.days_in_month), (7, 30));
    // 3.875 × 30 / 7 = 16.607142857… → 16.607143
    assert_eq!(overview.projected_month, d("16.607143"));
}

#[tokio::test]
async fn daily_activity_breaks_down_and_pages() {
    let store = store_with(&events()).await;
    let filter = RollupFilter::new(
        OrgId::new("acme").unwrap(),
        sample_day() - Duration::days(7),
        sample_day() + Duration::days(7),
    );
    let first = analytics::daily_activity(&store, &filter, Entity::Team, 1, 2)
        .await
        .unwrap();
    assert_eq!(
        (first.page, first.total_pages, first.has_more),
        (1, 2, true)
    );
    assert_eq!(first.results.len(), 2);
    assert_eq!(first.totals.spend, d("7.875"), "totals cover every page");
    let day = &first.results[1];
    assert_eq!(day.date, sample_day());
    assert_eq!(day.metrics.spend, d("1.75"));
    // sample_event: team = seq % 3, key = seq % 5.
    assert_eq!(day.breakdown.entities["team-0"].metrics.spend, d("1.5"));
    assert_eq!(
        day.breakdown.entities["team-1"].api_key_breakdown["key-1"].spend,
        d("0.25")
    );
    assert_eq!(day.breakdown.models["gpt-4o"].metrics.api_requests, 2);
    assert_eq!(day.breakdown.providers["openai"].metrics.spend, d("1.75"));
    let second = analytics::daily_activity(&store, &filter, Entity::Team, 2, 2)
        .await
        .unwrap();
    assert_eq!(second.results.len(), 2);
    assert!(!second.has_more);
    let mut narrowed = filter.clone();
    narrowed.teams = Some(vec![TeamId::new("team-2").unwrap()]);
    narrowed.billing_mode = Some(BillingMode::Managed);
    let team = analytics::daily_activity(&store, &narrowed, Entity::Team, 1, 10)
        .await
        .unwrap();
    assert_eq!(team.totals.spend, d("2"));
    let customers = analytics::daily_activity(&store, &filter, Entity::Customer, 1, 10)
        .await
        .unwrap();
    assert_eq!(
        customers.results[1].breakdown.entities.len(),
        2,
        "cust-0 and cust-1"
    );
}

#[tokio::test]
async fn filters_and_groupings_build_up() {
    use routero_core::attribution::TeamId;
    use routero_core::port::{GroupBy, SpendReader};
    let store = store_with(&events()).await;
    let filter = RollupFilter::new(
        OrgId::new("acme").unwrap(),
        sample_day(),
        sample_day() + Duration::days(5),
    )
    .teams([
        TeamId::new("team-0").unwrap(),
        TeamId::new("team-2").unwrap(),
    ])
    .currency(routero_core::Currency::USD)
    .grouped_by(GroupBy::none().team().billing_mode());
    assert!(filter.group_by.team && filter.group_by.billing_mode);
    assert!(!filter.group_by.model);
    let rows = store.rollups(&filter).await.unwrap();
    let teams: std::collections::BTreeSet<_> = rows
        .iter()
        .map(|r| r.key.team.as_ref().unwrap().as_str().to_owned())
        .collect();
    assert_eq!(
        teams.into_iter().collect::<Vec<_>>(),
        ["team-0", "team-2"],
        "team-1 filtered out"
    );
    assert!(
        rows.iter()
            .all(|r| r.key.billing_mode.is_some() && r.key.model.is_none())
    );
}
