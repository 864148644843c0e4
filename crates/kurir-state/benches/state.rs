//! Suppression-list benchmark (issue 4): imports a million suppressed addresses, then
//! measures check-many throughput (batches of 100 and 1,000, several concurrent callers)
//! and the latency of checking one 10-recipient list, for the Redis backend (a real
//! `redis-server` from the test kit) and the embedded one. Prints a Markdown table.
//!
//! `cargo bench -p kurir-state --bench state`; `KURIR_BENCH_ENTRIES` changes the list size.
#![allow(clippy::print_stdout, reason = "a benchmark reports on stdout")]

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use kurir_core::Address;
use kurir_state::embedded::EmbeddedState;
use kurir_state::redis::RedisState;
use kurir_state::{Reason, Scope, State, StateConfig, Suppression, Tenant};
use kurir_testkit::RedisServer;

/// Entries per `suppress` call during the import (what a streaming import would send).
const IMPORT_BATCH: usize = 10_000;
const CALLERS: usize = 8;
const RUN_FOR: Duration = Duration::from_secs(3);
const LATENCY_SAMPLES: usize = 5_000;

struct Row {
    backend: &'static str,
    import: Duration,
    entries: usize,
    batch_100: f64,
    batch_1000: f64,
    p50: Duration,
    p99: Duration,
}

fn address(i: usize) -> Address {
    Address::parse(&format!("user{i}@domain{}.test", i % 5_000)).expect("valid address")
}

/// A small xorshift generator: half the checked addresses are on the list, half are not.
fn pick(state: &mut u64, entries: usize) -> usize {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    usize::try_from(*state % (2 * entries as u64)).unwrap_or(0)
}

async fn import<S: State>(state: &S, tenant: &Tenant, entries: usize) -> Duration {
    let began = Instant::now();
    let now = SystemTime::now();
    for start in (0..entries).step_by(IMPORT_BATCH) {
        let batch: Vec<Suppression> = (start..(start + IMPORT_BATCH).min(entries))
            .map(|i| Suppression {
                scope: Scope::Tenant(tenant.clone()),
                address: address(i),
                reason: Reason::HardBounce,
                source: "bench-import".into(),
                created: now,
                expires: None,
            })
            .collect();
        state.suppress(&batch).await.expect("import");
    }
    began.elapsed()
}

/// Lists of `batch` random addresses, built before the clock starts.
fn lists(seed: u64, count: usize, batch: usize, entries: usize) -> Vec<Vec<Address>> {
    let mut seed = seed;
    (0..count)
        .map(|_| {
            (0..batch)
                .map(|_| address(pick(&mut seed, entries)))
                .collect()
        })
        .collect()
}

/// Addresses checked per second by [`CALLERS`] concurrent callers sending `batch` at a time.
async fn throughput<S: State>(state: Arc<S>, tenant: &Tenant, entries: usize, batch: usize) -> f64 {
    let prepared: Vec<_> = (0..CALLERS)
        .map(|c| {
            lists(
                0x9E37_79B9_7F4A_7C15 ^ (c as u64 + 1),
                64_000 / batch,
                batch,
                entries,
            )
        })
        .collect();
    let began = Instant::now();
    let tasks: Vec<_> = prepared
        .into_iter()
        .map(|lists| {
            let (state, tenant) = (state.clone(), tenant.clone());
            tokio::spawn(async move {
                let mut checked = 0usize;
                for list in lists.iter().cycle() {
                    if began.elapsed() >= RUN_FOR {
                        break;
                    }
                    checked += state
                        .check_suppressed(&tenant, list)
                        .await
                        .expect("check")
                        .len();
                }
                checked
            })
        })
        .collect();
    let mut checked = 0;
    for t in tasks {
        checked += t.await.expect("caller");
    }
    checked as f64 / began.elapsed().as_secs_f64()
}

/// p50 and p99 of one check of a 10-recipient list, one caller.
async fn latency<S: State>(state: &S, tenant: &Tenant, entries: usize) -> (Duration, Duration) {
    let mut samples = Vec::with_capacity(LATENCY_SAMPLES);
    for list in lists(42, LATENCY_SAMPLES, 10, entries) {
        let began = Instant::now();
        state.check_suppressed(tenant, &list).await.expect("check");
        samples.push(began.elapsed());
    }
    samples.sort_unstable();
    (
        samples[LATENCY_SAMPLES / 2],
        samples[LATENCY_SAMPLES * 99 / 100],
    )
}

async fn measure<S: State>(
    backend: &'static str,
    state: S,
    tenant: &Tenant,
    entries: usize,
) -> Row {
    let import = import(&state, tenant, entries).await;
    let state = Arc::new(state);
    let batch_100 = throughput(state.clone(), tenant, entries, 100).await;
    let batch_1000 = throughput(state.clone(), tenant, entries, 1_000).await;
    let (p50, p99) = latency(state.as_ref(), tenant, entries).await;
    Row {
        backend,
        import,
        entries,
        batch_100,
        batch_1000,
        p50,
        p99,
    }
}

fn print(rows: &[Row]) {
    println!(
        "| backend | entries | import | import rate | check-many, batches of 100 ({CALLERS} callers) | batches of 1,000 ({CALLERS} callers) | 10-recipient check p50 | p99 |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for r in rows {
        println!(
            "| {} | {} | {:.2} s | {:.0} entries/s | {:.0} checks/s | {:.0} checks/s | {:.0} µs | {:.0} µs |",
            r.backend,
            r.entries,
            r.import.as_secs_f64(),
            r.entries as f64 / r.import.as_secs_f64(),
            r.batch_100,
            r.batch_1000,
            r.p50.as_secs_f64() * 1e6,
            r.p99.as_secs_f64() * 1e6,
        );
    }
}

async fn redis_memory(server: &RedisServer) -> anyhow::Result<String> {
    let mut conn = server.client()?.get_multiplexed_async_connection().await?;
    let info: String = redis::cmd("INFO")
        .arg("memory")
        .query_async(&mut conn)
        .await?;
    Ok(info
        .lines()
        .find_map(|l| l.strip_prefix("used_memory_human:"))
        .unwrap_or("?")
        .trim()
        .to_owned())
}

fn main() -> anyhow::Result<()> {
    let entries = std::env::var("KURIR_BENCH_ENTRIES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let tenant = Tenant::new("bench")?;
        let mut config = StateConfig {
            tenants: vec!["bench".into()],
            ..StateConfig::default()
        };
        config.redis.command_timeout = Duration::from_secs(5);
        let server = RedisServer::start().await?;
        config.redis.url = server.url();
        let redis = RedisState::connect(&config).await?;
        let mut rows = vec![measure("redis", redis, &tenant, entries).await];
        let memory = redis_memory(&server).await?;
        let dir = tempfile::tempdir()?;
        let embedded = EmbeddedState::open(dir.path(), &config)?;
        rows.push(measure("embedded", embedded, &tenant, entries).await);
        print(&rows);
        println!("\nredis-server used_memory with {entries} entries: {memory}");
        Ok(())
    })
}
