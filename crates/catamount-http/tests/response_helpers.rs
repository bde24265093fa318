//! Response encoding helpers.
#![allow(clippy::unwrap_used)]

use catamount_http::{
    error_response, is_token, is_valid_field_value, reason_phrase, status_has_body, write_chunk,
    write_status_line, ChunkedDecoder, Limits, Version, LAST_CHUNK,
};

#[test]
fn reason_phrases() {
    for (status, phrase) in [
        (100, "Continue"),
        (101, "Switching Protocols"),
        (103, "Early Hints"),
        (200, "OK"),
        (204, "No Content"),
        (301, "Moved Permanently"),
        (304, "Not Modified"),
        (308, "Permanent Redirect"),
        (400, "Bad Request"),
        (404, "Not Found"),
        (408, "Request Timeout"),
        (413, "Content Too Large"),
        (414, "URI Too Long"),
        (421, "Misdirected Request"),
        (422, "Unprocessable Content"),
        (425, "Too Early"),
        (428, "Precondition Required"),
        (429, "Too Many Requests"),
        (431, "Request Header Fields Too Large"),
        (451, "Unavailable For Legal Reasons"),
        (500, "Internal Server Error"),
        (501, "Not Implemented"),
        (505, "HTTP Version Not Supported"),
        (507, "Insufficient Storage"),
        (508, "Loop Detected"),
        (510, "Not Extended"),
        (511, "Network Authentication Required"),
        (299, "Unknown"),
        (600, "Unknown"),
        (0, "Unknown"),
    ] {
        assert_eq!(reason_phrase(status), phrase, "{status}");
    }
}

#[test]
fn status_lines() {
    let mut out = Vec::new();
    write_status_line(&mut out, Version::Http11, 200);
    write_status_line(&mut out, Version::Http10, 413);
    write_status_line(&mut out, Version::Http11, 799);
    write_status_line(&mut out, Version::Http11, 103);
    assert_eq!(
        out,
        b"HTTP/1.1 200 OK\r\nHTTP/1.0 413 Content Too Large\r\nHTTP/1.1 799 Unknown\r\nHTTP/1.1 103 Early Hints\r\n"
    );
    // Appends to what is there and reuses its capacity.
    let mut out = Vec::with_capacity(64);
    out.extend_from_slice(b"x");
    let cap = out.capacity();
    write_status_line(&mut out, Version::Http11, 404);
    assert_eq!(out, b"xHTTP/1.1 404 Not Found\r\n");
    assert_eq!(out.capacity(), cap);
}

#[test]
fn header_validation() {
    assert!(is_token(b"x-custom_Header.1"));
    assert!(is_token(b"!#$%&'*+-.^_`|~"));
    for bad in [
        &b""[..],
        b"bad name",
        b"a:b",
        b"a\r\nb",
        b"(x)",
        b"\xc3\xa9",
        b"a/b",
    ] {
        assert!(!is_token(bad), "{bad:?}");
    }
    assert!(is_valid_field_value(b"text/html; charset=utf-8\tok \xe9"));
    assert!(is_valid_field_value(b""));
    assert!(is_valid_field_value(b" leading and trailing "));
    for bad in [
        &b"a\r\nb"[..],
        b"a\rb",
        b"a\nb",
        b"a\0b",
        b"a\x7fb",
        b"a\x1bb",
    ] {
        assert!(!is_valid_field_value(bad), "{bad:?}");
    }
}

#[test]
fn bodies() {
    for status in [100, 101, 103, 199, 204, 304] {
        assert!(!status_has_body(status), "{status}");
    }
    for status in [200, 201, 205, 206, 301, 404, 500, 999] {
        assert!(status_has_body(status), "{status}");
    }
}

#[test]
fn chunks_round_trip_through_the_decoder() {
    let mut out = Vec::new();
    write_chunk(&mut out, b"hello world, this is long");
    write_chunk(&mut out, b"");
    assert_eq!(out, b"19\r\nhello world, this is long\r\n");
    for len in [1usize, 9, 10, 15, 16, 255, 256, 4095, 4096, 65_537] {
        let mut out = Vec::new();
        write_chunk(&mut out, &vec![b'a'; len]);
        let header = format!("{len:x}\r\n");
        assert!(out.starts_with(header.as_bytes()), "{len}");
        assert_eq!(out.len(), header.len() + len + 2);
    }
    let mut body = Vec::new();
    write_chunk(&mut body, b"abc");
    write_chunk(&mut body, &[0u8; 300]);
    body.extend_from_slice(LAST_CHUNK);
    let mut decoded = Vec::new();
    let p = ChunkedDecoder::new()
        .decode(&body, &mut decoded, &Limits::default())
        .unwrap();
    assert!(p.done);
    assert_eq!(p.consumed, body.len());
    assert_eq!(decoded.len(), 303);
    assert_eq!(LAST_CHUNK, b"0\r\n\r\n");
}

#[test]
fn error_responses() {
    let e = String::from_utf8(error_response(Version::Http11, 431)).unwrap();
    assert_eq!(
        e,
        "HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: text/plain\r\ncontent-length: 32\r\nconnection: close\r\n\r\nRequest Header Fields Too Large\n"
    );
    let e = String::from_utf8(error_response(Version::Http10, 400)).unwrap();
    assert_eq!(
        e,
        "HTTP/1.0 400 Bad Request\r\ncontent-type: text/plain\r\ncontent-length: 12\r\nconnection: close\r\n\r\nBad Request\n"
    );
    for status in [400, 408, 413, 414, 431, 500, 501, 505] {
        let e = error_response(Version::Http11, status);
        let text = String::from_utf8(e).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert_eq!(body, format!("{}\n", reason_phrase(status)));
        assert!(head.contains(&format!("\r\ncontent-length: {}", body.len())));
        assert!(head.starts_with(&format!("HTTP/1.1 {status} ")));
    }
}
