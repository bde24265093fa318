//! Catamount's server core, with no Ruby in it.
//!
//! - [`listener`]: opening the sockets named by bind URLs.
//! - `reactor`: the thread that owns every connection: accepts, buffers whole requests, finishes
//!   responses, keeps idle keep-alive connections.
//! - [`dispatch`]: the queue between the reactor and the Ruby thread pool, and the pool's books.
//! - [`request`] / [`response`]: what a pool thread gets (a whole [`Request`]) and answers with
//!   (a [`Responder`] that writes without ever blocking the thread on a slow client).
//! - [`body_buffers`]: request-body buffers kept for reuse between the reactor and the pool.
//!
//! The Ruby extension drives this from pool threads: [`WorkQueue::pop`] a [`Job`], run the app,
//! write through its [`Responder`].

pub mod body_buffers;
pub mod dispatch;
pub mod listener;
pub mod log;
mod reactor;
pub mod request;
pub mod response;
mod spill;
mod stream;
#[cfg(feature = "test-hooks")]
mod test_hooks;

use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub use body_buffers::BodyBuffer;
pub use catamount_http::Limits;
pub use dispatch::{Handoff, PoolAction, PoolStats, Pop, Seat, Wait, Waiter, WorkQueue};
pub use listener::{
    bind_all, bind_all_inheriting, BoundListener, InheritedSocket, ListenError, Listener,
};
pub use request::{Body, Job, Peer, Request};
pub use response::{Responder, WriteRoute};

use body_buffers::BodyBuffers;
use tokio::sync::watch;

/// Everything the reactor needs to know. Defaults match Puma 7+ where Puma has the knob.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Request size limits and accepted methods (see `catamount_http::Limits`).
    pub limits: Limits,
    /// Longest wait for more bytes of a request that has begun (and for the first request on a
    /// new connection). Default 30 s.
    pub first_data_timeout: Duration,
    /// Longest idle time between requests on a keep-alive connection. Default 65 s.
    pub persistent_timeout: Duration,
    /// A response write that makes no progress for this long aborts the connection. Default 30 s.
    pub write_timeout: Duration,
    /// Allow keep-alive at all. Default true.
    pub keep_alive: bool,
    /// Requests served on one connection before it is closed. Default 999.
    pub max_keep_alive: u64,
    /// Bodies up to this size stay in memory; larger ones go to a temporary file. Default 112 KiB
    /// (Puma's threshold). Chunked bodies always go to a file.
    pub body_in_memory_max: usize,
    /// Bytes of a streamed response queued for a slow client before the producing thread waits.
    /// Default 16 MiB.
    pub max_buffered_response: u64,
    /// Directory for request-body temporary files. Default `$TMPDIR` or `/tmp`.
    pub temp_dir: PathBuf,
    pub min_threads: usize,
    pub max_threads: usize,
    /// How long a pool thread above `min_threads` may idle before it exits. Default 30 s.
    pub idle_thread_trim: Duration,
    /// When a queued request goes to another pool thread: once it could run it (the GVL is
    /// free; default), or at once as in Puma. See `dispatch::handoff`.
    pub handoff: Handoff,
    /// Expect a PROXY protocol v1 line at the start of each connection; its source address
    /// becomes the peer. Default false.
    pub proxy_protocol: bool,
    /// On a graceful stop, accept and serve the connections already in the listen backlog
    /// before closing the listeners. Default false.
    pub drain_on_shutdown: bool,
    /// Count a newly accepted connection against the pool's capacity until its first request is
    /// queued, for at most this long. Default None; cluster workers use 50 ms. Without it, the
    /// worker that wins the first accept of a burst of connections would accept the whole
    /// burst (its threads all look free until requests arrive), and its keep-alive connections
    /// would stay there while the other workers idle. The hold is short so a client that
    /// connects and sends nothing cannot keep a worker from accepting.
    pub new_connection_hold: Option<Duration>,
    /// How long a pending connection is left in the listen backlog while no pool thread is
    /// free, before it is taken anyway and its request queued. Default 10 ms. While the pool
    /// is full a connection waits there so that another worker process with a free thread can
    /// take it instead; the bound keeps it from waiting for as long as the keep-alive
    /// connections already accepted keep the pool busy (they would always come first).
    /// With `busy_accept_delay` the wait is at least twice that delay, so a worker with a free
    /// thread still takes a connection before a worker without one.
    pub max_accept_wait: Duration,
    /// Cluster workers (`wait_for_less_busy_worker`): with a connection pending while a request
    /// is queued or running here, wait up to this long (less once a request finishes) before
    /// accepting, so an idle worker takes it first. Default None.
    pub busy_accept_delay: Option<Duration>,
    /// A pool thread that has been on a request this long hands its finished small response
    /// to the reactor to write, when other requests wait for a thread; None: pool threads
    /// always write themselves. Default 50 µs. See [`Responder::write_whole`].
    pub reactor_writes_after: Option<Duration>,
    /// Remove UNIX socket files when the server ends. Default true; false in cluster workers,
    /// whose listeners belong to the master (it removes them when the last worker is gone).
    pub unlink_unix_sockets: bool,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            limits: Limits::default(),
            first_data_timeout: Duration::from_secs(30),
            persistent_timeout: Duration::from_secs(65),
            write_timeout: Duration::from_secs(30),
            keep_alive: true,
            max_keep_alive: 999,
            body_in_memory_max: 112 * 1024,
            max_buffered_response: 16 * 1024 * 1024,
            temp_dir: std::env::temp_dir(),
            min_threads: 0,
            max_threads: 5,
            idle_thread_trim: Duration::from_secs(30),
            handoff: Handoff::GvlAware,
            proxy_protocol: false,
            drain_on_shutdown: false,
            new_connection_hold: None,
            max_accept_wait: Duration::from_millis(10),
            busy_accept_delay: None,
            reactor_writes_after: Some(Duration::from_micros(50)),
            unlink_unix_sockets: true,
        }
    }
}

/// State shared by the reactor, every connection and every responder.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) config: ServerConfig,
    pub(crate) queue: Arc<WorkQueue>,
    /// Set once a graceful stop began: no new connections, no more keep-alive.
    pub(crate) stopping: AtomicBool,
    /// When the server started; `last_activity` counts milliseconds from here.
    pub(crate) started: Instant,
    /// The last accepted connection or received request (for `idle_timeout`).
    pub(crate) last_activity: AtomicU64,
    /// Buffers for bodies read into memory, back from the pool threads for the next body.
    pub(crate) body_buffers: Arc<BodyBuffers>,
}

impl Shared {
    /// Notes that a connection was accepted or a request arrived.
    pub(crate) fn touch(&self) {
        let ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_activity.store(ms, Ordering::Relaxed);
    }
}

/// Exit status of a process whose reactor thread panicked (`EX_SOFTWARE`: an internal error).
pub const REACTOR_PANIC_EXIT: i32 = 70;

/// The reactor thread panicked: no connection can be accepted or finished any more, and the
/// pool threads would wait forever for work or for their clients. The process ends, logged and
/// with [`REACTOR_PANIC_EXIT`], so a supervisor (or the cluster master) starts a new one.
/// (Panics in one connection's task are caught by tokio and end only that connection.)
fn reactor_panicked(panic: &(dyn std::any::Any + Send)) -> ! {
    let message = panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "panic".to_string());
    log::error(&format!(
        "catamount: the reactor thread panicked ({message}); ending the process"
    ));
    std::process::exit(REACTOR_PANIC_EXIT)
}

/// How the reactor ended, once it has: set by the reactor thread, awaited by [`Server::wait`].
type Finished = Arc<(Mutex<Option<Result<(), String>>>, Condvar)>;

/// A running server: the reactor thread and the queue pool threads serve from.
pub struct Server {
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    finished: Finished,
    reactor: Mutex<Option<JoinHandle<()>>>,
    unix_paths: Vec<PathBuf>,
}

impl Server {
    /// Starts the reactor on its own thread, serving `listeners`.
    pub fn start(config: ServerConfig, listeners: Vec<BoundListener>) -> io::Result<Server> {
        let queue = Arc::new(WorkQueue::new(
            config.min_threads,
            config.max_threads,
            config.idle_thread_trim,
            config.handoff,
        ));
        let body_buffers = BodyBuffers::for_limit(config.body_in_memory_max);
        let shared = Arc::new(Shared {
            body_buffers,
            config,
            queue,
            stopping: AtomicBool::new(false),
            started: Instant::now(),
            last_activity: AtomicU64::new(0),
        });
        let unix_paths = listeners
            .iter()
            .filter(|_| shared.config.unlink_unix_sockets)
            .filter_map(|l| l.unix_path.clone())
            .collect();
        let (stop, stop_rx) = watch::channel(false);
        let finished: Finished = Arc::new((Mutex::new(None), Condvar::new()));
        let thread = {
            let shared = shared.clone();
            let finished = finished.clone();
            std::thread::Builder::new()
                .name("catamount-reactor".into())
                .spawn(move || {
                    let run = || reactor::run(shared.clone(), listeners, stop_rx);
                    let result = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(run)) {
                        Ok(result) => result.map_err(|e| e.to_string()),
                        Err(panic) => reactor_panicked(&*panic),
                    };
                    // No connection is left, so no request can come: let the pool drain out.
                    shared.queue.close();
                    let (lock, cv) = &*finished;
                    *lock.lock().unwrap_or_else(|p| p.into_inner()) = Some(result);
                    cv.notify_all();
                })?
        };
        Ok(Server {
            shared,
            stop,
            finished,
            reactor: Mutex::new(Some(thread)),
            unix_paths,
        })
    }

    pub fn queue(&self) -> &Arc<WorkQueue> {
        &self.shared.queue
    }

    pub fn config(&self) -> &ServerConfig {
        &self.shared.config
    }

    /// Begins a graceful stop: close the listeners, close idle connections, let in-flight
    /// requests finish (their responses say `connection: close`). Returns at once.
    pub fn stop(&self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        let _ = self.stop.send(true);
    }

    /// How long since the last accepted connection or received request (or since the start).
    /// Unlike Puma's `idle_timeout`, which only counts new connections, a keep-alive connection
    /// that is still sending requests keeps the server up.
    pub fn idle_for(&self) -> Duration {
        let last = Duration::from_millis(self.shared.last_activity.load(Ordering::Relaxed));
        self.shared.started.elapsed().saturating_sub(last)
    }

    /// Bytes of memory held by request bodies being read or waiting for a pool thread (kept
    /// buffers waiting for reuse not counted). Follows the bytes clients sent, not the lengths
    /// they announced.
    pub fn body_buffer_bytes(&self) -> usize {
        self.shared.body_buffers.in_use()
    }

    /// True once the reactor has ended (every connection closed after a stop).
    pub fn is_finished(&self) -> bool {
        let (lock, _) = &*self.finished;
        lock.lock().unwrap_or_else(|p| p.into_inner()).is_some()
    }

    pub fn is_stopping(&self) -> bool {
        self.shared.stopping.load(Ordering::SeqCst)
    }

    /// Blocks until the reactor has finished (every connection closed), or `waiter` is
    /// interrupted (then returns None). Call it without the GVL.
    pub fn wait(&self, waiter: &Waiter) -> Option<Result<(), String>> {
        let (lock, cv) = &*self.finished;
        let mut done = lock.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some(result) = done.clone() {
                drop(done);
                if let Some(handle) = self
                    .reactor
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .take()
                {
                    let _ = handle.join();
                }
                for path in &self.unix_paths {
                    let _ = std::fs::remove_file(path);
                }
                return Some(result);
            }
            if waiter.is_interrupted() {
                return None;
            }
            done = cv
                .wait_timeout(done, Duration::from_millis(100))
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }
}
