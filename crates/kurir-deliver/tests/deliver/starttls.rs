//! STARTTLS per policy: opportunistic uses TLS when offered; `require` towards a receiver
//! without STARTTLS defers and never sends in clear; `verify` refuses a certificate from
//! an unknown CA (deferred) and accepts one from the configured CA.

use kurir_deliver::config::{DomainPolicy, TlsPolicy};
use kurir_proto::v1::Outcome;
use kurir_testkit::TestCa;

use crate::harness::{Env, SENDER, scenario};

fn policy(domain: &str, tls: TlsPolicy) -> DomainPolicy {
    DomainPolicy {
        domains: vec![domain.into()],
        tls: Some(tls),
        ..DomainPolicy::default()
    }
}

async fn opportunistic(env: Env) {
    let ca = TestCa::new();
    let sink = env.sink("mx.tls.test", 2).await;
    sink.set_extensions(kurir_testkit::smtp_sink::Extensions {
        starttls: Some(ca.server_config(&["mx.tls.test"])),
        ..Default::default()
    });
    env.dns.add_mx("tls.test", 10, "mx.tls.test");
    let node = env.node(env.config()).await;

    env.submit(
        Some(SENDER),
        &["a@tls.test"],
        "Subject: tls\r\n\r\nbody\r\n",
    )
    .await;
    let e = env.wait_event("a@tls.test", Outcome::Delivered).await;
    assert_eq!(e.tls_version, "TLSv1.3");
    assert!(
        sink.transactions()[0].tls.is_some(),
        "the mail went over TLS"
    );
    node.stop().await;
}

async fn required_but_missing(env: Env) {
    let sink = env.sink("mx.plain.test", 2).await;
    env.dns.add_mx("plain.test", 10, "mx.plain.test");
    let mut config = env.config();
    config
        .policies
        .push(policy("plain.test", TlsPolicy::Require));
    let node = env.node(config).await;

    env.submit(
        Some(SENDER),
        &["a@plain.test"],
        "Subject: x\r\n\r\nsecret\r\n",
    )
    .await;
    let e = env.wait_event("a@plain.test", Outcome::Deferred).await;
    assert_eq!(e.attempt, 1);
    assert!(
        sink.transactions().is_empty(),
        "nothing may be sent in clear under `require`"
    );
    assert!(node.metrics.outcome_count("delivered") == 0);
    node.stop().await;
}

async fn verify(env: Env) {
    let good_ca = TestCa::new();
    let other_ca = TestCa::new();
    let other_dir = tempfile::tempdir().unwrap();
    let good_dir = tempfile::tempdir().unwrap();
    let sink = env.sink("mx.verify.test", 2).await;
    sink.set_extensions(kurir_testkit::smtp_sink::Extensions {
        starttls: Some(good_ca.server_config(&["mx.verify.test"])),
        ..Default::default()
    });
    env.dns.add_mx("verify.test", 10, "mx.verify.test");

    // Trusting another CA only: the certificate does not verify, the message waits.
    let mut config = env.config();
    config
        .policies
        .push(policy("verify.test", TlsPolicy::Verify));
    config.tls.ca_file = Some(other_ca.write_ca_pem(other_dir.path()).unwrap());
    let node = env.node(config.clone()).await;
    env.submit(
        Some(SENDER),
        &["a@verify.test"],
        "Subject: v\r\n\r\nbody\r\n",
    )
    .await;
    let e = env.wait_event("a@verify.test", Outcome::Deferred).await;
    assert!(e.reply.is_none());
    assert!(sink.transactions().is_empty());
    node.stop().await;

    // Trusting the right CA: the retry is delivered over verified TLS.
    config.tls.ca_file = Some(good_ca.write_ca_pem(good_dir.path()).unwrap());
    let node = env.node(config).await;
    let e = env.wait_event("a@verify.test", Outcome::Delivered).await;
    assert_eq!(e.tls_version, "TLSv1.3");
    assert_eq!(e.attempt, 2);
    node.stop().await;
}

scenario!(opportunistic, opportunistic);
scenario!(required_but_missing, required_but_missing);
scenario!(verify, verify);
