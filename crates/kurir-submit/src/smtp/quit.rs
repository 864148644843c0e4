//! QUIT: the last reply of a session.

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
    pub(super) fn quit(&mut self) {
        self.tx = None;
        self.reply(Reply::new(221, (2, 0, 0), "Bye"));
        self.closing = true;
    }
}
