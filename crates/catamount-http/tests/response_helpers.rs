//! Response encoding helpers.
#![allow(clippy::unwrap_used)]

use catamount_http::{
    error_response, is_token, is_valid_field_value, reason_phrase, status_has_body, write_chunk,
    write_status_line, Version,
};

#[test]
fn status_lines() {
    let mut out = Vec::new();
    write_status_line(&mut out, Version::Http11, 200);
    write_status_line(&mut out, Version::Http10, 413);
    write_status_line(&mut out, Version::Http11, 799);
    assert_eq!(
        out,
        b"HTTP/1.1 200 OK\r\nHTTP/1.0 413 Content Too Large\r\nHTTP/1.1 799 Unknown\r\n"
    );
    assert_eq!(reason_phrase(103), "Early Hints");
    assert_eq!(reason_phrase(431), "Request Header Fields Too Large");
}

#[test]
fn header_validation() {
    assert!(is_token(b"x-custom_Header.1"));
    assert!(!is_token(b""));
    assert!(!is_token(b"bad name"));
    assert!(!is_token(b"a:b"));
    assert!(is_valid_field_value(b"text/html; charset=utf-8\tok \xe9"));
    assert!(!is_valid_field_value(b"a\r\nb"));
    assert!(!is_valid_field_value(b"a\0b"));
    assert!(!is_valid_field_value(b"a\x7fb"));
}

#[test]
fn bodies_and_chunks() {
    assert!(!status_has_body(101) && !status_has_body(204) && !status_has_body(304));
    assert!(status_has_body(200) && status_has_body(404));
    let mut out = Vec::new();
    write_chunk(&mut out, b"hello world, this is long");
    write_chunk(&mut out, b"");
    assert_eq!(out, b"19\r\nhello world, this is long\r\n");
    let e = String::from_utf8(error_response(Version::Http11, 431)).unwrap();
    assert_eq!(
        e,
        "HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: text/plain\r\ncontent-length: 32\r\nconnection: close\r\n\r\nRequest Header Fields Too Large\n"
    );
}
