//! Helpers for building and reading [`v1::Event`]s.

use bytes::{Buf, Bytes};
use kurir_core::{MessageId, Outcome};
use prost::Message;

use crate::DecodeError;
use crate::convert::{id_from_bytes, id_to_bytes, outcome_from_proto, outcome_to_proto};
use crate::v1;

const EVENT: &str = "kurir.v1.Event";

impl v1::Event {
    /// An event for a queue record that could not be decoded, so the partition can move past
    /// it. `routing_key` is the record's key; the caller fills in what else it could read
    /// (e.g. [`v1::QueuedMessage::message_id`]).
    pub fn undecodable(
        event_id: MessageId,
        undecodable: v1::UndecodableRecord,
        routing_key: String,
        time_unix_ms: i64,
    ) -> Self {
        Self {
            event_id: id_to_bytes(event_id),
            routing_key,
            outcome: v1::Outcome::Undecodable.into(),
            undecodable: Some(undecodable),
            time_unix_ms,
            ..Self::default()
        }
    }

    /// Decodes an event.
    pub fn decode_bytes(buf: impl Buf) -> Result<Self, DecodeError> {
        Self::decode(buf).map_err(|source| DecodeError::Protobuf {
            message: EVENT,
            source,
        })
    }

    /// The encoded event.
    pub fn encode_to_bytes(&self) -> Bytes {
        Bytes::from(self.encode_to_vec())
    }

    /// Sets `outcome` and `bounce_class` (the class only for a bounce).
    pub fn set_core_outcome(&mut self, outcome: Outcome) {
        let (outcome, class) = outcome_to_proto(outcome);
        self.outcome = outcome.into();
        self.bounce_class = class.into();
    }

    /// The recipient's outcome; `None` for an undecodable-record event.
    pub fn core_outcome(&self) -> Result<Option<Outcome>, DecodeError> {
        outcome_from_proto(self.outcome, self.bounce_class)
    }

    pub fn set_event_id(&mut self, id: MessageId) {
        self.event_id = id_to_bytes(id);
    }

    /// The event id (a ULID; [`MessageId`] is kurir's ULID type).
    pub fn event_id(&self) -> Result<MessageId, DecodeError> {
        id_from_bytes("event_id", &self.event_id)
    }

    pub fn set_message_id(&mut self, id: MessageId) {
        self.message_id = id_to_bytes(id);
    }

    /// The message id; `None` when the event carries none (an undecodable record).
    pub fn message_id(&self) -> Result<Option<MessageId>, DecodeError> {
        if self.message_id.is_empty() {
            return Ok(None);
        }
        id_from_bytes("message_id", &self.message_id).map(Some)
    }
}
