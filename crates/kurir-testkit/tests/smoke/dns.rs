//! [`DnsServer`] asked by a real resolver (hickory-resolver) that knows no other name server:
//! every answer checked here can only have come from the zone the test set.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolveHosts, ResolverConfig};
use hickory_resolver::lookup::Lookup;
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError, NetError, NoRecords};
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::rr::RData;
use kurir_testkit::DnsServer;
use kurir_testkit::dns::{DEFAULT_TTL, Failure};

/// Per-query timeout for resolvers that expect answers: generous for a loaded 2-core machine.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(2);

/// A resolver that asks only `server`, over `connection` (UDP or TCP), once per query, with
/// no hosts file and no system configuration.
fn resolver_with(
    server: &DnsServer,
    mut connection: ConnectionConfig,
    timeout: Duration,
) -> TokioResolver {
    connection.port = server.addr().port();
    let name_server = NameServerConfig::new(server.addr().ip(), true, vec![connection]);
    let config = ResolverConfig::from_name_servers(vec![name_server]);
    let mut builder = TokioResolver::builder_with_config(config, TokioRuntimeProvider::default());
    let options = builder.options_mut();
    options.timeout = timeout;
    options.attempts = 1;
    options.use_hosts_file = ResolveHosts::Never;
    builder.build().expect("build resolver")
}

/// A UDP resolver that asks only `server`.
fn resolver(server: &DnsServer) -> TokioResolver {
    resolver_with(server, ConnectionConfig::udp(), ANSWER_TIMEOUT)
}

fn mx_of(lookup: &Lookup) -> Vec<(u16, String)> {
    let mut mx: Vec<(u16, String)> = lookup
        .answers()
        .iter()
        .filter_map(|record| match &record.data {
            RData::MX(mx) => Some((mx.preference, mx.exchange.to_string())),
            _ => None,
        })
        .collect();
    mx.sort();
    mx
}

fn ipv4_of(lookup: &Lookup) -> Vec<Ipv4Addr> {
    let mut ips: Vec<Ipv4Addr> = lookup
        .answers()
        .iter()
        .filter_map(|record| match &record.data {
            RData::A(a) => Some(a.0),
            _ => None,
        })
        .collect();
    ips.sort();
    ips
}

/// The negative answer inside `error`, or a panic naming what came instead.
fn no_records(error: &NetError) -> &NoRecords {
    match error {
        NetError::Dns(DnsError::NoRecordsFound(no_records)) => no_records,
        other => panic!("expected a negative answer, got {other:?}"),
    }
}

#[tokio::test]
async fn mx_lookup_returns_exchanges_with_preferences_authoritatively() {
    let dns = DnsServer::start().await.unwrap();
    dns.add_mx("example.test", 20, "mx2.example.test");
    dns.add_mx("example.test", 10, "mx1.example.test");
    dns.add_mx("other.test", 5, "mx.other.test");

    // Mixed case: names are case-insensitive.
    let lookup = resolver(&dns).mx_lookup("Example.TEST.").await.unwrap();

    assert_eq!(
        mx_of(&lookup),
        [
            (10, "mx1.example.test.".to_owned()),
            (20, "mx2.example.test.".to_owned())
        ]
    );
    assert!(lookup.message().metadata.authoritative, "AA bit not set");
    assert_eq!(lookup.answers()[0].ttl, DEFAULT_TTL);
}

#[tokio::test]
async fn a_aaaa_and_txt_lookups_return_what_was_set() {
    let dns = DnsServer::start().await.unwrap();
    dns.add_a("mx.example.test", Ipv4Addr::new(127, 0, 0, 7));
    dns.add_a("mx.example.test", Ipv4Addr::new(127, 0, 0, 8));
    dns.add_aaaa("mx.example.test", Ipv6Addr::LOCALHOST);
    dns.add_txt("example.test", "v=spf1 -all");
    let resolver = resolver(&dns);

    let a = resolver.ipv4_lookup("mx.example.test.").await.unwrap();
    assert_eq!(
        ipv4_of(&a),
        [Ipv4Addr::new(127, 0, 0, 7), Ipv4Addr::new(127, 0, 0, 8)]
    );

    let aaaa = resolver.ipv6_lookup("mx.example.test.").await.unwrap();
    let ipv6: Vec<Ipv6Addr> = aaaa
        .answers()
        .iter()
        .filter_map(|record| match &record.data {
            RData::AAAA(aaaa) => Some(aaaa.0),
            _ => None,
        })
        .collect();
    assert_eq!(ipv6, [Ipv6Addr::LOCALHOST]);

    let txt = resolver.txt_lookup("example.test.").await.unwrap();
    let texts: Vec<String> = txt
        .answers()
        .iter()
        .filter_map(|record| match &record.data {
            RData::TXT(txt) => Some(txt.to_string()),
            _ => None,
        })
        .collect();
    assert_eq!(texts, ["v=spf1 -all"]);
}

#[tokio::test]
async fn null_mx_is_a_single_mx_with_preference_zero_and_root_exchange() {
    let dns = DnsServer::start().await.unwrap();
    dns.add_mx("nomail.test", 10, "mx.nomail.test");
    dns.set_null_mx("nomail.test");

    let lookup = resolver(&dns).mx_lookup("nomail.test.").await.unwrap();

    assert_eq!(mx_of(&lookup), [(0, ".".to_owned())]);
}

#[tokio::test]
async fn unknown_name_is_nxdomain_and_missing_type_is_nodata() {
    let dns = DnsServer::start().await.unwrap();
    dns.add_a("host.example.test", Ipv4Addr::new(127, 0, 0, 1));
    dns.set_negative_ttl(30);
    let resolver = resolver(&dns);

    let error = resolver.mx_lookup("unknown.test.").await.unwrap_err();
    assert!(error.is_nx_domain(), "{error:?}");
    // The SOA that carries the negative-caching TTL came along.
    assert_eq!(no_records(&error).negative_ttl, Some(30), "{error:?}");

    let error = resolver.mx_lookup("host.example.test.").await.unwrap_err();
    assert_eq!(
        no_records(&error).response_code,
        ResponseCode::NoError,
        "{error:?}"
    );

    // An empty non-terminal exists: NODATA, not NXDOMAIN.
    let error = resolver.mx_lookup("example.test.").await.unwrap_err();
    assert_eq!(
        no_records(&error).response_code,
        ResponseCode::NoError,
        "{error:?}"
    );
}

#[tokio::test]
async fn servfail_failure_answers_servfail_until_cleared() {
    let dns = DnsServer::start().await.unwrap();
    dns.add_mx("flaky.test", 10, "mx.flaky.test");
    dns.fail("flaky.test", Failure::ServFail);
    let resolver = resolver(&dns);

    let error = resolver.mx_lookup("flaky.test.").await.unwrap_err();
    assert!(
        matches!(
            error,
            NetError::Dns(DnsError::ResponseCode(ResponseCode::ServFail))
        ),
        "{error:?}"
    );

    dns.clear_failure("flaky.test");
    let lookup = resolver.mx_lookup("flaky.test.").await.unwrap();
    assert_eq!(mx_of(&lookup), [(10, "mx.flaky.test.".to_owned())]);
}

#[tokio::test]
async fn nxdomain_failure_hides_existing_records() {
    let dns = DnsServer::start().await.unwrap();
    dns.add_mx("gone.test", 10, "mx.gone.test");
    dns.fail("gone.test", Failure::NxDomain);

    let error = resolver(&dns).mx_lookup("gone.test.").await.unwrap_err();

    assert!(error.is_nx_domain(), "{error:?}");
}

#[tokio::test]
async fn refused_failure_answers_refused() {
    let dns = DnsServer::start().await.unwrap();
    dns.fail("lame.test", Failure::Refused);

    let error = resolver(&dns).mx_lookup("lame.test.").await.unwrap_err();

    assert!(
        matches!(
            error,
            NetError::Dns(DnsError::ResponseCode(ResponseCode::Refused))
        ),
        "{error:?}"
    );
}

#[tokio::test]
async fn timeout_failure_never_answers_so_the_resolver_times_out() {
    let dns = DnsServer::start().await.unwrap();
    dns.add_mx("slow.test", 10, "mx.slow.test");
    dns.fail("slow.test", Failure::Timeout);
    let resolver = resolver_with(&dns, ConnectionConfig::udp(), Duration::from_millis(300));

    let started = Instant::now();
    let result = tokio::time::timeout(Duration::from_secs(10), resolver.mx_lookup("slow.test."))
        .await
        .expect("the resolver's own timeout should end the lookup");

    let error = result.unwrap_err();
    assert!(matches!(error, NetError::Timeout), "{error:?}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    // The query did arrive: the silence was the server's choice, not a wrong port.
    assert!(dns.query_count("slow.test") >= 1);
}

#[tokio::test]
async fn lookup_over_tcp_is_answered_on_the_same_port() {
    let dns = DnsServer::start().await.unwrap();
    dns.add_mx("example.test", 10, "mx.example.test");
    let resolver = resolver_with(&dns, ConnectionConfig::tcp(), ANSWER_TIMEOUT);

    let lookup = resolver.mx_lookup("example.test.").await.unwrap();

    assert_eq!(mx_of(&lookup), [(10, "mx.example.test.".to_owned())]);
    assert_eq!(dns.tcp_queries(), 1);
    assert_eq!(dns.total_queries(), 1);
}

#[tokio::test]
async fn query_count_shows_a_caching_resolver_asks_once_within_the_ttl() {
    let dns = DnsServer::start().await.unwrap();
    dns.add_mx("cached.test", 10, "mx.cached.test");
    dns.add_mx("uncached.test", 10, "mx.uncached.test");
    dns.set_ttl("uncached.test", 0);
    let resolver = resolver(&dns);
    assert_eq!(dns.query_count("cached.test"), 0);

    for _ in 0..2 {
        resolver.mx_lookup("cached.test.").await.unwrap();
        let lookup = resolver.mx_lookup("uncached.test.").await.unwrap();
        assert_eq!(lookup.answers()[0].ttl, 0);
    }

    assert_eq!(dns.query_count("CACHED.test"), 1);
    assert_eq!(dns.query_count("uncached.test"), 2);
    assert_eq!(dns.total_queries(), 3);
}

#[tokio::test]
async fn zone_changes_are_visible_at_runtime() {
    let dns = DnsServer::start().await.unwrap();
    dns.add_a("moving.test", Ipv4Addr::new(127, 0, 0, 1));
    let resolver = resolver(&dns);
    let first = resolver.ipv4_lookup("moving.test.").await.unwrap();
    assert_eq!(ipv4_of(&first), [Ipv4Addr::new(127, 0, 0, 1)]);

    dns.remove("moving.test");
    resolver.clear_cache();
    let error = resolver.ipv4_lookup("moving.test.").await.unwrap_err();
    assert!(error.is_nx_domain(), "{error:?}");

    dns.add_a("moving.test", Ipv4Addr::new(127, 0, 0, 2));
    resolver.clear_cache();
    let moved = resolver.ipv4_lookup("moving.test.").await.unwrap();
    assert_eq!(ipv4_of(&moved), [Ipv4Addr::new(127, 0, 0, 2)]);

    dns.clear();
    resolver.clear_cache();
    let error = resolver.ipv4_lookup("moving.test.").await.unwrap_err();
    assert!(error.is_nx_domain(), "{error:?}");
    assert_eq!(dns.query_count("moving.test"), 4);
}

#[tokio::test]
async fn dropping_the_server_stops_it() {
    let dns = DnsServer::start().await.unwrap();
    dns.add_a("dropped.test", Ipv4Addr::new(127, 0, 0, 1));
    let resolver = resolver_with(&dns, ConnectionConfig::udp(), Duration::from_millis(300));
    resolver.ipv4_lookup("dropped.test.").await.unwrap();
    resolver.clear_cache();

    drop(dns);

    let result = resolver.ipv4_lookup("dropped.test.").await;
    assert!(
        result.is_err(),
        "a dropped server still answered: {result:?}"
    );
}
