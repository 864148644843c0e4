//! Bounce memory: `record_bounce` as one Lua script (the sliding window of soft bounces and
//! the suppression it may cause change together), and the per-domain counters.
//!
//! The window is sliding: a bounce counts for exactly `soft_bounce_window` after it
//! happened. The bounce that brings the count to `soft_bounce_threshold` suppresses the
//! address and empties the window (as the embedded backend does), so the window holds at
//! most `threshold` members and, of `threshold` concurrent bounces, exactly one suppresses.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use kurir_core::{Address, BounceClass, Domain};

use super::RedisState;
use super::codec::{encode_entry, ms, now_millis};
use super::scripts::RECORD_BOUNCE;
use crate::Result;
use crate::model::{BounceVerdict, DomainCounter, DomainCounters, Suppression, Tenant};

/// Makes each soft bounce a distinct member of the window's sorted set, even when two
/// arrive within the same millisecond (from this process or another).
static BOUNCE_SEQ: AtomicU64 = AtomicU64::new(0);

fn unique_member(now_ms: u64) -> String {
    let seq = BOUNCE_SEQ.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .subsec_nanos();
    format!("{now_ms}-{}-{seq}-{nanos}", std::process::id())
}

impl RedisState {
    pub(super) async fn bounce(
        &self,
        tenant: &Tenant,
        address: &Address,
        class: BounceClass,
        source: &str,
    ) -> Result<BounceVerdict> {
        self.check_tenant(tenant)?;
        let hard = class.is_hard();
        let entry = Suppression::for_bounce(tenant, address, class, source);
        let scope = entry.scope.clone();
        let keys = self.keys().scope(&scope);
        let config = self.config();
        let now = now_millis();
        let mut inv = RECORD_BOUNCE.prepare_invoke();
        inv.key(&keys.entries)
            .key(&keys.index)
            .key(&keys.expiry)
            .key(self.keys().soft_bounces(tenant, address));
        inv.arg(if hard { "1" } else { "0" })
            .arg(now)
            .arg(ms(config.soft_bounce_window))
            .arg(config.soft_bounce_threshold)
            .arg(unique_member(now))
            .arg(address.to_string())
            .arg(encode_entry(&entry)?);
        let mut conn = self.conn();
        let (soft_bounces, suppressed): (u32, u8) = self
            .run("record bounce", inv.invoke_async(&mut conn))
            .await?;
        Ok(BounceVerdict {
            soft_bounces,
            suppressed: suppressed == 1,
        })
    }

    pub(super) async fn increment_domain(
        &self,
        domain: &Domain,
        counter: DomainCounter,
    ) -> Result<()> {
        let field = match counter {
            DomainCounter::Delivered => "delivered",
            DomainCounter::Deferred => "deferred",
            DomainCounter::Bounced => "bounced",
        };
        let mut cmd = redis::cmd("HINCRBY");
        cmd.arg(self.keys().domain_counters(domain))
            .arg(field)
            .arg(1);
        let mut conn = self.conn();
        self.run("count domain", cmd.query_async::<i64>(&mut conn))
            .await
            .map(drop)
    }

    pub(super) async fn read_domain_counters(&self, domain: &Domain) -> Result<DomainCounters> {
        let mut cmd = redis::cmd("HMGET");
        cmd.arg(self.keys().domain_counters(domain))
            .arg(&["delivered", "deferred", "bounced"]);
        let mut conn = self.conn();
        let (delivered, deferred, bounced): (Option<u64>, Option<u64>, Option<u64>) = self
            .run("domain counters", cmd.query_async(&mut conn))
            .await?;
        Ok(DomainCounters {
            delivered: delivered.unwrap_or(0),
            deferred: deferred.unwrap_or(0),
            bounced: bounced.unwrap_or(0),
        })
    }
}
