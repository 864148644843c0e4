//! A stuck drain says what it waits for: periodically, and when the grace period ends.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kurir_lifecycle::Lifecycle;

/// A log sink the test can read back.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn lines(&self) -> Vec<String> {
        let bytes = self.0.lock().unwrap().clone();
        String::from_utf8(bytes)
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

#[tokio::test(start_paused = true)]
async fn stuck_drain_logs_what_it_waits_for() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    // The test runtime is single-threaded, so a thread-local default sees every event.
    let _guard = tracing::subscriber::set_default(subscriber);

    let lifecycle = Lifecycle::new();
    let _stuck = lifecycle.activity("data_transfer");
    let _session = lifecycle.activity("smtp_session");
    let report = lifecycle.drain(Duration::from_secs(12)).await;
    assert_eq!(report.remaining.len(), 2);

    let lines = captured.lines();
    let waiting: Vec<_> = lines
        .iter()
        .filter(|l| l.contains("drain waiting for activities"))
        .collect();
    assert_eq!(waiting.len(), 2, "at 5s and 10s:\n{lines:#?}");
    let expired = lines
        .iter()
        .find(|l| l.contains("grace period expired"))
        .expect("a warning at the timeout");
    for line in waiting.iter().copied().chain([expired]) {
        assert!(
            line.contains("waiting_for=data_transfer=1, smtp_session=1"),
            "{line}"
        );
    }
    assert!(expired.contains("WARN"), "{expired}");
}
