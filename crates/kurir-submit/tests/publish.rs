//! The publish path against the real queue backends: the embedded queue in a temp dir and a
//! Kafka-API broker (Tansu). Each scenario publishes through [`Publisher`], consumes the
//! records back through the queue's own consumer group and decodes them as delivery would.
//!
//! Waits are deadlines on conditions, never bare sleeps.

use std::collections::BTreeMap;
use std::time::{Duration, Instant, UNIX_EPOCH};

use anyhow::{Context, bail, ensure};
use bytes::Bytes;
use kurir_core::{Address, Domain, Envelope, ErrorCode, MessageId, Outcome, Recipient};
use kurir_proto::{Queued, v1};
use kurir_queue::config::Backend;
use kurir_queue::embedded::EmbeddedQueue;
use kurir_queue::kafka::KafkaQueue;
use kurir_queue::{AckedRecord, Queue, QueueConfig, TopicSpec};
use kurir_submit::publish::{Accepted, PublishConfig, Publisher, ReceivedFrom, Submission};
use kurir_testkit::{KafkaBroker, free_port};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc2822;

/// Generous: a consumer-group rebalance on Tansu takes a few seconds.
const WAIT: Duration = Duration::from_secs(30);
const HOSTNAME: &str = "mx.kurir.test";
const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

// ---------------------------------------------------------------------------------------
// Scenarios, the same for every backend.
// ---------------------------------------------------------------------------------------

/// Recipients in three domains become three records, keyed by domain, each carrying only
/// its domain's recipients and the whole normalised message.
async fn three_domains_become_three_records<Q: Queue + Clone>(
    queue: Q,
    topic: &str,
) -> anyhow::Result<()> {
    ensure_topic(&queue, topic).await?;
    let publisher = Publisher::new(queue.clone(), publish_config(topic, BTreeMap::new()));
    let rcpts = ["a@one.test", "b@two.test", "c@One.test", "d@three.test"];
    let submission = smtp_submission(&rcpts, "Subject: hi\r\nTo: a@one.test\r\n\r\nHello\r\n");
    let accepted = publish(&publisher, submission.clone()).await?;
    ensure!(accepted.records == 3, "{accepted:?}");

    let mut got = consume(&queue, topic, 3).await?;
    got.sort_by(|a, b| a.key.cmp(&b.key));
    let keys: Vec<_> = got.iter().map(|c| c.key.as_str()).collect();
    assert_eq!(keys, ["one.test", "three.test", "two.test"]);
    let want_rcpts = [
        vec!["a@one.test", "c@one.test"],
        vec!["d@three.test"],
        vec!["b@two.test"],
    ];
    let body = with_added_fields(
        accepted.id,
        "Subject: hi\r\nTo: a@one.test\r\n",
        "\r\nHello\r\n",
    );
    for (c, want) in got.iter().zip(want_rcpts) {
        let q = &c.queued;
        assert_eq!(q.routing_key.to_string(), c.key);
        assert_eq!(recipients(&q.envelope), want, "{}", c.key);
        assert_eq!(
            (q.id, q.tenant.as_str(), q.attempts, q.not_before),
            (accepted.id, "acme", 0, None)
        );
        assert_eq!(q.envelope.sender, submission.envelope.sender);
        assert_eq!(
            q.first_seen,
            UNIX_EPOCH + Duration::from_millis(accepted.id.timestamp_ms())
        );
        assert_eq!(
            q.trace.as_ref().map(|t| t.traceparent.as_str()),
            Some(TRACEPARENT)
        );
        assert_eq!(
            c.traceparent_header.as_deref(),
            Some(TRACEPARENT.as_bytes())
        );
        assert_eq!(q.tags, submission.tags);
        assert_body(&q.body, accepted.id, &body)?;
    }
    Ok(())
}

/// A message that has its own Message-ID (lower-case name) and Date keeps them and every
/// other byte: over gRPC the queued body is the submitted one, over SMTP it only gains the
/// Received field on top.
async fn existing_message_id_and_date_are_kept<Q: Queue + Clone>(
    queue: Q,
    topic: &str,
) -> anyhow::Result<()> {
    ensure_topic(&queue, topic).await?;
    let publisher = Publisher::new(queue.clone(), publish_config(topic, BTreeMap::new()));
    let original = "message-id: <orig@client.test>\r\nSubject: folded\r\n subject\r\n\
                    Date: Mon, 1 Jan 2024 00:00:00 +0000\r\n\r\nMessage-ID: <not@header>\r\n";
    let mut grpc = smtp_submission(&["x@grpc.test"], original);
    grpc.received = None;
    let smtp = smtp_submission(&["y@smtp.test"], original);
    let grpc_id = publish(&publisher, grpc).await?.id;
    let smtp_id = publish(&publisher, smtp).await?.id;

    let got = consume(&queue, topic, 2).await?;
    let by_id = |id| {
        got.iter()
            .find(|c| c.queued.id == id)
            .context("record of message")
    };
    assert_eq!(
        by_id(grpc_id)?.queued.body,
        original.as_bytes(),
        "gRPC: untouched"
    );
    let smtp_body = &by_id(smtp_id)?.queued.body;
    let received_len = smtp_body.len() - original.len();
    assert_eq!(
        &smtp_body[received_len..],
        original.as_bytes(),
        "SMTP: only Received added"
    );
    assert_received(&smtp_body[..received_len], smtp_id)
}

/// A domain configured with shards gets keys `domain#k`, k chosen by the message id; other
/// domains stay unsharded.
async fn sharded_domains_get_shard_keys<Q: Queue + Clone>(
    queue: Q,
    topic: &str,
) -> anyhow::Result<()> {
    ensure_topic(&queue, topic).await?;
    let shards = BTreeMap::from([(Domain::parse("hot.test")?, 4)]);
    let publisher = Publisher::new(queue.clone(), publish_config(topic, shards));
    let mut ids = Vec::new();
    for _ in 0..6 {
        let submission = smtp_submission(
            &["a@hot.test", "b@hot.test", "c@cold.test"],
            "Subject: s\r\n\r\n",
        );
        let accepted = publish(&publisher, submission).await?;
        ensure!(accepted.records == 2, "{accepted:?}");
        ids.push(accepted.id);
    }
    let got = consume(&queue, topic, 12).await?;
    for id in ids {
        let keys: Vec<_> = got
            .iter()
            .filter(|c| c.queued.id == id)
            .map(|c| c.key.clone())
            .collect();
        let shard = id.to_u128() % 4;
        assert!(keys.contains(&format!("hot.test#{shard}")), "{keys:?}");
        assert!(keys.contains(&"cold.test".to_owned()), "{keys:?}");
        let hot = got
            .iter()
            .find(|c| c.queued.id == id && c.key.starts_with("hot.test#"));
        let hot = hot.context("hot record")?;
        assert_eq!(
            recipients(&hot.queued.envelope),
            ["a@hot.test", "b@hot.test"]
        );
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Embedded backend.
// ---------------------------------------------------------------------------------------

fn embedded() -> anyhow::Result<(tempfile::TempDir, EmbeddedQueue)> {
    let dir = tempfile::tempdir()?;
    let queue = EmbeddedQueue::open(dir.path(), &QueueConfig::default())?;
    Ok((dir, queue))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_three_domains_become_three_records() -> anyhow::Result<()> {
    let (_dir, queue) = embedded()?;
    three_domains_become_three_records(queue.clone(), "kurir.mail").await?;
    queue.close().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_existing_message_id_and_date_are_kept() -> anyhow::Result<()> {
    let (_dir, queue) = embedded()?;
    existing_message_id_and_date_are_kept(queue.clone(), "kurir.mail").await?;
    queue.close().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_sharded_domains_get_shard_keys() -> anyhow::Result<()> {
    let (_dir, queue) = embedded()?;
    sharded_domains_get_shard_keys(queue.clone(), "kurir.mail").await?;
    queue.close().await;
    Ok(())
}

/// Suppressed recipients become one SUPPRESSED event each on the events topic, after the
/// mail (which does not carry them); with no recipient left there is no mail, only events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_suppressed_recipients_become_events() -> anyhow::Result<()> {
    let (_dir, queue) = embedded()?;
    let config = publish_config(
        "kurir.mail",
        BTreeMap::from([(Domain::parse("hot.test")?, 4)]),
    );
    let events_topic = config.events_topic();
    assert_eq!(events_topic, "kurir.events");
    ensure_topic(&queue, "kurir.mail").await?;
    ensure_topic(&queue, &events_topic).await?;
    let publisher = Publisher::new(queue.clone(), config);

    let mut mixed = smtp_submission(&["ok@cold.test"], "Subject: s\r\n\r\n");
    mixed.suppressed = ["a@hot.test", "b@Cold.test", "a@hot.test"]
        .map(|a| Address::parse(a).expect("address"))
        .to_vec();
    let mixed_accepted = publish(&publisher, mixed.clone()).await?;
    assert_eq!(
        (
            mixed_accepted.records,
            mixed_accepted.events,
            mixed_accepted.events_failed
        ),
        (1, 2, 0),
        "an address given twice is reported once"
    );
    let mut only = smtp_submission(&[], "Subject: s\r\n\r\n");
    only.suppressed = vec![Address::parse("c@cold.test")?];
    let only_accepted = publish(&publisher, only).await?;
    assert_eq!(
        (
            only_accepted.records,
            only_accepted.events,
            only_accepted.events_failed
        ),
        (0, 1, 0)
    );

    let mail = consume(&queue, "kurir.mail", 1).await?;
    assert_eq!(mail[0].queued.id, mixed_accepted.id);
    assert_eq!(recipients(&mail[0].queued.envelope), ["ok@cold.test"]);

    let events = consume_events(&queue, &events_topic, 3).await?;
    let hot_key = format!("hot.test#{}", mixed_accepted.id.to_u128() % 4);
    let want = [
        (mixed_accepted.id, "a@hot.test", hot_key.as_str()),
        (mixed_accepted.id, "b@cold.test", "cold.test"),
        (only_accepted.id, "c@cold.test", "cold.test"),
    ];
    let mut event_ids = Vec::new();
    for (id, recipient, key) in want {
        let (record_key, event) = events
            .iter()
            .find(|(_, e)| e.recipient == recipient)
            .with_context(|| format!("no event for {recipient}"))?;
        assert_eq!(record_key, key);
        assert_eq!(event.routing_key, key);
        assert_eq!(event.message_id()?, Some(id));
        assert_eq!(event.core_outcome()?, Some(Outcome::Suppressed));
        assert_eq!(event.tenant, "acme");
        assert_eq!((event.attempt, event.queued_ms), (0, 0));
        assert_eq!(event.tags, mixed.tags);
        assert_eq!(
            event.trace.as_ref().map(|t| t.traceparent.as_str()),
            Some(TRACEPARENT)
        );
        assert!(event.time_unix_ms >= i64::try_from(id.timestamp_ms())?);
        event_ids.push(event.event_id()?);
    }
    event_ids.sort();
    event_ids.dedup();
    assert_eq!(event_ids.len(), 3, "fresh event ids");
    queue.close().await;
    Ok(())
}

/// The events topic missing: the message is accepted all the same (its mail is queued), the
/// lost events are reported in `Accepted`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_unpublished_events_do_not_fail_the_message() -> anyhow::Result<()> {
    let (_dir, queue) = embedded()?;
    ensure_topic(&queue, "kurir.mail").await?;
    let publisher = Publisher::new(queue.clone(), publish_config("kurir.mail", BTreeMap::new()));
    let mut submission = smtp_submission(&["ok@one.test"], "Subject: s\r\n\r\n");
    submission.suppressed = vec![Address::parse("gone@one.test")?];
    let accepted = publish(&publisher, submission).await?;
    assert_eq!(
        (accepted.records, accepted.events, accepted.events_failed),
        (1, 0, 1)
    );
    let mail = consume(&queue, "kurir.mail", 1).await?;
    assert_eq!(mail[0].queued.id, accepted.id);
    queue.close().await;
    Ok(())
}

#[test]
fn the_events_topic_is_next_to_the_mail_topic() {
    let events = |topic: &str| publish_config(topic, BTreeMap::new()).events_topic();
    assert_eq!(events("kurir.mail"), "kurir.events");
    assert_eq!(events("acme.kurir.mail"), "acme.kurir.events");
    assert_eq!(events("three"), "three.events");
}

#[tokio::test]
async fn no_recipients_is_refused_before_the_queue() -> anyhow::Result<()> {
    let (_dir, queue) = embedded()?;
    let publisher = Publisher::new(queue, publish_config("kurir.mail", BTreeMap::new()));
    let result = publisher
        .publish(smtp_submission(&[], "Subject: x\r\n\r\n"))
        .await;
    assert_eq!(result, Err(ErrorCode::NoRecipients));
    Ok(())
}

#[tokio::test]
async fn an_unknown_topic_is_queue_unavailable_not_a_permanent_refusal() -> anyhow::Result<()> {
    let (_dir, queue) = embedded()?;
    let publisher = Publisher::new(queue, publish_config("kurir.missing", BTreeMap::new()));
    let result = publisher
        .publish(smtp_submission(&["a@one.test"], "Subject: x\r\n\r\n"))
        .await;
    assert_eq!(result, Err(ErrorCode::QueueUnavailable));
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Kafka backend.
// ---------------------------------------------------------------------------------------

fn kafka_config(brokers: String) -> QueueConfig {
    let mut config = QueueConfig {
        backend: Backend::Kafka,
        ..QueueConfig::default()
    };
    config.kafka.brokers = brokers;
    config.kafka.linger = Duration::ZERO;
    config.kafka.session_timeout = Duration::from_secs(6);
    config.drain_timeout = Duration::from_secs(1);
    // Tansu 0.6 and multi-record batches: see `kurir_testkit::KafkaBroker`.
    config
        .kafka
        .properties
        .insert("batch.num.messages".into(), "1".into());
    config
}

/// One broker for every scenario: starting Tansu is the slow part.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_publish_scenarios() -> anyhow::Result<()> {
    let broker = KafkaBroker::start().await?;
    let queue = KafkaQueue::connect(&kafka_config(broker.bootstrap_servers()))?;
    three_domains_become_three_records(queue.clone(), "three")
        .await
        .context("three domains")?;
    existing_message_id_and_date_are_kept(queue.clone(), "kept")
        .await
        .context("kept headers")?;
    sharded_domains_get_shard_keys(queue, "sharded")
        .await
        .context("sharded")
}

/// Nothing listens on the brokers' port: the queue can never acknowledge, and the client
/// hears 451 once the ack timeout (not Kafka's longer delivery timeout) has passed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_without_acknowledgement_is_queue_unavailable_at_the_ack_timeout()
-> anyhow::Result<()> {
    let mut config = kafka_config(format!("127.0.0.1:{}", free_port()));
    config.kafka.delivery_timeout = Duration::from_secs(1);
    let mut publish_config = publish_config("kurir.mail", BTreeMap::new());
    publish_config.ack_timeout = Duration::from_millis(500);
    let publisher = Publisher::new(KafkaQueue::connect(&config)?, publish_config);
    let started = Instant::now();
    let result = publisher
        .publish(smtp_submission(&["a@one.test"], "Subject: x\r\n\r\n"))
        .await;
    let elapsed = started.elapsed();
    assert_eq!(result, Err(ErrorCode::QueueUnavailable));
    assert!(elapsed >= Duration::from_millis(450), "{elapsed:?}");
    assert!(elapsed < Duration::from_millis(1200), "{elapsed:?}");
    Ok(())
}

/// librdkafka refuses a record over `message.max.bytes` before sending anything: that is
/// `552 5.3.4`, not a retry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_record_over_the_size_limit_is_message_too_large() -> anyhow::Result<()> {
    let mut config = kafka_config(format!("127.0.0.1:{}", free_port()));
    config
        .kafka
        .properties
        .insert("message.max.bytes".into(), "1000".into());
    let publisher = Publisher::new(
        KafkaQueue::connect(&config)?,
        publish_config("kurir.mail", BTreeMap::new()),
    );
    let body = format!("Subject: big\r\n\r\n{}\r\n", "x".repeat(5000));
    let result = publisher
        .publish(smtp_submission(&["a@one.test"], &body))
        .await;
    assert_eq!(result, Err(ErrorCode::MessageTooLarge));
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Helpers.
// ---------------------------------------------------------------------------------------

fn publish_config(topic: &str, shards: BTreeMap<Domain, u16>) -> PublishConfig {
    PublishConfig {
        hostname: HOSTNAME.to_owned(),
        topic: topic.to_owned(),
        ack_timeout: Duration::from_secs(15),
        shards,
    }
}

fn smtp_submission(rcpts: &[&str], body: &str) -> Submission {
    let mut envelope = Envelope::new(Some(Address::parse("sender@client.test").expect("sender")));
    for r in rcpts {
        envelope
            .recipients
            .push(Recipient::new(Address::parse(r).expect("recipient")));
    }
    Submission {
        tenant: "acme".to_owned(),
        envelope,
        body: Bytes::copy_from_slice(body.as_bytes()),
        received: Some(ReceivedFrom {
            helo: "client.example.test".to_owned(),
            peer: "192.0.2.7".parse().expect("ip"),
            protocol: "ESMTPS",
            tls: Some("TLSv1.3".to_owned()),
        }),
        traceparent: Some(TRACEPARENT.to_owned()),
        tags: BTreeMap::from([("campaign".to_owned(), "spring".to_owned())]),
        suppressed: Vec::new(),
    }
}

/// Publishes; an error is a test failure that names the reply.
async fn publish<Q: Queue>(
    publisher: &Publisher<Q>,
    submission: Submission,
) -> anyhow::Result<Accepted> {
    publisher
        .publish(submission)
        .await
        .map_err(|code| anyhow::anyhow!("publish failed: {code:?}"))
}

async fn ensure_topic<Q: Queue>(queue: &Q, topic: &str) -> anyhow::Result<()> {
    let spec = TopicSpec {
        name: topic.to_owned(),
        partitions: 4,
    };
    Ok(queue.ensure_topics(&[spec]).await?)
}

fn recipients(envelope: &Envelope) -> Vec<String> {
    envelope
        .recipients
        .iter()
        .map(|r| r.address.to_string())
        .collect()
}

/// RFC 5322 date of a message id's time, as the publisher writes it.
fn date_of(id: MessageId) -> String {
    let nanos = i128::from(id.timestamp_ms()) * 1_000_000;
    let at = OffsetDateTime::from_unix_timestamp_nanos(nanos).expect("time");
    at.format(&Rfc2822).expect("format")
}

/// The Received field the publisher writes for [`smtp_submission`], unfolded.
fn expected_received(id: MessageId) -> String {
    format!(
        "Received: from client.example.test ([192.0.2.7]) by {HOSTNAME} \
         with ESMTPS (TLSv1.3) id {id}; {}",
        date_of(id)
    )
}

/// The whole normalised message: Received on top; the client's header block; Message-ID
/// and Date at its end; the separator and body as sent.
fn with_added_fields(id: MessageId, headers: &str, rest: &str) -> String {
    let added = format!("Message-ID: <{id}@{HOSTNAME}>\r\nDate: {}\r\n", date_of(id));
    format!("{headers}{added}{rest}")
}

/// `body` is a Received field for `id` followed by exactly `after_received`.
fn assert_body(body: &[u8], id: MessageId, after_received: &str) -> anyhow::Result<()> {
    let received_len = body
        .len()
        .checked_sub(after_received.len())
        .context("body too short")?;
    assert_eq!(&body[received_len..], after_received.as_bytes());
    assert_received(&body[..received_len], id)
}

/// The Received field: what we expect once unfolded, lines shorter than 78 characters.
fn assert_received(field: &[u8], id: MessageId) -> anyhow::Result<()> {
    let field = std::str::from_utf8(field)?;
    ensure!(field.ends_with("\r\n"), "{field:?}");
    for line in field.trim_end_matches("\r\n").split("\r\n") {
        ensure!(line.len() < 78, "line too long: {line:?}");
    }
    assert_eq!(
        field.trim_end_matches("\r\n").replace("\r\n\t", " "),
        expected_received(id)
    );
    Ok(())
}

/// A record as delivery sees it.
#[derive(Debug)]
struct Consumed {
    key: String,
    queued: Queued,
    traceparent_header: Option<Bytes>,
}

/// Joins a fresh consumer group on `topic` and reads `n` records from whichever partitions
/// it is assigned, acknowledging each.
async fn consume<Q: Queue>(queue: &Q, topic: &str, n: usize) -> anyhow::Result<Vec<Consumed>> {
    consume_with(queue, topic, n, |record| {
        Ok(Consumed {
            key: record.key.clone(),
            queued: Queued::decode(record.value.clone())?,
            traceparent_header: record.header("traceparent").cloned(),
        })
    })
    .await
}

/// [`consume`] for events: each with its record key.
async fn consume_events<Q: Queue>(
    queue: &Q,
    topic: &str,
    n: usize,
) -> anyhow::Result<Vec<(String, v1::Event)>> {
    consume_with(queue, topic, n, |record| {
        Ok((
            record.key.clone(),
            v1::Event::decode_bytes(record.value.clone())?,
        ))
    })
    .await
}

/// Joins a fresh consumer group on `topic` and reads `n` records, decoded by `decode`.
async fn consume_with<Q: Queue, T>(
    queue: &Q,
    topic: &str,
    n: usize,
    decode: fn(&AckedRecord) -> anyhow::Result<T>,
) -> anyhow::Result<Vec<T>> {
    let mut records = queue
        .subscribe(&format!("test-{topic}"), &[topic.to_owned()])
        .await?
        .all_records();
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut got = Vec::with_capacity(n);
    while got.len() < n {
        match tokio::time::timeout_at(deadline, records.next()).await {
            Ok(Some(record)) => got.push(decode(&record)?),
            Ok(None) => bail!("subscription ended"),
            Err(_) => bail!("got {} of {n} records", got.len()),
        }
    }
    records.close().await;
    Ok(got)
}
