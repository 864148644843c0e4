//! MAIL and RCPT: the path and the ESMTP parameters, checked beyond what `smtp-proto` does.
//!
//! `smtp-proto` has already accepted the line's grammar when these functions run. They
//! re-read the path and the parameters from the line as the client wrote it (the path
//! quoting rules here are the same as `smtp-proto`'s, so both see the same tokens) to:
//! validate the mailbox with kurir-core instead of `smtp-proto`'s unquoted form, allow only
//! the parameters kurir implements, refuse repeated ones, and decode xtext strictly.

use std::borrow::Cow;

use kurir_core::envelope::xtext_decode;
use kurir_core::{Address, AddressError, BodyType, Notify, Orcpt, Ret};
use smtp_proto::{
    MAIL_BODY_8BITMIME, MAIL_BODY_BINARYMIME, MAIL_RET_FULL, MAIL_RET_HDRS, MAIL_SMTPUTF8,
    MailFrom, RcptTo,
};

use crate::command::{Command, CommandError, MailParams, RcptParams};

/// RFC 3461 §4.4: ENVID is at most 100 characters.
const MAX_ENVID: usize = 100;

/// MAIL FROM parameters kurir implements, and whether each takes a value.
const MAIL_KEYWORDS: &[(&str, bool)] = &[
    ("SIZE", true),
    ("BODY", true),
    ("SMTPUTF8", false),
    ("RET", true),
    ("ENVID", true),
    ("AUTH", true),
];

/// RCPT TO parameters kurir implements.
const RCPT_KEYWORDS: &[(&str, bool)] = &[("NOTIFY", true), ("ORCPT", true)];

/// Builds MAIL from a line `smtp-proto` accepted.
pub(crate) fn mail(text: &str, from: &MailFrom<Cow<'_, str>>) -> Result<Command, CommandError> {
    let (path, rest) = split_path(text).ok_or_else(path_syntax)?;
    let values = parameters(rest, MAIL_KEYWORDS)?;
    let smtputf8 = from.flags & MAIL_SMTPUTF8 != 0;
    let address = if path.is_empty() {
        None
    } else {
        Some(parse_address(path)?)
    };
    if !smtputf8 && !path.is_ascii() {
        return Err(CommandError::Utf8WithoutSmtputf8);
    }
    let params = MailParams {
        size: values.get("SIZE").map(size).transpose()?,
        body: body_type(from.flags),
        smtputf8,
        ret: ret(from.flags),
        envid: values.get("ENVID").map(envid).transpose()?,
        auth: values.get("AUTH").map(|v| xtext(v, "AUTH")).transpose()?,
    };
    Ok(Command::Mail {
        from: address,
        params,
    })
}

/// Builds RCPT from a line `smtp-proto` accepted.
pub(crate) fn rcpt(text: &str, _to: &RcptTo<Cow<'_, str>>) -> Result<Command, CommandError> {
    let (path, rest) = split_path(text).ok_or_else(path_syntax)?;
    let values = parameters(rest, RCPT_KEYWORDS)?;
    let to = parse_address(path)?;
    let notify = values
        .get("NOTIFY")
        .map(|v| Notify::parse(v).ok_or_else(|| CommandError::Parameter("NOTIFY".into())));
    let orcpt = values
        .get("ORCPT")
        .map(|v| Orcpt::parse(v).ok_or_else(|| CommandError::Parameter("ORCPT".into())));
    let params = RcptParams {
        notify: notify.transpose()?,
        orcpt: orcpt.transpose()?,
    };
    Ok(Command::Rcpt { to, params })
}

fn path_syntax() -> CommandError {
    CommandError::Syntax("path must be <mailbox>".into())
}

/// The text between `<` and `>` of the line's path, as written.
pub(crate) fn raw_path(text: &str) -> Option<&str> {
    split_path(text).map(|(path, _)| path)
}

/// Splits `VERB FROM:<path> rest` into the path (inside the brackets) and the rest.
fn split_path(text: &str) -> Option<(&str, &str)> {
    let open = text.find('<')?;
    let bytes = text.as_bytes();
    let (mut i, mut in_quote) = (open + 1, false);
    while i < bytes.len() {
        match (bytes[i], in_quote) {
            (b'\\', true) => i += 1,
            (b'"', _) => in_quote = !in_quote,
            (b'>', false) => return Some((&text[open + 1..i], &text[i + 1..])),
            _ => {}
        }
        i += 1;
    }
    None
}

/// Validates a mailbox, dropping an RFC 5321 §4.1.2 source route (`@a,@b:user@c`), which
/// servers must accept and ignore.
pub(crate) fn parse_address(path: &str) -> Result<Address, AddressError> {
    let mailbox = match path.strip_prefix('@') {
        Some(routed) => routed.split_once(':').map_or(path, |(_, mailbox)| mailbox),
        None => path,
    };
    Address::parse(mailbox)
}

/// Found parameters: upper-case keyword and value (`""` for a keyword without one).
#[derive(Debug, Default)]
struct Values<'a>(Vec<(&'static str, &'a str)>);

impl<'a> Values<'a> {
    fn get(&self, keyword: &str) -> Option<&'a str> {
        self.0.iter().find(|(k, _)| *k == keyword).map(|(_, v)| *v)
    }
}

/// Checks the parameters after the path: each separated by spaces, known, given once, with a
/// value exactly when it takes one.
fn parameters<'a>(
    rest: &'a str,
    allowed: &[(&'static str, bool)],
) -> Result<Values<'a>, CommandError> {
    if !rest.is_empty() && !rest.starts_with([' ', '\t']) {
        return Err(CommandError::Syntax(
            "parameters must follow the path after a space".into(),
        ));
    }
    let mut values = Values::default();
    for token in rest.split_ascii_whitespace() {
        let (keyword, value) = token
            .split_once('=')
            .map_or((token, None), |(k, v)| (k, Some(v)));
        let Some(&(name, takes_value)) = allowed
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(keyword))
        else {
            return Err(CommandError::UnsupportedParameter(printable(keyword)));
        };
        if values.get(name).is_some() {
            return Err(CommandError::Parameter(format!("{name} given twice")));
        }
        match (takes_value, value) {
            (true, Some(value)) if !value.is_empty() => values.0.push((name, value)),
            (false, None) => values.0.push((name, "")),
            _ => return Err(CommandError::Parameter(name.into())),
        }
    }
    Ok(values)
}

fn size(value: &str) -> Result<u64, CommandError> {
    let invalid = || CommandError::Parameter("SIZE".into());
    if !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid());
    }
    value.parse().map_err(|_| invalid())
}

fn body_type(flags: u64) -> BodyType {
    if flags & MAIL_BODY_BINARYMIME != 0 {
        BodyType::BinaryMime
    } else if flags & MAIL_BODY_8BITMIME != 0 {
        BodyType::EightBitMime
    } else {
        BodyType::SevenBit
    }
}

fn ret(flags: u64) -> Option<Ret> {
    if flags & MAIL_RET_FULL != 0 {
        Some(Ret::Full)
    } else if flags & MAIL_RET_HDRS != 0 {
        Some(Ret::Headers)
    } else {
        None
    }
}

fn envid(value: &str) -> Result<String, CommandError> {
    let decoded = xtext(value, "ENVID")?;
    if decoded.chars().count() > MAX_ENVID {
        return Err(CommandError::Parameter("ENVID".into()));
    }
    Ok(decoded)
}

fn xtext(value: &str, name: &str) -> Result<String, CommandError> {
    xtext_decode(value).ok_or_else(|| CommandError::Parameter(name.into()))
}

/// Client text for an error reply: printable ASCII only, at most 32 characters.
pub(crate) fn printable(text: &str) -> String {
    text.chars()
        .filter(|c| c.is_ascii_graphic())
        .take(32)
        .collect()
}
