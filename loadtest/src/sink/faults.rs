//! Fault injection: what the sink answers instead of "250", and when.
//!
//! - Per recipient, at RCPT: [`RcptRule`]s by address pattern first (the first that
//!   matches applies; a `once` rule refuses an address only the first time it is seen, like
//!   greylisting), then the [`RateFault`]s by chance, rejects before defers.
//! - Per transaction, after the data: `latency` before the reply, and with probability
//!   `disconnect` the connection is closed instead of replying (the message is not
//!   counted: the client was never told it was accepted).

use std::collections::HashSet;
use std::str::FromStr;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{Context as _, bail};
use serde::{Deserialize, Serialize};

/// A reply code given to a share of recipients: `550:5.1.1:0.05` (code, enhanced code,
/// probability) or `451:0.02` (the enhanced code follows from the code).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateFault {
    pub code: u16,
    pub enhanced: String,
    /// Probability per recipient, 0 to 1.
    pub rate: f64,
}

impl FromStr for RateFault {
    type Err = anyhow::Error;

    fn from_str(text: &str) -> anyhow::Result<Self> {
        let parts: Vec<&str> = text.split(':').collect();
        let (code, enhanced, rate) = match parts[..] {
            [code, rate] => (code, None, rate),
            [code, enhanced, rate] => (code, Some(enhanced), rate),
            _ => bail!("{text:?}: expected CODE[:ENHANCED]:RATE, e.g. 550:5.1.1:0.05"),
        };
        let code = parse_code(code)?;
        let rate: f64 = rate
            .parse()
            .with_context(|| format!("{text:?}: the rate is not a number"))?;
        if !(0.0..=1.0).contains(&rate) {
            bail!("{text:?}: the rate is a probability, from 0 to 1");
        }
        let enhanced = enhanced_or_default(code, enhanced)?;
        Ok(Self {
            code,
            enhanced,
            rate,
        })
    }
}

/// A reply code for recipients matching a pattern: `bounce-*=550`,
/// `grey-*=451:4.7.1:once`. The pattern matches the whole address, case-insensitively;
/// `*` is any run of characters, `?` one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RcptRule {
    pub pattern: String,
    pub code: u16,
    pub enhanced: String,
    /// Refuse each matching address only the first time.
    pub once: bool,
}

impl FromStr for RcptRule {
    type Err = anyhow::Error;

    fn from_str(text: &str) -> anyhow::Result<Self> {
        let (pattern, reply) = text
            .rsplit_once('=')
            .with_context(|| format!("{text:?}: expected PATTERN=CODE[:ENHANCED][:once]"))?;
        let pattern = pattern.trim().trim_matches(|c| c == '\'' || c == '"');
        if pattern.is_empty() {
            bail!("{text:?}: the pattern is empty");
        }
        let mut parts: Vec<&str> = reply.split(':').collect();
        let once = parts.last() == Some(&"once");
        if once {
            parts.pop();
        }
        let (code, enhanced) = match parts[..] {
            [code] => (parse_code(code)?, None),
            [code, enhanced] => (parse_code(code)?, Some(enhanced)),
            _ => bail!("{text:?}: expected PATTERN=CODE[:ENHANCED][:once]"),
        };
        Ok(Self {
            pattern: pattern.to_ascii_lowercase(),
            code,
            enhanced: enhanced_or_default(code, enhanced)?,
            once,
        })
    }
}

fn parse_code(text: &str) -> anyhow::Result<u16> {
    match text.trim().parse::<u16>() {
        Ok(code) if (400..600).contains(&code) => Ok(code),
        _ => bail!("{text:?} is not a 4xx or 5xx reply code"),
    }
}

/// The given enhanced code (its class must match the code's), or one that fits the code.
fn enhanced_or_default(code: u16, enhanced: Option<&str>) -> anyhow::Result<String> {
    let class = (code / 100).to_string();
    match enhanced {
        Some(e) if e.starts_with(&class) && e.split('.').count() == 3 => Ok(e.to_owned()),
        Some(e) => {
            bail!("{e:?} is not an enhanced status code of class {class} (e.g. {class}.1.1)")
        }
        None => Ok(match code {
            421 => "4.3.2",
            450 | 451 => "4.3.0",
            452 => "4.2.2",
            550 | 551 | 553 => "5.1.1",
            552 => "5.2.2",
            554 => "5.7.1",
            _ if code < 500 => "4.0.0",
            _ => "5.0.0",
        }
        .to_owned()),
    }
}

/// Everything the sink does besides accepting.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Faults {
    /// Permanent refusals by chance (5xx).
    pub reject: Vec<RateFault>,
    /// Temporary refusals by chance (4xx).
    pub defer: Vec<RateFault>,
    /// Refusals by recipient pattern, tried first.
    pub rcpt: Vec<RcptRule>,
    /// Wait this long before the reply after the data.
    #[serde(with = "humantime_serde")]
    pub latency: Duration,
    /// Probability per transaction of closing the connection instead of the reply after the
    /// data.
    pub disconnect: f64,
}

impl Faults {
    /// Checks the probabilities.
    pub fn validate(&self) -> anyhow::Result<()> {
        let total: f64 = self.reject.iter().chain(&self.defer).map(|f| f.rate).sum();
        if total > 1.0 {
            bail!("reject and defer rates add up to {total}, more than 1");
        }
        if !(0.0..=1.0).contains(&self.disconnect) {
            bail!("the disconnect rate is a probability, from 0 to 1");
        }
        Ok(())
    }
}

/// A refusal the sink gives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refusal {
    pub(crate) code: u16,
    pub(crate) enhanced: String,
}

impl Refusal {
    /// The reply line.
    pub(crate) fn line(&self, rcpt: &str) -> String {
        let text = if self.code >= 500 {
            format!("<{rcpt}>: mailbox unavailable (injected by kurir-loadtest sink)")
        } else {
            "temporary failure (injected by kurir-loadtest sink)".to_owned()
        };
        format!("{} {} {text}\r\n", self.code, self.enhanced)
    }

    /// `550 5.1.1`, as reports group them.
    pub(crate) fn key(&self) -> String {
        format!("{} {}", self.code, self.enhanced)
    }
}

/// The faults of a running sink, with what `once` rules have seen.
#[derive(Debug, Default)]
pub(crate) struct FaultState {
    pub(crate) faults: Faults,
    seen: Mutex<HashSet<String>>,
}

impl FaultState {
    pub(crate) fn new(faults: Faults) -> Self {
        Self {
            faults,
            seen: Mutex::default(),
        }
    }

    /// What to answer to RCPT of `rcpt` (`None`: accept).
    pub(crate) fn at_rcpt(&self, rcpt: &str, rng: &mut fastrand::Rng) -> Option<Refusal> {
        let lower = rcpt.to_ascii_lowercase();
        if let Some(rule) = self.faults.rcpt.iter().find(|r| glob(&r.pattern, &lower)) {
            let refuse = !rule.once || {
                let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
                seen.insert(lower)
            };
            return refuse.then(|| Refusal {
                code: rule.code,
                enhanced: rule.enhanced.clone(),
            });
        }
        let mut roll = rng.f64();
        for fault in self.faults.reject.iter().chain(&self.faults.defer) {
            if roll < fault.rate {
                return Some(Refusal {
                    code: fault.code,
                    enhanced: fault.enhanced.clone(),
                });
            }
            roll -= fault.rate;
        }
        None
    }

    /// Whether to hang up instead of replying to this transaction's data.
    pub(crate) fn disconnect(&self, rng: &mut fastrand::Rng) -> bool {
        self.faults.disconnect > 0.0 && rng.f64() < self.faults.disconnect
    }
}

/// `*` any run, `?` one character; the whole text must match.
pub(crate) fn glob(pattern: &str, text: &str) -> bool {
    let (p, t) = (pattern.as_bytes(), text.as_bytes());
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == b'?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_parse() {
        let f: RateFault = "550:5.1.1:0.05".parse().unwrap();
        assert_eq!((f.code, f.enhanced.as_str(), f.rate), (550, "5.1.1", 0.05));
        let f: RateFault = "451:0.02".parse().unwrap();
        assert_eq!((f.code, f.enhanced.as_str()), (451, "4.3.0"));
        assert!("250:0.1".parse::<RateFault>().is_err());
        assert!("550:4.1.1:0.1".parse::<RateFault>().is_err());
        assert!("550:1.5".parse::<RateFault>().is_err());
        let r: RcptRule = "'Bounce*'=550".parse().unwrap();
        assert_eq!(
            (r.pattern.as_str(), r.code, r.once),
            ("bounce*", 550, false)
        );
        let r: RcptRule = "grey-*=451:4.3.0:once".parse().unwrap();
        assert_eq!((r.code, r.enhanced.as_str(), r.once), (451, "4.3.0", true));
        assert!("bounce*".parse::<RcptRule>().is_err());
    }

    #[test]
    fn globs_match_whole_addresses() {
        assert!(glob("bounce*", "bounce-1.0@d1.load.test"));
        assert!(glob("*@d1.load.test", "user-1@d1.load.test"));
        assert!(glob("u?er*", "user"));
        assert!(!glob("bounce*", "user-bounce"));
        assert!(!glob("*.test", "a.test.x"));
        assert!(glob("*", ""));
    }

    #[test]
    fn once_rules_refuse_an_address_only_the_first_time() {
        let state = FaultState::new(Faults {
            rcpt: vec![
                "grey*=451:once".parse().unwrap(),
                "bad*=550".parse().unwrap(),
            ],
            ..Faults::default()
        });
        let mut rng = fastrand::Rng::with_seed(1);
        assert!(state.at_rcpt("grey-1@x.test", &mut rng).is_some());
        assert!(state.at_rcpt("GREY-1@x.test", &mut rng).is_none());
        assert!(state.at_rcpt("grey-2@x.test", &mut rng).is_some());
        assert!(state.at_rcpt("bad-1@x.test", &mut rng).is_some());
        assert!(state.at_rcpt("bad-1@x.test", &mut rng).is_some());
        assert!(state.at_rcpt("user-1@x.test", &mut rng).is_none());
    }
}
