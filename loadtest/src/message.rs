//! What is sent: message sizes ([`SizeMix`]), recipients ([`RecipientPlan`]), the
//! [`Stamp`] header, and the message text itself.
//!
//! Messages are plain ASCII with CRLF line ends, no line longer than 78 octets and none
//! starting with a dot, so they need no dot-stuffing and pass any SMTP server unchanged.
//! Bodies are shared per size ([`Bodies`]); only the header block is made per message.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail};
use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// The header every load-test message carries: `<run-id> <seq> <unix-nanos-sent>`.
pub const HEADER: &str = "X-Kurir-Loadtest";

/// The largest message size accepted in a size mix.
pub const MAX_SIZE: usize = 64 * 1024 * 1024;

/// A message size distribution: `2k`, `100k`, `1m`, `512`, or a weighted mix
/// `2k:90,100k:10`. `k` and `m` are binary (1024, 1024²).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SizeMix {
    /// (size in octets, weight), weights > 0.
    entries: Vec<(usize, u32)>,
}

impl SizeMix {
    /// One size.
    pub fn fixed(size: usize) -> Self {
        Self {
            entries: vec![(size, 1)],
        }
    }

    /// A size drawn by weight.
    pub fn pick(&self, rng: &mut fastrand::Rng) -> usize {
        let total: u32 = self.entries.iter().map(|(_, w)| w).sum();
        let mut roll = rng.u32(0..total);
        for &(size, weight) in &self.entries {
            if roll < weight {
                return size;
            }
            roll -= weight;
        }
        self.entries[self.entries.len() - 1].0
    }

    /// The mean size in octets.
    pub fn mean(&self) -> f64 {
        let total: f64 = self.entries.iter().map(|(_, w)| f64::from(*w)).sum();
        self.entries
            .iter()
            .map(|(s, w)| *s as f64 * f64::from(*w))
            .sum::<f64>()
            / total
    }
}

impl FromStr for SizeMix {
    type Err = anyhow::Error;

    fn from_str(text: &str) -> anyhow::Result<Self> {
        let mut entries = Vec::new();
        for part in text.split(',').map(str::trim) {
            let (size, weight) = match part.split_once(':') {
                Some((size, weight)) => {
                    let weight: u32 = weight
                        .trim()
                        .parse()
                        .with_context(|| format!("{part:?}: weight must be a whole number"))?;
                    (size, weight)
                }
                None => (part, 1),
            };
            if weight == 0 {
                bail!("{part:?}: weight must be more than 0");
            }
            entries.push((parse_size(size)?, weight));
        }
        Ok(Self { entries })
    }
}

impl fmt::Display for SizeMix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self
            .entries
            .iter()
            .map(|(s, w)| format!("{}:{w}", format_size(*s)))
            .collect();
        f.write_str(&parts.join(","))
    }
}

impl Serialize for SizeMix {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for SizeMix {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// `2k` → 2048, `1m` → 1048576, `300` → 300.
pub fn parse_size(text: &str) -> anyhow::Result<usize> {
    let text = text.trim().to_ascii_lowercase();
    let (digits, unit) = match text.strip_suffix('k') {
        Some(d) => (d, 1024),
        None => match text.strip_suffix('m') {
            Some(d) => (d, 1024 * 1024),
            None => (text.as_str(), 1),
        },
    };
    let n: usize = digits
        .parse()
        .with_context(|| format!("{text:?} is not a size (e.g. 2k, 100k, 1m, 512)"))?;
    let size = n.saturating_mul(unit);
    if size == 0 || size > MAX_SIZE {
        bail!("{text:?}: sizes go from 1 octet to 64m");
    }
    Ok(size)
}

fn format_size(size: usize) -> String {
    if size.is_multiple_of(1024 * 1024) {
        format!("{}m", size / (1024 * 1024))
    } else if size.is_multiple_of(1024) {
        format!("{}k", size / 1024)
    } else {
        size.to_string()
    }
}

/// The `X-Kurir-Loadtest` header of one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stamp {
    /// The run the message belongs to (no spaces).
    pub run_id: String,
    /// The message's number in its run, from 0.
    pub seq: u64,
    /// When it was sent, in nanoseconds since the Unix epoch.
    pub sent_unix_nanos: u128,
}

impl Stamp {
    /// A stamp for message `seq` of `run_id`, sent now.
    pub fn now(run_id: &str, seq: u64) -> Self {
        Self {
            run_id: run_id.to_owned(),
            seq,
            sent_unix_nanos: unix_nanos(SystemTime::now()),
        }
    }

    /// Reads a header value (`<run-id> <seq> <nanos>`, surrounding space ignored).
    pub fn parse(value: &str) -> Option<Self> {
        let mut parts = value.split_ascii_whitespace();
        let run_id = parts.next()?.to_owned();
        let seq = parts.next()?.parse().ok()?;
        let sent_unix_nanos = parts.next()?.parse().ok()?;
        parts.next().is_none().then_some(Self {
            run_id,
            seq,
            sent_unix_nanos,
        })
    }
}

impl fmt::Display for Stamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} {}", self.run_id, self.seq, self.sent_unix_nanos)
    }
}

/// Nanoseconds since the Unix epoch (0 before it).
pub fn unix_nanos(at: SystemTime) -> u128 {
    at.duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

/// A new run id: the time and 32 random bits, in hex.
pub fn new_run_id() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    format!("{secs:x}-{:08x}", fastrand::u32(..))
}

/// A share of recipients whose local part starts with `prefix` (e.g. `bounce-` for a sink
/// rule `--reject-rcpt 'bounce-*'=550`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecipientClass {
    /// The local part's prefix.
    pub prefix: String,
    /// The share of recipients, in percent.
    pub percent: f64,
}

/// A share of recipients replaced by one fixed address (e.g. a suppressed one).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FixedRecipient {
    /// The address.
    pub address: String,
    /// The share of recipients, in percent.
    pub percent: f64,
}

/// `PREFIX:PERCENT` or `ADDRESS:PERCENT`, split at the last colon.
fn split_percent(text: &str) -> anyhow::Result<(String, f64)> {
    let (name, percent) = text
        .rsplit_once(':')
        .with_context(|| format!("{text:?}: expected NAME:PERCENT"))?;
    let percent: f64 = percent
        .parse()
        .with_context(|| format!("{text:?}: the percentage is not a number"))?;
    if !(0.0..=100.0).contains(&percent) || name.is_empty() {
        bail!("{text:?}: expected NAME:PERCENT with 0 <= PERCENT <= 100");
    }
    Ok((name.to_owned(), percent))
}

impl FromStr for RecipientClass {
    type Err = anyhow::Error;

    fn from_str(text: &str) -> anyhow::Result<Self> {
        let (prefix, percent) = split_percent(text)?;
        Ok(Self { prefix, percent })
    }
}

impl FromStr for FixedRecipient {
    type Err = anyhow::Error;

    fn from_str(text: &str) -> anyhow::Result<Self> {
        let (address, percent) = split_percent(text)?;
        if !address.contains('@') {
            bail!("{text:?}: expected ADDRESS:PERCENT");
        }
        Ok(Self { address, percent })
    }
}

/// Who each message goes to. Recipient `j` of message `seq` is
/// `<prefix><seq>.<j>@<domain>`: unique per message, so a hard bounce of one never
/// suppresses another. The domain is `domain_pattern` with `{i}` replaced by a number
/// below `domains`, taken in turn; the prefix is `user-` or a [`RecipientClass`]'s, drawn
/// (reproducibly, from `seq` and `j`) by percentage, after the [`FixedRecipient`]s.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RecipientPlan {
    /// Recipients per message (at least 1).
    pub per_message: u32,
    /// How many recipient domains (at least 1).
    pub domains: u32,
    /// The domain names: `{i}` is the domain's number. Default `d{i}.load.test`.
    pub domain_pattern: String,
    /// Local-part prefixes for shares of the recipients.
    pub classes: Vec<RecipientClass>,
    /// Fixed addresses for shares of the recipients (at most once per message).
    pub fixed: Vec<FixedRecipient>,
}

/// The local-part prefix of recipients in no class.
pub const DEFAULT_PREFIX: &str = "user-";

impl Default for RecipientPlan {
    fn default() -> Self {
        Self {
            per_message: 1,
            domains: 10,
            domain_pattern: "d{i}.load.test".into(),
            classes: Vec::new(),
            fixed: Vec::new(),
        }
    }
}

impl RecipientPlan {
    /// Checks the counts and that shares add up to at most 100 %.
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.per_message == 0 || self.domains == 0 {
            bail!("recipients per message and domains must be at least 1");
        }
        let shares: f64 = self.classes.iter().map(|c| c.percent).sum::<f64>()
            + self.fixed.iter().map(|f| f.percent).sum::<f64>();
        if shares > 100.0 {
            bail!("recipient class and fixed shares add up to {shares}%, more than 100%");
        }
        if !self.domain_pattern.contains('.') {
            bail!("domain pattern {:?} is not a domain", self.domain_pattern);
        }
        Ok(())
    }

    /// The recipients of message `seq`.
    pub fn recipients(&self, seq: u64) -> Vec<String> {
        let per = u64::from(self.per_message);
        let mut out: Vec<String> = Vec::with_capacity(self.per_message as usize);
        for j in 0..per {
            let k = seq * per + j;
            let mut rng = fastrand::Rng::with_seed(k ^ 0x9e37_79b9_7f4a_7c15);
            let mut roll = rng.f64() * 100.0;
            let domain = self
                .domain_pattern
                .replace("{i}", &(k % u64::from(self.domains)).to_string());
            let mut prefix = DEFAULT_PREFIX;
            let mut fixed = None;
            for f in &self.fixed {
                if roll < f.percent {
                    fixed = Some(&f.address);
                    break;
                }
                roll -= f.percent;
            }
            if fixed.is_none() {
                for c in &self.classes {
                    if roll < c.percent {
                        prefix = &c.prefix;
                        break;
                    }
                    roll -= c.percent;
                }
            }
            match fixed {
                Some(address) if !out.contains(address) => out.push(address.clone()),
                _ => out.push(format!("{prefix}{seq}.{j}@{domain}")),
            }
        }
        out
    }
}

/// Message bodies by size, made once and shared.
#[derive(Debug, Default, Clone)]
pub struct Bodies(Arc<Mutex<HashMap<usize, Bytes>>>);

impl Bodies {
    /// A body of `size` octets (CRLF lines of at most 78 octets, none starting with a
    /// dot), at least one line.
    pub fn get(&self, size: usize) -> Bytes {
        let mut bodies = self.0.lock().unwrap_or_else(|e| e.into_inner());
        bodies
            .entry(size)
            .or_insert_with(|| make_body(size))
            .clone()
    }
}

const FILLER: &[u8] =
    b"kurir load test: the quick brown fox jumps over the lazy dog 0123456789 ABCD";

fn make_body(size: usize) -> Bytes {
    let size = size.max(3);
    let mut body = Vec::with_capacity(size);
    let mut left = size;
    while left > 0 {
        let mut n = (left - 2).min(FILLER.len());
        // Leave room for a last line of at least one character and its CRLF.
        let after = left - n - 2;
        if (1..3).contains(&after) {
            n -= 3 - after;
        }
        body.extend_from_slice(&FILLER[..n]);
        body.extend_from_slice(b"\r\n");
        left -= n + 2;
    }
    Bytes::from(body)
}

/// The header block (with the empty line that ends it) of a message from `from` to `to`.
pub fn header_block(from: &str, to: &[String], stamp: &Stamp) -> Vec<u8> {
    let to_header = match to {
        [one] => one.clone(),
        [first, ..] => format!("{first} (and {} more)", to.len() - 1),
        [] => "undisclosed-recipients:;".to_owned(),
    };
    format!(
        "From: <{from}>\r\nTo: <{to_header}>\r\nSubject: kurir-loadtest {run} #{seq}\r\n\
         Message-ID: <{run}.{seq}@kurir-loadtest.test>\r\n{HEADER}: {stamp}\r\n\
         MIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n",
        run = stamp.run_id,
        seq = stamp.seq,
    )
    .into_bytes()
}

/// The whole message (header block, then `body`), for APIs that take it in one piece.
pub fn whole(header: &[u8], body: &[u8]) -> Vec<u8> {
    let mut data = Vec::with_capacity(header.len() + body.len());
    data.extend_from_slice(header);
    data.extend_from_slice(body);
    data
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_mixes_parse_and_pick_by_weight() {
        let mix: SizeMix = "2k:90,100k:10".parse().unwrap();
        assert_eq!(mix.to_string(), "2k:90,100k:10");
        let mut rng = fastrand::Rng::with_seed(7);
        let big = (0..10_000)
            .filter(|_| mix.pick(&mut rng) == 100 * 1024)
            .count();
        assert!((800..1200).contains(&big), "{big}");
        assert_eq!("1m".parse::<SizeMix>().unwrap(), SizeMix::fixed(1 << 20));
        assert!("0k".parse::<SizeMix>().is_err());
        assert!("2k:0".parse::<SizeMix>().is_err());
        assert!("two".parse::<SizeMix>().is_err());
    }

    #[test]
    fn stamps_round_trip() {
        let stamp = Stamp::now("run-1", 42);
        assert_eq!(Stamp::parse(&format!(" {stamp}\r\n")), Some(stamp));
        assert_eq!(Stamp::parse("run 1"), None);
        assert_eq!(Stamp::parse("run 1 2 3"), None);
    }

    #[test]
    fn bodies_have_the_size_and_need_no_dot_stuffing() {
        for size in [1, 2, 3, 77, 78, 79, 2048, 100 * 1024 + 5] {
            let body = make_body(size);
            assert_eq!(body.len(), size.max(3), "{size}");
            assert!(body.ends_with(b"\r\n"));
            for line in body.split(|b| *b == b'\n') {
                assert!(!line.starts_with(b"."));
                assert!(line.len() <= 78);
            }
        }
    }

    #[test]
    fn recipients_are_unique_per_message_and_classes_take_their_share() {
        let plan = RecipientPlan {
            per_message: 2,
            domains: 3,
            classes: vec!["bounce-:10".parse().unwrap()],
            fixed: vec!["blocked@d0.load.test:5".parse().unwrap()],
            ..RecipientPlan::default()
        };
        plan.validate().unwrap();
        assert_eq!(plan.recipients(7), plan.recipients(7));
        let all: Vec<String> = (0..5000).flat_map(|s| plan.recipients(s)).collect();
        let bounce = all.iter().filter(|a| a.starts_with("bounce-")).count();
        let fixed = all.iter().filter(|a| *a == "blocked@d0.load.test").count();
        assert!((800..1200).contains(&bounce), "{bounce}");
        assert!((350..650).contains(&fixed), "{fixed}");
        assert!(all.iter().any(|a| a.ends_with("@d2.load.test")));
        let invalid = RecipientPlan {
            classes: vec!["a-:60".parse().unwrap(), "b-:50".parse().unwrap()],
            ..RecipientPlan::default()
        };
        assert!(invalid.validate().is_err());
    }
}
