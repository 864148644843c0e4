//! `SuppressionService` (`proto/kurir/v1/suppression.proto`) over [`kurir_state::State`].
//!
//! A key acts on its own tenant's list; the global list needs a key that may also call the
//! admin service. Requests are checked before the store is touched: at most
//! [`MAX_PER_CALL`] entries or addresses, page sizes 1 to [`MAX_PAGE`], every address
//! parsed. A refusal is INVALID_ARGUMENT naming the field (`entries[3].address`,
//! `addresses[0]`, `limit`); store failures map through [`kurir_core::ErrorCode`].
//!
//! Import and export stream without holding a list in memory: import stores every
//! [`IMPORT_BATCH`] entries read; export reads pages of [`EXPORT_PAGE`] entries in a task
//! that feeds the response through a channel of [`EXPORT_BUFFER`], so a slow client holds
//! at most one page and the buffer.

use super::request::invalid;
use std::fmt;
use std::sync::Arc;
use std::time::SystemTime;

use kurir_core::Address;
use kurir_proto::convert::{time_from_unix_ms, time_to_unix_ms};
use kurir_proto::v1::suppression_service_server::SuppressionService;
use kurir_proto::v1::{
    self, AddSuppressionsRequest, AddSuppressionsResponse, CheckSuppressionsRequest,
    CheckSuppressionsResponse, ExportSuppressionsRequest, ImportSuppressionsResponse,
    ListSuppressionsRequest, ListSuppressionsResponse, RemoveSuppressionsRequest,
    RemoveSuppressionsResponse, SuppressionCheck, SuppressionReason, SuppressionScope,
};
use kurir_state::{Page, Reason, Scope, State, Suppression};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::auth::{Authenticator, Caller};
use super::config::ApiService;
use super::state_status;

/// Entries (Add) or addresses (Remove, Check) per call.
pub const MAX_PER_CALL: usize = 1_000;
/// The largest page List returns, and the size of a page when the request says 0.
pub const MAX_PAGE: u32 = 1_000;
pub const DEFAULT_PAGE: u32 = 100;
/// The longest `source`, in bytes.
pub const MAX_SOURCE: usize = 512;
/// Entries stored per `State::suppress` call during an import.
pub const IMPORT_BATCH: usize = 500;
/// Entries read per page during an export.
pub const EXPORT_PAGE: usize = 500;
/// Entries an export buffers ahead of the client.
pub const EXPORT_BUFFER: usize = 128;

/// The suppression service.
pub struct SuppressionApi<S> {
    state: S,
    auth: Arc<Authenticator>,
}

impl<S> fmt::Debug for SuppressionApi<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SuppressionApi").finish_non_exhaustive()
    }
}

impl<S: State + Clone> SuppressionApi<S> {
    pub fn new(state: S, auth: Arc<Authenticator>) -> Self {
        Self { state, auth }
    }

    fn caller<T>(&self, request: &Request<T>) -> Result<Caller, Status> {
        self.auth
            .authorize(request.metadata(), ApiService::Suppression)
    }
}

#[tonic::async_trait]
impl<S: State + Clone> SuppressionService for SuppressionApi<S> {
    async fn add(
        &self,
        request: Request<AddSuppressionsRequest>,
    ) -> Result<Response<AddSuppressionsResponse>, Status> {
        let caller = self.caller(&request)?;
        let entries = request.into_inner().entries;
        check_count("entries", entries.len())?;
        let now = SystemTime::now();
        let entries = entries
            .iter()
            .enumerate()
            .map(|(i, e)| entry_from_proto(&caller, i, e, now))
            .collect::<Result<Vec<_>, _>>()?;
        self.state.suppress(&entries).await.map_err(state_status)?;
        Ok(Response::new(AddSuppressionsResponse {
            added: entries.len() as u64,
        }))
    }

    async fn remove(
        &self,
        request: Request<RemoveSuppressionsRequest>,
    ) -> Result<Response<RemoveSuppressionsResponse>, Status> {
        let caller = self.caller(&request)?;
        let request = request.into_inner();
        let scope = scope_for(&caller, request.scope, "scope")?;
        let addresses = parse_addresses(&request.addresses)?;
        let removed = self
            .state
            .unsuppress(&scope, &addresses)
            .await
            .map_err(state_status)?;
        Ok(Response::new(RemoveSuppressionsResponse { removed }))
    }

    async fn check(
        &self,
        request: Request<CheckSuppressionsRequest>,
    ) -> Result<Response<CheckSuppressionsResponse>, Status> {
        let caller = self.caller(&request)?;
        let requested = request.into_inner().addresses;
        let addresses = parse_addresses(&requested)?;
        let found = self
            .state
            .check_suppressed(&caller.tenant, &addresses)
            .await
            .map_err(state_status)?;
        let results = requested
            .into_iter()
            .zip(found)
            .map(|(address, entry)| SuppressionCheck {
                address,
                entry: entry.as_ref().map(entry_to_proto),
            })
            .collect();
        Ok(Response::new(CheckSuppressionsResponse { results }))
    }

    async fn list(
        &self,
        request: Request<ListSuppressionsRequest>,
    ) -> Result<Response<ListSuppressionsResponse>, Status> {
        let caller = self.caller(&request)?;
        let request = request.into_inner();
        let scope = scope_for(&caller, request.scope, "scope")?;
        let limit = page_size(request.limit)?;
        let page = self
            .state
            .list_suppressions(&scope, &request.cursor, limit)
            .await
            .map_err(state_status)?;
        Ok(Response::new(ListSuppressionsResponse {
            entries: page.items.iter().map(entry_to_proto).collect(),
            next_cursor: page.next.unwrap_or_default(),
        }))
    }

    async fn import(
        &self,
        request: Request<Streaming<v1::Suppression>>,
    ) -> Result<Response<ImportSuppressionsResponse>, Status> {
        let caller = self.caller(&request)?;
        let mut stream = request.into_inner();
        let mut import = Import::default();
        while let Some(entry) = stream.message().await? {
            let entry = entry_from_proto(&caller, import.read, &entry, SystemTime::now())
                .map_err(|status| import.failed(status))?;
            import.read += 1;
            import.batch.push(entry);
            if import.batch.len() >= IMPORT_BATCH {
                import.flush(&self.state).await?;
            }
        }
        import.flush(&self.state).await?;
        tracing::info!(
            key = %caller.key,
            read = import.read,
            stored = import.stored,
            "suppressions imported"
        );
        Ok(Response::new(ImportSuppressionsResponse {
            read: import.read as u64,
            stored: import.stored,
        }))
    }

    type ExportStream = ReceiverStream<Result<v1::Suppression, Status>>;

    async fn export(
        &self,
        request: Request<ExportSuppressionsRequest>,
    ) -> Result<Response<Self::ExportStream>, Status> {
        let caller = self.caller(&request)?;
        let scope = scope_for(&caller, request.into_inner().scope, "scope")?;
        // The first page is read here, so an unavailable store or an unknown tenant is the
        // call's status rather than an error inside the stream.
        let first = self
            .state
            .list_suppressions(&scope, "", EXPORT_PAGE)
            .await
            .map_err(state_status)?;
        let (tx, rx) = mpsc::channel(EXPORT_BUFFER);
        tokio::spawn(export_rest(self.state.clone(), scope, first, tx));
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

/// An import in progress.
#[derive(Default)]
struct Import {
    /// Entries read (and accepted) so far; the index of the next one.
    read: usize,
    stored: u64,
    batch: Vec<Suppression>,
}

impl Import {
    async fn flush<S: State>(&mut self, state: &S) -> Result<(), Status> {
        if self.batch.is_empty() {
            return Ok(());
        }
        if let Err(error) = state.suppress(&self.batch).await {
            return Err(self.failed(state_status(error)));
        }
        self.stored += self.batch.len() as u64;
        self.batch.clear();
        Ok(())
    }

    /// `status` with how much of the import was stored before it failed (the batches
    /// already written stay).
    fn failed(&self, status: Status) -> Status {
        Status::new(
            status.code(),
            format!(
                "{} ({} earlier entries were stored)",
                status.message(),
                self.stored
            ),
        )
    }
}

/// Sends `first` and the pages after it; stops early when the client goes away.
async fn export_rest<S: State>(
    state: S,
    scope: Scope,
    first: Page<Suppression>,
    tx: mpsc::Sender<Result<v1::Suppression, Status>>,
) {
    let mut page = first;
    loop {
        for entry in &page.items {
            if tx.send(Ok(entry_to_proto(entry))).await.is_err() {
                return;
            }
        }
        let Some(cursor) = page.next else { return };
        page = match state.list_suppressions(&scope, &cursor, EXPORT_PAGE).await {
            Ok(next) => next,
            Err(error) => {
                let _ = tx.send(Err(state_status(error))).await;
                return;
            }
        };
    }
}

// --- conversions and checks ------------------------------------------------------------

fn check_count(field: &str, n: usize) -> Result<(), Status> {
    if n > MAX_PER_CALL {
        return Err(invalid(
            field,
            format!("at most {MAX_PER_CALL} per call, got {n}"),
        ));
    }
    Ok(())
}

fn page_size(limit: u32) -> Result<usize, Status> {
    match limit {
        0 => Ok(DEFAULT_PAGE as usize),
        1..=MAX_PAGE => Ok(limit as usize),
        _ => Err(invalid("limit", format!("must be 0 to {MAX_PAGE}"))),
    }
}

fn parse_addresses(addresses: &[String]) -> Result<Vec<Address>, Status> {
    check_count("addresses", addresses.len())?;
    addresses
        .iter()
        .enumerate()
        .map(|(i, a)| Address::parse(a).map_err(|e| invalid(format!("addresses[{i}]"), e)))
        .collect()
}

/// The list a request names: the caller's tenant, or the global one for admin keys.
fn scope_for(caller: &Caller, scope: i32, field: &str) -> Result<Scope, Status> {
    match SuppressionScope::try_from(scope) {
        Ok(SuppressionScope::Unspecified) => Ok(Scope::Tenant(caller.tenant.clone())),
        Ok(SuppressionScope::Global) if caller.admin => Ok(Scope::Global),
        Ok(SuppressionScope::Global) => Err(Status::permission_denied(
            "the global suppression list needs a key with the admin service",
        )),
        Err(_) => Err(invalid(field, format!("unknown scope {scope}"))),
    }
}

/// Entry `i` of an Add request or an Import stream, checked.
fn entry_from_proto(
    caller: &Caller,
    i: usize,
    entry: &v1::Suppression,
    now: SystemTime,
) -> Result<Suppression, Status> {
    let field = |name: &str| format!("entries[{i}].{name}");
    let scope = scope_for(caller, entry.scope, &field("scope"))?;
    suppression_from_proto(entry, scope, now, field)
}

/// An entry of the API as the state's, in `scope`, checked; `field` names a field in
/// errors, and an entry without a creation time is dated `now`.
pub fn suppression_from_proto(
    entry: &v1::Suppression,
    scope: Scope,
    now: SystemTime,
    field: impl Fn(&str) -> String,
) -> Result<Suppression, Status> {
    let address = Address::parse(&entry.address).map_err(|e| invalid(field("address"), e))?;
    let reason = reason_from_proto(entry.reason)
        .ok_or_else(|| invalid(field("reason"), format!("unknown reason {}", entry.reason)))?;
    if entry.source.len() > MAX_SOURCE {
        return Err(invalid(
            field("source"),
            format!("at most {MAX_SOURCE} bytes"),
        ));
    }
    let created = match entry.created_unix_ms {
        0 => now,
        ms => time(ms, &field("created_unix_ms"))?,
    };
    let expires = match entry.expires_unix_ms {
        0 => None,
        ms => Some(time(ms, &field("expires_unix_ms"))?),
    };
    Ok(Suppression {
        scope,
        address,
        reason,
        source: entry.source.clone(),
        created,
        expires,
    })
}

fn time(ms: i64, field: &str) -> Result<SystemTime, Status> {
    if ms < 0 {
        return Err(invalid(field, "must not be before 1970"));
    }
    time_from_unix_ms(field, ms).map_err(|e| invalid(field, e))
}

/// A proto reason as the state's; `None` for a value this build does not know.
fn reason_from_proto(reason: i32) -> Option<Reason> {
    Some(match SuppressionReason::try_from(reason).ok()? {
        SuppressionReason::HardBounce => Reason::HardBounce,
        SuppressionReason::SoftBounces => Reason::SoftBounces,
        SuppressionReason::Complaint => Reason::Complaint,
        SuppressionReason::Unsubscribe => Reason::Unsubscribe,
        SuppressionReason::Unspecified | SuppressionReason::Manual => Reason::Manual,
    })
}

fn reason_to_proto(reason: Reason) -> SuppressionReason {
    match reason {
        Reason::HardBounce => SuppressionReason::HardBounce,
        Reason::SoftBounces => SuppressionReason::SoftBounces,
        Reason::Complaint => SuppressionReason::Complaint,
        Reason::Unsubscribe => SuppressionReason::Unsubscribe,
        Reason::Manual => SuppressionReason::Manual,
    }
}

/// An entry as the API carries it (a tenant's entry as `Unspecified`: the key names the tenant).
pub fn entry_to_proto(entry: &Suppression) -> v1::Suppression {
    v1::Suppression {
        address: entry.address.to_string(),
        scope: match entry.scope {
            Scope::Global => SuppressionScope::Global,
            Scope::Tenant(_) => SuppressionScope::Unspecified,
        }
        .into(),
        reason: reason_to_proto(entry.reason).into(),
        source: entry.source.clone(),
        created_unix_ms: time_to_unix_ms(entry.created),
        expires_unix_ms: entry.expires.map_or(0, time_to_unix_ms),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kurir_state::Tenant;

    fn caller(admin: bool) -> Caller {
        Caller {
            key: "k".into(),
            tenant: Tenant::new("acme").unwrap(),
            admin,
        }
    }

    fn proto(address: &str) -> v1::Suppression {
        v1::Suppression {
            address: address.into(),
            ..Default::default()
        }
    }

    #[test]
    fn entries_take_defaults_and_name_bad_fields() {
        let now = SystemTime::now();
        let e = entry_from_proto(&caller(false), 0, &proto("A@Example.TEST"), now).unwrap();
        assert_eq!(e.address.to_string(), "A@example.test");
        assert_eq!(e.scope, Scope::Tenant(Tenant::new("acme").unwrap()));
        assert_eq!(
            (e.reason, e.created, e.expires),
            (Reason::Manual, now, None)
        );

        let bad = entry_from_proto(&caller(false), 7, &proto("nope"), now).unwrap_err();
        assert_eq!(bad.code(), tonic::Code::InvalidArgument);
        assert!(bad.message().starts_with("entries[7].address:"), "{bad:?}");

        let mut long = proto("a@b.test");
        long.source = "x".repeat(MAX_SOURCE + 1);
        let bad = entry_from_proto(&caller(false), 1, &long, now).unwrap_err();
        assert!(bad.message().starts_with("entries[1].source:"), "{bad:?}");

        let mut global = proto("a@b.test");
        global.scope = SuppressionScope::Global.into();
        let denied = entry_from_proto(&caller(false), 0, &global, now).unwrap_err();
        assert_eq!(denied.code(), tonic::Code::PermissionDenied);
        let e = entry_from_proto(&caller(true), 0, &global, now).unwrap();
        assert_eq!(e.scope, Scope::Global);
    }

    #[test]
    fn entries_round_trip_through_proto_to_the_millisecond() {
        let mut p = proto("a@b.test");
        p.reason = SuppressionReason::Complaint.into();
        p.source = "fbl".into();
        p.created_unix_ms = 1_700_000_000_123;
        p.expires_unix_ms = 1_800_000_000_456;
        let e = entry_from_proto(&caller(false), 0, &p, SystemTime::now()).unwrap();
        assert_eq!(entry_to_proto(&e), p);
    }

    #[test]
    fn page_sizes_default_to_100_and_stop_at_1000() {
        assert_eq!(page_size(0).unwrap(), 100);
        assert_eq!(page_size(1000).unwrap(), 1000);
        let bad = page_size(1001).unwrap_err();
        assert!(bad.message().starts_with("limit:"), "{bad:?}");
    }
}
