//! A `SubmitRequest` checked and turned into what the publish path takes. Every refusal is
//! INVALID_ARGUMENT with a message naming the field (`raw.envelope_to[2]: …`,
//! `structured.attachments[0].content_type: …`), so a client can fix the request without
//! guessing.
//!
//! A raw message is taken as it is apart from its line ends: LF-only line ends become CRLF
//! (what SMTP's DATA would have carried); a bare CR or a NUL is refused, as SMTP refuses
//! them. Everything else (Message-ID, Date) is the publish path's normalisation, the same
//! for both protocols. A structured message is built into MIME by `build.rs` first.

use std::collections::BTreeMap;
use std::fmt::Display;

use bytes::Bytes;
use kurir_core::Address;
use kurir_proto::v1;
use kurir_proto::v1::submit_request::Message as Kind;
use tonic::Status;

/// `client_id`, at most (bytes).
pub(super) const MAX_CLIENT_ID: usize = 128;
/// `idempotency_key`, at most (printable ASCII characters).
pub(super) const MAX_IDEMPOTENCY_KEY: usize = 128;
/// `tags`: entries, key and value bytes.
pub(super) const MAX_TAGS: usize = 32;
pub(super) const MAX_TAG_KEY: usize = 64;
pub(super) const MAX_TAG_VALUE: usize = 256;
/// Envelope recipients of one message (`raw.envelope_to`, or to + cc + bcc). Not in the
/// proto: a bound on the work (and the suppression lookup) one request can cause.
pub(super) const MAX_RECIPIENTS: usize = 1000;

/// A checked message, ready for the suppression check and the publisher.
#[derive(Debug)]
pub(super) struct Message {
    /// `None`: the null sender `<>`.
    pub(super) sender: Option<Address>,
    /// Every envelope recipient in request order, duplicates included (each gets its own
    /// entry in the response).
    pub(super) recipients: Vec<Address>,
    /// The RFC 5322 message, CRLF line ends.
    pub(super) body: Bytes,
}

/// INVALID_ARGUMENT naming `field`.
pub(super) fn invalid(field: impl Display, message: impl Display) -> Status {
    Status::invalid_argument(format!("{field}: {message}"))
}

/// Checks the fields outside the message: `client_id`, `idempotency_key`, `tags`.
pub(super) fn check_common(request: &v1::SubmitRequest) -> Result<(), Status> {
    if request.client_id.len() > MAX_CLIENT_ID {
        return Err(invalid(
            "client_id",
            format!("longer than {MAX_CLIENT_ID} bytes"),
        ));
    }
    let key = &request.idempotency_key;
    if key.len() > MAX_IDEMPOTENCY_KEY || !key.bytes().all(|b| (0x20..=0x7e).contains(&b)) {
        return Err(invalid(
            "idempotency_key",
            format!("must be at most {MAX_IDEMPOTENCY_KEY} printable ASCII characters"),
        ));
    }
    check_tags(&request.tags)
}

fn check_tags(tags: &BTreeMap<String, String>) -> Result<(), Status> {
    if tags.len() > MAX_TAGS {
        return Err(invalid(
            "tags",
            format!("{} entries, at most {MAX_TAGS} allowed", tags.len()),
        ));
    }
    for (key, value) in tags {
        let field = || format!("tags[{:?}]", shorten(key));
        if key.is_empty() {
            return Err(invalid("tags", "a key is empty"));
        }
        if key.len() > MAX_TAG_KEY {
            return Err(invalid(
                field(),
                format!("key longer than {MAX_TAG_KEY} bytes"),
            ));
        }
        if value.len() > MAX_TAG_VALUE {
            return Err(invalid(
                field(),
                format!("value longer than {MAX_TAG_VALUE} bytes"),
            ));
        }
    }
    Ok(())
}

/// At most 64 characters of client text, for error messages.
fn shorten(text: &str) -> String {
    let mut out: String = text.chars().take(64).collect();
    if out.len() < text.len() {
        out.push('…');
    }
    out
}

/// Checks and builds the message. CPU-bound for large messages (line-end scan, MIME
/// encoding): the caller runs big ones off the async workers.
pub(super) fn message(message: Option<Kind>) -> Result<Message, Status> {
    match message {
        None => Err(invalid("message", "one of raw or structured is required")),
        Some(Kind::Raw(raw)) => raw_message(raw),
        Some(Kind::Structured(structured)) => super::build::structured(structured),
    }
}

fn raw_message(raw: v1::RawMessage) -> Result<Message, Status> {
    let sender = optional_address("raw.envelope_from", &raw.envelope_from)?;
    let recipients = addresses("raw.envelope_to", &raw.envelope_to)?;
    if recipients.is_empty() {
        return Err(invalid(
            "raw.envelope_to",
            "at least one recipient is required",
        ));
    }
    if raw.data.is_empty() {
        return Err(invalid("raw.data", "is empty"));
    }
    let body = crlf(raw.data).map_err(|e| invalid("raw.data", e))?;
    Ok(Message {
        sender,
        recipients,
        body,
    })
}

/// An envelope address; empty is `None` (the null sender).
pub(super) fn optional_address(field: &str, text: &str) -> Result<Option<Address>, Status> {
    if text.is_empty() {
        return Ok(None);
    }
    Address::parse(text)
        .map(Some)
        .map_err(|e| invalid(field, e))
}

/// Envelope addresses `field[i]`, in order.
fn addresses(field: &str, texts: &[String]) -> Result<Vec<Address>, Status> {
    check_count(field, texts.len())?;
    texts
        .iter()
        .enumerate()
        .map(|(i, text)| Address::parse(text).map_err(|e| invalid(format!("{field}[{i}]"), e)))
        .collect()
}

/// At most [`MAX_RECIPIENTS`].
pub(super) fn check_count(field: &str, n: usize) -> Result<(), Status> {
    if n > MAX_RECIPIENTS {
        return Err(invalid(
            field,
            format!("{n} recipients, at most {MAX_RECIPIENTS} allowed"),
        ));
    }
    Ok(())
}

/// LF-only line ends made CRLF; a bare CR or a NUL refused. No copy when the data already
/// ends every line with CRLF.
pub(super) fn crlf(data: Vec<u8>) -> Result<Bytes, &'static str> {
    let mut bare_lf = 0usize;
    for (i, &b) in data.iter().enumerate() {
        match b {
            b'\r' if data.get(i + 1) != Some(&b'\n') => {
                return Err("contains a bare CR (a CR not followed by LF)");
            }
            b'\n' if i == 0 || data[i - 1] != b'\r' => bare_lf += 1,
            0 => return Err("contains a NUL byte"),
            _ => {}
        }
    }
    if bare_lf == 0 {
        return Ok(Bytes::from(data));
    }
    let mut out = Vec::with_capacity(data.len() + bare_lf);
    for (i, &b) in data.iter().enumerate() {
        if b == b'\n' && (i == 0 || data[i - 1] != b'\r') {
            out.push(b'\r');
        }
        out.push(b);
    }
    Ok(Bytes::from(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crlf_keeps_crlf_and_fixes_lf() {
        let same = b"a\r\nb\r\n".to_vec();
        let ptr = same.as_ptr();
        let out = crlf(same).unwrap();
        assert_eq!(out.as_ptr(), ptr, "no copy");
        assert_eq!(
            crlf(b"\na\nb\r\nc".to_vec()).unwrap(),
            &b"\r\na\r\nb\r\nc"[..]
        );
    }

    #[test]
    fn crlf_refuses_bare_cr_and_nul() {
        assert!(crlf(b"a\rb".to_vec()).unwrap_err().contains("bare CR"));
        assert!(crlf(b"a\r".to_vec()).unwrap_err().contains("bare CR"));
        assert!(crlf(b"a\0b".to_vec()).unwrap_err().contains("NUL"));
    }

    fn request() -> v1::SubmitRequest {
        v1::SubmitRequest::default()
    }

    #[test]
    fn common_fields_are_bounded() {
        let mut r = request();
        r.client_id = "x".repeat(129);
        assert!(
            check_common(&r)
                .unwrap_err()
                .message()
                .starts_with("client_id:")
        );
        let mut r = request();
        r.idempotency_key = "tab\there".into();
        assert!(
            check_common(&r)
                .unwrap_err()
                .message()
                .starts_with("idempotency_key:")
        );
        let mut r = request();
        r.tags.insert("k".repeat(65), "v".into());
        assert!(
            check_common(&r)
                .unwrap_err()
                .message()
                .starts_with("tags[\"")
        );
        let mut r = request();
        r.tags.insert("k".into(), "v".repeat(257));
        assert_eq!(
            check_common(&r).unwrap_err().message(),
            "tags[\"k\"]: value longer than 256 bytes"
        );
        let mut r = request();
        for i in 0..33 {
            r.tags.insert(format!("k{i}"), String::new());
        }
        assert!(check_common(&r).unwrap_err().message().starts_with("tags:"));
    }

    #[test]
    fn raw_fields_are_named() {
        let raw = |from: &str, to: &[&str], data: &[u8]| {
            message(Some(Kind::Raw(v1::RawMessage {
                envelope_from: from.into(),
                envelope_to: to.iter().map(|s| (*s).into()).collect(),
                data: data.to_vec(),
            })))
        };
        let err = raw("", &["a@x.test", "b@x.test", "nope"], b"x").unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        assert!(err.message().starts_with("raw.envelope_to[2]: "), "{err:?}");
        let err = raw("bad", &["a@x.test"], b"x").unwrap_err();
        assert!(err.message().starts_with("raw.envelope_from: "), "{err:?}");
        let err = raw("", &[], b"x").unwrap_err();
        assert!(err.message().starts_with("raw.envelope_to: "), "{err:?}");
        let err = raw("", &["a@x.test"], b"a\rb").unwrap_err();
        assert!(err.message().starts_with("raw.data: "), "{err:?}");
        let ok = raw("", &["a@x.test"], b"Subject: x\n\nhi\n").unwrap();
        assert_eq!(ok.body, &b"Subject: x\r\n\r\nhi\r\n"[..]);
        assert!(ok.sender.is_none());
        assert!(
            message(None)
                .unwrap_err()
                .message()
                .starts_with("message: ")
        );
    }
}
