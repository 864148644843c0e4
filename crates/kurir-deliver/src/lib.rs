//! The delivery role: `consume.rs` (partitions → ready queues), `route.rs` (MX → site),
//! `ready_queue.rs`, `throttle.rs`, `pool.rs`, `client/`, `outcome.rs`, `retry.rs`, `dsn.rs`.
//!
//! # Layout
//! Not built yet: arrives with the delivery issue (#6).
