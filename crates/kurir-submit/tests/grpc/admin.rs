//! AdminService over a running server: every call needs an admin key; domain pauses and
//! bounce orders land in the state store the delivery nodes read; topics, lag, sites and
//! message history come from the queue, the hooks and the store (the flows that touch a
//! backend on both backends).

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use kurir_core::{Domain, MessageId};
use kurir_proto::v1::{
    self, BounceDomainRequest, InitTopicsRequest, ListPausedDomainsRequest, MessageHistoryRequest,
    PauseDomainRequest, QueueStatsRequest, ResumeDomainRequest,
};
use kurir_queue::{Queue, TopicSpec};
use kurir_state::{DomainPause, PauseAction, State, TrackEntry, TrackKind};
use tonic::{Code, Status};

use crate::harness::{
    ADMIN_KEY, Harness, OTHER_TENANT_KEY, SUBMIT_KEY, SUPPRESSION_KEY, message, raw,
};

/// `deliver.max_age` in the harness's hooks.
const MAX_AGE: Duration = Duration::from_secs(5 * 86_400);

fn ms(t: SystemTime) -> i64 {
    i64::try_from(t.duration_since(UNIX_EPOCH).unwrap().as_millis()).unwrap()
}

/// Whether `ms` is `from_now` after a time between `before` and now.
fn is_from_now(ms_value: i64, before: SystemTime, from_now: Duration) -> bool {
    (ms(before + from_now)..=ms(SystemTime::now() + from_now)).contains(&ms_value)
}

async fn pause<Q: Queue + Clone, S: State + Clone>(
    h: &Harness<Q, S>,
    domain: &str,
    duration_seconds: u64,
    reason: &str,
) -> Result<(), Status> {
    let request = PauseDomainRequest {
        domain: domain.into(),
        duration_seconds,
        reason: reason.into(),
    };
    h.admin(ADMIN_KEY).pause_domain(request).await.map(drop)
}

async fn bounce<Q: Queue + Clone, S: State + Clone>(
    h: &Harness<Q, S>,
    domain: &str,
    duration_seconds: u64,
    reason: &str,
) -> Result<(), Status> {
    let request = BounceDomainRequest {
        domain: domain.into(),
        reason: reason.into(),
        duration_seconds,
    };
    h.admin(ADMIN_KEY).bounce_domain(request).await.map(drop)
}

async fn resume<Q: Queue + Clone, S: State + Clone>(h: &Harness<Q, S>, domain: &str) -> bool {
    let request = ResumeDomainRequest {
        domain: domain.into(),
    };
    let response = h.admin(ADMIN_KEY).resume_domain(request).await.unwrap();
    response.into_inner().was_paused
}

async fn listed<Q: Queue + Clone, S: State + Clone>(h: &Harness<Q, S>) -> Vec<v1::PausedDomain> {
    let mut admin = h.admin(ADMIN_KEY);
    let response = admin.list_paused_domains(ListPausedDomainsRequest {}).await;
    response.unwrap().into_inner().domains
}

/// The pause the store holds for `domain`, as delivery nodes read it.
async fn stored<Q: Queue + Clone, S: State + Clone>(
    h: &Harness<Q, S>,
    domain: &str,
) -> Option<DomainPause> {
    let domain = Domain::parse(domain).unwrap();
    let pauses = h.state.paused_domains().await.unwrap();
    pauses.into_iter().find(|p| p.domain == domain)
}

/// The code each call gets with `key`.
async fn codes_with(h: &Harness, key: &str) -> Vec<(&'static str, Code)> {
    fn code<T>(result: Result<T, Status>) -> Code {
        result.err().map_or(Code::Ok, |s| s.code())
    }
    let mut admin = h.admin(key);
    let domain = || "auth.test".to_owned();
    let pause = PauseDomainRequest {
        domain: domain(),
        ..Default::default()
    };
    let bounce = BounceDomainRequest {
        domain: domain(),
        ..Default::default()
    };
    let history = MessageHistoryRequest {
        message_id: MessageId::new().to_string(),
    };
    vec![
        (
            "queue_stats",
            code(admin.queue_stats(QueueStatsRequest {}).await),
        ),
        ("pause_domain", code(admin.pause_domain(pause).await)),
        (
            "resume_domain",
            code(
                admin
                    .resume_domain(ResumeDomainRequest { domain: domain() })
                    .await,
            ),
        ),
        (
            "list_paused_domains",
            code(admin.list_paused_domains(ListPausedDomainsRequest {}).await),
        ),
        ("bounce_domain", code(admin.bounce_domain(bounce).await)),
        (
            "init_topics",
            code(admin.init_topics(InitTopicsRequest {}).await),
        ),
        (
            "message_history",
            code(admin.message_history(history).await),
        ),
    ]
}

fn expect_invalid(result: Result<impl std::fmt::Debug, Status>, field: &str) {
    let status = result.expect_err("refused");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(
        status.message().starts_with(&format!("{field}:")),
        "names {field}: {status:?}"
    );
}

#[tokio::test]
async fn every_call_needs_a_key_with_the_admin_service() {
    let h = Harness::start().await;
    for (key, expected) in [
        ("", Code::Unauthenticated),
        ("kurir-test-unknown-key-0000000000", Code::Unauthenticated),
        (SUBMIT_KEY, Code::PermissionDenied),
        (SUPPRESSION_KEY, Code::PermissionDenied),
        (OTHER_TENANT_KEY, Code::PermissionDenied),
    ] {
        for (call, code) in codes_with(&h, key).await {
            assert_eq!(code, expected, "{call} with key {key:?}");
        }
    }
    assert!(
        h.state.paused_domains().await.unwrap().is_empty(),
        "refused calls changed nothing"
    );
    for (call, code) in codes_with(&h, ADMIN_KEY).await {
        assert_eq!(code, Code::Ok, "{call} with the admin key");
    }
}

#[tokio::test]
async fn bad_input_is_refused_naming_the_field() {
    let h = Harness::start().await;
    expect_invalid(pause(&h, "", 0, "").await, "domain");
    expect_invalid(pause(&h, "[192.0.2.1]", 0, "").await, "domain");
    expect_invalid(pause(&h, "a.test", 0, &"r".repeat(513)).await, "reason");
    expect_invalid(pause(&h, "a.test", u64::MAX, "").await, "duration_seconds");
    expect_invalid(bounce(&h, "bad domain", 0, "").await, "domain");
    expect_invalid(bounce(&h, "a.test", 0, &"r".repeat(513)).await, "reason");
    let request = ResumeDomainRequest { domain: "".into() };
    expect_invalid(h.admin(ADMIN_KEY).resume_domain(request).await, "domain");
    let request = MessageHistoryRequest {
        message_id: "not-a-ulid".into(),
    };
    expect_invalid(
        h.admin(ADMIN_KEY).message_history(request).await,
        "message_id",
    );
    assert!(h.state.paused_domains().await.unwrap().is_empty());
}

#[tokio::test]
async fn init_topics_creates_the_missing_topics() {
    let h = Harness::embedded(|setup| {
        setup.hooks.topic_specs.push(TopicSpec {
            name: "kurir.extra".into(),
            partitions: 3,
        });
    })
    .await;
    assert!(
        h.queue.lag("g", "kurir.extra").await.is_err(),
        "not created yet"
    );
    let mut admin = h.admin(ADMIN_KEY);
    let topics = admin.init_topics(InitTopicsRequest {}).await.unwrap();
    let topics = topics.into_inner().topics;
    let extra = topics.iter().find(|t| t.name == "kurir.extra");
    assert_eq!(extra.map(|t| t.partitions), Some(3), "{topics:?}");
    assert!(topics.iter().any(|t| t.name == "kurir.mail"), "{topics:?}");
    assert_eq!(h.queue.lag("g", "kurir.extra").await.unwrap().len(), 3);
    let again = admin.init_topics(InitTopicsRequest {}).await.unwrap();
    assert_eq!(
        again.into_inner().topics,
        topics,
        "creating them again changes nothing"
    );
}

#[tokio::test]
async fn queue_stats_report_the_sites_of_a_delivering_node() {
    let site = v1::SiteStats {
        site: "mx1.slow.test,mx2.slow.test".into(),
        open_connections: 3,
        idle_connections: 1,
        connection_limit: 2,
        configured_connection_limit: 10,
        rate: 5.0,
        throttle_reason: "421 4.7.0 slow down".into(),
        down_reason: String::new(),
    };
    let reported = site.clone();
    let h = Harness::embedded(move |setup| {
        setup.hooks.sites = Some(Arc::new(move || vec![reported.clone()]));
    })
    .await;
    let stats = h
        .admin(ADMIN_KEY)
        .queue_stats(QueueStatsRequest {})
        .await
        .unwrap();
    assert_eq!(stats.into_inner().sites, [site]);
}

// --- both backends ---------------------------------------------------------------------

/// Pause → listed (and stored as Hold) → resume → gone.
async fn pause_list_resume<Q: Queue + Clone, S: State + Clone>(h: &Harness<Q, S>) {
    let before = SystemTime::now();
    pause(h, "Paused.EXAMPLE", 0, "incident 42").await.unwrap();
    pause(h, "timed.example", 3600, "").await.unwrap();
    let domains = listed(h).await;
    let paused = domains
        .iter()
        .find(|d| d.domain == "paused.example")
        .expect("listed");
    assert_eq!(
        (paused.until_unix_ms, paused.reason.as_str()),
        (0, "incident 42")
    );
    let timed = domains
        .iter()
        .find(|d| d.domain == "timed.example")
        .expect("listed");
    assert!(
        is_from_now(timed.until_unix_ms, before, Duration::from_secs(3600)),
        "{timed:?}"
    );
    let hold = stored(h, "paused.example").await.expect("stored");
    assert_eq!(hold.action, PauseAction::Hold);
    assert!(resume(h, "PAUSED.example").await, "was paused");
    assert!(!listed(h).await.iter().any(|d| d.domain == "paused.example"));
    assert!(!resume(h, "paused.example").await, "resumed already");
    assert!(resume(h, "timed.example").await);
}

/// BounceDomain stores a Bounce order with its reason and lapse; listed with a prefix.
async fn bounce_orders_are_stored<Q: Queue + Clone, S: State + Clone>(h: &Harness<Q, S>) {
    let before = SystemTime::now();
    pause(h, "gone.example", 0, "held first").await.unwrap();
    bounce(h, "Gone.Example", 600, "domain retired")
        .await
        .unwrap();
    let order = stored(h, "gone.example").await.expect("stored");
    assert_eq!(
        order.action,
        PauseAction::Bounce,
        "the bounce order replaced the pause"
    );
    assert_eq!(order.reason, "domain retired");
    let until = order.until.expect("a bounce order lapses");
    assert!(
        is_from_now(ms(until), before, Duration::from_secs(600)),
        "{order:?}"
    );
    let domains = listed(h).await;
    let shown = domains
        .iter()
        .find(|d| d.domain == "gone.example")
        .expect("listed");
    assert_eq!(shown.reason, "bounce: domain retired");
    assert_eq!(shown.until_unix_ms, ms(until));

    bounce(h, "aged.example", 0, "").await.unwrap();
    let order = stored(h, "aged.example").await.expect("stored");
    let until = order.until.expect("a bounce order lapses");
    assert!(
        is_from_now(ms(until), before, MAX_AGE),
        "0 means deliver.max_age: {order:?}"
    );
    assert!(!order.reason.is_empty(), "the DSN gets a diagnostic");
    assert!(resume(h, "gone.example").await && resume(h, "aged.example").await);
    assert_eq!(stored(h, "gone.example").await, None);
}

/// Every partition of the delivery topics, with the records submitted as lag.
async fn queue_stats_show_lag<Q: Queue + Clone, S: State + Clone>(h: &Harness<Q, S>) {
    let mut submission = h.submission(SUBMIT_KEY);
    for i in 0..5 {
        let request = raw(
            "app@shop.test",
            &[&format!("r@lag{i}.test")],
            &message("lag"),
        );
        submission.submit(request).await.unwrap();
    }
    let stats = h
        .admin(ADMIN_KEY)
        .queue_stats(QueueStatsRequest {})
        .await
        .unwrap();
    let stats = stats.into_inner();
    let mut seen: Vec<_> = stats
        .partitions
        .iter()
        .map(|p| (p.topic.as_str(), p.partition))
        .collect();
    seen.sort_unstable();
    let expected = [("kurir.mail", 0), ("kurir.mail", 1), ("kurir.retry.1m", 0)];
    assert_eq!(
        seen, expected,
        "every partition of the mail topic and retry tier"
    );
    for p in &stats.partitions {
        assert_eq!(p.lag, p.end - p.committed, "{p:?}");
    }
    let lag = |topic: &str| -> u64 {
        let of_topic = stats.partitions.iter().filter(|p| p.topic == topic);
        of_topic.map(|p| p.lag).sum()
    };
    assert_eq!(lag("kurir.mail"), 5, "nothing delivered yet: {stats:?}");
    assert_eq!(lag("kurir.retry.1m"), 0);
    assert!(stats.sites.is_empty(), "this node does not deliver");
}

/// The history of a message submitted through the API, as the delivery role records it.
async fn history_of_a_submitted_message<Q: Queue + Clone, S: State + Clone>(h: &Harness<Q, S>) {
    let request = raw("app@shop.test", &["rcpt@hist.test"], &message("history"));
    let response = h.submission(SUBMIT_KEY).submit(request).await.unwrap();
    let text = response.into_inner().message_id;
    let id: MessageId = text.parse().unwrap();
    let at = UNIX_EPOCH + Duration::from_millis(ms(SystemTime::now()) as u64);
    let recorded = [
        (TrackKind::Deferred, "421 try later"),
        (TrackKind::Delivered, "250 ok from mx.hist.test"),
    ];
    for (i, (kind, detail)) in recorded.iter().enumerate() {
        let entry = TrackEntry {
            at: at + Duration::from_millis(i as u64),
            kind: *kind,
            recipient: Some("rcpt@hist.test".into()),
            detail: (*detail).into(),
        };
        h.state.track(id, &entry).await.unwrap();
    }
    let request = MessageHistoryRequest { message_id: text };
    let history = h.admin(ADMIN_KEY).message_history(request).await.unwrap();
    let entries = history.into_inner().entries;
    let last: Vec<_> = entries
        .iter()
        .rev()
        .take(2)
        .rev()
        .map(|e| {
            (
                e.time_unix_ms,
                e.kind.as_str(),
                e.recipient.as_str(),
                e.detail.as_str(),
            )
        })
        .collect();
    let t = ms(at);
    let expected = [
        (t, "deferred", "rcpt@hist.test", "421 try later"),
        (
            t + 1,
            "delivered",
            "rcpt@hist.test",
            "250 ok from mx.hist.test",
        ),
    ];
    assert_eq!(last, expected, "oldest first: {entries:?}");
    assert_eq!(
        entries.len(),
        2,
        "submission writes no history entry: {entries:?}"
    );
    let unknown = MessageHistoryRequest {
        message_id: MessageId::new().to_string(),
    };
    let history = h.admin(ADMIN_KEY).message_history(unknown).await.unwrap();
    assert!(history.into_inner().entries.is_empty());
}

#[tokio::test]
async fn a_paused_domain_is_listed_until_it_is_resumed() {
    pause_list_resume(&Harness::start().await).await;
}

#[tokio::test]
async fn bounce_domain_stores_a_bounce_order() {
    bounce_orders_are_stored(&Harness::start().await).await;
}

#[tokio::test]
async fn queue_stats_list_every_partition_with_its_lag() {
    queue_stats_show_lag(&Harness::start().await).await;
}

#[tokio::test]
async fn message_history_is_read_by_id() {
    history_of_a_submitted_message(&Harness::start().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_kafka_and_redis_admin_calls_work() {
    let h = Harness::cluster(|_| {}).await;
    pause_list_resume(&h).await;
    bounce_orders_are_stored(&h).await;
    queue_stats_show_lag(&h).await;
    history_of_a_submitted_message(&h).await;
    let topics = h
        .admin(ADMIN_KEY)
        .init_topics(InitTopicsRequest {})
        .await
        .unwrap();
    assert!(!topics.into_inner().topics.is_empty());
}
