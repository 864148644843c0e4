//! The outbound SMTP client against the real test SMTP server (`kurir_testkit::SmtpSink`):
//! per-recipient replies, PIPELINING on and off, the body on the wire by DATA and by BDAT, STARTTLS under each
//! policy, AUTH, timeouts, 421, connection reuse and the source address.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kurir_core::{Address, BodyType, Envelope, Notify, Orcpt, Recipient, Ret};
use kurir_deliver::RemoteReply;
use kurir_deliver::client::{
    ClientError, ClientSettings, Connection, Phase, Target, Transaction, TransactionReplies,
};
use kurir_deliver::config::{TimeoutsConfig, TlsPolicy};
use kurir_testkit::smtp_sink::{Action, AuthInfo, Extensions, Match, SmtpSink, Stage};
use kurir_testkit::{TestCa, wait_for};
use rustls::RootCertStore;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

const MX: &str = "mx.example.test";
const WAIT: Duration = Duration::from_secs(10);

fn address(s: &str) -> Address {
    Address::parse(s).unwrap()
}

fn envelope(rcpts: &[&str]) -> Envelope {
    let mut env = Envelope::new(Some(address("sender@origin.test")));
    env.recipients = rcpts.iter().map(|r| Recipient::new(address(r))).collect();
    env
}

fn timeouts(each: Duration) -> TimeoutsConfig {
    TimeoutsConfig {
        connect: each,
        banner: each,
        ehlo: each,
        starttls: each,
        auth: each,
        mail: each,
        rcpt: each,
        data: each,
        data_write: each,
        data_end: each,
        rset: each,
        quit: each,
    }
}

fn settings(tls: TlsPolicy) -> ClientSettings {
    ClientSettings {
        ehlo: "out.kurir.test".to_owned(),
        source: None,
        tls,
        tls_roots: Arc::new(RootCertStore::empty()),
        auth: None,
        timeouts: timeouts(WAIT),
    }
}

fn roots_with(ca: &TestCa) -> Arc<RootCertStore> {
    let mut roots = RootCertStore::empty();
    roots.add(ca.ca_der().clone()).unwrap();
    Arc::new(roots)
}

fn target(sink: &SmtpSink) -> Target {
    Target {
        host: MX.to_owned(),
        addr: sink.addr(),
    }
}

async fn sink_with(extensions: Extensions) -> SmtpSink {
    SmtpSink::builder()
        .extensions(extensions)
        .start()
        .await
        .unwrap()
}

/// How the body goes: the sink offers CHUNKING (BDAT) or not (DATA).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum By {
    Data,
    Bdat,
}

async fn sink_taking(by: By) -> SmtpSink {
    sink_with(Extensions {
        chunking: by == By::Bdat,
        ..Extensions::default()
    })
    .await
}

async fn connect(sink: &SmtpSink, settings: &ClientSettings) -> Connection {
    Connection::connect(&target(sink), settings).await.unwrap()
}

async fn send(
    conn: &mut Connection,
    env: &Envelope,
    body: &[u8],
) -> Result<TransactionReplies, ClientError> {
    let body = Bytes::copy_from_slice(body);
    conn.send(&Transaction {
        envelope: env,
        body: &body,
        chunking: true,
    })
    .await
}

/// The replies of a transaction that got past MAIL.
fn sent(replies: TransactionReplies) -> (Vec<RemoteReply>, Option<RemoteReply>) {
    match replies {
        TransactionReplies::Sent { rcpts, data } => (rcpts, data),
        other => panic!("expected MAIL to be accepted, got {other:?}"),
    }
}

const BODY: &[u8] = b"Subject: test\r\n\r\nHello.\r\n";

/// Many lines, some starting with dots, over `size` bytes.
fn big_body(size: usize) -> Vec<u8> {
    let mut body = b"Subject: big\r\n\r\n".to_vec();
    let mut i = 0;
    while body.len() < size {
        let line = match i % 5 {
            0 => format!(".line {i} starts with a dot\r\n"),
            1 => format!("..line {i} starts with two\r\n"),
            2 => ".\r\n".to_owned(),
            _ => format!("line {i}: {}\r\n", "x".repeat(i % 200)),
        };
        body.extend_from_slice(line.as_bytes());
        i += 1;
    }
    body
}

/// Several recipients: two refused (one permanently, one transiently), two accepted; each
/// gets its own reply and only the accepted ones are given the message.
async fn per_recipient_replies(pipelining: bool, chunking: bool) {
    let sink = sink_with(Extensions {
        pipelining,
        chunking,
        ..Extensions::default()
    })
    .await;
    sink.on(
        Match::Rcpt("bad@remote.test".into()),
        Stage::Rcpt,
        Action::reply(550, "5.1.1 no such user"),
    );
    sink.on(
        Match::Rcpt("later@remote.test".into()),
        Stage::Rcpt,
        Action::reply(451, "4.2.1 mailbox busy"),
    );
    let mut conn = connect(&sink, &settings(TlsPolicy::Opportunistic)).await;
    assert_eq!(conn.capabilities().pipelining, pipelining);
    let rcpts = [
        "a@remote.test",
        "bad@remote.test",
        "later@remote.test",
        "b@remote.test",
    ];
    let (replies, data) = sent(send(&mut conn, &envelope(&rcpts), BODY).await.unwrap());
    let codes: Vec<u16> = replies.iter().map(|r| r.code).collect();
    assert_eq!(codes, [250, 550, 451, 250]);
    assert_eq!(
        replies[1],
        RemoteReply::new(550, Some("5.1.1"), "no such user")
    );
    assert_eq!(
        replies[2],
        RemoteReply::new(451, Some("4.2.1"), "mailbox busy")
    );
    assert_eq!(data.unwrap().code, 250);

    let txn = sink.wait_for_transactions(1, WAIT).await.unwrap().remove(0);
    assert_eq!(txn.accepted_rcpts(), ["a@remote.test", "b@remote.test"]);
    assert_eq!(txn.body, BODY);
    assert_eq!(txn.mail_from, "sender@origin.test");
    assert_eq!(txn.ehlo, "out.kurir.test");
    // BDAT only with PIPELINING too: without it, one command per round trip and DATA.
    let body_by = if pipelining && chunking {
        "BDAT"
    } else {
        "DATA"
    };
    assert_eq!(
        txn.commands,
        ["MAIL", "RCPT", "RCPT", "RCPT", "RCPT", body_by]
    );
    assert_eq!(txn.pipelined, pipelining, "pipelined as offered");
    assert!(conn.is_usable());
    conn.quit().await;
}

#[tokio::test]
async fn pipelined_transaction_gives_each_recipient_its_reply() {
    per_recipient_replies(true, false).await;
}

#[tokio::test]
async fn chunked_transaction_gives_each_recipient_its_reply() {
    per_recipient_replies(true, true).await;
}

#[tokio::test]
async fn a_transaction_told_not_to_chunk_sends_data_to_a_chunking_server() {
    let sink = sink_taking(By::Bdat).await;
    let mut conn = connect(&sink, &settings(TlsPolicy::Opportunistic)).await;
    assert!(conn.capabilities().chunking);
    let body = Bytes::from_static(BODY);
    let env = envelope(&["a@remote.test"]);
    let tx = Transaction {
        envelope: &env,
        body: &body,
        chunking: false,
    };
    let (_, data) = sent(conn.send(&tx).await.unwrap());
    assert_eq!(data.unwrap().code, 250);
    let txn = sink.wait_for_transactions(1, WAIT).await.unwrap().remove(0);
    assert_eq!(txn.commands, ["MAIL", "RCPT", "DATA"]);
    assert!(!txn.bdat);
    conn.quit().await;
}

#[tokio::test]
async fn stepwise_transaction_gives_each_recipient_its_reply() {
    per_recipient_replies(false, true).await;
}

#[tokio::test]
async fn stepwise_sends_no_data_when_no_recipient_is_accepted() {
    let sink = sink_with(Extensions {
        pipelining: false,
        ..Extensions::default()
    })
    .await;
    sink.on(Match::Any, Stage::Rcpt, Action::reply(550, "5.1.1 unknown"));
    let mut conn = connect(&sink, &settings(TlsPolicy::Opportunistic)).await;
    let env = envelope(&["x@remote.test", "y@remote.test"]);
    let (replies, data) = sent(send(&mut conn, &env, BODY).await.unwrap());
    assert!(replies.iter().all(|r| r.code == 550));
    assert_eq!(data, None);
    conn.quit().await;
    let txn = sink.wait_for_transactions(1, WAIT).await.unwrap().remove(0);
    assert!(!txn.commands.contains(&"DATA".to_owned()), "{txn:?}");
    assert!(txn.body.is_empty());
}

#[tokio::test]
async fn pipelined_data_without_recipients_is_refused_and_the_connection_goes_on() {
    body_without_recipients_is_refused_and_the_connection_goes_on(By::Data).await;
}

#[tokio::test]
async fn a_bdat_chunk_without_recipients_is_refused_and_the_connection_goes_on() {
    body_without_recipients_is_refused_and_the_connection_goes_on(By::Bdat).await;
}

async fn body_without_recipients_is_refused_and_the_connection_goes_on(by: By) {
    let sink = sink_taking(by).await;
    let refuse = sink.on(Match::Any, Stage::Rcpt, Action::reply(550, "5.1.1 unknown"));
    let mut conn = connect(&sink, &settings(TlsPolicy::Opportunistic)).await;
    let env = envelope(&["x@remote.test"]);
    let (replies, data) = sent(send(&mut conn, &env, BODY).await.unwrap());
    assert_eq!(replies[0].code, 550);
    assert_eq!(data, None, "the DATA or BDAT refusal decides nothing");
    assert!(conn.is_usable());
    sink.remove_rule(refuse);
    conn.reset().await.unwrap();
    let (_, data) = sent(send(&mut conn, &env, BODY).await.unwrap());
    assert_eq!(data.unwrap().code, 250);
    let txns = sink.wait_for_transactions(2, WAIT).await.unwrap();
    let body_by = if by == By::Bdat { "BDAT" } else { "DATA" };
    assert_eq!(txns[0].commands, ["MAIL", "RCPT", body_by, "RSET"]);
    assert!(txns[0].body.is_empty());
    assert!(txns[1].accepted());
    conn.quit().await;
}

#[tokio::test]
async fn refused_mail_then_reset_leaves_the_connection_usable() {
    let sink = SmtpSink::start().await.unwrap();
    sink.on_times(
        Match::Any,
        Stage::Mail,
        Action::reply(550, "5.7.1 sender refused"),
        1,
    );
    let mut conn = connect(&sink, &settings(TlsPolicy::Opportunistic)).await;
    let env = envelope(&["a@remote.test", "b@remote.test"]);
    match send(&mut conn, &env, BODY).await.unwrap() {
        TransactionReplies::MailRefused(reply) => {
            assert_eq!(
                reply,
                RemoteReply::new(550, Some("5.7.1"), "sender refused")
            );
        }
        other => panic!("expected MailRefused, got {other:?}"),
    }
    assert!(conn.is_usable());
    conn.reset().await.unwrap();
    let (replies, data) = sent(send(&mut conn, &env, BODY).await.unwrap());
    assert_eq!(replies.len(), 2);
    assert_eq!(data.unwrap().code, 250);
    let txns = sink.wait_for_transactions(2, WAIT).await.unwrap();
    assert!(txns[1].accepted());
    assert_eq!(sink.connections_total(), 1);
    conn.quit().await;
}

#[tokio::test]
async fn data_refusals_and_final_replies_are_the_data_reply() {
    refusals_of_the_body_are_its_reply(By::Data).await;
}

#[tokio::test]
async fn bdat_refusals_and_final_replies_are_the_data_reply() {
    refusals_of_the_body_are_its_reply(By::Bdat).await;
}

/// A refusal of DATA (or of the first BDAT chunk) and the final reply both decide the
/// accepted recipients' fate.
async fn refusals_of_the_body_are_its_reply(by: By) {
    let sink = sink_taking(by).await;
    sink.on_times(
        Match::Any,
        Stage::Data,
        Action::reply(554, "5.7.1 no thanks"),
        1,
    );
    sink.on_times(
        Match::Any,
        Stage::DataEnd,
        Action::reply(451, "4.3.0 try again"),
        1,
    );
    let mut conn = connect(&sink, &settings(TlsPolicy::Opportunistic)).await;
    let env = envelope(&["a@remote.test"]);
    let (_, data) = sent(send(&mut conn, &env, BODY).await.unwrap());
    assert_eq!(
        data,
        Some(RemoteReply::new(554, Some("5.7.1"), "no thanks"))
    );
    conn.reset().await.unwrap();
    let (_, data) = sent(send(&mut conn, &env, BODY).await.unwrap());
    assert_eq!(
        data,
        Some(RemoteReply::new(451, Some("4.3.0"), "try again"))
    );
    let txns = sink.wait_for_transactions(2, WAIT).await.unwrap();
    // A refused DATA gets no body; a BDAT chunk is sent with its command, and refused.
    assert_eq!(txns[0].body.is_empty(), by == By::Data);
    assert_eq!(txns[1].body, BODY, "the body went, then was refused");
    conn.quit().await;
}

#[tokio::test]
async fn dot_stuffing_round_trips_and_a_final_crlf_is_added() {
    dots_round_trip_and_a_final_crlf_is_added(By::Data).await;
}

#[tokio::test]
async fn a_bdat_body_goes_unstuffed_and_a_final_crlf_is_added() {
    dots_round_trip_and_a_final_crlf_is_added(By::Bdat).await;
}

async fn dots_round_trip_and_a_final_crlf_is_added(by: By) {
    let sink = sink_taking(by).await;
    let mut conn = connect(&sink, &settings(TlsPolicy::Opportunistic)).await;
    let body = b".\r\n..x\r\n.y\r\nmiddle . dot\r\n.\r\n\r\n.\r\nlast line without CRLF";
    let (_, data) = sent(
        send(&mut conn, &envelope(&["a@remote.test"]), body)
            .await
            .unwrap(),
    );
    assert_eq!(data.unwrap().code, 250);
    let txn = sink.wait_for_transactions(1, WAIT).await.unwrap().remove(0);
    assert_eq!(txn.bdat, by == By::Bdat);
    let mut expected = body.to_vec();
    expected.extend_from_slice(b"\r\n");
    assert_eq!(txn.body_text(), String::from_utf8(expected).unwrap());
    conn.quit().await;
}

#[tokio::test]
async fn a_large_body_arrives_intact() {
    for by in [By::Data, By::Bdat] {
        a_large_body_arrives_intact_by(by).await;
    }
}

async fn a_large_body_arrives_intact_by(by: By) {
    let sink = sink_taking(by).await;
    let mut conn = connect(&sink, &settings(TlsPolicy::Opportunistic)).await;
    let body = big_body(300 * 1024);
    let (_, data) = sent(
        send(&mut conn, &envelope(&["a@remote.test"]), &body)
            .await
            .unwrap(),
    );
    assert_eq!(data.unwrap().code, 250);
    let txn = sink.wait_for_transactions(1, WAIT).await.unwrap().remove(0);
    assert_eq!(txn.bdat, by == By::Bdat);
    assert_eq!(txn.body.len(), body.len());
    assert!(txn.body == body, "the body changed on the way");
    conn.quit().await;
}

#[tokio::test]
async fn opportunistic_starttls_encrypts_without_verifying_and_ehlos_again() {
    let ca = TestCa::new();
    let sink = SmtpSink::builder()
        .starttls(ca.server_config(&[MX]))
        .start()
        .await
        .unwrap();
    // No roots at all: verification would fail, and must not be attempted.
    let mut conn = connect(&sink, &settings(TlsPolicy::Opportunistic)).await;
    assert_eq!(conn.tls_version(), Some("TLSv1.3"));
    assert!(
        !conn.capabilities().starttls,
        "capabilities come from the EHLO after TLS"
    );
    assert!(conn.capabilities().pipelining);
    let body = big_body(150 * 1024);
    let (_, data) = sent(
        send(&mut conn, &envelope(&["a@remote.test"]), &body)
            .await
            .unwrap(),
    );
    assert_eq!(data.unwrap().code, 250);
    let txn = sink.wait_for_transactions(1, WAIT).await.unwrap().remove(0);
    let tls = txn.tls.expect("the transaction ran over TLS");
    assert_eq!(tls.version, Some(rustls::ProtocolVersion::TLSv1_3));
    assert_eq!(tls.sni.as_deref(), Some(MX));
    assert!(txn.body == body);
    conn.quit().await;
}

#[tokio::test]
async fn tls12_is_reported_as_such() {
    let ca = TestCa::new();
    let config = ca.server_config_with_versions(&[MX], &[&rustls::version::TLS12]);
    let sink = SmtpSink::builder().starttls(config).start().await.unwrap();
    let conn = connect(&sink, &settings(TlsPolicy::Require)).await;
    assert_eq!(conn.tls_version(), Some("TLSv1.2"));
    conn.quit().await;
}

#[tokio::test]
async fn opportunistic_without_starttls_and_disable_stay_in_plain_text() {
    let plain = SmtpSink::start().await.unwrap();
    let mut conn = connect(&plain, &settings(TlsPolicy::Opportunistic)).await;
    assert_eq!(conn.tls_version(), None);
    sent(
        send(&mut conn, &envelope(&["a@remote.test"]), BODY)
            .await
            .unwrap(),
    );
    let txn = plain
        .wait_for_transactions(1, WAIT)
        .await
        .unwrap()
        .remove(0);
    assert_eq!(txn.tls, None);
    conn.quit().await;

    let ca = TestCa::new();
    let offering = SmtpSink::builder()
        .starttls(ca.server_config(&[MX]))
        .start()
        .await
        .unwrap();
    let mut conn = connect(&offering, &settings(TlsPolicy::Disable)).await;
    assert_eq!(conn.tls_version(), None);
    assert!(conn.capabilities().starttls, "offered, not taken");
    sent(
        send(&mut conn, &envelope(&["a@remote.test"]), BODY)
            .await
            .unwrap(),
    );
    let txn = offering
        .wait_for_transactions(1, WAIT)
        .await
        .unwrap()
        .remove(0);
    assert_eq!(txn.tls, None);
    conn.quit().await;
}

/// Waits until the sink has no connection open, so every transaction it saw is recorded.
async fn wait_closed(sink: &SmtpSink) {
    wait_for("the sink's connections to close", WAIT, || async {
        (sink.connections_open() == 0).then_some(())
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn require_without_starttls_fails_before_any_mail() {
    let sink = SmtpSink::start().await.unwrap();
    let err = Connection::connect(&target(&sink), &settings(TlsPolicy::Require))
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::TlsNotOffered), "{err}");
    assert!(err.is_connection_level());
    wait_closed(&sink).await;
    assert_eq!(sink.connections_total(), 1);
    assert!(sink.transactions().is_empty(), "no MAIL in clear");
}

#[tokio::test]
async fn require_encrypts_with_an_unverifiable_certificate() {
    let ca = TestCa::new();
    let sink = SmtpSink::builder()
        .starttls(ca.server_config(&["some.other.name"]))
        .start()
        .await
        .unwrap();
    let mut conn = connect(&sink, &settings(TlsPolicy::Require)).await;
    assert!(conn.tls_version().is_some());
    sent(
        send(&mut conn, &envelope(&["a@remote.test"]), BODY)
            .await
            .unwrap(),
    );
    let txn = sink.wait_for_transactions(1, WAIT).await.unwrap().remove(0);
    assert!(txn.tls.is_some());
    conn.quit().await;
}

#[tokio::test]
async fn verify_accepts_a_certificate_from_a_trusted_ca_for_the_host() {
    let ca = TestCa::new();
    let sink = SmtpSink::builder()
        .starttls(ca.server_config(&[MX]))
        .start()
        .await
        .unwrap();
    let mut settings = settings(TlsPolicy::Verify);
    settings.tls_roots = roots_with(&ca);
    let mut conn = connect(&sink, &settings).await;
    assert!(conn.tls_version().is_some());
    sent(
        send(&mut conn, &envelope(&["a@remote.test"]), BODY)
            .await
            .unwrap(),
    );
    let txn = sink.wait_for_transactions(1, WAIT).await.unwrap().remove(0);
    assert_eq!(txn.tls.unwrap().sni.as_deref(), Some(MX));
    conn.quit().await;
}

#[tokio::test]
async fn verify_refuses_an_untrusted_ca_or_a_wrong_name() {
    let ca = TestCa::new();
    let other_ca = TestCa::new();
    for (cert_ca, names, roots) in [
        (&ca, [MX], roots_with(&other_ca)),
        (&ca, ["wrong.example.test"], roots_with(&ca)),
    ] {
        let sink = SmtpSink::builder()
            .starttls(cert_ca.server_config(&names))
            .start()
            .await
            .unwrap();
        let mut settings = settings(TlsPolicy::Verify);
        settings.tls_roots = roots;
        let err = Connection::connect(&target(&sink), &settings)
            .await
            .unwrap_err();
        assert!(matches!(err, ClientError::Tls(_)), "{names:?}: {err}");
        wait_closed(&sink).await;
        assert!(sink.transactions().is_empty());
    }
}

#[tokio::test]
async fn a_stalled_reply_times_out_and_poisons_the_connection() {
    for by in [By::Data, By::Bdat] {
        let sink = sink_taking(by).await;
        sink.on(Match::Any, Stage::Mail, Action::Stall);
        let mut settings = settings(TlsPolicy::Opportunistic);
        settings.timeouts.mail = Duration::from_millis(200);
        settings.timeouts.rcpt = Duration::from_millis(200);
        settings.timeouts.data_end = Duration::from_millis(300);
        let mut conn = connect(&sink, &settings).await;
        let err = send(&mut conn, &envelope(&["a@remote.test"]), BODY)
            .await
            .unwrap_err();
        // With BDAT the body went with MAIL, and the server may check it before it answers
        // anything: MAIL's reply gets the end-of-data limit.
        let limit = if by == By::Bdat { 300 } else { 200 };
        match err {
            ClientError::Timeout { phase, after } => {
                assert_eq!(phase, Phase::Mail, "{by:?}");
                assert_eq!(after, Duration::from_millis(limit), "{by:?}");
            }
            other => panic!("{by:?}: expected a timeout, got {other}"),
        }
        assert!(!conn.is_usable());
        assert!(conn.reset().await.is_err());
        assert_eq!(conn.transactions(), 1);
    }
}

#[tokio::test]
async fn a_silent_banner_times_out() {
    let sink = SmtpSink::start().await.unwrap();
    sink.on(Match::Any, Stage::Banner, Action::Stall);
    let mut settings = settings(TlsPolicy::Opportunistic);
    settings.timeouts.banner = Duration::from_millis(200);
    let err = Connection::connect(&target(&sink), &settings)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            ClientError::Timeout {
                phase: Phase::Banner,
                ..
            }
        ),
        "{err}"
    );
}

/// The sink answers MAIL with `421 <text>` (and closes): sending `body` fails with that
/// reply at MAIL, a rate limit in its text is seen, and the connection is done.
async fn refused_at_mail_with_421(sink: &SmtpSink, body: &[u8], enhanced: &str, text: &str) {
    sink.on(
        Match::Any,
        Stage::Mail,
        Action::reply(421, format!("{enhanced} {text}")),
    );
    let mut conn = connect(sink, &settings(TlsPolicy::Opportunistic)).await;
    let err = send(&mut conn, &envelope(&["a@remote.test"]), body)
        .await
        .unwrap_err();
    match &err {
        ClientError::Rejected { phase, reply } => {
            assert_eq!(*phase, Phase::Mail);
            assert_eq!(*reply, RemoteReply::new(421, Some(enhanced), text));
        }
        other => panic!("expected Rejected, got {other}"),
    }
    assert!(err.reply().unwrap().is_rate_limit());
    assert!(!conn.is_usable());
    assert!(sink.transactions().iter().all(|t| !t.accepted()));
}

#[tokio::test]
async fn a_421_at_mail_is_rejected_and_poisons_the_connection() {
    let sink = SmtpSink::start().await.unwrap();
    refused_at_mail_with_421(&sink, BODY, "4.3.2", "shutting down").await;
}

/// A receiver that answers MAIL with 421 and closes without reading the rest: with BDAT the
/// body is still being written when the connection goes, and the write fails. The 421 that
/// came before the close is the error (its text is kept, and a rate limit in it is seen),
/// not the failed write.
#[tokio::test]
async fn a_421_that_cuts_a_chunk_short_is_the_error() {
    let sink = sink_taking(By::Bdat).await;
    let body = big_body(16 * 1024 * 1024);
    refused_at_mail_with_421(&sink, &body, "4.7.0", "too many messages, slow down").await;
}

#[tokio::test]
async fn one_connection_carries_three_transactions() {
    let sink = SmtpSink::start().await.unwrap();
    let mut conn = connect(&sink, &settings(TlsPolicy::Opportunistic)).await;
    for i in 0..3 {
        if i > 0 {
            conn.reset().await.unwrap();
        }
        let body = format!("Subject: {i}\r\n\r\nmessage {i}\r\n");
        let env = envelope(&[&format!("r{i}@remote.test")]);
        let (_, data) = sent(send(&mut conn, &env, body.as_bytes()).await.unwrap());
        assert_eq!(data.unwrap().code, 250);
    }
    assert_eq!(conn.transactions(), 3);
    conn.quit().await;
    let txns = sink.wait_for_transactions(3, WAIT).await.unwrap();
    assert_eq!(sink.connections_total(), 1);
    assert_eq!(txns.len(), 3);
    for (i, txn) in txns.iter().enumerate() {
        assert_eq!(txn.connection, 1);
        assert!(txn.accepted());
        assert_eq!(txn.accepted_rcpts(), [format!("r{i}@remote.test")]);
    }
}

#[tokio::test]
async fn binds_the_source_address() {
    let sink = SmtpSink::start().await.unwrap();
    let source = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
    let mut settings = settings(TlsPolicy::Opportunistic);
    settings.source = Some(source);
    let mut conn = connect(&sink, &settings).await;
    sent(
        send(&mut conn, &envelope(&["a@remote.test"]), BODY)
            .await
            .unwrap(),
    );
    let txn = sink.wait_for_transactions(1, WAIT).await.unwrap().remove(0);
    assert_eq!(txn.peer.ip(), source);
    conn.quit().await;
}

#[tokio::test]
async fn a_refused_connection_is_a_connect_error() {
    // Bind then drop a listener: its port refuses connections (nothing else takes it this
    // fast on loopback).
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    drop(listener);
    let target = Target {
        host: MX.to_owned(),
        addr,
    };
    let err = Connection::connect(&target, &settings(TlsPolicy::Opportunistic))
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::Connect { .. }), "{err}");
}

#[tokio::test]
async fn size_is_declared_when_offered_and_enforced_by_the_server() {
    let sink = sink_with(Extensions {
        size: Some(1_000),
        ..Extensions::default()
    })
    .await;
    let mut conn = connect(&sink, &settings(TlsPolicy::Opportunistic)).await;
    assert_eq!(conn.capabilities().size, Some(1_000));
    let env = envelope(&["a@remote.test"]);
    sent(send(&mut conn, &env, BODY).await.unwrap());
    conn.reset().await.unwrap();
    let too_big = vec![b'x'; 2_000];
    match send(&mut conn, &env, &too_big).await.unwrap() {
        TransactionReplies::MailRefused(reply) => assert_eq!(reply.code, 552),
        other => panic!("expected MailRefused, got {other:?}"),
    }
    let txns = sink.wait_for_transactions(2, WAIT).await.unwrap();
    assert_eq!(txns[0].mail_params, [format!("SIZE={}", BODY.len())]);
    // The body has no final CRLF: the one added is counted.
    assert_eq!(txns[1].mail_params, ["SIZE=2002"]);
    conn.quit().await;

    let no_size = SmtpSink::start().await.unwrap();
    let mut conn = connect(&no_size, &settings(TlsPolicy::Opportunistic)).await;
    sent(send(&mut conn, &env, BODY).await.unwrap());
    let txn = no_size
        .wait_for_transactions(1, WAIT)
        .await
        .unwrap()
        .remove(0);
    assert!(txn.mail_params.is_empty(), "{:?}", txn.mail_params);
    conn.quit().await;
}

fn dsn_envelope() -> Envelope {
    let mut env = envelope(&[]);
    env.ret = Some(Ret::Full);
    env.envid = Some("env 1".to_owned());
    let mut rcpt = Recipient::new(address("a@remote.test"));
    rcpt.notify = Some(Notify::parse("SUCCESS,FAILURE").unwrap());
    rcpt.orcpt = Some(Orcpt::parse("rfc822;orig+2Bx@origin.test").unwrap());
    env.recipients.push(rcpt);
    env
}

#[tokio::test]
async fn dsn_parameters_go_only_to_a_server_that_offers_dsn() {
    for dsn in [false, true] {
        let sink = sink_with(Extensions {
            dsn,
            ..Extensions::default()
        })
        .await;
        let mut conn = connect(&sink, &settings(TlsPolicy::Opportunistic)).await;
        assert_eq!(conn.capabilities().dsn, dsn);
        sent(send(&mut conn, &dsn_envelope(), BODY).await.unwrap());
        let txn = sink.wait_for_transactions(1, WAIT).await.unwrap().remove(0);
        if dsn {
            assert_eq!(txn.mail_params, ["RET=FULL", "ENVID=env+201"]);
            assert_eq!(
                txn.rcpts[0].params,
                [
                    "NOTIFY=SUCCESS,FAILURE",
                    "ORCPT=rfc822;orig+2Bx@origin.test"
                ]
            );
        } else {
            assert!(txn.mail_params.is_empty(), "{:?}", txn.mail_params);
            assert!(txn.rcpts[0].params.is_empty(), "{:?}", txn.rcpts[0].params);
        }
        conn.quit().await;
    }
}

#[tokio::test]
async fn body_and_smtputf8_parameters_follow_the_envelope_and_the_offer() {
    let offering = SmtpSink::start().await.unwrap();
    let mut conn = connect(&offering, &settings(TlsPolicy::Opportunistic)).await;
    let mut eight = envelope(&["a@remote.test"]);
    eight.body = BodyType::EightBitMime;
    eight.smtputf8 = true;
    let mut binary = envelope(&["ÿ@remote.test"]);
    binary.body = BodyType::BinaryMime;
    let seven = envelope(&["a@remote.test"]);
    for env in [&eight, &binary, &seven] {
        sent(send(&mut conn, env, BODY).await.unwrap());
        conn.reset().await.unwrap();
    }
    let txns = offering.wait_for_transactions(3, WAIT).await.unwrap();
    assert_eq!(txns[0].mail_params, ["BODY=8BITMIME", "SMTPUTF8"]);
    assert_eq!(txns[1].mail_params, ["BODY=8BITMIME", "SMTPUTF8"]);
    assert!(txns[2].mail_params.is_empty());
    conn.quit().await;

    let plain = sink_with(Extensions {
        eightbitmime: false,
        smtputf8: false,
        ..Extensions::default()
    })
    .await;
    let mut conn = connect(&plain, &settings(TlsPolicy::Opportunistic)).await;
    sent(send(&mut conn, &eight, BODY).await.unwrap());
    let txn = plain
        .wait_for_transactions(1, WAIT)
        .await
        .unwrap()
        .remove(0);
    assert!(txn.mail_params.is_empty(), "{:?}", txn.mail_params);
    conn.quit().await;
}

fn auth_sink_extensions(ca: &TestCa, starttls: bool) -> Extensions {
    Extensions {
        starttls: starttls.then(|| ca.server_config(&[MX])),
        auth: Some(("relay-user".to_owned(), "s3cret".to_owned())),
        ..Extensions::default()
    }
}

fn with_auth(user: &str, password: &str) -> ClientSettings {
    let mut settings = settings(TlsPolicy::Require);
    settings.auth = Some((user.to_owned(), password.to_owned()));
    settings
}

#[tokio::test]
async fn auth_plain_over_tls() {
    let ca = TestCa::new();
    let sink = sink_with(auth_sink_extensions(&ca, true)).await;
    let mut conn = connect(&sink, &with_auth("relay-user", "s3cret")).await;
    assert_eq!(conn.capabilities().auth, ["PLAIN", "LOGIN"]);
    sent(
        send(&mut conn, &envelope(&["a@remote.test"]), BODY)
            .await
            .unwrap(),
    );
    let txn = sink.wait_for_transactions(1, WAIT).await.unwrap().remove(0);
    let expected = AuthInfo {
        mechanism: "PLAIN".to_owned(),
        user: "relay-user".to_owned(),
    };
    assert_eq!(txn.auth, Some(expected));
    assert!(txn.accepted());
    conn.quit().await;

    // Without credentials the same server refuses MAIL: AUTH above was what let it in.
    let mut conn = connect(&sink, &settings(TlsPolicy::Require)).await;
    match send(&mut conn, &envelope(&["a@remote.test"]), BODY)
        .await
        .unwrap()
    {
        TransactionReplies::MailRefused(reply) => assert_eq!(reply.code, 530),
        other => panic!("expected MailRefused, got {other:?}"),
    }
    conn.quit().await;
}

#[tokio::test]
async fn auth_with_wrong_credentials_is_rejected() {
    let ca = TestCa::new();
    let sink = sink_with(auth_sink_extensions(&ca, true)).await;
    let err = Connection::connect(&target(&sink), &with_auth("relay-user", "wrong"))
        .await
        .unwrap_err();
    match err {
        ClientError::Rejected {
            phase: Phase::Auth,
            reply,
        } => {
            assert_eq!(reply.code, 535);
            assert_eq!(reply.enhanced.as_deref(), Some("5.7.8"));
        }
        other => panic!("expected an AUTH rejection, got {other}"),
    }
}

#[tokio::test]
async fn auth_is_never_sent_in_clear() {
    let ca = TestCa::new();
    let sink = sink_with(auth_sink_extensions(&ca, false)).await;
    let mut settings = with_auth("relay-user", "s3cret");
    settings.tls = TlsPolicy::Opportunistic;
    let err = Connection::connect(&target(&sink), &settings)
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::AuthUnavailable(_)), "{err}");
}

#[tokio::test]
async fn helo_when_ehlo_is_refused() {
    let sink = SmtpSink::start().await.unwrap();
    sink.on_times(
        Match::Any,
        Stage::Ehlo,
        Action::reply(502, "5.5.1 EHLO not implemented"),
        1,
    );
    let mut conn = connect(&sink, &settings(TlsPolicy::Opportunistic)).await;
    assert_eq!(conn.capabilities(), &Default::default());
    let env = envelope(&["a@remote.test"]);
    let (_, data) = sent(send(&mut conn, &env, BODY).await.unwrap());
    assert_eq!(data.unwrap().code, 250);
    let txn = sink.wait_for_transactions(1, WAIT).await.unwrap().remove(0);
    assert_eq!(txn.ehlo, "out.kurir.test");
    assert!(!txn.pipelined, "no PIPELINING after HELO");
    conn.quit().await;
}

/// A server that answers STARTTLS with its 220 and, in the same write, a reply to a
/// command nobody sent: the client must not carry those plain-text bytes into TLS.
#[tokio::test]
async fn bytes_after_the_starttls_reply_are_refused() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        let (read, mut write) = stream.into_split();
        let mut lines = BufReader::new(read).lines();
        write.write_all(b"220 evil ESMTP\r\n").await.unwrap();
        while let Some(line) = lines.next_line().await.unwrap() {
            let answer: &[u8] = match line.to_ascii_uppercase().as_str() {
                l if l.starts_with("EHLO") => b"250-evil\r\n250 STARTTLS\r\n",
                "STARTTLS" => b"220 go ahead\r\n250 injected\r\n",
                _ => b"221 bye\r\n",
            };
            write.write_all(answer).await.unwrap();
        }
        let mut rest = Vec::new();
        let _ = lines.into_inner().read_to_end(&mut rest).await;
    });
    let target = Target {
        host: MX.to_owned(),
        addr,
    };
    let err = Connection::connect(&target, &settings(TlsPolicy::Require))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            ClientError::Protocol {
                phase: Phase::StartTls,
                ..
            }
        ),
        "{err}"
    );
    server.await.unwrap();
}
