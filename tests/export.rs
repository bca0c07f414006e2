//! The `export` example run as a user runs it: both CSV files and a warehouse sync
//! written over the demo traffic, each equal to the analytics' month total.

mod common;

use std::process::Command;

#[test]
fn the_export_example_writes_csv_and_warehouse_files_equal_to_the_analytics() {
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
        3,
        "{stdout}"
    );
    // The run's objects, as the example lists them.
    let objects: Vec<&str> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("  "))
        .filter(|l| !l.starts_with("manifest "))
        .collect();
    assert_eq!(objects.len(), 4, "{stdout}");
    for (object, (dataset, extension)) in objects.iter().zip([
        ("rollups", "parquet"),
        ("rollups", "ndjson"),
        ("request_log", "parquet"),
        ("request_log", "ndjson"),
    ]) {
        assert!(
            object.contains(&format!("/warehouse/{dataset}/date="))
                && object.ends_with(&format!("/run-0000000001.{extension}")),
            "{object}"
        );
        let bytes = std::fs::read(object).unwrap();
        assert!(!bytes.is_empty(), "{object}");
    }
    let manifest = stdout
        .lines()
        .find_map(|l| l.strip_prefix("  manifest "))
        .unwrap_or_else(|| panic!("{stdout}"));
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(manifest).unwrap()).unwrap();
    assert_eq!(manifest["run"], 1, "{manifest}");
    assert_eq!(manifest["objects"].as_array().map(Vec::len), Some(4));
    for dataset in ["rollups", "request_log"] {
        let schema = dir
            .join("warehouse-schema")
            .join(format!("{dataset}.bigquery.json"));
        assert!(schema.exists(), "{}", schema.display());
    }
    for name in ["chargeback", "focus"] {
        let file = std::fs::read_to_string(dir.join(format!("{name}-acme-{month}.csv"))).unwrap();
        assert!(file.lines().count() > 1, "{name}: {file}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// The README's warehouse tables list every exported column, with its types, as the
/// files carry them.
#[test]
fn the_readme_documents_every_warehouse_column() {
    use routero::warehouse::Dataset;

    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    for dataset in Dataset::ALL {
        let section = readme
            .split_once(&format!("`{dataset}`: one row per"))
            .unwrap_or_else(|| panic!("no table for {dataset}"))
            .1;
        let table: Vec<&str> = section
            .lines()
            .skip_while(|l| !l.starts_with('|'))
            .take_while(|l| l.starts_with('|'))
            .skip(2)
            .collect();
        let columns = dataset.columns();
        assert_eq!(table.len(), columns.len(), "{dataset}: {table:#?}");
        for (line, column) in table.iter().zip(&columns) {
            let cells: Vec<&str> = line.trim_matches('|').split(" | ").map(str::trim).collect();
            assert_eq!(cells[0], format!("`{}`", column.name), "{line}");
            assert_eq!(cells[2], column.kind.bigquery_type(), "{line}");
            assert_eq!(cells[3], column.kind.snowflake_type(), "{line}");
            assert_eq!(
                cells[4],
                if column.nullable { "yes" } else { "no" },
                "{line}"
            );
            assert_eq!(cells[5], column.doc, "{line}");
        }
    }
}
