//! The per-site connection limit holds at the receiver even when many messages wait, and
//! the allowed concurrency is used.

use std::time::Duration;

use kurir_testkit::smtp_sink::{Action, Match, Stage};

use crate::harness::{Env, SENDER, scenario};

async fn run(env: Env) {
    let sink = env.sink("mx.limit.test", 2).await;
    // A slow receiver: each transaction takes 100 ms after the data.
    sink.on(
        Match::Any,
        Stage::DataEnd,
        Action::Delay(Duration::from_millis(100)),
    );
    for d in 0..6 {
        env.dns
            .add_mx(&format!("d{d}.limit.test"), 10, "mx.limit.test");
    }
    let mut config = env.config();
    config.pool.max_connections = 3;
    let node = env.node(config).await;

    for i in 0..30 {
        env.submit(
            Some(SENDER),
            &[&format!("u{i}@d{}.limit.test", i % 6)],
            "Subject: limit\r\n\r\nbody\r\n",
        )
        .await;
    }
    env.wait_events(30).await;
    assert_eq!(sink.transactions().len(), 30);
    let peak = sink.max_concurrent_connections();
    assert!(peak <= 3, "the site limit of 3 was exceeded: {peak}");
    assert!(peak >= 2, "the allowed concurrency was not used: {peak}");
    node.stop().await;
}

scenario!(connection_limit, run);
