//! `routero-cost`: the cost of one provider response, from the command line.
//!
//! ```text
//! cargo run --release --example routero-cost -- [--prices FILE]... --provider NAME \
//!     [--model NAME] [--at RFC3339] [FILE]
//! ```
//!
//! Reads one response from FILE (or stdin) and prints one JSON object with the usage
//! and the exact cost. The input is detected: a JSON body, a `{"status", "headers",
//! "body"}` capture, an SSE stream transcript, a binary AWS event-stream, or a JSON
//! array of stream chunks (Gemini without `alt=sse`, or decoded Bedrock events).
//!
//! `--prices` loads Routero's TOML format or a LiteLLM JSON map instead of the bundled
//! table; given more than once, each file is layered over the ones before it.
//!
//! `routero-cost prices diff OLD NEW [--json]` compares two price files (either
//! format; `bundled` names the bundled table): models added and removed, and each
//! rate that changed with its old and new value (per million tokens; fees per unit)
//! and relative change; `--json` prints the same as one JSON object.
//!
//! Exit codes: 0 priced; 1 unreadable file; 2 bad arguments; 3 malformed input;
//! 4 unknown model; 5 usage unknown (the response carries none); 6 usage that the
//! model's price cannot price (tier, category or overflow); 7 invalid price file.

use std::io::{Read, Write as _};
use std::process::ExitCode;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use routero::extract::{self, ExtractError, Extraction, StreamExtractor, eventstream};
use routero::price;
use routero::{CostError, PriceTable, Provider};
use serde_json::{Map, Value, json};

const USAGE: &str =
    "usage: routero-cost [--prices FILE]... --provider NAME [--model NAME] [--at RFC3339] [FILE]
       routero-cost prices diff OLD NEW [--json]";

struct Failure {
    code: u8,
    message: String,
}

fn fail(code: u8, message: impl Into<String>) -> Failure {
    Failure {
        code,
        message: message.into(),
    }
}

struct Args {
    prices: Vec<String>,
    provider: Provider,
    model: Option<String>,
    at: Option<DateTime<Utc>>,
    file: Option<String>,
}

fn parse_args() -> Result<Args, Failure> {
    let mut args = std::env::args().skip(1);
    let (mut prices, mut provider, mut model, mut at, mut file) =
        (Vec::new(), None, None, None, None);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| {
            args.next()
                .ok_or_else(|| fail(2, format!("{name} needs a value\n{USAGE}")))
        };
        match arg.as_str() {
            "--prices" => prices.push(value("--prices")?),
            "--provider" => {
                let name = value("--provider")?;
                provider = Some(Provider::parse(&name).map_err(|e| fail(2, e.to_string()))?);
            }
            "--model" => model = Some(value("--model")?),
            "--at" => {
                let text = value("--at")?;
                let parsed = DateTime::parse_from_rfc3339(&text)
                    .map_err(|e| fail(2, format!("--at {text}: {e}")))?
                    .to_utc();
                at = Some(parsed);
            }
            "-h" | "--help" => return Err(fail(0, USAGE)),
            flag if flag.starts_with("--") => {
                return Err(fail(2, format!("unknown option {flag}\n{USAGE}")));
            }
            path if file.is_none() => file = Some(path.to_owned()),
            extra => return Err(fail(2, format!("unexpected argument {extra}\n{USAGE}"))),
        }
    }
    Ok(Args {
        prices,
        provider: provider.ok_or_else(|| fail(2, format!("--provider is required\n{USAGE}")))?,
        model,
        at,
        file,
    })
}

fn load_prices(paths: &[String]) -> Result<Arc<PriceTable>, Failure> {
    let mut table: Option<PriceTable> = None;
    for path in paths {
        let text = std::fs::read_to_string(path).map_err(|e| fail(1, format!("{path}: {e}")))?;
        let (loaded, _report) = price::load(&text).map_err(|e| fail(7, format!("{path}: {e}")))?;
        table = Some(match table {
            None => loaded,
            Some(base) => base
                .with_overrides(&loaded)
                .map_err(|e| fail(7, format!("{path}: {e}")))?,
        });
    }
    Ok(table.map_or_else(PriceTable::bundled, Arc::new))
}

fn extract_error(e: ExtractError) -> Failure {
    let code = match e {
        ExtractError::NoUsage { .. } => 5,
        ExtractError::UnpricedTier { .. } => 6,
        _ => 3,
    };
    fail(code, e.to_string())
}

/// Feeds a whole stream to an extractor.
fn stream(provider: &Provider, bytes: &[u8]) -> Result<Extraction, ExtractError> {
    let mut extractor = StreamExtractor::new(provider);
    extractor.push(bytes)?;
    extractor.finish()
}

/// Detects the input's shape and extracts its usage.
fn extract_input(provider: &Provider, bytes: &[u8]) -> Result<Extraction, ExtractError> {
    let malformed = |reason: String| ExtractError::Malformed {
        provider: provider.clone(),
        reason,
    };
    if *provider == Provider::Bedrock && looks_like_eventstream(bytes) {
        return stream(provider, bytes);
    }
    let text = std::str::from_utf8(bytes).map_err(|e| malformed(format!("not UTF-8 text: {e}")))?;
    let trimmed = text.trim_start();
    if trimmed.starts_with('{') {
        let value: Value = serde_json::from_str(trimmed).map_err(|e| malformed(e.to_string()))?;
        if let (Some(headers), Some(body)) = (
            value.get("headers").and_then(Value::as_object),
            value.get("body"),
        ) {
            let headers: Vec<(&str, &str)> = headers
                .iter()
                .filter_map(|(k, v)| Some((k.as_str(), v.as_str()?)))
                .collect();
            let body = serde_json::to_vec(body).map_err(|e| malformed(e.to_string()))?;
            return extract::from_body(provider, &body, &headers);
        }
        return extract::from_body(provider, trimmed.as_bytes(), &[]);
    }
    if trimmed.starts_with('[') {
        let items: Vec<Value> =
            serde_json::from_str(trimmed).map_err(|e| malformed(e.to_string()))?;
        let wire = if *provider == Provider::Bedrock {
            decoded_events_to_frames(&items)
                .ok_or_else(|| malformed("expected [{\"eventType\": payload}, …]".into()))?
        } else {
            // A JSON-array stream: each element is one chunk.
            let mut sse = Vec::new();
            for item in &items {
                sse.extend_from_slice(b"data: ");
                sse.extend(serde_json::to_vec(item).map_err(|e| malformed(e.to_string()))?);
                sse.extend_from_slice(b"\n\n");
            }
            sse
        };
        return stream(provider, &wire);
    }
    stream(provider, bytes)
}

fn looks_like_eventstream(bytes: &[u8]) -> bool {
    let mut decoder = eventstream::EventStreamDecoder::new();
    let prelude = &bytes[..bytes.len().min(12)];
    prelude.len() == 12
        && decoder
            .push(prelude, &mut |_| -> Result<
                (),
                eventstream::EventStreamError,
            > { Ok(()) })
            .is_ok()
}

fn decoded_events_to_frames(items: &[Value]) -> Option<Vec<u8>> {
    let mut wire = Vec::new();
    for item in items {
        for (event_type, payload) in item.as_object()? {
            let headers = [
                (":event-type", event_type.as_str()),
                (":message-type", "event"),
            ];
            wire.extend(eventstream::encode(
                &headers,
                &serde_json::to_vec(payload).ok()?,
            ));
        }
    }
    Some(wire)
}

fn run() -> Result<Value, Failure> {
    let args = parse_args()?;
    let table = load_prices(&args.prices)?;
    let mut input = Vec::new();
    match &args.file {
        Some(path) => input = std::fs::read(path).map_err(|e| fail(1, format!("{path}: {e}")))?,
        None => {
            std::io::stdin()
                .read_to_end(&mut input)
                .map_err(|e| fail(1, format!("stdin: {e}")))?;
        }
    }
    let extraction = extract_input(&args.provider, &input).map_err(extract_error)?;
    let model = args
        .model
        .clone()
        .or_else(|| extraction.model.clone())
        .ok_or_else(|| {
            fail(
                4,
                format!(
                    "unknown model: the {} response names none; pass --model",
                    args.provider
                ),
            )
        })?;
    let at = args.at.unwrap_or_else(Utc::now);
    let cost = table
        .cost(&args.provider, &model, &extraction.usage, at)
        .map_err(|e| {
            let code = match e {
                CostError::UnknownModel { .. } | CostError::NoPriceInForce { .. } => 4,
                _ => 6,
            };
            fail(code, e.to_string())
        })?;

    let u = &extraction.usage;
    let mut usage = Map::new();
    usage.insert("input_tokens".into(), json!(u.input_tokens));
    usage.insert("cache_read_tokens".into(), json!(u.cache_read_tokens));
    usage.insert("cache_write_tokens".into(), json!(u.cache_write_tokens()));
    usage.insert(
        "cache_write_5m_tokens".into(),
        json!(u.cache_write_5m_tokens),
    );
    usage.insert(
        "cache_write_1h_tokens".into(),
        json!(u.cache_write_1h_tokens),
    );
    usage.insert("output_tokens".into(), json!(u.output_tokens));
    usage.insert("reasoning_tokens".into(), json!(u.reasoning_tokens));
    for (key, value) in [
        ("audio_input_tokens", u.audio_input_tokens),
        ("image_input_tokens", u.image_input_tokens),
        ("audio_output_tokens", u.audio_output_tokens),
        ("image_output_tokens", u.image_output_tokens),
        ("web_search_requests", u.web_search_requests),
    ] {
        if value > 0 {
            usage.insert(key.into(), json!(value));
        }
    }
    usage.insert("service_tier".into(), json!(u.service_tier.as_str()));
    let lines: Vec<Value> = cost
        .lines()
        .map(|l| {
            json!({
                "category": l.category.as_str(),
                "quantity": l.quantity.normalize().to_string(),
                "unit_price": l.unit_price.normalize().to_string(),
                "amount": l.amount.normalize().to_string(),
            })
        })
        .collect();
    let mut out = json!({
        "provider": args.provider.as_str(),
        "model": model,
        "usage": usage,
        "cost": {
            "currency": cost.currency().code(),
            "total": cost.total().normalize().to_string(),
            "lines": lines,
            "priced_provider": cost.priced_provider().as_str(),
            "priced_model": cost.priced_model(),
            "price_version": cost.price_version(),
        },
    });
    if let Some(reported) = extraction.provider_cost {
        out["provider_reported_cost"] = json!(reported.normalize().to_string());
    }
    Ok(out)
}

/// One table of `prices diff`: a file, or `bundled`.
fn diff_side(path: &str) -> Result<Arc<PriceTable>, Failure> {
    if path == "bundled" {
        return Ok(PriceTable::bundled());
    }
    load_prices(&[path.to_owned()])
}

/// `routero-cost prices diff OLD NEW [--json]`.
fn prices_command(args: &[String]) -> Result<String, Failure> {
    const DIFF_USAGE: &str =
        "usage: routero-cost prices diff OLD NEW [--json]  (OLD, NEW: a price file or `bundled`)";
    let json = args.iter().any(|a| a == "--json");
    let rest: Vec<&String> = args.iter().filter(|a| *a != "--json").collect();
    let [verb, old, new] = rest.as_slice() else {
        return Err(fail(2, DIFF_USAGE));
    };
    if verb.as_str() != "diff" {
        return Err(fail(2, DIFF_USAGE));
    }
    let (old, new) = (diff_side(old)?, diff_side(new)?);
    let d = price::diff(&old, &new);
    if json {
        return serde_json::to_string_pretty(&d).map_err(|e| fail(1, e.to_string()));
    }
    let mut out = format!(
        "{} -> {}: {} added, {} removed, {} rates changed\n",
        old.version(),
        new.version(),
        d.added.len(),
        d.removed.len(),
        d.changed.len()
    );
    for m in &d.added {
        out.push_str(&format!("added    {}/{}\n", m.provider, m.model));
    }
    for m in &d.removed {
        out.push_str(&format!("removed  {}/{}\n", m.provider, m.model));
    }
    let shown =
        |v: Option<rust_decimal::Decimal>| v.map_or_else(|| "-".to_owned(), |v| v.to_string());
    for c in &d.changed {
        let relative = c.relative.map_or_else(String::new, |r| {
            format!(
                " ({:+}%)",
                (r * rust_decimal::Decimal::ONE_HUNDRED)
                    .round_dp(2)
                    .normalize()
            )
        });
        out.push_str(&format!(
            "changed  {}/{} {} {} -> {}{relative}\n",
            c.model.provider,
            c.model.model,
            c.rate,
            shown(c.old),
            shown(c.new)
        ));
    }
    Ok(out.trim_end().to_owned())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("prices") {
        return match prices_command(&args[1..]) {
            Ok(out) => {
                // A reader that stops early (`| head`) is not an error.
                let _ = writeln!(std::io::stdout(), "{out}");
                ExitCode::SUCCESS
            }
            Err(failure) => {
                eprintln!("routero-cost: {}", failure.message.replace('\n', " "));
                ExitCode::from(failure.code)
            }
        };
    }
    match run() {
        Ok(out) => {
            println!("{out}");
            ExitCode::SUCCESS
        }
        Err(failure) if failure.code == 0 => {
            println!("{}", failure.message);
            ExitCode::SUCCESS
        }
        Err(failure) => {
            // One line, whatever the message held.
            eprintln!("routero-cost: {}", failure.message.replace('\n', " "));
            ExitCode::from(failure.code)
        }
    }
}
