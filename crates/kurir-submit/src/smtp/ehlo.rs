//! EHLO and HELO: the client names itself, the server lists what it offers.
//!
//! What is offered depends on the connection: STARTTLS only on a `starttls` listener with a
//! certificate and before TLS; AUTH only over TLS (never in clear text) and only when users
//! are configured.

use kurir_queue::Queue;
use kurir_smtp::Reply;
use kurir_state::State;
use tokio::io::{AsyncRead, AsyncWrite};

use super::config::ListenerMode;
use super::session::{Greeting, Session};

impl<S, Q, St> Session<S, Q, St>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
    Q: Queue,
    St: State,
{
    /// EHLO (`esmtp`) or HELO: resets any transaction (RFC 5321 §4.1.4).
    pub(super) fn ehlo(&mut self, host: String, esmtp: bool) {
        self.tx = None;
        let hostname = &self.shared.config.hostname;
        let first = format!("{hostname} Hello {host} [{}]", self.ip());
        let lines = if esmtp {
            let mut lines = vec![first];
            lines.extend(self.extensions());
            lines
        } else {
            vec![first]
        };
        self.greeting = Some(Greeting { host, esmtp });
        self.reply(Reply {
            code: 250,
            enhanced: None,
            lines,
        });
    }

    /// Whether STARTTLS may be used now.
    pub(super) fn starttls_available(&self) -> bool {
        self.mode == ListenerMode::Starttls && self.shared.tls.is_some() && !self.is_tls()
    }

    /// Whether AUTH may be used now.
    pub(super) fn auth_available(&self) -> bool {
        self.is_tls() && !self.shared.credentials.is_empty()
    }

    fn extensions(&self) -> Vec<String> {
        let mut ext = vec![
            "PIPELINING".to_owned(),
            format!("SIZE {}", self.shared.config.limits.max_message_size),
            "8BITMIME".to_owned(),
            "BINARYMIME".to_owned(),
            "CHUNKING".to_owned(),
            "SMTPUTF8".to_owned(),
            "ENHANCEDSTATUSCODES".to_owned(),
            "DSN".to_owned(),
        ];
        if self.starttls_available() {
            ext.push("STARTTLS".to_owned());
        }
        if self.auth_available() {
            ext.push("AUTH PLAIN LOGIN".to_owned());
        }
        ext.push("HELP".to_owned());
        ext
    }
}
