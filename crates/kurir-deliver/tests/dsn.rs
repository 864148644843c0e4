//! DSNs as a receiving mail client sees them: every report built here is parsed back with
//! `mail-parser` (an independent MIME parser) and checked field by field against RFC 3464.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use kurir_core::{Address, Envelope, MessageId, Notify, Orcpt, Recipient, Ret, RoutingKey};
use kurir_deliver::RemoteReply;
use kurir_deliver::dsn::{self, DsnAction, DsnRecipient, DsnReport};
use kurir_proto::{Queued, v1};
use mail_parser::{Message, MessageParser, MessagePart, MimeHeaders};

const MTA: &str = "mta.kurir.test";
const SENDER: &str = "alice@sender.test";

const HEADER: &str = "From: Alice <alice@sender.test>\r\n\
                      To: Bob <bob@example.test>\r\n\
                      Subject: Quarterly numbers\r\n\
                      Message-ID: <orig-1@sender.test>\r\n";
const BODY: &str = "Hello Bob,\r\n\r\nthe numbers are in.\r\n";

fn original() -> String {
    format!("{HEADER}\r\n{BODY}")
}

fn addr(s: &str) -> Address {
    Address::parse(s).unwrap()
}

fn rcpt(s: &str, notify: Option<Notify>) -> Recipient {
    Recipient {
        address: addr(s),
        notify,
        orcpt: None,
    }
}

/// Whole seconds, so that times survive the RFC 5322 dates and the wire's milliseconds.
fn now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_767_225_600) // 2026-01-01T00:00:00Z
}

fn queued(sender: Option<&str>, recipients: Vec<Recipient>) -> Queued {
    let mut envelope = Envelope::new(sender.map(addr));
    envelope.recipients = recipients;
    Queued {
        id: MessageId::new(),
        tenant: "acme".to_owned(),
        routing_key: RoutingKey::new(envelope.recipients[0].address.domain().clone()),
        envelope,
        attempts: 3,
        first_seen: now() - Duration::from_secs(3600),
        not_before: None,
        trace: Some(v1::TraceContext {
            traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".to_owned(),
            tracestate: String::new(),
        }),
        tags: BTreeMap::from([("campaign".to_owned(), "q3".to_owned())]),
        body: Bytes::from(original()),
    }
}

fn failed<'a>(recipient: &'a Recipient, reply: RemoteReply) -> DsnRecipient<'a> {
    DsnRecipient {
        recipient,
        action: DsnAction::Failed,
        status: reply.status(),
        remote_mta: Some("mx.example.test".to_owned()),
        reply: Some(reply),
        reason: None,
    }
}

fn with_action<'a>(recipient: &'a Recipient, action: DsnAction) -> DsnRecipient<'a> {
    let reply = match action {
        DsnAction::Delivered => RemoteReply::new(250, Some("2.0.0"), "OK queued"),
        DsnAction::Delayed => RemoteReply::new(451, Some("4.7.1"), "Greylisted"),
        DsnAction::Failed | DsnAction::Expired => {
            RemoteReply::new(550, Some("5.1.1"), "User unknown")
        }
    };
    DsnRecipient {
        action,
        ..failed(recipient, reply)
    }
}

fn report<'a>(message: &'a Queued, recipients: Vec<DsnRecipient<'a>>) -> DsnReport<'a> {
    DsnReport {
        reporting_mta: MTA,
        message,
        recipients,
        now: now(),
    }
}

fn parse(raw: &[u8]) -> Message<'_> {
    MessageParser::default()
        .parse(raw)
        .expect("the DSN parses as a message")
}

/// The three parts of the report, after checking the top-level content type.
fn report_parts<'m>(message: &'m Message<'_>) -> [&'m MessagePart<'m>; 3] {
    let ct = message.content_type().expect("a Content-Type");
    assert_eq!(
        (ct.ctype(), ct.subtype()),
        ("multipart", Some("report")),
        "{ct:?}"
    );
    assert_eq!(ct.attribute("report-type"), Some("delivery-status"));
    assert!(ct.attribute("boundary").is_some());
    let ids = message.parts[0].sub_parts().expect("a multipart body");
    let parts: Vec<_> = ids.iter().map(|&id| &message.parts[id as usize]).collect();
    parts.try_into().expect("exactly three parts")
}

fn content_type(part: &MessagePart<'_>) -> String {
    let ct = part.content_type().expect("a part Content-Type");
    format!("{}/{}", ct.ctype(), ct.subtype().unwrap_or_default())
}

/// The delivery-status part's field blocks: per-message first, then one per recipient.
/// Checks the RFC 3464 layout on the way: CRLF lines, blocks apart by one empty line.
fn status_blocks(part: &MessagePart<'_>) -> Vec<Vec<(String, String)>> {
    assert_eq!(content_type(part), "message/delivery-status");
    let text = std::str::from_utf8(part.contents()).expect("ASCII fields");
    assert!(text.ends_with("\r\n"), "{text:?}");
    assert!(
        !text.replace("\r\n", "").contains('\n'),
        "bare LF in {text:?}"
    );
    let unfolded = text.replace("\r\n ", " ").replace("\r\n\t", " ");
    unfolded
        .trim_end_matches("\r\n")
        .split("\r\n\r\n")
        .map(|block| {
            block
                .split("\r\n")
                .map(|line| {
                    let (name, value) = line.split_once(':').unwrap_or_else(|| {
                        panic!("not a field: {line:?}");
                    });
                    (name.to_owned(), value.trim().to_owned())
                })
                .collect()
        })
        .collect()
}

fn get<'b>(block: &'b [(String, String)], name: &str) -> Option<&'b str> {
    let mut values = block
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str());
    let value = values.next();
    assert!(values.next().is_none(), "{name} repeated");
    value
}

#[test]
fn a_failure_report_is_a_multipart_report_to_the_sender() {
    let mut bob = rcpt("bob@example.test", None);
    bob.orcpt = Some(Orcpt::parse("rfc822;Bob@Example.test").unwrap());
    let message = queued(Some(SENDER), vec![bob.clone()]);
    let raw = dsn::build(&report(
        &message,
        vec![failed(
            &bob,
            RemoteReply::new(550, Some("5.1.1"), "User unknown"),
        )],
    ))
    .expect("a DSN is due");

    assert!(
        !String::from_utf8_lossy(&raw)
            .replace("\r\n", "")
            .contains('\n'),
        "every line of the DSN ends in CRLF"
    );
    let dsn = parse(&raw);
    assert_eq!(dsn.subject(), Some("Undelivered Mail Returned to Sender"));
    let from = dsn.from().and_then(|a| a.first()).expect("From");
    assert_eq!(from.address(), Some("MAILER-DAEMON@mta.kurir.test"));
    assert_eq!(from.name(), Some("Mail Delivery System"));
    let to = dsn.to().and_then(|a| a.first()).expect("To");
    assert_eq!(to.address(), Some(SENDER));
    assert_eq!(
        dsn.header_raw("Auto-Submitted").map(str::trim),
        Some("auto-replied")
    );
    assert!(
        dsn.message_id()
            .is_some_and(|id| id.ends_with("@mta.kurir.test"))
    );
    assert_eq!(
        dsn.date().map(|d| d.to_timestamp()),
        Some(now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64)
    );

    let [human, status, returned] = report_parts(&dsn);
    assert_eq!(content_type(human), "text/plain");
    let words = human.text_contents().unwrap();
    assert!(words.contains("<bob@example.test>"), "{words}");
    assert!(words.contains("550 5.1.1 User unknown"), "{words}");
    assert!(words.contains("mx.example.test"), "{words}");
    assert_eq!(status_blocks(status).len(), 2);
    assert_eq!(content_type(returned), "text/rfc822-headers");
}

#[test]
fn delivery_status_carries_the_rfc_3464_fields() {
    let mut bob = rcpt("bob@example.test", None);
    bob.orcpt = Some(Orcpt::parse("rfc822;Bob+2BTag@Example.test").unwrap());
    let carol = rcpt("carol@example.test", None);
    let mut message = queued(Some(SENDER), vec![bob.clone(), carol.clone()]);
    message.envelope.envid = Some("QQ314159".to_owned());
    let reply = RemoteReply::new(550, Some("5.1.1"), "<bob@example.test>: User unknown");
    let over_quota = RemoteReply::new(552, Some("5.2.2"), "Mailbox full");
    let raw = dsn::build(&report(
        &message,
        vec![failed(&bob, reply), failed(&carol, over_quota)],
    ))
    .unwrap();
    let dsn = parse(&raw);
    let blocks = status_blocks(report_parts(&dsn)[1]);
    assert_eq!(blocks.len(), 3, "{blocks:?}");

    let per_message = &blocks[0];
    assert_eq!(
        get(per_message, "Reporting-MTA"),
        Some("dns; mta.kurir.test")
    );
    assert_eq!(get(per_message, "Original-Envelope-Id"), Some("QQ314159"));
    assert_eq!(
        get(per_message, "Arrival-Date"),
        Some("Wed, 31 Dec 2025 23:00:00 +0000")
    );

    let bob_block = &blocks[1];
    assert_eq!(
        get(bob_block, "Original-Recipient"),
        Some("rfc822; Bob+Tag@Example.test")
    );
    assert_eq!(
        get(bob_block, "Final-Recipient"),
        Some("rfc822; bob@example.test")
    );
    assert_eq!(get(bob_block, "Action"), Some("failed"));
    assert_eq!(get(bob_block, "Status"), Some("5.1.1"));
    assert_eq!(get(bob_block, "Remote-MTA"), Some("dns; mx.example.test"));
    assert_eq!(
        get(bob_block, "Diagnostic-Code"),
        Some("smtp; 550 5.1.1 <bob@example.test>: User unknown")
    );
    assert_eq!(
        get(bob_block, "Last-Attempt-Date"),
        Some("Thu, 1 Jan 2026 00:00:00 +0000")
    );

    let carol_block = &blocks[2];
    assert_eq!(get(carol_block, "Original-Recipient"), None);
    assert_eq!(
        get(carol_block, "Final-Recipient"),
        Some("rfc822; carol@example.test")
    );
    assert_eq!(get(carol_block, "Status"), Some("5.2.2"));
    assert_eq!(
        get(carol_block, "Diagnostic-Code"),
        Some("smtp; 552 5.2.2 Mailbox full")
    );
}

#[test]
fn without_envid_there_is_no_original_envelope_id() {
    let bob = rcpt("bob@example.test", None);
    let message = queued(Some(SENDER), vec![bob.clone()]);
    let raw = dsn::build(&report(
        &message,
        vec![with_action(&bob, DsnAction::Failed)],
    ))
    .unwrap();
    let dsn = parse(&raw);
    let blocks = status_blocks(report_parts(&dsn)[1]);
    assert_eq!(get(&blocks[0], "Original-Envelope-Id"), None);
    assert_eq!(
        get(&blocks[0], "Reporting-MTA"),
        Some("dns; mta.kurir.test")
    );
}

#[test]
fn an_expired_message_without_a_reply_fails_with_4_4_7() {
    let bob = rcpt("bob@example.test", None);
    let message = queued(Some(SENDER), vec![bob.clone()]);
    for status in ["4.4.7", ""] {
        let expired = DsnRecipient {
            recipient: &bob,
            action: DsnAction::Expired,
            status: status.to_owned(),
            remote_mta: None,
            reply: None,
            reason: Some("expired after 3 days in the queue".to_owned()),
        };
        let raw = dsn::build(&report(&message, vec![expired])).unwrap();
        let dsn = parse(&raw);
        assert_eq!(dsn.subject(), Some("Undelivered Mail Returned to Sender"));
        let [human, status_part, _] = report_parts(&dsn);
        let blocks = status_blocks(status_part);
        assert_eq!(get(&blocks[1], "Action"), Some("failed"));
        assert_eq!(get(&blocks[1], "Status"), Some("4.4.7"), "given {status:?}");
        assert_eq!(get(&blocks[1], "Remote-MTA"), None);
        assert_eq!(get(&blocks[1], "Diagnostic-Code"), None);
        let words = human.text_contents().unwrap();
        assert!(words.contains("expired after 3 days"), "{words}");
    }
}

#[test]
fn ret_full_returns_the_whole_message() {
    let bob = rcpt("bob@example.test", None);
    let mut message = queued(Some(SENDER), vec![bob.clone()]);
    message.envelope.ret = Some(Ret::Full);
    let raw = dsn::build(&report(
        &message,
        vec![with_action(&bob, DsnAction::Failed)],
    ))
    .unwrap();
    let dsn = parse(&raw);
    let returned = report_parts(&dsn)[2];
    assert_eq!(content_type(returned), "message/rfc822");
    assert_eq!(returned.contents(), original().as_bytes());
    let inner = returned.message().expect("a nested message");
    assert_eq!(inner.subject(), Some("Quarterly numbers"));
    assert_eq!(
        inner.body_text(0).as_deref(),
        Some("Hello Bob,\r\n\r\nthe numbers are in.\r\n")
    );
}

#[test]
fn otherwise_only_the_header_is_returned() {
    let bob = rcpt("bob@example.test", None);
    for ret in [None, Some(Ret::Headers)] {
        let mut message = queued(Some(SENDER), vec![bob.clone()]);
        message.envelope.ret = ret;
        let raw = dsn::build(&report(
            &message,
            vec![with_action(&bob, DsnAction::Failed)],
        ))
        .unwrap();
        let dsn = parse(&raw);
        let returned = report_parts(&dsn)[2];
        assert_eq!(content_type(returned), "text/rfc822-headers", "RET {ret:?}");
        let text = returned.text_contents().unwrap();
        assert_eq!(text, HEADER, "RET {ret:?}");
        assert!(!String::from_utf8_lossy(&raw).contains("the numbers are in"));
    }
}

#[test]
fn a_delay_report_returns_the_header_even_with_ret_full() {
    // RFC 3461 §4.3: RET=FULL is about failed DSNs.
    let bob = rcpt("bob@example.test", None);
    let mut message = queued(Some(SENDER), vec![bob.clone()]);
    message.envelope.ret = Some(Ret::Full);
    let raw = dsn::build(&report(
        &message,
        vec![with_action(&bob, DsnAction::Delayed)],
    ))
    .unwrap();
    let dsn = parse(&raw);
    assert_eq!(dsn.subject(), Some("Delayed Mail (still being retried)"));
    let [_, status, returned] = report_parts(&dsn);
    assert_eq!(get(&status_blocks(status)[1], "Action"), Some("delayed"));
    assert_eq!(get(&status_blocks(status)[1], "Status"), Some("4.7.1"));
    assert_eq!(content_type(returned), "text/rfc822-headers");
}

#[test]
fn a_null_sender_gets_no_dsn() {
    let bob = rcpt("bob@example.test", None);
    let message = queued(None, vec![bob.clone()]);
    let r = report(&message, vec![with_action(&bob, DsnAction::Failed)]);
    assert!(dsn::build(&r).is_none());
    assert!(dsn::dsn_message(&r, MessageId::new()).is_none());
}

#[test]
fn notify_never_gets_no_dsn() {
    let bob = rcpt("bob@example.test", Some(Notify::NEVER));
    let message = queued(Some(SENDER), vec![bob.clone()]);
    for action in [
        DsnAction::Failed,
        DsnAction::Expired,
        DsnAction::Delayed,
        DsnAction::Delivered,
    ] {
        let r = report(&message, vec![with_action(&bob, action)]);
        assert!(dsn::build(&r).is_none(), "{action:?}");
        assert!(
            dsn::dsn_message(&r, MessageId::new()).is_none(),
            "{action:?}"
        );
    }
}

#[test]
fn notify_success_alone_reports_success_but_not_failure() {
    let success = Notify::parse("SUCCESS").unwrap();
    let bob = rcpt("bob@example.test", Some(success));
    let message = queued(Some(SENDER), vec![bob.clone()]);
    for action in [DsnAction::Failed, DsnAction::Expired, DsnAction::Delayed] {
        let r = report(&message, vec![with_action(&bob, action)]);
        assert!(dsn::build(&r).is_none(), "{action:?}");
    }
    let raw = dsn::build(&report(
        &message,
        vec![with_action(&bob, DsnAction::Delivered)],
    ))
    .expect("SUCCESS asks for a delivery report");
    let dsn = parse(&raw);
    assert_eq!(dsn.subject(), Some("Successful Mail Delivery Report"));
    let blocks = status_blocks(report_parts(&dsn)[1]);
    assert_eq!(get(&blocks[1], "Action"), Some("delivered"));
    assert_eq!(get(&blocks[1], "Status"), Some("2.0.0"));
}

#[test]
fn no_notify_means_failure_and_delay() {
    let bob = rcpt("bob@example.test", None);
    let message = queued(Some(SENDER), vec![bob.clone()]);
    let due = |action| dsn::build(&report(&message, vec![with_action(&bob, action)])).is_some();
    assert!(due(DsnAction::Failed));
    assert!(due(DsnAction::Expired));
    assert!(due(DsnAction::Delayed));
    assert!(!due(DsnAction::Delivered));
}

#[test]
fn only_recipients_that_asked_are_reported() {
    let never = rcpt("never@example.test", Some(Notify::NEVER));
    let default = rcpt("default@example.test", None);
    let success = rcpt("success@example.test", Notify::parse("SUCCESS"));
    let failure = rcpt("failure@example.test", Notify::parse("FAILURE,DELAY"));
    let all = vec![
        never.clone(),
        default.clone(),
        success.clone(),
        failure.clone(),
    ];
    let message = queued(Some(SENDER), all);
    let raw = dsn::build(&report(
        &message,
        [&never, &default, &success, &failure]
            .into_iter()
            .map(|r| with_action(r, DsnAction::Failed))
            .collect(),
    ))
    .unwrap();
    let dsn = parse(&raw);
    let [human, status, _] = report_parts(&dsn);
    let finals: Vec<_> = status_blocks(status)[1..]
        .iter()
        .map(|b| get(b, "Final-Recipient").unwrap().to_owned())
        .collect();
    assert_eq!(
        finals,
        [
            "rfc822; default@example.test",
            "rfc822; failure@example.test"
        ]
    );
    let words = human.text_contents().unwrap();
    assert!(!words.contains("never@"), "{words}");
    assert!(!words.contains("success@"), "{words}");
}

#[test]
fn a_mixed_report_is_titled_by_its_worst_news() {
    let delivered = rcpt("delivered@example.test", Notify::parse("SUCCESS,FAILURE"));
    let failed_ = rcpt("failed@example.test", None);
    let message = queued(Some(SENDER), vec![delivered.clone(), failed_.clone()]);
    let raw = dsn::build(&report(
        &message,
        vec![
            with_action(&delivered, DsnAction::Delivered),
            with_action(&failed_, DsnAction::Failed),
        ],
    ))
    .unwrap();
    let dsn = parse(&raw);
    assert_eq!(dsn.subject(), Some("Undelivered Mail Returned to Sender"));
    let blocks = status_blocks(report_parts(&dsn)[1]);
    let actions: Vec<_> = blocks[1..]
        .iter()
        .map(|b| get(b, "Action").unwrap())
        .collect();
    assert_eq!(actions, ["delivered", "failed"]);
}

#[test]
fn replies_and_orcpt_cannot_add_fields() {
    let mut bob = rcpt("bob@example.test", None);
    // xtext-decoded ORCPT with a CRLF in it.
    bob.orcpt = Some(Orcpt::parse("rfc822;bob@example.test+0D+0AAction:+20delivered").unwrap());
    let message = queued(Some(SENDER), vec![bob.clone()]);
    let long = "please contact postmaster ".repeat(10);
    let reply = RemoteReply::new(550, Some("5.7.1"), format!("Rejected\n{long}"));
    let raw = dsn::build(&report(&message, vec![failed(&bob, reply)])).unwrap();
    let dsn = parse(&raw);
    let [_, status, _] = report_parts(&dsn);
    let raw_fields = std::str::from_utf8(status.contents()).unwrap();
    assert!(raw_fields.split("\r\n").all(|line| line.len() <= 998));
    let blocks = status_blocks(status);
    // `get` asserts each field appears once.
    assert_eq!(get(&blocks[1], "Action"), Some("failed"));
    assert_eq!(
        get(&blocks[1], "Original-Recipient"),
        Some("rfc822; bob@example.test  Action: delivered")
    );
    let diagnostic = get(&blocks[1], "Diagnostic-Code").unwrap();
    assert!(
        diagnostic.starts_with("smtp; 550 5.7.1 Rejected / please"),
        "{diagnostic}"
    );
}

#[test]
fn the_dsn_is_queued_to_the_sender_from_the_null_sender() {
    let bob = rcpt("bob@example.test", None);
    let message = queued(Some(SENDER), vec![bob.clone()]);
    let r = report(&message, vec![with_action(&bob, DsnAction::Failed)]);
    let id = message.id.derived(b"dsn/failure");
    let queued = dsn::dsn_message(&r, id).expect("a DSN is due");

    assert_eq!(queued.id, id);
    assert_eq!(queued.tenant, "acme");
    assert_eq!(queued.tags, message.tags);
    assert_eq!(queued.trace, message.trace);
    assert_eq!(queued.routing_key.to_string(), "sender.test");
    assert_eq!(queued.envelope.sender, None);
    assert_eq!(queued.envelope.ret, None);
    assert_eq!(queued.envelope.envid, None);
    assert_eq!(queued.envelope.recipients, [Recipient::new(addr(SENDER))]);
    assert_eq!(queued.attempts, 0);
    assert_eq!(queued.first_seen, now());
    assert_eq!(queued.not_before, None);

    let dsn = parse(&queued.body);
    assert_eq!(
        dsn.message_id(),
        Some(format!("{}@{MTA}", queued.id).as_str()),
        "the Message-ID is the queued id"
    );
    assert_eq!(
        report_parts(&dsn)[1].content_type().unwrap().ctype(),
        "message"
    );
    // It is a valid queue record.
    assert_eq!(Queued::decode(queued.encode_to_bytes()).unwrap(), queued);
}
