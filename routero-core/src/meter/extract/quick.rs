//! A quick reader for the small JSON values a response states its usage in: the
//! usage objects, the model's name, the service tier.
//!
//! `serde_json` reads them correctly at some twenty instructions a byte, and in a
//! 1 KB body the usage object alone took half the time of extracting and pricing it.
//! These values are a few hundred bytes of plain keys and integers. This reader
//! handles the shapes providers send — keys and strings of printable ASCII without
//! escapes, integers, `null`, booleans, the known nested objects and lists, and any
//! other member's value skipped by the JSON grammar — and answers only where it
//! is certain to read the bytes as `serde_json` would. Anything else (an escape, a
//! fraction or an exponent where a count belongs, a number past `i64`, a key given
//! twice, a byte outside printable ASCII, deep nesting, a struct written as an
//! array) is not an error here: the reader gives up and `serde_json` reads the same
//! bytes, with its answer or its error. No input is read two ways: the tests below
//! run both readers over every fixture and hundreds of thousands of mutations of
//! them, and the fuzz target `usage_readers` over arbitrary bytes.

use serde::Deserialize;

/// `raw` as a `T`: the quick reading where it is certain, else `serde_json`'s.
pub(super) fn parse<'a, T: Quick<'a> + Deserialize<'a>>(raw: &'a [u8]) -> serde_json::Result<T> {
    match quick(raw) {
        Some(value) => Ok(value),
        None => serde_json::from_slice(raw),
    }
}

/// The quick reading alone; `None` when it is not certain.
pub(super) fn quick<'a, T: Quick<'a>>(raw: &'a [u8]) -> Option<T> {
    let mut reader = Reader {
        bytes: raw,
        at: 0,
        depth: 0,
    };
    reader.ws();
    let value = T::read(&mut reader)?;
    reader.ws();
    (reader.at == raw.len()).then_some(value)
}

/// The quick reading of the value at the start of `bytes`, and its length, where
/// it is certain; what follows the value is not looked at.
pub(super) fn quick_prefix<'a, T: Quick<'a>>(bytes: &'a [u8]) -> Option<(T, usize)> {
    let mut reader = Reader {
        bytes,
        at: 0,
        depth: 0,
    };
    let value = T::read(&mut reader)?;
    Some((value, reader.at))
}

/// A value the quick reader can read.
pub(super) trait Quick<'a>: Sized {
    /// The value at the reader, whitespace before it skipped; `None` to give up.
    fn read(r: &mut Reader<'a>) -> Option<Self>;
}

impl<'a, T: Quick<'a>> Quick<'a> for Option<T> {
    fn read(r: &mut Reader<'a>) -> Option<Self> {
        if r.literal(b"null") {
            Some(None)
        } else {
            T::read(r).map(Some)
        }
    }
}

impl Quick<'_> for i64 {
    fn read(r: &mut Reader<'_>) -> Option<Self> {
        r.integer()
    }
}

impl Quick<'_> for bool {
    fn read(r: &mut Reader<'_>) -> Option<Self> {
        if r.literal(b"true") {
            Some(true)
        } else if r.literal(b"false") {
            Some(false)
        } else {
            None
        }
    }
}

impl Quick<'_> for String {
    fn read(r: &mut Reader<'_>) -> Option<Self> {
        r.plain_str().map(str::to_owned)
    }
}

impl<'a> Quick<'a> for &'a str {
    fn read(r: &mut Reader<'a>) -> Option<Self> {
        r.plain_str()
    }
}

impl<'a> Quick<'a> for std::borrow::Cow<'a, str> {
    fn read(r: &mut Reader<'a>) -> Option<Self> {
        r.plain_str().map(std::borrow::Cow::Borrowed)
    }
}

impl<'a, T: Quick<'a>> Quick<'a> for Vec<T> {
    fn read(r: &mut Reader<'a>) -> Option<Self> {
        let mut items = Vec::new();
        r.array(|r| {
            items.push(T::read(r)?);
            Some(())
        })?;
        Some(items)
    }
}

/// A number kept as written (OpenRouter's `cost`) is always left to `serde_json`;
/// only a `null` in its place (an `Option<Number>`) is read here.
impl Quick<'_> for serde_json::Number {
    fn read(_: &mut Reader<'_>) -> Option<Self> {
        None
    }
}

/// Nesting past this is left to `serde_json` (whose own limit is 128).
const MAX_DEPTH: u32 = 64;

/// A position in the bytes being read.
pub(super) struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
    depth: u32,
}

impl<'a> Reader<'a> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }

    fn ws(&mut self) {
        while let Some(b' ' | b'\n' | b'\r' | b'\t') = self.peek() {
            self.at += 1;
        }
    }

    fn eat(&mut self, byte: u8) -> Option<()> {
        (self.peek() == Some(byte)).then(|| self.at += 1)
    }

    fn literal(&mut self, word: &[u8]) -> bool {
        let found = self.bytes[self.at..].starts_with(word);
        if found {
            self.at += word.len();
        }
        found
    }

    /// A string of printable ASCII without escapes: its content's bytes.
    fn plain(&mut self) -> Option<&'a [u8]> {
        self.eat(b'"')?;
        let rest = &self.bytes[self.at..];
        let len = memchr::memchr2(b'"', b'\\', rest)?;
        let content = &rest[..len];
        // Branch-free, so that the check runs a vector at a time.
        let printable = content
            .iter()
            .fold(true, |ok, &b| ok & (0x20..0x7f).contains(&b));
        if rest[len] != b'"' || !printable {
            return None;
        }
        self.at += len + 1;
        Some(content)
    }

    /// [`Reader::plain`] as text.
    fn plain_str(&mut self) -> Option<&'a str> {
        // Printable ASCII is UTF-8: this never gives up by itself.
        self.plain()
            .and_then(|bytes| std::str::from_utf8(bytes).ok())
    }

    /// An integer as `serde_json` reads one into an `i64`: no leading zero, no
    /// fraction or exponent, within range, and not `-0` (which `serde_json` reads
    /// as the float −0.0, and refuses as a count).
    fn integer(&mut self) -> Option<i64> {
        let negative = self.eat(b'-').is_some();
        let start = self.at;
        let mut value: i64 = 0;
        while let Some(digit @ b'0'..=b'9') = self.peek() {
            let digit = i64::from(digit - b'0');
            value = value.checked_mul(10)?;
            value = if negative {
                value.checked_sub(digit)?
            } else {
                value.checked_add(digit)?
            };
            self.at += 1;
        }
        let digits = self.at - start;
        let leading_zero = digits > 1 && self.bytes[start] == b'0';
        let fraction = matches!(self.peek(), Some(b'.' | b'e' | b'E'));
        if digits == 0 || leading_zero || fraction || (negative && value == 0) {
            return None;
        }
        Some(value)
    }

    /// Any JSON number, for a value that is skipped.
    fn number(&mut self) -> Option<()> {
        fn digits(r: &mut Reader<'_>) -> usize {
            let start = r.at;
            while let Some(b'0'..=b'9') = r.peek() {
                r.at += 1;
            }
            r.at - start
        }
        let _ = self.eat(b'-');
        let start = self.at;
        let whole = digits(self);
        if whole == 0 || (whole > 1 && self.bytes[start] == b'0') {
            return None;
        }
        if self.eat(b'.').is_some() && digits(self) == 0 {
            return None;
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.at += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.at += 1;
            }
            if digits(self) == 0 {
                return None;
            }
        }
        Some(())
    }

    fn nested(&mut self, inside: impl FnOnce(&mut Self) -> Option<()>) -> Option<()> {
        if self.depth == MAX_DEPTH {
            return None;
        }
        self.depth += 1;
        inside(self)?;
        self.depth -= 1;
        Some(())
    }

    /// An object: `member` is called with each key, the reader at its value.
    pub(super) fn object(
        &mut self,
        mut member: impl FnMut(&mut Self, &[u8]) -> Option<()>,
    ) -> Option<()> {
        self.sequence(b'{', b'}', |r| {
            let key = r.plain()?;
            r.ws();
            r.eat(b':')?;
            r.ws();
            member(r, key)
        })
    }

    /// An array: `element` is called with the reader at each element.
    fn array(&mut self, element: impl FnMut(&mut Self) -> Option<()>) -> Option<()> {
        self.sequence(b'[', b']', element)
    }

    /// `open`, items separated by commas (none after the last), `close`.
    fn sequence(
        &mut self,
        open: u8,
        close: u8,
        mut item: impl FnMut(&mut Self) -> Option<()>,
    ) -> Option<()> {
        self.eat(open)?;
        self.nested(|r| {
            r.ws();
            if r.eat(close).is_some() {
                return Some(());
            }
            loop {
                item(r)?;
                r.ws();
                let next = r.peek()?;
                r.at += 1;
                if next == close {
                    return Some(());
                }
                if next != b',' {
                    return None;
                }
                r.ws();
            }
        })
    }

    /// A value nobody reads, checked against the JSON grammar as `serde_json`
    /// checks the members it ignores.
    pub(super) fn skip(&mut self) -> Option<()> {
        match self.peek()? {
            b'{' => self.object(|r, _| r.skip()),
            b'[' => self.array(Reader::skip),
            b'"' => self.plain().map(drop),
            b't' | b'f' => bool::read(self).map(drop),
            b'n' => self.literal(b"null").then_some(()),
            _ => self.number(),
        }
    }
}

/// Implements [`Quick`] for a struct deriving `Deserialize` and `Default`, from
/// its members' JSON names (aliases after `|`) and their fields. A member given
/// twice (an alias counts as its field) is left to `serde_json`, which refuses it;
/// members not named are skipped, as `serde_json` ignores them.
macro_rules! quick_struct {
    ($ty:ty { $($($name:literal)|+ => $field:ident),* $(,)? }) => {
        impl<'a> $crate::meter::extract::quick::Quick<'a> for $ty {
            fn read(r: &mut $crate::meter::extract::quick::Reader<'a>) -> Option<Self> {
                let mut value = <$ty>::default();
                let mut seen = 0u64;
                r.object(|r, key| {
                    let mut bit = 1u64;
                    $(
                        if $(key == $name.as_bytes())||+ {
                            if seen & bit != 0 {
                                return None;
                            }
                            seen |= bit;
                            value.$field = $crate::meter::extract::quick::Quick::read(r)?;
                            return Some(());
                        }
                        bit <<= 1;
                    )*
                    let _ = bit;
                    r.skip()
                })?;
                Some(value)
            }
        }
    };
}
pub(super) use quick_struct;

/// Both readers over `raw` as a `T`: where the quick one answers, `serde_json` must
/// give the same value (it panics otherwise). Returns whether the quick one
/// answered.
#[cfg(any(test, feature = "testing"))]
pub(super) fn agrees<T>(raw: &[u8]) -> bool
where
    T: for<'a> Quick<'a> + for<'a> Deserialize<'a> + PartialEq + std::fmt::Debug,
{
    let Some(fast) = quick::<T>(raw) else {
        return false;
    };
    let text = String::from_utf8_lossy(raw);
    match serde_json::from_slice::<T>(raw) {
        Ok(slow) => assert_eq!(fast, slow, "the two readers differ on {text}"),
        Err(e) => panic!("read quickly, but serde_json refuses {text}: {e}; quick read {fast:?}"),
    }
    true
}

/// [`agrees`] for every usage type of a body; how many the quick reader read.
#[cfg(any(test, feature = "testing"))]
pub(super) fn agree_on_usage(raw: &[u8]) -> usize {
    use super::body::{
        AnthropicUsage, CohereUsage, ConverseUsage, GeminiUsage, OpenAiUsage, XGroq,
    };
    [
        agrees::<Option<OpenAiUsage>>(raw),
        agrees::<Option<AnthropicUsage>>(raw),
        agrees::<Option<GeminiUsage>>(raw),
        agrees::<Option<ConverseUsage>>(raw),
        agrees::<Option<CohereUsage>>(raw),
        agrees::<Option<XGroq>>(raw),
        agrees::<Option<String>>(raw),
    ]
    .into_iter()
    .filter(|answered| *answered)
    .count()
}

#[cfg(test)]
pub(super) mod tests {
    use std::collections::BTreeSet;
    use std::path::Path;

    use super::*;
    use crate::meter::extract::body::{
        AnthropicUsage, CohereUsage, ConverseUsage, GeminiUsage, OpenAiUsage,
    };

    fn files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
        for entry in std::fs::read_dir(dir).expect("test data") {
            let path = entry.expect("test data").path();
            if path.is_dir() {
                files(&path, out);
            } else if path.extension().is_some_and(|e| e == "json" || e == "sse") {
                out.push(path);
            }
        }
    }

    /// The keys whose values are usage objects, at any depth of any provider's
    /// response or event.
    const USAGE_KEYS: [&str; 5] = [
        "usage",
        "usageMetadata",
        "billed_units",
        "x_groq",
        "amazon-bedrock-invocationMetrics",
    ];

    /// The JSON of the provider fixtures and the hostile corpus (an SSE file's data
    /// lines each): every document, and every object and array inside them, compact
    /// and pretty; and apart, the usage objects among them.
    pub(in crate::meter::extract) fn corpus() -> (BTreeSet<Vec<u8>>, BTreeSet<Vec<u8>>) {
        fn both(value: &serde_json::Value, out: &mut BTreeSet<Vec<u8>>) {
            out.insert(serde_json::to_vec(value).expect("a value serialises"));
            out.insert(serde_json::to_vec_pretty(value).expect("a value serialises"));
        }
        fn inner(
            value: &serde_json::Value,
            all: &mut BTreeSet<Vec<u8>>,
            usage: &mut BTreeSet<Vec<u8>>,
        ) {
            match value {
                serde_json::Value::Object(map) => {
                    both(value, all);
                    for (key, child) in map {
                        if USAGE_KEYS.contains(&key.as_str()) && child.is_object() {
                            both(child, usage);
                        }
                        inner(child, all, usage);
                    }
                }
                serde_json::Value::Array(items) => {
                    both(value, all);
                    for child in items {
                        inner(child, all, usage);
                    }
                }
                _ => {}
            }
        }
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data");
        let mut paths = Vec::new();
        files(&root, &mut paths);
        let (mut all, mut usage) = (BTreeSet::new(), BTreeSet::new());
        for path in paths {
            let bytes = std::fs::read(&path).expect("test data");
            let documents: Vec<Vec<u8>> = if path.extension().is_some_and(|e| e == "sse") {
                bytes
                    .split(|&b| b == b'\n')
                    .filter_map(|line| line.strip_prefix(b"data:"))
                    .map(|data| data.trim_ascii().to_vec())
                    .collect()
            } else {
                vec![bytes]
            };
            for document in documents {
                if let Ok(value) = serde_json::from_slice::<serde_json::Value>(&document) {
                    inner(&value, &mut all, &mut usage);
                }
                all.insert(document);
            }
        }
        (all, usage)
    }

    /// The mutations of `raw` tried: every prefix, every byte replaced by one that
    /// matters to a JSON reader, and its first member given twice.
    pub(in crate::meter::extract) fn mutations(raw: &[u8]) -> Vec<Vec<u8>> {
        const BYTES: &[u8] = b"\"\\{}[],:0-.eEn t\x01\xc3";
        let mut out: Vec<Vec<u8>> = (0..raw.len()).map(|n| raw[..n].to_vec()).collect();
        for at in 0..raw.len() {
            for &byte in BYTES {
                if raw[at] != byte {
                    let mut changed = raw.to_vec();
                    changed[at] = byte;
                    out.push(changed);
                }
            }
        }
        let open = raw.iter().position(|&b| b == b'{');
        let first_end = raw.iter().position(|&b| b == b',');
        if let (Some(open), Some(end)) = (open, first_end) {
            let member = &raw[open + 1..end];
            let mut twice = raw[..=open].to_vec();
            twice.extend_from_slice(member);
            twice.push(b',');
            twice.extend_from_slice(&raw[open + 1..]);
            out.push(twice);
        }
        out
    }

    #[test]
    fn the_fixtures_usage_objects_are_read_quickly_and_alike() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/providers");
        let read = |path: &str, key: &str| {
            let body = std::fs::read(root.join(path)).expect("fixture");
            let [usage] = crate::meter::extract::scan::fields(&body, [key]).expect("an object");
            usage.expect("the fixture has usage").to_vec()
        };
        for (path, key) in [
            ("openai_chat/chat_completion_reasoning_cached.json", "usage"),
            ("openai_chat/chat_completion_audio.json", "usage"),
            ("deepseek/chat_completion_reasoner.json", "usage"),
            ("xai/chat_completion_reasoning.json", "usage"),
            ("mistral/chat_completion.json", "usage"),
            ("openai_chat/chat_completion_cache_write.json", "usage"),
            ("groq/chat_completion.json", "usage"),
        ] {
            assert!(agrees::<OpenAiUsage>(&read(path, key)), "{path}");
        }
        for path in [
            "anthropic/message_thinking.json",
            "anthropic/message_cache_web_search.json",
        ] {
            assert!(agrees::<AnthropicUsage>(&read(path, "usage")), "{path}");
        }
        for path in [
            "gemini/generate_content_thinking_cached.json",
            "gemini/generate_content_url_context.json",
            "gemini/vertex_generate_content.json",
        ] {
            assert!(
                agrees::<GeminiUsage>(&read(path, "usageMetadata")),
                "{path}"
            );
        }
        for path in [
            "bedrock/converse_cache_read.json",
            "bedrock/converse_cache_write.json",
        ] {
            assert!(agrees::<ConverseUsage>(&read(path, "usage")), "{path}");
        }
        assert!(agrees::<CohereUsage>(&read("cohere/chat_v2.json", "usage")));
    }

    #[test]
    fn the_two_readers_agree_on_the_corpus() {
        let (all, usage) = corpus();
        let answered = all.iter().filter(|raw| agree_on_usage(raw) > 0).count();
        // Not vacuous: most objects are read quickly as some type.
        assert!(answered > all.len() / 2, "{answered} of {}", all.len());
        assert!(usage.len() > 50, "{} usage objects", usage.len());
    }

    #[test]
    fn the_two_readers_agree_on_every_mutation_of_the_usage_objects() {
        let (_, usage) = corpus();
        let (mut tried, mut answered) = (0usize, 0usize);
        for raw in &usage {
            for mutated in mutations(raw) {
                tried += 1;
                answered += usize::from(agree_on_usage(&mutated) > 0);
            }
        }
        // Not vacuous: many mutations are still read quickly, many are not.
        assert!(answered > tried / 10, "{answered} of {tried} answered");
        assert!(
            tried - answered > tried / 10,
            "{answered} of {tried} answered"
        );
    }

    #[test]
    fn it_gives_up_where_serde_json_decides() {
        // Each of these is left to serde_json, which reads or refuses it.
        for raw in [
            &br#"{"prompt_tokens": 1.0}"#[..],
            br#"{"prompt_tokens": 1e3}"#,
            br#"{"prompt_tokens": 01}"#,
            br#"{"prompt_tokens": -0}"#,
            br#"{"prompt_tokens": 9223372036854775808}"#,
            br#"{"prompt_tokens": -9223372036854775809}"#,
            br#"{"prompt_tokens": 1, "prompt_tokens": 2}"#,
            br#"{"prompt_tokens": null, "prompt_tokens": 2}"#,
            br#"{"prompt_tokens_details": {}, "input_tokens_details": {}}"#,
            br#"{"prompt\u005ftokens": 1}"#,
            br#"{"prompt_tokens": 1,}"#,
            br#"{"cost": 0.0012}"#,
            br#"{"other": "caf\u00e9"}"#,
            "{\"other\": \"café\"}".as_bytes(),
            b"{\"other\": \"a\x01b\"}",
            br#"[1, 2]"#,
            br#"{"prompt_tokens": "1"}"#,
            br#"{"prompt_tokens": 1} x"#,
        ] {
            assert!(quick::<Option<OpenAiUsage>>(raw).is_none(), "{raw:?}");
            let _ = agrees::<Option<OpenAiUsage>>(raw);
        }
        assert!(quick::<GeminiUsage>(br#"{"promptTokensDetails": null}"#).is_none());
        let deep = format!("{{\"other\": {}1{}}}", "[".repeat(100), "]".repeat(100));
        assert!(quick::<OpenAiUsage>(deep.as_bytes()).is_none());
        assert!(serde_json::from_slice::<OpenAiUsage>(deep.as_bytes()).is_ok());
    }

    #[test]
    fn it_reads_the_edges_serde_json_accepts() {
        for raw in [
            &br#"{"prompt_tokens": 9223372036854775807}"#[..],
            br#"{"prompt_tokens": -9223372036854775808}"#,
            br#" { "prompt_tokens" : 1 , "x" : [ { "y" : -1.5e-3 } , true , null , "z" ] } "#,
            br#"{}"#,
            br#"null"#,
            br#"{"cost": null, "is_byok": false}"#,
        ] {
            assert!(agrees::<Option<OpenAiUsage>>(raw), "{raw:?}");
        }
    }
}
