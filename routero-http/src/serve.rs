//! The HTTP/1 serving loop the example server and gateway share, hardened for the
//! open internet: a connection limit, header-read and keep-alive timeouts, accept
//! errors that back off instead of ending the process, and a graceful stop.
//!
//! ```no_run
//! # async fn run(stop: tokio::sync::oneshot::Receiver<()>) -> std::io::Result<()> {
//! use hyper::{Response, service::service_fn};
//! use routero_http::serve::{Serving, serve};
//!
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! let report = serve(
//!     listener,
//!     Serving::default(),
//!     |_peer| {
//!         service_fn(|_request| async {
//!             Ok::<_, std::convert::Infallible>(Response::new(String::from("ok")))
//!         })
//!     },
//!     async { let _ = stop.await; },
//! )
//! .await;
//! println!("{} connections served", report.connections);
//! # Ok(())
//! # }
//! ```

use std::error::Error as StdError;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::{Body, Incoming};
use hyper::service::Service;
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::time::Instant;

/// How [`serve`] treats connections.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Serving {
    /// Connections open at once; the loop stops accepting at the limit and resumes
    /// when one closes, so the kernel's backlog absorbs a burst.
    pub max_connections: usize,
    /// The time a client has to send a request's headers, counted from the moment the
    /// connection opens or its previous response ends: a connection idle for longer
    /// (keep-alive or slowloris) is closed.
    pub header_read_timeout: Duration,
    /// The time a client has to send a whole request body once its headers are in
    /// ([`read_body`]): a body that trickles in for longer is answered 408.
    pub body_read_timeout: Duration,
    /// The longest pause after a failed accept (out of file descriptors, say); pauses
    /// double from 5 ms up to this.
    pub max_accept_backoff: Duration,
    /// How long a stop waits for responses in flight before cutting them.
    pub grace: Duration,
}

impl Default for Serving {
    fn default() -> Self {
        Serving {
            max_connections: 1_000,
            header_read_timeout: Duration::from_secs(20),
            body_read_timeout: Duration::from_secs(30),
            max_accept_backoff: Duration::from_secs(1),
            grace: Duration::from_secs(10),
        }
    }
}

impl Serving {
    /// The defaults, overridden by `ROUTERO_MAX_CONNECTIONS`,
    /// `ROUTERO_HEADER_READ_TIMEOUT_SECS` and `ROUTERO_BODY_READ_TIMEOUT_SECS` where set.
    ///
    /// # Errors
    ///
    /// A variable that is set but not a positive whole number.
    pub fn from_env() -> Result<Serving, String> {
        let mut serving = Serving::default();
        if let Some(n) = positive("ROUTERO_MAX_CONNECTIONS")? {
            serving.max_connections = usize::try_from(n).map_err(|e| e.to_string())?;
        }
        if let Some(secs) = positive("ROUTERO_HEADER_READ_TIMEOUT_SECS")? {
            serving.header_read_timeout = Duration::from_secs(secs);
        }
        if let Some(secs) = positive("ROUTERO_BODY_READ_TIMEOUT_SECS")? {
            serving.body_read_timeout = Duration::from_secs(secs);
        }
        Ok(serving)
    }

    /// With at most `n` connections open at once.
    #[must_use]
    pub fn max_connections(mut self, n: usize) -> Serving {
        self.max_connections = n.max(1);
        self
    }

    /// With this header-read (and keep-alive idle) timeout.
    #[must_use]
    pub fn header_read_timeout(mut self, timeout: Duration) -> Serving {
        self.header_read_timeout = timeout;
        self
    }

    /// With this body-read timeout.
    #[must_use]
    pub fn body_read_timeout(mut self, timeout: Duration) -> Serving {
        self.body_read_timeout = timeout;
        self
    }

    /// With this grace period for a stop.
    #[must_use]
    pub fn grace(mut self, grace: Duration) -> Serving {
        self.grace = grace;
        self
    }
}

/// Why [`read_body`] gave up.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum BodyError {
    /// More than the limit.
    TooLarge {
        /// The limit, in bytes.
        limit: usize,
    },
    /// Not all there within the timeout.
    TooSlow {
        /// The timeout.
        after: Duration,
    },
    /// The connection failed mid-body.
    Unreadable(String),
}

impl std::fmt::Display for BodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BodyError::TooLarge { limit } => write!(f, "the request body is over {limit} bytes"),
            BodyError::TooSlow { after } => write!(
                f,
                "the request body did not arrive within {} s",
                after.as_secs()
            ),
            BodyError::Unreadable(e) => write!(f, "the request body could not be read: {e}"),
        }
    }
}

impl std::error::Error for BodyError {}

impl BodyError {
    /// The billing API's problem for it: 413, 408 or 400, as `application/problem+json`.
    pub fn problem(&self) -> Response<bytes::Bytes> {
        use crate::api::ProblemType;
        let kind = match self {
            BodyError::TooLarge { .. } => ProblemType::PayloadTooLarge,
            BodyError::TooSlow { .. } => ProblemType::RequestTimeout,
            BodyError::Unreadable(_) => ProblemType::BadRequest,
        };
        kind.response(self.to_string())
    }
}

/// Reads a request body whole: at most `limit` bytes, within `timeout` of the call
/// (pass [`Serving::body_read_timeout`]). A slow or endless body costs the server a
/// bounded wait and a bounded buffer.
pub async fn read_body<B>(
    body: B,
    limit: usize,
    timeout: Duration,
) -> Result<bytes::Bytes, BodyError>
where
    B: Body,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    use http_body_util::{BodyExt, LengthLimitError, Limited};
    match tokio::time::timeout(timeout, Limited::new(body, limit).collect()).await {
        Err(_) => Err(BodyError::TooSlow { after: timeout }),
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(e)) if e.is::<LengthLimitError>() => Err(BodyError::TooLarge { limit }),
        Ok(Err(e)) => Err(BodyError::Unreadable(e.to_string())),
    }
}

fn positive(name: &str) -> Result<Option<u64>, String> {
    match std::env::var(name) {
        Err(_) => Ok(None),
        Ok(text) => match text.trim().parse::<u64>() {
            Ok(n) if n > 0 => Ok(Some(n)),
            _ => Err(format!("{name}={text:?}: expected a positive whole number")),
        },
    }
}

/// What a [`serve`] run did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServeReport {
    /// Connections accepted.
    pub connections: u64,
    /// Accepts that failed (and were retried after a pause).
    pub accept_errors: u64,
    /// Whether the stop cut responses still in flight after the grace period.
    pub cut: bool,
}

/// Failed accepts, logged at most once a second with how many there were.
struct AcceptErrors {
    total: u64,
    unlogged: u64,
    logged_at: Option<Instant>,
    pause: Duration,
}

impl AcceptErrors {
    const FIRST_PAUSE: Duration = Duration::from_millis(5);

    fn note(&mut self, error: &std::io::Error, max: Duration) -> Duration {
        self.total += 1;
        self.unlogged += 1;
        let now = Instant::now();
        if self
            .logged_at
            .is_none_or(|at| now.duration_since(at) >= Duration::from_secs(1))
        {
            tracing::warn!(
                error = %error,
                failed = self.unlogged,
                "accept failed; pausing before the next accept"
            );
            self.unlogged = 0;
            self.logged_at = Some(now);
        }
        self.pause = (self.pause * 2).clamp(Self::FIRST_PAUSE, max.max(Self::FIRST_PAUSE));
        self.pause
    }
}

/// Serves HTTP/1 on `listener` until `shutdown` completes, then lets the responses in
/// flight finish within [`Serving::grace`]. `service` makes each connection's service
/// from the peer's address.
///
/// Nothing a client does ends the loop: failed accepts pause and retry, connections
/// beyond the limit wait in the kernel's backlog, and a connection that stays silent
/// past the header-read timeout is closed.
pub async fn serve<M, S, B>(
    listener: TcpListener,
    serving: Serving,
    service: M,
    shutdown: impl Future<Output = ()>,
) -> ServeReport
where
    M: Fn(SocketAddr) -> S,
    S: Service<Request<Incoming>, Response = Response<B>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn StdError + Send + Sync>>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    let permits = Arc::new(Semaphore::new(serving.max_connections.max(1)));
    let graceful = GracefulShutdown::new();
    let mut errors = AcceptErrors {
        total: 0,
        unlogged: 0,
        logged_at: None,
        pause: Duration::ZERO,
    };
    let mut report = ServeReport::default();
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            permit = permits.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    let pause = errors.note(&e, serving.max_accept_backoff);
                    tokio::select! {
                        () = tokio::time::sleep(pause) => continue,
                        () = &mut shutdown => break,
                    }
                }
            },
            () = &mut shutdown => break,
        };
        errors.pause = Duration::ZERO;
        report.connections += 1;
        let connection = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(serving.header_read_timeout)
            .serve_connection(TokioIo::new(stream), service(peer));
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            let _permit = permit;
            if let Err(e) = connection.await {
                // Timeouts and resets are the client's business; debug, not warn.
                tracing::debug!(%peer, error = %e, "connection ended");
            }
        });
    }
    drop(listener);
    report.accept_errors = errors.total;
    report.cut = tokio::time::timeout(serving.grace, graceful.shutdown())
        .await
        .is_err();
    report
}
