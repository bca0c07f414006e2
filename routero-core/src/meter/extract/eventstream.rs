//! AWS event-stream framing (`application/vnd.amazon.eventstream`), as Bedrock's
//! ConverseStream and InvokeModelWithResponseStream send it.
//!
//! A message is a 12-byte prelude (total length, headers length, CRC32 of the first
//! eight bytes), the headers, the payload and a CRC32 of everything before it. The
//! decoder is incremental: frames may arrive cut anywhere. Both checksums are
//! verified; a corrupt or impossible frame is a typed error, never a guess.

/// The largest message the decoder accepts (AWS limits messages to 16 MiB of payload
/// and 128 KiB of headers).
pub const MAX_MESSAGE_BYTES: usize = (16 << 20) + (128 << 10) + 16;

const PRELUDE: usize = 12;

/// One decoded message: the three headers Bedrock sets, and the payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Frame<'a> {
    /// `:message-type`: `event`, `exception` or `error`.
    pub message_type: Option<&'a str>,
    /// `:event-type` (`chunk`, `messageStart`, `metadata`, …).
    pub event_type: Option<&'a str>,
    /// `:exception-type` of an exception message.
    pub exception_type: Option<&'a str>,
    /// The payload (JSON for Bedrock).
    pub payload: &'a [u8],
}

/// A frame that breaks the event-stream format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EventStreamError {
    /// The prelude's checksum does not match.
    #[error("event-stream prelude checksum mismatch")]
    PreludeChecksum,
    /// The message's checksum does not match.
    #[error("event-stream message checksum mismatch")]
    MessageChecksum,
    /// Lengths that no valid message has.
    #[error("event-stream message length {total} with {headers} bytes of headers is invalid")]
    Length {
        /// The total length announced.
        total: u32,
        /// The headers length announced.
        headers: u32,
    },
    /// A header that cannot be decoded.
    #[error("event-stream header is malformed")]
    Header,
    /// The stream ended inside a message.
    #[error("event-stream ended inside a message ({0} bytes left over)")]
    Truncated(usize),
}

/// The decoder state between chunks.
#[derive(Debug, Default)]
pub struct EventStreamDecoder {
    pending: Vec<u8>,
}

impl EventStreamDecoder {
    /// A decoder at the start of a stream.
    pub fn new() -> EventStreamDecoder {
        EventStreamDecoder::default()
    }

    /// Feeds a chunk; `on_frame` is called for each message it completes.
    pub fn push<E>(
        &mut self,
        chunk: &[u8],
        on_frame: &mut impl FnMut(Frame<'_>) -> Result<(), E>,
    ) -> Result<(), E>
    where
        E: From<EventStreamError>,
    {
        if self.pending.is_empty() {
            let used = decode_all(chunk, on_frame)?;
            self.pending.extend_from_slice(&chunk[used..]);
        } else {
            self.pending.extend_from_slice(chunk);
            let pending = std::mem::take(&mut self.pending);
            let result = decode_all(&pending, on_frame);
            self.pending = pending;
            let used = result?;
            self.pending.drain(..used);
        }
        Ok(())
    }

    /// Ends the stream: bytes of an unfinished message are an error.
    pub fn finish(self) -> Result<(), EventStreamError> {
        match self.pending.len() {
            0 => Ok(()),
            left => Err(EventStreamError::Truncated(left)),
        }
    }
}

/// Decodes every complete message at the start of `bytes`; returns how many bytes
/// they used.
fn decode_all<E>(
    bytes: &[u8],
    on_frame: &mut impl FnMut(Frame<'_>) -> Result<(), E>,
) -> Result<usize, E>
where
    E: From<EventStreamError>,
{
    let mut used = 0;
    while let Some(len) = message_len(&bytes[used..])? {
        let message = &bytes[used..used + len];
        on_frame(decode_message(message)?)?;
        used += len;
    }
    Ok(used)
}

/// The length of the message at the start of `bytes`, once all of it is there.
fn message_len(bytes: &[u8]) -> Result<Option<usize>, EventStreamError> {
    let Some(prelude) = bytes.get(..PRELUDE) else {
        return Ok(None);
    };
    let total = be32(&prelude[0..4]);
    let headers = be32(&prelude[4..8]);
    if crc32fast::hash(&prelude[..8]) != be32(&prelude[8..12]) {
        return Err(EventStreamError::PreludeChecksum);
    }
    let len = usize::try_from(total).map_err(|_| EventStreamError::Length { total, headers })?;
    let headers_len =
        usize::try_from(headers).map_err(|_| EventStreamError::Length { total, headers })?;
    if len > MAX_MESSAGE_BYTES || len < PRELUDE + 4 + headers_len {
        return Err(EventStreamError::Length { total, headers });
    }
    Ok((bytes.len() >= len).then_some(len))
}

fn be32(bytes: &[u8]) -> u32 {
    let mut word = [0u8; 4];
    word.copy_from_slice(&bytes[..4]);
    u32::from_be_bytes(word)
}

fn decode_message(message: &[u8]) -> Result<Frame<'_>, EventStreamError> {
    let len = message.len();
    if crc32fast::hash(&message[..len - 4]) != be32(&message[len - 4..]) {
        return Err(EventStreamError::MessageChecksum);
    }
    let headers_len =
        usize::try_from(be32(&message[4..8])).map_err(|_| EventStreamError::Header)?;
    let mut headers = &message[PRELUDE..PRELUDE + headers_len];
    let mut frame = Frame {
        payload: &message[PRELUDE + headers_len..len - 4],
        ..Frame::default()
    };
    while !headers.is_empty() {
        let (name, value, rest) = header(headers)?;
        match name {
            b":message-type" => frame.message_type = value,
            b":event-type" => frame.event_type = value,
            b":exception-type" => frame.exception_type = value,
            _ => {}
        }
        headers = rest;
    }
    Ok(frame)
}

/// A decoded header: its name, its value when it is a string, and the bytes after it.
type Header<'a> = (&'a [u8], Option<&'a str>, &'a [u8]);

/// Decodes the header at the start of `bytes`.
fn header(bytes: &[u8]) -> Result<Header<'_>, EventStreamError> {
    let (&name_len, rest) = bytes.split_first().ok_or(EventStreamError::Header)?;
    let name_len = usize::from(name_len);
    let name = rest.get(..name_len).ok_or(EventStreamError::Header)?;
    let (&kind, rest) = rest[name_len..]
        .split_first()
        .ok_or(EventStreamError::Header)?;
    let fixed = match kind {
        0 | 1 => Some(0),
        2 => Some(1),
        3 => Some(2),
        4 => Some(4),
        5 | 8 => Some(8),
        9 => Some(16),
        6 | 7 => None,
        _ => return Err(EventStreamError::Header),
    };
    if let Some(size) = fixed {
        let rest = rest.get(size..).ok_or(EventStreamError::Header)?;
        return Ok((name, None, rest));
    }
    let len_bytes = rest.get(..2).ok_or(EventStreamError::Header)?;
    let len = usize::from(u16::from_be_bytes([len_bytes[0], len_bytes[1]]));
    let value = rest.get(2..2 + len).ok_or(EventStreamError::Header)?;
    let text = if kind == 7 {
        Some(std::str::from_utf8(value).map_err(|_| EventStreamError::Header)?)
    } else {
        None
    };
    Ok((name, text, &rest[2 + len..]))
}

/// Encodes one message with string headers: what a Bedrock-compatible server (or a
/// test's fake upstream) sends.
pub fn encode(headers: &[(&str, &str)], payload: &[u8]) -> Vec<u8> {
    let mut encoded_headers = Vec::new();
    for (name, value) in headers {
        let name = &name.as_bytes()[..name.len().min(255)];
        let value = &value.as_bytes()[..value.len().min(usize::from(u16::MAX))];
        encoded_headers.push(u8::try_from(name.len()).unwrap_or(u8::MAX));
        encoded_headers.extend_from_slice(name);
        encoded_headers.push(7);
        encoded_headers
            .extend_from_slice(&u16::try_from(value.len()).unwrap_or(u16::MAX).to_be_bytes());
        encoded_headers.extend_from_slice(value);
    }
    let total = PRELUDE + encoded_headers.len() + payload.len() + 4;
    let mut out = Vec::with_capacity(total);
    out.extend_from_slice(&u32::try_from(total).unwrap_or(u32::MAX).to_be_bytes());
    out.extend_from_slice(
        &u32::try_from(encoded_headers.len())
            .unwrap_or(u32::MAX)
            .to_be_bytes(),
    );
    let prelude_crc = crc32fast::hash(&out);
    out.extend_from_slice(&prelude_crc.to_be_bytes());
    out.extend_from_slice(&encoded_headers);
    out.extend_from_slice(payload);
    let message_crc = crc32fast::hash(&out);
    out.extend_from_slice(&message_crc.to_be_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(chunks: &[&[u8]]) -> Result<Vec<(String, Vec<u8>)>, EventStreamError> {
        let mut decoder = EventStreamDecoder::new();
        let mut out = Vec::new();
        for chunk in chunks {
            decoder.push(chunk, &mut |f: Frame<'_>| -> Result<(), EventStreamError> {
                out.push((
                    f.event_type.unwrap_or_default().to_owned(),
                    f.payload.to_vec(),
                ));
                Ok(())
            })?;
        }
        decoder.finish()?;
        Ok(out)
    }

    fn stream() -> Vec<u8> {
        let mut bytes = encode(
            &[(":event-type", "messageStart"), (":message-type", "event")],
            br#"{"role":"assistant"}"#,
        );
        bytes.extend(encode(
            &[(":event-type", "metadata"), (":message-type", "event")],
            br#"{"usage":{"inputTokens":1,"outputTokens":2}}"#,
        ));
        bytes
    }

    #[test]
    fn round_trip_at_every_split() {
        let bytes = stream();
        let whole = decode(&[&bytes]).unwrap();
        assert_eq!(whole.len(), 2);
        assert_eq!(whole[1].0, "metadata");
        for split in 0..=bytes.len() {
            let (a, b) = bytes.split_at(split);
            assert_eq!(decode(&[a, b]).unwrap(), whole, "split at {split}");
        }
    }

    #[test]
    fn corruption_is_detected() {
        let bytes = stream();
        let mut bad_payload = bytes.clone();
        bad_payload[30] ^= 1;
        assert_eq!(
            decode(&[&bad_payload]),
            Err(EventStreamError::MessageChecksum)
        );
        let mut bad_prelude = bytes.clone();
        bad_prelude[2] ^= 1;
        assert_eq!(
            decode(&[&bad_prelude]),
            Err(EventStreamError::PreludeChecksum)
        );
        assert!(matches!(
            decode(&[&bytes[..bytes.len() - 3]]),
            Err(EventStreamError::Truncated(_))
        ));
    }
}
