//! A running [`GrpcServer`] on 127.0.0.1:0 over real backends (embedded queue and state in
//! a temp dir, or Kafka (Tansu) + Redis), with API keys for two tenants, tonic clients that
//! carry a key, and what was queued (mail records and events) collected in the background.
//!
//! Stable API for every test module:
//! - [`Harness::start`] / [`Harness::embedded`] / [`Harness::cluster`], with a tweak of the
//!   [`Setup`] (gRPC config, admin hooks, queue and state config) before the server starts;
//! - the keys ([`SUBMIT_KEY`], [`SUPPRESSION_KEY`], [`ADMIN_KEY`], [`OTHER_TENANT_KEY`],
//!   [`LIMITED_KEY`]) and clients with one of them ([`Harness::submission`],
//!   [`Harness::suppression`], [`Harness::admin`]; `""` sends no key);
//! - [`Harness::mail`] / [`Harness::events`] and the `wait_*` helpers; [`Harness::barrier`]
//!   to know every earlier record for a domain was collected;
//! - [`Harness::shutdown`] to start the drain and wait for `serve` to return.

// Shared by every module of the suite; not each uses every helper.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use kurir_lifecycle::Lifecycle;
use kurir_proto::auth::Bearer;
use kurir_proto::v1::admin_service_client::AdminServiceClient;
use kurir_proto::v1::submission_service_client::SubmissionServiceClient;
use kurir_proto::v1::suppression_service_client::SuppressionServiceClient;
use kurir_proto::{Queued, v1};
use kurir_queue::embedded::EmbeddedQueue;
use kurir_queue::kafka::KafkaQueue;
use kurir_queue::{Queue, QueueConfig};
use kurir_state::embedded::EmbeddedState;
use kurir_state::redis::RedisState;
use kurir_state::{State, StateConfig};
use kurir_submit::grpc::server::GrpcError;
use kurir_submit::grpc::{
    AdminHooks, ApiKeyConfig, ApiService, GrpcConfig, GrpcServer, api_key_sha256,
};
use kurir_submit::publish::{PublishConfig, Publisher};
use kurir_testkit::{KafkaBroker, RedisServer, TestCa, wait_for};
use tempfile::TempDir;
use tokio::net::TcpListener;
use tokio::runtime::RuntimeFlavor;
use tokio::task::JoinHandle;
use tonic::Request;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

pub(crate) const HOSTNAME: &str = "grpc.kurir.test";
pub(crate) const TOPIC_PREFIX: &str = "kurir";
pub(crate) const TENANT: &str = "acme";
pub(crate) const OTHER_TENANT: &str = "globex";

/// Submission only, tenant [`TENANT`].
pub(crate) const SUBMIT_KEY: &str = "kurir-test-submit-4f1c9a0e7d2b48a6";
/// Suppression only, tenant [`TENANT`].
pub(crate) const SUPPRESSION_KEY: &str = "kurir-test-suppression-0b7e6d5c4a3f";
/// Every service (admin may also use the global suppression list), tenant [`TENANT`].
pub(crate) const ADMIN_KEY: &str = "kurir-test-admin-9c8b7a6f5e4d3c2b";
/// Submission and suppression, tenant [`OTHER_TENANT`].
pub(crate) const OTHER_TENANT_KEY: &str = "kurir-test-globex-1a2b3c4d5e6f7a8b";
/// Submission and suppression, tenant [`TENANT`], one request (message) per 5 seconds.
pub(crate) const LIMITED_KEY: &str = "kurir-test-limited-7f6e5d4c3b2a1908";
/// The name [`LIMITED_KEY`] has in the config (and in its errors).
pub(crate) const LIMITED_KEY_NAME: &str = "limited";

/// Every test key: (name, key, tenant, services, rate per second).
pub(crate) fn keys() -> Vec<ApiKeyConfig> {
    use ApiService::{Admin, Submission, Suppression};
    let key =
        |name: &str, key: &str, tenant: &str, services: Vec<ApiService>, rate: f64| ApiKeyConfig {
            name: name.into(),
            sha256: api_key_sha256(key),
            tenant: tenant.into(),
            services,
            rate_per_second: rate,
        };
    vec![
        key("submit", SUBMIT_KEY, TENANT, vec![Submission], 0.0),
        key(
            "suppression",
            SUPPRESSION_KEY,
            TENANT,
            vec![Suppression],
            0.0,
        ),
        key(
            "admin",
            ADMIN_KEY,
            TENANT,
            vec![Submission, Suppression, Admin],
            0.0,
        ),
        key(
            "globex",
            OTHER_TENANT_KEY,
            OTHER_TENANT,
            vec![Submission, Suppression],
            0.0,
        ),
        key(
            LIMITED_KEY_NAME,
            LIMITED_KEY,
            TENANT,
            vec![Submission, Suppression],
            0.2,
        ),
    ]
}

/// What a test may change before the server starts.
pub(crate) struct Setup {
    pub(crate) grpc: GrpcConfig,
    pub(crate) hooks: AdminHooks,
    pub(crate) queue: QueueConfig,
    pub(crate) state: StateConfig,
    /// A certificate for `localhost` and 127.0.0.1 from [`Harness::ca`], and the CA file,
    /// for `grpc.tls` (not set by default).
    pub(crate) cert_file: PathBuf,
    pub(crate) key_file: PathBuf,
    pub(crate) ca_file: PathBuf,
}

/// A running server and what it runs on.
pub(crate) struct Harness<Q: Queue + Clone = EmbeddedQueue, S: State + Clone = EmbeddedState> {
    pub(crate) addr: SocketAddr,
    pub(crate) channel: Channel,
    pub(crate) queue: Q,
    pub(crate) state: S,
    /// The server's publisher (for `normalise` comparisons).
    pub(crate) publisher: Publisher<Q>,
    pub(crate) lifecycle: Lifecycle,
    pub(crate) ca: TestCa,
    /// The configuration the server runs with.
    pub(crate) grpc: GrpcConfig,
    pub(crate) queue_config: QueueConfig,
    mail: Arc<Mutex<Vec<Queued>>>,
    events: Arc<Mutex<Vec<(String, v1::Event)>>>,
    server: Option<JoinHandle<Result<(), GrpcError>>>,
    collectors: Vec<JoinHandle<()>>,
    /// Tells the collectors to leave their consumer groups.
    stop: tokio::sync::watch::Sender<bool>,
    _broker: Option<KafkaBroker>,
    _redis: Option<RedisServer>,
    _dir: TempDir,
}

impl Harness<EmbeddedQueue, EmbeddedState> {
    /// The embedded backends, default setup.
    pub(crate) async fn start() -> Self {
        Self::embedded(|_| {}).await
    }

    /// The embedded backends in a temp dir.
    pub(crate) async fn embedded(tweak: impl FnOnce(&mut Setup)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ca = TestCa::new();
        let mut setup = setup(&dir, &ca);
        tweak(&mut setup);
        let queue = EmbeddedQueue::open(&dir.path().join("queue"), &setup.queue).unwrap();
        let state = EmbeddedState::open(&dir.path().join("state"), &setup.state).unwrap();
        Self::run(dir, ca, setup, queue, state, None, None).await
    }
}

impl Harness<KafkaQueue, RedisState> {
    /// Kafka (Tansu) and Redis, each started for this harness.
    pub(crate) async fn cluster(tweak: impl FnOnce(&mut Setup)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ca = TestCa::new();
        let broker = KafkaBroker::start().await.unwrap();
        let redis = RedisServer::start().await.unwrap();
        let mut setup = setup(&dir, &ca);
        setup.queue.backend = kurir_queue::config::Backend::Kafka;
        setup.queue.kafka.brokers = broker.bootstrap_servers();
        setup.queue.kafka.linger = Duration::ZERO;
        setup.queue.kafka.session_timeout = Duration::from_secs(6);
        // Tansu 0.6 cannot fetch from the middle of a multi-record batch (see
        // kurir_testkit::kafka); real Kafka needs no such setting.
        setup
            .queue
            .kafka
            .properties
            .insert("batch.num.messages".into(), "1".into());
        setup.state.backend = kurir_state::config::Backend::Redis;
        setup.state.redis.url = redis.url();
        tweak(&mut setup);
        let queue = KafkaQueue::connect(&setup.queue).unwrap();
        let state = RedisState::connect(&setup.state).await.unwrap();
        Self::run(dir, ca, setup, queue, state, Some(broker), Some(redis)).await
    }
}

fn setup(dir: &TempDir, ca: &TestCa) -> Setup {
    let (cert_file, key_file) = ca
        .write_cert_and_key(dir.path(), &["localhost", "127.0.0.1"])
        .unwrap();
    let ca_file = ca.write_ca_pem(dir.path()).unwrap();
    let queue = QueueConfig {
        topic_prefix: TOPIC_PREFIX.into(),
        partitions: 2,
        retry_partitions: 1,
        events_partitions: 1,
        retry_tiers: vec![Duration::from_secs(60)],
        drain_timeout: Duration::from_secs(1),
        ..QueueConfig::default()
    };
    let hooks = AdminHooks {
        sites: None,
        delivery: queue.delivery_subscriptions("kurir-deliver"),
        topic_specs: queue.topic_specs(),
        max_age: Duration::from_secs(5 * 86_400),
    };
    Setup {
        grpc: GrpcConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            api_keys: keys(),
            ..GrpcConfig::default()
        },
        hooks,
        queue,
        state: StateConfig {
            tenants: vec!["default".into(), TENANT.into(), OTHER_TENANT.into()],
            ..StateConfig::default()
        },
        cert_file,
        key_file,
        ca_file,
    }
}

impl<Q: Queue + Clone, S: State + Clone> Harness<Q, S> {
    async fn run(
        dir: TempDir,
        ca: TestCa,
        setup: Setup,
        queue: Q,
        state: S,
        broker: Option<KafkaBroker>,
        redis: Option<RedisServer>,
    ) -> Self {
        queue
            .ensure_topics(&setup.queue.topic_specs())
            .await
            .unwrap();
        let topics = setup.queue.topics();
        let publisher = Publisher::new(
            queue.clone(),
            PublishConfig {
                hostname: HOSTNAME.into(),
                topic: topics.mail(),
                ack_timeout: Duration::from_secs(10),
                shards: Default::default(),
            },
        );
        let lifecycle = Lifecycle::new();
        let server = GrpcServer::new(
            setup.grpc.clone(),
            publisher.clone(),
            queue.clone(),
            state.clone(),
            setup.hooks,
            lifecycle.clone(),
        )
        .unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(server.serve(listener));
        let scheme = if setup.grpc.tls.is_some() {
            "https"
        } else {
            "http"
        };
        // Lazy: a TLS test connects with its own endpoint; this one is for plain text.
        let channel = Endpoint::from_shared(format!("{scheme}://{addr}"))
            .unwrap()
            .connect_lazy();
        let mut harness = Self {
            addr,
            channel,
            queue,
            state,
            publisher,
            lifecycle,
            ca,
            grpc: setup.grpc,
            queue_config: setup.queue,
            mail: Arc::default(),
            events: Arc::default(),
            server: Some(task),
            collectors: Vec::new(),
            stop: tokio::sync::watch::Sender::new(false),
            _broker: broker,
            _redis: redis,
            _dir: dir,
        };
        harness.collect(topics.mail(), topics.events());
        harness
    }

    /// Collects the mail and events topics in test consumer groups of their own.
    fn collect(&mut self, mail_topic: String, events_topic: String) {
        let mail = self.mail.clone();
        self.collectors.push(tokio::spawn(collect(
            self.queue.clone(),
            "test-mail",
            mail_topic,
            self.stop.subscribe(),
            {
                move |_key, bytes| {
                    mail.lock()
                        .unwrap()
                        .push(Queued::decode(bytes).expect("a queued message"))
                }
            },
        )));
        let events = self.events.clone();
        self.collectors.push(tokio::spawn(collect(
            self.queue.clone(),
            "test-events",
            events_topic,
            self.stop.subscribe(),
            move |key, bytes| {
                let event = v1::Event::decode_bytes(bytes).expect("an event");
                events.lock().unwrap().push((key, event));
            },
        )));
    }

    /// An endpoint to the server, for clients with their own settings (TLS, windows).
    pub(crate) fn endpoint(&self) -> Endpoint {
        Endpoint::from_shared(format!("http://{}", self.addr)).unwrap()
    }

    /// A submission client sending `key` (`""`: no key).
    pub(crate) fn submission(&self, key: &str) -> SubmissionServiceClient<Authed> {
        SubmissionServiceClient::with_interceptor(self.channel.clone(), bearer(key))
            .max_decoding_message_size(usize::MAX)
    }

    /// A suppression client sending `key` (`""`: no key).
    pub(crate) fn suppression(&self, key: &str) -> SuppressionServiceClient<Authed> {
        SuppressionServiceClient::with_interceptor(self.channel.clone(), bearer(key))
            .max_decoding_message_size(usize::MAX)
    }

    /// An admin client sending `key` (`""`: no key).
    pub(crate) fn admin(&self, key: &str) -> AdminServiceClient<Authed> {
        AdminServiceClient::with_interceptor(self.channel.clone(), bearer(key))
            .max_decoding_message_size(usize::MAX)
    }

    /// The mail records collected so far.
    pub(crate) fn mail(&self) -> Vec<Queued> {
        self.mail.lock().unwrap().clone()
    }

    /// The events collected so far, each with its record key.
    pub(crate) fn events(&self) -> Vec<(String, v1::Event)> {
        self.events.lock().unwrap().clone()
    }

    /// Waits until `n` mail records were collected (at most 30 s); returns them all.
    pub(crate) async fn wait_mail(&self, n: usize) -> Vec<Queued> {
        wait_for(
            &format!("{n} mail records"),
            Duration::from_secs(30),
            || async {
                let mail = self.mail();
                (mail.len() >= n).then_some(mail)
            },
        )
        .await
        .unwrap()
    }

    /// Waits until the records of message `id` (by its text) were collected and
    /// [`Harness::barrier`] shows no more can come for `domain`; returns them.
    pub(crate) async fn mail_of(&self, id: &str, domain: &str) -> Vec<Queued> {
        self.barrier(domain).await;
        self.mail()
            .into_iter()
            .filter(|q| q.id.to_string() == id)
            .collect()
    }

    /// Waits until `n` events were collected (at most 30 s); returns them all.
    pub(crate) async fn wait_events(&self, n: usize) -> Vec<(String, v1::Event)> {
        wait_for(&format!("{n} events"), Duration::from_secs(30), || async {
            let events = self.events();
            (events.len() >= n).then_some(events)
        })
        .await
        .unwrap()
    }

    /// Publishes a marker message to `barrier@<domain>` (straight through the publisher)
    /// and waits until it was collected. Records of one domain share a partition and are
    /// read in order, so every record for `domain` published before is collected by then.
    pub(crate) async fn barrier(&self, domain: &str) {
        let address = kurir_core::Address::parse(&format!("barrier@{domain}")).unwrap();
        let mut envelope = kurir_core::Envelope::new(None);
        envelope
            .recipients
            .push(kurir_core::Recipient::new(address));
        let submission = kurir_submit::publish::Submission {
            tenant: TENANT.into(),
            envelope,
            body: Bytes::from_static(b"Subject: barrier\r\n\r\n"),
            received: None,
            traceparent: None,
            tags: Default::default(),
            suppressed: Vec::new(),
        };
        let id = self.publisher.publish(submission).await.unwrap().id;
        wait_for("the barrier record", Duration::from_secs(30), || async {
            self.mail().iter().any(|q| q.id == id).then_some(())
        })
        .await
        .unwrap();
    }

    /// Begins shutdown and waits (at most 30 s) for `serve` to return.
    pub(crate) async fn shutdown(&mut self) -> Result<(), GrpcError> {
        self.lifecycle.shutdown();
        let task = self.server.take().expect("not shut down yet");
        tokio::time::timeout(Duration::from_secs(30), task)
            .await
            .expect("serve returns after shutdown")
            .expect("serve did not panic")
    }
}

impl<Q: Queue + Clone, S: State + Clone> Drop for Harness<Q, S> {
    /// On a broker, the collectors' consumers leave their groups before it is stopped: a
    /// librdkafka consumer closed after its broker is gone waits for it without end (one CI
    /// run hung in this teardown). Waiting needs a multi-threaded runtime, which the
    /// cluster tests use; elsewhere the collectors are aborted.
    fn drop(&mut self) {
        self.lifecycle.shutdown();
        if let Some(task) = self.server.take() {
            task.abort();
        }
        let _ = self.stop.send(true);
        let collectors = std::mem::take(&mut self.collectors);
        let runtime = tokio::runtime::Handle::current();
        if self._broker.is_some() && runtime.runtime_flavor() == RuntimeFlavor::MultiThread {
            tokio::task::block_in_place(|| {
                runtime.block_on(async {
                    for task in collectors {
                        let _ = tokio::time::timeout(Duration::from_secs(30), task).await;
                    }
                });
            });
        } else {
            for task in collectors {
                task.abort();
            }
        }
    }
}

/// Reads `topic` as consumer group `group`, handing each record's key and value to `push`.
async fn collect<Q: Queue>(
    queue: Q,
    group: &str,
    topic: String,
    mut stop: tokio::sync::watch::Receiver<bool>,
    mut push: impl FnMut(String, Bytes) + Send,
) {
    let mut records = queue
        .subscribe(group, &[topic])
        .await
        .unwrap()
        .all_records();
    loop {
        tokio::select! {
            // Leave the group while the broker still runs (see `Harness`'s `Drop`).
            _ = stop.changed() => {
                records.close().await;
                return;
            }
            record = records.next() => match record {
                Some(record) => push(record.key, record.value),
                None => return,
            },
        }
    }
}

/// The interceptor that sends `key` with every call (nothing for `""`).
pub(crate) fn bearer(key: &str) -> Bearer {
    if key.is_empty() {
        Bearer::none()
    } else {
        Bearer::new(key).expect("a test key is valid in a header")
    }
}

/// A channel whose calls carry a key.
pub(crate) type Authed = InterceptedService<Channel, Bearer>;

/// `request` with `authorization: Bearer <key>`, for clients without an interceptor.
pub(crate) fn with_key<T>(key: &str, message: T) -> Request<T> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {key}").parse().unwrap());
    request
}

/// A raw request from `from` to `to` with `data`.
pub(crate) fn raw(from: &str, to: &[&str], data: &str) -> v1::SubmitRequest {
    v1::SubmitRequest {
        message: Some(v1::submit_request::Message::Raw(v1::RawMessage {
            envelope_from: from.into(),
            envelope_to: to.iter().map(|s| (*s).into()).collect(),
            data: data.as_bytes().to_vec(),
        })),
        ..Default::default()
    }
}

/// A small valid raw message.
pub(crate) fn message(subject: &str) -> String {
    format!("From: app@shop.test\r\nTo: rcpt@dest.test\r\nSubject: {subject}\r\n\r\nHello.\r\n")
}
