//! RCPT TO: the relay policy and the suppression list, one recipient at a time.
//!
//! No open relay: a recipient is accepted only from an authenticated user, or from a
//! client in `relay.allowed_networks` (unless `relay.require_auth`). A suppressed recipient
//! is refused with `550 5.7.1`, or accepted and left out of the message
//! (`suppressed_recipients = "drop"`: reported as a `SUPPRESSED` event once the message is
//! queued, see `submit.rs`); when the state store cannot answer the client gets `451 4.3.0`
//! and may retry, rather than mail going to a suppressed address.

use kurir_core::{Address, ErrorCode, Recipient};
use kurir_queue::Queue;
use kurir_smtp::{RcptParams, Reply};
use kurir_state::State;
use tokio::io::{AsyncRead, AsyncWrite};

use super::config::SuppressedAction;
use super::session::Session;

/// What the suppression list says about one recipient.
enum Verdict {
    Allowed,
    Suppressed,
}

impl<S, Q, St> Session<S, Q, St>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
    Q: Queue,
    St: State,
{
    pub(super) async fn rcpt(&mut self, to: Address, params: RcptParams) {
        let Some(tx) = &self.tx else {
            return self.fail(Reply::new(503, (5, 5, 1), "Need MAIL command first"));
        };
        if !self.may_relay() {
            tracing::info!(peer = %self.peer, "relay denied");
            return self.fail(ErrorCode::RelayDenied.into());
        }
        if tx.accepted >= self.shared.config.limits.max_recipients {
            return self.reply(ErrorCode::TooManyRecipients.into());
        }
        if to.needs_smtputf8() && !tx.envelope.smtputf8 {
            return self.fail(ErrorCode::Utf8AddressNotAllowed.into());
        }
        if tx.envelope.recipients.iter().any(|r| r.address == to) || tx.suppressed.contains(&to) {
            return self.reply(Reply::new(250, (2, 1, 5), "Ok (duplicate)"));
        }
        match self.check_suppressed(&to).await {
            Err(code) => self.reply(code.into()),
            Ok(Verdict::Suppressed) => self.suppressed(to),
            Ok(Verdict::Allowed) => {
                let recipient = Recipient {
                    address: to,
                    notify: params.notify,
                    orcpt: params.orcpt,
                };
                if let Some(tx) = &mut self.tx {
                    tx.envelope.recipients.push(recipient);
                    tx.accepted += 1;
                }
                self.reply(Reply::new(250, (2, 1, 5), "Ok"));
            }
        }
    }

    /// Authenticated, or from an allowed network when that is enough.
    fn may_relay(&self) -> bool {
        if self.auth.is_some() {
            return true;
        }
        let ip = self.ip();
        !self.shared.config.relay.require_auth && self.shared.relay.iter().any(|n| n.contains(&ip))
    }

    async fn check_suppressed(&self, to: &Address) -> Result<Verdict, ErrorCode> {
        let Some(tx) = &self.tx else {
            return Ok(Verdict::Allowed);
        };
        let found = self
            .shared
            .state
            .check_suppressed(&tx.tenant, std::slice::from_ref(to))
            .await
            .map_err(|error| {
                tracing::warn!(%error, "suppression check failed");
                error.code()
            })?;
        Ok(match found.first() {
            Some(Some(_)) => Verdict::Suppressed,
            _ => Verdict::Allowed,
        })
    }

    fn suppressed(&mut self, to: Address) {
        match self.shared.config.suppressed_recipients {
            SuppressedAction::Reject => {
                self.shared.metrics.suppressed("rejected");
                self.reply(ErrorCode::RecipientSuppressed.into());
            }
            SuppressedAction::Drop => {
                self.shared.metrics.suppressed("dropped");
                tracing::info!(peer = %self.peer, "suppressed recipient dropped");
                if let Some(tx) = &mut self.tx {
                    tx.suppressed.push(to);
                    tx.accepted += 1;
                }
                self.reply(Reply::new(250, (2, 1, 5), "Ok"));
            }
        }
    }
}
