//! RSET: forgets the transaction (and any BDAT chunks), keeps the greeting, TLS and AUTH.

use kurir_queue::Queue;
use kurir_smtp::Reply;
use kurir_state::State;
use tokio::io::{AsyncRead, AsyncWrite};

use super::session::Session;

impl<S, Q, St> Session<S, Q, St>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
    Q: Queue,
    St: State,
{
    pub(super) fn rset(&mut self) {
        self.tx = None;
        self.reply(Reply::new(250, (2, 0, 0), "Ok"));
    }
}
