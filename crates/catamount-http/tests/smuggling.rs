//! Request-smuggling and desync vectors: every ambiguity in framing or line structure is
//! refused rather than interpreted.
#![allow(clippy::unwrap_used)]

use catamount_http::{parse_head, BodyFraming, ErrorKind, Limits};

fn verdict(raw: &[u8]) -> Result<BodyFraming, (ErrorKind, u16)> {
    match parse_head(raw, &Limits::default()) {
        Ok(Some((head, n))) => {
            assert_eq!(n, raw.len());
            Ok(head.body())
        }
        Ok(None) => panic!("incomplete: {:?}", String::from_utf8_lossy(raw)),
        Err(e) => Err((e.kind(), e.status())),
    }
}

/// A POST with these extra header lines.
fn post(fields: &str) -> Vec<u8> {
    format!("POST / HTTP/1.1\r\nHost: x\r\n{fields}\r\n").into_bytes()
}

#[test]
fn content_length_vectors() {
    use ErrorKind::*;
    for (fields, expected) in [
        ("Content-Length: 5\r\n", Ok(BodyFraming::Length(5))),
        (
            "Content-Length: 5\r\nContent-Length: 5\r\n",
            Err((InvalidContentLength, 400)),
        ),
        (
            "Content-Length: 5\r\nContent-Length: 6\r\n",
            Err((InvalidContentLength, 400)),
        ),
        (
            "Content-Length: 5\r\ncontent-length: 5\r\n",
            Err((InvalidContentLength, 400)),
        ),
        ("Content-Length: 5, 5\r\n", Err((InvalidContentLength, 400))),
        ("Content-Length: 5,5\r\n", Err((InvalidContentLength, 400))),
        ("Content-Length: 5, 6\r\n", Err((InvalidContentLength, 400))),
        ("Content-Length: +5\r\n", Err((InvalidContentLength, 400))),
        ("Content-Length: -1\r\n", Err((InvalidContentLength, 400))),
        ("Content-Length: 0x5\r\n", Err((InvalidContentLength, 400))),
        ("Content-Length: 5.0\r\n", Err((InvalidContentLength, 400))),
        ("Content-Length: 1 2\r\n", Err((InvalidContentLength, 400))),
        ("Content-Length:  \r\n", Err((InvalidContentLength, 400))),
        ("Content-Length:\r\n", Err((InvalidContentLength, 400))),
        (
            "Content-Length: \"5\"\r\n",
            Err((InvalidContentLength, 400)),
        ),
        (
            "Content-Length: 99999999999999999999999\r\n",
            Err((InvalidContentLength, 400)),
        ),
        (
            "Content-Length: 18446744073709551616\r\n",
            Err((InvalidContentLength, 400)),
        ),
        ("Content-Length: 5 \t\r\n", Ok(BodyFraming::Length(5))),
        ("Content-Length:\t5\r\n", Err((InvalidContentLength, 400))),
        ("Content-Length: \t5\r\n", Err((InvalidContentLength, 400))),
        ("Content-Length : 5\r\n", Err((MalformedHeader, 400))),
        ("Content-Length\t: 5\r\n", Err((MalformedHeader, 400))),
        ("Content-Length: 5\r\n 6\r\n", Err((ObsFold, 400))),
    ] {
        assert_eq!(verdict(&post(fields)), expected, "{fields:?}");
    }
}

#[test]
fn transfer_encoding_vectors() {
    use ErrorKind::*;
    for (fields, expected) in [
        ("Transfer-Encoding: chunked\r\n", Ok(BodyFraming::Chunked)),
        ("Transfer-Encoding: Chunked\r\n", Ok(BodyFraming::Chunked)),
        ("Transfer-Encoding: chunked  \r\n", Ok(BodyFraming::Chunked)),
        // A tab after the value: llhttp does not read `chunked<TAB>` as chunked (it refuses
        // the request), so neither do we.
        (
            "Transfer-Encoding: chunked \t\r\n",
            Err((InvalidTransferEncoding, 400)),
        ),
        (
            "Transfer-Encoding: chunked\t\r\n",
            Err((InvalidTransferEncoding, 400)),
        ),
        (
            "Transfer-Encoding: gzip\t, chunked\r\n",
            Err((InvalidTransferEncoding, 400)),
        ),
        // A tab before the value, as Puma: refused (a proxy may not see the field).
        (
            "Transfer-Encoding: \tchunked \r\n",
            Err((InvalidTransferEncoding, 400)),
        ),
        (
            "Transfer-Encoding:\tchunked\r\n",
            Err((InvalidTransferEncoding, 400)),
        ),
        (
            "Transfer-Encoding: chunked, chunked\r\n",
            Err((InvalidTransferEncoding, 400)),
        ),
        (
            "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
            Err((InvalidTransferEncoding, 400)),
        ),
        (
            "Transfer-Encoding: gzip, chunked\r\n",
            Err((UnsupportedTransferCoding, 501)),
        ),
        (
            "Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n",
            Err((UnsupportedTransferCoding, 501)),
        ),
        (
            "Transfer-Encoding: chunked, gzip\r\n",
            Err((InvalidTransferEncoding, 400)),
        ),
        (
            "Transfer-Encoding: chunked\r\nTransfer-Encoding: gzip\r\n",
            Err((InvalidTransferEncoding, 400)),
        ),
        (
            "Transfer-Encoding: gzip\r\n",
            Err((InvalidTransferEncoding, 400)),
        ),
        (
            "Transfer-Encoding: identity\r\n",
            Err((InvalidTransferEncoding, 400)),
        ),
        (
            "Transfer-Encoding: xchunked\r\n",
            Err((InvalidTransferEncoding, 400)),
        ),
        (
            "Transfer-Encoding: chunked;q=1\r\n",
            Err((InvalidTransferEncoding, 400)),
        ),
        (
            "Transfer-Encoding: \"chunked\"\r\n",
            Err((InvalidTransferEncoding, 400)),
        ),
        (
            "Transfer-Encoding:\r\n",
            Err((InvalidTransferEncoding, 400)),
        ),
        (
            "Transfer-Encoding: \r\n",
            Err((InvalidTransferEncoding, 400)),
        ),
        (
            "Transfer-Encoding: ,chunked\r\n",
            Err((InvalidTransferEncoding, 400)),
        ),
        (
            "Transfer-Encoding: chunked,\r\n",
            Err((InvalidTransferEncoding, 400)),
        ),
        (
            "Transfer-Encoding : chunked\r\n",
            Err((MalformedHeader, 400)),
        ),
        (
            "Transfer-Encoding:\x0bchunked\r\n",
            Err((ControlCharacter, 400)),
        ),
        (
            "Transfer-Encoding: chunked\r\n\tgzip\r\n",
            Err((ObsFold, 400)),
        ),
    ] {
        assert_eq!(verdict(&post(fields)), expected, "{fields:?}");
    }
}

#[test]
fn content_length_with_transfer_encoding() {
    for fields in [
        "Content-Length: 3\r\nTransfer-Encoding: chunked\r\n",
        "Transfer-Encoding: chunked\r\nContent-Length: 3\r\n",
        "Content-Length: 0\r\nTransfer-Encoding: chunked\r\n",
        "Content-Length: 3\r\nTransfer-Encoding: gzip, chunked\r\n",
    ] {
        assert_eq!(
            verdict(&post(fields)),
            Err((ErrorKind::ContentLengthWithTransferEncoding, 400)),
            "{fields:?}"
        );
    }
}

#[test]
fn transfer_encoding_on_http_1_0() {
    assert_eq!(
        verdict(b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n"),
        Err((ErrorKind::TransferEncodingHttp10, 400))
    );
    assert_eq!(
        verdict(b"POST / HTTP/1.0\r\nContent-Length: 2\r\n\r\n"),
        Ok(BodyFraming::Length(2))
    );
}

#[test]
fn line_structure_vectors() {
    use ErrorKind::*;
    for (raw, kind) in [
        // Bare LF where a proxy might see a line break and we would not (or the reverse).
        (&b"GET / HTTP/1.1\nHost: x\r\n\r\n"[..], BareLf),
        (
            b"GET / HTTP/1.1\r\nHost: x\nTransfer-Encoding: chunked\r\n\r\n",
            BareLf,
        ),
        (b"GET / HTTP/1.1\r\nHost: x\r\nX: 1\n\r\n", BareLf),
        (b"GET / HTTP/1.1\r\nHost: x\r\n\n", BareLf),
        // Bare CR.
        (
            b"GET / HTTP/1.1\r\nHost: x\rTransfer-Encoding: chunked\r\n\r\n",
            BareCr,
        ),
        (b"GET / HTTP/1.1\r\nHost: x\r\r\n\r\n", BareCr),
        // NUL in a value and in the target.
        (
            b"GET / HTTP/1.1\r\nHost: x\r\nX: a\0b\r\n\r\n",
            ControlCharacter,
        ),
        (b"GET /a\0b HTTP/1.1\r\nHost: x\r\n\r\n", ControlCharacter),
        // Obs-fold, whitespace before the colon, empty and non-token names.
        (b"GET / HTTP/1.1\r\nHost: x\r\nX: a\r\n  b\r\n\r\n", ObsFold),
        (b"GET / HTTP/1.1\r\nHost : x\r\n\r\n", MalformedHeader),
        (b"GET / HTTP/1.1\r\nHost: x\r\n: v\r\n\r\n", MalformedHeader),
        (
            b"GET / HTTP/1.1\r\nHost: x\r\nX@Y: v\r\n\r\n",
            MalformedHeader,
        ),
        (
            b"GET / HTTP/1.1\r\nHost: x\r\nX/Y: v\r\n\r\n",
            MalformedHeader,
        ),
        // Host.
        (b"GET / HTTP/1.1\r\n\r\n", MissingHost),
        (
            b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
            DuplicateHost,
        ),
        (b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n", InvalidHost),
        // Versions.
        (b"GET /\r\n\r\n", MalformedRequestLine),
        (b"GET / HTTP/2.0\r\nHost: x\r\n\r\n", UnsupportedVersion),
        (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", UnsupportedVersion),
    ] {
        assert_eq!(
            verdict(raw).map_err(|e| e.0),
            Err(kind),
            "{:?}",
            String::from_utf8_lossy(raw)
        );
    }
    // HTTP/1.0 needs no Host.
    assert_eq!(verdict(b"GET / HTTP/1.0\r\n\r\n"), Ok(BodyFraming::None));
}
