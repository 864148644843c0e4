//! Idle connections the receiver has closed (a restarted or idle-closing MX): a message that
//! finds one is sent over a new connection, not deferred because the next idle connection
//! is dead as well.

use std::time::Duration;

use kurir_proto::v1::Outcome;
use kurir_testkit::smtp_sink::{Action, Match, Stage};

use crate::harness::{Env, SENDER, scenario};

async fn run(env: Env) {
    let sink = env.sink("mx.stale.test", 2).await;
    env.dns.add_mx("stale.test", 10, "mx.stale.test");
    let mut config = env.config();
    config.pool.max_connections = 2;
    config.pool.idle_timeout = Duration::from_secs(60);
    let node = env.node(config).await;

    // Two messages at once, each held at the final dot for a moment: two connections,
    // both idle in the pool afterwards.
    sink.on_times(
        Match::Any,
        Stage::DataEnd,
        Action::Delay(Duration::from_millis(300)),
        2,
    );
    for i in 0..2 {
        env.submit(
            Some(SENDER),
            &[&format!("first{i}@stale.test")],
            "Subject: stale\r\n\r\nbody\r\n",
        )
        .await;
    }
    let events = env.wait_events(2).await;
    assert!(events.iter().all(|e| e.outcome() == Outcome::Delivered));
    assert_eq!(sink.connections_total(), 2);

    // Both idle connections die at their next command.
    for n in 1..=2 {
        sink.on(Match::NthConnection(n), Stage::Mail, Action::Disconnect);
    }
    env.submit(
        Some(SENDER),
        &["late@stale.test"],
        "Subject: stale\r\n\r\nbody\r\n",
    )
    .await;
    let event = env.wait_event("late@stale.test", Outcome::Delivered).await;
    assert_eq!(
        event.attempt, 1,
        "delivered at its first attempt: {event:?}"
    );
    assert!(
        env.events()
            .iter()
            .all(|e| e.outcome() == Outcome::Delivered),
        "nothing deferred: {:?}",
        env.events()
    );
    assert_eq!(
        sink.transactions().iter().filter(|t| t.accepted()).count(),
        3
    );
    assert_eq!(sink.connections_total(), 3, "one new connection");

    // The receiver drops the idle connection before the next message, a large one: with
    // BDAT its body follows MAIL in the same write, and that write fails on the dead
    // connection. It is no less stale for that: a new connection, no deferral.
    sink.close_connections(Duration::from_secs(10))
        .await
        .unwrap();
    let large = format!(
        "Subject: stale\r\n\r\n{}",
        format!("{}\r\n", "y".repeat(76)).repeat(4000)
    );
    env.submit(Some(SENDER), &["large@stale.test"], &large)
        .await;
    let event = env.wait_event("large@stale.test", Outcome::Delivered).await;
    assert_eq!(
        event.attempt, 1,
        "delivered at its first attempt: {event:?}"
    );
    assert_eq!(sink.connections_total(), 4, "one new connection");
    node.stop().await;
}

scenario!(stale_connections, run);
