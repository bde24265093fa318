//! Request heads: a strict, resumable parser (RFC 9112) and the parsed [`RequestHead`].
//!
//! The parser works line by line as bytes arrive and remembers where it stopped, so feeding a
//! slow client's bytes costs linear time overall, and garbage is refused as soon as it is seen
//! (a bare LF, a NUL, a line over its limit), not after 112 KiB of it.

use std::ops::Range;

use crate::error::{ErrorKind, ParseError};
use crate::limits::Limits;

/// The HTTP version of a request. HTTP/1.2 to 1.9 are served as 1.1 (RFC 9112 §2.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    Http10,
    Http11,
}

/// How the request body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFraming {
    None,
    Length(u64),
    Chunked,
}

/// A parsed request head. Owns one copy of the head bytes; accessors borrow from it.
#[derive(Debug, Clone)]
pub struct RequestHead {
    bytes: Box<[u8]>,
    method: Range<usize>,
    target: Range<usize>,
    path: Range<usize>,
    query: Option<Range<usize>>,
    fragment: Option<Range<usize>>,
    authority: Option<Range<usize>>,
    version: Version,
    headers: Vec<(Range<usize>, Range<usize>)>,
    host: Option<Range<usize>>,
    body: BodyFraming,
    keep_alive: bool,
    expects_continue: bool,
}

fn err(kind: ErrorKind) -> ParseError {
    ParseError::new(kind)
}

impl RequestHead {
    fn slice(&self, r: &Range<usize>) -> &[u8] {
        self.bytes.get(r.clone()).unwrap_or_default()
    }

    /// The method (an ASCII token).
    pub fn method(&self) -> &str {
        std::str::from_utf8(self.slice(&self.method)).unwrap_or("")
    }
    /// The request-target as sent.
    pub fn target(&self) -> &[u8] {
        self.slice(&self.target)
    }
    /// The path: before `?` and `#`; for absolute-form targets the path part (`/` if empty).
    pub fn path(&self) -> &[u8] {
        let p = self.slice(&self.path);
        if p.is_empty() {
            b"/"
        } else {
            p
        }
    }
    pub fn query(&self) -> Option<&[u8]> {
        self.query.as_ref().map(|r| self.slice(r))
    }
    pub fn fragment(&self) -> Option<&[u8]> {
        self.fragment.as_ref().map(|r| self.slice(r))
    }
    /// The authority of an absolute-form target (`http://authority/...`).
    pub fn authority(&self) -> Option<&[u8]> {
        self.authority.as_ref().map(|r| self.slice(r))
    }
    pub fn version(&self) -> Version {
        self.version
    }
    /// Header fields in order, names as sent, values trimmed of surrounding SP/HTAB. Names may
    /// contain `_`; the Rack env builder decides what to do with those.
    pub fn headers(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.headers
            .iter()
            .map(|(n, v)| (self.slice(n), self.slice(v)))
    }
    pub fn header_count(&self) -> usize {
        self.headers.len()
    }
    pub fn host(&self) -> Option<&[u8]> {
        self.host.as_ref().map(|r| self.slice(r))
    }
    pub fn body(&self) -> BodyFraming {
        self.body
    }
    pub fn content_length(&self) -> Option<u64> {
        match self.body {
            BodyFraming::Length(n) => Some(n),
            _ => None,
        }
    }
    /// Whether the client wants the connection kept open after this request.
    pub fn keep_alive(&self) -> bool {
        self.keep_alive
    }
    pub fn expects_continue(&self) -> bool {
        self.expects_continue
    }
    pub fn head_len(&self) -> usize {
        self.bytes.len()
    }
}

/// A resumable request-head parser. Feed it the connection's buffer as it grows.
#[derive(Debug, Default)]
pub struct HeadParser {
    /// Bytes at the start that are leading empty lines (skipped).
    skip: usize,
    /// Start of the line being scanned.
    line_start: usize,
    /// How far the current line has been checked.
    scanned: usize,
    /// Complete lines so far (without CRLF): the request line, then header lines.
    lines: Vec<Range<usize>>,
}

/// Leading empty lines tolerated before the request line (RFC 9112 §2.2).
const MAX_LEADING_CRLF: usize = 2;
/// Method, spaces and version around the target on the request line.
const REQUEST_LINE_OVERHEAD: usize = 32 + 2 + 8;

impl HeadParser {
    pub fn new() -> HeadParser {
        HeadParser::default()
    }

    pub fn reset(&mut self) {
        *self = HeadParser::default();
    }

    /// Parses as much of `buf` as possible. `Ok(None)`: need more bytes. `Ok(Some((head, n)))`:
    /// the head is the first `n` bytes of `buf`.
    pub fn parse(
        &mut self,
        buf: &[u8],
        limits: &Limits,
    ) -> Result<Option<(RequestHead, usize)>, ParseError> {
        loop {
            // Check the bytes of the current line up to its end (or the end of the buffer).
            let line_limit = self.line_limit(limits);
            let mut end = None;
            let mut i = self.scanned;
            while let Some(&b) = buf.get(i) {
                match b {
                    b'\n' => return Err(err(ErrorKind::BareLf)),
                    b'\r' => match buf.get(i + 1) {
                        Some(b'\n') => {
                            end = Some(i);
                            break;
                        }
                        Some(_) => return Err(err(ErrorKind::BareCr)),
                        None => break,
                    },
                    0 => return Err(err(ErrorKind::ControlCharacter)),
                    b'\t' => {}
                    c if c < 0x20 || c == 0x7f => return Err(err(ErrorKind::ControlCharacter)),
                    _ => {}
                }
                i += 1;
            }
            self.scanned = i;
            if self.scanned - self.line_start > line_limit.0 {
                return Err(err(line_limit.1));
            }
            if self.scanned > limits.max_head + self.skip {
                return Err(err(ErrorKind::HeadTooLarge));
            }
            let Some(end) = end else {
                return Ok(None);
            };
            let line = self.line_start..end;
            self.line_start = end + 2;
            self.scanned = self.line_start;
            if self.line_start - self.skip > limits.max_head {
                return Err(err(ErrorKind::HeadTooLarge));
            }
            if line.is_empty() {
                if self.lines.is_empty() {
                    // Leading empty lines before the request line.
                    if self.line_start / 2 > MAX_LEADING_CRLF {
                        return Err(err(ErrorKind::MalformedRequestLine));
                    }
                    self.skip = self.line_start;
                    continue;
                }
                let consumed = self.line_start;
                let head = self.build(buf, limits)?;
                return Ok(Some((head, consumed)));
            }
            if self.lines.is_empty() {
                // Check the request line now: an unsupported method or a long path is
                // refused before the client sends the headers.
                check_request_line(buf.get(line.clone()).unwrap_or_default(), limits)?;
            } else if self.lines.len() > limits.max_headers {
                return Err(err(ErrorKind::TooManyHeaders));
            }
            self.lines.push(line);
        }
    }

    /// The longest the current line may be, and what to report beyond it.
    fn line_limit(&self, limits: &Limits) -> (usize, ErrorKind) {
        if self.lines.is_empty() {
            (
                limits.max_target + REQUEST_LINE_OVERHEAD,
                ErrorKind::TargetTooLong,
            )
        } else {
            // name ":" OWS value OWS: generous OWS allowance, the exact checks come per field.
            (
                limits.max_header_name + limits.max_header_value + 64,
                ErrorKind::HeaderValueTooLong,
            )
        }
    }

    fn build(&mut self, buf: &[u8], limits: &Limits) -> Result<RequestHead, ParseError> {
        let base = self.skip;
        let bytes: Box<[u8]> = buf.get(base..self.line_start).unwrap_or_default().into();
        let lines: Vec<Range<usize>> = self
            .lines
            .iter()
            .map(|r| r.start - base..r.end - base)
            .collect();
        let mut lines = lines.into_iter();
        let request_line = lines
            .next()
            .ok_or_else(|| err(ErrorKind::MalformedRequestLine))?;
        let rl = parse_request_line(&bytes, request_line, limits)?;
        let mut head = RequestHead {
            method: rl.method,
            target: rl.target,
            path: rl.path,
            query: rl.query,
            fragment: rl.fragment,
            authority: rl.authority,
            version: rl.version,
            headers: Vec::with_capacity(self.lines.len().saturating_sub(1)),
            host: None,
            body: BodyFraming::None,
            keep_alive: rl.version == Version::Http11,
            expects_continue: false,
            bytes: Box::default(),
        };
        let mut content_length: Option<u64> = None;
        let mut transfer_encoding: Option<Vec<u8>> = None;
        let mut connection_close = false;
        let mut connection_keep_alive = false;
        for line in lines {
            let (name, value) = parse_field(&bytes, line, limits)?;
            let n = &bytes[name.clone()];
            let v = &bytes[value.clone()];
            if n.eq_ignore_ascii_case(b"host") {
                if head.host.is_some() {
                    return Err(err(ErrorKind::DuplicateHost));
                }
                head.host = Some(value.clone());
            } else if n.eq_ignore_ascii_case(b"content-length") {
                if content_length.is_some() {
                    return Err(err(ErrorKind::InvalidContentLength));
                }
                content_length = Some(parse_content_length(v)?);
            } else if n.eq_ignore_ascii_case(b"transfer-encoding") {
                let te = transfer_encoding.get_or_insert_with(Vec::new);
                if !te.is_empty() {
                    te.push(b',');
                }
                te.extend_from_slice(v);
            } else if n.eq_ignore_ascii_case(b"connection") {
                for token in v.split(|c| *c == b',').map(trim) {
                    connection_close |= token.eq_ignore_ascii_case(b"close");
                    connection_keep_alive |= token.eq_ignore_ascii_case(b"keep-alive");
                }
            } else if n.eq_ignore_ascii_case(b"expect") {
                head.expects_continue = v.eq_ignore_ascii_case(b"100-continue");
            }
            head.headers.push((name, value));
        }
        if head.version == Version::Http11 {
            if head.host.as_ref().is_none_or(|h| h.is_empty()) {
                return Err(err(ErrorKind::MissingHost));
            }
            head.keep_alive = !connection_close;
        } else {
            head.keep_alive = connection_keep_alive && !connection_close;
            head.expects_continue = false;
        }
        head.body = match (content_length, transfer_encoding) {
            (Some(_), Some(_)) => return Err(err(ErrorKind::ContentLengthWithTransferEncoding)),
            (_, Some(_)) if head.version == Version::Http10 => {
                return Err(err(ErrorKind::TransferEncodingHttp10))
            }
            (_, Some(te)) => {
                check_transfer_encoding(&te)?;
                BodyFraming::Chunked
            }
            (Some(0), None) => BodyFraming::None,
            (Some(n), None) => {
                if limits.max_body.is_some_and(|max| n > max) {
                    return Err(err(ErrorKind::BodyTooLarge));
                }
                BodyFraming::Length(n)
            }
            (None, None) => BodyFraming::None,
        };
        head.bytes = bytes;
        Ok(head)
    }
}

/// One-shot parse of a complete buffer.
pub fn parse_head(buf: &[u8], limits: &Limits) -> Result<Option<(RequestHead, usize)>, ParseError> {
    HeadParser::new().parse(buf, limits)
}

fn trim(v: &[u8]) -> &[u8] {
    let start = v
        .iter()
        .position(|c| *c != b' ' && *c != b'\t')
        .unwrap_or(v.len());
    let end = v
        .iter()
        .rposition(|c| *c != b' ' && *c != b'\t')
        .map_or(start, |e| e + 1);
    v.get(start..end).unwrap_or_default()
}

/// RFC 9110 tchar.
pub(crate) fn is_tchar(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c)
}

struct RequestLine {
    method: Range<usize>,
    target: Range<usize>,
    path: Range<usize>,
    query: Option<Range<usize>>,
    fragment: Option<Range<usize>>,
    authority: Option<Range<usize>>,
    version: Version,
}

fn check_request_line(line: &[u8], limits: &Limits) -> Result<(), ParseError> {
    parse_request_line(line, 0..line.len(), limits).map(|_| ())
}

fn parse_request_line(
    bytes: &[u8],
    line: Range<usize>,
    limits: &Limits,
) -> Result<RequestLine, ParseError> {
    let text = bytes.get(line.clone()).unwrap_or_default();
    let sp1 = text
        .iter()
        .position(|c| *c == b' ')
        .ok_or_else(|| err(ErrorKind::MalformedRequestLine))?;
    let sp2 = text
        .iter()
        .rposition(|c| *c == b' ')
        .ok_or_else(|| err(ErrorKind::MalformedRequestLine))?;
    if sp1 == sp2 {
        // HTTP/0.9 (`GET /`) or a missing part.
        return Err(err(ErrorKind::MalformedRequestLine));
    }
    let method = &text[..sp1];
    let target = &text[sp1 + 1..sp2];
    let version = &text[sp2 + 1..];
    if method.is_empty() || method.len() > 32 || !method.iter().all(|c| is_tchar(*c)) {
        return Err(err(ErrorKind::InvalidMethod));
    }
    let version = parse_version(version)?;
    let method_str = std::str::from_utf8(method).map_err(|_| err(ErrorKind::InvalidMethod))?;
    if !limits.methods.allows(method_str) {
        return Err(err(ErrorKind::UnsupportedMethod));
    }
    if target.is_empty() || target.contains(&b' ') {
        return Err(err(ErrorKind::MalformedRequestLine));
    }
    if !target.iter().all(|c| (0x21..=0x7e).contains(c)) {
        return Err(err(ErrorKind::InvalidTarget));
    }
    let base = line.start + sp1 + 1;
    let t = parse_target(target, method == b"OPTIONS", limits)?;
    let shift = |r: Range<usize>| base + r.start..base + r.end;
    if target.len() > limits.max_target {
        return Err(err(ErrorKind::TargetTooLong));
    }
    Ok(RequestLine {
        method: line.start..line.start + sp1,
        target: base..base + target.len(),
        path: shift(t.path),
        query: t.query.map(shift),
        fragment: t.fragment.map(shift),
        authority: t.authority.map(shift),
        version,
    })
}

fn parse_version(v: &[u8]) -> Result<Version, ParseError> {
    match v {
        [b'H', b'T', b'T', b'P', b'/', major, b'.', minor]
            if major.is_ascii_digit() && minor.is_ascii_digit() =>
        {
            match (major, minor) {
                (b'1', b'0') => Ok(Version::Http10),
                (b'1', _) => Ok(Version::Http11),
                _ => Err(err(ErrorKind::UnsupportedVersion)),
            }
        }
        _ => Err(err(ErrorKind::MalformedRequestLine)),
    }
}

struct Target {
    path: Range<usize>,
    query: Option<Range<usize>>,
    fragment: Option<Range<usize>>,
    authority: Option<Range<usize>>,
}

fn parse_target(t: &[u8], options: bool, limits: &Limits) -> Result<Target, ParseError> {
    if t == b"*" {
        if !options {
            return Err(err(ErrorKind::InvalidTarget));
        }
        return Ok(Target {
            path: 0..1,
            query: None,
            fragment: None,
            authority: None,
        });
    }
    let mut start = 0;
    let mut authority = None;
    if t.first() != Some(&b'/') {
        // absolute-form: http(s)://authority/path?query
        let lower: Vec<u8> = t.iter().take(8).map(u8::to_ascii_lowercase).collect();
        let scheme_len = if lower.starts_with(b"http://") {
            7
        } else if lower.starts_with(b"https://") {
            8
        } else {
            return Err(err(ErrorKind::InvalidTarget));
        };
        let rest = &t[scheme_len..];
        let auth_len = rest
            .iter()
            .position(|c| matches!(c, b'/' | b'?' | b'#'))
            .unwrap_or(rest.len());
        if auth_len == 0 {
            return Err(err(ErrorKind::InvalidTarget));
        }
        authority = Some(scheme_len..scheme_len + auth_len);
        start = scheme_len + auth_len;
    }
    let rest = &t[start..];
    let fragment_at = rest.iter().position(|c| *c == b'#').map(|i| start + i);
    let before_fragment = fragment_at.unwrap_or(t.len());
    let query_at = t[start..before_fragment]
        .iter()
        .position(|c| *c == b'?')
        .map(|i| start + i);
    let path = start..query_at.unwrap_or(before_fragment);
    let query = query_at.map(|q| q + 1..before_fragment);
    let fragment = fragment_at.map(|f| f + 1..t.len());
    if path.len() > limits.max_path {
        return Err(err(ErrorKind::PathTooLong));
    }
    if query.as_ref().is_some_and(|q| q.len() > limits.max_query) {
        return Err(err(ErrorKind::QueryTooLong));
    }
    if fragment
        .as_ref()
        .is_some_and(|f| f.len() > limits.max_fragment)
    {
        return Err(err(ErrorKind::FragmentTooLong));
    }
    Ok(Target {
        path,
        query,
        fragment,
        authority,
    })
}

/// Splits `name: value`; validates name and value; returns (name, trimmed value) ranges.
pub(crate) fn parse_field(
    bytes: &[u8],
    line: Range<usize>,
    limits: &Limits,
) -> Result<(Range<usize>, Range<usize>), ParseError> {
    let text = bytes.get(line.clone()).unwrap_or_default();
    if matches!(text.first(), Some(b' ') | Some(b'\t')) {
        return Err(err(ErrorKind::ObsFold));
    }
    let colon = text
        .iter()
        .position(|c| *c == b':')
        .ok_or_else(|| err(ErrorKind::MalformedHeader))?;
    let name = &text[..colon];
    if name.len() > limits.max_header_name {
        return Err(err(ErrorKind::HeaderNameTooLong));
    }
    if name.is_empty() || !name.iter().all(|c| is_tchar(*c)) {
        return Err(err(ErrorKind::MalformedHeader));
    }
    let raw = &text[colon + 1..];
    let value = trim(raw);
    if value.len() > limits.max_header_value {
        return Err(err(ErrorKind::HeaderValueTooLong));
    }
    // Control characters (other than HTAB) were refused while scanning the line.
    let value_start = line.start + colon + 1 + (value.as_ptr() as usize - raw.as_ptr() as usize);
    Ok((
        line.start..line.start + colon,
        value_start..value_start + value.len(),
    ))
}

fn parse_content_length(v: &[u8]) -> Result<u64, ParseError> {
    if v.is_empty() || !v.iter().all(u8::is_ascii_digit) {
        return Err(err(ErrorKind::InvalidContentLength));
    }
    std::str::from_utf8(v)
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .ok_or_else(|| err(ErrorKind::InvalidContentLength))
}

/// Only exactly `chunked` is served: any other coding could not be decoded for the app.
fn check_transfer_encoding(te: &[u8]) -> Result<(), ParseError> {
    let codings: Vec<&[u8]> = te.split(|c| *c == b',').map(trim).collect();
    if codings.iter().any(|c| c.is_empty()) {
        return Err(err(ErrorKind::InvalidTransferEncoding));
    }
    let chunked = codings
        .iter()
        .filter(|c| c.eq_ignore_ascii_case(b"chunked"))
        .count();
    let last_is_chunked = codings
        .last()
        .is_some_and(|c| c.eq_ignore_ascii_case(b"chunked"));
    match (codings.len(), chunked, last_is_chunked) {
        (1, 1, true) => Ok(()),
        (_, 0, _)
            if codings.iter().all(|c| c.iter().all(|b| is_tchar(*b))) && codings.len() == 1 =>
        {
            Err(err(ErrorKind::InvalidTransferEncoding))
        }
        (_, 1, true) => Err(err(ErrorKind::UnsupportedTransferCoding)),
        _ => Err(err(ErrorKind::InvalidTransferEncoding)),
    }
}
