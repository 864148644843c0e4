//! The plain path: a message to two recipients of one domain and one of another is
//! delivered through MX routing, each recipient gets a DELIVERED event with the MX host,
//! and the ledger keeps a replay from mailing twice (the replay's event is made again,
//! marked `replayed`).

use kurir_core::{Address, Envelope, Recipient};
use kurir_proto::v1::Outcome;

use crate::harness::{Env, SENDER, mail_record, scenario, wait_until};

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

    // A replay of an already delivered record (a crash before its commit, a rebalance)
    // is recognised by the ledger and not mailed again; a recipient the ledger does not
    // know (dan) is attempted.
    let mut envelope = Envelope::new(Some(Address::parse(SENDER).unwrap()));
    envelope.recipients = ["ann@one.test", "dan@one.test"]
        .into_iter()
        .map(|r| Recipient::new(Address::parse(r).unwrap()))
        .collect();
    let replay = mail_record(id, envelope, 0, b"Subject: hi\r\n\r\nhello\r\n");
    env.publish_mail(vec![replay]).await;
    wait_until(|| node.metrics.outcome_count("replayed") == 1).await;
    let ta = a.transactions();
    assert_eq!(ta.len(), 2, "{ta:?}");
    assert_eq!(
        ta[1].accepted_rcpts(),
        vec!["dan@one.test"],
        "ann not mailed again"
    );
    // Its event is made again (the first one may have been lost with the crash), marked
    // as a replay and without the details of an attempt it was not part of.
    let events = env.wait_events(5).await;
    assert!(events[..3].iter().all(|e| !e.replayed), "{events:?}");
    let again = events
        .iter()
        .find(|e| e.replayed)
        .expect("a replayed event");
    assert_eq!(again.recipient, "ann@one.test");
    assert_eq!(again.outcome(), Outcome::Delivered);
    assert_eq!(again.message_id().unwrap(), Some(id));
    assert_eq!(
        (again.mx_host.as_str(), again.tls_version.as_str()),
        ("", "")
    );
    assert!(
        again.reply.is_none() && again.attempt_duration_ms == 0,
        "{again:?}"
    );
    let dan = events
        .iter()
        .find(|e| e.recipient == "dan@one.test")
        .unwrap();
    assert!(!dan.replayed && dan.mx_host == "mx1.one.test", "{dan:?}");
    assert_eq!(events.len(), 5);
    node.stop().await;
}

scenario!(delivered, run);
