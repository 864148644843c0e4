//! Every metric name and help text, in one place, and the [`Metrics`] registry.
//!
//! A role that adds metrics declares a [`MetricDef`] here, adds it to [`ALL`], and
//! registers its family with [`Metrics::register`]. Labels stay low-cardinality: a site
//! or a route, never a recipient, a message id or a peer address.

use std::fmt;
use std::sync::Mutex;

use kurir_lifecycle::Lifecycle;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Metric, Registry};

/// The kind of a metric family, which decides the suffix of its samples.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetricKind {
    /// Samples are named `<name>_total`.
    Counter,
    /// Samples are named `<name>`.
    Gauge,
    /// Samples are named `<name>_bucket`, `_sum` and `_count`.
    Histogram,
    /// One constant sample named `<name>_info` whose labels carry the data.
    Info,
}

/// A metric family's name (as registered, without the kind's suffix) and help text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MetricDef {
    /// The registered name, e.g. `kurir_http_requests`.
    pub name: &'static str,
    /// One sentence for `# HELP`.
    pub help: &'static str,
    /// Decides the sample suffix, see [`MetricDef::sample_name`].
    pub kind: MetricKind,
}

impl MetricDef {
    /// The name samples carry in a scrape: `kurir_http_requests_total` for a counter,
    /// `kurir_build_info` for an info.
    pub fn sample_name(&self) -> String {
        match self.kind {
            MetricKind::Counter => format!("{}_total", self.name),
            MetricKind::Info => format!("{}_info", self.name),
            MetricKind::Gauge | MetricKind::Histogram => self.name.to_owned(),
        }
    }
}

/// `kurir_build_info{version, roles}`: constant 1; tells dashboards what is deployed.
pub const BUILD: MetricDef = MetricDef {
    name: "kurir_build",
    help: "Build and run information: the version and the roles this process runs",
    kind: MetricKind::Info,
};

/// `kurir_ready`: 1 while the process takes traffic (what `/readyz` says), 0 while it is
/// starting or draining.
pub const READY: MetricDef = MetricDef {
    name: "kurir_ready",
    help: "1 while the process is ready for traffic, 0 while starting or draining",
    kind: MetricKind::Gauge,
};

/// `kurir_activities_in_flight{activity}`: units of work the drain would wait for.
pub const ACTIVITIES_IN_FLIGHT: MetricDef = MetricDef {
    name: "kurir_activities_in_flight",
    help: "Units of in-flight work (sessions, transfers, deliveries) by kind",
    kind: MetricKind::Gauge,
};

/// `kurir_http_requests_total{route, code}`: requests to the telemetry endpoint.
pub const HTTP_REQUESTS: MetricDef = MetricDef {
    name: "kurir_http_requests",
    help: "Requests to the telemetry HTTP endpoint by route and status code",
    kind: MetricKind::Counter,
};

/// Every metric family kurir declares.
pub const ALL: &[MetricDef] = &[BUILD, READY, ACTIVITIES_IN_FLIGHT, HTTP_REQUESTS];

/// What `kurir_build_info` reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BuildInfo {
    /// The crate version, normally `env!("CARGO_PKG_VERSION")` of the binary.
    pub version: String,
    /// The roles this process runs, e.g. `submit,deliver`.
    pub roles: String,
}

/// Labels of [`HTTP_REQUESTS`]. `route` is one of the fixed routes or `other`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    /// `/metrics`, `/healthz`, `/readyz` or `other`.
    pub route: &'static str,
    /// The HTTP status code.
    pub code: u16,
}

/// The process's metric registry: families that exist for the whole process, plus
/// whatever roles register.
#[derive(Debug)]
pub struct Metrics {
    /// Behind a mutex so roles can register after the endpoint has started; only
    /// registration and a scrape take it.
    registry: Mutex<Registry>,
    http_requests: Family<HttpLabels, Counter>,
}

impl Metrics {
    /// A registry with the process-wide families. Readiness and activity counts are
    /// read from `lifecycle` at scrape time, so they can never disagree with it.
    pub fn new(build: BuildInfo, lifecycle: &Lifecycle) -> Self {
        let mut registry = Registry::default();
        let info = Info::new(vec![("version", build.version), ("roles", build.roles)]);
        registry.register(BUILD.name, BUILD.help, info);
        let http_requests = Family::<HttpLabels, Counter>::default();
        registry.register(
            HTTP_REQUESTS.name,
            HTTP_REQUESTS.help,
            http_requests.clone(),
        );
        registry.register_collector(Box::new(LifecycleCollector {
            lifecycle: lifecycle.clone(),
        }));
        Self {
            registry: Mutex::new(registry),
            http_requests,
        }
    }

    /// Registers a family declared as `def`. Clone the metric before passing it in and
    /// keep the clone to update it (metrics share their state across clones).
    pub fn register(&self, def: &MetricDef, metric: impl Metric) {
        self.lock().register(def.name, def.help, metric);
    }

    /// The registry in the OpenMetrics text format.
    pub fn encode(&self) -> Result<String, fmt::Error> {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.lock())?;
        Ok(out)
    }

    /// Counts one request to the telemetry endpoint.
    pub fn http_request(&self, route: &'static str, code: u16) {
        self.http_requests
            .get_or_create(&HttpLabels { route, code })
            .inc();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Registry> {
        // A panic while registering or encoding leaves the registry usable.
        self.registry.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Reads readiness and in-flight activities from the lifecycle on each scrape.
#[derive(Debug)]
struct LifecycleCollector {
    lifecycle: Lifecycle,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ActivityLabels {
    activity: &'static str,
}

impl Collector for LifecycleCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        // `Registry::register` appends a full stop to help texts; do the same here.
        let help = format!("{}.", READY.help);
        let ready = ConstGauge::new(i64::from(self.lifecycle.is_ready()));
        let sample = encoder.encode_descriptor(READY.name, &help, None, MetricType::Gauge)?;
        ready.encode(sample)?;

        let def = ACTIVITIES_IN_FLIGHT;
        let help = format!("{}.", def.help);
        let mut family = encoder.encode_descriptor(def.name, &help, None, MetricType::Gauge)?;
        for (activity, count) in self.lifecycle.in_flight_by_name() {
            let labels = ActivityLabels { activity };
            let gauge = ConstGauge::new(i64::try_from(count).unwrap_or(i64::MAX));
            gauge.encode(family.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metrics(lifecycle: &Lifecycle) -> Metrics {
        let build = BuildInfo {
            version: "1.2.3".to_owned(),
            roles: "all".to_owned(),
        };
        Metrics::new(build, lifecycle)
    }

    #[test]
    fn scrape_contains_every_declared_family() {
        let lifecycle = Lifecycle::new();
        let metrics = metrics(&lifecycle);
        metrics.http_request("/healthz", 200);
        let text = metrics.encode().unwrap();
        for def in ALL {
            assert!(
                text.contains(&format!("# TYPE {} ", def.name)),
                "{def:?}\n{text}"
            );
            assert!(text.contains(&def.sample_name()), "{def:?}\n{text}");
        }
        assert!(text.contains(r#"kurir_build_info{version="1.2.3",roles="all"} 1"#));
        assert!(text.contains(r#"kurir_http_requests_total{route="/healthz",code="200"} 1"#));
    }

    #[test]
    fn ready_and_activities_follow_the_lifecycle() {
        let lifecycle = Lifecycle::new();
        let metrics = metrics(&lifecycle);
        assert!(metrics.encode().unwrap().contains("kurir_ready 0\n"));
        lifecycle.set_ready(true);
        let _a = lifecycle.activity("smtp_session");
        let _b = lifecycle.activity("smtp_session");
        let text = metrics.encode().unwrap();
        assert!(text.contains("kurir_ready 1\n"), "{text}");
        assert!(
            text.contains(r#"kurir_activities_in_flight{activity="smtp_session"} 2"#),
            "{text}"
        );
        lifecycle.shutdown();
        assert!(metrics.encode().unwrap().contains("kurir_ready 0\n"));
    }

    #[test]
    fn names_are_unique_and_prefixed() {
        let mut names: Vec<_> = ALL.iter().map(|d| d.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), ALL.len());
        assert!(names.iter().all(|n| n.starts_with("kurir_")));
    }
}
