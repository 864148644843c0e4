//! The delivery role's metrics (registered by the binary with [`DeliverMetrics::register`]).

use kurir_telemetry::metrics::{MetricDef, MetricKind, Metrics};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

pub const OUTCOMES: MetricDef = MetricDef {
    name: "kurir_deliver_recipients",
    help: "Recipient outcomes by outcome (delivered, deferred, bounced, expired, suppressed, replayed)",
    kind: MetricKind::Counter,
};

pub const CONNECTIONS: MetricDef = MetricDef {
    name: "kurir_deliver_connections",
    help: "Outbound SMTP connections by result (opened, reused, failed)",
    kind: MetricKind::Counter,
};

pub const SLOW_DOWNS: MetricDef = MetricDef {
    name: "kurir_deliver_site_slow_downs",
    help: "Times a site's connection limit and rate were lowered after a slow-down reply",
    kind: MetricKind::Counter,
};

pub const ALL: &[MetricDef] = &[OUTCOMES, CONNECTIONS, SLOW_DOWNS];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ConnectionLabels {
    result: &'static str,
}

/// Cheap to clone; every clone counts into the same metrics.
#[derive(Debug, Clone, Default)]
pub struct DeliverMetrics {
    outcomes: Family<OutcomeLabels, Counter>,
    connections: Family<ConnectionLabels, Counter>,
    slow_downs: Counter,
}

impl DeliverMetrics {
    pub fn register(&self, metrics: &Metrics) {
        metrics.register(&OUTCOMES, self.outcomes.clone());
        metrics.register(&CONNECTIONS, self.connections.clone());
        metrics.register(&SLOW_DOWNS, self.slow_downs.clone());
    }

    pub(crate) fn outcome(&self, outcome: &'static str, n: u64) {
        self.outcomes
            .get_or_create(&OutcomeLabels { outcome })
            .inc_by(n);
    }

    pub(crate) fn connection(&self, result: &'static str) {
        self.connections
            .get_or_create(&ConnectionLabels { result })
            .inc();
    }

    pub(crate) fn slow_down(&self) {
        self.slow_downs.inc();
    }

    /// The count of an outcome so far (tests, admin).
    pub fn outcome_count(&self, outcome: &'static str) -> u64 {
        self.outcomes
            .get_or_create(&OutcomeLabels { outcome })
            .get()
    }

    pub fn connection_count(&self, result: &'static str) -> u64 {
        self.connections
            .get_or_create(&ConnectionLabels { result })
            .get()
    }
}
