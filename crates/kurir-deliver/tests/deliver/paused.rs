//! Domain pause: while a domain is paused its mail is held (back to the first retry
//! tier, not attempted), both mail already queued when the node starts and mail that
//! arrives later; once resumed it is delivered.

use std::time::Duration;

use kurir_proto::v1::Outcome;
use kurir_testkit::wait_for;

use crate::harness::{Env, SENDER, WAIT, scenario};

/// How long the scenario watches for a delivery that must not happen.
const HELD_WINDOW: Duration = Duration::from_secs(3);

async fn run(env: Env) {
    let sink = env.sink("mx.hold.test", 2).await;
    env.dns.add_mx("hold.test", 10, "mx.hold.test");
    env.pause_domain("hold.test").await;

    // Queued before the node starts: its first look at the record must already know
    // the pause.
    env.submit(
        Some(SENDER),
        &["hal@hold.test"],
        "Subject: backlog\r\n\r\nhello\r\n",
    )
    .await;
    let node = env.node(env.config()).await;
    env.submit(
        Some(SENDER),
        &["ida@hold.test"],
        "Subject: later\r\n\r\nhello\r\n",
    )
    .await;

    // The node has seen both records and held them (or, wrongly, attempted one).
    wait_for("both records held", WAIT, || async {
        let held = node.metrics.outcome_count("paused") >= 2;
        (held || sink.connections_total() > 0).then_some(())
    })
    .await
    .unwrap();
    assert_eq!(sink.connections_total(), 0, "a paused domain was attempted");
    // Nothing reaches the receiver while the pause lasts (the records come back every
    // second through the first tier meanwhile).
    let early = tokio::time::timeout(
        HELD_WINDOW,
        wait_for("a connection while paused", WAIT, || async {
            (sink.connections_total() > 0).then_some(())
        }),
    )
    .await;
    assert!(early.is_err(), "a paused domain was attempted");
    assert!(
        node.metrics.outcome_count("paused") >= 4,
        "held again on each return"
    );
    assert!(
        env.events().is_empty(),
        "a hold is no outcome: {:?}",
        env.events()
    );

    assert!(env.resume_domain("hold.test").await);
    for r in ["hal@hold.test", "ida@hold.test"] {
        let e = env.wait_event(r, Outcome::Delivered).await;
        assert_eq!(e.attempt, 1, "holding is not an attempt");
    }
    let mut delivered: Vec<String> = sink
        .transactions()
        .iter()
        .filter(|t| t.accepted())
        .flat_map(|t| t.accepted_rcpts().into_iter().map(str::to_owned))
        .collect();
    delivered.sort();
    assert_eq!(delivered, ["hal@hold.test", "ida@hold.test"]);
    node.stop().await;
}

scenario!(paused, run);
