//! The backends under test, behind one interface.

use std::time::Duration;

use kurir_state::config::Backend;
use kurir_state::embedded::EmbeddedState;
use kurir_state::redis::RedisState;
use kurir_state::{State, StateConfig};
use kurir_testkit::RedisServer;
use tempfile::TempDir;

/// The configuration every case runs with: short TTLs so expiry is observable in seconds.
pub fn test_config(backend: Backend) -> StateConfig {
    StateConfig {
        backend,
        tenants: vec!["acme".into(), "globex".into()],
        soft_bounce_threshold: 3,
        soft_bounce_window: Duration::from_secs(3600),
        ledger_ttl: Duration::from_secs(1),
        idempotency_ttl: Duration::from_secs(3600),
        tracking_ttl: Duration::from_secs(3600),
        tracking_max_entries: 10,
        domain_poll_interval: Duration::from_secs(1),
        ..StateConfig::default()
    }
}

pub trait Harness: Sized + Send + 'static {
    type S: State + Clone;

    async fn start() -> Self;

    fn state(&self) -> Self::S;

    /// New clients on the same data, as after a node restart.
    async fn restart(&mut self);
}

pub struct Embedded {
    dir: TempDir,
    config: StateConfig,
    /// `None` only inside `restart`.
    state: Option<EmbeddedState>,
}

impl Harness for Embedded {
    type S = EmbeddedState;

    async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config = test_config(Backend::Embedded);
        let state = EmbeddedState::open(dir.path(), &config).unwrap();
        Self {
            dir,
            config,
            state: Some(state),
        }
    }

    fn state(&self) -> EmbeddedState {
        self.state.clone().expect("open")
    }

    async fn restart(&mut self) {
        let old = self.state.take().expect("open");
        old.close().await;
        drop(old);
        self.state = Some(EmbeddedState::open(self.dir.path(), &self.config).unwrap());
    }
}

pub struct Redis {
    _server: RedisServer,
    config: StateConfig,
    state: RedisState,
}

impl Harness for Redis {
    type S = RedisState;

    async fn start() -> Self {
        let server = RedisServer::start().await.unwrap();
        let mut config = test_config(Backend::Redis);
        config.redis.url = server.url();
        let state = RedisState::connect(&config).await.unwrap();
        Self {
            _server: server,
            config,
            state,
        }
    }

    fn state(&self) -> RedisState {
        self.state.clone()
    }

    async fn restart(&mut self) {
        self.state = RedisState::connect(&self.config).await.unwrap();
    }
}
