//! A replayed record (a crash before its commit, a rebalance) makes its DSNs again, with
//! the ids they had the first time, so the sender gets each DSN once:
//! - a success DSN (NOTIFY=SUCCESS) whose recipient the ledger already has is made again:
//!   mailed if the crash came before it was queued, not mailed twice if it was delivered;
//! - a bounce's DSN is queued before the bounce suppresses the address, and a replay that
//!   bounces again makes the same DSN, which the ledger keeps from going twice;
//! - the records of one message (one per recipient domain, or each retry) make DSNs of
//!   their own ids, also when a bounce order cancels a retry without an attempt.

use kurir_core::{Address, Envelope, MessageId, Notify, Recipient};
use kurir_proto::v1::Outcome;
use kurir_queue::OutgoingRecord;
use kurir_state::PauseAction;
use kurir_testkit::smtp_sink::{Action, Match, SmtpSink, Stage};
use kurir_testkit::wait_for;

use crate::harness::{Env, Node, SENDER, WAIT, mail_record, scenario, wait_until};

/// A record of message `id` to `to` (all at dsn.test), as submission queues it.
fn record(id: MessageId, to: &[&str], notify_success: bool) -> OutgoingRecord {
    retry_record(id, to, notify_success, 0)
}

/// [`record`] as a retry tier has it after `attempts` attempts.
fn retry_record(id: MessageId, to: &[&str], notify_success: bool, attempts: u32) -> OutgoingRecord {
    let mut envelope = Envelope::new(Some(Address::parse(SENDER).unwrap()));
    envelope.recipients = to
        .iter()
        .map(|r| {
            let mut r = Recipient::new(Address::parse(r).unwrap());
            r.notify = notify_success.then_some(Notify {
                success: true,
                failure: true,
                delay: false,
            });
            r
        })
        .collect();
    let body = b"Subject: hi\r\nMessage-ID: <m@sender.test>\r\n\r\nhello\r\n";
    mail_record(id, envelope, attempts, body)
}

/// Waits until `n` DSNs have been delivered to the sender's MX; then checks no more come
/// in while the node finishes what is queued (`settled` outcomes in all).
async fn inbox_has(inbox: &SmtpSink, node: &Node, n: usize, settled: u64) {
    let count = || inbox.transactions().iter().filter(|t| t.accepted()).count();
    wait_for(&format!("{n} DSNs at the sender's MX"), WAIT, || async {
        (count() >= n).then_some(())
    })
    .await
    .unwrap();
    wait_until(|| {
        ["delivered", "replayed", "bounced"]
            .iter()
            .map(|o| node.metrics.outcome_count(o))
            .sum::<u64>()
            >= settled
    })
    .await;
    let seen: Vec<_> = inbox
        .transactions()
        .iter()
        .map(|t| {
            (
                t.accepted(),
                String::from_utf8_lossy(&t.body[..t.body.len().min(300)]).into_owned(),
            )
        })
        .collect();
    assert_eq!(count(), n, "{seen:#?}");
}

async fn run(env: Env) {
    let mx = env.sink("mx.dsn.test", 2).await;
    env.dns.add_mx("dsn.test", 10, "mx.dsn.test");
    let other = env.sink("mx.dsn2.test", 4).await;
    env.dns.add_mx("dsn2.test", 10, "mx.dsn2.test");
    for (sink, gone) in [
        (&mx, "gone@dsn.test"),
        (&mx, "gone3@dsn.test"),
        (&mx, "gone5@dsn.test"),
        (&other, "gone@dsn2.test"),
    ] {
        sink.on(
            Match::Rcpt(gone.into()),
            Stage::Rcpt,
            Action::reply(550, "5.1.1 no such mailbox"),
        );
    }
    let inbox = env.sink("mx.sender.test", 3).await;
    env.dns.add_mx("sender.test", 10, "mx.sender.test");
    let node = env.node(env.config()).await;

    // 1. A success DSN, then the record replayed after it was delivered: the DSN is made
    //    again with the same id and not mailed again. (1 delivered + 1 DSN delivered.)
    let first = MessageId::new();
    env.publish_mail(vec![record(first, &["ann@dsn.test"], true)])
        .await;
    inbox_has(&inbox, &node, 1, 2).await;
    env.publish_mail(vec![record(first, &["ann@dsn.test"], true)])
        .await;
    // ann replayed, then the DSN's copy replayed at the sender's MX.
    inbox_has(&inbox, &node, 1, 4).await;
    let dsns: Vec<MessageId> = env.dsns().iter().map(|q| q.id).collect();
    assert_eq!(dsns.len(), 2, "{dsns:?}");
    assert_eq!(dsns[0], dsns[1], "the same DSN id both times");
    assert_eq!(mx.transactions().len(), 1, "ann mailed once");

    // 2. The crash came after the ledger write and before the DSN was queued: the replay
    //    finds ann2 in the ledger and queues the DSN it never got.
    let second = MessageId::new();
    env.mark_delivered(second, &["ann2@dsn.test"]).await;
    env.publish_mail(vec![record(second, &["ann2@dsn.test"], true)])
        .await;
    inbox_has(&inbox, &node, 2, 6).await;
    assert_eq!(mx.transactions().len(), 1, "ann2 not mailed");
    let dsn = inbox
        .transactions()
        .into_iter()
        .filter(|t| t.accepted())
        .nth(1)
        .unwrap();
    assert!(
        dsn.body_text().contains("ann2@dsn.test"),
        "{}",
        dsn.body_text()
    );

    // 3. A bounce: its DSN goes, and the address is suppressed.
    let third = MessageId::new();
    env.publish_mail(vec![record(third, &["gone@dsn.test"], false)])
        .await;
    env.wait_event("gone@dsn.test", Outcome::Bounced).await;
    inbox_has(&inbox, &node, 3, 8).await;
    assert!(env.is_suppressed("gone@dsn.test").await);
    // The crash came after the DSN was queued and before the bounce was remembered: the
    // replay bounces again and makes the same DSN, which is not mailed twice.
    env.unsuppress("gone@dsn.test").await;
    env.publish_mail(vec![record(third, &["gone@dsn.test"], false)])
        .await;
    inbox_has(&inbox, &node, 3, 10).await;
    let refused = mx.transactions().iter().filter(|t| !t.accepted()).count();
    assert_eq!(
        refused,
        2,
        "gone was attempted twice: {:?}",
        mx.transactions()
    );
    let bounce_dsns: Vec<MessageId> = env
        .dsns()
        .iter()
        .filter(|q| q.body.windows(13).any(|w| w == b"gone@dsn.test"))
        .map(|q| q.id)
        .collect();
    assert_eq!(bounce_dsns.len(), 2, "{bounce_dsns:?}");
    assert_eq!(bounce_dsns[0], bounce_dsns[1]);

    // 4. One message, a record per recipient domain, both bounce at their first attempt:
    //    two DSNs, two ids, both mailed.
    env.submit(
        Some(SENDER),
        &["gone3@dsn.test", "gone@dsn2.test"],
        "Subject: two\r\n\r\nhi\r\n",
    )
    .await;
    inbox_has(&inbox, &node, 5, 14).await;

    // 5. A bounce at the first attempt, then an operator's bounce order cancels the retry
    //    record of the same message (attempts 1, nothing attempted): two DSNs.
    let fifth = MessageId::new();
    env.publish_mail(vec![record(fifth, &["gone5@dsn.test"], false)])
        .await;
    inbox_has(&inbox, &node, 6, 16).await;
    node.stop().await;
    env.control_domain("dsn.test", PauseAction::Bounce, "closed")
        .await;
    let node = env.node(env.config()).await;
    env.publish_mail(vec![retry_record(fifth, &["later@dsn.test"], false, 1)])
        .await;
    inbox_has(&inbox, &node, 7, 2).await;
    node.stop().await;
}

scenario!(dsn_replay, run);
