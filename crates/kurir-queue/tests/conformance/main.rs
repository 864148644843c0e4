//! One conformance suite, run against every queue backend: the embedded store (in a temp
//! dir) and Kafka (the real Tansu broker from the test kit).
//!
//! Each case in `cases.rs` is generic over a [`Harness`]; `conformance_cases!` instantiates it
//! once per backend, so both backends answer to the same specification.

// Test modules share helpers freely; `pub` here means "for the other test modules".
#![allow(unreachable_pub)]

mod cases;
mod crash;
mod driver;
mod harness;

/// Instantiates every case for one harness type.
macro_rules! conformance_cases {
    ($module:ident, $harness:ty) => {
        mod $module {
            use super::cases;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn keeps_per_key_order() {
                cases::keeps_per_key_order::<$harness>().await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn acknowledged_publishes_survive_a_restart() {
                cases::acknowledged_publishes_survive_a_restart::<$harness>().await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn unacknowledged_records_are_redelivered() {
                cases::unacknowledged_records_are_redelivered::<$harness>().await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn commits_only_up_to_the_low_watermark() {
                cases::commits_only_up_to_the_low_watermark::<$harness>().await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn holds_retry_records_until_not_before() {
                cases::holds_retry_records_until_not_before::<$harness>().await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn group_members_split_partitions_and_take_over() {
                cases::group_members_split_partitions_and_take_over::<$harness>().await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn skips_undecodable_records_with_an_error_event() {
                cases::skips_undecodable_records_with_an_error_event::<$harness>().await;
            }
        }
    };
}

conformance_cases!(embedded, crate::harness::Embedded);
conformance_cases!(kafka, crate::harness::Kafka);
