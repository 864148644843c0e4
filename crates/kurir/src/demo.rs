//! `kurir demo`: an all-in-one node, an SMTP sink and a load, in one process, with a
//! summary of what became of every recipient. No network beyond loopback, nothing left
//! behind (the data lives in a temp dir).
//!
//! 1. A sink (`kurir_loadtest::sink`) listens on 127.0.0.2 (127.0.0.1 where that cannot be
//!    bound). It refuses `bounce-*` recipients with `550 5.1.1` and `grey-*` ones with
//!    `451 4.3.0` the first time only (greylisting).
//! 2. A node (`roles::start_quietly`) runs every role on the embedded queue and state, SMTP,
//!    gRPC and HTTP on loopback port 0, with an API key made for the run,
//!    `[[deliver.routes]]` sending `*.demo.test` to the sink (TLS `disable`), retry tiers of
//!    1 s and 2 s, and suppressed SMTP recipients dropped and reported as events.
//! 3. [`SUPPRESSED`] goes on the suppression list over the gRPC API.
//! 4. Two thirds of the messages go over SMTP (one recipient each), one third over gRPC
//!    streams (two recipients each); 5 % of recipients are `bounce-*`, 5 % `grey-*`, 2 % the
//!    suppressed address.
//! 5. The node's events (read in-process, `outcomes`) and the sink's counts are followed
//!    until every accepted recipient has a final outcome and every DSN (to the sender, whose
//!    domain routes to the sink too) was delivered.
//! 6. The node drains and stops; the [`Summary`] checks that the numbers add up.
//!
//! # Layout
//! - `node`: the node's configuration, start and stop; `outcomes`: the events tally;
//!   `summary`: the [`Summary`] and its text form.

mod node;
mod outcomes;
mod summary;

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;
use indicatif::{MultiProgress, ProgressBar};
use kurir_loadtest::cli::progress_bar;
use kurir_loadtest::message::{FixedRecipient, RecipientClass, RecipientPlan, SizeMix, new_run_id};
use kurir_loadtest::send::{self, GrpcMode, GrpcTarget, SendConfig, SmtpTarget, Transport};
use kurir_loadtest::sink::{Faults, Sink, SinkConfig};
use kurir_proto::auth::Bearer;
use kurir_proto::v1;
use kurir_proto::v1::suppression_service_client::SuppressionServiceClient;
use kurir_submit::grpc::api_key_sha256;
use tokio::time::Instant;

use node::Node;
use outcomes::{Counts, Outcomes};
use summary::NodeAddrs;
pub use summary::Summary;

/// The demo's envelope sender (its domain routes to the sink, so DSNs arrive there).
pub const SENDER: &str = "demo@sender.demo.test";
/// The address put on the suppression list before sending.
pub const SUPPRESSED: &str = "blocked@d0.demo.test";
/// How long to wait for every outcome after the last message was accepted.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(45);
/// How often the outcome bar is updated while waiting.
const POLL: Duration = Duration::from_millis(50);

/// How the demo runs.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Messages in all: two thirds over SMTP, the rest over gRPC.
    pub messages: u64,
    /// Live progress bars (on stderr, when it is a terminal).
    pub progress: bool,
}

/// Runs the demo; the summary says whether the numbers add up.
pub async fn run(options: &DemoOptions) -> anyhow::Result<Summary> {
    let dir = tempfile::Builder::new()
        .prefix("kurir-demo-")
        .tempdir()
        .context("making a temp dir for the node's data")?;
    let sink = start_sink().await?;
    let key = random_key()?;
    let config = node::config(dir.path(), sink.addr(), api_key_sha256(&key));
    let node = Node::start(config).await?;
    let outcomes = node.outcomes(SENDER).await?;
    suppress(node.grpc, &key).await?;
    let bars = Bars::new(options.progress);
    let started = Instant::now();
    let reports = send_load(&node, &key, options.messages, &bars).await?;
    let expected = reports.0.recipients_accepted
        + reports.1.recipients_accepted
        + reports.1.recipients_suppressed;
    let counts = settle(&outcomes, expected, &bars.outcomes).await;
    let elapsed = started.elapsed().as_secs_f64();
    let addrs = NodeAddrs {
        smtp: node.smtp.to_string(),
        grpc: node.grpc.to_string(),
        http: node.http.to_string(),
        sink: sink.addr().to_string(),
    };
    drop(outcomes);
    node.stop().await;
    let sink = sink.stop().await;
    Ok(Summary::new(addrs, reports, &counts, sink, elapsed))
}

/// The sink on 127.0.0.2, or 127.0.0.1 where that address cannot be bound.
async fn start_sink() -> anyhow::Result<Sink> {
    let config = |ip: [u8; 4]| SinkConfig {
        listen: SocketAddr::from((ip, 0)),
        hostname: "mx.demo.test".into(),
        faults: Faults {
            rcpt: vec![
                "bounce-*=550:5.1.1".parse().expect("a valid rule"),
                "grey-*=451:4.3.0:once".parse().expect("a valid rule"),
            ],
            ..Faults::default()
        },
        ..SinkConfig::default()
    };
    match Sink::start(config([127, 0, 0, 2])).await {
        Ok(sink) => Ok(sink),
        Err(_) => Sink::start(config([127, 0, 0, 1])).await,
    }
}

/// An API key for this run: 128 random bits.
fn random_key() -> anyhow::Result<String> {
    use ring::rand::SecureRandom as _;
    let mut bytes = [0u8; 16];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| anyhow::anyhow!("no random numbers for the demo's API key"))?;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    Ok(format!("kurir-demo-{hex}"))
}

/// Puts [`SUPPRESSED`] on the key's tenant's suppression list.
async fn suppress(grpc: SocketAddr, key: &str) -> anyhow::Result<()> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{grpc}"))?
        .connect()
        .await
        .context("connecting to the node's gRPC API")?;
    let mut client = SuppressionServiceClient::with_interceptor(channel, Bearer::new(key)?);
    let entry = v1::Suppression {
        address: SUPPRESSED.into(),
        reason: v1::SuppressionReason::Manual as i32,
        source: "kurir-demo".into(),
        ..Default::default()
    };
    client
        .add(v1::AddSuppressionsRequest {
            entries: vec![entry],
        })
        .await
        .context("adding the suppressed address")?;
    Ok(())
}

/// The live progress: one bar per sender and one for outcomes.
struct Bars {
    _multi: MultiProgress,
    smtp: ProgressBar,
    grpc: ProgressBar,
    outcomes: ProgressBar,
}

impl Bars {
    fn new(show: bool) -> Self {
        let multi = MultiProgress::new();
        let bar = |label: &str| multi.add(progress_bar(!show, label));
        Self {
            smtp: bar("SMTP"),
            grpc: bar("gRPC"),
            outcomes: bar("outcomes"),
            _multi: multi,
        }
    }
}

/// The recipients of one sender: its own domains, the demo's classes and the suppressed
/// address.
fn recipients(per_message: u32, domain_pattern: &str) -> RecipientPlan {
    RecipientPlan {
        per_message,
        domains: 4,
        domain_pattern: domain_pattern.into(),
        classes: vec![
            RecipientClass {
                prefix: "bounce-".into(),
                percent: 5.0,
            },
            RecipientClass {
                prefix: "grey-".into(),
                percent: 5.0,
            },
        ],
        fixed: vec![FixedRecipient {
            address: SUPPRESSED.into(),
            percent: 2.0,
        }],
    }
}

/// SMTP and gRPC at once, as fast as the node takes them.
async fn send_load(
    node: &Node,
    key: &str,
    messages: u64,
    bars: &Bars,
) -> anyhow::Result<(send::SendReport, send::SendReport)> {
    let timeout = Duration::from_secs(30);
    let grpc_messages = messages / 3;
    let sizes: SizeMix = "2k:95,20k:5".parse().expect("a valid size mix");
    let load = |transport, connections, count, plan| SendConfig {
        transport,
        connections,
        rate: None,
        messages: Some(count),
        duration: None,
        sizes: sizes.clone(),
        recipients: plan,
        from: SENDER.into(),
        run_id: format!("demo-{}", new_run_id()),
        messages_per_connection: 100,
    };
    let smtp = load(
        Transport::Smtp(SmtpTarget {
            addr: node.smtp,
            helo: "app.demo.test".into(),
            starttls: false,
            auth: None,
            timeout,
        }),
        4,
        messages - grpc_messages,
        recipients(1, "s{i}.demo.test"),
    );
    let grpc = load(
        Transport::Grpc(GrpcTarget {
            url: format!("http://{}", node.grpc),
            api_key: Some(key.to_owned()),
            mode: GrpcMode::Stream,
            window: 32,
            timeout,
        }),
        2,
        grpc_messages,
        recipients(2, "g{i}.demo.test"),
    );
    let (smtp, grpc) = tokio::join!(
        send::run(&smtp, bars.smtp.clone()),
        send::run(&grpc, bars.grpc.clone())
    );
    Ok((smtp?, grpc?))
}

/// Waits until `expected` recipients have a final outcome and every DSN was delivered (at
/// most [`SETTLE_TIMEOUT`]); returns the last counts.
async fn settle(outcomes: &Outcomes, expected: u64, bar: &ProgressBar) -> Counts {
    bar.set_length(expected);
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    let mut poll = tokio::time::interval(POLL);
    loop {
        poll.tick().await;
        let counts = outcomes.counts();
        bar.set_position(counts.finished());
        bar.set_message(format!(
            "delivered {} · bounced {} · suppressed {} · waiting for retry {} · DSNs {}/{}",
            counts.delivered,
            counts.bounced,
            counts.suppressed,
            counts.waiting_for_retry,
            counts.dsns_delivered,
            counts.dsns_queued
        ));
        let done = counts.finished() >= expected && counts.dsns_delivered >= counts.dsns_queued;
        if done || Instant::now() >= deadline {
            bar.finish();
            return counts;
        }
    }
}
