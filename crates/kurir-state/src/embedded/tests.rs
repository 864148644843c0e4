//! Unit tests of the embedded backend: what the conformance suite cannot see from outside
//! (durability without `close`, the sweep, batching) and a throughput probe.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use kurir_core::{Address, MessageId};

use super::EmbeddedState;
use super::sweep::sweep;
use crate::model::{Claim, Reason, Scope, Suppression, Tenant};
use crate::{State, StateConfig};

fn config() -> StateConfig {
    StateConfig {
        tenants: vec!["acme".into()],
        ..StateConfig::default()
    }
}

fn acme() -> Tenant {
    Tenant::new("acme").unwrap()
}

fn addr(s: &str) -> Address {
    Address::parse(s).unwrap()
}

fn entry(address: &str, expires: Option<SystemTime>) -> Suppression {
    Suppression {
        scope: Scope::Tenant(acme()),
        address: addr(address),
        reason: Reason::Manual,
        source: "test".into(),
        created: SystemTime::now(),
        expires,
    }
}

#[tokio::test]
async fn acknowledged_writes_survive_a_reopen_without_close() {
    let dir = tempfile::tempdir().unwrap();
    let state = EmbeddedState::open(dir.path(), &config()).unwrap();
    state.suppress(&[entry("a@x.test", None)]).await.unwrap();
    assert_eq!(
        state.claim_idempotency_key(&acme(), "k").await.unwrap(),
        Claim::New
    );
    drop(state);
    // The last handle is gone: the sync thread flushed and released the database.
    let state = EmbeddedState::open(dir.path(), &config()).unwrap();
    assert!(
        state
            .check_suppressed(&acme(), &[addr("a@x.test")])
            .await
            .unwrap()[0]
            .is_some()
    );
    assert_eq!(
        state.claim_idempotency_key(&acme(), "k").await.unwrap(),
        Claim::Pending
    );
}

#[tokio::test]
async fn a_second_open_of_the_same_directory_fails() {
    let dir = tempfile::tempdir().unwrap();
    let state = EmbeddedState::open(dir.path(), &config()).unwrap();
    assert!(EmbeddedState::open(dir.path(), &config()).is_err());
    state.close().await;
    let err = state
        .suppress(&[entry("a@x.test", None)])
        .await
        .unwrap_err();
    assert!(
        err.is_retryable(),
        "writes after close fail as unavailable: {err:?}"
    );
}

#[tokio::test]
async fn expired_entries_are_ignored_at_read_time_and_swept() {
    let dir = tempfile::tempdir().unwrap();
    let state = EmbeddedState::open(dir.path(), &config()).unwrap();
    let past = SystemTime::now() - Duration::from_secs(5);
    let entries = [entry("old@x.test", Some(past)), entry("live@x.test", None)];
    state.suppress(&entries).await.unwrap();
    let found = state
        .check_suppressed(&acme(), &[addr("old@x.test"), addr("live@x.test")])
        .await
        .unwrap();
    assert!(found[0].is_none() && found[1].is_some());
    let page = state
        .list_suppressions(&Scope::Tenant(acme()), "", 10)
        .await
        .unwrap();
    assert_eq!(page.items.len(), 1);

    let store = &state.inner.store;
    assert_eq!(
        store.suppressions.len().unwrap(),
        2,
        "still on disk before the sweep"
    );
    assert_eq!(sweep(store, SystemTime::now(), 100).unwrap(), 1);
    assert_eq!(store.suppressions.len().unwrap(), 1);
    assert!(store.expiry.is_empty().unwrap());
}

#[tokio::test]
async fn the_sweep_keeps_entries_replaced_by_live_ones() {
    let dir = tempfile::tempdir().unwrap();
    let state = EmbeddedState::open(dir.path(), &config()).unwrap();
    let past = SystemTime::now() - Duration::from_secs(5);
    state
        .suppress(&[entry("a@x.test", Some(past))])
        .await
        .unwrap();
    state.suppress(&[entry("a@x.test", None)]).await.unwrap();
    sweep(&state.inner.store, SystemTime::now(), 100).unwrap();
    assert!(
        state
            .check_suppressed(&acme(), &[addr("a@x.test")])
            .await
            .unwrap()[0]
            .is_some()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_claims_have_one_winner() {
    let dir = tempfile::tempdir().unwrap();
    let state = EmbeddedState::open(dir.path(), &config()).unwrap();
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let state = state.clone();
            tokio::spawn(async move { state.claim_idempotency_key(&acme(), "race").await.unwrap() })
        })
        .collect();
    let mut new = 0;
    for task in tasks {
        new += usize::from(task.await.unwrap() == Claim::New);
    }
    assert_eq!(new, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_soft_bounces_are_all_counted() {
    let dir = tempfile::tempdir().unwrap();
    let config = StateConfig {
        soft_bounce_threshold: 1000,
        ..config()
    };
    let state = EmbeddedState::open(dir.path(), &config).unwrap();
    let tasks: Vec<_> = (0..40)
        .map(|_| {
            let state = state.clone();
            tokio::spawn(async move {
                let class = kurir_core::BounceClass::Quota;
                state
                    .record_bounce(&acme(), &addr("full@x.test"), class, "t")
                    .await
                    .unwrap()
                    .soft_bounces
            })
        })
        .collect();
    let mut counts = Vec::new();
    for task in tasks {
        counts.push(task.await.unwrap());
    }
    counts.sort_unstable();
    assert_eq!(
        counts,
        (1..=40).collect::<Vec<u32>>(),
        "every count seen exactly once"
    );
}

#[tokio::test]
async fn a_batch_with_one_address_twice_keeps_the_last() {
    let dir = tempfile::tempdir().unwrap();
    let state = EmbeddedState::open(dir.path(), &config()).unwrap();
    let mut second = entry("a@x.test", None);
    second.reason = Reason::Complaint;
    state
        .suppress(&[entry("a@X.test", None), second])
        .await
        .unwrap();
    let found = state
        .check_suppressed(&acme(), &[addr("a@x.test")])
        .await
        .unwrap();
    assert_eq!(found[0].as_ref().map(|e| e.reason), Some(Reason::Complaint));
    assert_eq!(
        state
            .unsuppress(
                &Scope::Tenant(acme()),
                &[addr("a@x.test"), addr("a@x.test")]
            )
            .await
            .unwrap(),
        1
    );
}

#[tokio::test]
async fn history_is_dropped_with_its_newest_entry() {
    let dir = tempfile::tempdir().unwrap();
    let state = EmbeddedState::open(dir.path(), &config()).unwrap();
    let id = MessageId::new();
    let entry = crate::TrackEntry {
        at: SystemTime::now(),
        kind: crate::TrackKind::Accepted,
        recipient: None,
        detail: "é".repeat(crate::model::MAX_TEXT),
    };
    state.track(id, &entry).await.unwrap();
    let history = state.history(id).await.unwrap();
    assert!(
        history[0].detail.len() <= crate::model::MAX_TEXT,
        "details are cut at a char boundary"
    );
    let later = SystemTime::now() + config().tracking_ttl + Duration::from_secs(2);
    sweep(&state.inner.store, later, 100).unwrap();
    assert!(state.history(id).await.unwrap().is_empty());
}

/// Throughput probe (timing belongs in benchmarks: this prints, and asserts only that a
/// 10,000-entry batch and a check of as many addresses finish).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suppress_and_check_ten_thousand() {
    let dir = tempfile::tempdir().unwrap();
    let state = Arc::new(EmbeddedState::open(dir.path(), &config()).unwrap());
    let entries: Vec<_> = (0..10_000)
        .map(|i| entry(&format!("user{i}@bulk.test"), None))
        .collect();
    let started = Instant::now();
    state.suppress(&entries).await.unwrap();
    let suppressed = started.elapsed();
    let probe: Vec<_> = (5_000..15_000)
        .map(|i| addr(&format!("user{i}@bulk.test")))
        .collect();
    let started = Instant::now();
    let found = state.check_suppressed(&acme(), &probe).await.unwrap();
    let checked = started.elapsed();
    assert_eq!(found.iter().filter(|f| f.is_some()).count(), 5_000);
    eprintln!("suppress 10k in {suppressed:?}; check 10k in {checked:?}");
}
