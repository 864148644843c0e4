//! Connection reuse: many messages to one site travel over few connections (RSET between
//! transactions), and a connection is retired after `max_messages_per_connection`.

use std::time::Duration;

use kurir_proto::v1::Outcome;

use crate::harness::{Env, SENDER, scenario};

async fn run(env: Env) {
    let sink = env.sink("mx.reuse.test", 2).await;
    env.dns.add_mx("reuse.test", 10, "mx.reuse.test");
    let mut config = env.config();
    config.pool.max_connections = 1;
    config.pool.max_messages_per_connection = 5;
    config.pool.idle_timeout = Duration::from_secs(30);
    let node = env.node(config).await;

    for i in 0..20 {
        env.submit(
            Some(SENDER),
            &[&format!("user{i}@reuse.test")],
            "Subject: reuse\r\n\r\nbody\r\n",
        )
        .await;
    }
    let events = env.wait_events(20).await;
    assert!(events.iter().all(|e| e.outcome() == Outcome::Delivered));
    assert_eq!(sink.transactions().len(), 20);
    // One connection at a time, each retired after 5 messages: exactly 4 connections.
    assert_eq!(
        sink.connections_total(),
        4,
        "20 messages over 4 connections of 5"
    );
    assert_eq!(sink.max_concurrent_connections(), 1);
    node.stop().await;
}

scenario!(reuse, run);
