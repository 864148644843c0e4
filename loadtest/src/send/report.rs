//! The report of a send run: counts, throughput, accept latency, errors by cause.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{SendConfig, Tally};
use crate::latency::{Percentiles, fmt_ms};

/// What a send run did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SendReport {
    pub run_id: String,
    /// `smtp`, `grpc` or `grpc-stream`.
    pub transport: String,
    /// The server address or URL.
    pub target: String,
    pub connections: usize,
    pub elapsed_s: f64,
    /// Messages tried.
    pub messages: u64,
    /// Messages the server accepted (250 after the data; a gRPC response without error).
    pub accepted: u64,
    /// Messages that failed (refused, or the connection or call failed).
    pub failed: u64,
    /// Recipients of accepted messages that the server took.
    pub recipients_accepted: u64,
    /// Recipients refused at RCPT.
    pub recipients_refused: u64,
    /// gRPC: recipients reported suppressed (not queued) in accepted messages.
    pub recipients_suppressed: u64,
    /// Octets of accepted messages.
    pub bytes: u64,
    /// Accepted messages per second.
    pub throughput_per_s: f64,
    /// Accepted mebibytes per second.
    pub mib_per_s: f64,
    /// From due time (fixed rate) or start (as fast as possible) to acceptance.
    pub accept_latency: Percentiles,
    /// Failed messages by cause (`smtp 451 4.3.0`, `grpc UNAVAILABLE`, `io connect: …`).
    pub errors: BTreeMap<String, u64>,
    /// Refused recipients by reply (`550 5.1.1`).
    pub refusals: BTreeMap<String, u64>,
}

impl SendReport {
    pub(super) fn new(config: &SendConfig, tally: &Tally, elapsed: Duration) -> Self {
        let secs = elapsed.as_secs_f64().max(1e-9);
        Self {
            run_id: config.run_id.clone(),
            transport: config.transport.name().to_owned(),
            target: config.transport.target(),
            connections: config.connections,
            elapsed_s: elapsed.as_secs_f64(),
            messages: tally.attempted,
            accepted: tally.accepted,
            failed: tally.failed,
            recipients_accepted: tally.rcpts_accepted,
            recipients_refused: tally.rcpts_refused,
            recipients_suppressed: tally.rcpts_suppressed,
            bytes: tally.bytes,
            throughput_per_s: tally.accepted as f64 / secs,
            mib_per_s: tally.bytes as f64 / secs / (1024.0 * 1024.0),
            accept_latency: tally.latency.percentiles(),
            errors: tally.errors.clone(),
            refusals: tally.refusals.clone(),
        }
    }

    /// Failed messages as a share of those tried (0 when none were).
    pub fn error_rate(&self) -> f64 {
        if self.messages == 0 {
            0.0
        } else {
            self.failed as f64 / self.messages as f64
        }
    }
}

impl fmt::Display for SendReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "send {} → {} ({} connections), run {}",
            self.transport, self.target, self.connections, self.run_id
        )?;
        writeln!(
            f,
            "  messages     {} tried, {} accepted, {} failed in {:.2} s",
            self.messages, self.accepted, self.failed, self.elapsed_s
        )?;
        writeln!(
            f,
            "  recipients   {} accepted, {} refused, {} suppressed",
            self.recipients_accepted, self.recipients_refused, self.recipients_suppressed
        )?;
        writeln!(
            f,
            "  throughput   {:.1} msg/s, {:.2} MiB/s",
            self.throughput_per_s, self.mib_per_s
        )?;
        writeln!(
            f,
            "  accept       {} (mean {})",
            self.accept_latency,
            fmt_ms(self.accept_latency.mean_ms)
        )?;
        write_counts(f, "errors", &self.errors)?;
        write_counts(f, "refusals", &self.refusals)
    }
}

/// `  errors       smtp 451 4.3.0 ×12, io connect ×1` (nothing when empty).
pub(crate) fn write_counts(
    f: &mut fmt::Formatter<'_>,
    name: &str,
    counts: &BTreeMap<String, u64>,
) -> fmt::Result {
    if counts.is_empty() {
        return Ok(());
    }
    let parts: Vec<String> = counts.iter().map(|(k, v)| format!("{k} ×{v}")).collect();
    writeln!(f, "  {name:<12} {}", parts.join(", "))
}
