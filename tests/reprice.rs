//! `coworker reprice --dry-run` on real PostgreSQL: the report of a corrected rate
//! over logged requests, as JSON and CSV, and refusals with exit code 2.

mod common;

use common::{database_url, unique};
use routero::postgres::{PgConfig, PgStore};
use routero_core::conformance::{apply_step, sample_event};
use rust_decimal::Decimal;
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_reports_the_corrected_totals() {
    let Some(url) = database_url() else { return };
    let schema = unique("t_reprice");
    let mut config = PgConfig::new(&url);
    config.schema = Some(schema.clone());
    let store = PgStore::connect(config).await.unwrap();
    // gpt-4o requests recorded at 1.00 each; their usage priced at the corrected
    // rates (input 5, cache read 1.25, output 10 per million) is known exactly.
    let events: Vec<_> = (1..=4).map(|n| sample_event("acme", n, "1.00")).collect();
    let expected: Decimal = events
        .iter()
        .map(|e| {
            let u = e.usage.unwrap();
            (Decimal::from(u.input_tokens) * Decimal::from(5)
                + Decimal::from(u.cache_read_tokens) * Decimal::new(125, 2)
                + Decimal::from(u.output_tokens) * Decimal::from(10))
                / Decimal::from(1_000_000)
        })
        .sum();
    apply_step(&store, 1, &events).await;
    let prices = std::env::temp_dir().join(format!("{schema}.toml"));
    std::fs::write(
        &prices,
        "format = 1\nversion = \"fix-1\"\ncurrency = \"USD\"\n[[model]]\nprovider = \"openai\"\n\
         name = \"gpt-4o\"\ninput = \"5\"\ncache_read = \"1.25\"\noutput = \"10\"\n",
    )
    .unwrap();
    let prices = prices.display().to_string();
    let run = |extra: &[&str]| {
        common::coworker_command(
            &[&["reprice"], extra].concat(),
            &[
                ("ROUTERO_DATABASE_URL", &url),
                ("ROUTERO_DB_SCHEMA", &schema),
            ],
        )
    };
    let scope = [
        "--from",
        "2026-11-01",
        "--to",
        "2026-11-30",
        "--prices",
        &prices,
    ];
    let (code, out, err) = run(&[&["--dry-run"], &scope[..]].concat());
    assert_eq!(code, Some(0), "{err}");
    let report: Value = serde_json::from_str(&out).unwrap();
    let total = &report["total"];
    assert_eq!(total["requests"], 4);
    assert_eq!(total["changed"], 4);
    assert_eq!(
        Decimal::from_str_exact(total["old_total"].as_str().unwrap()).unwrap(),
        Decimal::from(4)
    );
    assert_eq!(
        Decimal::from_str_exact(total["new_total"].as_str().unwrap()).unwrap(),
        expected
    );
    assert!(
        report["price_version"]
            .as_str()
            .unwrap()
            .contains("+fix-1@")
    );

    let (code, csv, _) = run(&[
        &["--dry-run", "--csv", "--workspace", "acme-ws"],
        &scope[..],
    ]
    .concat());
    assert_eq!(code, Some(0));
    let mut lines = csv.lines();
    assert!(
        lines
            .next()
            .unwrap()
            .starts_with("workspace,provider,model,")
    );
    assert!(
        lines
            .next()
            .unwrap()
            .starts_with("acme-ws,openai,gpt-4o,4,4,0,0,0,4.00,")
    );
    assert!(lines.next().unwrap().starts_with("total,,,4,"));

    // Another workspace: nothing.
    let (_, out, _) = run(&[&["--dry-run", "--workspace", "globex-ws"], &scope[..]].concat());
    let report: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["total"]["requests"], 0);

    // Refusals: no --dry-run, a bad day, --to before --from.
    assert_eq!(run(&scope).0, Some(2));
    assert_eq!(
        run(&[
            "--dry-run",
            "--from",
            "2026-13-01",
            "--to",
            "2026-11-30",
            "--prices",
            &prices
        ])
        .0,
        Some(2)
    );
    assert_eq!(
        run(&[
            "--dry-run",
            "--from",
            "2026-11-30",
            "--to",
            "2026-11-01",
            "--prices",
            &prices
        ])
        .0,
        Some(2)
    );
    std::fs::remove_file(&prices).ok();
}
