//! [`Server`]: a running server, its reactor thread and the queue pool threads serve from;
//! starting, stopping and waiting for it.

use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::body_buffers::BodyBuffers;
use crate::config::ServerConfig;
use crate::dispatch::Waiter;
use crate::hand_over::HandedOver;
use crate::listener::BoundListener;
use crate::log;
use crate::metrics::Metrics;
use crate::reactor;
use crate::request::WorkQueue;
use crate::response::Responding;
use crate::shared::Shared;

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
    // The line goes out before the process ends (lines go through the log's writer thread).
    log::flush(Duration::from_secs(1));
    let _ = io::Write::flush(&mut io::stderr());
    match FATAL_EXIT.get() {
        Some(exit_now) => exit_now(REACTOR_PANIC_EXIT),
        None => std::process::exit(REACTOR_PANIC_EXIT),
    }
}

/// How the process ends from the reactor thread, set by the embedder ([`set_fatal_exit`]).
static FATAL_EXIT: OnceLock<fn(i32) -> !> = OnceLock::new();

/// Sets how a reactor panic ends the process. Without it `std::process::exit` is used, which
/// runs the C library's exit handlers: fine for a Rust program, but in a Ruby process other
/// threads still run Ruby, and its handlers can hang or crash under them; the extension passes
/// an `_exit`. The first call wins.
pub fn set_fatal_exit(exit_now: fn(i32) -> !) {
    let _ = FATAL_EXIT.set(exit_now);
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
    /// Starts the reactor on its own thread, serving `listeners`, with counters of its own.
    pub fn start(config: ServerConfig, listeners: Vec<BoundListener>) -> io::Result<Server> {
        Server::start_counting(config, listeners, Arc::default())
    }

    /// [`start`](Self::start), counting into `metrics` (kept by the caller across servers).
    pub fn start_counting(
        config: ServerConfig,
        listeners: Vec<BoundListener>,
        metrics: Arc<Metrics>,
    ) -> io::Result<Server> {
        let queue = Arc::new(
            WorkQueue::new(
                config.min_threads,
                config.max_threads,
                config.idle_thread_trim,
                config.handoff,
            )
            .with_io_threads(config.max_io_threads)
            .with_requests_per_thread(config.requests_per_thread),
        );
        let body_buffers = BodyBuffers::for_limit(config.body_in_memory_max);
        let stopping = Arc::new(AtomicBool::new(false));
        let shared = Arc::new(Shared {
            body_buffers,
            handed_over: Arc::new(HandedOver::with_spill(
                config.temp_dir.clone(),
                config.max_spilled_total,
            )),
            metrics,
            responding: Arc::new(Responding {
                stopping: stopping.clone(),
                reactor_writes_after: config.reactor_writes_after,
                max_buffered_response: config.max_buffered_response,
                max_buffered_total: config.max_buffered_total,
            }),
            config,
            queue,
            stopping,
            stop_began: OnceLock::new(),
            drain_ended: AtomicBool::new(false),
            cut_at_drain: Mutex::default(),
            started: Instant::now(),
            last_activity: AtomicU64::new(0),
            relays: Default::default(),
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

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.shared.metrics
    }

    pub fn config(&self) -> &ServerConfig {
        &self.shared.config
    }

    /// Begins a graceful stop: close the listeners, close idle connections, let in-flight
    /// requests finish (their responses say `connection: close`). Returns at once.
    pub fn stop(&self) {
        let _ = self.shared.stop_began.set(Instant::now());
        self.shared.stopping.store(true, Ordering::SeqCst);
        let _ = self.stop.send(true);
    }

    /// Ends a stop's drain time now (a hot restart, a second TERM): streams still being
    /// written are cut within a moment. Only meaningful once [`stop`](Self::stop) was called.
    pub fn end_drain(&self) {
        self.shared.drain_ended.store(true, Ordering::SeqCst);
    }

    /// The responses cut at the end of the drain time so far (each described once: the list is
    /// emptied), for the log.
    pub fn take_cut_at_drain(&self) -> Vec<String> {
        std::mem::take(
            &mut *self
                .shared
                .cut_at_drain
                .lock()
                .unwrap_or_else(|p| p.into_inner()),
        )
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

    /// Response bytes handed to the reactor for slow clients and not written yet, now and at
    /// most so far (see `ServerConfig::max_buffered_total`).
    pub fn handed_over_bytes(&self) -> (u64, u64) {
        let h = &self.shared.handed_over;
        (h.now(), h.peak())
    }

    /// Response bytes for slow clients in spill files (past the memory bounds) and not sent
    /// yet, now and at most so far (see `ServerConfig::max_spilled_total`).
    pub fn spilled_bytes(&self) -> (u64, u64) {
        self.shared.handed_over.spilled()
    }

    /// How many wakes of the reactor pool threads left to its next turn so far (see
    /// `Responder::write_whole`; for tests).
    pub fn deferred_wakes(&self) -> u64 {
        self.shared.handed_over.deferred.count()
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
