//! What goes on the wire for a transaction: MAIL FROM and RCPT TO with the parameters the
//! server's [`Capabilities`] allow, and the body: dot-stuffed after DATA, or as one BDAT
//! chunk.

use std::fmt::Write as _;

use kurir_core::envelope::xtext_encode;
use kurir_core::{BodyType, Envelope, Recipient};

use super::Capabilities;

/// `MAIL FROM:<sender> [SIZE=] [BODY=] [SMTPUTF8] [RET=] [ENVID=]` with CRLF.
///
/// - `SIZE=` when the server offers SIZE.
/// - `BODY=8BITMIME` when the body is 8BITMIME or BINARYMIME and the server offers
///   8BITMIME. A BINARYMIME body (which after submission still has CRLF lines, as DATA
///   needs) goes as 8BITMIME, by BDAT or DATA alike. Without 8BITMIME no BODY is sent and the
///   body goes as is (no downgrade to 7 bit).
/// - `SMTPUTF8` when asked for or needed by an address, and offered.
/// - `RET=` / `ENVID=` only when the server offers DSN.
pub(super) fn mail_from(envelope: &Envelope, size: usize, caps: &Capabilities) -> String {
    let mut line = String::from("MAIL FROM:<");
    if let Some(sender) = &envelope.sender {
        let _ = write!(line, "{sender}");
    }
    line.push('>');
    if caps.size.is_some() {
        let _ = write!(line, " SIZE={size}");
    }
    if envelope.body != BodyType::SevenBit && caps.eightbitmime {
        line.push_str(" BODY=8BITMIME");
    }
    if (envelope.smtputf8 || envelope.needs_smtputf8()) && caps.smtputf8 {
        line.push_str(" SMTPUTF8");
    }
    if caps.dsn {
        if let Some(ret) = envelope.ret {
            let _ = write!(line, " RET={}", ret.as_str());
        }
        if let Some(envid) = &envelope.envid {
            let _ = write!(line, " ENVID={}", xtext_encode(envid));
        }
    }
    line.push_str("\r\n");
    line
}

/// `RCPT TO:<address> [NOTIFY=] [ORCPT=]` with CRLF; the DSN parameters only when the
/// server offers DSN.
pub(super) fn rcpt_to(rcpt: &Recipient, caps: &Capabilities) -> String {
    let mut line = format!("RCPT TO:<{}>", rcpt.address);
    if caps.dsn {
        if let Some(notify) = rcpt.notify {
            let _ = write!(line, " NOTIFY={}", notify.to_param());
        }
        // The address type is not xtext-encoded: keep a malformed one off the wire.
        if let Some(orcpt) = rcpt.orcpt.as_ref().filter(|o| {
            !o.addr_type.is_empty()
                && o.addr_type
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        }) {
            let _ = write!(line, " ORCPT={}", orcpt.to_param());
        }
    }
    line.push_str("\r\n");
    line
}

/// The body as it goes after DATA's 354, as pieces to write in order: runs of `body`
/// (borrowed, not copied) with a `.` before every line that starts with one, a CRLF when
/// the body does not end with one, and the final `.CRLF`.
///
/// Lines are CRLF-delimited, as the submission side guarantees (it refuses bare CR and LF),
/// so a line starts at the beginning of the body and after each CRLF.
pub(super) fn dot_stuffed(body: &[u8]) -> Vec<&[u8]> {
    let mut pieces: Vec<&[u8]> = Vec::new();
    if body.first() == Some(&b'.') {
        pieces.push(b".");
    }
    let mut run_start = 0;
    for at in memchr::memmem::find_iter(body, b"\r\n.") {
        let dot = at + 2;
        pieces.push(&body[run_start..dot]);
        pieces.push(b".");
        run_start = dot;
    }
    pieces.push(&body[run_start..]);
    if needs_final_crlf(body) {
        pieces.push(b"\r\n");
    }
    pieces.push(b".\r\n");
    pieces.retain(|p| !p.is_empty());
    pieces
}

/// Whether the body needs a CRLF at its end: both DATA and BDAT add one.
fn needs_final_crlf(body: &[u8]) -> bool {
    !body.is_empty() && !body.ends_with(b"\r\n")
}

/// The size of the message as it is delivered (RFC 1870 `SIZE=`: without dot-stuffing or
/// the end of data, with the final CRLF added when missing).
pub fn message_size(body: &[u8]) -> usize {
    body.len() + if needs_final_crlf(body) { 2 } else { 0 }
}

/// `BDAT <size> LAST` with CRLF, and the chunk as pieces: the body, and a CRLF when it does
/// not end with one (what DATA adds too, so both ways deliver the same message).
pub(super) fn bdat_last(body: &[u8]) -> (String, Vec<&[u8]>) {
    let mut chunk: Vec<&[u8]> = vec![body];
    if needs_final_crlf(body) {
        chunk.push(b"\r\n");
    }
    chunk.retain(|piece| !piece.is_empty());
    (format!("BDAT {} LAST\r\n", message_size(body)), chunk)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kurir_core::{Address, Notify, Orcpt, Ret};

    fn wire(body: &[u8]) -> Vec<u8> {
        dot_stuffed(body).concat()
    }

    #[test]
    fn dots_are_doubled_at_line_starts_only() {
        assert_eq!(wire(b""), b".\r\n");
        assert_eq!(wire(b"a\r\n"), b"a\r\n.\r\n");
        assert_eq!(wire(b"a"), b"a\r\n.\r\n");
        assert_eq!(
            wire(b".\r\n..x\r\na.b\r\n.y"),
            b"..\r\n...x\r\na.b\r\n..y\r\n.\r\n"
        );
        // Only CRLF ends a line.
        assert_eq!(wire(b"a\n.b\r\n"), b"a\n.b\r\n.\r\n");
    }

    /// The byte-at-a-time definition: a `.` at a line start (after CRLF) is doubled.
    fn stuffed_by_bytes(body: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        for (i, &b) in body.iter().enumerate() {
            let line_start = i == 0 || (i >= 2 && &body[i - 2..i] == b"\r\n");
            if line_start && b == b'.' {
                out.push(b'.');
            }
            out.push(b);
        }
        if !body.is_empty() && !body.ends_with(b"\r\n") {
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b".\r\n");
        out
    }

    #[test]
    fn the_search_agrees_with_the_definition() {
        // Every body of up to 6 bytes over the interesting alphabet.
        let alphabet = [b'.', b'\r', b'\n', b'a'];
        for len in 0..=6u32 {
            for n in 0..4usize.pow(len) {
                let body: Vec<u8> = (0..len)
                    .map(|k| alphabet[(n / 4usize.pow(k)) % 4])
                    .collect();
                assert_eq!(wire(&body), stuffed_by_bytes(&body), "{body:?}");
            }
        }
    }

    #[test]
    fn large_runs_are_borrowed_whole() {
        let body = vec![b'x'; 100_000];
        let pieces = dot_stuffed(&body);
        assert_eq!(pieces.len(), 3);
        assert_eq!(pieces[0].len(), 100_000);
    }

    #[test]
    fn a_bdat_chunk_is_the_body_as_is_with_its_last_line_ended() {
        let chunk = |body: &[u8]| {
            let (command, pieces) = bdat_last(body);
            (command, pieces.concat())
        };
        assert_eq!(chunk(b""), ("BDAT 0 LAST\r\n".to_owned(), vec![]));
        assert_eq!(
            chunk(b".\r\n.x\r\n"),
            ("BDAT 7 LAST\r\n".to_owned(), b".\r\n.x\r\n".to_vec())
        );
        assert_eq!(
            chunk(b"a\r\nb"),
            ("BDAT 6 LAST\r\n".to_owned(), b"a\r\nb\r\n".to_vec())
        );
    }

    fn envelope() -> Envelope {
        let mut env = Envelope::new(Some(Address::parse("s@example.test").unwrap()));
        env.ret = Some(Ret::Headers);
        env.envid = Some("id 1=2".into());
        env.body = BodyType::BinaryMime;
        env
    }

    #[test]
    fn mail_parameters_follow_the_capabilities() {
        let env = envelope();
        let none = Capabilities::default();
        assert_eq!(mail_from(&env, 10, &none), "MAIL FROM:<s@example.test>\r\n");
        let all = Capabilities {
            size: Some(0),
            eightbitmime: true,
            dsn: true,
            ..Capabilities::default()
        };
        assert_eq!(
            mail_from(&env, 10, &all),
            "MAIL FROM:<s@example.test> SIZE=10 BODY=8BITMIME RET=HDRS ENVID=id+201+3D2\r\n"
        );
        let null = Envelope::new(None);
        assert_eq!(mail_from(&null, 0, &none), "MAIL FROM:<>\r\n");
    }

    #[test]
    fn rcpt_parameters_only_with_dsn() {
        let mut rcpt = Recipient::new(Address::parse("r@example.test").unwrap());
        rcpt.notify = Some(Notify::NEVER);
        rcpt.orcpt = Some(Orcpt {
            addr_type: "rfc822".into(),
            address: "o+x@example.test".into(),
        });
        let dsn = Capabilities {
            dsn: true,
            ..Capabilities::default()
        };
        assert_eq!(
            rcpt_to(&rcpt, &dsn),
            "RCPT TO:<r@example.test> NOTIFY=NEVER ORCPT=rfc822;o+2Bx@example.test\r\n"
        );
        assert_eq!(
            rcpt_to(&rcpt, &Capabilities::default()),
            "RCPT TO:<r@example.test>\r\n"
        );
    }
}
