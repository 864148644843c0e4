//! One SMTP session: the command loop, each verb, and where the script ([`super::rules`])
//! is consulted.
//!
//! Order of checks for every command: syntax and sequence errors first (they are the
//! protocol, not the script), then the rules for the stage, then the default, which accepts.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use super::auth;
use super::conn::{Body, BodyEnd, Conn, Io, Line};
use super::record::{AuthInfo, Rcpt, Reply, TlsInfo, Transaction};
use super::rules::{Action, Ctx, Stage};
use super::{ConnGuard, Extensions, Shared};

/// After this many refused commands a session is closed with 421, so that a client stuck in
/// a loop (or junk on the port) ends.
const MAX_ERRORS: u32 = 50;

#[derive(Debug, PartialEq, Eq)]
enum Flow {
    Continue,
    Close,
}

/// What the rules decided for a stage, before anything is sent.
#[derive(Debug)]
enum Step {
    Default,
    Reply(Reply),
    Close,
    /// Read at least this many body bytes, then close.
    CutBody(usize),
}

/// The client's answer to a `334` challenge.
#[derive(Debug)]
enum Answer {
    Text(String),
    /// `*`: the client cancelled the exchange.
    Cancelled,
    /// The client hung up or sent an over-long line.
    Broken,
}

/// A transaction being received.
#[derive(Debug)]
struct Open {
    record: Transaction,
    body: Body,
}

#[derive(Debug)]
struct Session {
    conn: Conn,
    shared: Arc<Shared>,
    guard: ConnGuard,
    peer: SocketAddr,
    /// The extensions as of the last EHLO (or the connection start).
    ext: Extensions,
    ehlo: Option<String>,
    tls: Option<TlsInfo>,
    /// Set by a successful AUTH; forgotten at STARTTLS.
    auth: Option<AuthInfo>,
    txn: Option<Open>,
    errors: u32,
    /// The greeting was a refusal: only QUIT is served (RFC 5321 3.1).
    no_service: bool,
    /// A 421 was sent: the session ends after it.
    closing: bool,
}

/// Serves one connection until either side ends it, then records any unfinished transaction.
pub(super) async fn run(io: Box<dyn Io>, peer: SocketAddr, shared: Arc<Shared>, guard: ConnGuard) {
    let ext = shared.extensions();
    let conn = Conn::new(io, shared.limits.max_line);
    let mut session = Session {
        conn,
        shared,
        guard,
        peer,
        ext,
        ehlo: None,
        tls: None,
        auth: None,
        txn: None,
        errors: 0,
        no_service: false,
        closing: false,
    };
    if let Err(error) = session.serve().await {
        tracing::debug!(connection = session.guard.id, %error, "smtp sink session failed");
    }
    session.abandon();
}

impl Session {
    async fn serve(&mut self) -> io::Result<()> {
        if self.banner().await? == Flow::Close {
            return Ok(());
        }
        while !self.closing {
            let flow = match self.conn.read_line().await? {
                Line::Eof => return Ok(()),
                Line::TooLong => self.error(500, "5.5.2", "line too long").await?,
                Line::Text(line) => self.command(&String::from_utf8_lossy(&line)).await?,
            };
            if flow == Flow::Close {
                return Ok(());
            }
        }
        Ok(())
    }

    async fn command(&mut self, line: &str) -> io::Result<Flow> {
        let (verb, args) = line
            .trim_end()
            .split_once(' ')
            .unwrap_or((line.trim_end(), ""));
        let verb = verb.to_ascii_uppercase();
        if self.no_service && verb != "QUIT" {
            return self.error(503, "5.5.1", "no service, only QUIT").await;
        }
        if let Some(open) = self.txn.as_mut() {
            open.record.commands.push(verb.clone());
        }
        match verb.as_str() {
            "EHLO" => self.ehlo(args, true).await,
            "HELO" => self.ehlo(args, false).await,
            "STARTTLS" => self.starttls(args).await,
            "AUTH" => self.auth(args).await,
            "MAIL" => self.mail(args).await,
            "RCPT" => self.rcpt(args).await,
            "DATA" => self.data(args).await,
            "BDAT" => self.bdat(args).await,
            "RSET" => {
                self.abandon();
                self.ok("2.0.0", "OK").await
            }
            "NOOP" => self.ok("2.0.0", "OK").await,
            "QUIT" => self.quit().await,
            _ => self.error(500, "5.5.1", "command not recognized").await,
        }
    }

    async fn banner(&mut self) -> io::Result<Flow> {
        let step = self.script(Stage::Banner, None).await?;
        let default = Reply::new(
            220,
            format!("{} ESMTP kurir-testkit sink", self.shared.hostname),
        );
        match self.answer(step, default).await? {
            None => Ok(Flow::Close),
            Some(reply) => {
                self.no_service = reply.code != 220;
                Ok(Flow::Continue)
            }
        }
    }

    async fn ehlo(&mut self, args: &str, extended: bool) -> io::Result<Flow> {
        let name = args.trim();
        if name.is_empty() {
            return self.error(501, "5.5.4", "a domain is required").await;
        }
        self.abandon();
        self.ext = self.shared.extensions();
        let step = self.script(Stage::Ehlo, None).await?;
        let default = if extended {
            self.ehlo_reply(name)
        } else {
            Reply::new(250, self.shared.hostname.clone())
        };
        let Some(reply) = self.answer(step, default).await? else {
            return Ok(Flow::Close);
        };
        if reply.code / 100 == 2 {
            self.ehlo = Some(name.to_owned());
        }
        Ok(Flow::Continue)
    }

    /// The multi-line EHLO reply listing the configured extensions.
    fn ehlo_reply(&self, name: &str) -> Reply {
        let ext = &self.ext;
        let mut lines = vec![format!("{} greets {name}", self.shared.hostname)];
        let flags = [
            (ext.pipelining, "PIPELINING"),
            (ext.eightbitmime, "8BITMIME"),
            (ext.smtputf8, "SMTPUTF8"),
            (ext.chunking, "CHUNKING"),
            (ext.enhanced_status_codes, "ENHANCEDSTATUSCODES"),
            (ext.dsn, "DSN"),
            (ext.auth.is_some() && self.tls.is_some(), "AUTH PLAIN LOGIN"),
            (ext.starttls.is_some() && self.tls.is_none(), "STARTTLS"),
        ];
        if let Some(size) = ext.size {
            lines.push(format!("SIZE {size}"));
        }
        lines.extend(
            flags
                .iter()
                .filter(|(on, _)| *on)
                .map(|(_, name)| (*name).to_owned()),
        );
        Reply::new(250, lines.join("\n"))
    }

    async fn starttls(&mut self, args: &str) -> io::Result<Flow> {
        if self.tls.is_some() {
            return self.error(503, "5.5.1", "TLS already active").await;
        }
        let Some(config) = self.ext.starttls.clone() else {
            return self.error(502, "5.5.1", "STARTTLS not offered").await;
        };
        if !args.trim().is_empty() {
            return self
                .error(501, "5.5.4", "STARTTLS takes no arguments")
                .await;
        }
        let step = self.script(Stage::StartTls, None).await?;
        let default = self.plain(220, "2.0.0", "ready to start TLS");
        match self.answer(step, default).await? {
            None => Ok(Flow::Close),
            Some(reply) if reply.code != 220 => Ok(Flow::Continue),
            Some(_) => {
                // RFC 3207: the session starts over, forgetting EHLO and any transaction.
                self.abandon();
                self.ehlo = None;
                self.auth = None;
                match self.conn.start_tls(config).await {
                    Ok(info) => {
                        self.tls = Some(info);
                        Ok(Flow::Continue)
                    }
                    Err(error) => {
                        tracing::debug!(connection = self.guard.id, %error, "smtp sink TLS handshake failed");
                        Ok(Flow::Close)
                    }
                }
            }
        }
    }

    async fn mail(&mut self, args: &str) -> io::Result<Flow> {
        let Some(ehlo) = self.ehlo.clone() else {
            return self.error(503, "5.5.1", "EHLO first").await;
        };
        if self.txn.is_some() {
            return self
                .error(503, "5.5.1", "transaction already started")
                .await;
        }
        if self.ext.auth.is_some() && self.auth.is_none() {
            return self.error(530, "5.7.0", "authentication required").await;
        }
        let Some((path, params)) = parse_path(args, "FROM:") else {
            return self.error(501, "5.5.4", "syntax: MAIL FROM:<path>").await;
        };
        let default = self.mail_default(&params);
        let message = self.shared.next_message();
        let record = Transaction {
            connection: self.guard.id,
            peer: self.peer,
            message,
            ehlo,
            tls: self.tls.clone(),
            auth: self.auth.clone(),
            mail_from: path,
            mail_params: params,
            rcpts: Vec::new(),
            commands: vec!["MAIL".to_owned()],
            pipelined: self.conn.has_buffered(),
            body: Vec::new(),
            bdat: false,
            final_reply: None,
        };
        self.txn = Some(Open {
            record,
            body: Body::new(self.body_cap()),
        });
        let step = self.script(Stage::Mail, None).await?;
        match self.answer(step, default).await? {
            None => Ok(Flow::Close),
            Some(reply) if reply.code / 100 != 2 => Ok(self.finish(reply)),
            Some(_) => Ok(Flow::Continue),
        }
    }

    /// 250, or 552 when the declared SIZE is above the advertised limit.
    fn mail_default(&self, params: &[String]) -> Reply {
        let declared = params.iter().find_map(|p| {
            let (key, value) = p.split_once('=')?;
            key.eq_ignore_ascii_case("SIZE")
                .then(|| value.parse::<u64>().ok())
                .flatten()
        });
        match (self.ext.size, declared) {
            (Some(max), Some(size)) if size > max => self.plain(
                552,
                "5.3.4",
                "message size exceeds fixed maximum message size",
            ),
            _ => self.plain(250, "2.1.0", "OK"),
        }
    }

    /// AUTH PLAIN or LOGIN, with or without an initial response, when configured and over
    /// TLS.
    async fn auth(&mut self, args: &str) -> io::Result<Flow> {
        let Some(expected) = self.ext.auth.clone() else {
            return self.error(502, "5.5.1", "AUTH not offered").await;
        };
        if self.tls.is_none() {
            return self
                .error(538, "5.7.11", "encryption required for authentication")
                .await;
        }
        if self.ehlo.is_none() || self.auth.is_some() || self.txn.is_some() {
            return self.error(503, "5.5.1", "AUTH not allowed now").await;
        }
        let mut words = args.split_ascii_whitespace();
        let mechanism = words.next().unwrap_or_default().to_ascii_uppercase();
        let initial = words.next().map(str::to_owned);
        let given = match mechanism.as_str() {
            "PLAIN" => match self.response(initial, "").await? {
                Answer::Text(text) => auth::decode_plain(&text),
                other => return self.auth_aborted(other).await,
            },
            "LOGIN" => {
                let user = match self.response(initial, auth::LOGIN_USER_PROMPT).await? {
                    Answer::Text(text) => auth::decode_text(&text),
                    other => return self.auth_aborted(other).await,
                };
                match self.response(None, auth::LOGIN_PASSWORD_PROMPT).await? {
                    Answer::Text(text) => user.zip(auth::decode_text(&text)),
                    other => return self.auth_aborted(other).await,
                }
            }
            _ => return self.error(504, "5.5.4", "mechanism not supported").await,
        };
        match given {
            Some((user, password)) if (&user, &password) == (&expected.0, &expected.1) => {
                self.auth = Some(AuthInfo { mechanism, user });
                let reply = self.plain(235, "2.7.0", "authentication successful");
                self.send(&reply).await?;
                Ok(Flow::Continue)
            }
            _ => {
                self.error(535, "5.7.8", "authentication credentials invalid")
                    .await
            }
        }
    }

    /// The initial response if the client gave one, else the answer to a `334 prompt`.
    async fn response(&mut self, initial: Option<String>, prompt: &str) -> io::Result<Answer> {
        if let Some(text) = initial {
            return Ok(Answer::Text(text));
        }
        self.send(&Reply::new(334, prompt)).await?;
        Ok(match self.conn.read_line().await? {
            Line::Text(line) if line == b"*" => Answer::Cancelled,
            Line::Text(line) => Answer::Text(String::from_utf8_lossy(&line).into_owned()),
            Line::TooLong | Line::Eof => Answer::Broken,
        })
    }

    async fn auth_aborted(&mut self, answer: Answer) -> io::Result<Flow> {
        match answer {
            Answer::Cancelled => self.error(501, "5.7.0", "authentication cancelled").await,
            _ => Ok(Flow::Close),
        }
    }

    async fn rcpt(&mut self, args: &str) -> io::Result<Flow> {
        if self.txn.is_none() {
            return self.error(503, "5.5.1", "MAIL first").await;
        }
        let Some((path, params)) = parse_path(args, "TO:") else {
            return self.error(501, "5.5.4", "syntax: RCPT TO:<path>").await;
        };
        let step = self.script(Stage::Rcpt, Some(&path)).await?;
        let default = self.plain(250, "2.1.5", "OK");
        let Some(reply) = self.answer(step, default).await? else {
            return Ok(Flow::Close);
        };
        if let Some(open) = self.txn.as_mut() {
            open.record.rcpts.push(Rcpt {
                path,
                params,
                reply,
            });
        }
        Ok(Flow::Continue)
    }

    async fn data(&mut self, args: &str) -> io::Result<Flow> {
        if !args.trim().is_empty() {
            return self.error(501, "5.5.4", "DATA takes no arguments").await;
        }
        if let Some(refusal) = self.body_refusal() {
            return self.error(refusal.0, refusal.1, refusal.2).await;
        }
        if self.txn.as_ref().is_some_and(|t| t.record.bdat) {
            return self.error(503, "5.5.1", "BDAT already in progress").await;
        }
        let step = self.script(Stage::Data, None).await?;
        let go_ahead = Reply::new(354, "end data with <CR><LF>.<CR><LF>");
        let stop = match step {
            Step::CutBody(n) => Some(n),
            step => match self.answer(step, go_ahead.clone()).await? {
                None => return Ok(Flow::Close),
                Some(reply) if reply.code != 354 => return Ok(self.finish(reply)),
                Some(_) => None,
            },
        };
        if stop.is_some() {
            self.send(&go_ahead).await?;
        }
        let Some(open) = self.txn.as_mut() else {
            return Ok(Flow::Close);
        };
        match self.conn.read_dot_body(&mut open.body, stop).await? {
            BodyEnd::Complete => self.end_of_message().await,
            BodyEnd::Stopped | BodyEnd::Eof => Ok(Flow::Close),
        }
    }

    /// Why no body can be taken now (no transaction, no accepted recipient), if so.
    fn body_refusal(&self) -> Option<(u16, &'static str, &'static str)> {
        match &self.txn {
            None => Some((503, "5.5.1", "MAIL first")),
            Some(t) if !t.record.rcpts.iter().any(Rcpt::accepted) => {
                Some((554, "5.5.1", "no valid recipients"))
            }
            Some(_) => None,
        }
    }

    async fn bdat(&mut self, args: &str) -> io::Result<Flow> {
        if !self.ext.chunking {
            return self.error(502, "5.5.1", "CHUNKING not offered").await;
        }
        let Some((size, last)) = parse_bdat(args) else {
            return self.error(501, "5.5.4", "syntax: BDAT size [LAST]").await;
        };
        if let Some(refusal) = self.body_refusal() {
            // The chunk follows the command regardless; skip it to stay in step.
            let end = self.conn.read_chunk(size, &mut Body::new(0), None).await?;
            if end == BodyEnd::Eof {
                return Ok(Flow::Close);
            }
            return self.error(refusal.0, refusal.1, refusal.2).await;
        }
        let first = self.txn.as_ref().is_some_and(|t| !t.record.bdat);
        let step = if first {
            self.script(Stage::Data, None).await?
        } else {
            Step::Default
        };
        let stop = match step {
            Step::Close => return Ok(Flow::Close),
            Step::CutBody(n) => Some(n),
            _ => None,
        };
        let Some(open) = self.txn.as_mut() else {
            return Ok(Flow::Close);
        };
        open.record.bdat = true;
        if self.conn.read_chunk(size, &mut open.body, stop).await? != BodyEnd::Complete {
            return Ok(Flow::Close);
        }
        if let Step::Reply(reply) = step {
            self.send(&reply).await?;
            if reply.code / 100 != 2 {
                return Ok(self.finish(reply));
            }
        }
        if last {
            return self.end_of_message().await;
        }
        self.ok("2.0.0", &format!("{size} octets received")).await
    }

    /// The reply to a complete message: scripted, 552 above the body cap, or 250.
    async fn end_of_message(&mut self) -> io::Result<Flow> {
        let oversize = self.txn.as_ref().is_some_and(|t| t.body.oversize());
        let default = if oversize {
            self.plain(552, "5.3.4", "message too big")
        } else {
            let message = self.txn.as_ref().map_or(0, |t| t.record.message);
            self.plain(250, "2.0.0", &format!("OK queued as {message}"))
        };
        let step = self.script(Stage::DataEnd, None).await?;
        match self.answer(step, default).await? {
            None => Ok(Flow::Close),
            Some(reply) => Ok(self.finish(reply)),
        }
    }

    async fn quit(&mut self) -> io::Result<Flow> {
        self.abandon();
        // Count the connection as closed before the client can see the 221, so a client that
        // opens its next connection at once never looks like two open connections.
        self.guard.release();
        let reply = self.plain(221, "2.0.0", "bye");
        self.send(&reply).await?;
        Ok(Flow::Close)
    }

    /// Asks the rules about `stage`, waits out any delay, and carries out a stall.
    async fn script(&mut self, stage: Stage, rcpt: Option<&str>) -> io::Result<Step> {
        let (delay, action) = {
            let txn = self.txn.as_ref().map(|t| &t.record);
            let rcpts = match (stage, rcpt, txn) {
                (_, Some(rcpt), _) => vec![rcpt],
                (Stage::Data | Stage::DataEnd, None, Some(t)) => t.accepted_rcpts(),
                _ => Vec::new(),
            };
            let ctx = Ctx {
                connection: self.guard.id,
                message: txn.map(|t| t.message),
                mail_from: txn.map(|t| t.mail_from.as_str()),
                rcpts,
            };
            self.shared.rules().evaluate(stage, &ctx)
        };
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        Ok(match action {
            None | Some(Action::Delay(_)) => Step::Default,
            Some(Action::Reply(code, text)) => Step::Reply(Reply::new(code, text)),
            Some(Action::Disconnect) => Step::Close,
            Some(Action::DisconnectAfterBody(n)) if stage == Stage::Data => Step::CutBody(n),
            Some(Action::DisconnectAfterBody(_)) => Step::Close,
            Some(Action::Stall) => {
                self.conn.drain().await;
                Step::Close
            }
        })
    }

    /// Sends the scripted reply, or `default` when no rule decided. `None`: the connection is
    /// to be closed without a reply.
    async fn answer(&mut self, step: Step, default: Reply) -> io::Result<Option<Reply>> {
        let reply = match step {
            Step::Default => default,
            Step::Reply(reply) => reply,
            Step::Close | Step::CutBody(_) => return Ok(None),
        };
        self.send(&reply).await?;
        Ok(Some(reply))
    }

    async fn send(&mut self, reply: &Reply) -> io::Result<()> {
        if reply.code == 421 {
            self.closing = true;
        }
        self.conn.write_reply(reply).await
    }

    async fn ok(&mut self, enhanced: &str, text: &str) -> io::Result<Flow> {
        let reply = self.plain(250, enhanced, text);
        self.send(&reply).await?;
        Ok(Flow::Continue)
    }

    /// Refuses a command; too many refusals end the session.
    async fn error(&mut self, code: u16, enhanced: &str, text: &str) -> io::Result<Flow> {
        self.errors += 1;
        if self.errors > MAX_ERRORS {
            let reply = self.plain(421, "4.7.0", "too many errors");
            self.send(&reply).await?;
            return Ok(Flow::Close);
        }
        let reply = self.plain(code, enhanced, text);
        self.send(&reply).await?;
        Ok(Flow::Continue)
    }

    /// A reply carrying the enhanced status code only if that extension is advertised.
    fn plain(&self, code: u16, enhanced: &str, text: &str) -> Reply {
        if self.ext.enhanced_status_codes {
            Reply::new(code, format!("{enhanced} {text}"))
        } else {
            Reply::new(code, text)
        }
    }

    fn body_cap(&self) -> usize {
        let max = self.shared.limits.max_message_size;
        self.ext.size.map_or(max, |size| {
            max.min(usize::try_from(size).unwrap_or(usize::MAX))
        })
    }

    /// Ends the transaction with `reply` and records it.
    fn finish(&mut self, reply: Reply) -> Flow {
        if let Some(open) = self.txn.take() {
            self.shared.record(open.record, open.body.data, Some(reply));
        }
        if self.closing {
            Flow::Close
        } else {
            Flow::Continue
        }
    }

    /// Records the transaction in progress, if any, as ended without a final reply.
    fn abandon(&mut self) {
        if let Some(open) = self.txn.take() {
            self.shared.record(open.record, open.body.data, None);
        }
    }
}

/// `FROM:<path> params` (keyword case-insensitive, spaces after the colon allowed): the path
/// between the brackets, raw, and the parameters.
fn parse_path(args: &str, keyword: &str) -> Option<(String, Vec<String>)> {
    let head = args.get(..keyword.len())?;
    if !head.eq_ignore_ascii_case(keyword) {
        return None;
    }
    let rest = args[keyword.len()..].trim_start().strip_prefix('<')?;
    let end = rest.find('>')?;
    let params = rest[end + 1..]
        .split_ascii_whitespace()
        .map(str::to_owned)
        .collect();
    Some((rest[..end].to_owned(), params))
}

/// `size [LAST]`.
fn parse_bdat(args: &str) -> Option<(u64, bool)> {
    let mut words = args.split_ascii_whitespace();
    let size = words.next()?.parse().ok()?;
    let last = match words.next() {
        None => false,
        Some(word) if word.eq_ignore_ascii_case("LAST") => true,
        Some(_) => return None,
    };
    words.next().is_none().then_some((size, last))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_parameters_are_kept_raw() {
        let (path, params) = parse_path("from: <a@x.test> SIZE=10 BODY=8BITMIME", "FROM:").unwrap();
        assert_eq!(path, "a@x.test");
        assert_eq!(params, ["SIZE=10", "BODY=8BITMIME"]);
        assert_eq!(parse_path("FROM:<>", "FROM:").unwrap().0, "");
        assert_eq!(
            parse_path("TO:<@r.test:b@x.test>", "TO:").unwrap().0,
            "@r.test:b@x.test"
        );
        assert!(parse_path("FROM a@x.test", "FROM:").is_none());
        assert!(parse_path("FRÖM:<a>", "FROM:").is_none());
        assert!(parse_path("", "FROM:").is_none());
    }

    #[test]
    fn bdat_arguments() {
        assert_eq!(parse_bdat("10"), Some((10, false)));
        assert_eq!(parse_bdat("0 last"), Some((0, true)));
        assert_eq!(parse_bdat("x"), None);
        assert_eq!(parse_bdat("1 LAST more"), None);
        assert_eq!(parse_bdat(""), None);
    }
}
