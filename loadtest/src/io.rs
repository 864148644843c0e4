//! What the SMTP client and the sink share: a boxed stream (plain TCP or TLS, so STARTTLS
//! can swap it), bounded line reads, and SMTP replies.

use std::fmt;
use std::io;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, BufReader};

/// A byte stream: TCP, or TLS over TCP.
pub(crate) trait Io: AsyncRead + AsyncWrite + Unpin + Send {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// A connection with its read buffer; writes go to `get_mut()`.
pub(crate) type Conn = BufReader<Box<dyn Io>>;

/// Read buffer size: a 100k message arrives in a few reads.
pub(crate) const READ_BUFFER: usize = 64 * 1024;

/// Wraps a stream for line reads.
pub(crate) fn conn(stream: Box<dyn Io>) -> Conn {
    BufReader::with_capacity(READ_BUFFER, stream)
}

/// Reads one line (with its LF) into `line` (cleared first), at most `limit` octets.
/// Returns false at the end of the stream; a longer line is an error.
pub(crate) async fn read_line(
    conn: &mut Conn,
    line: &mut Vec<u8>,
    limit: usize,
) -> io::Result<bool> {
    line.clear();
    let n = (&mut *conn)
        .take(limit as u64)
        .read_until(b'\n', line)
        .await?;
    if n == 0 {
        return Ok(false);
    }
    if !line.ends_with(b"\n") {
        if n as u64 >= limit as u64 {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "line too long"));
        }
        return Ok(false);
    }
    Ok(true)
}

/// An SMTP reply (a multi-line reply's lines joined with `\n`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reply {
    /// The reply code, e.g. 250.
    pub code: u16,
    /// The enhanced status code of the first line, e.g. `5.1.1`; empty when there is none.
    pub enhanced: String,
    /// The text after the codes.
    pub text: String,
}

impl Reply {
    /// Whether the code is 2xx.
    pub fn is_positive(&self) -> bool {
        (200..300).contains(&self.code)
    }

    /// `550 5.1.1`, or `550` without an enhanced code: how reports group replies.
    pub fn key(&self) -> String {
        if self.enhanced.is_empty() {
            self.code.to_string()
        } else {
            format!("{} {}", self.code, self.enhanced)
        }
    }

    /// Parses the first line's codes; `text` is the rest of every line.
    pub(crate) fn from_lines(lines: &[String]) -> Option<Self> {
        let first = lines.first()?;
        let code: u16 = first.get(..3)?.parse().ok()?;
        let texts: Vec<&str> = lines
            .iter()
            .map(|l| l.get(4..).unwrap_or("").trim_end())
            .collect();
        let first_text = texts[0];
        let (enhanced, rest) = match first_text.split_once(' ') {
            Some((e, rest)) if is_enhanced(e) => (e.to_owned(), rest),
            _ if is_enhanced(first_text) => (first_text.to_owned(), ""),
            _ => (String::new(), first_text),
        };
        let mut text = rest.to_owned();
        for t in &texts[1..] {
            text.push('\n');
            text.push_str(t);
        }
        Some(Self {
            code,
            enhanced,
            text,
        })
    }
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.key(), self.text)
    }
}

/// `5.1.1`: a class digit and two numbers.
fn is_enhanced(text: &str) -> bool {
    let mut parts = text.split('.');
    let ok = |p: Option<&str>, max: usize| {
        p.is_some_and(|p| !p.is_empty() && p.len() <= max && p.bytes().all(|b| b.is_ascii_digit()))
    };
    matches!(text.as_bytes().first(), Some(b'2' | b'4' | b'5'))
        && ok(parts.next(), 1)
        && ok(parts.next(), 3)
        && ok(parts.next(), 3)
        && parts.next().is_none()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_parse_with_and_without_enhanced_codes() {
        let r = Reply::from_lines(&["550 5.1.1 no such user".into()]).unwrap();
        assert_eq!(
            (r.code, r.enhanced.as_str(), r.text.as_str()),
            (550, "5.1.1", "no such user")
        );
        assert_eq!(r.key(), "550 5.1.1");
        let r = Reply::from_lines(&["250-mx.test".into(), "250 PIPELINING".into()]).unwrap();
        assert_eq!(
            (r.code, r.enhanced.as_str(), r.text.as_str()),
            (250, "", "mx.test\nPIPELINING")
        );
        assert_eq!(r.key(), "250");
        assert_eq!(Reply::from_lines(&["2x0 nope".into()]), None);
    }
}
