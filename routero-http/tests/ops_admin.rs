//! The operations listener's admin API over a store holding two quarantined batches:
//! one undecodable entry (raw bytes), one batch that replays.

use std::sync::Arc;

use bytes::Bytes;
use chrono::Utc;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use routero_core::conformance::sample_event;
use routero_core::memory::MemoryStore;
use routero_core::port::{FencingToken, SpendStore};
use routero_core::quarantine::{QuarantineApply, QuarantineReason};
use routero_core::spend::{BatchId, QueuePosition, ShardId, SpendBatch};
use routero_http::ops::Ops;
use serde_json::Value;

const TOKEN: &str = "admin-token-0123456789";

async fn call(
    ops: &Ops,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> (StatusCode, Value) {
    let mut request = Request::builder().method(method).uri(path);
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let response = ops
        .answer(
            request
                .body(Full::new(Bytes::from(body.to_owned())))
                .unwrap(),
        )
        .await;
    let status = response.status();
    let kind = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let value: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    if status.is_client_error() || status.is_server_error() {
        assert_eq!(kind, "application/problem+json", "{status}: {value}");
    }
    (status, value)
}

#[tokio::test]
async fn the_quarantine_is_listed_replayed_and_discarded_with_the_admin_token() {
    let store = Arc::new(MemoryStore::new());
    let set_aside = |n: u64, events, raw: Option<&'static [u8]>, reason| {
        let store = store.clone();
        async move {
            let batch = SpendBatch {
                id: BatchId::new(5, n),
                shard: ShardId(0),
                events,
            };
            let expected = (n > 1).then(|| QueuePosition::new(n - 1, 0));
            store
                .quarantine(QuarantineApply {
                    shard: ShardId(0),
                    token: FencingToken(1),
                    expected,
                    through: QueuePosition::new(n, 0),
                    batch: &batch,
                    raw,
                    reason,
                    detail: "test",
                    at: Utc::now(),
                })
                .await
                .unwrap();
        }
    };
    set_aside(1, Vec::new(), Some(b"xx"), QuarantineReason::Corrupt).await;
    set_aside(
        2,
        vec![sample_event("acme", 1, "0.25")],
        None,
        QuarantineReason::Other,
    )
    .await;
    let ops = Ops::install().unwrap().admin(TOKEN, store.clone());

    let (status, problem) = call(&ops, Method::GET, "/admin/quarantine", None, "").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{problem}");
    let (status, _) = call(
        &ops,
        Method::GET,
        "/admin/quarantine",
        Some("admin-token-0123456788"),
        "",
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    let (status, list) = call(&ops, Method::GET, "/admin/quarantine", Some(TOKEN), "").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list.as_array().unwrap().len(), 2, "{list}");
    assert_eq!(list[0]["raw"], "eHg=", "the bytes, in base64");
    assert_eq!(list[0]["reason"], "corrupt");
    assert_eq!(list[1]["state"], "quarantined");
    assert!(list[1].get("raw").is_none());

    // Undecodable bytes cannot be replayed; the batch stays.
    let (status, problem) = call(
        &ops,
        Method::POST,
        "/admin/quarantine/1/replay",
        Some(TOKEN),
        "",
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
    assert!(
        problem["type"]
            .as_str()
            .unwrap()
            .ends_with("/replay-failed")
    );

    // A discard needs a reason.
    let (status, _) = call(
        &ops,
        Method::POST,
        "/admin/quarantine/1/discard",
        Some(TOKEN),
        "",
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = call(
        &ops,
        Method::POST,
        "/admin/quarantine/1/discard",
        Some(TOKEN),
        r#"{"reason": "  "}"#,
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, done) = call(
        &ops,
        Method::POST,
        "/admin/quarantine/1/discard",
        Some(TOKEN),
        r#"{"reason": "hand-written garbage"}"#,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{done}");
    let (status, problem) = call(
        &ops,
        Method::POST,
        "/admin/quarantine/1/discard",
        Some(TOKEN),
        r#"{"reason": "again"}"#,
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "{problem}");

    // The other replays once.
    let (status, _) = call(
        &ops,
        Method::POST,
        "/admin/quarantine/2/replay",
        Some(TOKEN),
        "",
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = call(
        &ops,
        Method::POST,
        "/admin/quarantine/2/replay",
        Some(TOKEN),
        "",
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(store.totals().successes, 1, "applied once");

    for (method, path) in [
        (Method::POST, "/admin/quarantine/999/replay"),
        (Method::POST, "/admin/quarantine/x/replay"),
        (Method::DELETE, "/admin/quarantine/2"),
        (Method::GET, "/admin/other"),
    ] {
        let (status, _) = call(&ops, method, path, Some(TOKEN), "").await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
    }
    let (_, list) = call(&ops, Method::GET, "/admin/quarantine", Some(TOKEN), "").await;
    assert_eq!(list[0]["state"], "discarded");
    assert_eq!(list[0]["reason"], "corrupt");
    assert_eq!(list[0]["release_reason"], "hand-written garbage");
    assert_eq!(list[1]["state"], "replayed");
}

/// The scheduler's run records through the admin API: listed, filtered, a refused
/// run retried; bad filters are 400s.
#[tokio::test]
async fn job_runs_are_listed_and_a_refused_one_retried() {
    use routero_core::schedule::{JobRuns, MemoryJobRuns, RunOutcome};

    let runs = Arc::new(MemoryJobRuns::new());
    let now = Utc::now();
    for (period, outcome) in [
        ("acme-prod/2026-10", RunOutcome::Done("posted".into())),
        (
            "acme-prod/2026-11",
            RunOutcome::Refused("the ERP refused the record with 400: bad account".into()),
        ),
    ] {
        runs.claim("erp-push", period, FencingToken(3), "c1", now)
            .await
            .unwrap();
        runs.finish("erp-push", period, FencingToken(3), &outcome, now)
            .await
            .unwrap();
    }
    let ops = Ops::install()
        .unwrap()
        .admin(TOKEN, Arc::new(MemoryStore::new()))
        .admin_jobs(runs.clone());

    let (status, all) = call(&ops, Method::GET, "/admin/jobs", Some(TOKEN), "").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(all.as_array().unwrap().len(), 2, "{all}");
    let (status, refused) = call(
        &ops,
        Method::GET,
        "/admin/jobs?job=erp-push&state=refused",
        Some(TOKEN),
        "",
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(refused[0]["period"], "acme-prod/2026-11");
    assert_eq!(refused[0]["state"], "refused");
    assert_eq!(refused[0]["attempts"], 1);
    assert!(
        refused[0]["error"]
            .as_str()
            .unwrap()
            .contains("bad account")
    );
    for bad in [
        "/admin/jobs?state=gone",
        "/admin/jobs?limit=0",
        "/admin/jobs?x=1",
    ] {
        assert_eq!(
            call(&ops, Method::GET, bad, Some(TOKEN), "").await.0,
            StatusCode::BAD_REQUEST
        );
    }
    assert_eq!(
        call(&ops, Method::GET, "/admin/jobs", None, "").await.0,
        StatusCode::UNAUTHORIZED
    );

    let retry = |period: &'static str| {
        let ops = &ops;
        async move {
            call(
                ops,
                Method::POST,
                "/admin/jobs/retry",
                Some(TOKEN),
                &format!(r#"{{"job": "erp-push", "period": "{period}"}}"#),
            )
            .await
        }
    };
    let (status, body) = retry("acme-prod/2026-11").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, problem) = retry("acme-prod/2026-10").await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert!(
        problem["type"]
            .as_str()
            .unwrap()
            .ends_with("/not-retryable"),
        "{problem}"
    );
    assert_eq!(retry("acme-prod/2026-09").await.0, StatusCode::NOT_FOUND);
    assert_eq!(
        call(&ops, Method::POST, "/admin/jobs/retry", Some(TOKEN), "{}")
            .await
            .0,
        StatusCode::BAD_REQUEST
    );
    let (_, failed) = call(
        &ops,
        Method::GET,
        "/admin/jobs?state=failed",
        Some(TOKEN),
        "",
    )
    .await;
    assert_eq!(failed[0]["period"], "acme-prod/2026-11");
}
