//! Finding a message's header block and the fields normalisation cares about, and nothing
//! more: normalisation only adds fields that are missing and leaves every other byte as the
//! client sent it, so a full RFC 5322 parse would be wasted work (and a place to disagree
//! with the receiver's parser).
//!
//! Rules:
//! - The header block is every line before the first empty line (`CRLF` alone; a bare `LF`
//!   is tolerated). A message without an empty line is all header block.
//! - A header line starts with a field name: printable ASCII except `:`, then optional
//!   spaces or tabs (RFC 5322 obsolete syntax), then `:`. Names compare case-insensitively.
//! - A line starting with a space or tab continues the previous field (folding) and never
//!   names a field; neither does a line without a colon.
//! - Lines after the empty line are body, whatever they look like.

/// What normalisation needs to know about a message's header block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct HeaderBlock {
    /// Where added fields go: the start of the empty line that ends the header block, or
    /// the end of the message when it has none.
    pub(super) end: usize,
    /// The last header line has no line ending (a headers-only message that does not end
    /// in `CRLF`): a field added after it must first end that line.
    pub(super) unterminated: bool,
    pub(super) has_message_id: bool,
    pub(super) has_date: bool,
}

/// Scans the header block of `message`.
pub(super) fn scan(message: &[u8]) -> HeaderBlock {
    let mut block = HeaderBlock {
        end: message.len(),
        unterminated: false,
        has_message_id: false,
        has_date: false,
    };
    let mut start = 0;
    while start < message.len() {
        let rest = &message[start..];
        let Some(newline) = rest.iter().position(|&b| b == b'\n') else {
            // The last line, without a line ending.
            note_field(&mut block, rest);
            block.unterminated = true;
            break;
        };
        let line = &rest[..newline];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            block.end = start;
            break;
        }
        note_field(&mut block, line);
        start += newline + 1;
    }
    block
}

fn note_field(block: &mut HeaderBlock, line: &[u8]) {
    let Some(name) = field_name(line) else {
        return;
    };
    if name.eq_ignore_ascii_case(b"message-id") {
        block.has_message_id = true;
    } else if name.eq_ignore_ascii_case(b"date") {
        block.has_date = true;
    }
}

/// The field name of a header line; `None` for a continuation line or a line that is not
/// a field.
fn field_name(line: &[u8]) -> Option<&[u8]> {
    let colon = line.iter().position(|&b| b == b':')?;
    let name = &line[..colon];
    let name = name.trim_ascii_end();
    let valid = !name.is_empty() && name.iter().all(|&b| (33..=126).contains(&b));
    // A continuation line starts with white space, which `valid` rejects.
    valid.then_some(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_fields_case_insensitively_and_the_end_of_the_block() {
        let msg = b"Subject: hi\r\nmessage-id: <a@b>\r\nDATE: x\r\n\r\nbody\r\n";
        let block = scan(msg);
        assert!(block.has_message_id && block.has_date);
        assert_eq!(&msg[block.end..], b"\r\nbody\r\n");
        assert!(!block.unterminated);
    }

    #[test]
    fn folded_lines_are_part_of_the_previous_field() {
        // A continuation line that happens to contain "Date:" is not a Date field.
        let msg =
            b"Subject: a long subject\r\n\tDate: not a field\r\n Message-ID: nor this\r\n\r\n";
        let block = scan(msg);
        assert!(!block.has_date && !block.has_message_id);
        assert_eq!(block.end, msg.len() - 2);
    }

    #[test]
    fn body_lines_that_look_like_headers_do_not_count() {
        let msg = b"Subject: x\r\n\r\nMessage-ID: <in@body>\r\nDate: in body\r\n";
        let block = scan(msg);
        assert!(!block.has_message_id && !block.has_date);
        assert_eq!(block.end, 12);
    }

    #[test]
    fn obsolete_space_before_colon_still_names_the_field() {
        let block = scan(b"Date : Mon, 1 Jan 2024 00:00:00 +0000\r\n\r\n");
        assert!(block.has_date);
    }

    #[test]
    fn similar_names_are_other_fields() {
        let block = scan(b"Resent-Message-ID: <r@x>\r\nDate-Received: x\r\nX-Date: y\r\n\r\n");
        assert!(!block.has_message_id && !block.has_date);
    }

    #[test]
    fn a_message_without_separator_is_all_headers() {
        let msg = b"Subject: x\r\nMessage-ID: <a@b>\r\n";
        let block = scan(msg);
        assert!(block.has_message_id);
        assert_eq!((block.end, block.unterminated), (msg.len(), false));

        let unterminated = scan(b"Subject: x\r\nDate: y");
        assert!(unterminated.has_date && unterminated.unterminated);
        assert_eq!(unterminated.end, 19);
    }

    #[test]
    fn a_message_starting_with_an_empty_line_has_no_headers() {
        let block = scan(b"\r\nDate: body\r\n");
        assert_eq!(block.end, 0);
        assert!(!block.has_date);
        assert_eq!(scan(b"").end, 0);
    }

    #[test]
    fn bare_lf_line_endings_are_tolerated() {
        let msg = b"Message-ID: <a@b>\nSubject: x\n\nDate: body\n";
        let block = scan(msg);
        assert!(block.has_message_id && !block.has_date);
        assert_eq!(&msg[block.end..], b"\nDate: body\n");
    }

    #[test]
    fn lines_without_a_field_name_are_ignored() {
        let block = scan(b": no name\r\nno colon here\r\nbad name: Date\r\n\r\n");
        assert!(!block.has_date && !block.has_message_id);
    }
}
