//! Streaming responses: usage extracted as the bytes go by.
//!
//! [`StreamExtractor`] takes the response body in chunks cut anywhere and keeps the
//! provider's usage snapshot up to date. The rules per protocol:
//!
//! - OpenAI and compatible APIs: every chunk may carry `usage` (or Groq's
//!   `x_groq.usage`); the last non-null one wins. Snapshots never add up.
//! - OpenAI Responses: the usage of the terminal `response.completed`,
//!   `response.incomplete` or `response.failed` event.
//! - Anthropic: `message_start` gives the base and each `message_delta` overwrites the
//!   fields it carries (input can grow with server tools).
//! - Gemini and Vertex: the last `usageMetadata`. Every chunk repeats it, so each
//!   one's raw bytes are kept (the event's structure checked as it is found) and only
//!   the last is parsed, when the usage is asked for: one that a later chunk
//!   replaces is never parsed, so a wrongly typed count in it is not an error.
//! - Cohere: `message-end`.
//! - Bedrock: AWS event-stream frames; ConverseStream's `metadata` event, or, for
//!   InvokeModelWithResponseStream, the base64 model-native events inside `chunk`
//!   frames (Anthropic rules for Claude, else `amazon-bedrock-invocationMetrics`).
//!
//! A stream that never reported usage finishes with [`ExtractError::NoUsage`]: the
//! cost is unknown, never zero.

use std::borrow::Cow;

use base64::Engine as _;
use serde::Deserialize;

use super::body::{
    AnthropicUsage, CohereUsage, ConverseTier, ConverseUsage, Cx, GeminiUsage, OpenAiUsage,
    OutputItem, XGroq, anthropic_usage, cohere_usage, converse_usage, gemini_usage, openai_usage,
    web_search_calls,
};
use super::eventstream::{EventStreamDecoder, EventStreamError, Frame};
use super::quick::{self, Quick, quick_struct};
use super::sse::{SseEvent, SseParser, SseTooLarge};
use super::{ExtractError, Extraction, scan};
use crate::provider::Provider;
use crate::usage::Usage;

/// How the stream is framed.
#[derive(Debug)]
enum Framing {
    Sse(SseParser),
    EventStream(EventStreamDecoder),
}

/// What the stream has said so far.
#[derive(Default)]
struct Snapshot {
    model: Option<String>,
    openai: Option<OpenAiUsage>,
    service_tier: Option<String>,
    /// The raw JSON of `service_tier`, to skip parsing it again.
    service_tier_raw: Vec<u8>,
    web_search_calls: u64,
    anthropic: Option<AnthropicUsage>,
    /// The raw JSON of the last `usageMetadata` (empty: none yet), parsed on demand.
    gemini: Vec<u8>,
    converse: Option<(ConverseUsage, Option<ConverseTier>)>,
    cohere: Option<CohereUsage>,
    invocation: Option<InvocationMetrics>,
}

impl std::fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Snapshot")
            .field("model", &self.model)
            .field("has_usage", &self.has_usage())
            .finish_non_exhaustive()
    }
}

impl Snapshot {
    fn has_usage(&self) -> bool {
        self.openai.is_some()
            || self.anthropic.is_some()
            || !self.gemini.is_empty()
            || self.converse.is_some()
            || self.cohere.is_some()
            || self.invocation.is_some()
    }

    fn set_model(&mut self, model: Option<String>) {
        if let Some(model) = model.filter(|m| !m.is_empty()) {
            self.model.get_or_insert(model);
        }
    }

    /// An event's raw `model` field: parsed while the model is unknown; once it is
    /// known (the first one wins), only checked to be a string or null, without
    /// allocating one per event.
    fn model_field(&mut self, raw: Option<&[u8]>) -> Result<(), StreamError> {
        if self.model.is_none() {
            self.set_model(field(raw)?);
            return Ok(());
        }
        match raw {
            None | Some(b"null") => Ok(()),
            Some(raw) if raw.first() == Some(&b'"') => Ok(()),
            Some(_) => Err(StreamError::Payload("model: expected a string".to_owned())),
        }
    }

    /// An event's raw `service_tier` field (the last one stands): parsed only when
    /// it differs from the one before, which most chunks repeat.
    fn service_tier_field(&mut self, raw: Option<&[u8]>) -> Result<(), StreamError> {
        let Some(raw) = raw.filter(|r| *r != b"null") else {
            return Ok(());
        };
        if self.service_tier.is_some() && self.service_tier_raw == raw {
            return Ok(());
        }
        if let Some(tier) = field::<String>(Some(raw))? {
            self.service_tier = Some(tier);
            self.service_tier_raw.clear();
            self.service_tier_raw.extend_from_slice(raw);
        }
        Ok(())
    }
}

/// Extracts the usage of a streamed response, chunk by chunk.
///
/// ```
/// use routero_core::extract::StreamExtractor;
/// use routero_core::Provider;
///
/// let mut stream = StreamExtractor::new(&Provider::OpenAi);
/// stream.push(b"data: {\"model\":\"gpt-4o\",\"choices\":[],\"usage\":null}\n\nda").unwrap();
/// stream.push(b"ta: {\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":3}}\n\n").unwrap();
/// stream.push(b"data: [DONE]\n\n").unwrap();
/// let extraction = stream.finish().unwrap();
/// assert_eq!(extraction.model.as_deref(), Some("gpt-4o"));
/// assert_eq!(extraction.usage.input_tokens, 9);
/// ```
#[derive(Debug)]
pub struct StreamExtractor {
    provider: Provider,
    framing: Framing,
    snapshot: Snapshot,
}

impl StreamExtractor {
    /// An extractor for a stream of `provider` (Bedrock streams are AWS event-stream
    /// frames; every other provider streams SSE).
    pub fn new(provider: &Provider) -> StreamExtractor {
        let framing = match provider {
            Provider::Bedrock => Framing::EventStream(EventStreamDecoder::new()),
            _ => Framing::Sse(SseParser::new()),
        };
        StreamExtractor {
            provider: provider.clone(),
            framing,
            snapshot: Snapshot::default(),
        }
    }

    /// Feeds the next bytes of the body.
    pub fn push(&mut self, chunk: &[u8]) -> Result<(), ExtractError> {
        let provider = &self.provider;
        let snapshot = &mut self.snapshot;
        match &mut self.framing {
            Framing::Sse(parser) => {
                parser.push(chunk, &mut |event| on_sse(provider, snapshot, event))
            }
            Framing::EventStream(decoder) => {
                decoder.push(chunk, &mut |frame| on_frame(provider, snapshot, frame))
            }
        }
        .map_err(|e| e.into_extract(provider))
    }

    /// The usage reported so far, if any: what a stream cut short (a client gone away)
    /// is known to have consumed.
    pub fn usage_so_far(&self) -> Result<Extraction, ExtractError> {
        normalise(&self.provider, &self.snapshot)
    }

    /// Ends the stream and returns its usage; [`ExtractError::NoUsage`] when it never
    /// reported any.
    pub fn finish(mut self) -> Result<Extraction, ExtractError> {
        let provider = &self.provider;
        let snapshot = &mut self.snapshot;
        match self.framing {
            Framing::Sse(parser) => parser.finish(&mut |event| on_sse(provider, snapshot, event)),
            Framing::EventStream(decoder) => decoder.finish().map_err(StreamError::from),
        }
        .map_err(|e| e.into_extract(provider))?;
        normalise(&self.provider, &self.snapshot)
    }
}

/// An error inside the framing or an event's payload.
enum StreamError {
    Framing(String),
    Payload(String),
}

impl StreamError {
    fn into_extract(self, provider: &Provider) -> ExtractError {
        let reason = match self {
            StreamError::Framing(reason) => reason,
            StreamError::Payload(reason) => format!("stream event: {reason}"),
        };
        ExtractError::Malformed {
            provider: provider.clone(),
            reason,
        }
    }
}

impl From<SseTooLarge> for StreamError {
    fn from(e: SseTooLarge) -> Self {
        StreamError::Framing(e.to_string())
    }
}

impl From<EventStreamError> for StreamError {
    fn from(e: EventStreamError) -> Self {
        StreamError::Framing(e.to_string())
    }
}

fn json<'a, T: Quick<'a> + Deserialize<'a>>(data: &'a [u8]) -> Result<T, StreamError> {
    quick::parse(data).map_err(|e| StreamError::Payload(e.to_string()))
}

/// The raw top-level fields of an event's JSON payload; the rest (the generated
/// text) is skipped, not parsed.
fn fields<'a, const N: usize>(
    data: &'a [u8],
    names: [&str; N],
) -> Result<[Option<&'a [u8]>; N], StreamError> {
    scan::fields(data, names).map_err(|e| StreamError::Payload(e.to_string()))
}

/// A raw field parsed; absent and `null` are `None`.
fn field<'a, T: Quick<'a> + Deserialize<'a>>(
    raw: Option<&'a [u8]>,
) -> Result<Option<T>, StreamError> {
    raw.map_or(Ok(None), json)
}

// --- Event payloads -----------------------------------------------------------------

#[cfg_attr(any(test, feature = "testing"), derive(Debug, PartialEq))]
#[derive(Deserialize, Default)]
struct ResponseObject {
    model: Option<String>,
    usage: Option<OpenAiUsage>,
    service_tier: Option<String>,
    #[serde(default)]
    output: Vec<OutputItem>,
}

quick_struct!(ResponseObject {
    "model" => model,
    "usage" => usage,
    "service_tier" => service_tier,
    "output" => output,
});

#[cfg_attr(any(test, feature = "testing"), derive(Debug, PartialEq))]
#[derive(Deserialize, Default)]
struct AnthropicMessage {
    model: Option<String>,
    usage: Option<AnthropicUsage>,
}

quick_struct!(AnthropicMessage { "model" => model, "usage" => usage });

#[cfg_attr(any(test, feature = "testing"), derive(Debug, PartialEq))]
#[derive(Deserialize, Default)]
struct CohereDelta {
    usage: Option<CohereUsage>,
}

quick_struct!(CohereDelta { "usage" => usage });

#[cfg_attr(any(test, feature = "testing"), derive(Debug, PartialEq))]
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct ConverseMetadata {
    usage: Option<ConverseUsage>,
    service_tier: Option<ConverseTier>,
}

quick_struct!(ConverseMetadata { "usage" => usage, "serviceTier" => service_tier });

#[cfg_attr(any(test, feature = "testing"), derive(Debug, PartialEq))]
#[derive(Deserialize, Default)]
struct BedrockChunk {
    bytes: Option<String>,
}

quick_struct!(BedrockChunk { "bytes" => bytes });

/// `amazon-bedrock-invocationMetrics`: Bedrock's own counts, input excluding the cache.
#[cfg_attr(any(test, feature = "testing"), derive(Debug, PartialEq))]
#[derive(Deserialize, Clone, Copy, Default)]
#[serde(rename_all = "camelCase")]
struct InvocationMetrics {
    input_token_count: Option<i64>,
    output_token_count: Option<i64>,
    cache_read_input_token_count: Option<i64>,
    cache_write_input_token_count: Option<i64>,
}

quick_struct!(InvocationMetrics {
    "inputTokenCount" => input_token_count,
    "outputTokenCount" => output_token_count,
    "cacheReadInputTokenCount" => cache_read_input_token_count,
    "cacheWriteInputTokenCount" => cache_write_input_token_count,
});

// --- Which events can matter ------------------------------------------------------

/// Substring finders built once: the vectorised searches behind [`cannot_matter`].
struct Needles {
    message: memchr::memmem::Finder<'static>,
    invocation: memchr::memmem::Finder<'static>,
    unicode_escape: memchr::memmem::Finder<'static>,
    /// [`OPENAI_KEYS`], all four in one pass.
    openai: Keys,
}

/// A few short patterns searched in one pass: aho-corasick's packed (vectorised,
/// Teddy) searcher where the CPU has the instructions it needs, else its automaton,
/// which finds the same matches more slowly.
enum Keys {
    Packed(aho_corasick::packed::Searcher),
    Automaton(aho_corasick::AhoCorasick),
}

impl Keys {
    fn new<const N: usize>(patterns: [&[u8]; N]) -> Keys {
        let packed = aho_corasick::packed::Config::new()
            .match_kind(aho_corasick::packed::MatchKind::LeftmostFirst)
            .builder()
            .extend(patterns)
            .build();
        packed.map_or_else(|| Keys::automaton(patterns), Keys::Packed)
    }

    fn automaton<const N: usize>(patterns: [&[u8]; N]) -> Keys {
        Keys::Automaton(
            aho_corasick::AhoCorasick::builder()
                .match_kind(aho_corasick::MatchKind::LeftmostFirst)
                .build(patterns)
                .expect("a few short patterns always build"),
        )
    }

    /// Whether `hit(pattern index, end of the match)` holds for every match in
    /// `data` (leftmost first, not overlapping), stopping at the first that does not.
    fn all(&self, data: &[u8], mut hit: impl FnMut(usize, usize) -> bool) -> bool {
        match self {
            Keys::Packed(searcher) => searcher
                .find_iter(data)
                .all(|m| hit(m.pattern().as_usize(), m.end())),
            Keys::Automaton(automaton) => automaton
                .find_iter(data)
                .all(|m| hit(m.pattern().as_usize(), m.end())),
        }
    }
}

/// The keys an OpenAI-compatible chunk is searched for; any one not named by
/// [`USAGE_KEY`] or [`TIER_KEY`] means the chunk must be read.
const OPENAI_KEYS: [&[u8]; 4] = [
    br#""response""#,
    br#""x_groq""#,
    br#""usage""#,
    br#""service_tier""#,
];
const USAGE_KEY: usize = 2;
const TIER_KEY: usize = 3;

fn needles() -> &'static Needles {
    static NEEDLES: std::sync::OnceLock<Needles> = std::sync::OnceLock::new();
    NEEDLES.get_or_init(|| Needles {
        message: memchr::memmem::Finder::new(b"message_"),
        invocation: memchr::memmem::Finder::new(b"invocationMetrics"),
        unicode_escape: memchr::memmem::Finder::new(br"\u"),
        openai: Keys::new(OPENAI_KEYS),
    })
}

/// The raw value after a `"key":` match at `at` (whitespace skipped), up to the
/// next `,` or `}` when it is a plain string or `null`; `None` otherwise.
fn raw_value_after(data: &[u8], at: usize) -> Option<&[u8]> {
    let mut i = at;
    while let Some(b' ' | b'\n' | b'\r' | b'\t') = data.get(i) {
        i += 1;
    }
    let rest = data.get(i..)?;
    if rest.starts_with(b"null") {
        return Some(&rest[..4]);
    }
    if rest.first() != Some(&b'"') {
        return None;
    }
    // A string without escapes: its end is the next quote.
    let end = memchr::memchr2(b'"', b'\\', &rest[1..])?;
    (rest[1 + end] == b'"').then(|| &rest[..end + 2])
}

/// Whether an SSE event's data provably cannot change what the stream has said, so
/// that it needs no parsing: decided from substring searches, conservatively (any
/// doubt, and the event is parsed). Content deltas, nearly every event of a long
/// stream, are decided at memchr speed. A skipped event is still checked to be a
/// braced object, so that non-JSON is refused as before.
///
/// - OpenAI-compatible chunks, once the model is known: no key `"response"` or
///   `"x_groq"` anywhere, every key `"usage"` followed by `null`, and at most one
///   key `"service_tier"`, whose string is the tier already recorded. A match is a
///   key when a colon follows it, whitespace allowed between. Its closing quote is
///   a real one (an escaped quote follows a backslash), so every such key is found,
///   top-level or nested (a nested one changes nothing either); a match that is only
///   the tail of a longer key (`"x\"usage":`) names a key that cannot matter, and
///   at worst makes the chunk read.
/// - Anthropic events: no `message_` (the type of `message_start` and
///   `message_delta`), no `invocationMetrics` and no `\u` escape anywhere.
fn cannot_matter(provider: &Provider, snapshot: &Snapshot, data: &[u8]) -> bool {
    let trimmed = data.trim_ascii();
    if trimmed.first() != Some(&b'{') || trimmed.last() != Some(&b'}') {
        return false;
    }
    let n = needles();
    match provider {
        Provider::Anthropic | Provider::Bedrock => {
            n.message.find(data).is_none()
                && n.invocation.find(data).is_none()
                && n.unicode_escape.find(data).is_none()
        }
        Provider::Gemini | Provider::VertexAi | Provider::Cohere => false,
        _ => {
            if snapshot.model.is_none() {
                return false;
            }
            openai_chunk_is_inert(&n.openai, snapshot, data)
        }
    }
}

/// The OpenAI-compatible rule of [`cannot_matter`], the model known.
fn openai_chunk_is_inert(keys: &Keys, snapshot: &Snapshot, data: &[u8]) -> bool {
    let mut tier = None;
    let plain = keys.all(data, |pattern, end| {
        // A key when a colon follows (JSON allows whitespace before it); else a
        // string value that happens to read the same.
        let colon = end
            + data[end..]
                .iter()
                .take_while(|b| b.is_ascii_whitespace())
                .count();
        if data.get(colon) != Some(&b':') {
            return true;
        }
        let value = raw_value_after(data, colon + 1);
        match pattern {
            USAGE_KEY => value == Some(&b"null"[..]),
            TIER_KEY if tier.is_none() => {
                tier = Some(value);
                true
            }
            _ => false,
        }
    });
    plain
        && match tier {
            None => true,
            Some(value) => {
                snapshot.service_tier.is_some() && value == Some(&snapshot.service_tier_raw[..])
            }
        }
}

// --- Per-event rules ----------------------------------------------------------------

fn on_sse(
    provider: &Provider,
    snapshot: &mut Snapshot,
    event: SseEvent<'_>,
) -> Result<(), StreamError> {
    let data = event.data;
    if data == b"[DONE]" || cannot_matter(provider, snapshot, data) {
        return Ok(());
    }
    match provider {
        Provider::Anthropic | Provider::Bedrock => anthropic_event(snapshot, data)?,
        Provider::Gemini | Provider::VertexAi => {
            let [kind, model, usage] = fields(data, ["type", "modelVersion", "usageMetadata"])?;
            if kind.is_some() && *provider == Provider::VertexAi {
                // Vertex AI streams Claude as Anthropic's typed events.
                return anthropic_event(snapshot, data);
            }
            snapshot.model_field(model)?;
            if let Some(usage) = usage.filter(|raw| *raw != b"null") {
                snapshot.gemini.clear();
                snapshot.gemini.extend_from_slice(usage);
            }
        }
        Provider::Cohere => {
            let [kind, delta] = fields(data, ["type", "delta"])?;
            if field::<Cow<'_, str>>(kind)?.as_deref() == Some("message-end")
                && let Some(usage) = field::<CohereDelta>(delta)?.and_then(|d| d.usage)
            {
                snapshot.cohere = Some(usage);
            }
        }
        _ => openai_chunk(snapshot, data)?,
    }
    Ok(())
}

fn openai_chunk(snapshot: &mut Snapshot, data: &[u8]) -> Result<(), StreamError> {
    let [kind, response, model, service_tier, usage, x_groq] = fields(
        data,
        [
            "type",
            "response",
            "model",
            "service_tier",
            "usage",
            "x_groq",
        ],
    )?;
    if let Some(response) = field::<ResponseObject>(response)? {
        // Responses API: only a terminal event's usage is final.
        snapshot.set_model(response.model);
        let terminal = matches!(
            field::<Cow<'_, str>>(kind)?.as_deref(),
            Some("response.completed" | "response.incomplete" | "response.failed")
        );
        if terminal && response.usage.is_some() {
            snapshot.openai = response.usage;
            snapshot.service_tier = response.service_tier;
            snapshot.service_tier_raw.clear();
            snapshot.web_search_calls = web_search_calls(&response.output);
        }
        return Ok(());
    }
    snapshot.model_field(model)?;
    snapshot.service_tier_field(service_tier)?;
    let usage = match field::<OpenAiUsage>(usage)? {
        Some(usage) => Some(usage),
        None => field::<XGroq>(x_groq)?.and_then(|x| x.usage),
    };
    if let Some(usage) = usage {
        snapshot.openai = Some(usage);
    }
    Ok(())
}

fn anthropic_event(snapshot: &mut Snapshot, data: &[u8]) -> Result<(), StreamError> {
    let [kind, message, usage, invocation] = fields(
        data,
        [
            "type",
            "message",
            "usage",
            "amazon-bedrock-invocationMetrics",
        ],
    )?;
    match field::<Cow<'_, str>>(kind)?.as_deref() {
        Some("message_start") => {
            if let Some(message) = field::<AnthropicMessage>(message)? {
                snapshot.set_model(message.model);
                if let Some(usage) = message.usage {
                    snapshot.anthropic = Some(usage);
                }
            }
        }
        Some("message_delta") => {
            if let Some(delta) = field::<AnthropicUsage>(usage)? {
                snapshot
                    .anthropic
                    .get_or_insert_with(AnthropicUsage::default)
                    .overwrite_with(delta);
            }
        }
        _ => {}
    }
    if let Some(metrics) = field(invocation)? {
        snapshot.invocation = Some(metrics);
    }
    Ok(())
}

fn on_frame(
    _provider: &Provider,
    snapshot: &mut Snapshot,
    frame: Frame<'_>,
) -> Result<(), StreamError> {
    if frame.message_type.is_some_and(|t| t != "event") {
        // An exception frame ends the stream; whatever usage came before stands.
        return Ok(());
    }
    match frame.event_type {
        Some("metadata") => {
            let metadata: ConverseMetadata = json(frame.payload)?;
            if let Some(usage) = metadata.usage {
                snapshot.converse = Some((usage, metadata.service_tier));
            }
        }
        Some("chunk") => {
            let chunk: BedrockChunk = json(frame.payload)?;
            let Some(bytes) = chunk.bytes else {
                return Ok(());
            };
            let native = base64::engine::general_purpose::STANDARD
                .decode(bytes.as_bytes())
                .map_err(|e| StreamError::Payload(format!("chunk bytes: {e}")))?;
            anthropic_event(snapshot, &native)?;
        }
        _ => {}
    }
    Ok(())
}

/// The snapshot, through the provider's normaliser.
fn normalise(provider: &Provider, snapshot: &Snapshot) -> Result<Extraction, ExtractError> {
    let cx = Cx::new(provider);
    let model = snapshot.model.clone();
    if let Some(usage) = &snapshot.anthropic {
        return cx.normalise(model, Some(usage), |cx, u| anthropic_usage(cx, u));
    }
    if let Some((usage, tier)) = &snapshot.converse {
        return cx.normalise(model, Some(usage), |cx, u| {
            converse_usage(cx, u, tier.as_ref())
        });
    }
    if !snapshot.gemini.is_empty() {
        let usage: GeminiUsage = json(&snapshot.gemini).map_err(|e| e.into_extract(provider))?;
        return cx.normalise(model, Some(&usage), |cx, u| gemini_usage(cx, u));
    }
    if let Some(usage) = &snapshot.cohere {
        return cx.normalise(model, Some(usage), |cx, u| cohere_usage(cx, u));
    }
    if let Some(usage) = &snapshot.openai {
        let tier = snapshot.service_tier.as_deref();
        let calls = snapshot.web_search_calls;
        return cx.normalise(model, Some(usage), |cx, u| {
            let mut extraction = openai_usage(cx, u, &[])?;
            extraction.usage.service_tier = cx.tier(tier)?;
            extraction.usage.web_search_requests = calls;
            Ok(extraction)
        });
    }
    if let Some(metrics) = &snapshot.invocation {
        return cx.normalise(model, Some(metrics), |cx, m| {
            let mut usage = Usage::tokens(
                cx.count("inputTokenCount", m.input_token_count)?,
                cx.count("outputTokenCount", m.output_token_count)?,
            );
            usage.cache_read_tokens =
                cx.count("cacheReadInputTokenCount", m.cache_read_input_token_count)?;
            usage.cache_write_5m_tokens =
                cx.count("cacheWriteInputTokenCount", m.cache_write_input_token_count)?;
            Ok(Extraction::new(None, usage))
        });
    }
    Err(ExtractError::NoUsage {
        provider: provider.clone(),
    })
}

/// The quick reader against `serde_json` for every event payload type (see
/// `quick::agrees`); how many the quick reader read.
#[cfg(any(test, feature = "testing"))]
pub(super) fn agree_on_payload(raw: &[u8]) -> usize {
    use super::quick::agrees;
    [
        agrees::<Option<ResponseObject>>(raw),
        agrees::<Option<AnthropicMessage>>(raw),
        agrees::<Option<CohereDelta>>(raw),
        agrees::<Option<ConverseMetadata>>(raw),
        agrees::<Option<BedrockChunk>>(raw),
        agrees::<Option<InvocationMetrics>>(raw),
    ]
    .into_iter()
    .filter(|answered| *answered)
    .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_quick_reader_agrees_with_serde_json_on_every_event_payload() {
        use crate::meter::extract::quick::tests::corpus;
        let (all, _) = corpus();
        let answered: usize = all.iter().map(|raw| agree_on_payload(raw)).sum();
        assert!(
            answered > all.len(),
            "{answered} answers over {}",
            all.len()
        );
    }

    /// The OpenAI rule's answers, from the packed searcher and from the automaton
    /// it falls back to on a CPU without the instructions Teddy needs.
    #[test]
    fn both_searchers_decide_openai_chunks_alike() {
        let mut snapshot = Snapshot {
            model: Some("gpt-4o".into()),
            service_tier: Some("default".into()),
            service_tier_raw: br#""default""#.to_vec(),
            ..Snapshot::default()
        };
        let cases: [(&str, bool); 14] = [
            (r#"{"x\"usage":null,"usage":null}"#, true),
            (r#"{"x\"usage":{"a":1},"usage":null}"#, false),
            (
                r#"{"choices":[{"delta":{"content":"hi"}}],"usage":null}"#,
                true,
            ),
            (
                r#"{"service_tier":"default","choices":[],"usage":null}"#,
                true,
            ),
            (
                r#"{"choices":[{"delta":{"content":"say \"usage\": 5"}}],"usage":null}"#,
                true,
            ),
            (r#"{"choices":[],"usage":{"prompt_tokens":1}}"#, false),
            (
                r#"{"service_tier":"flex","choices":[],"usage":null}"#,
                false,
            ),
            (
                r#"{"service_tier":"default","x":{"service_tier":"default"}}"#,
                false,
            ),
            (
                r#"{"type":"response.created","response":{"id":"r"}}"#,
                false,
            ),
            (r#"{"choices":[],"x_groq":{"id":"q"}}"#, false),
            (r#"{"choices":[],"usage" : null}"#, true),
            (r#"{"choices":[],"usage" :{"prompt_tokens":1}}"#, false),
            (
                "{\"choices\":[],\"usage\"\n:\t{\"prompt_tokens\":1}}",
                false,
            ),
            (
                r#"{"choices":[{"delta":{"content":"usage"}}],"note":"x_groq","usage":null}"#,
                true,
            ),
        ];
        let packed = Keys::new(OPENAI_KEYS);
        let automaton = Keys::automaton(OPENAI_KEYS);
        for (chunk, inert) in cases {
            for keys in [&packed, &automaton] {
                assert_eq!(
                    openai_chunk_is_inert(keys, &snapshot, chunk.as_bytes()),
                    inert,
                    "{chunk}"
                );
            }
        }
        // With no tier recorded yet, a chunk naming one must be read.
        snapshot.service_tier = None;
        let chunk = br#"{"service_tier":"default","choices":[],"usage":null}"#;
        assert!(!openai_chunk_is_inert(&packed, &snapshot, chunk));
        assert!(!openai_chunk_is_inert(&automaton, &snapshot, chunk));
    }
}
