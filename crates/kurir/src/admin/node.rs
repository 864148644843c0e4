//! `kurir admin queue stats | domain … | message | topics init` over `AdminService`.

use std::io::Write;

use kurir_proto::v1::{
    BounceDomainRequest, InitTopicsRequest, ListPausedDomainsRequest, MessageHistoryRequest,
    PartitionStats, PauseDomainRequest, QueueStatsRequest, ResumeDomainRequest, SiteStats,
};
use serde_json::json;

use super::AdminError;
use super::client::{Api, call};
use super::output::{Table, from_now, json, or_dash, time};
use crate::cli::DomainCommand;

/// `queue stats`: the delivery group's lag per partition, then the sites.
pub(crate) async fn queue_stats(
    api: &Api,
    as_json: bool,
    out: &mut dyn Write,
) -> Result<(), AdminError> {
    let stats = call(api.admin().queue_stats(QueueStatsRequest {})).await?;
    if as_json {
        let partitions = stats.partitions.iter().map(partition_json).collect();
        let sites = stats.sites.iter().map(site_json).collect();
        let value = json!({ "partitions": serde_json::Value::Array(partitions),
                            "sites": serde_json::Value::Array(sites) });
        json(out, &value)?;
        return Ok(());
    }
    let mut table =
        Table::new(&["TOPIC", "PARTITION", "COMMITTED", "END", "LAG"]).right(&[1, 2, 3, 4]);
    for p in &stats.partitions {
        table.row(vec![
            p.topic.clone(),
            p.partition.to_string(),
            p.committed.to_string(),
            p.end.to_string(),
            p.lag.to_string(),
        ]);
    }
    let total: u64 = stats.partitions.iter().map(|p| p.lag).sum();
    writeln!(out, "Partitions (total lag {total}):")?;
    table.write(out)?;
    writeln!(out)?;
    if stats.sites.is_empty() {
        writeln!(
            out,
            "Sites: none (the node answering does not deliver, or has not connected to any site yet)"
        )?;
        return Ok(());
    }
    let mut sites =
        Table::new(&["SITE", "OPEN", "IDLE", "LIMIT", "RATE", "REASON"]).right(&[1, 2, 3]);
    for s in &stats.sites {
        sites.row(vec![
            s.site.clone(),
            s.open_connections.to_string(),
            s.idle_connections.to_string(),
            format!("{}/{}", s.connection_limit, s.configured_connection_limit),
            rate(s.rate),
            site_reason(s),
        ]);
    }
    writeln!(out, "Sites:")?;
    sites.write(out)?;
    Ok(())
}

fn rate(rate: f64) -> String {
    if rate > 0.0 {
        format!("{rate:.1}/s")
    } else {
        "unlimited".to_owned()
    }
}

/// Why a site is slowed down or held back; `-` when it is neither.
fn site_reason(site: &SiteStats) -> String {
    let mut reasons = Vec::new();
    if !site.down_reason.is_empty() {
        reasons.push(format!("down: {}", site.down_reason));
    }
    if !site.throttle_reason.is_empty() {
        reasons.push(format!("throttled: {}", site.throttle_reason));
    }
    or_dash(&reasons.join("; "))
}

fn partition_json(p: &PartitionStats) -> serde_json::Value {
    json!({
        "topic": p.topic,
        "partition": p.partition,
        "committed": p.committed,
        "end": p.end,
        "lag": p.lag,
    })
}

fn site_json(s: &SiteStats) -> serde_json::Value {
    json!({
        "site": s.site,
        "open_connections": s.open_connections,
        "idle_connections": s.idle_connections,
        "connection_limit": s.connection_limit,
        "configured_connection_limit": s.configured_connection_limit,
        "rate": s.rate,
        "throttle_reason": s.throttle_reason,
        "down_reason": s.down_reason,
    })
}

/// `domain pause|resume|list|bounce`.
pub(crate) async fn domain(
    api: &Api,
    command: DomainCommand,
    out: &mut dyn Write,
) -> Result<(), AdminError> {
    let mut client = api.admin();
    match command {
        DomainCommand::Pause {
            domain,
            duration,
            reason,
        } => {
            let duration_seconds = seconds(duration)?;
            let request = PauseDomainRequest {
                domain: domain.clone(),
                duration_seconds,
                reason,
            };
            call(client.pause_domain(request)).await?;
            match duration {
                Some(d) => writeln!(out, "paused {domain} until {}", from_now(d))?,
                None => writeln!(out, "paused {domain} until resumed")?,
            }
        }
        DomainCommand::Resume { domain } => {
            let request = ResumeDomainRequest {
                domain: domain.clone(),
            };
            if call(client.resume_domain(request)).await?.was_paused {
                writeln!(out, "resumed {domain}")?;
            } else {
                writeln!(out, "{domain} was not paused")?;
            }
        }
        DomainCommand::List { json: as_json } => {
            let domains = call(client.list_paused_domains(ListPausedDomainsRequest {}))
                .await?
                .domains;
            if as_json {
                let items = domains.iter().map(|d| {
                    json!({
                        "domain": d.domain,
                        "until_unix_ms": (d.until_unix_ms != 0).then_some(d.until_unix_ms),
                        "reason": d.reason,
                    })
                });
                json(out, &serde_json::Value::Array(items.collect()))?;
            } else if domains.is_empty() {
                writeln!(out, "no domain is paused")?;
            } else {
                let mut table = Table::new(&["DOMAIN", "UNTIL", "REASON"]);
                for d in &domains {
                    table.row(vec![
                        d.domain.clone(),
                        time(d.until_unix_ms, "resumed"),
                        or_dash(&d.reason),
                    ]);
                }
                table.write(out)?;
            }
        }
        DomainCommand::Bounce {
            domain,
            reason,
            duration,
        } => {
            let request = BounceDomainRequest {
                domain: domain.clone(),
                reason,
                duration_seconds: seconds(duration)?,
            };
            call(client.bounce_domain(request)).await?;
            let until = duration.map_or_else(|| "deliver.max_age".to_owned(), from_now);
            writeln!(
                out,
                "bouncing mail for {domain} until {until}: each queued message bounces when a delivery node next takes it"
            )?;
        }
    }
    Ok(())
}

/// `--for`: whole seconds, at least one (0 would mean "until resumed").
fn seconds(duration: Option<std::time::Duration>) -> Result<u64, AdminError> {
    match duration {
        None => Ok(0),
        Some(d) if d.as_secs() >= 1 => Ok(d.as_secs()),
        Some(_) => Err(AdminError::Usage("--for must be at least 1s".to_owned())),
    }
}

/// `message ID`: the history, oldest first.
pub(crate) async fn message(
    api: &Api,
    id: &str,
    as_json: bool,
    out: &mut dyn Write,
) -> Result<(), AdminError> {
    let request = MessageHistoryRequest {
        message_id: id.to_owned(),
    };
    let entries = call(api.admin().message_history(request)).await?.entries;
    if as_json {
        let items = entries.iter().map(|e| {
            json!({
                "time_unix_ms": e.time_unix_ms,
                "kind": e.kind,
                "recipient": e.recipient,
                "detail": e.detail,
            })
        });
        json(out, &serde_json::Value::Array(items.collect()))?;
        return Ok(());
    }
    if entries.is_empty() {
        writeln!(out, "no history for {id} (unknown, or expired)")?;
        return Ok(());
    }
    let mut table = Table::new(&["TIME", "KIND", "RECIPIENT", "DETAIL"]);
    for e in &entries {
        table.row(vec![
            time(e.time_unix_ms, "-"),
            e.kind.clone(),
            or_dash(&e.recipient),
            or_dash(&e.detail),
        ]);
    }
    table.write(out)?;
    Ok(())
}

/// `topics init`: the node creates its missing topics.
pub(crate) async fn init_topics(api: &Api, out: &mut dyn Write) -> Result<(), AdminError> {
    let topics = call(api.admin().init_topics(InitTopicsRequest {}))
        .await?
        .topics;
    for topic in topics {
        writeln!(out, "{} ({} partitions)", topic.name, topic.partitions)?;
    }
    Ok(())
}
