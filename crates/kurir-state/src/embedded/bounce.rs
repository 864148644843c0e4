//! Bounce memory: soft-bounce counts per tenant and address, and per-domain counters.
//!
//! A soft-bounce record keeps the times of the address's recent soft bounces (at most the
//! threshold's worth), so the window slides exactly: bounces older than the window stop
//! counting one by one. Reaching the threshold suppresses the address and clears the
//! record.

use std::time::SystemTime;

use fjall::OwnedWriteBatch;
use kurir_core::{Address, BounceClass, Domain};

use super::codec::{
    TIME_LEN, Tag, encode_suppression, encode_time, expiry_key, is_live, payload, put_expiry,
    read_time, suppression_key,
};
use super::store::{Store, backend};
use super::{EmbeddedState, Inner};
use crate::Result;
use crate::model::{BounceVerdict, DomainCounter, DomainCounters, Suppression, Tenant};

impl EmbeddedState {
    pub(super) async fn bounce(
        &self,
        tenant: &Tenant,
        address: &Address,
        class: BounceClass,
        source: &str,
    ) -> Result<BounceVerdict> {
        self.inner.check_tenant(tenant)?;
        let entry = Suppression::for_bounce(tenant, address, class, source);
        if class.is_hard() {
            self.write(move |inner| store_suppression(inner, &entry))
                .await?;
            return Ok(BounceVerdict {
                soft_bounces: 0,
                suppressed: true,
            });
        }
        self.write(move |inner| count_soft_bounce(inner, &entry))
            .await
    }

    pub(super) async fn increment_counter(
        &self,
        domain: &Domain,
        counter: DomainCounter,
    ) -> Result<()> {
        let key = counter_key(domain, counter);
        // Not durable by itself: see "Durability" in the module docs.
        self.on_writer(false, move |inner| {
            let mut batch = inner.store.db.batch();
            add_to_counter(&inner.store, &mut batch, key, 1)?;
            batch.commit().map_err(backend("counting"))
        })
        .await
    }

    /// Three point reads, inline.
    pub(super) fn counters(&self, domain: &Domain) -> Result<DomainCounters> {
        let read = |counter| -> Result<u64> {
            let value = self
                .inner
                .store
                .domains
                .get(counter_key(domain, counter))
                .map_err(backend("reading counters"))?;
            Ok(value.as_deref().and_then(be_u64).unwrap_or(0))
        };
        Ok(DomainCounters {
            delivered: read(DomainCounter::Delivered)?,
            deferred: read(DomainCounter::Deferred)?,
            bounced: read(DomainCounter::Bounced)?,
        })
    }
}

/// Suppresses the address (tenant scope, no expiry) and forgets its soft bounces.
fn store_suppression(inner: &Inner, entry: &Suppression) -> Result<()> {
    let key = suppression_key(&entry.scope, &entry.address);
    write_suppression(&inner.store, entry, key)
}

fn write_suppression(store: &Store, entry: &Suppression, key: Vec<u8>) -> Result<()> {
    let mut batch = store.db.batch();
    batch.insert(&store.suppressions, key.clone(), encode_suppression(entry));
    batch.remove(&store.bounces, key);
    batch.commit().map_err(backend("recording a bounce"))
}

fn count_soft_bounce(inner: &Inner, entry: &Suppression) -> Result<BounceVerdict> {
    let (store, config, now) = (&inner.store, &inner.config, entry.created);
    // The same key as the tenant-scope suppression entry, in another keyspace.
    let key = suppression_key(&entry.scope, &entry.address);
    let mut times = match store
        .bounces
        .get(&key)
        .map_err(backend("recording a bounce"))?
    {
        Some(value) if is_live(&value, now)? => decode_times(payload(&value))?,
        _ => Vec::new(),
    };
    let window_start = now
        .checked_sub(config.soft_bounce_window)
        .unwrap_or(SystemTime::UNIX_EPOCH);
    times.retain(|t| *t > window_start);
    times.push(now);
    let threshold = config.soft_bounce_threshold.max(1) as usize;
    if times.len() > threshold {
        times.drain(..times.len() - threshold);
    }
    let soft_bounces = u32::try_from(times.len()).unwrap_or(u32::MAX);
    if times.len() >= threshold {
        write_suppression(store, entry, key)?;
        return Ok(BounceVerdict {
            soft_bounces,
            suppressed: true,
        });
    }
    let expires = now + config.soft_bounce_window;
    let mut value = Vec::with_capacity(TIME_LEN * (times.len() + 1));
    put_expiry(&mut value, Some(expires));
    times
        .iter()
        .for_each(|t| value.extend_from_slice(&encode_time(*t)));
    let mut batch = store.db.batch();
    batch.insert(
        &store.expiry,
        expiry_key(expires, Tag::Bounce, &key),
        &[] as &[u8],
    );
    batch.insert(&store.bounces, key, value);
    batch.commit().map_err(backend("recording a bounce"))?;
    Ok(BounceVerdict {
        soft_bounces,
        suppressed: false,
    })
}

fn decode_times(bytes: &[u8]) -> Result<Vec<SystemTime>> {
    bytes
        .chunks(TIME_LEN)
        .map(|chunk| read_time(chunk, "soft-bounce record"))
        .collect()
}

/// Adds `n` to a domain counter in `batch` (on the writer thread: nothing else changes the
/// counter before the batch is committed).
pub(super) fn add_to_counter(
    store: &Store,
    batch: &mut OwnedWriteBatch,
    key: Vec<u8>,
    n: u64,
) -> Result<()> {
    let old = store.domains.get(&key).map_err(backend("counting"))?;
    let count = old
        .as_deref()
        .and_then(be_u64)
        .unwrap_or(0)
        .saturating_add(n);
    batch.insert(&store.domains, key, count.to_be_bytes());
    Ok(())
}

pub(super) fn counter_key(domain: &Domain, counter: DomainCounter) -> Vec<u8> {
    let mut key = domain.as_str().as_bytes().to_vec();
    key.push(0);
    key.push(match counter {
        DomainCounter::Delivered => 1,
        DomainCounter::Deferred => 2,
        DomainCounter::Bounced => 3,
    });
    key
}

fn be_u64(bytes: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(bytes.get(..8)?.try_into().ok()?))
}
