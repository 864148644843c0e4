//! BDAT (CHUNKING, RFC 3030): the body in counted chunks, the last one marked LAST.
//!
//! A chunk's bytes follow its command at once, so they are read even when the command is
//! refused: skipping exactly `size` bytes keeps the session in sync, and the chunk is never
//! parsed as commands.

use kurir_core::{BodyType, ErrorCode};
use kurir_queue::Queue;
use kurir_smtp::{BdatReader, DataProgress, Reply};
use kurir_state::State;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;

use super::session::{Read, Session, read_until};

impl<S, Q, St> Session<S, Q, St>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
    Q: Queue,
    St: State,
{
    pub(super) async fn bdat(&mut self, size: u64, last: bool) {
        let refusal = match &self.tx {
            None => Some(Reply::new(503, (5, 5, 1), "Need MAIL command first")),
            Some(tx) if tx.accepted == 0 => Some(ErrorCode::NoRecipients.into()),
            Some(_) => None,
        };
        if let Some(refusal) = refusal {
            if self.skip_chunk(size).await {
                self.fail(refusal);
            }
            return;
        }
        if !self.read_chunk(size).await {
            return;
        }
        if !last {
            return self.reply(Reply::new(
                250,
                (2, 0, 0),
                format!("{size} octets received"),
            ));
        }
        let reader = self.tx.as_mut().and_then(|tx| tx.bdat.take());
        if let Some(reader) = reader {
            self.end_of_message(reader.finish()).await;
        }
    }

    /// Feeds one chunk to the transaction's reader. `false`: the session is over.
    async fn read_chunk(&mut self, size: u64) -> bool {
        let max = self.shared.config.limits.max_message_size;
        let deadline = Instant::now() + self.shared.config.timeouts.data;
        let mut input = self.lines.take_remaining();
        let Some(tx) = self.tx.as_mut() else {
            return false;
        };
        let binary = tx.envelope.body == BodyType::BinaryMime;
        let expected = tx.size;
        let reader = tx
            .bdat
            .get_or_insert_with(|| BdatReader::new(max, binary).expecting(expected));
        reader.begin_chunk(size);
        if size == 0 {
            self.lines.push(&input);
            return true;
        }
        loop {
            if !input.is_empty()
                && let DataProgress::Done { consumed } = reader.feed(&input)
            {
                self.lines.push(&input[consumed..]);
                return true;
            }
            match read_until(&mut self.conn, &mut self.buf, deadline).await {
                Read::Bytes(n) => {
                    input.clear();
                    input.extend_from_slice(&self.buf[..n]);
                }
                Read::Closed => break,
                Read::TimedOut => {
                    self.reply(ErrorCode::Timeout.into());
                    break;
                }
            }
        }
        self.closing = true;
        false
    }

    /// Reads and discards `size` bytes. `false`: the session is over.
    async fn skip_chunk(&mut self, size: u64) -> bool {
        let deadline = Instant::now() + self.shared.config.timeouts.data;
        let mut remaining = size;
        let mut input = self.lines.take_remaining();
        loop {
            let take = usize::try_from(remaining)
                .unwrap_or(usize::MAX)
                .min(input.len());
            remaining -= take as u64;
            if remaining == 0 {
                self.lines.push(&input[take..]);
                return true;
            }
            match self.read_some(deadline).await {
                Read::Bytes(n) => input = self.buf[..n].to_vec(),
                Read::Closed => break,
                Read::TimedOut => {
                    self.reply(ErrorCode::Timeout.into());
                    break;
                }
            }
        }
        self.closing = true;
        false
    }
}
