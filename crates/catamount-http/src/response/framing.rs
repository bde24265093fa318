//! How a response body is delimited on the wire, whether the connection may stay open after
//! it, and the head's bytes that say so: the app's `content-length`, else the body's size when
//! it is known beforehand (an Array, a file), else chunked on HTTP/1.1 and close-delimited on
//! HTTP/1.0; nothing for HEAD, 1xx, 204 and 304.

use std::fmt;

use super::head::{bodiless, push_field};
use super::{status_has_body, write_status_line, ResponseHead};
use crate::request::Version;

/// What the server knows of the request being answered that decides the response's framing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Answering {
    pub version: Version,
    /// A HEAD request: the head says what a GET would get, but no body follows.
    pub head_request: bool,
}

/// How the body is delimited on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// Exactly this many bytes.
    Length(u64),
    /// Chunked (the server writes the chunks and the last chunk).
    Chunked,
    /// The end of the body is the end of the connection: HTTP/1.0 with an unknown length, or a
    /// body the app framed itself with `transfer-encoding`.
    Close,
    /// HEAD, 1xx, 204, 304: no body bytes.
    NoBody,
}

/// A response whose framing the app got wrong: refused (a 500), never sent ambiguous.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FramingError {
    /// The app's `content-length` disagrees with the size of a body known beforehand.
    LengthMismatch { declared: u64, actual: u64 },
    /// The app gave both `content-length` and `transfer-encoding` (RFC 9112 §6.2: a sender
    /// must not; recipients disagree on which wins, the ground of response smuggling).
    LengthAndEncoding,
    /// The app's `transfer-encoding` to an HTTP/1.0 request (RFC 9112 §6.1: a server must not
    /// send one; the client would take the app's encoding for the body).
    EncodingTo10,
    /// A 1xx status as the final answer (other than 101, which ends HTTP): the client would
    /// take it as interim and read the next response as this request's.
    Interim(u16),
}

impl fmt::Display for FramingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FramingError::LengthMismatch { declared, actual } => write!(
                f,
                "content-length {declared} does not match the body's {actual} bytes"
            ),
            FramingError::LengthAndEncoding => {
                write!(f, "both content-length and transfer-encoding")
            }
            FramingError::EncodingTo10 => {
                write!(f, "transfer-encoding in a response to HTTP/1.0")
            }
            FramingError::Interim(status) => {
                write!(f, "interim status {status} as the final response")
            }
        }
    }
}

impl std::error::Error for FramingError {}

impl ResponseHead {
    /// Whether no body bytes follow this head: a response to HEAD, or a 1xx, 204 or 304.
    pub fn is_bodiless(&self, to: Answering) -> bool {
        bodiless(self.status(), to.head_request)
    }

    /// The framing of the body. `known_len`: the body's size when it is known without running
    /// it (an Array body, a file); a `content-length` that disagrees with it is refused, and so
    /// are both framing fields together, the app's `transfer-encoding` to HTTP/1.0, and a 1xx
    /// other than 101 as the final status. An app's `transfer-encoding` means the app encoded
    /// the body itself: it is passed through as it is and the connection closes after it (the
    /// server cannot tell where the app's encoding ends, so nothing may follow it on the
    /// connection), whatever size the body has.
    pub fn framing(&self, to: Answering, known_len: Option<u64>) -> Result<Framing, FramingError> {
        let status = self.status();
        if status < 200 && status != 101 {
            return Err(FramingError::Interim(status));
        }
        if self.content_length().is_some() && self.has_transfer_encoding() {
            return Err(FramingError::LengthAndEncoding);
        }
        if self.has_transfer_encoding() && to.version == Version::Http10 {
            return Err(FramingError::EncodingTo10);
        }
        let bodiless = self.is_bodiless(to);
        if let (Some(declared), Some(actual), false) = (self.content_length(), known_len, bodiless)
        {
            if declared != actual {
                return Err(FramingError::LengthMismatch { declared, actual });
            }
        }
        Ok(if bodiless {
            Framing::NoBody
        } else if self.has_transfer_encoding() {
            Framing::Close
        } else if let Some(len) = self.content_length().or(known_len) {
            Framing::Length(len)
        } else if to.version == Version::Http11 {
            Framing::Chunked
        } else {
            Framing::Close
        })
    }

    /// Whether the connection stays open after this response, given whether the request and
    /// the server allow it: not when the app said `connection: close`, nor after a body whose
    /// end is the connection's, nor after a 101.
    pub fn keeps_alive(&self, framing: Framing, allowed: bool) -> bool {
        // After a 101 (without a callable taking the connection) the client speaks another
        // protocol: no HTTP request may be read there.
        allowed && !self.says_close() && framing != Framing::Close && self.status() != 101
    }

    /// The whole head: status line, the app's lines, the framing field the server adds
    /// (`content-length` when the app gave none, also for HEAD when the size is known;
    /// `transfer-encoding: chunked`), the `connection` field when the version's default does not
    /// hold (`close` on HTTP/1.1, `keep-alive` on HTTP/1.0), and the empty line. Allocates the
    /// returned buffer only.
    pub fn encode(
        &self,
        to: Answering,
        framing: Framing,
        known_len: Option<u64>,
        keep_alive: bool,
    ) -> Vec<u8> {
        let status = self.status();
        let mut out = Vec::with_capacity(256 + self.lines().len());
        write_status_line(&mut out, to.version, status);
        out.extend_from_slice(self.lines());
        // The app's transfer-encoding frames the body: a length beside it would be a second,
        // disagreeing framing (also on HEAD, which says what a GET would get).
        let add_length = self.content_length().is_none()
            && !self.has_transfer_encoding()
            && status != 204
            && status >= 200;
        match framing {
            Framing::Length(len) if add_length => push_length(&mut out, len),
            Framing::NoBody if add_length && to.head_request => {
                if let Some(len) = known_len {
                    push_length(&mut out, len);
                }
            }
            Framing::Chunked => push_field(&mut out, b"transfer-encoding", b"chunked"),
            _ => {}
        }
        match (to.version, keep_alive) {
            (Version::Http11, false) => push_field(&mut out, b"connection", b"close"),
            (Version::Http10, true) => push_field(&mut out, b"connection", b"keep-alive"),
            _ => {}
        }
        out.extend_from_slice(b"\r\n");
        out
    }

    /// The head of a 101 Switching Protocols after which the connection is the app's: the
    /// status line, the app's lines, `upgrade: <protocol>` when the app named one (Rack 3.1's
    /// `rack.protocol` response header) and `connection: upgrade` (RFC 9110 §7.8: `Upgrade` is
    /// hop-by-hop, so `Connection` must list it). No framing field: nothing after it is HTTP.
    pub fn encode_upgrade(&self, to: Answering, protocol: Option<&[u8]>) -> Vec<u8> {
        let mut out = Vec::with_capacity(128 + self.lines().len());
        write_status_line(&mut out, to.version, self.status());
        out.extend_from_slice(self.lines());
        if let Some(protocol) = protocol {
            push_field(&mut out, b"upgrade", protocol);
        }
        push_field(&mut out, b"connection", b"upgrade");
        out.extend_from_slice(b"\r\n");
        out
    }

    /// A whole response after which the connection closes (error responses): the status line,
    /// the app's lines, a `content-length` for `body` unless the app gave one or its own
    /// `transfer-encoding` or the status has no body, `connection: close`, and the body unless none may follow.
    pub fn closing_response(&self, to: Answering, body: &[u8]) -> Vec<u8> {
        let status = self.status();
        let mut out = Vec::with_capacity(128 + self.lines().len() + body.len());
        write_status_line(&mut out, to.version, status);
        out.extend_from_slice(self.lines());
        if self.content_length().is_none()
            && !self.has_transfer_encoding()
            && status_has_body(status)
        {
            push_length(&mut out, body.len() as u64);
        }
        push_field(&mut out, b"connection", b"close");
        out.extend_from_slice(b"\r\n");
        if !self.is_bodiless(to) {
            out.extend_from_slice(body);
        }
        out
    }
}

/// Appends `content-length: <len>\r\n` (the digits written without allocating).
fn push_length(out: &mut Vec<u8>, len: u64) {
    let mut digits = [0u8; 20];
    let mut start = digits.len();
    let mut n = len;
    loop {
        start -= 1;
        if let Some(d) = digits.get_mut(start) {
            *d = b'0' + (n % 10) as u8;
        }
        n /= 10;
        if n == 0 || start == 0 {
            break;
        }
    }
    push_field(
        out,
        b"content-length",
        digits.get(start..).unwrap_or_default(),
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::response::FieldValues;

    #[test]
    fn upgrade_head_names_the_protocol_and_lists_upgrade() {
        let mut head = ResponseHead::new(101);
        head.add(b"X-A", FieldValues::Joined(b"1")).unwrap();
        head.add(b"Content-Length", FieldValues::Joined(b"5"))
            .unwrap();
        let to = Answering {
            version: Version::Http11,
            head_request: false,
        };
        assert_eq!(
            head.encode_upgrade(to, Some(b"websocket")),
            b"HTTP/1.1 101 Switching Protocols\r\nX-A: 1\r\nupgrade: websocket\r\nconnection: upgrade\r\n\r\n"
        );
        assert_eq!(
            head.encode_upgrade(to, None),
            b"HTTP/1.1 101 Switching Protocols\r\nX-A: 1\r\nconnection: upgrade\r\n\r\n"
        );
    }

    #[test]
    fn lengths_are_decimal() {
        for n in [0u64, 7, 10, 99, 100, 65_536, u64::MAX] {
            let mut out = Vec::new();
            push_length(&mut out, n);
            assert_eq!(out, format!("content-length: {n}\r\n").as_bytes());
        }
    }
}
