//! MX fallback: the preferred MX host has an address where nothing listens, so the
//! connection is refused and the next MX host (preference 20) gets the message in the
//! same attempt.

use std::net::Ipv4Addr;

use kurir_proto::v1::Outcome;

use crate::harness::{Env, SENDER, scenario};

async fn run(env: Env) {
    // 127.0.0.9 at the scenario's MX port: no sink is bound there.
    env.dns
        .add_a("mx1.fallback.test", Ipv4Addr::new(127, 0, 0, 9));
    let backup = env.sink("mx2.fallback.test", 10).await;
    env.dns.add_mx("fallback.test", 10, "mx1.fallback.test");
    env.dns.add_mx("fallback.test", 20, "mx2.fallback.test");
    let node = env.node(env.config()).await;

    env.submit(
        Some(SENDER),
        &["ann@fallback.test"],
        "Subject: fallback\r\n\r\nhello\r\n",
    )
    .await;
    let e = env
        .wait_event("ann@fallback.test", Outcome::Delivered)
        .await;
    assert_eq!(e.mx_host, "mx2.fallback.test");
    assert_eq!(e.attempt, 1, "the fallback is within the first attempt");
    let txns = backup.transactions();
    assert_eq!(txns.len(), 1);
    assert_eq!(txns[0].accepted_rcpts(), vec!["ann@fallback.test"]);
    assert!(txns[0].accepted());
    assert!(
        env.events()
            .iter()
            .all(|e| e.outcome() == Outcome::Delivered),
        "no deferral on the way: {:?}",
        env.events()
    );
    node.stop().await;
}

scenario!(mx_fallback, run);
