//! Catamount's verdict on raw request byte streams, for the differential check against llhttp
//! (test/support/parser_differential.py): reads records from stdin, each a 4-byte
//! little-endian length and that many bytes, and writes one JSON line per record.
//!
//! A record is what one connection sends. It is read as the server reads it: a head
//! (`HeadParser`, default `Limits`), then its body (Content-Length or `ChunkedDecoder`), then
//! the next request, until the bytes run out, a request is refused, or a request does not keep
//! the connection alive. The line lists each complete message (`head` and `end`: offsets in the
//! record just past its head and its body; method, target, version, fields, body length, keep-alive)
//! and the outcome: `clean` (every byte used), `partial` (a message still arriving; `head` says
//! where its head ended when only its body is missing), `closed`
//! (bytes after a message that ends the connection) or `error` with the refused message's
//! `ErrorKind`. Strings are bytes written as JSON code points 0-255 (Latin-1), so they survive.

use std::fmt::Write as _;
use std::io::{self, BufWriter, Read, Write};
use std::process::ExitCode;

use catamount_http::{BodyFraming, ChunkedDecoder, HeadParser, Limits, RequestHead, Version};

/// Largest record: far above any generated request, small enough that a corrupt length
/// cannot make the process allocate gigabytes.
const MAX_RECORD: usize = 16 << 20;

fn main() -> ExitCode {
    let limits = Limits::default();
    let mut stdin = io::stdin().lock();
    let mut out = BufWriter::new(io::stdout().lock());
    let mut record = Vec::new();
    let mut line = String::new();
    loop {
        let mut len = [0u8; 4];
        match stdin.read_exact(&mut len) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return ExitCode::SUCCESS,
            Err(e) => return fail(&e),
        }
        let len = u32::from_le_bytes(len) as usize;
        if len > MAX_RECORD {
            eprintln!("parse-verdicts: a record of {len} bytes (at most {MAX_RECORD})");
            return ExitCode::FAILURE;
        }
        record.resize(len, 0);
        if let Err(e) = stdin.read_exact(&mut record) {
            return fail(&e);
        }
        line.clear();
        verdict(&record, &limits, &mut line);
        line.push('\n');
        // One line out per record in, flushed: the driver may also talk to one process a
        // record at a time (while it shrinks a failing input).
        if let Err(e) = out.write_all(line.as_bytes()).and_then(|()| out.flush()) {
            return fail(&e);
        }
    }
}

fn fail(e: &io::Error) -> ExitCode {
    eprintln!("parse-verdicts: {e}");
    ExitCode::FAILURE
}

/// Appends the JSON object for one record to `line`.
fn verdict(record: &[u8], limits: &Limits, line: &mut String) {
    line.push_str("{\"messages\":[");
    let mut pos = 0;
    let mut first = true;
    let outcome = loop {
        let rest = record.get(pos..).unwrap_or_default();
        if rest.is_empty() {
            break Outcome::Clean;
        }
        let (head, head_len) = match HeadParser::new().parse(rest, limits) {
            Err(e) => break Outcome::Error(e.kind()),
            Ok(None) => break Outcome::Partial(None),
            Ok(Some(parsed)) => parsed,
        };
        let body = rest.get(head_len..).unwrap_or_default();
        let head_end = pos + head_len;
        let (body_len, body_used) = match head.body() {
            BodyFraming::None => (0, 0),
            BodyFraming::Length(n) => match usize::try_from(n) {
                Ok(n) if n <= body.len() => (n as u64, n),
                _ => break Outcome::Partial(Some(head_end)),
            },
            BodyFraming::Chunked => {
                let mut decoder = ChunkedDecoder::new();
                let mut data = Vec::new();
                match decoder.decode(body, &mut data, limits) {
                    Err(e) => break Outcome::Error(e.kind()),
                    Ok(p) if p.done => (decoder.decoded_len(), p.consumed),
                    Ok(_) => break Outcome::Partial(Some(head_end)),
                }
            }
        };
        if !first {
            line.push(',');
        }
        first = false;
        pos = head_end + body_used;
        message(&head, head_end, pos, body_len, line);
        if !head.keep_alive() && pos < record.len() {
            break Outcome::Closed;
        }
    };
    line.push_str("],\"outcome\":");
    match outcome {
        Outcome::Clean => line.push_str("\"clean\""),
        Outcome::Partial(None) => line.push_str("\"partial\""),
        Outcome::Partial(Some(head)) => {
            let _ = write!(line, "\"partial\",\"head\":{head}");
        }
        Outcome::Closed => line.push_str("\"closed\""),
        Outcome::Error(kind) => {
            let _ = write!(line, "\"error\",\"error\":\"{kind:?}\"");
        }
    }
    line.push('}');
}

enum Outcome {
    Clean,
    /// With the end of the message's head when only its body is missing.
    Partial(Option<usize>),
    Closed,
    Error(catamount_http::ErrorKind),
}

/// One complete message as a JSON object.
fn message(head: &RequestHead, head_end: usize, end: usize, body: u64, line: &mut String) {
    let version = match head.version() {
        Version::Http10 => "1.0",
        Version::Http11 => "1.1",
    };
    let _ = write!(line, "{{\"head\":{head_end},\"end\":{end},\"method\":");
    string(head.method().as_bytes(), line);
    line.push_str(",\"target\":");
    string(head.target(), line);
    let _ = write!(
        line,
        ",\"version\":\"{version}\",\"body\":{body},\"keep_alive\":{},\"headers\":[",
        head.keep_alive()
    );
    for (i, (name, value)) in head.headers().enumerate() {
        if i > 0 {
            line.push(',');
        }
        line.push('[');
        string(name, line);
        line.push(',');
        string(value, line);
        line.push(']');
    }
    line.push_str("]}");
}

/// `bytes` as a JSON string of code points 0-255.
fn string(bytes: &[u8], line: &mut String) {
    line.push('"');
    for &b in bytes {
        match b {
            b'"' | b'\\' => {
                line.push('\\');
                line.push(char::from(b));
            }
            0x20..=0x7e => line.push(char::from(b)),
            _ => {
                let _ = write!(line, "\\u{b:04x}");
            }
        }
    }
    line.push('"');
}
