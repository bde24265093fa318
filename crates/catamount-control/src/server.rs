//! [`ControlServer`]: the control listener and its connections, driven by the caller's loop.
//!
//! Everything is non-blocking and edge-triggered: each `poll` drains accept, read and write
//! until the kernel says `WouldBlock`, so the epoll descriptor polls readable again only when
//! something new happens. One request per connection: the head is read (bounded in size and
//! time), routed, answered (by this server for refusals, by the caller for commands), the write
//! side shut, what the client still sends discarded (bounded), then the connection closed. No
//! connection can delay another: nothing here waits on a socket. On an `ssl://` listener each
//! connection is a TLS session ([`crate::tls`]): the handshake is part of reading the head (same
//! deadline), the answer is followed by close_notify before the write side is shut.

use std::collections::HashMap;
use std::io::{self, Read};
use std::net::Shutdown;
use std::os::fd::{AsRawFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use catamount_http::{HeadParser, Limits, MethodPolicy, RequestHead};
use mio::event::Source;
use mio::net::{TcpStream, UnixStream};
use mio::{Events, Interest, Poll, Token};

use crate::answer;
use crate::command::{Route, Table};
use crate::listen::{self, Bound, ControlError, Listener};
use crate::tls::Session;

/// Bounds on what a client can make the control server hold.
#[derive(Debug, Clone)]
pub struct Settings {
    /// From accept to a complete request head; then again from the answer to its last byte
    /// sent and the client's end of the connection. Default 10 s.
    pub deadline: Duration,
    /// Connections open at once; more are accepted and closed at once. Default 64.
    pub max_connections: usize,
    /// Longest request head, CRLFs counted. Default 8 KiB.
    pub max_head: usize,
    /// Bytes read and discarded after the answer, before the connection is closed anyway.
    /// Default 64 KiB.
    pub max_discard: usize,
    /// Where an `ssl://` URL without `cert` and `key` finds the self-signed development
    /// certificate; `None` (the default, and outside development): such a URL is refused.
    pub development_certificates: Option<PathBuf>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            deadline: Duration::from_secs(10),
            max_connections: 64,
            max_head: 8 * 1024,
            max_discard: 64 * 1024,
            development_certificates: None,
        }
    }
}

const LISTENER: Token = Token(0);
const WAKER: Token = Token(usize::MAX);
/// How soon to retry accepting after an error such as EMFILE (the queue may still hold clients,
/// and edge triggering will not say so again).
const ACCEPT_RETRY: Duration = Duration::from_millis(50);
const READ_CHUNK: usize = 4096;

/// A control connection's socket.
enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
    Tls(TcpStream, Box<Session>),
}

impl Stream {
    fn source(&mut self) -> &mut dyn Source {
        match self {
            Stream::Tcp(s) | Stream::Tls(s, _) => s,
            Stream::Unix(s) => s,
        }
    }

    /// The request's bytes (plaintext over TLS).
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            Stream::Unix(s) => s.read(buf),
            Stream::Tls(s, session) => session.read(s, buf),
        }
    }

    fn sock(&self) -> socket2::SockRef<'_> {
        match self {
            Stream::Tcp(s) | Stream::Tls(s, _) => socket2::SockRef::from(s),
            Stream::Unix(s) => socket2::SockRef::from(s),
        }
    }

    /// Sends `out` from `*sent` on; `Ok(())` once all of it (and over TLS, close_notify) is
    /// sent, `WouldBlock` when the socket is full.
    fn write_out(&mut self, out: &[u8], sent: &mut usize) -> io::Result<()> {
        if let Stream::Tls(s, session) = self {
            return session.write_then_close(s, out, sent);
        }
        while *sent < out.len() {
            match self.send(out.get(*sent..).unwrap_or_default()) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => *sent += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// A write that cannot raise SIGPIPE when the client has gone.
    fn send(&self, buf: &[u8]) -> io::Result<usize> {
        self.sock().send_with_flags(buf, libc::MSG_NOSIGNAL)
    }

    fn shutdown_write(&self) {
        let _ = self.sock().shutdown(Shutdown::Write);
    }
}

enum Phase {
    /// Reading the head.
    Reading {
        buf: Vec<u8>,
        parser: Box<HeadParser>,
    },
    /// Handed to the caller; waits for its `answer` (no deadline: the caller always answers).
    Waiting,
    /// Sending an answer.
    Writing { out: Vec<u8>, sent: usize },
    /// Answer sent and write side shut: reading what the client still sends until it closes,
    /// so closing with unread bytes does not reset the connection under the answer.
    Draining { discarded: usize },
}

struct Conn {
    stream: Stream,
    phase: Phase,
    deadline: Option<Instant>,
}

/// What one connection's step left it wanting.
enum Next {
    /// Nothing more to do until the socket is ready again (or the caller answers).
    Wait,
    Close,
}

/// The control server. See the module documentation.
pub struct ControlServer {
    poll: Poll,
    events: Events,
    /// `None` once stopped.
    listener: Option<Listener>,
    /// Set by `stop`: keeps the descriptor readable from then on.
    waker: Option<mio::Waker>,
    url: String,
    socket_file: Option<PathBuf>,
    /// `ssl://`: every connection is a TLS session served with this.
    tls: Option<Arc<rustls::ServerConfig>>,
    /// The boot's lines about the TLS configuration.
    notes: Vec<String>,
    /// The process that bound it: only it unlinks the socket file.
    owner: u32,
    table: Table,
    limits: Limits,
    settings: Settings,
    conns: HashMap<Token, Conn>,
    /// Never reused, so an event for a closed connection cannot reach a newer one.
    next_token: usize,
    /// Routed commands not yet returned by `poll` (found during `flush`, or the current poll).
    ready: Vec<(u64, &'static str)>,
    retry_accept: bool,
    /// Answers whose connection closed (error or deadline) before they were sent in full.
    answers_cut: u64,
    /// Set by `close_in_child`: dropping must not unlink the owner's socket file.
    keep_file: bool,
}

impl ControlServer {
    /// Binds `url` (see [`listen`]) with the default [`Settings`]. `token`: `None` = no check;
    /// `allowed`: the commands routed to the caller.
    pub fn bind(
        url: &str,
        token: Option<&str>,
        allowed: &[String],
    ) -> Result<ControlServer, ControlError> {
        ControlServer::bind_with(url, token, allowed, Settings::default())
    }

    pub fn bind_with(
        url: &str,
        token: Option<&str>,
        allowed: &[String],
        settings: Settings,
    ) -> Result<ControlServer, ControlError> {
        let Bound {
            mut listener,
            url: resolved,
            socket_file,
            tls,
            notes,
        } = listen::bind(
            url,
            settings.development_certificates.as_deref().map(Path::new),
        )?;
        let fail = |e: io::Error| ControlError {
            url: url.to_string(),
            reason: format!("cannot be polled: {e}"),
        };
        let poll = Poll::new().map_err(fail)?;
        let registered = match &mut listener {
            Listener::Tcp(l) => poll.registry().register(l, LISTENER, Interest::READABLE),
            Listener::Unix(l) => poll.registry().register(l, LISTENER, Interest::READABLE),
        };
        if let Err(e) = registered {
            if let Some(path) = &socket_file {
                let _ = std::fs::remove_file(path);
            }
            return Err(fail(e));
        }
        let limits = Limits {
            max_head: settings.max_head,
            methods: MethodPolicy::Any,
            require_host: false,
            ..Limits::default()
        };
        Ok(ControlServer {
            poll,
            events: Events::with_capacity(256),
            listener: Some(listener),
            waker: None,
            url: resolved,
            socket_file,
            tls,
            notes,
            owner: std::process::id(),
            table: Table::new(token, allowed),
            limits,
            settings,
            conns: HashMap::new(),
            next_token: 1,
            ready: Vec::new(),
            retry_accept: false,
            answers_cut: 0,
            keep_file: false,
        })
    }

    /// The URL clients connect to (`auto` and port 0 resolved).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Lines for the boot's log about an `ssl://` URL's configuration (the development
    /// certificate's path, cipher names rustls does not have); empty otherwise.
    pub fn notes(&self) -> &[String] {
        &self.notes
    }

    /// The epoll descriptor: it polls readable when `poll` has something to do.
    pub fn fd(&self) -> RawFd {
        self.poll.as_raw_fd()
    }

    /// Connections open now (for tests and diagnostics).
    pub fn connections(&self) -> usize {
        self.conns.len()
    }

    /// Answers not yet sent in full.
    pub fn sending(&self) -> usize {
        self.conns
            .values()
            .filter(|c| matches!(c.phase, Phase::Writing { .. }))
            .count()
    }

    /// Does what is ready without blocking; returns the authorized, allowed requests as
    /// (connection id, command). Each must be answered with [`ControlServer::answer`].
    pub fn poll(&mut self) -> Vec<(u64, &'static str)> {
        self.turn(Duration::ZERO);
        std::mem::take(&mut self.ready)
    }

    /// Answers request `id`: sends what the socket takes now, the rest on later polls, then
    /// closes. False when there is no such request waiting (its client is gone, or it was
    /// answered already).
    pub fn answer(&mut self, id: u64, status: u16, content_type: &str, body: &[u8]) -> bool {
        let Ok(token) = usize::try_from(id).map(Token) else {
            return false;
        };
        match self.conns.get(&token) {
            Some(Conn {
                phase: Phase::Waiting,
                ..
            }) => {
                self.start_answer(token, answer::build(status, content_type, body));
                true
            }
            _ => false,
        }
    }

    /// How long the caller's loop may wait before calling `poll` even if the descriptor stays
    /// quiet: until the next connection deadline; zero when work is queued; `None` for no limit.
    pub fn timeout(&self) -> Option<Duration> {
        if !self.ready.is_empty() {
            return Some(Duration::ZERO);
        }
        match (self.next_deadline(), self.retry_accept) {
            (Some(d), true) => Some(d.min(ACCEPT_RETRY)),
            (None, true) => Some(ACCEPT_RETRY),
            (next, false) => next,
        }
    }

    /// Time until the nearest connection deadline.
    fn next_deadline(&self) -> Option<Duration> {
        let now = Instant::now();
        self.conns
            .values()
            .filter_map(|c| c.deadline)
            .min()
            .map(|d| d.saturating_duration_since(now))
    }

    /// Sends pending answers, waiting at most `limit` (before exec or exit, which would cut
    /// them). Requests already returned by `poll` and not answered yet are waited for too (in
    /// single mode another thread may be answering one). True when all of them were sent in
    /// full, none cut by an error or its deadline; the clients' own closes are not waited for.
    /// Requests that arrive meanwhile are kept for the next `poll`.
    pub fn flush(&mut self, limit: Duration) -> bool {
        let end = Instant::now() + limit;
        let cut = self.answers_cut;
        loop {
            if self.unfinished() == 0 {
                return self.answers_cut == cut;
            }
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            // Not `timeout()`: requests queued for the next poll must not make this spin.
            self.turn(self.next_deadline().map_or(left, |d| d.min(left)));
        }
    }

    /// Answers being sent, plus requests handed to the caller and not answered yet.
    fn unfinished(&self) -> usize {
        self.conns
            .iter()
            .filter(|(token, c)| match c.phase {
                Phase::Writing { .. } => true,
                Phase::Waiting => !self.ready.iter().any(|(id, _)| *id == token.0 as u64),
                _ => false,
            })
            .count()
    }

    /// Answers cut by an error or their deadline before they were sent in full, so far.
    pub fn answers_cut(&self) -> u64 {
        self.answers_cut
    }

    /// Stops listening, closes every connection and, in the process that bound it, unlinks the
    /// socket file.
    pub fn close(self) {
        drop(self);
    }

    /// What `close` does, but the epoll descriptor stays open (until this is dropped) and polls
    /// readable from now on: a loop waiting on it (another thread, in single mode) wakes up and
    /// can see the server stopped, instead of waiting on a closed (or reused) descriptor.
    pub fn stop(&mut self) {
        for (_, mut conn) in self.conns.drain() {
            let _ = self.poll.registry().deregister(conn.stream.source());
        }
        self.ready.clear();
        self.retry_accept = false;
        self.listener = None;
        self.unlink_socket_file();
        if self.waker.is_none() {
            // Never read: it stays readable, and so does the descriptor.
            if let Ok(waker) = mio::Waker::new(self.poll.registry(), WAKER) {
                let _ = waker.wake();
                self.waker = Some(waker);
            }
        }
    }

    /// Whether `stop` was called.
    pub fn stopped(&self) -> bool {
        self.listener.is_none()
    }

    /// In a forked child: closes this process's copies of the descriptors. The epoll instance
    /// is shared with the parent, so nothing is deregistered from it, and the socket file is
    /// the parent's.
    pub fn close_in_child(mut self) {
        self.keep_file = true;
        self.conns.clear();
        drop(self);
    }

    /// One round: waits at most `timeout` for events, then handles them and the deadlines.
    fn turn(&mut self, timeout: Duration) {
        let mut tokens = Vec::new();
        // On an error (EINTR and the like) the deadlines below still run; events stay queued.
        if self.poll.poll(&mut self.events, Some(timeout)).is_ok() {
            tokens.extend(self.events.iter().map(|e| e.token()));
        }
        for token in tokens {
            if token == WAKER {
                continue;
            }
            if token == LISTENER {
                self.accept_all();
            } else {
                self.progress(token);
            }
        }
        if self.retry_accept {
            self.accept_all();
        }
        self.expire(Instant::now());
    }

    fn accept_all(&mut self) {
        self.retry_accept = false;
        loop {
            let accepted = match &self.listener {
                Some(Listener::Tcp(l)) => l.accept().map(|(s, _)| Stream::Tcp(s)),
                Some(Listener::Unix(l)) => l.accept().map(|(s, _)| Stream::Unix(s)),
                None => return,
            };
            let mut stream = match accepted {
                Ok(stream) => stream,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e)
                    if e.kind() == io::ErrorKind::Interrupted
                        || e.kind() == io::ErrorKind::ConnectionAborted =>
                {
                    continue
                }
                Err(_) => {
                    self.retry_accept = true;
                    return;
                }
            };
            if self.conns.len() >= self.settings.max_connections {
                continue; // dropped: closed at once
            }
            if let Some(config) = &self.tls {
                stream = match stream {
                    Stream::Tcp(s) => {
                        // The answer and close_notify are small writes in a row.
                        let _ = s.set_nodelay(true);
                        match Session::new(config.clone()) {
                            Ok(session) => Stream::Tls(s, Box::new(session)),
                            Err(_) => continue,
                        }
                    }
                    other => other,
                };
            }
            let token = Token(self.next_token);
            self.next_token += 1;
            // Both interests once, edge-triggered: never re-registered, so a forked child's
            // copy of the epoll instance is never touched from here for this connection.
            let interest = Interest::READABLE | Interest::WRITABLE;
            if self
                .poll
                .registry()
                .register(stream.source(), token, interest)
                .is_err()
            {
                continue;
            }
            let conn = Conn {
                stream,
                phase: Phase::Reading {
                    buf: Vec::new(),
                    parser: Box::default(),
                },
                deadline: Some(Instant::now() + self.settings.deadline),
            };
            self.conns.insert(token, conn);
            // The request may be there already.
            self.progress(token);
        }
    }

    /// Moves a connection on as far as its socket allows.
    fn progress(&mut self, token: Token) {
        let Some(conn) = self.conns.get_mut(&token) else {
            return;
        };
        let next = match &mut conn.phase {
            Phase::Reading { buf, parser } => {
                match read_head(&mut conn.stream, buf, parser, &self.limits) {
                    Head::Pending => Next::Wait,
                    Head::Gone => Next::Close,
                    Head::Bad => {
                        self.start_answer(token, answer::bad_request());
                        return;
                    }
                    Head::Complete(head) => {
                        let route = self.table.route(head.path(), head.query());
                        self.route(token, route);
                        return;
                    }
                }
            }
            Phase::Waiting => Next::Wait,
            Phase::Writing { .. } | Phase::Draining { .. } => self.send_and_drain(token),
        };
        if let Next::Close = next {
            self.close_conn(token);
        }
    }

    fn route(&mut self, token: Token, route: Route) {
        let bytes = match route {
            Route::Command(command) => {
                if let Some(conn) = self.conns.get_mut(&token) {
                    conn.phase = Phase::Waiting;
                    conn.deadline = None;
                    self.ready.push((token.0 as u64, command));
                }
                return;
            }
            Route::Forbidden => answer::forbidden(),
            Route::Unknown => answer::unknown(),
            Route::Unavailable(command) => answer::unavailable(command),
        };
        self.start_answer(token, bytes);
    }

    fn start_answer(&mut self, token: Token, out: Vec<u8>) {
        if let Some(conn) = self.conns.get_mut(&token) {
            conn.phase = Phase::Writing { out, sent: 0 };
            conn.deadline = Some(Instant::now() + self.settings.deadline);
        }
        if let Next::Close = self.send_and_drain(token) {
            self.close_conn(token);
        }
    }

    /// Writing, then draining, as far as the socket allows.
    fn send_and_drain(&mut self, token: Token) -> Next {
        let Some(conn) = self.conns.get_mut(&token) else {
            return Next::Wait;
        };
        if let Phase::Writing { out, sent } = &mut conn.phase {
            match conn.stream.write_out(out, sent) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Next::Wait,
                Err(_) => return Next::Close,
            }
            conn.stream.shutdown_write();
            conn.phase = Phase::Draining { discarded: 0 };
        }
        if let Phase::Draining { discarded } = &mut conn.phase {
            let mut chunk = [0u8; READ_CHUNK];
            loop {
                match conn.stream.read(&mut chunk) {
                    Ok(0) => return Next::Close,
                    Ok(n) => {
                        *discarded += n;
                        if *discarded > self.settings.max_discard {
                            return Next::Close;
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Next::Wait,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => return Next::Close,
                }
            }
        }
        Next::Wait
    }

    /// Connections past their deadline: a partial request gets 408, anything else is closed.
    fn expire(&mut self, now: Instant) {
        let due: Vec<Token> = self
            .conns
            .iter()
            .filter(|(_, c)| c.deadline.is_some_and(|d| d <= now))
            .map(|(t, _)| *t)
            .collect();
        for token in due {
            let partial = matches!(
                self.conns.get(&token),
                Some(Conn { phase: Phase::Reading { buf, .. }, .. }) if !buf.is_empty()
            );
            if partial {
                self.start_answer(token, answer::request_timeout());
            } else {
                self.close_conn(token);
            }
        }
    }

    fn close_conn(&mut self, token: Token) {
        if let Some(mut conn) = self.conns.remove(&token) {
            if let Phase::Writing { .. } = conn.phase {
                self.answers_cut += 1;
            }
            // A forked child may hold a copy of this socket; without this its events would
            // keep arriving here.
            let _ = self.poll.registry().deregister(conn.stream.source());
        }
    }
}

impl ControlServer {
    /// Only in the process that bound it, and only once.
    fn unlink_socket_file(&mut self) {
        if !self.keep_file && self.owner == std::process::id() {
            if let Some(path) = self.socket_file.take() {
                let _ = std::fs::remove_file(path);
            }
        }
    }
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        self.unlink_socket_file();
    }
}

enum Head {
    Pending,
    Gone,
    Bad,
    Complete(Box<RequestHead>),
}

/// Reads until the head is complete, refused, or the socket has nothing more.
fn read_head(
    stream: &mut Stream,
    buf: &mut Vec<u8>,
    parser: &mut HeadParser,
    limits: &Limits,
) -> Head {
    let mut chunk = [0u8; READ_CHUNK];
    loop {
        // One byte past the limit is enough to know the head is too large.
        let room = (limits.max_head + 1)
            .saturating_sub(buf.len())
            .min(READ_CHUNK);
        if room == 0 {
            return Head::Bad;
        }
        match stream.read(chunk.get_mut(..room).unwrap_or_default()) {
            Ok(0) => return Head::Gone,
            Ok(n) => {
                buf.extend_from_slice(chunk.get(..n).unwrap_or_default());
                match parser.parse(buf, limits) {
                    Ok(Some((head, _))) => return Head::Complete(Box::new(head)),
                    Ok(None) => {}
                    Err(_) => return Head::Bad,
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Head::Pending,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return Head::Gone,
        }
    }
}
