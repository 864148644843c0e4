//! STARTTLS (RFC 3207): upgrades the connection, forgetting everything said in clear text.
//!
//! Command injection defence: whatever the client sent after STARTTLS before the handshake
//! (a classic attack pipelines `STARTTLS\r\nMAIL FROM:…` so that a buggy server executes the
//! second command as if it came over TLS) is discarded from the line buffer unread. Bytes
//! still in the socket reach the TLS handshake as garbage and fail it.

use kurir_core::ErrorCode;
use kurir_queue::Queue;
use kurir_smtp::Reply;
use kurir_state::State;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::timeout;

use super::conn::Conn;
use super::session::Session;

impl<S, Q, St> Session<S, Q, St>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
    Q: Queue,
    St: State,
{
    pub(super) async fn starttls(&mut self) {
        if self.is_tls() {
            return self.fail(Reply::new(503, (5, 5, 1), "TLS already active"));
        }
        let Some(acceptor) = self
            .starttls_available()
            .then(|| self.shared.tls.as_ref().map(|t| t.acceptor()))
            .flatten()
        else {
            return self.fail(ErrorCode::NotImplemented.into());
        };
        self.reply(Reply::new(220, (2, 0, 0), "Ready to start TLS"));
        if !self.flush().await {
            self.closing = true;
            return;
        }
        let injected = self.lines.take_remaining();
        if !injected.is_empty() {
            tracing::warn!(peer = %self.peer, bytes = injected.len(), "discarded input pipelined after STARTTLS");
        }
        let Conn::Plain(stream) = std::mem::replace(&mut self.conn, Conn::Gone) else {
            self.closing = true;
            return;
        };
        let handshake = self.shared.config.timeouts.tls_handshake;
        match timeout(handshake, acceptor.accept(stream)).await {
            Ok(Ok(tls)) => self.conn = Conn::Tls(Box::new(tls)),
            Ok(Err(error)) => {
                tracing::info!(peer = %self.peer, %error, "TLS handshake failed");
                self.closing = true;
                return;
            }
            Err(_) => {
                tracing::info!(peer = %self.peer, "TLS handshake timed out");
                self.closing = true;
                return;
            }
        }
        // RFC 3207 §4.2: the client must start over with EHLO.
        self.greeting = None;
        self.tx = None;
        self.auth = None;
    }
}
