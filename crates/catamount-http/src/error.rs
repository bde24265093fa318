//! Why a request was refused, and which status answers it.
//!
//! Every refusal carries an [`ErrorKind`] (for tests and metrics) and maps to one response
//! status. Size refusals also remember the limit they hit, so the server log says
//! "header name longer than 256 bytes" rather than just "too long".

use std::fmt;

/// What was wrong with a request. New kinds may be added; match with a wildcard arm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The request line is not `method SP request-target SP HTTP-version CRLF` (400). Also
    /// HTTP/0.9 lines without a version, and too many empty lines before the request line.
    MalformedRequestLine,
    /// The method is not a token of 1 to 32 characters (400).
    InvalidMethod,
    /// A valid method that [`crate::Limits::methods`] does not serve (501).
    UnsupportedMethod,
    /// A request-target byte outside visible ASCII, or a target form the method cannot use:
    /// `*` other than for OPTIONS, a scheme other than http(s), userinfo, CONNECT without
    /// `host:port` (400).
    InvalidTarget,
    /// The request-target (path, query and fragment) is over `max_target` (414).
    TargetTooLong,
    /// The path is over `max_path` (414).
    PathTooLong,
    /// The query string is over `max_query` (414).
    QueryTooLong,
    /// The fragment is over `max_fragment` (414).
    FragmentTooLong,
    /// HTTP/0.x, HTTP/1.2 to 1.9 (llhttp refuses them too), or HTTP/2 and later on an HTTP/1
    /// connection (505).
    UnsupportedVersion,
    /// A header line that is not `token ":" value`: empty or non-token name, whitespace
    /// before the colon, no colon (400).
    MalformedHeader,
    /// A header line starting with whitespace: obsolete line folding (400).
    ObsFold,
    /// A line ending in LF without CR (400).
    BareLf,
    /// A CR not followed by LF (400).
    BareCr,
    /// NUL, DEL or another control character other than HTAB in the head (400).
    ControlCharacter,
    /// A header name over `max_header_name` (431).
    HeaderNameTooLong,
    /// A header value over `max_header_value` (431).
    HeaderValueTooLong,
    /// The head is over `max_head`, complete or not (431).
    HeadTooLarge,
    /// More than `max_headers` header fields (431).
    TooManyHeaders,
    /// HTTP/1.1 without a Host header, or with an empty one (400, RFC 9112 §3.2).
    MissingHost,
    /// More than one Host header (400).
    DuplicateHost,
    /// A Host value that is not `host[:port]` (400, RFC 9112 §3.2).
    InvalidHost,
    /// Content-Length empty, not all digits, over `u64`, a list, or repeated (400).
    InvalidContentLength,
    /// Both Content-Length and Transfer-Encoding: a request-smuggling shape (400).
    ContentLengthWithTransferEncoding,
    /// Transfer-Encoding whose final coding is not exactly one `chunked` (400).
    InvalidTransferEncoding,
    /// Transfer-Encoding with a coding before `chunked`, such as `gzip, chunked` (501).
    UnsupportedTransferCoding,
    /// Transfer-Encoding on an HTTP/1.0 request, whose framing it cannot be (400).
    TransferEncodingHttp10,
    /// A chunk size that is not 1*HEXDIG within `u64` (400).
    InvalidChunkSize,
    /// A chunk extension that is not `;name[=token|quoted-string]` (400).
    InvalidChunkExtension,
    /// A chunk-size line over `max_chunk_line` (400).
    ChunkLineTooLong,
    /// Chunk extensions and trailers together over `max_chunk_extensions` (400).
    ChunkExtensionsTooLarge,
    /// Chunk data not followed by CRLF (400).
    MissingChunkCrlf,
    /// A trailer line that is not a valid header field, or one naming Content-Length,
    /// Transfer-Encoding, Host or Connection, which a trailer may not carry (400).
    MalformedTrailer,
    /// A declared or decoded body over `max_body` (413).
    BodyTooLarge,
}

impl ErrorKind {
    /// The response status for this kind.
    pub fn status(self) -> u16 {
        use ErrorKind::*;
        match self {
            UnsupportedMethod | UnsupportedTransferCoding => 501,
            TargetTooLong | PathTooLong | QueryTooLong | FragmentTooLong => 414,
            HeaderNameTooLong | HeaderValueTooLong | HeadTooLarge | TooManyHeaders => 431,
            UnsupportedVersion => 505,
            BodyTooLarge => 413,
            _ => 400,
        }
    }

    /// A short description for the log.
    fn describe(self) -> &'static str {
        use ErrorKind::*;
        match self {
            MalformedRequestLine => "malformed request line",
            InvalidMethod => "invalid method",
            UnsupportedMethod => "method not supported",
            InvalidTarget => "invalid request target",
            TargetTooLong => "request target too long",
            PathTooLong => "request path too long",
            QueryTooLong => "query string too long",
            FragmentTooLong => "fragment too long",
            UnsupportedVersion => "HTTP version not supported",
            MalformedHeader => "malformed header line",
            ObsFold => "obsolete line folding in headers",
            BareLf => "LF without CR",
            BareCr => "CR without LF",
            ControlCharacter => "control character in request head",
            HeaderNameTooLong => "header name too long",
            HeaderValueTooLong => "header value too long",
            HeadTooLarge => "request head too large",
            TooManyHeaders => "too many header fields",
            MissingHost => "HTTP/1.1 request without Host",
            DuplicateHost => "more than one Host header",
            InvalidHost => "invalid Host header",
            InvalidContentLength => "invalid Content-Length",
            ContentLengthWithTransferEncoding => "both Content-Length and Transfer-Encoding",
            InvalidTransferEncoding => "invalid Transfer-Encoding",
            UnsupportedTransferCoding => "unsupported transfer coding",
            TransferEncodingHttp10 => "Transfer-Encoding in an HTTP/1.0 request",
            InvalidChunkSize => "invalid chunk size",
            InvalidChunkExtension => "invalid chunk extension",
            ChunkLineTooLong => "chunk-size line too long",
            ChunkExtensionsTooLarge => "chunk extensions and trailers too large",
            MissingChunkCrlf => "chunk data not followed by CRLF",
            MalformedTrailer => "malformed trailer field",
            BodyTooLarge => "request body too large",
        }
    }

    /// For size limits: the message that goes before the limit ("... longer than 256 bytes").
    fn limit_phrase(self) -> Option<(&'static str, &'static str)> {
        use ErrorKind::*;
        Some(match self {
            TargetTooLong => ("request target longer than", " bytes"),
            PathTooLong => ("request path longer than", " bytes"),
            QueryTooLong => ("query string longer than", " bytes"),
            FragmentTooLong => ("fragment longer than", " bytes"),
            HeaderNameTooLong => ("header name longer than", " bytes"),
            HeaderValueTooLong => ("header value longer than", " bytes"),
            HeadTooLarge => ("request head larger than", " bytes"),
            TooManyHeaders => ("more header fields than", ""),
            ChunkLineTooLong => ("chunk-size line longer than", " bytes"),
            ChunkExtensionsTooLarge => ("chunk extensions and trailers over", " bytes"),
            BodyTooLarge => ("request body larger than", " bytes"),
            _ => return None,
        })
    }
}

/// A refused request: what was wrong and, for size limits, the limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParseError {
    kind: ErrorKind,
    /// The limit that was exceeded, for the log message.
    limit: Option<u64>,
}

impl ParseError {
    pub(crate) fn new(kind: ErrorKind) -> ParseError {
        ParseError { kind, limit: None }
    }

    /// A size limit was exceeded; `limit` is the configured maximum.
    pub(crate) fn over(kind: ErrorKind, limit: usize) -> ParseError {
        ParseError {
            kind,
            limit: Some(u64::try_from(limit).unwrap_or(u64::MAX)),
        }
    }

    /// Like [`ParseError::over`] for `u64` limits (the body).
    pub(crate) fn over_u64(kind: ErrorKind, limit: u64) -> ParseError {
        ParseError {
            kind,
            limit: Some(limit),
        }
    }

    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The response status: 414/431 for size limits (clearer than a bare 400), 413 for a body
    /// over the limit, 501 for a method or coding we do not serve, 505 for HTTP/2+, else 400.
    pub fn status(&self) -> u16 {
        self.kind.status()
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.limit, self.kind.limit_phrase()) {
            (Some(limit), Some((before, unit))) => write!(f, "{before} {limit}{unit}"),
            _ => f.write_str(self.kind.describe()),
        }
    }
}

impl std::error::Error for ParseError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses() {
        use ErrorKind::*;
        for (kind, status) in [
            (MalformedRequestLine, 400),
            (UnsupportedMethod, 501),
            (UnsupportedTransferCoding, 501),
            (TargetTooLong, 414),
            (PathTooLong, 414),
            (QueryTooLong, 414),
            (FragmentTooLong, 414),
            (HeaderNameTooLong, 431),
            (HeaderValueTooLong, 431),
            (HeadTooLarge, 431),
            (TooManyHeaders, 431),
            (UnsupportedVersion, 505),
            (BodyTooLarge, 413),
            (ChunkLineTooLong, 400),
            (InvalidContentLength, 400),
        ] {
            assert_eq!(ParseError::new(kind).status(), status, "{kind:?}");
        }
    }

    #[test]
    fn messages_name_the_limit() {
        let e = ParseError::over(ErrorKind::HeaderNameTooLong, 256);
        assert_eq!(e.to_string(), "header name longer than 256 bytes");
        let e = ParseError::over(ErrorKind::TooManyHeaders, 200);
        assert_eq!(e.to_string(), "more header fields than 200");
        assert_eq!(
            ParseError::new(ErrorKind::BareLf).to_string(),
            "LF without CR"
        );
        // Without a recorded limit a size error still reads as a sentence.
        assert_eq!(
            ParseError::new(ErrorKind::BodyTooLarge).to_string(),
            "request body too large"
        );
        let e = ParseError::over_u64(ErrorKind::BodyTooLarge, 10);
        assert_eq!(e.to_string(), "request body larger than 10 bytes");
    }
}
