//! Suppression entries: add, remove, check many, list with a cursor.
//!
//! The cursor of a listing is the last address returned: keys are ordered, so the next
//! page is the range after `scope prefix + cursor`. An entry present for the whole listing
//! is returned exactly once, whatever is added or removed meanwhile.

use std::io::Write as _;
use std::ops::Bound;
use std::sync::LazyLock;
use std::time::SystemTime;

use kurir_core::Address;

use super::codec::{
    Tag, address_of, decode_suppression, encode_suppression, expiry_key, is_live, scope_prefix,
    suppression_key,
};
use super::store::{Store, backend};
use super::{EmbeddedState, INLINE_READS};
use crate::Result;
use crate::error::StateError;
use crate::model::{Page, Scope, Suppression, Tenant};

const NO_VALUE: &[u8] = &[];
/// A check of more than twice this many addresses is split into parallel parts.
const PART_MIN: usize = 256;
/// The cores to split a check over.
static CORES: LazyLock<usize> =
    LazyLock::new(|| std::thread::available_parallelism().map_or(1, |n| n.get().min(8)));

impl EmbeddedState {
    pub(super) async fn suppress_entries(&self, entries: &[Suppression]) -> Result<()> {
        for entry in entries {
            self.inner.check_scope(&entry.scope)?;
        }
        if entries.is_empty() {
            return Ok(());
        }
        let rows = last_per_key(entries.iter().map(|e| {
            (
                suppression_key(&e.scope, &e.address),
                (encode_suppression(e), e.expires),
            )
        }));
        self.write(move |inner| {
            let store = &inner.store;
            let mut batch = store.db.batch();
            for (key, (value, expires)) in rows {
                if let Some(at) = expires {
                    batch.insert(
                        &store.expiry,
                        expiry_key(at, Tag::Suppression, &key),
                        NO_VALUE,
                    );
                }
                batch.insert(&store.suppressions, key, value);
            }
            batch.commit().map_err(backend("suppressing"))
        })
        .await
    }

    pub(super) async fn unsuppress_entries(
        &self,
        scope: &Scope,
        addresses: &[Address],
    ) -> Result<u64> {
        self.inner.check_scope(scope)?;
        if addresses.is_empty() {
            return Ok(0);
        }
        let keys = last_per_key(addresses.iter().map(|a| (suppression_key(scope, a), ())));
        self.write(move |inner| {
            let (store, now) = (&inner.store, SystemTime::now());
            let mut batch = store.db.batch();
            let mut existed = 0;
            for (key, ()) in keys {
                if let Some(value) = store
                    .suppressions
                    .get(&key)
                    .map_err(backend("unsuppressing"))?
                {
                    existed += u64::from(is_live(&value, now)?);
                    batch.remove(&store.suppressions, key);
                }
            }
            batch.commit().map_err(backend("unsuppressing"))?;
            Ok(existed)
        })
        .await
    }

    pub(super) async fn check_entries(
        &self,
        tenant: &Tenant,
        addresses: &[Address],
    ) -> Result<Vec<Option<Suppression>>> {
        self.inner.check_tenant(tenant)?;
        if addresses.len() <= INLINE_READS {
            return check_many(&self.inner.store, tenant, addresses);
        }
        // A long list is split over the cores: point reads are independent.
        let parts = (addresses.len() / PART_MIN).clamp(1, *CORES);
        let tasks = addresses
            .chunks(addresses.len().div_ceil(parts))
            .map(|part| {
                let (tenant, part) = (tenant.clone(), part.to_vec());
                self.blocking(move |inner| check_many(&inner.store, &tenant, &part))
            });
        let mut out = Vec::with_capacity(addresses.len());
        for part in futures::future::try_join_all(tasks).await? {
            out.extend(part);
        }
        Ok(out)
    }

    pub(super) async fn list_entries(
        &self,
        scope: &Scope,
        cursor: &str,
        limit: usize,
    ) -> Result<Page<Suppression>> {
        self.inner.check_scope(scope)?;
        if limit == 0 {
            return Err(StateError::invalid("limit", "must be at least 1"));
        }
        let (scope, cursor) = (scope.clone(), cursor.to_owned());
        self.blocking(move |inner| list_page(&inner.store, &scope, &cursor, limit))
            .await
    }
}

/// One point read per address and scope: the tenant's entry first, then the global one.
fn check_many(
    store: &Store,
    tenant: &Tenant,
    addresses: &[Address],
) -> Result<Vec<Option<Suppression>>> {
    let now = SystemTime::now();
    let scopes = [Scope::Tenant(tenant.clone()), Scope::Global];
    let prefixes = [scope_prefix(&scopes[0]), scope_prefix(&scopes[1])];
    let mut key = Vec::with_capacity(320);
    let mut out = Vec::with_capacity(addresses.len());
    for address in addresses {
        let mut found = None;
        for (scope, prefix) in scopes.iter().zip(&prefixes) {
            key.clear();
            key.extend_from_slice(prefix);
            // Writing to a Vec cannot fail.
            let _ = write!(key, "{address}");
            let value = store
                .suppressions
                .get(&key)
                .map_err(backend("checking suppressions"))?;
            if let Some(value) = value
                && is_live(&value, now)?
            {
                found = Some(decode_suppression(scope.clone(), address.clone(), &value)?);
                break;
            }
        }
        out.push(found);
    }
    Ok(out)
}

fn list_page(
    store: &Store,
    scope: &Scope,
    cursor: &str,
    limit: usize,
) -> Result<Page<Suppression>> {
    let now = SystemTime::now();
    let prefix = scope_prefix(scope);
    let mut start = prefix.clone();
    start.extend_from_slice(cursor.as_bytes());
    let lower = if cursor.is_empty() {
        Bound::Included(start)
    } else {
        Bound::Excluded(start)
    };
    // Every prefix ends with NUL: the scope's keys end before the same prefix ending in 1.
    let mut end = prefix.clone();
    *end.last_mut().expect("prefixes are not empty") = 1;
    let mut items: Vec<Suppression> = Vec::with_capacity(limit.min(10_000));
    for item in store
        .suppressions
        .range::<Vec<u8>, _>((lower, Bound::Excluded(end)))
    {
        let (key, value) = item.into_inner().map_err(backend("listing suppressions"))?;
        if !is_live(&value, now)? {
            continue;
        }
        if items.len() == limit {
            let next = items.last().map(|e| e.address.to_string());
            return Ok(Page { items, next });
        }
        let address = address_of(&key, prefix.len())?;
        items.push(decode_suppression(scope.clone(), address, &value)?);
    }
    Ok(Page { items, next: None })
}

/// The rows in key order, the last one given for a key winning (a write batch must not
/// hold one key twice).
fn last_per_key<V>(rows: impl Iterator<Item = (Vec<u8>, V)>) -> Vec<(Vec<u8>, V)> {
    let mut rows: Vec<_> = rows.collect();
    rows.reverse();
    rows.sort_by(|a, b| a.0.cmp(&b.0));
    rows.dedup_by(|later, earlier| later.0 == earlier.0);
    rows
}
