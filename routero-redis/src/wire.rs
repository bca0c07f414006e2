//! The queue's wire format: explicit, versioned structs owned by this crate, converted
//! to and from the core types by hand, so that a change of a core type never silently
//! changes what sits in Redis.
//!
//! Version 1 is JSON with short field names; money is a decimal string, never a float.
//! An entry that does not decode is reported as corrupt, never skipped.

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
use serde::{Deserialize, Serialize};

/// The format version this crate writes.
pub(crate) const VERSION: u8 = 1;

#[derive(Serialize, Deserialize)]
pub(crate) struct WireBatch {
    v: u8,
    id: String,
    shard: u16,
    events: Vec<WireEvent>,
}

#[derive(Serialize, Deserialize)]
struct WireEvent {
    /// Request id.
    rid: String,
    /// Event time, microseconds since the Unix epoch, UTC.
    t: i64,
    org: String,
    ws: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    team: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    cust: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    tags: BTreeMap<String, String>,
    /// Provider.
    p: String,
    /// Model.
    m: String,
    /// Usage, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    u: Option<WireUsage>,
    /// Exact cost (decimal string), when priced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    cost: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    cur: Option<String>,
    /// Price version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pv: Option<String>,
    /// Priced model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pm: Option<String>,
    /// Why unpriced, in words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    why: Option<String>,
    /// Why unpriced, its code (`UnpricedReason`); absent in entries written before
    /// reasons were typed, which decode as `other` with their words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    rc: Option<String>,
    /// Billing mode: `managed` or `byok`.
    mode: String,
    /// Success.
    ok: bool,
    #[serde(default)]
    partial: bool,
}

#[derive(Serialize, Deserialize)]
struct WireUsage {
    i: u64,
    cr: u64,
    cw5: u64,
    cw1: u64,
    o: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
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
    tier: String,
}

/// Encodes a batch.
pub(crate) fn encode(batch: &SpendBatch) -> Result<String, String> {
    let wire = WireBatch {
        v: VERSION,
        id: batch.id.as_str().to_owned(),
        shard: batch.shard.0,
        events: batch.events.iter().map(event_to_wire).collect(),
    };
    serde_json::to_string(&wire).map_err(|e| e.to_string())
}

/// Decodes a batch; any inconsistency is an error naming what is wrong.
pub(crate) fn decode(text: &[u8]) -> Result<SpendBatch, String> {
    let wire: WireBatch =
        serde_json::from_slice(text).map_err(|e| format!("not a v{VERSION} batch: {e}"))?;
    if wire.v != VERSION {
        return Err(format!(
            "batch format v{} (this build reads v{VERSION})",
            wire.v
        ));
    }
    let id = BatchId::parse(&wire.id).ok_or_else(|| format!("invalid batch id {:?}", wire.id))?;
    let events = wire
        .events
        .into_iter()
        .map(event_from_wire)
        .collect::<Result<Vec<_>, String>>()?;
    Ok(SpendBatch {
        id,
        shard: ShardId(wire.shard),
        events,
    })
}

fn event_to_wire(e: &SpendEvent) -> WireEvent {
    let a = &e.attribution;
    let (cost, cur, pv, pm, (why, rc)) = match &e.pricing {
        Pricing::Priced {
            cost,
            currency,
            price_version,
            priced_model,
        } => (
            Some(cost.to_string()),
            Some(currency.code().to_owned()),
            Some(price_version.to_string()),
            Some(priced_model.to_string()),
            (None, None),
        ),
        Pricing::Unpriced { reason, detail } => (
            None,
            None,
            None,
            None,
            (Some(detail.clone()), Some(reason.as_str().to_owned())),
        ),
    };
    WireEvent {
        rid: e.request_id.as_str().to_owned(),
        t: e.event_time.timestamp_micros(),
        org: a.who.org.as_str().to_owned(),
        ws: a.who.workspace.as_str().to_owned(),
        team: a.who.team.as_ref().map(|x| x.as_str().to_owned()),
        key: a.who.api_key.as_ref().map(|x| x.as_str().to_owned()),
        user: a.who.user.as_ref().map(|x| x.as_str().to_owned()),
        cust: a.who.customer.as_ref().map(|x| x.as_str().to_owned()),
        tags: a
            .tags
            .iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
        p: e.provider.as_str().to_owned(),
        m: e.model.clone(),
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
            tier: u.service_tier.as_str().to_owned(),
        }),
        cost,
        cur,
        pv,
        pm,
        why,
        rc,
        mode: e.billing_mode.as_str().to_owned(),
        ok: e.outcome == Outcome::Success,
        partial: e.partial,
    }
}

fn id<T>(
    parse: impl Fn(&str) -> Result<T, routero_core::attribution::InvalidId>,
    text: &str,
) -> Result<T, String> {
    parse(text).map_err(|e| e.to_string())
}

fn event_from_wire(w: WireEvent) -> Result<SpendEvent, String> {
    let mut attribution = Attribution::new(id(OrgId::new, &w.org)?, id(WorkspaceId::new, &w.ws)?);
    attribution.who.team = w.team.as_deref().map(|t| id(TeamId::new, t)).transpose()?;
    attribution.who.api_key = w.key.as_deref().map(|t| id(ApiKeyId::new, t)).transpose()?;
    attribution.who.user = w.user.as_deref().map(|t| id(UserId::new, t)).transpose()?;
    attribution.who.customer = w
        .cust
        .as_deref()
        .map(|t| id(CustomerId::new, t))
        .transpose()?;
    attribution.tags = Tags::new(&w.tags).map_err(|e| e.to_string())?;
    let usage =
        w.u.map(|u| -> Result<Usage, String> {
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
            usage.service_tier = ServiceTier::from_provider(&u.tier)
                .ok_or_else(|| format!("unknown service tier {:?}", u.tier))?;
            usage.validate().map_err(|e| e.to_string())?;
            Ok(usage)
        })
        .transpose()?;
    let pricing = match (w.cost, w.why) {
        (Some(cost), None) => Pricing::Priced {
            cost: parse_decimal_exact(&cost).map_err(|e| e.to_string())?,
            currency: w
                .cur
                .as_deref()
                .unwrap_or("USD")
                .parse::<Currency>()
                .map_err(|e| e.to_string())?,
            price_version: Arc::from(w.pv.unwrap_or_default()),
            priced_model: Arc::from(w.pm.unwrap_or_default()),
        },
        (None, Some(detail)) => Pricing::Unpriced {
            reason: match w.rc.as_deref() {
                None => UnpricedReason::Other,
                Some(code) => UnpricedReason::parse(code)
                    .ok_or_else(|| format!("unknown unpriced reason {code:?}"))?,
            },
            detail,
        },
        _ => return Err("an event must carry exactly one of cost and why".to_owned()),
    };
    Ok(SpendEvent {
        request_id: id(RequestId::new, &w.rid)?,
        event_time: DateTime::<Utc>::from_timestamp_micros(w.t)
            .ok_or_else(|| format!("time {} out of range", w.t))?,
        attribution,
        provider: Provider::parse(&w.p).map_err(|e| e.to_string())?,
        model: w.m,
        usage,
        pricing,
        billing_mode: w.mode.parse::<BillingMode>()?,
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

    #[test]
    fn batches_round_trip_exactly() {
        let mut unpriced = sample_event("acme", 9, "0");
        unpriced.pricing = Pricing::Unpriced {
            reason: UnpricedReason::UnknownModel,
            detail: "unknown model \"x\" for provider openai".into(),
        };
        unpriced.usage = None;
        unpriced.outcome = Outcome::Failure;
        unpriced.attribution.tags = Tags::new([("env", "prod")]).unwrap();
        let batch = SpendBatch {
            id: BatchId::new(7, 3),
            shard: ShardId(2),
            events: vec![sample_event("acme", 1, "0.000012345678901234567"), unpriced],
        };
        let text = encode(&batch).unwrap();
        assert!(
            text.contains("\"cost\":\"0.000012345678901234567\""),
            "money travels as a string: {text}"
        );
        assert_eq!(decode(text.as_bytes()).unwrap(), batch);
        // An entry written before reasons were typed keeps its words, as `other`.
        let legacy = text.replace(",\"rc\":\"unknown_model\"", "");
        assert_ne!(legacy, text);
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
    fn corrupt_entries_are_errors() {
        assert!(decode(b"{}").is_err());
        assert!(decode(br#"{"v":2,"id":"a","shard":0,"events":[]}"#).is_err());
        let bad_id = encode(&SpendBatch {
            id: BatchId::new(1, 1),
            shard: ShardId(0),
            events: vec![sample_event("acme", 1, "1")],
        })
        .unwrap()
        .replace("acme-req-1", "bad\\nid");
        assert!(
            decode(bad_id.as_bytes())
                .unwrap_err()
                .contains("control character")
        );
    }
}
