//! [`Connection`]: TO BE WRITTEN by the client helper (see the contract in `mod.rs`).

use super::{Capabilities, ClientError, ClientSettings, Target, Transaction, TransactionReplies};

/// One SMTP session to one remote host.
#[derive(Debug)]
pub struct Connection {
    capabilities: Capabilities,
    target: Target,
}

impl Connection {
    /// Connects, reads the banner, EHLO, STARTTLS per policy (EHLO again), AUTH when
    /// configured.
    pub async fn connect(target: &Target, settings: &ClientSettings) -> Result<Self, ClientError> {
        let _ = (target, settings);
        Err(ClientError::TlsNotOffered)
    }

    pub fn capabilities(&self) -> &Capabilities {
        &self.capabilities
    }

    pub fn target(&self) -> &Target {
        &self.target
    }

    /// `TLSv1.3`, `TLSv1.2`, or `None` in plain text.
    pub fn tls_version(&self) -> Option<&'static str> {
        None
    }

    /// Transactions sent on this connection so far (counted when MAIL FROM was written).
    pub fn transactions(&self) -> u32 {
        0
    }

    /// False after an IO error, a timeout, a protocol error or a 421.
    pub fn is_usable(&self) -> bool {
        false
    }

    /// One transaction. `Err` means the connection failed mid-way (it is no longer
    /// usable) and the outcome of the recipients is unknown (treat as transient).
    pub async fn send(&mut self, tx: &Transaction<'_>) -> Result<TransactionReplies, ClientError> {
        let _ = tx;
        Err(ClientError::TlsNotOffered)
    }

    /// RSET, so the connection can carry the next transaction.
    pub async fn reset(&mut self) -> Result<(), ClientError> {
        Ok(())
    }

    /// QUIT and close; errors are ignored (best effort, bounded by the quit timeout).
    pub async fn quit(self) {}
}
