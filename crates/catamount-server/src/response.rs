//! Writing a response from a pool thread without ever blocking it on a slow client.
//!
//! The pool thread writes straight to the socket while the kernel takes the bytes (the common
//! case: one non-blocking write for a small response, no hop to another thread). The moment the
//! socket would block, everything left, and everything after it, goes to the reactor in order,
//! and the pool thread is free for the next request. A slow reader therefore costs buffered bytes
//! instead of a Ruby thread (Puma blocks the thread here): bytes in memory up to the bounds
//! below, then bytes in a spill file up to its own bound; past that it costs the thread too, as
//! in Puma. One more case goes to the reactor at once:
//! the small response of a slow request while others wait for a thread
//! ([`Responder::write_whole`]).
//!
//! Files are handed over as they are (sent with sendfile from the reactor). Bytes in memory are
//! bounded per connection and for the whole process (`hand_over.rs`): a piece past a bound goes
//! to the response's spill file instead, and once the spill files are full (or failing) the
//! producer stops and waits for its client ([`Responder::over_budget`],
//! [`Responder::wait_for_client`], without the GVL), because memory and disk are the only other
//! things a slow reader could exhaust. An
//! Array body is handed over in pieces, the bounds checked before each
//! ([`Responder::write_parts_from`]).

use std::collections::VecDeque;
use std::fs::File;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::deferred_wakes::ReactorTask;
use crate::dispatch::{Running, Waiter};
use crate::hand_over::{Bounds, HandedOver, SpillFile, SpillRefused, Wake, PIECE};
use crate::log;
use crate::metrics::Metrics;
use crate::overdue::{Answer, Overdue};
use crate::stream::Stream;

/// What the pool thread hands to the reactor once the socket stopped taking bytes.
#[derive(Debug)]
pub(crate) enum Outgoing {
    Data(Vec<u8>),
    File {
        file: File,
        offset: u64,
        len: u64,
    },
    /// Bytes past the memory bounds, in the response's spill file (`hand_over.rs`).
    Spilled {
        spill: Arc<SpillFile>,
        offset: u64,
        len: u64,
    },
}

impl Outgoing {
    /// The file and the part of it to send, for a file or a piece of a spill file.
    pub(crate) fn file(&self) -> Option<(&File, u64, u64)> {
        match self {
            Outgoing::Data(_) => None,
            Outgoing::File { file, offset, len } => Some((file, *offset, *len)),
            Outgoing::Spilled { spill, offset, len } => Some((&spill.file, *offset, *len)),
        }
    }

    /// The memory it holds, as the hand-over bounds count it: a buffer's capacity (a file's
    /// bytes are read by the kernel as they are sent; a spill file's count on their own).
    pub(crate) fn held(&self) -> u64 {
        match self {
            Outgoing::Data(data) => data.capacity() as u64,
            Outgoing::File { .. } | Outgoing::Spilled { .. } => 0,
        }
    }
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
    /// The app takes the connection (`rack.hijack`): give it the bytes read ahead
    /// ([`Exchange::hijack_ready`]) and forget the connection without closing it (a TLS
    /// connection: relay it, `reactor/relay.rs`).
    Hijack,
    /// Nothing yet: wait for [`Exchange::changed`] (or the socket).
    Pending,
}

/// Where a hijack stands between the pool thread that asked and the reactor.
#[derive(Debug, Default)]
enum HijackState {
    #[default]
    None,
    /// Asked for: the reactor stops reading and hands over what it read ahead.
    Asked,
    /// The reactor let go (or could not).
    Ready(io::Result<TakenOver>),
    /// Done: the pool thread took the bytes.
    Taken,
}

/// What the reactor gives the app's side when it lets go of a connection.
#[derive(Debug)]
pub(crate) struct TakenOver {
    /// The bytes the client sent after the request that the reactor had read already.
    pub(crate) early: Vec<u8>,
    /// A TLS connection: the app's end of the socket pair the reactor relays through (the app
    /// cannot continue the TLS session on the raw socket).
    pub(crate) relayed: Option<std::os::fd::OwnedFd>,
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
    /// The server's counters (bytes written, statuses, durations), for this connection's
    /// responders.
    pub(crate) metrics: Arc<Metrics>,
    /// Wakes the reactor task.
    changed: Notify,
    /// Wakes a pool thread waiting for a slow client to drain (see [`Responder::wait_for_client`]).
    drained: Condvar,
    /// The current response is an open-ended stream (no length: chunked or close-delimited)
    /// that began to go out: a stop's drain time applies to it.
    streaming: AtomicBool,
    /// Who answers the current request, its app or `request_timeout` (`overdue.rs`).
    pub(crate) answer: Answer,
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
    /// It is on the process-wide list of threads woken when the total falls.
    registered: bool,
    /// The connection is gone: hand-overs fail, waits end.
    gone: bool,
    hijack: HijackState,
}

impl Exchange {
    pub(crate) fn new(handed_over: Arc<HandedOver>, metrics: Arc<Metrics>) -> Exchange {
        Exchange {
            state: Mutex::default(),
            handed_over,
            metrics,
            changed: Notify::new(),
            drained: Condvar::new(),
            streaming: AtomicBool::new(false),
            answer: Answer::default(),
        }
    }

    /// Forgets what is queued (nothing of it will be written). The caller drops what this
    /// returns once it let go of the lock: the count leaves the process-wide one, and a spill
    /// file's release may wake threads (which takes their connections' locks, maybe this one).
    #[must_use]
    fn drop_queued(st: &mut ExchangeState) -> Dropped {
        Dropped {
            items: std::mem::take(&mut st.outgoing),
            bytes: std::mem::take(&mut st.queued),
        }
    }

    /// Whether the current response is an open-ended stream being written
    /// ([`Responder::mark_streaming`]).
    pub(crate) fn streaming(&self) -> bool {
        self.streaming.load(Ordering::Relaxed)
    }

    fn lock(&self) -> MutexGuard<'_, ExchangeState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts a new request on this connection.
    pub(crate) fn begin(&self) {
        self.streaming.store(false, Ordering::Relaxed);
        self.answer.begin();
        let mut st = self.lock();
        // Nothing is queued in the common case: no shared count to touch.
        let dropped =
            (st.queued != 0 || !st.outgoing.is_empty()).then(|| Self::drop_queued(&mut st));
        st.ending = None;
        st.reactor_listening = false;
        st.hijack = HijackState::None;
        drop(st);
        if let Some(dropped) = dropped {
            dropped.release(&self.handed_over);
        }
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
        if matches!(st.hijack, HijackState::Asked) {
            return Step::Hijack;
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
        if st.pool_waiting {
            self.drained.notify_all();
        }
        drop(st);
        self.handed_over.sub(n);
    }

    /// The connection is finished; nothing queued will be written.
    pub(crate) fn close(&self) {
        let mut st = self.lock();
        st.gone = true;
        let dropped = Self::drop_queued(&mut st);
        self.drained.notify_all();
        drop(st);
        dropped.release(&self.handed_over);
    }

    /// The reactor's answer to [`Step::Hijack`]: what it read past the request (and, for TLS,
    /// the app's end of the relay), or why it could not let go. From here on the reactor
    /// neither reads nor writes the connection (a TLS one only through the relay).
    pub(crate) fn hijack_ready(&self, taken: io::Result<TakenOver>) {
        let mut st = self.lock();
        st.hijack = HijackState::Ready(taken);
        self.drained.notify_all();
    }

    /// Asks the reactor to let go of the connection and waits (on `drained`, as
    /// [`wait_for_client`](Self::wait_for_client)) for the bytes it read ahead. What was handed
    /// over before (103 Early Hints) is written first. Fails when the connection is gone or
    /// `waiter` is interrupted (then the caller may ask again).
    fn hijack(&self, waiter: &Waiter) -> io::Result<TakenOver> {
        let mut st = self.lock();
        if matches!(st.hijack, HijackState::None) {
            st.hijack = HijackState::Asked;
            self.changed.notify_one();
        }
        loop {
            if let HijackState::Ready(taken) = std::mem::take(&mut st.hijack) {
                st.hijack = HijackState::Taken;
                return taken;
            }
            st.hijack = HijackState::Asked;
            if st.gone {
                return Err(io::ErrorKind::NotConnected.into());
            }
            if waiter.is_interrupted() {
                return Err(io::ErrorKind::Interrupted.into());
            }
            st.pool_waiting = true;
            // The timeout bounds how late an interrupt is noticed; the condvar does the work.
            let (guard, _) = self
                .drained
                .wait_timeout(st, Duration::from_millis(50))
                .unwrap_or_else(|p| p.into_inner());
            st = guard;
            st.pool_waiting = false;
        }
    }

    /// [`Responder::wait_for_client`]'s wait, on this connection's record. With `may_spill`,
    /// room in the spill files ends it too.
    fn wait_for_client(this: &Arc<Exchange>, bounds: Bounds, may_spill: bool, waiter: &Waiter) {
        let handed_over = &this.handed_over;
        let done =
            |st: &ExchangeState| this.caught_up(st, bounds, may_spill) || waiter.is_interrupted();
        let mut st = this.lock();
        while !done(&st) {
            if (st.queued <= bounds.per_connection / 2 || may_spill) && !st.registered {
                // Only a total holds this thread: any connection's release may end the wait,
                // so ask to be woken by the next one, and check again (one may have come
                // between the check and the registration).
                let me: Arc<dyn Wake> = this.clone();
                handed_over.register(Arc::downgrade(&me));
                st.registered = true;
                if done(&st) {
                    break;
                }
            }
            st.pool_waiting = true;
            // The timeout bounds how late an interrupt is noticed; the condvar does the real work.
            let (guard, _) = this
                .drained
                .wait_timeout(st, Duration::from_millis(50))
                .unwrap_or_else(|p| p.into_inner());
            st = guard;
        }
        st.pool_waiting = false;
    }

    /// Whether a producer waiting for its client may go on.
    fn caught_up(&self, st: &ExchangeState, bounds: Bounds, may_spill: bool) -> bool {
        bounds.may_resume(st.queued, self.handed_over.now())
            || (may_spill && self.handed_over.spill_room())
            || st.gone
    }

    pub(crate) fn hand_over(&self, item: Outgoing) -> io::Result<()> {
        self.hand_over_quietly(item)?;
        self.wake_reactor();
        Ok(())
    }

    /// [`hand_over`](Self::hand_over) without waking the reactor: the caller wakes it
    /// ([`ReactorTask::wake_reactor`]), now or on the reactor's next turn.
    fn hand_over_quietly(&self, item: Outgoing) -> io::Result<()> {
        let mut st = self.lock();
        if st.gone {
            return Err(io::ErrorKind::BrokenPipe.into());
        }
        let bytes = match (st.outgoing.back_mut(), item) {
            // Small streamed parts queued behind a slow client join the last piece: the bounds
            // count capacities, and thousands of tiny buffers would hold far more than that.
            (Some(Outgoing::Data(last)), Outgoing::Data(data))
                if last.len() + data.len() <= PIECE =>
            {
                let before = last.capacity();
                let needed = last.len() + data.len();
                if needed > before {
                    last.reserve_exact(before.saturating_mul(2).clamp(needed, PIECE) - last.len());
                }
                last.extend_from_slice(&data);
                (last.capacity() - before) as u64
            }
            // The next piece of the same spill file, right after the last one queued: one
            // queued item (and one file descriptor) however many pieces a slow client waits for.
            (
                Some(Outgoing::Spilled {
                    spill: last,
                    offset: last_offset,
                    len: last_len,
                }),
                Outgoing::Spilled { spill, offset, len },
            ) if Arc::ptr_eq(last, &spill) && *last_offset + *last_len == offset => {
                *last_len += len;
                0
            }
            (_, item) => {
                let bytes = item.held();
                st.outgoing.push_back(item);
                bytes
            }
        };
        st.queued += bytes;
        self.handed_over.add(bytes);
        Ok(())
    }

    pub(crate) fn end(&self, ending: Ending, handed_off: bool) {
        if self.end_quietly(ending, handed_off) {
            self.wake_reactor();
        }
    }

    /// [`end`](Self::end) without waking the reactor; true when it must be woken.
    fn end_quietly(&self, ending: Ending, handed_off: bool) -> bool {
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
        wake
    }
}

impl ReactorTask for Exchange {
    /// Wakes the connection's reactor task to look at what was recorded here.
    fn wake_reactor(&self) {
        self.changed.notify_one();
    }
}

impl Wake for Exchange {
    fn wake(&self) {
        // Under the lock: the waiting thread is either before its check (and will see the new
        // count) or in its wait (and gets this).
        let mut st = self.lock();
        st.registered = false;
        self.drained.notify_all();
    }
}

/// What every responder of one server reads: the stop flag and the write settings from
/// `ServerConfig` (`reactor_writes_after`, `max_buffered_response`, `max_buffered_total`). Made
/// once per server; each responder holds a pointer to it.
#[derive(Debug)]
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
    server: Arc<Responding>,
    exchange: Arc<Exchange>,
    /// Held from the moment a pool thread took the request: it counts as running until this
    /// responder is dropped.
    running: Option<Running>,
    /// Once anything was handed over, everything after it must be too, to keep the order.
    handed_off: bool,
    keep_alive_wanted: bool,
    finished: bool,
    /// When the request was read in full (`request_duration` runs from there).
    read_at: Instant,
    /// The status of the head about to be written ([`set_status`](Self::set_status)), counted
    /// by the first write after it; 0 when none is pending.
    status: u16,
    /// Counted in `Metrics::streams_open` ([`mark_streaming`](Self::mark_streaming)).
    counted_stream: bool,
    /// This request's generation in the exchange's `answer` (`overdue.rs`).
    generation: u64,
    /// The answer is this response's (its first write claimed it).
    claimed: bool,
    /// This response's file for bytes past the memory bounds, once it has one.
    spill: Option<Arc<SpillFile>>,
    /// Spilling failed for this response (disk full, ...): it waits for its client instead.
    spill_failed: bool,
    /// [`write_whole`](Self::write_whole) left this response to the reactor while others
    /// waited: its wakes may wait for the reactor's next turn (`deferred_wakes.rs`).
    defer_wakes: bool,
}

impl Responder {
    pub(crate) fn new(
        stream: Arc<Stream>,
        server: Arc<Responding>,
        exchange: Arc<Exchange>,
        keep_alive_wanted: bool,
        read_at: Instant,
    ) -> Responder {
        let generation = exchange.answer.generation();
        Responder {
            generation,
            claimed: false,
            stream,
            server,
            exchange,
            running: None,
            handed_off: false,
            keep_alive_wanted,
            finished: false,
            read_at,
            status: 0,
            counted_stream: false,
            spill: None,
            spill_failed: false,
            defer_wakes: false,
        }
    }

    /// The next write begins a response head with this status: it is counted in the stats
    /// then (a head replaced before anything was written, by a 500, counts once, as the 500).
    /// Interim responses (103 Early Hints) are written without it and not counted.
    pub fn set_status(&mut self, status: u16) {
        self.status = status;
    }

    /// `request_timeout`: the handle that answers this request in its place once it ran out of
    /// time, with `status`, as `version` frames it.
    pub fn overdue(&self, version: catamount_http::Version, status: u16) -> Overdue {
        Overdue {
            exchange: self.exchange.clone(),
            stream: self.stream.clone(),
            generation: self.generation,
            version,
            status,
        }
    }

    /// Whether the server answered this request in its place (`request_timeout`): every
    /// write fails, and nothing the app does reaches the client.
    pub fn is_overdue(&self) -> bool {
        self.exchange.answer.is_overdue(self.generation)
    }

    /// Before anything of this response is written: the answer must still be its own.
    fn claim(&mut self) -> io::Result<()> {
        if self.claimed {
            return Ok(());
        }
        if !self.exchange.answer.claim(self.generation) {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "request_timeout: the server answered this request already",
            ));
        }
        self.claimed = true;
        Ok(())
    }

    /// Counts the pending head's status, once, as a write begins.
    fn head_out(&mut self) {
        if self.status != 0 {
            self.exchange.metrics.response(self.status);
            self.status = 0;
        }
    }

    /// This response is an open-ended stream (its body has no length: SSE, a streaming body
    /// without `content-length`): once a stop began, it is cut at the end of the drain time. A
    /// response of known length is never cut by the drain (only by `write_timeout`, when its
    /// client stops reading): it ends by itself.
    pub fn mark_streaming(&mut self) {
        self.exchange.streaming.store(true, Ordering::Relaxed);
        if !self.counted_stream {
            self.counted_stream = true;
            self.exchange.metrics.stream_began();
        }
    }

    /// Whether this response may leave the connection open: the client asked for it, the server
    /// allows it, this connection has not reached `max_keep_alive`, and the server is not stopping.
    pub fn keep_alive_allowed(&self) -> bool {
        self.keep_alive_wanted && !self.server.stopping.load(Ordering::SeqCst)
    }

    /// The request was taken by a pool thread after waiting `queued` for one: it counts as
    /// running while this responder lives.
    pub(crate) fn count_as_running(&mut self, running: Running, queued: Duration) {
        self.exchange.metrics.queue_time.observe(queued);
        self.running = Some(running);
    }

    /// Writes bytes, directly if the socket takes them now, else through the reactor.
    /// Fails only when the client is gone.
    pub fn write(&mut self, data: &[u8]) -> io::Result<()> {
        if data.is_empty() {
            return Ok(());
        }
        self.claim()?;
        self.head_out();
        if self.handed_off {
            return self.hand_over(Outgoing::Data(data.to_vec()));
        }
        let written = self.write_direct(data)?;
        match data.get(written..) {
            Some(rest) if !rest.is_empty() => self.hand_over(Outgoing::Data(rest.to_vec())),
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
            self.claim()?;
            self.head_out();
            self.defer_wakes = true;
            return self
                .hand_over(Outgoing::Data(data))
                .map(|_| WriteRoute::Reactor);
        }
        self.write_vec(data).map(|_| WriteRoute::Direct)
    }

    /// Like [`write`](Self::write) for an owned buffer: nothing is copied if it must be queued.
    pub fn write_vec(&mut self, mut data: Vec<u8>) -> io::Result<()> {
        if data.is_empty() {
            return Ok(());
        }
        self.claim()?;
        self.head_out();
        if !self.handed_off {
            let written = self.write_direct(&data)?;
            if written == data.len() {
                return Ok(());
            }
            data = unsent(data, written);
        }
        self.hand_over(Outgoing::Data(data))
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
        self.claim()?;
        self.head_out();
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
                        self.exchange.metrics.wrote(n);
                        *sent += n as u64;
                        pass_over(&mut pieces, &mut first, n);
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
            self.flush_direct()?;
        }
        while first < pieces.len() {
            if self.handed_off && self.over_budget() {
                return Ok(false);
            }
            let piece = next_piece(&mut pieces, &mut first);
            let n = piece.len() as u64;
            self.hand_over(Outgoing::Data(piece))?;
            *sent += n;
        }
        Ok(true)
    }

    /// Sends `len` bytes of `file` from `offset` with sendfile(2): directly while the socket
    /// takes them, the rest from the reactor.
    pub fn send_file(&mut self, file: File, mut offset: u64, len: u64) -> io::Result<()> {
        self.claim()?;
        self.head_out();
        let end = offset.saturating_add(len);
        // No sendfile(2) through TLS: the reactor reads and encrypts the file.
        if !self.handed_off && !self.stream.is_tls() {
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
                    Ok(n) => self.exchange.metrics.wrote(n),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
            if offset >= end {
                return Ok(());
            }
        }
        self.hand_over(Outgoing::File {
            file,
            offset,
            len: end - offset,
        })
    }

    /// True when this response has handed over more than a bound allows (this connection's,
    /// or the process's while this client has not read what it was handed: `hand_over.rs`);
    /// the caller should then [`wait_for_client`](Self::wait_for_client) (without the GVL)
    /// before it copies more.
    pub fn over_budget(&self) -> bool {
        self.handed_off && !self.may_spill() && {
            let queued = self.exchange.lock().queued;
            self.bounds()
                .must_wait(queued, self.exchange.handed_over.now())
        }
    }

    /// Whether bytes past the memory bounds may go to this response's spill file now. Never for
    /// an open-ended stream ([`mark_streaming`](Self::mark_streaming)): its producer has no end,
    /// so it would fill the files with bytes its client sees ever later; it gets the client's
    /// pace instead.
    fn may_spill(&self) -> bool {
        !self.spill_failed && !self.counted_stream && self.exchange.handed_over.spill_room()
    }

    /// Blocks until the client has read enough for the bounds (this connection down to half its
    /// bound, and the process under its bound or this client done), the client is gone, or
    /// `waiter` is interrupted.
    pub fn wait_for_client(&self, waiter: &Waiter) {
        let may_spill = !self.spill_failed && !self.counted_stream;
        Exchange::wait_for_client(&self.exchange, self.bounds(), may_spill, waiter);
    }

    /// Whether [`wait_for_client`](Self::wait_for_client) would return at once, for a caller
    /// that waits its own way (the fiber mode: its fiber sleeps, the thread serves others).
    pub fn client_caught_up(&self) -> bool {
        let may_spill = !self.spill_failed && !self.counted_stream;
        let st = self.exchange.lock();
        self.exchange.caught_up(&st, self.bounds(), may_spill)
    }

    /// `rack.hijack`: the app takes the connection. Returns a new descriptor of the socket
    /// (close-on-exec) and the bytes the client already sent after the request, which the app
    /// must read first; the reactor forgets the connection (it neither writes nor closes it, and
    /// it no longer counts as open). A TLS connection's descriptor is instead one end of a
    /// UNIX socket pair the reactor relays through its session (`reactor/relay.rs`; the early
    /// bytes come first on it, none are returned). Nothing must have been written for this
    /// request but 103 Early Hints. On failure (the client is gone, `waiter` interrupted) the
    /// responder is given back unchanged.
    pub fn hijack(mut self, waiter: &Waiter) -> Result<Hijacked, (Responder, io::Error)> {
        use std::os::fd::AsFd;
        if let Err(e) = self.claim() {
            return Err((self, e));
        }
        let dup = if self.stream.is_tls() {
            None
        } else {
            match self.stream.as_fd().try_clone_to_owned() {
                Ok(fd) => Some(fd),
                Err(e) => return Err((self, e)),
            }
        };
        let taken = match self.exchange.hijack(waiter) {
            Ok(taken) => taken,
            Err(e) => return Err((self, e)),
        };
        let relayed = taken.relayed.is_some();
        let Some(fd) = taken.relayed.or(dup) else {
            // The reactor relays every TLS connection it lets go; it cannot be otherwise.
            let why = io::Error::other("a TLS connection was let go without its relay");
            return Err((self, why));
        };
        // Nothing of the response is left to end: the reactor has let go.
        self.finished = true;
        self.exchange.answer.taken(self.generation);
        Ok(Hijacked {
            fd,
            early: taken.early,
            unix: relayed || matches!(*self.stream, Stream::Unix(_)),
            serving: StillServing {
                running: self.running.take(),
                metrics: self.exchange.metrics.clone(),
                read_at: self.read_at,
            },
        })
        // `self` drops here: this side's descriptor of the socket closes with the reactor's,
        // so the app's close alone ends the connection.
    }

    /// The response is complete.
    pub fn finish(mut self, keep_alive: bool) {
        self.finished = true;
        let at = Instant::now();
        self.request_done(at);
        if !self.exchange.answer.finish(self.generation) {
            // The server answered in its place, and ended the exchange.
            return;
        }
        let ending = Ending::Done {
            keep_alive: keep_alive && self.keep_alive_allowed(),
            at,
        };
        if self.exchange.end_quietly(ending, self.handed_off) {
            self.wake_reactor();
        }
    }

    /// Wakes the reactor for what this response recorded in the exchange: at once, or, for a
    /// response [`write_whole`](Self::write_whole) left to the reactor, maybe on the reactor's
    /// next turn (`deferred_wakes.rs`).
    fn wake_reactor(&self) {
        if self.defer_wakes
            && self
                .exchange
                .handed_over
                .deferred
                .defer(self.exchange.clone())
        {
            return;
        }
        self.exchange.wake_reactor();
    }

    /// Counts the request's duration, for a request a pool thread took (one never taken was
    /// not served: it is not in `requests_count` either).
    fn request_done(&self, at: Instant) {
        if self.running.is_some() {
            let took = at.saturating_duration_since(self.read_at);
            self.exchange.metrics.request_duration.observe(took);
        }
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
                Ok(n) => {
                    self.exchange.metrics.wrote(n);
                    off += n;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.flush_direct()?;
        Ok(off)
    }

    /// After direct writes through TLS: records the socket did not take yet sit encrypted in
    /// the session, where only a flush sends them. The reactor is handed an empty write (it
    /// flushes after each) and takes every write after it, in order; left alone, they would
    /// wait for the client's next request, which waits for them.
    fn flush_direct(&mut self) -> io::Result<()> {
        if self.handed_off || self.stream.flush()? {
            return Ok(());
        }
        self.hand_over(Outgoing::Data(Vec::new()))
    }

    fn hand_over(&mut self, item: Outgoing) -> io::Result<()> {
        self.handed_off = true;
        let item = match item {
            Outgoing::Data(data) if self.beyond_memory(data.len()) => self.spill(data),
            item => item,
        };
        self.exchange.hand_over_quietly(item)?;
        self.wake_reactor();
        Ok(())
    }

    /// Whether `n` more bytes in memory would pass a memory bound, and spilling may be tried.
    fn beyond_memory(&self, n: usize) -> bool {
        if n == 0 || !self.may_spill() {
            return false;
        }
        let n = n as u64;
        let queued = self.exchange.lock().queued;
        let bounds = self.bounds();
        queued.saturating_add(n) > bounds.per_connection
            || self.exchange.handed_over.now().saturating_add(n) > bounds.total
    }

    /// Writes `data` to this response's spill file and hands over that piece of the file; if
    /// that cannot be done, hands `data` over in memory (the next [`over_budget`] then says
    /// wait, as it does without spilling).
    ///
    /// [`over_budget`]: Self::over_budget
    fn spill(&mut self, data: Vec<u8>) -> Outgoing {
        let counts = &self.exchange.handed_over;
        match SpillFile::append(&mut self.spill, counts, &data) {
            Ok((spill, offset)) => {
                if counts.spill_worked() {
                    log::error("- Spilling responses for slow clients works again");
                }
                Outgoing::Spilled {
                    spill,
                    offset,
                    len: data.len() as u64,
                }
            }
            Err(SpillRefused::Full) => Outgoing::Data(data),
            Err(SpillRefused::Failed(e)) => {
                self.spill_failed = true;
                if counts.spill_failed() {
                    log::error(&format!(
                        "! Could not spill a response for a slow client to a temporary file ({e}); \
                         threads wait for such clients until it works again"
                    ));
                }
                Outgoing::Data(data)
            }
        }
    }
}

/// What [`Exchange::drop_queued`] took off a connection, to let go of outside its lock.
#[derive(Debug)]
struct Dropped {
    items: VecDeque<Outgoing>,
    bytes: u64,
}

impl Dropped {
    fn release(self, handed_over: &HandedOver) {
        drop(self.items);
        handed_over.sub(self.bytes);
    }
}

/// A connection the app took over (`rack.hijack`, [`Responder::hijack`]).
#[derive(Debug)]
pub struct Hijacked {
    /// The app's descriptor of the socket (of a TLS connection: of its end of the relay).
    pub fd: std::os::fd::OwnedFd,
    /// Bytes the client sent after the request that were read already: the app reads them
    /// before anything from `fd`.
    pub early: Vec<u8>,
    /// A UNIX socket (else TCP); a relayed TLS connection is one.
    pub unix: bool,
    /// Keep until `app.call` returns.
    pub serving: StillServing,
}

/// A hijacked request: it counts as running, and its duration is counted, until this is
/// dropped (when `app.call` returns).
#[derive(Debug)]
pub struct StillServing {
    running: Option<Running>,
    metrics: Arc<Metrics>,
    read_at: Instant,
}

impl Drop for StillServing {
    fn drop(&mut self) {
        // A request handed to the app, not a response: no status is counted.
        if self.running.is_some() {
            let took = self.read_at.elapsed();
            self.metrics.request_duration.observe(took);
        }
    }
}

/// What is left of `data` after its first `written` bytes went out, to be held by the reactor:
/// a small rest is copied into a buffer of its own size, so the memory held (and counted) is
/// what is left, not the whole response's buffer.
fn unsent(mut data: Vec<u8>, written: usize) -> Vec<u8> {
    let rest = data.get(written..).unwrap_or_default();
    if rest.len() < data.capacity() / 2 {
        return rest.to_vec();
    }
    data.drain(..written);
    data
}

/// Copies the next piece for the reactor out of `pieces` (at most [`PIECE`] bytes, in a buffer
/// of exactly its size: each piece holds only what it counts) and passes over it.
fn next_piece(pieces: &mut [&[u8]], first: &mut usize) -> Vec<u8> {
    let remaining: usize = pieces.iter().skip(*first).map(|p| p.len()).sum();
    let mut piece = Vec::with_capacity(PIECE.min(remaining));
    while let Some(from) = pieces.get(*first).copied().filter(|_| piece.len() < PIECE) {
        let take = from.len().min(PIECE - piece.len());
        piece.extend_from_slice(from.get(..take).unwrap_or_default());
        pass_over(pieces, first, take);
    }
    piece
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
            self.request_done(Instant::now());
            if self.exchange.answer.finish(self.generation) {
                self.exchange.end(Ending::Aborted, self.handed_off);
            }
        }
        if self.counted_stream {
            self.exchange.metrics.stream_ended();
        }
        // Then `running` is dropped: the request no longer counts as running.
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_piece_holds_only_what_it_counts() {
        // A 70 KiB body of which 6 KiB are left for the reactor.
        let body = vec![7u8; 70 * 1024];
        let mut pieces: Vec<&[u8]> = vec![&body];
        let mut first = 0;
        pass_over(&mut pieces, &mut first, 64 * 1024);
        let piece = next_piece(&mut pieces, &mut first);
        assert_eq!(piece.len(), 6 * 1024);
        assert_eq!(piece.capacity(), 6 * 1024, "not a 256 KiB allocation");
        assert_eq!(Outgoing::Data(piece).held(), 6 * 1024);
    }

    #[test]
    fn large_rests_go_in_pieces_in_order() {
        let a: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let b: Vec<u8> = (0..100_000u32).map(|i| (i % 13) as u8).collect();
        let mut pieces: Vec<&[u8]> = vec![&a, &b];
        let mut first = 0;
        let mut out = Vec::new();
        while first < pieces.len() {
            let piece = next_piece(&mut pieces, &mut first);
            assert!(piece.len() <= PIECE && piece.capacity() == piece.len());
            out.extend_from_slice(&piece);
        }
        assert_eq!(out, [a, b].concat());
    }

    #[test]
    fn a_small_rest_of_a_big_buffer_is_held_in_its_own_size() {
        let data = vec![1u8; 100_000];
        let rest = unsent(data, 96_000);
        assert_eq!(rest.len(), 4_000);
        assert!(rest.capacity() < 8_000, "held {}", rest.capacity());
        let rest = unsent(vec![2u8; 100_000], 10);
        assert_eq!(rest.len(), 99_990, "a large rest is kept where it is");
    }

    #[test]
    fn small_parts_queued_behind_a_slow_client_join_into_pieces() {
        let handed_over = Arc::new(HandedOver::default());
        let exchange = Exchange::new(handed_over.clone(), Arc::default());
        let mut expected = Vec::new();
        for i in 0..10_000u32 {
            let part = format!("data: {i}\n\n").into_bytes();
            expected.extend_from_slice(&part);
            exchange.hand_over(Outgoing::Data(part)).unwrap();
        }
        let mut out = Vec::new();
        let mut held = 0;
        let mut items = 0;
        while let Step::Write(Outgoing::Data(data)) = exchange.next_step(false) {
            assert!(data.capacity() <= PIECE);
            held += data.capacity() as u64;
            items += 1;
            out.extend_from_slice(&data);
        }
        assert_eq!(out, expected, "in order, nothing lost");
        assert!(items < 10, "{items} buffers for 10000 parts");
        assert_eq!(handed_over.now(), held, "the count is the capacity held");
        exchange.release(held);
        assert_eq!(handed_over.now(), 0);
    }

    #[test]
    fn a_hijack_gets_what_the_reactor_read_ahead_after_what_was_handed_over() {
        let exchange = Arc::new(Exchange::new(Arc::default(), Arc::default()));
        exchange.begin();
        exchange.hand_over(Outgoing::Data(b"103".to_vec())).unwrap();
        let asking = {
            let exchange = exchange.clone();
            std::thread::spawn(move || exchange.hijack(&Waiter::new()))
        };
        // The reactor: what was handed over goes out first, then it lets go.
        assert!(matches!(exchange.next_step(true), Step::Write(Outgoing::Data(d)) if d == b"103"));
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match exchange.next_step(true) {
                Step::Hijack => break,
                Step::Pending => {
                    assert!(Instant::now() < deadline, "the hijack was never asked for");
                    std::thread::yield_now();
                }
                other => panic!("unexpected step {other:?}"),
            }
        }
        exchange.hijack_ready(Ok(TakenOver {
            early: b"early".to_vec(),
            relayed: None,
        }));
        exchange.close();
        assert_eq!(asking.join().unwrap().unwrap().early, b"early");
    }

    #[test]
    fn a_hijack_of_a_connection_gone_fails() {
        let exchange = Exchange::new(Arc::default(), Arc::default());
        exchange.close();
        let err = exchange.hijack(&Waiter::new()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotConnected);
        let interrupted = Exchange::new(Arc::default(), Arc::default());
        let waiter = Waiter::new();
        waiter.set_interrupted();
        let err = interrupted.hijack(&waiter).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::Interrupted);
    }

    #[test]
    fn a_thread_over_the_total_is_woken_by_any_connections_release() {
        let handed_over = Arc::new(HandedOver::default());
        let mine = Arc::new(Exchange::new(handed_over.clone(), Arc::default()));
        let other = Arc::new(Exchange::new(handed_over.clone(), Arc::default()));
        other.hand_over(Outgoing::Data(vec![0; 1000])).unwrap();
        mine.hand_over(Outgoing::Data(vec![0; 10])).unwrap();
        let bounds = Bounds {
            per_connection: 1 << 20,
            total: 500,
        };
        assert!(bounds.must_wait(10, handed_over.now()));
        let waiting = {
            let mine = mine.clone();
            std::thread::spawn(move || {
                Exchange::wait_for_client(&mine, bounds, false, &Waiter::new())
            })
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !mine.lock().pool_waiting {
            assert!(Instant::now() < deadline, "the thread never waited");
            std::thread::yield_now();
        }
        // Only the other connection's client reads.
        other.release(1000);
        waiting.join().unwrap();
        // Woken through the process-wide list (which unregisters it), not by its 50 ms poll.
        assert!(!mine.lock().registered);
    }
}
