//! SMTPUTF8: a recipient with a UTF-8 local part cannot go to a receiver without
//! SMTPUTF8 (it bounces as a protocol failure, no transaction); the same message's
//! recipient at a receiver that offers it is delivered with `SMTPUTF8` on MAIL.

use kurir_core::{BounceClass, Outcome as CoreOutcome};
use kurir_proto::v1::Outcome;
use kurir_testkit::smtp_sink::Extensions;

use crate::harness::{Env, SENDER, scenario};

async fn run(env: Env) {
    let ascii_only = env.sink("mx.intl.test", 2).await;
    ascii_only.set_extensions(Extensions {
        smtputf8: false,
        ..Extensions::default()
    });
    env.dns.add_mx("intl.test", 10, "mx.intl.test");
    let modern = env.sink("mx.utf8.test", 3).await;
    env.dns.add_mx("utf8.test", 10, "mx.utf8.test");
    let node = env.node(env.config()).await;

    env.submit(
        Some(SENDER),
        &["jöran@intl.test", "jöran@utf8.test"],
        "Subject: hej\r\n\r\nhej\r\n",
    )
    .await;
    let bounced = env.wait_event("jöran@intl.test", Outcome::Bounced).await;
    assert_eq!(
        bounced.core_outcome().unwrap(),
        Some(CoreOutcome::Bounced(BounceClass::Protocol))
    );
    assert_eq!(bounced.mx_host, "mx.intl.test");
    assert!(
        ascii_only.transactions().is_empty(),
        "{:?}",
        ascii_only.transactions()
    );
    assert!(ascii_only.connections_total() >= 1);
    assert!(
        !env.is_suppressed("jöran@intl.test").await,
        "not a hard bounce"
    );

    let delivered = env.wait_event("jöran@utf8.test", Outcome::Delivered).await;
    assert_eq!(delivered.mx_host, "mx.utf8.test");
    let txns = modern.transactions();
    assert_eq!(txns.len(), 1);
    assert_eq!(txns[0].accepted_rcpts(), vec!["jöran@utf8.test"]);
    assert!(
        txns[0].mail_params.iter().any(|p| p == "SMTPUTF8"),
        "{:?}",
        txns[0].mail_params
    );
    node.stop().await;
}

scenario!(smtputf8_mismatch, run);
