//! Two coworkers (real processes) with a billing file and `ROUTERO_ERP=coupa`,
//! against a local Coupa that issues OAuth 2.0 client-credentials tokens and keeps
//! invoices: last month closes, each workspace's invoice is posted once with a
//! bearer token, the run records say so, and no credential appears in either
//! coworker's log (at debug level).

mod common;

use std::collections::HashMap;
use std::io::{BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{example, unique};
use serde_json::Value;

const CLIENT_SECRET: &str = "coupa-secret-5f4dcc3b5aa765d61d83";

#[derive(Default)]
struct Coupa {
    tokens: Vec<String>,
    token_requests: u32,
    invoices: Vec<Value>,
    unauthorized: u32,
}

fn serve(coupa: Arc<Mutex<Coupa>>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let coupa = coupa.clone();
            std::thread::spawn(move || {
                let _ = answer(stream, &coupa);
            });
        }
    });
    addr
}

fn answer(stream: TcpStream, coupa: &Mutex<Coupa>) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut out = stream;
    while let Some(common::Incoming {
        method,
        target,
        headers,
        body,
    }) = common::read_request(&mut reader)?
    {
        let (status, reply) = {
            let mut coupa = coupa.lock().unwrap();
            if target == "/oauth2/token" {
                coupa.token_requests += 1;
                let form: HashMap<String, String> =
                    form_urlencoded_pairs(&String::from_utf8_lossy(&body));
                if form.get("client_secret").map(String::as_str) == Some(CLIENT_SECRET)
                    && form.get("grant_type").map(String::as_str) == Some("client_credentials")
                {
                    let token = format!("tok{}", coupa.token_requests);
                    coupa.tokens.push(token.clone());
                    (
                        200,
                        format!(r#"{{"access_token":"{token}","expires_in":3600}}"#),
                    )
                } else {
                    (401, r#"{"error":"invalid_client"}"#.to_owned())
                }
            } else {
                let bearer = headers
                    .get("authorization")
                    .and_then(|a| a.strip_prefix("Bearer "))
                    .unwrap_or_default();
                if !coupa.tokens.iter().any(|t| t == bearer) {
                    coupa.unauthorized += 1;
                    (401, "{}".to_owned())
                } else if method == "GET" {
                    let found: Vec<&Value> = coupa
                        .invoices
                        .iter()
                        .filter(|i| {
                            target.contains(&format!(
                                "invoice-number={}",
                                i["invoice-number"].as_str().unwrap()
                            ))
                        })
                        .collect();
                    (200, serde_json::to_string(&found).unwrap())
                } else {
                    let invoice: Value = serde_json::from_slice(&body).unwrap();
                    if coupa
                        .invoices
                        .iter()
                        .any(|i| i["invoice-number"] == invoice["invoice-number"])
                    {
                        (
                            400,
                            r#"{"errors":["Invoice number has already been taken"]}"#.into(),
                        )
                    } else {
                        coupa.invoices.push(invoice);
                        (201, "{}".to_owned())
                    }
                }
            }
        };
        write!(
            out,
            "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{reply}",
            reply.len()
        )?;
    }
    Ok(())
}

fn form_urlencoded_pairs(text: &str) -> HashMap<String, String> {
    text.split('&')
        .filter_map(|p| p.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.replace('+', " ")))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_final_invoice_is_pushed_once_by_two_coworkers() {
    let Some((redis, url)) = common::services() else {
        return;
    };
    let coupa = Arc::new(Mutex::new(Coupa::default()));
    let addr = serve(coupa.clone());
    let schema = unique("t_erp");
    let billing = std::env::temp_dir().join(format!("{schema}.toml"));
    let mut file = String::new();
    for w in ["acme-prod", "acme-dev", "acme-ml", "globex-prod"] {
        let org = w.split('-').next().unwrap();
        file.push_str(&format!(
            "[[workspace]]\nid = \"{w}\"\norg = \"{org}\"\ncurrency = \"USD\"\nplan = \"49.00\"\n"
        ));
    }
    std::fs::write(&billing, file).unwrap();
    let secret_file = std::env::temp_dir().join(format!("{schema}.secret"));
    std::fs::write(&secret_file, format!("{CLIENT_SECRET}\n")).unwrap();
    let logs: Vec<_> = (0..2)
        .map(|n| std::env::temp_dir().join(format!("{schema}.{n}.log")))
        .collect();
    let coworkers: Vec<common::Process> = logs
        .iter()
        .enumerate()
        .map(|(n, log)| {
            // At debug level, into a file the test reads for secrets.
            common::Process(
                Command::new(example("coworker"))
                    .envs([
                        ("ROUTERO_DATABASE_URL", url.as_str()),
                        ("ROUTERO_REDIS_URL", &redis),
                        ("ROUTERO_REDIS_PREFIX", &schema),
                        ("ROUTERO_DB_SCHEMA", &schema),
                        ("ROUTERO_CLOSE_GRACE_HOURS", "0"),
                        ("ROUTERO_SCHEDULE_INTERVAL_SECS", "1"),
                        ("ROUTERO_ERP", "coupa"),
                        ("ROUTERO_ERP_URL", &format!("http://{addr}")),
                        ("ROUTERO_COUPA_SUPPLIER_ID", "77"),
                        ("ROUTERO_COUPA_CLIENT_ID", "routero"),
                        ("RUST_LOG", "debug"),
                    ])
                    .env("ROUTERO_BILLING_FILE", &billing)
                    .env("ROUTERO_COUPA_CLIENT_SECRET_FILE", &secret_file)
                    .env("ROUTERO_HOLDER", format!("coworker-{n}"))
                    .stdout(Stdio::null())
                    .stderr(std::fs::File::create(log).unwrap())
                    .spawn()
                    .unwrap(),
            )
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(90);
    while coupa.lock().unwrap().invoices.len() < 4 {
        assert!(
            Instant::now() < deadline,
            "the invoices never reached Coupa"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A few more ticks of both: nothing is posted again.
    tokio::time::sleep(Duration::from_secs(3)).await;
    drop(coworkers);
    let coupa = std::mem::take(&mut *coupa.lock().unwrap());
    let mut numbers: Vec<&str> = coupa
        .invoices
        .iter()
        .map(|i| i["invoice-number"].as_str().unwrap())
        .collect();
    numbers.sort_unstable();
    numbers.dedup();
    assert_eq!(numbers.len(), 4, "{numbers:?}");
    assert!(
        coupa
            .invoices
            .iter()
            .all(|i| i["supplier"]["id"] == 77 || i["supplier"]["id"] == "77")
    );
    assert_eq!(coupa.unauthorized, 0);

    let client = common::pg_client(&url).await;
    let rows = client
        .query(
            &format!(
                "SELECT period, state, attempts FROM {schema}.routero_job_runs \
                 WHERE job = 'erp-push' ORDER BY period"
            ),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 4);
    for row in &rows {
        assert_eq!(
            row.get::<_, String>(1),
            "done",
            "{}",
            row.get::<_, String>(0)
        );
        assert_eq!(row.get::<_, i32>(2), 1);
    }
    for log in &logs {
        let text = std::fs::read_to_string(log).unwrap();
        assert!(
            !text.contains(CLIENT_SECRET),
            "the client secret is in {}",
            log.display()
        );
        for token in &coupa.tokens {
            assert!(
                !text.contains(&format!("Bearer {token}"))
                    && !text.contains(&format!("\"{token}\"")),
                "an access token is in {}",
                log.display()
            );
        }
        std::fs::remove_file(log).ok();
    }
    std::fs::remove_file(&billing).ok();
    std::fs::remove_file(&secret_file).ok();
}
