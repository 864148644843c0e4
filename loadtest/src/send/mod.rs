//! The load generator: N workers (SMTP connections, gRPC connections or streams) take
//! message numbers from one counter until the message count or the duration is reached.
//!
//! **Pacing.** At a fixed rate, message `seq` is due at `start + seq / rate`; a worker that
//! takes it waits until then. Its accept latency is measured from that due time, not from
//! when a worker got to it, so a server that falls behind shows its backlog in the
//! latency (no coordinated omission). As fast as possible, latency is measured from the
//! first byte of the transaction.
//!
//! **Counting.** Each worker keeps its own [`Tally`] (merged at the end into the
//! [`SendReport`]); the live progress reads only shared atomic counters.
//!
//! # Layout
//! - [`smtp`]: the SMTP client and its worker; [`grpc`]: unary and streaming workers.
//! - `report`: [`SendReport`] and its text form.

pub mod grpc;
mod report;
pub mod smtp;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use indicatif::ProgressBar;
use tokio::time::Instant;

use crate::latency::Latency;
use crate::message::{Bodies, RecipientPlan, SizeMix, Stamp, header_block};
pub use grpc::{GrpcMode, GrpcTarget};
pub use report::SendReport;
pub(crate) use report::write_counts as report_counts;
pub use smtp::SmtpTarget;

/// Where the load goes.
#[derive(Debug, Clone)]
pub enum Transport {
    /// SMTP, one transaction at a time per connection.
    Smtp(SmtpTarget),
    /// The gRPC submission API.
    Grpc(GrpcTarget),
}

impl Transport {
    /// `smtp`, `grpc` or `grpc-stream`.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Smtp(_) => "smtp",
            Self::Grpc(t) if t.mode == GrpcMode::Stream => "grpc-stream",
            Self::Grpc(_) => "grpc",
        }
    }

    fn target(&self) -> String {
        match self {
            Self::Smtp(t) => t.addr.to_string(),
            Self::Grpc(t) => t.url.clone(),
        }
    }
}

/// What to send, how fast, for how long.
#[derive(Debug, Clone)]
pub struct SendConfig {
    pub transport: Transport,
    /// Connections (SMTP, gRPC unary) or streams (gRPC stream), each with its own
    /// connection.
    pub connections: usize,
    /// Messages per second over all connections; `None`: as fast as possible.
    pub rate: Option<f64>,
    /// Stop after this many messages.
    pub messages: Option<u64>,
    /// Stop after this long (whichever comes first).
    pub duration: Option<Duration>,
    pub sizes: SizeMix,
    pub recipients: RecipientPlan,
    /// The envelope sender and `From`.
    pub from: String,
    /// The run id in every message's header.
    pub run_id: String,
    /// SMTP: QUIT and reconnect after this many transactions.
    pub messages_per_connection: u32,
}

impl SendConfig {
    /// Checks what the types do not.
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(self.connections > 0, "connections must be at least 1");
        anyhow::ensure!(
            self.messages.is_some() || self.duration.is_some(),
            "give a message count or a duration"
        );
        if let Some(rate) = self.rate {
            anyhow::ensure!(rate.is_finite() && rate > 0.0, "rate must be more than 0");
        }
        anyhow::ensure!(
            !self.run_id.is_empty() && !self.run_id.contains(char::is_whitespace),
            "the run id must be one word"
        );
        anyhow::ensure!(
            self.messages_per_connection > 0,
            "messages per connection must be at least 1"
        );
        self.recipients.validate()
    }
}

/// Sends the load and reports; `bar` shows the progress (use `ProgressBar::hidden()` for
/// none).
pub async fn run(config: &SendConfig, bar: ProgressBar) -> anyhow::Result<SendReport> {
    config.validate()?;
    let plan = Arc::new(Plan::new(config.clone()));
    if let Some(n) = config.messages {
        bar.set_length(n);
    }
    let ticker = tokio::spawn(tick(plan.clone(), bar.clone()));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..config.connections {
        let plan = plan.clone();
        workers.spawn(async move {
            match &plan.config.transport {
                Transport::Smtp(target) => smtp_worker(&plan, target).await,
                Transport::Grpc(target) => grpc::worker(&plan, target).await,
            }
        });
    }
    let mut tally = Tally::default();
    while let Some(done) = workers.join_next().await {
        tally.merge(&done?);
    }
    ticker.abort();
    let elapsed = plan.start.elapsed();
    if plan.config.messages.is_some() {
        bar.set_position(plan.finished());
    }
    bar.set_message(plan.live.summary());
    bar.finish();
    Ok(SendReport::new(config, &tally, elapsed))
}

/// Updates the progress bar's message from the live counters.
async fn tick(plan: Arc<Plan>, bar: ProgressBar) {
    let mut interval = tokio::time::interval(Duration::from_millis(200));
    loop {
        interval.tick().await;
        bar.set_message(plan.live.summary());
        if plan.config.messages.is_some() {
            bar.set_position(plan.finished());
        } else if let Some(total) = plan.config.duration {
            bar.set_length(total.as_secs());
            bar.set_position(plan.start.elapsed().as_secs().min(total.as_secs()));
        }
    }
}

/// The run shared by its workers.
#[derive(Debug)]
pub(crate) struct Plan {
    pub(crate) config: SendConfig,
    start: Instant,
    interval: Option<Duration>,
    deadline: Option<Instant>,
    next: AtomicU64,
    bodies: Bodies,
    pub(crate) live: Live,
}

/// A message number and when it is due.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ticket {
    pub(crate) seq: u64,
    pub(crate) due: Instant,
}

/// One message, ready to send.
#[derive(Debug)]
pub(crate) struct Outgoing {
    pub(crate) to: Vec<String>,
    pub(crate) header: Vec<u8>,
    pub(crate) body: Bytes,
}

impl Outgoing {
    pub(crate) fn len(&self) -> usize {
        self.header.len() + self.body.len()
    }
}

impl Plan {
    fn new(config: SendConfig) -> Self {
        let start = Instant::now();
        Self {
            interval: config.rate.map(|r| Duration::from_secs_f64(1.0 / r)),
            deadline: config.duration.map(|d| start + d),
            config,
            start,
            next: AtomicU64::new(0),
            bodies: Bodies::default(),
            live: Live::default(),
        }
    }

    /// The next message, once it is due; `None` when the run is over.
    pub(crate) async fn take(&self) -> Option<Ticket> {
        let seq = self.next.fetch_add(1, Ordering::Relaxed);
        if self.config.messages.is_some_and(|n| seq >= n) {
            return None;
        }
        let due = match self.interval {
            Some(interval) => self.start + interval.mul_f64(seq as f64),
            None => Instant::now(),
        };
        if self
            .deadline
            .is_some_and(|d| due >= d || Instant::now() >= d)
        {
            return None;
        }
        tokio::time::sleep_until(due).await;
        // As fast as possible, latency starts when the worker starts the transaction.
        let due = if self.interval.is_some() {
            due
        } else {
            Instant::now()
        };
        Some(Ticket { seq, due })
    }

    /// Message `seq`: its recipients, header (stamped now) and body.
    pub(crate) fn message(&self, seq: u64) -> Outgoing {
        let mut rng = fastrand::Rng::with_seed(seq);
        let size = self.config.sizes.pick(&mut rng);
        let to = self.config.recipients.recipients(seq);
        let stamp = Stamp::now(&self.config.run_id, seq);
        let header = header_block(&self.config.from, &to, &stamp);
        let body = self.bodies.get(size.saturating_sub(header.len()));
        Outgoing { to, header, body }
    }

    /// Counts a finished message in the live counters.
    pub(crate) fn done(&self, accepted: bool) {
        let counter = if accepted {
            &self.live.accepted
        } else {
            &self.live.failed
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// Counters the progress bar reads while the run goes on.
#[derive(Debug, Default)]
pub(crate) struct Live {
    accepted: AtomicU64,
    failed: AtomicU64,
}

impl Live {
    fn summary(&self) -> String {
        format!(
            "accepted {} · failed {}",
            self.accepted.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed)
        )
    }
}

/// What one worker counted.
#[derive(Debug, Default, Clone)]
pub(crate) struct Tally {
    pub(crate) attempted: u64,
    pub(crate) accepted: u64,
    pub(crate) failed: u64,
    pub(crate) rcpts_accepted: u64,
    pub(crate) rcpts_refused: u64,
    pub(crate) rcpts_suppressed: u64,
    pub(crate) bytes: u64,
    pub(crate) latency: Latency,
    /// Failed messages by cause.
    pub(crate) errors: BTreeMap<String, u64>,
    /// Refused recipients by reply.
    pub(crate) refusals: BTreeMap<String, u64>,
}

impl Tally {
    fn merge(&mut self, other: &Tally) {
        self.attempted += other.attempted;
        self.accepted += other.accepted;
        self.failed += other.failed;
        self.rcpts_accepted += other.rcpts_accepted;
        self.rcpts_refused += other.rcpts_refused;
        self.rcpts_suppressed += other.rcpts_suppressed;
        self.bytes += other.bytes;
        self.latency.merge(&other.latency);
        for (k, v) in &other.errors {
            *self.errors.entry(k.clone()).or_default() += v;
        }
        for (k, v) in &other.refusals {
            *self.refusals.entry(k.clone()).or_default() += v;
        }
    }

    /// A failed message.
    pub(crate) fn fail(&mut self, plan: &Plan, key: String) {
        self.attempted += 1;
        self.failed += 1;
        *self.errors.entry(key).or_default() += 1;
        plan.done(false);
    }

    /// An accepted message: its latency from `ticket.due`.
    pub(crate) fn accept(&mut self, plan: &Plan, ticket: Ticket, bytes: usize) {
        self.attempted += 1;
        self.accepted += 1;
        self.bytes += bytes as u64;
        self.latency.record(ticket.due.elapsed());
        plan.done(true);
    }
}

impl Plan {
    /// Finished messages so far.
    fn finished(&self) -> u64 {
        self.live.accepted.load(Ordering::Relaxed) + self.live.failed.load(Ordering::Relaxed)
    }
}

/// Consecutive failed connection attempts after which an SMTP worker gives up.
const MAX_CONNECT_FAILURES: u32 = 10;

/// One SMTP connection's share of the run: reconnects after
/// `messages_per_connection`, after a broken session, and (with a pause) after a failed
/// connection attempt.
async fn smtp_worker(plan: &Plan, target: &SmtpTarget) -> Tally {
    let mut tally = Tally::default();
    let mut session: Option<smtp::Session> = None;
    let mut on_connection = 0;
    let mut connect_failures = 0;
    while let Some(ticket) = plan.take().await {
        if session.is_none() {
            match smtp::Session::connect(target).await {
                Ok(s) => {
                    session = Some(s);
                    on_connection = 0;
                    connect_failures = 0;
                }
                Err(error) => {
                    tally.fail(plan, error.key());
                    connect_failures += 1;
                    if connect_failures >= MAX_CONNECT_FAILURES {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            }
        }
        let s = session.as_mut().expect("connected above");
        let message = plan.message(ticket.seq);
        match s
            .send(
                &plan.config.from,
                &message.to,
                &message.header,
                &message.body,
            )
            .await
        {
            Ok(result) => {
                tally.rcpts_refused += result.refused.len() as u64;
                for r in &result.refused {
                    *tally.refusals.entry(r.key()).or_default() += 1;
                }
                if result.accepted() {
                    tally.rcpts_accepted += result.accepted_rcpts as u64;
                    tally.accept(plan, ticket, message.len());
                } else {
                    tally.fail(plan, format!("smtp {}", result.reply.key()));
                }
            }
            Err(error) => {
                tally.fail(plan, error.key());
                session = None;
                continue;
            }
        }
        on_connection += 1;
        if on_connection >= plan.config.messages_per_connection
            && let Some(s) = session.take()
        {
            s.quit().await;
        }
    }
    if let Some(s) = session {
        s.quit().await;
    }
    tally
}
