//! AUTH PLAIN and LOGIN (RFC 4954), only over TLS.
//!
//! Never in clear text: AUTH is not advertised before TLS, and an AUTH command in clear
//! text is answered `538 5.7.11` without reading any credentials. Failed attempts are
//! counted per client IP across connections; past `limits.max_auth_failures_per_ip` in the
//! window the client gets `421 4.7.0` and is disconnected.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use kurir_core::ErrorCode;
use kurir_queue::Queue;
use kurir_smtp::{AuthMechanism, Reply};
use kurir_state::State;
use tokio::io::{AsyncRead, AsyncWrite};

use super::session::Session;

/// The outcome of a SASL exchange.
enum Sasl {
    Credentials {
        name: String,
        password: String,
    },
    Cancelled,
    Malformed,
    /// The client left or timed out (the reply is queued).
    Over,
}

impl<S, Q, St> Session<S, Q, St>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
    Q: Queue,
    St: State,
{
    pub(super) async fn auth(&mut self, mechanism: AuthMechanism, initial: Option<String>) {
        if let Some(refusal) = self.auth_refusal() {
            return self.fail(refusal);
        }
        if self.shared.auth_failures.is_blocked(self.ip()) {
            return self.reply(too_many_failures());
        }
        let sasl = match mechanism {
            AuthMechanism::Plain => self.sasl_plain(initial).await,
            AuthMechanism::Login => self.sasl_login(initial).await,
        };
        match sasl {
            Sasl::Credentials { name, password } => self.check(&name, &password).await,
            Sasl::Cancelled => self.fail(Reply::new(501, (5, 0, 0), "Authentication cancelled")),
            Sasl::Malformed => self.fail(Reply::new(501, (5, 5, 2), "Invalid SASL response")),
            Sasl::Over => self.closing = true,
        }
    }

    fn auth_refusal(&self) -> Option<Reply> {
        if !self.is_tls() {
            return Some(ErrorCode::EncryptionRequired.into());
        }
        if self.shared.credentials.is_empty() {
            return Some(ErrorCode::NotImplemented.into());
        }
        if self.greeting.is_none() {
            return Some(Reply::new(503, (5, 5, 1), "Send EHLO first"));
        }
        if self.auth.is_some() {
            return Some(Reply::new(503, (5, 5, 1), "Already authenticated"));
        }
        if self.tx.is_some() {
            return Some(Reply::new(
                503,
                (5, 5, 1),
                "AUTH not allowed in a transaction",
            ));
        }
        None
    }

    async fn check(&mut self, name: &str, password: &str) {
        match self.shared.credentials.verify(name, password).await {
            Some(user) => {
                tracing::info!(peer = %self.peer, user = %user.name, "authenticated");
                self.auth = Some(user);
                self.reply(Reply::new(235, (2, 7, 0), "Authentication successful"));
            }
            None => {
                tracing::info!(peer = %self.peer, "authentication failed");
                let blocked = self.shared.auth_failures.record(self.ip());
                self.fail(ErrorCode::AuthFailed.into());
                if blocked && !self.closing {
                    self.reply(too_many_failures());
                }
            }
        }
    }

    /// `authzid NUL authcid NUL password`; an authzid other than the user is refused.
    async fn sasl_plain(&mut self, initial: Option<String>) -> Sasl {
        let response = match initial {
            Some(r) if r == "=" => Vec::new(),
            Some(r) => match BASE64.decode(r.as_bytes()) {
                Ok(bytes) => bytes,
                Err(_) => return Sasl::Malformed,
            },
            None => match self.challenge("").await {
                Ok(bytes) => bytes,
                Err(sasl) => return sasl,
            },
        };
        let mut parts = response.split(|&b| b == 0);
        let (Some(authzid), Some(authcid), Some(password), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Sasl::Malformed;
        };
        if !authzid.is_empty() && authzid != authcid {
            return Sasl::Malformed;
        }
        credentials(authcid.to_vec(), password.to_vec())
    }

    async fn sasl_login(&mut self, initial: Option<String>) -> Sasl {
        let name = match initial.map(|r| BASE64.decode(r.as_bytes())) {
            Some(Ok(name)) => name,
            Some(Err(_)) => return Sasl::Malformed,
            None => match self.challenge("VXNlcm5hbWU6").await {
                Ok(name) => name,
                Err(sasl) => return sasl,
            },
        };
        match self.challenge("UGFzc3dvcmQ6").await {
            Ok(password) => credentials(name, password),
            Err(sasl) => sasl,
        }
    }

    /// Sends a `334` challenge and reads the base64 response.
    async fn challenge(&mut self, prompt: &str) -> Result<Vec<u8>, Sasl> {
        self.reply(Reply {
            code: 334,
            enhanced: None,
            lines: vec![prompt.to_owned()],
        });
        let line = match self.next_command().await {
            None => return Err(Sasl::Over),
            Some(Err(_)) => return Err(Sasl::Malformed),
            Some(Ok(line)) => line,
        };
        if line == b"*" {
            return Err(Sasl::Cancelled);
        }
        BASE64.decode(&line).map_err(|_| Sasl::Malformed)
    }
}

fn credentials(name: Vec<u8>, password: Vec<u8>) -> Sasl {
    match (String::from_utf8(name), String::from_utf8(password)) {
        (Ok(name), Ok(password)) if !name.is_empty() => Sasl::Credentials { name, password },
        _ => Sasl::Malformed,
    }
}

fn too_many_failures() -> Reply {
    Reply::new(
        421,
        (4, 7, 0),
        "Too many failed authentications, try again later",
    )
}
