//! The files of `suppression import` and `suppression export`: the layout of
//! `kurir_state::bulk` (CSV with a header naming its columns, or JSON lines with `--format
//! jsonl`), so a file exported here, one exported by the state's bulk export and one written
//! by hand read the same way.
//!
//! Export writes one list: the columns `address,reason,source,created,expires` (CSV) with
//! times in RFC 3339, so importing an export restores every entry, its creation and expiry
//! included. Import takes any of the bulk format's columns; a CSV file without a header has
//! the columns `address,reason,source` (all but the address optional, so a plain list of
//! addresses is a valid file), and a last `source` column needs no quotes around its
//! commas. Entries go to the key's tenant list, or the global one with `--global`; a
//! `scope` column, where a file has one, decides per line (`global`, or a tenant name,
//! which the server replaces with the key's tenant). Reasons are spelt either way
//! (`hard_bounce` as on the command line, `hard-bounce` as the state store writes). Blank
//! lines and lines starting with `#` are skipped.

use std::io::Read;
use std::path::Path;
use std::time::SystemTime;

use kurir_proto::v1::{self, SuppressionReason};
use kurir_state::bulk::{self, ImportDefaults, Parser};
use kurir_state::{Reason, Scope, Tenant};
use kurir_submit::grpc::suppression::{MAX_SOURCE, entry_to_proto, suppression_from_proto};
use tonic::Status;

use super::AdminError;
use crate::cli::{FileFormat, SuppressionReasonArg};

impl From<FileFormat> for bulk::Format {
    fn from(format: FileFormat) -> Self {
        match format {
            FileFormat::Csv => Self::Csv,
            FileFormat::Jsonl => Self::JsonLines,
        }
    }
}

/// Reads `path` (`-`: stdin) and parses every line; the first bad line is a usage error
/// naming the file and line, and nothing is sent.
pub(crate) fn read_entries(
    path: &Path,
    global: bool,
    format: FileFormat,
) -> Result<Vec<v1::Suppression>, AdminError> {
    let (origin, text) = if path == Path::new("-") {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|e| AdminError::Usage(format!("reading stdin: {e}")))?;
        ("stdin".to_owned(), text)
    } else {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path)
            .map_err(|e| AdminError::Usage(format!("reading {origin}: {e}")))?;
        (origin, text)
    };
    parse(&text, global, format)
        .map_err(|(line, message)| AdminError::Usage(format!("{origin}:{line}: {message}")))
}

/// Every entry of `text`; an error is (line number, what is wrong).
pub(crate) fn parse(
    text: &str,
    global: bool,
    format: FileFormat,
) -> Result<Vec<v1::Suppression>, (usize, String)> {
    // The tenant's name is not sent: the server files tenant entries under the key's.
    let tenant = Scope::Tenant(Tenant::new("key").expect("a valid tenant name"));
    let defaults = ImportDefaults {
        scope: if global { Scope::Global } else { tenant },
        reason: Reason::Manual,
        source: String::new(),
    };
    let mut parser = Parser::new(format.into(), defaults, SystemTime::now());
    let mut entries = Vec::new();
    for (i, line) in text.trim_start_matches('\u{feff}').lines().enumerate() {
        if line.trim_start().starts_with('#') {
            continue;
        }
        let entry = match parser.parse(line) {
            Ok(None) => continue,
            Ok(Some(Ok(entry))) => entry,
            Ok(Some(Err(error))) => return Err((i + 1, error.to_string())),
            Err(error) => return Err((i + 1, error.to_string())),
        };
        if entry.source.len() > MAX_SOURCE {
            return Err((
                i + 1,
                format!("the source is longer than {MAX_SOURCE} bytes"),
            ));
        }
        entries.push(entry_to_proto(&entry));
    }
    Ok(entries)
}

/// The first line of an export (with its line end); nothing for JSON lines.
pub(crate) fn export_header(format: FileFormat) -> String {
    bulk::header(format.into(), false)
        .map(|header| format!("{header}\n"))
        .unwrap_or_default()
}

/// Appends one exported entry, with its line end.
pub(crate) fn export_line(
    entry: &v1::Suppression,
    format: FileFormat,
    out: &mut String,
) -> Result<(), AdminError> {
    // The scope is not written: an export holds one list.
    let entry = suppression_from_proto(entry, Scope::Global, SystemTime::now(), str::to_owned)
        .map_err(|status| {
            let what = status.message();
            AdminError::from(Status::internal(format!(
                "the server sent a bad entry: {what}"
            )))
        })?;
    bulk::render(&entry, format.into(), false, out);
    Ok(())
}

pub(crate) fn reason_from_arg(reason: SuppressionReasonArg) -> SuppressionReason {
    match reason {
        SuppressionReasonArg::Manual => SuppressionReason::Manual,
        SuppressionReasonArg::HardBounce => SuppressionReason::HardBounce,
        SuppressionReasonArg::SoftBounces => SuppressionReason::SoftBounces,
        SuppressionReasonArg::Complaint => SuppressionReason::Complaint,
        SuppressionReasonArg::Unsubscribe => SuppressionReason::Unsubscribe,
    }
}

/// The name of a reason as the command line spells it.
pub(crate) fn reason_name(reason: i32) -> &'static str {
    match SuppressionReason::try_from(reason) {
        Ok(SuppressionReason::HardBounce) => "hard_bounce",
        Ok(SuppressionReason::SoftBounces) => "soft_bounces",
        Ok(SuppressionReason::Complaint) => "complaint",
        Ok(SuppressionReason::Unsubscribe) => "unsubscribe",
        Ok(SuppressionReason::Manual | SuppressionReason::Unspecified) => "manual",
        Err(_) => "unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kurir_proto::v1::SuppressionScope;

    fn csv(text: &str, global: bool) -> Result<Vec<v1::Suppression>, (usize, String)> {
        parse(text, global, FileFormat::Csv)
    }

    #[test]
    fn plain_lists_and_csv_lines_parse() {
        let text = "\u{feff}# a comment\na@one.test\r\n\nb@one.test,complaint\n\
                    \"\"\"x,y\"\"@two.test\",hard_bounce,crm, nightly\n";
        let entries = csv(text, false).unwrap();
        let got: Vec<(&str, i32, &str)> = entries
            .iter()
            .map(|e| (e.address.as_str(), e.reason, e.source.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                ("a@one.test", SuppressionReason::Manual as i32, ""),
                ("b@one.test", SuppressionReason::Complaint as i32, ""),
                (
                    "\"x,y\"@two.test",
                    SuppressionReason::HardBounce as i32,
                    "crm, nightly"
                ),
            ]
        );
        assert!(
            entries
                .iter()
                .all(|e| e.scope == 0 && e.expires_unix_ms == 0)
        );
        assert!(csv("a@one.test", true).unwrap()[0].scope == SuppressionScope::Global as i32);
    }

    #[test]
    fn a_header_names_the_columns_and_a_scope_column_decides_per_line() {
        let text = "scope,expires,address,reason\n\
                    global,2030-01-01T00:00:00Z,a@one.test,soft-bounces\n\
                    acme,,b@one.test,\n";
        let entries = csv(text, false).unwrap();
        assert_eq!(entries[0].scope, SuppressionScope::Global as i32);
        assert_eq!(entries[0].reason, SuppressionReason::SoftBounces as i32);
        assert_eq!(entries[0].expires_unix_ms, 1_893_456_000_000);
        assert_eq!(entries[1].scope, SuppressionScope::Unspecified as i32);
        assert_eq!(entries[1].expires_unix_ms, 0);
    }

    #[test]
    fn bad_lines_are_named_by_number() {
        let (line, message) = csv("a@one.test\nnot an address\n", false).unwrap_err();
        assert_eq!(line, 2);
        assert!(message.contains("not an address"), "{message}");
        let (line, message) = csv("a@one.test,bored\n", false).unwrap_err();
        assert_eq!(line, 1);
        assert!(message.contains("hard-bounce"), "{message}");
        let (line, message) = csv("address,colour\n", false).unwrap_err();
        assert_eq!(line, 1);
        assert!(message.contains("colour"), "{message}");
        let (line, _) = parse("{\"address\": 1}\n", false, FileFormat::Jsonl).unwrap_err();
        assert_eq!(line, 1);
    }

    /// What export writes, import reads back whole: creation and expiry included.
    #[test]
    fn exports_read_back() {
        let entry = v1::Suppression {
            address: "a@one.test".into(),
            reason: SuppressionReason::SoftBounces.into(),
            source: "web, footer\nlink".into(),
            created_unix_ms: 1_700_000_000_123,
            expires_unix_ms: 1_800_000_000_456,
            ..Default::default()
        };
        for format in [FileFormat::Csv, FileFormat::Jsonl] {
            let mut text = export_header(format);
            export_line(&entry, format, &mut text).unwrap();
            let back = parse(&text, false, format).unwrap();
            // CSV keeps a record on one line; JSON escapes the line break.
            let want = match format {
                FileFormat::Csv => v1::Suppression {
                    source: "web, footer link".into(),
                    ..entry.clone()
                },
                FileFormat::Jsonl => entry.clone(),
            };
            if format == FileFormat::Csv {
                assert_eq!(
                    text,
                    "address,reason,source,created,expires\n\
                     a@one.test,soft-bounces,\"web, footer link\",\
                     2023-11-14T22:13:20.123000000Z,2027-01-15T08:00:00.456000000Z\n"
                );
            }
            assert_eq!(back, [want], "{format:?}: {text}");
        }
    }
}
