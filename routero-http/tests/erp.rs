//! ERP pushes against a local server that records what it receives and fails on
//! purpose: 503s, and answers lost after the record was stored. Each invoice is
//! posted exactly once, with its exact amounts.
#![cfg(feature = "client")]

mod common;

use std::collections::HashMap;
use std::io::BufReader;
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use routero_core::Currency;
use routero_core::attribution::{OrgId, WorkspaceId};
use routero_core::erp::{
    CoupaSupplier, ErpError, NetSuiteAccounts, PushOutcome, Pusher, coupa_invoice,
    netsuite_journal_entry,
};
use routero_core::invoice::{Invoice, InvoiceLine, InvoiceStatus, LineKind, Month};
use routero_http::erp::{ErpAuth, HyperTransport};
use routero_http::oauth::Secret;
use rust_decimal::Decimal;
use serde_json::Value;

fn d(text: &str) -> Decimal {
    Decimal::from_str_exact(text).unwrap()
}

fn invoice(status: InvoiceStatus) -> Invoice {
    let line = |model: &str, amount: &str| InvoiceLine {
        kind: LineKind::Usage {
            provider: "openai".into(),
            model: model.into(),
            requests: 10,
            tokens: 1_000,
        },
        description: format!("{model} usage at list price"),
        exact_amount: d(amount),
        amount: d(amount),
        conversion: None,
    };
    Invoice {
        org: OrgId::new("acme").unwrap(),
        workspace: WorkspaceId::new("acme-prod").unwrap(),
        month: Month::parse("2026-11").unwrap(),
        status,
        number: (status == InvoiceStatus::Final).then(|| "RT-acme-prod-2026-11".to_owned()),
        finalized_at: Some(Utc::now()),
        currency: Currency::USD,
        lines: vec![
            line("gpt-4o", "1234.56"),
            line("o4-mini", "0.01"),
            line("zero", "0"),
        ],
        total: d("1234.57"),
        exact_total: d("1234.57"),
        payments: Vec::new(),
        opening_balance: Decimal::ZERO,
        closing_balance: Decimal::ZERO,
        managed_spend: d("1234.57"),
    }
}

/// A fake ERP: NetSuite's upsert by external id and Coupa's invoices (unique number
/// per supplier). `faults` is the script of what the next requests suffer: `503`
/// answers 503 without storing, `lost` stores and closes without answering.
#[derive(Default)]
struct Erp {
    journal_entries: HashMap<String, Value>,
    coupa_invoices: Vec<Value>,
    writes: u32,
    requests: Vec<(String, String, Option<String>)>,
    faults: Vec<&'static str>,
}

fn serve(erp: Arc<Mutex<Erp>>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let erp = erp.clone();
            std::thread::spawn(move || {
                let _ = answer(stream, &erp);
            });
        }
    });
    addr
}

fn answer(stream: TcpStream, erp: &Mutex<Erp>) -> std::io::Result<()> {
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
            let mut erp = erp.lock().unwrap();
            erp.requests.push((
                method.clone(),
                target.clone(),
                headers.get("idempotency-key").cloned(),
            ));
            let fault = (method != "GET" && !erp.faults.is_empty()).then(|| erp.faults.remove(0));
            if fault == Some("503") {
                (503, "{}".to_owned())
            } else {
                let record: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                let (status, reply) = match (method.as_str(), target.as_str()) {
                    ("PUT", t) if t.starts_with("/services/rest/record/v1/journalentry/eid:") => {
                        erp.writes += 1;
                        let eid = t.rsplit(':').next().unwrap().to_owned();
                        erp.journal_entries.insert(eid, record);
                        (204, String::new())
                    }
                    ("POST", "/api/invoices") => {
                        let taken = erp
                            .coupa_invoices
                            .iter()
                            .any(|i| i["invoice-number"] == record["invoice-number"]);
                        if taken {
                            (
                                400,
                                r#"{"errors":["Invoice number has already been taken"]}"#
                                    .to_owned(),
                            )
                        } else {
                            erp.writes += 1;
                            erp.coupa_invoices.push(record);
                            (201, "{}".to_owned())
                        }
                    }
                    ("GET", t) if t.starts_with("/api/invoices?") => {
                        let found: Vec<&Value> = erp
                            .coupa_invoices
                            .iter()
                            .filter(|i| {
                                t.contains(&format!(
                                    "invoice-number={}",
                                    i["invoice-number"].as_str().unwrap()
                                ))
                            })
                            .collect();
                        (200, serde_json::to_string(&found).unwrap())
                    }
                    _ => (404, "{}".to_owned()),
                };
                if fault == Some("lost") {
                    // Stored, but the answer never arrives.
                    return Ok(());
                }
                (status, reply)
            }
        };
        common::reply(&mut out, status, &reply)?;
    }
    Ok(())
}

fn pusher(
    addr: &str,
) -> Pusher<HyperTransport<hyper_util::client::legacy::connect::HttpConnector>> {
    let client = Client::builder(TokioExecutor::new()).build_http();
    let mut pusher = Pusher::new(HyperTransport::new(
        client,
        &format!("http://{addr}"),
        ErpAuth::Header(Secret::new("Bearer erp-token")),
    ));
    pusher.backoff = Duration::from_millis(5);
    pusher.max_backoff = Duration::from_millis(20);
    pusher
}

fn accounts() -> NetSuiteAccounts {
    NetSuiteAccounts {
        subsidiary: "1".into(),
        expense_account: "6120".into(),
        payable_account: "2010".into(),
        currency: Some("1".into()),
        department: Some("42".into()),
    }
}

#[tokio::test]
async fn a_netsuite_journal_entry_is_posted_once_through_failures() {
    let erp = Arc::new(Mutex::new(Erp {
        faults: vec!["503", "lost", "503"],
        ..Erp::default()
    }));
    let addr = serve(erp.clone());
    let request = netsuite_journal_entry(&invoice(InvoiceStatus::Final), &accounts()).unwrap();
    let outcome = pusher(&addr).push(&request).await.unwrap();
    assert_eq!(outcome, PushOutcome::Posted { attempts: 4 });

    let erp = erp.lock().unwrap();
    assert_eq!(
        erp.journal_entries.len(),
        1,
        "one record, however many attempts"
    );
    let entry = &erp.journal_entries["routero-RT-acme-prod-2026-11"];
    assert_eq!(entry["tranDate"], "2026-11-30");
    let items = entry["line"]["items"].as_array().unwrap();
    assert_eq!(
        items.len(),
        3,
        "two debits (the zero line left out) and the credit"
    );
    assert_eq!(items[0]["debit"].to_string(), "1234.56");
    assert_eq!(items[0]["department"]["id"], "42");
    assert_eq!(items[1]["debit"].to_string(), "0.01");
    assert_eq!(items[2]["credit"].to_string(), "1234.57");
    assert_eq!(items[2]["account"]["id"], "2010");
    assert!(
        erp.requests
            .iter()
            .all(|(_, _, key)| key.as_deref() == Some("routero-RT-acme-prod-2026-11")),
        "every attempt carries the idempotency key"
    );
}

#[tokio::test]
async fn a_coupa_invoice_is_posted_once_when_the_answer_is_lost() {
    let erp = Arc::new(Mutex::new(Erp {
        faults: vec!["lost", "503"],
        ..Erp::default()
    }));
    let addr = serve(erp.clone());
    let supplier = CoupaSupplier {
        supplier_id: "77".into(),
    };
    let request = coupa_invoice(&invoice(InvoiceStatus::Final), &supplier).unwrap();
    let outcome = pusher(&addr).push(&request).await.unwrap();
    assert_eq!(
        outcome,
        PushOutcome::AlreadyPosted,
        "the lost answer's post landed"
    );
    // Pushing again (a rerun of the job) posts nothing either.
    assert_eq!(
        pusher(&addr).push(&request).await.unwrap(),
        PushOutcome::AlreadyPosted
    );

    let erp = erp.lock().unwrap();
    assert_eq!(erp.writes, 1);
    let posted = &erp.coupa_invoices[0];
    assert_eq!(posted["invoice-number"], "RT-acme-prod-2026-11");
    assert_eq!(posted["supplier"]["id"], "77");
    assert_eq!(posted["currency"]["code"], "USD");
    let lines = posted["invoice-lines"].as_array().unwrap();
    let sum: Decimal = lines.iter().map(|l| d(&l["total"].to_string())).sum();
    assert_eq!(sum, d("1234.57"));
}

#[tokio::test]
async fn refusals_and_drafts_are_typed_errors() {
    assert!(matches!(
        netsuite_journal_entry(&invoice(InvoiceStatus::Draft), &accounts()),
        Err(ErpError::NotFinal { .. })
    ));
    let erp = Arc::new(Mutex::new(Erp::default()));
    let addr = serve(erp.clone());
    let mut request = netsuite_journal_entry(&invoice(InvoiceStatus::Final), &accounts()).unwrap();
    request.path = "/services/rest/record/v1/nosuchrecord".into();
    match pusher(&addr).push(&request).await {
        Err(ErpError::Rejected { status: 404, .. }) => {}
        other => panic!("{other:?}"),
    }
    assert_eq!(
        erp.lock().unwrap().requests.len(),
        1,
        "a refusal is not retried"
    );

    let always = Arc::new(Mutex::new(Erp {
        faults: vec!["503"; 20],
        ..Erp::default()
    }));
    let addr = serve(always.clone());
    let mut pusher = pusher(&addr);
    pusher.max_attempts = 3;
    let request = netsuite_journal_entry(&invoice(InvoiceStatus::Final), &accounts()).unwrap();
    match pusher.push(&request).await {
        Err(ErpError::GaveUp { attempts: 3, .. }) => {}
        other => panic!("{other:?}"),
    }
    assert_eq!(always.lock().unwrap().writes, 0);
}
