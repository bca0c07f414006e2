//! The billing API on arbitrary requests: a method, a request target (path and query,
//! which the API's query parser reads) and a body. It never panics, never answers a
//! 5xx over the in-memory store, and every refusal is a problem+json document.
#![no_main]

use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use chrono::{TimeZone, Utc};
use http::{Method, Request};
use libfuzzer_sys::fuzz_target;
use routero_core::attribution::OrgId;
use routero_core::conformance::{apply_first_step, sample_day, sample_event};
use routero_core::memory::{ManualClock, MemoryStore};
use routero_http::api::{ApiConfig, BillingApi, Principal, Role};

struct World {
    runtime: tokio::runtime::Runtime,
    api: BillingApi,
    principal: Principal,
}

fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let store = Arc::new(MemoryStore::new());
        runtime.block_on(async {
            let events: Vec<_> = (0..20u64)
                .map(|seq| sample_event("acme", seq, &format!("0.{seq:03}")))
                .collect();
            apply_first_step(&*store, &events, sample_day().and_hms_opt(23, 0, 0).unwrap().and_utc())
                .await;
        });
        let clock = Arc::new(ManualClock::new(Utc.with_ymd_and_hms(2026, 11, 10, 12, 0, 0).unwrap()));
        let api = BillingApi::new(store.clone(), store.clone(), store, clock, ApiConfig::default());
        let principal = Principal {
            org: OrgId::new("acme").unwrap(),
            workspaces: None,
            teams: None,
            role: Role::Admin,
        };
        World { runtime, api, principal }
    })
}

const METHODS: [Method; 5] = [Method::GET, Method::POST, Method::PUT, Method::DELETE, Method::HEAD];

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else { return };
    let method = METHODS[usize::from(selector) % METHODS.len()].clone();
    let (target, body) = match rest.iter().position(|&b| b == b'\n') {
        Some(at) => (&rest[..at], &rest[at + 1..]),
        None => (rest, &[][..]),
    };
    let Ok(target) = std::str::from_utf8(target) else { return };
    // What hyper would have refused before the API sees it is out of scope.
    let Ok(uri) = target.parse::<http::Uri>() else { return };
    let mut request = Request::builder().method(method).uri(uri);
    if selector & 0x80 != 0 {
        request = request.header("idempotency-key", "fuzz-key");
    }
    let Ok(request) = request.body(Bytes::copy_from_slice(body)) else { return };
    let world = world();
    let principal = (selector & 0x40 == 0).then_some(&world.principal);
    let response = world.runtime.block_on(world.api.handle(principal, request));
    let status = response.status();
    assert!(!status.is_server_error(), "{status} for {target:?}: {:?}", response.body());
    if status.is_client_error() {
        assert_eq!(
            response.headers().get(http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()),
            Some("application/problem+json"),
            "{status} for {target:?}"
        );
        let problem: serde_json::Value = serde_json::from_slice(response.body()).expect("problem JSON");
        assert!(problem.get("type").is_some() && problem.get("status").is_some(), "{problem}");
    }
});
