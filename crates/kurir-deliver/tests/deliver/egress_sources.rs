//! Egress sources: mail leaves from the configured local addresses, each introducing
//! itself with its own EHLO name, shared by weight; a domain's policy picks its pool.

use std::collections::BTreeSet;

use kurir_deliver::config::{DomainPolicy, SourceConfig};

use crate::harness::{Env, SENDER, scenario};

fn source(ip: &str, pool: &str) -> SourceConfig {
    SourceConfig {
        address: ip.parse().unwrap(),
        ehlo: format!("out-{}.kurir.test", ip.rsplit('.').next().unwrap()),
        pool: pool.into(),
        weight: 1,
    }
}

async fn run(env: Env) {
    let sink = env.sink("mx.egress.test", 2).await;
    env.dns.add_mx("shared.test", 10, "mx.egress.test");
    env.dns.add_mx("vip.test", 10, "mx.egress.test");
    let mut config = env.config();
    // One message per connection, so every message picks a source afresh.
    config.pool.max_messages_per_connection = 1;
    config.sources = vec![
        source("127.0.0.3", "default"),
        source("127.0.0.4", "default"),
        source("127.0.0.5", "vip"),
    ];
    config.policies.push(DomainPolicy {
        domains: vec!["vip.test".into()],
        source_pool: Some("vip".into()),
        ..DomainPolicy::default()
    });
    let node = env.node(config).await;

    for i in 0..24 {
        env.submit(
            Some(SENDER),
            &[&format!("u{i}@shared.test")],
            "Subject: egress\r\n\r\nbody\r\n",
        )
        .await;
    }
    for i in 0..4 {
        env.submit(
            Some(SENDER),
            &[&format!("v{i}@vip.test")],
            "Subject: egress\r\n\r\nbody\r\n",
        )
        .await;
    }
    env.wait_events(28).await;
    let mut shared = BTreeSet::new();
    for t in sink.transactions() {
        let ip = t.peer.ip().to_string();
        let last = ip.rsplit('.').next().unwrap().to_owned();
        assert_eq!(
            t.ehlo,
            format!("out-{last}.kurir.test"),
            "EHLO names its source"
        );
        if t.rcpts[0].path.ends_with("@vip.test") {
            assert_eq!(ip, "127.0.0.5", "vip.test uses its own pool");
        } else {
            shared.insert(ip);
        }
    }
    let expected: BTreeSet<String> = ["127.0.0.3", "127.0.0.4"].map(String::from).into();
    assert_eq!(shared, expected, "both default sources carry mail");
    node.stop().await;
}

scenario!(egress_sources, run);
