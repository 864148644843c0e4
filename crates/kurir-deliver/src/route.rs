//! Routing: recipient domain → [`Route`] (the hosts to try, in order, and the site they
//! form).
//!
//! CONTRACT (owned by the routing helper; the engine relies on exactly this API):
//! - Static routes (`[[deliver.routes]]`, first match) win over DNS: a smarthost route has
//!   one host (name → A/AAAA through the same resolver unless it is an IP literal), the
//!   route's TLS policy and AUTH, and site key `smarthost:<host:port>`. A smarthost name
//!   that does not resolve now is `Temporary`; one given while no resolver is configured
//!   makes [`Router::new`] fail.
//! - Otherwise, when MX routing is enabled (`DeliverConfig::mx_routing`), MX records via
//!   hickory-resolver pointed at `[deliver.dns] nameservers` (never the hosts file; the
//!   system's resolv.conf only with `system_resolver = true`). hickory's own cache holds
//!   answers for their TTL (bounded by `max_cache_ttl`) and negative answers for at least
//!   `min_negative_ttl`: that is the TTL cache and the negative cache.
//! - Hosts in preference order, shuffled among equal preferences; each host's addresses
//!   (A and AAAA) on port `[deliver.dns] mx_port`. A host whose address lookup fails or
//!   is empty is left out; when every host is left out the error is temporary
//!   (`RouteError::Temporary`), unless they all had NXDOMAIN (permanent `NoAddresses`).
//!   Only the first 16 distinct hosts in that order are looked up (a bound on the DNS work
//!   one hostile domain can cause); the site key still names them all.
//! - No MX records (NOERROR/NODATA) → implicit MX: the domain itself, preference 0
//!   (RFC 5321 §5.1), if it has A/AAAA; neither → `RouteError::NoSuchDomain`.
//! - NXDOMAIN → `RouteError::NoSuchDomain`. A single MX with root exchange `.` (RFC 7505
//!   null MX) → `RouteError::NullMx`. SERVFAIL, REFUSED, timeouts → `Temporary`.
//! - MX routing disabled and no static route → `RouteError::NoRoute`.
//! - The site key: the sorted, de-duplicated, lower-case MX host names joined by `,`
//!   (the domain itself for an implicit MX), so domains whose MX sets are the same share a
//!   site.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use futures::future::{join, join_all};
use hickory_resolver::TokioResolver;
use hickory_resolver::config::{NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts};
use hickory_resolver::net::NetError;
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::{Name, RData, RecordType};
use kurir_core::Domain;
use rand::seq::SliceRandom;

use crate::config::{
    DeliverConfig, DnsConfig, RouteConfig, TlsPolicy, domain_matches, split_host_port,
};

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

/// MX hosts whose addresses one route looks up, lowest preferences first: a domain that
/// publishes hundreds of MX records costs at most this many A/AAAA pairs per lookup.
const MAX_MX_HOSTS: usize = 16;

/// Resolves routes; cheap to share (`Arc`).
#[derive(Debug)]
pub struct Router {
    /// Present when MX routing is enabled. It also resolves smarthost names, which
    /// [`Router::new`] refuses without one. Its cache is the TTL and negative cache.
    resolver: Option<TokioResolver>,
    /// `[[deliver.routes]]` in configuration order: the first match wins.
    routes: Vec<StaticRoute>,
    /// The port MX hosts (and implicit MX domains) are connected on.
    mx_port: u16,
    /// Bounds the MX routes being resolved at once. A node starting on a backlog for
    /// thousands of domains would otherwise send every lookup at the same moment, and the
    /// nameserver drops what it cannot take (each drop costs a timeout and a deferral).
    /// Answers in the resolver's cache return at once, so waiting here is rare.
    lookups: tokio::sync::Semaphore,
}

/// MX routes resolved at once at most (see `Router::lookups`).
const CONCURRENT_LOOKUPS: usize = 64;

impl Router {
    /// Builds the resolver from `[deliver.dns]` and keeps `[deliver.routes]`.
    ///
    /// Fails, naming the key, when a route's host is not `host:port`, when a smarthost is
    /// given by name while no resolver is configured, or when `system_resolver` is set and
    /// the system's resolver configuration cannot be read.
    pub fn new(config: &DeliverConfig) -> Result<Self, String> {
        let resolver = if config.mx_routing() {
            Some(build_resolver(&config.dns)?)
        } else {
            None
        };
        let mut routes = Vec::with_capacity(config.routes.len());
        for (i, route) in config.routes.iter().enumerate() {
            let route = StaticRoute::parse(route)
                .map_err(|message| format!("deliver.routes[{i}].host: {message}"))?;
            if resolver.is_none() && matches!(route.target, Target::Name(_)) {
                return Err(format!(
                    "deliver.routes[{i}].host: {:?} is a name but no resolver is configured: \
                     give an IP address or set [deliver.dns] nameservers",
                    route.host
                ));
            }
            routes.push(route);
        }
        Ok(Self {
            resolver,
            routes,
            mx_port: config.dns.mx_port,
            lookups: tokio::sync::Semaphore::new(CONCURRENT_LOOKUPS),
        })
    }

    /// The route for `domain` (lower-case A-label, no shard suffix).
    pub async fn route(&self, domain: &Domain) -> Result<Route, RouteError> {
        let domain = domain.as_str();
        if let Some(route) = self.routes.iter().find(|route| route.matches(domain)) {
            return self.smarthost_route(route, domain).await;
        }
        match &self.resolver {
            Some(resolver) => {
                let _permit = self.lookups.acquire().await.expect("never closed");
                mx_route(resolver, domain, self.mx_port).await
            }
            None => Err(RouteError::NoRoute(domain.to_owned())),
        }
    }

    /// A static route: one host, its addresses looked up when it is a name. Any failure to
    /// find them is temporary: a smarthost that does not resolve is the operator's to fix,
    /// not a reason to bounce mail.
    async fn smarthost_route(
        &self,
        route: &StaticRoute,
        domain: &str,
    ) -> Result<Route, RouteError> {
        let addrs = match (&route.target, &self.resolver) {
            (Target::Ip(ip), _) => vec![SocketAddr::new(*ip, route.port)],
            (Target::Name(name), Some(resolver)) => resolve_host(resolver, name, route.port)
                .await
                .map_err(|miss| temporary(domain, format!("smarthost {}: {miss}", route.host)))?,
            // `Router::new` refuses this configuration.
            (Target::Name(_), None) => {
                return Err(temporary(domain, "smarthost name without a resolver"));
            }
        };
        Ok(Route {
            site: Arc::clone(&route.site),
            hosts: vec![Host {
                name: route.host.clone(),
                preference: 0,
                addrs,
            }],
            smarthost: Some(route.smarthost.clone()),
        })
    }
}

/// A `[[deliver.routes]]` entry, parsed once.
#[derive(Debug)]
struct StaticRoute {
    patterns: Vec<String>,
    target: Target,
    port: u16,
    /// The host as configured, lower case, without a trailing dot: the [`Host::name`].
    host: String,
    site: SiteKey,
    smarthost: Smarthost,
}

/// Where a smarthost is: an address as given, or a name to look up on every route.
#[derive(Debug)]
enum Target {
    Ip(IpAddr),
    Name(Name),
}

impl StaticRoute {
    fn parse(config: &RouteConfig) -> Result<Self, String> {
        let (host, port) = split_host_port(&config.host)
            .ok_or_else(|| format!("{:?} is not host:port", config.host))?;
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        let (target, site) = match host.parse::<IpAddr>() {
            Ok(ip) => (Target::Ip(ip), SocketAddr::new(ip, port).to_string()),
            Err(_) => {
                let name =
                    fqdn(&host).map_err(|error| format!("{host:?} is not a host name: {error}"))?;
                (Target::Name(name), format!("{host}:{port}"))
            }
        };
        Ok(Self {
            patterns: config.domains.clone(),
            target,
            port,
            host,
            site: format!("smarthost:{site}").into(),
            smarthost: Smarthost {
                tls: config.tls,
                auth: config
                    .auth
                    .as_ref()
                    .map(|auth| (auth.username.clone(), auth.password.clone())),
            },
        })
    }

    fn matches(&self, domain: &str) -> bool {
        self.patterns
            .iter()
            .any(|pattern| domain_matches(pattern, domain))
    }
}

/// The resolver of `[deliver.dns]`: its nameservers, else the system's (the caller checks
/// that one of them is enabled); never the hosts file.
fn build_resolver(dns: &DnsConfig) -> Result<TokioResolver, String> {
    let config = if dns.nameservers.is_empty() {
        let (config, _) = hickory_resolver::system_conf::read_system_conf().map_err(|error| {
            format!("deliver.dns.system_resolver: cannot read the system resolver configuration: {error}")
        })?;
        config
    } else {
        ResolverConfig::from_name_servers(
            dns.nameservers.iter().copied().map(name_server).collect(),
        )
    };
    let mut builder = TokioResolver::builder_with_config(config, TokioRuntimeProvider::default());
    *builder.options_mut() = resolver_options(dns);
    builder
        .build()
        .map_err(|error| format!("deliver.dns: cannot build the resolver: {error}"))
}

/// A nameserver asked over UDP, with TCP for truncated answers, on its configured port.
fn name_server(addr: SocketAddr) -> NameServerConfig {
    let mut server = NameServerConfig::udp_and_tcp(addr.ip());
    for connection in &mut server.connections {
        connection.port = addr.port();
    }
    server
}

fn resolver_options(dns: &DnsConfig) -> ResolverOpts {
    let mut options = ResolverOpts::default();
    options.timeout = dns.timeout;
    // `attempts` counts tries; hickory's counts retries after the first.
    options.attempts = dns.attempts.saturating_sub(1);
    options.use_hosts_file = ResolveHosts::Never;
    options.positive_max_ttl = Some(dns.max_cache_ttl);
    options.negative_min_ttl = Some(dns.min_negative_ttl);
    // The SOA minimum counts up to `max_cache_ttl`, but never below the floor: hickory
    // clamps into [min, max] and needs min <= max.
    options.negative_max_ttl = Some(dns.max_cache_ttl.max(dns.min_negative_ttl));
    options
}

/// An MX record, its exchange as the host name a [`Host`] carries and as the name to look up.
#[derive(Debug)]
struct Exchange {
    preference: u16,
    name: String,
    fqdn: Name,
}

/// MX routing: the domain's MX hosts (or the domain itself as implicit MX) with addresses.
async fn mx_route(resolver: &TokioResolver, domain: &str, port: u16) -> Result<Route, RouteError> {
    let name = fqdn(domain).map_err(|_| RouteError::NoSuchDomain(domain.to_owned()))?;
    let records = match resolver.lookup(name.clone(), RecordType::MX).await {
        Ok(lookup) => lookup
            .answers()
            .iter()
            .filter_map(|record| match &record.data {
                RData::MX(mx) => Some((mx.preference, mx.exchange.clone())),
                _ => None,
            })
            .collect(),
        Err(error) => match Miss::from(&error) {
            Miss::NxDomain => return Err(RouteError::NoSuchDomain(domain.to_owned())),
            Miss::NoData => Vec::new(),
            Miss::Failed(detail) => return Err(temporary(domain, format!("MX lookup: {detail}"))),
        },
    };
    if records.is_empty() {
        return implicit_mx(resolver, domain, &name, port).await;
    }
    // RFC 7505: a null MX is the only MX; should one stand among others, it is no host.
    if records.iter().all(|(_, exchange)| exchange.is_root()) {
        return Err(RouteError::NullMx(domain.to_owned()));
    }
    let mut exchanges: Vec<Exchange> = records
        .into_iter()
        .filter(|(_, exchange)| !exchange.is_root())
        .map(|(preference, fqdn)| Exchange {
            preference,
            name: host_name(&fqdn),
            fqdn,
        })
        .collect();
    let site = site_key(exchanges.iter().map(|exchange| exchange.name.as_str()));
    shuffle_by_preference(&mut exchanges, |exchange| exchange.preference);
    let mut seen = std::collections::HashSet::new();
    exchanges.retain(|exchange| seen.insert(exchange.name.clone()));
    exchanges.truncate(MAX_MX_HOSTS);
    let hosts = resolve_exchanges(resolver, domain, exchanges, port).await?;
    Ok(Route {
        site,
        hosts,
        smarthost: None,
    })
}

/// RFC 5321 §5.1: without MX records the domain itself is the host, at preference 0.
async fn implicit_mx(
    resolver: &TokioResolver,
    domain: &str,
    name: &Name,
    port: u16,
) -> Result<Route, RouteError> {
    match resolve_host(resolver, name, port).await {
        Ok(addrs) => Ok(Route {
            site: domain.into(),
            hosts: vec![Host {
                name: domain.to_owned(),
                preference: 0,
                addrs,
            }],
            smarthost: None,
        }),
        Err(Miss::Failed(detail)) => Err(temporary(
            domain,
            format!("address lookup (no MX records): {detail}"),
        )),
        Err(Miss::NxDomain | Miss::NoData) => Err(RouteError::NoSuchDomain(domain.to_owned())),
    }
}

/// Looks up every exchange's addresses at once and keeps, in order, those that have some.
async fn resolve_exchanges(
    resolver: &TokioResolver,
    domain: &str,
    exchanges: Vec<Exchange>,
    port: u16,
) -> Result<Vec<Host>, RouteError> {
    let lookups = exchanges
        .iter()
        .map(|exchange| resolve_host(resolver, &exchange.fqdn, port));
    let results = join_all(lookups).await;
    let mut hosts = Vec::with_capacity(exchanges.len());
    let mut misses = Vec::new();
    for (exchange, result) in exchanges.into_iter().zip(results) {
        match result {
            Ok(addrs) => hosts.push(Host {
                name: exchange.name,
                preference: exchange.preference,
                addrs,
            }),
            Err(miss) => {
                tracing::debug!(domain, host = %exchange.name, reason = %miss, "MX host left out");
                misses.push((exchange.name, miss));
            }
        }
    }
    if !hosts.is_empty() {
        return Ok(hosts);
    }
    if misses
        .iter()
        .all(|(_, miss)| matches!(miss, Miss::NxDomain))
    {
        return Err(RouteError::NoAddresses(domain.to_owned()));
    }
    let reasons: Vec<String> = misses
        .iter()
        .map(|(host, miss)| format!("{host}: {miss}"))
        .collect();
    Err(temporary(
        domain,
        format!("no MX host has an address now ({})", reasons.join("; ")),
    ))
}

/// Why a lookup found nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Miss {
    /// The name does not exist.
    NxDomain,
    /// The name exists without records of the type asked for.
    NoData,
    /// No answer now: SERVFAIL, REFUSED, timeout, network error.
    Failed(String),
}

impl From<&NetError> for Miss {
    fn from(error: &NetError) -> Self {
        if error.is_nx_domain() {
            Self::NxDomain
        } else if error.is_no_records_found() {
            Self::NoData
        } else {
            Self::Failed(error.to_string())
        }
    }
}

impl std::fmt::Display for Miss {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NxDomain => f.write_str("no such host (NXDOMAIN)"),
            Self::NoData => f.write_str("no A or AAAA records"),
            Self::Failed(detail) => f.write_str(detail),
        }
    }
}

/// The A and AAAA addresses of `name` (asked at once), IPv4 first, on `port`; never empty
/// when `Ok`. With none found, a failed lookup outweighs NXDOMAIN, which outweighs NODATA.
async fn resolve_host(
    resolver: &TokioResolver,
    name: &Name,
    port: u16,
) -> Result<Vec<SocketAddr>, Miss> {
    let (v4, v6) = join(
        resolver.lookup(name.clone(), RecordType::A),
        resolver.lookup(name.clone(), RecordType::AAAA),
    )
    .await;
    let mut addrs: Vec<SocketAddr> = Vec::new();
    let mut misses = Vec::new();
    for result in [v4, v6] {
        match result {
            Ok(lookup) => {
                for record in lookup.answers() {
                    let ip = match &record.data {
                        RData::A(a) => IpAddr::V4(a.0),
                        RData::AAAA(aaaa) => IpAddr::V6(aaaa.0),
                        _ => continue,
                    };
                    let addr = SocketAddr::new(ip, port);
                    if !addrs.contains(&addr) {
                        addrs.push(addr);
                    }
                }
            }
            Err(error) => misses.push(Miss::from(&error)),
        }
    }
    if !addrs.is_empty() {
        return Ok(addrs);
    }
    if let Some(failed) = misses.iter().find(|miss| matches!(miss, Miss::Failed(_))) {
        return Err(failed.clone());
    }
    if misses.len() == 2 && misses.iter().all(|miss| *miss == Miss::NxDomain) {
        return Err(Miss::NxDomain);
    }
    Err(Miss::NoData)
}

/// Orders by preference, shuffling equal preferences (RFC 5321 §5.1).
fn shuffle_by_preference<T>(items: &mut [T], preference: impl Fn(&T) -> u16) {
    items.shuffle(&mut rand::rng());
    // Stable: the shuffled order among equal preferences stays.
    items.sort_by_key(preference);
}

/// The sorted, de-duplicated, lower-case host names joined by `,`.
fn site_key<'a>(names: impl Iterator<Item = &'a str>) -> SiteKey {
    let mut names: Vec<String> = names.map(str::to_ascii_lowercase).collect();
    names.sort_unstable();
    names.dedup();
    names.join(",").into()
}

/// A name as a [`Host`] carries it: lower case, A-labels, no trailing dot.
fn host_name(name: &Name) -> String {
    let ascii = name.to_lowercase().to_ascii();
    ascii.trim_end_matches('.').to_owned()
}

/// `name` as an absolute DNS name, so that no search domain is ever appended.
fn fqdn(name: &str) -> Result<Name, hickory_resolver::proto::ProtoError> {
    let mut parsed = Name::from_ascii(name)?;
    parsed.set_fqdn(true);
    Ok(parsed)
}

fn temporary(domain: &str, detail: impl Into<String>) -> RouteError {
    RouteError::Temporary {
        domain: domain.to_owned(),
        detail: detail.into(),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn equal_preferences_are_shuffled_and_the_rest_sorted() {
        let mut orders = std::collections::HashSet::new();
        for _ in 0..200 {
            let mut items = vec![(20, "last"), (10, "a"), (5, "first"), (10, "b")];
            shuffle_by_preference(&mut items, |(preference, _)| *preference);
            assert_eq!(items[0], (5, "first"));
            assert_eq!(items[3], (20, "last"));
            orders.insert((items[1].1, items[2].1));
        }
        assert_eq!(orders.len(), 2, "{orders:?}");
    }

    #[test]
    fn site_key_is_sorted_deduplicated_lower_case() {
        let key = site_key(["mx2.b.test", "MX1.b.test", "mx2.b.test"].into_iter());
        assert_eq!(&*key, "mx1.b.test,mx2.b.test");
    }

    #[test]
    fn host_names_lose_case_and_the_final_dot() {
        let name = Name::from_ascii("MX.Example.TEST.").unwrap();
        assert_eq!(host_name(&name), "mx.example.test");
    }

    #[test]
    fn resolver_options_follow_dns_config() {
        let dns = DnsConfig {
            timeout: Duration::from_millis(700),
            attempts: 3,
            max_cache_ttl: Duration::from_secs(10),
            min_negative_ttl: Duration::from_secs(30),
            ..DnsConfig::default()
        };
        let options = resolver_options(&dns);
        assert_eq!(options.negative_min_ttl, Some(Duration::from_secs(30)));
        assert_eq!(options.negative_max_ttl, Some(Duration::from_secs(30)));
        assert_eq!(options.positive_max_ttl, Some(Duration::from_secs(10)));
        assert_eq!(options.use_hosts_file, ResolveHosts::Never);
        assert_eq!(options.timeout, Duration::from_millis(700));
        assert_eq!(options.attempts, 2, "hickory counts retries");
    }

    #[test]
    fn name_server_port_applies_to_udp_and_tcp() {
        let server = name_server("127.0.0.1:5353".parse().unwrap());
        assert_eq!(server.connections.len(), 2);
        assert!(server.connections.iter().all(|c| c.port == 5353));
    }

    #[test]
    fn static_route_parsing() {
        let parse = |host: &str| {
            StaticRoute::parse(&RouteConfig {
                domains: vec!["*".into()],
                host: host.into(),
                ..RouteConfig::default()
            })
        };
        let v6 = parse("[2001:db8::1]:25").unwrap();
        assert_eq!(&*v6.site, "smarthost:[2001:db8::1]:25");
        assert_eq!(v6.host, "2001:db8::1");
        let named = parse("Relay.Example.TEST.:587").unwrap();
        assert_eq!(&*named.site, "smarthost:relay.example.test:587");
        assert!(matches!(named.target, Target::Name(ref n) if n.is_fqdn()));
        assert!(parse("relay.test").unwrap_err().contains("host:port"));
    }
}
