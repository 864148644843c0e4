//! A temporary refusal: the first RCPT gets 451, so the recipient is deferred (attempt 1)
//! into the 1 s retry tier and delivered by the second attempt.

use std::time::Duration;

use kurir_proto::v1::Outcome;
use kurir_testkit::smtp_sink::{Action, Match, Stage};

use crate::harness::{Env, SENDER, scenario};

async fn run(env: Env) {
    let sink = env.sink("mx.later.test", 2).await;
    env.dns.add_mx("later.test", 10, "mx.later.test");
    sink.on_times(
        Match::Any,
        Stage::Rcpt,
        Action::reply(451, "4.3.0 try again later"),
        1,
    );
    let node = env.node(env.config()).await;

    env.submit(
        Some(SENDER),
        &["eve@later.test"],
        "Subject: later\r\n\r\nhello\r\n",
    )
    .await;
    let deferred = env.wait_event("eve@later.test", Outcome::Deferred).await;
    assert_eq!(deferred.attempt, 1);
    let reply = deferred.reply.as_ref().expect("the 451");
    assert_eq!((reply.code, reply.enhanced_code.as_str()), (451, "4.3.0"));
    assert_eq!(deferred.mx_host, "mx.later.test");

    let delivered = env.wait_event("eve@later.test", Outcome::Delivered).await;
    assert_eq!(delivered.attempt, 2);
    let waited = Duration::from_millis(
        (delivered.time_unix_ms - deferred.time_unix_ms)
            .try_into()
            .unwrap(),
    );
    // The first tier is 1 s; allow for clock granularity.
    assert!(
        waited >= Duration::from_millis(900),
        "retried after {waited:?}"
    );
    let outcomes: Vec<Outcome> = env
        .events()
        .iter()
        .filter(|e| e.recipient == "eve@later.test")
        .map(|e| e.outcome())
        .collect();
    assert_eq!(outcomes, [Outcome::Deferred, Outcome::Delivered]);

    let accepted: Vec<_> = sink
        .transactions()
        .into_iter()
        .filter(|t| t.accepted())
        .collect();
    assert_eq!(accepted.len(), 1, "delivered exactly once");
    assert_eq!(accepted[0].accepted_rcpts(), vec!["eve@later.test"]);
    assert!(env.dsns().is_empty(), "no DSN for a deferral");
    node.stop().await;
}

scenario!(later_tier, run);
