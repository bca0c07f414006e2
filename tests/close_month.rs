//! `coworker close-month` on real PostgreSQL: the month is closed once (a second run
//! prints the same invoice), a month not over is refused, and the example server,
//! which never closed anything itself, lists the final invoice.

mod common;

use common::{database_url, request, server_with_tokens, unique};
use serde_json::Value;

#[test]
fn a_closed_month_is_listed_by_the_server() {
    let Some(url) = database_url() else { return };
    let schema = unique("t_close");
    let billing = std::env::temp_dir().join(format!("{schema}.toml"));
    std::fs::write(
        &billing,
        "[[workspace]]\nid = \"acme-prod\"\norg = \"acme\"\ncurrency = \"USD\"\nplan = \"49.00\"\n",
    )
    .unwrap();
    let billing_path = billing.display().to_string();
    let close = |args: &[&str]| {
        common::coworker_command(
            &[&["close-month"], args].concat(),
            &[
                ("ROUTERO_DATABASE_URL", &url),
                ("ROUTERO_DB_SCHEMA", &schema),
                ("ROUTERO_BILLING_FILE", &billing_path),
            ],
        )
    };
    let (code, first, errors) = close(&["2026-11"]);
    assert_eq!(code, Some(0), "{errors}");
    let row: Vec<&str> = first.lines().nth(1).unwrap().split('\t').collect();
    assert_eq!(
        &row[..4],
        ["acme-prod", "INV-202611-000001", "USD", "49.00"],
        "{first}"
    );
    let (code, again, _) = close(&["2026-11", "--workspace", "acme-prod"]);
    assert_eq!(
        (code, again),
        (Some(0), first),
        "closing again changes nothing"
    );

    let (code, _, errors) = close(&["2999-01"]);
    assert_eq!(code, Some(1));
    assert!(errors.contains("2999-01 is not over yet"), "{errors}");
    let (code, _, errors) = close(&["2026-11", "--workspace", "globex"]);
    assert_eq!(code, Some(2), "{errors}");

    // The server over the same database lists the final invoice.
    let database = format!(
        "{url}{}options=-c%20search_path%3D{schema}",
        if url.contains('?') { '&' } else { '?' }
    );
    let billing_path = billing.display().to_string();
    let (_server, addr, _, _, prod_token) = server_with_tokens(&[
        ("ROUTERO_DATABASE_URL", &database),
        ("ROUTERO_BILLING_FILE", &billing_path),
    ]);
    let bearer = format!("Bearer {prod_token}");
    let (status, body) = request(
        &addr,
        "GET",
        "/billing/invoices",
        &[("authorization", &bearer)],
        "",
    );
    assert_eq!(status, 200, "{body}");
    let listed: Value = serde_json::from_str(&body).unwrap();
    let invoices = listed.as_array().unwrap();
    assert_eq!(invoices.len(), 1, "{listed}");
    assert_eq!(invoices[0]["number"], "INV-202611-000001");
    assert_eq!(invoices[0]["month"], "2026-11");
    assert_eq!(invoices[0]["status"], "final");
    assert_eq!(invoices[0]["total"], "49.00");
    std::fs::remove_file(&billing).ok();
}

/// The coworker, running with a billing file, closes the month before this one on
/// its own (a grace of 0 hours, so whatever today's date); the server lists it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_coworker_closes_last_month_on_its_own() {
    let Some(url) = database_url() else { return };
    let Some((redis, _)) = common::services() else {
        return;
    };
    let schema = unique("t_autoclose");
    let billing = std::env::temp_dir().join(format!("{schema}.toml"));
    std::fs::write(
        &billing,
        "[[workspace]]\nid = \"acme-prod\"\norg = \"acme\"\ncurrency = \"USD\"\nplan = \"49.00\"\n",
    )
    .unwrap();
    let billing_path = billing.display().to_string();
    let coworker = common::coworker(&[
        ("ROUTERO_DATABASE_URL", &url),
        ("ROUTERO_REDIS_URL", &redis),
        ("ROUTERO_REDIS_PREFIX", &schema),
        ("ROUTERO_DB_SCHEMA", &schema),
        ("ROUTERO_BILLING_FILE", &billing_path),
        ("ROUTERO_CLOSE_GRACE_HOURS", "0"),
    ]);
    let client = common::pg_client(&url).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let number: String = loop {
        let row = client
            .query_opt(
                &format!("SELECT number FROM {schema}.routero_invoices LIMIT 1"),
                &[],
            )
            .await
            .ok()
            .flatten();
        if let Some(row) = row {
            break row.get(0);
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the coworker closed nothing"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    drop(coworker);
    let last_month = routero::invoice::Month::of(chrono::Utc::now().date_naive()).previous();
    assert!(
        number.starts_with(&format!("INV-{}{:02}-", last_month.year, last_month.month)),
        "{number}"
    );

    let database = format!(
        "{url}{}options=-c%20search_path%3D{schema}",
        if url.contains('?') { '&' } else { '?' }
    );
    let billing_path = billing.display().to_string();
    let listed = tokio::task::spawn_blocking(move || {
        let (_server, addr, _, _, prod_token) = server_with_tokens(&[
            ("ROUTERO_DATABASE_URL", &database),
            ("ROUTERO_BILLING_FILE", &billing_path),
        ]);
        let bearer = format!("Bearer {prod_token}");
        request(
            &addr,
            "GET",
            "/billing/invoices",
            &[("authorization", &bearer)],
            "",
        )
    })
    .await
    .unwrap();
    assert_eq!(listed.0, 200, "{}", listed.1);
    let invoices: Value = serde_json::from_str(&listed.1).unwrap();
    assert_eq!(invoices[0]["number"], number.as_str());
    assert_eq!(invoices[0]["status"], "final");
    std::fs::remove_file(&billing).ok();
}

/// Two coworkers across a month's close: the first is killed (SIGKILL) in the middle
/// of closing 300 workspaces; the second, once the job's lease has expired, closes
/// the rest. Each workspace has one invoice, numbered with no gap, and the run record
/// shows the two attempts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_coworker_killed_mid_close_leaves_no_half_closed_month() {
    let Some(url) = database_url() else { return };
    let Some((redis, _)) = common::services() else {
        return;
    };
    let schema = unique("t_killclose");
    let billing = std::env::temp_dir().join(format!("{schema}.toml"));
    let mut file = String::new();
    for n in 0..300 {
        file.push_str(&format!(
            "[[workspace]]\nid = \"ws-{n:03}\"\norg = \"acme\"\ncurrency = \"USD\"\nplan = \"49.00\"\n"
        ));
    }
    std::fs::write(&billing, file).unwrap();
    let billing_path = billing.display().to_string();
    let coworker = |holder: &str| {
        common::coworker(&[
            ("ROUTERO_DATABASE_URL", &url),
            ("ROUTERO_REDIS_URL", &redis),
            ("ROUTERO_REDIS_PREFIX", &schema),
            ("ROUTERO_DB_SCHEMA", &schema),
            ("ROUTERO_BILLING_FILE", &billing_path),
            ("ROUTERO_CLOSE_GRACE_HOURS", "0"),
            ("ROUTERO_LEASE_TTL_SECS", "2"),
            ("ROUTERO_SCHEDULE_INTERVAL_SECS", "1"),
            ("ROUTERO_HOLDER", holder),
        ])
    };
    let client = common::pg_client(&url).await;
    let count = || async {
        client
            .query_opt(
                &format!("SELECT count(*) FROM {schema}.routero_invoices"),
                &[],
            )
            .await
            .ok()
            .flatten()
            .map_or(0, |r| r.get::<_, i64>(0))
    };
    let mut first = coworker("first");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while count().await == 0 {
        assert!(std::time::Instant::now() < deadline, "nothing closed");
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    first.0.kill().unwrap(); // SIGKILL
    first.0.wait().unwrap();
    let partial = count().await;
    assert!(
        partial < 300,
        "the close finished before the kill ({partial})"
    );

    let _second = coworker("second");
    let run = loop {
        let row = client
            .query_opt(
                &format!(
                    "SELECT state, attempts, holder FROM {schema}.routero_job_runs \
                     WHERE job = 'month-close'"
                ),
                &[],
            )
            .await
            .ok()
            .flatten();
        if let Some(row) = row.filter(|r| r.get::<_, String>(0) == "done") {
            break (row.get::<_, i32>(1), row.get::<_, String>(2));
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the second never finished"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert_eq!(run, (2, "second".to_owned()));
    let rows = client
        .query(
            &format!(
                "SELECT workspace, count(*), min(number) FROM {schema}.routero_invoices \
                 GROUP BY workspace ORDER BY 3"
            ),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 300);
    let last_month = routero::invoice::Month::of(chrono::Utc::now().date_naive()).previous();
    for (n, row) in rows.iter().enumerate() {
        assert_eq!(row.get::<_, i64>(1), 1, "{}", row.get::<_, String>(0));
        assert_eq!(
            row.get::<_, String>(2),
            format!(
                "INV-{}{:02}-{:06}",
                last_month.year,
                last_month.month,
                n + 1
            )
        );
    }
    std::fs::remove_file(&billing).ok();
}
