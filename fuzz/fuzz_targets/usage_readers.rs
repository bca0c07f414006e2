//! The quick reader of usage objects against `serde_json` on arbitrary bytes: for
//! every usage object and event payload type, wherever the quick reader answers,
//! `serde_json` reads the same bytes to the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use routero_core::extract;

fuzz_target!(|data: &[u8]| {
    extract::check_usage_readers(data);
});
