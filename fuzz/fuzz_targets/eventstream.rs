//! The AWS event-stream decoder on arbitrary bytes: typed errors, never a panic, and
//! the same frames whatever the chunking.
#![no_main]

use libfuzzer_sys::fuzz_target;
use routero_core::extract::eventstream::{EventStreamDecoder, EventStreamError, Frame};

fn frames(chunks: &[&[u8]]) -> Result<Vec<(Option<String>, Vec<u8>)>, EventStreamError> {
    let mut decoder = EventStreamDecoder::new();
    let mut out = Vec::new();
    for chunk in chunks {
        decoder.push(chunk, &mut |f: Frame<'_>| -> Result<(), EventStreamError> {
            out.push((f.event_type.map(str::to_owned), f.payload.to_vec()));
            Ok(())
        })?;
    }
    decoder.finish()?;
    Ok(out)
}

fuzz_target!(|data: &[u8]| {
    let Some((&cut, bytes)) = data.split_first() else { return };
    let at = usize::from(cut) % (bytes.len() + 1);
    let (a, b) = bytes.split_at(at);
    let whole = frames(&[bytes]);
    let split = frames(&[a, b]);
    if let (Ok(whole), Ok(split)) = (&whole, &split) {
        assert_eq!(whole, split);
    }
});
