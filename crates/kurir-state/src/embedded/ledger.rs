//! The delivery ledger and idempotency keys.
//!
//! An idempotency key is `pending` from its claim until it is completed or released. A
//! pending claim expires after [`PENDING_CLAIM_TTL`] (or `idempotency_ttl` if shorter), so
//! a submitter that crashed between claim and completion does not block the key for a day;
//! a completed key returns its result for `idempotency_ttl`.

use std::time::SystemTime;

use fjall::OwnedWriteBatch;
use kurir_core::{Address, MessageId};

use super::bounce::{add_to_counter, counter_key};
use super::codec::{
    Tag, corrupt, expiry_key, is_live, ledger_key, payload, put_expiry, tenant_prefix,
};
use super::store::{Store, backend};
use super::tracking::{append, encode_entry};
use super::{EmbeddedState, INLINE_READS, Inner};
use crate::Result;
use crate::model::{
    Claim, DomainCounter, PENDING_CLAIM_TTL, Settlement, Tenant, check_idempotency_key,
};

const PENDING: u8 = 0;
const DONE: u8 = 1;

impl EmbeddedState {
    pub(super) async fn mark(&self, id: MessageId, recipients: &[Address]) -> Result<()> {
        if recipients.is_empty() {
            return Ok(());
        }
        let keys: Vec<Vec<u8>> = recipients.iter().map(|a| ledger_key(id, a)).collect();
        self.write(move |inner| {
            let mut batch = inner.store.db.batch();
            mark_in(inner, &mut batch, keys);
            batch.commit().map_err(backend("marking deliveries"))
        })
        .await
    }

    /// One writer job for the ledger entries, counters and history of an attempt; durable
    /// when it delivered someone.
    pub(super) async fn settle_attempt(&self, settlement: &Settlement<'_>) -> Result<()> {
        let Settlement {
            id,
            domain,
            delivered,
            counts,
            history,
        } = *settlement;
        let ledger: Vec<Vec<u8>> = delivered.iter().map(|a| ledger_key(id, a)).collect();
        let counters: Vec<(Vec<u8>, u64)> = [
            (DomainCounter::Delivered, counts.delivered),
            (DomainCounter::Deferred, counts.deferred),
            (DomainCounter::Bounced, counts.bounced),
        ]
        .into_iter()
        .filter(|(_, n)| *n > 0)
        .map(|(counter, n)| (counter_key(domain, counter), n))
        .collect();
        // Counters and history are for operators: what fails of them is logged, and never
        // keeps the ledger entries (which stop a replay from mailing again) from being
        // written.
        let history: Vec<Vec<u8>> = history
            .iter()
            .filter_map(|entry| {
                encode_entry(entry)
                    .inspect_err(|error| tracing::warn!(%error, "history entry not written"))
                    .ok()
            })
            .collect();
        if ledger.is_empty() && counters.is_empty() && history.is_empty() {
            return Ok(());
        }
        let durable = !ledger.is_empty();
        self.on_writer(durable, move |inner| {
            let mut batch = inner.store.db.batch();
            mark_in(inner, &mut batch, ledger);
            for (key, n) in counters {
                if let Err(error) = add_to_counter(&inner.store, &mut batch, key, n) {
                    tracing::warn!(%error, "domain counter not updated");
                }
            }
            if let Err(error) = append(inner, &mut batch, id, &history) {
                tracing::warn!(%error, "history not written");
            }
            batch
                .commit()
                .map_err(backend("settling a delivery attempt"))
        })
        .await
    }

    pub(super) async fn was_delivered(
        &self,
        id: MessageId,
        recipients: &[Address],
    ) -> Result<Vec<bool>> {
        if recipients.len() <= INLINE_READS {
            return delivered(&self.inner.store, id, recipients);
        }
        let recipients = recipients.to_vec();
        self.blocking(move |inner| delivered(&inner.store, id, &recipients))
            .await
    }

    pub(super) async fn claim(&self, tenant: &Tenant, key: &str) -> Result<Claim> {
        let key = self.idempotency_key(tenant, key)?;
        // A key already claimed or done is answered by a read, without an fsync wait; a new
        // claim (or a race with one) is settled on the writer.
        match current(&self.inner.store, &key)? {
            Some((DONE, result)) => Ok(Claim::Done(result)),
            Some(_) => Ok(Claim::Pending),
            None => self.write(move |inner| claim(inner, &key)).await,
        }
    }

    pub(super) async fn complete(&self, tenant: &Tenant, key: &str, result: &[u8]) -> Result<()> {
        let key = self.idempotency_key(tenant, key)?;
        let result = result.to_vec();
        self.write(move |inner| {
            let store = &inner.store;
            if let Some((DONE, _)) = current(store, &key)? {
                return Ok(()); // the first result stays
            }
            let expires = SystemTime::now() + inner.config.idempotency_ttl;
            put_key(store, key, expires, DONE, &result)
        })
        .await
    }

    pub(super) async fn release(&self, tenant: &Tenant, key: &str) -> Result<()> {
        let key = self.idempotency_key(tenant, key)?;
        self.write(move |inner| {
            let store = &inner.store;
            if let Some((PENDING, _)) = current(store, &key)? {
                store
                    .idempotency
                    .remove(key)
                    .map_err(backend("releasing a key"))?;
            }
            Ok(())
        })
        .await
    }

    fn idempotency_key(&self, tenant: &Tenant, key: &str) -> Result<Vec<u8>> {
        self.inner.check_tenant(tenant)?;
        check_idempotency_key(key)?;
        let mut out = tenant_prefix(b't', tenant);
        out.extend_from_slice(key.as_bytes());
        Ok(out)
    }
}

/// Ledger entries (keys from [`ledger_key`]) in `batch`, live for `ledger_ttl`.
fn mark_in(inner: &Inner, batch: &mut OwnedWriteBatch, keys: Vec<Vec<u8>>) {
    if keys.is_empty() {
        return;
    }
    let store = &inner.store;
    let expires = SystemTime::now() + inner.config.ledger_ttl;
    let mut value = Vec::new();
    put_expiry(&mut value, Some(expires));
    for key in keys {
        batch.insert(
            &store.expiry,
            expiry_key(expires, Tag::Ledger, &key),
            &[] as &[u8],
        );
        batch.insert(&store.ledger, key, value.clone());
    }
}

fn delivered(store: &Store, id: MessageId, recipients: &[Address]) -> Result<Vec<bool>> {
    let now = SystemTime::now();
    recipients
        .iter()
        .map(|a| {
            match store
                .ledger
                .get(ledger_key(id, a))
                .map_err(backend("reading the ledger"))?
            {
                Some(value) => is_live(&value, now),
                None => Ok(false),
            }
        })
        .collect()
}

/// The claim's answer (only a new claim writes).
fn claim(inner: &Inner, key: &[u8]) -> Result<Claim> {
    let store = &inner.store;
    match current(store, key)? {
        Some((DONE, result)) => Ok(Claim::Done(result)),
        Some(_) => Ok(Claim::Pending),
        None => {
            let expires = SystemTime::now() + PENDING_CLAIM_TTL.min(inner.config.idempotency_ttl);
            put_key(store, key.to_vec(), expires, PENDING, &[])?;
            Ok(Claim::New)
        }
    }
}

/// The live state of a key and its result.
fn current(store: &Store, key: &[u8]) -> Result<Option<(u8, Vec<u8>)>> {
    let Some(value) = store
        .idempotency
        .get(key)
        .map_err(backend("reading a key"))?
    else {
        return Ok(None);
    };
    if !is_live(&value, SystemTime::now())? {
        return Ok(None);
    }
    let (state, result) = payload(&value)
        .split_first()
        .ok_or_else(|| corrupt("idempotency entry"))?;
    Ok(Some((*state, result.to_vec())))
}

fn put_key(
    store: &Store,
    key: Vec<u8>,
    expires: SystemTime,
    state: u8,
    result: &[u8],
) -> Result<()> {
    let mut value = Vec::with_capacity(13 + result.len());
    put_expiry(&mut value, Some(expires));
    value.push(state);
    value.extend_from_slice(result);
    let mut batch = store.db.batch();
    batch.insert(
        &store.expiry,
        expiry_key(expires, Tag::Idempotency, &key),
        &[] as &[u8],
    );
    batch.insert(&store.idempotency, key, value);
    batch.commit().map_err(backend("storing a key"))
}
