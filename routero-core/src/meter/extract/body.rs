//! Whole JSON response bodies.

use serde::Deserialize;

use super::quick::{self, Quick, quick_struct};
use super::{ExtractError, Extraction, scan};
use crate::money::parse_decimal_exact;
use crate::provider::Provider;
use crate::usage::{ServiceTier, Usage, UsageError};

/// Extracts the usage of a whole JSON response body.
///
/// `headers` are the response headers as `(name, value)` pairs, names in any case;
/// they matter for Bedrock InvokeModel (`x-amzn-bedrock-*-token-count`, used when the
/// body has no usage) and Fireworks (`fireworks-cached-prompt-tokens`, used when the
/// body does not split the cached prompt).
pub fn from_body(
    provider: &Provider,
    body: &[u8],
    headers: &[(&str, &str)],
) -> Result<Extraction, ExtractError> {
    let cx = Cx::new(provider);
    match provider {
        Provider::Anthropic => anthropic(&cx, body),
        Provider::Gemini => gemini(&cx, body),
        Provider::VertexAi => vertex(&cx, body),
        Provider::Bedrock => bedrock(&cx, body, headers),
        Provider::Cohere => cohere(&cx, body),
        _ => openai_like(&cx, body, headers),
    }
}

/// A body's top-level fields by name: their raw values, where present.
type RawFields<'b, const N: usize> = [Option<&'b [u8]>; N];

/// The provider being read, for error messages.
pub(super) struct Cx<'a> {
    pub(super) provider: &'a Provider,
}

impl<'a> Cx<'a> {
    pub(super) fn new(provider: &'a Provider) -> Cx<'a> {
        Cx { provider }
    }

    pub(super) fn malformed(&self, reason: impl ToString) -> ExtractError {
        ExtractError::Malformed {
            provider: self.provider.clone(),
            reason: reason.to_string(),
        }
    }

    pub(super) fn no_usage(&self) -> ExtractError {
        ExtractError::NoUsage {
            provider: self.provider.clone(),
        }
    }

    pub(super) fn invalid(&self, source: UsageError) -> ExtractError {
        ExtractError::InvalidUsage {
            provider: self.provider.clone(),
            source,
        }
    }

    /// The raw top-level fields of a body, by name (see [`scan::fields`]).
    fn fields<'b, const N: usize>(
        &self,
        body: &'b [u8],
        names: [&str; N],
    ) -> Result<[Option<&'b [u8]>; N], ExtractError> {
        scan::fields(body, names).map_err(|e| self.malformed(e))
    }

    /// [`Cx::fields`], and the field `names[slot]` parsed (absent and `null` are
    /// `None`): read in place by the quick reader as the scan meets it, where it
    /// can, so that the scan does not walk it first.
    fn fields_parsing<'b, T, const N: usize>(
        &self,
        body: &'b [u8],
        names: [&str; N],
        slot: usize,
    ) -> Result<(RawFields<'b, N>, Option<T>), ExtractError>
    where
        T: Quick<'b> + Deserialize<'b>,
    {
        // The value of the key's last occurrence, as the scan keeps its last raw.
        let mut read: Option<Option<T>> = None;
        let raw = scan::fields_reading(body, names, slot, |bytes| {
            let (value, len) = quick::quick_prefix(bytes).unzip();
            read = value;
            len
        })
        .map_err(|e| self.malformed(e))?;
        let value = match read {
            Some(value) => value,
            None => self.field(raw[slot])?,
        };
        Ok((raw, value))
    }

    /// One raw field, parsed; absent and `null` are `None`.
    fn field<'b, T: Quick<'b> + Deserialize<'b>>(
        &self,
        raw: Option<&'b [u8]>,
    ) -> Result<Option<T>, ExtractError> {
        match raw {
            None => Ok(None),
            Some(raw) => quick::parse(raw).map_err(|e| self.malformed(e)),
        }
    }

    /// A count as the provider sent it: absent is zero, negative is an error.
    pub(super) fn count(
        &self,
        field: &'static str,
        value: Option<i64>,
    ) -> Result<u64, ExtractError> {
        let value = value.unwrap_or(0);
        u64::try_from(value).map_err(|_| self.invalid(UsageError::Negative { field, value }))
    }

    /// `whole − part`, where the part must fit in the whole.
    pub(super) fn minus(
        &self,
        whole: (&'static str, u64),
        part: (&'static str, u64),
    ) -> Result<u64, ExtractError> {
        whole.1.checked_sub(part.1).ok_or_else(|| {
            self.invalid(UsageError::SubsetExceedsWhole {
                part: part.0,
                part_value: part.1,
                whole: whole.0,
                whole_value: whole.1,
            })
        })
    }

    pub(super) fn tier(&self, reported: Option<&str>) -> Result<ServiceTier, ExtractError> {
        match reported {
            None => Ok(ServiceTier::Standard),
            Some(tier) => {
                ServiceTier::from_provider(tier).ok_or_else(|| ExtractError::UnpricedTier {
                    provider: self.provider.clone(),
                    tier: tier.escape_debug().to_string(),
                })
            }
        }
    }

    /// A body's usage object through its normaliser, with the body's model name.
    pub(super) fn normalise<U>(
        &self,
        model: Option<String>,
        usage: Option<U>,
        normaliser: impl FnOnce(&Self, &U) -> Result<Extraction, ExtractError>,
    ) -> Result<Extraction, ExtractError> {
        let usage = usage.ok_or_else(|| self.no_usage())?;
        let mut extraction = normaliser(self, &usage)?;
        extraction.model = model;
        self.done(extraction)
    }

    pub(super) fn done(&self, extraction: Extraction) -> Result<Extraction, ExtractError> {
        extraction.usage.validate().map_err(|e| self.invalid(e))?;
        Ok(extraction)
    }
}

// ---------------------------------------------------------------------------------
// OpenAI Chat Completions, Responses and Embeddings, and every OpenAI-compatible API.

#[cfg_attr(any(test, feature = "testing"), derive(Debug, PartialEq))]
#[derive(Deserialize, Default)]
pub(super) struct XGroq {
    pub(super) usage: Option<OpenAiUsage>,
}

quick_struct!(XGroq { "usage" => usage });

#[cfg_attr(any(test, feature = "testing"), derive(Debug, PartialEq))]
#[derive(Deserialize, Default)]
pub(super) struct OutputItem {
    #[serde(rename = "type")]
    kind: Option<String>,
}

quick_struct!(OutputItem { "type" => kind });

/// How many of a Responses API output's items are billed web search calls.
pub(super) fn web_search_calls(output: &[OutputItem]) -> u64 {
    let calls = output
        .iter()
        .filter(|item| item.kind.as_deref() == Some("web_search_call"))
        .count();
    u64::try_from(calls).unwrap_or(u64::MAX)
}

/// The union of Chat Completions' `CompletionUsage`, Responses' `ResponseUsage` and
/// the compatible providers' extensions.
#[cfg_attr(any(test, feature = "testing"), derive(Debug, PartialEq))]
#[derive(Deserialize, Default, Clone)]
pub(super) struct OpenAiUsage {
    prompt_tokens: Option<i64>,
    completion_tokens: Option<i64>,
    input_tokens: Option<i64>,
    output_tokens: Option<i64>,
    #[serde(alias = "input_tokens_details")]
    prompt_tokens_details: Option<PromptDetails>,
    #[serde(alias = "output_tokens_details")]
    completion_tokens_details: Option<CompletionDetails>,
    /// DeepSeek.
    prompt_cache_hit_tokens: Option<i64>,
    /// OpenRouter: the charge in USD credits.
    cost: Option<serde_json::Number>,
    /// OpenRouter.
    is_byok: Option<bool>,
}

quick_struct!(OpenAiUsage {
    "prompt_tokens" => prompt_tokens,
    "completion_tokens" => completion_tokens,
    "input_tokens" => input_tokens,
    "output_tokens" => output_tokens,
    "prompt_tokens_details" | "input_tokens_details" => prompt_tokens_details,
    "completion_tokens_details" | "output_tokens_details" => completion_tokens_details,
    "prompt_cache_hit_tokens" => prompt_cache_hit_tokens,
    "cost" => cost,
    "is_byok" => is_byok,
});

#[cfg_attr(any(test, feature = "testing"), derive(Debug, PartialEq))]
#[derive(Deserialize, Default, Clone)]
struct PromptDetails {
    cached_tokens: Option<i64>,
    cache_write_tokens: Option<i64>,
    audio_tokens: Option<i64>,
    image_tokens: Option<i64>,
}

quick_struct!(PromptDetails {
    "cached_tokens" => cached_tokens,
    "cache_write_tokens" => cache_write_tokens,
    "audio_tokens" => audio_tokens,
    "image_tokens" => image_tokens,
});

#[cfg_attr(any(test, feature = "testing"), derive(Debug, PartialEq))]
#[derive(Deserialize, Default, Clone)]
struct CompletionDetails {
    reasoning_tokens: Option<i64>,
    audio_tokens: Option<i64>,
    image_tokens: Option<i64>,
}

quick_struct!(CompletionDetails {
    "reasoning_tokens" => reasoning_tokens,
    "audio_tokens" => audio_tokens,
    "image_tokens" => image_tokens,
});

fn header<'a>(headers: &[(&str, &'a str)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.trim())
}

fn openai_like(
    cx: &Cx<'_>,
    body: &[u8],
    headers: &[(&str, &str)],
) -> Result<Extraction, ExtractError> {
    let ([model, _, service_tier, x_groq, output], usage) = cx.fields_parsing(
        body,
        ["model", "usage", "service_tier", "x_groq", "output"],
        1,
    )?;
    // Groq's legacy carrier is `x_groq.usage`; the standard field wins when both exist.
    let usage = match usage {
        Some(usage) => usage,
        None => cx
            .field::<XGroq>(x_groq)?
            .and_then(|x| x.usage)
            .ok_or_else(|| cx.no_usage())?,
    };
    let mut extraction = openai_usage(cx, &usage, headers)?;
    // Responses API output items: web search calls are billed per call.
    let output: Vec<OutputItem> = cx.field(output)?.unwrap_or_default();
    extraction.usage.web_search_requests = web_search_calls(&output);
    extraction.usage.service_tier = cx.tier(cx.field::<String>(service_tier)?.as_deref())?;
    extraction.model = cx.field::<String>(model)?.filter(|m| !m.is_empty());
    cx.done(extraction)
}

/// The OpenAI normalisation: the prompt includes cache reads and writes; the output
/// includes reasoning, except at xAI, whose reasoning is reported beside it.
pub(super) fn openai_usage(
    cx: &Cx<'_>,
    u: &OpenAiUsage,
    headers: &[(&str, &str)],
) -> Result<Extraction, ExtractError> {
    let prompt = cx.count("prompt_tokens", u.prompt_tokens.or(u.input_tokens))?;
    let completion = cx.count("completion_tokens", u.completion_tokens.or(u.output_tokens))?;
    let details = u.prompt_tokens_details.as_ref();
    let out_details = u.completion_tokens_details.as_ref();
    let mut cached = details
        .and_then(|d| d.cached_tokens)
        .or(u.prompt_cache_hit_tokens);
    if cached.is_none() && *cx.provider == Provider::Fireworks {
        cached = header(headers, "fireworks-cached-prompt-tokens")
            .map(|v| {
                v.parse::<i64>()
                    .map_err(|_| cx.malformed("fireworks-cached-prompt-tokens is not a count"))
            })
            .transpose()?;
    }
    let cached = cx.count("cached_tokens", cached)?;
    let written = cx.count(
        "cache_write_tokens",
        details.and_then(|d| d.cache_write_tokens),
    )?;
    let after_reads = cx.minus(("prompt_tokens", prompt), ("cached_tokens", cached))?;
    let input = cx.minus(
        ("prompt_tokens", after_reads),
        ("cache_write_tokens", written),
    )?;
    let reasoning = out_details
        .and_then(|d| d.reasoning_tokens)
        .map(|r| cx.count("reasoning_tokens", Some(r)))
        .transpose()?;
    let output = match (cx.provider, reasoning) {
        (Provider::Xai, Some(r)) => completion.saturating_add(r),
        _ => completion,
    };
    let mut usage = Usage::tokens(input, output);
    usage.cache_read_tokens = cached;
    usage.cache_write_5m_tokens = written;
    usage.reasoning_tokens = reasoning;
    // Modality counts cover the whole prompt; the uncached part is what is billed here.
    usage.audio_input_tokens = cx
        .count("audio_tokens", details.and_then(|d| d.audio_tokens))?
        .min(input);
    usage.image_input_tokens = cx
        .count("image_tokens", details.and_then(|d| d.image_tokens))?
        .min(input - usage.audio_input_tokens);
    usage.audio_output_tokens =
        cx.count("audio_tokens", out_details.and_then(|d| d.audio_tokens))?;
    usage.image_output_tokens =
        cx.count("image_tokens", out_details.and_then(|d| d.image_tokens))?;
    let provider_cost = u
        .cost
        .as_ref()
        .map(|n| parse_decimal_exact(&n.to_string()).map_err(|e| cx.malformed(e)))
        .transpose()?;
    Ok(Extraction {
        model: None,
        usage,
        provider_cost,
        is_byok: u.is_byok,
    })
}

// ---------------------------------------------------------------------------------
// Anthropic Messages (also on Vertex AI and Bedrock InvokeModel).

#[cfg_attr(any(test, feature = "testing"), derive(Debug, PartialEq))]
#[derive(Deserialize, Default, Clone)]
pub(super) struct AnthropicUsage {
    pub(super) input_tokens: Option<i64>,
    pub(super) output_tokens: Option<i64>,
    pub(super) cache_creation_input_tokens: Option<i64>,
    pub(super) cache_read_input_tokens: Option<i64>,
    pub(super) cache_creation: Option<CacheCreation>,
    pub(super) server_tool_use: Option<ServerToolUse>,
    pub(super) service_tier: Option<String>,
    pub(super) output_tokens_details: Option<ThinkingDetails>,
}

quick_struct!(AnthropicUsage {
    "input_tokens" => input_tokens,
    "output_tokens" => output_tokens,
    "cache_creation_input_tokens" => cache_creation_input_tokens,
    "cache_read_input_tokens" => cache_read_input_tokens,
    "cache_creation" => cache_creation,
    "server_tool_use" => server_tool_use,
    "service_tier" => service_tier,
    "output_tokens_details" => output_tokens_details,
});

#[cfg_attr(any(test, feature = "testing"), derive(Debug, PartialEq))]
#[derive(Deserialize, Default, Clone)]
pub(super) struct CacheCreation {
    ephemeral_5m_input_tokens: Option<i64>,
    ephemeral_1h_input_tokens: Option<i64>,
}

quick_struct!(CacheCreation {
    "ephemeral_5m_input_tokens" => ephemeral_5m_input_tokens,
    "ephemeral_1h_input_tokens" => ephemeral_1h_input_tokens,
});

#[cfg_attr(any(test, feature = "testing"), derive(Debug, PartialEq))]
#[derive(Deserialize, Default, Clone)]
pub(super) struct ServerToolUse {
    web_search_requests: Option<i64>,
}

quick_struct!(ServerToolUse { "web_search_requests" => web_search_requests });

#[cfg_attr(any(test, feature = "testing"), derive(Debug, PartialEq))]
#[derive(Deserialize, Default, Clone)]
pub(super) struct ThinkingDetails {
    thinking_tokens: Option<i64>,
}

quick_struct!(ThinkingDetails { "thinking_tokens" => thinking_tokens });

fn anthropic(cx: &Cx<'_>, body: &[u8]) -> Result<Extraction, ExtractError> {
    let ([model, _], usage) = cx.fields_parsing(body, ["model", "usage"], 1)?;
    cx.normalise(cx.field(model)?, usage, anthropic_usage)
}

/// Anthropic's input excludes cache reads and writes; the writes split by lifetime
/// in `cache_creation` (all 5-minute when the split is absent).
impl AnthropicUsage {
    /// Anthropic's stream merge: a `message_delta` snapshot overwrites the fields it
    /// carries and leaves the others as `message_start` set them.
    pub(super) fn overwrite_with(&mut self, delta: AnthropicUsage) {
        fn take<T>(field: &mut Option<T>, new: Option<T>) {
            if new.is_some() {
                *field = new;
            }
        }
        take(&mut self.input_tokens, delta.input_tokens);
        take(&mut self.output_tokens, delta.output_tokens);
        take(
            &mut self.cache_creation_input_tokens,
            delta.cache_creation_input_tokens,
        );
        take(
            &mut self.cache_read_input_tokens,
            delta.cache_read_input_tokens,
        );
        take(&mut self.cache_creation, delta.cache_creation);
        take(&mut self.server_tool_use, delta.server_tool_use);
        take(&mut self.service_tier, delta.service_tier);
        take(&mut self.output_tokens_details, delta.output_tokens_details);
    }
}

pub(super) fn anthropic_usage(cx: &Cx<'_>, u: &AnthropicUsage) -> Result<Extraction, ExtractError> {
    let written = cx.count("cache_creation_input_tokens", u.cache_creation_input_tokens)?;
    let (w5m, w1h) = match &u.cache_creation {
        Some(split) => {
            let w1h = cx.count("ephemeral_1h_input_tokens", split.ephemeral_1h_input_tokens)?;
            let w5m = cx.count("ephemeral_5m_input_tokens", split.ephemeral_5m_input_tokens)?;
            if w5m + w1h != written && written != 0 {
                return Err(cx.malformed(format!(
                    "cache_creation splits {} tokens, cache_creation_input_tokens says {written}",
                    w5m + w1h
                )));
            }
            (w5m, w1h)
        }
        None => (written, 0),
    };
    let mut usage = Usage::tokens(
        cx.count("input_tokens", u.input_tokens)?,
        cx.count("output_tokens", u.output_tokens)?,
    );
    usage.cache_read_tokens = cx.count("cache_read_input_tokens", u.cache_read_input_tokens)?;
    usage.cache_write_5m_tokens = w5m;
    usage.cache_write_1h_tokens = w1h;
    usage.reasoning_tokens = u
        .output_tokens_details
        .as_ref()
        .and_then(|d| d.thinking_tokens)
        .map(|t| cx.count("thinking_tokens", Some(t)))
        .transpose()?;
    usage.web_search_requests = cx.count(
        "web_search_requests",
        u.server_tool_use
            .as_ref()
            .and_then(|s| s.web_search_requests),
    )?;
    usage.service_tier = cx.tier(u.service_tier.as_deref())?;
    Ok(Extraction::new(None, usage))
}

// ---------------------------------------------------------------------------------
// Gemini generateContent and Vertex AI.

#[cfg_attr(any(test, feature = "testing"), derive(Debug, PartialEq))]
#[derive(Deserialize, Default, Clone)]
#[serde(rename_all = "camelCase")]
pub(super) struct GeminiUsage {
    prompt_token_count: Option<i64>,
    cached_content_token_count: Option<i64>,
    candidates_token_count: Option<i64>,
    thoughts_token_count: Option<i64>,
    tool_use_prompt_token_count: Option<i64>,
    #[serde(default)]
    prompt_tokens_details: Vec<ModalityCount>,
    #[serde(default)]
    cache_tokens_details: Vec<ModalityCount>,
    #[serde(default)]
    candidates_tokens_details: Vec<ModalityCount>,
    traffic_type: Option<String>,
}

quick_struct!(GeminiUsage {
    "promptTokenCount" => prompt_token_count,
    "cachedContentTokenCount" => cached_content_token_count,
    "candidatesTokenCount" => candidates_token_count,
    "thoughtsTokenCount" => thoughts_token_count,
    "toolUsePromptTokenCount" => tool_use_prompt_token_count,
    "promptTokensDetails" => prompt_tokens_details,
    "cacheTokensDetails" => cache_tokens_details,
    "candidatesTokensDetails" => candidates_tokens_details,
    "trafficType" => traffic_type,
});

#[cfg_attr(any(test, feature = "testing"), derive(Debug, PartialEq))]
#[derive(Deserialize, Default, Clone)]
#[serde(rename_all = "camelCase")]
struct ModalityCount {
    modality: Option<Modality>,
    token_count: Option<i64>,
}

quick_struct!(ModalityCount { "modality" => modality, "tokenCount" => token_count });

/// A modality as Gemini names it: the two billed apart from text, and the rest.
/// Read from a string only (no owned copy of each name).
#[cfg_attr(any(test, feature = "testing"), derive(Debug))]
#[derive(Clone, Copy, PartialEq, Eq)]
enum Modality {
    Audio,
    Image,
    Other,
}

impl Modality {
    fn named(name: &[u8]) -> Modality {
        match name {
            b"AUDIO" => Modality::Audio,
            b"IMAGE" => Modality::Image,
            _ => Modality::Other,
        }
    }
}

impl<'de> Deserialize<'de> for Modality {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = std::borrow::Cow::<'de, str>::deserialize(deserializer)?;
        Ok(Modality::named(name.as_bytes()))
    }
}

impl<'a> Quick<'a> for Modality {
    fn read(r: &mut quick::Reader<'a>) -> Option<Self> {
        <&'a str>::read(r).map(|name| Modality::named(name.as_bytes()))
    }
}

fn modality(cx: &Cx<'_>, counts: &[ModalityCount], which: Modality) -> Result<u64, ExtractError> {
    let mut total = 0u64;
    for c in counts.iter().filter(|c| c.modality == Some(which)) {
        total = total.saturating_add(cx.count("tokenCount", c.token_count)?);
    }
    Ok(total)
}

fn gemini(cx: &Cx<'_>, body: &[u8]) -> Result<Extraction, ExtractError> {
    let ([model, _], usage) = cx.fields_parsing(body, ["modelVersion", "usageMetadata"], 1)?;
    cx.normalise(cx.field(model)?, usage, gemini_usage)
}

/// Vertex AI serves Gemini (`usageMetadata`) and Claude (Anthropic's `usage`): one
/// scan finds either.
fn vertex(cx: &Cx<'_>, body: &[u8]) -> Result<Extraction, ExtractError> {
    let ([model_version, metadata, usage, model], gemini) =
        cx.fields_parsing(body, ["modelVersion", "usageMetadata", "usage", "model"], 1)?;
    if metadata.is_none() && usage.is_some() {
        return cx.normalise(cx.field(model)?, cx.field(usage)?, anthropic_usage);
    }
    cx.normalise(cx.field(model_version)?, gemini, gemini_usage)
}

/// Gemini's prompt includes the cached content; tool-use prompt tokens are beside it;
/// candidates exclude thoughts.
pub(super) fn gemini_usage(cx: &Cx<'_>, u: &GeminiUsage) -> Result<Extraction, ExtractError> {
    let prompt = cx.count("promptTokenCount", u.prompt_token_count)?;
    let cached = cx.count("cachedContentTokenCount", u.cached_content_token_count)?;
    let tool_use = cx.count("toolUsePromptTokenCount", u.tool_use_prompt_token_count)?;
    let uncached_prompt = cx.minus(
        ("promptTokenCount", prompt),
        ("cachedContentTokenCount", cached),
    )?;
    let candidates = cx.count("candidatesTokenCount", u.candidates_token_count)?;
    let thoughts = u
        .thoughts_token_count
        .map(|t| cx.count("thoughtsTokenCount", Some(t)))
        .transpose()?;
    let mut usage = Usage::tokens(
        uncached_prompt.saturating_add(tool_use),
        candidates.saturating_add(thoughts.unwrap_or(0)),
    );
    usage.cache_read_tokens = cached;
    usage.reasoning_tokens = thoughts;
    let uncached = |name| -> Result<u64, ExtractError> {
        let all = modality(cx, &u.prompt_tokens_details, name)?;
        Ok(all.saturating_sub(modality(cx, &u.cache_tokens_details, name)?))
    };
    usage.audio_input_tokens = uncached(Modality::Audio)?.min(usage.input_tokens);
    usage.image_input_tokens =
        uncached(Modality::Image)?.min(usage.input_tokens - usage.audio_input_tokens);
    usage.audio_output_tokens =
        modality(cx, &u.candidates_tokens_details, Modality::Audio)?.min(candidates);
    usage.image_output_tokens = modality(cx, &u.candidates_tokens_details, Modality::Image)?
        .min(candidates - usage.audio_output_tokens);
    usage.service_tier = cx.tier(u.traffic_type.as_deref())?;
    Ok(Extraction::new(None, usage))
}

// ---------------------------------------------------------------------------------
// AWS Bedrock: Converse, and InvokeModel (model-native body, or the count headers).

#[cfg_attr(any(test, feature = "testing"), derive(Debug, PartialEq))]
#[derive(Deserialize, Default, Clone)]
#[serde(rename_all = "camelCase")]
pub(super) struct ConverseUsage {
    input_tokens: Option<i64>,
    output_tokens: Option<i64>,
    cache_read_input_tokens: Option<i64>,
    cache_write_input_tokens: Option<i64>,
    #[serde(default)]
    cache_details: Vec<CacheDetail>,
}

quick_struct!(ConverseUsage {
    "inputTokens" => input_tokens,
    "outputTokens" => output_tokens,
    "cacheReadInputTokens" => cache_read_input_tokens,
    "cacheWriteInputTokens" => cache_write_input_tokens,
    "cacheDetails" => cache_details,
});

#[cfg_attr(any(test, feature = "testing"), derive(Debug, PartialEq))]
#[derive(Deserialize, Default, Clone)]
#[serde(rename_all = "camelCase")]
struct CacheDetail {
    ttl: Option<String>,
    input_tokens: Option<i64>,
}

quick_struct!(CacheDetail { "ttl" => ttl, "inputTokens" => input_tokens });

#[cfg_attr(any(test, feature = "testing"), derive(Debug, PartialEq))]
#[derive(Deserialize, Clone, Default)]
pub(super) struct ConverseTier {
    #[serde(rename = "type")]
    kind: Option<String>,
}

quick_struct!(ConverseTier { "type" => kind });

fn bedrock(cx: &Cx<'_>, body: &[u8], headers: &[(&str, &str)]) -> Result<Extraction, ExtractError> {
    let [usage, service_tier, model] = cx.fields(body, ["usage", "serviceTier", "model"])?;
    let model: Option<String> = cx.field(model)?;
    if let Some(usage) = usage.filter(|raw| *raw != b"null") {
        // Converse names its counts in camelCase; a Claude body through InvokeModel
        // (not an object with those keys, or not an object at all) has Anthropic's.
        let converse = scan::fields(usage, ["inputTokens", "outputTokens"])
            .is_ok_and(|[input, output]| input.is_some() || output.is_some());
        if converse {
            let usage: Option<ConverseUsage> = cx.field(Some(usage))?;
            let tier: Option<ConverseTier> = cx.field(service_tier)?;
            return cx.normalise(model, usage, |cx, u| converse_usage(cx, u, tier.as_ref()));
        }
        // InvokeModel with a Claude body: Anthropic's rules, with its lifetime split.
        return cx.normalise(model, cx.field(Some(usage))?, anthropic_usage);
    }
    // Other model families: the count headers, whose input excludes the cache.
    let count = |name: &'static str| -> Result<Option<u64>, ExtractError> {
        header(headers, name)
            .map(|v| {
                v.parse::<u64>()
                    .map_err(|_| cx.malformed(format!("{name} is not a count")))
            })
            .transpose()
    };
    let (Some(input), Some(output)) = (
        count("x-amzn-bedrock-input-token-count")?,
        count("x-amzn-bedrock-output-token-count")?,
    ) else {
        return Err(cx.no_usage());
    };
    let mut usage = Usage::tokens(input, output);
    usage.cache_read_tokens = count("x-amzn-bedrock-cache-read-input-token-count")?.unwrap_or(0);
    usage.cache_write_5m_tokens =
        count("x-amzn-bedrock-cache-write-input-token-count")?.unwrap_or(0);
    cx.done(Extraction::new(model, usage))
}

/// Converse's input excludes the cache; `cacheDetails` splits the writes by TTL.
pub(super) fn converse_usage(
    cx: &Cx<'_>,
    u: &ConverseUsage,
    tier: Option<&ConverseTier>,
) -> Result<Extraction, ExtractError> {
    let written = cx.count("cacheWriteInputTokens", u.cache_write_input_tokens)?;
    let mut w1h = 0u64;
    let mut w5m = 0u64;
    for detail in &u.cache_details {
        let tokens = cx.count("cacheDetails.inputTokens", detail.input_tokens)?;
        match detail.ttl.as_deref() {
            Some("1h") => w1h = w1h.saturating_add(tokens),
            Some("5m") => w5m = w5m.saturating_add(tokens),
            other => return Err(cx.malformed(format!("unknown cache TTL {other:?}"))),
        }
    }
    if u.cache_details.is_empty() {
        w5m = written;
    } else if w1h.saturating_add(w5m) != written {
        return Err(cx.malformed(format!(
            "cacheDetails split {} tokens, cacheWriteInputTokens says {written}",
            w1h.saturating_add(w5m)
        )));
    }
    let mut usage = Usage::tokens(
        cx.count("inputTokens", u.input_tokens)?,
        cx.count("outputTokens", u.output_tokens)?,
    );
    usage.cache_read_tokens = cx.count("cacheReadInputTokens", u.cache_read_input_tokens)?;
    usage.cache_write_5m_tokens = w5m;
    usage.cache_write_1h_tokens = w1h;
    usage.service_tier = cx.tier(tier.and_then(|t| t.kind.as_deref()))?;
    Ok(Extraction::new(None, usage))
}

// ---------------------------------------------------------------------------------
// Cohere v2: billed units are what is charged.

#[cfg_attr(any(test, feature = "testing"), derive(Debug, PartialEq))]
#[derive(Deserialize, Default, Clone)]
pub(super) struct CohereUsage {
    billed_units: Option<BilledUnits>,
}

quick_struct!(CohereUsage { "billed_units" => billed_units });

#[cfg_attr(any(test, feature = "testing"), derive(Debug, PartialEq))]
#[derive(Deserialize, Default, Clone)]
struct BilledUnits {
    input_tokens: Option<i64>,
    output_tokens: Option<i64>,
}

quick_struct!(BilledUnits {
    "input_tokens" => input_tokens,
    "output_tokens" => output_tokens,
});

fn cohere(cx: &Cx<'_>, body: &[u8]) -> Result<Extraction, ExtractError> {
    let [model, usage] = cx.fields(body, ["model", "usage"])?;
    cx.normalise(cx.field(model)?, cx.field(usage)?, cohere_usage)
}

pub(super) fn cohere_usage(cx: &Cx<'_>, u: &CohereUsage) -> Result<Extraction, ExtractError> {
    let billed = u.billed_units.as_ref().ok_or_else(|| cx.no_usage())?;
    let usage = Usage::tokens(
        cx.count("billed_units.input_tokens", billed.input_tokens)?,
        cx.count("billed_units.output_tokens", billed.output_tokens)?,
    );
    Ok(Extraction::new(None, usage))
}

#[cfg(test)]
mod tests {
    use std::fmt::Debug;

    use super::*;
    use crate::meter::extract::quick::tests::mutations;

    /// A body's fields and its usage, read in place as the scan meets it, must be
    /// what the scan and then `serde_json` find: the same raw fields, the same
    /// value, the same error.
    fn in_place_agrees<T>(provider: Provider, body: &[u8], names: [&str; 2]) -> bool
    where
        T: for<'a> Quick<'a> + for<'a> Deserialize<'a> + PartialEq + Debug,
    {
        let cx = Cx::new(&provider);
        let fast = cx.fields_parsing::<T, 2>(body, names, 1);
        let slow = cx
            .fields(body, names)
            .and_then(|raw| Ok((raw, cx.field::<T>(raw[1])?)));
        assert_eq!(fast, slow, "{}", String::from_utf8_lossy(body));
        fast.is_ok_and(|(_, usage)| usage.is_some())
    }

    #[test]
    fn usage_read_in_place_is_the_usage_scanned_then_parsed() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/providers");
        let read = |path: &str| std::fs::read(root.join(path)).expect("fixture");
        let mut answered = 0;
        let openai =
            |b: &[u8]| in_place_agrees::<OpenAiUsage>(Provider::OpenAi, b, ["model", "usage"]);
        let anthropic = |b: &[u8]| {
            in_place_agrees::<AnthropicUsage>(Provider::Anthropic, b, ["model", "usage"])
        };
        let gemini = |b: &[u8]| {
            in_place_agrees::<GeminiUsage>(Provider::Gemini, b, ["modelVersion", "usageMetadata"])
        };
        type Agrees<'f> = &'f dyn Fn(&[u8]) -> bool;
        let bodies: [(&str, Agrees<'_>); 3] = [
            ("openai_chat/chat_completion_reasoning_cached.json", &openai),
            ("anthropic/message_thinking.json", &anthropic),
            ("gemini/generate_content_thinking_cached.json", &gemini),
        ];
        for (path, agrees) in bodies {
            let body = read(path);
            assert!(agrees(&body), "{path}");
            for mutated in mutations(&body) {
                answered += usize::from(agrees(&mutated));
            }
        }
        assert!(answered > 1_000, "{answered}");
    }

    #[test]
    fn a_usage_given_twice_is_its_last_whichever_reader_reads_it() {
        let quick = r#"{"prompt_tokens": 10, "completion_tokens": 1}"#;
        // An escaped key: left to serde_json.
        let slow = r#"{"prompt_tokens": 20, "completion\u005ftokens": 2}"#;
        for (first, last, expected) in [(quick, slow, (20, 2)), (slow, quick, (10, 1))] {
            let body = format!(r#"{{"model": "gpt-4o", "usage": {first}, "usage": {last}}}"#);
            let extraction = from_body(&Provider::OpenAi, body.as_bytes(), &[]).expect("usage");
            let usage = extraction.usage;
            assert_eq!(
                (usage.input_tokens, usage.output_tokens),
                expected,
                "{body}"
            );
        }
    }
}
