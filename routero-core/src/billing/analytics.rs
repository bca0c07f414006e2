//! Spend analytics over the read port: daily spend, the spend trend, the month's
//! overview, and daily activity per team, user or customer (the shape LiteLLM's proxy
//! serves for `/{team,user,customer}/daily/activity`).
//!
//! Every function takes a [`RollupFilter`], so every result is scoped to one org (and
//! to the workspaces, teams and other filters the caller sets). Amounts are exact; the
//! only rounded figures are the projection and the trend ratio, each at a named scale
//! with a named rounding rule.
//!
//! **One currency per answer.** Rollups keep every currency apart, and no function
//! here adds two together: each answers in the filter's
//! [`currency`](RollupFilter::currency), or when it names none, in the one currency
//! the rows hold; rows in two or more currencies without a currency filter are
//! [`AnalyticsError::MixedCurrencies`]. Every answer says its currency (`None` when
//! nothing was priced).

use std::collections::BTreeMap;

use chrono::{Datelike, Duration, NaiveDate};
use rust_decimal::{Decimal, RoundingStrategy};
use serde::Serialize;

use crate::attribution::BillingMode;
use crate::money::Currency;
use crate::port::{BackendError, GroupBy, RollupFilter, RollupRow, SpendReader};
use crate::spend::RollupTotals;

/// The scale of [`Overview::projected_month`].
pub const PROJECTION_SCALE: u32 = 6;
/// The scale of [`SpendTrend::change_ratio`].
pub const RATIO_SCALE: u32 = 4;

/// Why an analytics query has no answer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AnalyticsError {
    /// The rows are in several currencies and the filter names none: adding them
    /// would mix money.
    #[error("the spend is in {}: choose one currency", list(.0))]
    MixedCurrencies(Vec<Currency>),
    /// The read failed.
    #[error(transparent)]
    Backend(#[from] BackendError),
}

fn list(currencies: &[Currency]) -> String {
    let codes: Vec<&str> = currencies.iter().map(Currency::code).collect();
    codes.join(" and ")
}

/// The one currency of `rows` (the filter's, when it names one); refuses two.
pub fn currency_of(
    filter: &RollupFilter,
    rows: &[RollupRow],
) -> Result<Option<Currency>, AnalyticsError> {
    if filter.currency.is_some() {
        return Ok(filter.currency);
    }
    let mut seen: Vec<Currency> = rows.iter().filter_map(|r| r.key.currency).collect();
    seen.sort_unstable();
    seen.dedup();
    match seen.as_slice() {
        [] => Ok(None),
        [one] => Ok(Some(*one)),
        _ => Err(AnalyticsError::MixedCurrencies(seen)),
    }
}

/// One day's spend.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DailySpend {
    /// The UTC day.
    pub date: NaiveDate,
    /// The currency of its amounts (`None`: nothing priced).
    pub currency: Option<Currency>,
    /// All spend, exact. Serialised once, as the metrics' `spend`, which equals it.
    #[serde(skip)]
    pub spend: Decimal,
    /// Managed-key spend (debited and invoiced).
    #[serde(with = "rust_decimal::serde::str")]
    pub managed_spend: Decimal,
    /// BYOK spend (tracked, not charged).
    #[serde(with = "rust_decimal::serde::str")]
    pub byok_spend: Decimal,
    /// The day's token and request sums.
    #[serde(flatten)]
    pub metrics: SpendMetrics,
}

/// Sums in the shape dashboards read (LiteLLM's `SpendMetrics`, with money as a
/// decimal string).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct SpendMetrics {
    /// Exact spend.
    #[serde(with = "rust_decimal::serde::str")]
    pub spend: Decimal,
    /// The whole prompt: uncached input, cache reads and cache writes.
    pub prompt_tokens: u64,
    /// Output tokens, reasoning included.
    pub completion_tokens: u64,
    /// Cache-read tokens.
    pub cache_read_input_tokens: u64,
    /// Cache-write tokens (5-minute and 1-hour).
    pub cache_creation_input_tokens: u64,
    /// Prompt plus completion.
    pub total_tokens: u64,
    /// Successful requests.
    pub successful_requests: u64,
    /// Failed requests.
    pub failed_requests: u64,
    /// All requests.
    pub api_requests: u64,
    /// Requests whose cost is unknown (not counted in `spend`).
    pub unpriced_requests: u64,
}

impl SpendMetrics {
    /// The metrics of a rollup's totals.
    pub fn of(t: &RollupTotals) -> SpendMetrics {
        let prompt = t.prompt_tokens();
        SpendMetrics {
            spend: t.cost,
            prompt_tokens: prompt,
            completion_tokens: t.output_tokens,
            cache_read_input_tokens: t.cache_read_tokens,
            cache_creation_input_tokens: t
                .cache_write_5m_tokens
                .saturating_add(t.cache_write_1h_tokens),
            total_tokens: prompt.saturating_add(t.output_tokens),
            successful_requests: t.successes,
            failed_requests: t.failures,
            api_requests: t.requests(),
            unpriced_requests: t.unpriced,
        }
    }

    /// Adds another's sums.
    pub fn add(&mut self, other: &SpendMetrics) {
        self.spend += other.spend;
        self.prompt_tokens = self.prompt_tokens.saturating_add(other.prompt_tokens);
        self.completion_tokens = self
            .completion_tokens
            .saturating_add(other.completion_tokens);
        self.cache_read_input_tokens = self
            .cache_read_input_tokens
            .saturating_add(other.cache_read_input_tokens);
        self.cache_creation_input_tokens = self
            .cache_creation_input_tokens
            .saturating_add(other.cache_creation_input_tokens);
        self.total_tokens = self.total_tokens.saturating_add(other.total_tokens);
        self.successful_requests = self
            .successful_requests
            .saturating_add(other.successful_requests);
        self.failed_requests = self.failed_requests.saturating_add(other.failed_requests);
        self.api_requests = self.api_requests.saturating_add(other.api_requests);
        self.unpriced_requests = self
            .unpriced_requests
            .saturating_add(other.unpriced_requests);
    }
}

fn days(from: NaiveDate, to: NaiveDate) -> impl Iterator<Item = NaiveDate> {
    from.iter_days().take_while(move |d| *d <= to)
}

/// The rows under a grouping, and their one currency.
async fn grouped(
    reader: &dyn SpendReader,
    filter: &RollupFilter,
    group_by: GroupBy,
) -> Result<(Vec<RollupRow>, Option<Currency>), AnalyticsError> {
    let mut filter = filter.clone();
    filter.group_by = group_by;
    let rows = reader.rollups(&filter).await?;
    let currency = currency_of(&filter, &rows)?;
    Ok((rows, currency))
}

/// Spend per day over the filter's range, every day present (zero when nothing was
/// spent), managed and BYOK apart.
pub async fn daily_spend(
    reader: &dyn SpendReader,
    filter: &RollupFilter,
) -> Result<Vec<DailySpend>, AnalyticsError> {
    let (rows, currency) = grouped(
        reader,
        filter,
        GroupBy {
            billing_mode: true,
            ..GroupBy::default()
        },
    )
    .await?;
    let mut by_day: BTreeMap<NaiveDate, DailySpend> = days(filter.from, filter.to)
        .map(|date| {
            (
                date,
                DailySpend {
                    date,
                    currency,
                    spend: Decimal::ZERO,
                    managed_spend: Decimal::ZERO,
                    byok_spend: Decimal::ZERO,
                    metrics: SpendMetrics::default(),
                },
            )
        })
        .collect();
    for row in rows {
        let Some(day) = by_day.get_mut(&row.key.day) else {
            continue;
        };
        let metrics = SpendMetrics::of(&row.totals);
        day.spend += metrics.spend;
        match row.key.billing_mode {
            Some(BillingMode::Byok) => day.byok_spend += metrics.spend,
            _ => day.managed_spend += metrics.spend,
        }
        day.metrics.add(&metrics);
    }
    Ok(by_day.into_values().collect())
}

/// Spend over a range beside the period of the same length just before it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SpendTrend {
    /// The currency of its amounts (`None`: nothing priced in either period).
    pub currency: Option<Currency>,
    /// The range's days.
    pub days: Vec<DailySpend>,
    /// The range's total.
    #[serde(with = "rust_decimal::serde::str")]
    pub total: Decimal,
    /// The previous period's first day.
    pub previous_from: NaiveDate,
    /// The previous period's last day.
    pub previous_to: NaiveDate,
    /// The previous period's total.
    #[serde(with = "rust_decimal::serde::str")]
    pub previous_total: Decimal,
    /// How many days of the range had spend.
    pub days_with_spend: u32,
    /// How many days of the previous period had spend: a previous period with far
    /// fewer than the range (data that starts inside it) is no base for a ratio.
    pub previous_days_with_spend: u32,
    /// `total − previous_total`, exact.
    #[serde(with = "rust_decimal::serde::str")]
    pub change: Decimal,
    /// `change / previous_total`, rounded half to even at [`RATIO_SCALE`] places;
    /// `None` when the previous period spent nothing.
    #[serde(with = "rust_decimal::serde::str_option")]
    pub change_ratio: Option<Decimal>,
}

/// The trend of a range.
pub async fn spend_trend(
    reader: &dyn SpendReader,
    filter: &RollupFilter,
) -> Result<SpendTrend, AnalyticsError> {
    let days_in_range = (filter.to - filter.from).num_days() + 1;
    let previous_to = filter.from - Duration::days(1);
    let previous_from = filter.from - Duration::days(days_in_range);
    let current = daily_spend(reader, filter).await?;
    // Both periods in one currency: the range's, unless only the previous one spent.
    let mut filter = filter.clone();
    filter.currency = filter
        .currency
        .or_else(|| current.first().and_then(|d| d.currency));
    let mut previous_filter = filter.clone();
    previous_filter.from = previous_from;
    previous_filter.to = previous_to;
    let previous_days = daily_spend(reader, &previous_filter).await?;
    let currency = filter
        .currency
        .or_else(|| previous_days.first().and_then(|d| d.currency));
    let previous: Decimal = previous_days.iter().map(|d| d.spend).sum();
    let active = |days: &[DailySpend]| {
        u32::try_from(days.iter().filter(|d| !d.spend.is_zero()).count()).unwrap_or(u32::MAX)
    };
    let total: Decimal = current.iter().map(|d| d.spend).sum();
    let change = total - previous;
    let change_ratio = (!previous.is_zero()).then(|| {
        change
            .checked_div(previous)
            .unwrap_or_default()
            .round_dp_with_strategy(RATIO_SCALE, RoundingStrategy::MidpointNearestEven)
    });
    Ok(SpendTrend {
        currency,
        days_with_spend: active(&current),
        previous_days_with_spend: active(&previous_days),
        days: current,
        total,
        previous_from,
        previous_to,
        previous_total: previous,
        change,
        change_ratio,
    })
}

/// The current month at a glance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Overview {
    /// The currency of its amounts (`None`: nothing priced this month).
    pub currency: Option<Currency>,
    /// The day the overview is for.
    pub today: NaiveDate,
    /// The month's first day.
    pub month_start: NaiveDate,
    /// Spend from the month's first day through `today`, exact.
    #[serde(with = "rust_decimal::serde::str")]
    pub month_to_date: Decimal,
    /// Of it, managed-key spend.
    #[serde(with = "rust_decimal::serde::str")]
    pub managed_month_to_date: Decimal,
    /// Of it, BYOK spend.
    #[serde(with = "rust_decimal::serde::str")]
    pub byok_month_to_date: Decimal,
    /// `month_to_date × days_in_month / days_elapsed`, rounded half to even at
    /// [`PROJECTION_SCALE`] places: the month's spend if the pace holds.
    #[serde(with = "rust_decimal::serde::str")]
    pub projected_month: Decimal,
    /// Days of the month through today.
    pub days_elapsed: u32,
    /// Days in the month.
    pub days_in_month: u32,
}

/// The overview of `today`'s month under a filter (its dates are replaced).
pub async fn overview(
    reader: &dyn SpendReader,
    filter: &RollupFilter,
    today: NaiveDate,
) -> Result<Overview, AnalyticsError> {
    let month_start = today.with_day(1).unwrap_or(today);
    let next_month = if today.month() == 12 {
        NaiveDate::from_ymd_opt(today.year() + 1, 1, 1)
    } else {
        NaiveDate::from_ymd_opt(today.year(), today.month() + 1, 1)
    }
    .unwrap_or(today);
    let days_in_month = u32::try_from((next_month - month_start).num_days()).unwrap_or(30);
    let days_elapsed = today.day();
    let mut month = filter.clone();
    month.from = month_start;
    month.to = today;
    let days = daily_spend(reader, &month).await?;
    let managed: Decimal = days.iter().map(|d| d.managed_spend).sum();
    let byok: Decimal = days.iter().map(|d| d.byok_spend).sum();
    let to_date = managed + byok;
    let projected = (to_date * Decimal::from(days_in_month))
        .checked_div(Decimal::from(days_elapsed.max(1)))
        .unwrap_or_default()
        .round_dp_with_strategy(PROJECTION_SCALE, RoundingStrategy::MidpointNearestEven);
    Ok(Overview {
        currency: days.first().and_then(|d| d.currency),
        today,
        month_start,
        month_to_date: to_date,
        managed_month_to_date: managed,
        byok_month_to_date: byok,
        projected_month: projected,
        days_elapsed,
        days_in_month,
    })
}

/// Whose daily activity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entity {
    /// Per team.
    Team,
    /// Per user.
    User,
    /// Per end customer.
    Customer,
}

/// A breakdown entry: metrics and, where it applies, the API keys under it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct BreakdownEntry {
    /// The sums.
    pub metrics: SpendMetrics,
    /// The same sums per API key.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub api_key_breakdown: BTreeMap<String, SpendMetrics>,
}

/// A day's breakdowns.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct Breakdown {
    /// Per model, with its API keys.
    pub models: BTreeMap<String, BreakdownEntry>,
    /// Per provider.
    pub providers: BTreeMap<String, BreakdownEntry>,
    /// Per API key.
    pub api_keys: BTreeMap<String, BreakdownEntry>,
    /// Per team, user or customer, with its API keys.
    pub entities: BTreeMap<String, BreakdownEntry>,
}

/// One day of activity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DayActivity {
    /// The UTC day.
    pub date: NaiveDate,
    /// The day's sums.
    pub metrics: SpendMetrics,
    /// The day's breakdowns.
    pub breakdown: Breakdown,
}

/// A page of daily activity, and the totals of every page.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DailyActivity {
    /// The currency of its amounts (`None`: nothing priced).
    pub currency: Option<Currency>,
    /// The page's days, oldest first.
    pub results: Vec<DayActivity>,
    /// The totals over the whole range (all pages).
    pub totals: SpendMetrics,
    /// This page, from 1.
    pub page: u32,
    /// How many pages.
    pub total_pages: u32,
    /// Whether pages follow this one.
    pub has_more: bool,
}

/// The key an entity's breakdown uses for a request that has none (a key with no team).
pub const NO_ENTITY: &str = "";

/// Daily activity per `entity` under a filter, one page of days.
pub async fn daily_activity(
    reader: &dyn SpendReader,
    filter: &RollupFilter,
    entity: Entity,
    page: u32,
    page_size: u32,
) -> Result<DailyActivity, AnalyticsError> {
    let (rows, currency) = grouped(
        reader,
        filter,
        GroupBy {
            team: entity == Entity::Team,
            user: entity == Entity::User,
            customer: entity == Entity::Customer,
            api_key: true,
            provider: true,
            model: true,
            ..GroupBy::default()
        },
    )
    .await?;
    let mut by_day: BTreeMap<NaiveDate, DayActivity> = BTreeMap::new();
    let mut totals = SpendMetrics::default();
    for row in rows {
        let metrics = SpendMetrics::of(&row.totals);
        totals.add(&metrics);
        let day = by_day.entry(row.key.day).or_insert_with(|| DayActivity {
            date: row.key.day,
            metrics: SpendMetrics::default(),
            breakdown: Breakdown::default(),
        });
        day.metrics.add(&metrics);
        let key = row
            .key
            .api_key
            .as_ref()
            .map_or(NO_ENTITY, |k| k.as_str())
            .to_owned();
        let model = row.key.model.clone().unwrap_or_default();
        let provider = row
            .key
            .provider
            .as_ref()
            .map(|p| p.as_str().to_owned())
            .unwrap_or_default();
        let who = match entity {
            Entity::Team => row.key.team.as_ref().map(|t| t.as_str()),
            Entity::User => row.key.user.as_ref().map(|u| u.as_str()),
            Entity::Customer => row.key.customer.as_ref().map(|c| c.as_str()),
        }
        .unwrap_or(NO_ENTITY)
        .to_owned();
        let b = &mut day.breakdown;
        let model_entry = b.models.entry(model).or_default();
        model_entry.metrics.add(&metrics);
        model_entry
            .api_key_breakdown
            .entry(key.clone())
            .or_default()
            .add(&metrics);
        b.providers
            .entry(provider)
            .or_default()
            .metrics
            .add(&metrics);
        b.api_keys
            .entry(key.clone())
            .or_default()
            .metrics
            .add(&metrics);
        let entity_entry = b.entities.entry(who).or_default();
        entity_entry.metrics.add(&metrics);
        entity_entry
            .api_key_breakdown
            .entry(key)
            .or_default()
            .add(&metrics);
    }
    let page_size = page_size.max(1);
    let page = page.max(1);
    let count = u32::try_from(by_day.len()).unwrap_or(u32::MAX);
    let total_pages = count.div_ceil(page_size).max(1);
    let skip = usize::try_from((page - 1).saturating_mul(page_size)).unwrap_or(usize::MAX);
    let results: Vec<DayActivity> = by_day
        .into_values()
        .skip(skip)
        .take(usize::try_from(page_size).unwrap_or(usize::MAX))
        .collect();
    Ok(DailyActivity {
        currency,
        results,
        totals,
        page,
        total_pages,
        has_more: page < total_pages,
    })
}
