//! Why a protobuf record could not be turned into kurir-core values.

use std::fmt;

use kurir_core::AddressError;
use kurir_core::routing::RoutingKeyError;

/// A record that is not valid protobuf, or whose fields do not hold valid values. Every
/// variant but [`DecodeError::Protobuf`] names the field, as a path in the protobuf message
/// (`recipients[2].address`), so a poison record in the queue can be diagnosed from the
/// event it produces.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The bytes are not an encoding of the expected protobuf message.
    #[error("not a valid {message} record: {source}")]
    Protobuf {
        /// The protobuf message that was expected, e.g. `kurir.v1.QueuedMessage`.
        message: &'static str,
        source: prost::DecodeError,
    },
    /// A required field is absent (or empty).
    #[error("{field}: missing")]
    Missing { field: String },
    /// An id field does not hold the 16 bytes of a ULID.
    #[error("{field}: an id is 16 bytes, got {len}")]
    IdLength { field: String, len: usize },
    /// An address field holds no valid mailbox.
    #[error("{field}: invalid address: {source}")]
    Address { field: String, source: AddressError },
    /// The routing key field holds no valid routing key.
    #[error("{field}: invalid routing key: {source}")]
    RoutingKey {
        field: String,
        source: RoutingKeyError,
    },
    /// An enum field holds a value this version does not know (or `_UNSPECIFIED` where a
    /// value is needed).
    #[error("{field}: unknown enum value {value}")]
    UnknownEnum { field: String, value: i32 },
    /// A field holds a value outside its documented range.
    #[error("{field}: {reason}")]
    Invalid { field: String, reason: &'static str },
}

impl DecodeError {
    /// The path of the offending field, if the bytes were protobuf at all.
    pub fn field(&self) -> Option<&str> {
        match self {
            Self::Protobuf { .. } => None,
            Self::Missing { field }
            | Self::IdLength { field, .. }
            | Self::Address { field, .. }
            | Self::RoutingKey { field, .. }
            | Self::UnknownEnum { field, .. }
            | Self::Invalid { field, .. } => Some(field),
        }
    }

    /// The same error for a field nested in `parent` (`address` in `recipients[2]` becomes
    /// `recipients[2].address`).
    pub(crate) fn within(mut self, parent: impl fmt::Display) -> Self {
        match &mut self {
            Self::Protobuf { .. } => {}
            Self::Missing { field }
            | Self::IdLength { field, .. }
            | Self::Address { field, .. }
            | Self::RoutingKey { field, .. }
            | Self::UnknownEnum { field, .. }
            | Self::Invalid { field, .. } => *field = format!("{parent}.{field}"),
        }
        self
    }

    pub(crate) fn missing(field: &str) -> Self {
        Self::Missing {
            field: field.to_owned(),
        }
    }

    pub(crate) fn unknown_enum(field: &str, value: i32) -> Self {
        Self::UnknownEnum {
            field: field.to_owned(),
            value,
        }
    }

    pub(crate) fn invalid(field: &str, reason: &'static str) -> Self {
        Self::Invalid {
            field: field.to_owned(),
            reason,
        }
    }
}
