//! [`SubmissionApi`]: `kurir.v1.SubmissionService`, on the same publish path as SMTP.
//!
//! One request, unary or on a stream:
//! 1. the key's rate is charged one message (RESOURCE_EXHAUSTED over it);
//! 2. the request is checked and its message prepared (`request.rs`; a structured message
//!    is built into MIME by `build.rs`): INVALID_ARGUMENT naming the field;
//! 3. with an idempotency key, the key is claimed (see `Inner::idempotent`);
//! 4. the recipients are checked against the tenant's suppression list in one lookup, as
//!    SMTP's RCPT does; suppressed ones leave the envelope and go in
//!    `Submission::suppressed`, so the publisher reports each as a SUPPRESSED event;
//! 5. the [`Publisher`] normalises (Message-ID, Date; no Received header) and publishes;
//!    its `ErrorCode` becomes the status through `ErrorCode::grpc_code`, the mapping SMTP
//!    replies come from too (queue not acknowledging: UNAVAILABLE).
//!
//! Sizes: a request over `max_request_bytes` never reaches a handler (tonic refuses it
//! while decoding, before buffering it) and is RESOURCE_EXHAUSTED: a limit of this server,
//! the code gRPC stacks use for an over-limit message. A message the queue refuses as too
//! large is `ErrorCode::MessageTooLarge`, INVALID_ARGUMENT like SMTP's permanent `552`:
//! the same request can never succeed.
//!
//! Work is spawned, so a client that hangs up mid-request does not cut a publish (or an
//! idempotency claim) in half; the RPC's activity guard goes along, so the drain waits.
//! The same holds for a client deadline (`grpc-timeout`) that expires first: the message
//! may still be queued. Deadlines should therefore exceed the publisher's `ack_timeout`
//! (the budget: queue ack < gRPC deadline < drain grace), and a client that retries after
//! a deadline should use an idempotency key, which returns the first attempt's result.
//!
//! `SubmitStream` is flow-controlled: at most `stream_window` requests are in flight, and
//! the next request is read from the stream only when one has been answered. Responses go
//! through a channel of `stream_window` entries that the transport drains only as fast as
//! the client reads, so a client that never reads responses stops the server reading
//! requests: memory per stream stays bounded by the window (plus HTTP/2 flow-control
//! windows) whatever the client does. Once shutdown begins a stream stops reading, answers
//! what it has read and ends with UNAVAILABLE. (A client should keep reading all the same:
//! responses are small HTTP/2 DATA frames, and h2 clients drop their own connection with
//! ENHANCE_YOUR_CALM when too many small frames stay unread.)

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use kurir_core::{Address, BodyType, Envelope, ErrorCode, Recipient};
use kurir_lifecycle::Lifecycle;
use kurir_proto::v1;
use kurir_proto::v1::submission_service_server::SubmissionService;
use kurir_queue::Queue;
use kurir_state::{Claim, State, Tenant};
use prost::Message as _;
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::activity::RpcActivity;
use super::auth::{Authenticator, Caller};
use super::config::{ApiService, GrpcConfig};
use super::request::{self, Message};
use super::{code_status, state_status};
use crate::publish::{Publisher, Submission};

/// Messages at least this large (encoded request) are prepared off the async workers.
const BLOCKING_PREPARE: usize = 64 * 1024;
/// How long a request waits for another one with the same idempotency key to finish.
const PENDING_WAIT: Duration = Duration::from_secs(10);
/// The first and the longest pause between polls of a pending idempotency key.
const PENDING_POLL_FIRST: Duration = Duration::from_millis(20);
const PENDING_POLL_MAX: Duration = Duration::from_millis(500);

/// `kurir.v1.SubmissionService`. Cheap to clone.
pub struct SubmissionApi<Q, S> {
    inner: Arc<Inner<Q, S>>,
}

impl<Q, S> Clone for SubmissionApi<Q, S> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

impl<Q, S> std::fmt::Debug for SubmissionApi<Q, S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SubmissionApi")
            .field("stream_window", &self.inner.stream_window)
            .finish_non_exhaustive()
    }
}

struct Inner<Q, S> {
    publisher: Publisher<Q>,
    state: S,
    auth: Arc<Authenticator>,
    /// Requests of one stream in flight at once (`grpc.stream_window`).
    stream_window: usize,
    lifecycle: Lifecycle,
}

impl<Q: Queue, S: State> SubmissionApi<Q, S> {
    pub fn new(
        publisher: Publisher<Q>,
        state: S,
        auth: Arc<Authenticator>,
        config: &GrpcConfig,
        lifecycle: Lifecycle,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                publisher,
                state,
                auth,
                stream_window: config.stream_window.max(1),
                lifecycle,
            }),
        }
    }
}

/// What every request of a call shares.
#[derive(Debug, Clone)]
struct CallContext {
    caller: Caller,
    /// The call's W3C `traceparent` metadata, carried into the queue.
    traceparent: Option<String>,
}

impl CallContext {
    fn of<T>(request: &Request<T>, auth: &Authenticator) -> Result<Self, Status> {
        let caller = auth.authorize(request.metadata(), ApiService::Submission)?;
        let traceparent = request
            .metadata()
            .get("traceparent")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        Ok(Self {
            caller,
            traceparent,
        })
    }
}

#[tonic::async_trait]
impl<Q: Queue, S: State> SubmissionService for SubmissionApi<Q, S> {
    async fn submit(
        &self,
        request: Request<v1::SubmitRequest>,
    ) -> Result<Response<v1::SubmitResponse>, Status> {
        let context = CallContext::of(&request, &self.inner.auth)?;
        let activity = request.extensions().get::<RpcActivity>().cloned();
        let inner = self.inner.clone();
        let request = request.into_inner();
        // Spawned: see the module docs.
        let work = tokio::spawn(async move {
            let _activity = activity;
            inner.process(&context, request).await
        });
        let response = work
            .await
            .map_err(|_| Status::internal("submission failed unexpectedly"))??;
        Ok(Response::new(response))
    }

    type SubmitStreamStream = ReceiverStream<Result<v1::SubmitResponse, Status>>;

    async fn submit_stream(
        &self,
        request: Request<Streaming<v1::SubmitRequest>>,
    ) -> Result<Response<Self::SubmitStreamStream>, Status> {
        let context = CallContext::of(&request, &self.inner.auth)?;
        let activity = request.extensions().get::<RpcActivity>().cloned();
        let (tx, rx) = mpsc::channel(self.inner.stream_window);
        let inner = self.inner.clone();
        let inbound = request.into_inner();
        tokio::spawn(async move {
            let _activity = activity;
            inner.drive(context, inbound, tx).await;
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

type Responses = mpsc::Sender<Result<v1::SubmitResponse, Status>>;

impl<Q: Queue, S: State> Inner<Q, S> {
    /// Reads, processes and answers the requests of one stream (see the module docs).
    async fn drive(
        self: Arc<Self>,
        context: CallContext,
        mut inbound: Streaming<v1::SubmitRequest>,
        tx: Responses,
    ) {
        let window = Arc::new(Semaphore::new(self.stream_window));
        let shutdown = self.lifecycle.shutdown_signal().wait();
        tokio::pin!(shutdown);
        let mut tasks = JoinSet::new();
        let end = loop {
            // Room for one more request before reading it: this is the flow control.
            let permit = tokio::select! {
                biased;
                () = &mut shutdown => break Some(shutting_down()),
                () = tx.closed() => break None,
                permit = window.clone().acquire_owned() => match permit {
                    Ok(permit) => permit,
                    Err(_closed) => break None,
                },
            };
            while tasks.try_join_next().is_some() {}
            let next = tokio::select! {
                biased;
                () = &mut shutdown => break Some(shutting_down()),
                () = tx.closed() => break None,
                next = inbound.message() => next,
            };
            let request = match next {
                Ok(Some(request)) => request,
                // The client sent everything.
                Ok(None) => break None,
                Err(status) => break Some(stream_error(status)),
            };
            let inner = self.clone();
            let context = context.clone();
            let tx = tx.clone();
            tasks.spawn(async move {
                let client_id = request.client_id.clone();
                let response = match inner.process(&context, request).await {
                    Ok(response) => response,
                    Err(status) => failed(client_id, &status),
                };
                // Waits while the client is not reading: the permit stays taken, so no
                // further request is read (a gone client fails the send at once).
                let _ = tx.send(Ok(response)).await;
                drop(permit);
            });
        };
        // Requests already read are finished and answered (or their client is gone).
        while tasks.join_next().await.is_some() {}
        if let Some(status) = end {
            let _ = tx.send(Err(status)).await;
        }
    }

    /// One request, to its response. See the module docs for the steps.
    async fn process(
        &self,
        context: &CallContext,
        request: v1::SubmitRequest,
    ) -> Result<v1::SubmitResponse, Status> {
        let caller = &context.caller;
        self.auth.charge(caller, 1)?;
        request::check_common(&request)?;
        let size = request.encoded_len();
        let v1::SubmitRequest {
            client_id,
            idempotency_key,
            message,
            tags,
        } = request;
        let message = if size < BLOCKING_PREPARE {
            request::message(message)?
        } else {
            tokio::task::spawn_blocking(move || request::message(message))
                .await
                .map_err(|_| Status::internal("preparing the message failed unexpectedly"))??
        };
        let publish = Publish {
            context,
            message,
            tags,
        };
        let mut response = if idempotency_key.is_empty() {
            self.publish(publish).await?
        } else {
            self.idempotent(&caller.tenant, &idempotency_key, publish)
                .await?
        };
        response.client_id = client_id;
        Ok(response)
    }

    /// Publishes once per idempotency key and tenant:
    /// - `New`: this request owns the key: publish, then record the response for later
    ///   requests (or release the key when publishing failed, so a retry can claim it);
    /// - `Done`: an earlier request finished: its response, marked `duplicate`;
    /// - `Pending`: another request is publishing right now: wait for it, polling with
    ///   backoff, at most [`PENDING_WAIT`], then ABORTED (the client retries later).
    async fn idempotent(
        &self,
        tenant: &Tenant,
        key: &str,
        publish: Publish<'_>,
    ) -> Result<v1::SubmitResponse, Status> {
        let deadline = Instant::now() + PENDING_WAIT;
        let mut pause = PENDING_POLL_FIRST;
        loop {
            let claim = self
                .state
                .claim_idempotency_key(tenant, key)
                .await
                .map_err(state_status)?;
            match claim {
                Claim::New => break,
                Claim::Done(stored) => {
                    let mut response = v1::SubmitResponse::decode(stored.as_slice())
                        .map_err(|_| Status::internal("the recorded result is unreadable"))?;
                    response.duplicate = true;
                    return Ok(response);
                }
                Claim::Pending if Instant::now() + pause <= deadline => {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(PENDING_POLL_MAX);
                }
                Claim::Pending => {
                    return Err(Status::aborted("a request with this key is in progress"));
                }
            }
        }
        match self.publish(publish).await {
            Ok(response) => {
                let stored = response.encode_to_vec();
                if let Err(error) = self
                    .state
                    .complete_idempotency_key(tenant, key, &stored)
                    .await
                {
                    // The mail is queued: failing the call would make the client retry and
                    // queue it again once the pending claim expires.
                    tracing::warn!(%error, "idempotency result not recorded");
                }
                Ok(response)
            }
            Err(status) => {
                if let Err(error) = self.state.release_idempotency_key(tenant, key).await {
                    tracing::warn!(%error, "idempotency key not released");
                }
                Err(status)
            }
        }
    }

    /// The suppression check and the publish; the response without `client_id`.
    async fn publish(&self, publish: Publish<'_>) -> Result<v1::SubmitResponse, Status> {
        let Publish {
            context,
            message,
            tags,
        } = publish;
        let tenant = &context.caller.tenant;
        let mut seen = HashSet::new();
        let distinct: Vec<Address> = message
            .recipients
            .iter()
            .filter(|a| seen.insert(*a))
            .cloned()
            .collect();
        let found = self
            .state
            .check_suppressed(tenant, &distinct)
            .await
            .map_err(state_status)?;
        let mut suppressed = Vec::new();
        let mut envelope = Envelope::new(message.sender);
        for (address, entry) in distinct.into_iter().zip(found) {
            match entry {
                Some(_) => suppressed.push(address),
                None => envelope.recipients.push(Recipient::new(address)),
            }
        }
        envelope.smtputf8 = envelope.needs_smtputf8();
        envelope.body = if !message.body.is_ascii() {
            BodyType::EightBitMime
        } else {
            BodyType::SevenBit
        };
        let results = recipient_results(&message.recipients, &suppressed);
        let submission = Submission {
            tenant: tenant.as_str().to_owned(),
            envelope,
            body: message.body,
            received: None,
            traceparent: context.traceparent.clone(),
            tags,
            suppressed,
        };
        let accepted = self.publisher.publish(submission).await.map_err(|code| {
            tracing::warn!(key = %context.caller.key, error = %code, "message not queued");
            code_status(code)
        })?;
        if accepted.events_failed > 0 {
            tracing::warn!(id = %accepted.id, failed = accepted.events_failed, "suppressed events lost");
        }
        tracing::debug!(id = %accepted.id, key = %context.caller.key, records = accepted.records, "message queued");
        Ok(v1::SubmitResponse {
            client_id: String::new(),
            message_id: accepted.id.to_string(),
            recipients: results,
            duplicate: false,
            error: None,
        })
    }
}

/// A prepared message with what it is published with.
struct Publish<'a> {
    context: &'a CallContext,
    message: Message,
    tags: BTreeMap<String, String>,
}

/// One result per requested recipient, in request order.
fn recipient_results(recipients: &[Address], suppressed: &[Address]) -> Vec<v1::RecipientResult> {
    recipients
        .iter()
        .map(|address| {
            let status = if suppressed.contains(address) {
                v1::RecipientStatus::Suppressed
            } else {
                v1::RecipientStatus::Queued
            };
            v1::RecipientResult {
                address: address.to_string(),
                status: status.into(),
            }
        })
        .collect()
}

/// A failed request's response on a stream.
fn failed(client_id: String, status: &Status) -> v1::SubmitResponse {
    v1::SubmitResponse {
        client_id,
        error: Some(v1::Error {
            code: status.code() as i32,
            message: status.message().to_owned(),
        }),
        ..Default::default()
    }
}

fn shutting_down() -> Status {
    code_status(ErrorCode::ShuttingDown)
}

/// Why a stream's next request could not be read: an over-limit request is
/// RESOURCE_EXHAUSTED (tonic says OUT_OF_RANGE; see the module docs), anything else as it
/// came (the client cancelled, the connection broke).
fn stream_error(status: Status) -> Status {
    if status.code() == tonic::Code::OutOfRange {
        return Status::resource_exhausted(format!(
            "request larger than max_request_bytes: {}",
            status.message()
        ));
    }
    status
}
