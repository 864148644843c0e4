//! One sink connection: a plain ESMTP server loop, quick rather than strict.
//!
//! Replies are gathered and written when the client has nothing more buffered
//! (PIPELINING), and before anything the client must wait for (354, 334, 220 to STARTTLS).
//! CHUNKING is offered, as the large receivers do: BDAT chunks are read whole, whatever the
//! reply to the commands before them (RFC 3030 §2).
//! AUTH accepts any credentials (it is offered only over TLS). Commands pipelined after
//! STARTTLS close the connection (CVE-2011-0411).

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;

use super::faults::FaultState;
use super::stats::Stats;
use crate::io::{Conn, Io, conn, read_line};
use crate::message::{HEADER, Stamp};

/// The longest command line.
const MAX_COMMAND: usize = 4096;
/// The longest line of message data (RFC 5321 says 1000; some senders are sloppy).
const MAX_DATA_LINE: usize = 64 * 1024;
/// How long a client may stay silent.
const IDLE_TIMEOUT: Duration = Duration::from_secs(300);
/// How long a TLS handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// What every session of one sink shares.
pub(crate) struct Shared {
    pub(crate) hostname: String,
    pub(crate) max_message_size: usize,
    pub(crate) tls: Option<TlsAcceptor>,
    pub(crate) faults: FaultState,
    pub(crate) stats: Stats,
    pub(crate) queue_ids: AtomicU64,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("hostname", &self.hostname)
            .field("tls", &self.tls.is_some())
            .field("faults", &self.faults)
            .finish_non_exhaustive()
    }
}

/// Serves one connection until it ends.
pub(crate) async fn run(stream: TcpStream, shared: Arc<Shared>) {
    let _ = stream.set_nodelay(true);
    shared.stats.opened();
    let session = Session {
        conn: conn(Box::new(stream)),
        shared: &shared,
        out: Vec::with_capacity(1024),
        line: Vec::with_capacity(1024),
        rng: fastrand::Rng::new(),
        tls: false,
        greeted: false,
        mail: false,
        rcpts: Vec::new(),
        chunks: Vec::new(),
        chunks_dropped: false,
    };
    // A broken connection is the client's business; nothing to report.
    let _ = session.serve().await;
    shared.stats.closed();
}

enum Next {
    Continue,
    Close,
}

struct Session<'a> {
    conn: Conn,
    shared: &'a Shared,
    out: Vec<u8>,
    line: Vec<u8>,
    rng: fastrand::Rng,
    tls: bool,
    greeted: bool,
    mail: bool,
    rcpts: Vec<String>,
    /// The BDAT chunks of the transaction so far (dropped past the size limit).
    chunks: Vec<u8>,
    /// A chunk of the transaction went past the size limit.
    chunks_dropped: bool,
}

impl Session<'_> {
    async fn serve(mut self) -> io::Result<()> {
        let banner = format!("220 {} ESMTP kurir-loadtest sink\r\n", self.shared.hostname);
        self.reply(&banner);
        loop {
            if self.conn.buffer().is_empty() {
                self.flush().await?;
            }
            if !self.read(MAX_COMMAND).await? {
                return Ok(());
            }
            if let Next::Close = self.command().await? {
                self.flush().await?;
                let _ = self.conn.get_mut().shutdown().await;
                return Ok(());
            }
        }
    }

    async fn command(&mut self) -> io::Result<Next> {
        let line = String::from_utf8_lossy(&self.line).trim_end().to_owned();
        let (verb, arg) = line.split_once(' ').unwrap_or((line.as_str(), ""));
        match verb.to_ascii_uppercase().as_str() {
            "EHLO" => self.ehlo(arg),
            "HELO" => {
                self.greeted = true;
                self.reply(&format!("250 {}\r\n", self.shared.hostname));
            }
            "STARTTLS" => return self.starttls().await,
            "AUTH" => self.auth(arg).await?,
            "MAIL" => self.mail(),
            "RCPT" => self.rcpt(arg),
            "DATA" => return self.data().await,
            "BDAT" => return self.bdat(arg).await,
            "RSET" => {
                self.reset();
                self.reply("250 2.0.0 Ok\r\n");
            }
            "NOOP" => self.reply("250 2.0.0 Ok\r\n"),
            "QUIT" => {
                self.reply("221 2.0.0 Bye\r\n");
                return Ok(Next::Close);
            }
            _ => self.reply("502 5.5.2 Command not recognised\r\n"),
        }
        Ok(Next::Continue)
    }

    fn ehlo(&mut self, name: &str) {
        self.reset();
        self.greeted = true;
        let mut lines = vec![
            format!("{} greets {name}", self.shared.hostname),
            "PIPELINING".to_owned(),
            "8BITMIME".to_owned(),
            "SMTPUTF8".to_owned(),
            "ENHANCEDSTATUSCODES".to_owned(),
            "CHUNKING".to_owned(),
            format!("SIZE {}", self.shared.max_message_size),
        ];
        if self.shared.tls.is_some() && !self.tls {
            lines.push("STARTTLS".to_owned());
        }
        if self.tls {
            lines.push("AUTH PLAIN LOGIN".to_owned());
        }
        let last = lines.len() - 1;
        for (i, line) in lines.iter().enumerate() {
            let sep = if i == last { ' ' } else { '-' };
            self.reply(&format!("250{sep}{line}\r\n"));
        }
    }

    async fn starttls(&mut self) -> io::Result<Next> {
        let Some(acceptor) = self.shared.tls.clone().filter(|_| !self.tls) else {
            self.reply("454 4.7.0 TLS not available\r\n");
            return Ok(Next::Continue);
        };
        self.reply("220 2.0.0 Ready to start TLS\r\n");
        self.flush().await?;
        if !self.conn.buffer().is_empty() {
            return Ok(Next::Close);
        }
        let placeholder: Box<dyn Io> = Box::new(tokio::io::duplex(1).0);
        let plain = std::mem::replace(&mut self.conn, conn(placeholder)).into_inner();
        let tls = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(plain))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "TLS handshake"))??;
        self.conn = conn(Box::new(tls));
        self.tls = true;
        self.greeted = false;
        self.reset();
        Ok(Next::Continue)
    }

    /// Any credentials will do: PLAIN with or without an initial response, or LOGIN.
    async fn auth(&mut self, arg: &str) -> io::Result<()> {
        let mut words = arg.split_ascii_whitespace();
        let mechanism = words.next().unwrap_or("").to_ascii_uppercase();
        let prompts: &[&str] = match (mechanism.as_str(), words.next()) {
            ("PLAIN", Some(_)) => &[],
            ("PLAIN", None) => &["334 \r\n"],
            ("LOGIN", _) => &["334 VXNlcm5hbWU6\r\n", "334 UGFzc3dvcmQ6\r\n"],
            _ => {
                self.reply("504 5.5.4 Unrecognised authentication mechanism\r\n");
                return Ok(());
            }
        };
        for prompt in prompts {
            self.reply(prompt);
            self.flush().await?;
            if !self.read(MAX_COMMAND).await? {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        }
        self.reply("235 2.7.0 Authentication successful\r\n");
        Ok(())
    }

    fn mail(&mut self) {
        if !self.greeted {
            self.reply("503 5.5.1 EHLO first\r\n");
        } else if self.mail {
            self.reply("503 5.5.1 Nested MAIL\r\n");
        } else {
            self.mail = true;
            self.reply("250 2.1.0 Ok\r\n");
        }
    }

    fn rcpt(&mut self, arg: &str) {
        if !self.mail {
            self.reply("503 5.5.1 MAIL first\r\n");
            return;
        }
        let Some(rcpt) = path(arg) else {
            self.reply("501 5.1.3 Bad recipient address syntax\r\n");
            return;
        };
        match self.shared.faults.at_rcpt(rcpt, &mut self.rng) {
            Some(refusal) => {
                self.shared.stats.refused(rcpt, refusal.code, refusal.key());
                let line = refusal.line(rcpt);
                self.reply(&line);
            }
            None => {
                self.rcpts.push(rcpt.to_owned());
                self.reply("250 2.1.5 Ok\r\n");
            }
        }
    }

    async fn data(&mut self) -> io::Result<Next> {
        if !self.mail || self.rcpts.is_empty() {
            self.reply(if self.mail {
                "554 5.5.1 No valid recipients\r\n"
            } else {
                "503 5.5.1 MAIL first\r\n"
            });
            return Ok(Next::Continue);
        }
        self.reply("354 End data with <CR><LF>.<CR><LF>\r\n");
        self.flush().await?;
        let Some((stamp, size)) = self.read_message().await? else {
            return Ok(Next::Close);
        };
        self.end_of_message(stamp, size).await
    }

    /// `BDAT <size> [LAST]`: the chunk is read first, then answered.
    async fn bdat(&mut self, arg: &str) -> io::Result<Next> {
        let mut words = arg.split_ascii_whitespace();
        let size = words.next().and_then(|n| n.parse::<u64>().ok());
        let last = match words.next() {
            None => false,
            Some(word) if word.eq_ignore_ascii_case("LAST") => true,
            Some(_) => {
                self.reply("501 5.5.4 Syntax: BDAT size [LAST]\r\n");
                return Ok(Next::Close);
            }
        };
        // Without a size the chunk cannot be skipped: the session is out of step.
        let Some(size) = size.filter(|_| words.next().is_none()) else {
            self.reply("501 5.5.4 Syntax: BDAT size [LAST]\r\n");
            return Ok(Next::Close);
        };
        let keep = self.mail
            && !self.rcpts.is_empty()
            && (self.chunks.len() as u64).saturating_add(size)
                <= self.shared.max_message_size as u64;
        // The chunk is kept (growing with what arrives, nothing reserved from the size a
        // client claims) or skipped, within the idle timeout.
        let mut chunk = (&mut self.conn).take(size);
        let read = if keep {
            let kept = async { chunk.read_to_end(&mut self.chunks).await.map(|n| n as u64) };
            tokio::time::timeout(IDLE_TIMEOUT, kept).await
        } else {
            let mut discard = tokio::io::sink();
            tokio::time::timeout(IDLE_TIMEOUT, tokio::io::copy(&mut chunk, &mut discard)).await
        };
        if !matches!(read, Ok(Ok(n)) if n == size) {
            return Ok(Next::Close);
        }
        if !self.mail || self.rcpts.is_empty() {
            self.reply(if self.mail {
                "554 5.5.1 No valid recipients\r\n"
            } else {
                "503 5.5.1 MAIL first\r\n"
            });
            self.reset();
            return Ok(Next::Continue);
        }
        if !keep {
            // Too large: the rest is skipped and the message refused at its end.
            self.chunks = Vec::new();
            self.chunks_dropped = true;
        }
        if !last {
            self.reply(&format!("250 2.0.0 {size} octets received\r\n"));
            return Ok(Next::Continue);
        }
        let size = if self.chunks_dropped {
            usize::MAX
        } else {
            self.chunks.len()
        };
        // `end_of_message` resets the transaction, which empties the buffer and keeps it.
        self.end_of_message(stamp_in(&self.chunks), size).await
    }

    /// Answers a whole message (DATA or the LAST BDAT chunk) of `size` bytes.
    async fn end_of_message(&mut self, stamp: Option<Stamp>, size: usize) -> io::Result<Next> {
        if size > self.shared.max_message_size {
            self.reply("552 5.3.4 Message too big\r\n");
        } else if self.shared.faults.disconnect(&mut self.rng) {
            self.shared.stats.disconnected();
            return Ok(Next::Close);
        } else {
            let latency = self.shared.faults.faults.latency;
            if !latency.is_zero() {
                self.flush().await?;
                tokio::time::sleep(latency).await;
            }
            self.shared
                .stats
                .accepted(stamp.as_ref(), &self.rcpts, size);
            let id = self.shared.queue_ids.fetch_add(1, Ordering::Relaxed);
            self.reply(&format!("250 2.0.0 Ok: queued as {id:x}\r\n"));
        }
        self.reset();
        Ok(Next::Continue)
    }

    /// Reads the data up to the final dot: the stamp of its header and its size. `None`
    /// when the connection ended first.
    async fn read_message(&mut self) -> io::Result<Option<(Option<Stamp>, usize)>> {
        let mut in_header = true;
        let mut stamp = None;
        let mut size = 0;
        loop {
            if !self.read(MAX_DATA_LINE).await? {
                return Ok(None);
            }
            if self.line == b".\r\n" || self.line == b".\n" {
                return Ok(Some((stamp, size)));
            }
            size += self.line.len();
            if in_header {
                if self.line == b"\r\n" || self.line == b"\n" {
                    in_header = false;
                } else if stamp.is_none() {
                    stamp = stamp_of(&self.line);
                }
            }
        }
    }

    fn reset(&mut self) {
        self.mail = false;
        self.rcpts.clear();
        self.chunks.clear();
        self.chunks_dropped = false;
    }

    fn reply(&mut self, text: &str) {
        self.out.extend_from_slice(text.as_bytes());
    }

    async fn flush(&mut self) -> io::Result<()> {
        if self.out.is_empty() {
            return Ok(());
        }
        let stream = self.conn.get_mut();
        stream.write_all(&self.out).await?;
        stream.flush().await?;
        self.out.clear();
        Ok(())
    }

    async fn read(&mut self, limit: usize) -> io::Result<bool> {
        tokio::time::timeout(
            IDLE_TIMEOUT,
            read_line(&mut self.conn, &mut self.line, limit),
        )
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "idle"))?
    }
}

/// The address in `FROM:<a@b> …` / `TO:<a@b> …`.
fn path(arg: &str) -> Option<&str> {
    let start = arg.find('<')? + 1;
    let end = start + arg[start..].find('>')?;
    let address = arg[start..end].trim();
    (!address.is_empty()).then_some(address)
}

/// The stamp in the header of a whole message.
fn stamp_in(message: &[u8]) -> Option<Stamp> {
    message
        .split_inclusive(|&b| b == b'\n')
        .take_while(|line| *line != b"\r\n" && *line != b"\n")
        .find_map(stamp_of)
}

/// The stamp of an `X-Kurir-Loadtest:` header line.
fn stamp_of(line: &[u8]) -> Option<Stamp> {
    let colon = line.iter().position(|&b| b == b':')?;
    if !line[..colon].eq_ignore_ascii_case(HEADER.as_bytes()) {
        return None;
    }
    Stamp::parse(std::str::from_utf8(&line[colon + 1..]).ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_stamps_are_read() {
        assert_eq!(path("TO:<a@b.test> NOTIFY=NEVER"), Some("a@b.test"));
        assert_eq!(path("FROM:<>"), None);
        assert_eq!(path("TO:a@b.test"), None);
        let stamp = stamp_of(b"x-kurir-loadtest: run 3 1700000000000000000\r\n").unwrap();
        assert_eq!((stamp.run_id.as_str(), stamp.seq), ("run", 3));
        assert!(stamp_of(b"Subject: x-kurir-loadtest: run 3 4\r\n").is_none());
    }
}
