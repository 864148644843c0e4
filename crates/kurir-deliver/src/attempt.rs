//! One delivery attempt of one queued record: route, site checks, throttles, a pooled
//! connection (trying the next host on connection trouble), one transaction, and a
//! verdict per recipient.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use kurir_core::{BounceClass, Envelope};
use kurir_proto::Queued;

use crate::client::{
    ClientError, ClientSettings, Connection, Phase, Target, Transaction, TransactionReplies,
    message_size,
};
use crate::config::TlsPolicy;
use crate::engine::Inner;
use crate::pool::{ConnKind, Lease, Site};
use crate::reply::RemoteReply;
use crate::route::{Route, RouteError};

/// What happened to one recipient in an attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verdict {
    Delivered(RemoteReply),
    Deferred {
        reply: Option<RemoteReply>,
        reason: String,
    },
    Bounced {
        class: BounceClass,
        reply: Option<RemoteReply>,
        reason: String,
    },
}

impl Verdict {
    fn deferred(reason: impl Into<String>) -> Self {
        Self::Deferred {
            reply: None,
            reason: reason.into(),
        }
    }
}

/// The attempt's verdicts (one per recipient of the attempted envelope) and where it went.
#[derive(Debug)]
pub(crate) struct Report {
    pub(crate) verdicts: Vec<Verdict>,
    pub(crate) mx_host: String,
    pub(crate) tls_version: Option<&'static str>,
    pub(crate) started: Instant,
}

impl Report {
    /// Every recipient gets `verdict`; no connection was made.
    fn all(n: usize, verdict: Verdict, started: Instant) -> Self {
        Self {
            verdicts: vec![verdict; n],
            mx_host: String::new(),
            tls_version: None,
            started,
        }
    }

    /// The verdicts of an attempt over `conn`.
    fn over(conn: &Connection, verdicts: Vec<Verdict>, started: Instant) -> Self {
        Self {
            verdicts,
            mx_host: conn.target().host.clone(),
            tls_version: conn.tls_version(),
            started,
        }
    }
}

fn verdict_for(inner: &Inner, reply: &RemoteReply) -> Verdict {
    if reply.is_positive() {
        Verdict::Delivered(reply.clone())
    } else if reply.is_permanent() {
        Verdict::Bounced {
            class: inner.classifier.classify(reply),
            reply: Some(reply.clone()),
            reason: reply.to_string(),
        }
    } else {
        Verdict::Deferred {
            reply: Some(reply.clone()),
            reason: reply.to_string(),
        }
    }
}

fn verdicts_from(inner: &Inner, replies: &TransactionReplies, n: usize) -> Vec<Verdict> {
    match replies {
        TransactionReplies::MailRefused(reply) => vec![verdict_for(inner, reply); n],
        TransactionReplies::Sent { rcpts, data } => (0..n)
            .map(|i| match rcpts.get(i) {
                Some(r) if r.is_positive() => match data {
                    Some(d) => verdict_for(inner, d),
                    None => Verdict::deferred("no reply after the data"),
                },
                Some(r) => verdict_for(inner, r),
                None => Verdict::deferred("no RCPT reply"),
            })
            .collect(),
    }
}

/// Delivers `envelope` (the recipients to attempt) of `message`.
pub(crate) async fn attempt(inner: &Arc<Inner>, message: &Queued, envelope: &Envelope) -> Report {
    let started = Instant::now();
    let n = envelope.recipients.len();
    let domain = message.routing_key.domain();
    let route = match inner.router.route(domain).await {
        Ok(route) => route,
        Err(e) => {
            let verdict = if e.is_permanent() {
                let class = match e {
                    RouteError::NullMx(_) | RouteError::NoSuchDomain(_) => BounceClass::BadDomain,
                    _ => BounceClass::Routing,
                };
                Verdict::Bounced {
                    class,
                    reply: None,
                    reason: e.to_string(),
                }
            } else {
                Verdict::deferred(e.to_string())
            };
            return Report::all(n, verdict, started);
        }
    };
    let site = inner.sites.get(&route.site);
    if let Some(down) = site.down() {
        let reason = format!("site {} is down: {}", site.key, down.reason);
        return Report::all(n, Verdict::deferred(reason), started);
    }

    let policy = inner.config.policy_for(domain.as_str());
    let tls = route
        .smarthost
        .as_ref()
        .map(|s| s.tls)
        .or(policy.and_then(|p| p.tls))
        .unwrap_or(inner.config.tls.policy);
    let kind = ConnKind {
        pool: inner
            .egress
            .pool_key(policy.and_then(|p| p.source_pool.as_deref())),
        tls,
    };

    // Per-domain limits (within the site's): one slot for the whole transaction.
    let domain_throttle = inner.domain_throttle(domain.as_str());
    let _domain_slot = match &domain_throttle {
        Some(t) => {
            let slot = t.acquire().await;
            t.until_ready().await;
            Some(slot)
        }
        None => None,
    };
    site.throttle.until_ready().await;

    let body = &message.body;
    let tx = Transaction {
        envelope,
        body,
        chunking: policy.and_then(|p| p.chunking).unwrap_or(true),
    };
    let mut errors: Vec<String> = Vec::new();
    for host in &route.hosts {
        for addr in &host.addrs {
            // After a reused connection turned out closed, the retry opens a new one: the
            // other idle connections to this host likely died with it (a restarted or
            // idle-closing receiver), and trying each would defer the message.
            let mut fresh = false;
            loop {
                let (lease, to_close) = site.lease(&kind, fresh).await;
                if let Some(old) = to_close {
                    old.quit().await;
                }
                let (mut conn, slot, reused) = match lease {
                    Lease::Reused(conn, slot) => (*conn, slot, true),
                    Lease::Fresh(slot) => {
                        match connect(inner, &route, &kind, tls, &host.name, *addr).await {
                            Ok(conn) => (conn, slot, false),
                            Err(e) => {
                                drop(slot);
                                note_connect_failure(inner, &site, &e);
                                errors.push(format!("{} [{}]: {e}", host.name, addr));
                                break;
                            }
                        }
                    }
                };
                inner
                    .metrics
                    .connection(if reused { "reused" } else { "opened" });
                if let Some(verdict) = refuse_before_sending(&conn, envelope, message_size(body)) {
                    let report = Report::over(&conn, vec![verdict; n], started);
                    give_back(inner, &site, conn, slot, kind, false).await;
                    return report;
                }
                match conn.send(&tx).await {
                    Ok(replies) => {
                        note_replies(inner, &site, &replies);
                        let report =
                            Report::over(&conn, verdicts_from(inner, &replies, n), started);
                        give_back(inner, &site, conn, slot, kind, needs_reset(&replies)).await;
                        return report;
                    }
                    Err(e) if reused && is_stale(&e) => {
                        // The receiver closed the idle connection: open a new one.
                        fresh = true;
                        close_later(conn, slot);
                        continue;
                    }
                    Err(e) => {
                        if let Some(reply) = e.reply()
                            && reply.is_rate_limit()
                        {
                            slow_down(inner, &site, &reply.to_string());
                        }
                        // The connection broke mid-transaction (IO, timeout, 421): what
                        // the receiver kept is unknown, so every recipient is deferred.
                        let verdict = Verdict::Deferred {
                            reply: e.reply().cloned(),
                            reason: e.to_string(),
                        };
                        let report = Report::over(&conn, vec![verdict; n], started);
                        close_later(conn, slot);
                        return report;
                    }
                }
            }
        }
    }
    // No host could be reached.
    let reason = if errors.is_empty() {
        "no host to connect to".to_owned()
    } else {
        errors.join("; ")
    };
    site.mark_down(Instant::now() + inner.config.site_down_hold, reason.clone());
    tracing::warn!(site = %site.key, %reason, "site down: every host failed");
    Report::all(n, Verdict::deferred(reason), started)
}

async fn connect(
    inner: &Inner,
    route: &Route,
    kind: &ConnKind,
    tls: TlsPolicy,
    host: &str,
    addr: SocketAddr,
) -> Result<Connection, ClientError> {
    let source = inner.egress.choose(&kind.pool);
    let settings = ClientSettings {
        ehlo: source.ehlo.clone(),
        source: source.address,
        tls,
        tls_roots: inner.tls_roots.clone(),
        auth: route.smarthost.as_ref().and_then(|s| s.auth.clone()),
        timeouts: inner.config.timeouts,
    };
    let target = Target {
        host: host.to_owned(),
        addr,
    };
    Connection::connect(&target, &settings).await
}

/// What the receiver said before any message is sent that decides the message: SIZE too
/// small, SMTPUTF8 needed but not offered.
fn refuse_before_sending(conn: &Connection, envelope: &Envelope, len: usize) -> Option<Verdict> {
    let caps = conn.capabilities();
    if let Some(limit) = caps.size
        && limit > 0
        && len as u64 > limit
    {
        let reply = RemoteReply::new(
            552,
            Some("5.3.4"),
            format!(
                "message of {len} bytes exceeds the fixed limit of {limit} bytes of {}",
                conn.target().host
            ),
        );
        return Some(Verdict::Bounced {
            class: BounceClass::TooLarge,
            reason: reply.to_string(),
            reply: Some(reply),
        });
    }
    if envelope.needs_smtputf8() && !caps.smtputf8 {
        let reply = RemoteReply::new(
            553,
            Some("5.6.7"),
            format!(
                "the message needs SMTPUTF8 (internationalised addresses) and {} does not offer it",
                conn.target().host
            ),
        );
        return Some(Verdict::Bounced {
            class: BounceClass::Protocol,
            reason: reply.to_string(),
            reply: Some(reply),
        });
    }
    None
}

fn is_stale(e: &ClientError) -> bool {
    match e {
        ClientError::Io { phase, .. } | ClientError::Protocol { phase, .. } => {
            *phase == Phase::Mail
        }
        ClientError::Rejected { phase, reply } => *phase == Phase::Mail && reply.code == 421,
        _ => false,
    }
}

fn note_connect_failure(inner: &Inner, site: &Site, e: &ClientError) {
    inner.metrics.connection("failed");
    let refused = matches!(e, ClientError::Connect { source, .. }
        if source.kind() == std::io::ErrorKind::ConnectionRefused);
    let rate = e.reply().is_some_and(RemoteReply::is_rate_limit);
    if refused || rate {
        slow_down(inner, site, &e.to_string());
    }
}

fn note_replies(inner: &Inner, site: &Site, replies: &TransactionReplies) {
    let limited = match replies {
        TransactionReplies::MailRefused(r) => r.is_rate_limit().then_some(r),
        TransactionReplies::Sent { rcpts, data } => {
            rcpts.iter().chain(data.iter()).find(|r| r.is_rate_limit())
        }
    };
    match limited {
        Some(reply) => slow_down(inner, site, &reply.to_string()),
        None => site.throttle.on_success(),
    }
}

fn slow_down(inner: &Inner, site: &Site, reason: &str) {
    if site.throttle.slow_down(reason) {
        inner.metrics.slow_down();
        let s = site.throttle.snapshot();
        tracing::warn!(site = %site.key, limit = s.limit, rate = s.rate, %reason,
            "site asked us to slow down: connection limit and rate lowered");
    }
}

/// Whether a transaction left state on the server that must be cleared before the next
/// one. A transaction that ended with a positive reply after the data is finished (RFC 5321
/// §4.1.1.4: the end of data clears the buffers), and a refused MAIL opened none; anything
/// else (no recipient accepted, DATA refused, a failed data reply) is reset to be safe.
/// Skipping the RSET after each delivered message saves a round trip per message.
fn needs_reset(replies: &TransactionReplies) -> bool {
    match replies {
        TransactionReplies::MailRefused(_) => false,
        TransactionReplies::Sent { data, .. } => !data.as_ref().is_some_and(|d| d.is_positive()),
    }
}

async fn give_back(
    inner: &Inner,
    site: &Site,
    mut conn: Connection,
    slot: crate::throttle::Slot,
    kind: ConnKind,
    reset: bool,
) {
    let max = inner.config.pool.max_messages_per_connection;
    if reset && conn.is_usable() && conn.transactions() < max && conn.reset().await.is_err() {
        close_later(conn, slot);
        return;
    }
    if let Some((conn, slot)) = site.give_back(conn, slot, kind, max) {
        close_later(conn, slot);
    }
}

/// QUITs a connection in the background (bounded by the quit timeout), then frees its
/// slot.
pub(crate) fn close_later(conn: Connection, slot: crate::throttle::Slot) {
    tokio::spawn(async move {
        conn.quit().await;
        drop(slot);
    });
}
