//! Helpers for writing responses: status lines, header validation, chunk framing.

use crate::request::{is_tchar, Version};

/// The reason phrase for a status (RFC 9110 and the IANA registry); "Unknown" otherwise.
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

/// A valid header field name: a non-empty RFC 9110 token.
pub fn is_token(name: &[u8]) -> bool {
    !name.is_empty() && name.iter().all(|c| is_tchar(*c))
}

/// A valid field value: HTAB, SP, visible ASCII and obs-text; no CR, LF, NUL or other CTL.
pub fn is_valid_field_value(v: &[u8]) -> bool {
    v.iter().all(|c| *c == b'\t' || (*c >= 0x20 && *c != 0x7f))
}

/// Appends `HTTP/1.1 200 OK\r\n`. `status` must be 100..=999.
pub fn write_status_line(out: &mut Vec<u8>, version: Version, status: u16) {
    out.extend_from_slice(match version {
        Version::Http11 => b"HTTP/1.1 ",
        Version::Http10 => b"HTTP/1.0 ",
    });
    let s = status.clamp(100, 999);
    out.extend_from_slice(&[
        b'0' + (s / 100) as u8,
        b'0' + (s / 10 % 10) as u8,
        b'0' + (s % 10) as u8,
        b' ',
    ]);
    out.extend_from_slice(reason_phrase(status).as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// Whether a response with this status carries a body (not 1xx, 204, 304).
pub fn status_has_body(status: u16) -> bool {
    !(status < 200 || status == 204 || status == 304)
}

/// Appends one chunk (`size CRLF data CRLF`); nothing for empty data, which would end the body.
pub fn write_chunk(out: &mut Vec<u8>, data: &[u8]) {
    if data.is_empty() {
        return;
    }
    out.extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
}

/// The last chunk with an empty trailer section.
pub const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

/// A complete error response that closes the connection; the body is the reason phrase.
pub fn error_response(version: Version, status: u16) -> Vec<u8> {
    let body = format!("{}\n", reason_phrase(status));
    let mut out = Vec::with_capacity(128);
    write_status_line(&mut out, version, status);
    out.extend_from_slice(b"content-type: text/plain\r\ncontent-length: ");
    out.extend_from_slice(body.len().to_string().as_bytes());
    out.extend_from_slice(b"\r\nconnection: close\r\n\r\n");
    out.extend_from_slice(body.as_bytes());
    out
}
