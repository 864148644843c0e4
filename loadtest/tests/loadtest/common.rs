//! Shared by the modules: a sink on a free port, SMTP loads, running a send.

use std::time::Duration;

use indicatif::ProgressBar;
use kurir_loadtest::message::{RecipientPlan, SizeMix, new_run_id};
use kurir_loadtest::send::{self, SendConfig, SendReport, SmtpTarget, Transport};
use kurir_loadtest::sink::{Faults, Sink, SinkConfig};

/// A sink on 127.0.0.1 with a free port and `faults`.
pub(crate) async fn sink(faults: Faults) -> Sink {
    Sink::start(SinkConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        faults,
        ..SinkConfig::default()
    })
    .await
    .unwrap()
}

/// `messages` of 2 KiB over SMTP to `sink`, 4 connections, as fast as possible.
pub(crate) fn smtp_load(sink: &Sink, messages: u64) -> SendConfig {
    SendConfig {
        transport: Transport::Smtp(SmtpTarget {
            addr: sink.addr(),
            helo: "loadtest.test".into(),
            starttls: false,
            auth: None,
            timeout: Duration::from_secs(10),
        }),
        connections: 4,
        rate: None,
        messages: Some(messages),
        duration: None,
        sizes: SizeMix::fixed(2048),
        recipients: RecipientPlan::default(),
        from: "loadtest@sender.load.test".into(),
        run_id: new_run_id(),
        messages_per_connection: 100,
    }
}

/// Runs `config` without a progress bar.
pub(crate) async fn send(config: &SendConfig) -> SendReport {
    send::run(config, ProgressBar::hidden()).await.unwrap()
}
