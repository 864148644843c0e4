//! Hostile input on in-memory streams: early talkers, STARTTLS injection, smuggling,
//! pipelining after DATA, long lines, junk, error and AUTH-failure limits, timeouts.

use std::time::Duration;

use kurir_submit::smtp::ListenerMode;

use crate::harness::*;

#[tokio::test]
async fn commands_before_the_banner_get_554_and_a_close() {
    let h = Harness::start(|_| {}).await;
    let mut c = h.connect_preloaded(b"EHLO early.test\r\n");
    let text = c.expect_reply(554).await;
    assert!(text.starts_with("554 5.5.0"), "{text}");
    assert!(c.is_closed().await);
}

#[tokio::test]
async fn early_talkers_are_caught_within_the_greeting_delay() {
    let h = Harness::start(|c| c.greeting_delay = Duration::from_millis(300)).await;
    let mut c = h.connect();
    c.send("EHLO early.test\r\n").await;
    c.expect_reply(554).await;
    assert!(c.is_closed().await);
}

#[tokio::test]
async fn commands_injected_after_starttls_are_never_executed() {
    let h = Harness::start(|_| {}).await;
    let mut c = h.connect();
    c.expect_reply(220).await;
    c.expect("EHLO client.test", 250).await;
    c.send("STARTTLS\r\nMAIL FROM:<evil@example.test>\r\nRCPT TO:<v@dest.test>\r\n")
        .await;
    c.expect_reply(220).await;
    c.tls(&h.ca).await;
    // Neither the injected MAIL nor the clear-text EHLO survived the upgrade.
    c.expect("RCPT TO:<v@dest.test>", 503).await;
    c.expect("MAIL FROM:<a@example.test>", 503).await;
    c.expect("EHLO client.test", 250).await;
    c.expect("RCPT TO:<v@dest.test>", 503).await;
}

#[tokio::test]
async fn smuggled_message_with_bare_lf_dot_is_refused_whole() {
    let h = Harness::start(|_| {}).await;
    let mut c = h.connect();
    c.expect_reply(220).await;
    c.expect("EHLO client.test", 250).await;
    c.expect("MAIL FROM:<a@example.test>", 250).await;
    c.expect("RCPT TO:<r@dest.test>", 250).await;
    c.expect("DATA", 354).await;
    let smuggled = "Subject: one\r\n\r\nfirst\n.\nMAIL FROM:<evil@example.test>\r\n\
                    RCPT TO:<victim@dest.test>\r\nDATA\r\nSubject: two\r\n\r\nsecond\r\n.\r\n";
    c.send(smuggled).await;
    let text = c.expect_reply(550).await;
    assert!(text.starts_with("550 5.6.0"), "{text}");
    // Nothing inside the body ran as a command, and nothing was queued.
    c.expect("RCPT TO:<r@dest.test>", 503).await;
    assert!(h.queued(0).await.is_empty());
}

#[tokio::test]
async fn bare_cr_and_nul_in_a_body_are_refused() {
    let h = Harness::start(|_| {}).await;
    let mut c = h.connect();
    c.expect_reply(220).await;
    c.expect("EHLO client.test", 250).await;
    for body in ["a\rb\r\n.\r\n", "a\0b\r\n.\r\n", "a\r\n\r.\r\r\n.\r\n"] {
        c.expect("MAIL FROM:<a@example.test>", 250).await;
        c.expect("RCPT TO:<r@dest.test>", 250).await;
        c.expect("DATA", 354).await;
        c.send(body).await;
        let text = c.expect_reply(550).await;
        assert!(text.starts_with("550 5.6.0"), "{body:?}: {text}");
    }
}

#[tokio::test]
async fn body_pipelined_after_data_without_waiting_is_refused() {
    let h = Harness::start(|_| {}).await;
    let mut c = h.connect();
    c.expect_reply(220).await;
    c.expect("EHLO client.test", 250).await;
    c.send("MAIL FROM:<a@example.test>\r\nRCPT TO:<r@dest.test>\r\nDATA\r\nSubject: x\r\n\r\nhi\r\n.\r\n").await;
    c.expect_reply(250).await;
    c.expect_reply(250).await;
    let text = c.expect_reply(554).await;
    assert!(text.starts_with("554 5.5.0"), "{text}");
    assert!(c.is_closed().await);
    assert!(h.queued(0).await.is_empty());
}

#[tokio::test]
async fn over_long_lines_and_junk_get_5xx_then_421_after_max_errors() {
    let h = Harness::start(|c| c.limits.max_errors = 4).await;
    let mut c = h.connect();
    c.expect_reply(220).await;
    let text = c.expect(&"X".repeat(2000), 500).await;
    assert!(text.starts_with("500 5.5.6"), "{text}");
    c.send(b"\x00\xff\xfe junk \x01\r\n").await;
    let (code, text) = c.reply().await;
    assert!((500..=501).contains(&code), "{text}");
    c.expect("MAIL FROM:<a@example.test>", 503).await;
    c.send("FOO bar\r\n").await;
    c.expect_reply(500).await;
    let text = c.expect_reply(421).await;
    assert!(text.starts_with("421 4.7.0"), "{text}");
    assert!(c.is_closed().await);
}

#[tokio::test]
async fn failed_auth_is_counted_per_ip_across_connections() {
    let h = Harness::start(|c| c.limits.max_auth_failures_per_ip = 2).await;
    let mut c = h.connect_as(REMOTE_PEER, ListenerMode::Starttls);
    c.start_tls(&h.ca).await;
    c.expect(&format!("AUTH PLAIN {}", plain(USER, "nope")), 535)
        .await;
    c.expect(&format!("AUTH PLAIN {}", plain("nobody", "nope")), 535)
        .await;
    c.expect_reply(421).await;
    assert!(c.is_closed().await);
    // A new connection from the same address is refused AUTH even with the right password.
    let mut c = h.connect_as(REMOTE_PEER, ListenerMode::Starttls);
    c.start_tls(&h.ca).await;
    let text = c
        .expect(&format!("AUTH PLAIN {}", plain(USER, PASSWORD)), 421)
        .await;
    assert!(text.starts_with("421 4.7.0"), "{text}");
}

#[tokio::test]
async fn idle_session_is_closed_at_the_command_timeout() {
    let h = Harness::start(|c| c.timeouts.command = Duration::from_millis(200)).await;
    let mut c = h.connect();
    c.expect_reply(220).await;
    c.expect("EHLO client.test", 250).await;
    let text = c.expect_reply(421).await;
    assert!(text.starts_with("421 4.4.2"), "{text}");
    assert!(c.is_closed().await);
}

#[tokio::test]
async fn stalled_body_is_cut_at_the_data_timeout() {
    let h = Harness::start(|c| c.timeouts.data = Duration::from_millis(300)).await;
    let mut c = h.connect();
    c.expect_reply(220).await;
    c.expect("EHLO client.test", 250).await;
    c.expect("MAIL FROM:<a@example.test>", 250).await;
    c.expect("RCPT TO:<r@dest.test>", 250).await;
    c.expect("DATA", 354).await;
    c.send("Subject: slow\r\n").await;
    c.expect_reply(421).await;
    assert!(c.is_closed().await);
}

#[tokio::test]
async fn connections_per_ip_and_messages_per_connection_are_limited() {
    let h = Harness::start(|c| {
        c.limits.max_connections_per_ip = 1;
        c.limits.max_messages_per_connection = 1;
    })
    .await;
    let mut first = h.connect();
    first.expect_reply(220).await;
    let mut second = h.connect();
    let text = second.expect_reply(421).await;
    assert!(text.starts_with("421 4.7.0"), "{text}");
    first.expect("EHLO client.test", 250).await;
    let (code, _) = first
        .send_mail("a@example.test", &["r@dest.test"], &message("1"))
        .await;
    assert_eq!(code, 250);
    first.expect("MAIL FROM:<a@example.test>", 421).await;
    assert!(first.is_closed().await);
}

#[tokio::test]
async fn plain_listener_offers_no_starttls_and_implicit_tls_speaks_tls_first() {
    let h = Harness::start(|_| {}).await;
    let mut c = h.connect_as(LOCAL_PEER, ListenerMode::Plain);
    c.expect_reply(220).await;
    let ehlo = c.expect("EHLO client.test", 250).await;
    assert!(
        !ehlo.contains("STARTTLS") && !ehlo.contains("AUTH"),
        "{ehlo}"
    );
    c.expect("STARTTLS", 502).await;
    let mut c = h.connect_as(REMOTE_PEER, ListenerMode::ImplicitTls);
    c.tls(&h.ca).await;
    c.expect_reply(220).await;
    let ehlo = c.expect("EHLO client.test", 250).await;
    assert!(
        ehlo.contains("AUTH PLAIN LOGIN") && !ehlo.contains("STARTTLS"),
        "{ehlo}"
    );
}

#[tokio::test]
async fn the_command_line_limit_counts_the_crlf() {
    // RFC 5321 §4.5.3.1.4: 512 octets including CRLF is the longest command line.
    let h = Harness::start(|c| c.limits.max_line_length = 512).await;
    let mut c = h.connect();
    c.expect_reply(220).await;
    let longest = format!("NOOP {}", "x".repeat(512 - 2 - 5));
    assert_eq!(longest.len() + 2, 512);
    c.expect(&longest, 250).await;
    let text = c.expect(&format!("{longest}y"), 500).await;
    assert!(text.starts_with("500 5.5.6"), "{text}");
}
