//! Bounce classification: a permanent failure's reply → [`BounceClass`].
//!
//! CONTRACT (owned by the bounce helper): the built-in table is data (a `static` slice of
//! rules, documented in `docs/bounces.md` with one row per rule), tried after the rules
//! from `[[deliver.bounce_rules]]`. A rule matches on the enhanced status code (exact
//! `5.1.1` or with a wildcard detail/subject `5.7.*`), on the basic code, and/or on a
//! case-insensitive substring of the reply text; all given conditions must hold. Text
//! rules come before code rules in the built-in table where a text is more specific (e.g.
//! "spamhaus", "blocked" with 5.7.1 → spam; "quota" / "mailbox full" → quota). No rule
//! matches → `BounceClass::Other`.

use kurir_core::BounceClass;
use serde::{Deserialize, Serialize};

use crate::reply::RemoteReply;

/// One classification rule (`[[deliver.bounce_rules]]`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ClassifyRule {
    /// Enhanced status code: `5.1.1`, `5.7.*`, `5.*.*`.
    #[serde(default)]
    pub status: Option<String>,
    /// Basic reply code, e.g. 552.
    #[serde(default)]
    pub code: Option<u16>,
    /// Case-insensitive substring of the reply text.
    #[serde(default)]
    pub text: Option<String>,
    /// The class: `bad_mailbox`, `bad_domain`, `policy`, `spam`, `quota`, `too_large`,
    /// `content`, `protocol`, `routing`, `other`.
    pub class: String,
}

impl ClassifyRule {
    /// A description of what is wrong, for a config error.
    pub fn validate(&self) -> Result<(), String> {
        let _ = self;
        Ok(())
    }
}

/// The classifier: config rules first, then the built-in table.
#[derive(Debug, Clone)]
pub struct Classifier {
    _private: (),
}

impl Classifier {
    /// `extra` must have passed [`ClassifyRule::validate`].
    pub fn new(extra: &[ClassifyRule]) -> Self {
        let _ = extra;
        Self { _private: () }
    }

    pub fn classify(&self, reply: &RemoteReply) -> BounceClass {
        let _ = reply;
        BounceClass::Other
    }
}
