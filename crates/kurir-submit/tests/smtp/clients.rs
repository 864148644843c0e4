//! Real clients over real TCP: Python's smtplib (STARTTLS, AUTH PLAIN and LOGIN, 8BITMIME,
//! SMTPUTF8), swaks (pipelining, implicit TLS) and a raw client for BDAT. Each checks what
//! arrived in the queue.

use std::net::SocketAddr;
use std::time::Duration;

use kurir_core::BodyType;
use kurir_submit::smtp::{ListenerConfig, ListenerMode, SmtpConfig};
use tokio::net::TcpStream;

use crate::harness::*;

/// Binds port 0 twice (STARTTLS, implicit TLS) from config and serves in the background.
async fn listen(h: &Harness) -> (SocketAddr, SocketAddr) {
    let listener = |mode| ListenerConfig {
        address: LOOPBACK_0.parse().unwrap(),
        mode,
    };
    let config = SmtpConfig {
        listeners: vec![
            listener(ListenerMode::Starttls),
            listener(ListenerMode::ImplicitTls),
        ],
        ..SmtpConfig::default()
    };
    let listeners = kurir_submit::smtp::bind(&config).unwrap();
    let addr = |i: usize| listeners[i].0.local_addr().unwrap();
    let addrs = (addr(0), addr(1));
    let server = h.server.clone();
    tokio::spawn(async move { server.serve(listeners).await });
    addrs
}

async fn run(program: &str, args: &[&str]) -> String {
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new(program).args(args).output(),
    )
    .await
    .expect("client finished in time")
    .expect("client runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{program} failed:\n{stdout}\n{stderr}"
    );
    stdout
}

const SMTPLIB: &str = r#"
import smtplib, ssl, sys
port, cafile, user, password, mech = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5]
ctx = ssl.create_default_context(cafile=cafile)
s = smtplib.SMTP("127.0.0.1", port, timeout=20)
s.ehlo("python.test")
assert not s.has_extn("auth"), "AUTH offered in clear text"
s.starttls(context=ctx)
s.ehlo("python.test")
for ext in ("pipelining", "8bitmime", "smtputf8", "chunking", "dsn", "enhancedstatuscodes"):
    assert s.has_extn(ext), ext
s.user, s.password = user, password
if mech == "PLAIN":
    print(s.auth("PLAIN", s.auth_plain))
else:
    print(s.auth("LOGIN", s.auth_login, initial_response_ok=False))
msg = "From: andré@example.test\r\nTo: jürgen@bücher.example\r\nSubject: Grüße\r\n\r\nSchöne Grüße.\r\n".encode()
print(s.mail("andré@example.test", ["SMTPUTF8", "BODY=8BITMIME"]))
print(s.rcpt("jürgen@bücher.example"))
print(s.data(msg))
s.quit()
"#;

#[tokio::test]
async fn python_smtplib_starttls_auth_plain_and_login_with_smtputf8() {
    let h = Harness::start(|_| {}).await;
    let (starttls, _) = listen(&h).await;
    let ca = h.ca.write_ca_pem(h.dir.path()).unwrap();
    let port = starttls.port().to_string();
    for mech in ["PLAIN", "LOGIN"] {
        let args = [
            "-c",
            SMTPLIB,
            &port,
            ca.to_str().unwrap(),
            USER,
            PASSWORD,
            mech,
        ];
        let out = run("python3", &args).await;
        assert!(out.contains("(235,"), "{out}");
        assert!(out.contains("queued as"), "{out}");
    }
    let q = h.queued(2).await;
    assert_eq!(q.len(), 2);
    for m in &q {
        assert_eq!(m.tenant, USER_TENANT);
        assert!(m.envelope.smtputf8);
        assert_eq!(m.envelope.body, BodyType::EightBitMime);
        let body = String::from_utf8_lossy(&m.body);
        assert!(
            body.contains("Schöne Grüße.") && body.contains("ESMTPSA"),
            "{body}"
        );
    }
}

#[tokio::test]
async fn swaks_pipelining_with_starttls_and_auth() {
    let h = Harness::start(|_| {}).await;
    let (starttls, _) = listen(&h).await;
    let ca = h.ca.write_ca_pem(h.dir.path()).unwrap();
    let server = starttls.to_string();
    let args = [
        "--server",
        &server,
        "--from",
        "a@example.test",
        "--to",
        "r@dest.test,s@elsewhere.test",
        "--pipeline",
        "--tls",
        "--tls-verify",
        "--tls-ca-path",
        ca.to_str().unwrap(),
        "--tls-sni",
        HOSTNAME,
        "--auth",
        "PLAIN",
        "--auth-user",
        USER,
        "--auth-password",
        PASSWORD,
        "--helo",
        "swaks.test",
    ];
    let out = run("swaks", &args).await;
    assert!(out.contains("queued as"), "{out}");
    // Two recipient domains: one record per routing key.
    let q = h.queued(2).await;
    assert_eq!(q.len(), 2, "{out}");
    assert!(q.iter().all(|m| m.tenant == USER_TENANT));
}

#[tokio::test]
async fn swaks_implicit_tls() {
    let h = Harness::start(|_| {}).await;
    let (_, implicit) = listen(&h).await;
    let ca = h.ca.write_ca_pem(h.dir.path()).unwrap();
    let server = implicit.to_string();
    let args = [
        "--server",
        &server,
        "--from",
        "a@example.test",
        "--to",
        "r@dest.test",
        "--tlsc",
        "--tls-verify",
        "--tls-ca-path",
        ca.to_str().unwrap(),
        "--tls-sni",
        HOSTNAME,
        "--auth",
        "LOGIN",
        "--auth-user",
        USER,
        "--auth-password",
        PASSWORD,
    ];
    let out = run("swaks", &args).await;
    assert!(out.contains("queued as"), "{out}");
    let q = h.queued(1).await;
    assert_eq!(q.len(), 1);
    assert!(String::from_utf8_lossy(&q[0].body).contains("ESMTPSA"));
}

#[tokio::test]
async fn raw_tcp_client_sends_bdat() {
    let h = Harness::start(|_| {}).await;
    let (starttls, _) = listen(&h).await;
    let stream = TcpStream::connect(starttls).await.unwrap();
    let mut c = Client::new(Box::new(stream));
    c.expect_reply(220).await;
    c.expect("EHLO raw.test", 250).await;
    c.send("MAIL FROM:<a@example.test>\r\nRCPT TO:<r@dest.test>\r\n")
        .await;
    c.expect_reply(250).await;
    c.expect_reply(250).await;
    let body = message("raw bdat");
    c.send(format!("BDAT {} LAST\r\n{body}", body.len())).await;
    let text = c.expect_reply(250).await;
    c.expect("QUIT", 221).await;
    let q = h.queued(1).await;
    assert_eq!(q[0].id.to_string(), queued_id(&text));
    let received = String::from_utf8_lossy(&q[0].body);
    assert!(received.contains("Subject: raw bdat"), "{received}");
}
