//! Publishing: an idempotent producer (`acks=all`) so a `250` means the record is on every
//! in-sync replica, exactly once per producer session, in key order.
//!
//! A full local queue is backpressure, not a reason to buffer more: `publish` waits for room
//! up to the delivery timeout and then fails as retryable, so a submission node that cannot
//! reach Kafka answers `451` instead of growing without bound.

use std::time::Duration;

use futures::future::join_all;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use tokio::time::Instant;

use super::{Logs, apply_properties, backend, base_config, millis};
use crate::config::KafkaConfig;
use crate::error::{PublishError, QueueError};
use crate::record::{NOT_BEFORE_HEADER, OutgoingRecord, encode_time};

/// How long to wait before offering a record again to a full local queue; doubles up to
/// [`MAX_FULL_BACKOFF`].
const FIRST_FULL_BACKOFF: Duration = Duration::from_millis(5);
const MAX_FULL_BACKOFF: Duration = Duration::from_millis(100);
/// Extra time past `delivery.timeout.ms` after which a missing delivery report counts as a
/// timeout (librdkafka always reports by then; this only guards against a lost report).
const REPORT_GRACE: Duration = Duration::from_secs(5);

/// The producer, configured from `[queue.kafka]`.
pub(super) fn create(kafka: &KafkaConfig) -> Result<FutureProducer<Logs>, QueueError> {
    let mut config = base_config(kafka);
    config
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("compression.type", "zstd")
        .set("linger.ms", millis(kafka.linger))
        .set("delivery.timeout.ms", millis(kafka.delivery_timeout))
        // Records are keyed by recipient domain. librdkafka's default (CRC32) put ten
        // domains named d0..d9.load.test on 5 of 16 partitions, pairs differing in one
        // character together, so similar names (tenant1.example, tenant2.example) crowd
        // few partitions and few delivery nodes; murmur2 (the Java client's default, so
        // other producers' keys land alike) spread them over 9.
        .set("partitioner", "murmur2_random")
        .set(
            "queue.buffering.max.kbytes",
            kafka.producer_buffer_kbytes.to_string(),
        );
    apply_properties(&mut config, kafka);
    config
        .create_with_context(Logs)
        .map_err(|e| backend("creating the Kafka producer", e))
}

/// Enqueues every record (in order, so records of one key keep their order), then waits
/// for all delivery reports. The first failure is returned; others are logged.
pub(super) async fn publish(
    producer: &FutureProducer<Logs>,
    kafka: &KafkaConfig,
    topic: &str,
    records: Vec<OutgoingRecord>,
) -> Result<(), PublishError> {
    let deadline = Instant::now() + kafka.delivery_timeout;
    let mut reports = Vec::with_capacity(records.len());
    for record in &records {
        reports.push(enqueue(producer, topic, record, deadline, kafka.delivery_timeout).await?);
    }
    let all = join_all(reports);
    let results = tokio::time::timeout(kafka.delivery_timeout + REPORT_GRACE, all)
        .await
        .map_err(|_| PublishError::Timeout(kafka.delivery_timeout))?;
    let total = results.len();
    let mut errors = results.into_iter().filter_map(|result| match result {
        Ok(Ok(_)) => None,
        Ok(Err((error, _message))) => Some(classify(&error, kafka.delivery_timeout, 0)),
        Err(_canceled) => Some(PublishError::Closed),
    });
    let Some(first) = errors.next() else {
        return Ok(());
    };
    let failed = 1 + errors.count();
    tracing::warn!(topic, failed, total, error = %first, "publish failed");
    Err(first)
}

/// Hands one record to librdkafka, waiting (with backoff) while its queue is full.
async fn enqueue(
    producer: &FutureProducer<Logs>,
    topic: &str,
    record: &OutgoingRecord,
    deadline: Instant,
    delivery_timeout: Duration,
) -> Result<DeliveryFuture, PublishError> {
    let not_before = record.not_before.map(encode_time);
    let mut headers = OwnedHeaders::new_with_capacity(record.headers.len() + 1);
    if let Some(at) = &not_before {
        headers = headers.insert(Header {
            key: NOT_BEFORE_HEADER,
            value: Some(&at[..]),
        });
    }
    for (key, value) in &record.headers {
        headers = headers.insert(Header {
            key: key.as_str(),
            value: Some(&value[..]),
        });
    }
    let mut message = FutureRecord::to(topic)
        .key(record.key.as_str())
        .payload(&record.value[..])
        .headers(headers);
    let mut backoff = FIRST_FULL_BACKOFF;
    loop {
        match producer.send_result(message) {
            Ok(report) => return Ok(report),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                if Instant::now() + backoff > deadline {
                    tracing::warn!(topic, "producer queue full until the delivery timeout");
                    return Err(PublishError::Timeout(delivery_timeout));
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_FULL_BACKOFF);
                message = back;
            }
            Err((error, _)) => {
                let size = record.key.len() + record.value.len();
                return Err(classify(&error, delivery_timeout, size));
            }
        }
    }
}

/// Maps a librdkafka error to what the caller can do about it. `size` is the record's size
/// when known (0 from a delivery report, which no longer carries it separately).
fn classify(error: &KafkaError, delivery_timeout: Duration, size: usize) -> PublishError {
    use RDKafkaErrorCode as C;
    let Some(code) = error.rdkafka_error_code() else {
        return PublishError::Transient(error.to_string());
    };
    match code {
        C::MessageSizeTooLarge | C::MessageBatchTooLarge | C::InvalidMessageSize => {
            PublishError::TooLarge { size }
        }
        C::MessageTimedOut | C::QueueFull => PublishError::Timeout(delivery_timeout),
        C::TopicAuthorizationFailed
        | C::ClusterAuthorizationFailed
        | C::TransactionalIdAuthorizationFailed
        | C::SaslAuthenticationFailed
        | C::Authentication
        | C::UnknownTopic
        | C::UnknownTopicOrPartition
        | C::InvalidTopic
        | C::InvalidConfig
        | C::InvalidArgument
        | C::InvalidRequiredAcks
        | C::UnsupportedCompressionType
        | C::Fatal => PublishError::Fatal(error.to_string()),
        _ => PublishError::Transient(error.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_classified_by_what_retrying_can_do() {
        let t = Duration::from_secs(10);
        let produce = |code| KafkaError::MessageProduction(code);
        assert_eq!(
            classify(&produce(RDKafkaErrorCode::MessageSizeTooLarge), t, 7),
            PublishError::TooLarge { size: 7 }
        );
        assert_eq!(
            classify(&produce(RDKafkaErrorCode::MessageTimedOut), t, 0),
            PublishError::Timeout(t)
        );
        for code in [
            RDKafkaErrorCode::TopicAuthorizationFailed,
            RDKafkaErrorCode::UnknownTopicOrPartition,
            RDKafkaErrorCode::InvalidConfig,
        ] {
            assert!(
                matches!(classify(&produce(code), t, 0), PublishError::Fatal(_)),
                "{code:?}"
            );
        }
        let transient = classify(&produce(RDKafkaErrorCode::NotLeaderForPartition), t, 0);
        assert!(matches!(transient, PublishError::Transient(_)));
        assert!(transient.is_retryable());
    }
}
