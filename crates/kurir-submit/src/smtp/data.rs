//! DATA: the body up to `CRLF.CRLF`, dot-unstuffed by [`DataReader`].
//!
//! Smuggling defence is the reader's (only `CRLF.CRLF` ends the body, bare CR/LF and NUL
//! refuse it). Pipelining abuse is refused here: RFC 2920 makes DATA the last command of a
//! group, so a client that sends bytes after DATA without waiting for the `354` is either
//! broken or trying to have its body read as commands (if DATA were refused). It gets
//! `554 5.5.0` and the connection is closed, whatever DATA would have answered.

use kurir_core::{BodyType, ErrorCode};
use kurir_queue::Queue;
use kurir_smtp::{DataProgress, DataReader, Reply};
use kurir_state::State;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;

use super::session::{Read, Session};

impl<S, Q, St> Session<S, Q, St>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
    Q: Queue,
    St: State,
{
    pub(super) async fn data(&mut self) {
        if !self.lines.take_remaining().is_empty() {
            tracing::info!(peer = %self.peer, "bytes pipelined after DATA");
            self.tx = None;
            self.closing = true;
            return self.reply(Reply::new(
                554,
                (5, 5, 0),
                "Improper use of SMTP command pipelining after DATA, closing",
            ));
        }
        if let Some(refusal) = self.data_refusal() {
            return self.fail(refusal);
        }
        self.reply(Reply::new(
            354,
            (2, 0, 0),
            "End data with <CR><LF>.<CR><LF>",
        ));
        if !self.flush().await {
            self.closing = true;
            return;
        }
        let size = self.tx.as_ref().and_then(|tx| tx.size);
        let mut reader =
            DataReader::new(self.shared.config.limits.max_message_size).expecting(size);
        let deadline = Instant::now() + self.shared.config.timeouts.data;
        loop {
            match self.read_some(deadline).await {
                Read::Bytes(n) => {
                    if let DataProgress::Done { consumed } = reader.feed(&self.buf[..n]) {
                        self.lines.push(&self.buf[consumed..n]);
                        break;
                    }
                }
                Read::Closed => {
                    self.closing = true;
                    return;
                }
                Read::TimedOut => return self.reply(ErrorCode::Timeout.into()),
            }
        }
        self.end_of_message(reader.finish()).await;
    }

    fn data_refusal(&self) -> Option<Reply> {
        let Some(tx) = &self.tx else {
            return Some(Reply::new(503, (5, 5, 1), "Need MAIL command first"));
        };
        if tx.accepted == 0 {
            return Some(ErrorCode::NoRecipients.into());
        }
        if tx.bdat.is_some() {
            return Some(Reply::new(503, (5, 5, 1), "DATA after BDAT"));
        }
        if tx.envelope.body == BodyType::BinaryMime {
            return Some(Reply::new(503, (5, 5, 1), "BODY=BINARYMIME requires BDAT"));
        }
        None
    }
}
