//! Fault injection: rates are honoured within a tolerance, the sender's report and the
//! sink agree on every refusal and hang-up, pattern rules and greylisting, latency.

use std::time::Duration;

use kurir_loadtest::message::{RecipientClass, RecipientPlan};
use kurir_loadtest::sink::Faults;

use crate::common::{send, sink, smtp_load};

/// Whether `got` is within five standard deviations of `n` draws with probability `p`.
fn near(got: u64, n: u64, p: f64) -> bool {
    let mean = n as f64 * p;
    let sigma = (n as f64 * p * (1.0 - p)).sqrt();
    (got as f64 - mean).abs() <= 5.0 * sigma
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_rates_are_honoured_and_both_sides_agree() {
    let sink = sink(Faults {
        reject: vec!["550:5.1.1:0.10".parse().unwrap()],
        defer: vec!["451:0.05".parse().unwrap()],
        disconnect: 0.05,
        ..Faults::default()
    })
    .await;
    let n = 2000;
    let report = send(&smtp_load(&sink, n)).await;
    let seen = sink.stop().await;

    let rejected = seen.rejected.get("550 5.1.1").copied().unwrap_or(0);
    let deferred = seen.deferred.get("451 4.3.0").copied().unwrap_or(0);
    assert!(near(rejected, n, 0.10), "{rejected} rejected\n{seen}");
    assert!(near(deferred, n, 0.05), "{deferred} deferred\n{seen}");
    // Hang-ups only happen to transactions with an accepted recipient.
    let transactions = n - rejected - deferred;
    assert!(near(seen.disconnects, transactions, 0.05), "{seen}");

    // What the sender saw is what the sink did.
    assert_eq!(
        report.refusals.get("550 5.1.1"),
        Some(&rejected),
        "{report}"
    );
    assert_eq!(
        report.refusals.get("451 4.3.0"),
        Some(&deferred),
        "{report}"
    );
    assert_eq!(
        report.errors.get("smtp 550 5.1.1"),
        Some(&rejected),
        "{report}"
    );
    let hangups: u64 = report
        .errors
        .iter()
        .filter(|(k, _)| k.starts_with("io data"))
        .map(|(_, v)| v)
        .sum();
    assert_eq!(hangups, seen.disconnects, "{report}\n{seen}");
    assert_eq!(report.accepted, seen.messages);
    assert_eq!(seen.distinct_ids, seen.messages);
    assert_eq!(report.messages, n);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recipient_rules_refuse_by_pattern_and_greylist_once() {
    let sink = sink(Faults {
        rcpt: vec![
            "bounce-*=550:5.1.1".parse().unwrap(),
            "grey-*=451:once".parse().unwrap(),
        ],
        ..Faults::default()
    })
    .await;
    let mut config = smtp_load(&sink, 300);
    config.recipients = RecipientPlan {
        per_message: 2,
        classes: vec![
            RecipientClass {
                prefix: "bounce-".into(),
                percent: 10.0,
            },
            RecipientClass {
                prefix: "grey-".into(),
                percent: 10.0,
            },
        ],
        ..RecipientPlan::default()
    };
    let all: Vec<String> = (0..300)
        .flat_map(|s| config.recipients.recipients(s))
        .collect();
    let bounces = all.iter().filter(|a| a.starts_with("bounce-")).count() as u64;
    let greys = all.iter().filter(|a| a.starts_with("grey-")).count() as u64;
    assert!(bounces > 0 && greys > 0);

    let first = send(&config).await;
    assert_eq!(first.refusals.get("550 5.1.1"), Some(&bounces), "{first}");
    assert_eq!(first.refusals.get("451 4.3.0"), Some(&greys), "{first}");
    assert_eq!(first.recipients_accepted, 600 - bounces - greys);

    // The same recipients again: greylisted ones pass now, bounces still bounce.
    let second = send(&config).await;
    assert_eq!(second.refusals.get("550 5.1.1"), Some(&bounces), "{second}");
    assert_eq!(second.refusals.get("451 4.3.0"), None, "{second}");
    let seen = sink.stop().await;
    assert_eq!(seen.rejected_recipients, bounces, "{seen}");
    assert_eq!(seen.deferred.get("451 4.3.0"), Some(&greys));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latency_is_added_before_the_reply_after_the_data() {
    let sink = sink(Faults {
        latency: Duration::from_millis(40),
        ..Faults::default()
    })
    .await;
    let mut config = smtp_load(&sink, 20);
    config.connections = 2;
    let report = send(&config).await;
    assert_eq!(report.accepted, 20, "{report}");
    assert!(report.accept_latency.p50_ms >= 40.0, "{report}");
    // Both connections wait at once: 20 messages take about 10 × 40 ms, not 20 × 40 ms.
    assert!(report.elapsed_s >= 0.39, "{report}");
}
