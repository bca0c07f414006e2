//! Model-name normalisation: the names a response carries, to the names a price list uses.
//!
//! Every candidate is a sub-slice of the original name, so trying them allocates nothing.

/// The most candidates one name yields.
const MAX_CANDIDATES: usize = 16;

/// `us.anthropic.claude…` → `anthropic.claude…`: Bedrock cross-region inference profiles.
fn strip_geo(name: &str) -> Option<&str> {
    let (head, rest) = name.split_once('.')?;
    matches!(
        head,
        "us" | "eu" | "apac" | "au" | "jp" | "ca" | "global" | "us-gov" | "ap"
    )
    .then_some(rest)
}

/// `anthropic.claude…` → `claude…`: the vendor part of Bedrock model ids.
fn strip_vendor(name: &str) -> Option<&str> {
    let (head, rest) = name.split_once('.')?;
    matches!(
        head,
        "anthropic"
            | "amazon"
            | "meta"
            | "mistral"
            | "cohere"
            | "ai21"
            | "deepseek"
            | "openai"
            | "qwen"
            | "writer"
    )
    .then_some(rest)
}

/// The names to try for `name`, most specific first, without duplicates.
///
/// In order: the name itself; the name without leading path segments
/// (`openai/gpt-4o` → `gpt-4o`, `publishers/google/models/gemini-2.5-pro` →
/// `gemini-2.5-pro`); then, for each of those, without a Bedrock geo prefix
/// (`us.anthropic…`), without a `:N` version, without a `-vN` version, without a
/// Bedrock vendor prefix, and without a date or version stamp (`-2024-08-06`,
/// `-20250929`, `@20250929`, `-0613`, `-002`, `-latest`).
pub(crate) fn candidates(name: &str) -> Candidates<'_> {
    let mut out = Candidates {
        names: [""; MAX_CANDIDATES],
        len: 0,
    };
    out.push(name);
    let mut rest = name;
    while let Some((_, tail)) = rest.split_once('/') {
        if tail.is_empty() {
            break;
        }
        out.push(tail);
        rest = tail;
    }
    let roots = out.len;
    for i in 0..roots {
        let mut current = out.names[i];
        // Each step strips one kind of decoration and keeps what it produced.
        if let Some(stripped) = strip_geo(current) {
            current = stripped;
            out.push(current);
        }
        if let Some(stripped) = strip_colon_version(current) {
            current = stripped;
            out.push(current);
        }
        if let Some(stripped) = strip_v_version(current) {
            current = stripped;
            out.push(current);
        }
        if let Some(stripped) = strip_vendor(current) {
            current = stripped;
            out.push(current);
        }
        while let Some(stripped) = strip_stamp(current) {
            current = stripped;
            out.push(current);
        }
    }
    out
}

/// A fixed-capacity list of candidate names.
#[derive(Debug)]
pub(crate) struct Candidates<'a> {
    names: [&'a str; MAX_CANDIDATES],
    len: usize,
}

impl<'a> Candidates<'a> {
    fn push(&mut self, name: &'a str) {
        if name.is_empty() || self.len == MAX_CANDIDATES || self.names[..self.len].contains(&name) {
            return;
        }
        self.names[self.len] = name;
        self.len += 1;
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &'a str> + '_ {
        self.names[..self.len].iter().copied()
    }
}

/// `name:0` → `name`.
fn strip_colon_version(name: &str) -> Option<&str> {
    let (head, tail) = name.rsplit_once(':')?;
    (!tail.is_empty() && tail.bytes().all(|b| b.is_ascii_digit())).then_some(head)
}

/// `name-v2` → `name` (Bedrock ids).
fn strip_v_version(name: &str) -> Option<&str> {
    let (head, tail) = name.rsplit_once("-v")?;
    (!tail.is_empty()
        && tail.len() <= 2
        && tail.bytes().all(|b| b.is_ascii_digit())
        && !head.is_empty())
    .then_some(head)
}

/// Strips one trailing date or version stamp.
fn strip_stamp(name: &str) -> Option<&str> {
    if let Some(head) = name.strip_suffix("-latest") {
        return (!head.is_empty()).then_some(head);
    }
    let bytes = name.as_bytes();
    let len = bytes.len();
    // -YYYY-MM-DD
    if len > 11 {
        let tail = &bytes[len - 11..];
        let is_date = tail[0] == b'-'
            && tail[5] == b'-'
            && tail[8] == b'-'
            && [1, 2, 3, 4, 6, 7, 9, 10]
                .iter()
                .all(|&i| tail[i].is_ascii_digit());
        if is_date {
            return Some(&name[..len - 11]);
        }
    }
    // -YYYYMMDD, @YYYYMMDD, -MMDD / -YYMM, -001 (Gemini and Vertex versions)
    let digits = bytes
        .iter()
        .rev()
        .take_while(|b| b.is_ascii_digit())
        .count();
    if matches!(digits, 3 | 4 | 8) && len > digits + 1 {
        let sep = bytes[len - digits - 1];
        if sep == b'-' || sep == b'@' {
            return Some(&name[..len - digits - 1]);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(name: &str) -> Vec<&str> {
        candidates(name).iter().collect()
    }

    #[test]
    fn dated_names_fall_back_to_their_base() {
        assert_eq!(
            all("gpt-4o-2024-08-06"),
            vec!["gpt-4o-2024-08-06", "gpt-4o"]
        );
        assert_eq!(
            all("claude-sonnet-4-5-20250929"),
            vec!["claude-sonnet-4-5-20250929", "claude-sonnet-4-5"]
        );
        assert_eq!(all("claude-sonnet-4-5@20250929")[1], "claude-sonnet-4-5");
        assert_eq!(
            all("mistral-small-latest"),
            vec!["mistral-small-latest", "mistral-small"]
        );
        assert_eq!(all("gpt-4.1"), vec!["gpt-4.1"]);
        assert_eq!(
            all("gemini-1.5-flash-002"),
            vec!["gemini-1.5-flash-002", "gemini-1.5-flash"]
        );
        assert_eq!(all("gpt-4o-mini"), vec!["gpt-4o-mini"]);
    }

    #[test]
    fn provider_prefixes_and_paths_are_stripped() {
        assert_eq!(all("openai/gpt-4o"), vec!["openai/gpt-4o", "gpt-4o"]);
        assert!(all("publishers/google/models/gemini-2.5-pro").contains(&"gemini-2.5-pro"));
    }

    #[test]
    fn bedrock_ids_reduce_to_the_vendor_model() {
        let names = all("us.anthropic.claude-3-5-sonnet-20241022-v2:0");
        assert_eq!(
            names,
            vec![
                "us.anthropic.claude-3-5-sonnet-20241022-v2:0",
                "anthropic.claude-3-5-sonnet-20241022-v2:0",
                "anthropic.claude-3-5-sonnet-20241022-v2",
                "anthropic.claude-3-5-sonnet-20241022",
                "claude-3-5-sonnet-20241022",
                "claude-3-5-sonnet",
            ]
        );
    }
}
