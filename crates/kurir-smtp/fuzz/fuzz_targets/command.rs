//! Command lines: `parse_command` on arbitrary bytes, and `LineReader` on arbitrary bytes
//! in arbitrary splits. Invariants: nothing panics; every error has a 5xx reply; no line
//! longer than the limit comes out; the reader never buffers more than one push plus a
//! line's worth; the same input gives the same lines whatever the split.
#![no_main]

use kurir_smtp::{LineReader, parse_command};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(error) = parse_command(data) {
        assert!(error.reply().code >= 500);
    }
    let Some((&header, input)) = data.split_first() else {
        return;
    };
    let max_line = usize::from(header & 0x3f);
    let whole = lines(max_line, &[input]);
    // Split points derived from the input itself, so libFuzzer explores them too.
    let step = usize::from(header >> 6) * 7 + 1;
    let pieces: Vec<&[u8]> = input.chunks(step).collect();
    assert_eq!(lines(max_line, &pieces), whole);
});

fn lines(max_line: usize, pieces: &[&[u8]]) -> Vec<Option<Vec<u8>>> {
    let mut reader = LineReader::new(max_line);
    let mut out = Vec::new();
    for piece in pieces {
        reader.push(piece);
        assert!(reader.buffered() <= max_line + 2 + piece.len());
        while let Some(line) = reader.next_line() {
            if let Ok(line) = &line {
                assert!(line.len() <= max_line);
                if let Err(error) = parse_command(line) {
                    assert!(error.reply().code >= 500);
                }
            }
            out.push(line.ok());
        }
    }
    out
}
