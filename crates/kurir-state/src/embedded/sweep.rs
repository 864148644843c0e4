//! Deleting expired entries. Readers already ignore them; the sweep reclaims the space.
//!
//! It walks the `expiry` index (see [`super::codec`]) from the oldest second up to now, so
//! its cost is the number of entries that expired, not the size of the store. An index
//! entry whose target was replaced in the meantime (a new expiry, or none) is dropped
//! without touching the target: the replacement has its own index entry if it expires.

use std::time::SystemTime;

use fjall::OwnedWriteBatch;

use super::codec::{Tag, expiry_bound, is_live, split_expiry_key};
use super::store::{Store, backend};
use crate::error::StateError;

/// Deletes up to `limit` due index entries and the expired entries they point at; returns
/// how many index entries it handled.
pub(super) fn sweep(store: &Store, now: SystemTime, limit: usize) -> Result<usize, StateError> {
    let bound = expiry_bound(now);
    let mut batch = store.db.batch();
    let mut handled = 0;
    for item in store.expiry.range(..bound.as_slice()).take(limit) {
        let key = item.key().map_err(backend("sweeping"))?;
        if let Some((tag, target)) = split_expiry_key(&key) {
            sweep_target(store, &mut batch, tag, target, now)?;
        }
        batch.remove(&store.expiry, key);
        handled += 1;
    }
    batch.commit().map_err(backend("sweeping"))?;
    Ok(handled)
}

fn sweep_target(
    store: &Store,
    batch: &mut OwnedWriteBatch,
    tag: Tag,
    target: &[u8],
    now: SystemTime,
) -> Result<(), StateError> {
    if tag == Tag::Tracking {
        // A history lives as long as its newest entry.
        let Some(newest) = store.tracking.prefix(target).next_back() else {
            return Ok(());
        };
        let value = newest.value().map_err(backend("sweeping"))?;
        if !is_live(&value, now)? {
            for item in store.tracking.prefix(target) {
                batch.remove(&store.tracking, item.key().map_err(backend("sweeping"))?);
            }
        }
        return Ok(());
    }
    let keyspace = store.keyspace(tag);
    if let Some(value) = keyspace.get(target).map_err(backend("sweeping"))?
        && !is_live(&value, now)?
    {
        batch.remove(keyspace, target);
    }
    Ok(())
}
