//! What the provider-fixture tests share: where the fixtures are, walking them in a
//! stable order, and reading their expected usage.

use std::fs;
use std::path::{Path, PathBuf};

use serde_json::Value;

/// `tests/data/providers`: one directory per provider.
pub(crate) fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/providers")
}

/// Every fixture file as (provider directory name, file name, path), sorted.
pub(crate) fn fixture_files() -> Vec<(String, String, PathBuf)> {
    let mut out = Vec::new();
    for dir in fs::read_dir(fixtures()).unwrap().flatten() {
        if !dir.path().is_dir() {
            continue;
        }
        let dir_name = dir.file_name().to_string_lossy().into_owned();
        for file in fs::read_dir(dir.path()).unwrap().flatten() {
            let name = file.file_name().to_string_lossy().into_owned();
            out.push((dir_name.clone(), name, file.path()));
        }
    }
    out.sort_by(|a, b| a.2.cmp(&b.2));
    out
}

/// The hand-derived expected usage of the fixture `stem` beside `path`.
pub(crate) fn expected(path: &Path, stem: &str) -> Value {
    let file = path.with_file_name(format!("{stem}.expected.json"));
    serde_json::from_slice(&fs::read(&file).unwrap())
        .unwrap_or_else(|e| panic!("{}: {e}", file.display()))
}

/// An expected count, if the fixture states it.
pub(crate) fn count(expected: &Value, key: &str) -> Option<u64> {
    expected.get(key).and_then(Value::as_u64)
}
