//! Message bodies: DATA (dot-stuffed, ended by `CRLF.CRLF`) and BDAT (counted chunks).
//!
//! SMTP smuggling defence: only `CRLF.CRLF` ends DATA; a body containing a bare LF or a bare
//! CR (a lone `\n` or `\r` not part of CRLF) is refused as a whole once its end arrives
//! (`550 5.6.0`): a normalised or passed-through bare LF is what lets a sender hide a second
//! message from a downstream server that ends DATA on `LF.LF`. We reject rather than
//! normalise: a client that sends bare line endings is broken or hostile, and rejecting
//! keeps what we relay byte-for-byte what the client meant.
//!
//! The readers are state machines fed arbitrary splits of the input (one byte at a time
//! gives the same result as the whole message at once). Memory is bounded by `max_size`:
//! past it the body is dropped and only the end of the message is looked for, so the
//! session stays in sync and answers 552 after the end instead of hanging up mid-message.
//!
//! Why not `smtp-proto`'s `DataReceiver`: it appends to a caller's `Vec` without a limit and
//! does not report bare CR or LF, the two things this module exists for.

use kurir_core::ErrorCode;

use crate::reply::Reply;

/// Why a body was refused. The reader keeps consuming until the end of DATA so the session
/// stays in sync, then reports the error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DataError {
    #[error("message exceeds {limit} bytes")]
    TooLarge { limit: usize },
    #[error("message contains a bare CR or LF")]
    BareLineEnding,
    #[error("message contains a NUL byte")]
    Nul,
}

impl DataError {
    /// `552 5.3.4` for size, `550 5.6.0` for content.
    pub fn reply(&self) -> Reply {
        let code = match self {
            Self::TooLarge { .. } => ErrorCode::MessageTooLarge,
            Self::BareLineEnding | Self::Nul => ErrorCode::InvalidMessage,
        };
        let r = code.smtp_reply();
        match self {
            Self::TooLarge { .. } => Reply::new(r.code, r.enhanced, r.text),
            Self::BareLineEnding => Reply::new(
                r.code,
                r.enhanced,
                "Message contains a bare CR or LF; lines must end with CRLF",
            ),
            Self::Nul => Reply::new(r.code, r.enhanced, "Message contains a NUL byte"),
        }
    }
}

/// What feeding bytes did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DataProgress {
    /// All input consumed; the body continues.
    NeedMore,
    /// The body ended after `consumed` bytes of the input; the rest are the next commands.
    Done { consumed: usize },
}

/// At most this much is reserved up front for a body from the size the client announced
/// (`MAIL FROM SIZE=`, RFC 1870): enough for nearly all mail, and a client announcing the
/// maximum on every connection does not make the server reserve the maximum for each.
const MAX_RESERVED: u64 = 1024 * 1024;

/// The body as it is collected: bounded, with what was found wrong on the way.
#[derive(Debug)]
struct Body {
    max_size: usize,
    bytes: Vec<u8>,
    /// Bytes of body content seen, stored or not.
    seen: u64,
    too_large: bool,
    bare_line_ending: bool,
    nul: bool,
}

impl Body {
    fn new(max_size: usize) -> Self {
        Self {
            max_size,
            bytes: Vec::new(),
            seen: 0,
            too_large: false,
            bare_line_ending: false,
            nul: false,
        }
    }

    fn store(&mut self, bytes: &[u8]) {
        self.seen += bytes.len() as u64;
        if self.too_large {
            return;
        }
        if self.bytes.len() + bytes.len() > self.max_size {
            // The message will be refused: free its memory now.
            self.too_large = true;
            self.bytes = Vec::new();
            return;
        }
        self.bytes.extend_from_slice(bytes);
    }

    /// Reserves room for a body of `size` bytes (capped), so a message the client
    /// announced is stored without growing its buffer copy by copy.
    fn expect(&mut self, size: Option<u64>) {
        let Some(size) = size else {
            return;
        };
        let room = size.min(self.max_size as u64).min(MAX_RESERVED) as usize;
        self.bytes.reserve(room.saturating_sub(self.bytes.len()));
    }

    fn finish(self) -> Result<Vec<u8>, DataError> {
        if self.too_large {
            Err(DataError::TooLarge {
                limit: self.max_size,
            })
        } else if self.bare_line_ending {
            Err(DataError::BareLineEnding)
        } else if self.nul {
            Err(DataError::Nul)
        } else {
            Ok(self.bytes)
        }
    }
}

/// Where the DATA reader is relative to lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// After a CRLF (or at the start of the body): a `.` here is stuffing or the end.
    LineStart,
    /// Inside a line.
    Middle,
    /// After a CR not yet known to be part of a CRLF (not stored yet).
    Cr,
    /// After a `.` at the start of a line.
    Dot,
    /// After `.` CR at the start of a line: an LF now ends the body.
    DotCr,
    /// `CRLF.CRLF` seen.
    Done,
}

/// Reads a DATA body.
#[derive(Debug)]
pub struct DataReader {
    max_size: usize,
    body: Body,
    state: State,
}

impl DataReader {
    pub fn new(max_size: usize) -> Self {
        Self {
            max_size,
            body: Body::new(max_size),
            state: State::LineStart,
        }
    }

    /// Reserves room for the size the client announced in `MAIL FROM SIZE=` (capped at
    /// 1 MiB); only an allocation hint, the limit stays `max_size`.
    #[must_use]
    pub fn expecting(mut self, size: Option<u64>) -> Self {
        self.body.expect(size);
        self
    }

    pub fn feed(&mut self, input: &[u8]) -> DataProgress {
        if self.state == State::Done {
            return DataProgress::Done { consumed: 0 };
        }
        let mut i = 0;
        while i < input.len() {
            if self.state == State::Middle {
                // Fast path: copy up to the next byte that needs a decision.
                i = self.ordinary_run(input, i);
                if i == input.len() {
                    break;
                }
            }
            self.step(input[i]);
            i += 1;
            if self.state == State::Done {
                return DataProgress::Done { consumed: i };
            }
        }
        DataProgress::NeedMore
    }

    /// From `start` inside a line: stores the bytes up to the first one that needs the
    /// state machine and returns its index (or the input's length). A CRLF followed by an
    /// ordinary byte (not `.`, CR, LF or NUL) needs no decision either, so a run of plain
    /// lines is one search (`memchr3`) per line and one copy for all of them.
    fn ordinary_run(&mut self, input: &[u8], start: usize) -> usize {
        let mut i = start;
        let end = loop {
            let Some(n) = memchr::memchr3(b'\r', b'\n', 0, &input[i..]) else {
                break input.len();
            };
            let at = i + n;
            match input.get(at..at + 3) {
                Some([b'\r', b'\n', next]) if !matches!(next, b'.' | b'\r' | b'\n' | 0) => {
                    i = at + 2;
                }
                _ => break at,
            }
        };
        self.body.store(&input[start..end]);
        end
    }

    /// One byte through the state machine.
    fn step(&mut self, byte: u8) {
        self.state = match (self.state, byte) {
            (State::LineStart, b'.') => State::Dot,
            (State::Dot, b'\r') => State::DotCr,
            (State::DotCr, b'\n') => State::Done,
            (State::Cr, b'\n') => {
                self.body.store(b"\r\n");
                State::LineStart
            }
            (State::Cr | State::DotCr, _) => {
                // The pending CR is bare; the byte after it starts over in the line.
                self.body.bare_line_ending = true;
                self.body.store(b"\r");
                self.state = State::Middle;
                return self.step(byte);
            }
            // A leading dot followed by anything else is stuffing: drop it (RFC 5321
            // §4.5.2). Then the byte counts as in a line.
            (State::LineStart | State::Dot | State::Middle, _) => self.in_line(byte),
            (State::Done, _) => State::Done,
        };
    }

    /// A byte inside a line. A bare LF does not start a new line: `\n.\r\n` must not end
    /// the body.
    fn in_line(&mut self, byte: u8) -> State {
        match byte {
            b'\r' => return State::Cr,
            b'\n' => self.body.bare_line_ending = true,
            0 => self.body.nul = true,
            _ => {}
        }
        self.body.store(&[byte]);
        State::Middle
    }

    /// Whether `CRLF.CRLF` has been seen.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Body bytes received so far after unstuffing, stored or not (for logs and metrics
    /// when a message is refused as too large).
    pub fn bytes_received(&self) -> u64 {
        self.body.seen
    }

    /// After `Done`: the unstuffed body (CRLF line endings), or why it was refused.
    pub fn finish(self) -> Result<Vec<u8>, DataError> {
        debug_assert_eq!(self.max_size, self.body.max_size);
        self.body.finish()
    }
}

/// Reads BDAT chunks into one body (BINARYMIME: any octets; 8BITMIME/7BIT: bare CR/LF
/// refused like DATA).
#[derive(Debug)]
pub struct BdatReader {
    max_size: usize,
    body: Body,
    binary: bool,
    /// Bytes of the current chunk still to come.
    remaining: u64,
    /// The last byte was a CR whose LF may come in the next chunk.
    pending_cr: bool,
}

impl BdatReader {
    pub fn new(max_size: usize, binary: bool) -> Self {
        Self {
            max_size,
            body: Body::new(max_size),
            binary,
            remaining: 0,
            pending_cr: false,
        }
    }

    /// As [`DataReader::expecting`].
    #[must_use]
    pub fn expecting(mut self, size: Option<u64>) -> Self {
        self.body.expect(size);
        self
    }

    /// Starts a chunk of `size` bytes.
    pub fn begin_chunk(&mut self, size: u64) {
        self.remaining = size;
    }

    /// Feeds chunk bytes; `Done { consumed }` when the chunk is complete.
    pub fn feed(&mut self, input: &[u8]) -> DataProgress {
        let take = usize::try_from(self.remaining).map_or(input.len(), |r| r.min(input.len()));
        let chunk = &input[..take];
        if !self.binary {
            self.check_line_endings(chunk);
        }
        self.body.store(chunk);
        self.remaining -= take as u64;
        if self.remaining == 0 {
            DataProgress::Done { consumed: take }
        } else {
            DataProgress::NeedMore
        }
    }

    fn check_line_endings(&mut self, chunk: &[u8]) {
        for &byte in chunk {
            match (self.pending_cr, byte) {
                (true, b'\n') => {}
                (true, _) | (false, b'\n') => self.body.bare_line_ending = true,
                _ => {}
            }
            self.pending_cr = byte == b'\r';
            if byte == 0 {
                self.body.nul = true;
            }
        }
    }

    /// Bytes of chunk data received so far, stored or not.
    pub fn bytes_received(&self) -> u64 {
        self.body.seen
    }

    /// After the LAST chunk: the body, or why it was refused.
    pub fn finish(mut self) -> Result<Vec<u8>, DataError> {
        debug_assert_eq!(self.max_size, self.body.max_size);
        if self.pending_cr {
            self.body.bare_line_ending = true;
        }
        self.body.finish()
    }
}

#[cfg(test)]
#[path = "data_tests.rs"]
mod tests;
