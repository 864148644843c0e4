//! BDAT by default when the receiver offers CHUNKING, and DATA for the domains whose policy
//! says `chunking = false`, over one site (both domains' MX is the same sink).

use kurir_deliver::config::DomainPolicy;
use kurir_proto::v1::Outcome;

use crate::harness::{Env, SENDER, scenario};

async fn run(env: Env) {
    let sink = env.sink("mx.chunk.test", 2).await;
    env.dns.add_mx("bdat.test", 10, "mx.chunk.test");
    env.dns.add_mx("data.test", 10, "mx.chunk.test");
    let mut config = env.config();
    config.policies.push(DomainPolicy {
        domains: vec!["data.test".into()],
        chunking: Some(false),
        ..DomainPolicy::default()
    });
    let node = env.node(config).await;

    for rcpt in ["a@bdat.test", "b@data.test"] {
        env.submit(
            Some(SENDER),
            &[rcpt],
            "Subject: chunks\r\n\r\n.dot\r\nbody\r\n",
        )
        .await;
    }
    for rcpt in ["a@bdat.test", "b@data.test"] {
        env.wait_event(rcpt, Outcome::Delivered).await;
    }
    let txns = sink.transactions();
    let by = |rcpt: &str| {
        let t = txns
            .iter()
            .find(|t| t.accepted_rcpts() == [rcpt])
            .unwrap_or_else(|| panic!("no transaction for {rcpt}: {txns:?}"));
        assert!(t.body_text().ends_with(".dot\r\nbody\r\n"), "{t:?}");
        t.bdat
    };
    assert!(by("a@bdat.test"), "BDAT when offered");
    assert!(!by("b@data.test"), "DATA where the policy says so");
    node.stop().await;
}

scenario!(chunking, run);
