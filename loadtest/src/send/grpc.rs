//! gRPC submission (`kurir.v1.SubmissionService`): unary `Submit` calls one after another
//! per connection, or a `SubmitStream` per connection with up to `window` requests in
//! flight. Every call carries `authorization: Bearer <key>` when a key is given.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use kurir_proto::auth::Bearer;
use kurir_proto::v1;
use kurir_proto::v1::submission_service_client::SubmissionServiceClient;
use tokio::sync::{Semaphore, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request, Status};

use super::{Outgoing, Plan, Tally, Ticket};

/// Unary calls or a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GrpcMode {
    /// One `Submit` at a time per connection.
    Unary,
    /// One `SubmitStream` per connection, `window` requests in flight.
    Stream,
}

/// Where and how to call.
#[derive(Debug, Clone)]
pub struct GrpcTarget {
    /// `http://HOST:PORT`.
    pub url: String,
    /// The API key (`[[grpc.api_keys]]`).
    pub api_key: Option<String>,
    pub mode: GrpcMode,
    /// Stream mode: requests in flight per stream.
    pub window: usize,
    /// Connecting, and each unary call, within this.
    pub timeout: Duration,
}

type Client = SubmissionServiceClient<InterceptedService<Channel, Bearer>>;

/// One connection's share of the run.
pub(crate) async fn worker(plan: &Plan, target: &GrpcTarget) -> Tally {
    let mut tally = Tally::default();
    let client = match connect(target).await {
        Ok(client) => client,
        Err(error) => {
            // Every message this worker would have sent fails the same way; take one.
            if plan.take().await.is_some() {
                tally.fail(plan, format!("grpc connect: {error}"));
            }
            return tally;
        }
    };
    match target.mode {
        GrpcMode::Unary => unary(plan, client, target.timeout, &mut tally).await,
        GrpcMode::Stream => stream(plan, client, target.window.max(1), &mut tally).await,
    }
    tally
}

async fn connect(target: &GrpcTarget) -> anyhow::Result<Client> {
    let channel = Endpoint::from_shared(target.url.clone())?
        .connect_timeout(target.timeout)
        .tcp_nodelay(true)
        .connect()
        .await?;
    let bearer = match target.api_key.as_deref().filter(|k| !k.is_empty()) {
        Some(key) => Bearer::new(key)?,
        None => Bearer::none(),
    };
    Ok(SubmissionServiceClient::with_interceptor(channel, bearer))
}

async fn unary(plan: &Plan, mut client: Client, timeout: Duration, tally: &mut Tally) {
    while let Some(ticket) = plan.take().await {
        let message = plan.message(ticket.seq);
        let bytes = message.len();
        let mut request = Request::new(request(plan, ticket.seq, message));
        request.set_timeout(timeout);
        match client.submit(request).await {
            Ok(response) => record(plan, tally, ticket, bytes, &response.into_inner()),
            Err(status) => tally.fail(plan, status_key(status.code())),
        }
    }
}

/// A request in flight on a stream: when it was due and its size.
type InFlight = Mutex<HashMap<u64, (Ticket, usize)>>;

async fn stream(plan: &Plan, mut client: Client, window: usize, tally: &mut Tally) {
    let (tx, rx) = mpsc::channel(window);
    let slots = Semaphore::new(window);
    let in_flight: InFlight = Mutex::new(HashMap::new());
    let send = async {
        // A slot per request in flight: the receiver frees it with the response.
        while let Ok(permit) = slots.acquire().await {
            permit.forget();
            let Some(ticket) = plan.take().await else {
                break;
            };
            let message = plan.message(ticket.seq);
            let bytes = message.len();
            lock(&in_flight).insert(ticket.seq, (ticket, bytes));
            if tx.send(request(plan, ticket.seq, message)).await.is_err() {
                break;
            }
        }
        drop(tx);
    };
    let receive = async {
        let result = receive(plan, &mut client, rx, &slots, &in_flight, tally).await;
        // The sender waits on a slot; closing the semaphore ends it when the stream ended.
        slots.close();
        result
    };
    let ((), result) = tokio::join!(send, receive);
    let leftover: Vec<_> = lock(&in_flight).drain().collect();
    let key = match result {
        Ok(()) => "grpc stream ended early".to_owned(),
        Err(status) => status_key(status.code()),
    };
    for _ in leftover {
        tally.fail(plan, key.clone());
    }
}

async fn receive(
    plan: &Plan,
    client: &mut Client,
    rx: mpsc::Receiver<v1::SubmitRequest>,
    slots: &Semaphore,
    in_flight: &InFlight,
    tally: &mut Tally,
) -> Result<(), Status> {
    let mut responses = client
        .submit_stream(ReceiverStream::new(rx))
        .await?
        .into_inner();
    while let Some(response) = responses.message().await? {
        let seq: Option<u64> = response.client_id.parse().ok();
        let Some((ticket, bytes)) = seq.and_then(|seq| lock(in_flight).remove(&seq)) else {
            continue;
        };
        record(plan, tally, ticket, bytes, &response);
        slots.add_permits(1);
    }
    Ok(())
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

fn request(plan: &Plan, seq: u64, message: Outgoing) -> v1::SubmitRequest {
    let data = crate::message::whole(&message.header, &message.body);
    v1::SubmitRequest {
        client_id: seq.to_string(),
        message: Some(v1::submit_request::Message::Raw(v1::RawMessage {
            envelope_from: plan.config.from.clone(),
            envelope_to: message.to,
            data,
        })),
        ..Default::default()
    }
}

fn record(
    plan: &Plan,
    tally: &mut Tally,
    ticket: Ticket,
    bytes: usize,
    response: &v1::SubmitResponse,
) {
    if let Some(error) = &response.error {
        tally.fail(plan, status_key(Code::from_i32(error.code)));
        return;
    }
    for r in &response.recipients {
        if r.status == v1::RecipientStatus::Suppressed as i32 {
            tally.rcpts_suppressed += 1;
        } else {
            tally.rcpts_accepted += 1;
        }
    }
    tally.accept(plan, ticket, bytes);
}

/// `grpc UNAVAILABLE`.
fn status_key(code: Code) -> String {
    let name = format!("{code:?}");
    let mut key = String::from("grpc ");
    for (i, c) in name.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            key.push('_');
        }
        key.push(c.to_ascii_uppercase());
    }
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_keys_are_the_grpc_names() {
        assert_eq!(status_key(Code::Unavailable), "grpc UNAVAILABLE");
        assert_eq!(status_key(Code::InvalidArgument), "grpc INVALID_ARGUMENT");
    }
}
