//! The verbs that change nothing: NOOP, HELP, VRFY and EXPN.
//!
//! VRFY answers `252 2.5.0` (RFC 5321 §3.5.3: cannot verify, will try delivery) and EXPN is
//! not implemented: an outbound relay has no mailboxes to confirm, and answering either
//! truthfully would only help address harvesting.

use kurir_core::ErrorCode;
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
    pub(super) fn noop(&mut self) {
        self.reply(Reply::new(250, (2, 0, 0), "Ok"));
    }

    pub(super) fn vrfy(&mut self) {
        self.reply(Reply::new(
            252,
            (2, 5, 0),
            "Cannot VRFY user, but will accept message and attempt delivery",
        ));
    }

    pub(super) fn expn(&mut self) {
        self.reply(ErrorCode::NotImplemented.into());
    }

    pub(super) fn help(&mut self) {
        self.reply(Reply::new(
            214,
            (2, 0, 0),
            "Commands: EHLO HELO MAIL RCPT DATA BDAT RSET NOOP QUIT STARTTLS AUTH VRFY HELP",
        ));
    }
}
