//! `[deliver]`: the delivery role's configuration, checked before the role starts.
//!
//! Defaults are safe: MX routing is off until `[deliver.dns]` names nameservers or opts in
//! to the system resolver, so a node started with no configuration never mails the
//! internet (its mail is deferred with a reason that says so). The retry schedule is the
//! queue's (`[queue] retry_tiers`); the maximum age is here.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::classify::ClassifyRule;

/// `[deliver]`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeliverConfig {
    /// The consumer group of delivery nodes.
    pub group: String,
    /// This MTA's name: the EHLO name when no egress source gives one, and the
    /// `Reporting-MTA` of DSNs.
    pub hostname: String,
    pub dns: DnsConfig,
    /// A message still undelivered this long after it was accepted bounces (expired) with
    /// a DSN.
    #[serde(with = "humantime_serde")]
    pub max_age: Duration,
    /// After a connection failure to every host of a site, its other queued mail goes
    /// straight to the next retry tier for this long instead of being tried one by one.
    #[serde(with = "humantime_serde")]
    pub site_down_hold: Duration,
    pub timeouts: TimeoutsConfig,
    /// Per-site connection defaults.
    pub pool: PoolConfig,
    /// Per-site throttle defaults.
    pub throttle: ThrottleConfig,
    pub tls: TlsConfig,
    /// Per-domain policy: TLS, limits, egress pool. The first matching entry applies.
    pub policies: Vec<DomainPolicy>,
    /// Static routes: matching domains go to a smarthost instead of their MX hosts. The
    /// first matching entry applies.
    pub routes: Vec<RouteConfig>,
    /// Egress sources (local addresses and their EHLO names). Empty: the system picks the
    /// source address and `hostname` is the EHLO name.
    pub sources: Vec<SourceConfig>,
    /// Extra bounce classification rules, tried before the built-in table.
    pub bounce_rules: Vec<ClassifyRule>,
}

impl Default for DeliverConfig {
    fn default() -> Self {
        Self {
            group: "kurir-deliver".into(),
            hostname: "localhost".into(),
            dns: DnsConfig::default(),
            max_age: Duration::from_secs(3 * 86_400),
            site_down_hold: Duration::from_secs(60),
            timeouts: TimeoutsConfig::default(),
            pool: PoolConfig::default(),
            throttle: ThrottleConfig::default(),
            tls: TlsConfig::default(),
            policies: Vec::new(),
            routes: Vec::new(),
            sources: Vec::new(),
            bounce_rules: Vec::new(),
        }
    }
}

/// `[deliver.dns]`: where MX records come from.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct DnsConfig {
    /// Nameservers to ask (UDP, TCP fallback), e.g. `["10.0.0.2:53"]`.
    pub nameservers: Vec<SocketAddr>,
    /// Use the nameservers of `/etc/resolv.conf` when `nameservers` is empty. Off by
    /// default so that an unconfigured node cannot mail the internet.
    pub system_resolver: bool,
    /// Per-query timeout.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Tries per query.
    pub attempts: usize,
    /// The port MX hosts are connected on: 25, except in test set-ups whose sinks listen
    /// elsewhere.
    pub mx_port: u16,
    /// Answers are cached for their TTL, at most this long.
    #[serde(with = "humantime_serde")]
    pub max_cache_ttl: Duration,
    /// Negative answers (NXDOMAIN, no records) are cached at least this long (their SOA
    /// minimum when larger, up to `max_cache_ttl`).
    #[serde(with = "humantime_serde")]
    pub min_negative_ttl: Duration,
}

impl Default for DnsConfig {
    fn default() -> Self {
        Self {
            nameservers: Vec::new(),
            system_resolver: false,
            timeout: Duration::from_secs(5),
            attempts: 2,
            mx_port: 25,
            max_cache_ttl: Duration::from_secs(3600),
            min_negative_ttl: Duration::from_secs(30),
        }
    }
}

/// `[deliver.timeouts]`: per phase of an SMTP session (RFC 5321 §4.5.3.2 gives the upper
/// bounds; these are shorter so stuck peers free their connections sooner).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TimeoutsConfig {
    #[serde(with = "humantime_serde")]
    pub connect: Duration,
    #[serde(with = "humantime_serde")]
    pub banner: Duration,
    #[serde(with = "humantime_serde")]
    pub ehlo: Duration,
    #[serde(with = "humantime_serde")]
    pub starttls: Duration,
    #[serde(with = "humantime_serde")]
    pub auth: Duration,
    #[serde(with = "humantime_serde")]
    pub mail: Duration,
    #[serde(with = "humantime_serde")]
    pub rcpt: Duration,
    /// The `DATA` command's 354.
    #[serde(with = "humantime_serde")]
    pub data: Duration,
    /// Writing the message body.
    #[serde(with = "humantime_serde")]
    pub data_write: Duration,
    /// The reply after the final dot.
    #[serde(with = "humantime_serde")]
    pub data_end: Duration,
    #[serde(with = "humantime_serde")]
    pub rset: Duration,
    #[serde(with = "humantime_serde")]
    pub quit: Duration,
}

impl Default for TimeoutsConfig {
    fn default() -> Self {
        let s = Duration::from_secs;
        Self {
            connect: s(30),
            banner: s(60),
            ehlo: s(60),
            starttls: s(60),
            auth: s(60),
            mail: s(120),
            rcpt: s(120),
            data: s(120),
            data_write: s(180),
            data_end: s(600),
            rset: s(30),
            quit: s(10),
        }
    }
}

/// `[deliver.pool]`: connections per site.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct PoolConfig {
    /// Open connections to one site at most (over all egress sources).
    pub max_connections: u32,
    /// Messages sent over one connection before it is closed (RSET between them).
    pub max_messages_per_connection: u32,
    /// An unused connection is closed after this long.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
}

impl Default for PoolConfig {
    fn default() -> Self {
        Self {
            max_connections: 16,
            max_messages_per_connection: 100,
            idle_timeout: Duration::from_secs(30),
        }
    }
}

/// `[deliver.throttle]`: per-site rate and adaptive back-off.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ThrottleConfig {
    /// Messages per second to one site at most; 0 = unlimited.
    pub messages_per_second: f64,
    /// After a "slow down" reply (421, 4.7.x, …) or a refused connection, the site's
    /// connection limit and rate are halved for this long, then recover step by step.
    #[serde(with = "humantime_serde")]
    pub backoff: Duration,
}

impl Default for ThrottleConfig {
    fn default() -> Self {
        Self {
            messages_per_second: 0.0,
            backoff: Duration::from_secs(60),
        }
    }
}

/// How STARTTLS is used towards a destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum TlsPolicy {
    /// Never STARTTLS.
    Disable,
    /// STARTTLS when offered, certificate not verified; plain text when not offered.
    #[default]
    Opportunistic,
    /// STARTTLS must succeed (certificate not verified); otherwise the message is deferred,
    /// never sent in clear.
    Require,
    /// STARTTLS must succeed with a certificate valid for the MX host name.
    Verify,
}

/// `[deliver.tls]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// The policy for domains no `[[deliver.policies]]` entry sets one for.
    pub policy: TlsPolicy,
    /// PEM file of CA certificates trusted by `verify` (in addition to the Mozilla roots
    /// from `webpki-roots`).
    pub ca_file: Option<PathBuf>,
}

/// `[[deliver.policies]]`: settings for matching recipient domains.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct DomainPolicy {
    /// Domain patterns: `example.com` (exactly) or `*.example.com` (sub-domains only).
    pub domains: Vec<String>,
    pub tls: Option<TlsPolicy>,
    /// Open connections for this domain at most (within its site's limit).
    pub max_connections: Option<u32>,
    /// Messages per second to this domain at most.
    pub messages_per_second: Option<f64>,
    /// The egress pool (`[[deliver.sources]] pool`) this domain is sent from.
    pub source_pool: Option<String>,
    /// `false`: always DATA, even when the receiver offers CHUNKING (a kill switch for a
    /// receiver whose BDAT misbehaves). Unset: BDAT when offered with PIPELINING.
    pub chunking: Option<bool>,
}

/// `[[deliver.routes]]`: send matching domains to a smarthost.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct RouteConfig {
    /// Domain patterns, as in `[[deliver.policies]]`; `*` alone matches every domain.
    pub domains: Vec<String>,
    /// `host:port` or `ip:port` of the smarthost.
    pub host: String,
    /// STARTTLS policy towards the smarthost.
    pub tls: TlsPolicy,
    /// AUTH credentials (sent only over TLS).
    pub auth: Option<SmarthostAuth>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SmarthostAuth {
    pub username: String,
    pub password: String,
}

/// `[[deliver.sources]]`: a local address mail leaves from.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    pub address: IpAddr,
    /// The EHLO name of this address (its PTR name).
    pub ehlo: String,
    /// The pool this source belongs to.
    #[serde(default = "default_pool")]
    pub pool: String,
    /// Relative share of connections within its pool.
    #[serde(default = "default_weight")]
    pub weight: u32,
}

fn default_pool() -> String {
    "default".into()
}

fn default_weight() -> u32 {
    1
}

/// A configuration value that cannot be used; `key` names it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("deliver.{key}: {message}")]
pub struct ConfigError {
    pub key: String,
    pub message: String,
}

fn err(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError {
        key: key.into(),
        message: message.into(),
    }
}

/// Whether `domain` (lower-case A-label) matches `pattern` (`example.com`, `*.example.com`
/// or `*`).
pub fn domain_matches(pattern: &str, domain: &str) -> bool {
    if pattern == "*" {
        return true;
    }
    match pattern.strip_prefix("*.") {
        Some(parent) => domain
            .strip_suffix(parent)
            .is_some_and(|rest| rest.ends_with('.') && rest.len() > 1),
        None => pattern.eq_ignore_ascii_case(domain),
    }
}

fn check_patterns(key: &str, patterns: &[String]) -> Result<(), ConfigError> {
    if patterns.is_empty() {
        return Err(err(key, "lists no domain patterns"));
    }
    for p in patterns {
        let bare = p.strip_prefix("*.").unwrap_or(p);
        let ok = p == "*"
            || (!bare.is_empty()
                && bare
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.'));
        if !ok {
            return Err(err(
                key,
                format!("{p:?} is not a domain pattern (example.com, *.example.com or *)"),
            ));
        }
    }
    Ok(())
}

impl DeliverConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.group.trim().is_empty() {
            return Err(err("group", "must not be empty"));
        }
        if self.hostname.trim().is_empty() || self.hostname.contains(char::is_whitespace) {
            return Err(err("hostname", "must be a host name"));
        }
        if self.dns.attempts == 0 {
            return Err(err("dns.attempts", "must be at least 1"));
        }
        if self.dns.timeout.is_zero() {
            return Err(err("dns.timeout", "must be more than 0"));
        }
        if self.dns.mx_port == 0 {
            return Err(err("dns.mx_port", "must be a port (1-65535)"));
        }
        if self.max_age < Duration::from_secs(1) {
            return Err(err("max_age", "must be at least 1s"));
        }
        if self.pool.max_connections == 0 {
            return Err(err("pool.max_connections", "must be at least 1"));
        }
        if self.pool.max_messages_per_connection == 0 {
            return Err(err(
                "pool.max_messages_per_connection",
                "must be at least 1",
            ));
        }
        let rate = self.throttle.messages_per_second;
        if !rate.is_finite() || rate < 0.0 {
            return Err(err("throttle.messages_per_second", "must be 0 or more"));
        }
        if let Some(path) = &self.tls.ca_file
            && !path.is_file()
        {
            return Err(err(
                "tls.ca_file",
                format!("{} is not a file", path.display()),
            ));
        }
        for (i, p) in self.policies.iter().enumerate() {
            check_patterns(&format!("policies[{i}].domains"), &p.domains)?;
            if p.max_connections == Some(0) {
                return Err(err(
                    format!("policies[{i}].max_connections"),
                    "must be at least 1",
                ));
            }
            if let Some(rate) = p.messages_per_second
                && (!rate.is_finite() || rate <= 0.0)
            {
                return Err(err(
                    format!("policies[{i}].messages_per_second"),
                    "must be more than 0",
                ));
            }
            if let Some(pool) = &p.source_pool
                && !self.sources.iter().any(|s| &s.pool == pool)
            {
                return Err(err(
                    format!("policies[{i}].source_pool"),
                    format!("no [[deliver.sources]] entry is in pool {pool:?}"),
                ));
            }
        }
        for (i, r) in self.routes.iter().enumerate() {
            check_patterns(&format!("routes[{i}].domains"), &r.domains)?;
            let Some((host, _)) = split_host_port(&r.host) else {
                return Err(err(
                    format!("routes[{i}].host"),
                    format!("{:?} is not host:port", r.host),
                ));
            };
            if host.parse::<IpAddr>().is_err() && !self.mx_routing() {
                return Err(err(
                    format!("routes[{i}].host"),
                    format!(
                        "{host:?} is a name but no resolver is configured: give an IP \
                         address or set deliver.dns.nameservers"
                    ),
                ));
            }
        }
        for (i, s) in self.sources.iter().enumerate() {
            if s.ehlo.trim().is_empty() {
                return Err(err(format!("sources[{i}].ehlo"), "must be a host name"));
            }
            if s.weight == 0 {
                return Err(err(format!("sources[{i}].weight"), "must be at least 1"));
            }
        }
        for (i, rule) in self.bounce_rules.iter().enumerate() {
            rule.validate()
                .map_err(|message| err(format!("bounce_rules[{i}]"), message))?;
        }
        Ok(())
    }

    /// The first policy whose patterns match `domain`.
    pub fn policy_for(&self, domain: &str) -> Option<&DomainPolicy> {
        self.policies
            .iter()
            .find(|p| p.domains.iter().any(|pat| domain_matches(pat, domain)))
    }

    /// Whether MX routing is enabled (a domain without a static route can be delivered).
    pub fn mx_routing(&self) -> bool {
        !self.dns.nameservers.is_empty() || self.dns.system_resolver
    }
}

/// Splits `host:port` (`[v6]:port` for IPv6 literals).
pub fn split_host_port(s: &str) -> Option<(String, u16)> {
    let (host, port) = s.rsplit_once(':')?;
    let port: u16 = port.parse().ok().filter(|p| *p != 0)?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if host.is_empty() || host.contains(char::is_whitespace) {
        return None;
    }
    Some((host.to_owned(), port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns() {
        assert!(domain_matches("example.test", "example.test"));
        assert!(!domain_matches("example.test", "a.example.test"));
        assert!(domain_matches("*.example.test", "a.example.test"));
        assert!(!domain_matches("*.example.test", "example.test"));
        assert!(!domain_matches("*.example.test", "badexample.test"));
        assert!(domain_matches("*", "anything.test"));
    }

    #[test]
    fn host_port() {
        assert_eq!(
            split_host_port("relay.test:587"),
            Some(("relay.test".into(), 587))
        );
        assert_eq!(split_host_port("[::1]:25"), Some(("::1".into(), 25)));
        assert_eq!(split_host_port("relay.test"), None);
        assert_eq!(split_host_port("relay.test:0"), None);
    }

    #[test]
    fn defaults_are_valid_and_do_not_route_by_mx() {
        let c = DeliverConfig::default();
        c.validate().unwrap();
        assert!(!c.mx_routing());
    }

    #[test]
    fn errors_name_the_key() {
        let mut c = DeliverConfig::default();
        c.routes.push(RouteConfig {
            domains: vec!["x.test".into()],
            host: "nohost".into(),
            ..Default::default()
        });
        assert_eq!(c.validate().unwrap_err().key, "routes[0].host");
        let mut c = DeliverConfig::default();
        c.policies.push(DomainPolicy {
            domains: vec!["bad domain".into()],
            ..Default::default()
        });
        assert_eq!(c.validate().unwrap_err().key, "policies[0].domains");
    }
}
