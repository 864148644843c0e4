//! DATA and BDAT bodies on arbitrary bytes and splits. Invariants: nothing panics; a stored
//! body never exceeds `max_size`; DATA ends exactly at the first `CRLF.CRLF` (counting the
//! DATA command's own CRLF) and nowhere else, whatever the split; an accepted body is the
//! input before the end with one leading dot removed per line; BDAT consumes exactly the
//! chunk sizes and BINARYMIME keeps the octets as sent.
#![no_main]

use kurir_smtp::{BdatReader, DataError, DataProgress, DataReader};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() < 3 {
        return;
    }
    let (header, input) = data.split_at(3);
    let max_size = usize::from(u16::from_le_bytes([header[0], header[1]]) & 0x3ff);
    let step = usize::from(header[2] & 0x3f) + 1;
    check_data(input, max_size, step);
    check_bdat(input, max_size, step, header[2] & 0x40 != 0);
});

type Outcome = (Result<Vec<u8>, DataError>, Option<usize>);

fn read_data(pieces: &[&[u8]], max_size: usize) -> Outcome {
    let mut reader = DataReader::new(max_size);
    let mut offset = 0;
    for piece in pieces {
        if let DataProgress::Done { consumed } = reader.feed(piece) {
            assert!(consumed <= piece.len());
            return (reader.finish(), Some(offset + consumed));
        }
        offset += piece.len();
    }
    (reader.finish(), None)
}

fn check_data(input: &[u8], max_size: usize, step: usize) {
    let whole = read_data(&[input], max_size);
    let pieces: Vec<&[u8]> = input.chunks(step).collect();
    assert_eq!(read_data(&pieces, max_size), whole);
    if let Ok(body) = &whole.0 {
        assert!(body.len() <= max_size);
    }
    let mut framed = b"\r\n".to_vec();
    framed.extend_from_slice(input);
    let expected_end = framed
        .windows(5)
        .position(|w| w == b"\r\n.\r\n")
        .map(|p| p + 3);
    assert_eq!(whole.1, expected_end);
    if let (Ok(body), Some(end)) = (&whole.0, whole.1) {
        assert_eq!(body, &unstuff(&input[..end - 3]));
    }
}

/// The reference unstuffing for a body whose lines all end in CRLF.
fn unstuff(prefix: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(prefix.len());
    let mut line_start = true;
    for (i, &b) in prefix.iter().enumerate() {
        if !(line_start && b == b'.') {
            out.push(b);
        }
        line_start = b == b'\n' && i > 0 && prefix[i - 1] == b'\r';
    }
    out
}

fn check_bdat(input: &[u8], max_size: usize, step: usize, binary: bool) {
    let mut reader = BdatReader::new(max_size, binary);
    let mut chunks = input.chunks(step);
    let mut total = 0usize;
    for chunk in chunks.by_ref().take(8) {
        reader.begin_chunk(chunk.len() as u64);
        let mut extended = chunk.to_vec();
        extended.extend_from_slice(b"BDAT 1 LAST\r\n");
        assert_eq!(
            reader.feed(&extended),
            DataProgress::Done {
                consumed: chunk.len()
            }
        );
        total += chunk.len();
    }
    assert_eq!(reader.bytes_received(), total as u64);
    match reader.finish() {
        Ok(body) => {
            assert!(body.len() <= max_size);
            assert_eq!(body, input[..total]);
        }
        Err(DataError::TooLarge { .. }) => assert!(total > max_size),
        Err(_) => assert!(!binary),
    }
}
