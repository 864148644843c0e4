//! Conversions between the generated protobuf types and `kurir-core` values.
//!
//! Encoding (core → proto) cannot fail and is written as `From`. Decoding (proto → core)
//! validates every field and returns a [`DecodeError`] naming the first bad one; it never
//! panics, whatever the record holds.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use kurir_core::{Address, MessageId};

use crate::DecodeError;
use crate::v1;

/// The length of an id on the wire: a ULID as a big-endian `u128`.
pub const ID_LEN: usize = 16;

/// A message (or event) id as stored in protobuf: 16 bytes, big-endian.
pub fn id_to_bytes(id: MessageId) -> Vec<u8> {
    id.to_u128().to_be_bytes().to_vec()
}

/// The id stored in `field`; anything but exactly 16 bytes is an error.
pub fn id_from_bytes(field: &str, bytes: &[u8]) -> Result<MessageId, DecodeError> {
    let bytes: [u8; ID_LEN] = bytes.try_into().map_err(|_| DecodeError::IdLength {
        field: field.to_owned(),
        len: bytes.len(),
    })?;
    Ok(MessageId::from_u128(u128::from_be_bytes(bytes)))
}

/// A time as stored in protobuf: milliseconds since the Unix epoch (negative before it),
/// saturating at the ends of `i64`.
pub fn time_to_unix_ms(time: SystemTime) -> i64 {
    match time.duration_since(UNIX_EPOCH) {
        Ok(after) => i64::try_from(after.as_millis()).unwrap_or(i64::MAX),
        Err(before) => i64::try_from(before.duration().as_millis()).map_or(i64::MIN, |ms| -ms),
    }
}

/// The time stored in `field` as Unix milliseconds; an error if the platform cannot
/// represent it.
pub fn time_from_unix_ms(field: &str, ms: i64) -> Result<SystemTime, DecodeError> {
    let offset = Duration::from_millis(ms.unsigned_abs());
    let time = if ms >= 0 {
        UNIX_EPOCH.checked_add(offset)
    } else {
        UNIX_EPOCH.checked_sub(offset)
    };
    time.ok_or_else(|| DecodeError::invalid(field, "time out of range"))
}

fn parse_address(field: &str, text: &str) -> Result<Address, DecodeError> {
    Address::parse(text).map_err(|source| DecodeError::Address {
        field: field.to_owned(),
        source,
    })
}

// ---- enums ----------------------------------------------------------------------------

impl From<kurir_core::Ret> for v1::Ret {
    fn from(ret: kurir_core::Ret) -> Self {
        match ret {
            kurir_core::Ret::Full => Self::Full,
            kurir_core::Ret::Headers => Self::Hdrs,
        }
    }
}

/// `RET=` from its protobuf value: unspecified is "not given".
fn ret_from_proto(field: &str, value: i32) -> Result<Option<kurir_core::Ret>, DecodeError> {
    match v1::Ret::try_from(value) {
        Ok(v1::Ret::Unspecified) => Ok(None),
        Ok(v1::Ret::Full) => Ok(Some(kurir_core::Ret::Full)),
        Ok(v1::Ret::Hdrs) => Ok(Some(kurir_core::Ret::Headers)),
        Err(_) => Err(DecodeError::unknown_enum(field, value)),
    }
}

impl From<kurir_core::BodyType> for v1::BodyType {
    fn from(body: kurir_core::BodyType) -> Self {
        match body {
            kurir_core::BodyType::SevenBit => Self::SevenBit,
            kurir_core::BodyType::EightBitMime => Self::EightBitMime,
            kurir_core::BodyType::BinaryMime => Self::BinaryMime,
        }
    }
}

/// `BODY=` from its protobuf value: unspecified is 7BIT, the SMTP default.
fn body_type_from_proto(field: &str, value: i32) -> Result<kurir_core::BodyType, DecodeError> {
    match v1::BodyType::try_from(value) {
        Ok(v1::BodyType::Unspecified | v1::BodyType::SevenBit) => {
            Ok(kurir_core::BodyType::SevenBit)
        }
        Ok(v1::BodyType::EightBitMime) => Ok(kurir_core::BodyType::EightBitMime),
        Ok(v1::BodyType::BinaryMime) => Ok(kurir_core::BodyType::BinaryMime),
        Err(_) => Err(DecodeError::unknown_enum(field, value)),
    }
}

impl From<kurir_core::BounceClass> for v1::BounceClass {
    fn from(class: kurir_core::BounceClass) -> Self {
        use kurir_core::BounceClass as C;
        match class {
            C::BadMailbox => Self::BadMailbox,
            C::BadDomain => Self::BadDomain,
            C::Policy => Self::Policy,
            C::Spam => Self::Spam,
            C::Quota => Self::Quota,
            C::TooLarge => Self::TooLarge,
            C::Content => Self::Content,
            C::Protocol => Self::Protocol,
            C::Routing => Self::Routing,
            C::Expired => Self::Expired,
            C::Other => Self::Other,
        }
    }
}

/// The bounce class stored in `field`; unspecified and unknown values are errors.
pub fn bounce_class_from_proto(
    field: &str,
    value: i32,
) -> Result<kurir_core::BounceClass, DecodeError> {
    use kurir_core::BounceClass as C;
    Ok(
        match v1::BounceClass::try_from(value)
            .map_err(|_| DecodeError::unknown_enum(field, value))?
        {
            v1::BounceClass::Unspecified => return Err(DecodeError::missing(field)),
            v1::BounceClass::BadMailbox => C::BadMailbox,
            v1::BounceClass::BadDomain => C::BadDomain,
            v1::BounceClass::Policy => C::Policy,
            v1::BounceClass::Spam => C::Spam,
            v1::BounceClass::Quota => C::Quota,
            v1::BounceClass::TooLarge => C::TooLarge,
            v1::BounceClass::Content => C::Content,
            v1::BounceClass::Protocol => C::Protocol,
            v1::BounceClass::Routing => C::Routing,
            v1::BounceClass::Expired => C::Expired,
            v1::BounceClass::Other => C::Other,
        },
    )
}

/// An outcome as the pair of protobuf enums that carry it: the bounce class is
/// unspecified unless the outcome is a bounce.
pub fn outcome_to_proto(outcome: kurir_core::Outcome) -> (v1::Outcome, v1::BounceClass) {
    use kurir_core::Outcome as O;
    match outcome {
        O::Delivered => (v1::Outcome::Delivered, v1::BounceClass::Unspecified),
        O::Deferred => (v1::Outcome::Deferred, v1::BounceClass::Unspecified),
        O::Bounced(class) => (v1::Outcome::Bounced, class.into()),
        O::Expired => (v1::Outcome::Expired, v1::BounceClass::Unspecified),
        O::Suppressed => (v1::Outcome::Suppressed, v1::BounceClass::Unspecified),
    }
}

/// The outcome stored in an event's `outcome` and `bounce_class` fields. `None` for
/// `OUTCOME_UNDECODABLE`, which is no outcome of a recipient; unspecified and unknown values
/// are errors, and so is a bounce without its class.
pub fn outcome_from_proto(
    outcome: i32,
    bounce_class: i32,
) -> Result<Option<kurir_core::Outcome>, DecodeError> {
    use kurir_core::Outcome as O;
    Ok(Some(
        match v1::Outcome::try_from(outcome)
            .map_err(|_| DecodeError::unknown_enum("outcome", outcome))?
        {
            v1::Outcome::Unspecified => return Err(DecodeError::missing("outcome")),
            v1::Outcome::Undecodable => return Ok(None),
            v1::Outcome::Delivered => O::Delivered,
            v1::Outcome::Deferred => O::Deferred,
            v1::Outcome::Bounced => {
                O::Bounced(bounce_class_from_proto("bounce_class", bounce_class)?)
            }
            v1::Outcome::Expired => O::Expired,
            v1::Outcome::Suppressed => O::Suppressed,
        },
    ))
}

// ---- DSN parameters and recipients ------------------------------------------------------

impl From<kurir_core::Notify> for v1::Notify {
    fn from(n: kurir_core::Notify) -> Self {
        Self {
            success: n.success,
            failure: n.failure,
            delay: n.delay,
        }
    }
}

impl From<&v1::Notify> for kurir_core::Notify {
    fn from(n: &v1::Notify) -> Self {
        Self {
            success: n.success,
            failure: n.failure,
            delay: n.delay,
        }
    }
}

impl From<&kurir_core::Orcpt> for v1::Orcpt {
    fn from(o: &kurir_core::Orcpt) -> Self {
        Self {
            addr_type: o.addr_type.clone(),
            address: o.address.clone(),
        }
    }
}

impl v1::Orcpt {
    /// The core value; the address type must be a non-empty atom of letters, digits and `-`
    /// (RFC 3461 §4.2), since it is sent on as `ORCPT=type;address`.
    pub fn to_core(&self) -> Result<kurir_core::Orcpt, DecodeError> {
        let valid_type = !self.addr_type.is_empty()
            && self
                .addr_type
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-');
        if !valid_type {
            return Err(DecodeError::invalid(
                "addr_type",
                "not an address type (letters, digits and '-')",
            ));
        }
        Ok(kurir_core::Orcpt {
            addr_type: self.addr_type.clone(),
            address: self.address.clone(),
        })
    }
}

impl From<&kurir_core::Recipient> for v1::Recipient {
    fn from(r: &kurir_core::Recipient) -> Self {
        Self {
            address: r.address.to_string(),
            notify: r.notify.map(Into::into),
            orcpt: r.orcpt.as_ref().map(Into::into),
        }
    }
}

impl v1::Recipient {
    /// The core recipient: a valid address, NOTIFY absent (not given) or present (all flags
    /// false is `NEVER`), a valid ORCPT if present.
    pub fn to_core(&self) -> Result<kurir_core::Recipient, DecodeError> {
        Ok(kurir_core::Recipient {
            address: parse_address("address", &self.address)?,
            notify: self.notify.as_ref().map(Into::into),
            orcpt: self
                .orcpt
                .as_ref()
                .map(|o| o.to_core().map_err(|e| e.within("orcpt")))
                .transpose()?,
        })
    }
}

// ---- envelope ---------------------------------------------------------------------------

/// The envelope without its recipients (they travel beside it, see
/// [`envelope_to_proto`]).
impl From<&kurir_core::Envelope> for v1::Envelope {
    fn from(e: &kurir_core::Envelope) -> Self {
        Self {
            sender: e
                .sender
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default(),
            ret: e.ret.map_or(v1::Ret::Unspecified, Into::into).into(),
            envid: e.envid.clone(),
            body_type: v1::BodyType::from(e.body).into(),
            smtputf8: e.smtputf8,
        }
    }
}

/// An envelope as stored in a `QueuedMessage`: the envelope fields and the recipients.
pub fn envelope_to_proto(envelope: &kurir_core::Envelope) -> (v1::Envelope, Vec<v1::Recipient>) {
    (
        envelope.into(),
        envelope.recipients.iter().map(Into::into).collect(),
    )
}

impl v1::Envelope {
    /// The core envelope with `recipients` (as stored in `QueuedMessage.recipients`). Errors
    /// name the field as a path in `QueuedMessage` (`envelope.sender`,
    /// `recipients[1].address`).
    pub fn to_core(
        &self,
        recipients: &[v1::Recipient],
    ) -> Result<kurir_core::Envelope, DecodeError> {
        let sender = match self.sender.as_str() {
            "" => None,
            text => Some(parse_address("envelope.sender", text)?),
        };
        let recipients = recipients
            .iter()
            .enumerate()
            .map(|(i, r)| {
                r.to_core()
                    .map_err(|e| e.within(format_args!("recipients[{i}]")))
            })
            .collect::<Result<_, _>>()?;
        Ok(kurir_core::Envelope {
            sender,
            ret: ret_from_proto("envelope.ret", self.ret)?,
            envid: self.envid.clone(),
            body: body_type_from_proto("envelope.body_type", self.body_type)?,
            smtputf8: self.smtputf8,
            recipients,
        })
    }
}
