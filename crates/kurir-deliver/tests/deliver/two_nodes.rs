//! Two delivery nodes in one consumer group share the partitions: both deliver, every
//! message arrives exactly once, and when one node leaves the other takes over its
//! partitions and delivers what remains.

use std::collections::HashMap;

use kurir_proto::v1::Outcome;

use crate::harness::{Env, SENDER, scenario, wait_until};

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
    // Both members hold partitions (the group has formed) before mail arrives; otherwise
    // the first member could deliver everything before the second joins.
    let total = env.partition_count();
    wait_until(|| {
        let (pa, pb) = (a.assigned_partitions(), b.assigned_partitions());
        !pa.is_empty() && !pb.is_empty() && pa.len() + pb.len() == total
    })
    .await;
    // How the group's assignor spreads the mail topic over the members is its business
    // (librdkafka's sticky assignor balances counts over all topics, so one member may
    // hold only retry tiers); a member with mail partitions must deliver.
    let mail = env.queue_config.topics().mail();
    let owns_mail =
        |node: &crate::harness::Node| node.assigned_partitions().iter().any(|(t, _)| *t == mail);
    let (a_mail, b_mail) = (owns_mail(&a), owns_mail(&b));

    submit(&env, 0..48).await;
    env.wait_events(48).await;
    let (da, db) = (
        a.metrics.outcome_count("delivered"),
        b.metrics.outcome_count("delivered"),
    );
    assert_eq!(da + db, 48);
    assert_eq!(
        (da > 0, db > 0),
        (a_mail, b_mail),
        "the members holding mail partitions delivered: {da} + {db}"
    );

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
