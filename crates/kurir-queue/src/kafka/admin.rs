//! Topic administration and lag: the two questions operators ask of the queue ("does it
//! exist?" and "how far behind is delivery?"). Both use short-lived clients on the blocking
//! pool, because librdkafka's metadata and offset calls block.

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};

use super::{Logs, apply_properties, backend, base_config};
use crate::PartitionLag;
use crate::config::KafkaConfig;
use crate::error::QueueError;
use crate::topic::TopicSpec;

/// How long one admin or metadata request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Creates the topics in `topics` that do not exist yet. The replication factor is the
/// broker's default (`-1`), falling back to 1 on brokers that do not know that default.
pub(super) async fn ensure_topics(
    kafka: &KafkaConfig,
    topics: &[TopicSpec],
) -> Result<(), QueueError> {
    if topics.is_empty() {
        return Ok(());
    }
    let mut config = base_config(kafka);
    apply_properties(&mut config, kafka);
    let admin: AdminClient<Logs> = config
        .create_with_context(Logs)
        .map_err(|e| backend("creating the Kafka admin client", e))?;
    let options = AdminOptions::new()
        .operation_timeout(Some(REQUEST_TIMEOUT))
        .request_timeout(Some(REQUEST_TIMEOUT));
    let new_topics: Vec<NewTopic<'_>> = topics
        .iter()
        .map(|spec| {
            let partitions = i32::try_from(spec.partitions).unwrap_or(i32::MAX);
            NewTopic::new(&spec.name, partitions, TopicReplication::Fixed(-1))
        })
        .collect();
    let results = admin
        .create_topics(&new_topics, &options)
        .await
        .map_err(|e| backend("creating topics", e))?;
    for result in results {
        match result {
            Ok(name) => tracing::info!(topic = %name, "topic created"),
            Err((name, RDKafkaErrorCode::TopicAlreadyExists)) => {
                tracing::debug!(topic = %name, "topic exists");
            }
            Err((name, code)) => return Err(backend(&format!("creating topic {name}"), code)),
        }
    }
    Ok(())
}

/// The committed position of `group` and the end offset of every partition of `topic`.
/// A partition the group never committed counts from the log start (`auto.offset.reset =
/// earliest`, as the consumer does).
pub(super) async fn lag(
    kafka: &KafkaConfig,
    group: &str,
    topic: &str,
) -> Result<Vec<PartitionLag>, QueueError> {
    let mut config = base_config(kafka);
    config
        .set("group.id", group)
        .set("enable.auto.commit", "false");
    apply_properties(&mut config, kafka);
    let topic = topic.to_owned();
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer<Logs> = config
            .create_with_context(Logs)
            .map_err(|e| backend("creating the lag client", e))?;
        lag_blocking(&consumer, &topic)
    })
    .await
    .map_err(|e| backend("the lag query task", e))?
}

fn lag_blocking(
    consumer: &BaseConsumer<Logs>,
    topic: &str,
) -> Result<Vec<PartitionLag>, QueueError> {
    let metadata = consumer
        .fetch_metadata(Some(topic), REQUEST_TIMEOUT)
        .map_err(|e| backend(&format!("fetching metadata of {topic}"), e))?;
    let Some(meta) = metadata.topics().iter().find(|t| t.name() == topic) else {
        return Err(backend(
            "fetching metadata",
            format!("topic {topic} not in the answer"),
        ));
    };
    if let Some(error) = meta.error() {
        return Err(backend(
            &format!("fetching metadata of {topic}"),
            RDKafkaErrorCode::from(error),
        ));
    }
    let mut tpl = TopicPartitionList::new();
    for partition in meta.partitions() {
        tpl.add_partition(topic, partition.id());
    }
    let committed = consumer
        .committed_offsets(tpl, REQUEST_TIMEOUT)
        .map_err(|e| backend(&format!("fetching committed offsets of {topic}"), e))?;
    let mut lags = Vec::new();
    for element in committed.elements() {
        let partition = element.partition();
        let (low, high) = consumer
            .fetch_watermarks(topic, partition, REQUEST_TIMEOUT)
            .map_err(|e| backend(&format!("fetching watermarks of {topic}/{partition}"), e))?;
        let committed = match element.offset() {
            Offset::Offset(offset) => offset,
            _ => low,
        };
        lags.push(PartitionLag {
            topic: topic.to_owned(),
            partition: u32::try_from(partition).unwrap_or_default(),
            committed: u64::try_from(committed).unwrap_or_default(),
            end: u64::try_from(high).unwrap_or_default(),
        });
    }
    lags.sort_by_key(|lag| lag.partition);
    Ok(lags)
}
