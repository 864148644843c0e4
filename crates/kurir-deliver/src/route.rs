//! Routing: recipient domain → [`Route`] (the hosts to try, in order, and the site they
//! form).
//!
//! CONTRACT (owned by the routing helper; the engine relies on exactly this API):
//! - Static routes (`[[deliver.routes]]`, first match) win over DNS: a smarthost route has
//!   one host (name → A/AAAA through the same resolver unless it is an IP literal), the
//!   route's TLS policy and AUTH, and site key `smarthost:<host:port>`.
//! - Otherwise, when MX routing is enabled (`DeliverConfig::mx_routing`), MX records via
//!   hickory-resolver pointed at `[deliver.dns] nameservers` (never the hosts file; the
//!   system's resolv.conf only with `system_resolver = true`). hickory's own cache holds
//!   answers for their TTL (bounded by `max_cache_ttl`) and negative answers for at least
//!   `min_negative_ttl`: that is the TTL cache and the negative cache.
//! - Hosts in preference order, shuffled among equal preferences; each host's addresses
//!   (A and AAAA) on port `[deliver.dns] mx_port`. A host whose address lookup fails or
//!   is empty is left out; when every host is left out the error is temporary
//!   (`RouteError::Temporary`), unless they all had NXDOMAIN (permanent `NoAddresses`).
//! - No MX records (NOERROR/NODATA) → implicit MX: the domain itself, preference 0
//!   (RFC 5321 §5.1), if it has A/AAAA; neither → `RouteError::NoSuchDomain`.
//! - NXDOMAIN → `RouteError::NoSuchDomain`. A single MX with root exchange `.` (RFC 7505
//!   null MX) → `RouteError::NullMx`. SERVFAIL, REFUSED, timeouts → `Temporary`.
//! - MX routing disabled and no static route → `RouteError::NoRoute`.
//! - The site key: the sorted, de-duplicated, lower-case MX host names joined by `,`
//!   (the domain itself for an implicit MX), so domains whose MX sets are the same share a
//!   site.

use std::net::SocketAddr;
use std::sync::Arc;

use kurir_core::Domain;

use crate::config::{DeliverConfig, TlsPolicy};

/// The identity of a destination site: domains with the same MX set share one.
pub type SiteKey = Arc<str>;

/// Where mail for one domain goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub site: SiteKey,
    /// Hosts to try, in order.
    pub hosts: Vec<Host>,
    /// Set for a static (smarthost) route: its TLS policy overrides the domain policy and
    /// its credentials are used.
    pub smarthost: Option<Smarthost>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    /// The MX exchange (or smarthost) name, without the trailing dot; SNI and the name a
    /// `verify` certificate must match.
    pub name: String,
    pub preference: u16,
    /// Its addresses with the port to connect to; never empty.
    pub addrs: Vec<SocketAddr>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Smarthost {
    pub tls: TlsPolicy,
    pub auth: Option<(String, String)>,
}

/// Why a domain has no route now.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// Permanent: the domain publishes a null MX (RFC 7505).
    #[error("{0} accepts no mail (null MX)")]
    NullMx(String),
    /// Permanent: NXDOMAIN, or neither MX nor A/AAAA records.
    #[error("{0}: no such domain")]
    NoSuchDomain(String),
    /// Permanent: every MX host name is NXDOMAIN.
    #[error("{0}: no MX host has an address")]
    NoAddresses(String),
    /// Transient: SERVFAIL, timeout, refused, or no MX host resolved now.
    #[error("{domain}: DNS lookup failed: {detail}")]
    Temporary { domain: String, detail: String },
    /// Transient: MX routing is disabled and no static route matches.
    #[error("{0}: no route (MX routing is disabled: set [deliver.dns] nameservers)")]
    NoRoute(String),
}

impl RouteError {
    pub fn is_permanent(&self) -> bool {
        matches!(
            self,
            Self::NullMx(_) | Self::NoSuchDomain(_) | Self::NoAddresses(_)
        )
    }
}

/// Resolves routes; cheap to share (`Arc`).
#[derive(Debug)]
pub struct Router {
    _private: (),
}

impl Router {
    /// Builds the resolver from `[deliver.dns]` and keeps `[deliver.routes]`.
    pub fn new(config: &DeliverConfig) -> Result<Self, String> {
        let _ = config;
        Ok(Self { _private: () })
    }

    /// The route for `domain` (lower-case A-label, no shard suffix).
    pub async fn route(&self, domain: &Domain) -> Result<Route, RouteError> {
        Err(RouteError::NoRoute(domain.as_str().to_owned()))
    }
}
