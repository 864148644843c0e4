//! The one path from an accepted message to the queue, shared by SMTP and gRPC: normalise
//! the message, split its recipients by routing key, publish one record per key, and answer
//! only once the queue acknowledged every record. Recipients left out because they are
//! suppressed are reported as `SUPPRESSED` events once the message is accepted.
//!
//! # Layout
//! - `mod.rs`: the types and [`Publisher`]: the publish flow, the ack timeout, how queue
//!   errors become client replies, and the known duplicate window (see [`Publisher::publish`]).
//! - `normalise.rs`: `Received`, `Message-ID` and `Date`; dates and folding.
//! - `headers.rs`: finding the header block and the fields it already has.
//! - `suppressed.rs`: the `SUPPRESSED` events of [`Submission::suppressed`] recipients.

mod headers;
mod normalise;
mod suppressed;

pub use normalise::Normalised;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kurir_core::{Address, Domain, Envelope, ErrorCode, MessageId, Recipient};
use kurir_proto::{Queued, v1};
use kurir_queue::{OutgoingRecord, PublishError, Queue, Topics};
use tokio::time::Instant;
use tracing::Instrument;

/// How the publish path behaves.
#[derive(Debug, Clone)]
pub struct PublishConfig {
    /// This node's host name: in `Received: … by <hostname>` and generated Message-IDs.
    pub hostname: String,
    /// The mail topic (`kurir.mail`).
    pub topic: String,
    /// The longest the queue may take to acknowledge; then the client gets `451 4.3.0`.
    pub ack_timeout: Duration,
    /// Hot domains split over several routing-key shards.
    pub shards: BTreeMap<Domain, u16>,
}

impl PublishConfig {
    /// The events topic, under the prefix of the mail topic (`kurir.mail` →
    /// `kurir.events`, as [`Topics`] names them); `<topic>.events` for a mail topic not
    /// named like that.
    pub fn events_topic(&self) -> String {
        match self.topic.strip_suffix(".mail") {
            Some(prefix) => Topics::new(prefix).events(),
            None => format!("{}.events", self.topic),
        }
    }
}

/// Where an SMTP message came from, for its `Received` header. `None` for gRPC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedFrom {
    /// The EHLO/HELO name the client gave.
    pub helo: String,
    pub peer: IpAddr,
    /// `ESMTP`, `ESMTPS` (TLS), `ESMTPA` (auth), `ESMTPSA` (both) — RFC 3848.
    pub protocol: &'static str,
    /// e.g. `TLSv1.3`, when TLS was used.
    pub tls: Option<String>,
}

/// A message accepted from a client, not yet queued.
#[derive(Debug, Clone)]
pub struct Submission {
    pub tenant: String,
    pub envelope: Envelope,
    /// The RFC 5322 message as received (CRLF line endings).
    pub body: Bytes,
    pub received: Option<ReceivedFrom>,
    /// W3C trace context of the submitting request, carried into the queue.
    pub traceparent: Option<String>,
    /// Labels that travel into every event of the message.
    pub tags: BTreeMap<String, String>,
    /// Recipients the client was told were accepted but that are left out of the message
    /// because they are suppressed (SMTP `suppressed_recipients = "drop"`). Each gets one
    /// `SUPPRESSED` event (one for an address given twice) once the message is accepted. When
    /// `envelope` has no recipients left, no mail is queued: only these events.
    pub suppressed: Vec<Address>,
}

/// An accepted message: queued, or (every recipient suppressed) only reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Accepted {
    pub id: MessageId,
    /// Mail records published (one per routing key); 0 when every recipient was suppressed.
    pub records: usize,
    /// `SUPPRESSED` events published, one per distinct [`Submission::suppressed`] address.
    pub events: usize,
    /// `SUPPRESSED` events that could not be published (already logged). The message is
    /// accepted all the same: its mail is queued by then, and a suppressed recipient gets
    /// nothing whatever happens to its event.
    pub events_failed: usize,
}

/// Publishes submissions to the queue. Cheap to clone.
#[derive(Debug)]
pub struct Publisher<Q> {
    queue: Q,
    config: Arc<PublishConfig>,
}

impl<Q: Clone> Clone for Publisher<Q> {
    fn clone(&self) -> Self {
        Self {
            queue: self.queue.clone(),
            config: self.config.clone(),
        }
    }
}

impl<Q: Queue> Publisher<Q> {
    pub fn new(queue: Q, config: PublishConfig) -> Self {
        Self {
            queue,
            config: Arc::new(config),
        }
    }

    /// Normalises, splits and publishes; `Ok` only once every record is durable.
    /// Errors: `QueueUnavailable` (timeout, transient or operator-fixable failure: the client
    /// retries), `MessageTooLarge` (the queue refused the size), `NoRecipients` (none,
    /// not even suppressed ones).
    ///
    /// All records go to the queue in one call, so the embedded backend writes them in one
    /// atomic batch: it is all or nothing there.
    ///
    /// Then, and only then, each [`Submission::suppressed`] recipient is reported as a
    /// `SUPPRESSED` event for the message id (see `suppressed.rs`); when no recipient is
    /// left there is no mail record, only those events. A failed event publish does not fail
    /// the message (see [`Accepted::events_failed`]).
    ///
    /// # Known gap: duplicates after a failed or late acknowledgement
    ///
    /// Kafka has no atomic multi-key write without transactions. When some records of a
    /// message are acknowledged and others fail (a partition leader moving, one broker
    /// down), the client gets `451` and retries; the retry has a new message id, so the
    /// acknowledged keys are delivered twice, and the delivery ledger (keyed by message id)
    /// cannot catch it. The same happens on either backend when the ack timeout fires after
    /// the records were handed over: dropping the publish does not withdraw them, and they
    /// may still become durable. We accept this for now because it needs a broker failure
    /// or a queue slower than the ack timeout (keep `ack_timeout` a little above Kafka's
    /// `delivery_timeout`, so that librdkafka, which knows what it sent, usually answers
    /// first and expires unsent records itself),
    /// and duplicate mail is far less harmful than lost mail. To close it: a transactional
    /// producer (abort on partial failure), or a cancellation mark for the message id that
    /// delivery checks before an attempt.
    pub async fn publish(&self, submission: Submission) -> Result<Accepted, ErrorCode> {
        if submission.envelope.recipients.is_empty() && submission.suppressed.is_empty() {
            return Err(ErrorCode::NoRecipients);
        }
        let id = MessageId::new();
        let span = tracing::info_span!(
            "publish",
            message_id = %id,
            tenant = %submission.tenant,
            records = tracing::field::Empty,
            bytes = tracing::field::Empty,
            suppressed = submission.suppressed.len(),
        );
        self.publish_as(id, submission).instrument(span).await
    }

    /// The message as it is queued: a `Received` header prepended (when `received` is
    /// set), `Message-ID` and `Date` added when missing; nothing else changed. See
    /// `normalise.rs` for the rules.
    pub fn normalise(&self, id: MessageId, submission: &Submission) -> Normalised {
        normalise::normalise(&self.config, id, submission)
    }

    async fn publish_as(
        &self,
        id: MessageId,
        submission: Submission,
    ) -> Result<Accepted, ErrorCode> {
        let started = Instant::now();
        let mut count = 0;
        // Every recipient suppressed: no mail to queue, only the events below.
        if !submission.envelope.recipients.is_empty() {
            let body = self.normalise(id, &submission);
            let records = self.records(id, &submission, &body);
            count = records.len();
            let span = tracing::Span::current();
            span.record("records", count);
            span.record("bytes", body.len());
            self.send(records).await?;
            tracing::debug!(elapsed_ms = started.elapsed().as_millis() as u64, "queued");
        }
        // The mail is durable now: the events refer to a message that is really accepted.
        // Their failure is only reported, never the message's (see `suppressed.rs`).
        let events = self.publish_suppressed(id, &submission).await;
        Ok(Accepted {
            id,
            records: count,
            events: events.published,
            events_failed: events.failed,
        })
    }

    /// One record per routing key, each with the recipients of that key only.
    fn records(
        &self,
        id: MessageId,
        submission: &Submission,
        body: &Normalised,
    ) -> Vec<OutgoingRecord> {
        let trace = trace_context(submission.traceparent.as_deref());
        let first_seen = normalise::first_seen(id);
        let groups = submission
            .envelope
            .split_by_routing_key(id, |domain| self.shards_for(domain));
        groups
            .into_iter()
            .map(|(routing_key, recipients)| {
                let key = routing_key.to_string();
                let queued = Queued {
                    id,
                    tenant: submission.tenant.clone(),
                    routing_key,
                    envelope: envelope_for(&submission.envelope, recipients),
                    attempts: 0,
                    first_seen,
                    not_before: None,
                    trace: trace.clone(),
                    tags: submission.tags.clone(),
                    body: Bytes::new(),
                };
                let record = OutgoingRecord::new(key, queued.encode_with_body(body.pieces()));
                match &trace {
                    // W3C trace context in a record header too (DESIGN §7), so consumers
                    // can join the trace without decoding the value.
                    Some(trace) => record.header(TRACEPARENT, trace.traceparent.clone()),
                    None => record,
                }
            })
            .collect()
    }

    fn shards_for(&self, domain: &Domain) -> u16 {
        self.config.shards.get(domain).copied().unwrap_or(1).max(1)
    }

    /// Publishes in one call and waits at most `ack_timeout` for the acknowledgement.
    async fn send(&self, records: Vec<OutgoingRecord>) -> Result<(), ErrorCode> {
        let publish = self.queue.publish(&self.config.topic, records);
        match tokio::time::timeout(self.config.ack_timeout, publish).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) => Err(reply_for(&error)),
            Err(_elapsed) => {
                let ack_timeout = self.config.ack_timeout;
                tracing::warn!(?ack_timeout, "queue did not acknowledge in time");
                Err(ErrorCode::QueueUnavailable)
            }
        }
    }
}

/// The record header carrying the W3C `traceparent`.
const TRACEPARENT: &str = "traceparent";

/// What the client hears when the queue refused a publish.
fn reply_for(error: &PublishError) -> ErrorCode {
    match error {
        PublishError::TooLarge { size } => {
            tracing::info!(size, "queue refused the message size");
            ErrorCode::MessageTooLarge
        }
        error if error.is_retryable() => {
            tracing::warn!(%error, "queue publish failed, client will retry");
            ErrorCode::QueueUnavailable
        }
        // Authorisation, unknown topic, bad settings: nothing the client did wrong, and
        // mail is not refused permanently for an operator's mistake; the client retries
        // once it is fixed.
        error => {
            tracing::error!(%error, "queue refused the publish; needs an operator");
            ErrorCode::QueueUnavailable
        }
    }
}

/// The envelope of one routing key: the message's parameters, those recipients only.
fn envelope_for(envelope: &Envelope, recipients: Vec<Recipient>) -> Envelope {
    Envelope {
        sender: envelope.sender.clone(),
        ret: envelope.ret,
        envid: envelope.envid.clone(),
        body: envelope.body,
        smtputf8: envelope.smtputf8,
        recipients,
    }
}

/// The trace context to carry; a `traceparent` that could not be a W3C header value
/// (empty, non-ASCII, absurdly long) is dropped rather than queued.
fn trace_context(traceparent: Option<&str>) -> Option<v1::TraceContext> {
    let traceparent = traceparent?.trim();
    let plausible = !traceparent.is_empty()
        && traceparent.len() <= 256
        && traceparent.bytes().all(|b| b.is_ascii_graphic());
    plausible.then(|| v1::TraceContext {
        traceparent: traceparent.to_owned(),
        tracestate: String::new(),
    })
}
