//! End-to-end delivery scenarios: a real queue (embedded, or the Tansu Kafka broker), a
//! real state store (embedded, or redis-server), the test kit's DNS server and SMTP sinks
//! on loopback addresses, and a delivery node running in-process.
//!
//! Every sink of a scenario listens on the same port (`mx_port`) on its own 127.0.0.x
//! address, so MX records can point at them by name as on the internet.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use kurir_core::{Address, Envelope, MessageId, Recipient, RoutingKey};
use kurir_deliver::config::DeliverConfig;
use kurir_deliver::pool::SiteSnapshot;
use kurir_deliver::{DeliverMetrics, Deliverer};
use kurir_lifecycle::Lifecycle;
use kurir_proto::{Queued, v1};
use kurir_queue::embedded::EmbeddedQueue;
use kurir_queue::kafka::KafkaQueue;
use kurir_queue::{OutgoingRecord, Queue, QueueConfig};
use kurir_state::embedded::EmbeddedState;
use kurir_state::redis::RedisState;
use kurir_state::{State, StateConfig};
use kurir_testkit::{DnsServer, KafkaBroker, RedisServer, SmtpSink, wait_for};
use tempfile::TempDir;
use tokio::task::JoinHandle;

pub(crate) const WAIT: Duration = Duration::from_secs(30);
/// How often nodes re-read domain pauses.
const PAUSE_POLL: Duration = Duration::from_millis(500);
pub(crate) const HOSTNAME: &str = "mta.kurir.test";
pub(crate) const SENDER: &str = "app@sender.test";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Embedded queue and state.
    Embedded,
    /// Kafka (Tansu) and Redis.
    Cluster,
}

#[derive(Clone)]
pub(crate) enum Backends {
    Embedded(EmbeddedQueue, EmbeddedState),
    Cluster(KafkaQueue, RedisState),
}

/// Runs `$body` with `$q` and `$s` bound to the concrete queue and state.
macro_rules! with_backends {
    ($b:expr, |$q:ident, $s:ident| $body:expr) => {
        match $b {
            Backends::Embedded($q, $s) => $body,
            Backends::Cluster($q, $s) => $body,
        }
    };
}

pub(crate) struct Env {
    pub(crate) kind: Kind,
    pub(crate) dns: DnsServer,
    pub(crate) mx_port: u16,
    pub(crate) queue_config: QueueConfig,
    pub(crate) state_config: StateConfig,
    pub(crate) backends: Backends,
    events: Arc<Mutex<Vec<v1::Event>>>,
    mail: Arc<Mutex<Vec<Queued>>>,
    _collectors: Vec<JoinHandle<()>>,
    /// Tells the collectors to leave their consumer groups.
    stop: tokio::sync::watch::Sender<bool>,
    _broker: Option<KafkaBroker>,
    _redis: Option<RedisServer>,
    _dir: TempDir,
}

impl Drop for Env {
    /// The collectors' Kafka consumers leave their groups before the broker is stopped: a
    /// librdkafka consumer closing after its broker is gone waits for it without end, and
    /// the test's runtime would wait for that consumer's thread.
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        let collectors = std::mem::take(&mut self._collectors);
        tokio::task::block_in_place(|| {
            tokio::runtime::Handle::current().block_on(async {
                for c in collectors {
                    let _ = tokio::time::timeout(WAIT, c).await;
                }
            });
        });
    }
}

/// A running delivery node.
pub(crate) struct Node {
    pub(crate) lifecycle: Lifecycle,
    pub(crate) metrics: DeliverMetrics,
    sites: Box<dyn Fn() -> Vec<SiteSnapshot> + Send + Sync>,
    assigned: Box<dyn Fn() -> Vec<(String, u32)> + Send + Sync>,
    task: Option<JoinHandle<()>>,
}

impl Node {
    pub(crate) fn sites(&self) -> Vec<SiteSnapshot> {
        (self.sites)()
    }

    /// Partitions the node owns now.
    pub(crate) fn assigned_partitions(&self) -> Vec<(String, u32)> {
        (self.assigned)()
    }

    /// Shuts the node down and waits for it.
    pub(crate) async fn stop(mut self) {
        self.lifecycle.shutdown();
        if let Some(task) = self.task.take() {
            tokio::time::timeout(WAIT, task)
                .await
                .expect("node stops")
                .unwrap();
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.lifecycle.shutdown();
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

impl Env {
    pub(crate) async fn start(kind: Kind) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let dns = DnsServer::start().await.unwrap();
        let mx_port = kurir_testkit::free_port();
        let mut queue_config = QueueConfig {
            partitions: 4,
            retry_partitions: 2,
            events_partitions: 1,
            retry_tiers: vec![Duration::from_secs(1), Duration::from_secs(2)],
            ..QueueConfig::default()
        };
        let mut state_config = StateConfig {
            tenants: vec!["default".into(), "acme".into()],
            ..StateConfig::default()
        };
        let (backends, broker, redis) = match kind {
            Kind::Embedded => {
                let queue = EmbeddedQueue::open(&dir.path().join("queue"), &queue_config).unwrap();
                let state = EmbeddedState::open(&dir.path().join("state"), &state_config).unwrap();
                (Backends::Embedded(queue, state), None, None)
            }
            Kind::Cluster => {
                let broker = KafkaBroker::start().await.unwrap();
                let redis = RedisServer::start().await.unwrap();
                queue_config.backend = kurir_queue::config::Backend::Kafka;
                queue_config.kafka.brokers = broker.bootstrap_servers();
                // Tansu 0.6 cannot fetch from the middle of a multi-record batch (see
                // kurir_testkit::kafka); real Kafka needs no such setting.
                queue_config
                    .kafka
                    .properties
                    .insert("batch.num.messages".into(), "1".into());
                queue_config.kafka.session_timeout = Duration::from_secs(6);
                queue_config.drain_timeout = Duration::from_secs(3);
                state_config.backend = kurir_state::config::Backend::Redis;
                state_config.redis.url = redis.url();
                let queue = KafkaQueue::connect(&queue_config).unwrap();
                let state = RedisState::connect(&state_config).await.unwrap();
                (Backends::Cluster(queue, state), Some(broker), Some(redis))
            }
        };
        let specs = queue_config.topic_specs();
        with_backends!(backends.clone(), |q, _s| q
            .ensure_topics(&specs)
            .await
            .unwrap());
        let mut env = Self {
            kind,
            dns,
            mx_port,
            queue_config,
            state_config,
            backends,
            events: Arc::default(),
            mail: Arc::default(),
            _collectors: Vec::new(),
            stop: tokio::sync::watch::channel(false).0,
            _broker: broker,
            _redis: redis,
            _dir: dir,
        };
        env.collect();
        env
    }

    /// Reads the events topic and the mail topic (DSNs land there) in test consumer
    /// groups of their own, into memory.
    fn collect(&mut self) {
        let (stop_events, stop_mail) = (self.stop.subscribe(), self.stop.subscribe());
        let topics = self.queue_config.topics();
        let events = self.events.clone();
        let mail = self.mail.clone();
        let events_topic = topics.events();
        let mail_topic = topics.mail();
        let backends = self.backends.clone();
        self._collectors.push(tokio::spawn(async move {
            with_backends!(backends, |q, _s| {
                collect_topic(
                    q.clone(),
                    "test-events",
                    events_topic,
                    stop_events,
                    move |bytes| {
                        events
                            .lock()
                            .unwrap()
                            .push(v1::Event::decode_bytes(bytes).expect("an event"));
                    },
                )
                .await
            })
        }));
        let backends = self.backends.clone();
        self._collectors.push(tokio::spawn(async move {
            with_backends!(backends, |q, _s| {
                collect_topic(
                    q.clone(),
                    "test-mail",
                    mail_topic,
                    stop_mail,
                    move |bytes| {
                        mail.lock()
                            .unwrap()
                            .push(Queued::decode(bytes).expect("a message"));
                    },
                )
                .await
            })
        }));
    }

    /// A delivery config pointed at this environment: the test DNS server, the sinks'
    /// port, short timeouts.
    pub(crate) fn config(&self) -> DeliverConfig {
        let mut c = DeliverConfig {
            hostname: HOSTNAME.into(),
            ..DeliverConfig::default()
        };
        c.dns.nameservers = vec![self.dns.addr()];
        c.dns.mx_port = self.mx_port;
        c.dns.timeout = Duration::from_millis(500);
        c.dns.attempts = 1;
        c.dns.min_negative_ttl = Duration::from_secs(1);
        c.dns.max_cache_ttl = Duration::from_secs(1);
        let t = &mut c.timeouts;
        for d in [
            &mut t.connect,
            &mut t.banner,
            &mut t.ehlo,
            &mut t.starttls,
            &mut t.auth,
            &mut t.mail,
            &mut t.rcpt,
            &mut t.data,
            &mut t.data_write,
            &mut t.data_end,
            &mut t.rset,
            &mut t.quit,
        ] {
            *d = Duration::from_secs(5);
        }
        c.site_down_hold = Duration::from_millis(500);
        c.max_age = Duration::from_secs(600);
        c
    }

    /// A sink on 127.0.0.`last` at the scenario's MX port, named `name` in DNS.
    pub(crate) async fn sink(&self, name: &str, last: u8) -> SmtpSink {
        let ip = Ipv4Addr::new(127, 0, 0, last);
        let sink = SmtpSink::builder()
            .ip(ip)
            .port(self.mx_port)
            .hostname(name)
            .start()
            .await
            .unwrap();
        self.dns.add_a(name, ip);
        sink
    }

    /// Starts a delivery node with `config`.
    pub(crate) async fn node(&self, config: DeliverConfig) -> Node {
        let lifecycle = Lifecycle::new();
        let queue_config = self.queue_config.clone();
        type Probe<T> = Box<dyn Fn() -> T + Send + Sync>;
        let (metrics, sites, assigned, task): (DeliverMetrics, Probe<_>, Probe<_>, _) =
            with_backends!(self.backends.clone(), |q, s| {
                let d = Deliverer::new(config, &queue_config, PAUSE_POLL, q, s, lifecycle.clone())
                    .unwrap();
                let metrics = d.metrics().clone();
                let (d2, d3) = (d.clone(), d.clone());
                let task = tokio::spawn(async move {
                    d.run(Duration::from_secs(10)).await.unwrap();
                });
                (
                    metrics,
                    Box::new(move || d2.sites()) as Probe<_>,
                    Box::new(move || d3.assigned_partitions()) as Probe<_>,
                    task,
                )
            });
        Node {
            lifecycle,
            metrics,
            sites,
            assigned,
            task: Some(task),
        }
    }

    /// Queues a message as the submission role would: one record per recipient domain.
    pub(crate) async fn submit(&self, sender: Option<&str>, to: &[&str], body: &str) -> MessageId {
        let mut envelope = Envelope::new(sender.map(|s| Address::parse(s).unwrap()));
        envelope.recipients = to
            .iter()
            .map(|r| Recipient::new(Address::parse(r).unwrap()))
            .collect();
        self.submit_envelope(envelope, body.as_bytes()).await
    }

    pub(crate) async fn submit_envelope(&self, envelope: Envelope, body: &[u8]) -> MessageId {
        let id = MessageId::new();
        let mut by_domain: BTreeMap<String, Vec<Recipient>> = BTreeMap::new();
        for r in &envelope.recipients {
            by_domain
                .entry(r.address.domain().as_str().to_owned())
                .or_default()
                .push(r.clone());
        }
        let records = by_domain
            .into_values()
            .map(|recipients| {
                let mut env = envelope.clone();
                env.recipients = recipients;
                mail_record(id, env, 0, body)
            })
            .collect();
        self.publish_mail(records).await;
        id
    }

    pub(crate) async fn publish_mail(&self, records: Vec<OutgoingRecord>) {
        let topic = self.queue_config.topics().mail();
        with_backends!(self.backends.clone(), |q, _s| q
            .publish(&topic, records)
            .await
            .unwrap());
    }

    /// Partitions of the topics a delivery node consumes (mail and retry tiers).
    pub(crate) fn partition_count(&self) -> usize {
        let c = &self.queue_config;
        (c.partitions + c.retry_partitions * c.retry_tiers.len() as u32) as usize
    }

    /// Every event so far.
    pub(crate) fn events(&self) -> Vec<v1::Event> {
        self.events.lock().unwrap().clone()
    }

    /// Waits until at least `n` events arrived; returns them all.
    pub(crate) async fn wait_events(&self, n: usize) -> Vec<v1::Event> {
        wait_for(&format!("{n} events"), WAIT, || async {
            let e = self.events();
            (e.len() >= n).then_some(e)
        })
        .await
        .unwrap()
    }

    /// Waits for the first event of `recipient` with `outcome`.
    pub(crate) async fn wait_event(&self, recipient: &str, outcome: v1::Outcome) -> v1::Event {
        wait_for(&format!("{outcome:?} for {recipient}"), WAIT, || async {
            self.events()
                .into_iter()
                .find(|e| e.recipient == recipient && e.outcome() == outcome)
        })
        .await
        .unwrap()
    }

    /// Messages on the mail topic with a null sender (DSNs).
    pub(crate) fn dsns(&self) -> Vec<Queued> {
        self.mail
            .lock()
            .unwrap()
            .iter()
            .filter(|q| q.envelope.sender.is_none())
            .cloned()
            .collect()
    }

    pub(crate) async fn is_suppressed(&self, address: &str) -> bool {
        let tenant = kurir_state::Tenant::new("default").unwrap();
        let address = Address::parse(address).unwrap();
        with_backends!(self.backends.clone(), |_q, s| {
            s.check_suppressed(&tenant, &[address]).await.unwrap()[0].is_some()
        })
    }
}

async fn collect_topic<Q: Queue>(
    queue: Q,
    group: &str,
    topic: String,
    stop: tokio::sync::watch::Receiver<bool>,
    mut push: impl FnMut(Bytes) + Send,
) {
    let mut records = queue
        .subscribe(group, &[topic])
        .await
        .unwrap()
        .all_records();
    let mut stop = stop;
    loop {
        tokio::select! {
            // Leave the group while the broker still runs (see `Env`'s `Drop`).
            _ = stop.changed() => {
                records.close().await;
                return;
            }
            record = records.next() => match record {
                Some(record) => push(record.value),
                None => return,
            },
        }
    }
}

/// Declares a scenario test for both backends: `scenario!(name, body_fn)` where
/// `body_fn(Env)` is an async fn.
macro_rules! scenario {
    ($name:ident, $body:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn embedded() {
                let env = crate::harness::Env::start(crate::harness::Kind::Embedded).await;
                super::$body(env).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn cluster() {
                let env = crate::harness::Env::start(crate::harness::Kind::Cluster).await;
                super::$body(env).await;
            }
        }
    };
}

pub(crate) use scenario;

/// Waits (bounded by [`WAIT`]) until `condition` holds.
pub(crate) async fn wait_until(condition: impl Fn() -> bool) {
    wait_for("a condition", WAIT, || async { condition().then_some(()) })
        .await
        .unwrap();
}

// --- helpers for the routing, bounce and domain-control scenarios ----------------------

impl Env {
    /// Every message on the mail topic so far: the ones submitted and the DSNs.
    pub(crate) fn mail(&self) -> Vec<Queued> {
        self.mail.lock().unwrap().clone()
    }

    /// DSNs addressed to `recipient`.
    pub(crate) fn dsns_to(&self, recipient: &str) -> Vec<Queued> {
        self.dsns()
            .into_iter()
            .filter(|q| {
                q.envelope
                    .recipients
                    .iter()
                    .any(|r| r.address.to_string() == recipient)
            })
            .collect()
    }

    /// Waits until the mail collector has read a record published after everything that
    /// went to the mail topic under `domain`'s routing key so far: after this, what is
    /// not in [`Env::mail`] for that key was never published. The marker has a null
    /// sender, so whatever becomes of it makes no DSN. Returns the marker's id.
    pub(crate) async fn sync_mail(&self, domain: &str) -> MessageId {
        let marker = self
            .submit(
                None,
                &[&format!("sync-marker@{domain}")],
                "Subject: sync\r\n\r\n.\r\n",
            )
            .await;
        wait_for("the mail topic marker", WAIT, || async {
            self.mail().iter().any(|q| q.id == marker).then_some(())
        })
        .await
        .unwrap();
        marker
    }

    /// Suppresses `address` for the default tenant, as an operator would.
    pub(crate) async fn suppress(&self, address: &str) {
        let entry = kurir_state::Suppression {
            scope: kurir_state::Scope::Tenant(kurir_state::Tenant::new("default").unwrap()),
            address: Address::parse(address).unwrap(),
            reason: kurir_state::Reason::Manual,
            source: "test".into(),
            created: SystemTime::now(),
            expires: None,
        };
        with_backends!(self.backends.clone(), |_q, s| s
            .suppress(&[entry])
            .await
            .unwrap());
    }

    /// Lifts the default tenant's suppression of `address`.
    pub(crate) async fn unsuppress(&self, address: &str) {
        let scope = kurir_state::Scope::Tenant(kurir_state::Tenant::new("default").unwrap());
        let address = Address::parse(address).unwrap();
        with_backends!(self.backends.clone(), |_q, s| s
            .unsuppress(&scope, &[address])
            .await
            .unwrap());
    }

    /// Writes the ledger as a delivery node does once `recipients` of `id` are delivered.
    pub(crate) async fn mark_delivered(&self, id: MessageId, recipients: &[&str]) {
        let recipients: Vec<Address> = recipients
            .iter()
            .map(|r| Address::parse(r).unwrap())
            .collect();
        with_backends!(self.backends.clone(), |_q, s| s
            .mark_delivered(id, &recipients)
            .await
            .unwrap());
    }

    /// Pauses delivery to `domain` until resumed.
    pub(crate) async fn pause_domain(&self, domain: &str) {
        self.control_domain(domain, kurir_state::PauseAction::Hold, "test")
            .await;
    }

    /// Stores a pause of `domain` with `action` (a bounce order with `Bounce`).
    pub(crate) async fn control_domain(
        &self,
        domain: &str,
        action: kurir_state::PauseAction,
        reason: &str,
    ) {
        let pause = kurir_state::DomainPause {
            domain: kurir_core::Domain::parse(domain).unwrap(),
            until: None,
            reason: reason.into(),
            action,
        };
        with_backends!(self.backends.clone(), |_q, s| s
            .pause_domain(&pause)
            .await
            .unwrap());
    }

    /// Resumes delivery to `domain`; whether it was paused.
    pub(crate) async fn resume_domain(&self, domain: &str) -> bool {
        let domain = kurir_core::Domain::parse(domain).unwrap();
        with_backends!(self.backends.clone(), |_q, s| s
            .resume_domain(&domain)
            .await
            .unwrap())
    }
}

/// The mail record of message `id` to `envelope`'s recipients (all in one domain, its
/// routing key), as submission queues it, or a retry tier after `attempts` attempts.
pub(crate) fn mail_record(
    id: MessageId,
    envelope: Envelope,
    attempts: u32,
    body: &[u8],
) -> OutgoingRecord {
    let domain = envelope.recipients[0].address.domain().clone();
    let q = Queued {
        id,
        tenant: "default".into(),
        routing_key: RoutingKey::new(domain.clone()),
        envelope,
        attempts,
        first_seen: SystemTime::now(),
        not_before: None,
        trace: None,
        tags: BTreeMap::from([("campaign".to_owned(), "test".to_owned())]),
        body: Bytes::copy_from_slice(body),
    };
    OutgoingRecord::new(domain.as_str(), q.encode_to_bytes())
}

/// A DSN taken apart for assertions (RFC 3464).
#[derive(Debug)]
pub(crate) struct ParsedDsn {
    pub(crate) subject: String,
    /// Part 1, for humans.
    pub(crate) text: String,
    /// Part 2, `message/delivery-status`, unfolded: the per-message fields, then one block
    /// of fields per recipient.
    pub(crate) blocks: Vec<Vec<(String, String)>>,
    /// Part 3's content type (`text/rfc822-headers` or `message/rfc822`).
    pub(crate) returned_type: String,
}

impl ParsedDsn {
    /// The recipient block whose `Final-Recipient` is `rfc822; recipient`.
    pub(crate) fn recipient(&self, recipient: &str) -> &[(String, String)] {
        let want = format!("rfc822; {recipient}");
        self.blocks
            .iter()
            .skip(1)
            .find(|b| b.iter().any(|(n, v)| n == "Final-Recipient" && *v == want))
            .unwrap_or_else(|| panic!("no block for {recipient} in {:?}", self.blocks))
    }
}

/// The value of field `name` in a DSN block.
pub(crate) fn dsn_field<'a>(block: &'a [(String, String)], name: &str) -> Option<&'a str> {
    block
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// Parses a queued DSN's body with `mail-parser`, checking that it is a
/// `multipart/report; report-type=delivery-status` of three parts.
pub(crate) fn parse_dsn(dsn: &Queued) -> ParsedDsn {
    use mail_parser::{MessageParser, MessagePart, MimeHeaders};
    let message = MessageParser::default()
        .parse(&dsn.body[..])
        .expect("the DSN parses");
    let ct = message.content_type().expect("a Content-Type");
    assert_eq!(
        (ct.ctype(), ct.subtype()),
        ("multipart", Some("report")),
        "{ct:?}"
    );
    assert_eq!(ct.attribute("report-type"), Some("delivery-status"));
    let ids = message.parts[0].sub_parts().expect("a multipart body");
    let parts: Vec<&MessagePart<'_>> = ids.iter().map(|&i| &message.parts[i as usize]).collect();
    assert_eq!(parts.len(), 3, "three parts");
    let type_of = |p: &MessagePart<'_>| {
        let ct = p.content_type().expect("a part Content-Type");
        format!("{}/{}", ct.ctype(), ct.subtype().unwrap_or_default())
    };
    assert_eq!(type_of(parts[0]), "text/plain");
    assert_eq!(type_of(parts[1]), "message/delivery-status");
    let status = std::str::from_utf8(parts[1].contents()).expect("ASCII status fields");
    let blocks = status
        .replace("\r\n ", " ")
        .replace("\r\n\t", " ")
        .trim_end_matches("\r\n")
        .split("\r\n\r\n")
        .map(|block| {
            block
                .split("\r\n")
                .filter_map(|line| line.split_once(':'))
                .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
                .collect()
        })
        .collect();
    ParsedDsn {
        subject: message.subject().unwrap_or_default().to_owned(),
        text: parts[0].text_contents().unwrap_or_default().to_owned(),
        blocks,
        returned_type: type_of(parts[2]),
    }
}
