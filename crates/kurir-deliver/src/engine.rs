//! The delivery node: consumes its partitions, attempts each record, and turns every
//! recipient's verdict into a durable outcome before the record is acknowledged.
//!
//! Order of work for one record (the record is acknowledged only after all of it, so a
//! crash at any point replays the record, and the ledger keeps a replay from mailing
//! twice): domain pause → ledger check → suppression check → expiry → attempt → ledger
//! write (delivered) → DSNs published (ids derived from the message's, so a replay's are
//! the same ones) → bounce memory (bounced) → the retry record published → events
//! published → ack. When the state store or the queue is unavailable the step is
//! retried with back-off until it succeeds or the node shuts down (then the record is left
//! for the next owner).

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use futures::StreamExt as _;
use kurir_core::{Address, MessageId, Outcome, Recipient};
use kurir_lifecycle::Lifecycle;
use kurir_proto::convert::time_to_unix_ms;
use kurir_proto::{Queued, v1};
use kurir_queue::poison::{Decoded, decode_or_skip};
use kurir_queue::{
    Ack, OutgoingRecord, PartitionEvent, PartitionStream, Queue, QueueConfig, QueueError, Topics,
};
use kurir_state::controls::DomainControls;
use kurir_state::{
    DomainCounter, DomainCounters, PauseAction, Settlement, State, StateError, Tenant, TrackEntry,
    TrackKind,
};
use tokio_util::task::TaskTracker;

use crate::attempt::{self, Verdict};
use crate::classify::Classifier;
use crate::config::DeliverConfig;
use crate::dsn::{self, DsnAction, DsnRecipient, DsnReport};
use crate::egress::Egress;
use crate::metrics::DeliverMetrics;
use crate::pool::{SiteSnapshot, Sites};
use crate::reply::RemoteReply;
use crate::retry::{self, NextStep};
use crate::route::Router;
use crate::throttle::Throttle;

/// How often idle connections are checked for their idle timeout.
const REAP_INTERVAL: Duration = Duration::from_millis(500);

/// Why the delivery role cannot start.
#[derive(Debug, thiserror::Error)]
pub enum DeliverError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("deliver.dns: {0}")]
    Resolver(String),
    #[error("deliver.tls.ca_file: {0}")]
    Roots(String),
    #[error(transparent)]
    Queue(#[from] QueueError),
}

/// What the attempt code needs, independent of the backends.
#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) config: DeliverConfig,
    pub(crate) router: Router,
    pub(crate) classifier: Classifier,
    pub(crate) sites: Sites,
    pub(crate) egress: Egress,
    pub(crate) tls_roots: Arc<rustls::RootCertStore>,
    pub(crate) metrics: DeliverMetrics,
    domain_throttles: Mutex<HashMap<String, Option<Throttle>>>,
}

impl Inner {
    /// The throttle of a domain whose policy sets limits.
    pub(crate) fn domain_throttle(&self, domain: &str) -> Option<Throttle> {
        let mut map = self.domain_throttles.lock().expect("domain throttles");
        if let Some(known) = map.get(domain) {
            return known.clone();
        }
        map.entry(domain.to_owned())
            .or_insert_with(|| {
                let p = self.config.policy_for(domain)?;
                if p.max_connections.is_none() && p.messages_per_second.is_none() {
                    return None;
                }
                Some(Throttle::new(
                    p.max_connections.unwrap_or(u32::MAX),
                    p.messages_per_second.unwrap_or(0.0),
                    self.config.throttle.backoff,
                ))
            })
            .clone()
    }
}

/// A delivery node on a queue and a state store. Cheap to clone.
#[derive(Debug)]
pub struct Deliverer<Q, S> {
    node: Arc<Node<Q, S>>,
}

impl<Q, S> Clone for Deliverer<Q, S> {
    fn clone(&self) -> Self {
        Self {
            node: self.node.clone(),
        }
    }
}

#[derive(Debug)]
struct Node<Q, S> {
    inner: Arc<Inner>,
    queue: Q,
    state: S,
    controls: DomainControls,
    lifecycle: Lifecycle,
    topics: Topics,
    tiers: Vec<Duration>,
    /// The topics it reads, each with its consumer group.
    subscriptions: Vec<kurir_queue::DeliverySubscription>,
    tracker: TaskTracker,
    /// Partitions this node owns now.
    assigned: Mutex<std::collections::BTreeSet<(String, u32)>>,
}

/// A recipient's final word in this round.
#[derive(Debug, Clone)]
enum Fate {
    Delivered(RemoteReply),
    Deferred {
        reply: Option<RemoteReply>,
        reason: String,
    },
    Bounced {
        class: kurir_core::BounceClass,
        reply: Option<RemoteReply>,
        reason: String,
    },
    Expired {
        reply: Option<RemoteReply>,
        reason: String,
    },
    Suppressed(String),
    /// Bounced by an operator's bounce order (`AdminService.BounceDomain`): a bounce with
    /// a DSN, but not remembered against the address.
    Cancelled(String),
    /// Delivered before, by the ledger: the record is processed again (a crash or a
    /// hand-over before its acknowledgement). Not attempted, counted, tracked or reported
    /// by DSN again; its event is made again (`replayed`), as the first one may not have
    /// been published.
    Replayed,
}

impl Fate {
    fn outcome(&self) -> Outcome {
        match self {
            Self::Delivered(_) | Self::Replayed => Outcome::Delivered,
            Self::Deferred { .. } => Outcome::Deferred,
            Self::Bounced { class, .. } => Outcome::Bounced(*class),
            Self::Expired { .. } => Outcome::Expired,
            Self::Suppressed(_) => Outcome::Suppressed,
            Self::Cancelled(_) => Outcome::Bounced(kurir_core::BounceClass::Policy),
        }
    }

    /// The domain counter it adds to (suppressed recipients were not attempted; replayed
    /// ones were counted the first time).
    fn counter(&self) -> Option<DomainCounter> {
        match self {
            Self::Delivered(_) => Some(DomainCounter::Delivered),
            Self::Deferred { .. } => Some(DomainCounter::Deferred),
            Self::Bounced { .. } | Self::Cancelled(_) | Self::Expired { .. } => {
                Some(DomainCounter::Bounced)
            }
            Self::Suppressed(_) | Self::Replayed => None,
        }
    }

    /// The kind of its history entry; none for a replay (tracked the first time).
    fn track_kind(&self) -> Option<TrackKind> {
        Some(match self {
            Self::Delivered(_) => TrackKind::Delivered,
            Self::Deferred { .. } => TrackKind::Deferred,
            Self::Bounced { .. } | Self::Cancelled(_) => TrackKind::Bounced,
            Self::Expired { .. } => TrackKind::Expired,
            Self::Suppressed(_) => TrackKind::Suppressed,
            Self::Replayed => return None,
        })
    }

    /// The `outcome` label of `kurir_deliver_outcomes_total`.
    fn metric(&self) -> &'static str {
        match self {
            Self::Delivered(_) => "delivered",
            Self::Deferred { .. } => "deferred",
            Self::Bounced { .. } | Self::Cancelled(_) => "bounced",
            Self::Expired { .. } => "expired",
            Self::Suppressed(_) => "suppressed",
            Self::Replayed => "replayed",
        }
    }

    fn reply(&self) -> Option<&RemoteReply> {
        match self {
            Self::Delivered(r) => Some(r),
            Self::Deferred { reply, .. }
            | Self::Bounced { reply, .. }
            | Self::Expired { reply, .. } => reply.as_ref(),
            Self::Suppressed(_) | Self::Cancelled(_) | Self::Replayed => None,
        }
    }

    fn detail(&self) -> String {
        match self {
            Self::Delivered(r) => r.to_string(),
            Self::Deferred { reason, .. }
            | Self::Bounced { reason, .. }
            | Self::Expired { reason, .. }
            | Self::Suppressed(reason) => reason.clone(),
            Self::Cancelled(reason) => format!("cancelled by an operator: {reason}"),
            Self::Replayed => "delivered before (ledger); record processed again".to_owned(),
        }
    }
}

impl From<Verdict> for Fate {
    fn from(v: Verdict) -> Self {
        match v {
            Verdict::Delivered(r) => Self::Delivered(r),
            Verdict::Deferred { reply, reason } => Self::Deferred { reply, reason },
            Verdict::Bounced {
                class,
                reply,
                reason,
            } => Self::Bounced {
                class,
                reply,
                reason,
            },
        }
    }
}

/// Where and how the attempt went, for events.
#[derive(Debug, Default)]
struct AttemptInfo {
    mx_host: String,
    tls_version: Option<&'static str>,
    attempt: u32,
    duration_ms: i64,
}

impl<Q: Queue + Clone, S: State + Clone> Deliverer<Q, S> {
    /// Checks the configuration and builds the resolver; nothing is consumed before
    /// [`Deliverer::run`]. Domain pauses and bounce orders are re-read from the state store
    /// every `pause_poll` (`state.domain_poll_interval`).
    pub fn new(
        config: DeliverConfig,
        queue_config: &QueueConfig,
        pause_poll: Duration,
        queue: Q,
        state: S,
        lifecycle: Lifecycle,
    ) -> Result<Self, DeliverError> {
        config.validate()?;
        let subscriptions = queue_config.delivery_subscriptions(&config.group);
        let router = Router::new(&config).map_err(DeliverError::Resolver)?;
        let roots =
            crate::client::tls_roots(config.tls.ca_file.as_deref()).map_err(DeliverError::Roots)?;
        if !config.mx_routing() {
            tracing::warn!(
                "MX routing is off ([deliver.dns] has no nameservers and system_resolver \
                 is false): only domains with a [[deliver.routes]] entry are delivered, \
                 other mail is deferred"
            );
        }
        let inner = Inner {
            classifier: Classifier::new(&config.bounce_rules),
            sites: Sites::new(
                config.pool.max_connections,
                config.throttle.messages_per_second,
                config.throttle.backoff,
            ),
            egress: Egress::new(&config),
            tls_roots: Arc::new(roots),
            metrics: DeliverMetrics::default(),
            domain_throttles: Mutex::new(HashMap::new()),
            router,
            config,
        };
        let controls = DomainControls::start(state.clone(), pause_poll);
        Ok(Self {
            node: Arc::new(Node {
                inner: Arc::new(inner),
                queue,
                state,
                controls,
                lifecycle,
                topics: queue_config.topics(),
                tiers: queue_config.retry_tiers.clone(),
                subscriptions,
                tracker: TaskTracker::new(),
                assigned: Mutex::default(),
            }),
        })
    }

    pub fn metrics(&self) -> &DeliverMetrics {
        &self.node.inner.metrics
    }

    /// The partitions (of the mail topic and the retry tiers) this node owns now.
    pub fn assigned_partitions(&self) -> Vec<(String, u32)> {
        let assigned = self.node.assigned.lock().expect("assigned lock");
        assigned.iter().cloned().collect()
    }

    /// Every site's throttle state (and why it is lowered), idle connections, down mark.
    pub fn sites(&self) -> Vec<SiteSnapshot> {
        self.node.inner.sites.snapshot()
    }

    /// Joins the consumer group and delivers until shutdown; then stops taking records,
    /// lets the records in flight finish for up to `drain` (what is not finished is left
    /// for the next owner), leaves the group and closes idle connections.
    pub async fn run(self, drain: Duration) -> Result<(), QueueError> {
        let node = self.node.clone();
        // The pauses are read before any record is taken: until the first poll answers no
        // domain counts as paused, and a node starting on a backlog would mail them.
        if node
            .retrying("reading domain pauses", || node.controls.refresh_now())
            .await
            .is_none()
        {
            return Ok(()); // shut down before starting
        }
        // Each topic in a consumer group of its own (`QueueConfig::delivery_subscriptions`).
        let joins = node.subscriptions.iter().map(|s| {
            node.queue
                .subscribe(&s.group, std::slice::from_ref(&s.topic))
        });
        let mut subscriptions = Vec::new();
        let mut failed = None;
        for joined in futures::future::join_all(joins).await {
            match joined {
                Ok(subscription) => subscriptions.push(subscription),
                Err(error) => failed = Some(error),
            }
        }
        if let Some(error) = failed {
            for subscription in subscriptions {
                subscription.close().await;
            }
            return Err(error);
        }
        let shutdown = node.lifecycle.shutdown_signal();
        let reaper = tokio::spawn(reap_idle(node.inner.clone(), shutdown.clone()));
        let mut partitions = tokio::task::JoinSet::new();
        // Every member's events in one stream; `None` once any member's stream ended.
        let mut events = futures::stream::select_all(subscriptions.iter_mut().map(|s| {
            let events = futures::stream::unfold(s, |s| async move {
                s.next_event().await.map(|event| (Some(event), s))
            });
            Box::pin(events.chain(futures::stream::once(async { None })))
        }));
        loop {
            tokio::select! {
                () = shutdown.wait() => break,
                event = events.next() => match event.flatten() {
                    Some(PartitionEvent::Assigned(stream)) => {
                        tracing::info!(topic = %stream.topic, partition = stream.partition,
                            "partition assigned");
                        node.assigned
                            .lock()
                            .expect("assigned lock")
                            .insert((stream.topic.to_string(), stream.partition));
                        partitions.spawn(node.clone().partition(stream));
                    }
                    Some(PartitionEvent::Revoked { topic, partition }) => {
                        tracing::info!(%topic, partition, "partition revoked");
                        node.assigned
                            .lock()
                            .expect("assigned lock")
                            .remove(&(topic.to_string(), partition));
                    }
                    None => break,
                },
            }
        }
        drop(events);
        partitions.abort_all();
        node.tracker.close();
        if tokio::time::timeout(drain, node.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                in_flight = node.tracker.len(),
                "delivery drain timed out: unfinished records are left for the next owner"
            );
        }
        for subscription in subscriptions {
            subscription.close().await;
        }
        reaper.abort();
        for conn in node.inner.sites.take_all_idle() {
            conn.quit().await;
        }
        Ok(())
    }
}

async fn reap_idle(inner: Arc<Inner>, shutdown: kurir_lifecycle::ShutdownSignal) {
    let idle_timeout = inner.config.pool.idle_timeout;
    loop {
        tokio::select! {
            () = shutdown.wait() => return,
            () = tokio::time::sleep(REAP_INTERVAL) => {}
        }
        for (conn, slot) in inner.sites.expired(idle_timeout) {
            attempt::close_later(conn, slot);
        }
    }
}

impl<Q: Queue + Clone, S: State + Clone> Node<Q, S> {
    async fn partition(self: Arc<Self>, mut stream: PartitionStream) {
        let events = self.topics.events();
        while let Some(record) = stream.next().await {
            // Each record in flight is an activity, so the node's drain waits for it.
            let Some(activity) = self.lifecycle.activity("delivery") else {
                return; // shutting down: unacknowledged, the next owner delivers it
            };
            match decode_or_skip(&self.queue, &events, record).await {
                Ok(Decoded::Message(message, record)) => {
                    let node = self.clone();
                    self.tracker.spawn(async move {
                        node.handle(*message, record.ack).await;
                        drop(activity);
                    });
                }
                Ok(Decoded::Skipped) => {}
                Err(error) => {
                    // The record stays unacknowledged (its partition's commits stop before
                    // it) and is read again after a restart or a rebalance.
                    tracing::error!(%error, "could not report an undecodable record");
                }
            }
        }
    }

    async fn handle(&self, message: Queued, ack: Ack) {
        if let Some(fates) = self.process(&message).await {
            ack.done();
            self.note(&message, &fates);
        }
    }

    /// Runs `op` until it succeeds, backing off; `None` once the node shuts down.
    async fn retrying<T, E, F, Fut>(&self, what: &str, mut op: F) -> Option<T>
    where
        E: std::fmt::Display,
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let mut delay = Duration::from_millis(100);
        loop {
            match op().await {
                Ok(v) => return Some(v),
                Err(error) => {
                    tracing::warn!(%error, retry_in = ?delay, "{what} failed");
                }
            }
            if self.lifecycle.is_shutting_down() {
                return None;
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(5));
        }
    }

    /// Publishes `records` to `topic` (nothing when there are none), retried like every
    /// durable step.
    async fn publish(&self, what: &str, topic: &str, records: Vec<OutgoingRecord>) -> Option<()> {
        if records.is_empty() {
            return Some(());
        }
        self.retrying(what, || self.queue.publish(topic, records.clone()))
            .await
    }

    /// A state store operation: retried while the store is unavailable; any other error
    /// (an unknown tenant, an invalid or corrupt entry) will not go away by retrying, so
    /// it is logged and `fallback` stands in for the answer.
    async fn state_op<T, F, Fut>(&self, what: &str, fallback: T, mut op: F) -> Option<T>
    where
        T: Clone,
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, StateError>>,
    {
        self.retrying(what, || {
            let attempt = op();
            let fallback = fallback.clone();
            async move {
                match attempt.await {
                    Err(StateError::Unavailable(m)) => Err(StateError::Unavailable(m)),
                    Err(error) => {
                        tracing::error!(%error, "{what}: not retried");
                        Ok(fallback)
                    }
                    ok => ok,
                }
            }
        })
        .await
    }

    /// The record's outcomes, once durable; `None` when the node shuts down first.
    async fn process(&self, message: &Queued) -> Option<Vec<(usize, Fate)>> {
        let now = SystemTime::now();
        let domain = message.routing_key.domain();
        let bounce_order = match self.controls.is_paused(domain) {
            Some(pause) if pause.action == PauseAction::Bounce => Some(pause.reason),
            Some(pause) => {
                self.hold_paused(message, pause.until, now).await?;
                return Some(Vec::new());
            }
            None => None,
        };
        let recipients = &message.envelope.recipients;
        let addrs: Vec<Address> = recipients.iter().map(|r| r.address.clone()).collect();
        let not_delivered = vec![false; addrs.len()];
        let delivered = self
            .state_op("ledger check", not_delivered, || {
                self.state.delivered(message.id, &addrs)
            })
            .await?;
        let tenant = Tenant::new(if message.tenant.is_empty() {
            "default"
        } else {
            &message.tenant
        })
        .ok();
        let none = vec![None; addrs.len()];
        let suppressed = match &tenant {
            Some(t) => {
                self.state_op("suppression check", none, || {
                    self.state.check_suppressed(t, &addrs)
                })
                .await?
            }
            None => none,
        };

        let mut fates: Vec<(usize, Fate)> = Vec::new();
        let mut to_try = Vec::new();
        for i in 0..recipients.len() {
            if delivered.get(i).copied().unwrap_or(false) {
                fates.push((i, Fate::Replayed));
            } else if let Some(Some(s)) = suppressed.get(i) {
                fates.push((
                    i,
                    Fate::Suppressed(format!("suppressed: {}", s.reason.as_str())),
                ));
            } else {
                to_try.push(i);
            }
        }

        let mut info = AttemptInfo {
            attempt: message.attempts + 1,
            ..AttemptInfo::default()
        };
        let max_age = self.inner.config.max_age;
        if let Some(reason) = bounce_order {
            // An operator's bounce order: nothing is attempted; the DSN carries the reason.
            for &i in &to_try {
                fates.push((i, Fate::Cancelled(reason.clone())));
            }
            info.attempt = message.attempts;
        } else if !to_try.is_empty() {
            if retry::is_expired(message.first_seen, max_age, now) {
                for &i in &to_try {
                    fates.push((
                        i,
                        Fate::Expired {
                            reply: None,
                            reason: format!("expired: not delivered within {max_age:?}"),
                        },
                    ));
                }
                info.attempt = message.attempts;
            } else {
                let mut envelope = message.envelope.clone();
                envelope.recipients = to_try.iter().map(|&i| recipients[i].clone()).collect();
                let report = attempt::attempt(&self.inner, message, &envelope).await;
                info.mx_host = report.mx_host.clone();
                info.tls_version = report.tls_version;
                info.duration_ms = report.started.elapsed().as_millis() as i64;
                for (&i, verdict) in to_try.iter().zip(report.verdicts) {
                    fates.push((i, verdict.into()));
                }
            }
        }
        fates.sort_by_key(|(i, _)| *i);
        self.finish(message, tenant.as_ref(), fates, info, now)
            .await
    }

    /// A paused domain's record goes back to the first retry tier, attempts unchanged.
    async fn hold_paused(
        &self,
        message: &Queued,
        until: Option<SystemTime>,
        now: SystemTime,
    ) -> Option<()> {
        let delay = self
            .tiers
            .first()
            .copied()
            .unwrap_or(Duration::from_secs(60));
        let at = until.map_or(now + delay, |u| u.min(now + delay)).max(now);
        let mut held = message.clone();
        held.not_before = Some(at);
        let record = OutgoingRecord::new(message.routing_key.to_string(), held.encode_to_bytes())
            .not_before(at);
        let topic = self.topics.retry(delay);
        self.publish("holding a paused domain's mail", &topic, vec![record])
            .await?;
        self.inner
            .metrics
            .outcome("paused", message.envelope.recipients.len() as u64);
        Some(())
    }

    /// Makes every fate durable, then the caller acknowledges the record.
    async fn finish(
        &self,
        message: &Queued,
        tenant: Option<&Tenant>,
        mut fates: Vec<(usize, Fate)>,
        info: AttemptInfo,
        now: SystemTime,
    ) -> Option<Vec<(usize, Fate)>> {
        let recipients = &message.envelope.recipients;
        let inner = &self.inner;

        // Deferred recipients: the next tier, or expiry when it would come too late.
        let attempts = info.attempt.max(message.attempts);
        let deferred: Vec<usize> = fates
            .iter()
            .filter(|(_, f)| matches!(f, Fate::Deferred { .. }))
            .map(|(i, _)| *i)
            .collect();
        let mut retry_record = None;
        if !deferred.is_empty() {
            match retry::next_step(
                &self.tiers,
                attempts,
                message.first_seen,
                inner.config.max_age,
                now,
            ) {
                NextStep::Retry { delay, at } => {
                    let mut next = message.clone();
                    next.attempts = attempts;
                    next.not_before = Some(at);
                    next.envelope.recipients =
                        deferred.iter().map(|&i| recipients[i].clone()).collect();
                    let record = OutgoingRecord::new(
                        message.routing_key.to_string(),
                        next.encode_to_bytes(),
                    )
                    .not_before(at);
                    retry_record = Some((self.topics.retry(delay), record));
                }
                NextStep::Expire => {
                    for (_, fate) in fates.iter_mut() {
                        if let Fate::Deferred { reply, reason } = fate {
                            *fate = Fate::Expired {
                                reply: reply.take(),
                                reason: format!(
                                    "expired after {} attempts; last: {reason}",
                                    attempts
                                ),
                            };
                        }
                    }
                }
            }
        }

        // The ledger first: once it says delivered, a replay will not mail again. The
        // domain's counters and the message's history ride along in the same write.
        let delivered: Vec<Address> = fates
            .iter()
            .filter(|(_, f)| matches!(f, Fate::Delivered(_)))
            .map(|(i, _)| recipients[*i].address.clone())
            .collect();
        let mut counts = DomainCounters::default();
        let history: Vec<TrackEntry> = fates
            .iter()
            .filter_map(|(i, fate)| {
                match fate.counter() {
                    Some(DomainCounter::Delivered) => counts.delivered += 1,
                    Some(DomainCounter::Deferred) => counts.deferred += 1,
                    Some(DomainCounter::Bounced) => counts.bounced += 1,
                    None => {}
                }
                Some(TrackEntry {
                    at: now,
                    kind: fate.track_kind()?,
                    recipient: Some(recipients[*i].address.to_string()),
                    detail: fate.detail(),
                })
            })
            .collect();
        let settlement = Settlement {
            id: message.id,
            domain: message.routing_key.domain(),
            delivered: &delivered,
            counts,
            history: &history,
        };
        self.state_op("ledger write", (), || self.state.settle(&settlement))
            .await?;

        // DSNs (failures; successes where NOTIFY=SUCCESS asked for one) before the bounce
        // memory: a hard bounce suppresses the address, and a replay would then find it
        // suppressed and send no DSN. A replay makes its DSNs again with the same ids
        // (`dsns`), and the ledger keeps a DSN that was already mailed from going twice.
        let mail_records: Vec<OutgoingRecord> = self
            .dsns(message, &fates, &info, now)
            .into_iter()
            .map(|dsn| OutgoingRecord::new(dsn.routing_key.to_string(), dsn.encode_to_bytes()))
            .collect();
        self.publish("queueing DSNs", &self.topics.mail(), mail_records)
            .await?;

        // Bounce memory: hard bounces suppress the address.
        if let Some(tenant) = tenant {
            for (i, fate) in &fates {
                if let Fate::Bounced { class, reason, .. } = fate {
                    let address = &recipients[*i].address;
                    let source = format!("bounce: {reason}");
                    let fallback = kurir_state::BounceVerdict::default();
                    self.state_op("recording a bounce", fallback, || {
                        self.state.record_bounce(tenant, address, *class, &source)
                    })
                    .await?;
                }
            }
        }

        // The retry record.
        if let Some((topic, record)) = retry_record {
            self.publish("queueing a retry", &topic, vec![record])
                .await?;
        }

        // Events, one per recipient outcome.
        let events: Vec<OutgoingRecord> = fates
            .iter()
            .map(|(i, fate)| {
                let e = event(message, &recipients[*i], fate, &info, now);
                OutgoingRecord::new(message.routing_key.to_string(), e.encode_to_bytes())
            })
            .collect();
        self.publish("publishing events", &self.topics.events(), events)
            .await?;

        Some(fates)
    }

    fn dsns<'a>(
        &self,
        message: &'a Queued,
        fates: &[(usize, Fate)],
        info: &AttemptInfo,
        now: SystemTime,
    ) -> Vec<Queued> {
        let recipients = &message.envelope.recipients;
        let remote = (!info.mx_host.is_empty()).then_some(info.mx_host.as_str());
        // Only the recipients whose NOTIFY asks for it (most ask for no success DSN).
        let block = |r: &'a Recipient, action: DsnAction, fate: &Fate| {
            action.is_due(r).then(|| dsn_block(r, action, fate, remote))
        };
        let hostname = self.inner.config.hostname.as_str();
        let failed: Vec<DsnRecipient<'_>> = fates
            .iter()
            .filter_map(|(i, fate)| match fate {
                Fate::Bounced { .. } => block(&recipients[*i], DsnAction::Failed, fate),
                Fate::Expired { .. } => block(&recipients[*i], DsnAction::Expired, fate),
                Fate::Cancelled(_) => block(&recipients[*i], DsnAction::Failed, fate),
                _ => None,
            })
            .collect();
        // A replayed recipient's success DSN may not have been queued before the crash
        // that replays the record: it is made again, with the same id.
        let succeeded: Vec<DsnRecipient<'_>> = fates
            .iter()
            .filter_map(|(i, fate)| match fate {
                Fate::Delivered(_) | Fate::Replayed => {
                    block(&recipients[*i], DsnAction::Delivered, fate)
                }
                _ => None,
            })
            .collect();
        [(failed, "failure"), (succeeded, "success")]
            .into_iter()
            .filter(|(list, _)| !list.is_empty())
            .filter_map(|(list, kind)| {
                let id = dsn_id(message, kind, &list);
                let report = DsnReport {
                    reporting_mta: hostname,
                    message,
                    recipients: list,
                    now,
                };
                dsn::dsn_message(&report, id)
            })
            .collect()
    }

    /// Metrics and a log line per outcome (counters and history were written with the
    /// ledger).
    fn note(&self, message: &Queued, fates: &[(usize, Fate)]) {
        let recipients = &message.envelope.recipients;
        for (i, fate) in fates {
            self.inner.metrics.outcome(fate.metric(), 1);
            tracing::info!(id = %message.id, rcpt = %recipients[*i].address,
                outcome = %fate.outcome(), detail = %fate.detail(), "outcome");
        }
    }
}

/// A DSN's id, derived from the message's: a record replayed after a crash makes the same
/// DSN again with the same id (and the ledger keeps it from being mailed twice), while every
/// other DSN of the message gets an id of its own. The label names what makes a DSN: its
/// kind, the record it reports on (routing key: a record per recipient domain; attempts so
/// far: each retry record has more, and the count is in the record, so it does not change
/// when a bounce order or `max_age` makes the replay skip the attempt) and the recipients it
/// reports (a replay with a different outcome reports other recipients: a DSN of its own
/// rather than one dropped as a copy).
fn dsn_id(message: &Queued, kind: &str, recipients: &[DsnRecipient<'_>]) -> MessageId {
    let mut label = format!("dsn/{kind}/{}/{}/", message.routing_key, message.attempts);
    for r in recipients {
        label.push_str(&r.recipient.address.to_string());
        label.push('\0');
    }
    message.id.derived(label.as_bytes())
}

/// The DSN block of one recipient.
fn dsn_block<'a>(
    recipient: &'a Recipient,
    action: DsnAction,
    fate: &Fate,
    remote: Option<&str>,
) -> DsnRecipient<'a> {
    let reply = fate.reply().cloned();
    let status = match (&reply, fate) {
        (Some(reply), _) => reply.status(),
        (None, Fate::Expired { .. }) => "4.4.7".to_owned(),
        (None, Fate::Cancelled(_)) => "5.0.0".to_owned(),
        (None, Fate::Bounced { class, .. }) => match class {
            kurir_core::BounceClass::BadDomain => "5.1.2".to_owned(),
            _ => "5.0.0".to_owned(),
        },
        (None, _) => "2.0.0".to_owned(),
    };
    DsnRecipient {
        recipient,
        action,
        status,
        remote_mta: reply.as_ref().and(remote.map(str::to_owned)),
        // A replayed recipient's detail is about the record, not the delivery.
        reason: (reply.is_none() && !matches!(fate, Fate::Replayed)).then(|| fate.detail()),
        reply,
    }
}

/// The event of one recipient's outcome.
fn event(
    message: &Queued,
    recipient: &Recipient,
    fate: &Fate,
    info: &AttemptInfo,
    now: SystemTime,
) -> v1::Event {
    // A replayed recipient was not part of this attempt (if there was one).
    let replayed = matches!(fate, Fate::Replayed);
    let (mx_host, tls_version, attempt_duration_ms) = if replayed {
        Default::default()
    } else {
        let tls = info.tls_version.unwrap_or_default();
        (info.mx_host.clone(), tls.to_owned(), info.duration_ms)
    };
    let mut e = v1::Event {
        tenant: message.tenant.clone(),
        recipient: recipient.address.to_string(),
        routing_key: message.routing_key.to_string(),
        reply: fate.reply().map(RemoteReply::to_proto),
        mx_host,
        tls_version,
        attempt: if matches!(fate, Fate::Suppressed(_)) {
            0
        } else {
            info.attempt
        },
        queued_ms: now
            .duration_since(message.first_seen)
            .unwrap_or_default()
            .as_millis() as i64,
        attempt_duration_ms,
        time_unix_ms: time_to_unix_ms(now),
        tags: message
            .tags
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        trace: message.trace.clone(),
        replayed,
        ..v1::Event::default()
    };
    e.set_event_id(MessageId::new());
    e.set_message_id(message.id);
    e.set_core_outcome(fate.outcome());
    e
}
