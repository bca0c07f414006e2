//! The spend dashboard in a real browser: the `server` example serves it, headless
//! Chromium (Debian's `chromium`, driven through `chromedriver`) signs in with the
//! printed token, and every number on the page is checked against the API's answer.
//!
//! Without Chromium and ChromeDriver the test skips with a notice, unless
//! `ROUTERO_TEST_REQUIRE_SERVICES=1` (CI) makes that a failure; `scripts/test.sh`
//! installs both. `ROUTERO_TEST_CHROMIUM` and `ROUTERO_TEST_CHROMEDRIVER` override
//! their paths. The overview's and the wallet's screenshots are written to
//! `ROUTERO_TEST_ARTEFACTS` (default: the target's temporary directory).

mod common;

use std::collections::BTreeSet;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Process, request, server, server_with_org};
use fantoccini::{Client, ClientBuilder, Locator};
use rust_decimal::Decimal;
use serde_json::{Value, json};

/// Chromium and ChromeDriver, or `None` (the test skips) when either is missing.
fn browser_binaries() -> Option<(PathBuf, PathBuf)> {
    let path = |var: &str, default: &str| {
        PathBuf::from(std::env::var(var).unwrap_or_else(|_| default.to_owned()))
    };
    let chromium = path("ROUTERO_TEST_CHROMIUM", "/usr/bin/chromium");
    let driver = path("ROUTERO_TEST_CHROMEDRIVER", "/usr/bin/chromedriver");
    for binary in [&chromium, &driver] {
        if !binary.exists() {
            let required = std::env::var("ROUTERO_TEST_REQUIRE_SERVICES").as_deref() == Ok("1");
            assert!(
                !required,
                "{} is missing and ROUTERO_TEST_REQUIRE_SERVICES=1 (scripts/test.sh installs it)",
                binary.display()
            );
            eprintln!(
                "skipping the dashboard test: {} is missing",
                binary.display()
            );
            return None;
        }
    }
    Some((chromium, driver))
}

/// ChromeDriver on a free port, once it accepts connections.
fn chromedriver(binary: &Path) -> (Process, u16) {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(binary)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let process = Process(child);
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "chromedriver never listened");
        std::thread::sleep(Duration::from_millis(50));
    }
    (process, port)
}

/// A headless Chromium session with its own profile, saving downloads in `downloads`.
async fn browser(chromium: &Path, port: u16, profile: &Path, downloads: &Path) -> Client {
    let mut capabilities = serde_json::Map::new();
    capabilities.insert("browserName".into(), json!("chrome"));
    capabilities.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": chromium,
            "args": [
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--window-size=1280,1400",
                format!("--user-data-dir={}", profile.display()),
            ],
            "prefs": {
                "download.default_directory": downloads,
                "download.prompt_for_download": false,
            },
        }),
    );
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(capabilities)
        .connect(&format!("http://127.0.0.1:{port}"))
        .await
        .expect("a Chromium session")
}

/// What the page shows, read in one script: the values it displays (money as the
/// exact strings it put in `data-value`), its rows, its messages.
const SNAPSHOT: &str = r##"
const id = (x) => document.getElementById(x);
const value = (x) => (id(x) && id(x).dataset.value) || null;
const shown = (x) => (id(x).hidden ? null : id(x).textContent.trim());
const rows = (table) => [...document.querySelectorAll(`#${table} tbody tr`)];
return {
  signedIn: !id("nav").hidden,
  signInMessage: shown("sign-in-message"),
  error: shown("error"),
  updates: Number(id("updated").dataset.count || 0),
  cards: {
    balance: value("card-balance"),
    month_to_date: value("card-mtd"),
    projected_month: value("card-projected"),
    managed_month_to_date: value("card-managed"),
    byok_month_to_date: value("card-byok"),
  },
  start: id("start-date").value,
  end: id("end-date").value,
  workspace: id("workspace").value,
  trend: id("trend").dataset.total || null,
  chart: [...document.querySelectorAll("#chart g[data-date]")].map((g) => [g.dataset.date, g.dataset.spend]),
  keyHeader: id("key-header").textContent,
  rows: rows("activity").filter((tr) => tr.dataset.date).map((tr) => ({
    date: tr.dataset.date,
    key: tr.dataset.key,
    values: [...tr.cells].slice(2).map((td) => td.dataset.value),
  })),
  rowCount: Number(id("page-info").dataset.rows || 0),
  pageInfo: id("page-info").textContent,
  totalSpend: value("total-spend"),
  teams: [...id("team-filter").options].map((o) => o.value).filter(Boolean),
  models: [...id("model-filter").options].map((o) => o.value).filter(Boolean),
  wallet: {
    balance: value("wallet-balance"),
    paid: value("wallet-paid"),
    debited: value("wallet-debited"),
  },
  topUpKey: id("top-up-key").value,
  topUpMessage: shown("top-up-message"),
  transactions: rows("transactions").map((tr) => [tr.dataset.key, tr.cells[2].dataset.value]),
  invoices: rows("invoices").map((tr) => [tr.dataset.month, tr.cells[4].dataset.value]),
  walletText: id("wallet-balance").textContent,
  walletTitle: id("wallet-balance").title,
  balanceCardText: id("card-balance").textContent,
  trendText: id("trend").textContent,
  trendComparable: id("trend").dataset.comparable || null,
  yTicks: [...document.querySelectorAll("#chart .y-tick")].map((t) => t.textContent),
  allWallets: rows("wallets").map((tr) => [tr.dataset.workspace, tr.cells[2].dataset.value, tr.cells[2].textContent]),
  workspaces: [...id("workspace").options].map((o) => o.value),
  sideways: document.documentElement.scrollWidth - document.documentElement.clientWidth,
  keysOverflow: [...document.querySelectorAll("#transactions td.key")].filter((td) => td.scrollWidth > td.clientWidth + 1).length,
  text: document.body.innerText,
};
"##;

/// An amount as the page shows it to people: half to even at `places`, thousands
/// separators, the dollar sign.
fn for_people(amount: Decimal, places: u32) -> String {
    let rounded = amount
        .round_dp_with_strategy(places, rust_decimal::RoundingStrategy::MidpointNearestEven)
        .abs();
    let text = format!("{rounded:.*}", places as usize);
    let (whole, fraction) = text.split_once('.').unwrap_or((&text, ""));
    let mut grouped = String::new();
    for (i, c) in whole.chars().enumerate() {
        if i > 0 && (whole.len() - i) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(c);
    }
    let sign = if amount.is_sign_negative() && !rounded.is_zero() {
        "−"
    } else {
        ""
    };
    if fraction.is_empty() {
        format!("{sign}${grouped}")
    } else {
        format!("{sign}${grouped}.{fraction}")
    }
}

async fn snapshot(client: &Client) -> Value {
    client.execute(SNAPSHOT, vec![]).await.unwrap()
}

/// The page's snapshot once `check` holds (polled for up to 30 s; the page is never
/// told to refresh, so a change must come from the page itself).
async fn until(client: &Client, what: &str, check: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let page = snapshot(client).await;
        if check(&page) {
            return page;
        }
        if Instant::now() > deadline {
            let mut page = page;
            page["text"] = json!("(left out)");
            panic!("{what}: never happened; the page: {page:#}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The API's answer to `GET target`, as the signed-in principal.
fn api(addr: &str, token: &str, target: &str) -> Value {
    let bearer = format!("Bearer {token}");
    let (status, body) = request(addr, "GET", target, &[("authorization", &bearer)], "");
    assert_eq!(status, 200, "GET {target}: {body}");
    serde_json::from_str(&body).unwrap()
}

fn decimal(value: &Value) -> Decimal {
    value
        .as_str()
        .unwrap_or_else(|| panic!("{value} is not a decimal string"))
        .parse()
        .unwrap()
}

/// The rows the table must hold: one per day and team (or model) of the API's
/// activity, with its metrics in the table's column order.
fn expected_rows(activity: &Value, group: &str) -> BTreeSet<(String, String, Vec<String>)> {
    let mut rows = BTreeSet::new();
    for day in activity["results"].as_array().unwrap() {
        for (key, entry) in day["breakdown"][group].as_object().unwrap() {
            let m = &entry["metrics"];
            let values = [
                "api_requests",
                "prompt_tokens",
                "completion_tokens",
                "cache_read_input_tokens",
                "cache_creation_input_tokens",
                "total_tokens",
            ]
            .iter()
            .map(|n| m[n].to_string())
            .chain([m["spend"].as_str().unwrap().to_owned()])
            .collect();
            rows.insert((
                day["date"].as_str().unwrap().to_owned(),
                key.clone(),
                values,
            ));
        }
    }
    rows
}

fn shown_rows(page: &Value) -> BTreeSet<(String, String, Vec<String>)> {
    page["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["date"].as_str().unwrap().to_owned(),
                r["key"].as_str().unwrap().to_owned(),
                r["values"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_str().unwrap().to_owned())
                    .collect(),
            )
        })
        .collect()
}

async fn sign_in(client: &Client, addr: &str, query: &str, token: &str) {
    client
        .goto(&format!("http://{addr}/{query}"))
        .await
        .unwrap();
    let field = client.find(Locator::Id("token")).await.unwrap();
    field.send_keys(token).await.unwrap();
    field.send_keys("\u{E007}").await.unwrap(); // Enter
}

async fn choose(client: &Client, select: &str, value: &str) {
    client
        .find(Locator::Id(select))
        .await
        .unwrap()
        .select_by_value(value)
        .await
        .unwrap();
}

async fn click(client: &Client, id: &str) {
    client
        .find(Locator::Id(id))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
}

/// The text of a downloaded file, once the browser has finished writing it.
async fn wait_for_file(path: &Path) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !path.exists() {
        assert!(
            Instant::now() < deadline,
            "{} never arrived",
            path.display()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    std::fs::read_to_string(path).unwrap()
}

async fn write_screenshot(client: &Client, name: &str) -> PathBuf {
    let dir = std::env::var_os("ROUTERO_TEST_ARTEFACTS")
        .map_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")), PathBuf::from);
    std::fs::create_dir_all(&dir).unwrap();
    let png = client.screenshot().await.unwrap();
    assert!(png.starts_with(b"\x89PNG"), "a PNG screenshot");
    let path = dir.join(name);
    std::fs::write(&path, &png).unwrap();
    eprintln!("screenshot: {} ({} bytes)", path.display(), png.len());
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_what_the_api_answers() {
    let Some((chromium, driver)) = browser_binaries() else {
        return;
    };
    let scratch = std::env::temp_dir().join(format!("routero-dashboard-{}", std::process::id()));
    let downloads = scratch.join("downloads");
    std::fs::create_dir_all(&downloads).unwrap();
    let (_driver, port) = chromedriver(&driver);
    let client = browser(&chromium, port, &scratch.join("profile"), &downloads).await;
    // The checks run as their own task, so a failed one still ends the browser session.
    let checks = tokio::spawn({
        let client = client.clone();
        async move { dashboard_checks(&client, &downloads).await }
    })
    .await;
    client.close().await.unwrap();
    let _ = std::fs::remove_dir_all(&scratch);
    if let Err(failed) = checks {
        std::panic::resume_unwind(failed.into_panic());
    }
}

async fn dashboard_checks(client: &Client, downloads: &Path) {
    let (_server, addr, token, org_token) = server_with_org(&[]);
    let bearer = format!("Bearer {token}");

    // A wrong token is refused with a message; the right one signs in.
    sign_in(client, &addr, "", "demo-wrong").await;
    until(client, "the wrong token is refused", |p| {
        p["signInMessage"] == "That token was refused."
    })
    .await;
    client
        .find(Locator::Id("token"))
        .await
        .unwrap()
        .clear()
        .await
        .unwrap();
    sign_in(client, &addr, "", &token).await;
    let page = until(client, "the overview is loaded", |p| {
        p["signedIn"] == true && p["updates"].as_u64() >= Some(1)
    })
    .await;
    assert_eq!(page["workspace"], "acme-prod");
    assert_eq!(page["error"], Value::Null);

    // The cards are the overview's numbers, to the last digit.
    let overview = api(&addr, &token, "/billing/overview?workspace=acme-prod");
    for card in [
        "balance",
        "month_to_date",
        "projected_month",
        "managed_month_to_date",
        "byok_month_to_date",
    ] {
        assert_eq!(page["cards"][card], overview[card], "the {card} card");
    }
    // Money for people: the currency's scale and separators, the exact string kept.
    assert_eq!(
        page["balanceCardText"],
        for_people(decimal(&overview["balance"]), 2).as_str()
    );
    // The y-axis has round ticks from $0 up past the highest bar.
    let ticks: Vec<String> = serde_json::from_value(page["yTicks"].clone()).unwrap();
    assert!(ticks.len() >= 3 && ticks[0] == "$0", "{ticks:?}");
    let values: Vec<Decimal> = ticks
        .iter()
        .map(|t| t.trim_start_matches('$').replace(',', "").parse().unwrap())
        .collect();
    assert!(values.windows(2).all(|w| w[0] < w[1]), "{ticks:?}");
    let step = values[1];
    assert!(
        values
            .iter()
            .enumerate()
            .all(|(i, v)| *v == step * Decimal::from(i)),
        "evenly spaced: {ticks:?}"
    );
    let mantissa = step.normalize().mantissa();
    assert!([1, 2, 5].contains(&mantissa), "a 1, 2 or 5 step: {ticks:?}");

    write_screenshot(client, "dashboard-overview.png").await;

    // The chart, the trend and the table are the range's analytics.
    let range = format!(
        "start_date={}&end_date={}&workspace=acme-prod",
        page["start"].as_str().unwrap(),
        page["end"].as_str().unwrap()
    );
    let daily = api(&addr, &token, &format!("/billing/daily-spend?{range}"));
    let days: Vec<(String, String)> = daily
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["date"].as_str().unwrap().to_owned(),
                d["spend"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let chart: Vec<(String, String)> = serde_json::from_value(page["chart"].clone()).unwrap();
    assert_eq!(chart.len(), 14, "a bar per day of the range");
    for (date, spend) in &days {
        assert!(
            chart.contains(&(date.clone(), spend.clone())),
            "the bar of {date} shows {spend}: {chart:?}"
        );
    }
    let trend = api(&addr, &token, &format!("/billing/spend-trend?{range}"));
    assert_eq!(page["trend"], trend["total"]);
    // The demo's traffic starts inside the previous fortnight: one day of it is no
    // base for a ratio.
    assert_eq!(trend["previous_days_with_spend"], 1, "{trend}");
    assert_eq!(page["trendComparable"], "false");
    assert!(
        page["trendText"]
            .as_str()
            .unwrap()
            .contains("no earlier data to compare"),
        "{}",
        page["trendText"]
    );
    assert!(!page["trendText"].as_str().unwrap().contains('%'));
    let activity = api(
        &addr,
        &token,
        &format!("/team/daily/activity?{range}&page_size=1000"),
    );
    assert_eq!(page["totalSpend"], activity["metadata"]["total_spend"]);
    let expected = expected_rows(&activity, "entities");
    assert_eq!(page["rowCount"].as_u64(), Some(expected.len() as u64));
    let shown = shown_rows(&page);
    assert_eq!(shown.len(), 25, "the first page holds 25 rows");
    assert!(
        shown.is_subset(&expected),
        "every row is the API's: {shown:?}"
    );

    // A principal sees its own org's teams only, and no word of the other org.
    let teams: Vec<String> = serde_json::from_value(page["teams"].clone()).unwrap();
    assert_eq!(teams, ["growth", "search", "support"]);
    assert!(!page["text"].as_str().unwrap().contains("globex"));

    // The newest day comes first; sorting by cost orders the rows by exact amount.
    let dates: Vec<&str> = page["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["date"].as_str().unwrap())
        .collect();
    assert!(dates.windows(2).all(|w| w[0] >= w[1]), "{dates:?}");
    let cost_header = client
        .find(Locator::Css("#activity th[data-sort=spend]"))
        .await
        .unwrap();
    cost_header.click().await.unwrap();
    let costs = |p: &Value| -> Vec<Decimal> {
        p["rows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["values"][6].as_str().unwrap().parse().unwrap())
            .collect()
    };
    let page = until(client, "the rows are sorted by cost", |p| {
        let c = costs(p);
        !c.is_empty() && c.windows(2).all(|w| w[0] >= w[1])
    })
    .await;
    let highest = costs(&page)[0];
    let most = expected
        .iter()
        .map(|(_, _, v)| v[6].parse::<Decimal>().unwrap())
        .max()
        .unwrap();
    assert_eq!(highest, most, "the most expensive row of the range leads");
    cost_header.click().await.unwrap();
    until(client, "the rows are sorted by cost, cheapest first", |p| {
        let c = costs(p);
        !c.is_empty() && c.windows(2).all(|w| w[0] <= w[1])
    })
    .await;

    // Pages: ten rows, then the next ten.
    choose(client, "page-size", "10").await;
    let one = until(client, "ten rows a page", |p| {
        p["rows"].as_array().map(Vec::len) == Some(10)
    })
    .await;
    click(client, "next-page").await;
    let two = until(client, "the second page", |p| {
        p["pageInfo"]
            .as_str()
            .unwrap_or_default()
            .starts_with("Page 2 of ")
    })
    .await;
    assert!(shown_rows(&one).is_disjoint(&shown_rows(&two)));

    // Filters change the table: one team, then one model, then by model.
    choose(client, "team-filter", "support").await;
    let support = api(
        &addr,
        &token,
        &format!("/team/daily/activity?{range}&team_ids=support&page_size=1000"),
    );
    let page = until(client, "the support team alone", |p| {
        p["totalSpend"] == support["metadata"]["total_spend"]
    })
    .await;
    assert_ne!(
        support["metadata"]["total_spend"],
        activity["metadata"]["total_spend"]
    );
    assert!(
        page["rows"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["key"] == "support")
    );
    assert_eq!(
        page["rowCount"].as_u64(),
        Some(expected_rows(&support, "entities").len() as u64)
    );
    let model = page["models"][0].as_str().unwrap().to_owned();
    choose(client, "model-filter", &model).await;
    choose(client, "group-by", "model").await;
    let narrow = api(
        &addr,
        &token,
        &format!("/team/daily/activity?{range}&team_ids=support&model={model}&page_size=1000"),
    );
    let page = until(client, "support's use of one model, by model", |p| {
        p["keyHeader"] == "Model" && p["totalSpend"] == narrow["metadata"]["total_spend"]
    })
    .await;
    let expected = expected_rows(&narrow, "models");
    assert!(shown_rows(&page).is_subset(&expected));
    assert!(
        page["rows"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["key"] == model.as_str())
    );
    choose(client, "team-filter", "").await;
    choose(client, "model-filter", "").await;
    choose(client, "group-by", "team").await;
    choose(client, "page-size", "25").await;
    until(client, "the filters are cleared", |p| {
        p["totalSpend"] == activity["metadata"]["total_spend"] && p["keyHeader"] == "Team"
    })
    .await;

    // A shorter date range: three days of bars, rows and totals.
    let end = chrono::NaiveDate::parse_from_str(page["end"].as_str().unwrap(), "%Y-%m-%d").unwrap();
    let start = (end - chrono::Duration::days(2)).to_string();
    client
        .execute(
            "const input = document.getElementById('start-date'); \
             input.value = arguments[0]; \
             input.dispatchEvent(new Event('change'));",
            vec![json!(start)],
        )
        .await
        .unwrap();
    let short = api(
        &addr,
        &token,
        &format!(
            "/team/daily/activity?start_date={start}&end_date={end}&workspace=acme-prod&page_size=1000"
        ),
    );
    let page = until(client, "the last three days", |p| {
        p["chart"].as_array().map(Vec::len) == Some(3)
            && p["totalSpend"] == short["metadata"]["total_spend"]
    })
    .await;
    assert_eq!(shown_rows(&page), expected_rows(&short, "entities"));

    // The month's CSV downloads, byte for byte the API's.
    let month = page["end"].as_str().unwrap()[..7].to_owned();
    click(client, "download-csv").await;
    let file = wait_for_file(&downloads.join(format!("routero-acme-prod-{month}.csv"))).await;
    let (_, csv) = request(
        &addr,
        "GET",
        &format!("/billing/export.csv?month={month}&workspace=acme-prod"),
        &[("authorization", &bearer)],
        "",
    );
    assert_eq!(file, csv);

    // The wallet page: balance, transactions and this month's invoice, as the API has
    // them. Twenty-two more top-ups make the ledger longer than the page's first 20.
    for i in 0..22 {
        let key = format!("seed-{i:02}");
        let (status, body) = request(
            &addr,
            "POST",
            "/billing/wallet/topup?workspace=acme-prod",
            &[("authorization", &bearer), ("idempotency-key", &key)],
            r#"{"amount": "1.00", "currency": "USD"}"#,
        );
        assert_eq!(status, 201, "{body}");
    }
    click(client, "nav-wallet").await;
    let wallet = api(&addr, &token, "/billing/wallet?workspace=acme-prod");
    let page = until(client, "the wallet is loaded", |p| {
        p["wallet"]["balance"] == wallet["balance"]
            && !p["transactions"].as_array().unwrap().is_empty()
    })
    .await;
    assert_eq!(page["wallet"]["debited"], wallet["usage_debited"]);
    let ledger = |limit: u32| -> Value {
        let ledger = api(
            &addr,
            &token,
            &format!("/billing/transactions?workspace=acme-prod&limit={limit}"),
        );
        ledger["entries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| json!([e["idempotency_key"], e["amount"]]))
            .collect()
    };
    assert_eq!(page["transactions"], ledger(20));
    click(client, "more-transactions").await;
    let whole = ledger(100);
    assert_eq!(whole.as_array().map(Vec::len), Some(24));
    until(client, "the older transactions are loaded", |p| {
        p["transactions"] == whole
    })
    .await;
    let invoice = api(
        &addr,
        &token,
        &format!("/billing/invoices/{month}?workspace=acme-prod"),
    );
    // The invoices load beside the balance, on their own request.
    let page = until(client, "this month's invoice is listed", |p| {
        p["invoices"][0] == json!([month, invoice["total"]])
    })
    .await;

    // A top-up shows in the balance, and at the head of the transactions.
    let key = page["topUpKey"].as_str().unwrap().to_owned();
    assert!(key.starts_with("topup-"), "a fresh idempotency key: {key}");
    let before = decimal(&wallet["balance"]);
    client
        .find(Locator::Id("top-up-amount"))
        .await
        .unwrap()
        .send_keys("123.45")
        .await
        .unwrap();
    click(client, "top-up-submit").await;
    let after = before + Decimal::new(12_345, 2);
    let page = until(client, "the top-up is in the balance", |p| {
        p["wallet"]["balance"]
            .as_str()
            .and_then(|b| b.parse::<Decimal>().ok())
            == Some(after)
    })
    .await;
    assert!(
        page["topUpMessage"]
            .as_str()
            .is_some_and(|m| m.starts_with("Topped up $123.45")),
        "{}",
        page["topUpMessage"]
    );
    assert_eq!(page["walletText"], for_people(after, 2).as_str());
    assert!(
        page["walletTitle"]
            .as_str()
            .unwrap()
            .contains(&after.to_string()),
        "the exact balance is kept: {}",
        page["walletTitle"]
    );
    assert_eq!(page["transactions"][0], json!([key, "123.45"]));
    assert_ne!(
        page["topUpKey"],
        key.as_str(),
        "the next top-up gets a new key"
    );
    let wallet = api(&addr, &token, "/billing/wallet?workspace=acme-prod");
    assert_eq!(decimal(&wallet["balance"]), after);

    // The same key with the same amount is a replay: it says so, and adds nothing.
    let field = client.find(Locator::Id("top-up-key")).await.unwrap();
    field.clear().await.unwrap();
    field.send_keys(&key).await.unwrap();
    let amount = client.find(Locator::Id("top-up-amount")).await.unwrap();
    amount.send_keys("123.45").await.unwrap();
    click(client, "top-up-submit").await;
    let page = until(client, "the replay is told apart", |p| {
        p["topUpMessage"]
            .as_str()
            .is_some_and(|m| m.starts_with("Replayed"))
    })
    .await;
    assert!(
        page["topUpMessage"]
            .as_str()
            .unwrap()
            .contains("the balance did not change"),
        "{}",
        page["topUpMessage"]
    );
    assert_eq!(decimal(&page["wallet"]["balance"]), after);
    assert_eq!(
        decimal(&api(&addr, &token, "/billing/wallet?workspace=acme-prod")["balance"]),
        after
    );

    // The API's refusals are shown as what they say, and change nothing.
    let amount = client.find(Locator::Id("top-up-amount")).await.unwrap();
    amount.send_keys("0").await.unwrap();
    click(client, "top-up-submit").await;
    let page = until(client, "a zero top-up is refused", |p| {
        p["topUpMessage"]
            .as_str()
            .is_some_and(|m| m.starts_with("Invalid amount"))
    })
    .await;
    assert_eq!(decimal(&page["wallet"]["balance"]), after);
    let field = client.find(Locator::Id("top-up-key")).await.unwrap();
    field.clear().await.unwrap();
    field.send_keys(&key).await.unwrap();
    amount.clear().await.unwrap();
    amount.send_keys("5").await.unwrap();
    click(client, "top-up-submit").await;
    until(client, "a reused key with another amount is refused", |p| {
        p["topUpMessage"]
            .as_str()
            .is_some_and(|m| m.contains("dempotency"))
    })
    .await;
    write_screenshot(client, "dashboard-wallet.png").await;

    // This month's invoice downloads as the API's CSV.
    client
        .find(Locator::Css(&format!(
            "#invoices tr[data-month='{month}'] button"
        )))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let invoice_csv =
        wait_for_file(&downloads.join(format!("invoice-acme-prod-{month}.csv"))).await;
    let (_, expected) = request(
        &addr,
        "GET",
        &format!("/billing/invoices/{month}?workspace=acme-prod&format=csv"),
        &[("authorization", &bearer)],
        "",
    );
    assert_eq!(invoice_csv, expected);
    assert_eq!(
        decimal(&api(&addr, &token, "/billing/wallet?workspace=acme-prod")["balance"]),
        after
    );

    // On a 420 px screen nothing scrolls sideways, and a long idempotency key wraps
    // inside its cell.
    let long_key = format!("reconciliation-{}", "0123456789abcdef".repeat(7));
    let (status, body) = request(
        &addr,
        "POST",
        "/billing/wallet/topup?workspace=acme-prod",
        &[("authorization", &bearer), ("idempotency-key", &long_key)],
        r#"{ "amount": 1000.00, "currency": "USD" }"#,
    );
    assert_eq!(status, 201, "{body}");
    client.set_window_size(420, 900).await.unwrap();
    client.refresh().await.unwrap();
    let page = until(client, "the narrow wallet is loaded", |p| {
        p["transactions"][0][0] == long_key.as_str()
    })
    .await;
    assert_eq!(page["sideways"], 0, "the wallet page scrolls sideways");
    assert_eq!(page["keysOverflow"], 0, "a key overflows its cell");
    assert!(
        page["walletText"].as_str().unwrap().starts_with("$1,"),
        "thousands separated: {}",
        page["walletText"]
    );
    write_screenshot(client, "dashboard-wallet-narrow.png").await;
    click(client, "nav-overview").await;
    let page = until(client, "the narrow overview is loaded", |p| {
        p["cards"]["balance"].is_string()
    })
    .await;
    assert_eq!(page["sideways"], 0, "the overview scrolls sideways");
    client.set_window_size(1280, 1400).await.unwrap();

    // Another org's workspace: the page says so, it does not go blank.
    client
        .goto(&format!("http://{addr}/?workspace=globex-main#overview"))
        .await
        .unwrap();
    let page = until(client, "another org's workspace is refused", |p| {
        p["error"]
            .as_str()
            .is_some_and(|e| e.contains("no such workspace"))
    })
    .await;
    assert_eq!(page["signedIn"], true, "the page stays, with its message");
    assert_eq!(
        page["cards"]["balance"],
        Value::Null,
        "nothing of it is shown"
    );

    // An org-wide principal: every Acme workspace to choose from, and their wallets.
    client
        .execute("sessionStorage.clear()", vec![])
        .await
        .unwrap();
    sign_in(client, &addr, "#wallet", &org_token).await;
    let wallets = api(&addr, &org_token, "/billing/wallets");
    let expected: Vec<Value> = wallets["wallets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| {
            json!([
                w["workspace"],
                w["balance"],
                for_people(decimal(&w["balance"]), 2)
            ])
        })
        .collect();
    assert_eq!(expected.len(), 2, "{wallets}");
    let page = until(client, "the org's wallets are listed", |p| {
        p["allWallets"].as_array().is_some_and(|w| !w.is_empty())
    })
    .await;
    assert_eq!(page["allWallets"], Value::Array(expected));
    assert_eq!(page["workspaces"], json!(["", "acme-labs", "acme-prod"]));
    assert_eq!(page["error"], Value::Null);
    choose(client, "workspace", "acme-labs").await;
    let labs = api(&addr, &org_token, "/billing/wallet?workspace=acme-labs");
    until(client, "one of them is opened", |p| {
        p["wallet"]["balance"] == labs["balance"]
    })
    .await;

    // Real time: with requests arriving, the open page shows them without a click.
    let (_live, live_addr, live_token) = server(&[("ROUTERO_DEMO_EVERY_MS", "100")]);
    client
        .execute("sessionStorage.clear()", vec![])
        .await
        .unwrap();
    sign_in(client, &live_addr, "?refresh=1000", &live_token).await;
    let page = until(client, "the live overview is loaded", |p| {
        p["signedIn"] == true && p["updates"].as_u64() >= Some(1)
    })
    .await;
    let first = decimal(&page["totalSpend"]);
    let requests = |p: &Value| -> u64 {
        p["rows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["values"][0].as_str().unwrap().parse::<u64>().unwrap())
            .sum()
    };
    let before = requests(&page);
    let page = until(client, "new requests appear on their own", |p| {
        requests(p) > before + 2
    })
    .await;
    assert!(page["updates"].as_u64() > Some(1));
    let now = decimal(&page["totalSpend"]);
    assert!(now >= first, "spend only grows: {first} then {now}");
}
