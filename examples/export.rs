//! A month's chargeback exports and one warehouse sync, checked against the analytics.
//!
//! ```text
//! cargo run --example export -- [ORG] [YYYY-MM] [DIR]
//! ```
//!
//! From the PostgreSQL database in `ROUTERO_DATABASE_URL`, or from the in-memory
//! store filled with the demo traffic of the last two weeks (defaults: `acme`, the
//! current month, `target/export`):
//!
//! - writes `DIR/chargeback-ORG-YYYY-MM.csv` and `DIR/focus-ORG-YYYY-MM.csv`, a day at
//!   a time;
//! - runs the warehouse sync of the current hour into `DIR/warehouse/` (Parquet and
//!   NDJSON of the rollups and the request log), and writes the BigQuery schema files
//!   and Snowflake tables beside it in `DIR/warehouse-schema/`;
//! - reads every Parquet rollup file under `DIR/warehouse/` back, keeps the newest
//!   version of each rollup, and totals the org's month.
//!
//! It prints each total and exits non-zero unless all three equal the month's total
//! from the daily-spend analytics to the last digit.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use chrono::{Datelike, Utc};
use routero::analytics;
use routero::attribution::OrgId;
use routero::export::{CsvExport, ExportFormat, ExportRequest};
use routero::invoice::Month;
use routero::port::{RollupFilter, SpendReader};
use routero::postgres::{PgConfig, PgStore};
use routero::warehouse::{Dataset, LocalDir, WarehouseSource, WarehouseSync};
use rust_decimal::Decimal;

#[path = "demo/mod.rs"]
mod demo;

type Error = Box<dyn std::error::Error + Send + Sync>;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    match run().await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("export: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<bool, Error> {
    let mut args = std::env::args().skip(1);
    let org: OrgId = args.next().unwrap_or_else(|| "acme".to_owned()).parse()?;
    let month = match args.next() {
        Some(text) => Month::parse(&text).ok_or(format!("{text}: expected YYYY-MM"))?,
        None => Month::of(Utc::now().date_naive()),
    };
    let dir = PathBuf::from(args.next().unwrap_or_else(|| "target/export".to_owned()));
    std::fs::create_dir_all(&dir)?;

    match std::env::var("ROUTERO_DATABASE_URL") {
        Ok(url) => {
            println!("exporting from PostgreSQL at ROUTERO_DATABASE_URL");
            export(
                Arc::new(PgStore::connect(PgConfig::new(url)).await?),
                org,
                month,
                &dir,
            )
            .await
        }
        Err(_) => {
            println!("exporting from the in-memory store with two weeks of demo traffic");
            export(demo::store().await?, org, month, &dir).await
        }
    }
}

async fn export<S: SpendReader + WarehouseSource>(
    store: Arc<S>,
    org: OrgId,
    month: Month,
    dir: &Path,
) -> Result<bool, Error> {
    let reader = store.clone();
    let first = month.first_day().ok_or("month out of range")?;
    let last = month
        .next()
        .first_day()
        .and_then(|d| d.pred_opt())
        .ok_or("month out of range")?;
    let expected: Decimal =
        analytics::daily_spend(&*reader, &RollupFilter::new(org.clone(), first, last))
            .await?
            .iter()
            .map(|d| d.spend)
            .sum();

    let mut all_equal = true;
    for (format, name) in [
        (ExportFormat::Chargeback, "chargeback"),
        (ExportFormat::Focus, "focus"),
    ] {
        let path = dir.join(format!(
            "{name}-{org}-{}-{:02}.csv",
            first.year(),
            first.month()
        ));
        let file = std::io::BufWriter::new(std::fs::File::create(&path)?);
        let request = ExportRequest {
            org: org.clone(),
            workspaces: None,
            teams: None,
            month,
            format,
            invoice_issuer: "Routero demo".to_owned(),
        };
        let summary = CsvExport::new(reader.clone(), request)?
            .write_to(file)
            .await?;
        let cost = summary.cost(routero::Currency::USD);
        let equal = cost == expected && summary.costs.len() <= 1;
        all_equal &= equal;
        println!(
            "{}: {} rows, {} requests ({} unpriced), cost {} — {} the analytics' {expected}",
            path.display(),
            summary.rows,
            summary.requests,
            summary.unpriced_requests,
            cost,
            if equal { "equal to" } else { "NOT equal to" },
        );
    }

    // One warehouse sync: the current hour's run, after any a crash left unfinished.
    let sink = Arc::new(LocalDir::new(dir));
    let report = WarehouseSync::new(store, sink, "warehouse")?
        .sync(Utc::now())
        .await?;
    for run in &report.runs {
        println!(
            "warehouse run {} ({}{}): {} rollup rows, {} request-log rows, versions [{}, {})",
            run.run.run,
            run.run.hour.format("%Y-%m-%d %H:00"),
            if run.resumed {
                ", finished after a crash"
            } else {
                ""
            },
            run.rows.rollups,
            run.rows.log,
            run.run.from_version,
            run.run.to_version,
        );
        for object in &run.objects {
            println!("  {}", dir.join(object).display());
        }
        println!("  manifest {}", dir.join(&run.manifest).display());
    }
    if let Some(done) = &report.already_done {
        println!(
            "warehouse: this hour was exported by run {} already",
            done.run
        );
    }
    let schema_dir = dir.join("warehouse-schema");
    std::fs::create_dir_all(&schema_dir)?;
    for dataset in Dataset::ALL {
        std::fs::write(
            schema_dir.join(format!("{dataset}.bigquery.json")),
            dataset.bigquery_schema(),
        )?;
        std::fs::write(
            schema_dir.join(format!("{dataset}.snowflake.sql")),
            dataset.snowflake_table(),
        )?;
    }

    let mut rows = Vec::new();
    let mut files = 0;
    for path in files_under(&dir.join("warehouse").join("rollups"), "parquet")? {
        files += 1;
        rows.extend(routero::warehouse::read_parquet(std::fs::read(&path)?)?);
    }
    let newest = routero::warehouse::newest_rollups(rows);
    let month_prefix = format!("{}-{:02}-", first.year(), first.month());
    let mut synced = Decimal::ZERO;
    for row in newest.values() {
        let text = |c: &str| row.get(c).and_then(|v| v.as_str()).unwrap_or("");
        if text("org") == org.as_str() && text("day").starts_with(&month_prefix) {
            synced += Decimal::from_str_exact(text("cost"))?;
        }
    }
    let equal = synced == expected;
    all_equal &= equal;
    println!(
        "{}: {files} Parquet rollup files, {} rollups, {org} {month_prefix}.. cost {synced} — {} the analytics' {expected}",
        dir.join("warehouse").display(),
        newest.len(),
        if equal { "equal to" } else { "NOT equal to" },
    );
    Ok(all_equal)
}

/// Every file under `dir` ending in `.{extension}`, at any depth.
fn files_under(dir: &Path, extension: &str) -> std::io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    if !dir.exists() {
        return Ok(files);
    }
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            files.extend(files_under(&path, extension)?);
        } else if path.extension().is_some_and(|e| e == extension) {
            files.push(path);
        }
    }
    Ok(files)
}
