//! The message model every kurir crate shares. No IO lives here.
//!
//! # Layout
//! - [`id`]: [`MessageId`], a sortable ULID rendered in `250 … queued as <id>` replies.
//! - [`address`]: [`Domain`] (IDNA-normalised) and [`Address`] (a mailbox of an SMTP path),
//!   parsed once at the edge so the rest of the code only sees valid values.
//! - [`envelope`]: [`Envelope`] (MAIL FROM with DSN `RET`/`ENVID`, `BODY`, `SMTPUTF8`) and its
//!   [`Recipient`]s (DSN `NOTIFY`/`ORCPT`), plus the xtext codec DSN parameters use.
//! - [`routing`]: [`RoutingKey`], the queue key: a recipient domain with an optional shard.
//! - [`outcome`]: what a delivery attempt ended in ([`Outcome`]) and how a bounce is
//!   classified ([`BounceClass`]).
//! - [`error`]: [`ErrorCode`], the one list of failures we report to clients, mapped once to
//!   SMTP replies (with enhanced status codes) and to gRPC status codes.

pub mod address;
pub mod envelope;
pub mod error;
pub mod id;
pub mod outcome;
pub mod routing;

pub use address::{Address, AddressError, Domain};
pub use envelope::{BodyType, Envelope, Notify, Orcpt, Recipient, Ret};
pub use error::{ErrorCode, GrpcCode, SmtpReply};
pub use id::MessageId;
pub use outcome::{BounceClass, Outcome};
pub use routing::RoutingKey;
