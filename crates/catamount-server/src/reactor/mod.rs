//! The reactor: one Rust thread running a single-threaded tokio runtime that owns every socket.
//!
//! It accepts (while the pool has a free thread, or once a connection has waited a moment),
//! reads each request whole, including the body, before any Ruby thread sees it, finishes
//! responses the pool threads could not write at once, and keeps idle keep-alive connections.
//! One thread is enough: it never runs Ruby and never waits on anything but sockets and timers,
//! and on a 2-core machine a second reactor thread would only compete with Ruby for the cores.

mod accept_errors;
mod conn;
mod relay;

use std::io;
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::unix::AsyncFd;
use tokio::net::{TcpStream, UnixStream};
use tokio::sync::{mpsc, watch};

use crate::config::ServerConfig;
use crate::listener::{BoundListener, Listener};
use crate::log;
use crate::request::Peer;
use crate::shared::Shared;
use crate::stream::Stream;
use crate::tls_stream::TlsStream;

/// Runs the reactor until a stop is requested and every connection has finished.
pub(crate) fn run(
    shared: Arc<Shared>,
    listeners: Vec<BoundListener>,
    stop: watch::Receiver<bool>,
) -> io::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()?;
    runtime.block_on(serve(shared, listeners, stop))
}

async fn serve(
    shared: Arc<Shared>,
    listeners: Vec<BoundListener>,
    stop: watch::Receiver<bool>,
) -> io::Result<()> {
    // Every connection task holds a clone of `alive`; when the last clone is dropped,
    // `all_closed.recv()` returns None and the reactor may end.
    let (alive, mut all_closed) = mpsc::channel::<()>(1);
    let mut accept_tasks = tokio::task::JoinSet::new();
    for bound in listeners {
        // `AsyncFd::new` is deprecated because a borrowed fd could be closed while registered;
        // here the AsyncFd owns the listener, so the fd lives exactly as long as the registration.
        #[allow(deprecated)]
        let acceptor = match bound.listener {
            Listener::Tcp(l) => {
                l.set_nonblocking(true)?;
                Acceptor::Tcp(AsyncFd::new(l)?, bound.tls.clone())
            }
            Listener::Unix(l) => {
                l.set_nonblocking(true)?;
                Acceptor::Unix(AsyncFd::new(l)?)
            }
        };
        accept_tasks.spawn(accept_loop(
            acceptor,
            shared.clone(),
            stop.clone(),
            alive.clone(),
        ));
    }
    drop(alive);
    let ticking = shared.clone();
    let ticker = tokio::spawn(async move {
        let queued = || ticking.queue.has_waiting();
        ticking.handed_over.deferred.tick_while_armed(queued).await
    });
    while let Some(ended) = accept_tasks.join_next().await {
        // An accept loop that panicked leaves its listener unserved: that is the reactor
        // failing, not one connection, so the panic goes on to the reactor thread.
        if let Err(e) = ended {
            if e.is_panic() {
                std::panic::resume_unwind(e.into_panic());
            }
        }
    }
    // Listeners are closed now; wait for the connections still being served.
    let _ = all_closed.recv().await;
    // Then for the TLS connections the app took, relayed here: they end as the app closes
    // them, a stop's drain shutting down the rest at its deadline (lib/catamount/drain.rb,
    // which logs each). Past that, and a moment for the drain to act, what is left is cut as
    // the runtime ends (also a stop that is not the process's end: worker 0 stopping to fork).
    let relays = shared.relays.all_ended();
    match shared
        .drain_deadline()
        .and_then(|d| d.checked_add(RELAY_GRACE))
    {
        Some(until) => {
            let _ = tokio::time::timeout_at(tokio::time::Instant::from_std(until), relays).await;
        }
        None => relays.await,
    }
    ticker.abort();
    Ok(())
}

/// How long past the drain deadline relays may still run: the drain (which polls every 100 ms)
/// shuts them down and logs them first.
const RELAY_GRACE: Duration = Duration::from_secs(1);

/// A listening socket watched for pending connections, which are taken only when wanted.
enum Acceptor {
    /// With a TLS configuration on a TLS listener.
    Tcp(
        AsyncFd<std::net::TcpListener>,
        Option<Arc<rustls::ServerConfig>>,
    ),
    Unix(AsyncFd<std::os::unix::net::UnixListener>),
}

impl Acceptor {
    /// Waits until a connection is pending *and* a pool thread is free (or the connection has
    /// waited `max_accept_wait`), then takes it.
    ///
    /// Waiting on the listener first means the pool's "a thread is free again" signal is asked
    /// for only while a connection is actually waiting: in the steady state of keep-alive
    /// traffic the reactor is not woken at the end of every request. A connection that arrives
    /// while every thread is busy stays in the kernel's queue, where another (idle) worker
    /// process can take it. Cancel-safe: nothing is taken until it is returned.
    async fn next(&self, shared: &Shared) -> io::Result<Accepted> {
        loop {
            let taken = match self {
                Acceptor::Tcp(fd, tls) => take_when_free(fd, shared, |l| l.accept())
                    .await?
                    .map(|pair| tcp_connection(pair, tls))
                    .transpose()?,
                Acceptor::Unix(fd) => take_when_free(fd, shared, |l| l.accept())
                    .await?
                    .map(|(s, _)| unix_connection(s))
                    .transpose()?,
            };
            // None: another process (or a reset) took the pending connection; wait again.
            if let Some(conn) = taken {
                return Ok(conn);
            }
        }
    }

    /// Takes a connection already waiting in the backlog, without waiting for anything
    /// (`drain_on_shutdown`); None when the backlog is empty.
    fn take_now(&self) -> io::Result<Option<Accepted>> {
        let none_if_empty = |e: io::Error| match e.kind() {
            io::ErrorKind::WouldBlock => Ok(None),
            _ => Err(e),
        };
        match self {
            Acceptor::Tcp(fd, tls) => match fd.get_ref().accept() {
                Ok(pair) => tcp_connection(pair, tls).map(Some),
                Err(e) => none_if_empty(e),
            },
            Acceptor::Unix(fd) => match fd.get_ref().accept() {
                Ok((s, _)) => unix_connection(s).map(Some),
                Err(e) => none_if_empty(e),
            },
        }
    }
}

/// A connection as the reactor serves it: the stream, who is on the other end, and the port
/// of the listener that took it (None for UNIX sockets).
type Accepted = (Stream, Peer, Option<u16>);

fn tcp_connection(
    (s, addr): (std::net::TcpStream, std::net::SocketAddr),
    tls: &Option<Arc<rustls::ServerConfig>>,
) -> io::Result<Accepted> {
    s.set_nonblocking(true)?;
    // Responses go out in as few writes as we can make them; Nagle would only delay the last
    // segment of each.
    let _ = s.set_nodelay(true);
    let port = s.local_addr().ok().map(|a| a.port());
    let tcp = TcpStream::from_std(s)?;
    let stream = match tls {
        // The handshake runs in the connection's own task (conn.rs), under its deadline.
        Some(config) => Stream::Tls(Box::new(TlsStream::new(tcp, config.clone())?)),
        None => Stream::Tcp(tcp),
    };
    Ok((stream, Peer::Ip(addr), port))
}

fn unix_connection(s: std::os::unix::net::UnixStream) -> io::Result<Accepted> {
    s.set_nonblocking(true)?;
    Ok((Stream::Unix(UnixStream::from_std(s)?), Peer::Unix, None))
}

/// Waits for a pending connection, then for a free pool thread (for at most
/// `max_accept_wait`), then, with `busy_accept_delay`, a little longer while this server is
/// busy, then accepts; None when the connection was gone by then (the listener's readiness is
/// cleared, so the next wait is real).
///
/// The wait for a free thread is bounded because requests on connections already accepted
/// would otherwise always come first: under steady keep-alive traffic the pool is never free,
/// and a new connection would wait in the backlog for as long as the traffic lasts. Past the
/// bound it is taken anyway and its request queued behind the ones already here. While the
/// pool stays full, one more connection is taken per bound: a flood still waits in the backlog.
async fn take_when_free<L: AsRawFd, C>(
    fd: &AsyncFd<L>,
    shared: &Shared,
    mut accept: impl FnMut(&L) -> io::Result<C>,
) -> io::Result<Option<C>> {
    let mut ready = fd.readable().await?;
    let _waited_long_enough = tokio::time::timeout(
        accept_wait(&shared.config),
        shared.queue.wait_for_capacity(),
    )
    .await;
    if let Some(delay) = shared.config.busy_accept_delay {
        shared.queue.wait_while_busy(delay).await;
    }
    match ready.try_io(|l| accept(l.get_ref())) {
        Ok(result) => result.map(Some),
        Err(_would_block) => Ok(None),
    }
}

/// How long a pending connection waits here for a free thread: `max_accept_wait`, and with
/// `busy_accept_delay` at least twice that delay. Of the cluster workers woken for a
/// connection, an idle one takes it at once, one with a free thread after `busy_accept_delay`
/// at most, and a full one only after this.
fn accept_wait(config: &ServerConfig) -> Duration {
    match config.busy_accept_delay {
        Some(delay) => config.max_accept_wait.max(delay.saturating_mul(2)),
        None => config.max_accept_wait,
    }
}

/// Serves every connection still waiting in the backlog when a stop begins: each gets its
/// request answered (with `connection: close`) instead of a refused connection.
fn drain(acceptor: &Acceptor, shared: &Arc<Shared>, alive: &mpsc::Sender<()>) {
    // These connections are served as if the server were not stopping (so their first request
    // is read), and close after one response because `stopping` is set.
    let (keep_going, never_stops) = watch::channel(false);
    let keep_going = Arc::new(keep_going);
    loop {
        match acceptor.take_now() {
            Ok(Some((stream, peer, local_port))) => {
                let keep_going = keep_going.clone();
                let conn = conn::serve(
                    stream,
                    peer,
                    local_port,
                    shared.clone(),
                    never_stops.clone(),
                    alive.clone(),
                    None,
                );
                tokio::spawn(async move {
                    conn.await;
                    drop(keep_going);
                });
            }
            Ok(None) => return,
            Err(e) => {
                log::error(&format!("Draining the listen backlog: {e}"));
                return;
            }
        }
    }
}

async fn accept_loop(
    acceptor: Acceptor,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
    alive: mpsc::Sender<()>,
) {
    let mut errors = accept_errors::AcceptErrors::default();
    loop {
        let accepted = tokio::select! {
            r = acceptor.next(&shared) => r,
            _ = stop.wait_for(|s| *s) => {
                if shared.config.drain_on_shutdown {
                    drain(&acceptor, &shared, &alive);
                }
                return;
            }
        };
        match accepted {
            Ok((stream, peer, local_port)) => {
                #[cfg(feature = "test-hooks")]
                crate::test_hooks::accept_loop_checkpoint();
                if let Some(failed) = errors.succeeded() {
                    log::error(&format!(
                        "Listen loop: accepting again ({failed} accepts failed)"
                    ));
                }
                shared.touch();
                let arrival = shared.config.new_connection_hold.map(|hold| {
                    let arrival = Arc::new(conn::Arrival::new(shared.clone()));
                    let timer = arrival.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(hold).await;
                        timer.done();
                    });
                    arrival
                });
                tokio::spawn(conn::serve(
                    stream,
                    peer,
                    local_port,
                    shared.clone(),
                    stop.clone(),
                    alive.clone(),
                    arrival,
                ));
            }
            Err(e) => {
                // The connections already accepted keep being served meanwhile.
                match errors.after(&e) {
                    accept_errors::AfterError::Retry => {}
                    accept_errors::AfterError::BackOff(wait) => {
                        if let Some(line) = errors.line(&e, wait, std::time::Instant::now()) {
                            log::error(&line);
                        }
                        // A stop during the wait is seen at once, at the top of the loop.
                        tokio::select! {
                            _ = tokio::time::sleep(wait) => {}
                            _ = stop.wait_for(|s| *s) => {}
                        }
                    }
                }
            }
        }
        if shared.stopping.load(Ordering::SeqCst) {
            return;
        }
    }
}
