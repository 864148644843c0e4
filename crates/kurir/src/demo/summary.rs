//! The demo's summary: what was sent, what became of every recipient, latencies.

use std::fmt;

use kurir_loadtest::latency::{Percentiles, fmt_ms};
use kurir_loadtest::send::SendReport;
use kurir_loadtest::sink::SinkReport;
use serde::Serialize;

use super::outcomes::Counts;

/// What the demo did; `adds_up` is its verdict.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// Where the node listened.
    pub node: NodeAddrs,
    pub smtp: SendReport,
    pub grpc: SendReport,
    /// Recipients the node accepted over both (queued or suppressed at submission).
    pub recipients_accepted: u64,
    pub delivered: u64,
    /// Of `delivered`: deferred (451) first, delivered on a retry.
    pub deferred_then_delivered: u64,
    pub bounced: u64,
    pub suppressed: u64,
    pub expired: u64,
    /// Accepted recipients without a final outcome when the demo ended.
    pub unfinished: u64,
    /// DSNs queued for bounced recipients (one per message and domain).
    pub dsns_queued: u64,
    /// DSNs delivered to the sender.
    pub dsns_delivered: u64,
    /// From acceptance to delivery (the events' time in queue).
    pub queued_to_delivered: Percentiles,
    pub sink: SinkReport,
    /// From the first message sent to the last outcome.
    pub elapsed_s: f64,
    /// Recipients finished per second over `elapsed_s`.
    pub throughput_per_s: f64,
    /// delivered + bounced + suppressed + expired = recipients accepted, and every DSN was
    /// delivered.
    pub adds_up: bool,
}

/// The node's addresses.
#[derive(Debug, Clone, Serialize)]
pub struct NodeAddrs {
    pub smtp: String,
    pub grpc: String,
    pub http: String,
    pub sink: String,
}

impl Summary {
    pub(super) fn new(
        node: NodeAddrs,
        (smtp, grpc): (SendReport, SendReport),
        counts: &Counts,
        sink: SinkReport,
        elapsed_s: f64,
    ) -> Self {
        let recipients_accepted =
            smtp.recipients_accepted + grpc.recipients_accepted + grpc.recipients_suppressed;
        let finished = counts.finished();
        Self {
            node,
            smtp,
            grpc,
            recipients_accepted,
            delivered: counts.delivered,
            deferred_then_delivered: counts.deferred_then_delivered,
            bounced: counts.bounced,
            suppressed: counts.suppressed,
            expired: counts.expired,
            unfinished: recipients_accepted.saturating_sub(finished),
            dsns_queued: counts.dsns_queued,
            dsns_delivered: counts.dsns_delivered,
            queued_to_delivered: counts.queued_to_delivered,
            sink,
            elapsed_s,
            throughput_per_s: finished as f64 / elapsed_s.max(1e-9),
            adds_up: finished == recipients_accepted && counts.dsns_delivered >= counts.dsns_queued,
        }
    }
}

fn send_line(f: &mut fmt::Formatter<'_>, name: &str, r: &SendReport) -> fmt::Result {
    writeln!(
        f,
        "  {name:<5} {:>6} messages accepted of {} ({} recipients) in {:.2} s, {:.0} msg/s",
        r.accepted,
        r.messages,
        r.recipients_accepted + r.recipients_suppressed,
        r.elapsed_s,
        r.throughput_per_s
    )
}

fn latency_line(f: &mut fmt::Formatter<'_>, name: &str, p: &Percentiles) -> fmt::Result {
    writeln!(f, "  {name:<25} {p}")
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f)?;
        writeln!(
            f,
            "node: SMTP {} · gRPC {} · metrics http://{}/metrics · sink {}",
            self.node.smtp, self.node.grpc, self.node.http, self.node.sink
        )?;
        writeln!(f, "submitted")?;
        send_line(f, "SMTP", &self.smtp)?;
        send_line(f, "gRPC", &self.grpc)?;
        writeln!(
            f,
            "outcomes ({} recipients accepted)",
            self.recipients_accepted
        )?;
        writeln!(
            f,
            "  delivered  {:>6}  ({} deferred with 451 first, delivered on retry)",
            self.delivered, self.deferred_then_delivered
        )?;
        writeln!(
            f,
            "  bounced    {:>6}  (550 5.1.1; {} DSNs queued, {} delivered to the sender)",
            self.bounced, self.dsns_queued, self.dsns_delivered
        )?;
        writeln!(
            f,
            "  suppressed {:>6}  (on the suppression list before sending)",
            self.suppressed
        )?;
        if self.expired > 0 || self.unfinished > 0 {
            writeln!(f, "  expired    {:>6}", self.expired)?;
            writeln!(f, "  unfinished {:>6}", self.unfinished)?;
        }
        let total = self.delivered + self.bounced + self.suppressed + self.expired;
        let verdict = if self.adds_up {
            "adds up"
        } else {
            "DOES NOT ADD UP"
        };
        writeln!(
            f,
            "  total      {total:>6}  = {} accepted: {verdict}",
            self.recipients_accepted
        )?;
        writeln!(
            f,
            "sink: {} messages ({} distinct ids, {} duplicates, {} DSNs), refused {} and deferred {} recipients",
            self.sink.messages,
            self.sink.distinct_ids,
            self.sink.duplicates,
            self.sink.unlabelled,
            self.sink.rejected.values().sum::<u64>(),
            self.sink.deferred.values().sum::<u64>(),
        )?;
        writeln!(f, "latency")?;
        latency_line(f, "accept (SMTP)", &self.smtp.accept_latency)?;
        latency_line(f, "accept (gRPC)", &self.grpc.accept_latency)?;
        latency_line(f, "queued → delivered", &self.queued_to_delivered)?;
        latency_line(f, "sent → sink (end to end)", &self.sink.delivery_latency)?;
        writeln!(
            f,
            "done in {:.1} s: {:.0} recipients/s from first message to last outcome (end-to-end p99 {})",
            self.elapsed_s,
            self.throughput_per_s,
            fmt_ms(self.sink.delivery_latency.p99_ms)
        )
    }
}
