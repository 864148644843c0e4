//! Per-message and per-submission records: the delivery ledger (a set per message),
//! idempotency keys (a string per key, claimed with `SET NX`) and message tracking (a capped
//! list per message).

use kurir_core::{Address, MessageId};

use super::RedisState;
use super::codec::{decode_track, encode_track, ms};
use super::scripts::{RELEASE_CLAIM, TRACK, TRACK_SOURCE};
use crate::Result;
use crate::error::StateError;
use crate::model::{
    Claim, PENDING_CLAIM_TTL, Settlement, Tenant, TrackEntry, check_idempotency_key,
};

const PENDING: &[u8] = b"P";
const DONE: u8 = b'D';

impl RedisState {
    pub(super) async fn ledger_add(&self, id: MessageId, recipients: &[Address]) -> Result<()> {
        if recipients.is_empty() {
            return Ok(());
        }
        let key = self.keys().ledger(id);
        let names: Vec<String> = recipients.iter().map(ToString::to_string).collect();
        let mut pipe = redis::pipe();
        pipe.atomic();
        pipe.cmd("SADD").arg(&key).arg(&names).ignore();
        pipe.cmd("PEXPIRE")
            .arg(&key)
            .arg(ms(self.config().ledger_ttl))
            .ignore();
        let mut conn = self.conn();
        self.run("mark delivered", pipe.query_async::<()>(&mut conn))
            .await
    }

    /// One pipeline (one round trip): the ledger entries in a `MULTI` block (the set and its
    /// TTL together), the counters, then the history entries in one call of the `TRACK`
    /// script, sent with `EVAL` (the server caches it; `EVALSHA` would fail after a
    /// `SCRIPT FLUSH`). Not one transaction: the keys are in different slots.
    pub(super) async fn settle_attempt(&self, settlement: &Settlement<'_>) -> Result<()> {
        let config = self.config();
        let keys = self.keys();
        let mut pipe = redis::pipe();
        let mut commands = 0;
        if !settlement.delivered.is_empty() {
            let key = keys.ledger(settlement.id);
            let names: Vec<String> = settlement
                .delivered
                .iter()
                .map(ToString::to_string)
                .collect();
            pipe.cmd("MULTI").ignore();
            pipe.cmd("SADD").arg(&key).arg(&names).ignore();
            pipe.cmd("PEXPIRE")
                .arg(&key)
                .arg(ms(config.ledger_ttl))
                .ignore();
            pipe.cmd("EXEC").ignore();
            commands += 1;
        }
        let counts = settlement.counts;
        let counters = keys.domain_counters(settlement.domain);
        for (field, n) in [
            ("delivered", counts.delivered),
            ("deferred", counts.deferred),
            ("bounced", counts.bounced),
        ] {
            if n > 0 {
                pipe.cmd("HINCRBY")
                    .arg(&counters)
                    .arg(field)
                    .arg(n)
                    .ignore();
                commands += 1;
            }
        }
        if !settlement.history.is_empty() {
            let eval = pipe.cmd("EVAL");
            eval.arg(TRACK_SOURCE)
                .arg(1)
                .arg(keys.tracking(settlement.id))
                .arg(config.tracking_max_entries)
                .arg(ms(config.tracking_ttl));
            for entry in settlement.history {
                eval.arg(encode_track(entry)?);
            }
            eval.ignore();
            commands += 1;
        }
        if commands == 0 {
            return Ok(());
        }
        let mut conn = self.conn();
        self.run("settle", pipe.query_async::<()>(&mut conn)).await
    }

    pub(super) async fn ledger_check(
        &self,
        id: MessageId,
        recipients: &[Address],
    ) -> Result<Vec<bool>> {
        if recipients.is_empty() {
            return Ok(Vec::new());
        }
        let names: Vec<String> = recipients.iter().map(ToString::to_string).collect();
        let mut cmd = redis::cmd("SMISMEMBER");
        cmd.arg(self.keys().ledger(id)).arg(&names);
        let mut conn = self.conn();
        self.run("delivered", cmd.query_async(&mut conn)).await
    }

    pub(super) async fn claim(&self, tenant: &Tenant, key: &str) -> Result<Claim> {
        self.check_tenant(tenant)?;
        check_idempotency_key(key)?;
        let pending_ttl = PENDING_CLAIM_TTL.min(self.config().idempotency_ttl);
        let mut cmd = redis::cmd("SET");
        cmd.arg(self.keys().idempotency(tenant, key))
            .arg(PENDING)
            .arg("NX")
            .arg("PX")
            .arg(ms(pending_ttl))
            .arg("GET");
        let mut conn = self.conn();
        let before: Option<Vec<u8>> = self
            .run("claim idempotency key", cmd.query_async(&mut conn))
            .await?;
        match before.as_deref() {
            None => Ok(Claim::New),
            Some(PENDING) => Ok(Claim::Pending),
            Some([DONE, result @ ..]) => Ok(Claim::Done(result.to_vec())),
            Some(other) => Err(StateError::Corrupt(format!(
                "redis: idempotency key value {:?}",
                String::from_utf8_lossy(other)
            ))),
        }
    }

    pub(super) async fn complete(&self, tenant: &Tenant, key: &str, result: &[u8]) -> Result<()> {
        self.check_tenant(tenant)?;
        check_idempotency_key(key)?;
        let mut value = Vec::with_capacity(result.len() + 1);
        value.push(DONE);
        value.extend_from_slice(result);
        let mut cmd = redis::cmd("SET");
        cmd.arg(self.keys().idempotency(tenant, key))
            .arg(value)
            .arg("PX")
            .arg(ms(self.config().idempotency_ttl));
        let mut conn = self.conn();
        self.run("complete idempotency key", cmd.query_async::<()>(&mut conn))
            .await
    }

    pub(super) async fn release(&self, tenant: &Tenant, key: &str) -> Result<()> {
        self.check_tenant(tenant)?;
        check_idempotency_key(key)?;
        let mut inv = RELEASE_CLAIM.prepare_invoke();
        inv.key(self.keys().idempotency(tenant, key));
        let mut conn = self.conn();
        self.run(
            "release idempotency key",
            inv.invoke_async::<i64>(&mut conn),
        )
        .await
        .map(drop)
    }

    pub(super) async fn append_history(&self, id: MessageId, entry: &TrackEntry) -> Result<()> {
        let config = self.config();
        let mut inv = TRACK.prepare_invoke();
        inv.key(self.keys().tracking(id))
            .arg(config.tracking_max_entries)
            .arg(ms(config.tracking_ttl))
            .arg(encode_track(entry)?);
        let mut conn = self.conn();
        self.run("track", inv.invoke_async::<i64>(&mut conn))
            .await
            .map(drop)
    }

    pub(super) async fn read_history(&self, id: MessageId) -> Result<Vec<TrackEntry>> {
        let mut cmd = redis::cmd("LRANGE");
        cmd.arg(self.keys().tracking(id)).arg(0).arg(-1);
        let mut conn = self.conn();
        let raw: Vec<String> = self.run("history", cmd.query_async(&mut conn)).await?;
        raw.iter().map(|v| decode_track(v)).collect()
    }
}
