//! The lifecycle contract: activities, shutdown fan-out, readiness and the bounded drain.

use std::time::Duration;

use kurir_lifecycle::Lifecycle;
use tokio::time::Instant;

#[tokio::test(start_paused = true)]
async fn drain_completes_when_guards_drop() {
    let lifecycle = Lifecycle::new();
    let session = lifecycle
        .activity("smtp_session")
        .expect("not shutting down");
    let delivery = lifecycle.activity("delivery").expect("not shutting down");
    assert_eq!(lifecycle.in_flight(), 2);

    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(2)).await;
        drop(session);
        tokio::time::sleep(Duration::from_secs(3)).await;
        drop(delivery);
    });

    let start = Instant::now();
    let report = lifecycle.drain(Duration::from_secs(30)).await;
    assert!(report.is_complete(), "{report:?}");
    assert_eq!(start.elapsed(), Duration::from_secs(5));
    assert_eq!(lifecycle.in_flight(), 0);
}

#[tokio::test(start_paused = true)]
async fn drain_with_nothing_in_flight_returns_at_once() {
    let lifecycle = Lifecycle::new();
    let start = Instant::now();
    let report = lifecycle.drain(Duration::from_secs(30)).await;
    assert!(report.is_complete());
    assert_eq!(start.elapsed(), Duration::ZERO);
    assert!(lifecycle.is_shutting_down(), "drain begins shutdown");
}

#[tokio::test(start_paused = true)]
async fn drain_times_out_and_names_the_stuck_activity() {
    let lifecycle = Lifecycle::new();
    let _stuck = lifecycle
        .activity("data_transfer")
        .expect("not shutting down");
    let quick = lifecycle
        .activity("smtp_session")
        .expect("not shutting down");
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(1)).await;
        drop(quick);
    });

    let start = Instant::now();
    let report = lifecycle.drain(Duration::from_secs(12)).await;
    assert_eq!(start.elapsed(), Duration::from_secs(12));
    assert!(!report.is_complete());
    let names: Vec<_> = report.remaining.iter().map(|a| a.name).collect();
    assert_eq!(names, ["data_transfer"]);
    assert_eq!(report.remaining[0].age, Duration::from_secs(12));
}

#[tokio::test]
async fn no_new_activity_after_shutdown() {
    let lifecycle = Lifecycle::new();
    let before = lifecycle.activity("smtp_session");
    assert!(before.is_some());
    lifecycle.shutdown();
    assert!(lifecycle.activity("smtp_session").is_none());
    assert!(
        lifecycle.clone().activity("delivery").is_none(),
        "clones share state"
    );
    // Work accepted before shutdown is still counted until it finishes.
    assert_eq!(lifecycle.in_flight(), 1);
    assert!(before.as_ref().is_some_and(|a| a.is_shutting_down()));
    drop(before);
    assert_eq!(lifecycle.in_flight(), 0);
}

#[tokio::test]
async fn idle_waits_for_the_named_activities_only() {
    let lifecycle = Lifecycle::new();
    lifecycle.idle("grpc").await; // none: at once
    let call = lifecycle.activity("grpc").unwrap();
    let other = lifecycle.activity("smtp_session").unwrap();
    let waiter = tokio::spawn({
        let lifecycle = lifecycle.clone();
        async move { lifecycle.idle("grpc").await }
    });
    tokio::task::yield_now().await;
    assert!(!waiter.is_finished(), "a grpc activity is in flight");
    drop(call);
    tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .expect("woken when the last grpc activity ends")
        .unwrap();
    assert_eq!(lifecycle.in_flight(), 1, "the other name is not waited for");
    drop(other);
}

#[tokio::test]
async fn shutdown_is_idempotent() {
    let lifecycle = Lifecycle::new();
    lifecycle.shutdown();
    lifecycle.shutdown();
    assert!(lifecycle.is_shutting_down());
    lifecycle.shutdown_signal().await;
}

#[tokio::test(start_paused = true)]
async fn shutdown_signal_fans_out_to_many_waiters() {
    let lifecycle = Lifecycle::new();
    let mut waiters = tokio::task::JoinSet::new();
    for _ in 0..100 {
        let signal = lifecycle.shutdown_signal();
        waiters.spawn(async move {
            assert!(!signal.is_shutting_down());
            signal.wait().await;
            assert!(signal.is_shutting_down());
        });
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!waiters.is_empty());
    assert!(
        waiters.try_join_next().is_none(),
        "nobody wakes before shutdown"
    );

    lifecycle.shutdown();
    let mut woken = 0;
    while let Some(joined) = waiters.join_next().await {
        joined.expect("waiter task");
        woken += 1;
    }
    assert_eq!(woken, 100);
    // A signal taken after shutdown resolves at once.
    lifecycle.shutdown_signal().wait().await;
}

#[tokio::test]
async fn shutdown_signal_resolves_when_every_lifecycle_is_gone() {
    let lifecycle = Lifecycle::new();
    let signal = lifecycle.shutdown_signal();
    drop(lifecycle);
    signal.wait().await;
}

#[test]
fn readiness_needs_ready_flag_and_no_shutdown() {
    let lifecycle = Lifecycle::new();
    assert!(!lifecycle.is_ready(), "starting");
    lifecycle.set_ready(true);
    assert!(lifecycle.is_ready());
    lifecycle.shutdown();
    assert!(!lifecycle.is_ready(), "draining");
}

#[test]
fn in_flight_counts_by_name() {
    let lifecycle = Lifecycle::new();
    let _a = lifecycle.activity("smtp_session");
    let _b = lifecycle.activity("smtp_session");
    let _c = lifecycle.activity("delivery");
    assert_eq!(
        lifecycle.in_flight_by_name(),
        [("delivery", 1), ("smtp_session", 2)]
    );
    let snapshot = lifecycle.snapshot();
    assert_eq!(snapshot.len(), 3);
    assert_eq!(snapshot[0].name, "smtp_session", "oldest first");
}
