//! One conformance suite for every state backend: the embedded store in a temp dir and a
//! real `redis-server` from the test kit. Each case in `cases.rs` is generic over a
//! [`harness::Harness`]; `state_cases!` instantiates it per backend.

// Test modules share helpers freely; `pub` here means "for the other test modules".
#![allow(unreachable_pub)]

mod cases;
mod harness;

macro_rules! state_cases {
    ($module:ident, $harness:ty; $($case:ident),* $(,)?) => {
        mod $module {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    crate::cases::$case::<$harness>().await;
                }
            )*
        }
    };
}

macro_rules! all_cases {
    ($module:ident, $harness:ty) => {
        state_cases!($module, $harness;
            suppression_is_scoped_per_tenant_with_a_global_scope,
            expired_suppressions_are_ignored,
            listing_pages_through_every_entry_once,
            unknown_tenants_and_bad_input_are_refused,
            hard_bounces_suppress_at_once_and_soft_ones_at_the_threshold,
            domain_counters_count,
            the_ledger_remembers_deliveries_until_its_ttl,
            idempotency_keys_return_the_first_result,
            concurrent_claims_have_one_winner,
            tracking_keeps_a_bounded_history,
            settling_an_attempt_writes_ledger_counters_and_history,
            domains_pause_and_resume,
            bounce_orders_round_trip,
            state_survives_a_restart,
        );
    };
}

all_cases!(embedded, crate::harness::Embedded);
all_cases!(redis, crate::harness::Redis);
