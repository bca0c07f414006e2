//! The SSE parser on arbitrary bytes cut at an arbitrary point: it never panics, and
//! the events do not depend on where the chunk boundary falls.
#![no_main]

use libfuzzer_sys::fuzz_target;
use routero_core::extract::sse::{SseEvent, SseParser, SseTooLarge};

fn events(chunks: &[&[u8]]) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut parser = SseParser::new();
    let mut out = Vec::new();
    let mut collect = |e: SseEvent<'_>| -> Result<(), SseTooLarge> {
        out.push((e.event.to_vec(), e.data.to_vec()));
        Ok(())
    };
    for chunk in chunks {
        if parser.push(chunk, &mut collect).is_err() {
            return out;
        }
    }
    let _ = parser.finish(&mut collect);
    out
}

fuzz_target!(|data: &[u8]| {
    let Some((&cut, bytes)) = data.split_first() else { return };
    let at = usize::from(cut) % (bytes.len() + 1);
    let (a, b) = bytes.split_at(at);
    assert_eq!(events(&[bytes]), events(&[a, b]));
});
