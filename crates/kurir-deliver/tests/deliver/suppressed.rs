//! Suppression: an address on the tenant's suppression list is not attempted (a
//! SUPPRESSED event with attempt 0, nothing at the receiver for it); the other
//! recipients of the message are delivered.

use kurir_proto::v1::Outcome;

use crate::harness::{Env, SENDER, scenario};

async fn run(env: Env) {
    let sink = env.sink("mx.sup.test", 2).await;
    env.dns.add_mx("sup.test", 10, "mx.sup.test");
    env.suppress("blocked@sup.test").await;
    assert!(env.is_suppressed("blocked@sup.test").await);
    let node = env.node(env.config()).await;

    let id = env
        .submit(
            Some(SENDER),
            &["blocked@sup.test", "ok@sup.test", "fine@sup.test"],
            "Subject: list\r\n\r\nhello\r\n",
        )
        .await;
    let s = env
        .wait_event("blocked@sup.test", Outcome::Suppressed)
        .await;
    assert_eq!(s.attempt, 0);
    assert_eq!(s.message_id().unwrap(), Some(id));
    assert!(s.reply.is_none());
    for r in ["ok@sup.test", "fine@sup.test"] {
        let e = env.wait_event(r, Outcome::Delivered).await;
        assert_eq!(e.attempt, 1);
    }
    let txns = sink.transactions();
    assert_eq!(txns.len(), 1);
    let sent: Vec<&str> = txns[0].rcpts.iter().map(|r| r.path.as_str()).collect();
    assert_eq!(
        sent,
        ["ok@sup.test", "fine@sup.test"],
        "never offered to the receiver"
    );
    assert!(
        env.events()
            .iter()
            .filter(|e| e.recipient == "blocked@sup.test")
            .all(|e| e.outcome() == Outcome::Suppressed)
    );
    node.stop().await;
}

scenario!(suppressed, run);
