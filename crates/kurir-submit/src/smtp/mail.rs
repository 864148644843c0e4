//! MAIL FROM: opens a transaction, after the policy checks that need no recipient.
//!
//! The tenant is fixed here (the authenticated user's, or `default_tenant` for clients
//! relaying by network) so every RCPT of the transaction is checked against one
//! suppression list.

use kurir_core::{Address, Envelope, ErrorCode};
use kurir_queue::Queue;
use kurir_smtp::{MailParams, Reply};
use kurir_state::State;
use tokio::io::{AsyncRead, AsyncWrite};

use super::session::{Session, Transaction};

impl<S, Q, St> Session<S, Q, St>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
    Q: Queue,
    St: State,
{
    pub(super) fn mail(&mut self, from: Option<Address>, params: MailParams) {
        if let Some(refusal) = self.mail_refusal(&params) {
            return refusal(self);
        }
        let limits = &self.shared.config.limits;
        if params
            .size
            .is_some_and(|size| size > limits.max_message_size as u64)
        {
            return self.reply(ErrorCode::MessageTooLarge.into());
        }
        let tenant = match &self.auth {
            Some(user) => user.tenant.clone(),
            None => self.shared.default_tenant.clone(),
        };
        let mut envelope = Envelope::new(from);
        envelope.ret = params.ret;
        envelope.envid = params.envid;
        envelope.body = params.body;
        envelope.smtputf8 = params.smtputf8;
        self.tx = Some(Transaction {
            envelope,
            accepted: 0,
            suppressed: Vec::new(),
            tenant,
            size: params.size,
            bdat: None,
        });
        self.reply(Reply::new(250, (2, 1, 0), "Ok"));
    }

    /// Why MAIL cannot start a transaction now, as the action that answers it.
    fn mail_refusal(&self, params: &MailParams) -> Option<fn(&mut Self)> {
        let Some(greeting) = &self.greeting else {
            return Some(|s| s.fail(Reply::new(503, (5, 5, 1), "Send EHLO or HELO first")));
        };
        if self.tx.is_some() {
            return Some(|s| s.fail(Reply::new(503, (5, 5, 1), "Nested MAIL command")));
        }
        if self.shared.lifecycle.is_shutting_down() {
            return Some(|s| s.reply(ErrorCode::ShuttingDown.into()));
        }
        let limits = &self.shared.config.limits;
        if self.messages >= limits.max_messages_per_connection {
            return Some(|s| {
                s.reply(Reply::new(
                    421,
                    (4, 7, 0),
                    "Too many messages in this session, reconnect",
                ))
            });
        }
        if self.shared.config.relay.require_auth && self.auth.is_none() {
            return Some(|s| s.fail(ErrorCode::AuthRequired.into()));
        }
        if !greeting.esmtp && *params != MailParams::default() {
            // ESMTP parameters after HELO: the client was never told they exist.
            return Some(|s| s.fail(ErrorCode::UnsupportedParameter.into()));
        }
        None
    }
}
