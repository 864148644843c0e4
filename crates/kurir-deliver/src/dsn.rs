//! Delivery status notifications (RFC 3464 `multipart/report; report-type=delivery-status`,
//! RFC 3461 parameters), built with `mail-builder` and queued like any message.
//!
//! CONTRACT (owned by the bounce helper):
//! - [`build`] returns `None` when no DSN is due: null sender, or no recipient whose
//!   NOTIFY asks for this action (effective NOTIFY: absent = FAILURE,DELAY; `NEVER` = none;
//!   `Failed`/`Expired` need FAILURE, `Delayed` DELAY, `Delivered` SUCCESS).
//! - The DSN: `From: Mail Delivery System <MAILER-DAEMON@{reporting_mta}>`, `To:` the
//!   envelope sender, `Subject` saying what happened, `Auto-Submitted: auto-replied`, a
//!   fresh Message-ID and Date; part 1 text/plain for humans (each recipient with the
//!   remote reply); part 2 `message/delivery-status` with per-message fields
//!   (`Reporting-MTA: dns; …`, `Original-Envelope-Id` when ENVID was given, `Arrival-Date`)
//!   and per-recipient fields (`Original-Recipient` from ORCPT, `Final-Recipient: rfc822;`,
//!   `Action`, `Status`, `Remote-MTA: dns; host` and `Diagnostic-Code: smtp; <reply>` when
//!   there was a reply, `Last-Attempt-Date`); part 3 the returned message: `RET=FULL` →
//!   `message/rfc822` with the whole message, otherwise `text/rfc822-headers` with its
//!   header only (RFC 3462).
//! - [`dsn_message`] wraps it as a [`Queued`] to the sender: new id, null sender, tenant
//!   and tags of the original, routing key of the sender's domain, attempts 0.

use std::time::SystemTime;

use kurir_core::Recipient;
use kurir_proto::Queued;

use crate::reply::RemoteReply;

/// The `Action:` of a per-recipient DSN block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DsnAction {
    Failed,
    /// Failed because the message reached its maximum age.
    Expired,
    Delayed,
    Delivered,
}

/// One recipient reported in a DSN.
#[derive(Debug, Clone)]
pub struct DsnRecipient<'a> {
    pub recipient: &'a Recipient,
    pub action: DsnAction,
    /// `Status:` (RFC 3463), e.g. `5.1.1`.
    pub status: String,
    /// The host that replied, when one did.
    pub remote_mta: Option<String>,
    /// The reply, when there was one.
    pub reply: Option<RemoteReply>,
    /// Why, in words, when there was no reply (e.g. "null MX", "expired after 3 days").
    pub reason: Option<String>,
}

/// A DSN's inputs.
#[derive(Debug, Clone)]
pub struct DsnReport<'a> {
    /// Our host name (`Reporting-MTA`, `MAILER-DAEMON@`).
    pub reporting_mta: &'a str,
    pub message: &'a Queued,
    pub recipients: Vec<DsnRecipient<'a>>,
    pub now: SystemTime,
}

/// The DSN message (RFC 5322 bytes, CRLF), or `None` when none is due.
pub fn build(report: &DsnReport<'_>) -> Option<Vec<u8>> {
    let _ = report;
    None
}

/// The DSN as a queued message to the original sender, or `None` when none is due.
pub fn dsn_message(report: &DsnReport<'_>) -> Option<Queued> {
    let _ = report;
    None
}
