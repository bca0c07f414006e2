//! Out of file descriptors, the serving loop pauses and carries on. This runs in its
//! own test binary: it lowers the process's descriptor limit.
#![cfg(unix)]

use std::convert::Infallible;
use std::time::Duration;

use hyper::Response;
use hyper::service::service_fn;
use routero_http::serve::{Serving, serve};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[tokio::test]
async fn running_out_of_descriptors_does_not_end_the_server() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = Serving::default().header_read_timeout(Duration::from_secs(60));
    let server = tokio::spawn(serve(
        listener,
        serving,
        |_peer| {
            service_fn(|_request| async { Ok::<_, Infallible>(Response::new(String::from("ok"))) })
        },
        async {
            let _ = stopped.await;
        },
    ));

    // Leave room for a few dozen descriptors above those already open.
    let (soft, hard) = rlimit::getrlimit(rlimit::Resource::NOFILE).unwrap();
    let open = std::fs::read_dir("/proc/self/fd").map_or(64, Iterator::count) as u64;
    rlimit::setrlimit(rlimit::Resource::NOFILE, open + 40, hard).unwrap();

    // Open connections until the process has no descriptor left; the server's
    // accepts fail meanwhile.
    let mut clients = Vec::new();
    for _ in 0..200 {
        match TcpStream::connect(addr).await {
            Ok(stream) => clients.push(stream),
            Err(_) => break,
        }
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    drop(clients);
    rlimit::setrlimit(rlimit::Resource::NOFILE, soft, hard).unwrap();

    // The server is still there.
    let mut client = TcpStream::connect(addr).await.unwrap();
    client
        .write_all(b"GET / HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = String::new();
    tokio::time::timeout(Duration::from_secs(10), client.read_to_string(&mut answer))
        .await
        .expect("an answer")
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");

    stop.send(()).unwrap();
    let report = server.await.unwrap();
    assert!(report.accept_errors > 0, "no accept failed: {report:?}");
}
