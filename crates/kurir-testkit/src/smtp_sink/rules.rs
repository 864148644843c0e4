//! The sink's script: rules saying what to do instead of the default "250 OK".
//!
//! A rule is *where* ([`Stage`]), *for whom* ([`Match`]) and *what* ([`Action`]), optionally
//! limited to a number of uses. At each stage the session walks the rules in the order they
//! were added: every matching [`Action::Delay`] adds its wait and the walk goes on; the first
//! matching other action decides and ends the walk. No deciding rule means the default
//! behaviour (accept). Each use of a rule, a delay included, counts towards its limit.

use std::time::Duration;

/// Where in the SMTP dialogue a rule applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stage {
    /// The greeting, before the client has said anything.
    Banner,
    /// EHLO or HELO.
    Ehlo,
    /// The STARTTLS command (a reply other than 220 refuses it).
    StartTls,
    /// MAIL FROM.
    Mail,
    /// Each RCPT TO.
    Rcpt,
    /// The DATA command, or the first BDAT chunk of a transaction (whose bytes are read
    /// before the reply, as RFC 3030 requires).
    Data,
    /// After the final dot of DATA or the LAST BDAT chunk: the reply that accepts or refuses
    /// the message.
    DataEnd,
}

/// Which sessions, messages or recipients a rule applies to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Match {
    /// Everything.
    Any,
    /// A recipient, compared case-insensitively with the path between `<` and `>`. At
    /// [`Stage::Rcpt`] it is the recipient being given; at [`Stage::Data`] and
    /// [`Stage::DataEnd`] any recipient accepted so far in the transaction; it matches
    /// nothing at earlier stages.
    Rcpt(String),
    /// The reverse path of the transaction (case-insensitive; `""` is the null path); matches
    /// from [`Stage::Mail`] on.
    MailFrom(String),
    /// The n-th transaction the sink has seen across all connections, 1-based, counted at each
    /// MAIL command (a refused MAIL still counts); matches from [`Stage::Mail`] on.
    NthMessage(u64),
    /// The n-th connection the sink accepted, 1-based; matches at every stage.
    NthConnection(u64),
    /// All of the given matches hold.
    All(Vec<Match>),
}

/// What the sink does when a rule decides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Send this reply instead of the default. The text may carry an enhanced status code
    /// (`"5.1.1 no such user"`); a `\n` in it makes a multi-line reply. Whether the command
    /// succeeded follows the code (2xx, or 354 for DATA); a 421 also closes the connection,
    /// as RFC 5321 says a 421 does.
    Reply(u16, String),
    /// Close the connection without a reply.
    Disconnect,
    /// At [`Stage::Data`]: accept the DATA (354) or BDAT, read at least this many bytes of
    /// body, then close the connection without a reply. Elsewhere the same as
    /// [`Action::Disconnect`].
    DisconnectAfterBody(usize),
    /// Never reply: read and discard whatever the client sends until it hangs up (or the sink
    /// is dropped). For testing the client's timeouts.
    Stall,
    /// Wait this long, then carry on with the next rule or the default: latency. A delay
    /// followed by [`Action::Disconnect`] is "no reply for a while, then hang up".
    Delay(Duration),
}

impl Action {
    /// `Action::Reply` from any string: `Action::reply(550, "5.1.1 no such user")`.
    pub fn reply(code: u16, text: impl Into<String>) -> Self {
        Self::Reply(code, text.into())
    }
}

/// Names a rule so it can be removed with [`super::SmtpSink::remove_rule`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RuleId(u64);

/// What a session knows when it asks the rules.
#[derive(Debug)]
pub(super) struct Ctx<'a> {
    pub(super) connection: u64,
    /// The transaction's number, once MAIL has been given.
    pub(super) message: Option<u64>,
    pub(super) mail_from: Option<&'a str>,
    /// The recipients [`Match::Rcpt`] is compared with at this stage.
    pub(super) rcpts: Vec<&'a str>,
}

#[derive(Debug)]
struct Rule {
    id: RuleId,
    matcher: Match,
    stage: Stage,
    action: Action,
    /// Uses left; `None` is unlimited.
    remaining: Option<u32>,
}

/// The rules of one sink, in the order they were added.
#[derive(Debug, Default)]
pub(super) struct Rules {
    next_id: u64,
    list: Vec<Rule>,
}

impl Rules {
    pub(super) fn add(
        &mut self,
        matcher: Match,
        stage: Stage,
        action: Action,
        times: Option<u32>,
    ) -> RuleId {
        self.next_id += 1;
        let id = RuleId(self.next_id);
        self.list.push(Rule {
            id,
            matcher,
            stage,
            action,
            remaining: times,
        });
        id
    }

    pub(super) fn remove(&mut self, id: RuleId) -> bool {
        let before = self.list.len();
        self.list.retain(|r| r.id != id);
        self.list.len() != before
    }

    pub(super) fn clear(&mut self) {
        self.list.clear();
    }

    /// Walks the rules for `stage` (see the module docs): the summed delay, and the deciding
    /// action if any. Never returns [`Action::Delay`] as the decision.
    pub(super) fn evaluate(&mut self, stage: Stage, ctx: &Ctx<'_>) -> (Duration, Option<Action>) {
        let mut delay = Duration::ZERO;
        for rule in &mut self.list {
            if rule.stage != stage || rule.remaining == Some(0) || !matches(&rule.matcher, ctx) {
                continue;
            }
            if let Some(n) = rule.remaining.as_mut() {
                *n -= 1;
            }
            match &rule.action {
                Action::Delay(d) => delay += *d,
                action => return (delay, Some(action.clone())),
            }
        }
        (delay, None)
    }
}

fn matches(matcher: &Match, ctx: &Ctx<'_>) -> bool {
    match matcher {
        Match::Any => true,
        Match::Rcpt(addr) => ctx.rcpts.iter().any(|r| r.eq_ignore_ascii_case(addr)),
        Match::MailFrom(addr) => ctx.mail_from.is_some_and(|m| m.eq_ignore_ascii_case(addr)),
        Match::NthMessage(n) => ctx.message == Some(*n),
        Match::NthConnection(n) => ctx.connection == *n,
        Match::All(all) => all.iter().all(|m| matches(m, ctx)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx<'a>(connection: u64, message: Option<u64>, rcpts: Vec<&'a str>) -> Ctx<'a> {
        Ctx {
            connection,
            message,
            mail_from: Some("from@example.test"),
            rcpts,
        }
    }

    #[test]
    fn first_deciding_rule_wins_after_summing_delays() {
        let mut rules = Rules::default();
        let ms = Duration::from_millis;
        rules.add(Match::Any, Stage::Rcpt, Action::Delay(ms(5)), None);
        rules.add(
            Match::Rcpt("Bad@X.test".into()),
            Stage::Rcpt,
            Action::reply(550, "no"),
            None,
        );
        rules.add(Match::Any, Stage::Rcpt, Action::Delay(ms(7)), None);
        rules.add(Match::Any, Stage::Rcpt, Action::Disconnect, None);
        let bad = rules.evaluate(Stage::Rcpt, &ctx(1, Some(1), vec!["bad@x.test"]));
        assert_eq!(bad, (ms(5), Some(Action::reply(550, "no"))));
        let good = rules.evaluate(Stage::Rcpt, &ctx(1, Some(1), vec!["good@x.test"]));
        assert_eq!(good, (ms(12), Some(Action::Disconnect)));
        assert_eq!(
            rules.evaluate(Stage::Mail, &ctx(1, Some(1), vec![])),
            (ms(0), None)
        );
    }

    #[test]
    fn limited_rules_run_out_and_can_be_removed() {
        let mut rules = Rules::default();
        rules.add(
            Match::NthConnection(2),
            Stage::Banner,
            Action::Disconnect,
            Some(1),
        );
        let id = rules.add(
            Match::NthMessage(3),
            Stage::Mail,
            Action::reply(451, "later"),
            None,
        );
        let conn2 = ctx(2, None, vec![]);
        assert_eq!(
            rules.evaluate(Stage::Banner, &conn2).1,
            Some(Action::Disconnect)
        );
        assert_eq!(rules.evaluate(Stage::Banner, &conn2).1, None);
        assert!(
            rules
                .evaluate(Stage::Mail, &ctx(1, Some(3), vec![]))
                .1
                .is_some()
        );
        assert!(
            rules
                .evaluate(Stage::Mail, &ctx(1, Some(4), vec![]))
                .1
                .is_none()
        );
        assert!(rules.remove(id));
        assert!(
            rules
                .evaluate(Stage::Mail, &ctx(1, Some(3), vec![]))
                .1
                .is_none()
        );
    }

    #[test]
    fn all_requires_every_match() {
        let mut rules = Rules::default();
        let both = Match::All(vec![
            Match::NthConnection(1),
            Match::Rcpt("a@x.test".into()),
        ]);
        rules.add(both, Stage::DataEnd, Action::Stall, None);
        assert!(
            rules
                .evaluate(
                    Stage::DataEnd,
                    &ctx(1, Some(1), vec!["b@x.test", "a@x.test"])
                )
                .1
                .is_some()
        );
        assert!(
            rules
                .evaluate(Stage::DataEnd, &ctx(2, Some(1), vec!["a@x.test"]))
                .1
                .is_none()
        );
    }
}
