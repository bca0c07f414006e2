//! An incremental Server-Sent Events parser.
//!
//! Bytes arrive in chunks cut anywhere: inside a line, inside a UTF-8 sequence, between
//! the CR and LF of a line ending. The parser keeps only the unfinished line and the
//! current event's data, in buffers it reuses, and calls back once per complete event.
//! It follows the WHATWG event-stream rules: lines end with LF, CRLF or CR; a line
//! starting with `:` is a comment; `event:` names the event; `data:` lines are joined
//! with LF; a blank line dispatches the event. Bytes are handled as bytes: UTF-8 is
//! checked only by the JSON parser that reads the data.

/// The largest line or event data the parser buffers (16 MiB). A stream that sends
/// more without a line break is refused, so a hostile peer cannot grow memory forever.
pub const MAX_EVENT_BYTES: usize = 16 << 20;

/// One dispatched event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SseEvent<'a> {
    /// The `event:` name; empty when the event has none (the default `message`).
    pub event: &'a [u8],
    /// The data lines, joined with `\n`.
    pub data: &'a [u8],
}

/// A line or event over [`MAX_EVENT_BYTES`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("an SSE line or event exceeds {MAX_EVENT_BYTES} bytes")]
pub struct SseTooLarge;

/// The parser state between chunks.
#[derive(Debug, Default)]
pub struct SseParser {
    /// The unfinished line carried over from the previous chunk.
    line: Vec<u8>,
    /// The current event's data.
    data: Vec<u8>,
    /// The current event's name.
    event: Vec<u8>,
    /// Whether the current event has any `data:` field.
    has_data: bool,
    /// The previous chunk ended with CR: an LF starting the next one belongs to it.
    after_cr: bool,
}

impl SseParser {
    /// A parser at the start of a stream.
    pub fn new() -> SseParser {
        SseParser::default()
    }

    /// Feeds a chunk; `on_event` is called for each event it completes. An error from
    /// `on_event` stops the chunk and is returned.
    pub fn push<E>(
        &mut self,
        chunk: &[u8],
        on_event: &mut impl FnMut(SseEvent<'_>) -> Result<(), E>,
    ) -> Result<(), E>
    where
        E: From<SseTooLarge>,
    {
        // An event whose one data line lies within this chunk is handed over from
        // the chunk itself, not copied: most events are one line. What is still
        // borrowed when the chunk ends is copied then.
        self.lending(|parser, lent| parser.lines(chunk, lent, on_event))
    }

    /// Runs `step` with a slot for a data line lent from bytes that end with it,
    /// then copies into the parser what is still lent.
    fn lending<'b, E>(
        &mut self,
        step: impl FnOnce(&mut Self, &mut Option<&'b [u8]>) -> Result<(), E>,
    ) -> Result<(), E> {
        let mut lent = None;
        let result = step(self, &mut lent);
        if let Some(value) = lent {
            self.data.extend_from_slice(value);
        }
        result
    }

    fn lines<'c, E>(
        &mut self,
        mut chunk: &'c [u8],
        borrowed: &mut Option<&'c [u8]>,
        on_event: &mut impl FnMut(SseEvent<'_>) -> Result<(), E>,
    ) -> Result<(), E>
    where
        E: From<SseTooLarge>,
    {
        if chunk.is_empty() {
            return Ok(());
        }
        if self.after_cr {
            self.after_cr = false;
            if let [b'\n', rest @ ..] = chunk {
                chunk = rest;
            }
        }
        while let Some(end) = memchr::memchr2(b'\n', b'\r', chunk) {
            let (line, terminator) = (&chunk[..end], chunk[end]);
            let mut next = end + 1;
            if terminator == b'\r' {
                match chunk.get(next) {
                    Some(b'\n') => next += 1,
                    None => self.after_cr = true,
                    Some(_) => {}
                }
            }
            if self.line.is_empty() {
                self.line_complete(line, borrowed, on_event)?;
            } else {
                self.extend_line(line)?;
                let carried = std::mem::take(&mut self.line);
                // The carried line is the chunk's first: nothing is borrowed yet.
                let result = self.owned_line_complete(&carried, on_event);
                self.line = carried;
                self.line.clear();
                result?;
            }
            chunk = &chunk[next..];
        }
        self.extend_line(chunk)?;
        Ok(())
    }

    /// Ends the stream. An event whose closing blank line never came is dispatched
    /// anyway: a provider that closes the connection right after its last `data:` line
    /// still reported what that line says.
    pub fn finish<E>(
        mut self,
        on_event: &mut impl FnMut(SseEvent<'_>) -> Result<(), E>,
    ) -> Result<(), E>
    where
        E: From<SseTooLarge>,
    {
        if !self.line.is_empty() {
            let carried = std::mem::take(&mut self.line);
            self.owned_line_complete(&carried, on_event)?;
        }
        self.dispatch(&mut None, on_event)
    }

    fn extend_line(&mut self, bytes: &[u8]) -> Result<(), SseTooLarge> {
        if self.line.len() + bytes.len() > MAX_EVENT_BYTES {
            return Err(SseTooLarge);
        }
        self.line.extend_from_slice(bytes);
        Ok(())
    }

    /// A whole line the parser carried over itself: what it would lend does not
    /// outlive it, so a data line is copied.
    fn owned_line_complete<E>(
        &mut self,
        line: &[u8],
        on_event: &mut impl FnMut(SseEvent<'_>) -> Result<(), E>,
    ) -> Result<(), E>
    where
        E: From<SseTooLarge>,
    {
        self.lending(|parser, lent| parser.line_complete(line, lent, on_event))
    }

    /// One whole line. The current event's data is `borrowed` when it has one line
    /// lent by the caller, else `self.data`.
    fn line_complete<'l, E>(
        &mut self,
        line: &'l [u8],
        borrowed: &mut Option<&'l [u8]>,
        on_event: &mut impl FnMut(SseEvent<'_>) -> Result<(), E>,
    ) -> Result<(), E>
    where
        E: From<SseTooLarge>,
    {
        if line.is_empty() {
            return self.dispatch(borrowed, on_event);
        }
        if line[0] == b':' {
            return Ok(());
        }
        // The field name ends at the first colon: the two fields that matter are
        // recognised by their first bytes, every other line is searched for it.
        let colon = if line.starts_with(b"data:") {
            Some(4)
        } else if line.starts_with(b"event:") {
            Some(5)
        } else {
            memchr::memchr(b':', line)
        };
        let (field, value) = match colon {
            Some(colon) => {
                let value = &line[colon + 1..];
                (&line[..colon], value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (line, &[][..]),
        };
        match field {
            b"data" => {
                let so_far = self.data.len() + borrowed.map_or(0, <[u8]>::len);
                if so_far + value.len() + 1 > MAX_EVENT_BYTES {
                    return Err(SseTooLarge.into());
                }
                if let Some(first) = borrowed.take() {
                    self.data.extend_from_slice(first);
                }
                if self.has_data {
                    self.data.push(b'\n');
                    self.data.extend_from_slice(value);
                } else {
                    *borrowed = Some(value);
                }
                self.has_data = true;
            }
            b"event" => {
                self.event.clear();
                self.event.extend_from_slice(&value[..value.len().min(256)]);
            }
            _ => {}
        }
        Ok(())
    }

    fn dispatch<E>(
        &mut self,
        borrowed: &mut Option<&[u8]>,
        on_event: &mut impl FnMut(SseEvent<'_>) -> Result<(), E>,
    ) -> Result<(), E> {
        let result = if self.has_data {
            on_event(SseEvent {
                event: &self.event,
                data: borrowed.take().unwrap_or(&self.data),
            })
        } else {
            Ok(())
        };
        *borrowed = None;
        self.data.clear();
        self.event.clear();
        self.has_data = false;
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(chunks: &[&[u8]]) -> Vec<(String, String)> {
        let mut parser = SseParser::new();
        let mut out = Vec::new();
        let mut collect = |e: SseEvent<'_>| -> Result<(), SseTooLarge> {
            out.push((
                String::from_utf8(e.event.to_vec()).unwrap(),
                String::from_utf8(e.data.to_vec()).unwrap(),
            ));
            Ok(())
        };
        for chunk in chunks {
            parser.push(chunk, &mut collect).unwrap();
        }
        parser.finish(&mut collect).unwrap();
        out
    }

    #[test]
    fn events_comments_and_multi_line_data() {
        let got = events(&[
            b": keep-alive\n\nevent: ping\ndata: {\"a\":1}\n\ndata: x\ndata: y\n\ndata: [DONE]\n\n",
        ]);
        assert_eq!(
            got,
            vec![
                ("ping".into(), "{\"a\":1}".into()),
                (String::new(), "x\ny".into()),
                (String::new(), "[DONE]".into()),
            ]
        );
    }

    #[test]
    fn every_line_ending_and_split_points() {
        let text = b"event: a\r\ndata: 1\r\n\r\ndata: 2\r\rdata:3\n\n";
        let whole = events(&[text]);
        assert_eq!(
            whole,
            vec![
                ("a".into(), "1".into()),
                (String::new(), "2".into()),
                (String::new(), "3".into())
            ]
        );
        for split in 0..=text.len() {
            let (a, b) = text.split_at(split);
            assert_eq!(events(&[a, b]), whole, "split at {split}");
            assert_eq!(
                events(&[a, b"", b]),
                whole,
                "split at {split} with an empty chunk"
            );
        }
    }

    #[test]
    fn utf8_split_across_chunks() {
        let text = "data: {\"t\":\"héllo €\"}\n\n".as_bytes();
        for split in 0..=text.len() {
            let (a, b) = text.split_at(split);
            assert_eq!(
                events(&[a, b]),
                vec![(String::new(), "{\"t\":\"héllo €\"}".into())]
            );
        }
    }

    #[test]
    fn an_unterminated_last_event_is_still_dispatched() {
        assert_eq!(
            events(&[b"data: last"]),
            vec![(String::new(), "last".into())]
        );
        assert!(events(&[b"event: only-a-name\n\n"]).is_empty());
    }

    #[test]
    fn endless_lines_are_refused() {
        let mut parser = SseParser::new();
        let big = vec![b'x'; MAX_EVENT_BYTES / 2 + 1];
        let mut ignore = |_: SseEvent<'_>| -> Result<(), SseTooLarge> { Ok(()) };
        parser.push(&big, &mut ignore).unwrap();
        assert_eq!(parser.push(&big, &mut ignore), Err(SseTooLarge));
    }
}
