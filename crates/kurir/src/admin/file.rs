//! The suppression file format of `suppression import` and `suppression export`.
//!
//! One entry per line: `address,reason,source`, where `reason` and `source` may be left
//! out, so a plain list of addresses is a valid file. The address ends at the first comma
//! outside double quotes (a quoted local part may contain commas); `source` is the rest of
//! the line and may contain commas. Blank lines, `#` comments and a header line
//! (`address,reason,source`) are skipped. Export writes all three fields. Reasons are spelt
//! as on the command line (`hard_bounce`); the state store's spelling (`hard-bounce`, as in
//! `kurir_state::bulk` files) is read too.

use std::io::Read;
use std::path::Path;

use clap::ValueEnum;
use kurir_core::Address;
use kurir_proto::v1::{self, SuppressionReason};

use super::AdminError;
use crate::cli::SuppressionReasonArg;

/// The longest `source` the server accepts, in bytes.
const MAX_SOURCE: usize = 512;

/// Reads `path` (`-`: stdin) and parses every line; the first bad line is a usage error
/// naming the file and line, and nothing is sent.
pub(crate) fn read_entries(path: &Path, global: bool) -> Result<Vec<v1::Suppression>, AdminError> {
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
    parse(&text, global)
        .map_err(|(line, message)| AdminError::Usage(format!("{origin}:{line}: {message}")))
}

/// Every entry of `text`; an error is (line number, what is wrong).
pub(crate) fn parse(text: &str, global: bool) -> Result<Vec<v1::Suppression>, (usize, String)> {
    let scope = super::suppression::scope(global);
    let mut entries = Vec::new();
    let mut first = true;
    for (i, line) in text.trim_start_matches('\u{feff}').lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let header = std::mem::replace(&mut first, false) && is_header(line);
        if header {
            continue;
        }
        let mut entry = parse_line(line).map_err(|message| (i + 1, message))?;
        entry.scope = scope;
        entries.push(entry);
    }
    Ok(entries)
}

fn is_header(line: &str) -> bool {
    let fields: Vec<String> = line
        .split(',')
        .map(|f| f.trim().to_ascii_lowercase())
        .collect();
    fields.first().is_some_and(|f| f == "address")
        && fields
            .iter()
            .skip(1)
            .all(|f| f == "reason" || f == "source")
}

fn parse_line(line: &str) -> Result<v1::Suppression, String> {
    let (address, rest) = split_address(line);
    let address = address.trim();
    Address::parse(address).map_err(|e| format!("{address:?} is not an address: {e}"))?;
    let (reason, source) = match rest {
        None => ("", ""),
        Some(rest) => rest.split_once(',').unwrap_or((rest, "")),
    };
    let reason = match reason.trim() {
        "" => SuppressionReason::Manual,
        name => reason_from_arg(SuppressionReasonArg::from_str(name, true).map_err(|_| {
            format!(
                "unknown reason {name:?} (expected one of {})",
                reason_names().join(", ")
            )
        })?),
    };
    let source = source.trim();
    if source.len() > MAX_SOURCE {
        return Err(format!("the source is longer than {MAX_SOURCE} bytes"));
    }
    Ok(v1::Suppression {
        address: address.to_owned(),
        reason: reason.into(),
        source: source.to_owned(),
        ..Default::default()
    })
}

/// The address (up to the first comma outside double quotes) and the rest after it.
fn split_address(line: &str) -> (&str, Option<&str>) {
    let mut quoted = false;
    let mut escaped = false;
    for (i, c) in line.char_indices() {
        if escaped {
            escaped = false;
            continue;
        }
        match c {
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            ',' if !quoted => return (&line[..i], Some(&line[i + 1..])),
            _ => {}
        }
    }
    (line, None)
}

/// One exported line (without the newline).
pub(crate) fn format_line(entry: &v1::Suppression) -> String {
    let source: String = entry
        .source
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    format!("{},{},{}", entry.address, reason_name(entry.reason), source)
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

/// The name of a reason as the command line and files spell it.
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

fn reason_names() -> Vec<String> {
    SuppressionReasonArg::value_variants()
        .iter()
        .filter_map(|v| v.to_possible_value())
        .map(|v| v.get_name().to_owned())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use kurir_proto::v1::SuppressionScope;

    #[test]
    fn plain_lists_and_csv_lines_parse() {
        let text = "\u{feff}address,reason,source\n\n# a comment\na@one.test\r\n\
                    b@one.test,complaint\n\"x,y\"@two.test,hard_bounce,crm, nightly\n";
        let entries = parse(text, false).unwrap();
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
        assert!(entries.iter().all(|e| e.scope == 0));
        assert!(parse("a@one.test", true).unwrap()[0].scope == SuppressionScope::Global as i32);
    }

    #[test]
    fn bad_lines_are_named_by_number() {
        let (line, message) = parse("a@one.test\nnot an address\n", false).unwrap_err();
        assert_eq!(line, 2);
        assert!(message.contains("not an address"), "{message}");
        let (line, message) = parse("a@one.test,bored\n", false).unwrap_err();
        assert_eq!(line, 1);
        assert!(message.contains("hard_bounce"), "{message}");
    }

    #[test]
    fn the_state_stores_spelling_of_reasons_is_accepted_too() {
        // `kurir_state::bulk` files and Redis say `hard-bounce` and `soft-bounces`.
        let entries = parse("a@one.test,hard-bounce\nb@one.test,Soft-Bounces,x\n", false).unwrap();
        let reasons: Vec<i32> = entries.iter().map(|e| e.reason).collect();
        assert_eq!(
            reasons,
            [
                SuppressionReason::HardBounce as i32,
                SuppressionReason::SoftBounces as i32
            ]
        );
    }

    #[test]
    fn export_lines_read_back() {
        let entry = v1::Suppression {
            address: "a@one.test".into(),
            reason: SuppressionReason::Unsubscribe.into(),
            source: "web, footer\nlink".into(),
            ..Default::default()
        };
        let line = format_line(&entry);
        assert_eq!(line, "a@one.test,unsubscribe,web, footer link");
        let back = parse(&line, false).unwrap();
        assert_eq!(back[0].reason, entry.reason);
        assert_eq!(back[0].source, "web, footer link");
    }
}
