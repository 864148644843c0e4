//! `kurir demo` runs to completion (the real binary, a small count) and its summary adds
//! up: every recipient accepted over SMTP and gRPC ends delivered, bounced or suppressed,
//! and the sink saw exactly the deliveries.

mod common;

use std::io::Read;
use std::process::{ExitStatus, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::{POLL, Running, kurir};
use serde_json::Value;

/// Far more than the demo needs (a few seconds); a hung demo fails here, not in CI's limit.
const DEMO_TIMEOUT: Duration = Duration::from_secs(120);

fn count(summary: &Value, pointer: &str) -> u64 {
    summary
        .pointer(pointer)
        .and_then(Value::as_u64)
        .unwrap_or_else(|| panic!("no {pointer} in {summary:#}"))
}

/// Reads a child's pipe to its end on a thread of its own.
fn drain(mut pipe: impl Read + Send + 'static) -> JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut out = Vec::new();
        let _ = pipe.read_to_end(&mut out);
        out
    })
}

/// Runs `kurir demo ARGS` to its end (at most [`DEMO_TIMEOUT`]): status, stdout, stderr.
fn demo(args: &[&str]) -> (ExitStatus, Vec<u8>, String) {
    let mut child = Running(
        kurir()
            .arg("demo")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start kurir demo"),
    );
    let stdout = drain(child.0.stdout.take().expect("piped stdout"));
    let stderr = drain(child.0.stderr.take().expect("piped stderr"));
    let deadline = Instant::now() + DEMO_TIMEOUT;
    let status = loop {
        if let Some(status) = child.0.try_wait().expect("try_wait") {
            break status;
        }
        assert!(Instant::now() < deadline, "kurir demo did not finish");
        std::thread::sleep(POLL);
    };
    let stdout = stdout.join().expect("stdout reader");
    let stderr = String::from_utf8_lossy(&stderr.join().expect("stderr reader")).into_owned();
    (status, stdout, stderr)
}

#[test]
fn the_demo_runs_and_its_numbers_add_up() {
    let started = Instant::now();
    let (status, stdout, stderr) = demo(&["--messages", "300", "--json"]);
    assert!(status.success(), "{status:?}\n{stderr}");
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "{:?}",
        started.elapsed()
    );
    let summary: Value = serde_json::from_slice(&stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&stdout)));

    assert_eq!(summary["adds_up"], Value::Bool(true), "{summary:#}");
    let smtp = count(&summary, "/smtp/accepted");
    let grpc = count(&summary, "/grpc/accepted");
    assert_eq!((smtp, grpc), (200, 100), "every message is accepted");
    let sent = count(&summary, "/smtp/recipients_accepted")
        + count(&summary, "/grpc/recipients_accepted")
        + count(&summary, "/grpc/recipients_suppressed");
    assert_eq!(sent, 200 + 2 * 100);
    assert_eq!(count(&summary, "/recipients_accepted"), sent);

    let delivered = count(&summary, "/delivered");
    let bounced = count(&summary, "/bounced");
    let suppressed = count(&summary, "/suppressed");
    assert_eq!(delivered + bounced + suppressed, sent, "{summary:#}");
    assert_eq!(
        count(&summary, "/expired") + count(&summary, "/unfinished"),
        0
    );
    // Each kind of outcome happened (5 % bounce, 5 % greylisted, 2 % suppressed).
    assert!(bounced > 0 && suppressed > 0, "{summary:#}");
    assert!(
        count(&summary, "/deferred_then_delivered") > 0,
        "{summary:#}"
    );
    // One DSN per bounced message and domain, each delivered to the sender.
    assert_eq!(
        count(&summary, "/dsns_queued"),
        count(&summary, "/dsns_delivered")
    );
    assert_eq!(
        count(&summary, "/dsns_queued"),
        bounced,
        "one recipient per record"
    );

    // The sink saw each delivered recipient once, and refused each bounced one.
    assert_eq!(count(&summary, "/sink/distinct_deliveries"), delivered);
    assert_eq!(count(&summary, "/sink/duplicates"), 0);
    assert_eq!(count(&summary, "/sink/rejected_recipients"), bounced);
    assert_eq!(
        count(&summary, "/sink/unlabelled"),
        count(&summary, "/dsns_delivered")
    );
}
