//! Encoding responses: reason phrases, status lines, header validation, chunk framing, and the
//! canned responses for refused requests; the app's header fields and the rules applied to them
//! ([`head`]); body framing, keep-alive and the head's bytes ([`framing`]); 103 Early Hints
//! ([`early_hints`]). Pure functions: the Ruby extension reads the app's answer and calls these.

mod early_hints;
mod framing;
mod head;

pub use early_hints::early_hints;
pub use framing::{Answering, Framing, FramingError};
pub use head::{classify_field_name, FieldError, FieldName, FieldValues, ResponseHead};

use crate::request::Version;
use crate::syntax::is_field_byte;

/// The reason phrase for a status, from the IANA HTTP status code registry (RFC 9110
/// wording: 413 "Content Too Large", 422 "Unprocessable Content"); "Unknown" otherwise.
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        101 => "Switching Protocols",
        102 => "Processing",
        103 => "Early Hints",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        203 => "Non-Authoritative Information",
        204 => "No Content",
        205 => "Reset Content",
        206 => "Partial Content",
        207 => "Multi-Status",
        208 => "Already Reported",
        226 => "IM Used",
        300 => "Multiple Choices",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        304 => "Not Modified",
        305 => "Use Proxy",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        402 => "Payment Required",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        407 => "Proxy Authentication Required",
        408 => "Request Timeout",
        409 => "Conflict",
        410 => "Gone",
        411 => "Length Required",
        412 => "Precondition Failed",
        413 => "Content Too Large",
        414 => "URI Too Long",
        415 => "Unsupported Media Type",
        416 => "Range Not Satisfiable",
        417 => "Expectation Failed",
        421 => "Misdirected Request",
        422 => "Unprocessable Content",
        423 => "Locked",
        424 => "Failed Dependency",
        425 => "Too Early",
        426 => "Upgrade Required",
        428 => "Precondition Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        451 => "Unavailable For Legal Reasons",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        506 => "Variant Also Negotiates",
        507 => "Insufficient Storage",
        508 => "Loop Detected",
        510 => "Not Extended",
        511 => "Network Authentication Required",
        _ => "Unknown",
    }
}

/// A valid header field name: a non-empty RFC 9110 token (the same test the request parser
/// applies to names).
pub fn is_token(name: &[u8]) -> bool {
    crate::syntax::is_token(name)
}

/// A valid header field value: HTAB, SP, VCHAR and obs-text only, so no CR, LF, NUL, other
/// control characters or DEL (a CR or LF would let the app inject headers). Empty values and
/// leading or trailing whitespace are accepted: recipients ignore that whitespace, so it is
/// harmless; callers that care trim it themselves.
pub fn is_valid_field_value(value: &[u8]) -> bool {
    value.iter().all(|&b| is_field_byte(b))
}

/// Appends the status line, e.g. `HTTP/1.1 200 OK\r\n`. Callers guarantee `status` is in
/// 100..=999 (a status outside is written clamped into that range so the line stays
/// well-formed). Allocates nothing beyond growing `out`.
pub fn write_status_line(out: &mut Vec<u8>, version: Version, status: u16) {
    out.extend_from_slice(match version {
        Version::Http11 => b"HTTP/1.1 ",
        Version::Http10 => b"HTTP/1.0 ",
    });
    let code = status.clamp(100, 999);
    out.extend_from_slice(&three_digits(code));
    out.push(b' ');
    out.extend_from_slice(reason_phrase(code).as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// The decimal digits of a number below 1000, zero-padded to three.
fn three_digits(n: u16) -> [u8; 3] {
    let digit = |d: u16| b'0' + (d % 10) as u8;
    [digit(n / 100), digit(n / 10), digit(n)]
}

/// Whether a response with this status may carry a body: not 1xx, 204 or 304 (RFC 9110
/// §6.4.1). Responses to HEAD have none either; that is the caller's to know.
pub fn status_has_body(status: u16) -> bool {
    status >= 200 && status != 204 && status != 304
}

/// Appends one chunk, `hex-size CRLF data CRLF`. Nothing for empty data, which would end the
/// body ([`LAST_CHUNK`] does that).
pub fn write_chunk(out: &mut Vec<u8>, data: &[u8]) {
    if data.is_empty() {
        return;
    }
    write_hex(out, data.len());
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
}

/// Appends `n` in lower-case hex without leading zeros.
fn write_hex(out: &mut Vec<u8>, n: usize) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let significant = (usize::BITS - n.leading_zeros()).div_ceil(4).max(1);
    for shift in (0..significant).rev() {
        let nibble = (n >> (shift * 4)) & 0xf;
        out.push(DIGITS.get(nibble).copied().unwrap_or(b'0'));
    }
}

/// The last chunk and an empty trailer section: ends a chunked body.
pub const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

/// A complete response refusing a request, after which the connection is closed:
/// status line, `content-type: text/plain`, `content-length`, `connection: close`, and the
/// reason phrase and a newline as the body. Header names are lower-case, as Puma 7+ sends.
pub fn error_response(version: Version, status: u16) -> Vec<u8> {
    let reason = reason_phrase(status.clamp(100, 999));
    let body_len = reason.len() + 1;
    let mut out = Vec::with_capacity(96 + reason.len() * 2);
    write_status_line(&mut out, version, status);
    out.extend_from_slice(b"content-type: text/plain\r\ncontent-length: ");
    out.extend_from_slice(body_len.to_string().as_bytes());
    out.extend_from_slice(b"\r\nconnection: close\r\n\r\n");
    out.extend_from_slice(reason.as_bytes());
    out.push(b'\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_sizes() {
        for (n, text) in [
            (0usize, "0"),
            (1, "1"),
            (15, "f"),
            (16, "10"),
            (255, "ff"),
            (4096, "1000"),
            (usize::MAX, "ffffffffffffffff"),
        ] {
            let mut out = Vec::new();
            write_hex(&mut out, n);
            if usize::BITS == 64 || n != usize::MAX {
                assert_eq!(out, text.as_bytes(), "{n}");
            }
        }
    }

    #[test]
    fn digits() {
        assert_eq!(&three_digits(100), b"100");
        assert_eq!(&three_digits(204), b"204");
        assert_eq!(&three_digits(999), b"999");
    }

    #[test]
    fn out_of_range_status_is_clamped() {
        let mut out = Vec::new();
        write_status_line(&mut out, Version::Http11, 42);
        write_status_line(&mut out, Version::Http11, 1234);
        assert_eq!(out, b"HTTP/1.1 100 Continue\r\nHTTP/1.1 999 Unknown\r\n");
    }
}
