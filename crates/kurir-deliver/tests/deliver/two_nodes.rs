//! Two delivery nodes share the partitions of every topic (each topic read in a consumer
//! group of its own; the mail topic's half each): both deliver, every message arrives
//! exactly once, and when one node leaves the other takes over its partitions and delivers
//! what remains.

use std::collections::HashMap;

use kurir_proto::v1::Outcome;

use kurir_testkit::wait_for;

use crate::harness::{Env, SENDER, WAIT, scenario, wait_until};

const DOMAINS: usize = 16;

async fn submit(env: &Env, range: std::ops::Range<usize>) {
    for i in range {
        env.submit(
            Some(SENDER),
            &[&format!("u{i}@d{}.shared.test", i % DOMAINS)],
            "Subject: shared\r\n\r\nbody\r\n",
        )
        .await;
    }
}

async fn run(env: Env) {
    let sink = env.sink("mx.shared.test", 2).await;
    for d in 0..DOMAINS {
        env.dns
            .add_mx(&format!("d{d}.shared.test"), 10, "mx.shared.test");
    }
    let a = env.node(env.config()).await;
    let b = env.node(env.config()).await;
    // Every topic (each read in a consumer group of its own) is split between the two
    // nodes before mail arrives; otherwise the first node could deliver everything before
    // the second joins. Split per topic: a node holding only retry tiers would take no new
    // mail (as happened while one group covered all topics: the sticky assignor balanced
    // partition counts over all of a member's topics together).
    let topics = env.queue_config.topics();
    let tiers = env
        .queue_config
        .retry_tiers
        .iter()
        .map(|d| topics.retry(*d));
    let all: Vec<String> = std::iter::once(topics.mail()).chain(tiers).collect();
    let split = |topic: &str| {
        let count = |node: &crate::harness::Node| {
            let owned = node.assigned_partitions();
            owned.iter().filter(|(t, _)| t == topic).count()
        };
        (count(&a), count(&b))
    };
    let total = env.partition_count();
    let shared = || {
        let owned = a.assigned_partitions().len() + b.assigned_partitions().len();
        owned == total
            && all.iter().all(|t| {
                let (in_a, in_b) = split(t);
                in_a.abs_diff(in_b) <= 1 && in_a > 0 && in_b > 0
            })
    };
    let every_topic_split = wait_for("every topic split", WAIT, || async {
        shared().then_some(())
    });
    if every_topic_split.await.is_err() {
        let splits: Vec<_> = all.iter().map(|t| (t, split(t))).collect();
        panic!("the topics were not split between the nodes: {splits:?}");
    }

    submit(&env, 0..48).await;
    env.wait_events(48).await;
    let (da, db) = (
        a.metrics.outcome_count("delivered"),
        b.metrics.outcome_count("delivered"),
    );
    assert_eq!(da + db, 48);
    assert!(da > 0 && db > 0, "both nodes delivered: {da} + {db}");

    // One node leaves; the other delivers the rest.
    b.stop().await;
    submit(&env, 48..80).await;
    wait_until(|| {
        env.events()
            .iter()
            .filter(|e| e.outcome() == Outcome::Delivered)
            .count()
            >= 80
    })
    .await;

    // Exactly once at the receiver.
    let mut seen: HashMap<String, usize> = HashMap::new();
    for t in sink.transactions() {
        for r in t.accepted_rcpts() {
            *seen.entry(r.to_owned()).or_default() += 1;
        }
    }
    assert_eq!(seen.len(), 80);
    assert!(seen.values().all(|&c| c == 1), "duplicates: {seen:?}");
    a.stop().await;
}

scenario!(two_nodes, run);
