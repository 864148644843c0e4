//! Scenario files (`loadtest/scenarios/*.toml`): what is sent (`[send]`), to what (its
//! `target`, and optionally a sink the scenario starts, `[sink]`), and the goal (`[goal]`).
//!
//! `target = "sink"` sends straight to the scenario's own sink (on a free port): a check of
//! the tool itself. Any other target is an MTA (kurir, Postfix, …) that must route the
//! recipient domains to the sink's `listen` address (`loadtest/kurir.toml` does for kurir).
//! With `settle = true` the run then waits until every recipient the MTA accepted reached
//! the sink or was refused there with a 5xx.

use std::fmt;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context as _, bail};
use indicatif::ProgressBar;
use serde::{Deserialize, Serialize};

use crate::message::{FixedRecipient, RecipientClass, RecipientPlan, SizeMix, new_run_id};
use crate::send::{self, GrpcMode, GrpcTarget, SendConfig, SendReport, SmtpTarget, Transport};
use crate::sink::{Faults, Sink, SinkConfig, SinkReport, SinkTls};

/// The target that means "the scenario's own sink".
pub const SINK_TARGET: &str = "sink";

/// One scenario file.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// A sink to start for the run.
    pub sink: Option<SinkSection>,
    pub send: SendSection,
    #[serde(default)]
    pub goal: Goal,
}

/// `[sink]`: the sink the scenario starts.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SinkSection {
    /// Where the MTA under test delivers to (ignored with `target = "sink"`: a free port).
    pub listen: SocketAddr,
    /// Offer STARTTLS with a self-signed certificate.
    pub tls: bool,
    /// `CODE[:ENHANCED]:RATE` per recipient, e.g. `550:5.1.1:0.05`.
    pub reject: Vec<String>,
    /// `CODE[:ENHANCED]:RATE` per recipient, e.g. `451:0.02`.
    pub defer: Vec<String>,
    /// `PATTERN=CODE[:ENHANCED][:once]`, e.g. `bounce-*=550`.
    pub reject_rcpt: Vec<String>,
    /// Before the reply after the data.
    #[serde(with = "humantime_serde")]
    pub latency: Duration,
    /// Probability per transaction of hanging up instead of replying after the data.
    pub disconnect: f64,
}

impl Default for SinkSection {
    fn default() -> Self {
        Self {
            listen: SinkConfig::default().listen,
            tls: false,
            reject: Vec::new(),
            defer: Vec::new(),
            reject_rcpt: Vec::new(),
            latency: Duration::ZERO,
            disconnect: 0.0,
        }
    }
}

impl SinkSection {
    /// The sink's configuration; an error names the key.
    pub fn config(&self) -> anyhow::Result<SinkConfig> {
        Ok(SinkConfig {
            listen: self.listen,
            tls: self.tls.then_some(SinkTls::SelfSigned),
            faults: Faults {
                reject: parse_all("sink.reject", &self.reject)?,
                defer: parse_all("sink.defer", &self.defer)?,
                rcpt: parse_all("sink.reject_rcpt", &self.reject_rcpt)?,
                latency: self.latency,
                disconnect: self.disconnect,
            },
            ..SinkConfig::default()
        })
    }
}

/// `[send]`: the load.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SendSection {
    /// `smtp`, `grpc` or `grpc-stream`.
    pub transport: String,
    /// `sink`, an SMTP `host:port`, or a gRPC URL.
    pub target: String,
    pub connections: usize,
    pub messages: Option<u64>,
    #[serde(with = "humantime_serde")]
    pub duration: Option<Duration>,
    /// Messages per second; 0: as fast as possible.
    pub rate: f64,
    pub size: SizeMix,
    pub recipients: u32,
    pub domains: u32,
    pub domain_pattern: String,
    /// `PREFIX:PERCENT`.
    pub classes: Vec<String>,
    /// `ADDRESS:PERCENT`.
    pub fixed: Vec<String>,
    pub from: String,
    pub starttls: bool,
    /// gRPC stream: requests in flight per stream.
    pub window: usize,
    /// The environment variable that holds the gRPC API key.
    pub api_key_env: String,
}

impl Default for SendSection {
    fn default() -> Self {
        Self {
            transport: "smtp".into(),
            target: SINK_TARGET.into(),
            connections: 4,
            messages: None,
            duration: None,
            rate: 0.0,
            size: SizeMix::fixed(2048),
            recipients: 1,
            domains: 10,
            domain_pattern: RecipientPlan::default().domain_pattern,
            classes: Vec::new(),
            fixed: Vec::new(),
            from: DEFAULT_FROM.into(),
            starttls: false,
            window: 32,
            api_key_env: "KURIR_API_KEY".into(),
        }
    }
}

/// The default envelope sender.
pub const DEFAULT_FROM: &str = "loadtest@sender.load.test";

/// `[goal]`: what the run must achieve; an absent key is not checked.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Goal {
    /// Failed messages / messages tried, at most.
    pub max_error_rate: Option<f64>,
    /// Accepted messages per second, at least.
    pub min_throughput: Option<f64>,
    /// Accept latency p99, at most.
    pub max_accept_p99_ms: Option<f64>,
    /// Wait until the sink saw every accepted recipient (delivered, or refused with a 5xx).
    pub settle: bool,
    /// How long to wait for that.
    #[serde(with = "humantime_serde")]
    pub settle_timeout: Option<Duration>,
    /// Duplicate deliveries at the sink, at most.
    pub max_duplicates: Option<u64>,
    /// Delivery latency p99 at the sink, at most.
    pub max_delivery_p99_ms: Option<f64>,
}

/// Command-line overrides of a scenario.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub target: Option<String>,
    pub messages: Option<u64>,
    pub api_key: Option<String>,
}

/// One checked goal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GoalCheck {
    pub name: String,
    pub want: String,
    pub got: String,
    pub ok: bool,
}

/// What a scenario run did, and whether it met its goal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScenarioReport {
    pub name: String,
    pub send: SendReport,
    pub sink: Option<SinkReport>,
    pub goals: Vec<GoalCheck>,
    pub passed: bool,
}

impl Scenario {
    /// Reads and checks a scenario file.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let scenario: Self = toml::from_str(&text)
            .with_context(|| format!("{} is not a scenario", path.display()))?;
        Ok(scenario)
    }

    /// The send configuration for `target` (the sink's address when it is `sink`).
    fn send_config(
        &self,
        target: &str,
        sink: Option<SocketAddr>,
        overrides: &Overrides,
    ) -> anyhow::Result<SendConfig> {
        let s = &self.send;
        let transport = transport(s, target, sink, overrides)?;
        let recipients = RecipientPlan {
            per_message: s.recipients,
            domains: s.domains,
            domain_pattern: s.domain_pattern.clone(),
            classes: parse_all::<RecipientClass>("send.classes", &s.classes)?,
            fixed: parse_all::<FixedRecipient>("send.fixed", &s.fixed)?,
        };
        Ok(SendConfig {
            transport,
            connections: s.connections,
            rate: (s.rate > 0.0).then_some(s.rate),
            messages: overrides.messages.or(s.messages),
            duration: if overrides.messages.is_some() {
                None
            } else {
                s.duration
            },
            sizes: s.size.clone(),
            recipients,
            from: s.from.clone(),
            run_id: new_run_id(),
            messages_per_connection: 100,
        })
    }
}

fn parse_all<T: std::str::FromStr<Err = anyhow::Error>>(
    key: &str,
    items: &[String],
) -> anyhow::Result<Vec<T>> {
    items
        .iter()
        .map(|s| s.parse().with_context(|| key.to_owned()))
        .collect()
}

fn transport(
    s: &SendSection,
    target: &str,
    sink: Option<SocketAddr>,
    overrides: &Overrides,
) -> anyhow::Result<Transport> {
    let timeout = Duration::from_secs(30);
    let grpc = |mode| -> anyhow::Result<Transport> {
        let api_key = overrides
            .api_key
            .clone()
            .or_else(|| std::env::var(&s.api_key_env).ok());
        Ok(Transport::Grpc(GrpcTarget {
            url: target.to_owned(),
            api_key,
            mode,
            window: s.window,
            timeout,
        }))
    };
    match s.transport.as_str() {
        "smtp" => {
            let addr = match sink {
                Some(addr) if target == SINK_TARGET => addr,
                _ => target
                    .parse()
                    .with_context(|| format!("send.target {target:?} is not an ip:port"))?,
            };
            Ok(Transport::Smtp(SmtpTarget {
                addr,
                helo: "loadtest.test".into(),
                starttls: s.starttls,
                auth: None,
                timeout,
            }))
        }
        _ if target == SINK_TARGET => bail!("send.target = \"sink\" needs transport = \"smtp\""),
        "grpc" => grpc(GrpcMode::Unary),
        "grpc-stream" => grpc(GrpcMode::Stream),
        other => bail!("send.transport {other:?}: expected smtp, grpc or grpc-stream"),
    }
}

/// Runs a scenario: starts its sink, sends, waits for the sink to settle when asked, and
/// checks the goal.
pub async fn run(
    scenario: &Scenario,
    overrides: &Overrides,
    bar: ProgressBar,
) -> anyhow::Result<ScenarioReport> {
    let target = overrides
        .target
        .clone()
        .unwrap_or_else(|| scenario.send.target.clone());
    let direct = target == SINK_TARGET;
    let sink = match (&scenario.sink, direct) {
        (Some(section), _) => {
            let mut config = section.config()?;
            if direct {
                config.listen.set_port(0);
            }
            Some(Sink::start(config).await?)
        }
        (None, true) => {
            let mut config = SinkConfig::default();
            config.listen.set_port(0);
            Some(Sink::start(config).await?)
        }
        (None, false) => None,
    };
    let config = scenario.send_config(&target, sink.as_ref().map(Sink::addr), overrides)?;
    let report = send::run(&config, bar).await?;
    let sink_report = match sink {
        Some(sink) => Some(settle(scenario, &report, sink).await),
        None => None,
    };
    let goals = check(&scenario.goal, &report, sink_report.as_ref());
    Ok(ScenarioReport {
        name: scenario.name.clone(),
        passed: goals.iter().all(|g| g.ok),
        send: report,
        sink: sink_report,
        goals,
    })
}

/// With `settle`, waits until the sink accounts for every accepted recipient; then stops it.
async fn settle(scenario: &Scenario, report: &SendReport, sink: Sink) -> SinkReport {
    if scenario.goal.settle {
        let timeout = scenario
            .goal
            .settle_timeout
            .unwrap_or(Duration::from_secs(60));
        let accepted = report.recipients_accepted;
        sink.wait_for(timeout, |r| settled(r) >= accepted).await;
    }
    sink.stop().await
}

/// Recipients the sink has accounted for: delivered once, or refused with a 5xx.
fn settled(sink: &SinkReport) -> u64 {
    sink.distinct_deliveries + sink.rejected_recipients
}

fn check(goal: &Goal, send: &SendReport, sink: Option<&SinkReport>) -> Vec<GoalCheck> {
    let mut checks = Vec::new();
    let mut add = |name: &str, want: String, got: String, ok: bool| {
        checks.push(GoalCheck {
            name: name.to_owned(),
            want,
            got,
            ok,
        });
    };
    if let Some(max) = goal.max_error_rate {
        let got = send.error_rate();
        add(
            "error rate",
            format!("<= {max}"),
            format!("{got:.4}"),
            got <= max,
        );
    }
    if let Some(min) = goal.min_throughput {
        let got = send.throughput_per_s;
        add(
            "throughput msg/s",
            format!(">= {min}"),
            format!("{got:.1}"),
            got >= min,
        );
    }
    if let Some(max) = goal.max_accept_p99_ms {
        let got = send.accept_latency.p99_ms;
        add(
            "accept p99 ms",
            format!("<= {max}"),
            format!("{got:.2}"),
            got <= max,
        );
    }
    let Some(sink) = sink else {
        if goal.settle || goal.max_duplicates.is_some() || goal.max_delivery_p99_ms.is_some() {
            add("sink", "a [sink] section".into(), "none".into(), false);
        }
        return checks;
    };
    if goal.settle {
        let got = settled(sink);
        let want = send.recipients_accepted;
        add(
            "settled recipients",
            format!(">= {want}"),
            got.to_string(),
            got >= want,
        );
    }
    if let Some(max) = goal.max_duplicates {
        add(
            "duplicates",
            format!("<= {max}"),
            sink.duplicates.to_string(),
            sink.duplicates <= max,
        );
    }
    if let Some(max) = goal.max_delivery_p99_ms {
        let got = sink.delivery_latency.p99_ms;
        add(
            "delivery p99 ms",
            format!("<= {max}"),
            format!("{got:.2}"),
            got <= max,
        );
    }
    checks
}

impl fmt::Display for ScenarioReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "scenario {}", self.name)?;
        write!(f, "{}", self.send)?;
        if let Some(sink) = &self.sink {
            write!(f, "{sink}")?;
        }
        writeln!(f, "goal")?;
        for g in &self.goals {
            let mark = if g.ok { "ok  " } else { "FAIL" };
            writeln!(
                f,
                "  {mark} {:<20} want {:<12} got {}",
                g.name, g.want, g.got
            )?;
        }
        writeln!(f, "{}", if self.passed { "PASSED" } else { "FAILED" })
    }
}
