//! Why a request was refused, and which status answers it.

use std::fmt;

/// What was wrong with a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    MalformedRequestLine,
    InvalidMethod,
    UnsupportedMethod,
    InvalidTarget,
    TargetTooLong,
    PathTooLong,
    QueryTooLong,
    FragmentTooLong,
    UnsupportedVersion,
    MalformedHeader,
    ObsFold,
    BareLf,
    BareCr,
    ControlCharacter,
    HeaderNameTooLong,
    HeaderValueTooLong,
    HeadTooLarge,
    TooManyHeaders,
    MissingHost,
    DuplicateHost,
    InvalidContentLength,
    ContentLengthWithTransferEncoding,
    InvalidTransferEncoding,
    UnsupportedTransferCoding,
    TransferEncodingHttp10,
    InvalidChunkSize,
    ChunkLineTooLong,
    ChunkExtensionsTooLarge,
    MissingChunkCrlf,
    MalformedTrailer,
    BodyTooLarge,
}

/// A refused request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParseError {
    kind: ErrorKind,
}

impl ParseError {
    pub(crate) fn new(kind: ErrorKind) -> ParseError {
        ParseError { kind }
    }

    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The response status: 414/431 for size limits (clearer than Puma's bare 400), 413 for a
    /// body over the limit, 501 for a method or coding we do not serve, 505 for HTTP/2+.
    pub fn status(&self) -> u16 {
        use ErrorKind::*;
        match self.kind {
            UnsupportedMethod | UnsupportedTransferCoding => 501,
            TargetTooLong | PathTooLong | QueryTooLong | FragmentTooLong => 414,
            HeaderNameTooLong | HeaderValueTooLong | HeadTooLarge | TooManyHeaders => 431,
            UnsupportedVersion => 505,
            BodyTooLarge => 413,
            _ => 400,
        }
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use ErrorKind::*;
        f.write_str(match self.kind {
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
            BareLf => "bare LF line ending",
            BareCr => "bare CR in request",
            ControlCharacter => "control character in request",
            HeaderNameTooLong => "header name too long",
            HeaderValueTooLong => "header value too long",
            HeadTooLarge => "request head too large",
            TooManyHeaders => "too many header fields",
            MissingHost => "HTTP/1.1 request without Host",
            DuplicateHost => "more than one Host header",
            InvalidContentLength => "invalid Content-Length",
            ContentLengthWithTransferEncoding => "both Content-Length and Transfer-Encoding",
            InvalidTransferEncoding => "invalid Transfer-Encoding",
            UnsupportedTransferCoding => "unsupported transfer coding",
            TransferEncodingHttp10 => "Transfer-Encoding in an HTTP/1.0 request",
            InvalidChunkSize => "invalid chunk size",
            ChunkLineTooLong => "chunk-size line too long",
            ChunkExtensionsTooLarge => "chunk extensions too large",
            MissingChunkCrlf => "chunk data not followed by CRLF",
            MalformedTrailer => "malformed trailer field",
            BodyTooLarge => "request body too large",
        })
    }
}

impl std::error::Error for ParseError {}
