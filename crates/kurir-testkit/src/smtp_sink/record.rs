//! What the sink remembers: one [`Transaction`] per MAIL command, kept once it has ended.

use std::fmt;
use std::net::SocketAddr;

/// An SMTP reply as the sink sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    /// The text after the code, including any enhanced status code (`"5.1.1 no such user"`);
    /// lines of a multi-line reply are joined with `\n`.
    pub text: String,
}

impl Reply {
    pub fn new(code: u16, text: impl Into<String>) -> Self {
        Self {
            code,
            text: text.into(),
        }
    }

    /// 2xx or 3xx: the command was accepted.
    pub fn is_positive(&self) -> bool {
        (200..400).contains(&self.code)
    }
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.code, self.text)
    }
}

/// The TLS session a transaction ran in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsInfo {
    pub version: Option<rustls::ProtocolVersion>,
    /// The name the client sent in SNI, if it sent one.
    pub sni: Option<String>,
}

/// A successful AUTH of the session a transaction ran in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthInfo {
    /// `PLAIN` or `LOGIN`.
    pub mechanism: String,
    pub user: String,
}

/// One RCPT TO and the answer it got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rcpt {
    /// The path between `<` and `>`, as sent.
    pub path: String,
    /// The parameters after the path (`NOTIFY=NEVER`), as sent.
    pub params: Vec<String>,
    pub reply: Reply,
}

impl Rcpt {
    pub fn accepted(&self) -> bool {
        self.reply.is_positive()
    }
}

/// One mail transaction, from MAIL to the reply that ended it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transaction {
    /// Which connection (1-based, in accept order) it ran on.
    pub connection: u64,
    /// The client's address on that connection.
    pub peer: SocketAddr,
    /// Its number across the sink (1-based, counted at MAIL): what [`super::Match::NthMessage`]
    /// matches.
    pub message: u64,
    /// The name given in the EHLO/HELO before it.
    pub ehlo: String,
    /// `Some` when the transaction ran after STARTTLS.
    pub tls: Option<TlsInfo>,
    /// `Some` when the session had authenticated before MAIL.
    pub auth: Option<AuthInfo>,
    /// The reverse path between `<` and `>`, as sent (`""` for the null path).
    pub mail_from: String,
    /// MAIL parameters as sent (`SIZE=123`, `BODY=8BITMIME`).
    pub mail_params: Vec<String>,
    /// Every RCPT, accepted or refused, in order.
    pub rcpts: Vec<Rcpt>,
    /// The verbs received from MAIL to the end of the transaction, upper case, in order
    /// (`["MAIL", "RCPT", "DATA"]`), refused ones included.
    pub commands: Vec<String>,
    /// Whether more input was already waiting behind the MAIL command when it was read:
    /// the client pipelined (a client waiting for each reply never leaves any).
    pub pipelined: bool,
    /// The message as received: dot-unstuffed DATA or the BDAT chunks joined, up to the body
    /// cap. Partial when the transaction broke off during the body.
    pub body: Vec<u8>,
    /// Whether the body came by BDAT.
    pub bdat: bool,
    /// The reply that ended the transaction: a refusal of MAIL or of DATA/BDAT, or the reply
    /// after the end of the message. `None` when it ended otherwise: RSET, QUIT, a new EHLO,
    /// STARTTLS, or a disconnect by either side.
    pub final_reply: Option<Reply>,
}

impl Transaction {
    /// The message was accepted: the final reply was positive.
    pub fn accepted(&self) -> bool {
        self.final_reply.as_ref().is_some_and(|r| r.code / 100 == 2)
    }

    /// The paths of the recipients that were accepted.
    pub fn accepted_rcpts(&self) -> Vec<&str> {
        self.rcpts
            .iter()
            .filter(|r| r.accepted())
            .map(|r| r.path.as_str())
            .collect()
    }

    /// The body as text, invalid UTF-8 replaced, for assertions.
    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}
