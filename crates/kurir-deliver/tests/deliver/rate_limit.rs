//! A domain's messages-per-second limit holds (GCRA, no burst): 11 messages at 5/s take
//! at least 2 s from the first to the last.

use std::time::Instant;

use kurir_deliver::config::DomainPolicy;

use crate::harness::{Env, SENDER, scenario};

async fn run(env: Env) {
    let sink = env.sink("mx.rate.test", 2).await;
    env.dns.add_mx("rate.test", 10, "mx.rate.test");
    let mut config = env.config();
    config.policies.push(DomainPolicy {
        domains: vec!["rate.test".into()],
        messages_per_second: Some(5.0),
        ..DomainPolicy::default()
    });
    let node = env.node(config).await;

    for i in 0..11 {
        env.submit(
            Some(SENDER),
            &[&format!("u{i}@rate.test")],
            "Subject: rate\r\n\r\nbody\r\n",
        )
        .await;
    }
    crate::harness::wait_until(|| !sink.transactions().is_empty()).await;
    let started = Instant::now();
    env.wait_events(11).await;
    let took = started.elapsed();
    assert_eq!(sink.transactions().len(), 11);
    // 10 intervals of 200 ms after the first message (a little slack for the clock).
    assert!(
        took.as_millis() >= 1_800,
        "11 messages at 5/s took only {took:?}"
    );
    node.stop().await;
}

scenario!(rate_limit, run);
