//! Domain controls as delivery nodes see them: a cached set of paused domains, refreshed
//! from the state store every `domain_poll_interval`, so the check made before every
//! delivery attempt ([`DomainControls::is_paused`]) is a map look-up, not a round trip.
//!
//! When the store cannot be read the cache keeps the last set it had (and logs once per
//! outage): a Redis outage must neither make delivery attempt paused domains nor stop it.
//! A pause with an `until` ends on time even between polls.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use kurir_core::Domain;
use tokio::sync::{mpsc, oneshot};

use crate::State;
use crate::error::StateError;
use crate::model::DomainPause;

type Refresh = oneshot::Sender<Result<(), StateError>>;

/// The cached pauses. Cheap to clone; the polling task stops when every clone is dropped.
#[derive(Debug, Clone)]
pub struct DomainControls {
    paused: Arc<RwLock<HashMap<Domain, DomainPause>>>,
    /// Asks the task to poll now. Its receiver closing ends nothing: the task ends when
    /// every sender (every clone of this) is dropped.
    refresh: mpsc::Sender<Refresh>,
}

impl DomainControls {
    /// Starts polling `state` every `poll_interval` (the first poll at once). Until it
    /// answers, no domain is paused: call [`Self::refresh_now`] to wait for it.
    pub fn start<S: State + Clone>(state: S, poll_interval: Duration) -> Self {
        let paused = Arc::new(RwLock::new(HashMap::new()));
        let (refresh, requests) = mpsc::channel(16);
        let poller = Poller {
            state,
            paused: paused.clone(),
            failing: false,
        };
        tokio::spawn(poller.run(requests, poll_interval));
        Self { paused, refresh }
    }

    /// The pause in force for `domain`, if any.
    pub fn is_paused(&self, domain: &Domain) -> Option<DomainPause> {
        let paused = self.paused.read().unwrap_or_else(|e| e.into_inner());
        paused
            .get(domain)
            .filter(|p| p.is_active(SystemTime::now()))
            .cloned()
    }

    /// Every pause in force, as last read.
    pub fn paused(&self) -> Vec<DomainPause> {
        let now = SystemTime::now();
        let paused = self.paused.read().unwrap_or_else(|e| e.into_inner());
        paused
            .values()
            .filter(|p| p.is_active(now))
            .cloned()
            .collect()
    }

    /// Polls now and waits for the answer (the cache is unchanged on an error).
    pub async fn refresh_now(&self) -> Result<(), StateError> {
        let (tx, rx) = oneshot::channel();
        let stopped = || StateError::Unavailable("domain controls task stopped".into());
        self.refresh.send(tx).await.map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())?
    }
}

struct Poller<S> {
    state: S,
    paused: Arc<RwLock<HashMap<Domain, DomainPause>>>,
    /// Whether the last poll failed (an outage is logged when it starts and ends).
    failing: bool,
}

impl<S: State> Poller<S> {
    async fn run(mut self, mut requests: mpsc::Receiver<Refresh>, poll_interval: Duration) {
        let mut ticks = tokio::time::interval(poll_interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                request = requests.recv() => match request {
                    Some(reply) => {
                        let _ = reply.send(self.poll().await);
                    }
                    None => return,
                },
                _ = ticks.tick() => {
                    let _ = self.poll().await;
                }
            }
        }
    }

    async fn poll(&mut self) -> Result<(), StateError> {
        match self.state.paused_domains().await {
            Ok(pauses) => {
                if std::mem::take(&mut self.failing) {
                    tracing::info!(paused = pauses.len(), "domain pauses readable again");
                }
                let map = pauses.into_iter().map(|p| (p.domain.clone(), p)).collect();
                *self.paused.write().unwrap_or_else(|e| e.into_inner()) = map;
                Ok(())
            }
            Err(error) => {
                if !std::mem::replace(&mut self.failing, true) {
                    tracing::warn!(%error, "reading domain pauses failed; keeping the last known set");
                }
                Err(error)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use kurir_core::{Address, BounceClass, MessageId};

    use super::*;
    use crate::Result;
    use crate::model::*;

    /// A store whose only working method is `paused_domains`, answering what the test says.
    #[derive(Clone, Default)]
    struct Pauses {
        answer: Arc<Mutex<Option<Vec<DomainPause>>>>,
        polls: Arc<AtomicUsize>,
    }

    impl Pauses {
        fn set(&self, answer: Option<Vec<DomainPause>>) {
            *self.answer.lock().unwrap() = answer;
        }
    }

    impl State for Pauses {
        async fn paused_domains(&self) -> Result<Vec<DomainPause>> {
            self.polls.fetch_add(1, Ordering::SeqCst);
            let answer = self.answer.lock().unwrap().clone();
            answer.ok_or_else(|| StateError::Unavailable("down".into()))
        }
        async fn suppress(&self, _: &[Suppression]) -> Result<()> {
            unused()
        }
        async fn unsuppress(&self, _: &Scope, _: &[Address]) -> Result<u64> {
            unused()
        }
        async fn check_suppressed(
            &self,
            _: &Tenant,
            _: &[Address],
        ) -> Result<Vec<Option<Suppression>>> {
            unused()
        }
        async fn list_suppressions(
            &self,
            _: &Scope,
            _: &str,
            _: usize,
        ) -> Result<Page<Suppression>> {
            unused()
        }
        async fn record_bounce(
            &self,
            _: &Tenant,
            _: &Address,
            _: BounceClass,
            _: &str,
        ) -> Result<BounceVerdict> {
            unused()
        }
        async fn count_domain(&self, _: &Domain, _: DomainCounter) -> Result<()> {
            unused()
        }
        async fn domain_counters(&self, _: &Domain) -> Result<DomainCounters> {
            unused()
        }
        async fn mark_delivered(&self, _: MessageId, _: &[Address]) -> Result<()> {
            unused()
        }
        async fn settle(&self, _: &crate::Settlement<'_>) -> Result<()> {
            unused()
        }
        async fn delivered(&self, _: MessageId, _: &[Address]) -> Result<Vec<bool>> {
            unused()
        }
        async fn claim_idempotency_key(&self, _: &Tenant, _: &str) -> Result<Claim> {
            unused()
        }
        async fn complete_idempotency_key(&self, _: &Tenant, _: &str, _: &[u8]) -> Result<()> {
            unused()
        }
        async fn release_idempotency_key(&self, _: &Tenant, _: &str) -> Result<()> {
            unused()
        }
        async fn track(&self, _: MessageId, _: &TrackEntry) -> Result<()> {
            unused()
        }
        async fn history(&self, _: MessageId) -> Result<Vec<TrackEntry>> {
            unused()
        }
        async fn pause_domain(&self, _: &DomainPause) -> Result<()> {
            unused()
        }
        async fn resume_domain(&self, _: &Domain) -> Result<bool> {
            unused()
        }
    }

    /// What the fake answers for every method but `paused_domains`.
    fn unused<T>() -> Result<T> {
        Err(StateError::Unavailable("not part of this fake".into()))
    }

    fn pause(domain: &str, until: Option<SystemTime>) -> DomainPause {
        DomainPause {
            domain: Domain::parse(domain).unwrap(),
            until,
            reason: "test".into(),
            action: crate::model::PauseAction::Hold,
        }
    }

    fn domain(d: &str) -> Domain {
        Domain::parse(d).unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn pauses_are_seen_within_one_poll_interval() {
        let store = Pauses::default();
        store.set(Some(vec![]));
        let controls = DomainControls::start(store.clone(), Duration::from_secs(2));
        controls.refresh_now().await.unwrap();
        assert!(controls.is_paused(&domain("a.test")).is_none());
        store.set(Some(vec![pause("a.test", None)]));
        tokio::time::sleep(Duration::from_millis(2100)).await;
        assert_eq!(
            controls.is_paused(&domain("a.test")),
            Some(pause("a.test", None))
        );
        assert!(controls.is_paused(&domain("b.test")).is_none());
        assert!(store.polls.load(Ordering::SeqCst) >= 2);
    }

    #[tokio::test(start_paused = true)]
    async fn an_outage_keeps_the_last_known_set() {
        let store = Pauses::default();
        store.set(Some(vec![pause("a.test", None)]));
        let controls = DomainControls::start(store.clone(), Duration::from_secs(2));
        controls.refresh_now().await.unwrap();
        store.set(None);
        assert!(controls.refresh_now().await.unwrap_err().is_retryable());
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert!(
            controls.is_paused(&domain("a.test")).is_some(),
            "still paused during the outage"
        );
        store.set(Some(vec![]));
        tokio::time::sleep(Duration::from_millis(2100)).await;
        assert!(
            controls.is_paused(&domain("a.test")).is_none(),
            "resumed once readable again"
        );
    }

    #[tokio::test]
    async fn a_pause_ends_at_its_until_between_polls() {
        let store = Pauses::default();
        let until = SystemTime::now() + Duration::from_millis(200);
        store.set(Some(vec![pause("a.test", Some(until))]));
        let controls = DomainControls::start(store.clone(), Duration::from_secs(3600));
        controls.refresh_now().await.unwrap();
        assert!(controls.is_paused(&domain("a.test")).is_some());
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(controls.is_paused(&domain("a.test")).is_none());
        assert!(controls.paused().is_empty());
    }

    #[tokio::test]
    async fn works_against_the_embedded_store() {
        let dir = tempfile::tempdir().unwrap();
        let state =
            crate::embedded::EmbeddedState::open(dir.path(), &crate::StateConfig::default())
                .unwrap();
        let controls = DomainControls::start(state.clone(), Duration::from_secs(3600));
        state.pause_domain(&pause("a.test", None)).await.unwrap();
        controls.refresh_now().await.unwrap();
        assert!(controls.is_paused(&domain("a.test")).is_some());
    }
}
