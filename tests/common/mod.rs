//! What the tests that run the examples as processes share.
// Each test crate uses some of these.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

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

/// A child process, killed when the test ends, passed or not.
pub(crate) struct Process(pub(crate) Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The `server` example over the in-memory demo store on a free port, with `env`
/// added: the process, its address and its bearer token.
pub(crate) fn server(env: &[(&str, &str)]) -> (Process, String, String) {
    let (process, addr, token, _) = server_with_org(env);
    (process, addr, token)
}

/// [`server`], and the token of its org-wide principal.
pub(crate) fn server_with_org(env: &[(&str, &str)]) -> (Process, String, String, String) {
    let (process, addr, token, org_token, _) = server_with_tokens(env);
    (process, addr, token, org_token)
}

/// [`server_with_org`], and the token of its one-workspace (acme-prod) principal.
pub(crate) fn server_with_tokens(
    env: &[(&str, &str)],
) -> (Process, String, String, String, String) {
    let mut command = Command::new(example("server"));
    command
        .env("ROUTERO_LISTEN", "127.0.0.1:0")
        .env_remove("ROUTERO_DATABASE_URL")
        .env_remove("ROUTERO_REDIS_URL")
        .env_remove("ROUTERO_DEMO_EVERY_MS")
        .stdout(Stdio::piped());
    for (name, value) in env {
        command.env(name, value);
    }
    let mut child = command.spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let process = Process(child);
    let mut lines = BufReader::new(stdout).lines();
    let mut org_token = String::new();
    let mut prod_token = String::new();
    let listening = lines
        .by_ref()
        .map(Result::unwrap)
        .find(|l| {
            if let Some(token) = l.strip_prefix("org-wide admin token (every Acme workspace): ") {
                org_token = token.to_owned();
            }
            if let Some(token) =
                l.strip_prefix("acme-prod admin token (one workspace, no ?workspace= needed): ")
            {
                prod_token = token.to_owned();
            }
            l.starts_with("listening on ")
        })
        .expect("the server says where it listens");
    // The rest of its output is read and dropped: a closed pipe would fail its prints.
    std::thread::spawn(move || lines.for_each(drop));
    let addr = listening["listening on http://".len()..]
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned();
    let token = listening
        .rsplit(": ")
        .next()
        .unwrap()
        .trim_end_matches(')')
        .to_owned();
    (process, addr, token, org_token, prod_token)
}

/// One HTTP/1.1 request; the status and the body.
pub(crate) fn request(
    addr: &str,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String) {
    let (status, _, body) = exchange(addr, method, target, headers, body);
    (status, body)
}

/// One HTTP/1.1 request; the status, the response head (lower-cased) and the body.
pub(crate) fn exchange(
    addr: &str,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    let mut text = format!(
        "{method} {target} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\ncontent-length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        text.push_str(&format!("{name}: {value}\r\n"));
    }
    text.push_str("\r\n");
    text.push_str(body);
    stream.write_all(text.as_bytes()).unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    let status = answer[9..12].parse().unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    let head = head.to_ascii_lowercase();
    let body = if head.contains("transfer-encoding: chunked") {
        dechunk(body)
    } else {
        body.to_owned()
    };
    (status, head, body)
}

/// The payload of a `transfer-encoding: chunked` body.
fn dechunk(body: &str) -> String {
    let mut out = String::new();
    let mut rest = body;
    while let Some((size, tail)) = rest.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16).unwrap();
        if size == 0 {
            break;
        }
        out.push_str(&tail[..size]);
        rest = &tail[size + 2..];
    }
    out
}

const FIXTURES: &str = "routero-core/tests/data/providers";

pub(crate) fn fixture(name: &str) -> Vec<u8> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(FIXTURES)
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// What the fake upstream received.
#[derive(Debug, Clone)]
pub(crate) struct Received {
    pub(crate) path: String,
    pub(crate) headers: HashMap<String, String>,
    pub(crate) body: Value,
}

/// A fake provider: replays the fixture the request's `x-fixture` header names, as
/// JSON or, for `.sse`, as an event stream written an event at a time; with
/// `x-pause-after-events: N` it stops for a second after N events.
pub(crate) fn fake_upstream() -> (String, Arc<Mutex<Vec<Received>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let received = Arc::new(Mutex::new(Vec::new()));
    let log = received.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let log = log.clone();
            std::thread::spawn(move || {
                let _ = replay(stream, &log);
            });
        }
    });
    (addr, received)
}

/// One HTTP/1.1 request read off a connection, as a test server sees it.
pub(crate) struct Incoming {
    pub(crate) method: String,
    pub(crate) target: String,
    /// Names lower-cased.
    pub(crate) headers: HashMap<String, String>,
    pub(crate) body: Vec<u8>,
}

/// The next request on `reader`; `None` when the client closed the connection.
pub(crate) fn read_request(reader: &mut impl BufRead) -> std::io::Result<Option<Incoming>> {
    let mut line = String::new();
    if reader.read_line(&mut line)? == 0 {
        return Ok(None);
    }
    let mut words = line.split_whitespace();
    let method = words.next().unwrap_or_default().to_owned();
    let target = words.next().unwrap_or_default().to_owned();
    let mut headers = HashMap::new();
    loop {
        line.clear();
        reader.read_line(&mut line)?;
        let Some((name, value)) = line.trim_end().split_once(':') else {
            break;
        };
        headers.insert(name.to_ascii_lowercase(), value.trim().to_owned());
    }
    let length = headers
        .get("content-length")
        .and_then(|l| l.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    Ok(Some(Incoming {
        method,
        target,
        headers,
        body,
    }))
}

/// The `coworker` example as a long-running process with `env` added (its output
/// discarded), killed when dropped.
pub(crate) fn coworker(env: &[(&str, &str)]) -> Process {
    coworker_running(&[], env)
}

/// The `coworker` example running `args` (a command, or none: the drain) with `env`,
/// its output discarded; killed (SIGKILL) when dropped.
pub(crate) fn coworker_running(args: &[&str], env: &[(&str, &str)]) -> Process {
    Process(
        Command::new(example("coworker"))
            .args(args)
            .envs(env.iter().copied())
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

/// One `coworker` command (`close-month …`, `reprice …`) with `env`: its exit code,
/// standard output and standard error.
pub(crate) fn coworker_command(
    args: &[&str],
    env: &[(&str, &str)],
) -> (Option<i32>, String, String) {
    let output = Command::new(example("coworker"))
        .args(args)
        .envs(env.iter().copied())
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    (
        output.status.code(),
        String::from_utf8(output.stdout).unwrap(),
        String::from_utf8(output.stderr).unwrap(),
    )
}

/// A plain PostgreSQL client on `url`, its connection driven in the background.
pub(crate) async fn pg_client(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client
}

fn replay(stream: TcpStream, log: &Mutex<Vec<Received>>) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let Some(Incoming {
        target: path,
        headers,
        body,
        ..
    }) = read_request(&mut reader)?
    else {
        return Ok(());
    };
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    log.lock().unwrap().push(Received {
        path,
        headers: headers.clone(),
        body,
    });
    let mut out = stream;
    if let Some(status) = headers.get("x-status") {
        let body = r#"{"error":{"message":"overloaded","type":"server_error"}}"#;
        write!(
            out,
            "HTTP/1.1 {status} Oops\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        )?;
        return Ok(());
    }
    let name = headers.get("x-fixture").cloned().unwrap_or_default();
    let content = fixture(&name);
    if !name.ends_with(".sse") {
        write!(
            out,
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
            content.len()
        )?;
        return out.write_all(&content);
    }
    let pause_after: Option<usize> = headers
        .get("x-pause-after-events")
        .and_then(|n| n.parse().ok());
    write!(
        out,
        "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n"
    )?;
    let text = String::from_utf8(content).unwrap();
    for (i, event) in text.split_inclusive("\n\n").enumerate() {
        if pause_after == Some(i) {
            std::thread::sleep(Duration::from_millis(1000));
        }
        out.write_all(event.as_bytes())?;
        out.flush()?;
        if pause_after.is_some() && pause_after < Some(i) {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    Ok(())
}

/// The fixture's own cost, computed here from its usage and the bundled prices.
pub(crate) fn fixture_cost(
    provider: &routero::Provider,
    name: &str,
    requested_model: &str,
) -> rust_decimal::Decimal {
    let bytes = fixture(name);
    let extraction = if name.ends_with(".sse") {
        let mut stream = routero::extract::StreamExtractor::new(provider);
        stream.push(&bytes).unwrap();
        stream.finish().unwrap()
    } else {
        routero::extract::from_body(provider, &bytes, &[]).unwrap()
    };
    let model = extraction.model.as_deref().unwrap_or(requested_model);
    routero::PriceTable::bundled()
        .cost(provider, model, &extraction.usage, chrono::Utc::now())
        .unwrap()
        .total()
}

/// `ROUTERO_TEST_DATABASE_URL`, or `None` after a notice; with
/// `ROUTERO_TEST_REQUIRE_SERVICES=1` a missing server fails the test.
pub(crate) fn database_url() -> Option<String> {
    service("ROUTERO_TEST_DATABASE_URL")
}

/// `ROUTERO_TEST_REDIS_URL` and `ROUTERO_TEST_DATABASE_URL`, or `None` after a notice.
pub(crate) fn services() -> Option<(String, String)> {
    Some((
        service("ROUTERO_TEST_REDIS_URL")?,
        service("ROUTERO_TEST_DATABASE_URL")?,
    ))
}

fn service(variable: &str) -> Option<String> {
    match std::env::var(variable) {
        Ok(url) => Some(url),
        Err(_) if std::env::var("ROUTERO_TEST_REQUIRE_SERVICES").is_ok_and(|v| v == "1") => {
            panic!("{variable} is not set and services are required (run scripts/test.sh)")
        }
        Err(_) => {
            eprintln!("skipped: {variable} is not set (run scripts/test.sh)");
            None
        }
    }
}

/// A name no other test run uses (a schema, a key prefix): `prefix`, the process and
/// the clock.
pub(crate) fn unique(prefix: &str) -> String {
    format!(
        "{prefix}_{}_{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos()
    )
}
