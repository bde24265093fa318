//! Writing a response from a pool thread without ever blocking it on a slow client.
//!
//! The pool thread writes straight to the socket while the kernel takes the bytes (the common
//! case: one non-blocking write for a small response, no hop to another thread). The moment the
//! socket would block, everything left, and everything after it, goes to the reactor in order,
//! and the pool thread is free for the next request. A slow reader therefore costs buffered bytes,
//! never a Ruby thread (Puma blocks the thread here). One more case goes to the reactor at once:
//! the small response of a slow request while others wait for a thread
//! ([`Responder::write_whole`]).
//!
//! Files are handed over as they are (sent with sendfile from the reactor). Bytes are bounded
//! per connection and for the whole process (`hand_over.rs`): past a bound the producer stops
//! copying and waits for its client ([`Responder::over_budget`], [`Responder::wait_for_client`],
//! without the GVL), because memory is the only other thing a slow reader could exhaust. An
//! Array body is handed over in pieces, the bounds checked before each
//! ([`Responder::write_parts_from`]).

use std::collections::VecDeque;
use std::fs::File;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::dispatch::{Running, Waiter};
use crate::hand_over::{Bounds, HandedOver, PIECE};
use crate::stream::Stream;

/// What the pool thread hands to the reactor once the socket stopped taking bytes.
#[derive(Debug)]
pub(crate) enum Outgoing {
    Data(Vec<u8>),
    File { file: File, offset: u64, len: u64 },
}

/// Which way [`Responder::write_whole`] sent a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteRoute {
    /// Written by the calling thread (what the socket did not take went to the reactor).
    Direct,
    /// Handed to the reactor whole, for it to write.
    Reactor,
}

/// How a response ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ending {
    /// Complete; keep the connection for the next request or not. `at` starts the idle clock.
    Done { keep_alive: bool, at: Instant },
    /// Not finished (the client left, or the app failed mid-stream): the connection must go.
    Aborted,
}

/// What the reactor should do next for the response in progress.
#[derive(Debug)]
pub(crate) enum Step {
    Write(Outgoing),
    Ended(Ending),
    /// Nothing yet: wait for [`Exchange::changed`] (or the socket).
    Pending,
}

/// One connection's meeting point between the reactor and the pool thread serving its current
/// request. It lives as long as the connection and is reset for every request.
///
/// The common case costs no wake-up at all: the pool thread writes the whole response itself
/// and records the end; the reactor, which meanwhile waits for the client's next bytes, reads
/// the record when they arrive. The reactor is woken only when it has work (bytes handed over),
/// when the connection must close, or when it asked to be told (it is not watching the socket).
#[derive(Debug)]
pub(crate) struct Exchange {
    state: Mutex<ExchangeState>,
    /// The process-wide count this connection's `queued` is part of.
    handed_over: Arc<HandedOver>,
    /// Wakes the reactor task.
    changed: Notify,
    /// Wakes a pool thread waiting for a slow client to drain (see [`Responder::wait_for_client`]).
    drained: Condvar,
}

#[derive(Debug, Default)]
struct ExchangeState {
    outgoing: VecDeque<Outgoing>,
    /// Bytes handed over and not written yet.
    queued: u64,
    ending: Option<Ending>,
    /// The reactor waits for `changed` only (it is not watching the socket): wake it at the end.
    reactor_listening: bool,
    /// A pool thread waits on `drained`.
    pool_waiting: bool,
    /// The connection is gone: hand-overs fail, waits end.
    gone: bool,
}

impl Exchange {
    pub(crate) fn new(handed_over: Arc<HandedOver>) -> Exchange {
        Exchange {
            state: Mutex::default(),
            handed_over,
            changed: Notify::new(),
            drained: Condvar::new(),
        }
    }

    /// Forgets what is queued (nothing of it will be written), keeping the process-wide
    /// count right.
    fn drop_queued(&self, st: &mut ExchangeState) {
        self.handed_over.sub(st.queued);
        st.queued = 0;
    }

    fn lock(&self) -> MutexGuard<'_, ExchangeState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts a new request on this connection.
    pub(crate) fn begin(&self) {
        let mut st = self.lock();
        st.outgoing.clear();
        self.drop_queued(&mut st);
        st.ending = None;
        st.reactor_listening = false;
    }

    /// The next thing to do. With `listen`, a `Pending` answer also asks to be woken at the end.
    pub(crate) fn next_step(&self, listen: bool) -> Step {
        let mut st = self.lock();
        if let Some(item) = st.outgoing.pop_front() {
            return Step::Write(item);
        }
        if let Some(ending) = st.ending {
            return Step::Ended(ending);
        }
        st.reactor_listening = listen;
        Step::Pending
    }

    /// Resolves when the pool thread handed something over or ended a response the reactor
    /// listens for. May resolve spuriously: check [`next_step`](Self::next_step) again.
    pub(crate) async fn changed(&self) {
        self.changed.notified().await
    }

    /// `n` handed-over bytes reached the socket.
    pub(crate) fn release(&self, n: u64) {
        let mut st = self.lock();
        let n = n.min(st.queued);
        st.queued -= n;
        self.handed_over.sub(n);
        if st.pool_waiting {
            self.drained.notify_all();
        }
    }

    /// The connection is finished; nothing queued will be written.
    pub(crate) fn close(&self) {
        let mut st = self.lock();
        st.gone = true;
        st.outgoing.clear();
        self.drop_queued(&mut st);
        self.drained.notify_all();
    }

    fn hand_over(&self, item: Outgoing, bytes: u64) -> io::Result<()> {
        let mut st = self.lock();
        if st.gone {
            return Err(io::ErrorKind::BrokenPipe.into());
        }
        st.outgoing.push_back(item);
        st.queued += bytes;
        self.handed_over.add(bytes);
        drop(st);
        self.changed.notify_one();
        Ok(())
    }

    fn end(&self, ending: Ending, handed_off: bool) {
        let mut st = self.lock();
        st.ending = Some(ending);
        // A kept connection needs no wake while the reactor watches the socket: the client's
        // next request (or its close) wakes it, and it finds the end recorded here.
        let wake = st.reactor_listening
            || handed_off
            || !matches!(
                ending,
                Ending::Done {
                    keep_alive: true,
                    ..
                }
            );
        drop(st);
        if wake {
            self.changed.notify_one();
        }
    }
}

/// What every responder of one server reads: the stop flag and the write settings from
/// `ServerConfig` (`reactor_writes_after`, `max_buffered_response`, `max_buffered_total`).
#[derive(Debug, Clone)]
pub(crate) struct Responding {
    /// Set once a graceful stop began: no more keep-alive.
    pub(crate) stopping: Arc<AtomicBool>,
    pub(crate) reactor_writes_after: Option<Duration>,
    pub(crate) max_buffered_response: u64,
    pub(crate) max_buffered_total: u64,
}

/// The pool thread's end of a connection for one response.
#[derive(Debug)]
pub struct Responder {
    stream: Arc<Stream>,
    server: Responding,
    exchange: Arc<Exchange>,
    /// Held from the moment a pool thread took the request: it counts as running until this
    /// responder is dropped.
    running: Option<Running>,
    /// Once anything was handed over, everything after it must be too, to keep the order.
    handed_off: bool,
    keep_alive_wanted: bool,
    finished: bool,
}

impl Responder {
    pub(crate) fn new(
        stream: Arc<Stream>,
        server: Responding,
        exchange: Arc<Exchange>,
        keep_alive_wanted: bool,
    ) -> Responder {
        Responder {
            stream,
            server,
            exchange,
            running: None,
            handed_off: false,
            keep_alive_wanted,
            finished: false,
        }
    }

    /// Whether this response may leave the connection open: the client asked for it, the server
    /// allows it, this connection has not reached `max_keep_alive`, and the server is not stopping.
    pub fn keep_alive_allowed(&self) -> bool {
        self.keep_alive_wanted && !self.server.stopping.load(Ordering::SeqCst)
    }

    /// The request was taken by a pool thread: it counts as running while this responder lives.
    pub(crate) fn count_as_running(&mut self, running: Running) {
        self.running = Some(running);
    }

    /// Writes bytes, directly if the socket takes them now, else through the reactor.
    /// Fails only when the client is gone.
    pub fn write(&mut self, data: &[u8]) -> io::Result<()> {
        if data.is_empty() {
            return Ok(());
        }
        if self.handed_off {
            return self.hand_over(Outgoing::Data(data.to_vec()), data.len() as u64);
        }
        let written = self.write_direct(data)?;
        match data.get(written..) {
            Some(rest) if !rest.is_empty() => {
                self.hand_over(Outgoing::Data(rest.to_vec()), rest.len() as u64)
            }
            _ => Ok(()),
        }
    }

    /// Writes a whole response held in one buffer (the response's only write, as
    /// [`write_vec`](Self::write_vec)), or hands it to the reactor to write when the pool
    /// thread is the busier side: it has been on this request (env, app, head) for at least
    /// `ServerConfig::reactor_writes_after` since `serving_since`, and other requests wait for
    /// a thread.
    ///
    /// Why: writing a small response to a client on the same machine costs the writing thread
    /// the whole TCP send path and the wake-up of the reader, about a tenth of a 100 µs Sinatra
    /// request (`perf`), and the pool thread pays it holding the GVL every queued request waits
    /// for. The reactor runs on another core and is mostly idle while requests take this long,
    /// so it takes the write and the GVL goes on to the next request. Quick requests are left
    /// alone: there the reactor is the busier side (hello world lost 13% with every response
    /// written by the reactor). With nothing queued the pool thread writes itself too: nothing
    /// waits for it, and the hop to the reactor would only add latency.
    pub fn write_whole(&mut self, data: Vec<u8>, serving_since: Instant) -> io::Result<WriteRoute> {
        let reactor_writes = !self.handed_off
            && !data.is_empty()
            && self
                .server
                .reactor_writes_after
                .is_some_and(|after| serving_since.elapsed() >= after)
            && self.running.as_ref().is_some_and(Running::others_waiting)
            // Not while slow readers hold all the process may hand over.
            && self.exchange.handed_over.now() <= self.server.max_buffered_total;
        if reactor_writes {
            let n = data.len() as u64;
            return self
                .hand_over(Outgoing::Data(data), n)
                .map(|_| WriteRoute::Reactor);
        }
        self.write_vec(data).map(|_| WriteRoute::Direct)
    }

    /// Like [`write`](Self::write) for an owned buffer: nothing is copied if it must be queued.
    pub fn write_vec(&mut self, mut data: Vec<u8>) -> io::Result<()> {
        if data.is_empty() {
            return Ok(());
        }
        if !self.handed_off {
            let written = self.write_direct(&data)?;
            if written == data.len() {
                return Ok(());
            }
            data.drain(..written);
        }
        let n = data.len() as u64;
        self.hand_over(Outgoing::Data(data), n)
    }

    /// Writes `head` then every part with vectored writes, straight from the caller's buffers,
    /// while the socket takes them; what it does not take is copied and handed over in pieces
    /// while the bounds allow. `sent` counts the bytes (of head and parts together) done so
    /// far: start at 0. Returns false when a bound was reached first: wait for the client
    /// ([`wait_for_client`](Self::wait_for_client), without the GVL), then call again with the
    /// same buffers and `sent`.
    pub fn write_parts_from(
        &mut self,
        head: &[u8],
        parts: &[&[u8]],
        sent: &mut u64,
    ) -> io::Result<bool> {
        let mut pieces: Vec<&[u8]> = Vec::with_capacity(parts.len() + 1);
        pieces.extend(
            std::iter::once(head)
                .chain(parts.iter().copied())
                .filter(|p| !p.is_empty()),
        );
        // What is done is passed over: pieces written whole (`first` counts them), and the
        // start of the next one, trimmed off.
        let mut first = 0;
        pass_over(
            &mut pieces,
            &mut first,
            usize::try_from(*sent).unwrap_or(usize::MAX),
        );
        if !self.handed_off {
            while let Some((next, others)) = pieces.get(first..).and_then(<[_]>::split_first) {
                let written = {
                    let mut slices: Vec<io::IoSlice<'_>> = Vec::with_capacity(others.len() + 1);
                    slices.push(io::IoSlice::new(next));
                    slices.extend(others.iter().map(|p| io::IoSlice::new(p)));
                    self.stream.try_write_vectored(&slices)
                };
                match written {
                    Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                    Ok(n) => {
                        *sent += n as u64;
                        pass_over(&mut pieces, &mut first, n);
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
        }
        while first < pieces.len() {
            if self.handed_off && self.over_budget() {
                return Ok(false);
            }
            let mut piece = Vec::with_capacity(PIECE);
            while let Some(from) = pieces.get(first).copied().filter(|_| piece.len() < PIECE) {
                let take = from.len().min(PIECE - piece.len());
                piece.extend_from_slice(from.get(..take).unwrap_or_default());
                pass_over(&mut pieces, &mut first, take);
            }
            let n = piece.len() as u64;
            self.hand_over(Outgoing::Data(piece), n)?;
            *sent += n;
        }
        Ok(true)
    }

    /// Sends `len` bytes of `file` from `offset` with sendfile(2): directly while the socket
    /// takes them, the rest from the reactor.
    pub fn send_file(&mut self, file: File, mut offset: u64, len: u64) -> io::Result<()> {
        let end = offset.saturating_add(len);
        if !self.handed_off {
            while offset < end {
                let want = usize::try_from(end - offset)
                    .unwrap_or(usize::MAX)
                    .min(1 << 30);
                match self.stream.try_sendfile(&file, &mut offset, want) {
                    Ok(0) => {
                        return Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "file shorter than its announced length",
                        ))
                    }
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
            if offset >= end {
                return Ok(());
            }
        }
        self.hand_over(
            Outgoing::File {
                file,
                offset,
                len: end - offset,
            },
            0,
        )
    }

    /// True when this response has handed over more than a bound allows (this connection's,
    /// or the process's while this client has not read what it was handed: `hand_over.rs`);
    /// the caller should then [`wait_for_client`](Self::wait_for_client) (without the GVL)
    /// before it copies more.
    pub fn over_budget(&self) -> bool {
        self.handed_off && {
            let queued = self.exchange.lock().queued;
            self.bounds()
                .must_wait(queued, self.exchange.handed_over.now())
        }
    }

    /// Blocks until the client has read enough for the bounds (this connection down to half its
    /// bound, and the process under its bound or this client done), the client is gone, or
    /// `waiter` is interrupted.
    pub fn wait_for_client(&self, waiter: &Waiter) {
        let bounds = self.bounds();
        let handed_over = &self.exchange.handed_over;
        let mut st = self.exchange.lock();
        while !bounds.may_resume(st.queued, handed_over.now())
            && !st.gone
            && !waiter.is_interrupted()
        {
            st.pool_waiting = true;
            // The timeout bounds how late an interrupt is noticed; the condvar does the real work.
            let (guard, _) = self
                .exchange
                .drained
                .wait_timeout(st, Duration::from_millis(50))
                .unwrap_or_else(|p| p.into_inner());
            st = guard;
        }
        st.pool_waiting = false;
    }

    /// The response is complete.
    pub fn finish(mut self, keep_alive: bool) {
        self.finished = true;
        let ending = Ending::Done {
            keep_alive: keep_alive && self.keep_alive_allowed(),
            at: Instant::now(),
        };
        self.exchange.end(ending, self.handed_off);
    }

    fn bounds(&self) -> Bounds {
        Bounds {
            per_connection: self.server.max_buffered_response,
            total: self.server.max_buffered_total,
        }
    }

    fn write_direct(&mut self, data: &[u8]) -> io::Result<usize> {
        let mut off = 0;
        while let Some(rest) = data.get(off..).filter(|r| !r.is_empty()) {
            match self.stream.try_write(rest) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => off += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(off)
    }

    fn hand_over(&mut self, item: Outgoing, bytes: u64) -> io::Result<()> {
        self.handed_off = true;
        self.exchange.hand_over(item, bytes)
    }
}

/// Passes over `n` bytes of `pieces` from `pieces[*first]` on: pieces done whole are skipped
/// (`*first` moves past them), and the start of the next one is trimmed off.
fn pass_over(pieces: &mut [&[u8]], first: &mut usize, mut n: usize) {
    while let Some(piece) = pieces.get_mut(*first) {
        if n < piece.len() {
            *piece = piece.get(n..).unwrap_or_default();
            return;
        }
        n -= piece.len();
        *first += 1;
    }
}

/// The client socket, for what needs it directly (socket options, `puma.socket`, hijack).
impl std::os::fd::AsFd for Responder {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.stream.as_fd()
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        // A response that was not finished must not be followed by another on the same stream:
        // the reactor drops the connection.
        if !self.finished {
            self.exchange.end(Ending::Aborted, self.handed_off);
        }
        // Then `running` is dropped: the request no longer counts as running.
    }
}
