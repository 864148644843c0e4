//! Adaptive back-off: a receiver answering `421 4.7.0 too many connections` makes the site
//! halve its connection limit, the reason is visible in the site's state and metrics, and
//! the deferred mail is delivered on a later tier.

use kurir_proto::v1::Outcome;
use kurir_testkit::smtp_sink::{Action, Match, Stage};

use crate::harness::{Env, SENDER, scenario};

async fn run(env: Env) {
    let sink = env.sink("mx.busy.test", 2).await;
    sink.on_times(
        Match::Any,
        Stage::Mail,
        Action::reply(421, "4.7.0 too many connections, slow down"),
        1,
    );
    env.dns.add_mx("busy.test", 10, "mx.busy.test");
    let mut config = env.config();
    config.pool.max_connections = 8;
    let node = env.node(config).await;

    env.submit(
        Some(SENDER),
        &["a@busy.test"],
        "Subject: busy\r\n\r\nbody\r\n",
    )
    .await;
    let deferred = env.wait_event("a@busy.test", Outcome::Deferred).await;
    assert_eq!(deferred.reply.as_ref().unwrap().code, 421);
    let site = node
        .sites()
        .into_iter()
        .find(|s| s.site == "mx.busy.test")
        .expect("the site is known");
    assert_eq!(site.throttle.configured_limit, 8);
    assert_eq!(site.throttle.limit, 4, "halved after the 421");
    let reason = site.throttle.reason.expect("a reason is shown");
    assert!(reason.contains("421"), "{reason}");
    assert!(node.metrics.outcome_count("deferred") >= 1);

    // The next tier delivers it.
    let delivered = env.wait_event("a@busy.test", Outcome::Delivered).await;
    assert_eq!(delivered.attempt, 2);
    node.stop().await;
}

scenario!(adaptive_backoff, run);
