//! The byte level of a session: reading bounded command lines, DATA bodies and BDAT chunks
//! from one buffer, writing replies, and the STARTTLS switch.
//!
//! All reads go through one buffer so that pipelined input is never lost between a command
//! and its body, and so that STARTTLS can drop exactly what was pipelined after it.

use std::io;
use std::sync::Arc;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_rustls::TlsAcceptor;

use super::record::{Reply, TlsInfo};

/// A byte stream a session runs over: TCP, TLS over TCP, or an in-memory pipe in tests.
pub(super) trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// How much to ask the socket for at a time.
const READ_CHUNK: usize = 16 * 1024;

/// A command line, or why there is none.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Line {
    /// The line without its CRLF (or bare LF).
    Text(Vec<u8>),
    /// Longer than the limit; it was read and thrown away.
    TooLong,
    Eof,
}

/// How a body read ended.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum BodyEnd {
    /// The final dot, or the whole chunk.
    Complete,
    /// The requested number of bytes was reached first ([`super::Action::DisconnectAfterBody`]).
    Stopped,
    /// The client hung up first.
    Eof,
}

/// A message body being received, kept up to a cap so junk cannot exhaust memory.
#[derive(Debug)]
pub(super) struct Body {
    pub(super) data: Vec<u8>,
    /// Bytes received, including any beyond the cap.
    pub(super) received: u64,
    cap: usize,
}

impl Body {
    pub(super) fn new(cap: usize) -> Self {
        Self {
            data: Vec::new(),
            received: 0,
            cap,
        }
    }

    fn push(&mut self, bytes: &[u8]) {
        self.received += bytes.len() as u64;
        let room = self.cap.saturating_sub(self.data.len());
        self.data.extend_from_slice(&bytes[..bytes.len().min(room)]);
    }

    pub(super) fn oversize(&self) -> bool {
        self.received > self.cap as u64
    }

    fn reached(&self, stop: Option<usize>) -> bool {
        stop.is_some_and(|n| self.received >= n as u64)
    }
}

/// What one pass over the buffer found while reading a DATA body.
enum Scan {
    Done,
    NeedMore,
    Stopped,
}

pub(super) struct Conn {
    io: Box<dyn Io>,
    buf: BytesMut,
    max_line: usize,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn")
            .field("buffered", &self.buf.len())
            .finish_non_exhaustive()
    }
}

impl Conn {
    pub(super) fn new(io: Box<dyn Io>, max_line: usize) -> Self {
        Self {
            io,
            buf: BytesMut::new(),
            max_line,
        }
    }

    /// Whether input is waiting in the buffer, unread (the client pipelined).
    pub(super) fn has_buffered(&self) -> bool {
        !self.buf.is_empty()
    }

    /// Reads more input into the buffer; 0 means end of input.
    async fn fill(&mut self) -> io::Result<usize> {
        self.buf.reserve(READ_CHUNK);
        self.io.read_buf(&mut self.buf).await
    }

    /// The next command line. Lines end at LF (a CR before it is dropped); a line longer than
    /// the limit is consumed up to its end and reported as [`Line::TooLong`].
    pub(super) async fn read_line(&mut self) -> io::Result<Line> {
        let mut too_long = false;
        loop {
            if let Some(pos) = self.buf.iter().position(|&b| b == b'\n') {
                let mut line = self.buf.split_to(pos + 1).to_vec();
                if too_long || line.len() > self.max_line {
                    return Ok(Line::TooLong);
                }
                line.pop();
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                return Ok(Line::Text(line));
            }
            if self.buf.len() > self.max_line {
                self.buf.clear();
                too_long = true;
            }
            if self.fill().await? == 0 {
                return Ok(Line::Eof);
            }
        }
    }

    /// Reads exactly `size` bytes (a BDAT chunk) into `body`, unless `stop` bytes of body are
    /// reached first or the client hangs up.
    pub(super) async fn read_chunk(
        &mut self,
        mut size: u64,
        body: &mut Body,
        stop: Option<usize>,
    ) -> io::Result<BodyEnd> {
        while size > 0 {
            if body.reached(stop) {
                return Ok(BodyEnd::Stopped);
            }
            if self.buf.is_empty() && self.fill().await? == 0 {
                return Ok(BodyEnd::Eof);
            }
            let take = self
                .buf
                .len()
                .min(usize::try_from(size).unwrap_or(usize::MAX));
            body.push(&self.buf[..take]);
            self.buf.advance(take);
            size -= take as u64;
        }
        Ok(if body.reached(stop) {
            BodyEnd::Stopped
        } else {
            BodyEnd::Complete
        })
    }

    /// Reads a DATA body up to the line holding only a dot, undoing dot-stuffing. Only
    /// CRLF.CRLF ends it: a bare LF is body content like any other byte. Lines may be any
    /// length; memory is bounded by the body's cap.
    pub(super) async fn read_dot_body(
        &mut self,
        body: &mut Body,
        stop: Option<usize>,
    ) -> io::Result<BodyEnd> {
        let mut at_line_start = true;
        loop {
            match self.scan_dot_body(body, &mut at_line_start, stop) {
                Scan::Done => return Ok(BodyEnd::Complete),
                Scan::Stopped => return Ok(BodyEnd::Stopped),
                Scan::NeedMore => {
                    if self.fill().await? == 0 {
                        return Ok(BodyEnd::Eof);
                    }
                }
            }
        }
    }

    /// Moves whole lines (and the safe part of an unfinished one) from the buffer to `body`.
    fn scan_dot_body(
        &mut self,
        body: &mut Body,
        at_line_start: &mut bool,
        stop: Option<usize>,
    ) -> Scan {
        loop {
            if body.reached(stop) {
                return Scan::Stopped;
            }
            if *at_line_start {
                if self.buf.is_empty() {
                    return Scan::NeedMore;
                }
                if self.buf[0] == b'.' {
                    if self.buf.starts_with(b".\r\n") {
                        self.buf.advance(3);
                        return Scan::Done;
                    }
                    if b".\r\n".starts_with(&self.buf) {
                        return Scan::NeedMore; // "." or ".\r": cannot tell yet
                    }
                    self.buf.advance(1); // dot-unstuffing
                }
                *at_line_start = false;
            }
            match self.buf.windows(2).position(|w| w == b"\r\n") {
                Some(pos) => {
                    body.push(&self.buf[..pos + 2]);
                    self.buf.advance(pos + 2);
                    *at_line_start = true;
                }
                None => {
                    // Keep a trailing CR: it may be the first half of the line's CRLF.
                    let keep = usize::from(self.buf.last() == Some(&b'\r'));
                    let take = self.buf.len() - keep;
                    body.push(&self.buf[..take]);
                    self.buf.advance(take);
                    return Scan::NeedMore;
                }
            }
        }
    }

    /// Writes `reply`, one line per `\n` in its text, and flushes it.
    pub(super) async fn write_reply(&mut self, reply: &Reply) -> io::Result<()> {
        let lines: Vec<&str> = reply
            .text
            .split('\n')
            .map(|l| l.trim_end_matches('\r'))
            .collect();
        let mut out = String::new();
        for (i, line) in lines.iter().enumerate() {
            let sep = if i + 1 == lines.len() { ' ' } else { '-' };
            out.push_str(&format!("{}{sep}{line}\r\n", reply.code));
        }
        self.io.write_all(out.as_bytes()).await?;
        self.io.flush().await
    }

    /// Reads and discards input until the client hangs up: a stalled server.
    pub(super) async fn drain(&mut self) {
        loop {
            self.buf.clear();
            if !matches!(self.fill().await, Ok(n) if n > 0) {
                return;
            }
        }
    }

    /// Runs the server side of a TLS handshake over this connection. Anything the client
    /// pipelined after STARTTLS is dropped first: it arrived in the clear and must not be
    /// executed as if it came over TLS (CVE-2011-0411).
    pub(super) async fn start_tls(
        &mut self,
        config: Arc<rustls::ServerConfig>,
    ) -> io::Result<TlsInfo> {
        self.buf.clear();
        let placeholder: Box<dyn Io> =
            Box::new(tokio::io::join(tokio::io::empty(), tokio::io::sink()));
        let plain = std::mem::replace(&mut self.io, placeholder);
        let tls = TlsAcceptor::from(config).accept(plain).await?;
        let session = tls.get_ref().1;
        let info = TlsInfo {
            version: session.protocol_version(),
            sni: session.server_name().map(str::to_owned),
        };
        self.io = Box::new(tls);
        Ok(info)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A connection whose client has sent `input` and hung up.
    async fn conn_with(input: &[u8], max_line: usize) -> Conn {
        let (mut client, server) = tokio::io::duplex(input.len() + 1);
        client.write_all(input).await.unwrap();
        drop(client);
        Conn::new(Box::new(server), max_line)
    }

    #[tokio::test]
    async fn dot_body_is_unstuffed_and_ends_only_on_crlf_dot_crlf() {
        let input = b"a\r\n..b\r\n.\nc\n.\n\r\n.x\r\n.\r\nNOOP\r\n";
        let mut conn = conn_with(input, 100).await;
        let mut body = Body::new(1000);
        assert_eq!(
            conn.read_dot_body(&mut body, None).await.unwrap(),
            BodyEnd::Complete
        );
        assert_eq!(body.data, b"a\r\n.b\r\n\nc\n.\n\r\nx\r\n");
        assert_eq!(
            conn.read_line().await.unwrap(),
            Line::Text(b"NOOP".to_vec())
        );
    }

    #[tokio::test]
    async fn body_beyond_the_cap_is_counted_not_kept() {
        let mut conn = conn_with(b"0123456789\r\n.\r\n", 100).await;
        let mut body = Body::new(4);
        assert_eq!(
            conn.read_dot_body(&mut body, None).await.unwrap(),
            BodyEnd::Complete
        );
        assert_eq!(body.data, b"0123");
        assert!(body.oversize());
    }

    #[tokio::test]
    async fn over_long_lines_are_skipped_whole() {
        let mut input = vec![b'x'; 5000];
        input.extend_from_slice(b"\r\nQUIT\r\n");
        let mut conn = conn_with(&input, 100).await;
        assert_eq!(conn.read_line().await.unwrap(), Line::TooLong);
        assert_eq!(
            conn.read_line().await.unwrap(),
            Line::Text(b"QUIT".to_vec())
        );
        assert_eq!(conn.read_line().await.unwrap(), Line::Eof);
    }

    #[tokio::test]
    async fn chunks_are_read_exactly_and_stop_early_when_asked() {
        let mut conn = conn_with(b"abcdefNOOP\r\n", 100).await;
        let mut body = Body::new(100);
        assert_eq!(
            conn.read_chunk(3, &mut body, None).await.unwrap(),
            BodyEnd::Complete
        );
        assert_eq!(
            conn.read_chunk(3, &mut body, Some(4)).await.unwrap(),
            BodyEnd::Stopped
        );
        assert_eq!(body.data, b"abcdef");
        assert_eq!(
            conn.read_chunk(99, &mut body, None).await.unwrap(),
            BodyEnd::Eof
        );
    }
}
