//! What `kurir admin` prints: aligned tables for people, JSON for machines.

use std::io::{self, Write};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A table whose columns are as wide as their widest cell, two spaces apart.
#[derive(Debug)]
pub(crate) struct Table {
    header: Vec<&'static str>,
    /// Columns aligned to the right (numbers).
    right: Vec<usize>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub(crate) fn new(header: &[&'static str]) -> Self {
        Self {
            header: header.to_vec(),
            right: Vec::new(),
            rows: Vec::new(),
        }
    }

    /// Aligns these columns to the right.
    pub(crate) fn right(mut self, columns: &[usize]) -> Self {
        self.right = columns.to_vec();
        self
    }

    pub(crate) fn row(&mut self, cells: Vec<String>) {
        debug_assert_eq!(cells.len(), self.header.len());
        self.rows.push(cells);
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    pub(crate) fn len(&self) -> usize {
        self.rows.len()
    }

    pub(crate) fn write(&self, out: &mut dyn Write) -> io::Result<()> {
        let mut widths: Vec<usize> = self.header.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (width, cell) in widths.iter_mut().zip(row) {
                *width = (*width).max(cell.chars().count());
            }
        }
        let header: Vec<String> = self.header.iter().map(|h| (*h).to_owned()).collect();
        for row in std::iter::once(&header).chain(&self.rows) {
            let mut line = String::new();
            for (i, (cell, width)) in row.iter().zip(&widths).enumerate() {
                if i > 0 {
                    line.push_str("  ");
                }
                let pad = width - cell.chars().count();
                if self.right.contains(&i) {
                    line.extend(std::iter::repeat_n(' ', pad));
                    line.push_str(cell);
                } else {
                    line.push_str(cell);
                    line.extend(std::iter::repeat_n(' ', pad));
                }
            }
            writeln!(out, "{}", line.trim_end())?;
        }
        Ok(())
    }
}

/// A time in milliseconds since the Unix epoch as RFC 3339 (UTC, seconds); `zero` for 0.
pub(crate) fn time(unix_ms: i64, zero: &str) -> String {
    match u64::try_from(unix_ms) {
        Ok(0) | Err(_) => zero.to_owned(),
        Ok(ms) => {
            let at = UNIX_EPOCH + Duration::from_millis(ms);
            humantime::format_rfc3339_seconds(at).to_string()
        }
    }
}

/// `duration` from now, as [`time`] prints it.
pub(crate) fn from_now(duration: Duration) -> String {
    let at = SystemTime::now() + duration;
    humantime::format_rfc3339_seconds(at).to_string()
}

/// An empty cell shown as `-`.
pub(crate) fn or_dash(text: &str) -> String {
    if text.is_empty() {
        "-".to_owned()
    } else {
        text.to_owned()
    }
}

/// One JSON document on one line.
pub(crate) fn json(out: &mut dyn Write, value: &serde_json::Value) -> io::Result<()> {
    serde_json::to_writer(&mut *out, value)?;
    writeln!(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_columns() {
        let mut table = Table::new(&["NAME", "N", "NOTE"]).right(&[1]);
        table.row(vec!["a".into(), "100".into(), "".into()]);
        table.row(vec!["longer".into(), "2".into(), "x".into()]);
        let mut out = Vec::new();
        table.write(&mut out).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "NAME      N  NOTE\na       100\nlonger    2  x\n"
        );
    }

    #[test]
    fn times_are_rfc3339() {
        assert_eq!(time(0, "never"), "never");
        assert_eq!(time(1_700_000_000_123, "-"), "2023-11-14T22:13:20Z");
    }
}
