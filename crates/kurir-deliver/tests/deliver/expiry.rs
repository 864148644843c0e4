//! Expiry: a receiver that only ever answers 451 keeps the message deferred until its
//! next attempt would come after `max_age` (3 s here, with tiers of 1 s and 2 s); then it
//! expires, with a DSN that reports the failure and the last reply.

use std::time::Duration;

use kurir_proto::v1::Outcome;
use kurir_testkit::smtp_sink::{Action, Match, Stage};
use kurir_testkit::wait_for;

use crate::harness::{Env, SENDER, WAIT, dsn_field, parse_dsn, scenario};

async fn run(env: Env) {
    let sink = env.sink("mx.slow.test", 2).await;
    env.dns.add_mx("slow.test", 10, "mx.slow.test");
    sink.on(Match::Any, Stage::Rcpt, Action::reply(451, "4.3.0 not now"));
    let mut config = env.config();
    config.max_age = Duration::from_secs(3);
    let node = env.node(config).await;

    env.submit(
        Some(SENDER),
        &["fay@slow.test"],
        "Subject: never\r\n\r\nhello\r\n",
    )
    .await;
    let expired = env.wait_event("fay@slow.test", Outcome::Expired).await;
    let first = env.wait_event("fay@slow.test", Outcome::Deferred).await;
    assert_eq!(first.attempt, 1);
    // Expired after the second attempt's 451, or (on a slow queue) on taking the retry
    // record past max_age: then no attempt is made and the count stays.
    assert!(expired.attempt >= first.attempt, "{expired:?}");
    assert!(
        expired.queued_ms < 10_000,
        "expired soon after max_age: {expired:?}"
    );
    let outcomes: Vec<Outcome> = env
        .events()
        .iter()
        .filter(|e| e.recipient == "fay@slow.test")
        .map(|e| e.outcome())
        .collect();
    assert_eq!(outcomes.last(), Some(&Outcome::Expired));
    assert!(
        outcomes[..outcomes.len() - 1]
            .iter()
            .all(|o| *o == Outcome::Deferred),
        "{outcomes:?}"
    );
    assert!(sink.transactions().iter().all(|t| !t.accepted()));

    let dsn = wait_for("the DSN", WAIT, || async {
        env.dsns_to(SENDER).into_iter().next()
    })
    .await
    .unwrap();
    let report = parse_dsn(&dsn);
    let block = report.recipient("fay@slow.test");
    assert_eq!(dsn_field(block, "Action"), Some("failed"));
    let status = dsn_field(block, "Status").unwrap();
    assert!(status.starts_with("4."), "{status}");
    if expired.reply.is_some() {
        let diagnostic = dsn_field(block, "Diagnostic-Code").unwrap();
        assert!(diagnostic.contains("451"), "{diagnostic}");
    }
    assert!(report.text.contains("expired"), "{}", report.text);
    assert!(!env.is_suppressed("fay@slow.test").await);
    node.stop().await;
}

scenario!(expiry, run);
