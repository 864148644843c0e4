//! Routing against the test kit's real DNS server: every answer here can only have come
//! from the zone a test set, since the router is pointed at nothing else (no system
//! resolver, no hosts file).

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use kurir_core::Domain;
use kurir_deliver::DeliverConfig;
use kurir_deliver::config::{RouteConfig, SmarthostAuth, TlsPolicy};
use kurir_deliver::route::{Host, Route, RouteError, Router, Smarthost};
use kurir_testkit::dns::Failure;
use kurir_testkit::{DnsServer, wait_for};

/// Per-query timeout for lookups that expect an answer: generous for a loaded machine.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(2);

/// The port MX hosts are connected on in these tests, so that it is seen to be applied.
const MX_PORT: u16 = 2525;

/// How long a test waits for a cached answer to expire (TTLs here are 1 s).
const EXPIRY_DEADLINE: Duration = Duration::from_secs(10);

const LOCAL_1: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 1);
const LOCAL_2: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
const LOCAL_3: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 3);

async fn dns() -> DnsServer {
    DnsServer::start().await.expect("start test DNS server")
}

/// MX routing through `server` only, one try per query.
fn dns_config(server: &DnsServer) -> DeliverConfig {
    let mut config = DeliverConfig::default();
    config.dns.nameservers = vec![server.addr()];
    config.dns.timeout = ANSWER_TIMEOUT;
    config.dns.attempts = 1;
    config.dns.mx_port = MX_PORT;
    config
}

fn router(config: &DeliverConfig) -> Router {
    Router::new(config).expect("build router")
}

fn domain(name: &str) -> Domain {
    Domain::parse(name).expect("valid domain")
}

fn on_mx_port(ip: impl Into<IpAddr>) -> SocketAddr {
    SocketAddr::new(ip.into(), MX_PORT)
}

fn names(route: &Route) -> Vec<&str> {
    route.hosts.iter().map(|host| host.name.as_str()).collect()
}

fn smarthost(domains: &[&str], host: &str) -> RouteConfig {
    RouteConfig {
        domains: domains.iter().map(|d| (*d).to_owned()).collect(),
        host: host.to_owned(),
        ..RouteConfig::default()
    }
}

/// Static routes only: MX routing is off.
fn static_routes(routes: Vec<RouteConfig>) -> DeliverConfig {
    DeliverConfig {
        routes,
        ..DeliverConfig::default()
    }
}

fn assert_temporary(result: Result<Route, RouteError>) -> String {
    match result {
        Err(error @ RouteError::Temporary { .. }) => {
            assert!(!error.is_permanent());
            error.to_string()
        }
        other => panic!("expected a temporary error, got {other:?}"),
    }
}

#[tokio::test]
async fn mx_hosts_come_in_preference_order() {
    let server = dns().await;
    server.add_mx("order.test", 30, "c.order.test");
    server.add_mx("order.test", 10, "a.order.test");
    server.add_mx("order.test", 20, "b.order.test");
    server.add_a("a.order.test", LOCAL_1);
    server.add_a("b.order.test", LOCAL_2);
    server.add_a("c.order.test", LOCAL_3);

    let route = router(&dns_config(&server))
        .route(&domain("order.test"))
        .await
        .expect("route");

    let host = |name: &str, preference, ip| Host {
        name: name.to_owned(),
        preference,
        addrs: vec![on_mx_port(ip)],
    };
    assert_eq!(
        route,
        Route {
            site: "a.order.test,b.order.test,c.order.test".into(),
            hosts: vec![
                host("a.order.test", 10, LOCAL_1),
                host("b.order.test", 20, LOCAL_2),
                host("c.order.test", 30, LOCAL_3),
            ],
            smarthost: None,
        }
    );
}

#[tokio::test]
async fn equal_preferences_are_shuffled() {
    let server = dns().await;
    server.add_mx("equal.test", 5, "first.equal.test");
    for name in ["x.equal.test", "y.equal.test", "z.equal.test"] {
        server.add_mx("equal.test", 10, name);
    }
    server.add_mx("equal.test", 20, "last.equal.test");
    for name in [
        "first.equal.test",
        "x.equal.test",
        "y.equal.test",
        "z.equal.test",
        "last.equal.test",
    ] {
        server.add_a(name, LOCAL_1);
    }
    let router = router(&dns_config(&server));

    // The records are cached after the first lookup: the order is drawn per route.
    let mut seconds = HashSet::new();
    for _ in 0..200 {
        let route = router.route(&domain("equal.test")).await.expect("route");
        let names = names(&route);
        assert_eq!(names.len(), 5, "{names:?}");
        assert_eq!(names[0], "first.equal.test");
        assert_eq!(names[4], "last.equal.test");
        let middle: HashSet<&str> = names[1..4].iter().copied().collect();
        assert_eq!(middle.len(), 3, "{names:?}");
        seconds.insert(names[1].to_owned());
    }
    // Each of three has come second in 200 draws unless the order is not random (the chance
    // of a miss is about 3 * (2/3)^200).
    assert_eq!(seconds.len(), 3, "second host over 200 routes: {seconds:?}");
}

#[tokio::test]
async fn domain_without_mx_is_its_own_host() {
    let server = dns().await;
    server.add_a("implicit.test", LOCAL_2);

    let route = router(&dns_config(&server))
        .route(&domain("implicit.test"))
        .await
        .expect("route");

    assert_eq!(
        route,
        Route {
            site: "implicit.test".into(),
            hosts: vec![Host {
                name: "implicit.test".to_owned(),
                preference: 0,
                addrs: vec![on_mx_port(LOCAL_2)],
            }],
            smarthost: None,
        }
    );
}

#[tokio::test]
async fn aaaa_addresses_are_used() {
    let server = dns().await;
    server.add_mx("six.test", 10, "only6.six.test");
    server.add_mx("six.test", 20, "dual.six.test");
    server.add_aaaa("only6.six.test", Ipv6Addr::LOCALHOST);
    server.add_a("dual.six.test", LOCAL_1);
    server.add_aaaa("dual.six.test", Ipv6Addr::LOCALHOST);

    let route = router(&dns_config(&server))
        .route(&domain("six.test"))
        .await
        .expect("route");

    assert_eq!(names(&route), ["only6.six.test", "dual.six.test"]);
    assert_eq!(route.hosts[0].addrs, [on_mx_port(Ipv6Addr::LOCALHOST)]);
    assert_eq!(
        route.hosts[1].addrs,
        [on_mx_port(LOCAL_1), on_mx_port(Ipv6Addr::LOCALHOST)]
    );
}

#[tokio::test]
async fn implicit_mx_may_be_ipv6_only() {
    let server = dns().await;
    server.add_aaaa("v6only.test", Ipv6Addr::LOCALHOST);

    let route = router(&dns_config(&server))
        .route(&domain("v6only.test"))
        .await
        .expect("route");

    assert_eq!(route.hosts[0].addrs, [on_mx_port(Ipv6Addr::LOCALHOST)]);
}

#[tokio::test]
async fn null_mx_accepts_no_mail() {
    let server = dns().await;
    server.add_a("nomail.test", LOCAL_1);
    server.set_null_mx("nomail.test");

    let error = router(&dns_config(&server))
        .route(&domain("nomail.test"))
        .await
        .unwrap_err();

    assert_eq!(error, RouteError::NullMx("nomail.test".into()));
    assert!(error.is_permanent());
}

#[tokio::test]
async fn null_mx_among_other_mx_records_is_no_host() {
    let server = dns().await;
    server.set_null_mx("mixed.test");
    server.add_mx("mixed.test", 10, "mx.mixed.test");
    server.add_a("mx.mixed.test", LOCAL_1);

    let route = router(&dns_config(&server))
        .route(&domain("mixed.test"))
        .await
        .expect("route");

    assert_eq!(names(&route), ["mx.mixed.test"]);
    assert_eq!(&*route.site, "mx.mixed.test");
}

#[tokio::test]
async fn nxdomain_is_no_such_domain() {
    let server = dns().await;
    server.add_mx("other.test", 10, "mx.other.test");
    server.add_a("mx.other.test", LOCAL_1);

    let error = router(&dns_config(&server))
        .route(&domain("missing.test"))
        .await
        .unwrap_err();

    assert_eq!(error, RouteError::NoSuchDomain("missing.test".into()));
    assert!(error.is_permanent());
}

#[tokio::test]
async fn domain_with_neither_mx_nor_address_is_no_such_domain() {
    let server = dns().await;
    server.add_txt("textonly.test", "v=spf1 -all");

    let error = router(&dns_config(&server))
        .route(&domain("textonly.test"))
        .await
        .unwrap_err();

    assert_eq!(error, RouteError::NoSuchDomain("textonly.test".into()));
}

#[tokio::test]
async fn servfail_and_refused_are_temporary() {
    let server = dns().await;
    for (name, failure) in [
        ("servfail.test", Failure::ServFail),
        ("refused.test", Failure::Refused),
    ] {
        server.add_mx(name, 10, "mx.ok.test");
        server.fail(name, failure);
    }
    server.add_a("mx.ok.test", LOCAL_1);
    let router = router(&dns_config(&server));

    for name in ["servfail.test", "refused.test"] {
        let detail = assert_temporary(router.route(&domain(name)).await);
        assert!(detail.contains(name), "{detail}");
    }
}

#[tokio::test]
async fn timeout_is_temporary() {
    let server = dns().await;
    server.add_mx("silent.test", 10, "mx.silent.test");
    server.add_a("mx.silent.test", LOCAL_1);
    server.fail("silent.test", Failure::Timeout);
    let mut config = dns_config(&server);
    config.dns.timeout = Duration::from_millis(300);
    config.dns.attempts = 1;

    let started = Instant::now();
    assert_temporary(router(&config).route(&domain("silent.test")).await);

    // Bounded by the configured timeout, not hickory's default of 5 s per try.
    let elapsed = started.elapsed();
    assert!(elapsed < Duration::from_secs(4), "took {elapsed:?}");
    assert_eq!(server.query_count("silent.test"), 1, "one try per query");
}

#[tokio::test]
async fn mx_host_without_address_is_left_out() {
    let server = dns().await;
    server.add_mx("partial.test", 10, "gone.partial.test");
    server.add_mx("partial.test", 20, "noaddr.partial.test");
    server.add_mx("partial.test", 30, "broken.partial.test");
    server.add_mx("partial.test", 40, "ok.partial.test");
    server.add_txt("noaddr.partial.test", "no address here");
    server.add_a("broken.partial.test", LOCAL_2);
    server.fail("broken.partial.test", Failure::ServFail);
    server.add_a("ok.partial.test", LOCAL_1);

    let route = router(&dns_config(&server))
        .route(&domain("partial.test"))
        .await
        .expect("route");

    assert_eq!(names(&route), ["ok.partial.test"]);
    assert_eq!(route.hosts[0].addrs, [on_mx_port(LOCAL_1)]);
    // The site is the MX set, whatever resolved this time.
    assert_eq!(
        &*route.site,
        "broken.partial.test,gone.partial.test,noaddr.partial.test,ok.partial.test"
    );
}

#[tokio::test]
async fn every_mx_host_nxdomain_is_permanent() {
    let server = dns().await;
    server.add_mx("dangling.test", 10, "gone1.elsewhere.test");
    server.add_mx("dangling.test", 20, "gone2.elsewhere.test");

    let error = router(&dns_config(&server))
        .route(&domain("dangling.test"))
        .await
        .unwrap_err();

    assert_eq!(error, RouteError::NoAddresses("dangling.test".into()));
    assert!(error.is_permanent());
}

#[tokio::test]
async fn no_mx_host_with_address_for_other_reasons_is_temporary() {
    let server = dns().await;
    // One host exists without addresses (NODATA), the other is NXDOMAIN.
    server.add_mx("nodata.test", 10, "noaddr.nodata.test");
    server.add_mx("nodata.test", 20, "gone.nodata.test");
    server.add_txt("noaddr.nodata.test", "no address here");
    // One host cannot be resolved now, the other is NXDOMAIN.
    server.add_mx("flaky.test", 10, "broken.flaky.test");
    server.add_mx("flaky.test", 20, "gone.flaky.test");
    server.add_a("broken.flaky.test", LOCAL_1);
    server.fail("broken.flaky.test", Failure::ServFail);
    let router = router(&dns_config(&server));

    let detail = assert_temporary(router.route(&domain("nodata.test")).await);
    assert!(detail.contains("noaddr.nodata.test"), "{detail}");
    let detail = assert_temporary(router.route(&domain("flaky.test")).await);
    assert!(detail.contains("broken.flaky.test"), "{detail}");
}

#[tokio::test]
async fn answers_are_cached_within_their_ttl() {
    let server = dns().await;
    server.add_mx("cached.test", 10, "mx.cached.test");
    server.add_a("mx.cached.test", LOCAL_1);
    let router = router(&dns_config(&server));

    let first = router.route(&domain("cached.test")).await.expect("route");
    let asked = (
        server.query_count("cached.test"),
        server.query_count("mx.cached.test"),
    );
    assert!(asked.0 >= 1 && asked.1 >= 1, "{asked:?}");
    let second = router.route(&domain("cached.test")).await.expect("route");

    assert_eq!(first, second);
    assert_eq!(
        (
            server.query_count("cached.test"),
            server.query_count("mx.cached.test"),
        ),
        asked,
        "the second route within the TTL asked the server again"
    );
}

/// Routes `name` until the server has been asked about it again, or fails after a deadline.
async fn wait_for_requery(router: &Router, server: &DnsServer, name: &str) {
    let before = server.query_count(name);
    let target = domain(name);
    let target = &target;
    wait_for(
        &format!("{name} to be asked again"),
        EXPIRY_DEADLINE,
        || async move {
            router.route(target).await.expect("route");
            (server.query_count(name) > before).then_some(())
        },
    )
    .await
    .expect("cache expiry");
}

#[tokio::test]
async fn answers_are_asked_again_after_their_ttl() {
    let server = dns().await;
    server.add_mx("short.test", 10, "mx.short.test");
    server.add_a("mx.short.test", LOCAL_1);
    server.set_ttl("short.test", 1);
    server.set_ttl("mx.short.test", 1);
    let router = router(&dns_config(&server));
    router.route(&domain("short.test")).await.expect("route");

    wait_for_requery(&router, &server, "short.test").await;
}

#[tokio::test]
async fn max_cache_ttl_bounds_long_ttls() {
    let server = dns().await;
    // The server's default TTL (60 s) is far longer than the test waits.
    server.add_mx("long.test", 10, "mx.long.test");
    server.add_a("mx.long.test", LOCAL_1);
    let mut config = dns_config(&server);
    config.dns.max_cache_ttl = Duration::from_secs(1);
    let router = router(&config);
    router.route(&domain("long.test")).await.expect("route");

    wait_for_requery(&router, &server, "long.test").await;
}

#[tokio::test]
async fn negative_answers_are_cached_at_least_min_negative_ttl() {
    let server = dns().await;
    // The server says negative answers may be cached for 0 s; the floor is 60 s.
    server.set_negative_ttl(0);
    let mut config = dns_config(&server);
    config.dns.min_negative_ttl = Duration::from_secs(60);
    let router = router(&config);

    let first = router.route(&domain("late.test")).await.unwrap_err();
    assert_eq!(first, RouteError::NoSuchDomain("late.test".into()));
    let asked = server.query_count("late.test");
    assert!(asked >= 1);

    // The domain appears, but the cached NXDOMAIN still answers.
    server.add_mx("late.test", 10, "mx.late.test");
    server.add_a("mx.late.test", LOCAL_1);
    let second = router.route(&domain("late.test")).await.unwrap_err();

    assert_eq!(second, first);
    assert_eq!(server.query_count("late.test"), asked);
}

#[tokio::test]
async fn domains_with_the_same_mx_set_share_a_site() {
    let server = dns().await;
    server.add_mx("one.test", 10, "MX1.Shared.test");
    server.add_mx("one.test", 20, "mx2.shared.test");
    server.add_mx("two.test", 5, "mx2.shared.test");
    server.add_mx("two.test", 5, "mx1.shared.test");
    server.add_mx("three.test", 10, "mx1.shared.test");
    server.add_a("mx1.shared.test", LOCAL_1);
    server.add_a("mx2.shared.test", LOCAL_2);
    let router = router(&dns_config(&server));

    let one = router.route(&domain("one.test")).await.expect("route");
    let two = router.route(&domain("two.test")).await.expect("route");
    let three = router.route(&domain("three.test")).await.expect("route");

    assert_eq!(&*one.site, "mx1.shared.test,mx2.shared.test");
    assert_eq!(one.site, two.site);
    assert_eq!(&*three.site, "mx1.shared.test");
    assert_ne!(one.site, three.site);
}

#[tokio::test]
async fn smarthost_by_address_needs_no_dns() {
    let config = static_routes(vec![RouteConfig {
        tls: TlsPolicy::Require,
        auth: Some(SmarthostAuth {
            username: "user".into(),
            password: "secret".into(),
        }),
        ..smarthost(&["*.relayed.test"], "127.0.0.1:2526")
    }]);
    let router = router(&config);

    let route = router
        .route(&domain("a.relayed.test"))
        .await
        .expect("route");

    assert_eq!(
        route,
        Route {
            site: "smarthost:127.0.0.1:2526".into(),
            hosts: vec![Host {
                name: "127.0.0.1".into(),
                preference: 0,
                addrs: vec![SocketAddr::from((LOCAL_1, 2526))],
            }],
            smarthost: Some(Smarthost {
                tls: TlsPolicy::Require,
                auth: Some(("user".into(), "secret".into())),
            }),
        }
    );
    // `*.relayed.test` matches sub-domains only; MX routing is off for the rest.
    assert_eq!(
        router.route(&domain("relayed.test")).await.unwrap_err(),
        RouteError::NoRoute("relayed.test".into())
    );
}

#[tokio::test]
async fn smarthost_ipv6_literal() {
    let config = static_routes(vec![smarthost(&["*"], "[::1]:2527")]);

    let route = router(&config)
        .route(&domain("any.test"))
        .await
        .expect("route");

    assert_eq!(&*route.site, "smarthost:[::1]:2527");
    assert_eq!(route.hosts[0].name, "::1");
    assert_eq!(
        route.hosts[0].addrs,
        [SocketAddr::new(Ipv6Addr::LOCALHOST.into(), 2527)]
    );
}

#[tokio::test]
async fn smarthost_by_name_is_resolved_and_wins_over_mx() {
    let server = dns().await;
    server.add_a("relay.test", LOCAL_3);
    server.add_aaaa("relay.test", Ipv6Addr::LOCALHOST);
    server.add_mx("routed.test", 10, "mx.routed.test");
    server.add_a("mx.routed.test", LOCAL_1);
    let mut config = dns_config(&server);
    config.routes = vec![smarthost(&["routed.test"], "Relay.Test:587")];

    let route = router(&config)
        .route(&domain("routed.test"))
        .await
        .expect("route");

    assert_eq!(&*route.site, "smarthost:relay.test:587");
    assert_eq!(names(&route), ["relay.test"]);
    assert_eq!(
        route.hosts[0].addrs,
        [
            SocketAddr::from((LOCAL_3, 587)),
            SocketAddr::new(Ipv6Addr::LOCALHOST.into(), 587),
        ]
    );
    assert_eq!(route.smarthost.map(|s| s.tls), Some(TlsPolicy::default()));
    assert_eq!(
        server.query_count("routed.test"),
        0,
        "MX asked for a static route"
    );
}

#[tokio::test]
async fn smarthost_that_does_not_resolve_is_temporary() {
    let server = dns().await;
    let mut config = dns_config(&server);
    config.routes = vec![smarthost(&["*"], "nowhere.test:25")];

    let detail = assert_temporary(router(&config).route(&domain("any.test")).await);

    assert!(detail.contains("nowhere.test"), "{detail}");
}

#[tokio::test]
async fn first_matching_static_route_wins() {
    let config = static_routes(vec![
        smarthost(&["exact.test", "*.sub.test"], "127.0.0.1:1001"),
        smarthost(&["*.sub.test"], "127.0.0.1:1002"),
        smarthost(&["*"], "127.0.0.1:1003"),
    ]);
    let router = router(&config);

    for (name, port) in [
        ("exact.test", 1001),
        ("deep.a.sub.test", 1001),
        ("sub.test", 1003),
        ("other.test", 1003),
    ] {
        let route = router.route(&domain(name)).await.expect("route");
        assert_eq!(
            route.hosts[0].addrs,
            [SocketAddr::from((LOCAL_1, port))],
            "{name}"
        );
    }
}

#[tokio::test]
async fn without_mx_routing_there_is_no_route() {
    let error = router(&DeliverConfig::default())
        .route(&domain("example.test"))
        .await
        .unwrap_err();

    assert_eq!(error, RouteError::NoRoute("example.test".into()));
    assert!(!error.is_permanent());
}

#[test]
fn smarthost_name_without_resolver_is_refused() {
    let config = static_routes(vec![
        smarthost(&["a.test"], "127.0.0.1:25"),
        smarthost(&["*"], "relay.test:25"),
    ]);

    let error = Router::new(&config).unwrap_err();

    assert!(error.starts_with("deliver.routes[1].host:"), "{error}");
    assert!(error.contains("relay.test"), "{error}");
}
