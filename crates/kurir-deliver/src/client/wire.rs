//! The byte level of a client session: the stream (plain TCP, TLS, or closed), one read
//! buffer that replies are parsed from, and writes, each bounded by a phase's timeout.
//!
//! Replies are parsed with `smtp-proto`'s streaming [`ResponseReceiver`]: it consumes
//! exactly one reply from the buffer and leaves whatever follows it there. That is what
//! makes PIPELINING work (several replies may arrive in one read) and what lets STARTTLS
//! check that nothing was sent after its 220 (see [`Wire::has_buffered`]).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::BytesMut;
use smtp_proto::response::parser::ResponseReceiver;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use super::{ClientError, Phase};
use crate::reply::RemoteReply;

/// How much to ask the socket for at a time.
const READ_CHUNK: usize = 8 * 1024;

/// Writes are gathered into buffers of about this size: few syscalls (and full TLS
/// records) for large bodies, without copying a large body whole.
pub(super) const WRITE_CHUNK: usize = 64 * 1024;

/// The most bytes one reply may take on the wire (the parser caps the text at 4 KiB; this
/// bounds what it may skip, such as very long runs of continuation codes).
const MAX_REPLY_BYTES: usize = 64 * 1024;

/// The transport under the session.
pub(super) enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
    /// After the plain stream was handed to the TLS handshake, or once the session broke.
    Closed,
}

fn not_connected() -> io::Error {
    io::Error::new(io::ErrorKind::NotConnected, "connection closed")
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            Self::Closed => Poll::Ready(Err(not_connected())),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            Self::Closed => Poll::Ready(Err(not_connected())),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_flush(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Self::Closed => Poll::Ready(Ok(())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            Self::Closed => Poll::Ready(Ok(())),
        }
    }
}

/// One session's stream and read buffer.
pub(super) struct Wire {
    stream: Stream,
    buf: BytesMut,
    receiver: ResponseReceiver,
}

impl std::fmt::Debug for Wire {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let transport = match self.stream {
            Stream::Plain(_) => "plain",
            Stream::Tls(_) => "tls",
            Stream::Closed => "closed",
        };
        f.debug_struct("Wire")
            .field("transport", &transport)
            .field("buffered", &self.buf.len())
            .finish_non_exhaustive()
    }
}

/// Runs `fut` under `limit`; a timeout becomes [`ClientError::Timeout`] for `phase`.
pub(super) async fn bounded<T>(
    phase: Phase,
    limit: Duration,
    fut: impl Future<Output = Result<T, ClientError>>,
) -> Result<T, ClientError> {
    tokio::time::timeout(limit, fut)
        .await
        .unwrap_or(Err(ClientError::Timeout {
            phase,
            after: limit,
        }))
}

impl Wire {
    pub(super) fn new(stream: Stream) -> Self {
        Self {
            stream,
            buf: BytesMut::with_capacity(READ_CHUNK),
            receiver: ResponseReceiver::default(),
        }
    }

    /// Whether bytes the server sent are waiting, unread, after the last reply.
    pub(super) fn has_buffered(&self) -> bool {
        !self.buf.is_empty()
    }

    /// The plain TCP stream, for the TLS handshake; the wire is closed afterwards.
    pub(super) fn take_plain(&mut self) -> Option<TcpStream> {
        match std::mem::replace(&mut self.stream, Stream::Closed) {
            Stream::Plain(tcp) => Some(tcp),
            other => {
                self.stream = other;
                None
            }
        }
    }

    /// Writes `bytes` whole and flushes, within `limit`.
    pub(super) async fn send(
        &mut self,
        bytes: &[u8],
        phase: Phase,
        limit: Duration,
    ) -> Result<(), ClientError> {
        let write = async {
            self.stream.write_all(bytes).await?;
            self.stream.flush().await
        };
        bounded(phase, limit, io_of(phase, write)).await
    }

    /// Writes `pieces` in order, gathered into [`WRITE_CHUNK`]-sized writes (a piece at
    /// least that large is written without copying), then flushes; all within `limit`.
    pub(super) async fn send_pieces(
        &mut self,
        pieces: &[&[u8]],
        phase: Phase,
        limit: Duration,
    ) -> Result<(), ClientError> {
        let write = async {
            let mut out = Vec::with_capacity(WRITE_CHUNK);
            for piece in pieces {
                if out.len() + piece.len() <= WRITE_CHUNK {
                    out.extend_from_slice(piece);
                    continue;
                }
                if !out.is_empty() {
                    self.stream.write_all(&out).await?;
                    out.clear();
                }
                if piece.len() >= WRITE_CHUNK {
                    self.stream.write_all(piece).await?;
                } else {
                    out.extend_from_slice(piece);
                }
            }
            self.stream.write_all(&out).await?;
            self.stream.flush().await
        };
        bounded(phase, limit, io_of(phase, write)).await
    }

    /// Reads the next reply within `limit`.
    pub(super) async fn reply(
        &mut self,
        phase: Phase,
        limit: Duration,
    ) -> Result<RemoteReply, ClientError> {
        bounded(phase, limit, self.next_reply(phase, None)).await
    }

    /// Reads the next reply within `limit`, with the bytes it took on the wire (for the
    /// EHLO reply, whose keywords are parsed from them).
    pub(super) async fn reply_with_raw(
        &mut self,
        phase: Phase,
        limit: Duration,
    ) -> Result<(RemoteReply, Vec<u8>), ClientError> {
        let mut raw = Vec::new();
        let reply = bounded(phase, limit, self.next_reply(phase, Some(&mut raw))).await?;
        Ok((reply, raw))
    }

    async fn next_reply(
        &mut self,
        phase: Phase,
        mut raw: Option<&mut Vec<u8>>,
    ) -> Result<RemoteReply, ClientError> {
        let mut taken = 0;
        loop {
            if !self.buf.is_empty() {
                let mut unread = self.buf.iter();
                let parsed = self.receiver.parse(&mut unread);
                let consumed = self.buf.len() - unread.len();
                let bytes = self.buf.split_to(consumed);
                taken += consumed;
                if let Some(raw) = raw.as_deref_mut() {
                    raw.extend_from_slice(&bytes);
                }
                match parsed {
                    Ok(response) => {
                        self.receiver.reset();
                        return to_remote(phase, response);
                    }
                    Err(smtp_proto::Error::NeedsMoreData { .. }) => {}
                    Err(error) => return Err(protocol(phase, format!("bad reply: {error:?}"))),
                }
            }
            if taken > MAX_REPLY_BYTES {
                return Err(protocol(phase, "reply too long".to_owned()));
            }
            self.buf.reserve(READ_CHUNK);
            let n = self
                .stream
                .read_buf(&mut self.buf)
                .await
                .map_err(|source| ClientError::Io { phase, source })?;
            if n == 0 {
                return Err(ClientError::Io {
                    phase,
                    source: io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "connection closed by the server",
                    ),
                });
            }
        }
    }

    /// Closes the write side (TLS close_notify first), best effort.
    pub(super) async fn shutdown(&mut self) {
        let _ = self.stream.shutdown().await;
        self.stream = Stream::Closed;
    }
}

fn protocol(phase: Phase, detail: String) -> ClientError {
    ClientError::Protocol { phase, detail }
}

/// A parsed reply as a [`RemoteReply`]; codes outside 2xx–5xx break the protocol.
fn to_remote(
    phase: Phase,
    response: smtp_proto::Response<String>,
) -> Result<RemoteReply, ClientError> {
    if !(200..600).contains(&response.code) {
        return Err(protocol(
            phase,
            format!("reply code {} out of range", response.code),
        ));
    }
    let [class, subject, detail] = response.esc;
    // A class of 0 is how the parser says "no enhanced code" (real ones are 2, 4 or 5).
    let enhanced = (class != 0).then(|| format!("{class}.{subject}.{detail}"));
    Ok(RemoteReply {
        code: response.code,
        enhanced,
        text: response.message,
    })
}

/// Awaits an IO future, its error becoming [`ClientError::Io`] of `phase`.
async fn io_of<T>(
    phase: Phase,
    fut: impl Future<Output = io::Result<T>>,
) -> Result<T, ClientError> {
    fut.await
        .map_err(|source| ClientError::Io { phase, source })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A wire whose server has sent `input` (and then waits).
    async fn wire_with(input: &[u8]) -> (Wire, TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap());
        let (client, accepted) = tokio::join!(client, listener.accept());
        let (mut server, _) = accepted.unwrap();
        server.write_all(input).await.unwrap();
        (Wire::new(Stream::Plain(client.unwrap())), server)
    }

    #[tokio::test]
    async fn replies_are_read_one_at_a_time_from_one_buffer() {
        let input = b"250-2.1.0 first\r\n250 2.1.0 second\r\n550 5.1.1 no such user\r\n354 go\r\n";
        let (mut wire, _server) = wire_with(input).await;
        let limit = Duration::from_secs(5);
        let first = wire.reply(Phase::Mail, limit).await.unwrap();
        assert_eq!(first, RemoteReply::new(250, Some("2.1.0"), "first\nsecond"));
        assert!(wire.has_buffered());
        let second = wire.reply(Phase::Rcpt, limit).await.unwrap();
        assert_eq!(second, RemoteReply::new(550, Some("5.1.1"), "no such user"));
        let third = wire.reply(Phase::Data, limit).await.unwrap();
        assert_eq!(third, RemoteReply::new(354, None, "go"));
        assert!(!wire.has_buffered());
    }

    #[tokio::test]
    async fn garbage_and_eof_are_errors() {
        let (mut wire, server) = wire_with(b"hello\r\n").await;
        let limit = Duration::from_secs(5);
        let err = wire.reply(Phase::Banner, limit).await.unwrap_err();
        assert!(matches!(err, ClientError::Protocol { .. }), "{err}");
        drop(server);
        let (mut wire, server) = wire_with(b"220 partial").await;
        drop(server);
        let err = wire.reply(Phase::Banner, limit).await.unwrap_err();
        assert!(matches!(err, ClientError::Io { .. }), "{err}");
    }

    #[tokio::test]
    async fn a_silent_server_times_out() {
        let (mut wire, _server) = wire_with(b"").await;
        let err = wire
            .reply(Phase::Banner, Duration::from_millis(50))
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                ClientError::Timeout {
                    phase: Phase::Banner,
                    ..
                }
            ),
            "{err}"
        );
    }
}
