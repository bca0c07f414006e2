//! The `routero-cost` example, run as a user runs it: every fixture in, one JSON
//! object or one stderr line and a documented exit code out.
//!
//! `cargo test` builds the examples before the tests, so the binary sits beside the
//! test executable's directory.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::Value;

fn binary() -> PathBuf {
    common::example("routero-cost")
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("routero-core/tests/data/providers")
}

fn run(args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut child = Command::new(binary())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{}: {e}", binary().display()));
    if let Some(input) = stdin {
        // A run that fails before reading its input (a bad price file) may close stdin
        // first: its answer is in the exit code and stderr, not in this write.
        if let Err(e) = child.stdin.take().unwrap().write_all(input) {
            assert_eq!(e.kind(), std::io::ErrorKind::BrokenPipe, "{e}");
        }
    }
    drop(child.stdin.take());
    child.wait_with_output().unwrap()
}

const AT: [&str; 2] = ["--at", "2026-11-28T12:00:00Z"];

#[test]
fn prices_a_body_with_exact_decimal_strings() {
    let file = fixtures().join("anthropic/message_cache_web_search.json");
    let out = run(
        &[
            "--provider",
            "anthropic",
            AT[0],
            AT[1],
            file.to_str().unwrap(),
        ],
        None,
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["provider"], "anthropic");
    assert_eq!(json["model"], "claude-sonnet-4-5-20250929");
    assert_eq!(json["usage"]["input_tokens"], 2113);
    assert_eq!(json["usage"]["cache_write_tokens"], 3072);
    assert_eq!(json["cost"]["currency"], "USD");
    assert_eq!(json["cost"]["total"], "0.0553334");
    let lines = json["cost"]["lines"].as_array().unwrap();
    assert_eq!(lines.len(), 6);
}

#[test]
fn every_fixture_prices_or_says_why_not() {
    let mut dirs: Vec<_> = std::fs::read_dir(fixtures())
        .unwrap()
        .flatten()
        .filter(|e| e.path().is_dir())
        .collect();
    dirs.sort_by_key(|e| e.path());
    let mut priced = 0;
    for dir in dirs {
        let name = dir.file_name().to_string_lossy().into_owned();
        let provider = match name.as_str() {
            "openai_chat" | "openai_responses" | "openai_embeddings" => "openai",
            "azure_openai" => "azure",
            other => other,
        };
        let mut files: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .collect();
        files.sort();
        for file in files {
            let file_name = file.file_name().unwrap().to_string_lossy().into_owned();
            if file_name.ends_with(".expected.json")
                || !(file_name.ends_with(".json") || file_name.ends_with(".sse"))
            {
                continue;
            }
            let mut args = vec!["--provider", provider, AT[0], AT[1]];
            // Converse and Cohere responses do not name their model: the gateway knows it.
            if provider == "bedrock" && file_name.starts_with("converse") {
                args.extend(["--model", "anthropic.claude-haiku-4-5-20251001-v1:0"]);
            }
            if provider == "cohere" {
                args.extend(["--model", "command-a-03-2025"]);
            }
            let path = file.to_str().unwrap().to_owned();
            args.push(&path);
            let out = run(&args, None);
            let stderr = String::from_utf8_lossy(&out.stderr);
            if file_name == "chat_stream_no_usage.sse" {
                assert_eq!(out.status.code(), Some(5), "{file_name}: {stderr}");
                assert_eq!(stderr.lines().count(), 1);
                continue;
            }
            assert_eq!(out.status.code(), Some(0), "{name}/{file_name}: {stderr}");
            let json: Value = serde_json::from_slice(&out.stdout).unwrap();
            assert!(
                json["cost"]["total"].is_string(),
                "{name}/{file_name}: money is a string"
            );
            priced += 1;
        }
    }
    assert_eq!(priced, 42);
}

#[test]
fn exit_codes_for_each_failure() {
    let body = br#"{"model":"gpt-4o","usage":{"prompt_tokens":10,"completion_tokens":5}}"#;
    let ok = run(&["--provider", "openai", AT[0], AT[1]], Some(body));
    assert_eq!(ok.status.code(), Some(0));

    let cases: [(&[&str], &[u8], i32); 6] = [
        (
            &["--provider", "openai"],
            b"{\"usage\": {\"prompt_tokens\": 1",
            3,
        ),
        (
            &["--provider", "openai"],
            br#"{"model":"gpt-nope","usage":{"prompt_tokens":1,"completion_tokens":1}}"#,
            4,
        ),
        (
            &["--provider", "openai"],
            br#"{"model":"gpt-4o","choices":[]}"#,
            5,
        ),
        (
            &["--provider", "openai"],
            br#"{"model":"gpt-4o","service_tier":"scale","usage":{"prompt_tokens":1}}"#,
            6,
        ),
        (&["--model"], b"", 2),
        (
            &[
                "--provider",
                "openai",
                "--prices",
                "/nonexistent/prices.toml",
            ],
            body,
            1,
        ),
    ];
    for (args, input, code) in cases {
        let out = run(args, Some(input));
        assert_eq!(
            out.status.code(),
            Some(code),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.stdout.is_empty());
        assert_eq!(
            String::from_utf8_lossy(&out.stderr).lines().count(),
            1,
            "one line on stderr"
        );
    }
}

#[test]
fn price_files_replace_the_bundled_table() {
    let dir = std::env::temp_dir().join(format!("routero-cost-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let toml = dir.join("prices.toml");
    std::fs::write(
        &toml,
        "format = 1\nversion = \"t\"\ncurrency = \"USD\"\n[[model]]\nprovider = \"openai\"\nname = \"gpt-4o\"\ninput = \"1\"\noutput = \"2\"\n",
    )
    .unwrap();
    let litellm = dir.join("prices.json");
    std::fs::write(
        &litellm,
        r#"{"gpt-4o": {"litellm_provider": "openai", "input_cost_per_token": 3e-06, "output_cost_per_token": 1e-05}}"#,
    )
    .unwrap();
    let body =
        br#"{"model":"gpt-4o","usage":{"prompt_tokens":1000000,"completion_tokens":1000000}}"#;
    let out = run(
        &["--provider", "openai", "--prices", toml.to_str().unwrap()],
        Some(body),
    );
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["cost"]["total"], "3");
    let out = run(
        &[
            "--provider",
            "openai",
            "--prices",
            litellm.to_str().unwrap(),
        ],
        Some(body),
    );
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["cost"]["total"], "13");
    let bad = dir.join("bad.toml");
    std::fs::write(&bad, "format = 1\nversion = \"t\"\ncurrency = \"USD\"\n[[model]]\nprovider = \"openai\"\nname = \"m\"\ninput = 1.5\n").unwrap();
    let out = run(
        &["--provider", "openai", "--prices", bad.to_str().unwrap()],
        Some(body),
    );
    assert_eq!(out.status.code(), Some(7));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `routero-cost prices diff`: models added and removed, changed rates with their
/// relative change, as text and JSON; the exit codes of bad input.
#[test]
fn prices_diff_lists_what_changed() {
    let dir = std::env::temp_dir().join(format!("routero-diff-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let old = dir.join("old.toml");
    let new = dir.join("new.toml");
    std::fs::write(
        &old,
        "format = 1\nversion = \"v1\"\ncurrency = \"USD\"\n\
         [[model]]\nprovider = \"openai\"\nname = \"o4-mini\"\ninput = \"1.1\"\noutput = \"4.4\"\n\
         [[model]]\nprovider = \"openai\"\nname = \"retired\"\ninput = \"1\"\noutput = \"2\"\n",
    )
    .unwrap();
    std::fs::write(
        &new,
        "format = 1\nversion = \"v2\"\ncurrency = \"USD\"\n\
         [[model]]\nprovider = \"openai\"\nname = \"o4-mini\"\ninput = \"1.21\"\noutput = \"4.4\"\n\
         [[model]]\nprovider = \"mistral\"\nname = \"new-one\"\ninput = \"0.4\"\noutput = \"2\"\n",
    )
    .unwrap();
    let (old, new) = (old.to_str().unwrap(), new.to_str().unwrap());
    let out = run(&["prices", "diff", old, new], None);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        "v1 -> v2: 1 added, 1 removed, 1 rates changed\n\
         added    mistral/new-one\n\
         removed  openai/retired\n\
         changed  openai/o4-mini standard.input 1.1 -> 1.21 (+10%)\n"
    );
    let out = run(&["prices", "diff", old, new, "--json"], None);
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["changed"][0]["old"], "1.1");
    assert_eq!(json["changed"][0]["new"], "1.21");
    assert_eq!(json["changed"][0]["relative"], "0.1");
    assert_eq!(json["added"][0]["model"], "new-one");
    // Against itself: nothing.
    let out = run(&["prices", "diff", "bundled", "bundled"], None);
    assert!(
        String::from_utf8(out.stdout)
            .unwrap()
            .contains(": 0 added, 0 removed, 0 rates changed")
    );
    assert_eq!(run(&["prices", "diff", old], None).status.code(), Some(2));
    assert_eq!(
        run(&["prices", "diff", old, "/nonexistent"], None)
            .status
            .code(),
        Some(1)
    );
    let broken = dir.join("broken.toml");
    std::fs::write(&broken, "format = 1\n[[model]]\n").unwrap();
    assert_eq!(
        run(&["prices", "diff", old, broken.to_str().unwrap()], None)
            .status
            .code(),
        Some(7)
    );
    std::fs::remove_dir_all(&dir).ok();
}

/// With `ROUTERO_LITELLM_PRICES` set, where the bundled table and the community map
/// disagree: information for a reader, not a failure.
#[test]
fn bundled_prices_against_the_community_map() {
    let Ok(path) = std::env::var("ROUTERO_LITELLM_PRICES") else {
        eprintln!("skipped: ROUTERO_LITELLM_PRICES is not set");
        return;
    };
    let out = run(&["prices", "diff", "bundled", &path], None);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let mut lines = text.lines();
    println!("{}", lines.next().unwrap());
    for line in lines.filter(|l| !l.starts_with("added")) {
        println!("{line}");
    }
}
