//! Message tracking (a bounded history per message) and domain pauses.
//!
//! A history is one key per entry, `message id + sequence`, so an append writes one small
//! value instead of rewriting the history. It lives `tracking_ttl` after its newest entry.
//! Over `tracking_max_entries`, the oldest entries after the first ("accepted") are
//! deleted. Entry details longer than [`crate::model::MAX_TEXT`] bytes are cut.

use std::time::SystemTime;

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
        let mut entry = entry.clone();
        entry.detail = truncate_text(&entry.detail).to_owned();
        let json =
            serde_json::to_vec(&entry).map_err(|e| corrupt(&format!("tracking entry: {e}")))?;
        // Like the domain counters, a history is for operators: it reaches disk with the
        // next group sync (or on close), not with an fsync of its own per delivery.
        self.blocking(move |inner| append(inner, id, &json)).await
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
            let _writing = store.writing();
            batch.commit().map_err(backend("pausing a domain"))
        })
        .await
    }

    pub(super) async fn resume(&self, domain: &Domain) -> Result<bool> {
        let key = domain.as_str().as_bytes().to_vec();
        self.write(move |inner| {
            let store = &inner.store;
            let _stripe = inner.stripes.lock(&key);
            let Some(value) = store
                .pauses
                .get(&key)
                .map_err(backend("resuming a domain"))?
            else {
                return Ok(false);
            };
            let _writing = store.writing();
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

fn append(inner: &Inner, id: MessageId, json: &[u8]) -> Result<()> {
    let store = &inner.store;
    let prefix = message_key(id);
    let _stripe = inner.stripes.lock(&prefix);
    let mut seqs = Vec::new();
    for item in store.tracking.prefix(prefix) {
        let key = item.key().map_err(backend("appending to a history"))?;
        seqs.push(track_seq(&key).ok_or_else(|| corrupt("tracking key"))?);
    }
    let next = seqs.last().map_or(0, |s| s + 1);
    let expires = SystemTime::now() + inner.config.tracking_ttl;
    let mut value = Vec::with_capacity(12 + json.len());
    put_expiry(&mut value, Some(expires));
    value.extend_from_slice(json);
    let mut batch = store.db.batch();
    // Keep the first entry and the newest `max - 1` (this one included).
    let max = inner.config.tracking_max_entries.max(2) as usize;
    let excess = (seqs.len() + 1).saturating_sub(max);
    for seq in seqs.iter().skip(1).take(excess) {
        batch.remove(&store.tracking, track_key(id, *seq).to_vec());
    }
    batch.insert(&store.tracking, track_key(id, next).to_vec(), value);
    batch.insert(
        &store.expiry,
        expiry_key(expires, Tag::Tracking, &prefix),
        &[] as &[u8],
    );
    let _writing = store.writing();
    batch.commit().map_err(backend("appending to a history"))
}
