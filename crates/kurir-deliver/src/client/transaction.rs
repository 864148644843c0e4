//! One mail transaction on a [`Connection`]: MAIL, RCPT per recipient, then the body, in
//! one of three ways:
//!
//! - CHUNKING and PIPELINING offered (most large receivers): MAIL, the RCPTs, `BDAT n
//!   LAST` and the body in one write, then the replies (RFC 3030 §4.2): one round trip per
//!   message, no dot-stuffing.
//! - PIPELINING offered: MAIL, the RCPTs and DATA in one write, then the body after 354
//!   (RFC 2920): two round trips.
//! - Neither: one command per round trip.

use super::commands::{bdat_last, dot_stuffed, mail_from, message_size, rcpt_to};
use super::{ClientError, Connection, Phase, Transaction, TransactionReplies};
use crate::reply::RemoteReply;

impl Connection {
    /// MAIL FROM and every RCPT TO, for one write.
    fn envelope_commands(&self, tx: &Transaction<'_>) -> String {
        let caps = self.capabilities();
        let mut commands = mail_from(tx.envelope, message_size(tx.body), caps);
        for rcpt in &tx.envelope.recipients {
            commands.push_str(&rcpt_to(rcpt, caps));
        }
        commands
    }

    /// MAIL, every RCPT and DATA in one write, then the replies in order. DATA is in the
    /// batch whatever the RCPT replies turn out to be; with no recipient accepted the
    /// server refuses it (and one that answers 354 gets a lone dot).
    pub(super) async fn send_pipelined(
        &mut self,
        tx: &Transaction<'_>,
    ) -> Result<TransactionReplies, ClientError> {
        let envelope = tx.envelope;
        let mut batch = self.envelope_commands(tx);
        batch.push_str("DATA\r\n");
        let t = self.timeouts;
        self.write(&[batch.as_bytes()], Phase::Mail, t.mail).await?;
        self.transactions += 1;

        let mail = self.reply(Phase::Mail, t.mail).await?;
        let mut rcpts = Vec::with_capacity(envelope.recipients.len());
        for _ in &envelope.recipients {
            rcpts.push(self.reply(Phase::Rcpt, t.rcpt).await?);
        }
        let data = self.reply(Phase::Data, t.data).await?;
        if !mail.is_positive() || !rcpts.iter().any(RemoteReply::is_positive) {
            if data.code == 354 {
                self.abort_data().await?;
            }
            if !mail.is_positive() {
                return Ok(TransactionReplies::MailRefused(mail));
            }
            return Ok(TransactionReplies::Sent { rcpts, data: None });
        }
        let data = self.data_and_body(data, tx).await?;
        Ok(TransactionReplies::Sent {
            rcpts,
            data: Some(data),
        })
    }

    /// MAIL, every RCPT, `BDAT <size> LAST` and the body in one write, then the replies
    /// in order. The server reads the chunk whatever it answered before (RFC 3030 §2), so
    /// the body goes even when every recipient is refused; its reply then refuses it and
    /// is not used. Costs a wasted body upload in that case, saves a round trip and the
    /// dot-stuffing in every other one.
    pub(super) async fn send_chunked(
        &mut self,
        tx: &Transaction<'_>,
    ) -> Result<TransactionReplies, ClientError> {
        let envelope = tx.envelope;
        let (bdat, body) = bdat_last(tx.body);
        let mut commands = self.envelope_commands(tx);
        commands.push_str(&bdat);
        let t = self.timeouts;
        let mut pieces = vec![commands.as_bytes()];
        pieces.extend(body);
        // A failed write is a failure at MAIL: nothing of the transaction was answered, so
        // the receiver cannot have taken the message, and on a reused connection it is the
        // sign of one the receiver closed while idle (the attempt retries on a new one).
        // The body's time limit applies.
        self.write(&pieces, Phase::Mail, t.data_write).await?;
        self.transactions += 1;

        // A pipelining server may hold even MAIL's reply until it has read and checked the
        // whole message, which RFC 5321 gives 10 minutes: every reply gets the end-of-data
        // limit (a shorter one would defer a message the server then accepts).
        let wait = t.data_end.max(t.mail).max(t.rcpt);
        let mail = self.reply(Phase::Mail, wait).await?;
        let mut rcpts = Vec::with_capacity(envelope.recipients.len());
        for _ in &envelope.recipients {
            rcpts.push(self.reply(Phase::Rcpt, wait).await?);
        }
        let end = self.reply(Phase::DataEnd, wait).await?;
        if !mail.is_positive() {
            return Ok(TransactionReplies::MailRefused(mail));
        }
        let data = rcpts.iter().any(RemoteReply::is_positive).then_some(end);
        Ok(TransactionReplies::Sent { rcpts, data })
    }

    /// One command per round trip; DATA only when a recipient was accepted.
    pub(super) async fn send_stepwise(
        &mut self,
        tx: &Transaction<'_>,
    ) -> Result<TransactionReplies, ClientError> {
        let envelope = tx.envelope;
        let t = self.timeouts;
        let line = mail_from(envelope, message_size(tx.body), self.capabilities());
        self.write(&[line.as_bytes()], Phase::Mail, t.mail).await?;
        self.transactions += 1;
        let mail = self.reply(Phase::Mail, t.mail).await?;
        if !mail.is_positive() {
            return Ok(TransactionReplies::MailRefused(mail));
        }
        let mut rcpts = Vec::with_capacity(envelope.recipients.len());
        for rcpt in &envelope.recipients {
            let line = rcpt_to(rcpt, self.capabilities());
            self.write(&[line.as_bytes()], Phase::Rcpt, t.rcpt).await?;
            rcpts.push(self.reply(Phase::Rcpt, t.rcpt).await?);
        }
        if !rcpts.iter().any(RemoteReply::is_positive) {
            return Ok(TransactionReplies::Sent { rcpts, data: None });
        }
        self.write(&[b"DATA\r\n"], Phase::Data, t.data).await?;
        let data = self.reply(Phase::Data, t.data).await?;
        let data = self.data_and_body(data, tx).await?;
        Ok(TransactionReplies::Sent {
            rcpts,
            data: Some(data),
        })
    }

    /// Given DATA's reply: the body and the reply after the final dot on 354; the reply
    /// itself when it refuses.
    async fn data_and_body(
        &mut self,
        data: RemoteReply,
        tx: &Transaction<'_>,
    ) -> Result<RemoteReply, ClientError> {
        if data.code != 354 {
            if data.is_positive() {
                // A 2xx here would read as "delivered" for a message never sent.
                return Err(ClientError::Protocol {
                    phase: Phase::Data,
                    detail: format!("DATA answered with {data} instead of 354"),
                });
            }
            return Ok(data);
        }
        let t = self.timeouts;
        let pieces = dot_stuffed(tx.body);
        self.write(&pieces, Phase::DataWrite, t.data_write).await?;
        self.reply(Phase::DataEnd, t.data_end).await
    }

    /// A 354 that should not have come (no recipient accepted): an empty message ends the
    /// DATA, and its reply is ignored (a 421 still ends the session).
    async fn abort_data(&mut self) -> Result<(), ClientError> {
        let t = self.timeouts;
        self.write(&[b".\r\n"], Phase::DataWrite, t.data_write)
            .await?;
        self.reply(Phase::DataEnd, t.data_end).await?;
        Ok(())
    }
}
