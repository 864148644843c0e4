//! Streaming import and export of suppression lists, for any [`State`] backend. Neither
//! holds the list in memory: import reads a line at a time and suppresses in batches of
//! [`BATCH`]; export pages through [`State::list_suppressions`].
//!
//! # Formats
//! One entry per line, UTF-8, `\n` or `\r\n` line ends; blank lines are skipped. The
//! fields, all but `address` optional (an empty or missing one takes the import's default):
//!
//! | field     | value                                                                      |
//! |-----------|----------------------------------------------------------------------------|
//! | `address` | a mailbox; stored in normal form (domain lower-cased A-label)              |
//! | `scope`   | `global`, `tenant:NAME` or `NAME`                                          |
//! | `reason`  | `hard-bounce`, `soft-bounces`, `complaint`, `unsubscribe`, `manual` (any case, `_` for `-`) |
//! | `source`  | free text (what caused the entry)                                          |
//! | `created` | RFC 3339 in UTC (`2025-01-31T12:00:00Z`, any fraction) or Unix seconds; default: the import's start |
//! | `expires` | same forms; none means the entry never expires                             |
//!
//! **CSV** ([`Format::Csv`]): the first line is a header naming the columns present, in any
//! order (`address,scope,reason,source,created,expires` is what export writes;
//! `kurir admin suppression export` leaves out `scope`, as its file holds one list). A file
//! whose first line starts with an address has no header: its columns are
//! `address,reason,source`, so a plain list of addresses is a valid file. Fields containing
//! `,` or `"` are quoted, `"` doubled inside (RFC 4180); a record is one line (export
//! writes line breaks inside `source` as spaces). When `source` is the last column it is
//! the rest of the line, and its commas need no quotes.
//!
//! **JSON lines** ([`Format::JsonLines`]): one object per line with the same field names;
//! times are strings in RFC 3339 or numbers of Unix seconds; `expires` may be `null`;
//! other fields are ignored.
//!
//! Export writes times in RFC 3339 with nanoseconds, so `import(export(x))` restores every
//! entry exactly.
//!
//! A bad line (unparsable, invalid address, unknown tenant, longer than [`MAX_LINE`]) is
//! reported in [`ImportReport::rejected`] with its line number and skipped; only a failing
//! store or reader ends an import early (entries of the batches already written stay).

mod format;
#[cfg(test)]
mod tests;

use std::collections::HashSet;
use std::time::SystemTime;

use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncWrite, AsyncWriteExt};

use crate::State;

pub use self::format::{Parser, header, render};
use crate::error::StateError;
use crate::model::{Reason, Scope, Suppression, Tenant};

/// Entries written per [`State::suppress`] call.
pub const BATCH: usize = 10_000;
/// Rejected lines listed in a report (all are counted).
pub const MAX_REPORTED: usize = 100;
/// The longest line accepted, in bytes.
pub const MAX_LINE: usize = 16 * 1024;
/// Entries read per page on export.
const EXPORT_PAGE: usize = 1_000;

/// The file format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Csv,
    JsonLines,
}

/// What an import uses for fields a line leaves out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportDefaults {
    pub scope: Scope,
    pub reason: Reason,
    pub source: String,
}

/// The outcome of an import.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImportReport {
    /// Entries written.
    pub imported: u64,
    /// Up to [`MAX_REPORTED`] rejected lines, in line order: 1-based line number and why.
    pub rejected: Vec<(u64, StateError)>,
    /// Every rejected line.
    pub rejected_total: u64,
}

impl ImportReport {
    fn reject(&mut self, line: u64, error: StateError) {
        self.rejected_total += 1;
        if self.rejected.len() < MAX_REPORTED {
            self.rejected.push((line, error));
        }
    }
}

/// Why an import or export stopped.
#[derive(Debug, thiserror::Error)]
pub enum BulkError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error("reading the input: {0}")]
    Read(std::io::Error),
    #[error("writing the output: {0}")]
    Write(std::io::Error),
    /// The CSV header names an unknown column or lacks `address`.
    #[error("bad CSV header: {0}")]
    Header(String),
}

/// Imports suppression entries from `reader`.
pub async fn import<S: State, R: AsyncBufRead + Unpin>(
    state: &S,
    reader: R,
    format: Format,
    defaults: ImportDefaults,
) -> Result<ImportReport, BulkError> {
    let mut lines = Lines {
        reader,
        buf: Vec::new(),
        number: 0,
    };
    let mut parser = Parser::new(format, defaults, SystemTime::now());
    let mut batch = Batch::default();
    let mut report = ImportReport::default();
    while let Some((number, line)) = lines.next().await? {
        let entry = match line {
            Ok(text) => parser.parse(text)?,
            Err(error) => Some(Err(error)),
        };
        match entry {
            None => {}
            Some(Ok(entry)) if batch.refuses(&entry) => {
                report.reject(number, StateError::UnknownTenant(entry.scope.to_string()));
            }
            Some(Ok(entry)) => batch.push(number, entry),
            Some(Err(error)) => report.reject(number, error),
        }
        if batch.entries.len() >= BATCH {
            batch.flush(state, &mut report).await?;
        }
    }
    batch.flush(state, &mut report).await?;
    // Lines the store refused are found at flush time, after later parse errors.
    report.rejected.sort_by_key(|(line, _)| *line);
    Ok(report)
}

/// Exports the entries of `scope` to `writer`; returns how many it wrote.
pub async fn export<S: State, W: AsyncWrite + Unpin>(
    state: &S,
    scope: &Scope,
    mut writer: W,
    format: Format,
) -> Result<u64, BulkError> {
    let write_err = BulkError::Write;
    if let Some(header) = header(format, true) {
        writer
            .write_all(format!("{header}\n").as_bytes())
            .await
            .map_err(write_err)?;
    }
    let (mut cursor, mut count, mut out) = (String::new(), 0u64, String::new());
    loop {
        let page = state.list_suppressions(scope, &cursor, EXPORT_PAGE).await?;
        out.clear();
        for entry in &page.items {
            render(entry, format, true, &mut out);
        }
        writer.write_all(out.as_bytes()).await.map_err(write_err)?;
        count += page.items.len() as u64;
        match page.next {
            Some(next) => cursor = next,
            None => break,
        }
    }
    writer.flush().await.map_err(write_err)?;
    Ok(count)
}

/// Reads lines of at most [`MAX_LINE`] bytes; a longer one is skipped and reported.
struct Lines<R> {
    reader: R,
    buf: Vec<u8>,
    number: u64,
}

impl<R: AsyncBufRead + Unpin> Lines<R> {
    /// The next line and its number.
    async fn next(&mut self) -> Result<Option<(u64, Result<&str, StateError>)>, BulkError> {
        self.buf.clear();
        let mut too_long = false;
        loop {
            let chunk = self.reader.fill_buf().await.map_err(BulkError::Read)?;
            if chunk.is_empty() {
                if self.buf.is_empty() && !too_long {
                    return Ok(None);
                }
                break;
            }
            let (take, done) = match chunk.iter().position(|b| *b == b'\n') {
                Some(at) => (at + 1, true),
                None => (chunk.len(), false),
            };
            if self.buf.len() + take > MAX_LINE + 2 {
                too_long = true;
                self.buf.clear();
            } else {
                self.buf.extend_from_slice(&chunk[..take]);
            }
            self.reader.consume(take);
            if done {
                break;
            }
        }
        self.number += 1;
        if too_long {
            let error = StateError::invalid("line", format!("longer than {MAX_LINE} bytes"));
            return Ok(Some((self.number, Err(error))));
        }
        let text =
            std::str::from_utf8(&self.buf).map_err(|_| StateError::invalid("line", "not UTF-8"));
        Ok(Some((
            self.number,
            text.map(|t| t.trim_end_matches(['\n', '\r'])),
        )))
    }
}

/// Pending entries and their line numbers.
#[derive(Default)]
struct Batch {
    lines: Vec<u64>,
    entries: Vec<Suppression>,
    /// Tenants the store refused: later lines naming them are rejected without a try.
    unknown: HashSet<Scope>,
}

impl Batch {
    fn refuses(&self, entry: &Suppression) -> bool {
        self.unknown.contains(&entry.scope)
    }

    fn push(&mut self, line: u64, entry: Suppression) {
        self.lines.push(line);
        self.entries.push(entry);
    }

    /// Writes the batch. Lines the store refuses are rejected, the rest written: an
    /// unknown tenant takes out its lines and the batch is tried again; another refusal
    /// falls back to one line at a time to find the culprits.
    async fn flush<S: State>(
        &mut self,
        state: &S,
        report: &mut ImportReport,
    ) -> Result<(), StateError> {
        while !self.entries.is_empty() {
            match state.suppress(&self.entries).await {
                Ok(()) => {
                    report.imported += self.entries.len() as u64;
                    self.lines.clear();
                    self.entries.clear();
                }
                Err(error) if error.is_retryable() => return Err(error),
                Err(StateError::UnknownTenant(name)) if self.drop_tenant(&name, report) => {}
                Err(_) => return self.one_by_one(state, report).await,
            }
        }
        Ok(())
    }

    /// Rejects the lines of tenant `name`; false if there were none.
    fn drop_tenant(&mut self, name: &str, report: &mut ImportReport) -> bool {
        let Ok(tenant) = Tenant::new(name) else {
            return false;
        };
        let scope = Scope::Tenant(tenant);
        let before = self.entries.len();
        let (mut lines, mut entries) = (Vec::new(), Vec::new());
        for (line, entry) in self.lines.drain(..).zip(self.entries.drain(..)) {
            if entry.scope == scope {
                report.reject(line, StateError::UnknownTenant(name.to_owned()));
            } else {
                lines.push(line);
                entries.push(entry);
            }
        }
        (self.lines, self.entries) = (lines, entries);
        self.unknown.insert(scope);
        self.entries.len() < before
    }

    async fn one_by_one<S: State>(
        &mut self,
        state: &S,
        report: &mut ImportReport,
    ) -> Result<(), StateError> {
        for (line, entry) in self.lines.drain(..).zip(self.entries.drain(..)) {
            match state.suppress(std::slice::from_ref(&entry)).await {
                Ok(()) => report.imported += 1,
                Err(error) if error.is_retryable() => return Err(error),
                Err(error) => report.reject(line, error),
            }
        }
        Ok(())
    }
}
