//! A permanent refusal of one recipient: it bounces (bad mailbox) while the other
//! recipient of the message is delivered; the sender gets an RFC 3464 DSN naming the
//! remote host and its reply, which is delivered to the sender's own MX; the bounced
//! address is suppressed. A message with a null sender that bounces makes no DSN.

use kurir_core::{BounceClass, Outcome as CoreOutcome};
use kurir_proto::v1::Outcome;
use kurir_testkit::smtp_sink::{Action, Match, Stage};
use kurir_testkit::wait_for;

use crate::harness::{Env, SENDER, WAIT, dsn_field, parse_dsn, scenario};

const REMOTE_TEXT: &str = "mailbox gone@bounce.test does not exist";

async fn run(env: Env) {
    let sink = env.sink("mx.bounce.test", 2).await;
    env.dns.add_mx("bounce.test", 10, "mx.bounce.test");
    for gone in ["gone@bounce.test", "gone2@bounce.test"] {
        sink.on(
            Match::Rcpt(gone.into()),
            Stage::Rcpt,
            Action::reply(550, format!("5.1.1 {REMOTE_TEXT}")),
        );
    }
    // The sender's own MX: DSNs are mail too.
    let inbox = env.sink("mx.sender.test", 3).await;
    env.dns.add_mx("sender.test", 10, "mx.sender.test");
    let node = env.node(env.config()).await;

    let id = env
        .submit(
            Some(SENDER),
            &["gone@bounce.test", "here@bounce.test"],
            "Subject: two recipients\r\nMessage-ID: <orig-1@sender.test>\r\n\r\nhello\r\n",
        )
        .await;
    let bounced = env.wait_event("gone@bounce.test", Outcome::Bounced).await;
    assert_eq!(
        bounced.core_outcome().unwrap(),
        Some(CoreOutcome::Bounced(BounceClass::BadMailbox))
    );
    assert_eq!(bounced.message_id().unwrap(), Some(id));
    assert_eq!(bounced.reply.as_ref().map(|r| r.code), Some(550));
    let delivered = env.wait_event("here@bounce.test", Outcome::Delivered).await;
    assert_eq!(delivered.message_id().unwrap(), Some(id));
    let txns = sink.transactions();
    assert_eq!(txns.len(), 1, "one transaction for both recipients");
    assert_eq!(txns[0].accepted_rcpts(), vec!["here@bounce.test"]);

    // The DSN on the queue.
    let dsn = wait_for("the DSN", WAIT, || async {
        env.dsns_to(SENDER).into_iter().next()
    })
    .await
    .unwrap();
    assert_eq!(dsn.envelope.sender, None);
    assert_eq!(dsn.routing_key.to_string(), "sender.test");
    let report = parse_dsn(&dsn);
    assert!(report.subject.contains("Undelivered"), "{}", report.subject);
    assert_eq!(
        dsn_field(&report.blocks[0], "Reporting-MTA"),
        Some("dns; mta.kurir.test")
    );
    let block = report.recipient("gone@bounce.test");
    assert_eq!(dsn_field(block, "Action"), Some("failed"));
    assert_eq!(dsn_field(block, "Status"), Some("5.1.1"));
    assert_eq!(dsn_field(block, "Remote-MTA"), Some("dns; mx.bounce.test"));
    let diagnostic = dsn_field(block, "Diagnostic-Code").unwrap();
    assert!(diagnostic.starts_with("smtp; 550"), "{diagnostic}");
    assert!(diagnostic.contains(REMOTE_TEXT), "{diagnostic}");
    assert_eq!(
        report.blocks.len(),
        2,
        "only the failed recipient is reported"
    );
    assert!(report.text.contains(REMOTE_TEXT), "{}", report.text);
    assert_eq!(report.returned_type, "text/rfc822-headers");

    // ... and delivered to the sender's MX with a null reverse path.
    let dsn_txn = wait_for("the DSN at the sender's MX", WAIT, || async {
        inbox.transactions().into_iter().find(|t| t.accepted())
    })
    .await
    .unwrap();
    assert_eq!(dsn_txn.mail_from, "");
    assert_eq!(dsn_txn.accepted_rcpts(), vec![SENDER]);
    assert!(dsn_txn.body_text().contains("orig-1@sender.test"));

    // Bounce memory: the hard bounce is suppressed, the delivered address is not.
    assert!(env.is_suppressed("gone@bounce.test").await);
    assert!(!env.is_suppressed("here@bounce.test").await);

    // A null sender's bounce: no DSN. Null-sender messages on the mail topic are now our
    // two submissions and the one DSN above; the marker, read after the bounce event was
    // published, shows the collector is not lagging behind on the sender's key.
    let anonymous = env
        .submit(
            None,
            &["gone2@bounce.test"],
            "Subject: from nobody\r\n\r\nhi\r\n",
        )
        .await;
    env.wait_event("gone2@bounce.test", Outcome::Bounced).await;
    let marker = env.sync_mail("sender.test").await;
    let null_sender: Vec<_> = env
        .dsns()
        .into_iter()
        .map(|q| q.id)
        .filter(|id| ![anonymous, marker].contains(id))
        .collect();
    assert_eq!(null_sender, [dsn.id], "no DSN for a null sender's bounce");
    node.stop().await;
}

scenario!(bounce_dsn, run);
