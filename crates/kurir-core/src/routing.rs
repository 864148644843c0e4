//! Routing keys: the queue key that decides which partition (and so which delivery node)
//! carries a record.

use std::fmt;
use std::str::FromStr;

use crate::{AddressError, Domain, MessageId};

/// A recipient domain in normal form, optionally with a shard number for hot domains that
/// are split over several partitions (`example.test#3`). Per-domain limits are divided by
/// the number of shards.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RoutingKey {
    domain: Domain,
    shard: Option<u16>,
}

impl RoutingKey {
    /// The key of an unsharded domain.
    pub fn new(domain: Domain) -> Self {
        Self {
            domain,
            shard: None,
        }
    }

    /// The key for one message to `domain` split into `shards` shards: the shard is chosen by
    /// the random bits of the message id, so a message always maps to the same shard and
    /// shards fill evenly.
    pub fn for_message(domain: Domain, shards: u16, id: MessageId) -> Self {
        let shard = (shards > 1).then(|| (id.to_u128() % u128::from(shards)) as u16);
        Self { domain, shard }
    }

    pub fn domain(&self) -> &Domain {
        &self.domain
    }

    pub fn shard(&self) -> Option<u16> {
        self.shard
    }
}

impl fmt::Display for RoutingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.shard {
            Some(shard) => write!(f, "{}#{shard}", self.domain),
            None => write!(f, "{}", self.domain),
        }
    }
}

impl fmt::Debug for RoutingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RoutingKey({self})")
    }
}

/// Why a string is not a routing key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RoutingKeyError {
    #[error("invalid domain in routing key: {0}")]
    Domain(#[from] AddressError),
    #[error("invalid shard number in routing key")]
    Shard,
}

impl FromStr for RoutingKey {
    type Err = RoutingKeyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.split_once('#') {
            Some((domain, shard)) => Ok(Self {
                domain: Domain::parse(domain)?,
                shard: Some(shard.parse().map_err(|_| RoutingKeyError::Shard)?),
            }),
            None => Ok(Self::new(Domain::parse(s)?)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_and_parses() {
        let d = Domain::parse("Example.TEST").unwrap();
        assert_eq!(RoutingKey::new(d.clone()).to_string(), "example.test");
        let id = MessageId::new();
        let k = RoutingKey::for_message(d.clone(), 4, id);
        assert!(k.shard().unwrap() < 4);
        assert_eq!(k.to_string().parse::<RoutingKey>().unwrap(), k);
        assert_eq!(RoutingKey::for_message(d, 1, id).shard(), None);
        assert!("example.test#x".parse::<RoutingKey>().is_err());
        assert!("#1".parse::<RoutingKey>().is_err());
    }
}
