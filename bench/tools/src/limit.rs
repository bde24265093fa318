//! `limit`: the reference server the benchmark compares Rack servers against, i.e. what this
//! machine can do over loopback with one thread and no application at all. One tokio
//! current_thread runtime; keep-alive HTTP/1.1; every request gets the same answer. By default
//! that is the 12-byte `Hello World`, and all the answers to one read leave in one write (so
//! pipelined requests cost one syscall each way). With `--body-bytes` it is a large body, from
//! memory (what a server writing a Ruby String can do at best) or from a file with sendfile(2)
//! (what a server answering a `to_path` body can do at best). With `--body-from request` each
//! request's body goes back as its answer, written as it arrives (what a server echoing a POST can do at best).
//! With `--tls-cert`/`--tls-key` it speaks TLS through rustls ([`crate::limit_tls`]); with
//! `--threads N`, N such threads accept from the one listener (the limit for a server with N
//! processes, as a cluster has).
//! Runs until killed (SIGTERM/SIGINT default action).

use std::fs::File;
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::fd::AsFd;
use std::sync::Arc;
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::{AsyncReadExt, AsyncWriteExt, Interest};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout;

use crate::{args, Failure};

pub const USAGE: &str = "\
usage: catamount-bench limit [--port N] [--body-bytes N [--body-from memory|file] | --body-from request]
                             [--tls-cert PEM --tls-key PEM] [--threads N]

Serves HTTP/1.1 on 127.0.0.1:N (default 0 = a port the OS chooses) with one thread, backlog
1024 and TCP_NODELAY. Prints exactly one line, `listening on 127.0.0.1:PORT`, then answers
every request with `200 OK` and the body `Hello World\\n` until killed. Keep-alive and
pipelining are supported; request bodies with Content-Length are skipped; `Connection: close`,
a head over 64 KiB, a chunked request body or 65 s of silence close the connection.

--body-bytes N (1 to 1 GiB) answers with N bytes instead, written from one buffer in memory
(--body-from memory, the default) or sent with sendfile(2) from a temporary file filled once at
start (--body-from file).

--body-from request (without --body-bytes) answers each request with its own body (its
Content-Length bytes, none without one): the head is written once the request's head is read,
the body bytes as they arrive.

--tls-cert PEM --tls-key PEM serve TLS (1.2 and 1.3, session tickets, ALPN http/1.1) with that
certificate chain and key: the hello world or a body from memory (not from a file: sendfile
cannot go through TLS; not the echo).

--threads N (1 to 16, default 1) runs N threads, each with its own event loop, accepting from the
same listener.
";

/// The one answer, to every request.
const RESPONSE: &[u8] =
    b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 12\r\n\r\nHello World\n";
/// A request head longer than this closes the connection.
const MAX_HEAD: usize = 64 * 1024;
/// A connection silent (or not draining our writes) this long is closed.
pub(crate) const IDLE_TIMEOUT: Duration = Duration::from_secs(65);
const LISTEN_BACKLOG: i32 = 1024;
pub(crate) const READ_BUFFER: usize = 16 * 1024;
const MAX_THREADS: u64 = 16;
const ECHO_READ_BUFFER: usize = 256 * 1024;

pub fn run(argv: &[String]) -> Result<(), Failure> {
    let flags = args::parse(
        argv,
        &[
            "port",
            "body-bytes",
            "body-from",
            "tls-cert",
            "tls-key",
            "threads",
        ],
    )?;
    flags.no_positional()?;
    let port = flags.port("port", Some(0), true)?;
    let echo = flags.string("body-from", "memory") == "request";
    let answer = match flags.number("body-bytes", Some(0), 0, 1 << 30)? {
        0 if echo => Answer::Echo,
        0 => Answer::Hello,
        _ if echo => {
            return Err(args::UsageError(
                "--body-from request takes no --body-bytes (the request says how many)".into(),
            )
            .into())
        }
        bytes => match flags.string("body-from", "memory").as_str() {
            "memory" => Answer::Memory(Arc::new(
                [
                    head_for(bytes),
                    vec![b'x'; usize::try_from(bytes).unwrap_or(0)],
                ]
                .concat(),
            )),
            "file" => Answer::File(Arc::new(BodyFile::create(bytes)?)),
            other => {
                return Err(args::UsageError(format!(
                    "--body-from must be memory, file or request, got {other:?}"
                ))
                .into())
            }
        },
    };
    let tls = match (flags.string("tls-cert", ""), flags.string("tls-key", "")) {
        (cert, key) if cert.is_empty() && key.is_empty() => None,
        (cert, key) if cert.is_empty() || key.is_empty() => {
            return Err(args::UsageError("--tls-cert and --tls-key go together".into()).into())
        }
        _ if matches!(answer, Answer::Echo | Answer::File(_)) => {
            return Err(args::UsageError(
                "over TLS only the hello world and --body-from memory are served".into(),
            )
            .into())
        }
        (cert, key) => Some(crate::limit_tls::config(
            std::path::Path::new(&cert),
            std::path::Path::new(&key),
        )?),
    };
    let threads = flags.number("threads", Some(1), 1, MAX_THREADS)?;
    let listener = bind(port)?;
    announce(&listener)?;
    let serving = Serving { answer, tls };
    for _ in 1..threads {
        let (listener, serving) = (listener.try_clone()?, serving.clone());
        // Serves until the process is killed, as the main thread does.
        std::thread::spawn(move || {
            crate::runtime().and_then(|r| r.block_on(serve(listener, serving)))
        });
    }
    let runtime = crate::runtime()?;
    runtime.block_on(serve(listener, serving))
}

/// What each accepted connection gets: the answer, over TLS when configured.
#[derive(Clone)]
struct Serving {
    answer: Answer,
    tls: Option<Arc<rustls::ServerConfig>>,
}

/// What every request gets.
#[derive(Clone)]
pub(crate) enum Answer {
    /// The 12-byte hello world; the answers to one read are joined into one write.
    Hello,
    /// Each request's body sent back; what one read brings is answered in one write.
    Echo,
    /// Head and body in one buffer, written once per request.
    Memory(Arc<Vec<u8>>),
    /// The head written, then the body sent from the file with sendfile(2).
    File(Arc<BodyFile>),
}

impl Answer {
    /// Sends the answers to `count` requests; for `Hello` and `Echo`, `joined` holds them all.
    async fn send(
        &self,
        stream: &mut TcpStream,
        count: usize,
        joined: &[u8],
    ) -> std::io::Result<()> {
        match self {
            // All of them in one write (for Echo, also the body bytes of a request still coming).
            Answer::Hello | Answer::Echo => stream.write_all(joined).await,
            Answer::Memory(response) => {
                for _ in 0..count {
                    stream.write_all(response).await?;
                }
                Ok(())
            }
            Answer::File(body) => {
                for _ in 0..count {
                    body.send(stream).await?;
                }
                Ok(())
            }
        }
    }
}

fn head_for(bytes: u64) -> Vec<u8> {
    let mut head = Vec::new();
    push_head(&mut head, bytes);
    head
}

/// Appends the head of an answer with a `bytes`-long body.
fn push_head(out: &mut Vec<u8>, bytes: u64) {
    // Writing to a Vec cannot fail.
    let _ = write!(
        out,
        "HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\ncontent-length: {bytes}\r\n\r\n"
    );
}

/// A temporary file of `len` bytes, removed from the directory at once (the open file stays).
pub(crate) struct BodyFile {
    file: File,
    head: Vec<u8>,
    len: u64,
}

impl BodyFile {
    fn create(len: u64) -> Result<BodyFile, Failure> {
        let path =
            std::env::temp_dir().join(format!("catamount-bench-limit-{}.bin", std::process::id()));
        let fail =
            |e: std::io::Error| Failure::Runtime(format!("cannot create {}: {e}", path.display()));
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(fail)?;
        let _ = std::fs::remove_file(&path);
        let chunk = vec![b'f'; 1 << 20];
        let mut left = len;
        while left > 0 {
            let n = usize::try_from(left.min(chunk.len() as u64)).unwrap_or(chunk.len());
            file.write_all(chunk.get(..n).unwrap_or_default())
                .map_err(fail)?;
            left -= n as u64;
        }
        Ok(BodyFile {
            file,
            head: head_for(len),
            len,
        })
    }

    /// Writes the head, then the whole file with sendfile(2), waiting for the socket as needed.
    async fn send(&self, stream: &mut TcpStream) -> std::io::Result<()> {
        stream.write_all(&self.head).await?;
        let mut offset = 0u64;
        while offset < self.len {
            let want = usize::try_from(self.len - offset).unwrap_or(usize::MAX);
            let sent = stream
                .async_io(Interest::WRITABLE, || {
                    rustix::fs::sendfile(stream.as_fd(), &self.file, Some(&mut offset), want)
                        .map_err(std::io::Error::from)
                })
                .await?;
            if sent == 0 {
                return Err(std::io::ErrorKind::WriteZero.into());
            }
        }
        Ok(())
    }
}

/// Binds 127.0.0.1:port with the backlog we want (std's `TcpListener::bind` uses 128).
fn bind(port: u16) -> Result<std::net::TcpListener, Failure> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let bind_error = |e: std::io::Error| Failure::Runtime(format!("cannot listen on {addr}: {e}"));
    let socket =
        Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).map_err(bind_error)?;
    socket.set_reuse_address(true).map_err(bind_error)?;
    socket.bind(&addr.into()).map_err(bind_error)?;
    socket.listen(LISTEN_BACKLOG).map_err(bind_error)?;
    socket.set_nonblocking(true).map_err(bind_error)?;
    Ok(socket.into())
}

/// Prints the one line saying where the server listens.
fn announce(listener: &std::net::TcpListener) -> Result<(), Failure> {
    let port = listener.local_addr()?.port();
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "listening on 127.0.0.1:{port}")?;
    stdout.flush()?;
    Ok(())
}

/// Accepts until the process is killed.
async fn serve(listener: std::net::TcpListener, serving: Serving) -> Result<(), Failure> {
    let listener = TcpListener::from_std(listener)?;
    loop {
        match listener.accept().await {
            Ok((stream, _)) => match &serving.tls {
                Some(config) => {
                    let answer = serving.answer.clone();
                    tokio::spawn(crate::limit_tls::connection(stream, config.clone(), answer));
                }
                None => {
                    tokio::spawn(connection(stream, serving.answer.clone()));
                }
            },
            // Out of descriptors or a connection reset before accept: back off briefly.
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
}

/// One client connection: read, answer every complete request in the read.
async fn connection(mut stream: TcpStream, answer: Answer) {
    if stream.set_nodelay(true).is_err() {
        return;
    }
    let echo = matches!(answer, Answer::Echo);
    let mut requests = Requests {
        echo,
        ..Requests::default()
    };
    // Echoed bodies are large: one read takes as much of one as the socket holds.
    let mut buf = vec![0u8; if echo { ECHO_READ_BUFFER } else { READ_BUFFER }];
    let mut out = Vec::with_capacity(RESPONSE.len() * 4);
    loop {
        let n = match timeout(IDLE_TIMEOUT, stream.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => n,
            _ => return, // EOF, error or idle too long
        };
        out.clear();
        let (count, next) = requests.feed(buf.get(..n).unwrap_or_default(), &mut out);
        let answered = timeout(IDLE_TIMEOUT, answer.send(&mut stream, count, &out)).await;
        if !matches!(answered, Ok(Ok(()))) {
            return;
        }
        if next == Next::Close {
            let _ = timeout(Duration::from_secs(1), stream.shutdown()).await;
            return;
        }
    }
}

/// What the connection does after a read has been answered.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Next {
    KeepOpen,
    Close,
}

/// The request stream of one connection, fed read by read: finds each head's end (across reads,
/// several per read), skips Content-Length bodies (or, with `echo`, copies them out), and
/// appends the answers: the hello world per request, or for `echo` a head per request and the
/// body bytes as they come.
#[derive(Default)]
pub(crate) struct Requests {
    /// Answer each request with its own body instead of the hello world.
    echo: bool,
    /// The request whose body is being read asked to close the connection after it.
    close_after_body: bool,
    /// Bytes of an unfinished head carried over from earlier reads.
    pending: Vec<u8>,
    /// How many bytes of `pending` are known not to contain the head's end.
    scanned: usize,
    /// Body bytes still to be skipped.
    skip: u64,
}

impl Requests {
    /// Takes one read; returns how many requests' heads it completed and what to do next.
    pub(crate) fn feed(&mut self, data: &[u8], out: &mut Vec<u8>) -> (usize, Next) {
        self.pending.extend_from_slice(data);
        let (consumed, count, next) = self.process(out);
        self.pending.drain(..consumed);
        (count, next)
    }

    /// Handles what `pending` holds; returns how many bytes were used up, how many request heads
    /// were answered and what to do next.
    fn process(&mut self, out: &mut Vec<u8>) -> (usize, usize, Next) {
        let mut pos = 0;
        let mut count = 0;
        loop {
            let rest = self.pending.get(pos..).unwrap_or_default();
            if self.skip > 0 {
                let n = usize::try_from(self.skip).map_or(rest.len(), |s| s.min(rest.len()));
                if self.echo {
                    out.extend_from_slice(rest.get(..n).unwrap_or_default());
                }
                pos += n;
                self.skip -= n as u64;
                if self.skip > 0 {
                    return (pos, count, Next::KeepOpen);
                }
                if self.close_after_body {
                    return (pos, count, Next::Close);
                }
                continue;
            }
            // Empty lines before a request line are allowed (RFC 9112 section 2.2).
            if self.scanned == 0 && rest.starts_with(b"\r\n") {
                pos += 2;
                continue;
            }
            let Some(end) = find_head_end(rest, self.scanned.saturating_sub(3)) else {
                if rest.len() > MAX_HEAD {
                    return (pos, count, Next::Close);
                }
                self.scanned = rest.len();
                return (pos, count, Next::KeepOpen);
            };
            self.scanned = 0;
            if end > MAX_HEAD {
                return (pos, count, Next::Close);
            }
            let Some(head) = rest.get(..end).and_then(Head::parse) else {
                return (pos, count, Next::Close);
            };
            if head.chunked {
                // Skipping a chunked body would need a decoder; this server does not take one.
                return (pos, count, Next::Close);
            }
            if self.echo {
                push_head(out, head.content_length);
            } else {
                out.extend_from_slice(RESPONSE);
            }
            count += 1;
            pos += end;
            self.skip = head.content_length;
            if head.close {
                if self.skip == 0 || !self.echo {
                    return (pos, count, Next::Close);
                }
                self.close_after_body = true;
            }
        }
    }
}

/// The index just past the `\r\n\r\n` ending a head, searching from `from`.
fn find_head_end(buf: &[u8], from: usize) -> Option<usize> {
    let tail = buf.get(from..)?;
    tail.windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| from + i + 4)
}

/// The little this server needs to know about a request head.
#[derive(Debug, PartialEq, Eq)]
struct Head {
    content_length: u64,
    chunked: bool,
    close: bool,
}

impl Head {
    /// Reads the request line's version and the framing/persistence headers. `None` for a head
    /// this server will not answer (unreadable or conflicting Content-Length).
    fn parse(head: &[u8]) -> Option<Head> {
        let text = std::str::from_utf8(head).ok()?;
        let mut lines = text.split("\r\n");
        let request_line = lines.next()?;
        let http10 = request_line.ends_with("HTTP/1.0");
        let (mut close, mut keep_alive) = (false, false);
        let mut content_length: Option<u64> = None;
        let mut chunked = false;
        for line in lines.filter(|l| !l.is_empty()) {
            let (name, value) = line.split_once(':')?;
            let value = value.trim();
            if name.eq_ignore_ascii_case("content-length") {
                let n: u64 = value.parse().ok()?;
                if content_length.is_some_and(|c| c != n) {
                    return None;
                }
                content_length = Some(n);
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                chunked = true;
            } else if name.eq_ignore_ascii_case("connection") {
                for token in value.split(',').map(str::trim) {
                    close |= token.eq_ignore_ascii_case("close");
                    keep_alive |= token.eq_ignore_ascii_case("keep-alive");
                }
            }
        }
        Some(Head {
            content_length: content_length.unwrap_or(0),
            chunked,
            close: close || (http10 && !keep_alive),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed_all(reqs: &mut Requests, data: &[u8]) -> (usize, Next) {
        let mut out = Vec::new();
        let (count, next) = reqs.feed(data, &mut out);
        assert_eq!(out, RESPONSE.repeat(count));
        (count, next)
    }

    /// Feeds one read to an echoing stream; returns what it answers, as text, and what is next.
    fn echo(reqs: &mut Requests, data: &[u8]) -> (String, usize, Next) {
        let mut out = Vec::new();
        let (count, next) = reqs.feed(data, &mut out);
        (String::from_utf8(out).unwrap_or_default(), count, next)
    }

    const ECHO_HEAD: &str =
        "HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\ncontent-length: ";

    #[test]
    fn echo_sends_each_body_back_as_it_arrives() {
        let mut r = Requests {
            echo: true,
            ..Requests::default()
        };
        // Each read, in order, and what it is answered with.
        let reads: [(&[u8], String, usize, Next); 4] = [
            (
                b"POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\nhello",
                format!("{ECHO_HEAD}10\r\n\r\nhello"),
                1,
                Next::KeepOpen,
            ),
            (
                b"worldGET / HTTP/1.1\r\n\r\nPOST / HTTP/1.1\r\nContent-Length: 2\r\n",
                format!("world{ECHO_HEAD}0\r\n\r\n"),
                1,
                Next::KeepOpen,
            ),
            (
                b"Connection: close\r\n\r\no",
                format!("{ECHO_HEAD}2\r\n\r\no"),
                1,
                Next::KeepOpen,
            ),
            // Closes after the body.
            (b"kGET / HTTP/1.1\r\n\r\n", "k".to_owned(), 0, Next::Close),
        ];
        for (i, (data, out, count, next)) in reads.into_iter().enumerate() {
            assert_eq!(echo(&mut r, data), (out, count, next), "read {i}");
        }
    }

    #[test]
    fn pipelined_split_and_bodies() {
        let mut r = Requests::default();
        let two = b"GET / HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n";
        assert_eq!(feed_all(&mut r, two), (2, Next::KeepOpen));
        assert_eq!(
            feed_all(&mut r, b"GET / HTTP/1.1\r\nHo"),
            (0, Next::KeepOpen)
        );
        assert_eq!(feed_all(&mut r, b"st: x\r\n\r"), (0, Next::KeepOpen));
        assert_eq!(feed_all(&mut r, b"\n"), (1, Next::KeepOpen));
        let post = b"POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\nhello";
        assert_eq!(feed_all(&mut r, post), (1, Next::KeepOpen));
        assert_eq!(
            feed_all(&mut r, b"worldGET / HTTP/1.1\r\n\r\n"),
            (1, Next::KeepOpen)
        );
        assert!(r.pending.is_empty());
        let close = b"GET / HTTP/1.1\r\nConnection: close\r\n\r\nGET / HTTP/1.1\r\n\r\n";
        assert_eq!(feed_all(&mut r, close), (1, Next::Close));
    }

    #[test]
    fn closes_on_what_it_does_not_take() {
        let mut r = Requests::default();
        assert_eq!(
            feed_all(&mut r, &vec![b'a'; MAX_HEAD + 1]),
            (0, Next::Close)
        );
        let mut r = Requests::default();
        let chunked = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(feed_all(&mut r, chunked), (0, Next::Close));
        let mut r = Requests::default();
        let bad = b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n";
        assert_eq!(feed_all(&mut r, bad), (0, Next::Close));
        let mut r = Requests::default();
        assert_eq!(
            feed_all(&mut r, b"GET / HTTP/1.0\r\n\r\n"),
            (1, Next::Close)
        );
        let mut r = Requests::default();
        let ka = b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n";
        assert_eq!(feed_all(&mut r, ka), (1, Next::KeepOpen));
    }
}
