//! Tests for the DATA and BDAT readers: unstuffing, the end marker, smuggling variants,
//! limits, and that any split of the input gives the same result.

use super::*;
use proptest::prelude::*;

/// Feeds `input` in one piece; the body result and how many bytes were consumed.
fn read(input: &[u8], max_size: usize) -> (Result<Vec<u8>, DataError>, Option<usize>) {
    read_split(input, &[], max_size)
}

/// Feeds `input` cut at `cuts` (sorted offsets).
fn read_split(
    input: &[u8],
    cuts: &[usize],
    max_size: usize,
) -> (Result<Vec<u8>, DataError>, Option<usize>) {
    let mut reader = DataReader::new(max_size);
    let mut start = 0;
    for end in cuts.iter().copied().chain([input.len()]) {
        let end = end.clamp(start, input.len());
        if let DataProgress::Done { consumed } = reader.feed(&input[start..end]) {
            return (reader.finish(), Some(start + consumed));
        }
        start = end;
    }
    (reader.finish(), None)
}

/// Dot-stuffs a body whose lines end with CRLF and appends the end marker.
fn stuff(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 8);
    let mut line_start = true;
    for &b in body {
        if line_start && b == b'.' {
            out.push(b'.');
        }
        out.push(b);
        line_start = out.ends_with(b"\r\n");
    }
    if !line_start {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b".\r\n");
    out
}

#[test]
fn unstuffs_and_ends_on_crlf_dot_crlf() {
    let input = b"Subject: x\r\n\r\n..leading dot\r\n.\r\nMAIL FROM:<a@b.test>\r\n";
    let (body, consumed) = read(input, 1000);
    assert_eq!(body.unwrap(), b"Subject: x\r\n\r\n.leading dot\r\n");
    assert_eq!(&input[consumed.unwrap()..], b"MAIL FROM:<a@b.test>\r\n");
}

#[test]
fn empty_body_and_dot_only_lines() {
    assert_eq!(read(b".\r\n", 10), (Ok(Vec::new()), Some(3)));
    assert_eq!(read(b"..\r\n.\r\n", 10).0.unwrap(), b".\r\n");
    assert_eq!(read(b"a.\r\n.\r\n", 10).0.unwrap(), b"a.\r\n");
}

#[test]
fn end_marker_only_at_line_start_after_crlf() {
    // A dot line inside a line is content; only the final CRLF.CRLF ends.
    let input = b"abc.\r\nx\r\n.\r\n";
    assert_eq!(
        read(input, 100),
        (Ok(b"abc.\r\nx\r\n".to_vec()), Some(input.len()))
    );
    // Stuffed ".\r\n" in the middle is content.
    assert_eq!(
        read(b"a\r\n..\r\nb\r\n.\r\n", 100).0.unwrap(),
        b"a\r\n.\r\nb\r\n"
    );
}

#[test]
fn smuggling_variants_never_end_data() {
    for marker in [
        &b"\n.\n"[..],
        b"\r.\r",
        b"\n.\r\n",
        b"\r\n.\n",
        b"\r.\r\n",
        b"\n.\r",
    ] {
        let mut input = b"hello".to_vec();
        input.extend_from_slice(marker);
        input.extend_from_slice(b"MAIL FROM:<evil@example.test>\r\n");
        let mut reader = DataReader::new(10_000);
        assert_eq!(reader.feed(&input), DataProgress::NeedMore, "{marker:?}");
        // The real end comes later: the whole thing is one message, refused.
        assert_eq!(
            reader.feed(b"\r\n.\r\n"),
            DataProgress::Done { consumed: 5 },
            "{marker:?}"
        );
        assert_eq!(
            reader.finish(),
            Err(DataError::BareLineEnding),
            "{marker:?}"
        );
    }
}

#[test]
fn bare_lf_then_crlf_dot_crlf_ends_but_is_refused() {
    // After a bare LF a real CRLF.CRLF still ends the body (the client meant it to), and
    // the body is refused as a whole.
    let (body, consumed) = read(b"a\nb\r\n.\r\nNOOP\r\n", 100);
    assert_eq!(body, Err(DataError::BareLineEnding));
    assert_eq!(consumed, Some(8));
}

#[test]
fn bare_cr_and_nul_are_refused() {
    assert_eq!(
        read(b"a\rb\r\n.\r\n", 100).0,
        Err(DataError::BareLineEnding)
    );
    assert_eq!(read(b"a\r\r\n.\r\n", 100).0, Err(DataError::BareLineEnding));
    assert_eq!(read(b"a\0b\r\n.\r\n", 100).0, Err(DataError::Nul));
    assert_eq!(DataError::Nul.reply().code, 550);
    assert_eq!(DataError::BareLineEnding.reply().enhanced, Some((5, 6, 0)));
}

#[test]
fn too_large_keeps_scanning_for_the_end() {
    let mut reader = DataReader::new(10);
    assert_eq!(reader.feed(&[b'x'; 1000]), DataProgress::NeedMore);
    assert_eq!(
        reader.feed(b"\r\n.\r\nQUIT\r\n"),
        DataProgress::Done { consumed: 5 }
    );
    assert_eq!(reader.bytes_received(), 1002);
    assert_eq!(reader.finish(), Err(DataError::TooLarge { limit: 10 }));
    let err = DataError::TooLarge { limit: 10 };
    assert_eq!(
        (err.reply().code, err.reply().enhanced),
        (552, Some((5, 3, 4)))
    );
    // Exactly at the limit is fine.
    assert_eq!(read(b"12345678\r\n.\r\n", 10).0.unwrap(), b"12345678\r\n");
}

#[test]
fn feeding_after_done_consumes_nothing() {
    let mut reader = DataReader::new(10);
    assert_eq!(reader.feed(b".\r\n"), DataProgress::Done { consumed: 3 });
    assert!(reader.is_done());
    assert_eq!(reader.feed(b"more"), DataProgress::Done { consumed: 0 });
}

#[test]
fn bdat_chunks_are_exact() {
    let mut reader = BdatReader::new(100, false);
    reader.begin_chunk(5);
    assert_eq!(reader.feed(b"ab\r"), DataProgress::NeedMore);
    assert_eq!(
        reader.feed(b"\ncdBDAT 0 LAST\r\n"),
        DataProgress::Done { consumed: 2 }
    );
    reader.begin_chunk(4);
    assert_eq!(
        reader.feed(b"e\r\n.RSET\r\n"),
        DataProgress::Done { consumed: 4 }
    );
    reader.begin_chunk(0);
    assert_eq!(reader.feed(b"QUIT\r\n"), DataProgress::Done { consumed: 0 });
    assert_body(reader.finish(), b"ab\r\nce\r\n.");
}

fn assert_body(result: Result<Vec<u8>, DataError>, want: &[u8]) {
    assert_eq!(result.as_deref(), Ok(want));
}

#[test]
fn bdat_line_endings_and_binary() {
    let mut reader = BdatReader::new(100, false);
    reader.begin_chunk(3);
    reader.feed(b"a\nb");
    assert_eq!(reader.finish(), Err(DataError::BareLineEnding));
    // A CR at the end of the last chunk has no LF: bare.
    let mut reader = BdatReader::new(100, false);
    reader.begin_chunk(2);
    reader.feed(b"a\r");
    assert_eq!(reader.finish(), Err(DataError::BareLineEnding));
    // BINARYMIME: any octets.
    let mut reader = BdatReader::new(100, true);
    reader.begin_chunk(5);
    reader.feed(b"\0\r\n\n\r");
    assert_eq!(reader.finish().unwrap(), b"\0\r\n\n\r");
}

#[test]
fn bdat_total_limit() {
    let mut reader = BdatReader::new(5, true);
    reader.begin_chunk(4);
    assert_eq!(reader.feed(b"1234"), DataProgress::Done { consumed: 4 });
    reader.begin_chunk(u64::MAX);
    assert_eq!(reader.feed(&[0; 1000]), DataProgress::NeedMore);
    assert_eq!(reader.bytes_received(), 1004);
    assert_eq!(reader.finish(), Err(DataError::TooLarge { limit: 5 }));
}

fn body_strategy() -> impl Strategy<Value = Vec<u8>> {
    let line = proptest::collection::vec(
        prop_oneof![Just(b'.'), Just(b'a'), Just(b' '), (0x21u8..0x7f)],
        0..20,
    );
    proptest::collection::vec(line, 0..10).prop_map(|lines| {
        lines
            .into_iter()
            .flat_map(|mut l| {
                l.extend_from_slice(b"\r\n");
                l
            })
            .collect()
    })
}

fn cuts_strategy() -> impl Strategy<Value = Vec<usize>> {
    proptest::collection::vec(0usize..400, 0..12).prop_map(|mut c| {
        c.sort_unstable();
        c
    })
}

proptest! {
    #[test]
    fn stuffing_round_trip_in_any_split(body in body_strategy(), cuts in cuts_strategy()) {
        let mut input = stuff(&body);
        let end = input.len();
        input.extend_from_slice(b"NEXT\r\n");
        let (got, consumed) = read_split(&input, &cuts, 10_000);
        prop_assert_eq!(got, Ok(body));
        prop_assert_eq!(consumed, Some(end));
    }

    #[test]
    fn any_split_gives_the_same_result(
        input in proptest::collection::vec(
            prop_oneof![Just(b'\r'), Just(b'\n'), Just(b'.'), Just(0u8), any::<u8>()], 0..300),
        cuts in cuts_strategy(),
        max_size in 0usize..100,
    ) {
        let whole = read(&input, max_size);
        prop_assert_eq!(read_split(&input, &cuts, max_size), whole.clone());
        let every_byte: Vec<usize> = (0..input.len()).collect();
        prop_assert_eq!(read_split(&input, &every_byte, max_size), whole.clone());
        if let (Ok(body), _) = &whole {
            prop_assert!(body.len() <= max_size);
        }
        // The end is exactly the first CRLF.CRLF, counting the DATA command's own CRLF:
        // no other byte sequence (bare CR or LF variants) ends the body.
        let mut framed = b"\r\n".to_vec();
        framed.extend_from_slice(&input);
        let first_end = framed.windows(5).position(|w| w == b"\r\n.\r\n").map(|p| p + 3);
        prop_assert_eq!(whole.1, first_end);
    }

    #[test]
    fn bare_line_endings_never_end_data(
        before in "[a-z]{0,5}",
        marker in prop_oneof![Just("\n.\n"), Just("\r.\r"), Just("\n.\r\n"), Just("\r\n.\n"),
                              Just("\r.\r\n"), Just("\n.\r")],
        after in "[a-z]{0,5}",
    ) {
        let input = format!("{before}{marker}{after}");
        let mut reader = DataReader::new(1000);
        prop_assert_eq!(reader.feed(input.as_bytes()), DataProgress::NeedMore);
    }

    #[test]
    fn bdat_any_split_gives_the_same_body(
        body in proptest::collection::vec(any::<u8>(), 0..300),
        cuts in cuts_strategy(),
        binary in any::<bool>(),
    ) {
        let mut whole = BdatReader::new(1000, binary);
        whole.begin_chunk(body.len() as u64);
        let mut trailing = body.clone();
        trailing.extend_from_slice(b"NEXT");
        prop_assert_eq!(whole.feed(&trailing), DataProgress::Done { consumed: body.len() });
        let whole = whole.finish();

        let mut split = BdatReader::new(1000, binary);
        let mut start = 0;
        for end in cuts.iter().copied().map(|c| c.min(body.len())).chain([body.len()]) {
            let end = end.max(start);
            split.begin_chunk((end - start) as u64);
            prop_assert_eq!(split.feed(&body[start..]), DataProgress::Done { consumed: end - start });
            start = end;
        }
        prop_assert_eq!(split.finish(), whole.clone());
        if binary {
            prop_assert_eq!(whole, Ok(body));
        }
    }
}

#[test]
fn an_announced_size_reserves_the_body_once_and_at_most_a_mebibyte() {
    let body = vec![b'x'; 100_000];
    let mut input = body.clone();
    input.extend_from_slice(b"\r\n.\r\n");
    let mut reader = DataReader::new(50 << 20).expecting(Some(100_002));
    assert_eq!(
        reader.feed(&input),
        DataProgress::Done {
            consumed: input.len()
        }
    );
    let out = reader.finish().unwrap();
    assert_eq!(out.len(), 100_002);
    assert_eq!(out.capacity(), 100_002, "reserved once, never grown");

    // A client announcing the limit gets 1 MiB reserved, and the limit still holds.
    let mut reader = DataReader::new(50 << 20).expecting(Some(50 << 20));
    assert_eq!(
        reader.feed(b"x\r\n.\r\n"),
        DataProgress::Done { consumed: 6 }
    );
    assert_eq!(reader.finish().unwrap().capacity(), 1 << 20);
    let mut reader = DataReader::new(10).expecting(Some(0));
    reader.feed(b"more than ten bytes\r\n.\r\n");
    assert!(matches!(
        reader.finish(),
        Err(DataError::TooLarge { limit: 10 })
    ));

    let mut reader = BdatReader::new(50 << 20, true).expecting(Some(u64::MAX));
    reader.begin_chunk(3);
    assert_eq!(reader.feed(b"abc"), DataProgress::Done { consumed: 3 });
    assert_eq!(reader.finish().unwrap().capacity(), 1 << 20);
}
