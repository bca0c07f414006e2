//! A usage as the request log keeps it: its counts that are not zero, and the service
//! tier when it is not the standard one.
//!
//! A request's usage is mostly zeros (a chat completion has input and output tokens,
//! perhaps cached ones; audio, images, searches and media lengths are rare), and the
//! log writes one per request: the whole object is some 330 bytes of JSON for
//! PostgreSQL to parse into `jsonb`, the compact one 40 to 80. Read back, an absent
//! count is zero and an absent tier the standard one, so rows written whole (before
//! this form) read the same; a key this version does not know is refused (a usage
//! read without one of its counts would price it too low).

use routero_core::{ServiceTier, Usage};
use serde::de::value::MapAccessDeserializer;
use serde::de::{MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The counts of a [`Usage`], named as its own serialization names them: one list
/// for both directions, so a count added to one is in the other.
macro_rules! logged_usage {
    ($($count:ident),* $(,)?) => {
        impl Serialize for LoggedUsage {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                let usage = &self.0;
                let mut map = serializer.serialize_map(None)?;
                $(
                    if usage.$count != 0 {
                        map.serialize_entry(stringify!($count), &usage.$count)?;
                    }
                )*
                // `None` (not reported) and `Some(0)` differ: the second is written.
                if let Some(reasoning) = usage.reasoning_tokens {
                    map.serialize_entry("reasoning_tokens", &reasoning)?;
                }
                if usage.service_tier != ServiceTier::default() {
                    map.serialize_entry("service_tier", &usage.service_tier)?;
                }
                map.end()
            }
        }

        /// The stored form: every key optional, none unknown.
        #[derive(Deserialize, Default)]
        #[serde(default, deny_unknown_fields)]
        struct Stored {
            $($count: u64,)*
            reasoning_tokens: Option<u64>,
            service_tier: ServiceTier,
        }

        impl<'de> Deserialize<'de> for LoggedUsage {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                // An object only: serde would also take a list for a struct, and an
                // empty one would read as a zero usage.
                let stored = deserializer.deserialize_map(ObjectOnly)?;
                let mut usage = Usage::default();
                $(usage.$count = stored.$count;)*
                usage.reasoning_tokens = stored.reasoning_tokens;
                usage.service_tier = stored.service_tier;
                Ok(LoggedUsage(usage))
            }
        }
    };
}

struct ObjectOnly;

impl<'de> Visitor<'de> for ObjectOnly {
    type Value = Stored;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a usage object")
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Stored, A::Error> {
        Stored::deserialize(MapAccessDeserializer::new(map))
    }
}

/// A [`Usage`] in the request log's compact form (see the module's text).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LoggedUsage(pub(crate) Usage);

logged_usage!(
    input_tokens,
    cache_read_tokens,
    cache_write_5m_tokens,
    cache_write_1h_tokens,
    output_tokens,
    audio_input_tokens,
    image_input_tokens,
    audio_output_tokens,
    image_output_tokens,
    web_search_requests,
    images_generated,
    input_duration_ms,
    output_duration_ms,
);

#[cfg(test)]
mod tests {
    use super::*;

    /// Every field of a `Usage` set, read through `Usage`'s own serialization: a field
    /// added to `Usage` and not to the list above fails here (the literal misses it,
    /// or the round trip loses it).
    fn full() -> Usage {
        serde_json::from_str(
            r#"{"input_tokens":1,"cache_read_tokens":2,"cache_write_5m_tokens":3,
                "cache_write_1h_tokens":4,"output_tokens":5,"reasoning_tokens":6,
                "audio_input_tokens":7,"image_input_tokens":8,"audio_output_tokens":9,
                "image_output_tokens":10,"web_search_requests":11,"images_generated":12,
                "input_duration_ms":13,"output_duration_ms":14,"service_tier":"flex"}"#,
        )
        .unwrap()
    }

    fn round_trip(usage: Usage) -> (String, Usage) {
        let text = serde_json::to_string(&LoggedUsage(usage)).unwrap();
        let back: LoggedUsage = serde_json::from_str(&text).unwrap();
        (text, back.0)
    }

    #[test]
    fn every_count_survives_the_compact_form() {
        let usage = full();
        let whole = serde_json::to_value(usage).unwrap();
        let (text, back) = round_trip(usage);
        assert_eq!(back, usage);
        let compact: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            compact, whole,
            "with nothing zero, both forms hold the same"
        );
    }

    #[test]
    fn zeros_and_the_standard_tier_are_left_out_and_read_back() {
        let mut usage = Usage::tokens(1_200, 350);
        let (text, back) = round_trip(usage);
        assert_eq!(text, r#"{"input_tokens":1200,"output_tokens":350}"#);
        assert_eq!(back, usage);

        // Reasoning reported as zero is not reasoning left unreported.
        usage.reasoning_tokens = Some(0);
        let (text, back) = round_trip(usage);
        assert_eq!(
            text,
            r#"{"input_tokens":1200,"output_tokens":350,"reasoning_tokens":0}"#
        );
        assert_eq!(back.reasoning_tokens, Some(0));
        assert_eq!(
            round_trip(Usage::default()),
            ("{}".to_owned(), Usage::default())
        );
    }

    #[test]
    fn rows_written_whole_read_the_same() {
        let usage = full();
        let whole = serde_json::to_string(&usage).unwrap();
        let read: LoggedUsage = serde_json::from_str(&whole).unwrap();
        assert_eq!(read.0, usage);
        let plain = serde_json::to_string(&Usage::tokens(3, 4)).unwrap();
        let read: LoggedUsage = serde_json::from_str(&plain).unwrap();
        assert_eq!(read.0, Usage::tokens(3, 4));
    }

    #[test]
    fn an_unknown_key_or_a_bad_count_is_refused() {
        for text in [
            r#"{"input_tokens":1,"video_tokens":2}"#,
            r#"{"input_tokens":-1}"#,
            r#"{"input_tokens":"1"}"#,
            r#"{"service_tier":"platinum"}"#,
            "[]",
        ] {
            assert!(
                serde_json::from_str::<LoggedUsage>(text).is_err(),
                "{text} is refused"
            );
        }
    }
}
