//! Domain controls: every pause in one hash, so each delivery node reads all of them with
//! one `HGETALL` per poll. Expired pauses are filtered out at read time and deleted (in the
//! same script, so a concurrent re-pause is never lost) by the next `pause_domain`.

use std::time::SystemTime;

use kurir_core::Domain;

use super::RedisState;
use super::codec::{decode_pause, encode_pause, nanos};
use super::scripts::{PAUSE, RESUME};
use crate::Result;
use crate::model::DomainPause;

impl RedisState {
    pub(super) async fn pause(&self, pause: &DomainPause) -> Result<()> {
        let now = nanos(SystemTime::now(), "now")?;
        let mut inv = PAUSE.prepare_invoke();
        inv.key(self.keys().pauses())
            .arg(pause.domain.as_str())
            .arg(encode_pause(pause)?)
            .arg(now.to_string());
        let mut conn = self.conn();
        self.run("pause domain", inv.invoke_async::<i64>(&mut conn))
            .await
            .map(drop)
    }

    pub(super) async fn resume(&self, domain: &Domain) -> Result<bool> {
        let now = nanos(SystemTime::now(), "now")?;
        let mut inv = RESUME.prepare_invoke();
        inv.key(self.keys().pauses())
            .arg(domain.as_str())
            .arg(now.to_string());
        let mut conn = self.conn();
        let was: u8 = self
            .run("resume domain", inv.invoke_async(&mut conn))
            .await?;
        Ok(was == 1)
    }

    async fn all_pauses(&self) -> Result<Vec<DomainPause>> {
        let mut cmd = redis::cmd("HGETALL");
        cmd.arg(self.keys().pauses());
        let mut conn = self.conn();
        let raw: Vec<(String, String)> = self
            .run("paused domains", cmd.query_async(&mut conn))
            .await?;
        raw.iter()
            .map(|(domain, value)| decode_pause(domain, value))
            .collect()
    }

    pub(super) async fn read_pauses(&self) -> Result<Vec<DomainPause>> {
        let now = SystemTime::now();
        let mut pauses: Vec<DomainPause> = self
            .all_pauses()
            .await?
            .into_iter()
            .filter(|p| p.is_active(now))
            .collect();
        pauses.sort_by(|a, b| a.domain.as_str().cmp(b.domain.as_str()));
        Ok(pauses)
    }
}
