//! Tests of what is specific to the Redis backend, against a real `redis-server`: fail-fast
//! and recovery across an outage, atomicity under concurrency, and the key layout (prefix,
//! TTLs). The shared semantics are covered by `tests/conformance`.

use std::time::{Duration, Instant, SystemTime};

use kurir_core::{Address, BounceClass, Domain, MessageId};
use kurir_testkit::RedisServer;

use super::RedisState;
use crate::model::{
    Claim, DomainPause, PauseAction, Reason, Scope, Suppression, Tenant, TrackEntry, TrackKind,
};
use crate::{State, StateConfig, StateError};

fn config(url: &str) -> StateConfig {
    let mut config = StateConfig {
        tenants: vec!["acme".into()],
        soft_bounce_threshold: 3,
        ..StateConfig::default()
    };
    config.redis.url = url.to_owned();
    config.redis.key_prefix = "kt".into();
    config.redis.command_timeout = Duration::from_millis(300);
    config.redis.connect_timeout = Duration::from_millis(300);
    config
}

async fn start() -> (RedisServer, RedisState) {
    let server = RedisServer::start().await.expect("redis-server");
    let state = RedisState::connect(&config(&server.url()))
        .await
        .expect("connect");
    (server, state)
}

fn acme() -> Tenant {
    Tenant::new("acme").unwrap()
}

fn addr(s: &str) -> Address {
    Address::parse(s).unwrap()
}

fn entry(scope: Scope, address: &str, expires: Option<SystemTime>) -> Suppression {
    Suppression {
        scope,
        address: addr(address),
        reason: Reason::Manual,
        source: "test".into(),
        created: SystemTime::now(),
        expires,
    }
}

async fn raw<T: redis::FromRedisValue>(server: &RedisServer, cmd: &redis::Cmd) -> T {
    let mut conn = server
        .client()
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    cmd.query_async(&mut conn).await.unwrap()
}

#[tokio::test]
async fn outage_fails_fast_and_recovers_by_itself() {
    let (mut server, state) = start().await;
    let a = [addr("x@example.test")];
    assert_eq!(
        state.check_suppressed(&acme(), &a).await.unwrap(),
        vec![None]
    );

    server.stop().await.unwrap();
    for _ in 0..3 {
        let began = Instant::now();
        let err = state.check_suppressed(&acme(), &a).await.unwrap_err();
        assert!(matches!(err, StateError::Unavailable(_)), "{err:?}");
        assert!(err.is_retryable());
        assert!(
            began.elapsed() < Duration::from_millis(1_000),
            "took {:?}",
            began.elapsed()
        );
        let began = Instant::now();
        let err = state.claim_idempotency_key(&acme(), "k").await.unwrap_err();
        assert!(matches!(err, StateError::Unavailable(_)), "{err:?}");
        assert!(
            began.elapsed() < Duration::from_millis(1_000),
            "took {:?}",
            began.elapsed()
        );
    }

    server.restart().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match state
            .suppress(&[entry(Scope::Tenant(acme()), "x@example.test", None)])
            .await
        {
            Ok(()) => break,
            Err(e) => {
                assert!(e.is_retryable(), "{e:?}");
                assert!(Instant::now() < deadline, "no recovery: {e:?}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    let found = state.check_suppressed(&acme(), &a).await.unwrap();
    assert_eq!(found[0].as_ref().map(|s| s.reason), Some(Reason::Manual));
}

#[tokio::test]
async fn connect_to_a_dead_server_is_unavailable() {
    let mut server = RedisServer::start().await.unwrap();
    let url = server.url();
    server.stop().await.unwrap();
    let began = Instant::now();
    let err = RedisState::connect(&config(&url)).await.unwrap_err();
    assert!(err.is_retryable(), "{err:?}");
    assert!(began.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn concurrent_claims_yield_exactly_one_new() {
    let (_server, state) = start().await;
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let state = state.clone();
            tokio::spawn(async move {
                state
                    .claim_idempotency_key(&acme(), "submit-1")
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut new = 0;
    for t in tasks {
        match t.await.unwrap() {
            Claim::New => new += 1,
            Claim::Pending => {}
            Claim::Done(_) => panic!("nothing completed the key"),
        }
    }
    assert_eq!(new, 1);
    state
        .complete_idempotency_key(&acme(), "submit-1", b"ids")
        .await
        .unwrap();
    assert_eq!(
        state
            .claim_idempotency_key(&acme(), "submit-1")
            .await
            .unwrap(),
        Claim::Done(b"ids".to_vec())
    );
    // A release only drops a pending claim, never a recorded result.
    state
        .release_idempotency_key(&acme(), "submit-1")
        .await
        .unwrap();
    assert_eq!(
        state
            .claim_idempotency_key(&acme(), "submit-1")
            .await
            .unwrap(),
        Claim::Done(b"ids".to_vec())
    );
}

#[tokio::test]
async fn bad_idempotency_keys_name_the_field() {
    let (_server, state) = start().await;
    for key in [String::new(), "k".repeat(257)] {
        let err = state
            .claim_idempotency_key(&acme(), &key)
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                StateError::Invalid {
                    field: "idempotency_key",
                    ..
                }
            ),
            "{err:?}"
        );
    }
    let err = state
        .claim_idempotency_key(&Tenant::new("other").unwrap(), "k")
        .await
        .unwrap_err();
    assert_eq!(err, StateError::UnknownTenant("other".into()));
}

#[tokio::test]
async fn concurrent_soft_bounces_suppress_once_per_threshold() {
    let (_server, state) = start().await;
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let state = state.clone();
            tokio::spawn(async move {
                state
                    .record_bounce(
                        &acme(),
                        &addr("soft@example.test"),
                        BounceClass::Quota,
                        &format!("ev{i}"),
                    )
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut verdicts = Vec::new();
    for t in tasks {
        verdicts.push(t.await.unwrap());
    }
    // Threshold 3: the 20 bounces form six full windows (1, 2, 3 → suppress, window emptied)
    // and a partial one (1, 2), in whatever order they ran.
    let mut counts: Vec<u32> = verdicts.iter().map(|v| v.soft_bounces).collect();
    counts.sort_unstable();
    let mut expected: Vec<u32> = (0..6).flat_map(|_| [1, 2, 3]).chain([1, 2]).collect();
    expected.sort_unstable();
    assert_eq!(counts, expected, "each bounce counted once");
    assert!(
        verdicts
            .iter()
            .all(|v| v.suppressed == (v.soft_bounces == 3))
    );
    let found = state
        .check_suppressed(&acme(), &[addr("soft@example.test")])
        .await
        .unwrap();
    assert_eq!(
        found[0].as_ref().map(|s| s.reason),
        Some(Reason::SoftBounces)
    );
}

#[tokio::test]
async fn every_key_has_the_prefix_and_the_right_ttl() {
    let (server, state) = start().await;
    let id = MessageId::new();
    write_one_of_each(&state, id).await;
    let keys: Vec<String> = raw(&server, redis::cmd("KEYS").arg("*")).await;
    assert!(keys.iter().all(|k| k.starts_with("kt:")), "{keys:?}");
    let server = &server;
    let ttl = |key: String| async move { raw::<i64>(server, redis::cmd("PTTL").arg(key)).await };
    let within =
        |ms: i64, expected: Duration| ms > 0 && ms <= i64::try_from(expected.as_millis()).unwrap();
    let defaults = StateConfig::default();
    assert!(within(
        ttl(format!("kt:ledger:{id}")).await,
        defaults.ledger_ttl
    ));
    assert!(within(
        ttl(format!("kt:track:{id}")).await,
        defaults.tracking_ttl
    ));
    assert!(within(
        ttl("kt:soft:{t:acme}:c@example.test".into()).await,
        defaults.soft_bounce_window
    ));
    assert!(within(
        ttl("kt:idem:acme:k1".into()).await,
        crate::model::PENDING_CLAIM_TTL
    ));
    assert!(within(
        ttl("kt:idem:acme:k2".into()).await,
        defaults.idempotency_ttl
    ));
    for persistent in [
        "kt:sup:{t:acme}:entries",
        "kt:sup:{t:acme}:index",
        "kt:sup:{global}:entries",
        "kt:pauses",
        "kt:domain:example.test:counters",
    ] {
        assert_eq!(ttl(persistent.into()).await, -1, "{persistent}");
    }
    let expiry: Option<u64> = raw(
        server,
        redis::cmd("ZSCORE")
            .arg("kt:sup:{t:acme}:expiry")
            .arg("a@example.test"),
    )
    .await;
    assert!(expiry.is_some());
    let history = state.history(id).await.unwrap();
    assert_eq!(
        history[0].detail.len(),
        crate::model::MAX_TEXT,
        "detail truncated, not rejected"
    );
}

#[tokio::test]
async fn pauses_stored_before_actions_existed_read_as_hold() {
    let (server, state) = start().await;
    // The format before the action field: `until_ns-or-empty \t reason`.
    let _: i64 = raw(
        &server,
        redis::cmd("HSET")
            .arg("kt:pauses")
            .arg("old.test")
            .arg("\tincident"),
    )
    .await;
    state
        .pause_domain(&DomainPause {
            domain: Domain::parse("new.test").unwrap(),
            until: None,
            reason: "dsn text".into(),
            action: PauseAction::Bounce,
        })
        .await
        .unwrap();
    let stored: String = raw(&server, redis::cmd("HGET").arg("kt:pauses").arg("new.test")).await;
    assert_eq!(stored, "\tbounce\tdsn text");
    let pauses = state.paused_domains().await.unwrap();
    let seen: Vec<_> = pauses
        .iter()
        .map(|p| (p.domain.as_str(), p.action, p.reason.as_str()))
        .collect();
    assert_eq!(
        seen,
        [
            ("new.test", PauseAction::Bounce, "dsn text"),
            ("old.test", PauseAction::Hold, "incident"),
        ]
    );
    assert!(
        state
            .resume_domain(&Domain::parse("old.test").unwrap())
            .await
            .unwrap()
    );
}

#[tokio::test]
async fn a_settle_sent_twice_appends_its_history_once() {
    // A retry after an ambiguous error (the reply lost, the write done) sends the same
    // settlement again.
    let (_server, state) = start().await;
    let id = MessageId::new();
    let domain = Domain::parse("retry.test").unwrap();
    let now = SystemTime::now();
    let line = |rcpt: &str, kind| TrackEntry {
        at: now,
        kind,
        recipient: Some(rcpt.into()),
        detail: "250 ok".into(),
    };
    let history = [
        line("a@retry.test", TrackKind::Delivered),
        line("b@retry.test", TrackKind::Deferred),
    ];
    let settlement = crate::Settlement {
        id,
        domain: &domain,
        delivered: &[addr("a@retry.test")],
        counts: crate::DomainCounters::default(),
        history: &history,
    };
    state.settle(&settlement).await.unwrap();
    state.settle(&settlement).await.unwrap();
    assert_eq!(state.history(id).await.unwrap(), history);
    // A later attempt's entries (another time) are appended.
    let later = TrackEntry {
        at: now + Duration::from_secs(60),
        ..line("b@retry.test", TrackKind::Delivered)
    };
    state.track(id, &later).await.unwrap();
    assert_eq!(state.history(id).await.unwrap().len(), 3);
}

#[tokio::test]
async fn tracking_keeps_the_first_entry_and_the_newest() {
    let (_server, state) = start().await;
    let id = MessageId::new();
    let max = StateConfig::default().tracking_max_entries as usize;
    for i in 0..max + 10 {
        let kind = if i == 0 {
            TrackKind::Accepted
        } else {
            TrackKind::Deferred
        };
        let e = TrackEntry {
            at: SystemTime::now(),
            kind,
            recipient: None,
            detail: i.to_string(),
        };
        state.track(id, &e).await.unwrap();
    }
    let history = state.history(id).await.unwrap();
    assert_eq!(history.len(), max);
    assert_eq!(history[0].kind, TrackKind::Accepted);
    let details: Vec<usize> = history[1..]
        .iter()
        .map(|e| e.detail.parse().unwrap())
        .collect();
    assert_eq!(details, (11..max + 10).collect::<Vec<_>>());
}

#[tokio::test]
async fn expired_entries_are_invisible_and_purged_by_listing() {
    let (server, state) = start().await;
    let past = SystemTime::now() - Duration::from_secs(1);
    state
        .suppress(&[
            entry(Scope::Global, "old@example.test", Some(past)),
            entry(Scope::Global, "new@example.test", None),
        ])
        .await
        .unwrap();
    // The purge in the write already removed it; write it back past the purge to test reads.
    plant_expired(&server, past).await;
    let found = state
        .check_suppressed(
            &acme(),
            &[addr("old@example.test"), addr("new@example.test")],
        )
        .await
        .unwrap();
    assert!(found[0].is_none() && found[1].is_some());
    let page = state
        .list_suppressions(&Scope::Global, "", 10)
        .await
        .unwrap();
    assert_eq!(page.items.len(), 1);
    let left: u64 = raw(&server, redis::cmd("HLEN").arg("kt:sup:{global}:entries")).await;
    assert_eq!(left, 1);
    assert_eq!(
        state
            .unsuppress(
                &Scope::Global,
                &[addr("old@example.test"), addr("new@example.test")]
            )
            .await
            .unwrap(),
        1
    );
}

/// Writes an expired global entry for `old@example.test` behind the backend's back.
async fn plant_expired(server: &RedisServer, past: SystemTime) {
    let value = super::codec::encode_entry(&entry(Scope::Global, "old@example.test", Some(past)));
    let mut pipe = redis::pipe();
    let a = "old@example.test";
    pipe.cmd("HSET")
        .arg("kt:sup:{global}:entries")
        .arg(a)
        .arg(value.unwrap())
        .ignore();
    pipe.cmd("ZADD")
        .arg("kt:sup:{global}:index")
        .arg(0)
        .arg(a)
        .ignore();
    pipe.cmd("ZADD")
        .arg("kt:sup:{global}:expiry")
        .arg(1)
        .arg(a)
        .ignore();
    let mut conn = server
        .client()
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let () = pipe.query_async(&mut conn).await.unwrap();
}

/// Uses every kind of key the backend writes.
async fn write_one_of_each(state: &RedisState, id: MessageId) {
    let soon = SystemTime::now() + Duration::from_secs(3600);
    state
        .suppress(&[
            entry(Scope::Tenant(acme()), "a@example.test", Some(soon)),
            entry(Scope::Global, "b@example.test", None),
        ])
        .await
        .unwrap();
    state
        .record_bounce(&acme(), &addr("c@example.test"), BounceClass::Quota, "ev")
        .await
        .unwrap();
    state
        .count_domain(
            &Domain::parse("example.test").unwrap(),
            crate::DomainCounter::Deferred,
        )
        .await
        .unwrap();
    state
        .mark_delivered(id, &[addr("a@example.test")])
        .await
        .unwrap();
    state.claim_idempotency_key(&acme(), "k1").await.unwrap();
    state.claim_idempotency_key(&acme(), "k2").await.unwrap();
    state
        .complete_idempotency_key(&acme(), "k2", b"r")
        .await
        .unwrap();
    let track = TrackEntry {
        at: SystemTime::now(),
        kind: TrackKind::Accepted,
        recipient: None,
        detail: "x".repeat(5000),
    };
    state.track(id, &track).await.unwrap();
    let pause = DomainPause {
        domain: Domain::parse("paused.test").unwrap(),
        until: None,
        reason: "ops".into(),
        action: PauseAction::Hold,
    };
    state.pause_domain(&pause).await.unwrap();
}
