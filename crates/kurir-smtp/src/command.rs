//! SMTP commands, parsed and validated.
//!
//! Why a crate: the verb and argument grammar comes from Stalwart's `smtp-proto`
//! ([`smtp_proto::Request::parse`]). It is fuzzed upstream, runs in production in Stalwart
//! Mail Server, and already knows every ESMTP keyword; writing our own RFC 5321 tokenizer
//! would be more hostile-input surface to get right. What it does not do, and what this
//! module adds on top (the `params` module does the parameter part):
//! - it needs the line ending and lossily decodes invalid UTF-8, and skips CRs inside a line
//!   (`MA\rIL` parses as `MAIL`): we refuse NUL, CR, LF and non-UTF-8 in a line first;
//! - it accepts every extension it knows (REQUIRETLS, MT-PRIORITY, HOLDFOR, BY, ...) and
//!   does not notice repeated parameters: we allow only the ones kurir implements, once;
//! - it unquotes the mailbox and turns `<postmaster>` into `<>`: we take the path text as
//!   the client wrote it and validate it with [`kurir_core::Address::parse`];
//! - its xtext decoder maps `+XX` to Latin-1 and drops malformed escapes: ENVID, ORCPT and
//!   AUTH= are decoded with kurir-core's strict xtext codec instead;
//! - it answers an unknown SASL mechanism with a syntax error: we answer 504.

use kurir_core::{Address, AddressError, BodyType, ErrorCode, Notify, Orcpt, Ret};
use smtp_proto::{AUTH_LOGIN, AUTH_PLAIN, Error as ProtoError, Request};

use crate::params;
use crate::reply::Reply;

/// SASL mechanisms kurir offers (only over TLS).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMechanism {
    Plain,
    Login,
}

/// ESMTP parameters of MAIL FROM.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MailParams {
    /// `SIZE=`: the client's estimate, checked against the limit before DATA.
    pub size: Option<u64>,
    pub body: BodyType,
    pub smtputf8: bool,
    pub ret: Option<Ret>,
    /// xtext-decoded.
    pub envid: Option<String>,
    /// `AUTH=` (RFC 4954), kept for trace only.
    pub auth: Option<String>,
}

/// ESMTP parameters of RCPT TO.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RcptParams {
    pub notify: Option<Notify>,
    pub orcpt: Option<Orcpt>,
}

/// A command line, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Ehlo {
        host: String,
    },
    Helo {
        host: String,
    },
    /// `from: None` is the null reverse-path `<>`.
    Mail {
        from: Option<Address>,
        params: MailParams,
    },
    /// The SMTPUTF8 check for a recipient belongs to the session (the parameter is on MAIL):
    /// refuse `to.needs_smtputf8()` when the transaction did not ask for it.
    Rcpt {
        to: Address,
        params: RcptParams,
    },
    Data,
    Bdat {
        size: u64,
        last: bool,
    },
    Rset,
    Noop,
    Quit,
    StartTls,
    /// `initial_response` is the base64 text as sent; `=` stands for an empty response
    /// (RFC 4954 §4).
    Auth {
        mechanism: AuthMechanism,
        initial_response: Option<String>,
    },
    Vrfy {
        argument: String,
    },
    Expn {
        argument: String,
    },
    Help {
        topic: Option<String>,
    },
}

/// Why a command line was refused; [`CommandError::reply`] is what the client gets.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    #[error("unrecognised command")]
    Unknown,
    #[error("syntax error: {0}")]
    Syntax(String),
    #[error("invalid address: {0}")]
    Address(#[from] AddressError),
    #[error("non-ASCII address without SMTPUTF8")]
    Utf8WithoutSmtputf8,
    #[error("invalid parameter {0}")]
    Parameter(String),
    #[error("unsupported parameter {0}")]
    UnsupportedParameter(String),
    #[error("unsupported authentication mechanism")]
    UnsupportedMechanism,
}

impl CommandError {
    /// The reply for this error (500/501/553/555/504 with enhanced codes).
    pub fn reply(&self) -> Reply {
        let with_text = |code: ErrorCode, text: String| {
            let r = code.smtp_reply();
            Reply::new(r.code, r.enhanced, text)
        };
        match self {
            Self::Unknown => ErrorCode::SyntaxError.into(),
            Self::Syntax(_) | Self::Parameter(_) => {
                with_text(ErrorCode::InvalidParameter, capitalised(self))
            }
            Self::Address(_) => with_text(ErrorCode::InvalidAddress, capitalised(self)),
            Self::Utf8WithoutSmtputf8 => ErrorCode::Utf8AddressNotAllowed.into(),
            Self::UnsupportedParameter(_) => {
                with_text(ErrorCode::UnsupportedParameter, capitalised(self))
            }
            // No ErrorCode: only SMTP has SASL mechanisms.
            Self::UnsupportedMechanism => {
                Reply::new(504, (5, 5, 4), "Unrecognized authentication type")
            }
        }
    }
}

fn capitalised(error: &CommandError) -> String {
    let text = error.to_string();
    let mut chars = text.chars();
    chars.next().map_or_else(String::new, |first| {
        first.to_ascii_uppercase().to_string() + chars.as_str()
    })
}

/// Parses one command line (without its CRLF).
pub fn parse_command(line: &[u8]) -> Result<Command, CommandError> {
    if let Some(&bad) = line.iter().find(|&&b| matches!(b, 0 | b'\r' | b'\n')) {
        let what = if bad == 0 {
            "NUL byte in command"
        } else {
            "CR or LF inside a command"
        };
        return Err(CommandError::Syntax(what.into()));
    }
    let text = std::str::from_utf8(line)
        .map_err(|_| CommandError::Syntax("command is not valid UTF-8".into()))?;
    let mut terminated = Vec::with_capacity(line.len() + 2);
    terminated.extend_from_slice(line);
    terminated.extend_from_slice(b"\r\n");
    let request = Request::parse(&mut terminated.iter()).map_err(|e| proto_error(text, e))?;
    convert(text, request)
}

fn convert(
    text: &str,
    request: Request<std::borrow::Cow<'_, str>>,
) -> Result<Command, CommandError> {
    Ok(match request {
        Request::Ehlo { host } => Command::Ehlo {
            host: host.into_owned(),
        },
        Request::Helo { host } => Command::Helo {
            host: host.into_owned(),
        },
        Request::Mail { from } => params::mail(text, &from)?,
        Request::Rcpt { to } => params::rcpt(text, &to)?,
        Request::Data => Command::Data,
        Request::Bdat {
            chunk_size,
            is_last,
        } => Command::Bdat {
            size: chunk_size as u64,
            last: is_last,
        },
        Request::Rset => Command::Rset,
        Request::Noop { .. } => Command::Noop,
        Request::Quit => Command::Quit,
        Request::StartTls => Command::StartTls,
        Request::Auth {
            mechanism,
            initial_response,
        } => Command::Auth {
            mechanism: auth_mechanism(mechanism)?,
            initial_response: Some(initial_response.into_owned()).filter(|r| !r.is_empty()),
        },
        Request::Vrfy { value } => Command::Vrfy {
            argument: value.into_owned(),
        },
        Request::Expn { value } => Command::Expn {
            argument: value.into_owned(),
        },
        Request::Help { value } => Command::Help {
            topic: Some(value.into_owned()).filter(|t| !t.is_empty()),
        },
        // LMTP, ETRN, ATRN and BURL: not an outbound MTA's business.
        Request::Lhlo { .. }
        | Request::Etrn { .. }
        | Request::Atrn { .. }
        | Request::Burl { .. } => {
            return Err(CommandError::Unknown);
        }
    })
}

fn auth_mechanism(mechanism: u64) -> Result<AuthMechanism, CommandError> {
    match mechanism {
        AUTH_PLAIN => Ok(AuthMechanism::Plain),
        AUTH_LOGIN => Ok(AuthMechanism::Login),
        _ => Err(CommandError::UnsupportedMechanism),
    }
}

fn proto_error(text: &str, error: ProtoError) -> CommandError {
    match error {
        ProtoError::UnknownCommand => CommandError::Unknown,
        ProtoError::InvalidSenderAddress | ProtoError::InvalidRecipientAddress => {
            // Let kurir-core say precisely what is wrong with the mailbox.
            match params::raw_path(text).map(params::parse_address) {
                Some(Err(e)) => CommandError::Address(e),
                _ => CommandError::Syntax("invalid mailbox".into()),
            }
        }
        // smtp-proto only knows mechanisms by name; an AUTH line with one it does not know
        // is a syntax error there and an unsupported mechanism here.
        ProtoError::SyntaxError { .. } if is_auth_with_mechanism(text) => {
            CommandError::UnsupportedMechanism
        }
        ProtoError::SyntaxError { syntax } => CommandError::Syntax(syntax.into()),
        ProtoError::InvalidParameter { param } => CommandError::Parameter(param.into()),
        ProtoError::UnsupportedParameter { param } => {
            CommandError::UnsupportedParameter(params::printable(&param))
        }
        ProtoError::NeedsMoreData { .. }
        | ProtoError::ResponseTooLong
        | ProtoError::InvalidResponse { .. } => CommandError::Syntax("incomplete command".into()),
    }
}

fn is_auth_with_mechanism(text: &str) -> bool {
    let mut words = text.split_ascii_whitespace();
    words
        .next()
        .is_some_and(|verb| verb.eq_ignore_ascii_case("AUTH"))
        && words.next().is_some()
}

#[cfg(test)]
#[path = "command_tests.rs"]
mod tests;
