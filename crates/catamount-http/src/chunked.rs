//! Decoding `Transfer-Encoding: chunked` request bodies, resumable at any byte boundary.

use crate::error::{ErrorKind, ParseError};
use crate::limits::Limits;
use crate::request::is_tchar;

/// How far a [`ChunkedDecoder::decode`] call got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkProgress {
    /// Input bytes used; when `done`, bytes after this are the next request.
    pub consumed: usize,
    /// The last chunk and the trailer section have been read.
    pub done: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading a chunk-size line (size, extensions) up to CRLF.
    SizeLine,
    /// Reading chunk data; this many bytes left.
    Data(u64),
    /// Expecting the CRLF after chunk data (how many of its 2 bytes seen).
    DataEnd(u8),
    /// Reading trailer lines after the last chunk.
    Trailer,
    Done,
}

/// A chunked-body decoder.
#[derive(Debug)]
pub struct ChunkedDecoder {
    state: State,
    /// The current line (size line or trailer line), until its CRLF arrives.
    line: Vec<u8>,
    decoded: u64,
    extension_bytes: usize,
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
            state: State::SizeLine,
            line: Vec::new(),
            decoded: 0,
            extension_bytes: 0,
        }
    }

    /// Total decoded body bytes so far.
    pub fn decoded_len(&self) -> u64 {
        self.decoded
    }

    /// Decodes from `input`, appending body bytes to `out`.
    pub fn decode(
        &mut self,
        input: &[u8],
        out: &mut Vec<u8>,
        limits: &Limits,
    ) -> Result<ChunkProgress, ParseError> {
        let mut i = 0;
        while i < input.len() {
            match self.state {
                State::Done => break,
                State::SizeLine | State::Trailer => {
                    let byte = input[i];
                    i += 1;
                    if byte == b'\n' {
                        if self.line.last() != Some(&b'\r') {
                            return Err(err(ErrorKind::BareLf));
                        }
                        self.line.pop();
                        self.end_of_line(limits)?;
                        continue;
                    }
                    if self.line.last() == Some(&b'\r') {
                        return Err(err(ErrorKind::BareCr));
                    }
                    self.line.push(byte);
                    let max = if self.state == State::SizeLine {
                        limits.max_chunk_line
                    } else {
                        limits.max_chunk_extensions
                    };
                    if self.line.len() > max {
                        return Err(err(if self.state == State::SizeLine {
                            ErrorKind::ChunkLineTooLong
                        } else {
                            ErrorKind::ChunkExtensionsTooLarge
                        }));
                    }
                }
                State::Data(left) => {
                    let take = usize::try_from(left)
                        .unwrap_or(usize::MAX)
                        .min(input.len() - i);
                    out.extend_from_slice(&input[i..i + take]);
                    i += take;
                    let left = left - take as u64;
                    self.state = if left == 0 {
                        State::DataEnd(0)
                    } else {
                        State::Data(left)
                    };
                }
                State::DataEnd(seen) => {
                    let want = if seen == 0 { b'\r' } else { b'\n' };
                    if input[i] != want {
                        return Err(err(ErrorKind::MissingChunkCrlf));
                    }
                    i += 1;
                    self.state = if seen == 0 {
                        State::DataEnd(1)
                    } else {
                        State::SizeLine
                    };
                }
            }
        }
        Ok(ChunkProgress {
            consumed: i,
            done: self.state == State::Done,
        })
    }

    fn end_of_line(&mut self, limits: &Limits) -> Result<(), ParseError> {
        let line = std::mem::take(&mut self.line);
        if self.state == State::Trailer {
            if line.is_empty() {
                self.state = State::Done;
                return Ok(());
            }
            self.extension_bytes += line.len();
            if self.extension_bytes > limits.max_chunk_extensions {
                return Err(err(ErrorKind::ChunkExtensionsTooLarge));
            }
            return check_trailer(&line);
        }
        let size_end = line
            .iter()
            .position(|c| !c.is_ascii_hexdigit())
            .unwrap_or(line.len());
        let (digits, rest) = line.split_at(size_end);
        if digits.is_empty() || digits.len() > 16 {
            return Err(err(ErrorKind::InvalidChunkSize));
        }
        let size = std::str::from_utf8(digits)
            .ok()
            .and_then(|d| u64::from_str_radix(d, 16).ok())
            .ok_or_else(|| err(ErrorKind::InvalidChunkSize))?;
        if !rest.is_empty() {
            // Extensions: BWS ";" name [ "=" value ], ignored but bounded and checked for CTLs.
            let trimmed = rest
                .iter()
                .position(|c| *c != b' ' && *c != b'\t')
                .map(|p| &rest[p..])
                .unwrap_or(&[]);
            if trimmed.first() != Some(&b';')
                || rest
                    .iter()
                    .any(|c| (*c < 0x20 && *c != b'\t') || *c == 0x7f)
            {
                return Err(err(ErrorKind::InvalidChunkSize));
            }
            self.extension_bytes += rest.len();
            if self.extension_bytes > limits.max_chunk_extensions {
                return Err(err(ErrorKind::ChunkExtensionsTooLarge));
            }
        }
        self.decoded = self
            .decoded
            .checked_add(size)
            .ok_or_else(|| err(ErrorKind::BodyTooLarge))?;
        if limits.max_body.is_some_and(|max| self.decoded > max) {
            return Err(err(ErrorKind::BodyTooLarge));
        }
        self.state = if size == 0 {
            State::Trailer
        } else {
            State::Data(size)
        };
        Ok(())
    }
}

fn check_trailer(line: &[u8]) -> Result<(), ParseError> {
    if matches!(line.first(), Some(b' ') | Some(b'\t')) {
        return Err(err(ErrorKind::MalformedTrailer));
    }
    let colon = line
        .iter()
        .position(|c| *c == b':')
        .ok_or_else(|| err(ErrorKind::MalformedTrailer))?;
    let name = &line[..colon];
    let value = &line[colon + 1..];
    if name.is_empty()
        || !name.iter().all(|c| is_tchar(*c))
        || value
            .iter()
            .any(|c| (*c < 0x20 && *c != b'\t') || *c == 0x7f)
    {
        return Err(err(ErrorKind::MalformedTrailer));
    }
    Ok(())
}
