//! SMTP server metrics. Labels are low-cardinality: an outcome or a reply code, never a
//! peer address or a sender.
//!
//! The definitions follow `kurir_telemetry::metrics`' convention ([`MetricDef`]); the
//! binary registers them with [`SmtpMetrics::register`].

use kurir_telemetry::metrics::{MetricDef, MetricKind, Metrics};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;

/// `kurir_smtp_connections_total{outcome}`: `accepted`, `refused_limit`, `refused_shutdown`.
pub const CONNECTIONS: MetricDef = MetricDef {
    name: "kurir_smtp_connections",
    help: "SMTP connections by what happened to them at accept",
    kind: MetricKind::Counter,
};

/// `kurir_smtp_sessions`: sessions open now.
pub const SESSIONS: MetricDef = MetricDef {
    name: "kurir_smtp_sessions",
    help: "SMTP sessions open now",
    kind: MetricKind::Gauge,
};

/// `kurir_smtp_messages_total{code}`: end-of-data outcomes by reply code (250 = queued).
pub const MESSAGES: MetricDef = MetricDef {
    name: "kurir_smtp_messages",
    help: "Messages at the end of DATA/BDAT by SMTP reply code",
    kind: MetricKind::Counter,
};

/// `kurir_smtp_recipients_suppressed_total{action}`: `rejected` or `dropped` at RCPT.
pub const SUPPRESSED: MetricDef = MetricDef {
    name: "kurir_smtp_recipients_suppressed",
    help: "Recipients refused or dropped at RCPT because they are suppressed",
    kind: MetricKind::Counter,
};

/// `kurir_smtp_suppressed_events_total{outcome}`: `SUPPRESSED` events of recipients dropped
/// at RCPT, `published` or `failed` (the message was accepted all the same).
pub const SUPPRESSED_EVENTS: MetricDef = MetricDef {
    name: "kurir_smtp_suppressed_events",
    help: "Events for suppressed recipients dropped at RCPT, by whether they were published",
    kind: MetricKind::Counter,
};

/// Every SMTP metric family.
pub const ALL: &[MetricDef] = &[
    CONNECTIONS,
    SESSIONS,
    MESSAGES,
    SUPPRESSED,
    SUPPRESSED_EVENTS,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CodeLabels {
    code: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ActionLabels {
    action: &'static str,
}

/// The SMTP server's metric families. Cheap to clone; clones share their values.
#[derive(Clone, Debug, Default)]
pub struct SmtpMetrics {
    connections: Family<OutcomeLabels, Counter>,
    sessions: Gauge,
    messages: Family<CodeLabels, Counter>,
    suppressed: Family<ActionLabels, Counter>,
    suppressed_events: Family<OutcomeLabels, Counter>,
}

impl SmtpMetrics {
    /// Registers every family in the process registry.
    pub fn register(&self, metrics: &Metrics) {
        metrics.register(&CONNECTIONS, self.connections.clone());
        metrics.register(&SESSIONS, self.sessions.clone());
        metrics.register(&MESSAGES, self.messages.clone());
        metrics.register(&SUPPRESSED, self.suppressed.clone());
        metrics.register(&SUPPRESSED_EVENTS, self.suppressed_events.clone());
    }

    pub(crate) fn connection(&self, outcome: &'static str) {
        self.connections
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
    }

    pub(crate) fn session_opened(&self) {
        self.sessions.inc();
    }

    pub(crate) fn session_closed(&self) {
        self.sessions.dec();
    }

    pub(crate) fn message(&self, code: u16) {
        self.messages.get_or_create(&CodeLabels { code }).inc();
    }

    pub(crate) fn suppressed(&self, action: &'static str) {
        self.suppressed
            .get_or_create(&ActionLabels { action })
            .inc();
    }

    /// Counts `n` events of dropped suppressed recipients: `published` or `failed`.
    pub(crate) fn suppressed_events(&self, outcome: &'static str, n: usize) {
        if n > 0 {
            self.suppressed_events
                .get_or_create(&OutcomeLabels { outcome })
                .inc_by(n as u64);
        }
    }

    /// Suppressed-recipient events counted with `outcome` so far (`published`, `failed`).
    pub fn suppressed_events_with_outcome(&self, outcome: &'static str) -> u64 {
        self.suppressed_events
            .get_or_create(&OutcomeLabels { outcome })
            .get()
    }

    /// Messages counted with reply `code` so far (for tests and the load generator).
    pub fn messages_with_code(&self, code: u16) -> u64 {
        self.messages.get_or_create(&CodeLabels { code }).get()
    }
}
