//! Version 2: the same fields as version 1, in a compact binary layout that decodes
//! without a parser: every string borrowed from the entry, every count a varint.
//!
//! ```text
//! batch   = MAGIC id:str shard:u16le count:varint event*count          (nothing after)
//! event   = flags:u16le rid:str t:i64le org:str ws:str
//!           [team:str] [key:str] [user:str] [cust:str]
//!           [tags: n:varint (key:str value:str)*n]
//!           p:str m:str
//!           [usage: i cr cw5 cw1 o [r] ai ii ao io ws img ims oms :varint tier:str]
//!           [cost:str] [cur:str] [pv:str] [pm:str] [why:str] [rc:str] mode:str
//! str     = len:varint utf8-bytes
//! varint  = unsigned LEB128, at most 10 bytes
//! ```
//!
//! A bracketed field is present when its bit of `flags` is set (`Flag`); a bit this
//! build does not know is an error, as is a duplicate tag, a string that is not UTF-8,
//! a length past the end, or a byte after the last event.

use super::{Text, WireBatch, WireEvent, WireUsage};
use std::collections::BTreeMap;

/// The first four bytes of a version 2 entry. No JSON text starts with a zero byte, so
/// the first byte tells the versions apart.
pub(super) const MAGIC: [u8; 4] = [0, b'R', b'Q', 2];

/// The bits of an event's `flags`: which optional fields follow, and the booleans.
#[derive(Clone, Copy)]
#[repr(u16)]
enum Flag {
    Team = 1 << 0,
    Key = 1 << 1,
    User = 1 << 2,
    Customer = 1 << 3,
    Tags = 1 << 4,
    Usage = 1 << 5,
    Reasoning = 1 << 6,
    Cost = 1 << 7,
    Currency = 1 << 8,
    PriceVersion = 1 << 9,
    PricedModel = 1 << 10,
    Why = 1 << 11,
    ReasonCode = 1 << 12,
    Ok = 1 << 13,
    Partial = 1 << 14,
}

/// Every bit some `Flag` uses.
const KNOWN: u16 = (1 << 15) - 1;

impl Flag {
    fn of(self, present: bool) -> u16 {
        if present { self as u16 } else { 0 }
    }

    fn is_in(self, flags: u16) -> bool {
        flags & self as u16 != 0
    }
}

/// Writes a batch.
pub(super) fn write(batch: &WireBatch<'_>) -> Vec<u8> {
    // About 200 bytes an event; the vector grows if that is short.
    let mut out = Vec::with_capacity(64 + batch.events.len() * 224);
    out.extend_from_slice(&MAGIC);
    put_str(&mut out, batch.id.as_str());
    out.extend_from_slice(&batch.shard.to_le_bytes());
    put_varint(&mut out, batch.events.len() as u64);
    for event in &batch.events {
        put_event(&mut out, event);
    }
    out
}

fn put_event(out: &mut Vec<u8>, e: &WireEvent<'_>) {
    let flags = Flag::Team.of(e.team.is_some())
        | Flag::Key.of(e.key.is_some())
        | Flag::User.of(e.user.is_some())
        | Flag::Customer.of(e.cust.is_some())
        | Flag::Tags.of(!e.tags.is_empty())
        | Flag::Usage.of(e.u.is_some())
        | Flag::Reasoning.of(e.u.as_ref().is_some_and(|u| u.r.is_some()))
        | Flag::Cost.of(e.cost.is_some())
        | Flag::Currency.of(e.cur.is_some())
        | Flag::PriceVersion.of(e.pv.is_some())
        | Flag::PricedModel.of(e.pm.is_some())
        | Flag::Why.of(e.why.is_some())
        | Flag::ReasonCode.of(e.rc.is_some())
        | Flag::Ok.of(e.ok)
        | Flag::Partial.of(e.partial);
    out.extend_from_slice(&flags.to_le_bytes());
    put_str(out, e.rid.as_str());
    out.extend_from_slice(&e.t.to_le_bytes());
    put_str(out, e.org.as_str());
    put_str(out, e.ws.as_str());
    for text in [&e.team, &e.key, &e.user, &e.cust].into_iter().flatten() {
        put_str(out, text.as_str());
    }
    if !e.tags.is_empty() {
        put_varint(out, e.tags.len() as u64);
        for (key, value) in &e.tags {
            put_str(out, key.as_str());
            put_str(out, value.as_str());
        }
    }
    put_str(out, e.p.as_str());
    put_str(out, e.m.as_str());
    if let Some(u) = &e.u {
        for count in [u.i, u.cr, u.cw5, u.cw1, u.o] {
            put_varint(out, count);
        }
        if let Some(r) = u.r {
            put_varint(out, r);
        }
        for count in [u.ai, u.ii, u.ao, u.io, u.ws, u.img, u.ims, u.oms] {
            put_varint(out, count);
        }
        put_str(out, u.tier.as_str());
    }
    for text in [&e.cost, &e.cur, &e.pv, &e.pm, &e.why, &e.rc]
        .into_iter()
        .flatten()
    {
        put_str(out, text.as_str());
    }
    put_str(out, e.mode.as_str());
}

fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push(value.to_le_bytes()[0] | 0x80);
        value >>= 7;
    }
    out.push(value.to_le_bytes()[0]);
}

fn put_str(out: &mut Vec<u8>, text: &str) {
    put_varint(out, text.len() as u64);
    out.extend_from_slice(text.as_bytes());
}

/// Reads the header of a batch written by `write` (`bytes` starts with `MAGIC`): its
/// id, its shard, and its events to read one by one, so that no list of them is built
/// beside the decoded batch.
pub(super) fn read(bytes: &[u8]) -> Result<(Text<'_>, u16, Events<'_>), String> {
    let mut r = Reader { bytes, at: 0 };
    let header = r.take(MAGIC.len(), "the header")?;
    if header[..3] == MAGIC[..3] && header[3] > MAGIC[3] {
        return Err(format!(
            "batch format v{} (this build reads v1 and v2): a newer build wrote it; \
             upgrade the coworkers before the recorders",
            header[3]
        ));
    }
    if header != MAGIC {
        return Err("not a v2 batch: wrong header".to_owned());
    }
    let id = r.text("the batch id")?;
    let shard = u16::from_le_bytes(r.array("the shard")?);
    let count = r.varint("the event count")?;
    // Each event takes at least 14 bytes: no count can ask for more than the entry
    // holds, so a capacity taken from it is bounded by the entry's size.
    let count = usize::try_from(count)
        .ok()
        .filter(|&count| count <= (r.bytes.len() - r.at) / 14)
        .ok_or_else(|| format!("{count} events cannot fit in the entry"))?;
    Ok((id, shard, Events { r, count, read: 0 }))
}

/// The events of a batch, read in order.
pub(super) struct Events<'a> {
    r: Reader<'a>,
    count: usize,
    read: usize,
}

impl<'a> Events<'a> {
    /// How many events the batch holds.
    pub(super) fn count(&self) -> usize {
        self.count
    }

    /// The next event; after the last, `None` once the entry is checked to end there.
    pub(super) fn next(&mut self) -> Result<Option<WireEvent<'a>>, String> {
        if self.read == self.count {
            let r = &self.r;
            return if r.at == r.bytes.len() {
                Ok(None)
            } else {
                Err(format!(
                    "{} bytes after the last event",
                    r.bytes.len() - r.at
                ))
            };
        }
        let event = read_event(&mut self.r).map_err(|e| format!("event {}: {e}", self.read))?;
        self.read += 1;
        Ok(Some(event))
    }
}

fn read_event<'a>(r: &mut Reader<'a>) -> Result<WireEvent<'a>, String> {
    let flags = u16::from_le_bytes(r.array("the flags")?);
    if flags & !KNOWN != 0 {
        return Err(format!("unknown flags {:#06x}", flags & !KNOWN));
    }
    let optional = |flag: Flag, what: &str, r: &mut Reader<'a>| {
        flag.is_in(flags).then(|| r.text(what)).transpose()
    };
    let rid = r.text("the request id")?;
    let t = i64::from_le_bytes(r.array("the time")?);
    let org = r.text("the org")?;
    let ws = r.text("the workspace")?;
    let team = optional(Flag::Team, "the team", r)?;
    let key = optional(Flag::Key, "the api key", r)?;
    let user = optional(Flag::User, "the user", r)?;
    let cust = optional(Flag::Customer, "the customer", r)?;
    let mut tags = BTreeMap::new();
    if Flag::Tags.is_in(flags) {
        for _ in 0..r.varint("the tag count")? {
            let key = r.text("a tag key")?;
            let value = r.text("a tag value")?;
            if tags.insert(key, value).is_some() {
                return Err("a tag key appears twice".to_owned());
            }
        }
    }
    let p = r.text("the provider")?;
    let m = r.text("the model")?;
    let u = if Flag::Usage.is_in(flags) {
        let [i, cr, cw5, cw1, o] = r.varints("the usage")?;
        let reasoning = Flag::Reasoning.is_in(flags);
        let r_tokens = reasoning.then(|| r.varint("the usage")).transpose()?;
        let [ai, ii, ao, io, ws, img, ims, oms] = r.varints("the usage")?;
        Some(WireUsage {
            i,
            cr,
            cw5,
            cw1,
            o,
            r: r_tokens,
            ai,
            ii,
            ao,
            io,
            ws,
            img,
            ims,
            oms,
            tier: r.text("the service tier")?,
        })
    } else if Flag::Reasoning.is_in(flags) {
        return Err("reasoning tokens without usage".to_owned());
    } else {
        None
    };
    let cost = optional(Flag::Cost, "the cost", r)?;
    let cur = optional(Flag::Currency, "the currency", r)?;
    let pv = optional(Flag::PriceVersion, "the price version", r)?;
    let pm = optional(Flag::PricedModel, "the priced model", r)?;
    let why = optional(Flag::Why, "the unpriced detail", r)?;
    let rc = optional(Flag::ReasonCode, "the unpriced reason", r)?;
    Ok(WireEvent {
        rid,
        t,
        org,
        ws,
        team,
        key,
        user,
        cust,
        tags,
        p,
        m,
        u,
        cost,
        cur,
        pv,
        pm,
        why,
        rc,
        mode: r.text("the billing mode")?,
        ok: Flag::Ok.is_in(flags),
        partial: Flag::Partial.is_in(flags),
    })
}

/// A cursor over an entry's bytes; every read names what it was reading when the
/// bytes end or are wrong.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], String> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&end| end <= self.bytes.len())
            .ok_or_else(|| format!("the entry ends inside {what}"))?;
        let out = &self.bytes[self.at..end];
        self.at = end;
        Ok(out)
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], String> {
        let bytes = self.take(N, what)?;
        let mut out = [0; N];
        out.copy_from_slice(bytes);
        Ok(out)
    }

    fn varint(&mut self, what: &str) -> Result<u64, String> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = *self
                .bytes
                .get(self.at)
                .ok_or_else(|| format!("the entry ends inside {what}"))?;
            self.at += 1;
            let bits = u64::from(byte & 0x7f);
            if shift == 63 && bits > 1 {
                return Err(format!("{what}: a number past 64 bits"));
            }
            value |= bits << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(format!("{what}: a number past 64 bits"))
    }

    fn varints<const N: usize>(&mut self, what: &str) -> Result<[u64; N], String> {
        let mut out = [0; N];
        for slot in &mut out {
            *slot = self.varint(what)?;
        }
        Ok(out)
    }

    fn text(&mut self, what: &str) -> Result<Text<'a>, String> {
        let len = self.varint(what)?;
        let len = usize::try_from(len).map_err(|_| format!("the entry ends inside {what}"))?;
        let bytes = self.take(len, what)?;
        std::str::from_utf8(bytes)
            .map(Text::new)
            .map_err(|_| format!("{what} is not UTF-8"))
    }
}
