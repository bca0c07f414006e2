//! `coworker reprice` on real PostgreSQL: the dry run's report of a corrected rate
//! over logged requests, as JSON and CSV, and refusals with exit code 2; a repricing
//! applied, killed (SIGKILL) midway and run again, applying each correction once.

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

    // Refusals: neither --dry-run nor --apply, a bad day, --to before --from, --apply
    // without a reason.
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
    assert_eq!(run(&[&["--apply"], &scope[..]].concat()).0, Some(2));
    std::fs::remove_file(&prices).ok();
}

/// 6,000 logged requests and one of a model priced only now, repriced a page of 100
/// at a time; the first coworker is
/// killed (SIGKILL) once some pages are applied, the same command run again finishes
/// it: every request corrected once, rollups and wallet moved by the exact delta,
/// the logged costs untouched; a third run changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repricing_killed_midway_finishes_once() {
    use routero_core::wallet::Wallets;
    let Some(url) = database_url() else { return };
    let schema = unique("t_repkill");
    let mut config = PgConfig::new(&url);
    config.schema = Some(schema.clone());
    let store = PgStore::connect(config).await.unwrap();
    const N: u64 = 6_000;
    let mut recorded = Decimal::ZERO;
    let mut expected = Decimal::ZERO;
    let mut managed_delta = Decimal::ZERO;
    let mut events = Vec::new();
    for n in 1..=N {
        let mut e = sample_event("acme", n, "0.001");
        e.event_time += chrono::Duration::seconds(i64::try_from(n).unwrap());
        let u = e.usage.unwrap();
        let new = (Decimal::from(u.input_tokens) * Decimal::from(5)
            + Decimal::from(u.cache_read_tokens) * Decimal::new(125, 2)
            + Decimal::from(u.output_tokens) * Decimal::from(10))
            / Decimal::from(1_000_000);
        recorded += Decimal::new(1, 3);
        expected += new;
        if e.billing_mode == routero::attribution::BillingMode::Managed {
            managed_delta += new - Decimal::new(1, 3);
        }
        events.push(e);
    }
    let workspace = routero::attribution::WorkspaceId::new("acme-ws").unwrap();
    store
        .top_up(
            &workspace,
            Decimal::from(100),
            routero::Currency::USD,
            "pay",
            chrono::Utc::now(),
        )
        .await
        .unwrap();
    // One request of a model without a price then: priced now, 1,000 input and 100
    // output tokens at 2 and 8 per million.
    let mut custom = sample_event("acme", N + 1, "0");
    custom.model = "acme-custom-1".to_owned();
    custom.usage = Some(routero::Usage::tokens(1_000, 100));
    custom.billing_mode = routero::attribution::BillingMode::Byok;
    custom.pricing = routero::spend::Pricing::Unpriced {
        reason: routero::spend::UnpricedReason::UnknownModel,
        detail: "unknown model".to_owned(),
    };
    expected += Decimal::new(28, 4);
    events.push(custom);
    for (step, chunk) in events.chunks(1_000).enumerate() {
        apply_step(&store, u64::try_from(step).unwrap() + 1, chunk).await;
    }
    let balance = || async {
        store
            .balance(&workspace, chrono::Utc::now())
            .await
            .unwrap()
            .balance
    };
    let before = balance().await;
    let prices = std::env::temp_dir().join(format!("{schema}.toml"));
    std::fs::write(
        &prices,
        "format = 1\nversion = \"fix-1\"\ncurrency = \"USD\"\n[[model]]\nprovider = \"openai\"\n\
         name = \"gpt-4o\"\ninput = \"5\"\ncache_read = \"1.25\"\noutput = \"10\"\n\
         [[model]]\nprovider = \"openai\"\nname = \"acme-custom-1\"\ninput = \"2\"\noutput = \"8\"\n",
    )
    .unwrap();
    let prices = prices.display().to_string();
    let args = [
        "reprice",
        "--apply",
        "--reason",
        "gpt-4o input at half price",
        "--actor",
        "ops@acme",
        "--from",
        "2026-11-01",
        "--to",
        "2026-11-30",
        "--org",
        "acme",
        "--prices",
        &prices,
        "--page",
        "100",
    ];
    let env = [
        ("ROUTERO_DATABASE_URL", url.as_str()),
        ("ROUTERO_DB_SCHEMA", schema.as_str()),
    ];
    let client = common::pg_client(&url).await;
    let one = |sql: String| {
        let client = &client;
        async move { client.query_one(&sql, &[]).await.unwrap() }
    };
    let corrections = || {
        one(format!(
            "SELECT count(*) FROM {schema}.routero_spend_corrections"
        ))
    };

    let mut first = common::coworker_running(&args, &env);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while corrections().await.get::<_, i64>(0) < 500 {
        assert!(std::time::Instant::now() < deadline, "nothing corrected");
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    first.0.kill().unwrap(); // SIGKILL
    first.0.wait().unwrap();
    let partial = corrections().await.get::<_, i64>(0);
    assert!(
        partial < i64::try_from(N).unwrap(),
        "the repricing finished before the kill ({partial})"
    );
    let state = one(format!("SELECT state FROM {schema}.routero_repricings")).await;
    assert_eq!(state.get::<_, String>(0), "applying");

    let (code, out, err) = common::coworker_command(&args, &env);
    assert_eq!(code, Some(0), "{err}");
    let record: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(record["state"], "applied");
    assert_eq!(record["corrected"], N + 1);
    assert_eq!(record["actor"], "ops@acme");
    assert_eq!(
        Decimal::from_str_exact(record["delta"].as_str().unwrap()).unwrap(),
        expected - recorded
    );
    let row = one(format!(
        "SELECT count(*), count(DISTINCT request_id) FROM {schema}.routero_spend_corrections"
    ))
    .await;
    assert_eq!(
        (row.get::<_, i64>(0), row.get::<_, i64>(1)),
        (i64::try_from(N + 1).unwrap(), i64::try_from(N + 1).unwrap())
    );
    let repriced = one(format!(
        "SELECT count(*) FROM {schema}.routero_unpriced WHERE repriced_at IS NOT NULL"
    ))
    .await;
    assert_eq!(
        repriced.get::<_, i64>(0),
        1,
        "the unpriced request is priced now"
    );
    let unpriced = one(format!(
        "SELECT sum(unpriced) FROM {schema}.routero_daily_rollups"
    ))
    .await;
    assert_eq!(unpriced.get::<_, Decimal>(0), Decimal::ZERO);
    let rollups = || {
        one(format!(
            "SELECT sum(cost) FROM {schema}.routero_daily_rollups"
        ))
    };
    assert_eq!(rollups().await.get::<_, Decimal>(0), expected);
    let logged = one(format!("SELECT sum(cost) FROM {schema}.routero_spend_log")).await;
    assert_eq!(
        logged.get::<_, Decimal>(0),
        recorded,
        "the log keeps the costs as recorded"
    );
    assert_eq!(balance().await, before - managed_delta);
    let entries = one(format!(
        "SELECT sum(amount) FROM {schema}.routero_wallet_entries WHERE kind = 'price_correction'"
    ))
    .await;
    assert_eq!(entries.get::<_, Decimal>(0), -managed_delta);

    // The same command again: the same record, nothing applied twice.
    let (code, again, err) = common::coworker_command(&args, &env);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(serde_json::from_str::<Value>(&again).unwrap(), record);
    assert_eq!(rollups().await.get::<_, Decimal>(0), expected);
    assert_eq!(balance().await, before - managed_delta);
    let (code, listed, _) = common::coworker_command(&["reprice", "--list"], &env);
    assert_eq!(code, Some(0));
    let listed: Value = serde_json::from_str(&listed).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 1);
    std::fs::remove_file(&prices).ok();
}
