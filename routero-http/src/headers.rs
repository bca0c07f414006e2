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
use http::header::HeaderValue;
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

/// Whether a byte is left as it is by [`escape`].
fn header_safe(byte: u8) -> bool {
    byte.is_ascii_alphanumeric()
        || matches!(byte, b'-' | b'.' | b'_' | b'~' | b':' | b'/' | b'@' | b'+')
}

/// Percent-encodes every byte outside a conservative set of header-safe characters.
pub fn escape(text: &str) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if header_safe(byte) {
            out.push(char::from(byte));
        } else {
            let _ = write!(out, "%{byte:02X}");
        }
    }
    out
}

/// Sets `name` to `text`, percent-encoded as by [`escape`]; copied once when it
/// needs no encoding, as model names and versions nearly always do. (Escaped text
/// is always a valid header value.)
fn insert_escaped(headers: &mut HeaderMap, name: http::header::HeaderName, text: &str) {
    let value = if text.bytes().all(header_safe) {
        HeaderValue::from_str(text)
    } else {
        HeaderValue::from_str(&escape(text))
    };
    if let Ok(value) = value {
        headers.insert(name, value);
    }
}

/// The header names, built once (`from_static` is checked at compile time here).
mod name {
    use http::header::HeaderName;

    pub(super) const COST: HeaderName = HeaderName::from_static("x-routero-cost");
    pub(super) const CURRENCY: HeaderName = HeaderName::from_static("x-routero-currency");
    pub(super) const PROVIDER: HeaderName = HeaderName::from_static("x-routero-provider");
    pub(super) const MODEL: HeaderName = HeaderName::from_static("x-routero-model");
    pub(super) const PRICE_VERSION: HeaderName = HeaderName::from_static("x-routero-price-version");
    pub(super) const INPUT: HeaderName = HeaderName::from_static("x-routero-input-tokens");
    pub(super) const CACHE_READ: HeaderName =
        HeaderName::from_static("x-routero-cache-read-tokens");
    pub(super) const CACHE_WRITE_5M: HeaderName =
        HeaderName::from_static("x-routero-cache-write-5m-tokens");
    pub(super) const CACHE_WRITE_1H: HeaderName =
        HeaderName::from_static("x-routero-cache-write-1h-tokens");
    pub(super) const OUTPUT: HeaderName = HeaderName::from_static("x-routero-output-tokens");
    pub(super) const REASONING: HeaderName = HeaderName::from_static("x-routero-reasoning-tokens");
    pub(super) const WEB_SEARCH: HeaderName =
        HeaderName::from_static("x-routero-web-search-requests");
    pub(super) const SERVICE_TIER: HeaderName = HeaderName::from_static("x-routero-service-tier");
    pub(super) const UNPRICED: HeaderName = HeaderName::from_static("x-routero-unpriced");
    pub(super) const UNPRICED_DETAIL: HeaderName =
        HeaderName::from_static("x-routero-unpriced-detail");
}

/// Sets the cost headers of a priced request on `headers`: one allocation per value
/// at most, the names built once.
pub fn insert_cost(headers: &mut HeaderMap, cost: &Cost) {
    let usage = cost.usage();
    let total = bytes::Bytes::from(cost.total().normalize().to_string());
    if let Ok(total) = HeaderValue::from_maybe_shared(total) {
        headers.insert(name::COST, total);
    }
    headers.insert(
        name::CURRENCY,
        HeaderValue::from_static(cost.currency().code()),
    );
    insert_escaped(headers, name::PROVIDER, cost.priced_provider().as_str());
    insert_escaped(headers, name::MODEL, cost.priced_model());
    insert_escaped(headers, name::PRICE_VERSION, cost.price_version());
    headers.insert(name::INPUT, HeaderValue::from(usage.input_tokens));
    headers.insert(name::CACHE_READ, HeaderValue::from(usage.cache_read_tokens));
    headers.insert(
        name::CACHE_WRITE_5M,
        HeaderValue::from(usage.cache_write_5m_tokens),
    );
    headers.insert(
        name::CACHE_WRITE_1H,
        HeaderValue::from(usage.cache_write_1h_tokens),
    );
    headers.insert(name::OUTPUT, HeaderValue::from(usage.output_tokens));
    if let Some(reasoning) = usage.reasoning_tokens {
        headers.insert(name::REASONING, HeaderValue::from(reasoning));
    }
    if usage.web_search_requests > 0 {
        headers.insert(
            name::WEB_SEARCH,
            HeaderValue::from(usage.web_search_requests),
        );
    }
    headers.insert(
        name::SERVICE_TIER,
        HeaderValue::from_static(usage.service_tier.as_str()),
    );
    headers.remove(name::UNPRICED);
    headers.remove(name::UNPRICED_DETAIL);
}

/// Sets the headers of a request that could not be priced (never a zero cost):
/// `x-routero-unpriced` is the reason's stable code (`no_usage`, `unknown_model`, …),
/// `x-routero-unpriced-detail` the error's words, escaped.
pub fn insert_unpriced(headers: &mut HeaderMap, reason: UnpricedReason, detail: &str) {
    headers.remove(name::COST);
    headers.remove(name::CURRENCY);
    headers.insert(name::UNPRICED, HeaderValue::from_static(reason.as_str()));
    insert_escaped(headers, name::UNPRICED_DETAIL, detail);
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
        assert_eq!(get("x-routero-cache-read-tokens"), "12288");
        assert_eq!(get("x-routero-cache-write-5m-tokens"), "1024");
        assert_eq!(get("x-routero-cache-write-1h-tokens"), "2048");
        assert_eq!(get("x-routero-output-tokens"), "612");
        assert_eq!(get("x-routero-web-search-requests"), "2");
        assert_eq!(get("x-routero-service-tier"), "standard");
        assert!(
            h.get("x-routero-reasoning-tokens").is_none(),
            "not reported, not zero"
        );
        assert!(h.keys().all(|k| k.as_str().starts_with(PREFIX)));
        assert!(h.keys().all(|k| NAMES.contains(&k.as_str())), "{h:?}");
    }

    #[test]
    fn the_names_set_are_the_names_listed() {
        let set = [
            name::COST,
            name::CURRENCY,
            name::PROVIDER,
            name::MODEL,
            name::PRICE_VERSION,
            name::INPUT,
            name::CACHE_READ,
            name::CACHE_WRITE_5M,
            name::CACHE_WRITE_1H,
            name::OUTPUT,
            name::REASONING,
            name::WEB_SEARCH,
            name::SERVICE_TIER,
            name::UNPRICED,
            name::UNPRICED_DETAIL,
        ];
        assert_eq!(set.map(|n| n.as_str().to_owned()), NAMES.map(str::to_owned));
    }

    /// A response priced after it was marked unpriced (or the other way round)
    /// carries one state only; a reasoning count and an escaped model are set.
    #[test]
    fn one_state_at_a_time() {
        let mut usage = Usage::tokens(10, 5);
        usage.reasoning_tokens = Some(3);
        let cost = PriceTable::bundled()
            .cost(&Provider::OpenAi, "o4-mini", &usage, at())
            .unwrap();
        let mut headers = HeaderMap::new();
        insert_unpriced(&mut headers, UnpricedReason::NoUsage, "none");
        insert_cost(&mut headers, &cost);
        assert!(headers.get("x-routero-unpriced").is_none());
        assert!(headers.get("x-routero-unpriced-detail").is_none());
        assert_eq!(headers["x-routero-reasoning-tokens"], "3");
        insert_unpriced(&mut headers, UnpricedReason::NoUsage, "none");
        assert!(headers.get("x-routero-cost").is_none());
        assert!(headers.get("x-routero-currency").is_none());
        assert_eq!(headers["x-routero-unpriced"], "no_usage");
        let mut headers = HeaderMap::new();
        insert_escaped(&mut headers, name::MODEL, "m\u{e9}t\u{e9}o v2");
        assert_eq!(headers["x-routero-model"], "m%C3%A9t%C3%A9o%20v2");
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
