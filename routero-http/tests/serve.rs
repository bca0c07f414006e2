//! The serving loop against real sockets: idle and silent connections are closed, the
//! connection limit holds, and a stop lets the response in flight finish.

use std::convert::Infallible;
use std::time::Duration;

use hyper::Response;
use hyper::service::service_fn;
use routero_http::serve::{ServeReport, Serving, serve};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A server answering `ok` (after `delay`), and the sender that stops it.
async fn start(
    serving: Serving,
    delay: Duration,
) -> (
    std::net::SocketAddr,
    oneshot::Sender<()>,
    JoinHandle<ServeReport>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(serve(
        listener,
        serving,
        move |_peer| {
            service_fn(move |_request| async move {
                tokio::time::sleep(delay).await;
                Ok::<_, Infallible>(Response::new(String::from("ok")))
            })
        },
        async {
            let _ = stopped.await;
        },
    ));
    (addr, stop, server)
}

const REQUEST: &[u8] = b"GET / HTTP/1.1\r\nhost: test\r\n\r\n";

/// Reads one response on a keep-alive connection (the test server's bodies are `ok`).
async fn response(stream: &mut TcpStream) -> String {
    let mut seen = Vec::new();
    let mut buf = [0u8; 1024];
    while !seen.ends_with(b"\r\n\r\nok") {
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf))
            .await
            .expect("an answer")
            .unwrap();
        assert!(
            n > 0,
            "closed before the answer: {:?}",
            String::from_utf8_lossy(&seen)
        );
        seen.extend_from_slice(&buf[..n]);
    }
    String::from_utf8(seen).unwrap()
}

/// Whether the server closes the connection (reads end) before `within`.
async fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout(within, stream.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0) | Err(_)) => return true,
            Ok(Ok(_)) => {}
        }
    }
}

#[tokio::test]
async fn silent_and_idle_connections_are_closed() {
    let serving = Serving::default().header_read_timeout(Duration::from_millis(300));
    let (addr, stop, server) = start(serving, Duration::ZERO).await;

    // Connected, never a byte sent.
    let mut silent = TcpStream::connect(addr).await.unwrap();
    // Half a request head (slowloris).
    let mut slow = TcpStream::connect(addr).await.unwrap();
    slow.write_all(b"GET / HTTP/1.1\r\nhost: te").await.unwrap();
    // A finished request, then an idle keep-alive connection.
    let mut idle = TcpStream::connect(addr).await.unwrap();
    idle.write_all(REQUEST).await.unwrap();
    assert!(response(&mut idle).await.starts_with("HTTP/1.1 200"));

    for (name, stream) in [
        ("silent", &mut silent),
        ("slow", &mut slow),
        ("idle", &mut idle),
    ] {
        assert!(
            closed_within(stream, Duration::from_secs(10)).await,
            "the {name} connection is still open"
        );
    }
    stop.send(()).unwrap();
    let report = server.await.unwrap();
    assert_eq!(report.connections, 3);
    assert!(!report.cut);
}

#[tokio::test]
async fn connections_beyond_the_limit_wait_for_a_free_slot() {
    let serving = Serving::default()
        .max_connections(2)
        .header_read_timeout(Duration::from_secs(60));
    let (addr, stop, server) = start(serving, Duration::ZERO).await;

    let mut first = TcpStream::connect(addr).await.unwrap();
    first.write_all(REQUEST).await.unwrap();
    response(&mut first).await;
    let mut second = TcpStream::connect(addr).await.unwrap();
    second.write_all(REQUEST).await.unwrap();
    response(&mut second).await;

    // The kernel completes the handshake, but the server does not take the third
    // connection while two are open.
    let mut third = TcpStream::connect(addr).await.unwrap();
    third.write_all(REQUEST).await.unwrap();
    let mut buf = [0u8; 64];
    assert!(
        tokio::time::timeout(Duration::from_millis(500), third.read(&mut buf))
            .await
            .is_err(),
        "the third connection was served beyond the limit"
    );

    drop(first);
    assert!(response(&mut third).await.starts_with("HTTP/1.1 200"));
    // Still serving the second.
    second.write_all(REQUEST).await.unwrap();
    response(&mut second).await;

    stop.send(()).unwrap();
    assert_eq!(server.await.unwrap().connections, 3);
}

#[tokio::test]
async fn a_stop_lets_the_response_in_flight_finish() {
    let (addr, stop, server) = start(Serving::default(), Duration::from_millis(300)).await;
    let mut client = TcpStream::connect(addr).await.unwrap();
    client.write_all(REQUEST).await.unwrap();
    // The request is in the handler when the stop comes.
    tokio::time::sleep(Duration::from_millis(100)).await;
    stop.send(()).unwrap();
    assert!(response(&mut client).await.starts_with("HTTP/1.1 200"));
    let report = server.await.unwrap();
    assert!(!report.cut);
    // The listener is closed: nothing new is accepted.
    assert!(TcpStream::connect(addr).await.is_err());
}
