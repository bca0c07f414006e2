//! The queue's wire format: explicit, versioned structs owned by this crate, converted
//! to and from the core types by hand, so that a change of a core type never silently
//! changes what sits in Redis.
//!
//! Version 1 is JSON with short field names. Version 2 (`binary`) carries the same
//! fields in a binary layout that decodes in under half the time (the drain decodes
//! every event). Money is a decimal string in both, never a float. This build writes
//! version 2 and reads both, so entries queued by an earlier build still drain; a
//! reader must be at least as new as the writers, so coworkers upgrade first.
//! An entry that does not decode is reported as corrupt, never skipped.
//!
//! [`encode`] and [`decode`] are public for tools that read the queue's bytes
//! themselves, such as the `raw` bytes of an entry the drain set aside as
//! unreadable:
//!
//! ```
//! use routero_core::conformance::sample_event;
//! use routero_core::spend::{BatchId, ShardId, SpendBatch};
//!
//! let batch = SpendBatch {
//!     id: BatchId::new(1, 1),
//!     shard: ShardId(0),
//!     events: vec![sample_event("acme", 1, "0.000125")],
//! };
//! let bytes = routero_redis::wire::encode(&batch);
//! assert_eq!(routero_redis::wire::decode(&bytes).unwrap(), batch);
//! assert!(routero_redis::wire::decode(b"{not a batch").is_err());
//! ```

mod binary;

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use routero_core::attribution::{
    ApiKeyId, Attribution, BillingMode, CustomerId, OrgId, RequestId, Tags, TeamId, UserId,
    WorkspaceId,
};
use routero_core::money::parse_decimal_exact;
use routero_core::spend::{
    BatchId, Outcome, Pricing, ShardId, SpendBatch, SpendEvent, UnpricedReason,
};
use routero_core::{Currency, Provider, ServiceTier, Usage};
use serde::Deserialize;

/// The version of the JSON format.
const JSON_VERSION: u8 = 1;

// Text fields are `Text`s: encoding borrows the event's text, and decoding borrows the
// entry's bytes (in JSON, wherever a string has no escape), so a field's text is copied
// once, into the decoded event, or not at all when the event before had the same
// (`Recent`).
#[derive(Deserialize)]
struct WireBatch<'a> {
    v: u8,
    #[serde(borrow)]
    id: Text<'a>,
    shard: u16,
    #[serde(borrow)]
    events: Vec<WireEvent<'a>>,
}

#[derive(Deserialize)]
struct WireEvent<'a> {
    /// Request id.
    #[serde(borrow)]
    rid: Text<'a>,
    /// Event time, microseconds since the Unix epoch, UTC.
    t: i64,
    #[serde(borrow)]
    org: Text<'a>,
    #[serde(borrow)]
    ws: Text<'a>,
    #[serde(default)]
    #[serde(borrow)]
    team: Option<Text<'a>>,
    #[serde(default)]
    #[serde(borrow)]
    key: Option<Text<'a>>,
    #[serde(default)]
    #[serde(borrow)]
    user: Option<Text<'a>>,
    #[serde(default)]
    #[serde(borrow)]
    cust: Option<Text<'a>>,
    #[serde(default)]
    #[serde(borrow)]
    tags: BTreeMap<Text<'a>, Text<'a>>,
    /// Provider.
    #[serde(borrow)]
    p: Text<'a>,
    /// Model.
    #[serde(borrow)]
    m: Text<'a>,
    /// Usage, when known.
    #[serde(default)]
    #[serde(borrow)]
    u: Option<WireUsage<'a>>,
    /// Exact cost (decimal string), when priced.
    #[serde(default)]
    #[serde(borrow)]
    cost: Option<Text<'a>>,
    #[serde(default)]
    #[serde(borrow)]
    cur: Option<Text<'a>>,
    /// Price version.
    #[serde(default)]
    #[serde(borrow)]
    pv: Option<Text<'a>>,
    /// Priced model.
    #[serde(default)]
    #[serde(borrow)]
    pm: Option<Text<'a>>,
    /// Why unpriced, in words.
    #[serde(default)]
    #[serde(borrow)]
    why: Option<Text<'a>>,
    /// Why unpriced, its code (`UnpricedReason`); absent in entries written before
    /// reasons were typed, which decode as `other` with their words.
    #[serde(default)]
    #[serde(borrow)]
    rc: Option<Text<'a>>,
    /// Billing mode: `managed` or `byok`.
    #[serde(borrow)]
    mode: Text<'a>,
    /// Success.
    ok: bool,
    #[serde(default)]
    partial: bool,
}

#[derive(Deserialize)]
struct WireUsage<'a> {
    i: u64,
    cr: u64,
    cw5: u64,
    cw1: u64,
    o: u64,
    #[serde(default)]
    r: Option<u64>,
    #[serde(default)]
    ai: u64,
    #[serde(default)]
    ii: u64,
    #[serde(default)]
    ao: u64,
    #[serde(default)]
    io: u64,
    #[serde(default)]
    ws: u64,
    #[serde(default)]
    img: u64,
    #[serde(default)]
    ims: u64,
    #[serde(default)]
    oms: u64,
    #[serde(borrow)]
    tier: Text<'a>,
}

/// A string field, borrowed from the entry when it has no escape. (`Cow<str>` itself
/// always deserializes owned, outside a field serde's derive special-cases.)
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Text<'a>(Cow<'a, str>);

impl<'a> Text<'a> {
    fn new(text: &'a str) -> Text<'a> {
        Text(Cow::Borrowed(text))
    }

    fn of<T: AsRef<str>>(value: &'a Option<T>) -> Option<Text<'a>> {
        value.as_ref().map(|v| Text::new(v.as_ref()))
    }

    fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Text<'de>;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string")
            }

            fn visit_borrowed_str<E: serde::de::Error>(
                self,
                v: &'de str,
            ) -> Result<Self::Value, E> {
                Ok(Text(Cow::Borrowed(v)))
            }

            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Text(Cow::Owned(v.to_owned())))
            }

            fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(Text(Cow::Owned(v)))
            }
        }
        deserializer.deserialize_str(Visitor)
    }
}

/// Why bytes are not a batch: what is wrong and where, in words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireError(String);

impl std::fmt::Display for WireError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for WireError {}

/// Encodes a batch, in version 2.
pub fn encode(batch: &SpendBatch) -> Vec<u8> {
    binary::write(&WireBatch {
        v: 2,
        id: Text::new(batch.id.as_str()),
        shard: batch.shard.0,
        events: batch.events.iter().map(event_to_wire).collect(),
    })
}

/// Decodes a batch of either version; any inconsistency is an error naming what is
/// wrong.
pub fn decode(bytes: &[u8]) -> Result<SpendBatch, WireError> {
    decode_any(bytes).map_err(WireError)
}

fn decode_any(bytes: &[u8]) -> Result<SpendBatch, String> {
    let mut recent = Recent::default();
    if bytes.first() == Some(&binary::MAGIC[0]) {
        let (id, shard, mut wire) = binary::read(bytes)?;
        let mut events = Vec::with_capacity(wire.count());
        while let Some(event) = wire.next()? {
            events.push(event_from_wire(&event, &mut recent)?);
        }
        return batch(&id, shard, events);
    }
    let wire: WireBatch<'_> =
        serde_json::from_slice(bytes).map_err(|e| format!("neither a v2 nor a v1 batch: {e}"))?;
    if wire.v != JSON_VERSION {
        return Err(format!(
            "batch format v{} (this build reads v1 and v2)",
            wire.v
        ));
    }
    let events = (wire.events.iter())
        .map(|event| event_from_wire(event, &mut recent))
        .collect::<Result<Vec<_>, String>>()?;
    batch(&wire.id, wire.shard, events)
}

fn batch(id: &Text<'_>, shard: u16, events: Vec<SpendEvent>) -> Result<SpendBatch, String> {
    Ok(SpendBatch {
        id: BatchId::parse(id.as_str())
            .ok_or_else(|| format!("invalid batch id {:?}", id.as_str()))?,
        shard: ShardId(shard),
        events,
    })
}

fn event_to_wire(e: &SpendEvent) -> WireEvent<'_> {
    let a = &e.attribution;
    let (cost, cur, pv, pm, (why, rc)) = match &e.pricing {
        Pricing::Priced {
            cost,
            currency,
            price_version,
            priced_model,
        } => (
            Some(Text(Cow::Owned(cost.to_string()))),
            Some(Text::new(currency.code())),
            Some(Text::new(price_version)),
            Some(Text::new(priced_model)),
            (None, None),
        ),
        Pricing::Unpriced { reason, detail } => (
            None,
            None,
            None,
            None,
            (Some(Text::new(detail)), Some(Text::new(reason.as_str()))),
        ),
    };
    WireEvent {
        rid: Text::new(e.request_id.as_str()),
        t: e.event_time.timestamp_micros(),
        org: Text::new(a.who.org.as_str()),
        ws: Text::new(a.who.workspace.as_str()),
        team: Text::of(&a.who.team),
        key: Text::of(&a.who.api_key),
        user: Text::of(&a.who.user),
        cust: Text::of(&a.who.customer),
        tags: a
            .tags
            .iter()
            .map(|(k, v)| (Text::new(k), Text::new(v)))
            .collect(),
        p: Text::new(e.provider.as_str()),
        m: Text::new(&e.model),
        u: e.usage.as_ref().map(|u| WireUsage {
            i: u.input_tokens,
            cr: u.cache_read_tokens,
            cw5: u.cache_write_5m_tokens,
            cw1: u.cache_write_1h_tokens,
            o: u.output_tokens,
            r: u.reasoning_tokens,
            ai: u.audio_input_tokens,
            ii: u.image_input_tokens,
            ao: u.audio_output_tokens,
            io: u.image_output_tokens,
            ws: u.web_search_requests,
            img: u.images_generated,
            ims: u.input_duration_ms,
            oms: u.output_duration_ms,
            tier: Text::new(u.service_tier.as_str()),
        }),
        cost,
        cur,
        pv,
        pm,
        why,
        rc,
        mode: Text::new(e.billing_mode.as_str()),
        ok: e.outcome == Outcome::Success,
        partial: e.partial,
    }
}

/// The last value decoded for each repeated field of a batch. A shard's events mostly
/// share their org, workspace, team, key and price labels, so an event with the same
/// text as the one before shares that value (validated once, its text held once)
/// instead of building it again.
#[derive(Default)]
struct Recent {
    org: Option<OrgId>,
    workspace: Option<WorkspaceId>,
    team: Option<TeamId>,
    api_key: Option<ApiKeyId>,
    user: Option<UserId>,
    customer: Option<CustomerId>,
    price_version: Option<Arc<str>>,
    priced_model: Option<Arc<str>>,
}

/// The value of `text`: the one in `slot` when it has the same text, else a new one
/// from `make`, which then takes the slot.
fn reuse<T: Clone>(
    slot: &mut Option<T>,
    text: &str,
    as_str: impl Fn(&T) -> &str,
    make: impl FnOnce(&str) -> Result<T, String>,
) -> Result<T, String> {
    if let Some(held) = slot.as_ref()
        && as_str(held) == text
    {
        return Ok(held.clone());
    }
    let made = make(text)?;
    *slot = Some(made.clone());
    Ok(made)
}

fn id<T>(
    parse: impl Fn(&str) -> Result<T, routero_core::attribution::InvalidId>,
) -> impl FnOnce(&str) -> Result<T, String> {
    move |text| parse(text).map_err(|e| e.to_string())
}

fn event_from_wire(w: &WireEvent<'_>, recent: &mut Recent) -> Result<SpendEvent, String> {
    let mut attribution = Attribution::new(
        reuse(
            &mut recent.org,
            w.org.as_str(),
            OrgId::as_str,
            id(OrgId::new),
        )?,
        reuse(
            &mut recent.workspace,
            w.ws.as_str(),
            WorkspaceId::as_str,
            id(WorkspaceId::new),
        )?,
    );
    let who = &mut attribution.who;
    who.team = (w.team.as_ref())
        .map(|t| {
            reuse(
                &mut recent.team,
                t.as_str(),
                TeamId::as_str,
                id(TeamId::new),
            )
        })
        .transpose()?;
    who.api_key = (w.key.as_ref())
        .map(|t| {
            reuse(
                &mut recent.api_key,
                t.as_str(),
                ApiKeyId::as_str,
                id(ApiKeyId::new),
            )
        })
        .transpose()?;
    who.user = (w.user.as_ref())
        .map(|t| {
            reuse(
                &mut recent.user,
                t.as_str(),
                UserId::as_str,
                id(UserId::new),
            )
        })
        .transpose()?;
    who.customer = (w.cust.as_ref())
        .map(|t| {
            reuse(
                &mut recent.customer,
                t.as_str(),
                CustomerId::as_str,
                id(CustomerId::new),
            )
        })
        .transpose()?;
    if !w.tags.is_empty() {
        attribution.tags = Tags::new(w.tags.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .map_err(|e| e.to_string())?;
    }
    let usage = (w.u.as_ref())
        .map(|u| -> Result<Usage, String> {
            let mut usage = Usage::tokens(u.i, u.o);
            usage.cache_read_tokens = u.cr;
            usage.cache_write_5m_tokens = u.cw5;
            usage.cache_write_1h_tokens = u.cw1;
            usage.reasoning_tokens = u.r;
            usage.audio_input_tokens = u.ai;
            usage.image_input_tokens = u.ii;
            usage.audio_output_tokens = u.ao;
            usage.image_output_tokens = u.io;
            usage.web_search_requests = u.ws;
            usage.images_generated = u.img;
            usage.input_duration_ms = u.ims;
            usage.output_duration_ms = u.oms;
            usage.service_tier = ServiceTier::from_provider(u.tier.as_str())
                .ok_or_else(|| format!("unknown service tier {:?}", u.tier.as_str()))?;
            usage.validate().map_err(|e| e.to_string())?;
            Ok(usage)
        })
        .transpose()?;
    let label = |slot: &mut Option<Arc<str>>, text: &Option<Text<'_>>| {
        let text = text.as_ref().map_or("", Text::as_str);
        reuse(slot, text, |held| held, |text| Ok(Arc::from(text)))
    };
    let pricing = match (&w.cost, &w.why) {
        (Some(cost), None) => Pricing::Priced {
            cost: parse_decimal_exact(cost.as_str()).map_err(|e| e.to_string())?,
            currency: w
                .cur
                .as_ref()
                .map_or("USD", Text::as_str)
                .parse::<Currency>()
                .map_err(|e| e.to_string())?,
            price_version: label(&mut recent.price_version, &w.pv)?,
            priced_model: label(&mut recent.priced_model, &w.pm)?,
        },
        (None, Some(detail)) => Pricing::Unpriced {
            reason: match w.rc.as_ref().map(Text::as_str) {
                None => UnpricedReason::Other,
                Some(code) => UnpricedReason::parse(code)
                    .ok_or_else(|| format!("unknown unpriced reason {code:?}"))?,
            },
            detail: detail.as_str().to_owned(),
        },
        _ => return Err("an event must carry exactly one of cost and why".to_owned()),
    };
    Ok(SpendEvent {
        request_id: id(RequestId::new)(w.rid.as_str())?,
        event_time: DateTime::<Utc>::from_timestamp_micros(w.t)
            .ok_or_else(|| format!("time {} out of range", w.t))?,
        attribution,
        provider: Provider::parse(w.p.as_str()).map_err(|e| e.to_string())?,
        model: w.m.as_str().to_owned(),
        usage,
        pricing,
        billing_mode: w.mode.as_str().parse::<BillingMode>()?,
        outcome: if w.ok {
            Outcome::Success
        } else {
            Outcome::Failure
        },
        partial: w.partial,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use routero_core::conformance::sample_event;

    /// A priced event and an unpriced one with a tag, escapes and all.
    fn sample_batch() -> SpendBatch {
        let mut unpriced = sample_event("acme", 9, "0");
        unpriced.pricing = Pricing::Unpriced {
            reason: UnpricedReason::UnknownModel,
            detail: "unknown model \"x\" for provider openai".into(),
        };
        unpriced.usage = None;
        unpriced.outcome = Outcome::Failure;
        unpriced.attribution.tags = Tags::new([("env", "prod")]).unwrap();
        SpendBatch {
            id: BatchId::new(7, 3),
            shard: ShardId(2),
            events: vec![sample_event("acme", 1, "0.000012345678901234567"), unpriced],
        }
    }

    /// `sample_batch` as version 1 wrote it.
    const V1: &str = r#"{"v":1,"id":"00000000000000000000000000000007-3","shard":2,"events":[{"rid":"acme-req-1","t":1793620801000000,"org":"acme","ws":"acme-ws","team":"team-1","key":"key-1","user":"user-1","cust":"cust-1","p":"openai","m":"gpt-4o","u":{"i":101,"cr":1,"cw5":0,"cw1":0,"o":11,"ai":0,"ii":0,"ao":0,"io":0,"ws":0,"img":0,"ims":0,"oms":0,"tier":"standard"},"cost":"0.000012345678901234567","cur":"USD","pv":"conformance","pm":"gpt-4o","mode":"byok","ok":true,"partial":false},{"rid":"acme-req-9","t":1793620809000000,"org":"acme","ws":"acme-ws","team":"team-0","key":"key-4","user":"user-1","cust":"cust-1","tags":{"env":"prod"},"p":"openai","m":"gpt-4o","why":"unknown model \"x\" for provider openai","rc":"unknown_model","mode":"byok","ok":false,"partial":false}]}"#;

    /// Every field set, none at its default, text that needs escaping in JSON.
    fn full_event() -> SpendEvent {
        let mut event = sample_event("org \"q\" \\ é", 4, "12345.000000000000000000001");
        event.attribution.tags = Tags::new([("env", "prod"), ("région", "eu-west\\1")]).unwrap();
        let usage = event.usage.as_mut().unwrap();
        usage.output_tokens = 300;
        usage.cache_write_5m_tokens = 3;
        usage.cache_write_1h_tokens = 9_999_999_999;
        usage.reasoning_tokens = Some(0);
        usage.audio_input_tokens = 5;
        usage.image_input_tokens = 6;
        usage.audio_output_tokens = 7;
        usage.image_output_tokens = 8;
        usage.web_search_requests = 9;
        usage.images_generated = 127;
        usage.input_duration_ms = 128;
        usage.output_duration_ms = 1 << 32;
        usage.service_tier = ServiceTier::Priority;
        if let Pricing::Priced { currency, .. } = &mut event.pricing {
            *currency = Currency::EUR;
        }
        event.billing_mode = BillingMode::Managed;
        event.provider = Provider::Anthropic;
        event.model = "claude-☃".to_owned();
        event.partial = true;
        event
    }

    #[test]
    fn batches_round_trip_exactly() {
        let mut batch = sample_batch();
        batch.events.push(full_event());
        let mut no_who = sample_event("acme", 2, "1");
        no_who.attribution = Attribution::new("acme".parse().unwrap(), "w".parse().unwrap());
        no_who.usage.as_mut().unwrap().reasoning_tokens = None;
        batch.events.push(no_who);
        let bytes = encode(&batch);
        assert_eq!(bytes[..4], binary::MAGIC);
        assert_eq!(decode(&bytes).unwrap(), batch);
        let empty = SpendBatch {
            events: Vec::new(),
            ..sample_batch()
        };
        assert_eq!(decode(&encode(&empty)).unwrap(), empty);
    }

    #[test]
    fn version_1_entries_still_decode() {
        assert_eq!(decode(V1.as_bytes()).unwrap(), sample_batch());
        // An entry written before reasons were typed keeps its words, as `other`.
        let legacy = V1.replace(",\"rc\":\"unknown_model\"", "");
        assert_ne!(legacy, V1);
        let old = decode(legacy.as_bytes()).unwrap();
        assert_eq!(
            old.events[1].pricing,
            Pricing::Unpriced {
                reason: UnpricedReason::Other,
                detail: "unknown model \"x\" for provider openai".into(),
            }
        );
    }

    #[test]
    fn repeated_values_are_shared_and_never_mixed_up() {
        let mut batch = sample_batch();
        let mut other = sample_event("acme", 2, "2");
        other.attribution.who.team = None;
        other.attribution.who.user = Some("user-1".parse().unwrap());
        if let Pricing::Priced { price_version, .. } = &mut other.pricing {
            *price_version = Arc::from("");
        }
        batch.events.insert(1, other);
        batch.events.push(sample_event("acme", 1, "3"));
        batch.events.push(sample_event("beta", 1, "4"));
        let decoded = decode(&encode(&batch)).unwrap();
        assert_eq!(decoded, batch);
        let who = |n: usize| &decoded.events[n].attribution.who;
        assert_eq!(who(4).org.as_str(), "beta");
        let org = |n: usize| who(n).org.as_str().as_ptr();
        assert_eq!(org(0), org(3), "the same org is held once");
    }

    #[test]
    fn corrupt_entries_are_errors() {
        assert!(decode(b"").is_err());
        assert!(decode(b"{}").is_err());
        assert!(decode(br#"{"v":2,"id":"a","shard":0,"events":[]}"#).is_err());
        let bad_id = V1.replace("acme-req-1", "bad\\nid");
        assert!(
            decode(bad_id.as_bytes())
                .unwrap_err()
                .to_string()
                .contains("control character")
        );
        let mut batch = sample_batch();
        batch.events.push(full_event());
        let good = encode(&batch);
        // Cut anywhere, the entry is an error, never a shorter batch.
        for end in 0..good.len() {
            assert!(decode(&good[..end]).is_err(), "cut at {end}");
        }
        let mut newer = good.clone();
        newer[3] = 3;
        assert!(
            decode(&newer)
                .unwrap_err()
                .to_string()
                .contains("batch format v3")
        );
        let mut longer = good.clone();
        longer.push(0);
        assert!(
            decode(&longer)
                .unwrap_err()
                .to_string()
                .contains("after the last event")
        );
        // Any byte changed: an error or another well-formed batch, never a panic.
        for at in 0..good.len() {
            for flip in [0x01, 0x80, 0xff] {
                let mut bad = good.clone();
                bad[at] ^= flip;
                let _ = decode(&bad);
            }
        }
        // A count no entry could hold, a number past 64 bits, bytes that are not
        // UTF-8, an unknown flag.
        let header = |count: &[u8]| {
            let mut bytes = binary::MAGIC.to_vec();
            bytes.extend_from_slice(&[1, b'x', 0, 0]);
            bytes.extend_from_slice(count);
            bytes
        };
        let huge = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01];
        assert!(
            decode(&header(&huge))
                .unwrap_err()
                .to_string()
                .contains("cannot fit")
        );
        assert!(
            decode(&header(&[0xff; 9]))
                .unwrap_err()
                .to_string()
                .contains("ends inside")
        );
        assert!(
            decode(&header(&[0xff; 11]))
                .unwrap_err()
                .to_string()
                .contains("past 64 bits")
        );
        let id_at = 4 + 1;
        let mut not_utf8 = good.clone();
        not_utf8[id_at] = 0xff;
        assert!(
            decode(&not_utf8)
                .unwrap_err()
                .to_string()
                .contains("not UTF-8")
        );
        let flags_at = 4 + 1 + BatchId::new(7, 3).as_str().len() + 2 + 1;
        let mut unknown_flag = good.clone();
        unknown_flag[flags_at + 1] |= 0x80;
        assert!(
            decode(&unknown_flag)
                .unwrap_err()
                .to_string()
                .contains("unknown flags")
        );
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;
    use routero_core::conformance::sample_event;

    /// Text an id may hold: 1 to 40 characters, none a control character, any plane.
    fn id_text() -> impl Strategy<Value = String> {
        "[^\\p{Cc}]{1,40}"
    }

    fn event() -> impl Strategy<Value = SpendEvent> {
        (
            (
                id_text(),
                id_text(),
                prop::option::of(id_text()),
                prop::option::of(id_text()),
            ),
            (
                any::<i64>(),
                prop::collection::btree_map(id_text(), id_text(), 0..3),
            ),
            (
                0..1_000_000_000u64,
                0..1_000_000_000u64,
                prop::option::of(0..1_000u64),
            ),
            (
                any::<u64>(),
                0..29u32,
                any::<bool>(),
                prop::option::of(".{0,60}"),
            ),
            (any::<bool>(), any::<bool>(), any::<bool>()),
        )
            .prop_map(|(who, (micros, tags), counts, price, flags)| {
                let (request, org, team, user) = who;
                let mut event = sample_event("acme", 1, "1");
                event.request_id = RequestId::new(&request).unwrap();
                event.attribution.who.org = OrgId::new(&org).unwrap();
                event.attribution.who.team = team.map(|t| TeamId::new(&t).unwrap());
                event.attribution.who.user = user.map(|u| UserId::new(&u).unwrap());
                event.attribution.tags = Tags::new(tags).unwrap();
                event.event_time = DateTime::<Utc>::from_timestamp_micros(micros % (1 << 52))
                    .unwrap_or(event.event_time);
                let (input, output, reasoning) = counts;
                event.usage = flags.0.then(|| {
                    let mut usage = Usage::tokens(input, output);
                    usage.reasoning_tokens = reasoning;
                    usage
                });
                let (mantissa, scale, negative, detail) = price;
                event.pricing = match detail {
                    None => Pricing::Priced {
                        cost: rust_decimal::Decimal::from_i128_with_scale(
                            i128::from(mantissa) * if negative { -1 } else { 1 },
                            scale,
                        ),
                        currency: Currency::EUR,
                        price_version: Arc::from(request.as_str()),
                        priced_model: Arc::from(""),
                    },
                    Some(detail) => Pricing::Unpriced {
                        reason: UnpricedReason::NoUsage,
                        detail,
                    },
                };
                event.outcome = if flags.1 {
                    Outcome::Success
                } else {
                    Outcome::Failure
                };
                event.partial = flags.2;
                event
            })
    }

    proptest! {
        #[test]
        fn any_batch_round_trips(events in prop::collection::vec(event(), 0..6), shard: u16) {
            let batch = SpendBatch {
                id: BatchId::new(u128::from(shard) << 70, 9),
                shard: ShardId(shard),
                events,
            };
            prop_assert_eq!(decode(&encode(&batch)).unwrap(), batch);
        }

        #[test]
        fn any_bytes_are_a_batch_or_an_error(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
            let _ = decode(&bytes);
            let mut entry = binary::MAGIC.to_vec();
            entry.extend_from_slice(&bytes);
            let _ = decode(&entry);
        }
    }
}
