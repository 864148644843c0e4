//! Records that cannot be decoded must not block their partition.
//!
//! A consumer decodes each queued record; when that fails (a bug in an older producer, a
//! corrupt record, a foreign writer on the topic) it reports the record on the events topic
//! as an `undecodable` event naming topic, partition, offset and the error, and only then
//! finishes it, so the partition moves on and an operator can find the record. If the event
//! cannot be published the record is left unfinished and comes back later: nothing is
//! dropped silently.

use std::time::SystemTime;

use kurir_core::MessageId;
use kurir_proto::{Queued, convert::time_to_unix_ms, v1};

use crate::{IncomingRecord, OutgoingRecord, PublishError, Queue};

/// The outcome of [`decode_or_skip`].
#[derive(Debug)]
pub enum Decoded {
    /// A queued message, with the record it came from (finish it through its ack).
    Message(Box<Queued>, IncomingRecord),
    /// The record did not decode: it was reported and finished.
    Skipped,
}

/// Decodes a queued message, or reports and finishes an undecodable record.
pub async fn decode_or_skip<Q: Queue>(
    queue: &Q,
    events_topic: &str,
    record: IncomingRecord,
) -> Result<Decoded, PublishError> {
    let error = match Queued::decode(record.value.clone()) {
        Ok(message) => return Ok(Decoded::Message(Box::new(message), record)),
        Err(error) => error,
    };
    tracing::error!(topic = %record.topic, partition = record.partition, offset = record.offset,
        %error, "undecodable queue record skipped");
    let what = v1::UndecodableRecord {
        topic: record.topic.to_string(),
        partition: record.partition,
        offset: record.offset,
        error: error.to_string(),
    };
    let event = v1::Event::undecodable(
        MessageId::new(),
        what,
        record.key.clone(),
        time_to_unix_ms(SystemTime::now()),
    );
    let out = OutgoingRecord::new(record.key.clone(), event.encode_to_bytes());
    queue.publish(events_topic, vec![out]).await?;
    record.ack.done();
    Ok(Decoded::Skipped)
}
