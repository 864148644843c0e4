//! Generated protobuf and gRPC code for `proto/kurir/v1`, and its conversions to
//! `kurir-core` types.
//!
//! # Layout
//! Not built yet: `QueuedMessage` and the event record arrive with the queue issue (#3),
//! the submission and admin services with the gRPC issue (#7). Generated code will be checked
//! in, with a test that fails when it is stale.
