//! [`ServerConfig`]: everything the server core needs to know, made from the resolved options.

use std::path::PathBuf;
use std::time::Duration;

use catamount_config::options::{ReactorScheduling, RemoteAddress, ThreadHandoff};
use catamount_config::Options;
use catamount_http::Limits;

use crate::dispatch::Handoff;

/// Everything the reactor needs to know: made from the resolved [`Options`]
/// (`ServerConfig::from(&options)`); its defaults are those of `Options::default()`.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Request size limits and accepted methods (see `catamount_http::Limits`).
    pub limits: Limits,
    /// Longest wait for more bytes of a request that has begun (and for the first request on a
    /// new connection). Option `first_data_timeout`.
    pub first_data_timeout: Duration,
    /// Longest idle time between requests on a keep-alive connection. Option `persistent_timeout`.
    pub persistent_timeout: Duration,
    /// A response write that makes no progress for this long aborts the connection. Default 30 s.
    pub write_timeout: Duration,
    /// Allow keep-alive at all. Options `enable_keep_alives`, `queue_requests`.
    pub keep_alive: bool,
    /// Requests served on one connection before it is closed. Option `max_keep_alive`.
    pub max_keep_alive: u64,
    /// Bodies up to this size stay in memory; larger ones go to a temporary file. Default 112 KiB
    /// (Puma's threshold). Chunked bodies always go to a file.
    pub body_in_memory_max: usize,
    /// Bytes of a response handed to the reactor in memory for one slow client; past it the
    /// rest is spilled to a temporary file (`max_spilled_total`) or the producing pool thread
    /// waits for its client (without the GVL). Option `max_buffered_response`. See
    /// `hand_over.rs`.
    pub max_buffered_response: u64,
    /// Bytes handed to the reactor in memory for slow clients over all connections, past which
    /// more is spilled, or (spill full) a pool thread hands over more only as fast as its own
    /// client reads. Option `max_buffered_total`.
    pub max_buffered_total: u64,
    /// Bytes of responses for slow clients the process may hold in temporary files (in
    /// `temp_dir`) past the memory bounds; 0: never spill. Option `max_spilled_total`.
    pub max_spilled_total: u64,
    /// Directory for request-body and spilled-response temporary files. Default `$TMPDIR` or
    /// `/tmp`.
    pub temp_dir: PathBuf,
    pub min_threads: usize,
    pub max_threads: usize,
    /// Threads allowed beyond `max_threads` for requests marked IO-bound (Puma 8's
    /// `max_io_threads`; see `dispatch`). Default 0.
    pub max_io_threads: usize,
    /// How many requests one pool thread runs at once: 1, or `max_fibers_per_thread` in the
    /// fiber mode (the reactor accepts up to this times `max_threads`).
    pub requests_per_thread: usize,
    /// How long a pool thread above `min_threads` may idle before it exits. Default 30 s.
    pub idle_thread_trim: Duration,
    /// Whether the reactor and log writer threads run under Linux's `SCHED_BATCH` policy (set
    /// by whoever starts them: the scheduler is inherited by the threads a thread starts). A
    /// reactor woken by each arriving request on a CPU where a pool thread runs Ruby otherwise
    /// preempts it, a context switch and a cache refill per request; batch waits for the pool
    /// thread to block or for the tick. Environment `CATAMOUNT_REACTOR_SCHEDULING`; by default
    /// where a serving process's share of the CPUs is one ([`batch_scheduling`]).
    pub batch_scheduling: bool,
    /// When a queued request goes to another pool thread: once it could run it (the GVL is
    /// free; default), or at once as in Puma. See `dispatch::handoff`.
    pub handoff: Handoff,
    /// Expect a PROXY protocol header of this version at the start of each connection; its
    /// source address becomes the peer. Option `set_remote_address proxy_protocol: :v1/:v2`.
    pub proxy_protocol: Option<catamount_http::ProxyVersion>,
    /// On a graceful stop, accept and serve the connections already in the listen backlog
    /// before closing the listeners. Option `drain_on_shutdown`.
    pub drain_on_shutdown: bool,
    /// How long after a graceful stop began an open-ended stream (a body without a length, see
    /// `Responder::mark_streaming`) may go on; then its connection is cut and logged. Responses
    /// of known length and requests whose app has not answered yet are not cut. Option
    /// `drain_timeout`.
    pub drain_timeout: Duration,
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
    /// accepting, so an idle worker takes it first. None in single mode.
    pub busy_accept_delay: Option<Duration>,
    /// A pool thread that has been on a request this long hands its finished small response
    /// to the reactor to write, when other requests wait for a thread; None: pool threads
    /// always write themselves. Default 50 µs, None when the process has one CPU (see
    /// [`reactor_writes_after`]). See [`Responder::write_whole`].
    pub reactor_writes_after: Option<Duration>,
    /// Remove UNIX socket files when the server ends. Default true; false in cluster workers,
    /// whose listeners belong to the master (it removes them when the last worker is gone).
    pub unlink_unix_sockets: bool,
    /// Print `- ` debug lines about connections (a TLS handshake that failed). Option `debug`
    /// (`--debug`; the ext adds `PUMA_DEBUG`).
    pub debug: bool,
    /// A request still running this long is answered by the server and its thread interrupted
    /// (the ext's watch does it through [`Responder::overdue`]). None: no deadline. Option
    /// `request_timeout`.
    pub request_timeout: Option<Duration>,
    /// How long an interrupted thread may take to leave its request before it counts as lost.
    /// Option `request_timeout_grace`.
    pub request_timeout_grace: Duration,
    /// The status a timed-out request is answered with. Option `request_timeout_status`.
    pub request_timeout_status: u16,
}

impl Default for ServerConfig {
    /// The server core's config for every option at its default ([`Options::default`]): the
    /// numbers live once, in the option definitions and in [`From<&Options>`].
    fn default() -> Self {
        ServerConfig::from(&Options::default())
    }
}

impl From<&Options> for ServerConfig {
    /// What the reactor and the queue need of the resolved options, plus the core's own knobs
    /// (no option sets them; cluster workers change some after this).
    fn from(o: &Options) -> Self {
        // The CPUs one serving process counts on: both the scheduling policy and the reactor's
        // writes follow it.
        let cpus = cpus_per_process(std::thread::available_parallelism().ok(), o.workers);
        ServerConfig {
            limits: Limits {
                max_body: o.http_content_length_limit,
                methods: o.http_methods.policy(),
                ..Limits::default()
            },
            first_data_timeout: o.first_data_timeout,
            persistent_timeout: o.persistent_timeout,
            write_timeout: Duration::from_secs(30),
            keep_alive: o.enable_keep_alives,
            max_keep_alive: o.max_keep_alive,
            body_in_memory_max: 112 * 1024,
            max_buffered_response: o.max_buffered_response,
            max_buffered_total: o.max_buffered_total,
            max_spilled_total: o.max_spilled_total,
            temp_dir: std::env::temp_dir(),
            min_threads: o.min_threads as usize,
            max_threads: o.max_threads as usize,
            max_io_threads: o.max_io_threads as usize,
            requests_per_thread: if o.fiber_scheduler {
                o.max_fibers_per_thread as usize
            } else {
                1
            },
            idle_thread_trim: Duration::from_secs(30),
            batch_scheduling: batch_scheduling(o.reactor_scheduling, cpus),
            handoff: match o.thread_handoff {
                ThreadHandoff::GvlAware => Handoff::GvlAware,
                ThreadHandoff::Eager => Handoff::Eager,
            },
            proxy_protocol: match o.remote_address {
                RemoteAddress::ProxyV1 => Some(catamount_http::ProxyVersion::V1),
                RemoteAddress::ProxyV2 => Some(catamount_http::ProxyVersion::V2),
                _ => None,
            },
            drain_on_shutdown: o.drain_on_shutdown,
            drain_timeout: o.drain_timeout,
            new_connection_hold: None,
            max_accept_wait: Duration::from_millis(10),
            // Only a server that runs as one of several workers ever starts with it.
            busy_accept_delay: (o.workers >= 2 && !o.wait_for_less_busy_worker.is_zero())
                .then_some(o.wait_for_less_busy_worker),
            reactor_writes_after: reactor_writes_after(cpus),
            unlink_unix_sockets: true,
            debug: o.debug,
            request_timeout: o.request_timeout,
            request_timeout_grace: o.request_timeout_grace,
            request_timeout_status: u16::try_from(o.request_timeout_status).unwrap_or(503),
        }
    }
}

/// The CPUs one serving process can count on under load: all the process may use in single
/// mode, an even share of them (at least one) for each of `workers` cluster workers, since
/// every worker's pool and reactor run on the same CPUs as the others'.
pub fn cpus_per_process(
    cpus: Option<std::num::NonZeroUsize>,
    workers: u32,
) -> Option<std::num::NonZeroUsize> {
    let cpus = cpus?;
    match usize::try_from(workers) {
        Ok(w) if w >= 2 => {
            std::num::NonZeroUsize::new(cpus.get() / w).or(std::num::NonZeroUsize::new(1))
        }
        _ => Some(cpus),
    }
}

/// When a pool thread leaves a slow request's response to the reactor (`reactor_writes_after`),
/// given the CPUs this process may use (`available_parallelism`: its affinity mask and its
/// cgroup's CPU quota). The hand-over pays only when the reactor writes on another CPU while the
/// pool thread goes on with Ruby. With one CPU the reactor can only run by preempting the pool
/// thread: the same send, plus a wake-up and two context switches per response on that CPU
/// (Sinatra pinned to one CPU: two reactor wake-ups a request, docs/benchmarks.md "The server's
/// share on one CPU"). Unknown counts as several, the common case.
pub fn reactor_writes_after(cpus: Option<std::num::NonZeroUsize>) -> Option<Duration> {
    match cpus {
        Some(n) if n.get() == 1 => None,
        _ => Some(Duration::from_micros(50)),
    }
}

/// Whether the reactor runs under `SCHED_BATCH` (`ServerConfig::batch_scheduling`), given the
/// CPUs this serving process can count on ([`cpus_per_process`]). `auto` chooses it when that
/// share is one CPU: a single process that may use one CPU, or cluster workers as many as the
/// CPUs (or more). There the pool threads' Ruby keeps every CPU busy under load, and a reactor
/// woken by a request could only run by preempting a pool thread mid-request (measured on two
/// CPUs, `docs/benchmarks.md`: one process pinned, hello world 1.3x and Sinatra 1.2x the rate;
/// `-w 2`, Sinatra 1.2x with the p99 a third, Rails 1.1x, hello world level). Not with CPUs to
/// spare: the reactor wakes on an idle one, and batch measured level in rate while `wrk`'s p99
/// grew. Unknown CPUs count as several.
pub fn batch_scheduling(
    policy: ReactorScheduling,
    cpus_per_process: Option<std::num::NonZeroUsize>,
) -> bool {
    match policy {
        ReactorScheduling::Batch => true,
        ReactorScheduling::Normal => false,
        ReactorScheduling::Auto => cpus_per_process.is_some_and(|n| n.get() == 1),
    }
}

#[cfg(test)]
mod one_cpu_tests {
    use super::*;
    use std::num::NonZeroUsize;

    #[test]
    fn the_reactor_writes_slow_responses_only_beside_another_cpu() {
        assert_eq!(reactor_writes_after(NonZeroUsize::new(1)), None);
        assert_eq!(
            reactor_writes_after(NonZeroUsize::new(2)),
            Some(Duration::from_micros(50))
        );
        assert_eq!(reactor_writes_after(None), Some(Duration::from_micros(50)));
    }

    #[test]
    fn auto_scheduling_is_batch_where_a_process_has_one_cpu() {
        let auto = |n, workers| {
            batch_scheduling(
                ReactorScheduling::Auto,
                cpus_per_process(NonZeroUsize::new(n), workers),
            )
        };
        assert!(auto(1, 0));
        assert!(auto(1, 1));
        assert!(!auto(2, 0), "one process, a CPU to spare");
        assert!(!auto(2, 1), "one worker, a CPU to spare");
        assert!(auto(1, 2), "two workers on one CPU");
        assert!(auto(2, 2), "as many workers as CPUs");
        assert!(auto(3, 2), "a CPU and a half each");
        assert!(!auto(4, 2), "two CPUs each");
        assert!(!auto(0, 2), "CPUs unknown");
        let batch = batch_scheduling(ReactorScheduling::Batch, NonZeroUsize::new(4));
        assert!(batch);
        let normal = batch_scheduling(ReactorScheduling::Normal, NonZeroUsize::new(1));
        assert!(!normal);
    }

    #[test]
    fn a_cluster_worker_counts_its_share_of_the_cpus() {
        let cpus = |n| NonZeroUsize::new(n);
        assert_eq!(cpus_per_process(cpus(2), 0), cpus(2));
        assert_eq!(cpus_per_process(cpus(2), 1), cpus(2));
        assert_eq!(cpus_per_process(cpus(2), 2), cpus(1));
        assert_eq!(cpus_per_process(cpus(2), 3), cpus(1));
        assert_eq!(cpus_per_process(cpus(8), 4), cpus(2));
        assert_eq!(cpus_per_process(None, 2), None);
    }
}
