//! The telemetry HTTP endpoint: `GET /metrics`, `/healthz` and `/readyz`.
//!
//! HTTP/1.1 only, on its own listener, bounded: at most [`MAX_CONNECTIONS`] connections
//! (the accept loop waits for a free slot, so excess clients queue in the listen
//! backlog), and [`HEADER_READ_TIMEOUT`] to send a request head.

use std::convert::Infallible;
use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{ALLOW, CONTENT_TYPE, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use kurir_lifecycle::Lifecycle;
use serde::{Deserialize, Serialize};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinSet;

use crate::metrics::Metrics;

/// Concurrent connections served; scrapers and probes need a handful.
pub const MAX_CONNECTIONS: usize = 64;
/// Time a client has to send its request head, so idle sockets cannot pin a slot.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// After the stop signal, how long open connections get to finish their request.
pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);
/// Pause after a failed accept (e.g. out of file descriptors) instead of spinning.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(100);

/// The OpenMetrics text content type (`prometheus_client`'s text encoder writes it).
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The `[http]` config section.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Where `/metrics`, `/healthz` and `/readyz` listen. Loopback by default so nothing
    /// is exposed unless the operator says so (in Kubernetes: `0.0.0.0:9090`).
    pub listen: SocketAddr,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 9090)),
        }
    }
}

/// What each connection needs.
#[derive(Debug)]
struct State {
    metrics: Arc<Metrics>,
    lifecycle: Lifecycle,
}

/// Serves the telemetry endpoint on `listener` until `stop` resolves, then closes
/// idle connections, gives open requests [`CLOSE_TIMEOUT`] and returns.
///
/// `stop` is separate from the lifecycle's shutdown on purpose: while the process drains,
/// `/readyz` must keep answering 503 and `/metrics` keep showing the drain, so the
/// binary stops this server only after the drain.
pub async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    lifecycle: Lifecycle,
    stop: impl Future<Output = ()>,
) {
    let state = Arc::new(State { metrics, lifecycle });
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let (close_tx, close_rx) = watch::channel(false);
    let mut connections = JoinSet::new();
    tokio::pin!(stop);
    loop {
        // Take the slot before accepting, so a full server leaves clients in the backlog.
        let permit = tokio::select! {
            () = &mut stop => break,
            permit = slots.clone().acquire_owned() => permit.expect("semaphore is never closed"),
        };
        let stream = tokio::select! {
            () = &mut stop => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => stream,
                Err(error) => {
                    tracing::warn!(%error, "http accept failed");
                    tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
                    continue;
                }
            },
        };
        connections.spawn(serve_connection(
            stream,
            state.clone(),
            close_rx.clone(),
            permit,
        ));
        while connections.try_join_next().is_some() {}
    }
    close_connections(close_tx, connections).await;
}

async fn close_connections(close_tx: watch::Sender<bool>, mut connections: JoinSet<()>) {
    close_tx.send_replace(true);
    let all_closed = async { while connections.join_next().await.is_some() {} };
    if tokio::time::timeout(CLOSE_TIMEOUT, all_closed)
        .await
        .is_err()
    {
        tracing::debug!(open = connections.len(), "aborting slow http connections");
        connections.abort_all();
    }
}

async fn serve_connection(
    stream: TcpStream,
    state: Arc<State>,
    mut close: watch::Receiver<bool>,
    _permit: OwnedSemaphorePermit,
) {
    let service = service_fn(move |request| {
        let state = state.clone();
        async move { Ok::<_, Infallible>(respond(&state, &request)) }
    });
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    let connection = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(connection);
    let result = tokio::select! {
        result = connection.as_mut() => result,
        () = closed(&mut close) => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(error) = result {
        // Timeouts and resets from probes are routine, hence debug.
        tracing::debug!(%error, "http connection ended with an error");
    }
}

/// Resolves once the server stops (or is gone).
async fn closed(close: &mut watch::Receiver<bool>) {
    // The guard `wait_for` returns is not `Send`; drop it here, not across an await.
    let _ = close.wait_for(|closed| *closed).await;
}

fn respond(state: &State, request: &Request<Incoming>) -> Response<Full<Bytes>> {
    // A fixed set of route labels keeps the request counter low-cardinality.
    let route = match request.uri().path() {
        "/metrics" => "/metrics",
        "/healthz" => "/healthz",
        "/readyz" => "/readyz",
        _ => "other",
    };
    let response = if route == "other" {
        text(StatusCode::NOT_FOUND, "not found\n")
    } else if request.method() != Method::GET {
        let mut response = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
        response
            .headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET"));
        response
    } else {
        match route {
            "/metrics" => metrics(state),
            "/readyz" => readiness(&state.lifecycle),
            _ => text(StatusCode::OK, "ok\n"),
        }
    };
    state
        .metrics
        .http_request(route, response.status().as_u16());
    response
}

fn readiness(lifecycle: &Lifecycle) -> Response<Full<Bytes>> {
    if lifecycle.is_ready() {
        text(StatusCode::OK, "ready\n")
    } else if lifecycle.is_shutting_down() {
        text(StatusCode::SERVICE_UNAVAILABLE, "draining\n")
    } else {
        text(StatusCode::SERVICE_UNAVAILABLE, "starting\n")
    }
}

fn metrics(state: &State) -> Response<Full<Bytes>> {
    match state.metrics.encode() {
        Ok(body) => {
            let mut response = Response::new(Full::from(body));
            let content_type = HeaderValue::from_static(OPENMETRICS_CONTENT_TYPE);
            response.headers_mut().insert(CONTENT_TYPE, content_type);
            response
        }
        Err(error) => {
            tracing::error!(%error, "encoding metrics failed");
            text(
                StatusCode::INTERNAL_SERVER_ERROR,
                "encoding metrics failed\n",
            )
        }
    }
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::from(body));
    *response.status_mut() = status;
    let content_type = HeaderValue::from_static("text/plain; charset=utf-8");
    response.headers_mut().insert(CONTENT_TYPE, content_type);
    response
}
