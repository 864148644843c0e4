//! [`DnsServer`]: an in-process authoritative DNS server on one loopback port (UDP and TCP)
//! whose zone a test changes at any time, including names that fail on purpose.
//!
//! It is authoritative for every name it is asked about and never forwards: a name the test
//! did not set is NXDOMAIN, so a resolver pointed here can never reach real DNS by accident.
//! The zone lives behind a lock shared with the request handler, which is why this is a
//! hand-written [`RequestHandler`] rather than hickory's static catalog.

use std::collections::HashMap;
use std::future::Future;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use anyhow::Context as _;
use hickory_proto::op::{Edns, Header, HeaderCounts, LowerQuery, Metadata, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, MX, SOA, TXT};
use hickory_proto::rr::{LowerName, Name, RData, Record, RecordType};
use hickory_server::Server;
use hickory_server::net::runtime::Time;
use hickory_server::net::xfer::Protocol;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;
use tokio::net::{TcpListener, UdpSocket};

/// TTL of records whose name had no [`DnsServer::set_ttl`]. Long enough that a caching
/// resolver keeps answers for the length of a test, so "asked only once" is observable.
pub const DEFAULT_TTL: u32 = 60;

/// How often [`DnsServer::start`] picks a new port when TCP cannot bind the port UDP got.
const BIND_ATTEMPTS: usize = 20;

/// Idle time after which the server closes a client's TCP connection.
const TCP_IDLE_TIMEOUT: Duration = Duration::from_secs(10);

/// Responses queued per TCP connection before the server waits for the client to read.
const TCP_RESPONSE_BUFFER: usize = 32;

/// How queries for a name fail, set with [`DnsServer::fail`]. A failure overrides the records
/// of the name until [`DnsServer::clear_failure`] or [`DnsServer::remove`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// Answer SERVFAIL: a temporary failure a sender must defer on.
    ServFail,
    /// Answer NXDOMAIN even if the name has records: the domain does not exist.
    NxDomain,
    /// Answer REFUSED, as a server that is not authoritative for the name would.
    Refused,
    /// Never answer: the query is dropped, so the client's own timeout decides.
    Timeout,
}

/// An authoritative DNS server on `127.0.0.1`, serving UDP and TCP on the same port. Every
/// setter takes `&self` and applies to the next query. Stops when dropped.
///
/// Names are case-insensitive and may omit the final dot. A method given an invalid name
/// panics: that is a bug in the test, not a condition to handle.
pub struct DnsServer {
    addr: SocketAddr,
    /// Shared with the request handler; every query locks it once, briefly.
    state: Arc<Mutex<State>>,
    /// Owns the serving tasks: dropping it aborts them.
    server: Server<ZoneHandler>,
}

impl std::fmt::Debug for DnsServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DnsServer")
            .field("addr", &self.addr)
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

impl DnsServer {
    /// Binds UDP and TCP on one free loopback port and starts serving an empty zone. It is
    /// ready when this returns: both sockets are bound, so the kernel queues any query until
    /// the serving tasks read it.
    pub async fn start() -> anyhow::Result<Self> {
        let (udp, tcp) = bind_udp_and_tcp().await?;
        let addr = udp
            .local_addr()
            .context("local address of DNS UDP socket")?;
        let state = Arc::new(Mutex::new(State::new()));
        let mut server = Server::new(ZoneHandler {
            state: Arc::clone(&state),
        });
        server.register_socket(udp);
        server.register_listener(tcp, TCP_IDLE_TIMEOUT, TCP_RESPONSE_BUFFER);
        tracing::debug!(%addr, "test DNS server started");
        Ok(Self {
            addr,
            state,
            server,
        })
    }

    /// The address to configure as the only name server, for UDP and TCP alike.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Adds an MX record.
    pub fn add_mx(&self, name: &str, preference: u16, exchange: &str) {
        let exchange = parse_name(exchange);
        self.add(name, RData::MX(MX::new(preference, exchange)));
    }

    /// Replaces the MX records of `name` by the RFC 7505 null MX (preference 0, exchange
    /// "."), which says the domain accepts no mail. Other record types stay.
    pub fn set_null_mx(&self, name: &str) {
        let mut state = self.lock();
        let entry = state.zone.entry(parse_lower(name)).or_default();
        entry
            .data
            .retain(|data| data.record_type() != RecordType::MX);
        entry.data.push(RData::MX(MX::new(0, Name::root())));
    }

    /// Adds an A record.
    pub fn add_a(&self, name: &str, ip: Ipv4Addr) {
        self.add(name, RData::A(A(ip)));
    }

    /// Adds an AAAA record.
    pub fn add_aaaa(&self, name: &str, ip: Ipv6Addr) {
        self.add(name, RData::AAAA(AAAA(ip)));
    }

    /// Adds a TXT record holding `text` as a single string.
    pub fn add_txt(&self, name: &str, text: &str) {
        self.add(name, RData::TXT(TXT::new(vec![text.to_owned()])));
    }

    /// Sets the TTL of all records of `name`, present and future ([`DEFAULT_TTL`] otherwise),
    /// so tests can check that a resolver caches for as long as it may and no longer.
    pub fn set_ttl(&self, name: &str, secs: u32) {
        self.lock().zone.entry(parse_lower(name)).or_default().ttl = secs;
    }

    /// Sets the negative-caching TTL (the SOA sent with NXDOMAIN and NODATA answers). It is 0
    /// by default, so a name a test adds later is not hidden by a cached "does not exist".
    pub fn set_negative_ttl(&self, secs: u32) {
        self.lock().negative_ttl = secs;
    }

    /// Makes queries for `name` fail as `failure` says, whatever records it has.
    pub fn fail(&self, name: &str, failure: Failure) {
        self.lock().failures.insert(parse_lower(name), failure);
    }

    /// Undoes [`DnsServer::fail`]: `name` is answered from its records again.
    pub fn clear_failure(&self, name: &str) {
        self.lock().failures.remove(&parse_lower(name));
    }

    /// Removes the records, TTL and failure of `name`. Query counts are kept.
    pub fn remove(&self, name: &str) {
        let name = parse_lower(name);
        let mut state = self.lock();
        state.zone.remove(&name);
        state.failures.remove(&name);
    }

    /// Empties the zone and all failures. Query counts are kept: they are history.
    pub fn clear(&self) {
        let mut state = self.lock();
        state.zone.clear();
        state.failures.clear();
    }

    /// How many queries (any type, any transport, answered or not) asked about `name`.
    pub fn query_count(&self, name: &str) -> usize {
        let name = parse_lower(name);
        self.lock().queries.get(&name).copied().unwrap_or(0)
    }

    /// How many queries arrived in total.
    pub fn total_queries(&self) -> usize {
        self.lock().total_queries
    }

    /// How many queries arrived over TCP, to check that a client really used TCP.
    pub fn tcp_queries(&self) -> usize {
        self.lock().tcp_queries
    }

    fn add(&self, name: &str, data: RData) {
        let name = parse_lower(name);
        self.lock().zone.entry(name).or_default().data.push(data);
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        // Stops the accept loops; dropping `server` right after aborts every task it spawned.
        self.server.shutdown_token().cancel();
    }
}

/// Binds UDP on a free port, then TCP on the same port. Another process may hold that TCP
/// port, so on failure it starts over with a new UDP port.
async fn bind_udp_and_tcp() -> anyhow::Result<(UdpSocket, TcpListener)> {
    let mut last_error = None;
    for _ in 0..BIND_ATTEMPTS {
        let udp = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .context("bind DNS UDP socket on 127.0.0.1:0")?;
        let port = udp
            .local_addr()
            .context("local address of DNS UDP socket")?
            .port();
        match TcpListener::bind((Ipv4Addr::LOCALHOST, port)).await {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(error) => last_error = Some(error),
        }
    }
    Err(anyhow::anyhow!(
        "no loopback port free for both UDP and TCP after {BIND_ATTEMPTS} attempts: {last_error:?}"
    ))
}

/// Parses a name as a test writes it ("example.test" or "example.test."), fully qualified.
fn parse_name(name: &str) -> Name {
    let mut parsed =
        Name::from_utf8(name).unwrap_or_else(|error| panic!("invalid DNS name {name:?}: {error}"));
    parsed.set_fqdn(true);
    parsed
}

/// The case-insensitive key of a name in the zone.
fn parse_lower(name: &str) -> LowerName {
    LowerName::new(&parse_name(name))
}

/// Locks the state; a test that panicked while holding it leaves consistent data behind
/// (each setter is one map operation), so poisoning is ignored.
fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The zone, its failures and what was asked.
#[derive(Debug)]
struct State {
    zone: HashMap<LowerName, Entry>,
    failures: HashMap<LowerName, Failure>,
    negative_ttl: u32,
    queries: HashMap<LowerName, usize>,
    total_queries: usize,
    tcp_queries: usize,
}

/// The records of one name. An entry without data (only a TTL) does not make the name exist.
#[derive(Debug)]
struct Entry {
    ttl: u32,
    data: Vec<RData>,
}

impl Default for Entry {
    fn default() -> Self {
        Self {
            ttl: DEFAULT_TTL,
            data: Vec::new(),
        }
    }
}

/// What the handler does with one query, decided under the lock and carried out after it.
#[derive(Debug)]
enum Outcome {
    /// Send nothing ([`Failure::Timeout`]).
    Drop,
    /// Send this response code with these answers and authorities (the SOA of a negative
    /// answer).
    Respond {
        code: ResponseCode,
        answers: Vec<Record>,
        authorities: Vec<Record>,
    },
}

impl State {
    fn new() -> Self {
        Self {
            zone: HashMap::new(),
            failures: HashMap::new(),
            negative_ttl: 0,
            queries: HashMap::new(),
            total_queries: 0,
            tcp_queries: 0,
        }
    }

    /// Counts the query, then decides its answer.
    fn handle(&mut self, query: &LowerQuery, protocol: Protocol) -> Outcome {
        *self.queries.entry(query.name().clone()).or_default() += 1;
        self.total_queries += 1;
        if protocol == Protocol::Tcp {
            self.tcp_queries += 1;
        }
        match self.failures.get(query.name()) {
            Some(Failure::Timeout) => Outcome::Drop,
            Some(Failure::ServFail) => self.error(ResponseCode::ServFail),
            Some(Failure::Refused) => self.error(ResponseCode::Refused),
            Some(Failure::NxDomain) => self.negative(query, ResponseCode::NXDomain),
            None => self.answer(query),
        }
    }

    /// Records of the asked type; NODATA if the name exists without them; else NXDOMAIN.
    fn answer(&self, query: &LowerQuery) -> Outcome {
        let owner = query.original().name();
        let qtype = query.query_type();
        let answers: Vec<Record> = self
            .zone
            .get(query.name())
            .into_iter()
            .flat_map(|entry| entry.data.iter().map(move |data| (entry.ttl, data)))
            .filter(|(_, data)| qtype == RecordType::ANY || data.record_type() == qtype)
            .map(|(ttl, data)| Record::from_rdata(owner.clone(), ttl, data.clone()))
            .collect();
        if !answers.is_empty() {
            Outcome::Respond {
                code: ResponseCode::NoError,
                answers,
                authorities: Vec::new(),
            }
        } else if self.exists(query.name()) {
            self.negative(query, ResponseCode::NoError)
        } else {
            self.negative(query, ResponseCode::NXDomain)
        }
    }

    /// A name exists if it has records, or a name below it has (an empty non-terminal such as
    /// `example.test` when only `mx.example.test` is set must be NODATA, not NXDOMAIN).
    fn exists(&self, name: &LowerName) -> bool {
        self.zone
            .iter()
            .any(|(owner, entry)| !entry.data.is_empty() && name.zone_of(owner))
    }

    fn error(&self, code: ResponseCode) -> Outcome {
        Outcome::Respond {
            code,
            answers: Vec::new(),
            authorities: Vec::new(),
        }
    }

    /// A negative answer carries the SOA of the name's top-level zone, whose minimum is the
    /// negative-caching TTL (RFC 2308).
    fn negative(&self, query: &LowerQuery, code: ResponseCode) -> Outcome {
        let apex = query.original().name().trim_to(1);
        let soa = SOA::new(
            Name::from_ascii("ns.kurir-testkit.test.").expect("valid name"),
            Name::from_ascii("hostmaster.kurir-testkit.test.").expect("valid name"),
            1,
            3600,
            600,
            86400,
            self.negative_ttl,
        );
        Outcome::Respond {
            code,
            answers: Vec::new(),
            authorities: vec![Record::from_rdata(apex, self.negative_ttl, RData::SOA(soa))],
        }
    }
}

/// The hickory request handler: looks the query up in the shared state and answers it.
#[derive(Debug)]
struct ZoneHandler {
    state: Arc<Mutex<State>>,
}

impl ZoneHandler {
    async fn handle<R: ResponseHandler>(&self, request: &Request, responder: R) -> ResponseInfo {
        if request.metadata.op_code != OpCode::Query {
            return respond(request, ResponseCode::NotImp, &[], &[], responder).await;
        }
        let query = match request.request_info() {
            Ok(info) => info.query.clone(),
            Err(_) => return respond(request, ResponseCode::FormErr, &[], &[], responder).await,
        };
        let outcome = lock(&self.state).handle(&query, request.protocol());
        tracing::debug!(name = %query.name(), qtype = %query.query_type(), ?outcome, "test DNS query");
        match outcome {
            Outcome::Drop => unanswered(request),
            Outcome::Respond {
                code,
                answers,
                authorities,
            } => respond(request, code, &answers, &authorities, responder).await,
        }
    }
}

// Written out instead of `#[async_trait]`, which hickory uses to declare the trait: this is the
// signature the macro generates, and it spares the crate a dependency for one impl.
impl RequestHandler for ZoneHandler {
    fn handle_request<'life0, 'life1, 'async_trait, R, T>(
        &'life0 self,
        request: &'life1 Request,
        response_handle: R,
    ) -> Pin<Box<dyn Future<Output = ResponseInfo> + Send + 'async_trait>>
    where
        R: 'async_trait + ResponseHandler,
        T: 'async_trait + Time,
        'life0: 'async_trait,
        'life1: 'async_trait,
        Self: 'async_trait,
    {
        Box::pin(self.handle(request, response_handle))
    }
}

/// Sends an authoritative response. EDNS is echoed when the query used it, so that UDP
/// answers may exceed 512 bytes as they would from a real server.
async fn respond<R: ResponseHandler>(
    request: &Request,
    code: ResponseCode,
    answers: &[Record],
    authorities: &[Record],
    mut responder: R,
) -> ResponseInfo {
    let edns = request.edns.as_ref().map(|asked| {
        let mut edns = Edns::new();
        edns.set_max_payload(asked.max_payload().max(512));
        edns.set_version(0);
        edns
    });
    let mut metadata = Metadata::response_from_request(&request.metadata);
    metadata.authoritative = true;
    metadata.response_code = code;
    let response = MessageResponseBuilder::new(&request.queries, edns.as_ref()).build(
        metadata,
        answers,
        authorities,
        [],
        [],
    );
    match responder.send_response(response).await {
        Ok(info) => info,
        Err(error) => {
            tracing::warn!(%error, "test DNS server could not send a response");
            unanswered(request)
        }
    }
}

/// What the server reports for a query it did not answer.
fn unanswered(request: &Request) -> ResponseInfo {
    let mut metadata = Metadata::response_from_request(&request.metadata);
    metadata.response_code = ResponseCode::ServFail;
    ResponseInfo::from(Header {
        metadata,
        counts: HeaderCounts::default(),
    })
}
