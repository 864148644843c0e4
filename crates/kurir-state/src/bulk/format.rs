//! The line formats of [`super`] (documented there): parsing a line into an entry, and
//! rendering an entry as a line.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use kurir_core::Address;
use serde::{Deserialize, Serialize};

use super::{BulkError, Format, ImportDefaults};
use crate::error::StateError;
use crate::model::{Scope, Suppression, Tenant};

pub(super) const CSV_HEADER: &str = "address,scope,reason,source,created,expires";
/// The header of a file of one list, where the scope is the importer's to choose.
pub(super) const CSV_HEADER_NO_SCOPE: &str = "address,reason,source,created,expires";
/// The columns of a CSV file without a header.
const HEADERLESS: [Column; 3] = [Column::Address, Column::Reason, Column::Source];

/// The fields of a line, before validation.
#[derive(Debug, Default, Deserialize, Serialize)]
struct Fields {
    address: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    scope: Option<String>,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    source: Option<String>,
    #[serde(default)]
    created: Option<Time>,
    #[serde(default)]
    expires: Option<Time>,
}

/// A time in JSON: RFC 3339 text or Unix seconds.
#[derive(Debug, Deserialize, Serialize)]
#[serde(untagged)]
enum Time {
    Secs(u64),
    Text(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Column {
    Address,
    Scope,
    Reason,
    Source,
    Created,
    Expires,
}

/// Parses the lines of one file, in order (a CSV file's first line may be its header).
#[derive(Debug)]
pub struct Parser {
    format: Format,
    /// The CSV columns, once the first line is seen.
    columns: Option<Vec<Column>>,
    defaults: ImportDefaults,
    now: SystemTime,
}

impl Parser {
    /// A parser filling the fields a line leaves out from `defaults`, and `created` with
    /// `now`.
    pub fn new(format: Format, defaults: ImportDefaults, now: SystemTime) -> Self {
        Self {
            format,
            columns: None,
            defaults,
            now,
        }
    }

    /// `None` for a line without an entry (blank, or the CSV header); an `Err` of the
    /// outer result for a bad CSV header.
    pub fn parse(
        &mut self,
        line: &str,
    ) -> Result<Option<Result<Suppression, StateError>>, BulkError> {
        if line.trim().is_empty() {
            return Ok(None);
        }
        let fields = match self.format {
            Format::JsonLines => serde_json::from_str::<Fields>(line)
                .map_err(|e| StateError::invalid("line", format!("not a JSON entry: {e}"))),
            Format::Csv => match self.columns.take() {
                Some(columns) => {
                    let fields = csv_fields(&columns, line);
                    self.columns = Some(columns);
                    fields
                }
                None => {
                    let (columns, is_header) = csv_header(line)?;
                    self.columns = Some(columns);
                    if is_header {
                        return Ok(None);
                    }
                    return self.parse(line);
                }
            },
        };
        Ok(Some(fields.and_then(|f| self.build(f))))
    }

    fn build(&self, f: Fields) -> Result<Suppression, StateError> {
        let present = |v: Option<String>| v.filter(|s| !s.trim().is_empty());
        let address = Address::parse(f.address.trim())
            .map_err(|e| StateError::invalid("address", format!("{:?}: {e}", f.address)))?;
        let scope = match present(f.scope) {
            Some(s) => parse_scope(s.trim())?,
            None => self.defaults.scope.clone(),
        };
        let reason = match present(f.reason) {
            Some(r) => r.trim().parse()?,
            None => self.defaults.reason,
        };
        let source = present(f.source).unwrap_or_else(|| self.defaults.source.clone());
        let created = f
            .created
            .map(|t| parse_time("created", t))
            .transpose()?
            .flatten()
            .unwrap_or(self.now);
        let expires = f
            .expires
            .map(|t| parse_time("expires", t))
            .transpose()?
            .flatten();
        Ok(Suppression {
            scope,
            address,
            reason,
            source,
            created,
            expires,
        })
    }
}

/// The columns of a CSV file and whether `line` is a header (else its first field is an
/// address, and the columns are [`HEADERLESS`]).
fn csv_header(line: &str) -> Result<(Vec<Column>, bool), BulkError> {
    let names = split_csv(line, None).map_err(|e| BulkError::Header(e.to_owned()))?;
    if names[0].contains('@') {
        return Ok((HEADERLESS.to_vec(), false));
    }
    let columns = names
        .iter()
        .map(|name| match name.trim().to_ascii_lowercase().as_str() {
            "address" => Ok(Column::Address),
            "scope" => Ok(Column::Scope),
            "reason" => Ok(Column::Reason),
            "source" => Ok(Column::Source),
            "created" => Ok(Column::Created),
            "expires" => Ok(Column::Expires),
            other => Err(BulkError::Header(format!("unknown column {other:?}"))),
        })
        .collect::<Result<Vec<_>, _>>()?;
    if columns.iter().filter(|c| **c == Column::Address).count() != 1 {
        return Err(BulkError::Header("needs exactly one address column".into()));
    }
    Ok((columns, true))
}

fn csv_fields(columns: &[Column], line: &str) -> Result<Fields, StateError> {
    // A last `source` column takes the rest of the line: its commas need no quotes.
    let rest = (columns.last() == Some(&Column::Source)).then_some(columns.len());
    let values = split_csv(line, rest).map_err(|e| StateError::invalid("line", e))?;
    if values.len() > columns.len() {
        return Err(StateError::invalid(
            "line",
            format!("{} fields, the header has {}", values.len(), columns.len()),
        ));
    }
    let mut f = Fields::default();
    for (column, value) in columns.iter().zip(values) {
        match column {
            Column::Address => f.address = value,
            Column::Scope => f.scope = Some(value),
            Column::Reason => f.reason = Some(value),
            Column::Source => f.source = Some(value),
            Column::Created => f.created = Some(Time::Text(value)),
            Column::Expires => f.expires = Some(Time::Text(value)),
        }
    }
    Ok(f)
}

/// Splits one CSV record (RFC 4180 quoting; unquoted fields are trimmed). With `at_most`,
/// the field that many in is the rest of the line, taken as it is (trimmed) unless it is
/// quoted.
fn split_csv(line: &str, at_most: Option<usize>) -> Result<Vec<String>, &'static str> {
    let (mut fields, mut field) = (Vec::new(), String::new());
    let (mut quoted, mut was_quoted) = (false, false);
    let mut chars = line.char_indices().peekable();
    while let Some((at, c)) = chars.next() {
        if !quoted && field.is_empty() && !was_quoted && at_most == Some(fields.len() + 1) {
            let rest = line[at..].trim();
            if !rest.starts_with('"') {
                fields.push(rest.to_owned());
                return Ok(fields);
            }
        }
        match (quoted, c) {
            (true, '"') if chars.peek().map(|(_, c)| *c) == Some('"') => {
                field.push('"');
                chars.next();
            }
            (true, '"') => quoted = false,
            (true, c) => field.push(c),
            (false, ',') => {
                fields.push(finish_field(&mut field, was_quoted));
                was_quoted = false;
            }
            (false, '"') if field.trim().is_empty() && !was_quoted => {
                (quoted, was_quoted) = (true, true)
            }
            (false, c) if was_quoted && !c.is_whitespace() => {
                return Err("text after a closing quote");
            }
            (false, c) => field.push(c),
        }
    }
    if quoted {
        return Err("unterminated quoted field");
    }
    fields.push(finish_field(&mut field, was_quoted));
    Ok(fields)
}

fn finish_field(field: &mut String, was_quoted: bool) -> String {
    let value = std::mem::take(field);
    if was_quoted {
        value
    } else {
        value.trim().to_owned()
    }
}

fn parse_scope(s: &str) -> Result<Scope, StateError> {
    if s == "global" {
        return Ok(Scope::Global);
    }
    Ok(Scope::Tenant(Tenant::new(
        s.strip_prefix("tenant:").unwrap_or(s),
    )?))
}

/// `Ok(None)` for an empty text.
fn parse_time(field: &'static str, t: Time) -> Result<Option<SystemTime>, StateError> {
    let text = match t {
        Time::Secs(secs) => return Ok(Some(UNIX_EPOCH + Duration::from_secs(secs))),
        Time::Text(text) => text,
    };
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    if let Ok(secs) = text.parse::<u64>() {
        return Ok(Some(UNIX_EPOCH + Duration::from_secs(secs)));
    }
    humantime::parse_rfc3339_weak(text).map(Some).map_err(|e| {
        StateError::invalid(
            field,
            format!("{text:?}: {e} (RFC 3339 in UTC or Unix seconds)"),
        )
    })
}

/// The header line of a CSV file (without the line end); `None` for JSON lines.
pub fn header(format: Format, with_scope: bool) -> Option<&'static str> {
    match (format, with_scope) {
        (Format::JsonLines, _) => None,
        (Format::Csv, true) => Some(CSV_HEADER),
        (Format::Csv, false) => Some(CSV_HEADER_NO_SCOPE),
    }
}

/// Appends one entry as a line of `format`; without its scope for a file of one list
/// (see [`header`]).
pub fn render(entry: &Suppression, format: Format, with_scope: bool, out: &mut String) {
    let time = |t: SystemTime| humantime::format_rfc3339_nanos(t).to_string();
    let scope = match &entry.scope {
        Scope::Global => "global".to_owned(),
        Scope::Tenant(t) => format!("tenant:{t}"),
    };
    match format {
        Format::JsonLines => {
            let fields = Fields {
                address: entry.address.to_string(),
                scope: with_scope.then_some(scope),
                reason: Some(entry.reason.as_str().to_owned()),
                source: Some(entry.source.clone()),
                created: Some(Time::Text(time(entry.created))),
                expires: entry.expires.map(|t| Time::Text(time(t))),
            };
            out.push_str(&serde_json::to_string(&fields).expect("plain strings serialise"));
        }
        Format::Csv => {
            let source: String = entry
                .source
                .chars()
                .map(|c| if c.is_control() { ' ' } else { c })
                .collect();
            let expires = entry.expires.map(time).unwrap_or_default();
            let (address, created) = (entry.address.to_string(), time(entry.created));
            let fields = [
                Some(address.as_str()),
                with_scope.then_some(scope.as_str()),
                Some(entry.reason.as_str()),
                Some(&source),
                Some(&created),
                Some(&expires),
            ];
            let quoted: Vec<String> = fields.iter().flatten().map(|f| csv_quote(f)).collect();
            out.push_str(&quoted.join(","));
        }
    }
    out.push('\n');
}

fn csv_quote(field: &str) -> String {
    if field.contains([',', '"']) || field.trim() != field {
        format!("\"{}\"", field.replace('"', "\"\""))
    } else {
        field.to_owned()
    }
}
