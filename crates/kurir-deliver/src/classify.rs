//! Bounce classification: a permanent failure's reply → [`BounceClass`].
//!
//! CONTRACT (owned by the bounce helper): the built-in table is data (a `static` slice of
//! rules, documented in `docs/bounces.md` with one row per rule), tried after the rules
//! from `[[deliver.bounce_rules]]`. A rule matches on the enhanced status code (exact
//! `5.1.1` or with a wildcard detail/subject `5.7.*`), on the basic code, and/or on a
//! case-insensitive substring of the reply text; all given conditions must hold. Text
//! rules come before code rules in the built-in table where a text is more specific (e.g.
//! "spamhaus", "blocked" with 5.7.1 → spam; "quota" / "mailbox full" → quota). No rule
//! matches → `BounceClass::Other`.
//!
//! The built-in table has three tiers, in this order:
//! 1. texts that say more than any code (a full mailbox is soft even when the server
//!    calls it 5.1.1; a 5.7.x refusal that names spam or a blocklist is about reputation);
//! 2. enhanced status codes (RFC 3463), most specific first;
//! 3. texts alone, for servers that send no enhanced code (or only `5.0.0`).
//!
//! Misreading a soft failure as hard suppresses a working address, so where a text and a
//! code disagree the table errs towards the soft class.

use kurir_core::BounceClass;
use kurir_core::BounceClass::{
    BadDomain, BadMailbox, Content, Other, Policy, Protocol, Quota, Routing, Spam, TooLarge,
};
use serde::{Deserialize, Serialize};

use crate::reply::RemoteReply;

/// One classification rule (`[[deliver.bounce_rules]]`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ClassifyRule {
    /// Enhanced status code: `5.1.1`, `5.7.*`, `5.*.*`.
    #[serde(default)]
    pub status: Option<String>,
    /// Basic reply code, e.g. 552.
    #[serde(default)]
    pub code: Option<u16>,
    /// Case-insensitive substring of the reply text.
    #[serde(default)]
    pub text: Option<String>,
    /// The class: `bad_mailbox`, `bad_domain`, `policy`, `spam`, `quota`, `too_large`,
    /// `content`, `protocol`, `routing`, `other`.
    pub class: String,
}

impl ClassifyRule {
    /// A description of what is wrong, for a config error.
    pub fn validate(&self) -> Result<(), String> {
        self.compile().map(drop)
    }

    fn compile(&self) -> Result<Rule, String> {
        if self.status.is_none() && self.code.is_none() && self.text.is_none() {
            return Err("a rule needs at least one of status, code or text".to_owned());
        }
        let status = match &self.status {
            Some(s) => Some(StatusPattern::parse(s).ok_or_else(|| {
                format!(
                    "status {s:?} is not an enhanced status code: expected \
                     class.subject.detail like 5.1.1 or 5.7.*, class 2, 4 or 5"
                )
            })?),
            None => None,
        };
        if let Some(code) = self.code
            && !(200..=599).contains(&code)
        {
            return Err(format!("code {code} is not an SMTP reply code (200-599)"));
        }
        let text = match &self.text {
            Some(t) if t.trim().is_empty() => {
                return Err("text must not be empty".to_owned());
            }
            Some(t) => Some(t.to_lowercase()),
            None => None,
        };
        Ok(Rule {
            status,
            code: self.code,
            text,
            class: parse_rule_class(&self.class)?,
        })
    }
}

/// A rule's `class`: a [`BounceClass`] name with `_` or `-` (`bad_mailbox`,
/// `bad-mailbox`); `expired` is not allowed since it comes from a message's age, not
/// from a reply.
fn parse_rule_class(name: &str) -> Result<BounceClass, String> {
    let class = name
        .replace('_', "-")
        .parse::<BounceClass>()
        .ok()
        .filter(|c| *c != BounceClass::Expired);
    class.ok_or_else(|| {
        let names: Vec<String> = BounceClass::ALL
            .into_iter()
            .filter(|c| *c != BounceClass::Expired)
            .map(|c| c.as_str().replace('-', "_"))
            .collect();
        format!("class {name:?} is not one of {}", names.join(", "))
    })
}

/// An enhanced status code pattern: `None` parts are `*`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct StatusPattern {
    class: u8,
    subject: Option<u16>,
    detail: Option<u16>,
}

impl StatusPattern {
    /// `class.subject.detail`: class 2, 4 or 5; subject and detail 1-3 digits or `*`.
    fn parse(input: &str) -> Option<Self> {
        let mut parts = input.trim().split('.');
        let (class, subject, detail) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() {
            return None;
        }
        let class = match class {
            "2" => 2,
            "4" => 4,
            "5" => 5,
            _ => return None,
        };
        let part = |p: &str| -> Option<Option<u16>> {
            match p {
                "*" => Some(None),
                _ if (1..=3).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit()) => {
                    p.parse().ok().map(Some)
                }
                _ => None,
            }
        };
        Some(Self {
            class,
            subject: part(subject)?,
            detail: part(detail)?,
        })
    }

    /// Whether a reply's enhanced code (`5.1.1`) matches.
    fn matches(&self, enhanced: &str) -> bool {
        let mut parts = enhanced.trim().split('.').map(|p| p.parse::<u16>().ok());
        let (Some(Some(class)), Some(Some(subject)), Some(Some(detail)), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return false;
        };
        class == u16::from(self.class)
            && self.subject.is_none_or(|s| s == subject)
            && self.detail.is_none_or(|d| d == detail)
    }
}

/// A rule ready to match: text lowercased, status parsed.
#[derive(Debug, Clone)]
struct Rule {
    status: Option<StatusPattern>,
    code: Option<u16>,
    /// Lowercase.
    text: Option<String>,
    class: BounceClass,
}

impl Rule {
    /// `lower_text` is the reply's text, lowercased.
    fn matches(&self, reply: &RemoteReply, lower_text: &str) -> bool {
        self.code.is_none_or(|c| c == reply.code)
            && self.status.is_none_or(|pattern| {
                reply
                    .enhanced
                    .as_deref()
                    .is_some_and(|e| pattern.matches(e))
            })
            && self
                .text
                .as_deref()
                .is_none_or(|needle| lower_text.contains(needle))
    }
}

/// One row of the built-in table. Texts are lowercase.
#[derive(Debug, Clone, Copy)]
struct Builtin {
    status: Option<&'static str>,
    code: Option<u16>,
    text: Option<&'static str>,
    class: BounceClass,
}

const fn text(text: &'static str, class: BounceClass) -> Builtin {
    Builtin {
        status: None,
        code: None,
        text: Some(text),
        class,
    }
}

const fn status(status: &'static str, class: BounceClass) -> Builtin {
    Builtin {
        status: Some(status),
        code: None,
        text: None,
        class,
    }
}

const fn status_text(status: &'static str, text: &'static str, class: BounceClass) -> Builtin {
    Builtin {
        status: Some(status),
        code: None,
        text: Some(text),
        class,
    }
}

/// The built-in table, first match wins. `docs/bounces.md` has one row per entry: keep
/// them in step.
static BUILTIN: &[Builtin] = &[
    // Tier 1: texts that override the code.
    text("quota", Quota),
    text("mailbox full", Quota),
    text("mailbox is full", Quota),
    text("virus", Content),
    status_text("5.7.*", "spam", Spam),
    status_text("5.7.*", "blacklist", Spam),
    status_text("5.7.*", "blocklist", Spam),
    status_text("5.7.*", "rbl", Spam),
    status_text("5.7.*", "reputation", Spam),
    status_text("5.7.*", "blocked", Spam),
    status_text("5.7.*", "content", Content),
    status_text("5.5.6", "international", Protocol),
    // Tier 2: enhanced status codes.
    status("5.1.0", BadMailbox),
    status("5.1.1", BadMailbox),
    status("5.1.3", BadMailbox),
    status("5.1.6", BadMailbox),
    status("5.1.2", BadDomain),
    status("5.1.10", BadDomain),
    status("5.4.4", BadDomain),
    status("5.1.8", Policy),
    status("5.2.2", Quota),
    status("5.2.3", TooLarge),
    status("5.3.4", TooLarge),
    status("5.6.3", Protocol),
    status("5.6.7", Protocol),
    status("5.6.8", Protocol),
    status("5.6.9", Protocol),
    status("5.5.*", Protocol),
    status("5.6.*", Content),
    status("5.7.*", Policy),
    status("5.4.*", Routing),
    // Tier 3: texts alone, for replies without a telling enhanced code.
    text("domain not found", BadDomain),
    text("domain name not found", BadDomain),
    text("no such domain", BadDomain),
    text("domain does not exist", BadDomain),
    text("user unknown", BadMailbox),
    text("unknown user", BadMailbox),
    text("no such user", BadMailbox),
    text("no such mailbox", BadMailbox),
    text("recipient unknown", BadMailbox),
    text("unknown recipient", BadMailbox),
    text("invalid recipient", BadMailbox),
    text("mailbox not found", BadMailbox),
    text("mailbox unavailable", BadMailbox),
    text("does not exist", BadMailbox),
    text("spam", Spam),
    text("blacklist", Spam),
    text("blocklist", Spam),
    text("reputation", Spam),
    text("mailbox size", Quota),
    text("too large", TooLarge),
    text("too big", TooLarge),
    text("size", TooLarge),
    text("smtputf8", Protocol),
    text("international", Protocol),
    text("content", Content),
];

impl Builtin {
    fn compile(&self) -> Rule {
        Rule {
            status: self.status.and_then(StatusPattern::parse),
            code: self.code,
            text: self.text.map(str::to_owned),
            class: self.class,
        }
    }
}

/// The classifier: config rules first, then the built-in table.
#[derive(Debug, Clone)]
pub struct Classifier {
    /// The config rules, then the built-in ones.
    rules: Vec<Rule>,
}

impl Classifier {
    /// `extra` must have passed [`ClassifyRule::validate`]; a rule that did not is left
    /// out (with an error log) rather than matched half.
    pub fn new(extra: &[ClassifyRule]) -> Self {
        let mut rules = Vec::with_capacity(extra.len() + BUILTIN.len());
        for (index, rule) in extra.iter().enumerate() {
            match rule.compile() {
                Ok(rule) => rules.push(rule),
                Err(error) => tracing::error!(index, %error, "invalid bounce rule left out"),
            }
        }
        rules.extend(BUILTIN.iter().map(Builtin::compile));
        Self { rules }
    }

    pub fn classify(&self, reply: &RemoteReply) -> BounceClass {
        let lower_text = reply.text.to_lowercase();
        self.rules
            .iter()
            .find(|rule| rule.matches(reply, &lower_text))
            .map_or(Other, |rule| rule.class)
    }
}

impl Default for Classifier {
    /// The built-in table alone.
    fn default() -> Self {
        Self::new(&[])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn classify(code: u16, enhanced: Option<&str>, text: &str) -> BounceClass {
        Classifier::default().classify(&RemoteReply::new(code, enhanced, text))
    }

    fn rule(
        status: Option<&str>,
        code: Option<u16>,
        text: Option<&str>,
        class: &str,
    ) -> ClassifyRule {
        ClassifyRule {
            status: status.map(str::to_owned),
            code,
            text: text.map(str::to_owned),
            class: class.to_owned(),
        }
    }

    #[test]
    fn builtin_rows_are_well_formed() {
        for (i, row) in BUILTIN.iter().enumerate() {
            assert!(
                row.status.is_some() || row.code.is_some() || row.text.is_some(),
                "row {i} matches everything"
            );
            if let Some(s) = row.status {
                assert!(StatusPattern::parse(s).is_some(), "row {i}: bad status {s}");
            }
            if let Some(t) = row.text {
                assert_eq!(t, t.to_lowercase(), "row {i}: text must be lowercase");
                assert!(!t.trim().is_empty(), "row {i}: empty text");
            }
            assert_ne!(row.class, BounceClass::Expired, "row {i}");
        }
    }

    #[test]
    fn no_builtin_row_is_shadowed_by_an_earlier_one() {
        // A row is dead when an earlier row matches everything it matches: every
        // condition of the earlier row is implied by the later one's.
        for (i, later) in BUILTIN.iter().enumerate() {
            for (j, earlier) in BUILTIN[..i].iter().enumerate() {
                let status_implied = match (earlier.status, later.status) {
                    (None, _) => true,
                    (Some(_), None) => false,
                    (Some(e), Some(l)) => {
                        let (e, l) = (
                            StatusPattern::parse(e).unwrap(),
                            StatusPattern::parse(l).unwrap(),
                        );
                        e.class == l.class
                            && (e.subject.is_none() || e.subject == l.subject)
                            && (e.detail.is_none() || e.detail == l.detail)
                    }
                };
                let code_implied = earlier.code.is_none() || earlier.code == later.code;
                let text_implied = match (earlier.text, later.text) {
                    (None, _) => true,
                    (Some(_), None) => false,
                    (Some(e), Some(l)) => l.contains(e),
                };
                assert!(
                    !(status_implied && code_implied && text_implied),
                    "row {i} ({later:?}) is shadowed by row {j} ({earlier:?})"
                );
            }
        }
    }

    #[test]
    fn docs_list_the_builtin_rules_in_order() {
        let docs = include_str!("../../../docs/bounces.md");
        let section = docs
            .split("## Built-in rules")
            .nth(1)
            .and_then(|s| s.split("\n## ").next())
            .expect("a Built-in rules section");
        // `| # | status | text | class | why |` rows, header and separator skipped.
        let rows: Vec<(Option<String>, Option<String>, String)> = section
            .lines()
            .filter(|l| l.starts_with("| ") && l.as_bytes().get(2).is_some_and(u8::is_ascii_digit))
            .map(|l| {
                let cells: Vec<&str> = l.split('|').map(str::trim).collect();
                let cell = |s: &str| (!s.is_empty()).then(|| s.trim_matches('`').to_owned());
                (
                    cell(cells[2]),
                    cell(cells[3]),
                    cells[4].trim_matches('`').to_owned(),
                )
            })
            .collect();
        let expected: Vec<(Option<String>, Option<String>, String)> = BUILTIN
            .iter()
            .map(|r| {
                assert_eq!(r.code, None, "docs have no code column");
                (
                    r.status.map(str::to_owned),
                    r.text.map(str::to_owned),
                    r.class.as_str().replace('-', "_"),
                )
            })
            .collect();
        assert_eq!(rows, expected);
    }

    #[test]
    fn mailbox_replies_are_bad_mailbox() {
        assert_eq!(
            classify(550, Some("5.1.1"), "No such user here"),
            BadMailbox
        );
        assert_eq!(classify(550, Some("5.1.0"), "Address rejected"), BadMailbox);
        assert_eq!(
            classify(550, Some("5.1.6"), "Mailbox has moved"),
            BadMailbox
        );
        assert_eq!(
            classify(550, None, "<bob@example.test>: User unknown"),
            BadMailbox
        );
        assert_eq!(classify(550, Some("5.0.0"), "no such user"), BadMailbox);
        assert_eq!(
            classify(550, None, "Requested action not taken: mailbox unavailable"),
            BadMailbox
        );
        assert_eq!(
            classify(550, None, "The account bob does not exist"),
            BadMailbox
        );
    }

    #[test]
    fn domain_replies_are_bad_domain() {
        assert_eq!(classify(550, Some("5.1.2"), "Bad destination"), BadDomain);
        assert_eq!(classify(556, Some("5.1.10"), "null MX"), BadDomain);
        assert_eq!(classify(550, Some("5.4.4"), "Unable to route"), BadDomain);
        assert_eq!(classify(550, None, "Domain not found"), BadDomain);
        assert_eq!(
            classify(550, None, "Host or domain name not found"),
            BadDomain
        );
        // "does not exist" is a mailbox unless the domain is named first.
        assert_eq!(classify(550, None, "domain does not exist"), BadDomain);
    }

    #[test]
    fn full_mailboxes_are_quota_even_with_a_mailbox_code() {
        assert_eq!(classify(552, Some("5.2.2"), "Mailbox full"), Quota);
        assert_eq!(classify(552, None, "Quota exceeded"), Quota);
        assert_eq!(classify(550, Some("5.1.1"), "user is over quota"), Quota);
        assert_eq!(classify(550, Some("5.2.0"), "The mailbox is full"), Quota);
        // Postfix's local delivery says "File too large" for a full mailbox.
        assert_eq!(
            classify(552, Some("5.2.2"), "error writing message: File too large"),
            Quota
        );
    }

    #[test]
    fn size_replies_are_too_large() {
        assert_eq!(
            classify(552, Some("5.3.4"), "Message size exceeds"),
            TooLarge
        );
        assert_eq!(classify(552, Some("5.2.3"), "Too long"), TooLarge);
        assert_eq!(classify(552, None, "Message too large"), TooLarge);
        assert_eq!(
            classify(552, Some("5.0.0"), "Size limit exceeded"),
            TooLarge
        );
    }

    #[test]
    fn policy_replies_name_spam_when_they_say_so() {
        for text in [
            "Blocked using zen.spamhaus.org",
            "Message looks like SPAM",
            "Your IP is on a blacklist",
            "listed on our blocklist",
            "rejected by RBL",
            "poor sender reputation",
            "Service unavailable; client host blocked",
        ] {
            assert_eq!(classify(554, Some("5.7.1"), text), Spam, "{text}");
        }
        assert_eq!(
            classify(550, Some("5.7.606"), "Access denied, banned sending IP"),
            Policy
        );
        assert_eq!(classify(550, Some("5.7.1"), "Relaying denied"), Policy);
        assert_eq!(classify(550, Some("5.7.26"), "DMARC policy"), Policy);
        assert_eq!(classify(554, None, "listed at Spamhaus"), Spam);
    }

    #[test]
    fn content_and_protocol_replies() {
        assert_eq!(classify(554, Some("5.7.1"), "Virus found: Eicar"), Content);
        assert_eq!(classify(554, Some("5.6.0"), "Malformed MIME"), Content);
        assert_eq!(
            classify(554, Some("5.7.1"), "Message content rejected"),
            Content
        );
        assert_eq!(classify(554, None, "content rejected"), Content);
        assert_eq!(classify(553, Some("5.6.7"), "Non-ASCII address"), Protocol);
        assert_eq!(
            classify(
                553,
                Some("5.5.6"),
                "Internationalized address not supported"
            ),
            Protocol
        );
        assert_eq!(
            classify(554, Some("5.6.3"), "conversion required"),
            Protocol
        );
        assert_eq!(classify(501, Some("5.5.2"), "Syntax error"), Protocol);
    }

    #[test]
    fn routing_and_unknown_replies() {
        assert_eq!(
            classify(554, Some("5.4.6"), "Routing loop detected"),
            Routing
        );
        assert_eq!(classify(550, Some("5.4.1"), "No answer from host"), Routing);
        assert_eq!(classify(554, None, "Transaction failed"), Other);
        assert_eq!(classify(550, Some("5.3.0"), "Something odd"), Other);
        // A pattern never matches a missing or malformed enhanced code.
        assert_eq!(classify(550, Some("5.1"), "rejected"), Other);
    }

    #[test]
    fn config_rules_come_before_the_table() {
        let classifier = Classifier::new(&[
            rule(Some("5.7.1"), None, Some("Access denied"), "bad_mailbox"),
            rule(None, Some(550), Some("not allowed"), "bad-domain"),
        ]);
        let c = |code, enhanced, text| classifier.classify(&RemoteReply::new(code, enhanced, text));
        // Matches rule 1 (case-insensitive text): the table would say policy.
        assert_eq!(
            c(550, Some("5.7.1"), "ACCESS DENIED. AS(201806281)"),
            BadMailbox
        );
        // Rule 1 needs 5.7.1: falls through to the table.
        assert_eq!(c(550, Some("5.7.2"), "Access denied"), Policy);
        // Rule 2 needs code 550.
        assert_eq!(c(550, None, "relay not allowed"), BadDomain);
        assert_eq!(c(553, None, "relay not allowed"), Other);
        // The table still applies after the config rules.
        assert_eq!(c(550, Some("5.1.1"), "no"), BadMailbox);
    }

    #[test]
    fn config_status_wildcards() {
        let classifier = Classifier::new(&[
            rule(Some("5.7.*"), None, None, "spam"),
            rule(Some("5.*.9"), None, None, "routing"),
        ]);
        let c = |enhanced| classifier.classify(&RemoteReply::new(550, Some(enhanced), "x"));
        assert_eq!(c("5.7.1"), Spam);
        assert_eq!(c("5.7.26"), Spam);
        assert_eq!(c("5.3.9"), Routing);
        assert_eq!(c("5.3.1"), Other);
    }

    #[test]
    fn validation_names_the_problem() {
        let err = |r: ClassifyRule| r.validate().unwrap_err();
        assert!(rule(Some("5.7.*"), None, None, "spam").validate().is_ok());
        assert!(
            rule(None, Some(552), Some("quota"), "too_large")
                .validate()
                .is_ok()
        );
        assert!(
            rule(None, None, Some("x"), "bad-mailbox")
                .validate()
                .is_ok()
        );

        assert_eq!(
            err(rule(None, None, None, "spam")),
            "a rule needs at least one of status, code or text"
        );
        for bad in [
            "5.7", "5.7.1.2", "*.7.1", "3.1.1", "5.x.1", "5.1234.1", "5..1", "",
        ] {
            let e = err(rule(Some(bad), None, None, "spam"));
            assert!(
                e.starts_with(&format!("status {bad:?} is not")),
                "{bad}: {e}"
            );
        }
        assert_eq!(
            err(rule(None, Some(1000), None, "spam")),
            "code 1000 is not an SMTP reply code (200-599)"
        );
        assert_eq!(
            err(rule(None, None, Some("  "), "spam")),
            "text must not be empty"
        );
        let e = err(rule(None, None, Some("x"), "spamm"));
        assert!(
            e.starts_with("class \"spamm\" is not one of bad_mailbox, bad_domain"),
            "{e}"
        );
        assert!(!e.contains("expired"), "{e}");
        let e = err(rule(None, None, Some("x"), "expired"));
        assert!(e.starts_with("class \"expired\" is not one of"), "{e}");
    }

    #[test]
    fn an_invalid_config_rule_is_left_out() {
        let classifier = Classifier::new(&[rule(None, None, Some("no such user"), "nonsense")]);
        assert_eq!(
            classifier.classify(&RemoteReply::new(550, None, "no such user")),
            BadMailbox
        );
    }
}
