//! A month's chargeback exports, checked against the analytics.
//!
//! ```text
//! cargo run --example export -- [ORG] [YYYY-MM] [DIR]
//! ```
//!
//! Writes `DIR/chargeback-ORG-YYYY-MM.csv` and `DIR/focus-ORG-YYYY-MM.csv` (defaults:
//! `acme`, the current month, `target/export`) from the PostgreSQL database in
//! `ROUTERO_DATABASE_URL`, or from the in-memory store filled with the demo traffic
//! of the last two weeks. Each file is written a day at a time. It prints each file's
//! rows and total and exits non-zero unless both equal the month's total from the
//! daily-spend analytics to the last digit.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use chrono::{Datelike, Utc};
use routero::analytics;
use routero::attribution::OrgId;
use routero::export::{CsvExport, ExportFormat, ExportRequest};
use routero::invoice::Month;
use routero::port::{RollupFilter, SpendReader};
use routero::postgres::{PgConfig, PgStore};
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

    let reader: Arc<dyn SpendReader> = match std::env::var("ROUTERO_DATABASE_URL") {
        Ok(url) => {
            println!("exporting from PostgreSQL at ROUTERO_DATABASE_URL");
            Arc::new(PgStore::connect(PgConfig::new(url)).await?)
        }
        Err(_) => {
            println!("exporting from the in-memory store with two weeks of demo traffic");
            demo::store().await?
        }
    };

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
        let equal = summary.cost == expected;
        all_equal &= equal;
        println!(
            "{}: {} rows, {} requests ({} unpriced), cost {} — {} the analytics' {expected}",
            path.display(),
            summary.rows,
            summary.requests,
            summary.unpriced_requests,
            summary.cost,
            if equal { "equal to" } else { "NOT equal to" },
        );
    }
    Ok(all_equal)
}
