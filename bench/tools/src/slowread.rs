//! `slowread`: clients that ask for a large response and read it at a trickle, with a small
//! receive buffer so the server really has to wait on them (a server that writes from its
//! request threads loses those threads to such clients). Each connection loops keep-alive
//! requests, pacing its reads with a token bucket; closes and errors are counted and the
//! connection reopened.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::{sleep, sleep_until, timeout_at, Instant};

use crate::args::UsageError;
use crate::{args, Failure};

pub const USAGE: &str = "\
usage: catamount-bench slowread --port P --rate BYTES_PER_SEC --duration SECS
                                [--host 127.0.0.1] [--path /] [--conns 50]

Opens CONNS connections to HOST:P with a 4 KiB receive buffer, each sending
`GET PATH HTTP/1.1` and reading the response at about RATE bytes/s (up to RATE/10 bytes every
100 ms), then sending the next request on the same connection. Responses are framed by
Content-Length, chunked encoding, or the server closing. A connection the server closes
(other than after `Connection: close` or a close-delimited body), or any error, counts in
`errors` and is reopened after 100 ms. After SECS seconds prints
  {\"conns\":N,\"bytes_read\":N,\"responses_completed\":N,\"errors\":N}
HOST must be a loopback address.
";

/// Asked for before connecting, so the window the server sees is small from the start.
const RECEIVE_BUFFER: usize = 4096;
const TICK: Duration = Duration::from_millis(100);
const RECONNECT_PAUSE: Duration = Duration::from_millis(100);
const READ_CHUNK: usize = 16 * 1024;
/// A response head (or chunk-size/trailer line) longer than this is an error.
const MAX_LINE: usize = 64 * 1024;

#[derive(Default)]
struct Counters {
    bytes_read: AtomicU64,
    responses_completed: AtomicU64,
    errors: AtomicU64,
}

pub fn run(argv: &[String]) -> Result<(), Failure> {
    let flags = args::parse(argv, &["port", "host", "path", "conns", "rate", "duration"])?;
    flags.no_positional()?;
    let host = flags.loopback_host("host", "127.0.0.1")?;
    let port = flags.port("port", None, false)?;
    let path = flags.string("path", "/");
    if !path.starts_with('/') || path.bytes().any(|b| b <= b' ' || b == 0x7f) {
        return Err(UsageError(format!(
            "--path must start with / and contain no spaces or control characters, got {path:?}"
        ))
        .into());
    }
    let conns = flags.number("conns", Some(50), 1, 10_000)?;
    let rate = flags.number("rate", None, 1, 10_000_000_000)?;
    let duration = flags.number("duration", None, 1, 86_400)?;
    let addr = SocketAddr::new(host, port);
    let request: Arc<[u8]> = format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n")
        .into_bytes()
        .into();
    // Bytes allowed per tick; at least one so that tiny rates still make progress.
    let budget = usize::try_from(rate / 10).unwrap_or(usize::MAX).max(1);

    let counters = Arc::new(Counters::default());
    let runtime = crate::runtime()?;
    runtime.block_on(async {
        let deadline = Instant::now() + Duration::from_secs(duration);
        let tasks: Vec<_> = (0..conns)
            .map(|_| {
                let counters = Arc::clone(&counters);
                let request = Arc::clone(&request);
                tokio::spawn(async move {
                    // Everything a client does stops at the deadline, whatever it waits on.
                    let _ = timeout_at(deadline, client(addr, &request, budget, &counters)).await;
                })
            })
            .collect();
        for task in tasks {
            // Each task ends by the deadline; the extra second only guards against a stuck one.
            let _ = timeout_at(deadline + Duration::from_secs(1), task).await;
        }
    });
    println!(
        "{{\"conns\":{conns},\"bytes_read\":{},\"responses_completed\":{},\"errors\":{}}}",
        counters.bytes_read.load(Ordering::Relaxed),
        counters.responses_completed.load(Ordering::Relaxed),
        counters.errors.load(Ordering::Relaxed),
    );
    Ok(())
}

/// One slow reader, reconnecting after every session, until the caller's deadline cancels it.
async fn client(addr: SocketAddr, request: &[u8], budget: usize, counters: &Counters) {
    loop {
        if session(addr, request, budget, counters).await.is_err() {
            counters.errors.fetch_add(1, Ordering::Relaxed);
        }
        sleep(RECONNECT_PAUSE).await;
    }
}

/// Why a session ended badly (the reason is not reported, only counted).
#[derive(Debug)]
struct SessionError;

impl From<std::io::Error> for SessionError {
    fn from(_: std::io::Error) -> Self {
        SessionError
    }
}

/// A TCP stream to `addr` whose receive buffer was made small before the handshake.
async fn connect(addr: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_recv_buffer_size(RECEIVE_BUFFER)?;
    socket.set_nonblocking(true)?;
    let stream = TcpSocket::from_std_stream(socket.into())
        .connect(addr)
        .await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// One connection: request, read the response slowly, repeat. `Ok` when the server ended it
/// in a way HTTP allows (after `Connection: close`, or closing a close-delimited body).
async fn session(
    addr: SocketAddr,
    request: &[u8],
    budget: usize,
    counters: &Counters,
) -> Result<(), SessionError> {
    let mut stream = connect(addr).await?;
    stream.write_all(request).await?;
    let mut response = Response::default();
    let mut buf = vec![0u8; READ_CHUNK.min(budget)];
    let mut tokens = budget;
    let mut refill_at = Instant::now() + TICK;
    loop {
        if tokens == 0 {
            sleep_until(refill_at).await;
        }
        let now = Instant::now();
        if now >= refill_at {
            tokens = budget;
            refill_at = now + TICK;
        }
        let want = tokens.min(buf.len());
        let n = stream.read(buf.get_mut(..want).unwrap_or_default()).await?;
        if n == 0 {
            return if response.ends_at_close() {
                counters.responses_completed.fetch_add(1, Ordering::Relaxed);
                Ok(())
            } else {
                Err(SessionError)
            };
        }
        tokens -= n;
        counters.bytes_read.fetch_add(n as u64, Ordering::Relaxed);
        let mut data = buf.get(..n).unwrap_or_default();
        while !data.is_empty() {
            let (used, complete) = response.feed(data)?;
            data = data.get(used..).unwrap_or_default();
            if complete {
                counters.responses_completed.fetch_add(1, Ordering::Relaxed);
                if response.close {
                    return Ok(());
                }
                response = Response::default();
                stream.write_all(request).await?;
            }
        }
    }
}

/// Where the reader is in one response.
#[derive(Debug, Default, PartialEq, Eq)]
enum State {
    /// Collecting the head into `line`.
    #[default]
    Head,
    /// Content-Length body bytes left.
    Length(u64),
    /// Collecting a chunk-size line into `line`.
    ChunkSize,
    /// Chunk data bytes left.
    ChunkData(u64),
    /// The CRLF after chunk data: how many of its bytes are still expected.
    ChunkEnd(u8),
    /// Trailer lines after the last chunk, until an empty line.
    Trailer,
    /// A body that ends when the server closes.
    UntilClose,
}

/// An incremental HTTP/1.1 response reader that only finds where responses end.
#[derive(Debug, Default)]
struct Response {
    state: State,
    line: Vec<u8>,
    /// The server said it will close after this response.
    close: bool,
}

impl Response {
    /// Whether the server closing now ends this response properly.
    fn ends_at_close(&self) -> bool {
        self.state == State::UntilClose
    }

    /// Consumes bytes of the response; returns how many were used and whether the response is
    /// complete (bytes after it belong to the next one).
    fn feed(&mut self, data: &[u8]) -> Result<(usize, bool), SessionError> {
        let mut i = 0;
        while let Some(&byte) = data.get(i) {
            match self.state {
                State::Head => {
                    i += 1;
                    if self.push_line_byte(byte)? && self.line.ends_with(b"\r\n\r\n") {
                        let done = self.start_body()?;
                        self.line.clear();
                        if done {
                            return Ok((i, true));
                        }
                    }
                }
                State::Length(left) | State::ChunkData(left) => {
                    let avail = data.len() - i;
                    let n = usize::try_from(left).map_or(avail, |l| l.min(avail));
                    i += n;
                    let left = left - n as u64;
                    match self.state {
                        State::Length(_) if left == 0 => {
                            self.state = State::Head;
                            return Ok((i, true));
                        }
                        State::Length(_) => self.state = State::Length(left),
                        _ if left == 0 => self.state = State::ChunkEnd(2),
                        _ => self.state = State::ChunkData(left),
                    }
                }
                State::ChunkEnd(left) => {
                    i += 1;
                    let expected = if left == 2 { b'\r' } else { b'\n' };
                    if byte != expected {
                        return Err(SessionError);
                    }
                    self.state = if left == 1 {
                        State::ChunkSize
                    } else {
                        State::ChunkEnd(1)
                    };
                }
                State::ChunkSize => {
                    i += 1;
                    if self.push_line_byte(byte)? {
                        let size = chunk_size(&self.line).ok_or(SessionError)?;
                        self.line.clear();
                        self.state = if size == 0 {
                            State::Trailer
                        } else {
                            State::ChunkData(size)
                        };
                    }
                }
                State::Trailer => {
                    i += 1;
                    if self.push_line_byte(byte)? {
                        let last = self.line == b"\r\n";
                        self.line.clear();
                        if last {
                            self.state = State::Head;
                            return Ok((i, true));
                        }
                    }
                }
                State::UntilClose => i = data.len(),
            }
        }
        Ok((i, false))
    }

    /// Appends to `line`; true when the byte ended a line (`\n`). Too long a line is an error.
    fn push_line_byte(&mut self, byte: u8) -> Result<bool, SessionError> {
        if self.line.len() >= MAX_LINE {
            return Err(SessionError);
        }
        self.line.push(byte);
        Ok(byte == b'\n')
    }

    /// Reads the complete head in `line` and picks the body framing. True when the response
    /// has no body (so it is complete already).
    fn start_body(&mut self) -> Result<bool, SessionError> {
        let text = std::str::from_utf8(&self.line).map_err(|_| SessionError)?;
        let mut lines = text.split("\r\n");
        let status_line = lines.next().ok_or(SessionError)?;
        let mut parts = status_line.split(' ');
        let version = parts.next().ok_or(SessionError)?;
        if !version.starts_with("HTTP/1.") {
            return Err(SessionError);
        }
        let status: u16 = parts
            .next()
            .and_then(|s| s.parse().ok())
            .ok_or(SessionError)?;
        let (mut close, mut keep_alive, mut chunked) = (false, false, false);
        let mut length: Option<u64> = None;
        for line in lines.filter(|l| !l.is_empty()) {
            let (name, value) = line.split_once(':').ok_or(SessionError)?;
            let value = value.trim();
            if name.eq_ignore_ascii_case("content-length") {
                length = Some(value.parse().map_err(|_| SessionError)?);
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                chunked = value
                    .rsplit(',')
                    .next()
                    .is_some_and(|last| last.trim().eq_ignore_ascii_case("chunked"));
            } else if name.eq_ignore_ascii_case("connection") {
                for token in value.split(',').map(str::trim) {
                    close |= token.eq_ignore_ascii_case("close");
                    keep_alive |= token.eq_ignore_ascii_case("keep-alive");
                }
            }
        }
        if (100..200).contains(&status) {
            if status == 101 {
                return Err(SessionError); // nothing here asks for an upgrade
            }
            return Ok(false); // interim response: the real head follows
        }
        self.close = close || (version == "HTTP/1.0" && !keep_alive);
        self.state = match (status, chunked, length) {
            (204 | 304, _, _) | (_, false, Some(0)) => return Ok(true),
            (_, true, _) => State::ChunkSize,
            (_, false, Some(length)) => State::Length(length),
            (_, false, None) => {
                self.close = true;
                State::UntilClose
            }
        };
        Ok(false)
    }
}

/// The size in a chunk-size line (`1a2b;ext=1\r\n`).
fn chunk_size(line: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(line).ok()?;
    let text = text.strip_suffix("\r\n")?;
    let hex = text.split(';').next()?.trim();
    if hex.is_empty() || hex.len() > 15 {
        return None;
    }
    u64::from_str_radix(hex, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `data` in pieces of `step` bytes; returns how many responses completed.
    fn completed(data: &[u8], step: usize) -> usize {
        let mut r = Response::default();
        let mut count = 0;
        for piece in data.chunks(step) {
            let mut piece = piece;
            while !piece.is_empty() {
                let (used, done) = r.feed(piece).unwrap();
                piece = &piece[used..];
                if done {
                    count += 1;
                    r = Response::default();
                }
            }
        }
        count
    }

    #[test]
    fn frames_length_and_chunked_in_any_split() {
        let mut data = Vec::new();
        data.extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
        data.extend_from_slice(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello");
        data.extend_from_slice(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
        data.extend_from_slice(b"5;x=y\r\nhello\r\nA\r\n0123456789\r\n0\r\nX-t: 1\r\n\r\n");
        data.extend_from_slice(b"HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n");
        data.extend_from_slice(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n");
        for step in [1, 2, 3, 7, 1000] {
            assert_eq!(completed(&data, step), 4, "step {step}");
        }
    }

    #[test]
    fn close_delimited_and_errors() {
        let mut r = Response::default();
        let (_, done) = r.feed(b"HTTP/1.0 200 OK\r\n\r\nabc").unwrap();
        assert!(!done && r.ends_at_close() && r.close);
        let mut r = Response::default();
        assert!(r.feed(b"garbage\r\n\r\n").is_err());
        let mut r = Response::default();
        let bad_chunk = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabX";
        assert!(r.feed(bad_chunk).is_err());
        assert_eq!(chunk_size(b"ff\r\n"), Some(255));
        assert_eq!(chunk_size(b"zz\r\n"), None);
    }
}
