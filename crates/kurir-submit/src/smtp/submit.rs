//! The end of a message (DATA's final dot or BDAT LAST): hand it to the [`Publisher`] and
//! answer only once the queue has it. Shared by `data.rs` and `bdat.rs`.
//!
//! Recipients dropped at RCPT because they are suppressed go along in the submission: the
//! publisher reports each as a `SUPPRESSED` event once the mail is queued. When every
//! recipient was dropped nothing is queued but those events, and the client still gets
//! `250` with the message id (that is what `drop` is for: the client is not told).
//!
//! [`Publisher`]: crate::publish::Publisher

use std::collections::BTreeMap;

use bytes::Bytes;
use kurir_core::MessageId;
use kurir_queue::Queue;
use kurir_smtp::{DataError, Reply};
use kurir_state::State;
use tokio::io::{AsyncRead, AsyncWrite};

use super::session::{Session, Transaction};
use crate::publish::{ReceivedFrom, Submission};

impl<S, Q, St> Session<S, Q, St>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
    Q: Queue,
    St: State,
{
    /// Ends the transaction with the body (or why it was refused).
    pub(super) async fn end_of_message(&mut self, body: Result<Vec<u8>, DataError>) {
        let Some(tx) = self.tx.take() else {
            return;
        };
        self.messages += 1;
        match body {
            Err(error) => {
                tracing::info!(peer = %self.peer, %error, "message refused");
                let reply = error.reply();
                self.shared.metrics.message(reply.code);
                self.fail(reply);
            }
            Ok(body) => {
                let reply = self.publish(tx, body).await;
                self.shared.metrics.message(reply.code);
                self.reply(reply);
            }
        }
    }

    async fn publish(&self, tx: Transaction, body: Vec<u8>) -> Reply {
        let submission = Submission {
            tenant: tx.tenant.as_str().to_owned(),
            envelope: tx.envelope,
            body: Bytes::from(body),
            received: Some(self.received_from()),
            traceparent: None,
            tags: BTreeMap::new(),
            suppressed: tx.suppressed,
        };
        match self.shared.publisher.publish(submission).await {
            Ok(accepted) => {
                if accepted.records == 0 {
                    tracing::info!(peer = %self.peer, id = %accepted.id, "message dropped, all recipients suppressed");
                } else {
                    tracing::debug!(peer = %self.peer, id = %accepted.id, records = accepted.records, "message queued");
                }
                // Lost events do not fail the message: its mail is already queued (or there
                // was none), and a retry by the client would queue it twice. The publisher
                // logged them; they are counted here.
                let metrics = &self.shared.metrics;
                metrics.suppressed_events("published", accepted.events);
                metrics.suppressed_events("failed", accepted.events_failed);
                queued(accepted.id)
            }
            Err(code) => {
                tracing::warn!(peer = %self.peer, error = %code, "message not queued");
                code.into()
            }
        }
    }

    fn received_from(&self) -> ReceivedFrom {
        let esmtp = self.greeting.as_ref().is_some_and(|g| g.esmtp);
        let protocol = match (esmtp, self.is_tls(), self.auth.is_some()) {
            (false, _, _) => "SMTP",
            (true, false, false) => "ESMTP",
            (true, true, false) => "ESMTPS",
            (true, false, true) => "ESMTPA",
            (true, true, true) => "ESMTPSA",
        };
        ReceivedFrom {
            helo: self
                .greeting
                .as_ref()
                .map(|g| g.host.clone())
                .unwrap_or_default(),
            peer: self.ip(),
            protocol,
            tls: self.conn.tls_version(),
        }
    }
}

fn queued(id: MessageId) -> Reply {
    Reply::new(250, (2, 0, 0), format!("Ok: queued as {id}"))
}
