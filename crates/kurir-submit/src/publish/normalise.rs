//! The message as it is queued: a `Received` trace field on top (SMTP only), `Message-ID`
//! and `Date` added when the client left them out, every other byte untouched (DKIM
//! signatures made by the client must still verify).
//!
//! - `Received` is prepended (RFC 5321 §4.4: trace fields go on top, newest first), folded
//!   so that no line reaches 78 characters. Client-supplied text in it (the HELO name) is
//!   made safe first: a CR or LF there would inject header fields.
//! - `Message-ID` and `Date` go at the end of the header block, like Postfix's cleanup
//!   does, so they never split a block of trace fields.
//! - All times are the message id's time (the acceptance time, millisecond ULID), so the
//!   `Received` date, the `Date` field and the record's first-seen time agree, and the
//!   output is a pure function of its inputs.

use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use kurir_core::MessageId;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc2822;

use super::headers;
use super::{PublishConfig, ReceivedFrom, Submission};

/// Lines of the `Received` field stay shorter than this (RFC 5322 §2.1.1 "SHOULD").
const MAX_LINE: usize = 78;

/// The queued message as pieces whose concatenation is the message: slices of the submitted
/// body and the fields added around them. The record encoder writes the pieces straight
/// into each record, so the message is not copied once more to join them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Normalised {
    pieces: Vec<Bytes>,
}

impl Normalised {
    /// Length of the message in bytes.
    pub fn len(&self) -> usize {
        self.pieces.iter().map(Bytes::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn pieces(&self) -> &[Bytes] {
        &self.pieces
    }

    /// The message in one buffer (the submitted one when nothing was added).
    pub fn to_bytes(&self) -> Bytes {
        match &self.pieces[..] {
            [] => Bytes::new(),
            [one] => one.clone(),
            pieces => Bytes::from(pieces.concat()),
        }
    }
}

/// See the module docs.
pub(super) fn normalise(
    config: &PublishConfig,
    id: MessageId,
    submission: &Submission,
) -> Normalised {
    let message = &submission.body;
    let block = headers::scan(message);
    let date = rfc5322_date(accepted_at(id));
    let mut added = Vec::new();
    if !block.has_message_id {
        added.push(format!("Message-ID: <{id}@{}>", config.hostname));
    }
    if !block.has_date {
        added.push(format!("Date: {date}"));
    }
    let received = submission
        .received
        .as_ref()
        .map(|from| received(from, &config.hostname, id, &date));
    if received.is_none() && added.is_empty() {
        return Normalised {
            pieces: vec![message.clone()],
        };
    }
    let added = if added.is_empty() {
        String::new()
    } else if block.unterminated {
        format!("\r\n{}", added.join("\r\n"))
    } else {
        added.iter().map(|field| format!("{field}\r\n")).collect()
    };
    let pieces = [
        Bytes::from(received.unwrap_or_default()),
        message.slice(..block.end),
        Bytes::from(added),
        message.slice(block.end..),
    ];
    Normalised {
        pieces: pieces.into_iter().filter(|p| !p.is_empty()).collect(),
    }
}

/// When the message was accepted: its id's timestamp.
pub(super) fn first_seen(id: MessageId) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(id.timestamp_ms())
}

fn accepted_at(id: MessageId) -> OffsetDateTime {
    // Fails only for ids beyond year 9999, which `MessageId::new` never makes.
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(id.timestamp_ms()) * 1_000_000)
        .unwrap_or_else(|_| OffsetDateTime::now_utc())
}

/// `Mon, 01 Jan 2024 12:34:56 +0000` (RFC 5322 §3.3), in UTC.
fn rfc5322_date(at: OffsetDateTime) -> String {
    at.format(&Rfc2822)
        .or_else(|_| OffsetDateTime::now_utc().format(&Rfc2822))
        .unwrap_or_default()
}

/// `Received: from <helo> ([ip]) by <host> with <proto> (<tls>) id <id>; <date>`, folded,
/// ending in CRLF. The peer is an RFC 5321 address literal (`[192.0.2.1]`,
/// `[IPv6:2001:db8::1]`): what `TCP-info` in RFC 5321 §4.4 calls for.
fn received(from: &ReceivedFrom, hostname: &str, id: MessageId, date: &str) -> String {
    let phrases = [
        format!("from {}", safe(&from.helo)),
        format!("({})", address_literal(from.peer)),
        format!("by {}", safe(hostname)),
        // "with ESMTPS (TLSv1.3)" stays on one line.
        match &from.tls {
            Some(tls) => format!("with {} ({})", safe(from.protocol), safe(tls)),
            None => format!("with {}", safe(from.protocol)),
        },
        format!("id {id};"),
        date.to_owned(),
    ];
    fold("Received:", &phrases)
}

fn address_literal(ip: IpAddr) -> String {
    match ip.to_canonical() {
        IpAddr::V4(v4) => format!("[{v4}]"),
        IpAddr::V6(v6) => format!("[IPv6:{v6}]"),
    }
}

/// Client-supplied text made safe for a header: anything that is not a visible character
/// (controls, CR, LF, white space) or that would open or close a comment becomes `?`.
fn safe(text: &str) -> String {
    if text.is_empty() {
        return "unknown".to_owned();
    }
    text.chars()
        .map(|c| {
            let visible =
                c.is_ascii_graphic() || (!c.is_ascii() && !c.is_control() && !c.is_whitespace());
            if visible && !matches!(c, '(' | ')' | '\\') {
                c
            } else {
                '?'
            }
        })
        .collect()
}

/// Joins `phrases` after `name` with spaces, starting a continuation line (CRLF TAB)
/// before a phrase that would make the line reach [`MAX_LINE`]. A phrase is never split,
/// so a line holding one over-long phrase (a 255-character HELO name) stays long.
fn fold(name: &str, phrases: &[String]) -> String {
    let mut out = String::from(name);
    let mut line_len = name.chars().count();
    let mut line_has_phrase = false;
    for phrase in phrases {
        let len = phrase.chars().count();
        if line_has_phrase && line_len + 1 + len >= MAX_LINE {
            out.push_str("\r\n\t");
            line_len = 1;
        } else {
            out.push(' ');
            line_len += 1;
        }
        out.push_str(phrase);
        line_len += len;
        line_has_phrase = true;
    }
    out.push_str("\r\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::collections::BTreeMap;

    use kurir_core::Envelope;

    fn normalised(body: &'static [u8], received: Option<ReceivedFrom>) -> (MessageId, Bytes) {
        let config = PublishConfig {
            hostname: "mx.test".to_owned(),
            topic: "kurir.mail".to_owned(),
            ack_timeout: Duration::from_secs(1),
            shards: BTreeMap::new(),
        };
        let submission = Submission {
            tenant: String::new(),
            envelope: Envelope::new(None),
            body: Bytes::from_static(body),
            received,
            traceparent: None,
            tags: BTreeMap::new(),
            suppressed: Vec::new(),
        };
        let id = MessageId::from_u128(u128::from(1_700_000_000_000_u64) << 80);
        (id, normalise(&config, id, &submission).to_bytes())
    }

    const DATE: &str = "Date: Tue, 14 Nov 2023 22:13:20 +0000";

    #[test]
    fn missing_fields_go_at_the_end_of_the_header_block() {
        let (id, out) = normalised(b"Received: x\r\nSubject: s\r\n\r\nDate: body\r\n", None);
        let want = format!(
            "Received: x\r\nSubject: s\r\n\
             Message-ID: <{id}@mx.test>\r\n{DATE}\r\n\r\nDate: body\r\n"
        );
        assert_eq!(out, want.as_bytes());
    }

    #[test]
    fn an_unterminated_headers_only_message_gets_its_line_ended_first() {
        let (id, out) = normalised(b"Subject: s\r\nDate: d", None);
        assert_eq!(
            out,
            format!("Subject: s\r\nDate: d\r\nMessage-ID: <{id}@mx.test>").as_bytes()
        );
        let (id, out) = normalised(b"", None);
        assert_eq!(
            out,
            format!("Message-ID: <{id}@mx.test>\r\n{DATE}\r\n").as_bytes()
        );
        let (id, out) = normalised(b"\r\nbody only", None);
        assert_eq!(
            out,
            format!("Message-ID: <{id}@mx.test>\r\n{DATE}\r\n\r\nbody only").as_bytes()
        );
    }

    #[test]
    fn a_complete_grpc_message_is_the_same_buffer() {
        let body: &'static [u8] = b"Message-ID: <a@b>\r\nDate: d\r\n\r\nx\r\n";
        let (_, out) = normalised(body, None);
        assert_eq!(out.as_ptr(), body.as_ptr(), "no copy");
    }

    #[test]
    fn received_without_tls_is_prepended() {
        let from = ReceivedFrom {
            helo: "client.test".to_owned(),
            peer: "2001:db8::7".parse().unwrap(),
            protocol: "ESMTP",
            tls: None,
        };
        let (id, out) = normalised(b"Message-ID: <a@b>\r\nDate: d\r\n\r\nx\r\n", Some(from));
        let want = format!(
            "Received: from client.test ([IPv6:2001:db8::7]) by mx.test with ESMTP\r\n\t\
             id {id}; Tue, 14 Nov 2023 22:13:20 +0000\r\n\
             Message-ID: <a@b>\r\nDate: d\r\n\r\nx\r\n"
        );
        assert_eq!(std::str::from_utf8(&out).unwrap(), want);
    }

    #[test]
    fn dates_are_rfc5322_in_utc() {
        let at = OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap();
        assert_eq!(rfc5322_date(at), "Tue, 14 Nov 2023 22:13:20 +0000");
        let id = MessageId::from_u128(u128::from(1_700_000_000_123_u64) << 80);
        assert_eq!(accepted_at(id).unix_timestamp(), 1_700_000_000);
        assert_eq!(
            first_seen(id),
            UNIX_EPOCH + Duration::from_millis(1_700_000_000_123)
        );
    }

    #[test]
    fn folding_keeps_lines_short_and_phrases_whole() {
        let phrases: Vec<String> = [
            "from a-rather-long-client-name.example.test",
            "([192.0.2.1])",
            "by mx.example.test",
            "with ESMTPS",
            "(TLSv1.3)",
            "id 01JD3XKQ8W6Q9V5N4ZB7T0M2RS;",
            "Tue, 14 Nov 2023 22:13:20 +0000",
        ]
        .map(str::to_owned)
        .to_vec();
        let folded = fold("Received:", &phrases);
        assert!(folded.ends_with("\r\n"));
        for line in folded.trim_end().split("\r\n") {
            assert!(line.len() < MAX_LINE, "{line:?}");
        }
        let unfolded = folded.trim_end().replace("\r\n\t", " ");
        assert_eq!(unfolded, format!("Received: {}", phrases.join(" ")));
    }

    #[test]
    fn client_text_cannot_inject_fields() {
        assert_eq!(safe("evil\r\nBcc: x@y"), "evil??Bcc:?x@y");
        assert_eq!(safe("a(b)c\\"), "a?b?c?");
        assert_eq!(safe("bücher.example"), "bücher.example");
        assert_eq!(safe(""), "unknown");
    }

    #[test]
    fn peers_are_address_literals() {
        assert_eq!(address_literal("192.0.2.1".parse().unwrap()), "[192.0.2.1]");
        assert_eq!(
            address_literal("2001:db8::1".parse().unwrap()),
            "[IPv6:2001:db8::1]"
        );
        assert_eq!(
            address_literal("::ffff:192.0.2.1".parse().unwrap()),
            "[192.0.2.1]"
        );
    }
}
