//! The specification every queue backend meets.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use kurir_core::{Address, Envelope, MessageId, Recipient};
use kurir_proto::{Queued, v1};
use kurir_queue::poison::{Decoded, decode_or_skip};
use kurir_queue::{OutgoingRecord, PartitionEvent, Queue, Subscription};
use tokio::sync::mpsc;

use crate::driver::{Got, Member, WAIT, assert_quiet, receive, wait_for_partitions};
use crate::harness::{EVENTS, Harness, PARTITIONS, TOPIC};

const GROUP: &str = "kurir-deliver";

/// `count` records over `keys` keys; the value is `key/seq` with a per-key sequence.
fn records(start: usize, count: usize, keys: usize) -> Vec<OutgoingRecord> {
    (start..start + count)
        .map(|i| {
            let key = format!("domain-{}.test", i % keys);
            OutgoingRecord::new(key.clone(), format!("{key}/{}", i / keys))
        })
        .collect()
}

async fn join<H: Harness>(h: &H, name: &'static str, out: &mpsc::UnboundedSender<Got>) -> Member {
    let subscription = h
        .queue()
        .subscribe(GROUP, &[TOPIC.to_owned()])
        .await
        .unwrap();
    Member::run(name, subscription, out.clone())
}

/// The group's lag summed over the topic's partitions.
async fn total_lag<H: Harness>(h: &H) -> u64 {
    let lags = h.queue().lag(GROUP, TOPIC).await.unwrap();
    lags.iter().map(|l| l.lag()).sum()
}

fn seq(got: &Got) -> usize {
    got.text().rsplit('/').next().unwrap().parse().unwrap()
}

fn values(got: &[Got]) -> BTreeSet<String> {
    got.iter().map(Got::text).collect()
}

fn ack_all(got: &mut [Got]) {
    got.iter_mut().for_each(Got::ack);
}

pub async fn keeps_per_key_order<H: Harness>() {
    let h = H::start().await;
    for batch in 0..8 {
        h.queue()
            .publish(TOPIC, records(batch * 50, 50, 20))
            .await
            .unwrap();
    }
    let (tx, mut rx) = mpsc::unbounded_channel();
    let member = join(&h, "a", &tx).await;
    let mut got = receive(&mut rx, 400).await;
    let mut last: BTreeMap<String, usize> = BTreeMap::new();
    for g in &got {
        if let Some(prev) = last.insert(g.key.clone(), seq(g)) {
            assert_eq!(seq(g), prev + 1, "key {} out of order", g.key);
        }
    }
    assert_eq!(values(&got).len(), 400);
    ack_all(&mut got);
    member.leave().await;
}

pub async fn acknowledged_publishes_survive_a_restart<H: Harness>() {
    let mut h = H::start().await;
    let sent = records(0, 100, 7);
    let expected: BTreeSet<String> = sent
        .iter()
        .map(|r| String::from_utf8_lossy(&r.value).into())
        .collect();
    h.queue().publish(TOPIC, sent).await.unwrap();
    h.restart().await;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let member = join(&h, "a", &tx).await;
    let mut got = receive(&mut rx, 100).await;
    assert_eq!(values(&got), expected);
    ack_all(&mut got);
    member.leave().await;
}

pub async fn unacknowledged_records_are_redelivered<H: Harness>() {
    let mut h = H::start().await;
    h.queue().publish(TOPIC, records(0, 20, 5)).await.unwrap();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let first = join(&h, "a", &tx).await;
    let unacked = receive(&mut rx, 20).await;
    first.leave().await;
    let expected = values(&unacked);
    drop(unacked);

    // The node "crashes" after a consumer died without acking: everything comes again.
    h.restart().await;
    let second = join(&h, "b", &tx).await;
    let mut again = receive(&mut rx, 20).await;
    assert_eq!(values(&again), expected);
    ack_all(&mut again);
    second.leave().await;

    let third = join(&h, "c", &tx).await;
    wait_for_partitions(&[&third], &[PARTITIONS as usize]).await;
    assert_quiet(&mut rx, Duration::from_secs(2)).await;
    let lag = total_lag(&h).await;
    assert_eq!(lag, 0);
    third.leave().await;
}

pub async fn commits_only_up_to_the_low_watermark<H: Harness>() {
    let h = H::start().await;
    // One key: one partition, offsets in publish order.
    let batch: Vec<_> = (0..10)
        .map(|i| OutgoingRecord::new("one.test", i.to_string()))
        .collect();
    h.queue().publish(TOPIC, batch).await.unwrap();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let first = join(&h, "a", &tx).await;
    let mut got = receive(&mut rx, 10).await;
    got.sort_by_key(|g| g.offset);
    // Finish out of order, leaving 3 and 7..9 unfinished.
    for i in [5, 1, 0, 6, 4, 2] {
        got[i].ack();
    }
    first.leave().await;
    drop(got);

    let lag = total_lag(&h).await;
    assert_eq!(
        lag, 7,
        "committed position stops at the first unfinished record"
    );
    let second = join(&h, "b", &tx).await;
    let mut again = receive(&mut rx, 7).await;
    again.sort_by_key(|g| g.offset);
    let texts: Vec<String> = again.iter().map(Got::text).collect();
    assert_eq!(texts, ["3", "4", "5", "6", "7", "8", "9"]);
    ack_all(&mut again);
    second.leave().await;
    let lag = total_lag(&h).await;
    assert_eq!(lag, 0);
}

pub async fn holds_retry_records_until_not_before<H: Harness>() {
    let h = H::start().await;
    let hold = Duration::from_millis(2500);
    let due = SystemTime::now() + hold;
    let started = Instant::now();
    let batch = vec![
        OutgoingRecord::new("retry.test", "held").not_before(due),
        OutgoingRecord::new("retry.test", "behind it"),
    ];
    h.queue().publish(TOPIC, batch).await.unwrap();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let member = join(&h, "a", &tx).await;
    assert_quiet(&mut rx, hold.saturating_sub(Duration::from_millis(1000))).await;
    let mut got = receive(&mut rx, 2).await;
    let arrived = started.elapsed();
    assert_eq!(
        got[0].text(),
        "held",
        "a later record of the same key never overtakes"
    );
    assert!(
        SystemTime::now() + Duration::from_millis(20) >= due,
        "delivered before its time"
    );
    assert!(
        arrived < hold + Duration::from_secs(5),
        "delivered soon after its time: {arrived:?}"
    );
    ack_all(&mut got);
    member.leave().await;
}

pub async fn group_members_split_partitions_and_take_over<H: Harness>() {
    let h = H::start().await;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let a = join(&h, "a", &tx).await;
    let b = join(&h, "b", &tx).await;
    wait_for_partitions(&[&a, &b], &[2, 2]).await;
    assert!(a.partitions().is_disjoint(&b.partitions()));

    h.queue().publish(TOPIC, records(0, 200, 40)).await.unwrap();
    let mut first = receive(&mut rx, 200).await;
    for g in &first {
        let owner = if g.member == "a" { &a } else { &b };
        assert!(
            owner.partitions().contains(&g.partition),
            "{} read a partition it does not own",
            g.member
        );
    }
    assert!(first.iter().any(|g| g.member == "a") && first.iter().any(|g| g.member == "b"));
    ack_all(&mut first);

    b.leave().await;
    wait_for_partitions(&[&a], &[PARTITIONS as usize]).await;
    h.queue()
        .publish(TOPIC, records(200, 100, 40))
        .await
        .unwrap();
    let mut second = receive(&mut rx, 100).await;
    assert!(second.iter().all(|g| g.member == "a"));
    ack_all(&mut second);
    assert_quiet(&mut rx, Duration::from_secs(2)).await;
    let all: BTreeSet<String> = values(&first).union(&values(&second)).cloned().collect();
    assert_eq!(all.len(), 300, "nothing lost");
    a.leave().await;
}

fn queued_message() -> Queued {
    let mut envelope = Envelope::new(Some(Address::parse("sender@sender.test").unwrap()));
    envelope
        .recipients
        .push(Recipient::new(Address::parse("rcpt@poison.test").unwrap()));
    Queued {
        id: MessageId::new(),
        tenant: String::new(),
        routing_key: "poison.test".parse().unwrap(),
        envelope,
        attempts: 0,
        first_seen: SystemTime::now(),
        not_before: None,
        trace: None,
        tags: Default::default(),
        body: Bytes::from_static(b"Subject: hi\r\n\r\nhello\r\n"),
    }
}

/// Consumes `topic` as `group`, passing every record through `decode_or_skip`.
async fn decode_all<Q: Queue + Clone>(
    queue: &Q,
    group: &str,
) -> (Subscription, mpsc::UnboundedReceiver<(u64, Option<Queued>)>) {
    let mut subscription = queue.subscribe(group, &[TOPIC.to_owned()]).await.unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    for _ in 0..PARTITIONS {
        let Some(PartitionEvent::Assigned(mut stream)) = subscription.next_event().await else {
            panic!("assignment")
        };
        let (queue, tx) = (queue.clone(), tx.clone());
        tokio::spawn(async move {
            while let Some(record) = stream.next().await {
                let offset = record.offset;
                match decode_or_skip(&queue, EVENTS, record)
                    .await
                    .expect("event published")
                {
                    Decoded::Skipped => drop(tx.send((offset, None))),
                    Decoded::Message(message, record) => {
                        record.ack.done();
                        let _ = tx.send((offset, Some(*message)));
                    }
                }
            }
        });
    }
    (subscription, rx)
}

pub async fn skips_undecodable_records_with_an_error_event<H: Harness>() {
    let h = H::start().await;
    let valid = queued_message();
    let batch = vec![
        OutgoingRecord::new("poison.test", &b"\xff\x01 not a queued message"[..]),
        OutgoingRecord::new("poison.test", valid.encode_to_bytes()),
    ];
    h.queue().publish(TOPIC, batch).await.unwrap();
    let (subscription, mut rx) = decode_all(&h.queue(), GROUP).await;
    let (bad_offset, skipped) = tokio::time::timeout(WAIT, rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(
        skipped.is_none(),
        "the garbage record comes first and is skipped"
    );
    let (_, message) = tokio::time::timeout(WAIT, rx.recv())
        .await
        .unwrap()
        .unwrap();
    let message = message.expect("the record behind it is not blocked");
    assert_eq!((message.id, &message.body), (valid.id, &valid.body));
    subscription.close().await;
    let lag = total_lag(&h).await;
    assert_eq!(lag, 0, "both records are finished");

    // The operator finds the bad record through its event.
    let mut events = h
        .queue()
        .subscribe("event-reader", &[EVENTS.to_owned()])
        .await
        .unwrap();
    let Some(PartitionEvent::Assigned(mut stream)) = events.next_event().await else {
        panic!("assignment")
    };
    let record = tokio::time::timeout(WAIT, stream.next())
        .await
        .unwrap()
        .unwrap();
    let event = v1::Event::decode_bytes(record.value.clone()).unwrap();
    assert_eq!(event.outcome(), v1::Outcome::Undecodable);
    let what = event.undecodable.expect("undecodable details");
    assert_eq!((what.topic.as_str(), what.offset), (TOPIC, bad_offset));
    assert!(!what.error.is_empty());
    record.ack.done();
    events.close().await;
}
