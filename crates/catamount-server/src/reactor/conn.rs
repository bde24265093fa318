//! One client connection, from its first byte to its close.
//!
//! The loop per request: read the head (first-data timeout, or the keep-alive timeout while the
//! connection is idle), read the whole body (to memory, or to an unlinked temporary file when it
//! is large or chunked), hand the request to the pool, write whatever the pool thread could not
//! write itself, then either read the next request (bytes already received for it stay in the
//! buffer, so pipelined requests are answered in order) or close.

use std::fs::File;
use std::io::{self, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, BytesMut};
use catamount_http::{
    error_response, BodyFraming, ChunkedDecoder, HeadParser, ParseError, ProxyLine, ProxyVersion,
    RequestHead, Version,
};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant as Deadline;

use super::relay;
use crate::body_buffers::BodyFill;
use crate::log;
use crate::metrics::Metrics;
use crate::request::{Body, Job, Peer, Request};
use crate::response::{Ending, Exchange, Outgoing, Step, TakenOver};
use crate::shared::Shared;
use crate::spill;
use crate::stream::Stream;
use crate::tls_stream::BeforeTls;

/// One read into the connection buffer while a head is awaited takes at most this much. Body
/// bytes that arrive in the same read as their head are copied once more (from here into the
/// body's own buffer, which later reads fill straight from the socket), so this bounds that copy;
/// it still holds any common head, or a hundred pipelined small requests, in one read.
const HEAD_READ: usize = 16 * 1024;
/// One read of body bytes into the connection buffer (a chunked body, or one going to a file)
/// takes at most this much.
const BODY_READ: usize = 64 * 1024;
/// How long a closing connection is drained of unread request bytes before the final close.
const LINGER: Duration = Duration::from_secs(2);
/// How long a stopping server still waits for a request a connection has begun, or for the
/// first request of a connection it accepted.
const STOP_GRACE: Duration = Duration::from_secs(2);
/// A stopping server keeps an idle keep-alive connection open until it has been quiet this
/// long since its last response (see [`last_call`]).
const LAST_CALL: Duration = Duration::from_secs(1);
/// A file sent through TLS is read (and encrypted) this much at a time.
const FILE_PIECE: usize = 64 * 1024;
/// The request line kept for the log line of a response cut at the end of a stop's drain time
/// is cut to this many bytes.
const DESCRIBED_TARGET: usize = 200;
/// While a stop runs, the longest a connection waits before it looks again at the drain
/// deadline (a hot restart may end the drain early) and at whether its response became an
/// open-ended stream (a pool thread's direct writes do not wake the reactor).
const DRAIN_RECHECK: Duration = Duration::from_millis(250);

/// A just-accepted connection counted against the pool's capacity (see
/// `ServerConfig::new_connection_hold`); uncounted once, by whichever comes first: its first
/// request queued, the hold running out, or the connection ending.
pub(super) struct Arrival {
    shared: Arc<Shared>,
    counted: std::sync::atomic::AtomicBool,
}

impl Arrival {
    pub(super) fn new(shared: Arc<Shared>) -> Arrival {
        shared.queue.connection_arriving();
        Arrival {
            shared,
            counted: std::sync::atomic::AtomicBool::new(true),
        }
    }

    pub(super) fn done(&self) {
        if self
            .counted
            .swap(false, std::sync::atomic::Ordering::AcqRel)
        {
            self.shared.queue.connection_arrived();
        }
    }
}

impl Drop for Arrival {
    fn drop(&mut self) {
        self.done();
    }
}

#[allow(clippy::too_many_arguments)]
pub(super) async fn serve(
    stream: Stream,
    peer: Peer,
    local_port: Option<u16>,
    shared: Arc<Shared>,
    stop: watch::Receiver<bool>,
    _alive: mpsc::Sender<()>,
    arrival: Option<Arc<Arrival>>,
) {
    let exchange = Arc::new(Exchange::new(
        shared.handed_over.clone(),
        shared.metrics.clone(),
    ));
    // Uncounted when `conn` is dropped.
    shared.metrics.connection_opened();
    // Dropping `conn` (at the end, or while a panic unwinds this task) closes the exchange and
    // uncounts the arrival.
    let mut conn = Conn {
        stream: Arc::new(stream),
        peer,
        local_port,
        shared,
        stop,
        buf: BytesMut::new(),
        served: 0,
        idle_since: None,
        exchange,
        arrival,
        stop_seen: None,
        request_line: Vec::new(),
        peer_certificate: None,
        #[cfg(feature = "test-hooks")]
        panic_in_delivery: false,
    };
    conn.run().await;
}

struct Conn {
    stream: Arc<Stream>,
    peer: Peer,
    local_port: Option<u16>,
    shared: Arc<Shared>,
    stop: watch::Receiver<bool>,
    /// Bytes received and not consumed yet: a partial head, or the next pipelined request.
    /// Consuming from the front is free (no shifting of what follows).
    buf: BytesMut,
    /// Requests answered on this connection so far.
    served: u64,
    /// When the last response ended (the keep-alive idle clock runs from there).
    idle_since: Option<Instant>,
    /// Shared with the pool thread serving this connection's current request.
    exchange: Arc<Exchange>,
    /// Set while a new connection still counts against capacity.
    arrival: Option<Arc<Arrival>>,
    /// When this connection first saw the server stopping (the stop grace runs from there).
    stop_seen: Option<Instant>,
    /// The current request's method and target (cut), for the drain's log line. The buffer is
    /// reused, so keeping it costs a short copy per request and no allocation.
    request_line: Vec<u8>,
    /// A TLS client's certificate (DER), from the handshake, for every request's env.
    peer_certificate: Option<Arc<[u8]>>,
    #[cfg(feature = "test-hooks")]
    panic_in_delivery: bool,
}

impl Drop for Conn {
    /// Runs however the connection ends, a panic in its task included: the pool thread serving
    /// it learns it is gone (hand-overs fail, a wait for the client ends) instead of waiting
    /// for a reactor task that no longer exists.
    fn drop(&mut self) {
        if let Some(arrival) = self.arrival.take() {
            arrival.done();
        }
        self.exchange.close();
        self.shared.metrics.connection_closed();
    }
}

/// Why reading a request ended without a request.
enum Stop {
    /// Close quietly (client went away, idle timeout, server stopping).
    Close,
    /// Answer with this error response, then close.
    Reject(u16),
}

/// How a response left the connection.
enum Delivered {
    /// Read the next request.
    KeepAlive,
    /// Close gracefully (the response said so, or the client is done sending).
    Close,
    /// Drop the connection: the response could not be completed.
    Abort,
    /// The app took the connection (`rack.hijack`): forget it, neither closing nor draining it
    /// (the app holds its own descriptor of the socket; a TLS connection's relay holds it).
    Hijacked,
}

enum Read {
    Data,
    Eof,
    TimedOut,
    Stopping,
}

impl Conn {
    async fn run(&mut self) {
        if let Stream::Tls(tls) = &*self.stream {
            // A stalled or broken handshake costs this task only. Its failure (a client that
            // speaks plain HTTP to a TLS port, a scanner, a certificate the client refused) is
            // the client's business: a debug line only.
            let limit = Instant::now() + self.shared.config.first_data_timeout;
            // A PROXY line comes before the handshake, in the clear, within the same deadline.
            let proxy = self.shared.config.proxy_protocol;
            let handshake = async move {
                let source = if let Some(version) = proxy {
                    tls.read_proxy_line(version).await?
                } else {
                    None
                };
                tls.handshake().await.map_err(BeforeTls::Tls)?;
                Ok::<_, BeforeTls>(source)
            };
            tokio::pin!(handshake);
            let before_stop = tokio::select! {
                r = tokio::time::timeout_at(Deadline::from_std(limit), &mut handshake) => Some(r),
                _ = self.stop.wait_for(|s| *s) => None,
            };
            // A stop gives an unfinished handshake the grace a connection gets for its first
            // request, not the whole first_data_timeout: a stalled or silent client would
            // otherwise hold up the stop, a hot restart or a phased one.
            let outcome = match before_stop {
                Some(r) => r,
                None => {
                    let seen = *self.stop_seen.get_or_insert(Instant::now());
                    let until = Deadline::from_std(limit.min(seen + STOP_GRACE));
                    tokio::time::timeout_at(until, &mut handshake).await
                }
            };
            match outcome {
                Ok(Ok(source)) => {
                    if let Some(addr) = source {
                        self.peer = Peer::Ip(addr);
                    }
                }
                Ok(Err(BeforeTls::Proxy(e))) => {
                    // As on a plain listener: a broken or hostile proxy, said once.
                    log::error(&format!(
                        "Closing a connection from {}: {e}",
                        self.peer.ip_string()
                    ));
                    return;
                }
                failed => {
                    if self.shared.config.debug {
                        let error = match failed {
                            Ok(Err(BeforeTls::Tls(e))) => Some(e),
                            _ => None,
                        };
                        crate::log::debug(&crate::log::handshake_failed(&self.peer, error));
                    }
                    return;
                }
            }
            self.peer_certificate = tls.peer_certificate().map(Arc::from);
        } else if let Some(version) = self.shared.config.proxy_protocol {
            if self.read_proxy_line(version).await.is_err() {
                return;
            }
        }
        loop {
            let outcome = match self.read_head().await {
                Ok(head) => self.read_request(head).await,
                Err(stop) => Err(stop),
            };
            let request = match outcome {
                Ok(r) => r,
                Err(Stop::Close) => return,
                Err(Stop::Reject(status)) => {
                    self.reject(Version::Http11, status).await;
                    return;
                }
            };
            self.served += 1;
            #[cfg(feature = "test-hooks")]
            {
                let path = request.head.path();
                self.panic_in_delivery = path == crate::test_hooks::PANIC_IN_DELIVERY;
                if path == crate::test_hooks::PANIC_ACCEPT_LOOP {
                    crate::test_hooks::arm_accept_loop_panic();
                }
            }
            self.keep_request_line(&request);
            let config = &self.shared.config;
            let keep_alive_wanted = request.head.keep_alive()
                && config.keep_alive
                && self.served < config.max_keep_alive;
            self.exchange.begin();
            let responder = self.shared.responder(
                self.stream.clone(),
                self.exchange.clone(),
                keep_alive_wanted,
                request.read_at,
            );
            self.shared.touch();
            let backlog = self.shared.queue.push(Box::new(Job { request, responder }));
            self.shared.metrics.backlog_seen(backlog);
            // Awake anyway: the wakes pool threads left to the reactor are done now, and
            // behind another request this one's thread may leave its own (deferred_wakes.rs;
            // only where pool threads leave writes to the reactor at all).
            let deferred = &self.shared.handed_over.deferred;
            if backlog > 1 && config.reactor_writes_after.is_some() {
                deferred.arm();
            }
            deferred.flush();
            // Queued now, so it counts as a request; stop counting the connection.
            if let Some(arrival) = self.arrival.take() {
                arrival.done();
            }
            match self.deliver().await {
                Delivered::KeepAlive => continue,
                Delivered::Close => {
                    self.linger().await;
                    return;
                }
                Delivered::Abort | Delivered::Hijacked => return,
            }
        }
    }

    /// Keeps the request's method and target (cut) for the drain's log line.
    fn keep_request_line(&mut self, request: &Request) {
        let target = request.head.target();
        self.request_line.clear();
        self.request_line
            .extend_from_slice(request.head.method().as_bytes());
        self.request_line.push(b' ');
        self.request_line
            .extend_from_slice(target.get(..DESCRIBED_TARGET).unwrap_or(target));
    }

    /// The end of a stop's drain time with this open-ended stream still going: cut the
    /// connection (both ways, so the pool thread's next write fails too) and note which for the
    /// log.
    fn cut_at_drain_end(&self) -> Delivered {
        let described = format!(
            "{} ({})",
            self.peer.ip_string(),
            String::from_utf8_lossy(&self.request_line)
        );
        self.shared
            .cut_at_drain
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(described);
        self.stream.shutdown_both();
        Delivered::Abort
    }

    /// This connection's writer; `for_response`: the drain applies when the response is an
    /// open-ended stream (not to error responses and 100 Continue).
    fn writer(&mut self, for_response: bool) -> Writer<'_> {
        Writer {
            stream: &self.stream,
            shared: &self.shared,
            exchange: for_response.then_some(&*self.exchange),
            stop: &mut self.stop,
        }
    }

    /// A response that could not be completed: cut at the end of the drain time (logged), or
    /// the client left or stalled.
    fn aborted(&self) -> Delivered {
        if self.exchange.streaming() && self.drain_over() {
            return self.cut_at_drain_end();
        }
        Delivered::Abort
    }

    /// Whether a stop began and its drain time is over.
    fn drain_over(&self) -> bool {
        self.shared
            .drain_deadline()
            .is_some_and(|end| Instant::now() >= end)
    }

    /// Waits for the pool thread's next hand-over or end (or the server stopping). Once the
    /// server stops, an open-ended stream is cut at the end of the drain time; the wait is
    /// sliced (`DRAIN_RECHECK`) so that a drain ended early, or a stream the app begins later
    /// (its direct writes do not wake this task), is seen within a moment.
    async fn wait_for_pool(&mut self) -> Option<Delivered> {
        let Some(end) = self.shared.drain_deadline() else {
            tokio::select! {
                _ = self.exchange.changed() => {}
                _ = self.stop.wait_for(|s| *s) => {}
            }
            return None;
        };
        let now = Instant::now();
        if now >= end && self.exchange.streaming() {
            return Some(self.cut_at_drain_end());
        }
        let until = if now >= end {
            now + DRAIN_RECHECK
        } else {
            end.min(now + DRAIN_RECHECK)
        };
        let _ = tokio::time::timeout_at(Deadline::from_std(until), self.exchange.changed()).await;
        None
    }

    /// `set_remote_address proxy_protocol: :v1/:v2`: a connection may begin with a PROXY line
    /// (v1) or binary header (v2) naming the real client; it becomes this connection's peer (a
    /// v2 LOCAL header, the proxy's health check, keeps the socket's). Bytes that cannot begin
    /// one are plain HTTP. A malformed header, or one of the other version, closes the
    /// connection without a word (it came from a broken or hostile proxy, not from a client
    /// that could read an answer).
    async fn read_proxy_line(&mut self, version: ProxyVersion) -> Result<(), Stop> {
        let deadline = Instant::now() + self.shared.config.first_data_timeout;
        loop {
            match catamount_http::parse_proxy(&self.buf, version) {
                Ok(ProxyLine::Absent) => return Ok(()),
                Ok(ProxyLine::Complete { source, len }) => {
                    self.buf.advance(len);
                    if let Some(addr) = source {
                        self.peer = Peer::Ip(addr);
                    }
                    return Ok(());
                }
                Ok(ProxyLine::Incomplete) => {}
                Err(e) => {
                    log::error(&format!(
                        "Closing a connection from {}: {e}",
                        self.peer.ip_string()
                    ));
                    return Err(Stop::Close);
                }
            }
            match self.read_more(deadline).await {
                Read::Data => {}
                Read::Eof | Read::TimedOut | Read::Stopping => return Err(Stop::Close),
            }
        }
    }

    /// Reads until a whole request head is buffered.
    async fn read_head(&mut self) -> Result<RequestHead, Stop> {
        let mut parser = HeadParser::new();
        loop {
            if !self.buf.is_empty() {
                match parser.parse(&self.buf, &self.shared.config.limits) {
                    Ok(Some((head, consumed))) => {
                        self.buf.advance(consumed);
                        return Ok(head);
                    }
                    Ok(None) => {}
                    Err(e) => return Err(self.parse_failed(&e)),
                }
            }
            let idle = self.buf.is_empty() && self.served > 0;
            let deadline = match self.idle_since {
                Some(since) if idle => since + self.shared.config.persistent_timeout,
                _ => Instant::now() + self.shared.config.first_data_timeout,
            };
            match self.read_more(deadline).await {
                Read::Data => {}
                // A head still incomplete after the stop grace, or at the timeout, is dropped
                // without a word, as Puma does: there is no request yet to answer.
                Read::Eof | Read::TimedOut | Read::Stopping => return Err(Stop::Close),
            }
        }
    }

    /// Reads the body the head announced; returns the request ready for the app.
    async fn read_request(&mut self, head: RequestHead) -> Result<Request, Stop> {
        let started = Instant::now();
        let body = match head.body() {
            BodyFraming::None => Body::Empty,
            BodyFraming::Length(len) => {
                if head.expects_continue() && (self.buf.len() as u64) < len {
                    self.send_continue().await?;
                }
                self.read_fixed_body(len).await?
            }
            BodyFraming::Chunked => {
                if head.expects_continue() {
                    self.send_continue().await?;
                }
                self.read_chunked_body().await?
            }
        };
        let read_at = Instant::now();
        Ok(Request {
            head,
            body,
            peer: self.peer,
            local_port: self.local_port,
            body_wait: read_at.saturating_duration_since(started),
            read_at,
            taken_at: read_at,
            tls: self.stream.is_tls(),
            peer_certificate: self.peer_certificate.clone(),
        })
    }

    async fn read_fixed_body(&mut self, len: u64) -> Result<Body, Stop> {
        if len == 0 {
            return Ok(Body::Empty);
        }
        let in_memory = len <= self.shared.config.body_in_memory_max as u64;
        // The in-memory buffer is taken only when body bytes are here (see BodyFill).
        let mut memory = None;
        let mut file = None;
        if in_memory {
            memory = Some(BodyFill::new(
                self.shared.body_buffers.clone(),
                len as usize,
            ));
        } else {
            file = Some(spill::temp_file(&self.shared.config.temp_dir).map_err(|e| {
                log::error(&format!(
                    "Read: could not create a temporary file for a request body: {e}"
                ));
                Stop::Reject(500)
            })?);
        }
        let mut remaining = len;
        loop {
            let take = usize::try_from(remaining)
                .unwrap_or(usize::MAX)
                .min(self.buf.len());
            if take > 0 {
                let chunk = self.buf.get(..take).unwrap_or_default();
                match (file.as_mut(), memory.as_mut()) {
                    (Some(f), _) => f.write_all(chunk).map_err(|e| self.spill_failed(e))?,
                    (None, Some(body)) => body.room(take).extend_from_slice(chunk),
                    (None, None) => {}
                }
                self.buf.advance(take);
                remaining -= take as u64;
            }
            if remaining == 0 {
                break;
            }
            // The rest of an in-memory body goes straight into its buffer (the connection
            // buffer is empty here). A read past the body's end, the start of a pipelined next
            // request, moves on to the connection buffer.
            if let Some(body) = memory.as_mut() {
                self.read_body_bytes(Some(&mut *body)).await?;
                if let Some(bytes) = body.filled_mut() {
                    let end = usize::try_from(len).unwrap_or(usize::MAX).min(bytes.len());
                    self.buf
                        .extend_from_slice(bytes.get(end..).unwrap_or_default());
                    bytes.truncate(end);
                }
                remaining = len - body.filled() as u64;
            } else {
                self.read_body_bytes(None).await?;
            }
        }
        Ok(match (file, memory) {
            (Some(f), _) => Body::File {
                file: spill::rewind(f).map_err(|e| self.spill_failed(e))?,
                len,
            },
            (None, body) => Body::Memory(body.map(BodyFill::finish).unwrap_or_default()),
        })
    }

    async fn read_chunked_body(&mut self) -> Result<Body, Stop> {
        let mut decoder = ChunkedDecoder::new();
        let mut file =
            spill::temp_file(&self.shared.config.temp_dir).map_err(|e| self.spill_failed(e))?;
        let mut decoded = Vec::new();
        loop {
            if !self.buf.is_empty() {
                let progress = decoder
                    .decode(&self.buf, &mut decoded, &self.shared.config.limits)
                    .map_err(|e| self.parse_failed(&e))?;
                self.buf.advance(progress.consumed);
                if !decoded.is_empty() {
                    file.write_all(&decoded).map_err(|e| self.spill_failed(e))?;
                    decoded.clear();
                }
                if progress.done {
                    break;
                }
            }
            self.read_body_bytes(None).await?;
        }
        let len = decoder.decoded_len();
        if len == 0 {
            return Ok(Body::Empty);
        }
        let file = spill::rewind(file).map_err(|e| self.spill_failed(e))?;
        Ok(Body::File { file, len })
    }

    /// Reads more body bytes, into `body`'s spare capacity when given (a body in memory is then
    /// copied once, socket to buffer), else into the connection buffer. A body that stops
    /// arriving gets a 408 (the head was complete, so the client deserves an answer); a client
    /// that leaves or a stopping server just closes.
    async fn read_body_bytes(&mut self, body: Option<&mut BodyFill>) -> Result<(), Stop> {
        let deadline = Instant::now() + self.shared.config.first_data_timeout;
        match self.read_more_into(body, true, deadline).await {
            Read::Data => Ok(()),
            Read::TimedOut => Err(Stop::Reject(408)),
            Read::Eof | Read::Stopping => Err(Stop::Close),
        }
    }

    async fn send_continue(&mut self) -> Result<(), Stop> {
        self.writer(false)
            .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
            .await
            .map_err(|_| Stop::Close)
    }

    /// Waits for more bytes until `deadline`; once the server is stopping, only as long as
    /// [`stop_deadline`](Self::stop_deadline) allows.
    async fn read_more(&mut self, deadline: Instant) -> Read {
        self.read_more_into(None, false, deadline).await
    }

    /// Reads into `body` when given (only into its spare capacity), else into the connection
    /// buffer. `mid_body`: the head of a request is in, so a stop waits for the rest.
    async fn read_more_into(
        &mut self,
        mut body: Option<&mut BodyFill>,
        mid_body: bool,
        deadline: Instant,
    ) -> Read {
        if !*self.stop.borrow() {
            let read = read_into(
                &self.stream,
                &self.shared.metrics,
                &mut self.buf,
                body.as_deref_mut(),
                mid_body,
            );
            tokio::select! {
                r = tokio::time::timeout_at(Deadline::from_std(deadline), read) => {
                    return read_outcome(r.ok(), Read::TimedOut);
                }
                _ = self.stop.wait_for(|s| *s) => {}
            }
        }
        let until = Deadline::from_std(self.stop_deadline(deadline, mid_body));
        let read = read_into(
            &self.stream,
            &self.shared.metrics,
            &mut self.buf,
            body,
            mid_body,
        );
        read_outcome(
            tokio::time::timeout_at(until, read).await.ok(),
            Read::Stopping,
        )
    }

    /// How long a read may still wait while the server stops. A request already on its way is
    /// served rather than cut off: a connection that has not sent its first request yet (it
    /// was accepted, so the client has sent or is sending one) or is in the middle of one (part
    /// of a head in the buffer, or a body still due) gets up to [`STOP_GRACE`]; an idle
    /// keep-alive connection gets its [`last_call`].
    fn stop_deadline(&mut self, deadline: Instant, mid_body: bool) -> Instant {
        let now = Instant::now();
        let seen = *self.stop_seen.get_or_insert(now);
        if mid_body || self.served == 0 || !self.buf.is_empty() {
            deadline.min(seen + STOP_GRACE)
        } else {
            deadline.min(last_call(self.idle_since.unwrap_or(now), seen))
        }
    }

    /// Follows the response to the request just dispatched: writes what the pool thread hands
    /// over, and meanwhile reads the client's next bytes (so the end of a response the pool
    /// thread wrote itself needs no wake-up: the next request brings the reactor back).
    async fn deliver(&mut self) -> Delivered {
        let recheck = self.shared.config.persistent_timeout;
        let mut client_done = false;
        let mut stopping = false;
        loop {
            // Watch the socket only while nothing of the next request is buffered: pipelined
            // requests wait in `buf`, unread bytes beyond them wait in the kernel.
            let watch_socket = self.buf.is_empty() && !client_done && !stopping;
            match self.exchange.next_step(!watch_socket) {
                Step::Write(Outgoing::Data(data)) => {
                    #[cfg(feature = "test-hooks")]
                    if self.panic_in_delivery {
                        panic!("test hook: a connection task panics while delivering");
                    }
                    if self.writer(true).write_all(&data).await.is_err() {
                        return self.aborted();
                    }
                    self.exchange.release(data.capacity() as u64);
                    continue;
                }
                Step::Write(piece) => {
                    if let Some((file, offset, len)) = piece.file() {
                        if self
                            .writer(true)
                            .send_file(file, offset, len)
                            .await
                            .is_err()
                        {
                            return self.aborted();
                        }
                    }
                    // A spill file's bytes leave the spill count when its last piece has been
                    // sent (or the response is dropped): this may be that piece going.
                    drop(piece);
                    continue;
                }
                Step::Ended(Ending::Aborted) => return Delivered::Abort,
                Step::Hijack => return self.let_go(),
                Step::Ended(Ending::Done { keep_alive, at }) => {
                    self.idle_since = Some(at);
                    return if keep_alive && !client_done {
                        Delivered::KeepAlive
                    } else {
                        Delivered::Close
                    };
                }
                Step::Pending => {}
            }
            if !watch_socket {
                if let Some(cut) = self.wait_for_pool().await {
                    return cut;
                }
                continue;
            }
            let read = read_some(&self.stream, &self.shared.metrics, &mut self.buf, HEAD_READ);
            tokio::select! {
                _ = self.exchange.changed() => {}
                r = read => {
                    if !matches!(r, Ok(n) if n > 0) {
                        client_done = true;
                    }
                }
                // Only a re-check: a response still being made is never timed out here, and
                // one that ended is seen at the top of the loop.
                _ = tokio::time::sleep(recheck) => {}
                _ = self.stop.wait_for(|s| *s) => stopping = true,
            }
        }
    }

    /// The app takes the connection. Nothing is read after this: what was read ahead goes to
    /// the app, in order before what the kernel (or rustls) still holds. A TLS connection is
    /// relayed from here on (the app could not continue its session): the app gets its end of
    /// a socket pair, the early bytes first on it.
    fn let_go(&mut self) -> Delivered {
        let early = self.buf.split().to_vec();
        if !self.stream.is_tls() {
            self.exchange.hijack_ready(Ok(TakenOver {
                early,
                relayed: None,
            }));
            return Delivered::Hijacked;
        }
        match relay::socket_pair() {
            Ok((ours, theirs)) => {
                let relaying = relay::relay(self.stream.clone(), ours, early, self.shared.clone());
                tokio::spawn(relaying);
                self.exchange.hijack_ready(Ok(TakenOver {
                    early: Vec::new(),
                    relayed: Some(theirs),
                }));
                Delivered::Hijacked
            }
            Err(e) => {
                // The app's hijack raises it (EMFILE, ...); the connection is lost.
                self.exchange.hijack_ready(Err(e));
                Delivered::Abort
            }
        }
    }

    fn parse_failed(&self, e: &ParseError) -> Stop {
        log::error(&format!(
            "HTTP parse error, malformed request ({}): {e}",
            self.peer.ip_string()
        ));
        Stop::Reject(e.status())
    }

    fn spill_failed(&self, e: io::Error) -> Stop {
        log::error(&format!(
            "Read: could not buffer a request body to disk: {e}"
        ));
        Stop::Reject(500)
    }

    async fn reject(&mut self, version: Version, status: u16) {
        let response = error_response(version, status);
        self.shared.metrics.response(status);
        if self.writer(false).write_all(&response).await.is_ok() {
            self.linger().await;
        }
    }

    /// Closes gracefully: half-close, then discard what the client still sends for a moment, so
    /// the kernel does not answer unread bytes with a reset that destroys our last response.
    async fn linger(&mut self) {
        self.stream.shutdown_write();
        let stream = self.stream.clone();
        let drain = async {
            let mut scratch = Vec::with_capacity(16 * 1024);
            let mut total = 0usize;
            while total < 1 << 20 {
                if stream.readable().await.is_err() {
                    return;
                }
                scratch.clear();
                match stream.try_read_buf(&mut scratch) {
                    Ok(0) => return,
                    Ok(n) => {
                        self.shared.metrics.read(n);
                        total += n;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(_) => return,
                }
            }
        };
        let _ = tokio::time::timeout(LINGER, drain).await;
    }
}

/// Until when a stopping server still waits for the next request on an idle keep-alive
/// connection whose last response ended at `idle_since` (the stop reached it at `stop_seen`).
///
/// Closing an idle connection races with a client (a proxy, above all) that is sending its next
/// request on it: the request meets the close and the proxy counts an error (it may retry, but
/// HTTP lets it only for idempotent methods). A connection used a moment ago is likely to carry
/// another request soon, so it is kept until it has been quiet for [`LAST_CALL`], and a request
/// that comes meanwhile is answered (with `Connection: close`, as every response of a stopping
/// server). A connection already quiet that long is closed at once: whoever holds it is not
/// using it now. Puma closes every idle connection at once.
fn last_call(idle_since: Instant, stop_seen: Instant) -> Instant {
    (idle_since + LAST_CALL).min(stop_seen + STOP_GRACE)
}

/// What a read that finished (`Some`) or ran out of time (`None`, reported as `late`) means.
fn read_outcome(read: Option<io::Result<usize>>, late: Read) -> Read {
    match read {
        Some(Ok(0)) | Some(Err(_)) => Read::Eof,
        Some(Ok(_)) => Read::Data,
        None => late,
    }
}

/// Reads into `body`'s spare capacity when given, else [`read_some`] into the connection buffer
/// `buf` (body bytes when `mid_body`, else the start of a head).
async fn read_into(
    stream: &Stream,
    metrics: &Metrics,
    buf: &mut BytesMut,
    body: Option<&mut BodyFill>,
    mid_body: bool,
) -> io::Result<usize> {
    match body {
        Some(body) => loop {
            // The socket has bytes: only now is the body's buffer taken, or grown when short of
            // room (a read takes what fits; memory follows what arrived).
            stream.readable().await?;
            match stream.try_read_buf(body.room_for_read()) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                other => return counted_read(metrics, other),
            }
        },
        None => {
            let max = if mid_body { BODY_READ } else { HEAD_READ };
            read_some(stream, metrics, buf, max).await
        }
    }
}

/// Waits until the socket has bytes and appends at most `max` of them to `buf`; 0 means the
/// client closed its side.
async fn read_some(
    stream: &Stream,
    metrics: &Metrics,
    buf: &mut BytesMut,
    max: usize,
) -> io::Result<usize> {
    // Reclaims the space of consumed bytes when that is cheap, else grows the buffer.
    buf.reserve(max);
    counted_read(metrics, read_spare(stream, &mut buf.limit(max)).await)
}

/// Counts the bytes a read got (`bytes_in`).
fn counted_read(metrics: &Metrics, read: io::Result<usize>) -> io::Result<usize> {
    if let Ok(n) = read {
        metrics.read(n);
    }
    read
}

/// Waits until the socket has bytes and appends at most `buf`'s next chunk of spare space.
async fn read_spare<B: BufMut>(stream: &Stream, buf: &mut B) -> io::Result<usize> {
    loop {
        stream.readable().await?;
        match stream.try_read_buf(buf) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            other => return other,
        }
    }
}

/// A connection's writes: what they need to know to give up on a client that stopped reading
/// (`write_timeout` without progress) and, for an open-ended stream once a stop began, at the
/// end of the drain time.
struct Writer<'a> {
    stream: &'a Stream,
    shared: &'a Shared,
    /// The response being written, when the drain applies to it (it is a stream).
    exchange: Option<&'a Exchange>,
    stop: &'a mut watch::Receiver<bool>,
}

impl Writer<'_> {
    /// Writes all of `data` (for TLS: encrypted, and on the wire when this returns).
    async fn write_all(&mut self, mut data: &[u8]) -> io::Result<()> {
        let mut progress_at = Instant::now();
        while !data.is_empty() {
            self.wait(progress_at).await?;
            match self.stream.try_write(data) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.shared.metrics.wrote(n);
                    data = data.get(n..).unwrap_or_default();
                    progress_at = Instant::now();
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        while !self.stream.flush()? {
            self.wait(progress_at).await?;
        }
        Ok(())
    }

    /// Sends `len` bytes of `file` from `offset` with sendfile(2), or, through TLS, read and
    /// encrypted a piece at a time (the memory held is one piece).
    async fn send_file(&mut self, file: &File, mut offset: u64, len: u64) -> io::Result<()> {
        if self.stream.is_tls() {
            return self.send_file_through(file, offset, len).await;
        }
        let end = offset.saturating_add(len);
        let mut progress_at = Instant::now();
        while offset < end {
            self.wait(progress_at).await?;
            let want = usize::try_from(end - offset)
                .unwrap_or(usize::MAX)
                .min(1 << 30);
            match self.stream.try_sendfile(file, &mut offset, want) {
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(n) => {
                    self.shared.metrics.wrote(n);
                    progress_at = Instant::now();
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    async fn send_file_through(
        &mut self,
        file: &File,
        mut offset: u64,
        len: u64,
    ) -> io::Result<()> {
        use std::os::unix::fs::FileExt;
        let end = offset.saturating_add(len);
        let mut piece = vec![0u8; FILE_PIECE];
        while offset < end {
            let want = usize::try_from(end - offset)
                .unwrap_or(usize::MAX)
                .min(FILE_PIECE);
            let buf = piece.get_mut(..want).unwrap_or_default();
            let n = file.read_at(buf, offset)?;
            if n == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            self.write_all(piece.get(..n).unwrap_or_default()).await?;
            offset += n as u64;
        }
        Ok(())
    }

    /// Waits until the socket takes bytes again; TimedOut once `write_timeout` passed since
    /// `progress_at`, or, for a stream, once a stop's drain time is over. While a stop runs the
    /// wait is sliced (`DRAIN_RECHECK`), so a drain ended early is seen within a moment; before
    /// it, the stop itself wakes it.
    async fn wait(&mut self, progress_at: Instant) -> io::Result<()> {
        let timed_out = || io::Error::from(io::ErrorKind::TimedOut);
        loop {
            let now = Instant::now();
            let limit = progress_at + self.shared.config.write_timeout;
            if now >= limit {
                return Err(timed_out());
            }
            if self.shared.stop_began.get().is_none() {
                tokio::select! {
                    r = tokio::time::timeout_at(Deadline::from_std(limit), self.stream.writable()) => {
                        return r.map_err(|_| timed_out())?;
                    }
                    _ = self.stop.wait_for(|s| *s) => continue,
                }
            }
            let mut until = limit.min(now + DRAIN_RECHECK);
            if let Some(end) = self
                .exchange
                .filter(|e| e.streaming())
                .and_then(|_| self.shared.drain_deadline())
            {
                if now >= end {
                    return Err(timed_out());
                }
                until = until.min(end);
            }
            if let Ok(ready) =
                tokio::time::timeout_at(Deadline::from_std(until), self.stream.writable()).await
            {
                return ready;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_used_a_moment_ago_waits_until_it_has_been_quiet_for_the_last_call() {
        let stop = Instant::now();
        let used = stop - Duration::from_millis(300);
        assert_eq!(last_call(used, stop), used + LAST_CALL);
    }

    #[test]
    fn a_connection_quiet_for_the_last_call_already_is_closed_at_once() {
        let stop = Instant::now() + Duration::from_secs(10);
        let used = stop - LAST_CALL - Duration::from_millis(1);
        assert!(last_call(used, stop) < stop);
    }

    #[test]
    fn the_last_call_never_outlasts_the_stop_grace() {
        let stop = Instant::now();
        let used = stop + STOP_GRACE;
        assert_eq!(last_call(used, stop), stop + STOP_GRACE);
    }
}
