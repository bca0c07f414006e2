//! How fast the drain step writes rollups into PostgreSQL, beside a plain `UNNEST`
//! upsert of the same rows in the same run.
//!
//! ```text
//! ROUTERO_DATABASE_URL=postgres://routero@127.0.0.1/routero cargo run --release --example pg-apply -- [ROWS] [PER_STEP]
//! ```
//!
//! Writes ROWS distinct rollup rows (default 200,000) in steps of PER_STEP rows
//! (default 1,000), one client, twice: through `PgStore::apply` (the whole drain
//! transaction: lock, checks, upsert, watermark) and through the bare upsert statement
//! alone, each into a fresh schema. Prints one JSON line with both rates and their
//! ratio. The spend log is off: this measures the rollups.

use std::process::ExitCode;
use std::time::Instant;

use routero::Provider;
use routero::attribution::{Attribution, BillingMode, OrgId, TeamId, WorkspaceId};
use routero::port::{DrainApply, FencingToken, SpendStore};
use routero::postgres::{PgConfig, PgStore};
use routero::spend::{QueuePosition, RollupKey, RollupTotals, Rollups, ShardId};
use rust_decimal::Decimal;

fn rows(count: usize) -> Vec<(RollupKey, RollupTotals)> {
    let day = chrono::NaiveDate::from_ymd_opt(2026, 11, 2).unwrap_or_default();
    (0..count)
        .map(|i| {
            let a = Attribution::new(
                OrgId::new(&format!("org-{}", i % 50)).unwrap_or_else(|e| panic!("{e}")),
                WorkspaceId::new("ws").unwrap_or_else(|e| panic!("{e}")),
            )
            .with_team(TeamId::new(&format!("team-{i}")).unwrap_or_else(|e| panic!("{e}")));
            let key = RollupKey {
                day,
                who: a.who,
                provider: Provider::OpenAi,
                model: "gpt-4o".to_owned(),
                billing_mode: BillingMode::Managed,
                currency: Some(routero::Currency::USD),
            };
            let totals = RollupTotals {
                input_tokens: 1_000,
                output_tokens: 200,
                successes: 1,
                cost: Decimal::new(12_345, 7),
                ..RollupTotals::default()
            };
            (key, totals)
        })
        .collect()
}

async fn connect(url: &str, schema: &str) -> Result<PgStore, String> {
    let mut config = PgConfig::new(url);
    config.schema = Some(schema.to_owned());
    config.spend_log = false;
    config.pool_size = 1;
    PgStore::connect(config).await.map_err(|e| e.to_string())
}

#[tokio::main]
async fn main() -> ExitCode {
    let Ok(url) = std::env::var("ROUTERO_DATABASE_URL") else {
        eprintln!("pg-apply: set ROUTERO_DATABASE_URL");
        return ExitCode::from(2);
    };
    let mut args = std::env::args().skip(1);
    let total: usize = args.next().and_then(|n| n.parse().ok()).unwrap_or(200_000);
    let per_step: usize = args
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1_000)
        .max(1);
    let steps: Vec<Rollups> = rows(total)
        .chunks(per_step)
        .map(|chunk| chunk.iter().cloned().collect())
        .collect();
    let pid = std::process::id();

    // The drain step.
    let store = match connect(&url, &format!("bench_apply_{pid}")).await {
        Ok(store) => store,
        Err(e) => {
            eprintln!("pg-apply: {e}");
            return ExitCode::FAILURE;
        }
    };
    let start = Instant::now();
    let mut watermark = None;
    for (i, rollups) in steps.iter().enumerate() {
        let through = QueuePosition::new(u64::try_from(i).unwrap_or(0) + 1, 0);
        let applied = store
            .apply(DrainApply {
                shard: ShardId(0),
                token: FencingToken(1),
                expected: watermark,
                through,
                rollups,
                events: &[],
                at: chrono::Utc::now(),
            })
            .await;
        if let Err(e) = applied {
            eprintln!("pg-apply: {e}");
            return ExitCode::FAILURE;
        }
        watermark = Some(through);
    }
    let apply_micros = start.elapsed().as_micros().max(1);

    // The same rows through the bare upsert.
    let bare = match connect(&url, &format!("bench_bare_{pid}")).await {
        Ok(store) => store,
        Err(e) => {
            eprintln!("pg-apply: {e}");
            return ExitCode::FAILURE;
        }
    };
    let Ok(client) = bare.client().await else {
        return ExitCode::FAILURE;
    };
    let Ok(statement) = client
        .prepare(include_str!("../routero-postgres/sql/upsert_rollups.sql"))
        .await
    else {
        return ExitCode::FAILURE;
    };
    let start = Instant::now();
    for rollups in &steps {
        let mut day = Vec::new();
        let mut text: [Vec<String>; 10] = Default::default();
        let mut counts: [Vec<i64>; 10] = Default::default();
        let mut cost = Vec::new();
        for (key, totals) in rollups.iter() {
            day.push(key.day);
            let dims = [
                key.who.org.to_string(),
                key.who.workspace.to_string(),
                key.who
                    .team
                    .as_ref()
                    .map(ToString::to_string)
                    .unwrap_or_default(),
                String::new(),
                String::new(),
                String::new(),
                key.provider.to_string(),
                key.model.clone(),
                key.billing_mode.to_string(),
                key.currency
                    .map(|c| c.code().to_owned())
                    .unwrap_or_default(),
            ];
            for (column, value) in text.iter_mut().zip(dims) {
                column.push(value);
            }
            let sums = [
                totals.input_tokens,
                totals.cache_read_tokens,
                totals.cache_write_5m_tokens,
                totals.cache_write_1h_tokens,
                totals.output_tokens,
                totals.reasoning_tokens,
                totals.web_search_requests,
                totals.successes,
                totals.failures,
                totals.unpriced,
            ];
            for (column, value) in counts.iter_mut().zip(sums) {
                column.push(i64::try_from(value).unwrap_or(i64::MAX));
            }
            cost.push(totals.cost);
        }
        let mut params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = vec![&day];
        for column in &text {
            params.push(column);
        }
        for column in &counts {
            params.push(column);
        }
        params.push(&cost);
        if let Err(e) = client.execute(&statement, &params).await {
            eprintln!("pg-apply: {e}");
            return ExitCode::FAILURE;
        }
    }
    let bare_micros = start.elapsed().as_micros().max(1);
    let rate = |micros: u128| u128::try_from(total).unwrap_or(0) * 1_000_000 / micros;
    println!(
        "{{\"rows\":{total},\"rows_per_step\":{per_step},\"apply_rows_per_second\":{},\"plain_upsert_rows_per_second\":{},\"ratio_percent\":{}}}",
        rate(apply_micros),
        rate(bare_micros),
        bare_micros * 100 / apply_micros
    );
    let _ = client
        .batch_execute(&format!(
            "DROP SCHEMA bench_apply_{pid} CASCADE; DROP SCHEMA bench_bare_{pid} CASCADE"
        ))
        .await;
    ExitCode::SUCCESS
}
