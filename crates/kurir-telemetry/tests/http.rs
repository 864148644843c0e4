//! The telemetry endpoint over real loopback sockets, with a tiny raw HTTP/1.1 client.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use kurir_lifecycle::Lifecycle;
use kurir_telemetry::http::{self, OPENMETRICS_CONTENT_TYPE};
use kurir_telemetry::metrics::{ALL, BuildInfo, Metrics};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

struct Server {
    addr: SocketAddr,
    lifecycle: Lifecycle,
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

async fn start() -> Server {
    let lifecycle = Lifecycle::new();
    let build = BuildInfo {
        version: "0.0.0-test".to_owned(),
        roles: "all".to_owned(),
    };
    let metrics = Arc::new(Metrics::new(build, &lifecycle));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local addr");
    let (stop, stopped) = oneshot::channel::<()>();
    let stop_future = async move {
        let _ = stopped.await;
    };
    let task = tokio::spawn(http::serve(
        listener,
        metrics,
        lifecycle.clone(),
        stop_future,
    ));
    Server {
        addr,
        lifecycle,
        stop,
        task,
    }
}

struct Reply {
    status: u16,
    head: String,
    body: String,
}

/// One request on a fresh connection (`Connection: close`, so the body ends at EOF).
async fn request(addr: SocketAddr, method: &str, path: &str) -> Reply {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let head = format!("{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
    stream.write_all(head.as_bytes()).await.expect("write");
    let mut raw = Vec::new();
    let read = stream.read_to_end(&mut raw);
    tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .expect("reply within 10s")
        .expect("read");
    let raw = String::from_utf8(raw).expect("utf-8 reply");
    let (head, body) = raw.split_once("\r\n\r\n").expect("head and body");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .expect("status code");
    Reply {
        status,
        head: head.to_ascii_lowercase(),
        body: body.to_owned(),
    }
}

#[tokio::test]
async fn healthz_is_ok_while_alive_even_when_draining() {
    let server = start().await;
    assert_eq!(request(server.addr, "GET", "/healthz").await.status, 200);
    server.lifecycle.shutdown();
    assert_eq!(request(server.addr, "GET", "/healthz").await.status, 200);
}

#[tokio::test]
async fn readyz_flips_from_starting_to_ready_to_draining() {
    let server = start().await;
    let starting = request(server.addr, "GET", "/readyz").await;
    assert_eq!(
        (starting.status, starting.body.as_str()),
        (503, "starting\n")
    );

    server.lifecycle.set_ready(true);
    let ready = request(server.addr, "GET", "/readyz").await;
    assert_eq!((ready.status, ready.body.as_str()), (200, "ready\n"));

    server.lifecycle.shutdown();
    let draining = request(server.addr, "GET", "/readyz").await;
    assert_eq!(
        (draining.status, draining.body.as_str()),
        (503, "draining\n")
    );
}

#[tokio::test]
async fn metrics_exposes_every_declared_family() {
    let server = start().await;
    request(server.addr, "GET", "/healthz").await;
    let reply = request(server.addr, "GET", "/metrics").await;
    assert_eq!(reply.status, 200);
    let content_type = format!(
        "content-type: {}",
        OPENMETRICS_CONTENT_TYPE.to_ascii_lowercase()
    );
    assert!(reply.head.contains(&content_type), "{}", reply.head);
    for def in ALL {
        assert!(
            reply.body.contains(&def.sample_name()),
            "{def:?} missing:\n{}",
            reply.body
        );
    }
    assert!(
        reply
            .body
            .contains(r#"kurir_http_requests_total{route="/healthz",code="200"} 1"#)
    );
    assert!(reply.body.ends_with("# EOF\n"));
}

#[tokio::test]
async fn unknown_path_is_404_and_other_methods_are_405() {
    let server = start().await;
    assert_eq!(request(server.addr, "GET", "/").await.status, 404);
    assert_eq!(request(server.addr, "GET", "/metrics/x").await.status, 404);
    let post = request(server.addr, "POST", "/metrics").await;
    assert_eq!(post.status, 405);
    assert!(post.head.contains("allow: get"), "{}", post.head);
    assert_eq!(request(server.addr, "DELETE", "/readyz").await.status, 405);
}

#[tokio::test]
async fn keep_alive_connection_serves_several_requests() {
    let server = start().await;
    let mut stream = TcpStream::connect(server.addr).await.expect("connect");
    for _ in 0..3 {
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n")
            .await
            .expect("write");
        let mut buf = [0u8; 512];
        let n = stream.read(&mut buf).await.expect("read");
        assert!(buf[..n].starts_with(b"HTTP/1.1 200 OK"));
    }
}

#[tokio::test]
async fn stops_when_told_and_closes_idle_connections() {
    let server = start().await;
    // An idle keep-alive connection must not hold the server open.
    let mut idle = TcpStream::connect(server.addr).await.expect("connect");
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n")
        .await
        .expect("write");
    let mut buf = [0u8; 512];
    assert!(idle.read(&mut buf).await.expect("read") > 0);

    server.stop.send(()).expect("server running");
    tokio::time::timeout(Duration::from_secs(5), server.task)
        .await
        .expect("server stops within 5s")
        .expect("server task");
    assert!(
        TcpStream::connect(server.addr).await.is_err(),
        "listener closed"
    );
    let closed = tokio::time::timeout(Duration::from_secs(5), idle.read(&mut buf)).await;
    assert!(
        matches!(closed, Ok(Ok(0)) | Ok(Err(_))),
        "idle connection closed"
    );
}
