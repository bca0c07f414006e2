//! Every provider's JSON body extractor on arbitrary bytes: a usage or a typed error,
//! never a panic, and never a usage that fails validation.
#![no_main]

use libfuzzer_sys::fuzz_target;
use routero_core::Provider;
use routero_core::extract;

fuzz_target!(|data: &[u8]| {
    for provider in Provider::KNOWN {
        if let Ok(extraction) = extract::from_body(&provider, data, &[("x-amzn-bedrock-input-token-count", "7")]) {
            assert!(extraction.usage.validate().is_ok());
        }
    }
});
