//! Egress sources: the local addresses mail leaves from, grouped in pools and chosen by
//! weight for each new connection.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use rand::RngExt as _;

use crate::config::DeliverConfig;

/// One local address and its EHLO name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    pub address: Option<IpAddr>,
    pub ehlo: String,
    weight: u32,
}

/// The configured pools; without sources, one `default` pool whose single source lets the
/// system pick the address and introduces itself as `[deliver] hostname`.
#[derive(Debug)]
pub struct Egress {
    pools: BTreeMap<Arc<str>, Vec<Source>>,
}

/// The pool domains without a policy use.
pub const DEFAULT_POOL: &str = "default";

impl Egress {
    pub fn new(config: &DeliverConfig) -> Self {
        let mut pools: BTreeMap<Arc<str>, Vec<Source>> = BTreeMap::new();
        for s in &config.sources {
            pools
                .entry(s.pool.as_str().into())
                .or_default()
                .push(Source {
                    address: Some(s.address),
                    ehlo: s.ehlo.clone(),
                    weight: s.weight,
                });
        }
        if !pools.contains_key(DEFAULT_POOL) {
            let fallback = match config.sources.first() {
                // Sources configured but none in `default`: the first source's pool is the
                // default.
                Some(first) => pools[first.pool.as_str()].clone(),
                None => vec![Source {
                    address: None,
                    ehlo: config.hostname.clone(),
                    weight: 1,
                }],
            };
            pools.insert(DEFAULT_POOL.into(), fallback);
        }
        Self { pools }
    }

    /// The pool's name as a shared key (unknown names fall back to the default pool;
    /// config validation rejects them before this).
    pub fn pool_key(&self, name: Option<&str>) -> Arc<str> {
        let name = name.unwrap_or(DEFAULT_POOL);
        match self.pools.get_key_value(name) {
            Some((k, _)) => k.clone(),
            None => self
                .pools
                .get_key_value(DEFAULT_POOL)
                .map(|(k, _)| k.clone())
                .expect("default pool"),
        }
    }

    /// A source of `pool`, chosen at random by weight.
    pub fn choose(&self, pool: &str) -> &Source {
        let sources = self
            .pools
            .get(pool)
            .or_else(|| self.pools.get(DEFAULT_POOL))
            .expect("default pool");
        let total: u32 = sources.iter().map(|s| s.weight).sum();
        let mut pick = rand::rng().random_range(0..total.max(1));
        for s in sources {
            if pick < s.weight {
                return s;
            }
            pick -= s.weight;
        }
        &sources[0]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SourceConfig;

    #[test]
    fn weights_decide_the_share() {
        let mut config = DeliverConfig::default();
        for (ip, weight) in [("127.0.0.2", 3), ("127.0.0.3", 1)] {
            config.sources.push(SourceConfig {
                address: ip.parse().unwrap(),
                ehlo: format!("mta-{ip}.test"),
                pool: "default".into(),
                weight,
            });
        }
        let egress = Egress::new(&config);
        let picks = (0..4000)
            .filter(|_| egress.choose("default").address == Some("127.0.0.2".parse().unwrap()))
            .count();
        assert!((2700..3300).contains(&picks), "{picks}");
    }

    #[test]
    fn without_sources_the_system_picks() {
        let egress = Egress::new(&DeliverConfig::default());
        let s = egress.choose(&egress.pool_key(None));
        assert_eq!((s.address, s.ehlo.as_str()), (None, "localhost"));
    }
}
