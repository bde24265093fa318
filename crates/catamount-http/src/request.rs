//! Request heads: a strict, resumable RFC 9112 parser ([`HeadParser`]) and what it produces
//! ([`RequestHead`]).
//!
//! The parser is a byte-level state machine that remembers where it stopped. The reactor calls
//! it again each time more bytes arrive and it carries on from there, so a head that trickles
//! in one byte at a time still costs linear time. A problem is reported at the first byte that
//! shows it (a bare LF, a NUL, a name or path over its limit, the byte after `max_head`), not
//! when the head completes, and the verdict never depends on how the bytes were split.
//!
//! Checks come in three layers, each in byte order:
//! 1. bytes: line endings, control characters, token characters, every length limit;
//! 2. the request line, once its CRLF arrives: version, method policy, request-target form;
//! 3. the fields, once the head is complete: Host, Content-Length, Transfer-Encoding, and the
//!    connection options.

use crate::error::{ErrorKind, ParseError};
use crate::limits::Limits;
use crate::syntax::{
    is_field_byte, is_forbidden_control, is_host_and_port, is_host_and_required_port, is_ows,
    is_tchar, is_token, list_elements, trim_ows,
};

/// Longest method accepted; longer is [`ErrorKind::InvalidMethod`]. Fixed, not a knob: the
/// longest registered method (`UPDATEREDIRECTREF`) has 17 characters.
const MAX_METHOD_LEN: usize = 32;
/// The request line's version: `#` stands for one digit.
const VERSION_SHAPE: &[u8] = b"HTTP/#.#";

/// Whether `byte` is what `VERSION_SHAPE` expects where it has `expected`.
fn fits_version(expected: u8, byte: u8) -> bool {
    match expected {
        b'#' => byte.is_ascii_digit(),
        e => byte == e,
    }
}

/// Empty lines tolerated before the request line (RFC 9112 §2.2 robustness, for clients that
/// send a stray CRLF after a body); more is [`ErrorKind::MalformedRequestLine`].
const MAX_LEADING_EMPTY_LINES: usize = 2;

/// The HTTP version of a request. HTTP/1.2 to 1.9 are refused (505) though RFC 9112 §2.3 says
/// a recipient should serve them as 1.1: no client sends them, llhttp refuses them, and a
/// server behind a proxy that refuses what it serves invites the two to disagree.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Version {
    Http10,
    Http11,
}

/// How the request body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFraming {
    /// No body: no Content-Length and no Transfer-Encoding, or `Content-Length: 0`.
    None,
    /// Exactly this many bytes follow the head (never 0).
    Length(u64),
    /// `Transfer-Encoding: chunked`; decode with [`crate::ChunkedDecoder`].
    Chunked,
}

/// A byte range inside the head.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Span {
    start: usize,
    end: usize,
}

impl Span {
    fn new(start: usize, end: usize) -> Span {
        Span {
            start,
            end: end.max(start),
        }
    }

    fn len(self) -> usize {
        self.end - self.start
    }

    fn is_empty(self) -> bool {
        self.start == self.end
    }

    fn of(self, bytes: &[u8]) -> &[u8] {
        bytes.get(self.start..self.end).unwrap_or_default()
    }

    /// The same range in a copy of the buffer that starts at `offset`.
    fn minus(self, offset: usize) -> Span {
        Span::new(
            self.start.saturating_sub(offset),
            self.end.saturating_sub(offset),
        )
    }
}

/// Which of the four request-target forms of RFC 9112 §3.2 was used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TargetForm {
    /// `/path?query`
    Origin,
    /// `http://authority/path?query`
    Absolute,
    /// `host:port`, CONNECT only.
    Authority,
    /// `*`, OPTIONS only.
    Asterisk,
}

/// The parts of a complete request line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct RequestLine {
    method: Span,
    target: Span,
    form: TargetForm,
    path: Span,
    query: Option<Span>,
    fragment: Option<Span>,
    authority: Option<Span>,
    version: Version,
}

impl RequestLine {
    fn minus(self, offset: usize) -> RequestLine {
        RequestLine {
            method: self.method.minus(offset),
            target: self.target.minus(offset),
            path: self.path.minus(offset),
            query: self.query.map(|s| s.minus(offset)),
            fragment: self.fragment.map(|s| s.minus(offset)),
            authority: self.authority.map(|s| s.minus(offset)),
            ..self
        }
    }
}

/// One header field: the name as sent and the value without surrounding whitespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Field {
    name: Span,
    value: Span,
    /// Where the line's CR is: the whitespace after the value ends there.
    line_end: usize,
}

/// A parsed request head. Owns one copy of the head bytes; the accessors borrow from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead {
    /// From the request line through the empty line that ends the head.
    bytes: Box<[u8]>,
    /// Empty lines skipped before the request line, in bytes.
    skipped: usize,
    line: RequestLine,
    fields: Vec<Field>,
    host: Option<Span>,
    content_length: Option<u64>,
    body: BodyFraming,
    keep_alive: bool,
    expects_continue: bool,
}

impl RequestHead {
    fn get(&self, span: Span) -> &[u8] {
        span.of(&self.bytes)
    }

    /// The method, as sent (case-sensitive; an ASCII token).
    pub fn method(&self) -> &str {
        std::str::from_utf8(self.get(self.line.method)).unwrap_or_default()
    }

    /// The request-target as sent, query and fragment included.
    pub fn target(&self) -> &[u8] {
        self.get(self.line.target)
    }

    /// The request-target without its fragment (`REQUEST_URI`: Puma leaves the fragment out).
    pub fn target_without_fragment(&self) -> &[u8] {
        let target = self.target();
        match self.line.fragment {
            // The `#` before the fragment, counted from the target's start.
            Some(f) => target
                .get(..f.start.saturating_sub(self.line.target.start + 1))
                .unwrap_or(target),
            None => target,
        }
    }

    /// The path, not percent-decoded: for origin-form the part before `?` and `#`; for
    /// absolute-form the path after the authority, `/` when it is empty; `*` for OPTIONS `*`;
    /// empty for CONNECT's `host:port`.
    pub fn path(&self) -> &[u8] {
        if self.line.form == TargetForm::Absolute && self.line.path.is_empty() {
            b"/"
        } else {
            self.get(self.line.path)
        }
    }

    /// The query string without the `?` (possibly empty), or `None` if there was no `?`.
    pub fn query(&self) -> Option<&[u8]> {
        self.line.query.map(|s| self.get(s))
    }

    /// The fragment without the `#`. Clients should not send one; Puma exposes it, so do we.
    pub fn fragment(&self) -> Option<&[u8]> {
        self.line.fragment.map(|s| self.get(s))
    }

    /// The authority of an absolute-form target (`http://authority/...`) or CONNECT's
    /// `host:port`. RFC 9112 §3.2.2: when present it wins over the Host header.
    pub fn authority(&self) -> Option<&[u8]> {
        self.line.authority.map(|s| self.get(s))
    }

    pub fn version(&self) -> Version {
        self.line.version
    }

    /// Header fields in order, names as sent (not case-folded; names with `_` are kept, the
    /// Rack env builder decides about those), values without surrounding SP/HTAB. Repeated
    /// names are separate entries.
    pub fn headers(&self) -> impl ExactSizeIterator<Item = (&[u8], &[u8])> + '_ {
        self.fields
            .iter()
            .map(|f| (self.get(f.name), self.get(f.value)))
    }

    /// The first value of a header, the name compared case-insensitively.
    pub fn header(&self, name: &[u8]) -> Option<&[u8]> {
        self.headers()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }

    pub fn header_count(&self) -> usize {
        self.fields.len()
    }

    /// The Host header's value; `None` if absent or empty (only possible on HTTP/1.0).
    /// Prefer [`RequestHead::authority`] when it is `Some`.
    pub fn host(&self) -> Option<&[u8]> {
        self.host.map(|s| self.get(s))
    }

    pub fn body(&self) -> BodyFraming {
        self.body
    }

    /// The Content-Length value, `Some(0)` included (for which [`RequestHead::body`] is
    /// [`BodyFraming::None`]).
    pub fn content_length(&self) -> Option<u64> {
        self.content_length
    }

    /// Whether the client wants the connection kept open: HTTP/1.1 unless `Connection` lists
    /// `close`; HTTP/1.0 only if it lists `keep-alive` (and not `close`).
    pub fn keep_alive(&self) -> bool {
        self.keep_alive
    }

    /// The protocols the client offers to switch to (Rack 3.1's `rack.protocol`): the tokens
    /// of its `Upgrade` fields, in order, when a `Connection` field lists `upgrade` (RFC 9110
    /// §7.8: `Upgrade` is hop-by-hop, so without that it is not meant for this server). `None`
    /// when nothing is offered.
    pub fn offered_protocols(&self) -> Option<Vec<&[u8]>> {
        // "A server MUST ignore an Upgrade header field that is received in an HTTP/1.0
        // request" (RFC 9110 §7.8).
        if self.version() == Version::Http10 {
            return None;
        }
        let upgrade_listed = self
            .headers()
            .filter(|(n, _)| n.eq_ignore_ascii_case(b"connection"))
            .any(|(_, v)| list_elements(v).any(|t| t.eq_ignore_ascii_case(b"upgrade")));
        if !upgrade_listed {
            return None;
        }
        let offered: Vec<&[u8]> = self
            .headers()
            .filter(|(n, _)| n.eq_ignore_ascii_case(b"upgrade"))
            .flat_map(|(_, v)| list_elements(v))
            .filter(|t| !t.is_empty())
            .collect();
        (!offered.is_empty()).then_some(offered)
    }

    /// Whether a 101 Switching Protocols may answer this request, switching to `protocol` (the
    /// one the app named, if it named one): only when the client offered an upgrade, and then
    /// only to a protocol it offered (RFC 9110 §7.8, §15.2.2). Names compare without regard to
    /// ASCII case, as clients and servers treat `websocket`. Err says why not.
    pub fn may_switch_to(&self, protocol: Option<&[u8]>) -> Result<(), String> {
        let Some(offered) = self.offered_protocols() else {
            return Err("a 101 Switching Protocols answers a request that offered no upgrade (RFC 9110 §15.2.2)".into());
        };
        match protocol {
            Some(p) if !offered.iter().any(|o| o.eq_ignore_ascii_case(p)) => Err(format!(
                "a 101 Switching Protocols to {:?}, which the client did not offer (it offered {})",
                String::from_utf8_lossy(p),
                offered
                    .iter()
                    .map(|o| format!("{:?}", String::from_utf8_lossy(o)))
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
            _ => Ok(()),
        }
    }

    /// `Expect: 100-continue` on HTTP/1.1: send `100 Continue` before reading the body.
    pub fn expects_continue(&self) -> bool {
        self.expects_continue
    }

    /// Bytes the head took from the buffer: the same as the `consumed` returned with it,
    /// including any empty lines skipped before the request line.
    pub fn head_len(&self) -> usize {
        self.skipped + self.bytes.len()
    }
}

/// Where the parser is in the head.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum State {
    /// At the start of a line before the request line; empty lines are skipped.
    #[default]
    Leading,
    Method,
    Target,
    Version,
    /// At the start of a line after the request line or a field: a field or the final CRLF.
    FieldStart,
    Name,
    Value,
    /// A CR was seen; the LF must follow. Says which line it ends.
    Lf(LineEnd),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LineEnd {
    Leading,
    RequestLine,
    Field,
    Head,
}

/// Positions on the request line, recorded while it arrives.
#[derive(Debug, Clone, Copy, Default)]
struct LineMarks {
    method_end: usize,
    target_start: usize,
    /// Start of the path; `None` while in the scheme and authority of an absolute-form (or
    /// CONNECT's authority-form) target.
    path_start: Option<usize>,
    /// Just after the `?`.
    query_start: Option<usize>,
    /// Just after the `#`.
    fragment_start: Option<usize>,
    target_end: usize,
    version_start: usize,
    version_end: usize,
}

/// The markers are set in target order (path, then `?`, then `#`), so each part ends where
/// the next one that is present starts.
impl LineMarks {
    fn question_mark(&self) -> Option<usize> {
        self.query_start.map(|q| q - 1)
    }

    fn hash_mark(&self) -> Option<usize> {
        self.fragment_start.map(|f| f - 1)
    }

    /// End of the scheme and authority of an absolute-form or authority-form target.
    fn prefix_end(&self) -> usize {
        self.path_start
            .or(self.question_mark())
            .or(self.hash_mark())
            .unwrap_or(self.target_end)
    }

    fn path_end(&self) -> usize {
        self.question_mark()
            .or(self.hash_mark())
            .unwrap_or(self.target_end)
    }

    fn query_end(&self) -> usize {
        self.hash_mark().unwrap_or(self.target_end)
    }
}

/// Positions in the header field being read.
#[derive(Debug, Clone, Copy, Default)]
struct FieldMarks {
    name_start: usize,
    name_end: usize,
    /// The value without leading and trailing whitespace, as far as it has arrived.
    value: Option<Span>,
}

/// A resumable request-head parser.
///
/// Pass it the connection's buffer each time it grows. The buffer must keep the bytes
/// already passed (it may only grow) until a head is returned; after that the parser starts
/// afresh, on a buffer that begins after the `consumed` bytes. After an error it returns the
/// same error again.
#[derive(Debug, Clone, Default)]
pub struct HeadParser {
    state: State,
    /// The next byte of the buffer to look at.
    pos: usize,
    /// Where the request line starts (after skipped empty lines).
    head_start: usize,
    empty_lines: usize,
    marks: LineMarks,
    line: Option<RequestLine>,
    field: FieldMarks,
    fields: Vec<Field>,
    failed: Option<ParseError>,
}

/// One-shot parse of a buffer: [`HeadParser::parse`] on a fresh parser.
pub fn parse_head(buf: &[u8], limits: &Limits) -> Result<Option<(RequestHead, usize)>, ParseError> {
    HeadParser::new().parse(buf, limits)
}

fn err(kind: ErrorKind) -> ParseError {
    ParseError::new(kind)
}

impl HeadParser {
    pub fn new() -> HeadParser {
        HeadParser::default()
    }

    /// Forgets everything, ready for a new head.
    pub fn reset(&mut self) {
        *self = HeadParser::default();
    }

    /// Parses as much of `buf` as has arrived.
    ///
    /// `Ok(None)`: the head is incomplete and everything so far is valid and within limits.
    /// `Ok(Some((head, consumed)))`: the head is the first `consumed` bytes of `buf`, its final
    /// CRLF included; what follows is the body or the next request.
    pub fn parse(
        &mut self,
        buf: &[u8],
        limits: &Limits,
    ) -> Result<Option<(RequestHead, usize)>, ParseError> {
        if let Some(e) = self.failed {
            return Err(e);
        }
        let result = match self.advance(buf, limits) {
            Ok(Some(consumed)) => self
                .finish(buf, consumed, limits)
                .map(|h| Some((h, consumed))),
            Ok(None) => Ok(None),
            Err(e) => Err(e),
        };
        match &result {
            Ok(Some(_)) => self.reset(),
            Ok(None) => {}
            Err(e) => self.failed = Some(*e),
        }
        result
    }

    /// Runs the state machine over the new bytes; `Some(end)` once the head ends at `end`.
    fn advance(&mut self, buf: &[u8], limits: &Limits) -> Result<Option<usize>, ParseError> {
        loop {
            // Bytes past `max_head` are never looked at: if the head has not ended by then it
            // is too large, whatever comes next.
            let end = buf
                .len()
                .min(self.head_start.saturating_add(limits.max_head));
            // Most bytes are in runs that need no per-byte decision; take those in one go.
            match self.state {
                State::Value => self.scan_value(buf, end, limits)?,
                State::Name => self.scan_name(buf, end, limits)?,
                State::Target => self.scan_target(buf, end, limits),
                State::Method => self.scan_method(buf, end),
                State::Version => self.scan_version(buf, end),
                _ => {}
            }
            match buf.get(self.pos) {
                None => return Ok(None),
                Some(_) if self.pos >= end => {
                    return Err(ParseError::over(ErrorKind::HeadTooLarge, limits.max_head))
                }
                Some(&byte) => {
                    if let Some(head_end) = self.step(buf, byte, limits)? {
                        return Ok(Some(head_end));
                    }
                }
            }
        }
    }

    /// Looks at the byte at `self.pos` and moves past it (or, when a byte starts the next
    /// part, switches state and looks at it again).
    fn step(&mut self, buf: &[u8], byte: u8, limits: &Limits) -> Result<Option<usize>, ParseError> {
        if let State::Lf(line_end) = self.state {
            if byte != b'\n' {
                return Err(err(ErrorKind::BareCr));
            }
            self.pos += 1;
            return self.end_line(line_end, buf, limits);
        }
        if byte == b'\n' {
            return Err(err(ErrorKind::BareLf));
        }
        if byte != b'\r' && is_forbidden_control(byte) {
            return Err(err(ErrorKind::ControlCharacter));
        }
        match self.state {
            State::Leading => {
                if byte == b'\r' {
                    self.state = State::Lf(LineEnd::Leading);
                    self.pos += 1;
                } else {
                    self.head_start = self.pos;
                    self.state = State::Method;
                }
            }
            State::Method => self.method_byte(byte)?,
            State::Target => self.target_byte(buf, byte, limits)?,
            State::Version => self.version_byte(byte)?,
            State::FieldStart => match byte {
                b'\r' => {
                    self.state = State::Lf(LineEnd::Head);
                    self.pos += 1;
                }
                b' ' | b'\t' => return Err(err(ErrorKind::ObsFold)),
                _ => {
                    if self.fields.len() >= limits.max_headers {
                        return Err(ParseError::over(
                            ErrorKind::TooManyHeaders,
                            limits.max_headers,
                        ));
                    }
                    self.field = FieldMarks {
                        name_start: self.pos,
                        ..FieldMarks::default()
                    };
                    self.state = State::Name;
                }
            },
            State::Name => self.name_byte(byte, limits)?,
            // `scan_value` took every value byte; what is left is the CR that ends the line.
            State::Value => {
                if byte != b'\r' {
                    return Err(err(ErrorKind::ControlCharacter));
                }
                self.state = State::Lf(LineEnd::Field);
                self.pos += 1;
            }
            // Handled above; an error rather than a loop that makes no progress.
            State::Lf(_) => return Err(err(ErrorKind::BareCr)),
        }
        Ok(None)
    }

    /// A line's CRLF is complete.
    fn end_line(
        &mut self,
        line_end: LineEnd,
        buf: &[u8],
        limits: &Limits,
    ) -> Result<Option<usize>, ParseError> {
        match line_end {
            LineEnd::Leading => {
                self.empty_lines += 1;
                if self.empty_lines > MAX_LEADING_EMPTY_LINES {
                    return Err(err(ErrorKind::MalformedRequestLine));
                }
                self.head_start = self.pos;
                self.state = State::Leading;
            }
            LineEnd::RequestLine => {
                self.line = Some(self.check_request_line(buf, limits)?);
                self.state = State::FieldStart;
            }
            LineEnd::Field => {
                let f = self.field;
                let name = Span::new(f.name_start, f.name_end);
                let value = f.value.unwrap_or(Span::new(f.name_end + 1, f.name_end + 1));
                self.fields.push(Field {
                    name,
                    value,
                    line_end: self.pos - 2,
                });
                self.state = State::FieldStart;
            }
            LineEnd::Head => return Ok(Some(self.pos)),
        }
        Ok(None)
    }

    fn method_byte(&mut self, byte: u8) -> Result<(), ParseError> {
        match byte {
            b' ' if self.pos == self.head_start => {
                return Err(err(ErrorKind::MalformedRequestLine))
            }
            b' ' => {
                self.marks.method_end = self.pos;
                self.marks.target_start = self.pos + 1;
                self.state = State::Target;
            }
            b'\r' => return Err(err(ErrorKind::MalformedRequestLine)),
            b if is_tchar(b) && self.pos - self.head_start < MAX_METHOD_LEN => {}
            _ => return Err(err(ErrorKind::InvalidMethod)),
        }
        self.pos += 1;
        Ok(())
    }

    fn target_byte(&mut self, buf: &[u8], byte: u8, limits: &Limits) -> Result<(), ParseError> {
        let pos = self.pos;
        let m = &mut self.marks;
        match byte {
            b' ' if pos == m.target_start => return Err(err(ErrorKind::MalformedRequestLine)),
            b' ' => {
                m.target_end = pos;
                m.version_start = pos + 1;
                self.state = State::Version;
                self.pos += 1;
                return Ok(());
            }
            // No version: an HTTP/0.9 request line, or a truncated one.
            b'\r' => return Err(err(ErrorKind::MalformedRequestLine)),
            // A second `#`: a fragment holds none (Puma refuses it too).
            b'#' if m.fragment_start.is_some() => return Err(err(ErrorKind::InvalidTarget)),
            b if is_target_byte(b) => {}
            _ => return Err(err(ErrorKind::InvalidTarget)),
        }
        // Does this byte start the path, the query or the fragment?
        if pos == m.target_start && (byte == b'/' || byte == b'*') {
            m.path_start = Some(pos);
        } else if m.fragment_start.is_none() {
            match byte {
                b'#' => m.fragment_start = Some(pos + 1),
                b'?' if m.query_start.is_none() => m.query_start = Some(pos + 1),
                b'/' if m.path_start.is_none()
                    && m.query_start.is_none()
                    && !is_scheme_prefix(Span::new(m.target_start, pos).of(buf)) =>
                {
                    m.path_start = Some(pos);
                }
                _ => {}
            }
        }
        // Limits, the part first (a long path reports the path, as Puma does).
        let here = pos + 1;
        if let Some(f) = m.fragment_start {
            if here - f > limits.max_fragment {
                return Err(ParseError::over(
                    ErrorKind::FragmentTooLong,
                    limits.max_fragment,
                ));
            }
        } else if let Some(q) = m.query_start {
            if here - q > limits.max_query {
                return Err(ParseError::over(ErrorKind::QueryTooLong, limits.max_query));
            }
        } else if let Some(p) = m.path_start {
            if here - p > limits.max_path {
                return Err(ParseError::over(ErrorKind::PathTooLong, limits.max_path));
            }
        }
        if here - m.target_start > limits.max_target {
            return Err(ParseError::over(
                ErrorKind::TargetTooLong,
                limits.max_target,
            ));
        }
        self.pos += 1;
        Ok(())
    }

    fn version_byte(&mut self, byte: u8) -> Result<(), ParseError> {
        if byte == b'\r' {
            self.marks.version_end = self.pos;
            self.state = State::Lf(LineEnd::RequestLine);
        } else {
            // `HTTP/` DIGIT `.` DIGIT, checked as it arrives.
            let expected = VERSION_SHAPE.get(self.pos - self.marks.version_start);
            if !expected.is_some_and(|&e| fits_version(e, byte)) {
                return Err(err(ErrorKind::MalformedRequestLine));
            }
        }
        self.pos += 1;
        Ok(())
    }

    fn name_byte(&mut self, byte: u8, limits: &Limits) -> Result<(), ParseError> {
        let f = &mut self.field;
        match byte {
            b':' if self.pos == f.name_start => return Err(err(ErrorKind::MalformedHeader)),
            b':' => {
                f.name_end = self.pos;
                self.state = State::Value;
            }
            b if is_tchar(b) => {
                if self.pos - f.name_start >= limits.max_header_name {
                    return Err(ParseError::over(
                        ErrorKind::HeaderNameTooLong,
                        limits.max_header_name,
                    ));
                }
            }
            // Whitespace before the colon, a line without a colon, or a non-token byte.
            _ => return Err(err(ErrorKind::MalformedHeader)),
        }
        self.pos += 1;
        Ok(())
    }

    /// Takes the run of token bytes of the method that fits its length limit; the byte after
    /// it (the space, or one that is refused) goes to `method_byte`.
    fn scan_method(&mut self, buf: &[u8], end: usize) {
        let room = MAX_METHOD_LEN.saturating_sub(self.pos - self.head_start);
        let rest = buf.get(self.pos..end).unwrap_or_default();
        let run = rest
            .iter()
            .take(room)
            .position(|&b| !is_tchar(b))
            .unwrap_or(rest.len().min(room));
        self.pos += run;
    }

    /// Takes the bytes of the version that match `HTTP/` DIGIT `.` DIGIT so far; the CR after
    /// it, or a byte that does not fit, goes to `version_byte`.
    fn scan_version(&mut self, buf: &[u8], end: usize) {
        let done = self.pos - self.marks.version_start;
        let expected = VERSION_SHAPE.get(done..).unwrap_or_default();
        let rest = buf.get(self.pos..end).unwrap_or_default();
        let run = expected
            .iter()
            .zip(rest)
            .take_while(|&(&e, &b)| fits_version(e, b))
            .count();
        self.pos += run;
    }

    /// Takes the run of token bytes of a header name; the byte after it goes to `name_byte`.
    fn scan_name(&mut self, buf: &[u8], end: usize, limits: &Limits) -> Result<(), ParseError> {
        let rest = buf.get(self.pos..end).unwrap_or_default();
        let run = rest
            .iter()
            .position(|&b| !is_tchar(b))
            .unwrap_or(rest.len());
        self.pos += run;
        if self.pos - self.field.name_start > limits.max_header_name {
            return Err(ParseError::over(
                ErrorKind::HeaderNameTooLong,
                limits.max_header_name,
            ));
        }
        Ok(())
    }

    /// Takes a run of target bytes that neither start a part (`/ ? #`) nor reach a length
    /// limit; `target_byte` handles those one at a time.
    fn scan_target(&mut self, buf: &[u8], end: usize, limits: &Limits) {
        let m = &self.marks;
        if self.pos <= m.target_start {
            return;
        }
        let used = |start: usize, max: usize| max.saturating_sub(self.pos - start);
        let part_room = match (m.fragment_start, m.query_start, m.path_start) {
            (Some(f), _, _) => used(f, limits.max_fragment),
            (None, Some(q), _) => used(q, limits.max_query),
            (None, None, Some(p)) => used(p, limits.max_path),
            (None, None, None) => usize::MAX,
        };
        let room = part_room.min(used(m.target_start, limits.max_target));
        let rest = buf.get(self.pos..end).unwrap_or_default();
        let run = rest
            .iter()
            .take(room)
            .position(|&b| !is_target_byte(b) || matches!(b, b'/' | b'?' | b'#'))
            .unwrap_or(rest.len().min(room));
        self.pos += run;
    }

    /// Takes the run of field-value bytes at `self.pos` (up to `end`) in one go: header
    /// values are most of a head's bytes.
    fn scan_value(&mut self, buf: &[u8], end: usize, limits: &Limits) -> Result<(), ParseError> {
        let rest = buf.get(self.pos..end).unwrap_or_default();
        let run = rest
            .iter()
            .position(|&b| !is_field_byte(b))
            .unwrap_or(rest.len());
        let bytes = rest.get(..run).unwrap_or_default();
        if let Some(last) = bytes.iter().rposition(|&b| !is_ows(b)) {
            let first = bytes.iter().position(|&b| !is_ows(b)).unwrap_or(last);
            let start = self.field.value.map_or(self.pos + first, |v| v.start);
            let value = Span::new(start, self.pos + last + 1);
            if value.len() > limits.max_header_value {
                return Err(ParseError::over(
                    ErrorKind::HeaderValueTooLong,
                    limits.max_header_value,
                ));
            }
            self.field.value = Some(value);
        }
        self.pos += run;
        Ok(())
    }

    /// The request line is complete: check the version, the method policy and the target form.
    fn check_request_line(&self, buf: &[u8], limits: &Limits) -> Result<RequestLine, ParseError> {
        let m = self.marks;
        let version = match Span::new(m.version_start, m.version_end).of(buf) {
            [b'H', b'T', b'T', b'P', b'/', b'1', b'.', b'0'] => Version::Http10,
            [b'H', b'T', b'T', b'P', b'/', b'1', b'.', b'1'] => Version::Http11,
            [b'H', b'T', b'T', b'P', b'/', _, b'.', _] => {
                return Err(err(ErrorKind::UnsupportedVersion))
            }
            _ => return Err(err(ErrorKind::MalformedRequestLine)),
        };
        let method = Span::new(self.head_start, m.method_end);
        let method_name =
            std::str::from_utf8(method.of(buf)).map_err(|_| err(ErrorKind::InvalidMethod))?;
        if !limits.methods.allows(method_name) {
            return Err(err(ErrorKind::UnsupportedMethod));
        }
        let target = Span::new(m.target_start, m.target_end);
        let target_bytes = target.of(buf);
        let invalid = || err(ErrorKind::InvalidTarget);
        let (form, authority) = if method_name == "CONNECT" {
            if m.path_start.is_some() || !is_host_and_required_port(target_bytes) {
                return Err(invalid());
            }
            (TargetForm::Authority, Some(target))
        } else {
            match target_bytes.first() {
                Some(b'/') => (TargetForm::Origin, None),
                Some(b'*') if target_bytes == b"*" && method_name == "OPTIONS" => {
                    (TargetForm::Asterisk, None)
                }
                Some(b'*') => return Err(invalid()),
                _ => {
                    // `#` right after the authority: no path or query for a fragment to
                    // follow. llhttp refuses it; where the authority ends would be a guess.
                    if m.path_start.is_none()
                        && m.query_start.is_none()
                        && m.fragment_start.is_some()
                    {
                        return Err(invalid());
                    }
                    let prefix = Span::new(m.target_start, m.prefix_end());
                    let scheme_len = scheme_length(prefix.of(buf)).ok_or_else(invalid)?;
                    let authority = Span::new(m.target_start + scheme_len, prefix.end);
                    if !is_host_and_port(authority.of(buf)) {
                        return Err(invalid());
                    }
                    (TargetForm::Absolute, Some(authority))
                }
            }
        };
        let path = match m.path_start {
            Some(p) => Span::new(p, m.path_end()),
            None => Span::new(m.prefix_end(), m.prefix_end()),
        };
        let query = m.query_start.map(|q| Span::new(q, m.query_end()));
        let fragment = m.fragment_start.map(|f| Span::new(f, m.target_end));
        Ok(RequestLine {
            method,
            target,
            form,
            path,
            query,
            fragment,
            authority,
            version,
        })
    }

    /// The head is complete: check what the fields say and build the [`RequestHead`].
    fn finish(
        &mut self,
        buf: &[u8],
        consumed: usize,
        limits: &Limits,
    ) -> Result<RequestHead, ParseError> {
        let line = self
            .line
            .ok_or_else(|| err(ErrorKind::MalformedRequestLine))?;
        let fields = std::mem::take(&mut self.fields);
        let meaning = FieldMeaning::read(buf, &fields, line.version, limits)?;
        let base = self.head_start;
        Ok(RequestHead {
            bytes: Span::new(base, consumed).of(buf).into(),
            skipped: base,
            line: line.minus(base),
            fields: fields
                .into_iter()
                .map(|f| Field {
                    name: f.name.minus(base),
                    value: f.value.minus(base),
                    line_end: f.line_end.saturating_sub(base),
                })
                .collect(),
            host: meaning.host.map(|s| s.minus(base)),
            content_length: meaning.content_length,
            body: meaning.body,
            keep_alive: meaning.keep_alive,
            expects_continue: meaning.expects_continue,
        })
    }
}

/// What a request-target may hold: visible ASCII but `"`, `<` and `>` (RFC 3986 excludes them,
/// and so does Puma's grammar; the other characters it excludes, `{ } | \ ^` and the
/// backtick, are served as Puma serves them: clients send them unencoded).
fn is_target_byte(b: u8) -> bool {
    matches!(b, 0x21..=0x7e) && !matches!(b, b'"' | b'<' | b'>')
}

/// Whether the start of an absolute-form target so far is a scheme and (part of) its `//`,
/// so a `/` here does not start the path yet.
fn is_scheme_prefix(prefix: &[u8]) -> bool {
    [&b"http:"[..], b"http:/", b"https:", b"https:/"]
        .iter()
        .any(|p| prefix.eq_ignore_ascii_case(p))
}

/// The length of `http://` or `https://` (any case) at the start of `prefix`.
fn scheme_length(prefix: &[u8]) -> Option<usize> {
    [&b"http://"[..], b"https://"].iter().find_map(|scheme| {
        let start = prefix.get(..scheme.len())?;
        start.eq_ignore_ascii_case(scheme).then_some(scheme.len())
    })
}

/// What the header fields mean for framing and the connection (RFC 9112 §3.2, §6, §9).
#[derive(Debug)]
struct FieldMeaning {
    host: Option<Span>,
    content_length: Option<u64>,
    body: BodyFraming,
    keep_alive: bool,
    expects_continue: bool,
}

impl FieldMeaning {
    fn read(
        buf: &[u8],
        fields: &[Field],
        version: Version,
        limits: &Limits,
    ) -> Result<FieldMeaning, ParseError> {
        let mut host: Option<Span> = None;
        let mut content_length = None;
        let mut codings = TransferCodings::default();
        let (mut close, mut keep_alive_token, mut continue_expected) = (false, false, false);
        for field in fields {
            let name = field.name.of(buf);
            let value = field.value.of(buf);
            if name.eq_ignore_ascii_case(b"host") {
                if host.is_some() {
                    return Err(err(ErrorKind::DuplicateHost));
                }
                host = Some(field.value);
            } else if name.eq_ignore_ascii_case(b"content-length") {
                // A second Content-Length is refused even with the same value: strictness
                // costs nothing here and closes a smuggling door.
                if content_length.is_some() || tab_before_value(buf, field) {
                    return Err(err(ErrorKind::InvalidContentLength));
                }
                content_length = Some(parse_content_length(value)?);
            } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
                if tab_in_field(buf, field) {
                    return Err(err(ErrorKind::InvalidTransferEncoding));
                }
                codings.add(value);
            } else if name.eq_ignore_ascii_case(b"connection") {
                for option in list_elements(value) {
                    close |= option.eq_ignore_ascii_case(b"close");
                    keep_alive_token |= option.eq_ignore_ascii_case(b"keep-alive");
                }
            } else if name.eq_ignore_ascii_case(b"expect") {
                continue_expected |=
                    list_elements(value).any(|e| e.eq_ignore_ascii_case(b"100-continue"));
            }
        }
        let host = host.filter(|h| !h.is_empty());
        match host {
            None if version == Version::Http11 && limits.require_host => {
                return Err(err(ErrorKind::MissingHost))
            }
            Some(h) if !is_host_and_port(h.of(buf)) => return Err(err(ErrorKind::InvalidHost)),
            _ => {}
        }
        let body = if codings.present {
            if content_length.is_some() {
                return Err(err(ErrorKind::ContentLengthWithTransferEncoding));
            }
            if version == Version::Http10 {
                return Err(err(ErrorKind::TransferEncodingHttp10));
            }
            codings.check()?;
            BodyFraming::Chunked
        } else {
            match content_length {
                Some(n) if limits.max_body.is_some_and(|max| n > max) => {
                    return Err(ParseError::over_u64(
                        ErrorKind::BodyTooLarge,
                        limits.max_body.unwrap_or(u64::MAX),
                    ))
                }
                None | Some(0) => BodyFraming::None,
                Some(n) => BodyFraming::Length(n),
            }
        };
        Ok(FieldMeaning {
            host,
            content_length,
            body,
            keep_alive: match version {
                Version::Http11 => !close,
                Version::Http10 => keep_alive_token && !close,
            },
            expects_continue: continue_expected && version == Version::Http11,
        })
    }
}

/// Whether the whitespace between a field's colon and its value holds a tab. RFC 9110 allows
/// it, but Puma refuses it before Content-Length and Transfer-Encoding, so it is refused
/// before Content-Length (and anywhere in Transfer-Encoding, [`tab_in_field`]).
fn tab_before_value(buf: &[u8], field: &Field) -> bool {
    buf.get(field.name.end..field.value.start)
        .is_some_and(|gap| gap.contains(&b'\t'))
}

/// Whether a field's line holds a tab anywhere after its colon. For Transfer-Encoding a tab
/// is refused wherever it is: `Transfer-Encoding:<TAB>chunked` is a known disguise for a proxy
/// that does not see it, and llhttp refuses `chunked<TAB>` (it does not read it as `chunked`),
/// so a parser that trims it and one that does not disagree on the body's framing.
fn tab_in_field(buf: &[u8], field: &Field) -> bool {
    buf.get(field.name.end..field.line_end)
        .is_some_and(|rest| rest.contains(&b'\t'))
}

/// `1*DIGIT` within `u64`. No sign, no spaces, no list (`5, 5`).
fn parse_content_length(value: &[u8]) -> Result<u64, ParseError> {
    let invalid = || err(ErrorKind::InvalidContentLength);
    if value.is_empty() {
        return Err(invalid());
    }
    value.iter().try_fold(0u64, |n, &b| {
        if !b.is_ascii_digit() {
            return Err(invalid());
        }
        n.checked_mul(10)
            .and_then(|n| n.checked_add(u64::from(b - b'0')))
            .ok_or_else(invalid)
    })
}

/// The transfer codings of all Transfer-Encoding fields, in order. Only exactly `chunked` is
/// served: a coding before it (`gzip, chunked`) could not be decoded for the app (501); one
/// after it, a second `chunked`, or no `chunked` leave the body length unknown (400, RFC 9112
/// §6.3).
#[derive(Debug, Default)]
struct TransferCodings {
    present: bool,
    count: usize,
    chunked: usize,
    last_is_chunked: bool,
    malformed: bool,
}

impl TransferCodings {
    fn add(&mut self, value: &[u8]) {
        self.present = true;
        for coding in list_elements(value) {
            let name = trim_ows(coding.split(|&b| b == b';').next().unwrap_or_default());
            let is_chunked = coding.eq_ignore_ascii_case(b"chunked");
            // Empty elements, non-tokens, and `chunked` with parameters are all malformed.
            self.malformed |=
                !is_token(name) || (name.eq_ignore_ascii_case(b"chunked") && !is_chunked);
            self.count += 1;
            self.chunked += usize::from(is_chunked);
            self.last_is_chunked = is_chunked;
        }
    }

    fn check(&self) -> Result<(), ParseError> {
        if self.malformed || self.chunked != 1 || !self.last_is_chunked {
            Err(err(ErrorKind::InvalidTransferEncoding))
        } else if self.count > 1 {
            Err(err(ErrorKind::UnsupportedTransferCoding))
        } else {
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::indexing_slicing)]
    use super::*;

    fn codings(values: &[&str]) -> Result<(), ErrorKind> {
        let mut c = TransferCodings::default();
        for v in values {
            c.add(v.as_bytes());
        }
        c.check().map_err(|e| e.kind())
    }

    #[test]
    fn transfer_codings() {
        use ErrorKind::*;
        assert_eq!(codings(&["chunked"]), Ok(()));
        assert_eq!(codings(&[" CHUNKED\t"]), Ok(()));
        assert_eq!(codings(&["gzip, chunked"]), Err(UnsupportedTransferCoding));
        assert_eq!(
            codings(&["gzip", "chunked"]),
            Err(UnsupportedTransferCoding)
        );
        assert_eq!(
            codings(&["gzip;q=1, chunked"]),
            Err(UnsupportedTransferCoding)
        );
        for bad in [
            &["chunked, chunked"][..],
            &["chunked", "chunked"],
            &["chunked, gzip"],
            &["gzip"],
            &["identity"],
            &[""],
            &["chunked,"],
            &[", chunked"],
            &["chunked;x=1"],
            &["g zip, chunked"],
            &["chunked", ""],
        ] {
            assert_eq!(codings(bad), Err(InvalidTransferEncoding), "{bad:?}");
        }
    }

    #[test]
    fn content_length_values() {
        assert_eq!(parse_content_length(b"0").unwrap(), 0);
        assert_eq!(parse_content_length(b"007").unwrap(), 7);
        assert_eq!(
            parse_content_length(b"18446744073709551615").unwrap(),
            u64::MAX
        );
        for bad in [
            &b""[..],
            b"18446744073709551616",
            b"+1",
            b"-1",
            b"0x5",
            b"5, 5",
            b"5 5",
            b"1e3",
        ] {
            assert!(parse_content_length(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn scheme_prefixes() {
        assert!(is_scheme_prefix(b"HTTP:/"));
        assert!(is_scheme_prefix(b"https:"));
        assert!(!is_scheme_prefix(b"http://"));
        assert!(!is_scheme_prefix(b"ftp:"));
        assert_eq!(scheme_length(b"HTTP://host"), Some(7));
        assert_eq!(scheme_length(b"https://host"), Some(8));
        assert_eq!(scheme_length(b"http:/host"), None);
        assert_eq!(scheme_length(b"ws://host"), None);
        assert_eq!(scheme_length(b"http"), None);
    }

    #[test]
    fn marks_split_the_target() {
        let buf = b"GET /p?q#f HTTP/1.1\r\n";
        let mut p = HeadParser::new();
        assert!(p.parse(buf, &Limits::default()).unwrap().is_none());
        let line = p.line.unwrap();
        assert_eq!(line.path.of(buf), b"/p");
        assert_eq!(line.query.unwrap().of(buf), b"q");
        assert_eq!(line.fragment.unwrap().of(buf), b"f");
        assert_eq!(line.target.of(buf), b"/p?q#f");
        assert_eq!(line.method.of(buf), b"GET");
        assert_eq!(p.pos, buf.len(), "resumes after what it has seen");
    }

    #[test]
    fn offered_protocols_need_connection_upgrade() {
        let offered = |head: &str| {
            let (head, _) = parse_head(head.as_bytes(), &Limits::default())
                .unwrap()
                .unwrap();
            head.offered_protocols().map(|o| {
                o.iter()
                    .map(|p| String::from_utf8_lossy(p).into_owned())
                    .collect::<Vec<_>>()
            })
        };
        assert_eq!(
            offered("GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket, h2c ,\r\nUpgrade: foo/2\r\n\r\n"),
            Some(vec!["websocket".to_string(), "h2c".to_string(), "foo/2".to_string()])
        );
        assert_eq!(
            offered("GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n\r\n"),
            None
        );
        assert_eq!(
            offered("GET / HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\n\r\n"),
            None
        );
        assert_eq!(offered("GET / HTTP/1.1\r\nHost: a\r\n\r\n"), None);
    }

    #[test]
    fn a_switch_needs_an_offer_and_only_to_what_was_offered() {
        let head = |h: &str| {
            parse_head(h.as_bytes(), &Limits::default())
                .unwrap()
                .unwrap()
                .0
        };
        let offering = head("GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: WebSocket, echo/2\r\n\r\n");
        assert_eq!(offering.may_switch_to(Some(b"websocket")), Ok(()));
        assert_eq!(offering.may_switch_to(Some(b"echo/2")), Ok(()));
        assert_eq!(offering.may_switch_to(None), Ok(()));
        assert_eq!(
            offering.may_switch_to(Some(b"h2c")),
            Err("a 101 Switching Protocols to \"h2c\", which the client did not offer (it offered \"WebSocket\", \"echo/2\")".to_string())
        );
        let plain = head("GET / HTTP/1.1\r\nHost: a\r\n\r\n");
        assert!(plain.may_switch_to(None).is_err());
        assert!(plain.may_switch_to(Some(b"websocket")).is_err());
        let old = head("GET / HTTP/1.0\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n");
        assert_eq!(old.offered_protocols(), None);
        assert!(old.may_switch_to(Some(b"websocket")).is_err());
    }

    #[test]
    fn state_survives_between_calls() {
        let full = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n";
        let limits = Limits::default();
        let mut p = HeadParser::new();
        for n in 0..full.len() {
            assert!(p.parse(&full[..n], &limits).unwrap().is_none());
            assert_eq!(p.pos, n, "every byte looked at once");
        }
        let (head, used) = p.parse(full, &limits).unwrap().unwrap();
        assert_eq!(used, full.len());
        assert_eq!(head.host(), Some(&b"a"[..]));
        assert_eq!(p.pos, 0, "reset after a head");
    }

    #[test]
    fn errors_are_sticky() {
        let limits = Limits::default();
        let mut p = HeadParser::new();
        let e = p.parse(b"GET /\0", &limits).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::ControlCharacter);
        assert_eq!(
            p.parse(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", &limits),
            Err(e)
        );
        p.reset();
        assert!(p
            .parse(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", &limits)
            .unwrap()
            .is_some());
    }

    #[test]
    fn spans_are_safe_on_bad_input() {
        let s = Span::new(5, 3);
        assert!(s.is_empty());
        assert_eq!(s.of(b"ab"), b"");
        assert_eq!(Span::new(1, 9).of(b"ab"), b"");
        assert_eq!(Span::new(4, 6).minus(5), Span::new(0, 1));
    }

    #[test]
    fn a_shrinking_buffer_does_not_panic() {
        let limits = Limits::default();
        let mut p = HeadParser::new();
        assert!(p
            .parse(b"GET / HTTP/1.1\r\nHost: abc", &limits)
            .unwrap()
            .is_none());
        assert!(p.parse(b"GET", &limits).unwrap().is_none());
    }
}
