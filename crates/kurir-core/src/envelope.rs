//! The SMTP envelope with its DSN parameters (RFC 3461) and body type (RFC 6152, RFC 3030).

use std::collections::BTreeMap;

use crate::{Address, MessageId, RoutingKey};

/// The `BODY=` parameter of MAIL FROM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BodyType {
    #[default]
    SevenBit,
    EightBitMime,
    /// Only with CHUNKING (RFC 3030): lines may be arbitrary octets.
    BinaryMime,
}

impl BodyType {
    /// Parses the value of `BODY=` (case-insensitive).
    pub fn parse(value: &str) -> Option<Self> {
        match value.to_ascii_uppercase().as_str() {
            "7BIT" => Some(Self::SevenBit),
            "8BITMIME" => Some(Self::EightBitMime),
            "BINARYMIME" => Some(Self::BinaryMime),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::SevenBit => "7BIT",
            Self::EightBitMime => "8BITMIME",
            Self::BinaryMime => "BINARYMIME",
        }
    }
}

/// The DSN `RET=` parameter: how much of the message a DSN returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ret {
    Full,
    Headers,
}

impl Ret {
    pub fn parse(value: &str) -> Option<Self> {
        match value.to_ascii_uppercase().as_str() {
            "FULL" => Some(Self::Full),
            "HDRS" => Some(Self::Headers),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Full => "FULL",
            Self::Headers => "HDRS",
        }
    }
}

/// The DSN `NOTIFY=` parameter of one recipient. `NEVER` is all three false.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Notify {
    pub success: bool,
    pub failure: bool,
    pub delay: bool,
}

impl Notify {
    pub const NEVER: Self = Self {
        success: false,
        failure: false,
        delay: false,
    };

    /// What applies when a recipient gave no `NOTIFY` (RFC 3461 §4.1 leaves it to the MTA;
    /// like most MTAs we report failures and delays).
    pub const DEFAULT: Self = Self {
        success: false,
        failure: true,
        delay: true,
    };

    /// Parses `NEVER` or a comma-separated, non-empty, non-repeating list of `SUCCESS`,
    /// `FAILURE`, `DELAY` (case-insensitive).
    pub fn parse(value: &str) -> Option<Self> {
        if value.eq_ignore_ascii_case("NEVER") {
            return Some(Self::NEVER);
        }
        let mut notify = Self::NEVER;
        for item in value.split(',') {
            let flag = match item.to_ascii_uppercase().as_str() {
                "SUCCESS" => &mut notify.success,
                "FAILURE" => &mut notify.failure,
                "DELAY" => &mut notify.delay,
                _ => return None,
            };
            if *flag {
                return None;
            }
            *flag = true;
        }
        Some(notify)
    }

    /// The parameter value (`NEVER` or e.g. `SUCCESS,FAILURE`).
    pub fn to_param(self) -> String {
        let mut parts = Vec::new();
        if self.success {
            parts.push("SUCCESS");
        }
        if self.failure {
            parts.push("FAILURE");
        }
        if self.delay {
            parts.push("DELAY");
        }
        if parts.is_empty() {
            "NEVER".to_owned()
        } else {
            parts.join(",")
        }
    }
}

/// The DSN `ORCPT=` parameter: the original recipient as the first MTA saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Orcpt {
    /// The address type, e.g. `rfc822` or `utf-8`.
    pub addr_type: String,
    /// The address, xtext-decoded.
    pub address: String,
}

impl Orcpt {
    /// Parses `addr-type;xtext` (RFC 3461 §4.2).
    pub fn parse(value: &str) -> Option<Self> {
        let (addr_type, encoded) = value.split_once(';')?;
        if addr_type.is_empty()
            || !addr_type
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return None;
        }
        Some(Self {
            addr_type: addr_type.to_owned(),
            address: xtext_decode(encoded)?,
        })
    }

    /// The parameter value, xtext-encoded.
    pub fn to_param(&self) -> String {
        format!("{};{}", self.addr_type, xtext_encode(&self.address))
    }
}

/// One recipient of the envelope with its DSN parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipient {
    pub address: Address,
    /// `None` when the client gave no NOTIFY: [`Notify::DEFAULT`] applies.
    pub notify: Option<Notify>,
    pub orcpt: Option<Orcpt>,
}

impl Recipient {
    pub fn new(address: Address) -> Self {
        Self {
            address,
            notify: None,
            orcpt: None,
        }
    }

    /// The NOTIFY in effect.
    pub fn effective_notify(&self) -> Notify {
        self.notify.unwrap_or(Notify::DEFAULT)
    }
}

/// The envelope of one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// `None` is the null reverse-path `<>` (bounces and other auto-replies): nothing is ever
    /// sent back to it.
    pub sender: Option<Address>,
    /// DSN `RET=`.
    pub ret: Option<Ret>,
    /// DSN `ENVID=`, xtext-decoded.
    pub envid: Option<String>,
    pub body: BodyType,
    /// The client asked for SMTPUTF8 (RFC 6531) on MAIL FROM.
    pub smtputf8: bool,
    pub recipients: Vec<Recipient>,
}

impl Envelope {
    pub fn new(sender: Option<Address>) -> Self {
        Self {
            sender,
            ret: None,
            envid: None,
            body: BodyType::default(),
            smtputf8: false,
            recipients: Vec::new(),
        }
    }

    /// Whether any address of the envelope needs SMTPUTF8 to be transmitted.
    pub fn needs_smtputf8(&self) -> bool {
        self.sender.as_ref().is_some_and(Address::needs_smtputf8)
            || self.recipients.iter().any(|r| r.address.needs_smtputf8())
    }

    /// Groups the recipients by routing key: one queued record is published per key.
    /// `shards_for` tells how many shards a domain is split into (1 = not split).
    pub fn split_by_routing_key(
        &self,
        id: MessageId,
        shards_for: impl Fn(&crate::Domain) -> u16,
    ) -> BTreeMap<RoutingKey, Vec<Recipient>> {
        let mut groups: BTreeMap<RoutingKey, Vec<Recipient>> = BTreeMap::new();
        for rcpt in &self.recipients {
            let domain = rcpt.address.domain();
            let key = RoutingKey::for_message(domain.clone(), shards_for(domain), id);
            groups.entry(key).or_default().push(rcpt.clone());
        }
        groups
    }
}

/// Decodes RFC 3461 xtext (`+XX` hex escapes). `None` for malformed input or a result that
/// is not UTF-8.
pub fn xtext_decode(input: &str) -> Option<String> {
    let bytes = input.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => {
                let hex = bytes.get(i + 1..i + 3)?;
                if !hex
                    .iter()
                    .all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(b))
                {
                    return None;
                }
                out.push(u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?);
                i += 3;
            }
            b @ b'!'..=b'~' if b != b'=' => {
                out.push(b);
                i += 1;
            }
            _ => return None,
        }
    }
    String::from_utf8(out).ok()
}

/// Encodes a string as RFC 3461 xtext.
pub fn xtext_encode(input: &str) -> String {
    let mut out = String::with_capacity(input.len());
    for b in input.bytes() {
        if (b'!'..=b'~').contains(&b) && b != b'+' && b != b'=' {
            out.push(b as char);
        } else {
            out.push_str(&format!("+{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Domain;

    #[test]
    fn notify_parsing() {
        assert_eq!(Notify::parse("never"), Some(Notify::NEVER));
        let n = Notify::parse("SUCCESS,Delay").unwrap();
        assert!(n.success && n.delay && !n.failure);
        assert_eq!(n.to_param(), "SUCCESS,DELAY");
        assert_eq!(Notify::parse("SUCCESS,SUCCESS"), None);
        assert_eq!(Notify::parse("NEVER,SUCCESS"), None);
        assert_eq!(Notify::parse(""), None);
        assert_eq!(Notify::parse("sometimes"), None);
    }

    #[test]
    fn orcpt_and_xtext() {
        let o = Orcpt::parse("rfc822;a+2Bb@example.test").unwrap();
        assert_eq!(o.address, "a+b@example.test");
        assert_eq!(o.to_param(), "rfc822;a+2Bb@example.test");
        assert_eq!(Orcpt::parse("no-semicolon"), None);
        assert_eq!(Orcpt::parse("rfc822;bad+zz"), None);
        assert_eq!(xtext_decode("a+3Db"), Some("a=b".to_owned()));
        assert_eq!(xtext_decode("a=b"), None);
        assert_eq!(xtext_encode("x y=z"), "x+20y+3Dz");
    }

    #[test]
    fn splits_recipients_by_routing_key() {
        let mut env = Envelope::new(Some(Address::parse("s@sender.test").unwrap()));
        for r in ["a@one.test", "b@TWO.test", "c@one.test"] {
            env.recipients
                .push(Recipient::new(Address::parse(r).unwrap()));
        }
        let id = MessageId::new();
        let groups = env.split_by_routing_key(id, |_| 1);
        assert_eq!(groups.len(), 2);
        let one = RoutingKey::for_message(Domain::parse("one.test").unwrap(), 1, id);
        assert_eq!(groups[&one].len(), 2);
        // With shards, one message's recipients of a domain stay together.
        let sharded = env.split_by_routing_key(id, |_| 8);
        assert_eq!(sharded.len(), 2);
        assert!(sharded.keys().all(|k| k.shard().is_some()));
    }
}
