//! SIGTERM / SIGINT: what turns a Kubernetes pod termination (or Ctrl-C) into a shutdown.

use std::fmt;
use std::io;

use tokio::signal::unix::{Signal, SignalKind, signal};

/// The OS signal that asked the process to stop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OsSignal {
    /// SIGTERM: what Kubernetes (and `kill`) sends.
    Terminate,
    /// SIGINT: Ctrl-C.
    Interrupt,
}

impl fmt::Display for OsSignal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Terminate => "SIGTERM",
            Self::Interrupt => "SIGINT",
        })
    }
}

/// Installed SIGTERM and SIGINT handlers.
///
/// Install them early (before the process reports ready): until a handler is installed
/// the default action of these signals kills the process without a drain.
#[derive(Debug)]
pub struct OsSignals {
    term: Signal,
    int: Signal,
}

impl OsSignals {
    /// Installs the handlers. Must be called inside a tokio runtime.
    pub fn install() -> io::Result<Self> {
        Ok(Self {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }

    /// Resolves on the next SIGTERM or SIGINT (call again to see a second one).
    pub async fn recv(&mut self) -> OsSignal {
        tokio::select! {
            _ = self.term.recv() => OsSignal::Terminate,
            _ = self.int.recv() => OsSignal::Interrupt,
        }
    }
}

/// Installs the handlers and resolves on the first SIGTERM or SIGINT.
pub async fn wait_for_os_signal() -> io::Result<OsSignal> {
    let mut signals = OsSignals::install()?;
    Ok(signals.recv().await)
}
