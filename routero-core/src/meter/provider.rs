//! LLM providers, as Routero names them.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

/// The provider that served a request, and so whose price list applies.
///
/// The known providers are plain variants, so that comparing and hashing them costs
/// nothing. Any other provider a price file names is kept as [`Provider::Other`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Provider {
    /// OpenAI (Chat Completions, Responses, Embeddings).
    OpenAi,
    /// Azure OpenAI.
    Azure,
    /// Anthropic Messages.
    Anthropic,
    /// Google Gemini API (AI Studio).
    Gemini,
    /// Google Vertex AI.
    VertexAi,
    /// AWS Bedrock.
    Bedrock,
    /// Mistral AI.
    Mistral,
    /// Groq.
    Groq,
    /// DeepSeek.
    DeepSeek,
    /// xAI.
    Xai,
    /// Together AI.
    Together,
    /// Fireworks AI.
    Fireworks,
    /// Cohere.
    Cohere,
    /// OpenRouter.
    OpenRouter,
    /// Any other provider, by its lower-case name.
    Other(Arc<str>),
}

impl Provider {
    /// Every known provider, in a stable order.
    pub const KNOWN: [Provider; 14] = [
        Provider::OpenAi,
        Provider::Azure,
        Provider::Anthropic,
        Provider::Gemini,
        Provider::VertexAi,
        Provider::Bedrock,
        Provider::Mistral,
        Provider::Groq,
        Provider::DeepSeek,
        Provider::Xai,
        Provider::Together,
        Provider::Fireworks,
        Provider::Cohere,
        Provider::OpenRouter,
    ];

    /// The canonical lower-case name (`openai`, `vertex_ai`, …).
    pub fn as_str(&self) -> &str {
        match self {
            Provider::OpenAi => "openai",
            Provider::Azure => "azure",
            Provider::Anthropic => "anthropic",
            Provider::Gemini => "gemini",
            Provider::VertexAi => "vertex_ai",
            Provider::Bedrock => "bedrock",
            Provider::Mistral => "mistral",
            Provider::Groq => "groq",
            Provider::DeepSeek => "deepseek",
            Provider::Xai => "xai",
            Provider::Together => "together",
            Provider::Fireworks => "fireworks",
            Provider::Cohere => "cohere",
            Provider::OpenRouter => "openrouter",
            Provider::Other(name) => name,
        }
    }

    /// Parses a provider name, accepting the canonical names and the spellings other
    /// tools use (`azure_openai`, `together_ai`, `fireworks_ai`, `google`, `vertex`,
    /// `bedrock_converse`, `cohere_chat`, `x-ai`).
    ///
    /// Names are case-insensitive; an unknown name becomes [`Provider::Other`] when it is
    /// a plausible identifier and is refused otherwise.
    pub fn parse(name: &str) -> Result<Provider, InvalidProvider> {
        let lower = name.trim().to_ascii_lowercase();
        let known = match lower.as_str() {
            "openai" => Provider::OpenAi,
            "azure" | "azure_openai" | "azure_ai" => Provider::Azure,
            "anthropic" => Provider::Anthropic,
            "gemini" | "google" | "google_ai_studio" => Provider::Gemini,
            "vertex_ai" | "vertex" | "vertexai" | "google_vertex" => Provider::VertexAi,
            "bedrock" | "bedrock_converse" | "aws_bedrock" => Provider::Bedrock,
            "mistral" => Provider::Mistral,
            "groq" => Provider::Groq,
            "deepseek" => Provider::DeepSeek,
            "xai" | "x-ai" | "x_ai" => Provider::Xai,
            "together" | "together_ai" | "togetherai" => Provider::Together,
            "fireworks" | "fireworks_ai" => Provider::Fireworks,
            "cohere" | "cohere_chat" => Provider::Cohere,
            "openrouter" => Provider::OpenRouter,
            _ => {
                let plausible = !lower.is_empty()
                    && lower.len() <= 64
                    && lower
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
                if !plausible {
                    return Err(InvalidProvider(name.escape_debug().to_string()));
                }
                Provider::Other(Arc::from(lower))
            }
        };
        Ok(known)
    }

    /// Whether this is one of the providers Routero knows by name.
    pub fn is_known(&self) -> bool {
        !matches!(self, Provider::Other(_))
    }
}

impl fmt::Display for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

impl FromStr for Provider {
    type Err = InvalidProvider;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Provider::parse(s)
    }
}

impl serde::Serialize for Provider {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for Provider {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        Provider::parse(&name).map_err(serde::de::Error::custom)
    }
}

/// A provider name that is not a plausible identifier.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid provider name \"{0}\": expected letters, digits, '_', '-' or '.', at most 64")]
pub struct InvalidProvider(String);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_names_round_trip() {
        for provider in Provider::KNOWN {
            assert_eq!(Provider::parse(provider.as_str()).unwrap(), provider);
        }
    }

    #[test]
    fn aliases_and_case() {
        assert_eq!(Provider::parse("Together_AI").unwrap(), Provider::Together);
        assert_eq!(Provider::parse("azure_openai").unwrap(), Provider::Azure);
        assert_eq!(
            Provider::parse("dashscope").unwrap(),
            Provider::Other(Arc::from("dashscope"))
        );
        assert!(Provider::parse("bad name\n").is_err());
        assert!(Provider::parse("").is_err());
    }
}
