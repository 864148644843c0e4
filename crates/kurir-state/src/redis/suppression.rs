//! The suppression list: bulk writes as pipelined `MULTI` blocks, checks as one pipelined
//! pair of `HMGET`s, listings and removals as Lua scripts (see `docs/state-redis.md`).

use std::collections::HashMap;
use std::time::SystemTime;

use kurir_core::Address;
use redis::Pipeline;

use super::RedisState;
use super::codec::{decode_entry, encode_entry, millis_ceil, now_millis};
use super::scripts::{LIST, PURGE, UNSUPPRESS};
use crate::Result;
use crate::error::StateError;
use crate::model::{Page, Scope, Suppression, Tenant};

/// Entries per `MULTI` block (and per `HSET`/`ZADD`): large enough to amortise the round
/// trip, small enough that no single command blocks the server for long.
const CHUNK: usize = 1_000;
/// Entries per pipeline (one round trip, one `command_timeout`).
const PIPELINE_ENTRIES: usize = 10_000;
/// Expired entries a write or a listing deletes at most per scope.
const PURGE_LIMIT: usize = 1_000;
/// The largest page a listing returns.
pub(super) const MAX_PAGE: usize = 1_000;

/// One entry ready to write: address, encoded value, expiry score.
type Row = (String, String, Option<u64>);

impl RedisState {
    pub(super) async fn suppress_entries(&self, entries: &[Suppression]) -> Result<()> {
        let mut by_scope: Vec<(Scope, Vec<Row>)> = Vec::new();
        let mut slots: HashMap<(&Scope, &Address), (usize, usize)> = HashMap::new();
        for s in entries {
            self.check_scope(&s.scope)?;
            let row = (
                s.address.to_string(),
                encode_entry(s)?,
                s.expires.map(|e| millis_ceil(e, "expires")).transpose()?,
            );
            // The same scope and address twice in one call: the later one wins.
            if let Some(&(g, i)) = slots.get(&(&s.scope, &s.address)) {
                by_scope[g].1[i] = row;
                continue;
            }
            let g = match by_scope.iter().position(|(scope, _)| scope == &s.scope) {
                Some(g) => g,
                None => {
                    by_scope.push((s.scope.clone(), Vec::new()));
                    by_scope.len() - 1
                }
            };
            slots.insert((&s.scope, &s.address), (g, by_scope[g].1.len()));
            by_scope[g].1.push(row);
        }
        for (scope, rows) in &by_scope {
            for batch in rows.chunks(PIPELINE_ENTRIES) {
                self.write_batch(scope, batch).await?;
            }
        }
        Ok(())
    }

    /// One round trip: a `MULTI` block per [`CHUNK`], then a purge of expired entries.
    async fn write_batch(&self, scope: &Scope, rows: &[Row]) -> Result<()> {
        let keys = self.keys().scope(scope);
        let mut pipe = redis::pipe();
        for chunk in rows.chunks(CHUNK) {
            pipe.cmd("MULTI").ignore();
            let hset = pipe.cmd("HSET").arg(&keys.entries);
            for (address, value, _) in chunk {
                hset.arg(address).arg(value);
            }
            hset.ignore();
            let zadd = pipe.cmd("ZADD").arg(&keys.index);
            for (address, ..) in chunk {
                zadd.arg(0).arg(address);
            }
            zadd.ignore();
            expiry_commands(&mut pipe, &keys.expiry, chunk);
            pipe.cmd("EXEC").ignore();
        }
        let mut purge = PURGE.prepare_invoke();
        purge
            .key(&keys.entries)
            .key(&keys.index)
            .key(&keys.expiry)
            .arg(now_millis())
            .arg(PURGE_LIMIT);
        pipe.load_script(&PURGE)
            .ignore()
            .invoke_script(&purge)
            .ignore();
        let mut conn = self.conn();
        self.run("suppress", pipe.query_async::<()>(&mut conn))
            .await
    }

    pub(super) async fn unsuppress_addresses(
        &self,
        scope: &Scope,
        addresses: &[Address],
    ) -> Result<u64> {
        self.check_scope(scope)?;
        if addresses.is_empty() {
            return Ok(0);
        }
        let keys = self.keys().scope(scope);
        let now = now_millis();
        let invocations: Vec<_> = addresses
            .chunks(CHUNK)
            .map(|chunk| {
                let mut inv = UNSUPPRESS.prepare_invoke();
                inv.key(&keys.entries)
                    .key(&keys.index)
                    .key(&keys.expiry)
                    .arg(now);
                for a in chunk {
                    inv.arg(a.to_string());
                }
                inv
            })
            .collect();
        let mut pipe = redis::pipe();
        pipe.load_script(&UNSUPPRESS).ignore();
        for inv in &invocations {
            pipe.invoke_script(inv);
        }
        let mut conn = self.conn();
        let counts: Vec<u64> = self.run("unsuppress", pipe.query_async(&mut conn)).await?;
        Ok(counts.iter().sum())
    }

    pub(super) async fn check_many(
        &self,
        tenant: &Tenant,
        addresses: &[Address],
    ) -> Result<Vec<Option<Suppression>>> {
        self.check_tenant(tenant)?;
        if addresses.is_empty() {
            return Ok(Vec::new());
        }
        let tenant_scope = Scope::Tenant(tenant.clone());
        let names: Vec<String> = addresses.iter().map(ToString::to_string).collect();
        let mut pipe = redis::pipe();
        pipe.cmd("HMGET")
            .arg(self.keys().entries(&tenant_scope))
            .arg(&names);
        pipe.cmd("HMGET")
            .arg(self.keys().entries(&Scope::Global))
            .arg(&names);
        let mut conn = self.conn();
        let (own, global): (Vec<Option<String>>, Vec<Option<String>>) = self
            .run("check suppressed", pipe.query_async(&mut conn))
            .await?;
        if own.len() != addresses.len() || global.len() != addresses.len() {
            return Err(StateError::Corrupt(
                "redis: HMGET answered the wrong number of values".into(),
            ));
        }
        let now = SystemTime::now();
        let in_force = |scope: &Scope,
                        address: &Address,
                        value: &Option<String>|
         -> Result<Option<Suppression>> {
            let Some(value) = value else { return Ok(None) };
            let entry = decode_entry(scope, address, value)?;
            Ok(entry.is_active(now).then_some(entry))
        };
        let mut out = Vec::with_capacity(addresses.len());
        for ((address, own), global) in addresses.iter().zip(&own).zip(&global) {
            let found = match in_force(&tenant_scope, address, own)? {
                Some(entry) => Some(entry),
                None => in_force(&Scope::Global, address, global)?,
            };
            out.push(found);
        }
        Ok(out)
    }

    pub(super) async fn list_page(
        &self,
        scope: &Scope,
        cursor: &str,
        limit: usize,
    ) -> Result<Page<Suppression>> {
        self.check_scope(scope)?;
        if limit == 0 {
            return Err(StateError::invalid("limit", "must be at least 1"));
        }
        let limit = limit.min(MAX_PAGE);
        let keys = self.keys().scope(scope);
        let start = if cursor.is_empty() {
            "-".to_owned()
        } else {
            format!("({cursor}")
        };
        let mut inv = LIST.prepare_invoke();
        inv.key(&keys.entries).key(&keys.index).key(&keys.expiry);
        inv.arg(now_millis()).arg(PURGE_LIMIT).arg(start).arg(limit);
        let mut conn = self.conn();
        let (addresses, values): (Vec<String>, Vec<Option<String>>) = self
            .run("list suppressions", inv.invoke_async(&mut conn))
            .await?;
        let next = (addresses.len() == limit)
            .then(|| addresses.last().cloned())
            .flatten();
        let now = SystemTime::now();
        let mut items = Vec::with_capacity(addresses.len());
        for (address, value) in addresses.iter().zip(values) {
            let Some(value) = value else { continue };
            let parsed = Address::parse(address).map_err(|e| {
                StateError::Corrupt(format!("redis: listed address {address:?}: {e}"))
            })?;
            let entry = decode_entry(scope, &parsed, &value)?;
            if entry.is_active(now) {
                items.push(entry);
            }
        }
        Ok(Page { items, next })
    }
}

/// Keeps the expiry index in step with the entries: a score for those that expire, no
/// member for those that do not.
fn expiry_commands(pipe: &mut Pipeline, key: &str, chunk: &[Row]) {
    let expiring: Vec<_> = chunk
        .iter()
        .filter_map(|(a, _, e)| e.map(|e| (e, a)))
        .collect();
    if !expiring.is_empty() {
        let zadd = pipe.cmd("ZADD").arg(key);
        for (score, address) in &expiring {
            zadd.arg(*score).arg(*address);
        }
        zadd.ignore();
    }
    if expiring.len() < chunk.len() {
        let zrem = pipe.cmd("ZREM").arg(key);
        for (address, ..) in chunk.iter().filter(|(_, _, e)| e.is_none()) {
            zrem.arg(address);
        }
        zrem.ignore();
    }
}
