//! `Catamount::Native::Server`: the Ruby handle on a server, and the Ruby thread pool's loop.
//!
//! The pool's threads are Ruby threads (the launcher creates them when
//! [`next_pool_action`](RbServer::next_pool_action) says so) that spend their life inside
//! [`run_worker`](RbServer::run_worker): take a request (without the GVL when none is queued),
//! build the env, call the app, write the response, repeat.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use magnus::scan_args::{get_kwargs, scan_args};
use magnus::value::{Opaque, ReprValue};
use magnus::{prelude::*, Error, RHash, Ruby, Symbol, Value};

use catamount_server::metrics::{HistogramSnapshot, BOUNDS_SECONDS};
use catamount_server::{
    bind_all_inheriting, log, BoundListener, InheritedSocket, Job, Metrics, PoolAction, Request,
    Seat, SeatId, Server, ServerConfig, Wait, Waiter,
};

use catamount_config::options::RemoteAddress;

use crate::config::RbOptions;
use crate::errors;
use crate::ffi::{self, Blocked};
use crate::fibers;
use crate::rack::{self, hijack::Lending, RackSettings, RemoteAddr};
use crate::timeout::{self, Left, Watch};

/// How long a stopped server waits for queued log lines to be written (a reader that stopped
/// reading must not keep the process from ending).
const LOG_FLUSH_ON_STOP: std::time::Duration = std::time::Duration::from_secs(1);
/// How long a launcher line waits to be written (see [`log_line`]).
const LOG_LINE_WAIT: std::time::Duration = std::time::Duration::from_millis(500);

/// `Native.log_line(fd, line)`: the launcher's lines for stdout (1) or stderr (2) go through the
/// server's log queue once it has a writer, in order with the server's own lines, and wait for
/// it (without the GVL) at most `LOG_LINE_WAIT`, and not at all after a wait ran out while the
/// writer has not moved since (`log::flush_unless_stuck`): a stuck log reader cannot stop a
/// stop, nor make it take half a second a line. False when there is no writer (the launcher
/// then writes the line itself).
pub fn log_line(ruby: &Ruby, fd: i32, line: String) -> Result<bool, Error> {
    let stream = match fd {
        1 => log::Stream::Out,
        2 => log::Stream::Err,
        _ => return Ok(false),
    };
    if !log::has_writer() {
        return Ok(false);
    }
    log::emit(stream, line);
    blocking(ruby, || log::flush_unless_stuck(LOG_LINE_WAIT), &|| {})?;
    Ok(true)
}

/// `Native.log_flush(seconds)`: waits (without the GVL) at most `seconds` for the lines queued so
/// far to be written; true when they were (or no writer runs). For a process about to `exec` or
/// `exit!`, which would lose them.
pub fn log_flush(ruby: &Ruby, seconds: f64) -> Result<bool, Error> {
    let limit = std::time::Duration::try_from_secs_f64(seconds).unwrap_or_default();
    Ok(blocking(ruby, || log::flush(limit), &|| {})?.unwrap_or(false))
}

#[magnus::wrap(class = "Catamount::Native::Server", free_immediately, size)]
pub struct RbServer {
    config: ServerConfig,
    /// Listeners bound at `new`, taken by `start`.
    listeners: Mutex<Vec<BoundListener>>,
    displays: Vec<String>,
    /// Which of `displays` were handed over by the previous process.
    inherited: Vec<String>,
    /// A second descriptor for every listener: kept open while the reactor stops, so a hot
    /// restart can hand the sockets (and the connections queued on them) to the next process,
    /// and a stopped server can serve them again (`rearm`). Dropped by `close_listeners` on a
    /// plain stop.
    kept: Mutex<Vec<BoundListener>>,
    /// The UNIX socket files this process owns.
    socket_files: Vec<std::path::PathBuf>,
    /// The running (or stopped, not yet re-armed) server.
    server: Mutex<Option<Arc<Server>>>,
    /// Requests served by servers this handle ran before the current one (`rearm`), so
    /// `requests_count` counts the life of the process.
    requests_before: AtomicU64,
    /// The counters behind `stats` beyond the pool's books, for the life of the process (every
    /// server this handle runs counts into them).
    metrics: Arc<Metrics>,
    rack: RackSettings,
    /// `out_of_band` hooks, run on a pool thread when a request ends and every thread is idle.
    out_of_band: Option<Opaque<Value>>,
    /// The fiber mode's `puma.mark_as_io_bound`: does nothing (a waiting request frees its
    /// thread already), there for apps that call it unguarded. None in thread mode.
    fiber_io_mark: Option<Opaque<Value>>,
    /// Set in a cluster worker: the listeners belong to the master.
    in_worker: AtomicBool,
    /// `request_timeout`'s watch over the running server's requests (a new one per `start`).
    watch: Mutex<Option<Arc<Watch>>>,
}

fn locked<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn fetch(hash: RHash, key: &str) -> Result<Value, Error> {
    hash.fetch::<_, Value>(Ruby::get_with(hash).to_symbol(key))
}

/// Keeps `v` alive for the life of the process, for use from any pool thread.
fn keep<T: ReprValue>(v: T) -> Opaque<T> {
    Ruby::get_with(v).gc_register_mark_object(v);
    Opaque::from(v)
}

fn frozen(ruby: &Ruby, s: &str) -> Value {
    let v = ruby.str_new(s);
    v.freeze();
    v.as_value()
}

/// `settings[:inherited]`: `[[fd, url_or_nil], ...]` read from the environment by the launcher.
/// Descriptors that are not open sockets are skipped (the bind then opens a new socket).
fn inherited_sockets(settings: RHash) -> Result<Vec<InheritedSocket>, Error> {
    let list: Option<Vec<(i32, Option<String>)>> =
        settings.lookup(Ruby::get_with(settings).to_symbol("inherited"))?;
    let mut seen = std::collections::HashSet::new();
    Ok(list
        .unwrap_or_default()
        .into_iter()
        .filter(|(fd, _)| seen.insert(*fd))
        .filter_map(|(fd, url)| {
            ffi::adopt_inherited_socket(fd).map(|fd| InheritedSocket { url, fd })
        })
        .collect())
}

/// `Native.become_child_subreaper`: see [`ffi::become_child_subreaper`]. Raises a
/// `RuntimeError` naming the reason where the kernel refuses.
pub fn become_child_subreaper(ruby: &Ruby) -> Result<(), Error> {
    ffi::become_child_subreaper().map_err(|e| {
        Error::new(
            ruby.exception_runtime_error(),
            format!("could not become the reaper of forked workers: {e}"),
        )
    })
}

/// A second descriptor for each listener (see `RbServer::kept`).
fn copies(ruby: &Ruby, listeners: &[BoundListener]) -> Result<Vec<BoundListener>, Error> {
    listeners
        .iter()
        .map(|l| {
            l.try_clone().map_err(|e| {
                Error::new(
                    errors::listen_error(ruby),
                    format!("could not keep a second descriptor for {}: {e}", l.display),
                )
            })
        })
        .collect()
}

/// An optional setting: absent or nil is None.
fn keep_optional(hash: RHash, key: &str) -> Result<Option<Opaque<Value>>, Error> {
    let v: Option<Value> = hash.lookup(Ruby::get_with(hash).to_symbol(key))?;
    Ok(v.filter(|v| !v.is_nil()).map(keep))
}

/// Where the development certificate is kept: `$XDG_CACHE_HOME/catamount`, else
/// `~/.cache/catamount`.
pub(crate) fn development_certificate_cache() -> Option<std::path::PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| std::path::PathBuf::from(h).join(".cache")))?;
    Some(base.join("catamount"))
}

impl RbServer {
    /// `Server.new(options, rack_settings)`: binds every listener now, so a port in use fails
    /// the boot before the app loads. Raises `Catamount::ListenError`.
    pub fn new(ruby: &Ruby, options: &RbOptions, settings: RHash) -> Result<RbServer, Error> {
        let o = &options.0;
        let inherited = inherited_sockets(settings)?;
        // `ssl_bind` without cert and key: a self-signed certificate, in development only.
        let development = matches!(o.environment.as_str(), "development" | "test");
        catamount_server::listener::allow_development_certificate(
            development.then(development_certificate_cache).flatten(),
        );
        let listeners = bind_all_inheriting(&o.binds, inherited, o.activated_sockets)
            .map_err(|e| Error::new(errors::listen_error(ruby), e.to_string()))?;
        let displays = listeners.iter().map(|l| l.display.clone()).collect();
        let inherited = listeners
            .iter()
            .filter(|l| l.inherited)
            .map(|l| l.display.clone())
            .collect();
        let socket_files = listeners
            .iter()
            .filter_map(|l| l.unix_path.clone())
            .collect();
        let kept = copies(ruby, &listeners)?;
        let mut config = ServerConfig::from(o);
        config.debug |= std::env::var_os("PUMA_DEBUG").is_some();
        let rack_version = fetch(settings, "rack_version")?;
        let env_template = rack::env::template(
            ruby,
            &rack::env::Shared {
                multithread: o.max_threads > 1,
                multiprocess: bool::try_convert(fetch(settings, "multiprocess")?)?,
                rack_version: (!rack_version.is_nil()).then_some(rack_version),
                script_name: fetch(settings, "script_name")?,
                server_software: fetch(settings, "server_software")?,
                errors: fetch(settings, "errors")?,
                hijack: rack::hijack::callable(ruby)?,
            },
        )?;
        let rack = RackSettings {
            set_http_version: bool::try_convert(fetch(settings, "http_version")?)?,
            env_template: keep(env_template),
            null_input: keep(fetch(settings, "null_input")?),
            show_errors: matches!(o.environment.as_str(), "development" | "test"),
            log_requests: o.log_requests,
            log_json: o.log_requests && o.log_requests_json,
            error_handler: keep_optional(settings, "lowlevel_error_handler")?,
            access_logger: keep_optional(settings, "access_logger")?,
            remote_addr: match &o.remote_address {
                RemoteAddress::Fixed(v) => RemoteAddr::Fixed(keep(frozen(ruby, v))),
                RemoteAddress::Header(h) => RemoteAddr::Header(h.clone().into_bytes()),
                RemoteAddress::Socket | RemoteAddress::ProxyV1 | RemoteAddress::ProxyV2 => {
                    RemoteAddr::Socket
                }
            },
            url_scheme: o.rack_url_scheme.as_deref().map(|s| keep(frozen(ruby, s))),
            allow_underscore_headers: o.allow_underscore_headers,
            early_hints: o.early_hints,
        };
        Ok(RbServer {
            config,
            listeners: Mutex::new(listeners),
            displays,
            inherited,
            kept: Mutex::new(kept),
            socket_files,
            server: Mutex::new(None),
            requests_before: AtomicU64::new(0),
            metrics: Arc::default(),
            rack,
            out_of_band: keep_optional(settings, "out_of_band")?,
            fiber_io_mark: o.fiber_scheduler.then(|| {
                let mark = ruby.proc_from_fn(|ruby: &Ruby, _args: &[Value], _block| ruby.qnil());
                mark.as_value().freeze();
                keep(mark.as_value())
            }),
            in_worker: AtomicBool::new(false),
            watch: Mutex::new(None),
        })
    }

    /// What each listener is, for the "Listening on ..." lines.
    pub fn listening(&self) -> Vec<String> {
        self.displays.clone()
    }

    /// The listeners (as in [`listening`](Self::listening)) the previous process handed over.
    pub fn inherited(&self) -> Vec<String> {
        self.inherited.clone()
    }

    /// `[[fd, bind_url], ...]`: the descriptors a hot restart passes to the next process; the
    /// URL is nil for systemd's activated sockets no bind asked for (handed on as systemd's).
    pub fn restart_fds(&self) -> Vec<(i32, Option<String>)> {
        use std::os::fd::{AsFd, AsRawFd};
        locked(&self.kept)
            .iter()
            .map(|l| {
                let url = (!l.activated).then(|| l.bind.clone());
                (l.listener.as_fd().as_raw_fd(), url)
            })
            .collect()
    }

    /// Closes this process's descriptors of the listening sockets that the reactor does not
    /// hold (the restart copies; in a cluster master, the listeners themselves), so a stopping
    /// server refuses new connections instead of queueing them for nobody.
    pub fn close_listeners(&self) {
        locked(&self.kept).clear();
        locked(&self.listeners).clear();
    }

    /// Marks this process as a cluster worker (call after the fork, before `start`): its server
    /// serves the inherited listeners but leaves UNIX socket files to the master, and counts
    /// its requests (and every other stat) from zero (a worker forked from worker 0 does not
    /// inherit its counts).
    /// Its TLS listeners read their certificates and keys again (a renewed certificate is
    /// served by the workers of a phased restart); one that no longer loads keeps the one
    /// loaded before, with an error line each time a worker boots.
    pub fn become_worker(&self) {
        self.in_worker.store(true, Ordering::SeqCst);
        self.requests_before.store(0, Ordering::Relaxed);
        self.metrics.reset();
        let mut problems = Vec::new();
        for list in [&self.listeners, &self.kept] {
            // `kept` holds second descriptors of the same binds: one line per bind.
            for problem in catamount_server::listener::reload_tls(&mut locked(list)) {
                if !problems.contains(&problem) {
                    problems.push(problem);
                }
            }
        }
        for problem in problems {
            catamount_server::log::error(&format!(
                "! TLS certificate not renewed, {problem}; still serving the one loaded before"
            ));
        }
    }

    /// Removes the UNIX socket files of listeners this process bound and never served itself
    /// (the cluster master, once its last worker is gone).
    pub fn unlink_unix_sockets(&self) {
        for path in &self.socket_files {
            let _ = std::fs::remove_file(path);
        }
    }

    /// Makes a stopped server startable again, on the same sockets (`fork_worker`: worker 0
    /// stops serving, forks, and serves again; the forked worker serves too). Call after `wait`
    /// returned: the reactor has ended and no native thread of it is left.
    pub fn rearm(ruby: &Ruby, rb_self: &Self) -> Result<(), Error> {
        let mut slot = locked(&rb_self.server);
        if let Some(server) = slot.as_ref() {
            if !server.is_finished() {
                return Err(Error::new(
                    ruby.exception_runtime_error(),
                    "rearm: the server has not finished",
                ));
            }
        }
        let fresh = copies(ruby, &locked(&rb_self.kept))?;
        if let Some(server) = slot.take() {
            rb_self
                .requests_before
                .fetch_add(server.queue().stats().requests_count, Ordering::Relaxed);
        }
        *locked(&rb_self.listeners) = fresh;
        Ok(())
    }

    /// Starts the reactor thread.
    pub fn start(ruby: &Ruby, rb_self: &Self) -> Result<(), Error> {
        let mut slot = locked(&rb_self.server);
        if slot.is_some() {
            return Err(Error::new(
                ruby.exception_runtime_error(),
                "server already started",
            ));
        }
        let listeners = std::mem::take(&mut *locked(&rb_self.listeners));
        let mut config = rb_self.config.clone();
        // Socket files outlive the reactor: a hot restart hands the socket to the next process,
        // and a cluster's belong to the master. The launcher removes them on a plain stop.
        config.unlink_unix_sockets = false;
        if rb_self.in_worker.load(Ordering::SeqCst) {
            config.new_connection_hold = Some(std::time::Duration::from_millis(50));
        }
        // The reactor and log writer threads block every signal: they are Ruby's to handle.
        // Under the batch policy they never preempt a pool thread running Ruby (see
        // `ServerConfig::batch_scheduling`).
        let batch = config.batch_scheduling;
        let server = ffi::with_signals_blocked(|| {
            let start = || {
                // Without a writer thread lines are written directly, as before: not fatal.
                let _ = log::start_writer();
                Server::start_counting(config, listeners, rb_self.metrics.clone())
            };
            if batch {
                ffi::with_batch_scheduling(start)
            } else {
                start()
            }
        })
        .map_err(|e| {
            Error::new(
                ruby.exception_runtime_error(),
                format!("could not start the reactor: {e}"),
            )
        })?;
        *slot = Some(Arc::new(server));
        *locked(&rb_self.watch) = rb_self.config.request_timeout.map(|limit| {
            Arc::new(Watch::new(
                ruby,
                limit,
                rb_self.config.request_timeout_grace,
                rb_self.config.request_timeout_status,
                rb_self.metrics.clone(),
            ))
        });
        Ok(())
    }

    /// `request_timeout`: watches the running requests' deadlines (call from one thread, which
    /// it keeps). Returns the number of threads just lost (more than 0), or nil once the server
    /// ended (or when no `request_timeout` is set).
    pub fn watch_request_timeouts(ruby: &Ruby, rb_self: &Self) -> Result<Option<usize>, Error> {
        let watch = locked(&rb_self.watch).clone();
        match watch {
            Some(watch) => timeout::watch(ruby, &watch),
            None => Ok(None),
        }
    }

    /// The pool threads lost to `request_timeout` now (a stop does not wait for them).
    pub fn lost_threads(ruby: &Ruby, rb_self: &Self) -> magnus::RArray {
        let lost = locked(&rb_self.watch)
            .clone()
            .map(|w| w.lost_threads(ruby))
            .unwrap_or_default();
        ruby.ary_from_iter(lost)
    }

    fn running(&self, ruby: &Ruby) -> Result<Arc<Server>, Error> {
        locked(&self.server)
            .clone()
            .ok_or_else(|| Error::new(ruby.exception_runtime_error(), "server not started"))
    }

    /// Blocks (without the GVL) until the pool should grow: `:spawn`, or `:closed` at shutdown.
    pub fn next_pool_action(ruby: &Ruby, rb_self: &Self) -> Result<Symbol, Error> {
        let server = rb_self.running(ruby)?;
        let queue = server.queue();
        let waiter = Waiter::new();
        loop {
            let action = blocking(ruby, || queue.next_pool_action(&waiter), &|| {
                queue.interrupt(&waiter)
            })?;
            match action {
                Some(PoolAction::Spawn) => return Ok(ruby.to_symbol("spawn")),
                Some(PoolAction::Closed) => return Ok(ruby.to_symbol("closed")),
                Some(PoolAction::Interrupted) | None => {
                    waiter.reset();
                    // Woken by Ruby's unblocking function: let a kill or Thread#raise land now.
                    ruby.thread_check_ints()?;
                }
            }
        }
    }

    /// The body of every pool thread. Returns when the thread should end (trimmed or shutdown);
    /// raises only what Ruby itself raised into the thread (kill, `Thread#raise`).
    pub fn run_worker(ruby: &Ruby, rb_self: &Self, app: Value) -> Result<(), Error> {
        let server = rb_self.running(ruby)?;
        let queue = server.queue().clone();
        // If this thread leaves by an exception (killed), the pool's books must forget it.
        struct Alive<'a>(&'a catamount_server::WorkQueue, Option<Seat>);
        impl Drop for Alive<'_> {
            fn drop(&mut self) {
                if let Some(seat) = self.1.as_mut() {
                    self.0.thread_died(seat);
                }
            }
        }
        let mut alive = Alive(&queue, Some(queue.thread_started()));
        let io_mark = alive
            .1
            .as_ref()
            .map(|seat| io_bound_mark(ruby, &queue, seat.id()));
        let waiter = Waiter::new();
        let watch = locked(&rb_self.watch).clone();
        let post = watch.map(|w| w.enter(ruby)).transpose()?;
        loop {
            let Some(seat) = alive.1.as_mut() else {
                return Ok(());
            };
            let Some(job) = next_job(ruby, &queue, seat, &waiter)? else {
                alive.1 = None;
                return Ok(());
            };
            // A non-local exit met while serving (the thread killed, a `throw`) goes on from
            // here, after the request was answered or closed; `alive` uncounts the thread.
            serve_watched(ruby, &rb_self.rack, app, *job, io_mark, post.as_ref())?;
            rack::escape::check()?;
            // An IO-bound thread over the pool's limit now leaves it (already uncounted).
            if alive
                .1
                .as_mut()
                .is_some_and(|seat| queue.request_ended(seat))
            {
                alive.1 = None;
                return Ok(());
            }
            rb_self.out_of_band(ruby, &queue)?;
        }
    }

    /// The `out_of_band` hooks, after a request, if the server is quiet.
    fn out_of_band(&self, ruby: &Ruby, queue: &catamount_server::WorkQueue) -> Result<(), Error> {
        if let Some(hook) = self.out_of_band {
            // Only when no other request is running or waiting: the hook (often a GC) then
            // delays no one.
            if queue.is_quiet() {
                ruby.get_inner(hook).funcall::<_, _, Value>("call", ())?;
            }
        }
        Ok(())
    }

    /// `fiber_worker`: books the calling thread as a pool thread of the fiber mode (see
    /// [`fibers`](crate::fibers)).
    pub fn fiber_worker(ruby: &Ruby, rb_self: &Self) -> Result<fibers::RbFiberWorker, Error> {
        let watch = locked(&rb_self.watch).clone();
        fibers::RbFiberWorker::new(ruby, rb_self.running(ruby)?, watch)
    }

    /// `serve_job(worker, app)`: serves the oldest request `worker` took (none: nothing), in the
    /// calling Fiber. Raises only what `run_worker` would (a jump going on, Ruby's own
    /// interrupts).
    pub fn serve_job(
        ruby: &Ruby,
        rb_self: &Self,
        worker: &fibers::RbFiberWorker,
        app: Value,
    ) -> Result<(), Error> {
        let Some(job) = worker.next_taken() else {
            return Ok(());
        };
        let io_mark = rb_self.fiber_io_mark.map(|mark| ruby.get_inner(mark));
        let post = worker
            .watch()
            .map(|w| w.enter_fiber(ruby, worker.signals()))
            .transpose()?;
        serve_watched(ruby, &rb_self.rack, app, *job, io_mark, post.as_ref())?;
        drop(post);
        rack::escape::check()?;
        rb_self.out_of_band(ruby, worker.server().queue())
    }

    /// Begins a graceful stop (returns at once).
    pub fn stop(ruby: &Ruby, rb_self: &Self) -> Result<(), Error> {
        rb_self.running(ruby)?.stop();
        Ok(())
    }

    /// Ends the stop's drain time now: open-ended streams are cut within a moment (a hot
    /// restart does not drain). Nothing when the server is not running.
    pub fn end_drain(ruby: &Ruby, rb_self: &Self) {
        if let Ok(server) = rb_self.running(ruby) {
            server.end_drain();
        }
    }

    /// Open-ended streams being made now (SSE and the like): a stopping worker with some has a
    /// drain ahead. 0 when the server is not running.
    pub fn streams_open(ruby: &Ruby, rb_self: &Self) -> u64 {
        rb_self
            .running(ruby)
            .map_or(0, |server| server.metrics().streams_open())
    }

    /// The responses cut at the end of a stop's drain time since the last call, each as
    /// "PEER (METHOD TARGET)" (for the drain's log lines).
    pub fn cut_at_drain(ruby: &Ruby, rb_self: &Self) -> Result<Vec<String>, Error> {
        Ok(rb_self.running(ruby)?.take_cut_at_drain())
    }

    /// Blocks (without the GVL) until every connection is finished after a stop.
    pub fn wait(ruby: &Ruby, rb_self: &Self) -> Result<bool, Error> {
        let server = rb_self.running(ruby)?;
        let waiter = Waiter::new();
        loop {
            let result = blocking(ruby, || server.wait(&waiter), &|| waiter.set_interrupted())?;
            match result {
                Some(Some(Ok(()))) => {
                    if let Some(watch) = locked(&rb_self.watch).as_ref() {
                        watch.close();
                    }
                    // The process may end next: give the log's last lines a moment to go out.
                    blocking(ruby, || log::flush(LOG_FLUSH_ON_STOP), &|| {})?;
                    return Ok(true);
                }
                Some(Some(Err(e))) => return Err(Error::new(ruby.exception_runtime_error(), e)),
                Some(None) | None => {
                    waiter.reset();
                    ruby.thread_check_ints()?;
                }
            }
        }
    }

    /// Seconds since the last accepted connection or request (`idle_timeout`).
    /// A server not serving (not started, or stopped and re-armed) is not idle: 0.
    pub fn idle_seconds(&self) -> f64 {
        locked(&self.server)
            .as_ref()
            .map_or(0.0, |server| server.idle_for().as_secs_f64())
    }

    /// `stats(reset_max: false)`: the per-server stats (the contract's shape: Puma 8's keys,
    /// then Catamount's own), a Hash with Symbol keys in a fixed order. A server not started
    /// yet, or stopped and re-armed, has no threads and no backlog; the counters go on.
    /// `reset_max: true` restarts `backlog_max` and `reactor_max` from the current values once
    /// read.
    pub fn stats(ruby: &Ruby, rb_self: &Self, args: &[Value]) -> Result<RHash, Error> {
        let args = scan_args::<(), (), (), (), RHash, ()>(args)?;
        let kw = get_kwargs::<_, (), (Option<bool>,), ()>(args.keywords, &[], &["reset_max"])?;
        let reset_max = kw.optional.0.unwrap_or(false);
        let before = rb_self.requests_before.load(Ordering::Relaxed);
        let pool = locked(&rb_self.server)
            .clone()
            .map(|server| server.queue().stats())
            .unwrap_or_default();
        let m = rb_self.metrics.snapshot(pool.backlog, reset_max);
        let h = ruby.hash_new();
        let set = |key: &str, v: Value| h.aset(ruby.to_symbol(key), v);
        let int = |n: u64| ruby.integer_from_u64(n).as_value();
        let count = |n: usize| int(n as u64);
        set("backlog", count(pool.backlog))?;
        set("running", count(pool.spawned))?;
        let per_thread = rb_self.config.requests_per_thread;
        let capacity = if per_thread > 1 {
            // The fiber mode: requests the process would still take, whichever thread runs them.
            (rb_self.config.max_threads.saturating_mul(per_thread))
                .saturating_sub(pool.running + pool.backlog)
        } else {
            (pool.waiting + rb_self.config.max_threads.saturating_sub(pool.spawned))
                .saturating_sub(pool.backlog)
        };
        set("pool_capacity", count(capacity))?;
        set(
            "busy_threads",
            count(pool.spawned.saturating_sub(pool.waiting) + pool.backlog),
        )?;
        set("io_threads", count(pool.io_threads))?;
        set("backlog_max", int(m.backlog_max))?;
        set("max_threads", count(rb_self.config.max_threads))?;
        set("requests_count", int(before + pool.requests_count))?;
        set("reactor_max", int(m.reactor_max))?;
        let responses = ruby.hash_new();
        for (class, n) in ["1xx", "2xx", "3xx", "4xx", "5xx"].iter().zip(m.responses) {
            responses.aset(ruby.to_symbol(class), int(n))?;
        }
        set("responses", responses.as_value())?;
        set("request_duration", histogram(ruby, &m.request_duration)?)?;
        set("queue_time", histogram(ruby, &m.queue_time)?)?;
        set("bytes_in", int(m.bytes_in))?;
        set("bytes_out", int(m.bytes_out))?;
        set("connections_open", int(m.connections_open))?;
        set("connections_accepted", int(m.connections_accepted))?;
        set("request_timeouts", int(m.request_timeouts))?;
        set("threads_lost", int(m.threads_lost))?;
        let (buffered, spilled) = locked(&rb_self.server)
            .as_ref()
            .map(|server| (server.handed_over_bytes().0, server.spilled_bytes().0))
            .unwrap_or_default();
        set("response_bytes_buffered", int(buffered))?;
        set("response_bytes_spilled", int(spilled))?;
        Ok(h)
    }
}

/// A histogram in stats: `{bounds: [seconds...], counts: [cumulative..., total], sum: seconds}`.
fn histogram(ruby: &Ruby, snapshot: &HistogramSnapshot) -> Result<Value, Error> {
    let h = ruby.hash_new();
    let bounds = ruby.ary_from_iter(BOUNDS_SECONDS.iter().copied());
    let counts = ruby.ary_from_iter(snapshot.counts.iter().copied());
    h.aset(ruby.to_symbol("bounds"), bounds)?;
    h.aset(ruby.to_symbol("counts"), counts)?;
    h.aset(ruby.to_symbol("sum"), snapshot.sum)?;
    Ok(h.as_value())
}

/// Takes queued work while holding the GVL; releases it only to wait, and takes what the wait
/// announced only once the GVL is back (see WorkQueue::wait_for_work). None: the thread should
/// end (trimmed, or the server stopped); its seat is already discharged.
pub(crate) fn next_job(
    ruby: &Ruby,
    queue: &Arc<catamount_server::WorkQueue>,
    seat: &mut Seat,
    waiter: &Waiter,
) -> Result<Option<Box<Job>>, Error> {
    loop {
        if let Some(job) = queue.try_pop(seat) {
            return Ok(Some(job));
        }
        match blocking(ruby, || queue.wait_for_work(seat, waiter), &|| {
            queue.interrupt(waiter)
        })? {
            Some(Wait::Ready) => {
                if let Some(job) = queue.claim(seat) {
                    return Ok(Some(job));
                }
            }
            Some(Wait::Interrupted) | None => {
                waiter.reset();
                // Woken by Ruby's unblocking function (a kill, Thread#raise): let it land
                // before taking work, not in the middle of a request.
                ruby.thread_check_ints()?;
            }
            Some(Wait::Trim) | Some(Wait::Closed) => return Ok(None),
        }
    }
}

/// Runs `func` without the GVL. When Ruby has an interrupt pending (the function was not run,
/// or `unblock` cut it short), lets Ruby handle it first: that may raise (kill, Thread#raise),
/// which propagates; otherwise returns None and the caller retries.
pub(crate) fn blocking<R: Send>(
    ruby: &Ruby,
    func: impl FnOnce() -> R + Send,
    unblock: &(dyn Fn() + Sync),
) -> Result<Option<R>, Error> {
    match ffi::without_gvl(func, &|| unblock()) {
        Ok(value) => Ok(Some(value)),
        Err(Blocked::Interrupted) => {
            ruby.thread_check_ints()?;
            Ok(None)
        }
        Err(Blocked::Panicked(message)) => Err(Error::new(
            ruby.exception_runtime_error(),
            format!("internal error in catamount: {message}"),
        )),
    }
}

/// `env["puma.mark_as_io_bound"]` for the pool thread in `seat`: one frozen callable per
/// thread, made when it starts (kept alive by the thread's stack and the envs holding it), so
/// a request pays one Hash insert for it. Marks the thread that took the request, whichever
/// thread calls it.
fn io_bound_mark(ruby: &Ruby, queue: &Arc<catamount_server::WorkQueue>, seat: SeatId) -> Value {
    let queue = queue.clone();
    let mark = ruby.proc_from_fn(move |ruby: &Ruby, _args: &[Value], _block| {
        queue.mark_io_bound(seat);
        ruby.qnil().as_value()
    });
    mark.as_value().freeze();
    mark.as_value()
}

/// One request under `request_timeout`'s watch (when `post` is given): its deadline runs from
/// here to its end, and a `Catamount::RequestTimeout` raised for it is not let out of it.
/// Errors returned are non-local exits only.
fn serve_watched(
    ruby: &Ruby,
    settings: &RackSettings,
    app: Value,
    job: Job,
    io_mark: Option<Value>,
    post: Option<&timeout::Post>,
) -> Result<(), Error> {
    if let Some(post) = post {
        post.begin(&job.request, &job.responder);
    }
    let mut served = serve(ruby, settings, app, job, io_mark);
    if post.is_some_and(|post| post.end() == Left::Raised) {
        // Raised for the request that just ended: it must not reach the next one.
        if matches!(&served, Err(e) if timeout::is_request_timeout(ruby, e)) {
            served = Ok(());
        }
        if let Err(e) = ruby.thread_check_ints() {
            if !timeout::is_request_timeout(ruby, &e) {
                return Err(e);
            }
        }
    }
    served
}

/// One request: env, app, response. Errors returned are non-local exits only.
fn serve(
    ruby: &Ruby,
    settings: &RackSettings,
    app: Value,
    job: Job,
    io_mark: Option<Value>,
) -> Result<(), Error> {
    // Taken when the thread took the request (no second clock read).
    let started = job.request.taken_at;
    // A jump left over from a request that ended early must not end this one.
    rack::escape::take();
    let Job {
        mut request,
        responder,
    } = job;
    let spooled = rack::env::spooled(&request);
    let request_id = settings
        .log_json
        .then(|| rack::access_json::begin(&request))
        .flatten();
    let env = match rack::env::build(ruby, settings, &mut request) {
        Ok(env) => env,
        // Building the env raised (it should not): answer 500 rather than lose the thread.
        Err(e) => {
            let env = ruby.hash_new();
            return rack::response::respond(
                ruby,
                settings,
                &request,
                env,
                Err(e),
                responder,
                started,
            );
        }
    };
    if let Some(id) = request_id {
        rack::access_json::give_to_app(env, id);
    }
    if let Some(mark) = io_mark {
        env.aset(rack::env::mark_as_io_bound_key(ruby), mark)?;
    }
    let input = if spooled {
        rack::env::input(ruby, env)
    } else {
        None
    };
    // The responder is lent for the length of the call: `rack.hijack` may take it, and the
    // `rack.early_hints` callback writes through it.
    let lent = rack::hijack::lend(responder, env);
    if settings.early_hints {
        add_early_hints(ruby, &request, env, &lent)?;
    }
    let result = app.funcall::<_, _, Value>(*rack::ids::CALL, (env,));
    let outcome = match rack::hijack::take_back(&lent) {
        Lending::Responder(responder) => {
            rack::response::respond(ruby, settings, &request, env, result, responder, started)
        }
        Lending::Hijacked(serving) => {
            rack::hijack::after_call(ruby, &request, env, result, serving);
            if settings.log_json {
                rack::access_json::log(ruby, settings, &request, None, None);
            } else if settings.log_requests && !rack::escape::pending() {
                rack::response::access_log_hijacked(ruby, settings, &request, started);
            }
            Ok(())
        }
        // Lost to an internal error while being hijacked (already raised in the app, and the
        // connection dropped): nothing to answer. A jump met is kept for the pool loop.
        Lending::Out => {
            if let Err(e) = result {
                let _ = rack::escape::caught(e);
            }
            Ok(())
        }
    };
    // Not while a jump waits to be resumed (its state must not meet more Ruby calls): the
    // thread is replaced and the GC closes the File then.
    if let Some(input) = input.filter(|_| !rack::escape::pending()) {
        rack::env::close_spooled_input(input);
    }
    outcome
}

/// `rack.early_hints`: the app may send 103 responses before its own, through the lent
/// responder.
fn add_early_hints(
    ruby: &Ruby,
    request: &Request,
    env: RHash,
    lent: &rack::hijack::Lent,
) -> Result<(), Error> {
    // HTTP/1.0 has no interim responses (`early_hints` gives no bytes): the callback is there
    // but sends nothing.
    let version = request.head.version();
    let hints = {
        let lent = lent.clone();
        ruby.proc_from_fn(
            move |ruby: &Ruby, args: &[Value], _block| -> Result<Value, Error> {
                let headers = args
                    .first()
                    .copied()
                    .unwrap_or_else(|| ruby.qnil().as_value());
                let head = rack::response::collect_headers(103, headers);
                // A jump met while reading the hints goes on through the app's frames.
                rack::escape::check()?;
                let head = head.map_err(|bug| Error::new(ruby.exception_arg_error(), bug.0))?;
                let Some(out) = catamount_http::early_hints(version, &head) else {
                    return Ok(ruby.qnil().as_value());
                };
                if let Lending::Responder(responder) = &mut *rack::hijack::locked(&lent) {
                    // A client that went away shows when the real response is written.
                    let _ = responder.write_vec(out);
                }
                Ok(ruby.qnil().as_value())
            },
        )
    };
    env.aset(rack::env::early_hints_key(ruby), hints)
}
