//! SMTP without IO, shared by the submission server, the delivery client and the fuzzers.
//!
//! # Layout
//! Not built yet: the command parser, reply builder, DATA/BDAT readers and the client codec
//! arrive with the SMTP submission issue (#5). The crate exists now so that its boundary is
//! fixed: it depends on `kurir-core` only and never on a socket or a runtime.
