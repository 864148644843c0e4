//! The submission role: SMTP (`smtp/`, one file per verb) and gRPC (`grpc/`) listeners that
//! validate, normalise, DKIM-sign (`dkim.rs`) and publish (`publish.rs`) mail to the queue.
//!
//! # Layout
//! Not built yet: arrives with the SMTP submission issue (#5) and the gRPC issue (#7).
