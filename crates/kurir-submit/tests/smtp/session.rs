//! The protocol, verb by verb, on in-memory streams over a real embedded queue and state.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use kurir_core::{Address, BodyType, Outcome, Ret};
use kurir_state::{Reason, Scope, State, Suppression, Tenant};
use kurir_submit::smtp::{ListenerMode, SuppressedAction};

use crate::harness::*;

#[tokio::test]
async fn ehlo_in_clear_offers_starttls_but_never_auth() {
    let h = Harness::start(|_| {}).await;
    let mut c = h.connect();
    let banner = c.expect_reply(220).await;
    assert!(
        banner.starts_with(&format!("220 {HOSTNAME} ESMTP")),
        "{banner}"
    );
    let ehlo = c.expect("EHLO client.test", 250).await;
    for ext in [
        "PIPELINING",
        "SIZE 65536",
        "8BITMIME",
        "SMTPUTF8",
        "ENHANCEDSTATUSCODES",
        "STARTTLS",
        "CHUNKING",
        "DSN",
    ] {
        assert!(
            ehlo.contains(&format!("250-{ext}\r\n")),
            "{ext} missing: {ehlo}"
        );
    }
    assert!(!ehlo.contains("AUTH"), "{ehlo}");
    let (code, text) = c
        .cmd(&format!("AUTH PLAIN {}", plain(USER, PASSWORD)))
        .await;
    assert_eq!((code, &text[..10]), (538, "538 5.7.11"), "{text}");
    c.expect("QUIT", 221).await;
    assert!(c.is_closed().await);
}

#[tokio::test]
async fn after_starttls_auth_plain_and_login_work_and_starttls_is_gone() {
    let h = Harness::start(|_| {}).await;
    let mut c = h.connect();
    let ehlo = c.start_tls(&h.ca).await;
    assert!(ehlo.contains("250-AUTH PLAIN LOGIN\r\n"), "{ehlo}");
    assert!(!ehlo.contains("STARTTLS"), "{ehlo}");
    c.expect("STARTTLS", 503).await;
    c.expect(&format!("AUTH PLAIN {}", plain(USER, "wrong")), 535)
        .await;
    c.expect("AUTH LOGIN", 334).await;
    c.expect(&b64(USER), 334).await;
    c.expect(&b64(PASSWORD), 235).await;
    c.expect("AUTH PLAIN", 503).await;
    let (code, reply) = c
        .send_mail("s@example.test", &["r@dest.test"], &message("auth"))
        .await;
    assert_eq!(code, 250, "{reply}");
    let q = h.queued(1).await;
    assert_eq!(q.len(), 1);
    assert_eq!(q[0].tenant, USER_TENANT);
    assert_eq!(q[0].id.to_string(), queued_id(&reply));
    let body = String::from_utf8_lossy(&q[0].body);
    assert!(body.contains("ESMTPSA"), "{body}");
}

#[tokio::test]
async fn commands_out_of_sequence_get_503() {
    let h = Harness::start(|_| {}).await;
    let mut c = h.connect();
    c.expect_reply(220).await;
    let text = c.expect("MAIL FROM:<a@example.test>", 503).await;
    assert!(text.starts_with("503 5.5.1"), "{text}");
    c.expect("EHLO client.test", 250).await;
    c.expect("RCPT TO:<r@dest.test>", 503).await;
    c.expect("DATA", 503).await;
    c.expect("MAIL FROM:<a@example.test>", 250).await;
    c.expect("MAIL FROM:<a@example.test>", 503).await;
    c.expect("DATA", 554).await;
    c.expect("RSET", 250).await;
    c.expect("RCPT TO:<r@dest.test>", 503).await;
}

#[tokio::test]
async fn noop_help_vrfy_expn_rset_quit() {
    let h = Harness::start(|_| {}).await;
    let mut c = h.connect();
    c.expect_reply(220).await;
    c.expect("NOOP", 250).await;
    c.expect("HELP", 214).await;
    let vrfy = c.expect("VRFY someone", 252).await;
    assert!(vrfy.starts_with("252 2.5.0"), "{vrfy}");
    c.expect("EXPN list", 502).await;
    c.expect("RSET", 250).await;
    c.expect("QUIT", 221).await;
    assert!(c.is_closed().await);
}

#[tokio::test]
async fn size_over_the_limit_is_refused_at_mail_and_at_data() {
    let h = Harness::start(|_| {}).await;
    let mut c = h.connect();
    c.expect_reply(220).await;
    c.expect("EHLO client.test", 250).await;
    let text = c.expect("MAIL FROM:<a@example.test> SIZE=70000", 552).await;
    assert!(text.starts_with("552 5.3.4"), "{text}");
    c.expect("MAIL FROM:<a@example.test> SIZE=1000", 250).await;
    c.expect("RCPT TO:<r@dest.test>", 250).await;
    c.expect("DATA", 354).await;
    let line = "x".repeat(998);
    let mut body = String::new();
    for _ in 0..80 {
        body.push_str(&line);
        body.push_str("\r\n");
    }
    c.send(format!("{body}.\r\n")).await;
    let text = c.expect_reply(552).await;
    assert!(text.starts_with("552 5.3.4"), "{text}");
    // The session is still in sync.
    c.expect("NOOP", 250).await;
}

#[tokio::test]
async fn too_many_recipients_get_452() {
    let h = Harness::start(|_| {}).await;
    let mut c = h.connect();
    c.expect_reply(220).await;
    c.expect("EHLO client.test", 250).await;
    c.expect("MAIL FROM:<a@example.test>", 250).await;
    for i in 0..5 {
        c.expect(&format!("RCPT TO:<r{i}@dest.test>"), 250).await;
    }
    let text = c.expect("RCPT TO:<r9@dest.test>", 452).await;
    assert!(text.starts_with("452 4.5.3"), "{text}");
}

#[tokio::test]
async fn relay_is_denied_to_unauthenticated_clients_outside_allowed_networks() {
    let h = Harness::start(|_| {}).await;
    let mut c = h.connect_as(REMOTE_PEER, ListenerMode::Starttls);
    c.expect_reply(220).await;
    c.expect("EHLO client.test", 250).await;
    c.expect("MAIL FROM:<a@example.test>", 250).await;
    let text = c.expect("RCPT TO:<r@dest.test>", 554).await;
    assert!(text.starts_with("554 5.7.1"), "{text}");
    // The same client, authenticated, may relay.
    let mut c = h.connect_as(REMOTE_PEER, ListenerMode::Starttls);
    c.login(&h.ca).await;
    let (code, _) = c
        .send_mail("a@example.test", &["r@dest.test"], &message("r"))
        .await;
    assert_eq!(code, 250);
}

#[tokio::test]
async fn require_auth_refuses_mail_from_unauthenticated_local_clients() {
    let h = Harness::start(|c| c.relay.require_auth = true).await;
    let mut c = h.connect();
    c.expect_reply(220).await;
    c.expect("EHLO client.test", 250).await;
    let text = c.expect("MAIL FROM:<a@example.test>", 530).await;
    assert!(text.starts_with("530 5.7.0"), "{text}");
}

async fn suppress(h: &Harness, address: &str) {
    let entry = Suppression {
        scope: Scope::Tenant(Tenant::new("default").unwrap()),
        address: Address::parse(address).unwrap(),
        reason: Reason::HardBounce,
        source: "test".into(),
        created: SystemTime::now(),
        expires: None,
    };
    h.state.suppress(&[entry]).await.unwrap();
}

#[tokio::test]
async fn suppressed_recipient_is_refused_at_rcpt() {
    let h = Harness::start(|_| {}).await;
    suppress(&h, "gone@dest.test").await;
    let mut c = h.connect();
    c.expect_reply(220).await;
    c.expect("EHLO client.test", 250).await;
    c.expect("MAIL FROM:<a@example.test>", 250).await;
    let text = c.expect("RCPT TO:<gone@dest.test>", 550).await;
    assert!(text.starts_with("550 5.7.1"), "{text}");
    c.expect("RCPT TO:<ok@dest.test>", 250).await;
}

#[tokio::test]
async fn suppressed_recipient_is_dropped_when_configured() {
    let h = Harness::start(|c| c.suppressed_recipients = SuppressedAction::Drop).await;
    suppress(&h, "gone@dest.test").await;
    let mut c = h.connect();
    c.expect_reply(220).await;
    c.expect("EHLO client.test", 250).await;
    let to = ["gone@dest.test", "ok@dest.test"];
    let (code, _) = c.send_mail("a@example.test", &to, &message("drop")).await;
    assert_eq!(code, 250);
    let q = h.queued(1).await;
    assert_eq!(q.len(), 1);
    let rcpts: Vec<String> = q[0]
        .envelope
        .recipients
        .iter()
        .map(|r| r.address.to_string())
        .collect();
    assert_eq!(rcpts, ["ok@dest.test"]);
}

/// `drop` with an event: the dropped recipient is reported once, as SUPPRESSED, for the
/// message that was queued; a message whose every recipient was dropped queues no mail but
/// is still answered 250 with its id, and its recipients are reported the same way.
#[tokio::test]
async fn dropped_recipients_are_reported_as_suppressed_events() {
    let h = Harness::start(|c| c.suppressed_recipients = SuppressedAction::Drop).await;
    suppress(&h, "gone@dest.test").await;
    suppress(&h, "lost@other.test").await;
    let started = SystemTime::now();
    let mut c = h.connect();
    c.expect_reply(220).await;
    c.expect("EHLO client.test", 250).await;

    // One suppressed and one normal recipient, over DATA.
    let to = ["gone@dest.test", "ok@dest.test"];
    let (code, text) = c.send_mail("a@example.test", &to, &message("mixed")).await;
    assert_eq!(code, 250, "{text}");
    let mixed = queued_id(&text);

    // Only suppressed recipients (one, given twice and not in normal form), over BDAT.
    c.expect("MAIL FROM:<a@example.test>", 250).await;
    c.expect("RCPT TO:<lost@OTHER.test>", 250).await;
    c.expect("RCPT TO:<lost@other.test>", 250).await;
    let body = message("only suppressed");
    c.send(format!("BDAT {} LAST\r\n{body}", body.len())).await;
    let text = c.expect_reply(250).await;
    assert!(text.starts_with("250 2.0.0 Ok: queued as "), "{text}");
    let only = queued_id(&text);
    assert_ne!(mixed, only);
    c.expect("QUIT", 221).await;

    // Both replies came after the queue acknowledged: everything is in the queue by now.
    let q = h.queued(1).await;
    assert_eq!(q.len(), 1, "only the mixed message is queued as mail");
    assert_eq!(q[0].id.to_string(), mixed);
    let rcpts: Vec<String> = q[0]
        .envelope
        .recipients
        .iter()
        .map(|r| r.address.to_string())
        .collect();
    assert_eq!(rcpts, ["ok@dest.test"]);

    let events = h.events(2).await;
    assert_eq!(
        events.len(),
        2,
        "one event per dropped recipient: {events:?}"
    );
    let now = SystemTime::now();
    let mut event_ids = Vec::new();
    for (id, recipient, domain) in [
        (&mixed, "gone@dest.test", "dest.test"),
        (&only, "lost@other.test", "other.test"),
    ] {
        let (key, event) = events
            .iter()
            .find(|(_, e)| e.message_id().unwrap().map(|m| m.to_string()).as_ref() == Some(id))
            .unwrap_or_else(|| panic!("no event for {id}: {events:?}"));
        assert_eq!(event.core_outcome().unwrap(), Some(Outcome::Suppressed));
        assert_eq!(event.recipient, recipient);
        assert_eq!(event.tenant, "default");
        assert_eq!(event.routing_key, domain);
        assert_eq!(key, domain);
        assert_eq!(event.attempt, 0);
        assert_eq!(event.queued_ms, 0);
        assert!(event.reply.is_none());
        assert!(event.tags.is_empty());
        let at = UNIX_EPOCH + Duration::from_millis(event.time_unix_ms as u64);
        assert!(
            started - Duration::from_secs(1) <= at && at <= now,
            "{at:?} not in {started:?}..{now:?}"
        );
        event_ids.push(event.event_id().unwrap());
    }
    assert_ne!(event_ids[0], event_ids[1]);
    let metrics = h.server.metrics();
    assert_eq!(metrics.suppressed_events_with_outcome("published"), 2);
    assert_eq!(metrics.suppressed_events_with_outcome("failed"), 0);
}

#[tokio::test]
async fn state_outage_at_rcpt_is_a_temporary_failure() {
    let mut redis = kurir_testkit::RedisServer::start().await.unwrap();
    let mut config = state_config();
    config.redis.url = redis.url();
    config.redis.command_timeout = std::time::Duration::from_millis(300);
    config.redis.connect_timeout = std::time::Duration::from_millis(300);
    let state = kurir_state::redis::RedisState::connect(&config)
        .await
        .unwrap();
    let h = Harness::with_state(tempfile::tempdir().unwrap(), state, |_| {}).await;
    redis.stop().await.unwrap();
    let mut c = h.connect();
    c.expect_reply(220).await;
    c.expect("EHLO client.test", 250).await;
    c.expect("MAIL FROM:<a@example.test>", 250).await;
    let text = c.expect("RCPT TO:<r@dest.test>", 451).await;
    assert!(text.starts_with("451 4.3.0"), "{text}");
}

#[tokio::test]
async fn pipelined_commands_are_answered_in_order() {
    let h = Harness::start(|_| {}).await;
    let mut c = h.connect();
    c.expect_reply(220).await;
    c.expect("EHLO client.test", 250).await;
    c.send("MAIL FROM:<a@example.test>\r\nRCPT TO:<r1@dest.test>\r\nRCPT TO:<bad>\r\nRCPT TO:<r2@dest.test>\r\nDATA\r\n").await;
    for code in [250, 250, 553, 250, 354] {
        c.expect_reply(code).await;
    }
    c.send(format!("{}\r\n.\r\nQUIT\r\n", message("pipelined")))
        .await;
    c.expect_reply(250).await;
    c.expect_reply(221).await;
    let q = h.queued(1).await;
    assert_eq!(q[0].envelope.recipients.len(), 2);
}

#[tokio::test]
async fn bdat_chunks_make_one_message() {
    let h = Harness::start(|_| {}).await;
    let mut c = h.connect();
    c.expect_reply(220).await;
    c.expect("EHLO client.test", 250).await;
    // A chunk refused for sequence is still read (and not executed as commands).
    c.send("BDAT 12\r\nRSET\r\nQUIT\r\n").await;
    c.expect_reply(503).await;
    c.expect("MAIL FROM:<a@example.test> BODY=BINARYMIME", 250)
        .await;
    c.expect("RCPT TO:<r@dest.test>", 250).await;
    let msg = message("bdat");
    let (a, b) = msg.split_at(20);
    c.send(format!("BDAT {}\r\n{a}", a.len())).await;
    c.expect_reply(250).await;
    c.send(format!("BDAT {} LAST\r\n{b}", b.len())).await;
    let text = c.expect_reply(250).await;
    assert!(text.contains("queued as"), "{text}");
    let q = h.queued(1).await;
    assert_eq!(q[0].envelope.body, BodyType::BinaryMime);
    assert!(String::from_utf8_lossy(&q[0].body).contains("Subject: bdat"));
}

#[tokio::test]
async fn dsn_parameters_are_kept_in_the_queued_record() {
    let h = Harness::start(|_| {}).await;
    let mut c = h.connect();
    c.expect_reply(220).await;
    c.expect("EHLO client.test", 250).await;
    c.expect("MAIL FROM:<a@example.test> RET=HDRS ENVID=abc+2B1", 250)
        .await;
    c.expect(
        "RCPT TO:<r@dest.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;r@dest.test",
        250,
    )
    .await;
    c.expect("DATA", 354).await;
    c.send(format!("{}\r\n.\r\n", message("dsn"))).await;
    c.expect_reply(250).await;
    let q = h.queued(1).await;
    let env = &q[0].envelope;
    assert_eq!(env.ret, Some(Ret::Headers));
    assert_eq!(env.envid.as_deref(), Some("abc+1"));
    let notify = env.recipients[0].notify.unwrap();
    assert!(notify.success && notify.failure && !notify.delay);
    assert_eq!(
        env.recipients[0].orcpt.as_ref().unwrap().address,
        "r@dest.test"
    );
}

#[tokio::test]
async fn eight_bit_and_utf8_addresses_with_smtputf8() {
    let h = Harness::start(|_| {}).await;
    let mut c = h.connect();
    c.expect_reply(220).await;
    c.expect("EHLO client.test", 250).await;
    c.expect("MAIL FROM:<a@example.test> BODY=8BITMIME", 250)
        .await;
    let text = c.expect("RCPT TO:<jürgen@dest.test>", 553).await;
    assert!(text.starts_with("553 5.6.7"), "{text}");
    c.expect("RSET", 250).await;
    c.expect("MAIL FROM:<andré@example.test> BODY=8BITMIME SMTPUTF8", 250)
        .await;
    c.expect("RCPT TO:<jürgen@bücher.example>", 250).await;
    c.expect("DATA", 354).await;
    c.send("Subject: Grüße\r\n\r\nSchöne Grüße.\r\n.\r\n").await;
    c.expect_reply(250).await;
    let q = h.queued(1).await;
    assert!(q[0].envelope.smtputf8);
    assert_eq!(q[0].envelope.body, BodyType::EightBitMime);
    assert!(String::from_utf8_lossy(&q[0].body).contains("Schöne Grüße."));
}
