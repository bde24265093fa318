//! Catamount's server core, with no Ruby in it.
//!
//! - [`listener`]: opening the sockets named by bind URLs.
//! - `reactor`: the thread that owns every connection: accepts, buffers whole requests, finishes
//!   responses, keeps idle keep-alive connections.
//! - [`dispatch`]: the queue between the reactor and the Ruby thread pool, and the pool's books.
//! - [`request`] / [`response`]: what a pool thread gets (a whole [`Request`]) and answers with
//!   (a [`Responder`] that writes without ever blocking the thread on a slow client).
//! - [`body_buffers`]: request-body buffers kept for reuse between the reactor and the pool.
//! - `server`: [`Server`], starting and stopping the reactor; `shared`: what the reactor and its
//!   connections share.
//!
//! The Ruby extension drives this from pool threads: [`WorkQueue::pop`] a [`Job`], run the app,
//! write through its [`Responder`].
//!
//! The modules' dependencies run one way: `dispatch`, `stream`, `body_buffers`, `log`, `spill`
//! and `listener` depend on no other module; `response` on `dispatch` and `stream`; `request` on
//! `response`; `shared` on `request`; `reactor` on `shared`; `server` on `reactor`. This file
//! holds [`ServerConfig`] and the re-exports.

pub mod body_buffers;
pub mod dispatch;
pub mod listener;
pub mod log;
mod reactor;
pub mod request;
pub mod response;
mod server;
mod shared;
mod spill;
mod stream;
#[cfg(feature = "test-hooks")]
mod test_hooks;

use std::path::PathBuf;
use std::time::Duration;

pub use body_buffers::BodyBuffer;
pub use catamount_http::Limits;
pub use dispatch::{Handoff, PoolAction, PoolStats, Seat, Wait, Waiter};
pub use listener::{
    bind_all, bind_all_inheriting, BoundListener, InheritedSocket, ListenError, Listener,
};
pub use request::{Body, Job, Peer, Pop, Request, WorkQueue};
pub use response::{Responder, WriteRoute};
pub use server::{Server, REACTOR_PANIC_EXIT};

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
