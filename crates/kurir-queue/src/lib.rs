//! The durable, sharded queue between submission and delivery (`shared/DESIGN.md` §3).
//!
//! # Layout
//! Not built yet: the `Queue` trait, its Kafka backend (`kafka/`, rdkafka) and its embedded
//! backend (`embedded/`) arrive with the queue issue (#3).
