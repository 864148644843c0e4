//! The plain path: a message to two recipients of one domain and one of another is
//! delivered through MX routing, each recipient gets a DELIVERED event with the MX host,
//! and the ledger keeps a replay from mailing twice.

use kurir_proto::v1::Outcome;

use crate::harness::{Env, SENDER, scenario};

async fn run(env: Env) {
    let a = env.sink("mx1.one.test", 2).await;
    let b = env.sink("mx1.two.test", 3).await;
    env.dns.add_mx("one.test", 10, "mx1.one.test");
    env.dns.add_mx("two.test", 10, "mx1.two.test");
    let node = env.node(env.config()).await;

    let id = env
        .submit(
            Some(SENDER),
            &["ann@one.test", "bob@one.test", "cy@two.test"],
            "Subject: hi\r\n\r\nhello\r\n",
        )
        .await;
    let events = env.wait_events(3).await;
    for e in &events {
        assert_eq!(e.outcome(), Outcome::Delivered, "{e:?}");
        assert_eq!(e.message_id().unwrap(), Some(id));
        assert_eq!(e.attempt, 1);
        assert_eq!(e.reply.as_ref().unwrap().code, 250);
        assert_eq!(e.tags.get("campaign").map(String::as_str), Some("test"));
    }
    let ann = events
        .iter()
        .find(|e| e.recipient == "ann@one.test")
        .unwrap();
    assert_eq!(ann.mx_host, "mx1.one.test");
    let ta = a.transactions();
    assert_eq!(
        ta.len(),
        1,
        "one transaction for both recipients of one.test"
    );
    assert_eq!(ta[0].accepted_rcpts(), vec!["ann@one.test", "bob@one.test"]);
    assert_eq!(ta[0].mail_from, SENDER);
    assert!(ta[0].body_text().contains("hello"));
    assert_eq!(ta[0].ehlo, crate::harness::HOSTNAME);
    assert_eq!(b.transactions()[0].accepted_rcpts(), vec!["cy@two.test"]);
    node.stop().await;
}

scenario!(delivered, run);
