//! Recipients accepted from the client but left out of the message because they are
//! suppressed (SMTP `suppressed_recipients = "drop"`): one `SUPPRESSED` [`v1::Event`] each on
//! the events topic, published only once the message is accepted, so every event names a
//! message id the client was told is queued.
//!
//! The events are best effort: the mail is already queued (or there was none to queue) and
//! the client is answered `250` either way. A failed publish is logged and reported in
//! [`Accepted::events_failed`](super::Accepted::events_failed), never retried: the recipient
//! is suppressed, so nothing is delivered to it whatever happens to the event.

use std::time::SystemTime;

use kurir_core::{Address, MessageId, Outcome, RoutingKey};
use kurir_proto::convert::time_to_unix_ms;
use kurir_proto::v1;
use kurir_queue::{OutgoingRecord, Queue};

use super::{Publisher, Submission, trace_context};

/// What happened to the events of one submission's suppressed recipients.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct SuppressedEvents {
    pub(super) published: usize,
    pub(super) failed: usize,
}

impl<Q: Queue> Publisher<Q> {
    /// Publishes one `SUPPRESSED` event per [`Submission::suppressed`] recipient of message
    /// `id`, in one call, waiting at most `ack_timeout`. Call it only once the message is
    /// accepted.
    pub(super) async fn publish_suppressed(
        &self,
        id: MessageId,
        submission: &Submission,
    ) -> SuppressedEvents {
        if submission.suppressed.is_empty() {
            return SuppressedEvents::default();
        }
        let now = SystemTime::now();
        let mut seen = std::collections::HashSet::with_capacity(submission.suppressed.len());
        let trace = trace_context(submission.traceparent.as_deref());
        let records: Vec<OutgoingRecord> = submission
            .suppressed
            .iter()
            .filter(|address| seen.insert(*address))
            .map(|address| {
                let event = self.suppressed_event(id, submission, address, &trace, now);
                OutgoingRecord::new(event.routing_key.clone(), event.encode_to_bytes())
            })
            .collect();
        let count = records.len();
        let topic = self.config.events_topic();
        let publish = self.queue.publish(&topic, records);
        let error = match tokio::time::timeout(self.config.ack_timeout, publish).await {
            Ok(Ok(())) => {
                tracing::debug!(events = count, "suppressed recipients reported");
                return SuppressedEvents {
                    published: count,
                    failed: 0,
                };
            }
            Ok(Err(error)) => error.to_string(),
            Err(_elapsed) => "the queue did not acknowledge in time".to_owned(),
        };
        tracing::warn!(%topic, events = count, %error,
            "suppressed events not published; the message stands");
        SuppressedEvents {
            published: 0,
            failed: count,
        }
    }

    /// The `SUPPRESSED` event of one dropped recipient: nothing was attempted (attempt 0)
    /// and it was decided at acceptance (queued 0 ms). The routing key is the one the
    /// recipient's record would have had, shards included.
    fn suppressed_event(
        &self,
        id: MessageId,
        submission: &Submission,
        address: &Address,
        trace: &Option<v1::TraceContext>,
        now: SystemTime,
    ) -> v1::Event {
        let domain = address.domain();
        let routing_key = RoutingKey::for_message(domain.clone(), self.shards_for(domain), id);
        let mut event = v1::Event {
            tenant: submission.tenant.clone(),
            recipient: address.to_string(),
            routing_key: routing_key.to_string(),
            attempt: 0,
            queued_ms: 0,
            time_unix_ms: time_to_unix_ms(now),
            tags: submission.tags.clone(),
            trace: trace.clone(),
            ..v1::Event::default()
        };
        event.set_event_id(MessageId::new());
        event.set_message_id(id);
        event.set_core_outcome(Outcome::Suppressed);
        event
    }
}
