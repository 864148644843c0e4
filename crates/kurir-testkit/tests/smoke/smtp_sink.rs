//! [`SmtpSink`] driven by real clients: Python's smtplib (a third-party SMTP client that knows
//! nothing of our code) for EHLO, verified STARTTLS, DATA and refusals, and a raw tokio
//! socket for what smtplib cannot do (BDAT, pipelining after STARTTLS, junk).

use std::process::Output;
use std::time::Duration;

use kurir_testkit::smtp_sink::{Action, Extensions, Match, SmtpSink, Stage};
use kurir_testkit::{TestCa, wait_for};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// Generous for a loaded 2-core machine; only reached when something is broken.
const TIMEOUT: Duration = Duration::from_secs(30);

/// Python helpers every script starts with: `connect()` and `tls_context(name)`, which
/// verifies the server against the test CA *for `name`* whatever address was dialled.
const PRELUDE: &str = r#"
import smtplib, ssl, sys
PORT = int(sys.argv[1])
CAFILE = sys.argv[2] if len(sys.argv) > 2 else None

def connect():
    return smtplib.SMTP("127.0.0.1", PORT, local_hostname="client.example.test", timeout=20)

def tls_context(name):
    class Ctx(ssl.SSLContext):
        def wrap_socket(self, sock, server_hostname=None, **kw):
            return super().wrap_socket(sock, server_hostname=name, **kw)
    ctx = Ctx(ssl.PROTOCOL_TLS_CLIENT)  # verifies the chain and the name
    ctx.load_verify_locations(CAFILE)
    return ctx
"#;

/// Runs `script` (after [`PRELUDE`]) with python3, port and CA file as arguments; returns its
/// stdout, failing the test with its stderr if it failed.
async fn python(script: &str, sink: &SmtpSink, cafile: Option<&std::path::Path>) -> String {
    let mut command = tokio::process::Command::new("python3");
    command
        .arg("-c")
        .arg(format!("{PRELUDE}\n{script}"))
        .arg(sink.port().to_string());
    if let Some(cafile) = cafile {
        command.arg(cafile);
    }
    command.kill_on_drop(true);
    let output: Output = tokio::time::timeout(TIMEOUT, command.output())
        .await
        .expect("python3 timed out")
        .expect("run python3 (is it installed?)");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "python3 failed: {}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        output.status
    );
    stdout
}

#[tokio::test]
async fn smtplib_delivers_over_verified_starttls() {
    let ca = TestCa::new();
    let dir = tempfile::tempdir().unwrap();
    let cafile = ca.write_ca_pem(dir.path()).unwrap();
    let extensions = Extensions {
        starttls: Some(ca.server_config(&["mx.example.test"])),
        size: Some(1_000_000),
        ..Extensions::default()
    };
    let sink = SmtpSink::builder()
        .extensions(extensions)
        .start()
        .await
        .unwrap();
    let message = "Subject: hello\r\n\r\nfirst line\r\n.starts with a dot\r\n..two dots\r\n";
    let script = r#"
s = connect()
s.ehlo()
assert s.has_extn("starttls") and s.has_extn("size"), s.esmtp_features
s.starttls(context=tls_context("mx.example.test"))
print("tls", s.sock.version())
s.ehlo()
assert not s.has_extn("starttls"), "STARTTLS offered again inside TLS"
refused = s.sendmail("sender@example.test", ["a@example.test", "b@example.test"], MESSAGE)
print("refused", refused)
s.quit()
try:
    t = connect()
    t.starttls(context=tls_context("wrong.example.test"))
    print("wrong name accepted")
except ssl.SSLCertVerificationError:
    print("wrong name rejected")
"#
    .replace("MESSAGE", &format!("{message:?}"));
    let out = python(&script, &sink, Some(&cafile)).await;
    assert!(out.contains("tls TLSv1.3"), "{out}");
    assert!(out.contains("refused {}"), "{out}");
    assert!(out.contains("wrong name rejected"), "{out}");

    let txns = sink.wait_for_transactions(1, TIMEOUT).await.unwrap();
    let txn = &txns[0];
    assert!(txn.accepted(), "{txn:?}");
    assert_eq!(txn.ehlo, "client.example.test");
    assert_eq!(txn.mail_from, "sender@example.test");
    assert_eq!(txn.mail_params, [format!("size={}", message.len())]);
    assert_eq!(txn.accepted_rcpts(), ["a@example.test", "b@example.test"]);
    assert_eq!(txn.body_text(), message, "dot-unstuffed body");
    assert!(!txn.bdat);
    let tls = txn.tls.as_ref().expect("transaction ran over TLS");
    assert_eq!(tls.version, Some(rustls::ProtocolVersion::TLSv1_3));
    assert_eq!(tls.sni.as_deref(), Some("mx.example.test"));
    assert_eq!(txns.len(), 1, "the failed handshake made no transaction");
    assert_eq!(sink.connections_total(), 2);
}

#[tokio::test]
async fn rules_refuse_a_recipient_and_the_nth_message() {
    let sink = SmtpSink::start().await.unwrap();
    let bad = Match::Rcpt("Bad@Example.test".into());
    sink.on(bad, Stage::Rcpt, Action::reply(550, "5.1.1 no such user"));
    sink.on(
        Match::NthMessage(2),
        Stage::Mail,
        Action::reply(451, "4.3.0 try again later"),
    );
    let script = r#"
s = connect()
print("first", s.sendmail("s@example.test", ["good@example.test", "bad@example.test"], "Subject: 1\r\n\r\none\r\n"))
try:
    s.sendmail("s@example.test", ["good@example.test"], "Subject: 2\r\n\r\ntwo\r\n")
    print("second accepted")
except smtplib.SMTPSenderRefused as e:
    print("second refused", e.smtp_code)
print("third", s.sendmail("s@example.test", ["good@example.test"], "Subject: 3\r\n\r\nthree\r\n"))
s.quit()
"#;
    let out = python(script, &sink, None).await;
    assert!(
        out.contains("first {'bad@example.test': (550, b'5.1.1 no such user')}"),
        "{out}"
    );
    assert!(out.contains("second refused 451"), "{out}");
    assert!(out.contains("third {}"), "{out}");

    let txns = sink.wait_for_transactions(3, TIMEOUT).await.unwrap();
    assert_eq!(
        txns.iter().map(|t| t.message).collect::<Vec<_>>(),
        [1, 2, 3]
    );
    assert!(txns[0].accepted());
    assert_eq!(txns[0].accepted_rcpts(), ["good@example.test"]);
    assert_eq!(txns[0].rcpts[1].reply.code, 550);
    let second = txns[1].final_reply.as_ref().expect("MAIL refusal recorded");
    assert_eq!(
        (second.code, second.text.as_str()),
        (451, "4.3.0 try again later")
    );
    assert!(txns[1].rcpts.is_empty());
    assert!(txns[2].accepted());
    assert_eq!(txns[2].body_text(), "Subject: 3\r\n\r\nthree\r\n");
}

#[tokio::test]
async fn disconnect_mid_data_is_an_error_for_the_client() {
    let sink = SmtpSink::start().await.unwrap();
    sink.on(Match::Any, Stage::Data, Action::DisconnectAfterBody(100));
    let script = r#"
s = connect()
try:
    s.sendmail("s@example.test", ["r@example.test"], "Subject: big\r\n\r\n" + "x" * 200000 + "\r\n")
    print("delivered")
except (smtplib.SMTPException, OSError) as e:
    print("failed", type(e).__name__)
"#;
    let out = python(script, &sink, None).await;
    assert!(out.contains("failed"), "{out}");

    let txns = sink.wait_for_transactions(1, TIMEOUT).await.unwrap();
    assert_eq!(txns[0].final_reply, None);
    assert!(
        txns[0].body.len() >= 100,
        "read some body first: {}",
        txns[0].body.len()
    );
    assert!(txns[0].body.starts_with(b"Subject: big"));
}

/// A raw SMTP client: writes bytes, reads whole (multi-line) replies.
struct Client<S> {
    io: BufReader<S>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Client<S> {
    fn new(io: S) -> Self {
        Self {
            io: BufReader::new(io),
        }
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.io.get_mut().write_all(bytes).await.unwrap();
        self.io.get_mut().flush().await.unwrap();
    }

    /// The next reply, all its lines joined; empty at end of input.
    async fn reply(&mut self) -> String {
        let mut reply = String::new();
        loop {
            let mut line = String::new();
            let read = tokio::time::timeout(TIMEOUT, self.io.read_line(&mut line)).await;
            if read.expect("reply timed out").unwrap() == 0 {
                return reply;
            }
            reply.push_str(&line);
            if line.as_bytes().get(3) != Some(&b'-') {
                return reply;
            }
        }
    }

    async fn expect(&mut self, code: &str) -> String {
        let reply = self.reply().await;
        assert!(reply.starts_with(code), "expected {code}, got {reply:?}");
        reply
    }
}

async fn connect(sink: &SmtpSink) -> Client<TcpStream> {
    Client::new(TcpStream::connect(sink.addr()).await.unwrap())
}

#[tokio::test]
async fn bdat_chunks_are_joined_without_unstuffing() {
    let sink = SmtpSink::start().await.unwrap();
    let mut client = connect(&sink).await;
    client.expect("220").await;
    client.send(b"EHLO raw.example.test\r\n").await;
    assert!(client.expect("250").await.contains("CHUNKING"));
    // Pipelined, as RFC 3030 clients do: the chunk bytes follow their command directly.
    client
        .send(b"MAIL FROM:<s@example.test>\r\nRCPT TO:<r@example.test> NOTIFY=NEVER\r\nBDAT 8\r\n.hello\r\nBDAT 8 LAST\r\nworld\r\n.QUIT\r\n")
        .await;
    client.expect("250").await;
    client.expect("250").await;
    assert!(client.expect("250").await.contains("8 octets"));
    client.expect("250 2.0.0 OK queued").await;
    client.expect("221").await;

    let txns = sink.wait_for_transactions(1, TIMEOUT).await.unwrap();
    assert!(txns[0].bdat);
    assert!(txns[0].accepted());
    assert_eq!(txns[0].body_text(), ".hello\r\nworld\r\n.");
    assert_eq!(txns[0].rcpts[0].params, ["NOTIFY=NEVER"]);
}

#[tokio::test]
async fn input_pipelined_after_starttls_is_discarded() {
    let ca = TestCa::new();
    let sink = SmtpSink::builder()
        .starttls(ca.server_config(&["mx.example.test"]))
        .start()
        .await
        .unwrap();
    let mut client = connect(&sink).await;
    client.expect("220").await;
    client.send(b"EHLO raw.example.test\r\n").await;
    client.expect("250").await;
    client
        .send(b"STARTTLS\r\nMAIL FROM:<injected@example.test>\r\n")
        .await;
    client.expect("220").await;
    assert!(client.io.buffer().is_empty());
    let name = rustls::pki_types::ServerName::try_from("mx.example.test").unwrap();
    let connector = tokio_rustls::TlsConnector::from(ca.client_config());
    let tls = connector
        .connect(name, client.io.into_inner())
        .await
        .unwrap();
    let mut client = Client::new(tls);
    // Had the injected MAIL survived, it would be answered (503, no EHLO yet) before this.
    client.send(b"EHLO raw.example.test\r\n").await;
    assert!(
        client
            .expect("250-mx.example.test")
            .await
            .contains("PIPELINING")
    );
    client.send(b"QUIT\r\n").await;
    client.expect("221").await;
    assert!(sink.transactions().is_empty());
}

#[tokio::test]
async fn junk_and_over_long_lines_get_500_and_the_session_survives() {
    let sink = SmtpSink::builder().max_line(512).start().await.unwrap();
    let mut client = connect(&sink).await;
    client.expect("220").await;
    client.send(b"\x00\xff\xfe junk\r\n").await;
    client.expect("500").await;
    client.send(&[b'A'; 4000]).await;
    client.send(b"\r\nNOOP\r\n").await;
    assert!(client.expect("500").await.contains("too long"));
    client.expect("250").await;
    client.send(b"MAIL FROM:<s@example.test>\r\n").await;
    client.expect("503").await; // no EHLO yet
    client.send(b"QUIT\r\n").await;
    client.expect("221").await;
}

#[tokio::test]
async fn stall_sends_nothing_until_the_client_gives_up() {
    let sink = SmtpSink::start().await.unwrap();
    sink.on(Match::NthConnection(1), Stage::Banner, Action::Stall);
    let mut stalled = connect(&sink).await;
    let mut line = String::new();
    let read = tokio::time::timeout(Duration::from_millis(300), stalled.io.read_line(&mut line));
    assert!(read.await.is_err(), "stalled sink replied: {line:?}");
    let mut second = connect(&sink).await;
    second.expect("220").await;
    drop(stalled);
    wait_for("stalled connection closed", TIMEOUT, || async {
        (sink.connections_open() == 1).then_some(())
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn counts_open_and_most_concurrent_connections() {
    let sink = SmtpSink::start().await.unwrap();
    let mut clients = Vec::new();
    for _ in 0..3 {
        let mut client = connect(&sink).await;
        client.expect("220").await;
        clients.push(client);
    }
    assert_eq!(sink.connections_open(), 3);
    let mut first = clients.remove(0);
    first.send(b"QUIT\r\n").await;
    first.expect("221").await;
    assert_eq!(
        sink.connections_open(),
        2,
        "QUIT counts as closed before the 221"
    );
    drop(clients);
    wait_for("all connections closed", TIMEOUT, || async {
        (sink.connections_open() == 0).then_some(())
    })
    .await
    .unwrap();
    let mut last = connect(&sink).await;
    last.expect("220").await;
    assert_eq!(sink.connections_total(), 4);
    assert_eq!(sink.max_concurrent_connections(), 3);
}

#[tokio::test]
async fn dropping_the_sink_closes_its_connections() {
    let sink = SmtpSink::start().await.unwrap();
    sink.on(Match::Any, Stage::Ehlo, Action::Stall);
    let mut client = connect(&sink).await;
    client.expect("220").await;
    client.send(b"EHLO raw.example.test\r\n").await;
    drop(sink);
    let mut line = String::new();
    let read = tokio::time::timeout(TIMEOUT, client.io.read_line(&mut line)).await;
    // End of input or a reset: either way closed, and without a reply.
    assert!(
        matches!(read.expect("connection still open"), Ok(0) | Err(_)),
        "{line:?}"
    );
}

#[tokio::test]
async fn refused_ehlo_makes_smtplib_fall_back_to_helo() {
    let sink = SmtpSink::start().await.unwrap();
    // Stage::Ehlo covers HELO too: once refuses just the EHLO.
    let refuse = Action::reply(502, "5.5.1 no ESMTP here");
    sink.on_times(Match::Any, Stage::Ehlo, refuse, 1);
    let script = r#"
s = connect()
print("refused", s.sendmail("s@example.test", ["r@example.test"], "Subject: helo\r\n\r\nbody\r\n"))
print("esmtp", s.does_esmtp)
s.quit()
"#;
    let out = python(script, &sink, None).await;
    assert!(
        out.contains("refused {}") && out.contains("esmtp False"),
        "{out}"
    );
    let txns = sink.wait_for_transactions(1, TIMEOUT).await.unwrap();
    assert!(txns[0].accepted());
    assert_eq!(txns[0].ehlo, "client.example.test");
}

#[tokio::test]
async fn banner_421_closes_and_delay_slows_the_final_reply() {
    let sink = SmtpSink::start().await.unwrap();
    sink.on(
        Match::NthConnection(1),
        Stage::Banner,
        Action::reply(421, "4.3.2 busy"),
    );
    let latency = Duration::from_millis(200);
    sink.on(Match::Any, Stage::DataEnd, Action::Delay(latency));
    let mut refused = connect(&sink).await;
    refused.expect("421 4.3.2 busy").await;
    assert_eq!(refused.reply().await, "", "closed after 421");

    let mut client = connect(&sink).await;
    client.expect("220").await;
    client
        .send(b"HELO raw.example.test\r\nMAIL FROM:<>\r\nRCPT TO:<r@example.test>\r\n")
        .await;
    for _ in 0..3 {
        client.expect("250").await;
    }
    client.send(b"DATA\r\n").await;
    client.expect("354").await;
    let started = std::time::Instant::now();
    client.send(b"x\r\n.\r\n").await;
    client.expect("250").await;
    assert!(
        started.elapsed() >= latency,
        "replied after {:?}",
        started.elapsed()
    );
    let txns = sink.wait_for_transactions(1, TIMEOUT).await.unwrap();
    assert_eq!((txns[0].connection, txns[0].mail_from.as_str()), (2, ""));
}
