//! Chunked request bodies: sizes, extensions, trailers, errors, limits, resumption, and what
//! follows the body.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use catamount_http::{ChunkProgress, ChunkedDecoder, ErrorKind, Limits};

/// Decodes a complete body in one call; returns the data and the bytes used.
fn decode_with(raw: &[u8], limits: &Limits) -> Result<(Vec<u8>, usize), ErrorKind> {
    let mut d = ChunkedDecoder::new();
    let mut out = Vec::new();
    let p = d.decode(raw, &mut out, limits).map_err(|e| e.kind())?;
    assert!(p.done, "not done: {:?}", String::from_utf8_lossy(raw));
    assert!(p.consumed <= raw.len());
    assert_eq!(d.decoded_len(), out.len() as u64);
    Ok((out, p.consumed))
}

fn decode(raw: &[u8]) -> Result<(Vec<u8>, usize), ErrorKind> {
    decode_with(raw, &Limits::default())
}

/// Feeds `raw` in the given pieces; returns the data, or the error.
fn decode_pieces(pieces: &[&[u8]], limits: &Limits) -> Result<(Vec<u8>, bool), ErrorKind> {
    let mut d = ChunkedDecoder::new();
    let mut out = Vec::new();
    let mut done = false;
    for piece in pieces {
        let p = d.decode(piece, &mut out, limits).map_err(|e| e.kind())?;
        assert!(
            p.consumed == piece.len() || p.done,
            "stopped early without being done"
        );
        done = p.done;
    }
    Ok((out, done))
}

#[test]
fn sizes() {
    assert_eq!(decode(b"5\r\nhello\r\n0\r\n\r\n").unwrap().0, b"hello");
    assert_eq!(decode(b"0005\r\nhello\r\n0\r\n\r\n").unwrap().0, b"hello");
    assert_eq!(decode(b"a\r\n0123456789\r\n0\r\n\r\n").unwrap().0.len(), 10);
    assert_eq!(decode(b"A\r\n0123456789\r\n0\r\n\r\n").unwrap().0.len(), 10);
    let big = vec![b'z'; 0x1f];
    let mut raw = b"1F\r\n".to_vec();
    raw.extend_from_slice(&big);
    raw.extend_from_slice(b"\r\n000\r\n\r\n");
    assert_eq!(
        decode(&raw).unwrap().0,
        big,
        "upper-case hex, zero with leading zeros"
    );
    assert_eq!(decode(b"0\r\n\r\n").unwrap(), (vec![], 5));
    // Many leading zeros are not an overflow.
    let zeros = format!("{}1\r\nx\r\n0\r\n\r\n", "0".repeat(100));
    assert_eq!(decode(zeros.as_bytes()).unwrap().0, b"x");
    // Binary data passes through untouched, CRLFs in it included.
    assert_eq!(
        decode(b"4\r\n\r\n\0\xff\r\n0\r\n\r\n").unwrap().0,
        b"\r\n\0\xff"
    );
}

#[test]
fn extensions() {
    assert_eq!(
        decode(b"5;a=b;c\r\nhello\r\n6;q=\"x y\"\r\n world\r\n0\r\n\r\n")
            .unwrap()
            .0,
        b"hello world"
    );
    assert_eq!(
        decode(b"3;name=\"quoted \\\"pair\\\" ; = \"\r\nabc\r\n0;end\r\n\r\n")
            .unwrap()
            .0,
        b"abc"
    );
    assert_eq!(
        decode(b"3;a=\"\xe9\"\r\nabc\r\n0\r\n\r\n").unwrap().0,
        b"abc",
        "obs-text in a quoted value"
    );
    for bad in [
        &b"3;\r\nabc\r\n0\r\n\r\n"[..],
        b"3;a=\r\nabc\r\n0\r\n\r\n",
        b"3;a=b c\r\nabc\r\n0\r\n\r\n",
        b"3;a=\"b\r\nabc\r\n0\r\n\r\n",
        b"3;a\x01b\r\nabc\r\n0\r\n\r\n",
        b"3;a=b;\r\nabc\r\n0\r\n\r\n",
        b"3;a;\r\nabc\r\n0\r\n\r\n",
        b"3;a =\r\nabc\r\n0\r\n\r\n",
    ] {
        assert_eq!(
            decode(bad).err(),
            Some(ErrorKind::InvalidChunkExtension),
            "{:?}",
            String::from_utf8_lossy(bad)
        );
    }
}

#[test]
fn trailers() {
    assert_eq!(
        decode(b"A\r\n0123456789\r\n0\r\nX-Trailer: 1\r\nY: 2\r\n\r\n")
            .unwrap()
            .0,
        b"0123456789"
    );
    // Names that only start like, or extend, a framing field's are fine.
    assert_eq!(
        decode(b"0\r\nContent-Lengths: 1\r\nContent: 2\r\nHos: 3\r\nHostname: 4\r\n\r\n")
            .unwrap()
            .1,
        58
    );
    assert_eq!(
        decode(b"1\r\nx\r\n0\r\nEmpty:\r\nTabbed:\tv \t\r\n\r\n")
            .unwrap()
            .0,
        b"x"
    );
    for bad in [
        &b"0\r\nBad Trailer: x\r\n\r\n"[..],
        b"0\r\nX : y\r\n\r\n",
        b"0\r\n folded\r\n\r\n",
        b"0\r\nX: y\r\n folded\r\n\r\n",
        b"0\r\n: y\r\n\r\n",
        b"0\r\nNoColon\r\n\r\n",
        b"0\r\nX: a\0b\r\n\r\n",
        b"0\r\nX: a\x7f\r\n\r\n",
        // Framing, routing and connection fields (RFC 9110 §6.5.1; llhttp refuses the first
        // two and obeys the last, which a decoder that drops trailers could not).
        b"0\r\nContent-Length: 5\r\n\r\n",
        b"0\r\ncontent-LENGTH:\r\n\r\n",
        b"0\r\nX: y\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"0\r\nHost: other\r\n\r\n",
        b"0\r\nConnection: close\r\n\r\n",
    ] {
        assert_eq!(
            decode(bad).err(),
            Some(ErrorKind::MalformedTrailer),
            "{:?}",
            String::from_utf8_lossy(bad)
        );
    }
    assert_eq!(
        decode(b"0\r\nX: y\nZ: 1\r\n\r\n").err(),
        Some(ErrorKind::BareLf)
    );
    assert_eq!(
        decode(b"0\r\nX: y\rZ\r\n\r\n").err(),
        Some(ErrorKind::BareCr)
    );
    assert_eq!(decode(b"0\r\n\rX").err(), Some(ErrorKind::BareCr));
    assert_eq!(decode(b"0\r\n\n").err(), Some(ErrorKind::BareLf));
}

#[test]
fn bytes_after_the_body_are_left_alone() {
    let raw = b"3\r\nabc\r\n0\r\n\r\nGET / HTTP/1.1\r\n";
    let (out, consumed) = decode(raw).unwrap();
    assert_eq!(out, b"abc");
    assert_eq!(&raw[consumed..], b"GET / HTTP/1.1\r\n");
    let raw = b"0\r\nT: v\r\n\r\n\r\n";
    let (_, consumed) = decode(raw).unwrap();
    assert_eq!(consumed, raw.len() - 2);
}

#[test]
fn errors() {
    use ErrorKind::*;
    for (raw, kind) in [
        (&b"zz\r\n"[..], InvalidChunkSize),
        (b"\r\n", InvalidChunkSize),
        (b";a\r\n", InvalidChunkSize),
        (b"-5\r\n", InvalidChunkSize),
        (b"+5\r\n", InvalidChunkSize),
        (b"0x5\r\n", InvalidChunkSize),
        (b" 5\r\n", InvalidChunkSize),
        (b"5 \r\nhello\r\n", InvalidChunkSize),
        (b"5 x\r\nhello\r\n", InvalidChunkSize),
        (b"5 ;a\r\nhello\r\n", InvalidChunkSize),
        (b"5\t;a\r\nhello\r\n", InvalidChunkSize),
        (b"5g\r\n", InvalidChunkSize),
        (b"5\0\r\n", InvalidChunkSize),
        (b"10000000000000000\r\n", InvalidChunkSize),
        (b"ffffffffffffffff0\r\n", InvalidChunkSize),
        (b"5\nhello\r\n", BareLf),
        (b"5;a\nhello\r\n", BareLf),
        (b"5\rhello\r\n", BareCr),
        (b"5\r\nhelloX\r\n", MissingChunkCrlf),
        (b"5\r\nhello\rX", MissingChunkCrlf),
        (b"5\r\nhello\n0\r\n\r\n", MissingChunkCrlf),
        (b"5\r\nhell\r\n0\r\n\r\n", MissingChunkCrlf),
    ] {
        let mut d = ChunkedDecoder::new();
        let e = d
            .decode(raw, &mut Vec::new(), &Limits::default())
            .unwrap_err();
        assert_eq!(
            (e.kind(), e.status()),
            (kind, 400),
            "{:?}",
            String::from_utf8_lossy(raw)
        );
    }
    // The largest size that fits is not an error until the limit says so.
    let mut d = ChunkedDecoder::new();
    let p = d
        .decode(
            b"ffffffffffffffff\r\nabc",
            &mut Vec::new(),
            &Limits::default(),
        )
        .unwrap();
    assert_eq!(
        p,
        ChunkProgress {
            consumed: 21,
            done: false
        }
    );
}

#[test]
fn chunk_line_limit() {
    let l = Limits::default();
    // Exactly at the limit: the size and its extension fill max_chunk_line bytes.
    let at = format!("5;{}", "e".repeat(l.max_chunk_line - 2));
    assert_eq!(at.len(), l.max_chunk_line);
    let body = format!("{at}\r\nhello\r\n0\r\n\r\n");
    assert_eq!(decode(body.as_bytes()).unwrap().0, b"hello");
    let over = format!(
        "5;{}\r\nhello\r\n0\r\n\r\n",
        "e".repeat(l.max_chunk_line - 1)
    );
    assert_eq!(
        decode(over.as_bytes()).err(),
        Some(ErrorKind::ChunkLineTooLong)
    );
    // Refused while the line is still arriving.
    let mut d = ChunkedDecoder::new();
    let partial = format!("5;{}", "e".repeat(l.max_chunk_line - 1));
    assert_eq!(
        d.decode(partial.as_bytes(), &mut Vec::new(), &l)
            .unwrap_err()
            .kind(),
        ErrorKind::ChunkLineTooLong
    );
    // Leading zeros count toward the line too.
    let zeros = format!("{}5\r\n", "0".repeat(l.max_chunk_line));
    let mut d = ChunkedDecoder::new();
    assert_eq!(
        d.decode(zeros.as_bytes(), &mut Vec::new(), &l)
            .unwrap_err()
            .kind(),
        ErrorKind::ChunkLineTooLong
    );
    let small = Limits {
        max_chunk_line: 3,
        ..Limits::default()
    };
    assert!(decode_with(b"0;a\r\n\r\n", &small).is_ok());
    assert_eq!(
        decode_with(b"0;ab\r\n\r\n", &small).err(),
        Some(ErrorKind::ChunkLineTooLong)
    );
}

#[test]
fn extension_and_trailer_budget() {
    let l = Limits::default();
    // A flood of small extensions, each line within its limit, hits the whole-body budget.
    let mut flood = Vec::new();
    for _ in 0..(l.max_chunk_extensions / 1000 + 2) {
        flood.extend_from_slice(format!("1;{}\r\nx\r\n", "e".repeat(999)).as_bytes());
    }
    flood.extend_from_slice(b"0\r\n\r\n");
    let e = ChunkedDecoder::new()
        .decode(&flood, &mut Vec::new(), &l)
        .unwrap_err();
    assert_eq!(
        (e.kind(), e.status()),
        (ErrorKind::ChunkExtensionsTooLarge, 400)
    );

    // Exactly at the budget, counted over extensions and trailers together.
    let small = Limits {
        max_chunk_extensions: 10,
        ..Limits::default()
    };
    // ";a=b" (4) + ";cd" (3) + "X:y" (3) = 10
    let at = b"1;a=b\r\nx\r\n0;cd\r\nX:y\r\n\r\n";
    assert_eq!(decode_with(at, &small).unwrap().0, b"x");
    let over = b"1;a=b\r\nx\r\n0;cd\r\nX:yz\r\n\r\n";
    assert_eq!(
        decode_with(over, &small).err(),
        Some(ErrorKind::ChunkExtensionsTooLarge)
    );
    // Bytes of a quoted value count as extension bytes.
    let spaced = b"1;a=\"      \"\r\nx\r\n0\r\n\r\n";
    assert_eq!(
        decode_with(spaced, &small).err(),
        Some(ErrorKind::ChunkExtensionsTooLarge)
    );
    // A trailer flood is refused while it arrives.
    let mut trailers = b"0\r\n".to_vec();
    trailers.extend_from_slice(&b"X: y\r\n".repeat(l.max_chunk_extensions / 4 + 1));
    let e = ChunkedDecoder::new()
        .decode(&trailers, &mut Vec::new(), &l)
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ChunkExtensionsTooLarge);
}

#[test]
fn body_limit() {
    let capped = Limits {
        max_body: Some(8),
        ..Limits::default()
    };
    assert_eq!(
        decode_with(b"4\r\nabcd\r\n4\r\nefgh\r\n0\r\n\r\n", &capped)
            .unwrap()
            .0,
        b"abcdefgh"
    );
    assert_eq!(
        decode_with(b"4\r\nabcd\r\n5\r\nefghi\r\n0\r\n\r\n", &capped).err(),
        Some(ErrorKind::BodyTooLarge)
    );
    // Refused when the size is announced, before its data arrives.
    let mut d = ChunkedDecoder::new();
    let mut out = Vec::new();
    d.decode(b"4\r\nabcd\r\n", &mut out, &capped).unwrap();
    let e = d.decode(b"5\r", &mut out, &capped).unwrap_err();
    assert_eq!((e.kind(), e.status()), (ErrorKind::BodyTooLarge, 413));
    assert_eq!(e.to_string(), "request body larger than 8 bytes");
    let e = ChunkedDecoder::new()
        .decode(b"ffffffff;", &mut Vec::new(), &capped)
        .unwrap_err();
    assert_eq!(e.status(), 413);
}

#[test]
fn resumes_at_every_boundary() {
    let raw: &[u8] =
        b"5;ext=\"a b\"\r\nhello\r\n1A\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nT: v\r\n\r\n";
    let (whole, used) = decode(raw).unwrap();
    assert_eq!(used, raw.len());
    for cut in 0..=raw.len() {
        let (a, b) = raw.split_at(cut);
        assert_eq!(
            decode_pieces(&[a, b], &Limits::default()),
            Ok((whole.clone(), true)),
            "cut at {cut}"
        );
    }
    let bytes: Vec<&[u8]> = raw.chunks(1).collect();
    assert_eq!(decode_pieces(&bytes, &Limits::default()), Ok((whole, true)));
}

#[test]
fn chunk_size_split_across_calls() {
    let mut d = ChunkedDecoder::new();
    let mut out = Vec::new();
    let l = Limits::default();
    for piece in [&b"1"[..], b"0", b"\r", b"\n"] {
        let p = d.decode(piece, &mut out, &l).unwrap();
        assert_eq!(
            p,
            ChunkProgress {
                consumed: 1,
                done: false
            }
        );
    }
    d.decode(&[b'x'; 16], &mut out, &l).unwrap();
    assert_eq!(d.decoded_len(), 16);
    let p = d.decode(b"\r\n0\r\n\r\nnext", &mut out, &l).unwrap();
    assert_eq!(
        p,
        ChunkProgress {
            consumed: 7,
            done: true
        }
    );
    assert_eq!(out, [b'x'; 16]);
}
