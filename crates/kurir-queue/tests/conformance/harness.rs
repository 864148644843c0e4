//! The backends under test, behind one interface.

use std::time::Duration;

use kurir_queue::config::Backend;
use kurir_queue::embedded::EmbeddedQueue;
use kurir_queue::kafka::KafkaQueue;
use kurir_queue::{Queue, QueueConfig, TopicSpec};
use kurir_testkit::KafkaBroker;
use tempfile::TempDir;

pub const TOPIC: &str = "kurir.mail";
pub const EVENTS: &str = "kurir.events";
pub const PARTITIONS: u32 = 4;

/// A running backend.
pub trait Harness: Sized + Send + 'static {
    type Q: Queue + Clone;

    /// Starts the backend with the test topics created.
    async fn start() -> Self;

    fn queue(&self) -> Self::Q;

    /// Stops every client of the queue and starts new ones, as after a crash of the node:
    /// embedded reopens the store from disk, Kafka connects a new client to the broker.
    async fn restart(&mut self);
}

fn test_config(backend: Backend) -> QueueConfig {
    let mut config = QueueConfig {
        backend,
        ..QueueConfig::default()
    };
    config.drain_timeout = Duration::from_secs(2);
    config.max_in_flight_per_partition = 256;
    config.kafka.linger = Duration::ZERO;
    config.kafka.session_timeout = Duration::from_secs(10);
    config
}

fn topics() -> Vec<TopicSpec> {
    vec![
        TopicSpec {
            name: TOPIC.into(),
            partitions: PARTITIONS,
        },
        TopicSpec {
            name: EVENTS.into(),
            partitions: 1,
        },
    ]
}

/// The embedded backend in a temp dir.
pub struct Embedded {
    dir: TempDir,
    config: QueueConfig,
    /// `None` only inside `restart`, between closing the old queue and opening the new one.
    queue: Option<EmbeddedQueue>,
}

impl Harness for Embedded {
    type Q = EmbeddedQueue;

    async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config = test_config(Backend::Embedded);
        let queue = EmbeddedQueue::open(dir.path(), &config).unwrap();
        queue.ensure_topics(&topics()).await.unwrap();
        Self {
            dir,
            config,
            queue: Some(queue),
        }
    }

    fn queue(&self) -> EmbeddedQueue {
        self.queue.clone().expect("queue open")
    }

    async fn restart(&mut self) {
        let old = self.queue.take().expect("queue open");
        old.close().await;
        // The store's lock goes with the last handle.
        drop(old);
        self.queue = Some(EmbeddedQueue::open(self.dir.path(), &self.config).unwrap());
    }
}

/// Kafka: the real Tansu broker.
pub struct Kafka {
    _broker: KafkaBroker,
    config: QueueConfig,
    queue: KafkaQueue,
}

impl Harness for Kafka {
    type Q = KafkaQueue;

    async fn start() -> Self {
        let broker = KafkaBroker::start().await.unwrap();
        let mut config = test_config(Backend::Kafka);
        config.kafka.brokers = broker.bootstrap_servers();
        // Tansu 0.6 cannot fetch from the middle of a multi-record batch and reports end
        // offsets from a batch's first record; one record per batch avoids both (see
        // kurir_testkit::kafka). Real Kafka needs no such setting.
        config
            .kafka
            .properties
            .insert("batch.num.messages".into(), "1".into());
        let queue = KafkaQueue::connect(&config).unwrap();
        queue.ensure_topics(&topics()).await.unwrap();
        Self {
            _broker: broker,
            config,
            queue,
        }
    }

    fn queue(&self) -> KafkaQueue {
        self.queue.clone()
    }

    async fn restart(&mut self) {
        self.queue = KafkaQueue::connect(&self.config).unwrap();
    }
}
