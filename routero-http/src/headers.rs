//! The cost of a request on its response: `x-routero-…` headers.
//!
//! | header | value |
//! |---|---|
//! | `x-routero-cost` | the exact cost, a decimal string (`0.0553334`) |
//! | `x-routero-currency` | its currency (`USD`) |
//! | `x-routero-provider` | the provider whose price applied |
//! | `x-routero-model` | the model whose price applied (after normalisation) |
//! | `x-routero-price-version` | the price table's version |
//! | `x-routero-input-tokens` | uncached input tokens |
//! | `x-routero-cache-read-tokens` | cache-read tokens |
//! | `x-routero-cache-write-5m-tokens`, `x-routero-cache-write-1h-tokens` | cache writes by lifetime |
//! | `x-routero-output-tokens` | output tokens, reasoning included |
//! | `x-routero-reasoning-tokens` | reasoning tokens, when reported |
//! | `x-routero-web-search-requests` | web search calls, when any |
//! | `x-routero-service-tier` | the tier priced |
//! | `x-routero-unpriced` | instead of the cost: why the request could not be priced |
//!
//! Values that may hold text a caller or provider controls (model names, reasons,
//! versions) are percent-encoded outside `A–Z a–z 0–9 - . _ ~ : / @ +`, so a header
//! never carries a control character, a line break or a non-ASCII byte.

use http::HeaderMap;
use http::header::{HeaderName, HeaderValue};
use routero_core::Cost;
use routero_core::spend::{Metered, Pricing, UnpricedReason};

/// The headers' common prefix.
pub const PREFIX: &str = "x-routero-";

/// Every header name this module sets.
pub const NAMES: [&str; 15] = [
    "x-routero-cost",
    "x-routero-currency",
    "x-routero-provider",
    "x-routero-model",
    "x-routero-price-version",
    "x-routero-input-tokens",
    "x-routero-cache-read-tokens",
    "x-routero-cache-write-5m-tokens",
    "x-routero-cache-write-1h-tokens",
    "x-routero-output-tokens",
    "x-routero-reasoning-tokens",
    "x-routero-web-search-requests",
    "x-routero-service-tier",
    "x-routero-unpriced",
    "x-routero-unpriced-detail",
];

/// Declares the cost names as trailers (`Trailer: x-routero-cost, …`) on the head of
/// a response whose cost arrives at its end ([`crate::capture::CostCapture`]).
/// HTTP/1.1 servers such as hyper send only declared trailers, and only to a client
/// that asked for them with `TE: trailers`.
pub fn declare_trailers(headers: &mut HeaderMap) {
    headers.insert(
        http::header::TRAILER,
        HeaderValue::from_static(
            "x-routero-cost, x-routero-currency, x-routero-provider, x-routero-model, \
             x-routero-price-version, x-routero-input-tokens, x-routero-cache-read-tokens, \
             x-routero-cache-write-5m-tokens, x-routero-cache-write-1h-tokens, \
             x-routero-output-tokens, x-routero-reasoning-tokens, \
             x-routero-web-search-requests, x-routero-service-tier, x-routero-unpriced, \
             x-routero-unpriced-detail",
        ),
    );
}

/// Percent-encodes every byte outside a conservative set of header-safe characters.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        let safe = byte.is_ascii_alphanumeric()
            || matches!(byte, b'-' | b'.' | b'_' | b'~' | b':' | b'/' | b'@' | b'+');
        if safe {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

fn insert(headers: &mut HeaderMap, name: &'static str, value: &str) {
    // Every value is escaped or numeric, so it is always a valid header value.
    if let Ok(value) = HeaderValue::from_str(value) {
        headers.insert(HeaderName::from_static(name), value);
    }
}

/// Sets the cost headers of a priced request on `headers`.
pub fn insert_cost(headers: &mut HeaderMap, cost: &Cost) {
    let usage = cost.usage();
    insert(
        headers,
        "x-routero-cost",
        &cost.total().normalize().to_string(),
    );
    insert(headers, "x-routero-currency", cost.currency().code());
    insert(
        headers,
        "x-routero-provider",
        &escape(cost.priced_provider().as_str()),
    );
    insert(headers, "x-routero-model", &escape(cost.priced_model()));
    insert(
        headers,
        "x-routero-price-version",
        &escape(cost.price_version()),
    );
    insert(
        headers,
        "x-routero-input-tokens",
        &usage.input_tokens.to_string(),
    );
    insert(
        headers,
        "x-routero-cache-read-tokens",
        &usage.cache_read_tokens.to_string(),
    );
    insert(
        headers,
        "x-routero-cache-write-5m-tokens",
        &usage.cache_write_5m_tokens.to_string(),
    );
    insert(
        headers,
        "x-routero-cache-write-1h-tokens",
        &usage.cache_write_1h_tokens.to_string(),
    );
    insert(
        headers,
        "x-routero-output-tokens",
        &usage.output_tokens.to_string(),
    );
    if let Some(reasoning) = usage.reasoning_tokens {
        insert(
            headers,
            "x-routero-reasoning-tokens",
            &reasoning.to_string(),
        );
    }
    if usage.web_search_requests > 0 {
        insert(
            headers,
            "x-routero-web-search-requests",
            &usage.web_search_requests.to_string(),
        );
    }
    insert(
        headers,
        "x-routero-service-tier",
        usage.service_tier.as_str(),
    );
    headers.remove("x-routero-unpriced");
    headers.remove("x-routero-unpriced-detail");
}

/// Sets the headers of a request that could not be priced (never a zero cost):
/// `x-routero-unpriced` is the reason's stable code (`no_usage`, `unknown_model`, …),
/// `x-routero-unpriced-detail` the error's words, escaped.
pub fn insert_unpriced(headers: &mut HeaderMap, reason: UnpricedReason, detail: &str) {
    for name in ["x-routero-cost", "x-routero-currency"] {
        headers.remove(name);
    }
    insert(headers, "x-routero-unpriced", reason.as_str());
    insert(headers, "x-routero-unpriced-detail", &escape(detail));
}

/// The headers of a metered request: its cost, or why it has none.
pub fn insert_metered(headers: &mut HeaderMap, metered: &Metered) {
    match (&metered.cost, &metered.event.pricing) {
        (Some(cost), _) => insert_cost(headers, cost),
        (None, Pricing::Unpriced { reason, detail }) => insert_unpriced(headers, *reason, detail),
        (None, Pricing::Priced { .. }) => {
            insert_unpriced(headers, UnpricedReason::Other, "priced without its lines")
        }
    }
}

/// A response with its cost headers set.
pub fn with_cost<B>(mut response: http::Response<B>, cost: &Cost) -> http::Response<B> {
    insert_cost(response.headers_mut(), cost);
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use routero_core::{PriceTable, Provider, Usage};

    fn at() -> chrono::DateTime<chrono::Utc> {
        chrono::DateTime::parse_from_rfc3339("2026-11-28T12:00:00Z")
            .unwrap()
            .to_utc()
    }

    #[test]
    fn a_priced_response_carries_its_exact_cost() {
        let mut usage = Usage::tokens(2_113, 612);
        usage.cache_read_tokens = 12_288;
        usage.cache_write_5m_tokens = 1_024;
        usage.cache_write_1h_tokens = 2_048;
        usage.web_search_requests = 2;
        let cost = PriceTable::bundled()
            .cost(
                &Provider::Anthropic,
                "claude-sonnet-4-5-20250929",
                &usage,
                at(),
            )
            .unwrap();
        let response = with_cost(http::Response::new(()), &cost);
        let h = response.headers();
        let get = |name: &str| h.get(name).unwrap().to_str().unwrap();
        assert_eq!(get("x-routero-cost"), "0.0553334");
        assert_eq!(get("x-routero-currency"), "USD");
        assert_eq!(get("x-routero-model"), "claude-sonnet-4-5");
        assert_eq!(get("x-routero-provider"), "anthropic");
        assert_eq!(get("x-routero-price-version"), "routero-2026-11-28");
        assert_eq!(get("x-routero-input-tokens"), "2113");
        assert_eq!(get("x-routero-cache-write-1h-tokens"), "2048");
        assert_eq!(get("x-routero-web-search-requests"), "2");
        assert!(
            h.get("x-routero-reasoning-tokens").is_none(),
            "not reported, not zero"
        );
        assert!(h.keys().all(|k| k.as_str().starts_with(PREFIX)));
        assert!(h.keys().all(|k| NAMES.contains(&k.as_str())), "{h:?}");
    }

    #[test]
    fn the_trailer_declaration_names_every_header() {
        let mut headers = HeaderMap::new();
        declare_trailers(&mut headers);
        let declared: Vec<&str> = headers
            .get(http::header::TRAILER)
            .unwrap()
            .to_str()
            .unwrap()
            .split(", ")
            .collect();
        assert_eq!(declared, NAMES);
    }

    #[test]
    fn caller_text_is_escaped() {
        let mut headers = HeaderMap::new();
        insert_unpriced(
            &mut headers,
            UnpricedReason::UnknownModel,
            "unknown model \"gpt\r\nSet-Cookie: x=1\" for provider openai — ü",
        );
        assert_eq!(headers["x-routero-unpriced"], "unknown_model");
        let value = headers
            .get("x-routero-unpriced-detail")
            .unwrap()
            .to_str()
            .unwrap();
        assert!(!value.contains('\r') && !value.contains('\n') && !value.contains('"'));
        assert!(value.contains("%0D%0ASet-Cookie"), "{value}");
        assert!(
            headers.get("x-routero-cost").is_none(),
            "never a silent zero"
        );
        assert_eq!(escape("openai/gpt-4o:2024"), "openai/gpt-4o:2024");
        assert!(headers.keys().all(|k| NAMES.contains(&k.as_str())));
    }
}
