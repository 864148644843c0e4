//! The submission role: SMTP (`smtp/`, one file per verb) and gRPC (`grpc/`, later) listeners
//! that validate and publish mail to the queue through one path ([`publish`]).
//!
//! # Layout
//! - [`publish`]: [`publish::Publisher`], the one path from an accepted message to the
//!   queue (normalise, split by routing key, publish, acknowledge).
//! - [`smtp`]: the SMTP server: listeners, TLS, sessions, policy and limits.
//! - [`grpc`]: the gRPC API: submission, suppression, admin; API keys; health, reflection.

pub mod grpc;
pub mod publish;
pub mod smtp;
