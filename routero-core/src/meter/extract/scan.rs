//! Finds the top-level fields of a JSON object without parsing the rest.
//!
//! A provider response is mostly generated text; its usage is a few hundred bytes.
//! The scanner walks the top-level object, skipping every value it is not asked for
//! (strings by `memchr` for the next quote or backslash, containers by depth), and
//! hands back the raw slices of the wanted fields for `serde_json` to parse. It checks
//! the object's structure (keys, colons, commas, balanced brackets, no trailing
//! bytes) but not the contents of the values it skips: a response whose text is
//! malformed but whose usage is sound is still billed.

/// Why the bytes are not a JSON object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("not a JSON object: {reason} at byte {at}")]
pub(crate) struct ScanError {
    reason: &'static str,
    at: usize,
}

/// The deepest nesting the scanner follows (serde_json's own default limit).
const MAX_DEPTH: usize = 128;
const _: () = assert!(MAX_DEPTH <= u128::BITS as usize, "a bit per open container");

/// The raw values of `wanted` keys of the top-level object in `json`, by position;
/// a key given twice keeps its last value, as serde does.
pub(crate) fn fields<'a, const N: usize>(
    json: &'a [u8],
    wanted: [&str; N],
) -> Result<[Option<&'a [u8]>; N], ScanError> {
    fields_reading(json, wanted, N, |_| None)
}

/// [`fields`], where each value of `wanted[slot]` is first offered to `read`,
/// given the bytes from the value's first one: when it reads the value it returns
/// the value's length, and the scanner goes on from its end instead of walking it
/// again; when it declines, the value is skipped as any other.
pub(crate) fn fields_reading<'a, const N: usize>(
    json: &'a [u8],
    wanted: [&str; N],
    slot: usize,
    mut read: impl FnMut(&'a [u8]) -> Option<usize>,
) -> Result<[Option<&'a [u8]>; N], ScanError> {
    let mut found = [None; N];
    let mut at = skip_ws(json, 0);
    expect(json, at, b'{', "expected '{'")?;
    at = skip_ws(json, at + 1);
    if json.get(at) == Some(&b'}') {
        return finish(json, at + 1).map(|()| found);
    }
    loop {
        expect(json, at, b'"', "expected a key")?;
        let key_end = skip_string(json, at)?;
        let key = &json[at + 1..key_end - 1];
        at = skip_ws(json, key_end);
        expect(json, at, b':', "expected ':'")?;
        at = skip_ws(json, at + 1);
        let wanted_at = wanted.iter().position(|w| w.as_bytes() == key);
        let read_len = match wanted_at {
            Some(wanted_at) if wanted_at == slot => read(&json[at..]),
            _ => None,
        };
        let value_end = match read_len {
            Some(len) => at + len,
            None => skip_value(json, at)?,
        };
        if let Some(wanted_at) = wanted_at {
            found[wanted_at] = Some(&json[at..value_end]);
        }
        at = skip_ws(json, value_end);
        match json.get(at) {
            Some(b',') => at = skip_ws(json, at + 1),
            Some(b'}') => return finish(json, at + 1).map(|()| found),
            _ => {
                return Err(ScanError {
                    reason: "expected ',' or '}'",
                    at,
                });
            }
        }
    }
}

fn finish(json: &[u8], at: usize) -> Result<(), ScanError> {
    let end = skip_ws(json, at);
    if end == json.len() {
        Ok(())
    } else {
        Err(ScanError {
            reason: "trailing bytes",
            at: end,
        })
    }
}

fn expect(json: &[u8], at: usize, byte: u8, reason: &'static str) -> Result<(), ScanError> {
    if json.get(at) == Some(&byte) {
        Ok(())
    } else {
        Err(ScanError { reason, at })
    }
}

fn skip_ws(json: &[u8], mut at: usize) -> usize {
    while let Some(b' ' | b'\n' | b'\r' | b'\t') = json.get(at) {
        at += 1;
    }
    at
}

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGHS: u64 = 0x8080_8080_8080_8080;

/// A high bit in each byte of `word` that is zero: exact for the lowest such byte
/// (a borrow marks only bytes above a zero one), which is the one the searches take.
const fn zeros(word: u64) -> u64 {
    word.wrapping_sub(ONES) & !word & HIGHS
}

/// `byte` in every byte of a word.
const fn splat(byte: u8) -> u64 {
    ONES * byte as u64
}

/// The eight bytes from `at`, when there are eight.
fn word_at(json: &[u8], at: usize) -> Option<u64> {
    let chunk: [u8; 8] = json.get(at..at + 8)?.try_into().ok()?;
    Some(u64::from_le_bytes(chunk))
}

/// The end (one past the closing quote) of the string starting at `at`.
///
/// Most strings in a response are short keys: a word-at-a-time loop finds their end
/// faster than a vectorised search can start; past 32 bytes `memchr` takes over.
fn skip_string(json: &[u8], at: usize) -> Result<usize, ScanError> {
    let unterminated = ScanError {
        reason: "unterminated string",
        at,
    };
    let mut i = at + 1;
    // Short strings (keys, ids, finish reasons): eight bytes at a time.
    let short_end = (i + 32).min(json.len());
    while i < short_end {
        let Some(word) = word_at(json, i) else {
            break;
        };
        let hits = zeros(word ^ splat(b'"')) | zeros(word ^ splat(b'\\'));
        if hits == 0 {
            i += 8;
            continue;
        }
        i += (hits.trailing_zeros() / 8) as usize;
        if json[i] == b'"' {
            return Ok(i + 1);
        }
        i += 2; // a backslash and the byte it escapes
    }
    loop {
        let rest = json.get(i..).ok_or(unterminated)?;
        let offset = memchr::memchr2(b'"', b'\\', rest).ok_or(unterminated)?;
        i += offset;
        if json[i] == b'"' {
            return Ok(i + 1);
        }
        i += 2; // a backslash and the byte it escapes
    }
}

/// The end of the value starting at `at`.
fn skip_value(json: &[u8], at: usize) -> Result<usize, ScanError> {
    match json.get(at) {
        Some(b'"') => skip_string(json, at),
        Some(b'{' | b'[') => skip_container(json, at),
        Some(b'-' | b'0'..=b'9' | b't' | b'f' | b'n') => {
            let len = json[at..]
                .iter()
                .position(|b| matches!(b, b',' | b'}' | b']' | b' ' | b'\n' | b'\r' | b'\t'))
                .unwrap_or(json.len() - at);
            Ok(at + len)
        }
        _ => Err(ScanError {
            reason: "expected a value",
            at,
        }),
    }
}

/// Byte classes for the container skipper: only quotes and brackets matter.
const STRUCTURAL: [bool; 256] = {
    let mut table = [false; 256];
    table[b'"' as usize] = true;
    table[b'{' as usize] = true;
    table[b'}' as usize] = true;
    table[b'[' as usize] = true;
    table[b']' as usize] = true;
    table
};

/// The first byte at or after `at` that is a quote or a bracket, else `json.len()`;
/// eight bytes at a time (a pretty-printed response is mostly indentation, numbers
/// and punctuation between them).
fn next_structural(json: &[u8], mut at: usize) -> usize {
    while let Some(word) = word_at(json, at) {
        // `[` and `]` differ from `{` and `}` by the 0x20 bit alone, and no other
        // byte becomes either with it set.
        let folded = word | splat(0x20);
        let hits =
            zeros(word ^ splat(b'"')) | zeros(folded ^ splat(b'{')) | zeros(folded ^ splat(b'}'));
        if hits != 0 {
            return at + (hits.trailing_zeros() / 8) as usize;
        }
        at += 8;
    }
    while at < json.len() && !STRUCTURAL[usize::from(json[at])] {
        at += 1;
    }
    at
}

fn skip_container(json: &[u8], at: usize) -> Result<usize, ScanError> {
    // One bit per open container, set for an object: 128 levels in one register,
    // nothing to clear per call.
    let mut objects = 0u128;
    let mut depth = 0usize;
    let mut i = at;
    while i < json.len() {
        if !STRUCTURAL[usize::from(json[i])] {
            i = next_structural(json, i + 1);
            continue;
        }
        match json[i] {
            b'"' => {
                i = skip_string(json, i)?;
                continue;
            }
            open @ (b'{' | b'[') => {
                if depth == MAX_DEPTH {
                    return Err(ScanError {
                        reason: "nested too deeply",
                        at: i,
                    });
                }
                objects |= u128::from(open == b'{') << depth;
                depth += 1;
            }
            close @ (b'}' | b']') => {
                if depth == 0 || (objects >> (depth - 1) & 1 == 1) != (close == b'}') {
                    return Err(ScanError {
                        reason: "mismatched bracket",
                        at: i,
                    });
                }
                depth -= 1;
                objects &= !(1 << depth);
                if depth == 0 {
                    return Ok(i + 1);
                }
            }
            _ => {}
        }
        i += 1;
    }
    Err(ScanError {
        reason: "unterminated container",
        at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_top_level_fields_only() {
        let json = br#" {"choices":[{"message":{"content":"a \"usage\": {} ]","usage":1}}],
            "model":"gpt-4o", "usage":{"prompt_tokens":3}, "n": -1.5e3, "ok": true } "#;
        let [model, usage, missing] = fields(json, ["model", "usage", "missing"]).unwrap();
        assert_eq!(model, Some(&br#""gpt-4o""#[..]));
        assert_eq!(usage, Some(&br#"{"prompt_tokens":3}"#[..]));
        assert_eq!(missing, None);
        assert_eq!(fields(b"{}", ["a"]).unwrap(), [None]);
    }

    /// The word-at-a-time search against the byte-at-a-time one: every byte value
    /// at every position among fillers next to the structural bytes (`Z`, `z`, `|`,
    /// `!`, `#`) and the extremes, from every start.
    #[test]
    fn the_structural_search_agrees_with_a_plain_loop() {
        let naive = |json: &[u8], from: usize| {
            (from..json.len())
                .find(|&i| STRUCTURAL[usize::from(json[i])])
                .unwrap_or(json.len())
        };
        for filler in [
            0x00, 0x01, 0x21, 0x23, 0x5A, 0x5C, 0x7A, 0x7C, 0x7E, 0x80, 0xFF,
        ] {
            for byte in 0..=255u8 {
                for at in 0..20 {
                    let mut json = vec![filler; 20];
                    json[at] = byte;
                    json[(at * 7 + 3) % 20] = byte; // a second one, ahead or behind
                    for from in 0..=json.len() {
                        assert_eq!(
                            next_structural(&json, from),
                            naive(&json, from),
                            "byte {byte:#x} at {at} among {filler:#x}, from {from}"
                        );
                    }
                }
            }
        }
    }

    /// Strings' ends found word by word against a plain loop: an escaped quote, an
    /// escaped backslash before the closing quote, a lone backslash at the end, at
    /// every offset, in strings shorter and longer than the word loop's reach.
    #[test]
    fn string_ends_agree_with_a_plain_loop() {
        let naive = |json: &[u8]| -> Option<usize> {
            let mut i = 1;
            while i < json.len() {
                match json[i] {
                    b'"' => return Some(i + 1),
                    b'\\' => i += 2,
                    _ => i += 1,
                }
            }
            None
        };
        for len in 0..48 {
            for at in 0..len {
                for piece in [&br#"\""#[..], br#"\\"#, b"\\", b"\"", b"\xff"] {
                    let mut text = vec![b'a'; len];
                    text.splice(at..at, piece.iter().copied());
                    for tail in [&b"\",1]"[..], b"", b"\\"] {
                        let mut json = vec![b'"'];
                        json.extend_from_slice(&text);
                        json.extend_from_slice(tail);
                        assert_eq!(
                            skip_string(&json, 0).ok(),
                            naive(&json),
                            "{}",
                            String::from_utf8_lossy(&json)
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn broken_structure_is_refused() {
        for bad in [
            &br#"{"a":1"#[..],
            br#"{"a":"unterminated}"#,
            br#"{"a":[1,2}"#,
            br#"{"a" 1}"#,
            br#"{"a":1} x"#,
            br#"["a"]"#,
            b"",
            br#"{"a":"\"#,
        ] {
            assert!(
                fields(bad, ["a"]).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        let deep = format!("{{\"a\":{}{}}}", "[".repeat(200), "]".repeat(200));
        assert!(fields(deep.as_bytes(), ["a"]).is_err());
    }

    /// Brackets matched against a plain stack: containers of both kinds mixed
    /// (`{"k":` opens an object) at every depth to the limit and one past it, each
    /// closed rightly, and with one closer of the wrong kind at each level.
    #[test]
    fn brackets_match_at_every_depth() {
        for depth in 1..=MAX_DEPTH + 1 {
            // The kinds from outside in: an object where the depth's bits say so.
            let objects: Vec<bool> = (0..depth)
                .map(|level| (depth * 31 + level * 7) % 3 == 0)
                .collect();
            let mut open = String::new();
            for &object in &objects {
                open.push_str(if object { "{\"k\":" } else { "[" });
            }
            open.push('1');
            for wrong in std::iter::once(None).chain((0..depth).map(Some)) {
                let mut json = open.clone();
                for level in (0..depth).rev() {
                    let object = objects[level] != (wrong == Some(level));
                    json.push(if object { '}' } else { ']' });
                }
                let expected = wrong.is_none() && depth <= MAX_DEPTH;
                assert_eq!(
                    skip_container(json.as_bytes(), 0).is_ok(),
                    expected,
                    "depth {depth}, wrong closer at {wrong:?}: {json}"
                );
                if expected {
                    assert_eq!(skip_container(json.as_bytes(), 0), Ok(json.len()));
                }
            }
        }
        // Siblings: an array where an object was just closed at the same depth.
        for depth in 1..MAX_DEPTH {
            let json = format!("{}{{\"k\":1}},[2]{}", "[".repeat(depth), "]".repeat(depth));
            assert_eq!(skip_container(json.as_bytes(), 0), Ok(json.len()), "{json}");
        }
    }
}
