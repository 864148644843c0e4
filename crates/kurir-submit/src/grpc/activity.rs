//! One lifecycle activity per kurir RPC, as a tower layer around every service.
//!
//! - A call to a `kurir.v1` service registers `lifecycle.activity("grpc")` and holds it
//!   until its response body is finished (or dropped), so the drain waits for unary calls
//!   and streams alike. The guard also goes into the request's extensions as
//!   [`RpcActivity`]: work a handler spawns (a stream's driver) keeps a clone, so a client
//!   that hangs up does not end the activity while that work still runs.
//! - Once shutdown has begun, such a call is refused at once with UNAVAILABLE (the server
//!   also stops accepting connections then; this covers calls on connections already open).
//! - Health and reflection are not activities: a health `Watch` lasts as long as its client
//!   likes and must not hold up the drain, and both must keep answering while draining.
//! - tonic refuses a request over `max_decoding_message_size` with OUT_OF_RANGE; for the
//!   submission service (whose handlers never use that code) it is rewritten to
//!   RESOURCE_EXHAUSTED, the code other gRPC stacks use for a message over the receiver's
//!   limit (see `submission.rs` for why).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use kurir_lifecycle::{Activity, Lifecycle};
use tonic::Status;
use tonic::body::Body;
use tonic::codegen::{BoxFuture, Service, http};
use tower_layer::Layer;

/// The path prefix of our services.
const KURIR_PREFIX: &str = "/kurir.v1.";
/// The path prefix of the submission service.
const SUBMISSION_PREFIX: &str = "/kurir.v1.SubmissionService/";

/// A kurir RPC's activity guard, shared by the work it spawns (see the module docs).
#[derive(Debug, Clone)]
pub(super) struct RpcActivity(#[allow(dead_code)] Arc<Activity>);

/// See the module docs.
#[derive(Debug, Clone)]
pub(super) struct ActivityLayer {
    lifecycle: Lifecycle,
    max_request_bytes: usize,
}

impl ActivityLayer {
    pub(super) fn new(lifecycle: Lifecycle, max_request_bytes: usize) -> Self {
        Self {
            lifecycle,
            max_request_bytes,
        }
    }
}

impl<S> Layer<S> for ActivityLayer {
    type Service = ActivityService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ActivityService {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service [`ActivityLayer`] makes.
#[derive(Debug, Clone)]
pub(super) struct ActivityService<S> {
    inner: S,
    layer: ActivityLayer,
}

impl<S, B> Service<http::Request<B>> for ActivityService<S>
where
    S: Service<http::Request<B>, Response = http::Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        let path = request.uri().path();
        if !path.starts_with(KURIR_PREFIX) {
            return Box::pin(self.inner.call(request));
        }
        let submission = path.starts_with(SUBMISSION_PREFIX);
        let Some(activity) = self.layer.lifecycle.activity("grpc") else {
            let refusal = Status::unavailable("shutting down; retry on another node");
            return Box::pin(async move { Ok(refusal.into_http()) });
        };
        let activity = RpcActivity(Arc::new(activity));
        request.extensions_mut().insert(activity.clone());
        // The service that was polled ready handles this call; a clone waits for the next.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let limit = self.layer.max_request_bytes;
        Box::pin(async move {
            let mut response = inner.call(request).await?;
            if submission {
                too_large_is_resource_exhausted(&mut response, limit);
            }
            Ok(response.map(|body| {
                Body::new(Guarded {
                    body,
                    _activity: activity,
                })
            }))
        })
    }
}

/// Rewrites tonic's OUT_OF_RANGE for an over-limit request (a trailers-only response, so
/// the status is in the headers) to RESOURCE_EXHAUSTED.
fn too_large_is_resource_exhausted(response: &mut http::Response<Body>, limit: usize) {
    let headers = response.headers_mut();
    let out_of_range = i32::from(tonic::Code::OutOfRange).to_string();
    if headers.get("grpc-status").and_then(|v| v.to_str().ok()) != Some(out_of_range.as_str()) {
        return;
    }
    let status = Status::resource_exhausted(format!(
        "request larger than max_request_bytes ({limit} bytes)"
    ));
    headers.remove("grpc-message");
    headers.remove("grpc-status-details-bin");
    if let Err(error) = status.add_header(headers) {
        tracing::warn!(%error, "could not rewrite a size refusal");
    }
}

/// A response body that holds the RPC's activity until it is finished or dropped.
struct Guarded {
    body: Body,
    _activity: RpcActivity,
}

impl http_body::Body for Guarded {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
