//! End-to-end delivery scenarios, one per file, each on both backends (embedded queue and
//! state; Kafka and Redis). See `harness.rs`.

mod harness;

mod delivered;
