//! Delivery status notifications (RFC 3464 `multipart/report; report-type=delivery-status`,
//! RFC 3461 parameters), built with `mail-builder` and queued like any message.
//!
//! CONTRACT (owned by the bounce helper):
//! - [`build`] returns `None` when no DSN is due: null sender, or no recipient whose
//!   NOTIFY asks for this action (effective NOTIFY: absent = FAILURE,DELAY; `NEVER` = none;
//!   `Failed`/`Expired` need FAILURE, `Delayed` DELAY, `Delivered` SUCCESS).
//! - The DSN: `From: Mail Delivery System <MAILER-DAEMON@{reporting_mta}>`, `To:` the
//!   envelope sender, `Subject` saying what happened, `Auto-Submitted: auto-replied`, a
//!   Message-ID made of the DSN's id (`<id@reporting_mta>`) and a Date; part 1
//!   text/plain for humans (each recipient with the remote reply); part 2
//!   `message/delivery-status` with per-message fields (`Reporting-MTA: dns; …`,
//!   `Original-Envelope-Id` when ENVID was given, `Arrival-Date`)
//!   and per-recipient fields (`Original-Recipient` from ORCPT, `Final-Recipient: rfc822;`,
//!   `Action`, `Status`, `Remote-MTA: dns; host` and `Diagnostic-Code: smtp; <reply>` when
//!   there was a reply, `Last-Attempt-Date`); part 3 the returned message: `RET=FULL` →
//!   `message/rfc822` with the whole message, otherwise `text/rfc822-headers` with its
//!   header only (RFC 3462).
//! - [`dsn_message`] wraps it as a [`Queued`] to the sender with the id it is given (the
//!   engine derives it from the original's, so a replayed record's DSN gets the same id
//!   again), null sender, tenant and tags of the original, routing key of the sender's
//!   domain, attempts 0.
//!
//! Details the contract leaves open:
//! - Only the recipients whose NOTIFY asks for their action are reported; the others are
//!   left out of the DSN.
//! - RFC 3461 §4.3 asks for the whole message only in a DSN that reports a failure, so a
//!   delay or success report returns the header even with `RET=FULL`.
//! - A `status` that is not a valid RFC 3463 code is replaced: by the reply's status when
//!   there was a reply, else `4.4.7` for an expired message and `5.0.0` / `4.0.0` /
//!   `2.0.0` by action.
//! - Values that come from outside (ORCPT, ENVID, reply texts) have control characters
//!   replaced, so they cannot add fields, and are folded to keep lines short.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use kurir_core::{Address, BodyType, Envelope, MessageId, Recipient, Ret, RoutingKey};
use kurir_proto::Queued;
use mail_builder::MessageBuilder;
use mail_builder::headers::address::Address as MailAddress;
use mail_builder::headers::content_type::ContentType;
use mail_builder::headers::date::Date;
use mail_builder::headers::message_id::MessageId as MailMessageId;
use mail_builder::headers::raw::Raw;
use mail_builder::mime::{BodyPart, MimePart};

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

impl DsnAction {
    /// The `Action:` value (RFC 3464 §2.3.3): an expired message has failed.
    fn field(self) -> &'static str {
        match self {
            Self::Failed | Self::Expired => "failed",
            Self::Delayed => "delayed",
            Self::Delivered => "delivered",
        }
    }

    fn is_failure(self) -> bool {
        matches!(self, Self::Failed | Self::Expired)
    }

    /// Whether a recipient's NOTIFY asks for a DSN of this action.
    pub fn is_due(self, recipient: &Recipient) -> bool {
        let notify = recipient.effective_notify();
        match self {
            Self::Failed | Self::Expired => notify.failure,
            Self::Delayed => notify.delay,
            Self::Delivered => notify.success,
        }
    }

    /// The status when the given one is unusable and there was no reply.
    fn default_status(self) -> &'static str {
        match self {
            Self::Failed => "5.0.0",
            Self::Expired => "4.4.7",
            Self::Delayed => "4.0.0",
            Self::Delivered => "2.0.0",
        }
    }
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

impl DsnRecipient<'_> {
    /// The `Status:` value: the given one when it is a valid RFC 3463 code.
    fn status(&self) -> Cow<'_, str> {
        if is_status_code(&self.status) {
            Cow::Borrowed(&self.status)
        } else if let Some(reply) = self.reply.as_ref().filter(|r| is_status_code(&r.status())) {
            Cow::Owned(reply.status())
        } else {
            Cow::Borrowed(self.action.default_status())
        }
    }
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

/// What a DSN reports overall, for its subject and opening words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Failure,
    Delay,
    Success,
}

impl Kind {
    /// A failure outweighs a delay, which outweighs a success.
    fn of(recipients: &[&DsnRecipient<'_>]) -> Self {
        let has = |f: fn(DsnAction) -> bool| recipients.iter().any(|r| f(r.action));
        if has(DsnAction::is_failure) {
            Self::Failure
        } else if has(|a| a == DsnAction::Delayed) {
            Self::Delay
        } else {
            Self::Success
        }
    }

    fn subject(self) -> &'static str {
        match self {
            Self::Failure => "Undelivered Mail Returned to Sender",
            Self::Delay => "Delayed Mail (still being retried)",
            Self::Success => "Successful Mail Delivery Report",
        }
    }

    fn opening(self) -> &'static str {
        match self {
            Self::Failure => {
                "Your message could not be delivered to one or more of its recipients.\r\n\
                 It will not be retried. The details follow."
            }
            Self::Delay => {
                "Your message has not been delivered yet to one or more of its recipients.\r\n\
                 Delivery is still being retried: you do not need to send it again."
            }
            Self::Success => "Your message was delivered to the recipients listed below.",
        }
    }
}

/// The DSN message (RFC 5322 bytes, CRLF), or `None` when none is due.
pub fn build(report: &DsnReport<'_>) -> Option<Vec<u8>> {
    build_with_id(report, MessageId::new())
}

/// The DSN as a queued message with id `id` to the original sender, or `None` when none
/// is due.
pub fn dsn_message(report: &DsnReport<'_>, id: MessageId) -> Option<Queued> {
    let sender = report.message.envelope.sender.as_ref()?;
    let dsn = build_with_id(report, id)?;
    let body = if report.message.envelope.body == BodyType::BinaryMime && returns_full(report) {
        BodyType::BinaryMime
    } else if dsn.is_ascii() {
        BodyType::SevenBit
    } else {
        BodyType::EightBitMime
    };
    let mut envelope = Envelope::new(None);
    envelope.body = body;
    envelope.smtputf8 = sender.needs_smtputf8();
    envelope.recipients.push(Recipient::new(sender.clone()));
    Some(Queued {
        id,
        tenant: report.message.tenant.clone(),
        routing_key: RoutingKey::new(sender.domain().clone()),
        envelope,
        attempts: 0,
        first_seen: report.now,
        not_before: None,
        trace: report.message.trace.clone(),
        tags: report.message.tags.clone(),
        body: Bytes::from(dsn),
    })
}

fn build_with_id(report: &DsnReport<'_>, id: MessageId) -> Option<Vec<u8>> {
    let sender = report.message.envelope.sender.as_ref()?;
    let due: Vec<&DsnRecipient<'_>> = report
        .recipients
        .iter()
        .filter(|r| r.action.is_due(r.recipient))
        .collect();
    if due.is_empty() {
        return None;
    }
    let kind = Kind::of(&due);
    let mta = report.reporting_mta;

    let report_part = MimePart::new(
        ContentType::new("multipart/report").attribute("report-type", "delivery-status"),
        vec![
            MimePart::new("text/plain", human_text(report, kind, &due)),
            delivery_status_part(report, &due),
            returned_part(report),
        ],
    );
    let built = MessageBuilder::new()
        .from(MailAddress::new_address(
            Some("Mail Delivery System"),
            format!("MAILER-DAEMON@{mta}"),
        ))
        .to(MailAddress::new_address(None::<&str>, sender.to_string()))
        .subject(kind.subject())
        .date(Date::new(unix_secs(report.now)))
        .message_id(MailMessageId::new(format!("{id}@{mta}")))
        .header("Auto-Submitted", Raw::new("auto-replied"))
        .body(report_part)
        .write_to_vec();
    match built {
        Ok(bytes) => Some(bytes),
        Err(error) => {
            // Writing to a Vec does not fail; this is for completeness.
            tracing::error!(message_id = %report.message.id, %error, "could not build a DSN");
            None
        }
    }
}

/// Part 1: the report in words.
fn human_text(report: &DsnReport<'_>, kind: Kind, due: &[&DsnRecipient<'_>]) -> String {
    let mut text = format!(
        "This is the mail delivery system at {}.\r\n\r\n{}\r\n",
        report.reporting_mta,
        kind.opening()
    );
    for r in due {
        let what = match r.action {
            DsnAction::Failed => "delivery failed",
            DsnAction::Expired => "delivery failed: the message expired in the queue",
            DsnAction::Delayed => "delivery delayed, still being retried",
            DsnAction::Delivered => "delivered",
        };
        let _ = write!(text, "\r\n<{}>: {what}\r\n", r.recipient.address);
        match (&r.reply, &r.remote_mta) {
            (Some(reply), Some(host)) => {
                let _ = write!(
                    text,
                    "    {} said: {}\r\n",
                    clean(host),
                    clean(&reply.to_string())
                );
            }
            (Some(reply), None) => {
                let _ = write!(text, "    The reply was: {}\r\n", clean(&reply.to_string()));
            }
            (None, _) => {}
        }
        if let Some(reason) = &r.reason {
            let _ = write!(text, "    {}\r\n", clean(reason));
        }
    }
    if kind == Kind::Failure {
        text.push_str(if returns_full(report) {
            "\r\nYour message is attached.\r\n"
        } else {
            "\r\nThe header of your message is attached.\r\n"
        });
    }
    text
}

/// Part 2: `message/delivery-status` (RFC 3464 §2): the per-message block, then one block
/// per recipient, each after an empty line.
fn delivery_status_part<'x>(report: &DsnReport<'_>, due: &[&DsnRecipient<'_>]) -> MimePart<'x> {
    let envelope = &report.message.envelope;
    let now = rfc5322_date(report.now);
    let mut fields = String::new();
    field(
        &mut fields,
        "Reporting-MTA",
        &format!("dns; {}", report.reporting_mta),
    );
    if let Some(envid) = &envelope.envid {
        field(&mut fields, "Original-Envelope-Id", envid);
    }
    field(
        &mut fields,
        "Arrival-Date",
        &rfc5322_date(report.message.first_seen),
    );
    for r in due {
        fields.push_str("\r\n");
        if let Some(orcpt) = &r.recipient.orcpt {
            let value = format!("{}; {}", orcpt.addr_type, orcpt.address);
            field(&mut fields, "Original-Recipient", &value);
        }
        let final_recipient = address_field(&r.recipient.address);
        field(&mut fields, "Final-Recipient", &final_recipient);
        field(&mut fields, "Action", r.action.field());
        field(&mut fields, "Status", &r.status());
        if let Some(host) = &r.remote_mta {
            field(&mut fields, "Remote-MTA", &format!("dns; {host}"));
        }
        if let Some(reply) = &r.reply {
            field(&mut fields, "Diagnostic-Code", &format!("smtp; {reply}"));
        }
        field(&mut fields, "Last-Attempt-Date", &now);
    }
    // A non-ASCII address needs the RFC 6533 form.
    let (content_type, encoding) = if fields.is_ascii() {
        ("message/delivery-status", "7bit")
    } else {
        ("message/global-delivery-status", "8bit")
    };
    MimePart::new(content_type, BodyPart::Binary(fields.into_bytes().into()))
        .transfer_encoding(encoding)
}

/// Part 3: the whole message (`RET=FULL`) or its header.
fn returned_part<'x>(report: &DsnReport<'_>) -> MimePart<'x> {
    let body = &report.message.body;
    let (content_type, returned): (&str, &[u8]) = if returns_full(report) {
        ("message/rfc822", body)
    } else {
        ("text/rfc822-headers", header_section(body))
    };
    let encoding = if report.message.envelope.body == BodyType::BinaryMime {
        "binary"
    } else if returned.is_ascii() {
        "7bit"
    } else {
        "8bit"
    };
    MimePart::new(content_type, BodyPart::Binary(returned.to_vec().into()))
        .transfer_encoding(encoding)
}

/// Whether the whole message goes back: `RET=FULL` in a DSN that reports a failure.
fn returns_full(report: &DsnReport<'_>) -> bool {
    report.message.envelope.ret == Some(Ret::Full)
        && report
            .recipients
            .iter()
            .any(|r| r.action.is_failure() && r.action.is_due(r.recipient))
}

/// The header section of a message: up to and including the line break before the first
/// empty line (the whole message when it has no body).
fn header_section(message: &[u8]) -> &[u8] {
    if message.starts_with(b"\r\n") || message.starts_with(b"\n") {
        return &[];
    }
    let crlf = message
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| i + 2);
    let lf = message.windows(2).position(|w| w == b"\n\n").map(|i| i + 1);
    match (crlf, lf) {
        (Some(a), Some(b)) => &message[..a.min(b)],
        (Some(end), None) | (None, Some(end)) => &message[..end],
        (None, None) => message,
    }
}

/// `Final-Recipient`'s value: `rfc822;` for an ASCII address, `utf-8;` (RFC 6533)
/// otherwise.
fn address_field(address: &Address) -> String {
    let address = address.to_string();
    if address.is_ascii() {
        format!("rfc822; {address}")
    } else {
        format!("utf-8; {address}")
    }
}

/// Appends `name: value` CRLF, the value cleaned of control characters, capped and folded.
fn field(out: &mut String, name: &str, value: &str) {
    const MAX_VALUE: usize = 900;
    const LINE: usize = 78;
    let mut value = clean(value).into_owned();
    if value.len() > MAX_VALUE {
        let mut end = MAX_VALUE;
        while !value.is_char_boundary(end) {
            end -= 1;
        }
        value.truncate(end);
    }
    out.push_str(name);
    out.push(':');
    // Folding turns a space into CRLF + space, which unfolds back to the same value.
    let mut line_len = name.len() + 1;
    for (i, word) in value.split(' ').enumerate() {
        if i > 0 && !word.is_empty() && line_len + 1 + word.len() > LINE {
            out.push_str("\r\n ");
            line_len = 1;
        } else {
            out.push(' ');
            line_len += 1;
        }
        out.push_str(word);
        line_len += word.len();
    }
    out.push_str("\r\n");
}

/// Control characters (CR and LF among them) replaced by spaces.
fn clean(value: &str) -> Cow<'_, str> {
    if value.chars().any(char::is_control) {
        Cow::Owned(
            value
                .chars()
                .map(|c| if c.is_control() { ' ' } else { c })
                .collect(),
        )
    } else {
        Cow::Borrowed(value)
    }
}

/// Whether `s` is an RFC 3463 status code: class 2, 4 or 5, subject and detail of one to
/// three digits.
fn is_status_code(s: &str) -> bool {
    let parts: Vec<&str> = s.split('.').collect();
    matches!(parts.as_slice(), [class, subject, detail]
        if matches!(*class, "2" | "4" | "5")
            && [subject, detail]
                .iter()
                .all(|p| (1..=3).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit())))
}

fn unix_secs(time: SystemTime) -> i64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// An RFC 5322 date-time in UTC.
fn rfc5322_date(time: SystemTime) -> String {
    Date::new(unix_secs(time)).to_rfc822()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_section_ends_before_the_empty_line() {
        assert_eq!(
            header_section(b"A: 1\r\nB: 2\r\n\r\nbody\r\n"),
            b"A: 1\r\nB: 2\r\n"
        );
        assert_eq!(header_section(b"A: 1\nB: 2\n\nbody\n"), b"A: 1\nB: 2\n");
        assert_eq!(header_section(b"A: 1\r\n"), b"A: 1\r\n");
        assert_eq!(header_section(b"\r\nbody"), b"");
    }

    #[test]
    fn fields_are_cleaned_and_folded() {
        let mut out = String::new();
        field(&mut out, "Original-Envelope-Id", "abc\r\nBcc: x@evil.test");
        assert_eq!(out, "Original-Envelope-Id: abc  Bcc: x@evil.test\r\n");

        let mut out = String::new();
        let long = "word ".repeat(40);
        field(&mut out, "Diagnostic-Code", &format!("smtp; 550 {long}"));
        assert!(out.ends_with("\r\n"));
        for line in out.trim_end().split("\r\n") {
            assert!(line.len() <= 78, "{line:?}");
        }
        assert!(
            out.split("\r\n")
                .skip(1)
                .all(|l| l.is_empty() || l.starts_with(' '))
        );
    }

    #[test]
    fn status_codes() {
        assert!(is_status_code("5.1.1"));
        assert!(is_status_code("4.4.7"));
        assert!(is_status_code("5.7.606"));
        assert!(!is_status_code(""));
        assert!(!is_status_code("5.1"));
        assert!(!is_status_code("3.1.1"));
        assert!(!is_status_code("5.1.1234"));
    }
}
