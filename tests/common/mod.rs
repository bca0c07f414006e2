//! What the tests that run the examples as processes share.

use std::path::PathBuf;

/// The built example `name`, beside the test binary (`cargo test` builds the
/// examples before it runs the tests).
pub(crate) fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let binary = exe
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("examples")
        .join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(
        binary.exists(),
        "{} is missing: run `cargo test` without a target filter",
        binary.display()
    );
    binary
}
