//! Chunked request bodies: extensions, trailers, errors, limits, and what follows the body.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use catamount_http::{ChunkedDecoder, ErrorKind, Limits};

fn decode(raw: &[u8]) -> Result<(Vec<u8>, usize), ErrorKind> {
    decode_with(raw, &Limits::default())
}

fn decode_with(raw: &[u8], limits: &Limits) -> Result<(Vec<u8>, usize), ErrorKind> {
    let mut d = ChunkedDecoder::new();
    let mut out = Vec::new();
    let p = d.decode(raw, &mut out, limits).map_err(|e| e.kind())?;
    assert!(p.done, "not done: {:?}", String::from_utf8_lossy(raw));
    assert_eq!(d.decoded_len(), out.len() as u64);
    Ok((out, p.consumed))
}

#[test]
fn plain_extensions_trailers() {
    assert_eq!(decode(b"5\r\nhello\r\n0\r\n\r\n").unwrap().0, b"hello");
    assert_eq!(
        decode(b"5;a=b;c\r\nhello\r\n6 ; q=\"x y\"\r\n world\r\n0\r\n\r\n")
            .unwrap()
            .0,
        b"hello world"
    );
    assert_eq!(
        decode(b"A\r\n0123456789\r\n0\r\nX-Trailer: 1\r\nY: 2\r\n\r\n")
            .unwrap()
            .0,
        b"0123456789"
    );
    assert_eq!(decode(b"0005\r\nhello\r\n0\r\n\r\n").unwrap().0, b"hello");
    assert_eq!(decode(b"a\r\n0123456789\r\n0\r\n\r\n").unwrap().0.len(), 10);
    assert_eq!(decode(b"0\r\n\r\n").unwrap().0, b"");
}

#[test]
fn bytes_after_the_body_are_left_alone() {
    let raw = b"3\r\nabc\r\n0\r\n\r\nGET / HTTP/1.1\r\n";
    let (out, consumed) = decode(raw).unwrap();
    assert_eq!(out, b"abc");
    assert_eq!(&raw[consumed..], b"GET / HTTP/1.1\r\n");
}

#[test]
fn errors() {
    for (raw, kind) in [
        (&b"zz\r\n"[..], ErrorKind::InvalidChunkSize),
        (b"\r\n", ErrorKind::InvalidChunkSize),
        (b"-5\r\n", ErrorKind::InvalidChunkSize),
        (b"0x5\r\n", ErrorKind::InvalidChunkSize),
        (b" 5\r\n", ErrorKind::InvalidChunkSize),
        (b"5 \r\nhello\r\n", ErrorKind::InvalidChunkSize),
        (b"11111111111111111\r\n", ErrorKind::InvalidChunkSize),
        (b"5\nhello\r\n", ErrorKind::BareLf),
        (b"5\r\nhelloX\r\n", ErrorKind::MissingChunkCrlf),
        (b"5\r\nhello\rX", ErrorKind::MissingChunkCrlf),
        (b"5;a\x01b\r\n", ErrorKind::InvalidChunkSize),
        (b"0\r\nBad Trailer: x\r\n\r\n", ErrorKind::MalformedTrailer),
        (b"0\r\n folded\r\n\r\n", ErrorKind::MalformedTrailer),
    ] {
        assert_eq!(
            decode(raw).err(),
            Some(kind),
            "{:?}",
            String::from_utf8_lossy(raw)
        );
    }
}

#[test]
fn limits() {
    let l = Limits::default();
    let long_line = format!("5;{}\r\nhello\r\n0\r\n\r\n", "e".repeat(l.max_chunk_line));
    assert_eq!(
        decode(long_line.as_bytes()).err(),
        Some(ErrorKind::ChunkLineTooLong)
    );
    let mut flood = Vec::new();
    for _ in 0..(l.max_chunk_extensions / 1000 + 2) {
        flood.extend_from_slice(format!("1;{}\r\nx\r\n", "e".repeat(1000)).as_bytes());
    }
    flood.extend_from_slice(b"0\r\n\r\n");
    assert_eq!(
        decode(&flood).err(),
        Some(ErrorKind::ChunkExtensionsTooLarge)
    );
    let capped = Limits {
        max_body: Some(8),
        ..Limits::default()
    };
    assert!(decode_with(b"4\r\nabcd\r\n4\r\nefgh\r\n0\r\n\r\n", &capped).is_ok());
    assert_eq!(
        decode_with(b"4\r\nabcd\r\n5\r\nefghi\r\n0\r\n\r\n", &capped).err(),
        Some(ErrorKind::BodyTooLarge),
        "refused when the size line announces it"
    );
    let mut d = ChunkedDecoder::new();
    let e = d
        .decode(b"ffffffff\r\n", &mut Vec::new(), &capped)
        .unwrap_err();
    assert_eq!(e.status(), 413);
}
