//! SMTP replies.
//!
//! Every reply the server sends goes through [`Reply::to_bytes`], which is the one place
//! that knows the wire format: `250-` continuation lines, `250 ` on the last line, and the
//! RFC 2034 enhanced status code repeated on every line when the client was offered
//! ENHANCEDSTATUSCODES. Text never contains CR or LF on the wire: a text that echoes client
//! input (an EHLO name, a parameter) must not be able to forge extra reply lines.

use kurir_core::ErrorCode;

/// A reply: code, optional enhanced status code, one or more text lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    pub enhanced: Option<(u8, u16, u16)>,
    pub lines: Vec<String>,
}

impl Reply {
    /// A one-line reply with an enhanced status code.
    pub fn new(code: u16, enhanced: (u8, u16, u16), text: impl Into<String>) -> Self {
        Self {
            code,
            enhanced: Some(enhanced),
            lines: vec![text.into()],
        }
    }

    /// A one-line reply without an enhanced status code (RFC 2034 §4: the greeting and the
    /// replies to EHLO and HELO carry none).
    pub fn plain(code: u16, text: impl Into<String>) -> Self {
        Self {
            code,
            enhanced: None,
            lines: vec![text.into()],
        }
    }

    /// A multi-line reply (e.g. the EHLO capability list, with `enhanced: None`).
    pub fn multiline(
        code: u16,
        enhanced: Option<(u8, u16, u16)>,
        lines: impl IntoIterator<Item = impl Into<String>>,
    ) -> Self {
        Self {
            code,
            enhanced,
            lines: lines.into_iter().map(Into::into).collect(),
        }
    }

    /// `250 2.0.0 <text>`.
    pub fn ok(text: impl Into<String>) -> Self {
        Self::new(250, (2, 0, 0), text)
    }

    /// The wire form: `250-first\r\n250 last\r\n` with the enhanced code on every line when
    /// `enhanced_codes` (ENHANCEDSTATUSCODES advertised) and it is set.
    pub fn to_bytes(&self, enhanced_codes: bool) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.lines.iter().map(|l| l.len() + 16).sum());
        self.write_to(&mut out, enhanced_codes);
        out
    }

    /// Appends the wire form ([`Reply::to_bytes`]) to `out`.
    pub fn write_to(&self, out: &mut Vec<u8>, enhanced_codes: bool) {
        use std::io::Write as _;
        let enhanced = self.enhanced.filter(|_| enhanced_codes);
        let count = self.lines.len().max(1);
        for i in 0..count {
            let separator = if i + 1 == count { ' ' } else { '-' };
            // Writing to a Vec cannot fail.
            let _ = write!(out, "{:03}{separator}", self.code);
            let text = self.lines.get(i).map(String::as_str).unwrap_or("");
            if let Some((class, subject, detail)) = enhanced {
                let _ = write!(out, "{class}.{subject}.{detail}");
                if !text.is_empty() {
                    out.push(b' ');
                }
            }
            // CR and LF would end the line early and let echoed input forge replies.
            out.extend(
                text.bytes()
                    .map(|b| if b == b'\r' || b == b'\n' { b' ' } else { b }),
            );
            out.extend_from_slice(b"\r\n");
        }
    }

    pub fn is_positive(&self) -> bool {
        self.code < 400
    }
}

impl From<ErrorCode> for Reply {
    fn from(code: ErrorCode) -> Self {
        let r = code.smtp_reply();
        Self::new(r.code, r.enhanced, r.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_line_with_and_without_enhanced_codes() {
        let reply = Reply::ok("Ok");
        assert_eq!(reply.to_bytes(true), b"250 2.0.0 Ok\r\n");
        assert_eq!(reply.to_bytes(false), b"250 Ok\r\n");
        assert_eq!(
            Reply::plain(220, "mx ESMTP").to_bytes(true),
            b"220 mx ESMTP\r\n"
        );
    }

    #[test]
    fn multi_line_repeats_code_and_enhanced_code() {
        let reply = Reply::multiline(550, Some((5, 7, 1)), ["first", "second", "last"]);
        assert_eq!(
            reply.to_bytes(true),
            b"550-5.7.1 first\r\n550-5.7.1 second\r\n550 5.7.1 last\r\n"
        );
        let ehlo = Reply::multiline(250, None, ["mx.test", "PIPELINING", "SIZE 1000"]);
        assert_eq!(
            ehlo.to_bytes(true),
            b"250-mx.test\r\n250-PIPELINING\r\n250 SIZE 1000\r\n"
        );
    }

    #[test]
    fn text_cannot_forge_reply_lines() {
        let reply = Reply::plain(250, "hello\r\n250 fake");
        assert_eq!(reply.to_bytes(false), b"250 hello  250 fake\r\n");
    }

    #[test]
    fn empty_lines_still_render_one_line() {
        let reply = Reply::multiline(354, None, Vec::<String>::new());
        assert_eq!(reply.to_bytes(true), b"354 \r\n");
        let reply = Reply::multiline(250, Some((2, 0, 0)), [""]);
        assert_eq!(reply.to_bytes(true), b"250 2.0.0\r\n");
    }

    #[test]
    fn from_error_code() {
        let reply = Reply::from(ErrorCode::ShuttingDown);
        assert_eq!(reply.to_bytes(true), b"421 4.3.2 Service shutting down\r\n");
        assert!(!reply.is_positive());
    }
}
