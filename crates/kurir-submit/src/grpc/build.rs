//! A `StructuredMessage` built into MIME with `mail-builder`, after checking every field.
//!
//! The structure, outermost first (each level only when it is needed):
//! - `multipart/mixed`: the body, then the attachments;
//! - `multipart/alternative`: `text/plain`, then the HTML (the last part is the preferred
//!   one);
//! - `multipart/related`: `text/html`, then the inline parts it refers to by `cid:`.
//!
//! Headers: From, Reply-To, To, Cc, Subject, the custom ones, MIME-Version. Bcc recipients
//! are envelope recipients only, never a header. Message-ID and Date are left to the publish
//! path, which adds them exactly as it does for SMTP and raw messages (`mail-builder`'s own
//! would name another host and another time).

use std::borrow::Cow;

use kurir_core::Address;
use kurir_proto::v1;
use mail_builder::MessageBuilder;
use mail_builder::headers::address::Address as HeaderAddress;
use mail_builder::headers::content_type::ContentType;
use mail_builder::headers::text::Text;
use mail_builder::headers::{Header as _, HeaderType};
use mail_builder::mime::{BodyPart, MimePart};
use tonic::Status;

use super::request::{Message, check_count, invalid, optional_address};

/// The longest header value, subject or display name accepted (RFC 5322's line limit: no
/// need to fold a single word across lines).
const MAX_HEADER_VALUE: usize = 998;
/// The longest custom header name.
const MAX_HEADER_NAME: usize = 76;
/// The longest file name or Content-ID.
const MAX_PART_NAME: usize = 255;

/// Header fields a client may not set: the ones this module writes (or leaves to the
/// publish path), trace fields that belong to MTAs, and every `Content-*` field.
const RESERVED_HEADERS: &[&str] = &[
    "from",
    "to",
    "cc",
    "bcc",
    "subject",
    "date",
    "message-id",
    "mime-version",
    "reply-to",
    "received",
    "return-path",
];

/// A `From`/`To`-style mailbox: `Name <addr>`, `"Name" <addr>` or `addr`.
#[derive(Debug, Clone)]
struct Mailbox {
    name: Option<String>,
    address: Address,
}

impl Mailbox {
    fn header(&self) -> HeaderAddress<'static> {
        let email = self.address.to_string();
        match &self.name {
            Some(name) => HeaderAddress::new_address(Some(name.clone()), email),
            None => HeaderAddress::new_address(None::<String>, email),
        }
    }
}

/// Checks `structured` and builds it. See the module docs.
pub(super) fn structured(s: v1::StructuredMessage) -> Result<Message, Status> {
    if s.from.trim().is_empty() {
        return Err(invalid("structured.from", "is required"));
    }
    let from = mailbox("structured.from", &s.from)?;
    let reply_to = mailboxes("structured.reply_to", &s.reply_to)?;
    let to = mailboxes("structured.to", &s.to)?;
    let cc = mailboxes("structured.cc", &s.cc)?;
    let bcc = mailboxes("structured.bcc", &s.bcc)?;
    let count = to.len() + cc.len() + bcc.len();
    if count == 0 {
        return Err(invalid(
            "structured.to",
            "at least one recipient in to, cc or bcc is required",
        ));
    }
    check_count("structured.to", count)?;
    let sender = if s.envelope_from.is_empty() {
        Some(from.address.clone())
    } else {
        optional_address("structured.envelope_from", &s.envelope_from)?
    };
    header_text("structured.subject", &s.subject)?;
    if s.text.is_empty() && s.html.is_empty() {
        return Err(invalid(
            "structured.text",
            "at least one of text and html is required",
        ));
    }
    body_text("structured.text", &s.text)?;
    body_text("structured.html", &s.html)?;
    if !s.inline.is_empty() && s.html.is_empty() {
        return Err(invalid(
            "structured.inline",
            "inline parts need an html body that refers to them",
        ));
    }
    for (i, header) in s.headers.iter().enumerate() {
        check_header(i, header)?;
    }
    let attachments = parts("structured.attachments", s.attachments, false)?;
    let inline = parts("structured.inline", s.inline, true)?;

    let mut builder = MessageBuilder::new().from(from.header());
    if !reply_to.is_empty() {
        builder = builder.reply_to(list(&reply_to));
    }
    if !to.is_empty() {
        builder = builder.to(list(&to));
    }
    if !cc.is_empty() {
        builder = builder.cc(list(&cc));
    }
    if !s.subject.is_empty() {
        builder = builder.subject(s.subject);
    }
    for header in s.headers {
        builder = builder.header(header.name, Text::new(header.value));
    }
    let body = mime_body(s.text, s.html, inline, attachments);
    let body = write(builder, body).map_err(|e| Status::internal(format!("building MIME: {e}")))?;

    let recipients = to
        .into_iter()
        .chain(cc)
        .chain(bcc)
        .map(|m| m.address)
        .collect();
    Ok(Message {
        sender,
        recipients,
        body: body.into(),
    })
}

/// The body part: text and HTML as alternatives, inline parts related to the HTML,
/// attachments mixed in after the rest.
fn mime_body(
    text: String,
    html: String,
    inline: Vec<MimePart<'static>>,
    attachments: Vec<MimePart<'static>>,
) -> MimePart<'static> {
    let text = (!text.is_empty()).then(|| MimePart::new("text/plain", text));
    let html = (!html.is_empty()).then(|| {
        let html = MimePart::new("text/html", html);
        if inline.is_empty() {
            html
        } else {
            let mut parts = vec![html];
            parts.extend(inline);
            MimePart::new("multipart/related", parts)
        }
    });
    let body = match (text, html) {
        (Some(text), Some(html)) => MimePart::new("multipart/alternative", vec![text, html]),
        (Some(part), None) | (None, Some(part)) => part,
        // Checked before: at least one of them is there.
        (None, None) => MimePart::new("text/plain", ""),
    };
    if attachments.is_empty() {
        return body;
    }
    let mut parts = vec![body];
    parts.extend(attachments);
    MimePart::new("multipart/mixed", parts)
}

/// The header fields, `MIME-Version`, then the body: what `MessageBuilder::write_to`
/// writes, without its own Message-ID and Date (see the module docs).
fn write(builder: MessageBuilder<'static>, body: MimePart<'static>) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::with_capacity(body.size() * 4 / 3 + 1024);
    for (name, value) in &builder.headers {
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        value.write_header(&mut out, name.len() + 2)?;
    }
    out.extend_from_slice(b"MIME-Version: 1.0\r\n");
    body.write_part(&mut out)?;
    Ok(out)
}

fn list(mailboxes: &[Mailbox]) -> HeaderAddress<'static> {
    HeaderAddress::new_list(mailboxes.iter().map(Mailbox::header).collect())
}

fn mailboxes(field: &str, texts: &[String]) -> Result<Vec<Mailbox>, Status> {
    check_count(field, texts.len())?;
    texts
        .iter()
        .enumerate()
        .map(|(i, text)| mailbox(&format!("{field}[{i}]"), text))
        .collect()
}

/// Parses `Name <addr>`, `"Name" <addr>` or `addr`.
fn mailbox(field: &str, text: &str) -> Result<Mailbox, Status> {
    let text = text.trim();
    if text.chars().any(char::is_control) {
        return Err(invalid(field, "contains a control character"));
    }
    let (name, address) = match text.strip_suffix('>') {
        Some(rest) => {
            let open = rest
                .rfind('<')
                .ok_or_else(|| invalid(field, "has '>' without '<'"))?;
            (rest[..open].trim(), &rest[open + 1..])
        }
        None => ("", text),
    };
    let address = Address::parse(address).map_err(|e| invalid(field, e))?;
    let name = unquote(name);
    if name.len() > MAX_HEADER_VALUE {
        return Err(invalid(
            field,
            format!("display name longer than {MAX_HEADER_VALUE} bytes"),
        ));
    }
    Ok(Mailbox {
        name: (!name.is_empty()).then(|| name.into_owned()),
        address,
    })
}

/// A display name without its quotes and quoting backslashes.
fn unquote(name: &str) -> Cow<'_, str> {
    let Some(inner) = name.strip_prefix('"').and_then(|n| n.strip_suffix('"')) else {
        return Cow::Borrowed(name);
    };
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.extend(chars.next()),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// A one-line header value: no control characters (a CR or LF would inject fields).
fn header_text(field: &str, value: &str) -> Result<(), Status> {
    if value.chars().any(|c| c.is_control() && c != '\t') {
        return Err(invalid(field, "contains a line break or control character"));
    }
    if value.len() > MAX_HEADER_VALUE {
        return Err(invalid(
            field,
            format!("longer than {MAX_HEADER_VALUE} bytes"),
        ));
    }
    Ok(())
}

/// A text body: lines end in LF or CRLF; a bare CR or a NUL is refused, as in raw data.
fn body_text(field: &str, text: &str) -> Result<(), Status> {
    let bytes = text.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        if b == 0 {
            return Err(invalid(field, "contains a NUL byte"));
        }
        if b == b'\r' && bytes.get(i + 1) != Some(&b'\n') {
            return Err(invalid(
                field,
                "contains a bare CR (a CR not followed by LF)",
            ));
        }
    }
    Ok(())
}

fn check_header(i: usize, header: &v1::Header) -> Result<(), Status> {
    let field = format!("structured.headers[{i}]");
    let name = &header.name;
    let valid = !name.is_empty()
        && name.len() <= MAX_HEADER_NAME
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    if !valid {
        return Err(invalid(
            format!("{field}.name"),
            format!("must be 1-{MAX_HEADER_NAME} letters, digits and '-'"),
        ));
    }
    let lower = name.to_ascii_lowercase();
    if RESERVED_HEADERS.contains(&lower.as_str()) || lower.starts_with("content-") {
        return Err(invalid(
            format!("{field}.name"),
            format!("{name} is set by kurir and cannot be given as a custom header"),
        ));
    }
    header_text(&format!("{field}.value"), &header.value)
}

/// Attachments (`inline` false) or inline parts, each checked and made a MIME part.
fn parts(
    field: &str,
    attachments: Vec<v1::Attachment>,
    inline: bool,
) -> Result<Vec<MimePart<'static>>, Status> {
    attachments
        .into_iter()
        .enumerate()
        .map(|(i, a)| part(&format!("{field}[{i}]"), a, inline))
        .collect()
}

fn part(field: &str, a: v1::Attachment, inline: bool) -> Result<MimePart<'static>, Status> {
    let content_type =
        content_type(&a.content_type).map_err(|e| invalid(format!("{field}.content_type"), e))?;
    if a.filename.chars().any(char::is_control) || a.filename.len() > MAX_PART_NAME {
        return Err(invalid(
            format!("{field}.filename"),
            format!("must be at most {MAX_PART_NAME} bytes without control characters"),
        ));
    }
    let part = MimePart::new(
        ContentType::new(content_type),
        BodyPart::Binary(a.content.into()),
    );
    if !inline {
        if a.filename.is_empty() {
            return Err(invalid(format!("{field}.filename"), "is required"));
        }
        return Ok(part.attachment(a.filename));
    }
    let cid = &a.content_id;
    let valid = !cid.is_empty()
        && cid.len() <= MAX_PART_NAME
        && cid
            .bytes()
            .all(|b| b.is_ascii_graphic() && !matches!(b, b'<' | b'>' | b'"' | b'\\'));
    if !valid {
        return Err(invalid(
            format!("{field}.content_id"),
            format!(
                "required for inline parts: 1-{MAX_PART_NAME} printable ASCII characters \
                 without '<', '>', '\"' or '\\'"
            ),
        ));
    }
    let mut disposition = ContentType::new("inline");
    if !a.filename.is_empty() {
        disposition = disposition.attribute("filename", a.filename);
    }
    Ok(part
        .header("Content-Disposition", HeaderType::from(disposition))
        .cid(a.content_id))
}

/// `type/subtype`, both RFC 2045 tokens, lower-cased. Multipart and message types are
/// refused: their content would have to be MIME itself, not an opaque file.
fn content_type(text: &str) -> Result<String, &'static str> {
    let token = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?=".contains(&b))
    };
    let (kind, sub) = text.split_once('/').ok_or("must be type/subtype")?;
    if !token(kind) || !token(sub) {
        return Err("must be type/subtype");
    }
    let lower = text.to_ascii_lowercase();
    if lower.starts_with("multipart/") || lower.starts_with("message/") {
        return Err("multipart and message types cannot be attached as files");
    }
    Ok(lower)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn minimal() -> v1::StructuredMessage {
        v1::StructuredMessage {
            from: "Shop <orders@shop.test>".into(),
            to: vec!["a@x.test".into()],
            text: "hi".into(),
            ..Default::default()
        }
    }

    fn error(s: v1::StructuredMessage) -> String {
        let status = structured(s).unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        status.message().to_owned()
    }

    #[test]
    fn mailboxes_take_names_in_any_common_form() {
        let m = mailbox("f", "\"Shop, \\\"Inc\\\"\" <a@Shop.Test>").unwrap();
        assert_eq!(m.name.as_deref(), Some("Shop, \"Inc\""));
        assert_eq!(m.address.to_string(), "a@shop.test");
        let m = mailbox("f", "a@x.test").unwrap();
        assert!(m.name.is_none());
        let m = mailbox("f", "<a@x.test>").unwrap();
        assert!(m.name.is_none());
        assert!(mailbox("f", "Name <a@x.test").is_err());
        assert!(mailbox("f", "Name\r\nBcc: x@y.test <a@x.test>").is_err());
    }

    #[test]
    fn a_text_only_message_is_a_single_part() {
        let m = structured(minimal()).unwrap();
        let body = std::str::from_utf8(&m.body).unwrap();
        assert!(body.starts_with("From: \"Shop\" <orders@shop.test>\r\nTo: <a@x.test>\r\n"));
        assert!(body.contains("MIME-Version: 1.0\r\nContent-Type: text/plain; charset=\"utf-8\""));
        assert!(
            !body.contains("Message-ID") && !body.contains("Date:"),
            "{body}"
        );
        assert_eq!(m.sender.unwrap().to_string(), "orders@shop.test");
    }

    #[test]
    fn fields_are_named_in_errors() {
        let mut s = minimal();
        s.to.push("broken".into());
        assert!(error(s).starts_with("structured.to[1]: "));

        let mut s = minimal();
        s.to.clear();
        assert!(error(s).starts_with("structured.to: "));

        let mut s = minimal();
        s.text.clear();
        assert!(error(s).starts_with("structured.text: "));

        let mut s = minimal();
        s.attachments.push(v1::Attachment {
            filename: "a.pdf".into(),
            content_type: "pdf".into(),
            ..Default::default()
        });
        assert!(error(s).starts_with("structured.attachments[0].content_type: "));

        let mut s = minimal();
        s.html = "<img src=cid:x>".into();
        s.inline.push(v1::Attachment {
            content_type: "image/png".into(),
            ..Default::default()
        });
        assert!(error(s).starts_with("structured.inline[0].content_id: "));

        let mut s = minimal();
        s.headers.push(v1::Header {
            name: "Content-Type".into(),
            value: "text/html".into(),
        });
        assert!(error(s).starts_with("structured.headers[0].name: "));

        let mut s = minimal();
        s.headers.push(v1::Header {
            name: "X-Ok".into(),
            value: "a\r\nBcc: evil@x.test".into(),
        });
        assert!(error(s).starts_with("structured.headers[0].value: "));

        let mut s = minimal();
        s.subject = "two\nlines".into();
        assert!(error(s).starts_with("structured.subject: "));
    }
}
