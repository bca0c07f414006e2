//! The `export` example run as a user runs it: both files written over the demo
//! traffic, each equal to the analytics' month total.

mod common;

use std::process::Command;

#[test]
fn the_export_example_writes_both_files_equal_to_the_analytics() {
    let dir = std::env::temp_dir().join(format!("routero-export-{}", std::process::id()));
    // Yesterday's month: the demo traffic of the last fortnight always reaches it.
    let month = (chrono::Utc::now() - chrono::Duration::days(1))
        .format("%Y-%m")
        .to_string();
    let output = Command::new(common::example("export"))
        .args(["acme", &month])
        .arg(&dir)
        .env_remove("ROUTERO_DATABASE_URL")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        stdout.matches("equal to the analytics'").count(),
        2,
        "{stdout}"
    );
    for name in ["chargeback", "focus"] {
        let file = std::fs::read_to_string(dir.join(format!("{name}-acme-{month}.csv"))).unwrap();
        assert!(file.lines().count() > 1, "{name}: {file}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
