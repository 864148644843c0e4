//! Command lines from a byte stream.
//!
//! The reader is the first thing hostile bytes meet, so it is bounded: a line longer than
//! `max_line` is never stored whole. Its first `max_line + 2` bytes are kept only to know it
//! is too long, it is reported once as [`LineError::TooLong`], and everything up to its LF
//! is dropped, so the session resynchronises on the next line instead of executing the tail
//! of an over-long line as a command. Lines are kept raw in the buffer until asked for, so
//! that after DATA, BDAT or STARTTLS [`LineReader::take_remaining`] returns exactly the bytes
//! the client sent after the command.

use crate::reply::Reply;
use kurir_core::ErrorCode;

/// Why a line could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LineError {
    /// Longer than the limit: the rest of the line up to its CRLF is discarded.
    #[error("line too long")]
    TooLong,
}

impl LineError {
    /// `500 5.5.6 Line too long`.
    pub fn reply(&self) -> Reply {
        ErrorCode::LineTooLong.into()
    }
}

/// What happens to an over-long line that has not ended yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Overflow {
    /// Nothing special.
    None,
    /// The buffer's incomplete last line was cut to `max_line + 2` bytes; input is dropped
    /// up to (not including) its LF, which then ends the cut line, reported as too long.
    Truncated,
    /// The line was already reported; input is dropped up to and including its LF.
    Reported,
}

/// Buffers bytes from the socket and yields complete CRLF-terminated lines (a bare LF also
/// ends a command line, as most servers accept; inside DATA only CRLF counts). Bounded:
/// never holds more than `max_line` bytes of one line.
///
/// `max_line` counts the line without its line ending: RFC 5321's 512-octet command line
/// (§4.5.3.1.4, CRLF included) is `LineReader::new(510)`.
#[derive(Debug)]
pub struct LineReader {
    max_line: usize,
    buffer: Vec<u8>,
    overflow: Overflow,
}

impl LineReader {
    pub fn new(max_line: usize) -> Self {
        Self {
            max_line,
            buffer: Vec::new(),
            overflow: Overflow::None,
        }
    }

    /// Adds bytes read from the socket.
    pub fn push(&mut self, bytes: &[u8]) {
        let mut input = bytes;
        if self.overflow != Overflow::None {
            let Some(lf) = input.iter().position(|&b| b == b'\n') else {
                return;
            };
            // A truncated line keeps its LF so that it ends and is reported in order.
            let skip = if self.overflow == Overflow::Truncated {
                lf
            } else {
                lf + 1
            };
            input = &input[skip..];
            self.overflow = Overflow::None;
        }
        self.buffer.extend_from_slice(input);
        let tail_start = self
            .buffer
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |i| i + 1);
        // Content plus an optional CR may take `max_line + 1` bytes; one more proves the
        // line too long even after the CR is stripped.
        let keep = self.max_line.saturating_add(2);
        if self.buffer.len() - tail_start > keep {
            self.buffer.truncate(tail_start + keep);
            self.overflow = Overflow::Truncated;
        }
    }

    /// The next complete line (without CRLF), `None` if more bytes are needed.
    pub fn next_line(&mut self) -> Option<Result<Vec<u8>, LineError>> {
        let Some(lf) = self.buffer.iter().position(|&b| b == b'\n') else {
            if self.overflow == Overflow::Truncated {
                // The incomplete line is known to be too long: say so now rather than when
                // its LF arrives, and drop the rest as it comes.
                self.buffer.clear();
                self.overflow = Overflow::Reported;
                return Some(Err(LineError::TooLong));
            }
            return None;
        };
        let mut line: Vec<u8> = self.buffer.drain(..=lf).collect();
        line.pop();
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        if line.len() > self.max_line {
            return Some(Err(LineError::TooLong));
        }
        Some(Ok(line))
    }

    /// Bytes buffered after the last complete line: after DATA or BDAT they belong to the
    /// body; after STARTTLS they must be discarded (command injection defence).
    pub fn take_remaining(&mut self) -> Vec<u8> {
        self.overflow = Overflow::None;
        std::mem::take(&mut self.buffer)
    }

    /// How many bytes are buffered and not yet returned: non-zero before the greeting or
    /// right after STARTTLS means the client did not wait for the server (pipelining abuse).
    pub fn buffered(&self) -> usize {
        self.buffer.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn lines(reader: &mut LineReader) -> Vec<Result<Vec<u8>, LineError>> {
        std::iter::from_fn(|| reader.next_line()).collect()
    }

    #[test]
    fn splits_on_crlf_and_bare_lf() {
        let mut reader = LineReader::new(100);
        reader.push(b"EHLO a\r\nNOOP\nQUIT\r");
        assert_eq!(
            lines(&mut reader),
            vec![Ok(b"EHLO a".to_vec()), Ok(b"NOOP".to_vec())]
        );
        reader.push(b"\n");
        assert_eq!(lines(&mut reader), vec![Ok(b"QUIT".to_vec())]);
        assert_eq!(reader.buffered(), 0);
    }

    #[test]
    fn keeps_the_rest_raw_for_data_and_starttls() {
        let mut reader = LineReader::new(100);
        reader.push(b"DATA\r\nbody\nmore");
        assert_eq!(reader.next_line(), Some(Ok(b"DATA".to_vec())));
        assert_eq!(reader.take_remaining(), b"body\nmore");
    }

    #[test]
    fn limit_is_without_the_line_ending() {
        let mut reader = LineReader::new(4);
        reader.push(b"1234\r\n12345\r\n1234\n");
        let got = lines(&mut reader);
        assert_eq!(
            got,
            vec![
                Ok(b"1234".to_vec()),
                Err(LineError::TooLong),
                Ok(b"1234".to_vec())
            ]
        );
    }

    #[test]
    fn over_long_line_is_reported_once_and_dropped_up_to_its_lf() {
        let mut reader = LineReader::new(10);
        reader.push(b"NOOP\r\n");
        reader.push(&[b'x'; 100]);
        assert!(reader.buffered() <= 6 + 12);
        assert_eq!(
            lines(&mut reader),
            vec![Ok(b"NOOP".to_vec()), Err(LineError::TooLong)]
        );
        for _ in 0..1000 {
            reader.push(b"RCPT TO:<evil@example.test>");
            assert!(reader.buffered() == 0);
            assert_eq!(reader.next_line(), None);
        }
        reader.push(b"tail\r\nQUIT\r\n");
        assert_eq!(lines(&mut reader), vec![Ok(b"QUIT".to_vec())]);
    }

    #[test]
    fn over_long_line_arriving_with_its_end_is_reported_in_order() {
        let mut reader = LineReader::new(3);
        reader.push(b"abcdefgh");
        reader.push(b"ij\r\nok\r\n");
        assert_eq!(
            lines(&mut reader),
            vec![Err(LineError::TooLong), Ok(b"ok".to_vec())]
        );
    }

    proptest! {
        #[test]
        fn any_split_gives_the_same_lines(
            input in proptest::collection::vec(
                prop_oneof![Just(b'\r'), Just(b'\n'), Just(b'a'), any::<u8>()], 0..300),
            cuts in proptest::collection::vec(0usize..300, 0..10),
            max_line in 0usize..20,
        ) {
            let mut whole = LineReader::new(max_line);
            whole.push(&input);
            let expected = lines(&mut whole);

            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(input.len())).collect();
            cuts.sort_unstable();
            let mut split = LineReader::new(max_line);
            let mut got = Vec::new();
            let mut start = 0;
            for end in cuts.into_iter().chain([input.len()]) {
                split.push(&input[start..end]);
                prop_assert!(split.buffered() <= max_line + 2 + (end - start));
                start = end;
                got.extend(lines(&mut split));
            }
            // Early TooLong reports may come before the line's end arrives; the sequence of
            // results is the same either way.
            prop_assert_eq!(got, expected);
        }

        #[test]
        fn one_byte_at_a_time_is_bounded(input in proptest::collection::vec(any::<u8>(), 0..2000)) {
            let mut reader = LineReader::new(16);
            for byte in &input {
                reader.push(std::slice::from_ref(byte));
                prop_assert!(reader.buffered() <= 18 + 1);
                while let Some(line) = reader.next_line() {
                    if let Ok(line) = line {
                        prop_assert!(line.len() <= 16);
                    }
                }
            }
        }
    }
}
