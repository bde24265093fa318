//! HAProxy PROXY protocol version 1 (the text form, `proxy-protocol.txt` §2.1).
//!
//! A load balancer that terminates TCP in front of Catamount can send one line such as
//! `PROXY TCP4 203.0.113.7 192.0.2.1 51234 443\r\n` before the client's first byte, so that
//! the app sees the real client address instead of the balancer's. [`parse_proxy_v1`] looks
//! at the start of a fresh connection's bytes and says whether such a line is there, still
//! arriving, or malformed.
//!
//! It is strict, like the rest of this crate and like Puma's hardened parser: exactly one
//! space between fields, CRLF only, at most [`MAX_PROXY_LINE`] bytes, addresses of the
//! announced family, ports in canonical decimal. A malformed line is an error, never a guess,
//! because the address it carries is trusted for logging and access control.
//!
//! Only the text form is handled here; the binary version 2 signature does not begin with
//! `PROXY `, so it reads as [`ProxyLine::Absent`] (`proxy_v2.rs` reads version 2, and its
//! `parse_proxy` refuses the other version's header for a listener set for one). Whether to accept the line at all (only
//! from trusted peers) is the server's decision, not this module's.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;

/// The longest PROXY v1 line, CRLF included, as the spec sets it (room for any TCP6 line).
pub const MAX_PROXY_LINE: usize = 107;

/// What every v1 line starts with; the space is part of it, so `PROXYFOO` is not a line.
const SIGNATURE: &[u8] = b"PROXY ";

/// What the start of a connection's bytes says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyLine {
    /// The bytes do not begin with `PROXY ` (so it is plain HTTP: parse them as a request).
    Absent,
    /// The bytes so far are a prefix of a PROXY line: read more. The empty buffer is
    /// Incomplete too, since `PROXY ` could still come.
    Incomplete,
    /// A complete line of `len` bytes (CRLF included). `source` is the client address it
    /// announces (None for `PROXY UNKNOWN`). Bytes after `len` belong to the HTTP stream.
    Complete {
        source: Option<SocketAddr>,
        len: usize,
    },
}

/// A malformed PROXY line: the connection should be closed. The text says what is wrong,
/// for a log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProxyError(&'static str);

impl ProxyError {
    pub(crate) const fn new(reason: &'static str) -> Self {
        ProxyError(reason)
    }

    /// What is wrong, without the "malformed PROXY line" prefix that Display adds.
    pub fn reason(&self) -> &'static str {
        self.0
    }
}

impl fmt::Display for ProxyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "malformed PROXY protocol line: {}", self.0)
    }
}

impl std::error::Error for ProxyError {}

/// Reads a PROXY protocol v1 line from the start of `buf`, everything received so far on a
/// fresh connection.
///
/// The answer depends only on the bytes, never on how they were split across reads: every
/// strict prefix of a valid line is [`ProxyLine::Incomplete`]. A line that can no longer
/// become valid (a bare LF, a CR not followed by LF, or [`MAX_PROXY_LINE`] bytes without
/// CRLF) is refused as soon as those bytes are seen; other faults are reported once the CRLF
/// arrives, which the length limit bounds.
pub fn parse_proxy_v1(buf: &[u8]) -> Result<ProxyLine, ProxyError> {
    if !buf.starts_with(SIGNATURE) {
        // "P", "PRO"... may still become the signature; "GET /" never will.
        return Ok(if SIGNATURE.starts_with(buf) {
            ProxyLine::Incomplete
        } else {
            ProxyLine::Absent
        });
    }
    // Only the first MAX_PROXY_LINE bytes can hold the line, so never look further.
    let window = buf.get(..MAX_PROXY_LINE).unwrap_or(buf);
    let Some(cr) = find_crlf(window)? else {
        return if buf.len() >= MAX_PROXY_LINE {
            Err(ProxyError("no CRLF within 107 bytes"))
        } else {
            Ok(ProxyLine::Incomplete)
        };
    };
    let fields = window
        .get(SIGNATURE.len()..cr)
        .ok_or(ProxyError("malformed line"))?;
    let len = cr + 2;

    let mut split = fields.splitn(2, |&b| b == b' ');
    let protocol = split.next().unwrap_or_default();
    let rest = split.next();
    let source = match protocol {
        // The spec says to ignore whatever follows UNKNOWN up to the CRLF.
        b"UNKNOWN" => None,
        b"TCP4" => Some(tcp_source(rest, parse_v4)?),
        b"TCP6" => Some(tcp_source(rest, parse_v6)?),
        _ => return Err(ProxyError("unknown protocol (not TCP4, TCP6 or UNKNOWN)")),
    };
    Ok(ProxyLine::Complete { source, len })
}

/// The index of the CR of the first CRLF in `window`, or None if the window ends before one.
/// Refuses an LF without CR and a CR followed by anything but LF, which no valid line has.
fn find_crlf(window: &[u8]) -> Result<Option<usize>, ProxyError> {
    for (i, &b) in window.iter().enumerate() {
        match b {
            b'\n' => return Err(ProxyError("LF without CR")),
            b'\r' => {
                return match window.get(i + 1) {
                    Some(b'\n') => Ok(Some(i)),
                    Some(_) => Err(ProxyError("CR not followed by LF")),
                    // The next byte has not arrived (or lies past the limit; the caller
                    // tells those apart by the buffer's length).
                    None => Ok(None),
                };
            }
            _ => {}
        }
    }
    Ok(None)
}

/// Parses `<src-ip> <dst-ip> <src-port> <dst-port>` (the part after `TCP4 ` or `TCP6 `) and
/// returns the source. The destination is checked too, so a garbled line is not half-trusted.
fn tcp_source(
    rest: Option<&[u8]>,
    parse_ip: fn(&str) -> Option<IpAddr>,
) -> Result<SocketAddr, ProxyError> {
    let rest = rest.ok_or(ProxyError("missing addresses and ports"))?;
    // Splitting on every single space makes a doubled or trailing space an empty field,
    // which no parser below accepts.
    let mut fields = rest.split(|&b| b == b' ');
    let mut next = |what: &'static str| fields.next().ok_or(ProxyError(what));
    let src_ip = next("missing source address")?;
    let dst_ip = next("missing destination address")?;
    let src_port = next("missing source port")?;
    let dst_port = next("missing destination port")?;
    if fields.next().is_some() {
        return Err(ProxyError("extra field after destination port"));
    }
    let src_ip = ascii(src_ip)
        .and_then(parse_ip)
        .ok_or(ProxyError("invalid source address"))?;
    ascii(dst_ip)
        .and_then(parse_ip)
        .ok_or(ProxyError("invalid destination address"))?;
    let src_port = parse_port(src_port).ok_or(ProxyError("invalid source port"))?;
    parse_port(dst_port).ok_or(ProxyError("invalid destination port"))?;
    Ok(SocketAddr::new(src_ip, src_port))
}

fn ascii(field: &[u8]) -> Option<&str> {
    std::str::from_utf8(field).ok()
}

/// A dotted quad, as std parses it (which refuses octal-looking leading zeros).
fn parse_v4(s: &str) -> Option<IpAddr> {
    Ipv4Addr::from_str(s).ok().map(IpAddr::V4)
}

/// An IPv6 address as std parses it: no brackets, no zone, embedded IPv4 allowed.
fn parse_v6(s: &str) -> Option<IpAddr> {
    Ipv6Addr::from_str(s).ok().map(IpAddr::V6)
}

/// A port in canonical decimal: 1 to 5 digits, no sign, no leading zero except `0` itself,
/// at most 65535. Canonical only, so one port has one spelling.
fn parse_port(field: &[u8]) -> Option<u16> {
    if field.is_empty() || field.len() > 5 || !field.iter().all(u8::is_ascii_digit) {
        return None;
    }
    if field.len() > 1 && field.first() == Some(&b'0') {
        return None;
    }
    let value = field
        .iter()
        .fold(0u32, |n, &d| n * 10 + u32::from(d - b'0'));
    u16::try_from(value).ok()
}
