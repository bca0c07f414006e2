//! Every provider's stream extractor on arbitrary bytes in two chunks: never a panic,
//! and the result does not depend on the chunk boundary.
#![no_main]

use libfuzzer_sys::fuzz_target;
use routero_core::Provider;
use routero_core::extract::StreamExtractor;

fuzz_target!(|data: &[u8]| {
    let Some((&cut, bytes)) = data.split_first() else { return };
    let at = usize::from(cut) % (bytes.len() + 1);
    let (a, b) = bytes.split_at(at);
    for provider in Provider::KNOWN {
        let mut whole = StreamExtractor::new(&provider);
        let whole = whole.push(bytes).and_then(|()| whole.finish());
        let mut split = StreamExtractor::new(&provider);
        let split = split.push(a).and_then(|()| split.push(b)).and_then(|()| split.finish());
        assert_eq!(format!("{whole:?}"), format!("{split:?}"));
    }
});
