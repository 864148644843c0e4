//! A small SMTP client for load: one [`Session`] per connection, many transactions each.
//!
//! With PIPELINING (RFC 2920) MAIL, every RCPT and DATA go in one write and the replies are
//! read in order; without it, one command per round trip. STARTTLS (any certificate) and
//! AUTH PLAIN (only over TLS) when asked. A refused transaction leaves the session usable
//! after RSET; an IO error, a timeout or a 421 ends it.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::io::{Conn, Io, Reply, conn, read_line};

/// The longest reply line accepted.
const MAX_LINE: usize = 4096;
/// The most lines one reply may have.
const MAX_LINES: usize = 100;

/// Where and how to connect.
#[derive(Debug, Clone)]
pub struct SmtpTarget {
    /// The server.
    pub addr: SocketAddr,
    /// The EHLO name.
    pub helo: String,
    /// STARTTLS before the first transaction (the server must offer it).
    pub starttls: bool,
    /// AUTH PLAIN `(user, password)` after STARTTLS.
    pub auth: Option<(String, String)>,
    /// Every command's reply, and the connection, within this.
    pub timeout: Duration,
}

/// Why a session or a transaction failed; [`SmtpError::key`] groups them in reports.
#[derive(Debug, thiserror::Error)]
pub enum SmtpError {
    /// Connecting, reading or writing failed.
    #[error("{phase}: {source}")]
    Io {
        phase: &'static str,
        source: io::Error,
    },
    /// No reply in time.
    #[error("{phase}: timed out")]
    Timeout { phase: &'static str },
    /// A reply that ends the session or the set-up (banner, EHLO, STARTTLS, AUTH, 421).
    #[error("{phase}: {reply}")]
    Refused { phase: &'static str, reply: Reply },
    /// Something that is not SMTP, or a missing extension.
    #[error("{phase}: {message}")]
    Protocol {
        phase: &'static str,
        message: String,
    },
}

impl SmtpError {
    /// `smtp 421 4.3.2`, `io connect`, `timeout data`: the report's error key.
    pub fn key(&self) -> String {
        match self {
            Self::Io { phase, source } => format!("io {phase}: {}", source.kind()),
            Self::Timeout { phase } => format!("timeout {phase}"),
            Self::Refused { reply, .. } => format!("smtp {}", reply.key()),
            Self::Protocol { phase, .. } => format!("protocol {phase}"),
        }
    }
}

/// What became of one transaction that got its replies.
#[derive(Debug, Clone)]
pub struct TxResult {
    /// The reply that decided the message: the final reply after the data, else the first
    /// refusal (MAIL, DATA, or the last RCPT's when every RCPT was refused).
    pub reply: Reply,
    /// The RCPT refusals (one per refused recipient).
    pub refused: Vec<Reply>,
    /// Recipients the server accepted (0 unless the message was accepted).
    pub accepted_rcpts: usize,
}

impl TxResult {
    /// Whether the server accepted the message (for at least one recipient).
    pub fn accepted(&self) -> bool {
        self.reply.is_positive()
    }
}

/// One SMTP connection.
pub struct Session {
    conn: Conn,
    pipelining: bool,
    /// The server announced SIZE: MAIL carries the message's size (as Postfix and
    /// Python's smtplib do), which lets a receiver size its buffer once.
    size: bool,
    timeout: Duration,
    line: Vec<u8>,
    out: Vec<u8>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("pipelining", &self.pipelining)
            .field("size", &self.size)
            .finish_non_exhaustive()
    }
}

impl Session {
    /// Connects: banner, EHLO, STARTTLS and EHLO again, AUTH, as `target` asks.
    pub async fn connect(target: &SmtpTarget) -> Result<Self, SmtpError> {
        let phase = "connect";
        let stream = tokio::time::timeout(target.timeout, TcpStream::connect(target.addr))
            .await
            .map_err(|_| SmtpError::Timeout { phase })?
            .map_err(|source| SmtpError::Io { phase, source })?;
        let _ = stream.set_nodelay(true);
        let mut session = Self {
            conn: conn(Box::new(stream)),
            pipelining: false,
            size: false,
            timeout: target.timeout,
            line: Vec::with_capacity(256),
            out: Vec::with_capacity(64 * 1024),
        };
        session.expect(2, "banner").await?;
        let mut ehlo = session.ehlo(&target.helo).await?;
        if target.starttls {
            session.starttls(&ehlo, target.addr).await?;
            ehlo = session.ehlo(&target.helo).await?;
        }
        if let Some((user, password)) = &target.auth {
            session.auth(user, password).await?;
        }
        session.pipelining = has_extension(&ehlo, "PIPELINING");
        session.size = has_extension(&ehlo, "SIZE");
        Ok(session)
    }

    async fn ehlo(&mut self, helo: &str) -> Result<Reply, SmtpError> {
        self.command(&format!("EHLO {helo}\r\n"), "ehlo").await?;
        self.expect(2, "ehlo").await
    }

    async fn starttls(&mut self, ehlo: &Reply, addr: SocketAddr) -> Result<(), SmtpError> {
        let phase = "starttls";
        if !has_extension(ehlo, "STARTTLS") {
            return Err(SmtpError::Protocol {
                phase,
                message: "the server does not offer STARTTLS".into(),
            });
        }
        self.command("STARTTLS\r\n", phase).await?;
        self.expect(2, phase).await?;
        if !self.conn.buffer().is_empty() {
            return Err(SmtpError::Protocol {
                phase,
                message: "data after the 220 to STARTTLS".into(),
            });
        }
        let config = crate::tls::client_config().map_err(|e| SmtpError::Protocol {
            phase,
            message: format!("{e:#}"),
        })?;
        let name = rustls::pki_types::ServerName::IpAddress(addr.ip().into());
        let placeholder: Box<dyn Io> = Box::new(tokio::io::duplex(1).0);
        let plain = std::mem::replace(&mut self.conn, conn(placeholder));
        let tls = tokio::time::timeout(
            self.timeout,
            TlsConnector::from(Arc::clone(&config)).connect(name, plain.into_inner()),
        )
        .await
        .map_err(|_| SmtpError::Timeout { phase })?
        .map_err(|source| SmtpError::Io { phase, source })?;
        self.conn = conn(Box::new(tls) as Box<dyn Io>);
        Ok(())
    }

    async fn auth(&mut self, user: &str, password: &str) -> Result<(), SmtpError> {
        let token =
            base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0{password}"));
        self.command(&format!("AUTH PLAIN {token}\r\n"), "auth")
            .await?;
        self.expect(2, "auth").await.map(drop)
    }

    /// One transaction. `Err` only when the session broke (IO, timeout, 421, garbage);
    /// refusals are in the [`TxResult`].
    pub async fn send(
        &mut self,
        from: &str,
        to: &[String],
        header: &[u8],
        body: &[u8],
    ) -> Result<TxResult, SmtpError> {
        let mut commands = Vec::with_capacity(to.len() + 2);
        commands.push(if self.size {
            // The message's size (header and body, before dot-stuffing), as RFC 1870 asks.
            format!("MAIL FROM:<{from}> SIZE={}\r\n", header.len() + body.len())
        } else {
            format!("MAIL FROM:<{from}>\r\n")
        });
        commands.extend(to.iter().map(|rcpt| format!("RCPT TO:<{rcpt}>\r\n")));
        commands.push("DATA\r\n".to_owned());
        let replies = if self.pipelining {
            self.out.clear();
            for c in &commands {
                self.out.extend_from_slice(c.as_bytes());
            }
            self.flush("mail").await?;
            let mut replies = Vec::with_capacity(commands.len());
            for _ in &commands {
                replies.push(self.reply("mail").await?);
            }
            replies
        } else {
            self.step_by_step(&commands).await?
        };
        self.finish(replies, to.len(), (header, body)).await
    }

    /// Without PIPELINING: stops at a refused MAIL, and sends DATA only when a recipient was
    /// accepted.
    async fn step_by_step(&mut self, commands: &[String]) -> Result<Vec<Reply>, SmtpError> {
        let mut replies = Vec::with_capacity(commands.len());
        let last = commands.len() - 1;
        for (i, c) in commands.iter().enumerate() {
            let refused_mail = i > 0 && !replies.first().is_some_and(Reply::is_positive);
            let no_rcpt = i == last && !replies[1..].iter().any(Reply::is_positive);
            if refused_mail || no_rcpt {
                break;
            }
            self.command(c, "mail").await?;
            replies.push(self.reply("mail").await?);
        }
        Ok(replies)
    }

    /// From the MAIL, RCPT and DATA replies (`replies[1..=rcpts]` are the RCPT replies, as
    /// many as were sent): sends the message after a 354 and reads the final reply; RSET
    /// after a refusal.
    async fn finish(
        &mut self,
        replies: Vec<Reply>,
        rcpts: usize,
        message: (&[u8], &[u8]),
    ) -> Result<TxResult, SmtpError> {
        let mail = &replies[0];
        let rcpt_replies = &replies[1..replies.len().min(rcpts + 1)];
        let data = replies.get(rcpts + 1);
        // After a refused MAIL the RCPT replies say nothing about the recipients.
        let refused: Vec<Reply> = if mail.is_positive() {
            rcpt_replies
                .iter()
                .filter(|r| !r.is_positive())
                .cloned()
                .collect()
        } else {
            Vec::new()
        };
        let accepted_rcpts = rcpt_replies.iter().filter(|r| r.is_positive()).count();
        let reply = if !mail.is_positive() {
            mail.clone()
        } else if accepted_rcpts == 0 {
            if data.is_some_and(|d| d.code == 354) {
                // A server that says 354 without a recipient gets a lone dot.
                self.send_data(b"", b"").await?;
            }
            refused.last().cloned().unwrap_or_else(|| mail.clone())
        } else {
            match data {
                Some(d) if d.code == 354 => self.send_data(message.0, message.1).await?,
                Some(d) => d.clone(),
                None => {
                    return Err(SmtpError::Protocol {
                        phase: "data",
                        message: "no reply to DATA".into(),
                    });
                }
            }
        };
        if reply.code == 421 {
            return Err(SmtpError::Refused {
                phase: "transaction",
                reply,
            });
        }
        let accepted = reply.is_positive();
        if !accepted {
            self.command("RSET\r\n", "rset").await?;
            self.expect(2, "rset").await?;
        }
        Ok(TxResult {
            reply,
            refused,
            accepted_rcpts: if accepted { accepted_rcpts } else { 0 },
        })
    }

    /// The message and the final dot; the reply after it.
    async fn send_data(&mut self, header: &[u8], body: &[u8]) -> Result<Reply, SmtpError> {
        self.out.clear();
        self.out.extend_from_slice(header);
        self.out.extend_from_slice(body);
        self.out.extend_from_slice(b".\r\n");
        self.flush("data").await?;
        self.reply("data").await
    }

    /// QUIT, waiting briefly for the 221.
    pub async fn quit(mut self) {
        if self.command("QUIT\r\n", "quit").await.is_ok() {
            let _ = self.reply("quit").await;
        }
        let _ = self.conn.get_mut().shutdown().await;
    }

    async fn command(&mut self, command: &str, phase: &'static str) -> Result<(), SmtpError> {
        self.out.clear();
        self.out.extend_from_slice(command.as_bytes());
        self.flush(phase).await
    }

    async fn flush(&mut self, phase: &'static str) -> Result<(), SmtpError> {
        let write = async {
            let stream = self.conn.get_mut();
            stream.write_all(&self.out).await?;
            stream.flush().await
        };
        tokio::time::timeout(self.timeout, write)
            .await
            .map_err(|_| SmtpError::Timeout { phase })?
            .map_err(|source| SmtpError::Io { phase, source })
    }

    /// A reply whose code starts with `class`, else [`SmtpError::Refused`].
    async fn expect(&mut self, class: u16, phase: &'static str) -> Result<Reply, SmtpError> {
        let reply = self.reply(phase).await?;
        if reply.code / 100 != class {
            return Err(SmtpError::Refused { phase, reply });
        }
        Ok(reply)
    }

    async fn reply(&mut self, phase: &'static str) -> Result<Reply, SmtpError> {
        tokio::time::timeout(self.timeout, self.read_reply(phase))
            .await
            .map_err(|_| SmtpError::Timeout { phase })?
    }

    async fn read_reply(&mut self, phase: &'static str) -> Result<Reply, SmtpError> {
        let mut lines = Vec::new();
        loop {
            let more = read_line(&mut self.conn, &mut self.line, MAX_LINE)
                .await
                .map_err(|source| SmtpError::Io { phase, source })?;
            if !more {
                let source = io::Error::new(io::ErrorKind::UnexpectedEof, "connection closed");
                return Err(SmtpError::Io { phase, source });
            }
            let text = String::from_utf8_lossy(&self.line).trim_end().to_owned();
            let last = text.as_bytes().get(3) != Some(&b'-');
            lines.push(text);
            if last || lines.len() >= MAX_LINES {
                break;
            }
        }
        Reply::from_lines(&lines).ok_or_else(|| SmtpError::Protocol {
            phase,
            message: format!("not an SMTP reply: {:?}", lines[0]),
        })
    }
}

/// Whether an EHLO reply offers `name` (a line of its text, case-insensitive).
fn has_extension(ehlo: &Reply, name: &str) -> bool {
    ehlo.text.lines().skip(1).any(|line| {
        line.split_ascii_whitespace()
            .next()
            .is_some_and(|word| word.eq_ignore_ascii_case(name))
    })
}
