//! A real Kafka-API broker for tests: Tansu on in-memory storage.

use std::time::Duration;

use anyhow::Context;
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use tempfile::TempDir;

use crate::process::ChildProcess;
use crate::wait::{free_port, wait_for};

/// How long a fresh broker may take to answer a metadata request.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
const START_ATTEMPTS: usize = 3;
/// The command that installs the broker, quoted when it is missing.
pub const INSTALL_HINT: &str =
    "cargo install tansu --locked --version 0.6.0 --features dynostore (scripts/test.sh does this)";

/// The Kafka-API broker [Tansu](https://crates.io/crates/tansu) on 127.0.0.1 with in-memory
/// storage, in its own temp dir. Ready (answers a metadata request from librdkafka) when
/// [`KafkaBroker::start`] returns; killed on drop.
///
/// Known behaviour of Tansu 0.6 that tests must respect:
/// - with `linger.ms` > 0 each record waits a full linger, so producers in tests use
///   [`KafkaBroker::client_config`], which sets `linger.ms=0`;
/// - with several records in one batch, a fetch from an offset inside the batch returns
///   nothing (a consumer resuming mid-batch stalls) and the reported end offset is the last
///   batch's first offset + 1; tests that resume mid-batch or read lag set the producer's
///   `batch.num.messages=1`.
#[derive(Debug)]
pub struct KafkaBroker {
    port: u16,
    _dir: TempDir,
    _process: ChildProcess,
}

impl KafkaBroker {
    /// Starts a broker on a free port.
    pub async fn start() -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new().prefix("kurir-tansu-").tempdir()?;
        let mut last_error = None;
        for _ in 0..START_ATTEMPTS {
            let port = free_port();
            match spawn_and_wait(port, &dir).await {
                Ok(process) => {
                    return Ok(Self {
                        port,
                        _dir: dir,
                        _process: process,
                    });
                }
                Err(e) => last_error = Some(e),
            }
        }
        Err(last_error.expect("at least one attempt"))
    }

    /// `127.0.0.1:PORT`, for `bootstrap.servers`.
    pub fn bootstrap_servers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// A librdkafka client config for this broker, with settings tests need
    /// (`linger.ms=0`, see the type docs).
    pub fn client_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", self.bootstrap_servers())
            .set("linger.ms", "0")
            .set("socket.timeout.ms", "10000");
        config
    }

    /// Creates `topic` with `partitions` partitions (replication factor 1).
    pub async fn create_topic(&self, topic: &str, partitions: i32) -> anyhow::Result<()> {
        let admin: AdminClient<DefaultClientContext> =
            self.client_config().create().context("admin client")?;
        let new_topic = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
        let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
        let results = admin.create_topics([&new_topic], &options).await?;
        for result in results {
            result.map_err(|(name, code)| anyhow::anyhow!("creating topic {name}: {code}"))?;
        }
        Ok(())
    }

    /// How many partitions `topic` has, from the broker's metadata (`None` if it does not
    /// exist).
    pub async fn partition_count(&self, topic: &str) -> anyhow::Result<Option<usize>> {
        let consumer: BaseConsumer = self.client_config().create()?;
        let topic = topic.to_owned();
        tokio::task::spawn_blocking(move || {
            let metadata = consumer.fetch_metadata(Some(&topic), Duration::from_secs(5))?;
            Ok(metadata
                .topics()
                .iter()
                .find(|t| t.name() == topic && t.error().is_none())
                .map(|t| t.partitions().len())
                .filter(|&n| n > 0))
        })
        .await?
    }
}

async fn spawn_and_wait(port: u16, dir: &TempDir) -> anyhow::Result<ChildProcess> {
    let url = format!("tcp://127.0.0.1:{port}");
    let args: Vec<String> = [
        "broker",
        "--storage-engine",
        "memory://tansu/",
        "--listener-url",
        &url,
        "--advertised-listener-url",
        &url,
        "--cluster-id",
        "kurir-test",
    ]
    .map(String::from)
    .to_vec();
    let mut process =
        ChildProcess::spawn("tansu", "tansu", &args, &[("RUST_LOG", "warn")], dir.path())
            .with_context(|| format!("the Kafka test broker is missing: {INSTALL_HINT}"))?;
    let bootstrap = format!("127.0.0.1:{port}");
    let ready = wait_for("tansu to answer a metadata request", READY_TIMEOUT, || {
        let exited = process.exited().is_some();
        let bootstrap = bootstrap.clone();
        async move {
            if exited {
                return Some(false);
            }
            metadata_answers(bootstrap).await.then_some(true)
        }
    })
    .await;
    match ready {
        Ok(true) => Ok(process),
        Ok(false) => anyhow::bail!("tansu exited at start\n{}", process.log_tail()),
        Err(e) => Err(e.context(process.log_tail())),
    }
}

async fn metadata_answers(bootstrap: String) -> bool {
    let check = move || -> anyhow::Result<bool> {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .set("log_level", "0")
            .create()?;
        let metadata = consumer.fetch_metadata(None, Duration::from_millis(500))?;
        Ok(!metadata.brokers().is_empty())
    };
    tokio::task::spawn_blocking(check)
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or(false)
}
