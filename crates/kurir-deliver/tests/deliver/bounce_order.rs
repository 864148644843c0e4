//! An operator's bounce order (`AdminService.BounceDomain`): the domain's queued mail is
//! bounced without an attempt, with a DSN that carries the operator's reason, and the
//! addresses are not suppressed (the order is about the domain, not the mailbox).

use kurir_proto::v1::{BounceClass, Outcome};
use kurir_state::PauseAction;

use crate::harness::{Env, SENDER, dsn_field, parse_dsn, scenario, wait_until};

async fn run(env: Env) {
    let sink = env.sink("mx.gone.test", 2).await;
    env.dns.add_mx("gone.test", 10, "mx.gone.test");
    env.control_domain("gone.test", PauseAction::Bounce, "customer closed")
        .await;
    let node = env.node(env.config()).await;

    env.submit(Some(SENDER), &["a@gone.test"], "Subject: x\r\n\r\nbody\r\n")
        .await;
    let e = env.wait_event("a@gone.test", Outcome::Bounced).await;
    assert_eq!(e.bounce_class(), BounceClass::Policy);
    assert_eq!(e.attempt, 0, "nothing was attempted");
    assert_eq!(sink.connections_total(), 0);
    wait_until(|| !env.dsns_to(SENDER).is_empty()).await;
    let dsn = env.dsns_to(SENDER).remove(0);
    let parsed = parse_dsn(&dsn);
    let block = parsed.recipient("a@gone.test");
    assert_eq!(dsn_field(block, "Action"), Some("failed"));
    assert_eq!(dsn_field(block, "Status"), Some("5.0.0"));
    let text = String::from_utf8_lossy(&dsn.body);
    assert!(text.contains("customer closed"), "{text}");
    assert!(!env.is_suppressed("a@gone.test").await);
    node.stop().await;
}

scenario!(bounce_order, run);
