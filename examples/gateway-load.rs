//! What the gateway adds to a request, measured open loop.
//!
//! ```text
//! cargo build --release --example gateway --example gateway-load
//! target/release/examples/gateway-load [--rate 5000] [--seconds 10] [--connections 16]
//! ```
//!
//! It starts an upstream that answers every request at once with an `o4-mini` chat
//! completion (hyper, one thread), starts `examples/gateway` in front of it (the binary
//! beside this one, in-memory recording, a managed key with a large wallet), and then,
//! in the same run:
//!
//! 1. **open loop**: requests are sent at `--rate` per second on a fixed schedule,
//!    whether or not earlier ones have been answered, first straight to the upstream,
//!    then through a bare proxy, then through the gateway, then straight again,
//!    `--seconds` each (after a second of warm-up). A request's latency runs from the
//!    instant it was *due*, not the instant it left, so a stall counts against every
//!    request it delayed (no coordinated omission). Printed: p50, p90, p99 and maximum
//!    of each, and each proxy's overhead (its percentile minus the direct one, the
//!    mean of the two direct runs);
//! 2. **saturated**: `--connections` closed loops (each sends its next request when the
//!    previous is answered) for `--seconds`, straight, through the bare proxy and
//!    through the gateway: requests per second.
//!
//! The **bare proxy** is the gateway's HTTP path with nothing of Routero in it: this
//! program run again as `gateway-load --bare-proxy UPSTREAM`, on the gateway's CPUs,
//! serving with the same loop (`routero::http::serve`), reading the request body
//! whole, forwarding it with the same client and connector, reading the answer whole
//! and returning it. What the gateway adds beyond it is Routero's work (the key, the
//! request's JSON, the reservation, extraction, pricing, recording, the cost
//! headers); what the bare proxy adds beyond the upstream is what any proxy in that
//! place costs on this host.
//!
//! Every answer is checked: a gateway answer must carry `x-routero-cost`, an upstream
//! answer the body; a failed request fails the run. The gateway's `spend` lines go to
//! `/dev/null`. On a machine with few cores the generator, the gateway and the
//! upstream share them: the figures are what one host does, the overhead the part of
//! it the gateway adds.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

/// What the upstream answers: OpenAI's chat completion for `o4-mini`, with cached
/// prompt tokens and reasoning (the fixture of the extraction tests).
const BODY: &str = include_str!(
    "../routero-core/tests/data/providers/openai_chat/chat_completion_reasoning_cached.json"
);

/// What every request asks.
const REQUEST: &str = r#"{"model":"o4-mini","max_tokens":1000,"messages":[{"role":"user","content":"When may either party end the contract, and at what cost?"}]}"#;

const CALLER_KEY: &str = "rk-load";

type LoadClient = Client<HttpConnector, Full<Bytes>>;

struct Options {
    rate: u64,
    seconds: u64,
    connections: usize,
    /// CPUs the gateway runs on (`taskset -c`), apart from this program's.
    gateway_cpus: Option<String>,
    /// Where the gateway records (`ROUTERO_REDIS_URL`); else in memory.
    redis: Option<String>,
}

fn options() -> Result<Options, String> {
    let mut options = Options {
        rate: 5_000,
        seconds: 10,
        connections: 16,
        gateway_cpus: None,
        redis: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = |name: &str| -> Result<u64, String> {
            let text = args.next().ok_or_else(|| format!("{name} needs a value"))?;
            match text.parse::<u64>() {
                Ok(n) if n > 0 => Ok(n),
                _ => Err(format!("{name} {text:?}: a whole number above 0")),
            }
        };
        match flag.as_str() {
            "--rate" => options.rate = at_most(value("--rate")?, 1_000_000, "--rate")?,
            "--seconds" => options.seconds = at_most(value("--seconds")?, 3_600, "--seconds")?,
            "--gateway-cpus" => {
                options.gateway_cpus = Some(args.next().ok_or("--gateway-cpus needs a CPU list")?);
            }
            "--redis" => {
                options.redis = Some(args.next().ok_or("--redis needs a URL")?);
            }
            "--connections" => {
                options.connections = usize::try_from(value("--connections")?)
                    .map_err(|_| "--connections is too large".to_owned())?;
            }
            other => {
                return Err(format!(
                    "unknown argument {other:?} (--rate N, --seconds N, --connections N, --gateway-cpus LIST, --redis URL)"
                ));
            }
        }
    }
    Ok(options)
}

/// `n` when it is at most `max` (the schedule keeps every latency in memory).
fn at_most(n: u64, max: u64, name: &str) -> Result<u64, String> {
    if n <= max {
        Ok(n)
    } else {
        Err(format!("{name} {n}: at most {max}"))
    }
}

/// The upstream: every request answered at once with [`BODY`], on its own thread
/// and single-threaded runtime.
fn start_upstream() -> std::io::Result<SocketAddr> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime for the upstream");
        runtime.block_on(async move {
            let listener = TcpListener::from_std(listener).expect("the upstream's listener");
            let body = Bytes::from_static(BODY.as_bytes());
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let body = body.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |request: Request<Incoming>| {
                        let body = body.clone();
                        async move {
                            // Read the request whole, as a real upstream would.
                            let _ = request.into_body().collect().await;
                            Ok::<_, std::convert::Infallible>(
                                Response::builder()
                                    .header("content-type", "application/json")
                                    .body(Full::new(body))
                                    .expect("a static response"),
                            )
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
    });
    Ok(addr)
}

/// A proxy process (the gateway or the bare proxy), stopped when dropped.
struct Proxy {
    child: Child,
    addr: String,
    /// A file written for it, removed with it.
    config: Option<std::path::PathBuf>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(config) = &self.config {
            let _ = std::fs::remove_file(config);
        }
    }
}

/// `binary`, on `cpus` when given (`taskset -c`).
fn command_on(binary: &std::path::Path, cpus: Option<&str>) -> Command {
    match cpus {
        Some(cpus) => {
            let mut taskset = Command::new("taskset");
            taskset.arg("-c").arg(cpus).arg(binary);
            taskset
        }
        None => Command::new(binary),
    }
}

/// Starts `command` and waits for its `listening on http://ADDR` line; the rest of
/// its output is read and dropped, as `/dev/null` would.
fn start_listening(
    mut command: Command,
    what: &str,
    config: Option<std::path::PathBuf>,
) -> Result<Proxy, String> {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("starting the {what}: {e}"))?;
    let stdout = child.stdout.take().expect("piped");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        let mut sent = false;
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            if !sent && let Some(addr) = line.strip_prefix("listening on http://") {
                let _ = tx.send(addr.to_owned());
                sent = true;
            }
        }
    });
    // Stopped by `Proxy`'s drop if it never says where it listens.
    let mut proxy = Proxy {
        child,
        addr: String::new(),
        config,
    };
    proxy.addr = rx
        .recv_timeout(Duration::from_secs(30))
        .map_err(|_| format!("the {what} did not say where it listens within 30 s"))?;
    Ok(proxy)
}

/// The bare proxy: this program again, on the gateway's CPUs.
fn start_bare_proxy(upstream: SocketAddr, options: &Options) -> Result<Proxy, String> {
    let binary = std::env::current_exe().map_err(|e| format!("where this program is: {e}"))?;
    let mut command = command_on(&binary, options.gateway_cpus.as_deref());
    command.arg("--bare-proxy").arg(upstream.to_string());
    start_listening(command, "bare proxy", None)
}

fn start_gateway(upstream: SocketAddr, options: &Options) -> Result<Proxy, String> {
    let binary = std::env::current_exe()
        .map_err(|e| format!("where this program is: {e}"))?
        .with_file_name(format!("gateway{}", std::env::consts::EXE_SUFFIX));
    if !binary.exists() {
        return Err(format!(
            "{} is missing: cargo build --release --example gateway",
            binary.display()
        ));
    }
    let config =
        std::env::temp_dir().join(format!("routero-gateway-load-{}.toml", std::process::id()));
    std::fs::write(
        &config,
        format!(
            r#"
default_max_tokens = 1000
[openai]
base_url = "http://{upstream}"
api_key_env = "GATEWAY_LOAD_UPSTREAM_KEY"

[[keys]]
key = "{CALLER_KEY}"
id = "load-key"
org = "load"
workspace = "load-ws"
team = "load-team"

[[wallets]]
org = "load"
workspace = "load-ws"
balance = "1000000000.00"
"#
        ),
    )
    .map_err(|e| format!("writing {}: {e}", config.display()))?;
    let mut command = command_on(&binary, options.gateway_cpus.as_deref());
    command
        .arg(&config)
        .env("ROUTERO_LISTEN", "127.0.0.1:0")
        .env("GATEWAY_LOAD_UPSTREAM_KEY", "sk-load-upstream")
        .env("RUST_LOG", "warn")
        .env_remove("ROUTERO_DATABASE_URL")
        .env_remove("ROUTERO_METRICS_LISTEN")
        .env_remove("ROUTERO_PRICES_FILE");
    match &options.redis {
        Some(url) => command.env("ROUTERO_REDIS_URL", url).env(
            "ROUTERO_REDIS_PREFIX",
            format!("gateway-load-{}", std::process::id()),
        ),
        None => command.env_remove("ROUTERO_REDIS_URL"),
    };
    start_listening(command, "gateway", Some(config))
}

/// The bare proxy's body: serve on an ephemeral port, forward every request to
/// `upstream` and return its answer, each read whole (see the module's docs).
async fn bare_proxy(upstream: String) -> Result<(), String> {
    use routero::http::serve::{Serving, read_body, serve};
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| format!("the bare proxy's listener: {e}"))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    println!("listening on http://{addr}");
    // The gateway's client, connector and all.
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_webpki_roots()
        .https_or_http()
        .enable_http1()
        .build();
    let client = Client::builder(TokioExecutor::new()).build(https);
    let upstream: Arc<str> = upstream.into();
    let serving = Serving::default();
    let timeout = serving.body_read_timeout;
    let service = move |_peer| {
        let (client, upstream) = (client.clone(), Arc::clone(&upstream));
        service_fn(move |request: Request<Incoming>| {
            let (client, upstream) = (client.clone(), Arc::clone(&upstream));
            async move {
                let fail = |status: StatusCode, message: String| {
                    let mut response = Response::new(Full::new(Bytes::from(message)));
                    *response.status_mut() = status;
                    Ok::<_, Infallible>(response)
                };
                let (parts, body) = request.into_parts();
                let body = match read_body(body, 1 << 20, timeout).await {
                    Ok(body) => body,
                    Err(e) => return fail(StatusCode::BAD_REQUEST, e.to_string()),
                };
                let mut forward = Request::builder()
                    .method(parts.method)
                    .uri(format!("http://{upstream}{}", parts.uri.path()));
                if let Some(kind) = parts.headers.get("content-type") {
                    forward = forward.header("content-type", kind);
                }
                let Ok(forward) = forward.body(Full::new(body)) else {
                    return fail(StatusCode::BAD_REQUEST, "an unforwardable request".into());
                };
                let answer = match client.request(forward).await {
                    Ok(answer) => answer,
                    Err(e) => return fail(StatusCode::BAD_GATEWAY, e.to_string()),
                };
                let (head, body) = answer.into_parts();
                match body.collect().await {
                    Ok(body) => Ok(Response::from_parts(head, Full::new(body.to_bytes()))),
                    Err(e) => fail(StatusCode::BAD_GATEWAY, e.to_string()),
                }
            }
        })
    };
    serve(listener, serving, service, std::future::pending()).await;
    Ok(())
}

/// Where requests go: straight to the upstream or through the gateway.
#[derive(Clone)]
struct Target {
    name: &'static str,
    uri: String,
    through_gateway: bool,
}

impl Target {
    fn request(&self) -> Request<Full<Bytes>> {
        let mut builder = Request::post(&self.uri).header("content-type", "application/json");
        if self.through_gateway {
            builder = builder.header("authorization", format!("Bearer {CALLER_KEY}"));
        }
        builder
            .body(Full::new(Bytes::from_static(REQUEST.as_bytes())))
            .expect("a valid request")
    }

    /// Sends one request and checks its answer.
    async fn send(&self, client: &LoadClient) -> Result<(), String> {
        let response = client
            .request(self.request())
            .await
            .map_err(|e| format!("{}: {e}", self.name))?;
        let status = response.status();
        let costed = response.headers().contains_key("x-routero-cost");
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("{}: reading the body: {e}", self.name))?
            .to_bytes();
        if status != StatusCode::OK {
            return Err(format!(
                "{} answered {status}: {}",
                self.name,
                String::from_utf8_lossy(&body)
            ));
        }
        if self.through_gateway && !costed {
            return Err("the gateway's answer has no x-routero-cost".into());
        }
        if body.len() != BODY.len() {
            return Err(format!("{}: a body of {} bytes", self.name, body.len()));
        }
        Ok(())
    }
}

/// Latencies of one open-loop run, in nanoseconds, sorted.
struct Latencies(Vec<u64>);

impl Latencies {
    /// The nearest-rank percentile, `p` in percent.
    fn percentile(&self, p: usize) -> u64 {
        let n = self.0.len();
        if n == 0 {
            return 0;
        }
        let rank = (p * n).div_ceil(100);
        self.0[rank.clamp(1, n) - 1]
    }

    fn line(&self) -> String {
        format!(
            "p50 {} µs, p90 {} µs, p99 {} µs, max {} µs",
            micros(self.percentile(50)),
            micros(self.percentile(90)),
            micros(self.percentile(99)),
            micros(self.0.last().copied().unwrap_or(0)),
        )
    }
}

fn micros(nanos: u64) -> u64 {
    (nanos + 500) / 1_000
}

/// Sends `rate` requests per second for `duration` on a fixed schedule; each
/// latency is measured from the instant the request was due. The schedule is kept
/// by a thread of its own sleeping to each instant (tokio's timer ticks in whole
/// milliseconds, too coarse at 200 µs apart); the runtime sends what it is handed.
async fn open_loop(
    client: &LoadClient,
    target: &Target,
    rate: u64,
    duration: Duration,
) -> Result<Latencies, String> {
    let total = rate * duration.as_secs();
    let interval = Duration::from_nanos(1_000_000_000 / rate);
    let (due_tx, mut due_rx) = tokio::sync::mpsc::unbounded_channel::<Instant>();
    let pacer = std::thread::spawn(move || {
        let start = Instant::now() + Duration::from_millis(10);
        for i in 0..total {
            let due = start + interval.saturating_mul(u32::try_from(i).unwrap_or(u32::MAX));
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            if due_tx.send(due).is_err() {
                return;
            }
        }
    });
    let mut tasks = tokio::task::JoinSet::new();
    let mut latencies = Vec::with_capacity(usize::try_from(total.min(1 << 20)).unwrap_or(0));
    while let Some(due) = due_rx.recv().await {
        let client = client.clone();
        let target = target.clone();
        tasks.spawn(async move {
            target.send(&client).await?;
            Ok::<u64, String>(u64::try_from(due.elapsed().as_nanos()).unwrap_or(u64::MAX))
        });
        // Reap what has finished, so the set stays as large as what is in flight.
        while let Some(done) = tasks.try_join_next() {
            latencies.push(done.map_err(|e| e.to_string())??);
        }
    }
    while let Some(done) = tasks.join_next().await {
        latencies.push(done.map_err(|e| e.to_string())??);
    }
    pacer.join().map_err(|_| "the pacing thread panicked")?;
    latencies.sort_unstable();
    Ok(Latencies(latencies))
}

/// `connections` closed loops for `duration`: requests answered per second.
async fn saturated(
    client: &LoadClient,
    target: &Target,
    connections: usize,
    duration: Duration,
) -> Result<u64, String> {
    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicU64::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..connections {
        let (client, target) = (client.clone(), target.clone());
        let (stop, answered) = (Arc::clone(&stop), Arc::clone(&answered));
        tasks.spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                target.send(&client).await?;
                answered.fetch_add(1, Ordering::Relaxed);
            }
            Ok::<(), String>(())
        });
    }
    let started = Instant::now();
    tokio::time::sleep(duration).await;
    let count = answered.load(Ordering::Relaxed);
    let elapsed = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    while let Some(done) = tasks.join_next().await {
        done.map_err(|e| e.to_string())??;
    }
    let micros = u64::try_from(elapsed.as_micros())
        .unwrap_or(u64::MAX)
        .max(1);
    Ok(count.saturating_mul(1_000_000) / micros)
}

async fn run(options: Options) -> Result<(), String> {
    let upstream = start_upstream().map_err(|e| format!("the upstream: {e}"))?;
    let gateway = start_gateway(upstream, &options)?;
    let bare = start_bare_proxy(upstream, &options)?;
    let direct = Target {
        name: "upstream",
        uri: format!("http://{upstream}/v1/chat/completions"),
        through_gateway: false,
    };
    let proxied = Target {
        name: "gateway",
        uri: format!("http://{}/v1/chat/completions", gateway.addr),
        through_gateway: true,
    };
    let bare_proxied = Target {
        name: "bare proxy",
        uri: format!("http://{}/v1/chat/completions", bare.addr),
        through_gateway: false,
    };
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client: LoadClient = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(1024)
        .build(connector);
    let seconds = Duration::from_secs(options.seconds);
    println!(
        "cores this program may use: {}{}; open loop at {} requests/s, {} s per run; saturated: {} connections",
        std::thread::available_parallelism().map_or(0, usize::from),
        options
            .gateway_cpus
            .as_deref()
            .map(|cpus| format!(", the gateway: {cpus}"))
            .unwrap_or_default(),
        options.rate,
        options.seconds,
        options.connections
    );

    // Warm-up: connections open, the gateway's caches filled.
    for target in [&direct, &bare_proxied, &proxied] {
        open_loop(&client, target, options.rate, Duration::from_secs(1)).await?;
    }
    let before = open_loop(&client, &direct, options.rate, seconds).await?;
    let barely = open_loop(&client, &bare_proxied, options.rate, seconds).await?;
    let through = open_loop(&client, &proxied, options.rate, seconds).await?;
    let after = open_loop(&client, &direct, options.rate, seconds).await?;
    println!("open loop, upstream directly:   {}", before.line());
    println!("open loop, through a bare proxy: {}", barely.line());
    println!("open loop, through the gateway: {}", through.line());
    println!("open loop, upstream directly:   {} (again)", after.line());
    for (name, run) in [("bare proxy", &barely), ("gateway", &through)] {
        let overhead = |p: usize| {
            let direct = (before.percentile(p) + after.percentile(p)) / 2;
            micros(run.percentile(p).saturating_sub(direct))
        };
        println!(
            "{name} overhead at {} requests/s: p50 +{} µs, p90 +{} µs, p99 +{} µs",
            options.rate,
            overhead(50),
            overhead(90),
            overhead(99),
        );
    }

    let direct_rate = saturated(&client, &direct, options.connections, seconds).await?;
    let bare_rate = saturated(&client, &bare_proxied, options.connections, seconds).await?;
    let gateway_rate = saturated(&client, &proxied, options.connections, seconds).await?;
    println!(
        "saturated, {} connections: upstream directly {direct_rate} requests/s, through a bare proxy {bare_rate} requests/s, through the gateway {gateway_rate} requests/s",
        options.connections
    );
    drop((gateway, bare));
    Ok(())
}

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    if args.next().as_deref() == Some("--bare-proxy") {
        let Some(upstream) = args.next() else {
            eprintln!("gateway-load: --bare-proxy needs the upstream's address");
            return ExitCode::from(2);
        };
        // The gateway's runtime: `#[tokio::main]`, a worker per CPU it may use.
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())
            .and_then(|runtime| runtime.block_on(bare_proxy(upstream)));
        return match runtime {
            Ok(()) => ExitCode::SUCCESS,
            Err(message) => {
                eprintln!("gateway-load --bare-proxy: {message}");
                ExitCode::FAILURE
            }
        };
    }
    let options = match options() {
        Ok(options) => options,
        Err(message) => {
            eprintln!("gateway-load: {message}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("gateway-load: a runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(options)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("gateway-load: {message}");
            ExitCode::FAILURE
        }
    }
}
