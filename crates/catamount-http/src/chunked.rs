//! Decoding `Transfer-Encoding: chunked` request bodies (RFC 9112 §7.1).
//!
//! [`ChunkedDecoder`] is a byte-level state machine with no buffer of its own: it can stop
//! and resume anywhere (inside a size, a CRLF, an extension, a trailer) and holds no memory
//! proportional to the input. Chunk data is copied straight to the caller's output.
//! Extensions and trailer fields are checked against the grammar and then dropped.

use crate::error::{ErrorKind, ParseError};
use crate::limits::Limits;
use crate::syntax::{is_field_byte, is_tchar};

/// How far a [`ChunkedDecoder::decode`] call got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkProgress {
    /// Input bytes used. Always all of the input unless `done`; when `done`, the bytes after
    /// this belong to the next request.
    pub consumed: usize,
    /// The last chunk, the trailer section and its final CRLF have been read.
    pub done: bool,
}

/// Where the decoder is in the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading the hex digits of a chunk size.
    Size,
    /// After the size: chunk extensions up to the CR.
    Extension(Ext),
    /// The size line's CR was seen; LF must follow.
    SizeLf,
    /// Reading chunk data; this many bytes left.
    Data(u64),
    /// Chunk data ended; CR must follow.
    DataCr,
    /// CR after chunk data seen; LF must follow.
    DataLf,
    /// At the start of a trailer line (or of the final empty line).
    TrailerStart,
    TrailerName,
    TrailerValue,
    /// A trailer line's CR was seen.
    TrailerLf,
    /// The final empty line's CR was seen.
    FinalLf,
    Done,
}

/// Where in `*( ";" ext-name [ "=" ext-val ] )` the decoder is. RFC 9112 allows BWS around
/// the `;` and the `=`; it is refused here, as llhttp refuses it: a parser that skips it and one
/// that stops at it read different sizes and extensions from the same line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ext {
    /// After `;`, before the name.
    NameStart,
    Name,
    /// After `=`, before the value.
    ValueStart,
    Token,
    Quoted,
    /// After a backslash inside a quoted string.
    QuotedPair,
    /// After the closing quote.
    AfterQuoted,
}

/// A chunked-body decoder for one request body.
#[derive(Debug, Clone)]
pub struct ChunkedDecoder {
    state: State,
    /// The chunk size read so far on the current size line.
    size: u64,
    /// Bytes on the current size line so far (CRLF not counted).
    line_len: usize,
    /// Extension and trailer bytes over the whole body.
    extension_bytes: usize,
    /// Sum of the chunk sizes announced so far, checked against `max_body`.
    announced: u64,
    /// Data bytes emitted so far.
    decoded: u64,
    /// The trailer name being read: its length so far, and which of `FORBIDDEN_TRAILERS` it
    /// still spells (one bit each).
    trailer_name_len: usize,
    trailer_name_matches: u8,
    failed: Option<ParseError>,
}

impl Default for ChunkedDecoder {
    fn default() -> Self {
        ChunkedDecoder::new()
    }
}

fn err(kind: ErrorKind) -> ParseError {
    ParseError::new(kind)
}

impl ChunkedDecoder {
    pub fn new() -> ChunkedDecoder {
        ChunkedDecoder {
            state: State::Size,
            size: 0,
            line_len: 0,
            extension_bytes: 0,
            announced: 0,
            decoded: 0,
            trailer_name_len: 0,
            trailer_name_matches: 0,
            failed: None,
        }
    }

    /// Body bytes decoded so far (appended to `out` over all calls).
    pub fn decoded_len(&self) -> u64 {
        self.decoded
    }

    /// Decodes from `input`, appending body bytes to `out`. Uses all of `input` unless the
    /// body ends inside it. After an error, returns the same error again.
    pub fn decode(
        &mut self,
        input: &[u8],
        out: &mut Vec<u8>,
        limits: &Limits,
    ) -> Result<ChunkProgress, ParseError> {
        if let Some(e) = self.failed {
            return Err(e);
        }
        let result = self.run(input, out, limits);
        if let Err(e) = result {
            self.failed = Some(e);
        }
        result
    }

    fn run(
        &mut self,
        input: &[u8],
        out: &mut Vec<u8>,
        limits: &Limits,
    ) -> Result<ChunkProgress, ParseError> {
        let mut used = 0;
        while let Some(rest) = input.get(used..).filter(|r| !r.is_empty()) {
            match self.state {
                State::Done => break,
                State::Data(left) => {
                    let take = usize::try_from(left).map_or(rest.len(), |l| l.min(rest.len()));
                    out.extend_from_slice(rest.get(..take).unwrap_or_default());
                    used += take;
                    let take = take as u64;
                    self.decoded += take;
                    self.state = match left - take {
                        0 => State::DataCr,
                        left => State::Data(left),
                    };
                }
                _ => {
                    if let Some(&byte) = rest.first() {
                        self.step(byte, limits)?;
                        used += 1;
                    }
                }
            }
        }
        Ok(ChunkProgress {
            consumed: used,
            done: self.state == State::Done,
        })
    }

    /// Handles one byte outside chunk data.
    fn step(&mut self, byte: u8, limits: &Limits) -> Result<(), ParseError> {
        match self.state {
            State::Size | State::Extension(_) => self.size_line_byte(byte, limits),
            State::SizeLf => {
                if byte != b'\n' {
                    return Err(err(ErrorKind::BareCr));
                }
                self.state = if self.size == 0 {
                    State::TrailerStart
                } else {
                    State::Data(self.size)
                };
                self.size = 0;
                self.line_len = 0;
                Ok(())
            }
            State::DataCr | State::DataLf => {
                let (expected, next) = if self.state == State::DataCr {
                    (b'\r', State::DataLf)
                } else {
                    (b'\n', State::Size)
                };
                if byte != expected {
                    return Err(err(ErrorKind::MissingChunkCrlf));
                }
                self.state = next;
                Ok(())
            }
            State::TrailerStart | State::TrailerName | State::TrailerValue => {
                self.trailer_byte(byte, limits)
            }
            State::TrailerLf | State::FinalLf => {
                if byte != b'\n' {
                    return Err(err(ErrorKind::BareCr));
                }
                self.state = if self.state == State::FinalLf {
                    State::Done
                } else {
                    State::TrailerStart
                };
                Ok(())
            }
            State::Data(_) | State::Done => Ok(()),
        }
    }

    /// A byte of a size line: `1*HEXDIG [ chunk-ext ] CRLF`.
    fn size_line_byte(&mut self, byte: u8, limits: &Limits) -> Result<(), ParseError> {
        if byte == b'\n' {
            return Err(err(ErrorKind::BareLf));
        }
        if byte != b'\r' {
            self.line_len += 1;
            if self.line_len > limits.max_chunk_line {
                return Err(ParseError::over(
                    ErrorKind::ChunkLineTooLong,
                    limits.max_chunk_line,
                ));
            }
        }
        let State::Extension(ext) = self.state else {
            return self.size_byte(byte, limits);
        };
        if byte != b'\r' {
            self.count_extension_byte(limits)?;
        }
        let bad_extension = || err(ErrorKind::InvalidChunkExtension);
        let next = match (ext, byte) {
            // The line may end right after a size, a name or a value.
            (Ext::Name | Ext::Token | Ext::AfterQuoted, b'\r') => State::SizeLf,
            (_, b'\r') => return Err(bad_extension()),
            // ";" starts the next extension.
            (Ext::Name | Ext::Token | Ext::AfterQuoted, b';') => State::Extension(Ext::NameStart),
            (Ext::Name, b'=') => State::Extension(Ext::ValueStart),
            (Ext::NameStart | Ext::Name, b) if is_tchar(b) => State::Extension(Ext::Name),
            (Ext::ValueStart, b'"') => State::Extension(Ext::Quoted),
            (Ext::ValueStart | Ext::Token, b) if is_tchar(b) => State::Extension(Ext::Token),
            (Ext::Quoted, b'"') => State::Extension(Ext::AfterQuoted),
            (Ext::Quoted, b'\\') => State::Extension(Ext::QuotedPair),
            // qdtext and quoted-pair: HTAB, SP, VCHAR, obs-text.
            (Ext::Quoted | Ext::QuotedPair, b) if is_field_byte(b) => State::Extension(Ext::Quoted),
            _ => return Err(bad_extension()),
        };
        self.state = next;
        Ok(())
    }

    /// A byte while reading the size's hex digits.
    fn size_byte(&mut self, byte: u8, limits: &Limits) -> Result<(), ParseError> {
        if let Some(digit) = hex_value(byte) {
            self.size = self
                .size
                .checked_mul(16)
                .and_then(|s| s.checked_add(digit))
                .ok_or_else(|| err(ErrorKind::InvalidChunkSize))?;
            return Ok(());
        }
        let digits = self.line_len - usize::from(byte != b'\r');
        if digits == 0 {
            return Err(err(ErrorKind::InvalidChunkSize));
        }
        let next = match byte {
            b'\r' => State::SizeLf,
            b';' => State::Extension(Ext::NameStart),
            // Not even the BWS RFC 9112 allows before `;`: Puma refuses it, and a parser that
            // stops at the first non-hex byte would read `5 x` as 5 where another refuses it.
            _ => return Err(err(ErrorKind::InvalidChunkSize)),
        };
        // The size is complete: refuse a body over the limit before any of it arrives.
        self.announced = self
            .announced
            .checked_add(self.size)
            .ok_or_else(|| ParseError::over_u64(ErrorKind::BodyTooLarge, u64::MAX))?;
        if let Some(max) = limits.max_body.filter(|&max| self.announced > max) {
            return Err(ParseError::over_u64(ErrorKind::BodyTooLarge, max));
        }
        if byte != b'\r' {
            self.count_extension_byte(limits)?;
        }
        self.state = next;
        Ok(())
    }

    /// A byte of the trailer section: `*( field-line CRLF ) CRLF`.
    fn trailer_byte(&mut self, byte: u8, limits: &Limits) -> Result<(), ParseError> {
        let malformed = || err(ErrorKind::MalformedTrailer);
        let next = match (self.state, byte) {
            (_, b'\n') => return Err(err(ErrorKind::BareLf)),
            (State::TrailerStart, b'\r') => State::FinalLf,
            (State::TrailerValue, b'\r') => State::TrailerLf,
            (State::TrailerStart | State::TrailerName, b) if is_tchar(b) => {
                if self.state == State::TrailerStart {
                    self.trailer_name_len = 0;
                    self.trailer_name_matches = u8::MAX;
                }
                self.spell_trailer_name(b);
                State::TrailerName
            }
            (State::TrailerName, b':') if self.names_forbidden_trailer() => return Err(malformed()),
            (State::TrailerName, b':') => State::TrailerValue,
            (State::TrailerValue, b) if is_field_byte(b) => State::TrailerValue,
            // Obs-fold, an empty name, whitespace before the colon, a control character.
            _ => return Err(malformed()),
        };
        if byte != b'\r' {
            self.count_extension_byte(limits)?;
        }
        self.state = next;
        Ok(())
    }

    /// Narrows the forbidden fields the trailer name may still be to those with `byte` next.
    fn spell_trailer_name(&mut self, byte: u8) {
        let at = self.trailer_name_len;
        for (bit, name) in FORBIDDEN_TRAILERS.iter().enumerate() {
            if !name.get(at).is_some_and(|c| c.eq_ignore_ascii_case(&byte)) {
                self.trailer_name_matches &= !(1 << bit);
            }
        }
        self.trailer_name_len = at.saturating_add(1);
    }

    /// Whether the trailer name read so far is a whole forbidden field's name.
    fn names_forbidden_trailer(&self) -> bool {
        FORBIDDEN_TRAILERS.iter().enumerate().any(|(bit, name)| {
            self.trailer_name_matches & (1 << bit) != 0 && name.len() == self.trailer_name_len
        })
    }

    fn count_extension_byte(&mut self, limits: &Limits) -> Result<(), ParseError> {
        self.extension_bytes += 1;
        if self.extension_bytes > limits.max_chunk_extensions {
            return Err(ParseError::over(
                ErrorKind::ChunkExtensionsTooLarge,
                limits.max_chunk_extensions,
            ));
        }
        Ok(())
    }
}

/// Fields a trailer may not carry (RFC 9110 §6.5.1: framing, routing and the connection are
/// decided before the body). llhttp refuses a Content-Length or Transfer-Encoding trailer and
/// obeys a `Connection: close` one (this decoder drops trailers, so it could not); a proxy that
/// merges trailers into the header section would see a second framing or Host.
const FORBIDDEN_TRAILERS: [&[u8]; 4] = [
    b"content-length",
    b"transfer-encoding",
    b"host",
    b"connection",
];

fn hex_value(b: u8) -> Option<u64> {
    char::from(b).to_digit(16).map(u64::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(input: &[u8]) -> Result<(Vec<u8>, ChunkProgress), ErrorKind> {
        let mut d = ChunkedDecoder::new();
        let mut out = Vec::new();
        d.decode(input, &mut out, &Limits::default())
            .map(|p| (out, p))
            .map_err(|e| e.kind())
    }

    #[test]
    fn hex_digits() {
        assert_eq!(hex_value(b'0'), Some(0));
        assert_eq!(hex_value(b'a'), Some(10));
        assert_eq!(hex_value(b'F'), Some(15));
        assert_eq!(hex_value(b'g'), None);
        assert_eq!(hex_value(0xff), None);
    }

    #[test]
    fn stops_at_the_end_of_the_body() {
        let (out, p) = run(b"1\r\na\r\n0\r\n\r\nrest").unwrap();
        assert_eq!(out, b"a");
        assert_eq!(
            p,
            ChunkProgress {
                consumed: 11,
                done: true
            }
        );
    }

    #[test]
    fn incomplete_input_is_all_consumed() {
        let (out, p) = run(b"4\r\nab").unwrap();
        assert_eq!(out, b"ab");
        assert_eq!(
            p,
            ChunkProgress {
                consumed: 5,
                done: false
            }
        );
    }

    #[test]
    fn done_and_failed_are_sticky() {
        let limits = Limits::default();
        let mut d = ChunkedDecoder::new();
        let mut out = Vec::new();
        assert!(d.decode(b"0\r\n\r\n", &mut out, &limits).unwrap().done);
        let again = d.decode(b"5\r\nhello", &mut out, &limits).unwrap();
        assert_eq!(
            again,
            ChunkProgress {
                consumed: 0,
                done: true
            }
        );
        let mut d = ChunkedDecoder::new();
        let e = d.decode(b"x", &mut out, &limits).unwrap_err();
        assert_eq!(d.decode(b"0\r\n\r\n", &mut out, &limits), Err(e));
    }

    #[test]
    fn announced_sizes_that_overflow_are_too_large() {
        let mut d = ChunkedDecoder::new();
        d.announced = u64::MAX - 1;
        let e = d.decode(b"2\r\n", &mut Vec::new(), &Limits::default());
        assert_eq!(e.unwrap_err().kind(), ErrorKind::BodyTooLarge);
        let mut d = ChunkedDecoder::new();
        d.announced = u64::MAX - 1;
        assert!(d
            .decode(b"1\r\n", &mut Vec::new(), &Limits::default())
            .is_ok());
    }

    #[test]
    fn extension_grammar() {
        for ok in [
            &b"1;a\r\nx\r\n0\r\n\r\n"[..],
            b"1;a=b\r\nx\r\n0\r\n\r\n",
            b"1;a=b;c\r\nx\r\n0\r\n\r\n",
            b"1;a=\"q \\\" ;x\"\r\nx\r\n0\r\n\r\n",
            b"1;a=\"\"\r\nx\r\n0\r\n\r\n",
            b"1;a=\"\t\x80\"\r\nx\r\n0\r\n\r\n",
            b"0;last=1\r\n\r\n",
        ] {
            assert!(run(ok).unwrap().1.done, "{:?}", String::from_utf8_lossy(ok));
        }
        for bad in [
            &b"1;\r\n"[..],
            b"1;=b\r\n",
            b"1;a=\r\n",
            b"1;a=b c\r\n",
            b"1;a=\"open\r\n",
            b"1;a \r\n",
            b"1;a=b \r\n",
            b"1;a b\r\n",
            b"1;a=\"x\"y\r\n",
            b"1;a=\"\x01\"\r\n",
            b"1;a@b\r\n",
            b"1;a=b =c\r\n",
            b"1;a=\"b\" =c\r\n",
            // Whitespace (the BWS RFC 9112 allows; llhttp refuses it) around `;` and `=`.
            b"1; a\r\n",
            b"1;\ta\r\n",
            b"1;a =b\r\n",
            b"1;a= b\r\n",
            b"1;a=b ;c\r\n",
            b"1;a=\"b\" ;c\r\n",
            b"1;a ;b\r\n",
        ] {
            assert_eq!(
                run(bad).err(),
                Some(ErrorKind::InvalidChunkExtension),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
