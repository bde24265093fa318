//! The bytes of a control answer: status line, `content-type`, `content-length`,
//! `connection: close`, body. One request per connection, so every answer closes it.

use catamount_http::reason_phrase;

/// An answer's bytes. A content type with a CR, LF or other control character is replaced by
/// `application/octet-stream` rather than let it split the head.
pub fn build(status: u16, content_type: &str, body: &[u8]) -> Vec<u8> {
    let status = status.clamp(100, 999);
    let content_type =
        if content_type.bytes().any(|b| b.is_ascii_control()) || content_type.is_empty() {
            "application/octet-stream"
        } else {
            content_type
        };
    let mut out = Vec::with_capacity(128 + body.len());
    out.extend_from_slice(
        format!(
            "HTTP/1.1 {status} {}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
            reason_phrase(status),
            body.len()
        )
        .as_bytes(),
    );
    out.extend_from_slice(body);
    out
}

/// 403 for a missing or wrong token.
pub fn forbidden() -> Vec<u8> {
    build(403, "text/plain", b"Invalid auth token")
}

/// 404 for a path that names no command.
pub fn unknown() -> Vec<u8> {
    build(404, "text/plain", b"Unsupported action")
}

/// 404 for a known command this server does not allow.
pub fn unavailable(command: &str) -> Vec<u8> {
    build(
        404,
        "text/plain",
        format!("Command {command:?} unavailable").as_bytes(),
    )
}

/// 400 for bytes that are not a request, or a head over the limit.
pub fn bad_request() -> Vec<u8> {
    build(400, "text/plain", b"Bad Request")
}

/// 408 for a request that did not arrive in full within its deadline.
pub fn request_timeout() -> Vec<u8> {
    build(408, "text/plain", b"Request Timeout")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn head_and_body() {
        assert_eq!(
            build(200, "application/json", b"{}"),
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}"
        );
        assert_eq!(
            unavailable("halt"),
            b"HTTP/1.1 404 Not Found\r\ncontent-type: text/plain\r\ncontent-length: 26\r\nconnection: close\r\n\r\nCommand \"halt\" unavailable"
        );
    }

    #[test]
    fn a_content_type_cannot_split_the_head() {
        let out = String::from_utf8(build(200, "text/plain\r\nx: y", b"")).unwrap_or_default();
        assert!(out.contains("content-type: application/octet-stream\r\n"));
        assert!(!out.contains("x: y"));
    }
}
