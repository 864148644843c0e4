//! Implicit MX (RFC 5321 §5.1): a domain without MX records but with an A record is its
//! own mail host.

use kurir_proto::v1::Outcome;

use crate::harness::{Env, SENDER, scenario};

async fn run(env: Env) {
    // `sink` adds the A record of the name it is given: here the mail domain itself.
    let sink = env.sink("plain.test", 2).await;
    let node = env.node(env.config()).await;

    env.submit(
        Some(SENDER),
        &["bo@plain.test"],
        "Subject: implicit\r\n\r\nhello\r\n",
    )
    .await;
    let e = env.wait_event("bo@plain.test", Outcome::Delivered).await;
    assert_eq!(e.mx_host, "plain.test");
    assert_eq!(e.attempt, 1);
    let txns = sink.transactions();
    assert_eq!(txns.len(), 1);
    assert_eq!(txns[0].accepted_rcpts(), vec!["bo@plain.test"]);
    assert_eq!(txns[0].mail_from, SENDER);
    node.stop().await;
}

scenario!(implicit_mx, run);
