//! SIGTERM reaches `OsSignals` once the handlers are installed. Its own test binary (own
//! process), so the signal cannot disturb other tests.

use std::process::Command;
use std::time::Duration;

use kurir_lifecycle::{OsSignal, OsSignals};

#[tokio::test]
async fn sigterm_is_received_once_installed() {
    let mut signals = OsSignals::install().expect("install handlers");
    let status = Command::new("kill")
        .args(["-TERM", &std::process::id().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success());
    let received = tokio::time::timeout(Duration::from_secs(10), signals.recv())
        .await
        .expect("signal within 10s");
    assert_eq!(received, OsSignal::Terminate);
    assert_eq!(received.to_string(), "SIGTERM");
}
