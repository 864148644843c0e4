//! What a delivery attempt of one recipient ended in.

use std::fmt;
use std::str::FromStr;

/// The outcome of one recipient of one message. Every outcome becomes an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The remote host answered 2xx after the data.
    Delivered,
    /// A transient failure: the record goes to the next retry tier.
    Deferred,
    /// A permanent failure: a DSN is sent unless the sender is null.
    Bounced(BounceClass),
    /// The message reached its maximum age without delivery (bounced with a DSN too).
    Expired,
    /// The recipient is on the suppression list: nothing was attempted.
    Suppressed,
}

impl Outcome {
    /// Whether the recipient is finished with (no further attempt will follow).
    pub fn is_final(self) -> bool {
        !matches!(self, Self::Deferred)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Delivered => "delivered",
            Self::Deferred => "deferred",
            Self::Bounced(_) => "bounced",
            Self::Expired => "expired",
            Self::Suppressed => "suppressed",
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Bounced(class) => write!(f, "bounced ({class})"),
            other => f.write_str(other.as_str()),
        }
    }
}

/// Why a recipient bounced. The delivery role classifies remote replies into these (by
/// enhanced status code and reply text, from a table that is data); the class decides
/// whether the address is suppressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum BounceClass {
    /// The mailbox does not exist (5.1.1, 5.1.0, …).
    BadMailbox,
    /// The domain does not exist or accepts no mail (NXDOMAIN, null MX, 5.1.2).
    BadDomain,
    /// Refused by the receiver's policy (5.7.x other than spam).
    Policy,
    /// Refused as spam or for sender reputation.
    Spam,
    /// Mailbox full or over quota (5.2.2).
    Quota,
    /// The message is too large for the receiver (5.3.4, 5.2.3).
    TooLarge,
    /// The content was refused (bad MIME, virus, …).
    Content,
    /// The message could not be transmitted as it is (e.g. needs SMTPUTF8 the receiver lacks).
    Protocol,
    /// No route: every MX failed permanently or routing is misconfigured.
    Routing,
    /// The message expired in the queue.
    Expired,
    /// Anything the table does not recognise.
    Other,
}

impl BounceClass {
    pub const ALL: [Self; 11] = [
        Self::BadMailbox,
        Self::BadDomain,
        Self::Policy,
        Self::Spam,
        Self::Quota,
        Self::TooLarge,
        Self::Content,
        Self::Protocol,
        Self::Routing,
        Self::Expired,
        Self::Other,
    ];

    /// Hard bounces: the address will not work later either, so it is suppressed at once.
    pub fn is_hard(self) -> bool {
        matches!(self, Self::BadMailbox | Self::BadDomain)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::BadMailbox => "bad-mailbox",
            Self::BadDomain => "bad-domain",
            Self::Policy => "policy",
            Self::Spam => "spam",
            Self::Quota => "quota",
            Self::TooLarge => "too-large",
            Self::Content => "content",
            Self::Protocol => "protocol",
            Self::Routing => "routing",
            Self::Expired => "expired",
            Self::Other => "other",
        }
    }
}

impl fmt::Display for BounceClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A string that names no bounce class.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown bounce class {0:?}")]
pub struct UnknownBounceClass(pub String);

impl FromStr for BounceClass {
    type Err = UnknownBounceClass;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| UnknownBounceClass(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn class_names_round_trip() {
        for class in BounceClass::ALL {
            assert_eq!(class.as_str().parse::<BounceClass>().unwrap(), class);
        }
        assert!("nope".parse::<BounceClass>().is_err());
    }

    #[test]
    fn only_mailbox_and_domain_bounces_are_hard() {
        let hard: Vec<_> = BounceClass::ALL
            .into_iter()
            .filter(|c| c.is_hard())
            .collect();
        assert_eq!(hard, [BounceClass::BadMailbox, BounceClass::BadDomain]);
        assert!(!Outcome::Deferred.is_final());
        assert!(Outcome::Bounced(BounceClass::Quota).is_final());
    }
}
