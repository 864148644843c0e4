//! The fjall database and its keyspaces.

use std::path::Path;

use fjall::{Database, Keyspace, KeyspaceCreateOptions};

use super::codec::Tag;
use crate::error::StateError;

/// The block cache. fjall's default is 32 MiB; a million-entry suppression list takes
/// tens of MiB of blocks, and check-many throughput depends on them staying cached.
const CACHE_BYTES: u64 = 64 * 1024 * 1024;

pub(super) fn backend(context: &'static str) -> impl Fn(fjall::Error) -> StateError {
    move |e| StateError::Unavailable(format!("embedded state: {context}: {e}"))
}

/// Handles to the database and its keyspaces (layout in [`super::codec`]). Cheap to clone.
#[derive(Clone)]
pub(super) struct Store {
    pub(super) db: Database,
    pub(super) suppressions: Keyspace,
    pub(super) bounces: Keyspace,
    pub(super) domains: Keyspace,
    pub(super) ledger: Keyspace,
    pub(super) idempotency: Keyspace,
    pub(super) tracking: Keyspace,
    pub(super) pauses: Keyspace,
    pub(super) expiry: Keyspace,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.suppressions.path())
            .finish_non_exhaustive()
    }
}

impl Store {
    pub(super) fn open(dir: &Path) -> Result<Self, StateError> {
        std::fs::create_dir_all(dir).map_err(|e| {
            StateError::Unavailable(format!("embedded state: creating {}: {e}", dir.display()))
        })?;
        let db = Database::builder(dir)
            .cache_size(CACHE_BYTES)
            .open()
            .map_err(backend("opening the database"))?;
        let open = |name: &'static str| {
            db.keyspace(name, KeyspaceCreateOptions::default)
                .map_err(backend("opening a keyspace"))
        };
        Ok(Self {
            suppressions: open("suppressions")?,
            bounces: open("bounces")?,
            domains: open("domains")?,
            ledger: open("ledger")?,
            idempotency: open("idempotency")?,
            tracking: open("tracking")?,
            pauses: open("pauses")?,
            expiry: open("expiry")?,
            db,
        })
    }

    /// The keyspace an `expiry` index entry of this tag points into.
    pub(super) fn keyspace(&self, tag: Tag) -> &Keyspace {
        match tag {
            Tag::Suppression => &self.suppressions,
            Tag::Bounce => &self.bounces,
            Tag::Ledger => &self.ledger,
            Tag::Idempotency => &self.idempotency,
            Tag::Tracking => &self.tracking,
            Tag::Pause => &self.pauses,
        }
    }
}
