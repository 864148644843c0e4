//! `AdminService` (`proto/kurir/v1/admin.proto`) over [`kurir_queue::Queue`],
//! [`kurir_state::State`] and the [`AdminHooks`] of the node.
//!
//! Domain controls are [`DomainPause`]s in the state store, which every delivery node polls:
//! PauseDomain writes one with [`PauseAction::Hold`], BounceDomain one with
//! [`PauseAction::Bounce`] (a bounce order, lapsing after its duration or `deliver.max_age`),
//! each replacing whatever the domain had before. ListPausedDomains shows both; a bounce
//! order's reason is prefixed with [`BOUNCE_PREFIX`], since the listing has no action field.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures::future::try_join_all;
use kurir_core::{Domain, MessageId};
use kurir_proto::convert::time_to_unix_ms;
use kurir_proto::v1::admin_service_server::AdminService;
use kurir_proto::v1::{
    BounceDomainRequest, BounceDomainResponse, HistoryEntry, InitTopicsRequest, InitTopicsResponse,
    ListPausedDomainsRequest, ListPausedDomainsResponse, MessageHistoryRequest,
    MessageHistoryResponse, PartitionStats, PauseDomainRequest, PauseDomainResponse, PausedDomain,
    QueueStatsRequest, QueueStatsResponse, ResumeDomainRequest, ResumeDomainResponse, TopicInfo,
};
use kurir_queue::{PartitionLag, Queue, QueueError};
use kurir_state::{DomainPause, PauseAction, State, TrackEntry, TrackKind};
use tonic::{Request, Response, Status};

use super::AdminHooks;
use super::auth::{Authenticator, Caller};
use super::config::ApiService;
use super::state_status;

/// The longest pause or bounce reason, in bytes.
pub const MAX_REASON: usize = 512;
/// What ListPausedDomains puts before a bounce order's reason.
pub const BOUNCE_PREFIX: &str = "bounce: ";
/// The DSN diagnostic of a bounce order given without a reason.
pub const DEFAULT_BOUNCE_REASON: &str = "delivery to this domain was cancelled by an operator";

/// The admin service.
pub struct AdminApi<Q, S> {
    queue: Q,
    state: S,
    hooks: AdminHooks,
    auth: Arc<Authenticator>,
}

impl<Q, S> fmt::Debug for AdminApi<Q, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdminApi")
            .field("hooks", &self.hooks)
            .finish_non_exhaustive()
    }
}

impl<Q: Queue, S: State> AdminApi<Q, S> {
    pub fn new(queue: Q, state: S, hooks: AdminHooks, auth: Arc<Authenticator>) -> Self {
        Self {
            queue,
            state,
            hooks,
            auth,
        }
    }

    fn caller<T>(&self, request: &Request<T>) -> Result<Caller, Status> {
        self.auth.authorize(request.metadata(), ApiService::Admin)
    }

    async fn set_pause(&self, caller: &Caller, pause: DomainPause) -> Result<(), Status> {
        self.state
            .pause_domain(&pause)
            .await
            .map_err(state_status)?;
        tracing::info!(
            key = %caller.key,
            domain = %pause.domain,
            action = pause.action.as_str(),
            until = ?pause.until,
            reason = %pause.reason,
            "domain control set"
        );
        Ok(())
    }
}

#[tonic::async_trait]
impl<Q: Queue, S: State> AdminService for AdminApi<Q, S> {
    async fn queue_stats(
        &self,
        request: Request<QueueStatsRequest>,
    ) -> Result<Response<QueueStatsResponse>, Status> {
        self.caller(&request)?;
        let lags = try_join_all(
            self.hooks
                .delivery
                .iter()
                .map(|s| self.queue.lag(&s.group, &s.topic)),
        )
        .await
        .map_err(queue_status)?;
        let partitions = lags.iter().flatten().map(partition_stats).collect();
        let sites = self.hooks.sites.as_ref().map(|f| f()).unwrap_or_default();
        Ok(Response::new(QueueStatsResponse { partitions, sites }))
    }

    async fn pause_domain(
        &self,
        request: Request<PauseDomainRequest>,
    ) -> Result<Response<PauseDomainResponse>, Status> {
        let caller = self.caller(&request)?;
        let request = request.into_inner();
        let pause = DomainPause {
            domain: parse_domain(&request.domain)?,
            until: match request.duration_seconds {
                0 => None,
                secs => Some(until(secs)?),
            },
            reason: check_reason(request.reason)?,
            action: PauseAction::Hold,
        };
        self.set_pause(&caller, pause).await?;
        Ok(Response::new(PauseDomainResponse {}))
    }

    async fn resume_domain(
        &self,
        request: Request<ResumeDomainRequest>,
    ) -> Result<Response<ResumeDomainResponse>, Status> {
        let caller = self.caller(&request)?;
        let domain = parse_domain(&request.into_inner().domain)?;
        let was_paused = self
            .state
            .resume_domain(&domain)
            .await
            .map_err(state_status)?;
        tracing::info!(key = %caller.key, %domain, was_paused, "domain resumed");
        Ok(Response::new(ResumeDomainResponse { was_paused }))
    }

    async fn list_paused_domains(
        &self,
        request: Request<ListPausedDomainsRequest>,
    ) -> Result<Response<ListPausedDomainsResponse>, Status> {
        self.caller(&request)?;
        let pauses = self.state.paused_domains().await.map_err(state_status)?;
        let domains = pauses.into_iter().map(paused_domain).collect();
        Ok(Response::new(ListPausedDomainsResponse { domains }))
    }

    async fn bounce_domain(
        &self,
        request: Request<BounceDomainRequest>,
    ) -> Result<Response<BounceDomainResponse>, Status> {
        let caller = self.caller(&request)?;
        let request = request.into_inner();
        let domain = parse_domain(&request.domain)?;
        let mut reason = check_reason(request.reason)?;
        if reason.trim().is_empty() {
            DEFAULT_BOUNCE_REASON.clone_into(&mut reason);
        }
        let until = match request.duration_seconds {
            0 => SystemTime::now()
                .checked_add(self.hooks.max_age)
                .ok_or_else(|| Status::internal("deliver.max_age is out of range"))?,
            secs => until(secs)?,
        };
        let order = DomainPause {
            domain,
            until: Some(until),
            reason,
            action: PauseAction::Bounce,
        };
        self.set_pause(&caller, order).await?;
        Ok(Response::new(BounceDomainResponse {}))
    }

    async fn init_topics(
        &self,
        request: Request<InitTopicsRequest>,
    ) -> Result<Response<InitTopicsResponse>, Status> {
        let caller = self.caller(&request)?;
        let specs = &self.hooks.topic_specs;
        self.queue
            .ensure_topics(specs)
            .await
            .map_err(queue_status)?;
        tracing::info!(key = %caller.key, topics = specs.len(), "topics ensured");
        let topics = specs
            .iter()
            .map(|spec| TopicInfo {
                name: spec.name.clone(),
                partitions: spec.partitions,
            })
            .collect();
        Ok(Response::new(InitTopicsResponse { topics }))
    }

    async fn message_history(
        &self,
        request: Request<MessageHistoryRequest>,
    ) -> Result<Response<MessageHistoryResponse>, Status> {
        self.caller(&request)?;
        let id: MessageId = request
            .into_inner()
            .message_id
            .trim()
            .parse()
            .map_err(|e| Status::invalid_argument(format!("message_id: {e}")))?;
        let history = self.state.history(id).await.map_err(state_status)?;
        let entries = history.into_iter().map(history_entry).collect();
        Ok(Response::new(MessageHistoryResponse { entries }))
    }
}

// --- conversions and checks ------------------------------------------------------------

fn parse_domain(text: &str) -> Result<Domain, Status> {
    Domain::parse(text.trim()).map_err(|e| Status::invalid_argument(format!("domain: {e}")))
}

fn check_reason(reason: String) -> Result<String, Status> {
    if reason.len() > MAX_REASON {
        return Err(Status::invalid_argument(format!(
            "reason: at most {MAX_REASON} bytes"
        )));
    }
    Ok(reason)
}

/// `duration_seconds` from now.
fn until(secs: u64) -> Result<SystemTime, Status> {
    SystemTime::now()
        .checked_add(Duration::from_secs(secs))
        .ok_or_else(|| Status::invalid_argument("duration_seconds: too large"))
}

/// Lag and topic administration fail only when the queue cannot be reached or refuses.
fn queue_status(error: QueueError) -> Status {
    let code = kurir_core::ErrorCode::QueueUnavailable;
    tracing::warn!(%error, "queue admin call failed");
    Status::new(super::grpc_code(code), format!("{code}: {error}"))
}

fn partition_stats(lag: &PartitionLag) -> PartitionStats {
    PartitionStats {
        topic: lag.topic.clone(),
        partition: lag.partition,
        committed: lag.committed,
        end: lag.end,
        lag: lag.lag(),
    }
}

fn paused_domain(pause: DomainPause) -> PausedDomain {
    PausedDomain {
        domain: pause.domain.to_string(),
        until_unix_ms: pause.until.map_or(0, time_to_unix_ms),
        reason: match pause.action {
            PauseAction::Hold => pause.reason,
            PauseAction::Bounce => format!("{BOUNCE_PREFIX}{}", pause.reason),
        },
    }
}

/// The kind as the proto documents it (the kebab-case names `TrackKind` serialises to).
fn kind_name(kind: TrackKind) -> &'static str {
    match kind {
        TrackKind::Accepted => "accepted",
        TrackKind::Delivered => "delivered",
        TrackKind::Deferred => "deferred",
        TrackKind::Bounced => "bounced",
        TrackKind::Expired => "expired",
        TrackKind::Suppressed => "suppressed",
    }
}

fn history_entry(entry: TrackEntry) -> HistoryEntry {
    HistoryEntry {
        time_unix_ms: time_to_unix_ms(entry.at),
        kind: kind_name(entry.kind).to_owned(),
        recipient: entry.recipient.unwrap_or_default(),
        detail: entry.detail,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind_names_match_the_stored_form() {
        for kind in [
            TrackKind::Accepted,
            TrackKind::Delivered,
            TrackKind::Deferred,
            TrackKind::Bounced,
            TrackKind::Expired,
            TrackKind::Suppressed,
        ] {
            let json = format!("\"{}\"", kind_name(kind));
            assert_eq!(serde_json_kind(&json), Some(kind), "{json}");
        }
    }

    /// `TrackKind` read back from its serialised name, without a JSON dependency here.
    fn serde_json_kind(json: &str) -> Option<TrackKind> {
        use serde::Deserialize;
        use serde::de::IntoDeserializer;
        use serde::de::value::{Error, StrDeserializer};
        let name = json.trim_matches('"');
        let de: StrDeserializer<'_, Error> = name.into_deserializer();
        TrackKind::deserialize(de).ok()
    }

    #[test]
    fn bounce_orders_are_listed_with_a_prefix() {
        let pause = DomainPause {
            domain: Domain::parse("Example.TEST").unwrap(),
            until: None,
            reason: "retired".into(),
            action: PauseAction::Bounce,
        };
        let listed = paused_domain(pause.clone());
        assert_eq!(listed.domain, "example.test");
        assert_eq!(listed.reason, "bounce: retired");
        assert_eq!(listed.until_unix_ms, 0);
        let held = paused_domain(DomainPause {
            action: PauseAction::Hold,
            ..pause
        });
        assert_eq!(held.reason, "retired");
    }

    #[test]
    fn bad_input_names_the_field() {
        assert!(
            parse_domain("")
                .unwrap_err()
                .message()
                .starts_with("domain:")
        );
        let long = check_reason("x".repeat(MAX_REASON + 1)).unwrap_err();
        assert!(long.message().starts_with("reason:"));
        assert!(
            until(u64::MAX)
                .unwrap_err()
                .message()
                .starts_with("duration_seconds:")
        );
    }
}
