//! Import and export round trips, bad lines, and a million-line import.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use kurir_core::Address;
use tokio::io::{AsyncRead, BufReader, ReadBuf};

use super::{BulkError, Format, ImportDefaults, Parser, export, header, import, render};
use crate::embedded::EmbeddedState;
use crate::model::{Reason, Scope, Suppression, Tenant};
use crate::{State, StateConfig, StateError};

fn open(dir: &tempfile::TempDir) -> EmbeddedState {
    let config = StateConfig {
        tenants: vec!["acme".into(), "globex".into()],
        ..StateConfig::default()
    };
    EmbeddedState::open(dir.path(), &config).unwrap()
}

fn acme() -> Scope {
    Scope::Tenant(Tenant::new("acme").unwrap())
}

fn defaults() -> ImportDefaults {
    ImportDefaults {
        scope: acme(),
        reason: Reason::Manual,
        source: "import".into(),
    }
}

async fn everything<S: State>(state: &S, scope: &Scope) -> Vec<Suppression> {
    let mut items = state
        .list_suppressions(scope, "", 100_000)
        .await
        .unwrap()
        .items;
    items.sort_by_key(|e| e.address.to_string());
    items
}

fn sample() -> Vec<Suppression> {
    let at = |s| SystemTime::UNIX_EPOCH + Duration::new(s, 123_456_789);
    let entry = |address: &str, reason, source: &str, expires| Suppression {
        scope: acme(),
        address: Address::parse(address).unwrap(),
        reason,
        source: source.into(),
        created: at(1_700_000_000),
        expires,
    };
    vec![
        entry("plain@x.test", Reason::Manual, "operator", None),
        entry(
            "\"john doe\"@x.test",
            Reason::Complaint,
            "fbl, \"quoted\"",
            Some(at(4_000_000_000)),
        ),
        entry("ü@bücher.test", Reason::HardBounce, "", None),
    ]
}

async fn round_trip(format: Format) {
    let (from_dir, to_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (from, to) = (open(&from_dir), open(&to_dir));
    from.suppress(&sample()).await.unwrap();
    let mut out = Vec::new();
    assert_eq!(export(&from, &acme(), &mut out, format).await.unwrap(), 3);
    let report = import(&to, out.as_slice(), format, defaults())
        .await
        .unwrap();
    assert_eq!(
        (report.imported, report.rejected_total),
        (3, 0),
        "{report:?}"
    );
    let mut expected = everything(&from, &acme()).await;
    // An empty source takes the import's default.
    expected
        .iter_mut()
        .filter(|e| e.source.is_empty())
        .for_each(|e| e.source = "import".into());
    assert_eq!(
        everything(&to, &acme()).await,
        expected,
        "{}",
        String::from_utf8_lossy(&out)
    );
}

#[tokio::test]
async fn csv_round_trips() {
    round_trip(Format::Csv).await;
}

#[tokio::test]
async fn json_lines_round_trip() {
    round_trip(Format::JsonLines).await;
}

#[tokio::test]
async fn bad_lines_are_reported_with_their_numbers() {
    let dir = tempfile::tempdir().unwrap();
    let state = open(&dir);
    let csv = "address,scope,reason,expires\n\
               good@x.test\n\
               not-an-address\n\
               a@x.test,tenant:nobody\n\
               b@x.test,,sometimes\n\
               \"c@x.test,global\n\
               d@x.test,global,manual,yesterday\n\
               \n\
               e@x.test,global,complaint,1\n\
               f@x.test,nobody\n\
               g@x.test,globex,unsubscribe,4000000000\n";
    let report = import(&state, csv.as_bytes(), Format::Csv, defaults())
        .await
        .unwrap();
    let lines: Vec<u64> = report.rejected.iter().map(|(n, _)| *n).collect();
    assert_eq!(lines, [3, 4, 5, 6, 7, 10], "{report:#?}");
    assert!(matches!(report.rejected[1].1, StateError::UnknownTenant(_)));
    assert_eq!((report.imported, report.rejected_total), (3, 6));
    // Expired at import (1 is 1970): stored, but not in force.
    assert_eq!(everything(&state, &Scope::Global).await.len(), 0);

    let json = "{\"address\":\"a@j.test\"}\n{\"address\":\"b@j.test\",\"expires\":null}\n{oops\n";
    let report = import(&state, json.as_bytes(), Format::JsonLines, defaults())
        .await
        .unwrap();
    assert_eq!(
        (report.imported, report.rejected.len(), report.rejected[0].0),
        (2, 1, 3)
    );
}

#[tokio::test]
async fn headerless_csv_is_a_list_of_addresses_and_bad_headers_fail() {
    let dir = tempfile::tempdir().unwrap();
    let state = open(&dir);
    let report = import(
        &state,
        "a@x.test\r\nb@x.test\r\n".as_bytes(),
        Format::Csv,
        defaults(),
    )
    .await
    .unwrap();
    assert_eq!(report.imported, 2);
    let err = import(
        &state,
        "address,colour\n".as_bytes(),
        Format::Csv,
        defaults(),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, BulkError::Header(_)), "{err:?}");
}

/// Every line of `text` through one parser, with [`defaults`] and `created` at the epoch.
fn parse_all(text: &str, format: Format) -> Vec<Result<Suppression, StateError>> {
    let mut parser = Parser::new(format, defaults(), SystemTime::UNIX_EPOCH);
    text.lines()
        .filter_map(|line| parser.parse(line).unwrap())
        .collect()
}

#[test]
fn headerless_lines_are_address_reason_source_and_a_last_source_needs_no_quotes() {
    let text = "a@x.test\nb@x.test,Hard_Bounce\nc@x.test,complaint,fbl, nightly run\n\
                \"\"\"d,e\"\"@x.test\",unsubscribe,\"web, footer\"\n";
    let got: Vec<(String, Reason, String)> = parse_all(text, Format::Csv)
        .into_iter()
        .map(|e| e.unwrap())
        .map(|e| (e.address.to_string(), e.reason, e.source))
        .collect();
    let want = |a: &str, r, s: &str| (a.to_owned(), r, s.to_owned());
    assert_eq!(
        got,
        [
            want("a@x.test", Reason::Manual, "import"),
            want("b@x.test", Reason::HardBounce, "import"),
            want("c@x.test", Reason::Complaint, "fbl, nightly run"),
            want("\"d,e\"@x.test", Reason::Unsubscribe, "web, footer"),
        ]
    );
    // With a header whose last column is not `source`, extra fields are still an error.
    let bad = parse_all(
        "address,source,reason\na@x.test,x,manual,more\n",
        Format::Csv,
    );
    assert!(bad[0].is_err(), "{bad:?}");
    assert!(parse_all("a@x.test,bored\n", Format::Csv)[0].is_err());
}

/// A file of one list (no `scope` column) reads back into whatever list the importer
/// names, every other field kept.
#[test]
fn files_without_scope_read_back_into_the_default_scope() {
    for format in [Format::Csv, Format::JsonLines] {
        let mut text = header(format, false)
            .map(|h| format!("{h}\n"))
            .unwrap_or_default();
        let mut entries = sample();
        for entry in &mut entries {
            entry.scope = Scope::Global;
            render(entry, format, false, &mut text);
        }
        assert!(!text.contains("global"), "{text}");
        let back: Vec<Suppression> = parse_all(&text, format)
            .into_iter()
            .map(|e| e.unwrap())
            .collect();
        let mut want = sample();
        want.iter_mut()
            .filter(|e| e.source.is_empty())
            .for_each(|e| e.source = "import".into());
        assert_eq!(back, want, "{format:?}: {text}");
    }
}

#[tokio::test]
async fn overlong_lines_are_rejected_and_the_import_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let state = open(&dir);
    let input = format!(
        "address\n{}@x.test\nok@x.test\n",
        "a".repeat(super::MAX_LINE * 3)
    );
    let report = import(
        &state,
        BufReader::with_capacity(1024, input.as_bytes()),
        Format::Csv,
        defaults(),
    )
    .await
    .unwrap();
    assert_eq!(
        (report.imported, report.rejected[0].0),
        (1, 2),
        "{report:?}"
    );
}

/// Yields `total` CSV lines on demand, never holding more than one.
struct Generated {
    next: u64,
    total: u64,
    line: Vec<u8>,
    at: usize,
}

impl AsyncRead for Generated {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        while buf.remaining() > 0 {
            if self.at == self.line.len() {
                if self.next == self.total {
                    break;
                }
                let n = self.next;
                self.line =
                    format!("user{n}@million.test,,unsubscribe,list-{}\n", n % 7).into_bytes();
                (self.at, self.next) = (0, n + 1);
            }
            let take = buf.remaining().min(self.line.len() - self.at);
            buf.put_slice(&self.line[self.at..self.at + take]);
            self.at += take;
        }
        Poll::Ready(Ok(()))
    }
}

fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_million_line_csv_imports_in_seconds_with_bounded_memory() {
    let dir = tempfile::tempdir().unwrap();
    let state = open(&dir);
    let header = "address,scope,reason,source\n".as_bytes();
    let lines = Generated {
        next: 0,
        total: 1_000_000,
        line: Vec::new(),
        at: 0,
    };
    let reader = BufReader::new(tokio::io::AsyncReadExt::chain(header, lines));
    let started = Instant::now();
    let report = import(&state, reader, Format::Csv, defaults())
        .await
        .unwrap();
    let elapsed = started.elapsed();
    let peak = peak_rss_kib();
    eprintln!(
        "imported {} lines in {elapsed:?}; peak RSS {peak:?} KiB",
        report.imported
    );
    assert_eq!((report.imported, report.rejected_total), (1_000_000, 0));
    assert!(elapsed < Duration::from_secs(120), "took {elapsed:?}");
    // The whole list as entries would be several hundred MB on top of the store's buffers.
    assert!(
        peak.is_none_or(|kib| kib < 1024 * 1024),
        "peak RSS {peak:?} KiB"
    );
    let probe = [Address::parse("user999999@million.test").unwrap()];
    let found = state
        .check_suppressed(&Tenant::new("acme").unwrap(), &probe)
        .await
        .unwrap();
    assert_eq!(found[0].as_ref().map(|e| e.source.as_str()), Some("list-0"));
}
