//! The certificate is read from files and reloaded when they change, without a restart.

use std::time::Duration;

use kurir_testkit::TestCa;

use crate::harness::*;

/// Banner, EHLO, STARTTLS, then a handshake trusting only `ca`.
async fn handshake_trusting(h: &Harness, ca: &TestCa) -> bool {
    let mut c = h.connect();
    c.expect_reply(220).await;
    c.expect("EHLO client.test", 250).await;
    c.expect("STARTTLS", 220).await;
    c.try_tls(ca).await
}

#[tokio::test]
async fn certificate_files_are_reloaded_without_restart() {
    let h = Harness::start(|c| {
        c.tls.as_mut().unwrap().reload_interval = Duration::from_millis(100);
    })
    .await;
    let renewed = TestCa::new();
    assert!(handshake_trusting(&h, &h.ca).await);
    assert!(!handshake_trusting(&h, &renewed).await);

    renewed
        .write_cert_and_key(h.dir.path(), &[HOSTNAME])
        .unwrap();
    kurir_testkit::wait_for(
        "the renewed certificate",
        Duration::from_secs(10),
        || async { handshake_trusting(&h, &renewed).await.then_some(()) },
    )
    .await
    .unwrap();
    assert!(!handshake_trusting(&h, &h.ca).await);

    // A broken pair (half-written renewal) keeps the last good one. Nothing to wait for:
    // sleep past the reload interval so the broken files are looked at.
    std::fs::write(h.dir.path().join("key.pem"), "not a key").unwrap();
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert!(handshake_trusting(&h, &renewed).await);
}
