//! `kurir admin suppression …` over `SuppressionService`.
//!
//! Add, remove and check send at most [`MAX_PER_CALL`] addresses per call (the server's
//! limit), so any number can be given. List follows every page; import streams the
//! checked file in; export streams the list out line by line.

use std::io::Write;

use futures::stream;
use kurir_proto::v1::{
    self, AddSuppressionsRequest, CheckSuppressionsRequest, ExportSuppressionsRequest,
    ListSuppressionsRequest, RemoveSuppressionsRequest, SuppressionScope,
};
use serde_json::json;

use super::AdminError;
use super::client::{Api, call};
use super::file::{export_header, export_line, reason_from_arg, reason_name};
use super::output::{Table, json, or_dash, time};
use crate::cli::{FileFormat, SuppressionCommand};

/// Addresses per Add, Remove or Check call.
const MAX_PER_CALL: usize = 1_000;
/// Entries per List page.
const PAGE: u64 = 1_000;

pub(crate) fn scope(global: bool) -> i32 {
    if global {
        SuppressionScope::Global.into()
    } else {
        SuppressionScope::Unspecified.into()
    }
}

fn list_name(global: bool) -> &'static str {
    if global {
        "the global list"
    } else {
        "the tenant list"
    }
}

/// Runs a suppression command; `import` holds the checked entries of an import file.
pub(crate) async fn run(
    api: &Api,
    command: SuppressionCommand,
    import: Option<Vec<v1::Suppression>>,
    out: &mut dyn Write,
) -> Result<(), AdminError> {
    match command {
        SuppressionCommand::Add {
            addresses,
            reason,
            source,
            global,
        } => {
            let entries = addresses.into_iter().map(|address| v1::Suppression {
                address,
                scope: scope(global),
                reason: reason_from_arg(reason).into(),
                source: source.clone(),
                ..Default::default()
            });
            add(api, entries.collect(), global, out).await
        }
        SuppressionCommand::Remove { addresses, global } => {
            remove(api, addresses, global, out).await
        }
        SuppressionCommand::Check { addresses, json } => check(api, addresses, json, out).await,
        SuppressionCommand::List {
            global,
            limit,
            json,
        } => list(api, global, limit, json, out).await,
        SuppressionCommand::Import { global, .. } => {
            import_entries(api, import.unwrap_or_default(), global, out).await
        }
        SuppressionCommand::Export { global, format } => export(api, global, format, out).await,
    }
}

async fn add(
    api: &Api,
    entries: Vec<v1::Suppression>,
    global: bool,
    out: &mut dyn Write,
) -> Result<(), AdminError> {
    let mut client = api.suppression();
    let mut added = 0;
    for chunk in entries.chunks(MAX_PER_CALL) {
        let request = AddSuppressionsRequest {
            entries: chunk.to_vec(),
        };
        added += call(client.add(request)).await?.added;
    }
    writeln!(out, "added {added} to {}", list_name(global))?;
    Ok(())
}

async fn remove(
    api: &Api,
    addresses: Vec<String>,
    global: bool,
    out: &mut dyn Write,
) -> Result<(), AdminError> {
    let mut client = api.suppression();
    let mut removed = 0;
    for chunk in addresses.chunks(MAX_PER_CALL) {
        let request = RemoveSuppressionsRequest {
            scope: scope(global),
            addresses: chunk.to_vec(),
        };
        removed += call(client.remove(request)).await?.removed;
    }
    writeln!(
        out,
        "removed {removed} of {} from {}",
        addresses.len(),
        list_name(global)
    )?;
    Ok(())
}

async fn check(
    api: &Api,
    addresses: Vec<String>,
    as_json: bool,
    out: &mut dyn Write,
) -> Result<(), AdminError> {
    let mut client = api.suppression();
    let mut results = Vec::with_capacity(addresses.len());
    for chunk in addresses.chunks(MAX_PER_CALL) {
        let request = CheckSuppressionsRequest {
            addresses: chunk.to_vec(),
        };
        results.extend(call(client.check(request)).await?.results);
    }
    if as_json {
        let items = results.iter().map(|r| {
            json!({
                "address": r.address,
                "suppressed": r.entry.is_some(),
                "entry": r.entry.as_ref().map(entry_json),
            })
        });
        json(out, &serde_json::Value::Array(items.collect()))?;
        return Ok(());
    }
    let mut table = Table::new(&["ADDRESS", "STATUS", "REASON", "LIST", "SOURCE", "SINCE"]);
    for result in &results {
        let row = match &result.entry {
            Some(e) => vec![
                result.address.clone(),
                "suppressed".to_owned(),
                reason_name(e.reason).to_owned(),
                scope_name(e.scope).to_owned(),
                or_dash(&e.source),
                time(e.created_unix_ms, "-"),
            ],
            None => {
                let mut row = vec![result.address.clone(), "not suppressed".to_owned()];
                row.extend(std::iter::repeat_n("-".to_owned(), 4));
                row
            }
        };
        table.row(row);
    }
    table.write(out)?;
    Ok(())
}

async fn list(
    api: &Api,
    global: bool,
    limit: Option<u64>,
    as_json: bool,
    out: &mut dyn Write,
) -> Result<(), AdminError> {
    let mut client = api.suppression();
    let limit = limit.unwrap_or(u64::MAX);
    let mut entries = Vec::new();
    let mut cursor = String::new();
    let mut more = false;
    while (entries.len() as u64) < limit {
        let want = PAGE.min(limit - entries.len() as u64);
        let request = ListSuppressionsRequest {
            scope: scope(global),
            cursor: std::mem::take(&mut cursor),
            limit: u32::try_from(want).unwrap_or(u32::MAX),
        };
        let page = call(client.list(request)).await?;
        entries.extend(page.entries);
        more = !page.next_cursor.is_empty();
        if !more {
            break;
        }
        cursor = page.next_cursor;
    }
    if as_json {
        let items = entries.iter().map(entry_json).collect();
        json(out, &serde_json::Value::Array(items))?;
        return Ok(());
    }
    let mut table = Table::new(&["ADDRESS", "REASON", "SOURCE", "CREATED", "EXPIRES"]);
    for e in &entries {
        table.row(vec![
            e.address.clone(),
            reason_name(e.reason).to_owned(),
            or_dash(&e.source),
            time(e.created_unix_ms, "-"),
            time(e.expires_unix_ms, "never"),
        ]);
    }
    if table.is_empty() {
        writeln!(out, "{} is empty", list_name(global))?;
        return Ok(());
    }
    table.write(out)?;
    let more = if more {
        " (more not shown: raise --limit)"
    } else {
        ""
    };
    writeln!(out, "{} entries{more}", table.len())?;
    Ok(())
}

async fn import_entries(
    api: &Api,
    entries: Vec<v1::Suppression>,
    global: bool,
    out: &mut dyn Write,
) -> Result<(), AdminError> {
    let mut client = api.suppression();
    // No deadline: a long import is bounded by the server's pace, not a clock.
    let summary = client.import(stream::iter(entries)).await?.into_inner();
    writeln!(
        out,
        "imported {} of {} entries into {}",
        summary.stored,
        summary.read,
        list_name(global)
    )?;
    Ok(())
}

async fn export(
    api: &Api,
    global: bool,
    format: FileFormat,
    out: &mut dyn Write,
) -> Result<(), AdminError> {
    let mut client = api.suppression();
    let request = ExportSuppressionsRequest {
        scope: scope(global),
    };
    let mut entries = call(client.export(request)).await?;
    let mut line = export_header(format);
    while let Some(entry) = entries.message().await? {
        export_line(&entry, format, &mut line)?;
        out.write_all(line.as_bytes())?;
        line.clear();
    }
    out.write_all(line.as_bytes())?;
    Ok(())
}

fn scope_name(scope: i32) -> &'static str {
    match SuppressionScope::try_from(scope) {
        Ok(SuppressionScope::Global) => "global",
        _ => "tenant",
    }
}

fn entry_json(e: &v1::Suppression) -> serde_json::Value {
    json!({
        "address": e.address,
        "list": scope_name(e.scope),
        "reason": reason_name(e.reason),
        "source": e.source,
        "created_unix_ms": e.created_unix_ms,
        "expires_unix_ms": (e.expires_unix_ms != 0).then_some(e.expires_unix_ms),
    })
}
