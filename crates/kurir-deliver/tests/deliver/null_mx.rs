//! Null MX (RFC 7505): a domain that says it accepts no mail bounces at once as a bad
//! domain, without a connection anywhere; the sender gets a DSN and, a bad domain being a
//! hard bounce, the address is suppressed.

use kurir_core::{BounceClass, Outcome as CoreOutcome};
use kurir_proto::v1::Outcome;

use crate::harness::{Env, SENDER, dsn_field, parse_dsn, scenario};

async fn run(env: Env) {
    // A sink the domain's A record points at: a client ignoring the null MX and falling
    // back to the implicit MX would connect here.
    let bystander = env.sink("nomail.test", 2).await;
    env.dns.set_null_mx("nomail.test");
    let node = env.node(env.config()).await;

    let id = env
        .submit(
            Some(SENDER),
            &["cy@nomail.test"],
            "Subject: null mx\r\n\r\nhello\r\n",
        )
        .await;
    let e = env.wait_event("cy@nomail.test", Outcome::Bounced).await;
    assert_eq!(
        e.core_outcome().unwrap(),
        Some(CoreOutcome::Bounced(BounceClass::BadDomain))
    );
    assert_eq!(e.attempt, 1);
    assert_eq!(e.mx_host, "", "no host was talked to");
    assert!(e.reply.is_none(), "no remote reply: {e:?}");
    assert_eq!(bystander.connections_total(), 0);

    // The DSN is published before the event, but the collector may lag behind it.
    let dsn = kurir_testkit::wait_for("the DSN", crate::harness::WAIT, || async {
        env.dsns_to(SENDER).into_iter().next()
    })
    .await
    .unwrap();
    assert_eq!(dsn.envelope.sender, None);
    let report = parse_dsn(&dsn);
    let block = report.recipient("cy@nomail.test");
    assert_eq!(dsn_field(block, "Action"), Some("failed"));
    assert_eq!(dsn_field(block, "Status"), Some("5.1.2"));
    assert_eq!(dsn_field(block, "Remote-MTA"), None, "{block:?}");
    assert!(report.text.contains("null MX"), "{}", report.text);
    assert_eq!(dsn.tags.get("campaign").map(String::as_str), Some("test"));
    assert_ne!(dsn.id, id);

    // A bad domain is a hard bounce (`BounceClass::is_hard`): suppressed at once.
    assert!(env.is_suppressed("cy@nomail.test").await);
    node.stop().await;
}

scenario!(null_mx, run);
