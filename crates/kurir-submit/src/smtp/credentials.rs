//! SMTP AUTH users from the configuration: names, argon2 password hashes (PHC strings) and
//! the tenant each user sends as.
//!
//! Verification runs on the blocking pool (argon2 is deliberately slow) and costs the same
//! for an unknown user as for a wrong password, so timing does not reveal which names exist.

use std::collections::HashMap;
use std::sync::Arc;

use argon2::password_hash::{PasswordHash, PasswordVerifier};
use kurir_state::Tenant;

use super::config::UserConfig;

/// Who a session authenticated as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AuthUser {
    pub(crate) name: String,
    pub(crate) tenant: Tenant,
}

#[derive(Debug)]
struct Entry {
    hash: String,
    tenant: Tenant,
}

/// The configured users. Cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct Credentials {
    users: Arc<HashMap<String, Entry>>,
}

impl Credentials {
    /// From validated config (hashes and tenants already checked).
    pub(crate) fn new(users: &[UserConfig]) -> Self {
        let users = users
            .iter()
            .filter_map(|u| {
                let tenant = Tenant::new(&u.tenant).ok()?;
                let entry = Entry {
                    hash: u.password_hash.clone(),
                    tenant,
                };
                Some((u.name.clone(), entry))
            })
            .collect();
        Self {
            users: Arc::new(users),
        }
    }

    /// Whether any user is configured (AUTH is offered only then).
    pub(crate) fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    /// Checks a name and password; `None` when either is wrong.
    pub(crate) async fn verify(&self, name: &str, password: &str) -> Option<AuthUser> {
        let known = self.users.get(name);
        // An unknown name is verified against some user's hash anyway (and then refused),
        // so it takes as long as a wrong password.
        let hash = known.or_else(|| self.users.values().next())?.hash.clone();
        let password = password.to_owned();
        let ok = tokio::task::spawn_blocking(move || {
            let Ok(parsed) = PasswordHash::new(&hash) else {
                return false;
            };
            argon2::Argon2::default()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok()
        })
        .await
        .unwrap_or(false);
        let entry = known.filter(|_| ok)?;
        Some(AuthUser {
            name: name.to_owned(),
            tenant: entry.tenant.clone(),
        })
    }
}
