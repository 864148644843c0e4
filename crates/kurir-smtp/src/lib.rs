//! SMTP without IO, shared by the submission server and the fuzzers. (The delivery client
//! in `kurir-deliver` reads replies with `smtp-proto` directly: it needs none of the
//! server-side validation here.)
//!
//! The command grammar comes from Stalwart's `smtp-proto` (a well-kept parser used in
//! production by Stalwart Mail Server, fuzzed upstream); this crate turns its output into
//! kurir's validated types (`kurir_core::Address`, `Envelope` parameters) and adds what a
//! hardened server needs around it: bounded line reading, replies with enhanced status
//! codes, and DATA/BDAT readers that enforce size limits and refuse smuggling attempts.
//!
//! # Layout
//! - [`line`](mod@line): [`LineReader`], CRLF-terminated command lines from a byte stream, bounded.
//! - [`command`]: [`Command`] and [`parse_command`]: the verb grammar from `smtp-proto`.
//! - `params`: MAIL/RCPT paths and ESMTP parameters, checked beyond `smtp-proto`
//!   (allow-list, duplicates, strict xtext, mailboxes validated by kurir-core).
//! - [`reply`]: [`Reply`], single- and multi-line replies with enhanced status codes.
//! - [`data`]: [`DataReader`] (DATA: dot-unstuffing, end only on `CRLF.CRLF`, bare CR/LF
//!   refused) and [`BdatReader`] (CHUNKING).

pub mod command;
pub mod data;
pub mod line;
mod params;
pub mod reply;

pub use command::{AuthMechanism, Command, CommandError, MailParams, RcptParams, parse_command};
pub use data::{BdatReader, DataError, DataProgress, DataReader};
pub use line::{LineError, LineReader};
pub use reply::Reply;
