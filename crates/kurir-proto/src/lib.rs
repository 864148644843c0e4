//! Generated protobuf code for `proto/kurir/v1`, and its conversions to `kurir-core` types.
//!
//! # Layout
//! - [`v1`]: the prost messages of package `kurir.v1`, generated from `proto/kurir/v1/*.proto`
//!   and checked in as `src/gen/kurir.v1.rs` (a build needs no `protoc` and no build
//!   script). `QueuedMessage` is the value of a queue record, `Event` an outcome event.
//!   `tests/generated_is_fresh.rs` regenerates the code and fails when the checked-in copy is
//!   stale; `KURIR_REGENERATE_PROTO=1 cargo test -p kurir-proto --test generated_is_fresh`
//!   rewrites it. Never edit `src/gen/` by hand.
//! - [`convert`]: core ⇄ proto for ids, times, envelopes, recipients with their DSN
//!   parameters, outcomes and bounce classes. Encoding is infallible; decoding validates.
//! - [`queued`]: [`Queued`], a `QueuedMessage` with every field checked, in core types, and
//!   its `decode`/`encode_to_bytes`.
//! - [`event`]: builders and readers on [`v1::Event`] (outcome, ids, undecodable records).
//! - [`error`]: [`DecodeError`], which names the bad field of a record.

pub mod auth;
pub mod convert;
pub mod error;
pub mod event;
pub mod queued;

pub use error::DecodeError;
pub use queued::Queued;

/// Package `kurir.v1`: the queue record and the outcome events. Generated: see the crate docs.
#[rustfmt::skip]
#[allow(clippy::all, clippy::pedantic, missing_docs, rustdoc::all)]
pub mod v1 {
    include!("gen/kurir.v1.rs");

    /// The encoded `FileDescriptorSet` of every `.proto` file, for gRPC server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!("gen/kurir.v1.bin");
}
