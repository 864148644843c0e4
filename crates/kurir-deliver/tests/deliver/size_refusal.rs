//! SIZE: a receiver advertising `SIZE 1000` gets no transaction for a 5000-byte message;
//! it bounces at once as too large, not deferred, and is not suppressed.

use kurir_core::{BounceClass, Outcome as CoreOutcome};
use kurir_proto::v1::Outcome;
use kurir_testkit::smtp_sink::Extensions;

use crate::harness::{Env, SENDER, scenario};

async fn run(env: Env) {
    let sink = env.sink("mx.small.test", 2).await;
    sink.set_extensions(Extensions {
        size: Some(1000),
        ..Extensions::default()
    });
    env.dns.add_mx("small.test", 10, "mx.small.test");
    let node = env.node(env.config()).await;

    let body = format!("Subject: big\r\n\r\n{}\r\n", "x".repeat(5000));
    env.submit(Some(SENDER), &["gus@small.test"], &body).await;
    let e = env.wait_event("gus@small.test", Outcome::Bounced).await;
    assert_eq!(
        e.core_outcome().unwrap(),
        Some(CoreOutcome::Bounced(BounceClass::TooLarge))
    );
    assert_eq!(e.attempt, 1);
    assert_eq!(e.mx_host, "mx.small.test");
    let reply = e.reply.as_ref().expect("the reason as a reply");
    assert_eq!((reply.code, reply.enhanced_code.as_str()), (552, "5.3.4"));
    assert!(
        sink.connections_total() >= 1,
        "it did connect to learn SIZE"
    );
    assert!(
        sink.transactions().is_empty(),
        "no MAIL was sent: {:?}",
        sink.transactions()
    );
    assert!(!env.is_suppressed("gus@small.test").await);
    node.stop().await;
}

scenario!(size_refusal, run);
