//! Message tracking (a bounded history per message) and domain pauses.
//!
//! A history is one key per entry, `message id + sequence`, so an append writes one small
//! value instead of rewriting the history. It lives `tracking_ttl` after its newest entry.
//! Over `tracking_max_entries`, the oldest entries after the first ("accepted") are
//! deleted. Entry details longer than [`crate::model::MAX_TEXT`] bytes are cut.

use std::time::SystemTime;

use fjall::OwnedWriteBatch;
use kurir_core::{Domain, MessageId};

use super::codec::{
    Tag, corrupt, decode_pause, encode_pause, expiry_key, expiry_of, is_live, message_key, payload,
    put_expiry, track_key, track_seq,
};
use super::store::backend;
use super::{EmbeddedState, Inner};
use crate::Result;
use crate::model::{DomainPause, TrackEntry, truncate_text};

impl EmbeddedState {
    pub(super) async fn append_track(&self, id: MessageId, entry: &TrackEntry) -> Result<()> {
        let json = encode_entry(entry)?;
        // Like the domain counters, a history is for operators: it reaches disk with the
        // next durable write (or on close), not with an fsync of its own per delivery.
        self.on_writer(false, move |inner| {
            let mut batch = inner.store.db.batch();
            append(inner, &mut batch, id, &[json])?;
            batch.commit().map_err(backend("appending to a history"))
        })
        .await
    }

    /// A history is at most `tracking_max_entries` small values: read inline.
    pub(super) fn read_history(&self, id: MessageId) -> Result<Vec<TrackEntry>> {
        let tracking = &self.inner.store.tracking;
        let Some(newest) = tracking.prefix(message_key(id)).next_back() else {
            return Ok(Vec::new());
        };
        let newest = newest.value().map_err(backend("reading a history"))?;
        if !is_live(&newest, SystemTime::now())? {
            return Ok(Vec::new());
        }
        let mut out = Vec::new();
        for item in tracking.prefix(message_key(id)) {
            let value = item.value().map_err(backend("reading a history"))?;
            out.push(
                serde_json::from_slice(payload(&value)).map_err(|_| corrupt("tracking entry"))?,
            );
        }
        Ok(out)
    }

    pub(super) async fn pause(&self, pause: &DomainPause) -> Result<()> {
        let key = pause.domain.as_str().as_bytes().to_vec();
        let value = encode_pause(pause.until, pause.action, &pause.reason);
        let until = pause.until;
        self.write(move |inner| {
            let store = &inner.store;
            let mut batch = store.db.batch();
            if let Some(until) = until {
                batch.insert(
                    &store.expiry,
                    expiry_key(until, Tag::Pause, &key),
                    &[] as &[u8],
                );
            }
            batch.insert(&store.pauses, key, value);
            batch.commit().map_err(backend("pausing a domain"))
        })
        .await
    }

    pub(super) async fn resume(&self, domain: &Domain) -> Result<bool> {
        let key = domain.as_str().as_bytes().to_vec();
        self.write(move |inner| {
            let store = &inner.store;
            let Some(value) = store
                .pauses
                .get(&key)
                .map_err(backend("resuming a domain"))?
            else {
                return Ok(false);
            };
            store
                .pauses
                .remove(key)
                .map_err(backend("resuming a domain"))?;
            is_live(&value, SystemTime::now())
        })
        .await
    }

    /// Pauses are few (operators set them by hand): scanned inline.
    pub(super) fn pauses(&self) -> Result<Vec<DomainPause>> {
        let now = SystemTime::now();
        let mut out = Vec::new();
        for item in self.inner.store.pauses.iter() {
            let (key, value) = item.into_inner().map_err(backend("reading pauses"))?;
            if !is_live(&value, now)? {
                continue;
            }
            let domain = std::str::from_utf8(&key)
                .ok()
                .and_then(|d| Domain::parse(d).ok())
                .ok_or_else(|| corrupt("domain pause"))?;
            let (action, reason) = decode_pause(&value)?;
            out.push(DomainPause {
                domain,
                until: expiry_of(&value)?,
                reason,
                action,
            });
        }
        Ok(out)
    }
}

/// A history entry as stored (its detail cut to [`crate::model::MAX_TEXT`]).
pub(super) fn encode_entry(entry: &TrackEntry) -> Result<Vec<u8>> {
    let mut entry = entry.clone();
    entry.detail = truncate_text(&entry.detail).to_owned();
    serde_json::to_vec(&entry).map_err(|e| corrupt(&format!("tracking entry: {e}")))
}

/// Adds encoded entries to a message's history in `batch`, dropping the oldest after the
/// first over `tracking_max_entries` (on the writer thread: the history does not change
/// before the batch is committed).
pub(super) fn append(
    inner: &Inner,
    batch: &mut OwnedWriteBatch,
    id: MessageId,
    entries: &[Vec<u8>],
) -> Result<()> {
    if entries.is_empty() {
        return Ok(());
    }
    let store = &inner.store;
    let prefix = message_key(id);
    let mut seqs = Vec::new();
    for item in store.tracking.prefix(prefix) {
        let key = item.key().map_err(backend("appending to a history"))?;
        seqs.push(track_seq(&key).ok_or_else(|| corrupt("tracking key"))?);
    }
    let next = seqs.last().map_or(0, |s| s + 1);
    let expires = SystemTime::now() + inner.config.tracking_ttl;
    // Keep the first entry and the newest `max - 1`, old and new ones alike.
    let max = inner.config.tracking_max_entries.max(2) as usize;
    let excess = (seqs.len() + entries.len()).saturating_sub(max);
    let old = seqs.iter().map(|s| (*s, None));
    let new = (next..).zip(entries.iter().map(Some));
    for (position, (seq, json)) in old.chain(new).enumerate() {
        let dropped = (1..=excess).contains(&position);
        match (dropped, json) {
            (true, None) => batch.remove(&store.tracking, track_key(id, seq).to_vec()),
            (false, Some(json)) => {
                let mut value = Vec::with_capacity(12 + json.len());
                put_expiry(&mut value, Some(expires));
                value.extend_from_slice(json);
                batch.insert(&store.tracking, track_key(id, seq).to_vec(), value);
            }
            _ => {}
        }
    }
    batch.insert(
        &store.expiry,
        expiry_key(expires, Tag::Tracking, &prefix),
        &[] as &[u8],
    );
    Ok(())
}
