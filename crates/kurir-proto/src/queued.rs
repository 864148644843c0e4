//! [`Queued`]: a `QueuedMessage` record with every field checked, in kurir-core types.

use std::collections::BTreeMap;
use std::time::SystemTime;

use bytes::{Buf, Bytes};
use kurir_core::{Envelope, MessageId, RoutingKey};
use prost::Message;

use crate::DecodeError;
use crate::convert::{
    envelope_to_proto, id_from_bytes, id_to_bytes, time_from_unix_ms, time_to_unix_ms,
};
use crate::v1;

const QUEUED_MESSAGE: &str = "kurir.v1.QueuedMessage";
/// `QueuedMessage.body`'s field number: the highest, so prost writes it last.
const BODY_FIELD: u32 = 11;

/// One message queued for the recipients of one routing key, decoded and validated: what
/// the delivery side works with. Its wire form is [`v1::QueuedMessage`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Queued {
    pub id: MessageId,
    /// Empty on a single-tenant installation.
    pub tenant: String,
    /// The key the record is queued under. The recipients are meant to be those of its
    /// domain; decoding does not check that.
    pub routing_key: RoutingKey,
    /// The envelope with the recipients of this routing key only (at least one).
    pub envelope: Envelope,
    /// Delivery attempts made so far.
    pub attempts: u32,
    /// When the message was accepted (millisecond precision on the wire).
    pub first_seen: SystemTime,
    /// Not to be attempted before this time; `None` means at once.
    pub not_before: Option<SystemTime>,
    /// The W3C trace context of the submission.
    pub trace: Option<v1::TraceContext>,
    /// Labels copied into every event of the message.
    pub tags: BTreeMap<String, String>,
    /// The RFC 5322 message. Shares the decoded buffer when decoded from [`Bytes`].
    pub body: Bytes,
}

impl Queued {
    /// Decodes and validates a queue record's value. Decoding from [`Bytes`] shares the
    /// buffer for the body instead of copying it.
    pub fn decode(buf: impl Buf) -> Result<Self, DecodeError> {
        v1::QueuedMessage::decode(buf)
            .map_err(|source| DecodeError::Protobuf {
                message: QUEUED_MESSAGE,
                source,
            })?
            .try_into()
    }

    /// The record's value.
    pub fn encode_to_bytes(&self) -> Bytes {
        self.encode_with_body(&[&self.body])
    }

    /// The record's value with `body` (pieces whose concatenation is the message) in
    /// place of [`Queued::body`]: the same bytes as `encode_to_bytes` would give with the
    /// pieces joined, written straight into the value instead of joined first (for a large
    /// message that is one copy of it fewer). `body` is field 11, the last one, so appending
    /// it after the other fields is the canonical encoding.
    pub fn encode_with_body<B: AsRef<[u8]>>(&self, body: &[B]) -> Bytes {
        let mut message = v1::QueuedMessage::from(self);
        message.body = Bytes::new();
        let body_len: usize = body.iter().map(|piece| piece.as_ref().len()).sum();
        let field_len = if body_len == 0 {
            0
        } else {
            1 + prost::length_delimiter_len(body_len) + body_len
        };
        let mut out = Vec::with_capacity(message.encoded_len() + field_len);
        message.encode_raw(&mut out);
        if body_len > 0 {
            prost::encoding::encode_key(
                BODY_FIELD,
                prost::encoding::WireType::LengthDelimited,
                &mut out,
            );
            prost::encoding::encode_varint(body_len as u64, &mut out);
            for piece in body {
                out.extend_from_slice(piece.as_ref());
            }
        }
        Bytes::from(out)
    }
}

impl From<&Queued> for v1::QueuedMessage {
    fn from(q: &Queued) -> Self {
        let (envelope, recipients) = envelope_to_proto(&q.envelope);
        Self {
            id: id_to_bytes(q.id),
            tenant: q.tenant.clone(),
            routing_key: q.routing_key.to_string(),
            envelope: Some(envelope),
            recipients,
            attempts: q.attempts,
            first_seen_unix_ms: time_to_unix_ms(q.first_seen),
            not_before_unix_ms: q.not_before.map_or(0, time_to_unix_ms),
            trace: q.trace.clone(),
            tags: q.tags.clone(),
            body: q.body.clone(),
        }
    }
}

impl TryFrom<v1::QueuedMessage> for Queued {
    type Error = DecodeError;

    fn try_from(m: v1::QueuedMessage) -> Result<Self, DecodeError> {
        let id = m.message_id()?;
        let routing_key = m.routing_key()?;
        let envelope = m
            .envelope
            .as_ref()
            .ok_or_else(|| DecodeError::missing("envelope"))?
            .to_core(&m.recipients)?;
        if envelope.recipients.is_empty() {
            return Err(DecodeError::missing("recipients"));
        }
        Ok(Self {
            id,
            tenant: m.tenant,
            routing_key,
            envelope,
            attempts: m.attempts,
            first_seen: time_from_unix_ms("first_seen_unix_ms", m.first_seen_unix_ms)?,
            not_before: match m.not_before_unix_ms {
                0 => None,
                ms => Some(time_from_unix_ms("not_before_unix_ms", ms)?),
            },
            trace: m.trace,
            tags: m.tags,
            body: m.body,
        })
    }
}

impl v1::QueuedMessage {
    /// The encoded record.
    pub fn encode_to_bytes(&self) -> Bytes {
        Bytes::from(self.encode_to_vec())
    }

    /// The message id alone: useful to name a record whose other fields are invalid.
    pub fn message_id(&self) -> Result<MessageId, DecodeError> {
        id_from_bytes("id", &self.id)
    }

    /// The routing key alone.
    pub fn routing_key(&self) -> Result<RoutingKey, DecodeError> {
        self.routing_key
            .parse()
            .map_err(|source| DecodeError::RoutingKey {
                field: "routing_key".to_owned(),
                source,
            })
    }
}
