//! The gRPC API of the real `kurir serve`: a message submitted over gRPC is delivered
//! through the test DNS server to a sink and its history is shown by `kurir admin message`;
//! `kurir admin` errors are one line with the documented exit status; `[grpc] enabled =
//! false` opens no port; a taken port fails the start.

mod common;

use std::net::TcpStream;
use std::process::Stdio;
use std::time::Duration;

use common::*;
use kurir_proto::v1;
use kurir_proto::v1::submission_service_client::SubmissionServiceClient;

/// Submits one raw message over gRPC with `key`; returns the response.
fn submit(peers: &Peers, url: String, key: &str, to: &[&str]) -> v1::SubmitResponse {
    let raw = v1::RawMessage {
        envelope_from: "sender@sender.test".into(),
        envelope_to: to.iter().map(|s| (*s).to_owned()).collect(),
        data: b"From: sender@sender.test\r\nSubject: over grpc\r\n\r\nhello through the API\r\n"
            .to_vec(),
    };
    let request = v1::SubmitRequest {
        message: Some(v1::submit_request::Message::Raw(raw)),
        ..Default::default()
    };
    let mut request = tonic::Request::new(request);
    let bearer = format!("Bearer {key}").parse().expect("metadata value");
    request.metadata_mut().insert("authorization", bearer);
    peers.runtime.block_on(async {
        let mut client = SubmissionServiceClient::connect(url)
            .await
            .expect("connect");
        client.submit(request).await.expect("submit").into_inner()
    })
}

#[test]
fn grpc_submission_is_delivered_and_shown_by_the_admin_commands() {
    let peers = Peers::start(&["one.test"], Duration::ZERO);
    let dir = tempfile::tempdir().expect("temp dir");
    let config = serve_config_with_grpc(dir.path(), &grpc_with_keys(), &peers.deliver_config());
    // `Node::start` with grpc waits for the `grpc listening on ADDR` line.
    let node = Node::start(&config, "all", true);

    let response = submit(&peers, node.grpc_url(), SUBMIT_KEY, &["a@one.test"]);
    let id = response.message_id.clone();
    assert!(!id.is_empty(), "{response:?}");
    assert_eq!(response.recipients.len(), 1);
    assert_eq!(
        response.recipients[0].status,
        v1::RecipientStatus::Queued as i32
    );
    wait_until("the recipient delivered", || {
        peers.received().get("a@one.test") == Some(&1)
    });
    let body = {
        let _guard = peers.runtime.enter();
        peers.sink.transactions()[0].body_text()
    };
    assert!(body.contains("Subject: over grpc"), "{body}");
    assert!(body.contains("hello through the API"), "{body}");

    // The delivery role records the outcome just after the sink's 250.
    let mut history = String::new();
    wait_until("the delivered entry in the history", || {
        history = node.admin_ok(&["message", &id]);
        history.contains("delivered")
    });
    assert!(history.starts_with("TIME "), "{history}");
    let delivered = history
        .lines()
        .find(|l| l.contains("delivered"))
        .expect("a delivered line");
    assert!(delivered.contains("a@one.test"), "{history}");
    let as_json: serde_json::Value =
        serde_json::from_str(&node.admin_ok(&["message", &id, "--json"])).expect("json");
    assert!(
        as_json
            .as_array()
            .expect("an array")
            .iter()
            .any(|e| e["kind"] == "delivered" && e["recipient"] == "a@one.test"),
        "{as_json}"
    );

    let stats = node.admin_ok(&["queue", "stats"]);
    assert!(stats.contains("Partitions (total lag "), "{stats}");
    assert!(
        stats.contains("TOPIC") && stats.contains("LAG") && stats.contains("kurir.mail "),
        "{stats}"
    );
    assert!(stats.contains("kurir.retry.1m "), "{stats}");
    assert!(stats.contains("Sites:"), "{stats}");
    let site = stats
        .lines()
        .find(|l| l.starts_with("mx.sink.test"))
        .unwrap_or_else(|| panic!("a line for the sink's site: {stats}"));
    assert!(site.contains("/4"), "the configured limit: {site}");
    let stats: serde_json::Value =
        serde_json::from_str(&node.admin_ok(&["queue", "stats", "--json"])).expect("json");
    let queue = kurir_queue::QueueConfig::default();
    let partitions = queue.partitions + queue.retry_partitions * queue.retry_tiers.len() as u32;
    assert_eq!(
        stats["partitions"].as_array().map(Vec::len),
        Some(partitions as usize),
        "every partition of the mail topic and the retry tiers: {stats}"
    );
    assert_eq!(stats["sites"][0]["site"], "mx.sink.test", "{stats}");

    let topics = node.admin_ok(&["topics", "init"]);
    let mail = format!("kurir.mail ({} partitions)", queue.partitions);
    assert!(topics.contains(&mail), "{topics}");
    assert!(topics.contains("kurir.events (8 partitions)"), "{topics}");

    let (status, _) = node.stop();
    assert!(status.success(), "{status:?}");
}

#[test]
fn admin_errors_are_one_line_with_exit_status_1_or_2() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = serve_config_with_grpc(dir.path(), &grpc_with_keys(), "");
    let node = Node::start(&config, "submit", true);

    let wrong = node.admin("not-the-key", &["queue", "stats"]);
    assert_eq!(wrong.status.code(), Some(1));
    let line = one_error_line(&wrong);
    assert!(line.starts_with("error: UNAUTHENTICATED: "), "{line}");
    assert!(
        !line.contains("not-the-key"),
        "the key is never printed: {line}"
    );
    assert!(wrong.stdout.is_empty());

    let denied = node.admin(SUBMIT_KEY, &["suppression", "list"]);
    assert_eq!(denied.status.code(), Some(1));
    assert!(
        one_error_line(&denied).starts_with("error: PERMISSION_DENIED: "),
        "{denied:?}"
    );

    let invalid = node.admin(ADMIN_KEY, &["domain", "pause", "not a domain"]);
    assert_eq!(invalid.status.code(), Some(1));
    assert!(
        one_error_line(&invalid).starts_with("error: INVALID_ARGUMENT: domain"),
        "{invalid:?}"
    );

    let no_key = kurir()
        .args(["admin", "--server", &node.grpc_url(), "queue", "stats"])
        .output()
        .expect("run kurir");
    assert_eq!(no_key.status.code(), Some(2));
    assert!(
        one_error_line(&no_key).starts_with("error: no API key"),
        "{no_key:?}"
    );

    let bad_url = node.admin(ADMIN_KEY, &["--server", "localhost:1", "queue", "stats"]);
    assert_eq!(bad_url.status.code(), Some(2));
    assert!(one_error_line(&bad_url).contains("--server"), "{bad_url:?}");

    let (status, _) = node.stop();
    assert!(status.success());
}

#[test]
fn admin_against_a_node_that_is_down_fails_with_one_line() {
    let url = format!("http://127.0.0.1:{}", kurir_testkit::free_port());
    let output = kurir()
        .args(["admin", "--server", &url, "--api-key", ADMIN_KEY])
        .args(["domain", "list"])
        .output()
        .expect("run kurir");
    assert_eq!(output.status.code(), Some(1));
    let line = one_error_line(&output);
    assert!(
        line.starts_with(&format!("error: cannot connect to {url}: ")),
        "{line}"
    );
    assert!(!line.contains(ADMIN_KEY), "{line}");
}

#[test]
fn grpc_disabled_starts_no_listener() {
    let dir = tempfile::tempdir().expect("temp dir");
    let port = kurir_testkit::free_port();
    let grpc = format!("enabled = false\nlisten = \"127.0.0.1:{port}\"\n");
    let config = serve_config_with_grpc(dir.path(), &grpc, "");
    let node = Node::start(&config, "submit", false);
    assert!(
        TcpStream::connect(("127.0.0.1", port)).is_err(),
        "nothing listens on grpc.listen"
    );
    let (status, rest) = node.stop();
    assert!(status.success());
    assert!(
        !rest
            .iter()
            .any(|l| l.starts_with(kurir::roles::GRPC_LISTENING)),
        "{rest:?}"
    );
}

#[test]
fn a_taken_grpc_port_fails_the_start() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("address");
    let dir = tempfile::tempdir().expect("temp dir");
    let config = serve_config_with_grpc(dir.path(), &format!("listen = \"{addr}\"\n"), "");
    let child = kurir()
        .args(["serve", "--role", "submit", "--config"])
        .arg(&config)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn kurir");
    let mut running = Running(child);
    let status = wait_for_exit(&mut running.0);
    assert_eq!(status.code(), Some(1));
    let mut stderr = String::new();
    if let Some(mut pipe) = running.0.stderr.take() {
        std::io::Read::read_to_string(&mut pipe, &mut stderr).expect("read stderr");
    }
    assert!(
        stderr.contains(&format!("cannot listen on grpc.listen = {addr}")),
        "{stderr}"
    );
}

#[test]
fn admin_over_https_checks_the_server_certificate_against_ca_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ca = kurir_testkit::TestCa::new();
    let (cert, key) = ca
        .write_cert_and_key(dir.path(), &["localhost", "127.0.0.1"])
        .expect("certificate");
    let ca_file = ca.write_ca_pem(dir.path()).expect("CA file");
    let grpc = format!(
        "{}[grpc.tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
        grpc_with_keys(),
        cert.display(),
        key.display()
    );
    let config = serve_config_with_grpc(dir.path(), &grpc, "");
    let node = Node::start(&config, "submit", true);
    let url = format!("https://{}", node.grpc.expect("grpc address"));
    let admin = |ca_file: &std::path::Path| {
        kurir()
            .args(["admin", "--server", &url, "--ca-file"])
            .arg(ca_file)
            .args(["domain", "list"])
            .env("KURIR_API_KEY", ADMIN_KEY)
            .output()
            .expect("run kurir")
    };

    let output = admin(&ca_file);
    assert!(output.status.success(), "{output:?}");
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "no domain is paused\n"
    );

    let other = tempfile::tempdir().expect("temp dir");
    let other_ca = kurir_testkit::TestCa::new()
        .write_ca_pem(other.path())
        .expect("CA file");
    let output = admin(&other_ca);
    assert_eq!(output.status.code(), Some(1));
    let line = one_error_line(&output);
    assert!(
        line.starts_with(&format!("error: cannot connect to {url}: ")),
        "{line}"
    );
    assert!(line.contains("certificate"), "{line}");

    let (status, _) = node.stop();
    assert!(status.success());
}
