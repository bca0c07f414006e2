//! Every provider fixture body against its hand-derived expected usage.

use std::fs;
use std::path::Path;

use routero_core::extract::{self, ExtractError};
use routero_core::{Provider, ServiceTier};
use rust_decimal::Decimal;
use serde_json::Value;

mod common;

use common::{count, fixtures};

fn provider_of(dir: &str, name: &str) -> Provider {
    match dir {
        "openai_chat" | "openai_responses" | "openai_embeddings" => Provider::OpenAi,
        "azure_openai" => Provider::Azure,
        "gemini" if name.starts_with("vertex") => Provider::VertexAi,
        other => Provider::parse(other).unwrap(),
    }
}

/// The body and headers of a `.json` or `.http.json` fixture.
fn read_body(path: &Path) -> (Vec<u8>, Vec<(String, String)>) {
    let text = fs::read(path).unwrap();
    if path.to_string_lossy().ends_with(".http.json") {
        let wrapped: Value = serde_json::from_slice(&text).unwrap();
        let headers = wrapped["headers"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
            .collect();
        (serde_json::to_vec(&wrapped["body"]).unwrap(), headers)
    } else {
        (text, Vec::new())
    }
}

#[test]
fn every_json_fixture_extracts_its_expected_usage() {
    let mut checked = 0;
    for (dir_name, file, path) in common::fixture_files() {
        if !file.ends_with(".json")
            || file.ends_with(".expected.json")
            || file.ends_with(".events.json")
        {
            continue;
        }
        let stem = file
            .trim_end_matches(".http.json")
            .trim_end_matches(".json");
        let expected: Value = common::expected(&path, stem);
        let provider = provider_of(&dir_name, stem);
        let (body, headers) = read_body(&path);
        let headers: Vec<(&str, &str)> = headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let got = extract::from_body(&provider, &body, &headers)
            .unwrap_or_else(|e| panic!("{dir_name}/{file}: {e}"));
        let u = got.usage;
        let what = format!("{dir_name}/{file}");
        assert_eq!(
            Some(u.input_tokens),
            count(&expected, "input_tokens"),
            "{what} input"
        );
        assert_eq!(
            Some(u.cache_read_tokens),
            count(&expected, "cache_read_tokens"),
            "{what} cache read"
        );
        assert_eq!(
            Some(u.cache_write_tokens()),
            count(&expected, "cache_write_tokens"),
            "{what} cache write"
        );
        assert_eq!(
            Some(u.output_tokens),
            count(&expected, "output_tokens"),
            "{what} output"
        );
        assert_eq!(
            Some(u.total_input_tokens()),
            count(&expected, "total_input_tokens"),
            "{what} total input"
        );
        match expected.get("reasoning_tokens") {
            Some(Value::Null) | None => {
                assert_eq!(u.reasoning_tokens, None, "{what} reasoning")
            }
            Some(v) => assert_eq!(
                u.reasoning_tokens.unwrap_or(0),
                v.as_u64().unwrap(),
                "{what} reasoning"
            ),
        }
        for (key, value) in [
            ("cache_write_5m_tokens", u.cache_write_5m_tokens),
            ("cache_write_1h_tokens", u.cache_write_1h_tokens),
            ("web_search_requests", u.web_search_requests),
            ("web_search_calls", u.web_search_requests),
            ("audio_input_tokens", u.audio_input_tokens),
            ("audio_output_tokens", u.audio_output_tokens),
            ("image_input_tokens", u.image_input_tokens),
        ] {
            if let Some(want) = count(&expected, key) {
                assert_eq!(value, want, "{what} {key}");
            }
        }
        if let Some(tier) = expected
            .get("service_tier")
            .or_else(|| expected.get("traffic_type"))
            .and_then(Value::as_str)
        {
            assert_eq!(
                Some(u.service_tier),
                ServiceTier::from_provider(tier),
                "{what} tier"
            );
        }
        if let Some(cost) = expected.get("provider_reported_cost_usd") {
            let want = Decimal::from_str_exact(&cost.to_string()).unwrap();
            assert_eq!(got.provider_cost, Some(want), "{what} provider cost");
        }
        if let Some(byok) = expected.get("is_byok").and_then(Value::as_bool) {
            assert_eq!(got.is_byok, Some(byok), "{what} byok");
        }
        checked += 1;
    }
    assert_eq!(checked, 23, "every JSON fixture is checked");
}

#[test]
fn claude_bodies_on_vertex_follow_anthropic_rules() {
    let body = fs::read(fixtures().join("anthropic/message_cache_web_search.json")).unwrap();
    let got = extract::from_body(&Provider::VertexAi, &body, &[]).unwrap();
    assert_eq!(got.usage.input_tokens, 2113);
    assert_eq!(got.usage.cache_write_1h_tokens, 2048);
    assert_eq!(got.model.as_deref(), Some("claude-sonnet-4-5-20250929"));
}

#[test]
fn bodies_without_usage_are_unknown_not_zero() {
    let err =
        extract::from_body(&Provider::OpenAi, br#"{"id":"x","choices":[]}"#, &[]).unwrap_err();
    assert!(matches!(err, ExtractError::NoUsage { .. }));
    let err = extract::from_body(&Provider::Anthropic, br#"{"usage": null}"#, &[]).unwrap_err();
    assert!(matches!(err, ExtractError::NoUsage { .. }));
}

#[test]
fn malformed_and_hostile_bodies_get_typed_errors() {
    let cases: [(&Provider, &[u8]); 6] = [
        (&Provider::OpenAi, b"{\"usage\": {\"prompt_tokens\": 10"),
        (&Provider::OpenAi, b"not json"),
        (&Provider::OpenAi, br#"{"usage": {"prompt_tokens": -5, "completion_tokens": 1}}"#),
        (&Provider::OpenAi, br#"{"usage": {"prompt_tokens": 5, "completion_tokens": 1, "prompt_tokens_details": {"cached_tokens": 9}}}"#),
        (&Provider::Anthropic, br#"{"usage": {"input_tokens": 99999999999999999999}}"#),
        (&Provider::Gemini, br#"{"usageMetadata": {"promptTokenCount": "12"}}"#),
    ];
    for (provider, body) in cases {
        let err = extract::from_body(provider, body, &[]).unwrap_err();
        assert!(
            matches!(
                err,
                ExtractError::Malformed { .. } | ExtractError::InvalidUsage { .. }
            ),
            "{}: {err:?}",
            String::from_utf8_lossy(body)
        );
    }
    let err = extract::from_body(
        &Provider::OpenAi,
        br#"{"usage": {"prompt_tokens": 20000000000, "completion_tokens": 1}}"#,
        &[],
    )
    .unwrap_err();
    assert!(matches!(err, ExtractError::InvalidUsage { .. }));
    let err = extract::from_body(
        &Provider::OpenAi,
        br#"{"service_tier": "scale", "usage": {"prompt_tokens": 2, "completion_tokens": 1}}"#,
        &[],
    )
    .unwrap_err();
    assert!(matches!(err, ExtractError::UnpricedTier { .. }));
}
