//! The control server as Ruby sees it: `Catamount::Native::ControlServer` (a handle on
//! `catamount_control::ControlServer`, polled from the caller's loop) and the module functions
//! `control_token`, `process_memory` and `prometheus` (a stats Hash → Prometheus text).
//!
//! No method blocks: `poll`, `answer` and `timeout` only do what the sockets allow now, and
//! `flush` waits (bounded) without the GVL. While one thread flushes, another's `poll` finds
//! nothing and its `answer` is queued for that flush, so a single-mode control thread never
//! waits and never fails; only `close` raises then.

use std::sync::{Mutex, MutexGuard, TryLockError};
use std::time::{Duration, Instant};

use catamount_control::metrics::{
    self, ClusterStats, Histogram, ProcessMemory, Role, ServerStats, Snapshot, WorkerStats,
};
use catamount_control::ControlServer;
use magnus::r_hash::ForEach;
use magnus::{
    function, method, prelude::*, Error, Float, Integer, RArray, RHash, RModule, RString, Ruby,
    TryConvert, Value,
};

use crate::errors;
use crate::ffi::{self, Blocked};

/// Defines the class and the module functions under `Catamount::Native`.
pub fn define(ruby: &Ruby, native: RModule) -> Result<(), Error> {
    native.define_singleton_method("control_token", function!(control_token, 0))?;
    native.define_singleton_method("process_memory", function!(process_memory, 1))?;
    native.define_singleton_method("prometheus", function!(prometheus, 2))?;
    native.const_set("PROMETHEUS_CONTENT_TYPE", metrics::CONTENT_TYPE)?;
    let class = native.define_class("ControlServer", ruby.class_object())?;
    class.define_singleton_method("new", function!(RbControl::new, 4))?;
    class.define_method("url", method!(RbControl::url, 0))?;
    class.define_method("notes", method!(RbControl::notes, 0))?;
    class.define_method("fd", method!(RbControl::fd, 0))?;
    class.define_method("poll", method!(RbControl::poll, 0))?;
    class.define_method("answer", method!(RbControl::answer, 4))?;
    class.define_method("timeout", method!(RbControl::timeout, 0))?;
    class.define_method("flush", method!(RbControl::flush, 1))?;
    class.define_method("close", method!(RbControl::close, 0))?;
    class.define_method("close_in_child", method!(RbControl::close_in_child, 0))?;
    Ok(())
}

/// `Native.control_token`: 32 lowercase hex characters from /dev/urandom.
fn control_token(ruby: &Ruby) -> Result<String, Error> {
    catamount_control::auth::generate_token().map_err(|e| {
        Error::new(
            ruby.exception_runtime_error(),
            format!("cannot read /dev/urandom for a control token: {e}"),
        )
    })
}

/// `Native.process_memory(pid)`: `[rss_bytes, pss_bytes or nil]`, nil when the process is gone.
fn process_memory(pid: i64) -> Option<(u64, Option<u64>)> {
    u32::try_from(pid)
        .ok()
        .and_then(catamount_control::memory::process_memory)
}

#[magnus::wrap(class = "Catamount::Native::ControlServer", free_immediately, size)]
pub struct RbControl {
    /// `None` once closed. Held across a GVL release only by `flush`.
    server: Mutex<Option<ControlServer>>,
    /// Answers given while another thread flushes: sent by that flush, or the next call that
    /// gets `server`. Held only briefly, never across a GVL release.
    deferred: Mutex<Vec<Deferred>>,
    url: String,
    /// The boot's lines about an `ssl://` URL's TLS configuration.
    notes: Vec<String>,
    fd: i32,
}

struct Deferred {
    id: u64,
    status: u16,
    content_type: String,
    body: Vec<u8>,
}

/// How long `flush` waits without the GVL at a time: between two waits it sends the answers
/// other threads gave meanwhile.
const FLUSH_SLICE: Duration = Duration::from_millis(20);

/// Another thread is flushing (it holds the server while it waits without the GVL).
struct Busy;

impl RbControl {
    /// `ControlServer.new(url, token, allowed, development)`; a URL that cannot be listened on
    /// raises `Catamount::UsageError` with one line naming it. `development`: an `ssl://` URL
    /// without cert and key may use the self-signed development certificate, as app binds.
    fn new(
        ruby: &Ruby,
        url: String,
        token: Option<String>,
        allowed: Vec<String>,
        development: bool,
    ) -> Result<RbControl, Error> {
        let settings = catamount_control::Settings {
            development_certificates: development
                .then(crate::server::development_certificate_cache)
                .flatten(),
            ..Default::default()
        };
        let server = ControlServer::bind_with(&url, token.as_deref(), &allowed, settings)
            .map_err(|e| Error::new(errors::usage_error(ruby), e.to_string()))?;
        Ok(RbControl {
            url: server.url().to_string(),
            notes: server.notes().to_vec(),
            fd: server.fd(),
            server: Mutex::new(Some(server)),
            deferred: Mutex::new(Vec::new()),
        })
    }

    /// The server, with the answers deferred so far handed to it.
    fn lock(&self) -> Result<MutexGuard<'_, Option<ControlServer>>, Busy> {
        let mut guard = match self.server.try_lock() {
            Ok(guard) => guard,
            // A panic while held left it consistent enough to go on: every step is per call.
            Err(TryLockError::Poisoned(p)) => p.into_inner(),
            Err(TryLockError::WouldBlock) => return Err(Busy),
        };
        if let Some(server) = guard.as_mut() {
            self.send_deferred(server);
        }
        Ok(guard)
    }

    fn send_deferred(&self, server: &mut ControlServer) {
        let deferred =
            std::mem::take(&mut *self.deferred.lock().unwrap_or_else(|p| p.into_inner()));
        for d in deferred {
            server.answer(d.id, d.status, &d.content_type, &d.body);
        }
    }

    fn busy_error(ruby: &Ruby) -> Error {
        Error::new(
            ruby.exception_runtime_error(),
            "the control server is being flushed by another thread",
        )
    }

    fn url(&self) -> String {
        self.url.clone()
    }

    fn notes(&self) -> Vec<String> {
        self.notes.clone()
    }

    fn closed_error(ruby: &Ruby) -> Error {
        Error::new(ruby.exception_io_error(), "control server closed")
    }

    fn fd(ruby: &Ruby, rb_self: &Self) -> Result<i32, Error> {
        match rb_self.lock() {
            Ok(guard) if guard.as_ref().map_or(true, |s| s.stopped()) => {
                Err(Self::closed_error(ruby))
            }
            _ => Ok(rb_self.fd),
        }
    }

    /// While another thread flushes: nothing (that flush keeps what arrives for a later poll).
    /// After `close`: IOError, so a loop waiting on the descriptor (which `close` leaves
    /// readable) ends.
    fn poll(ruby: &Ruby, rb_self: &Self) -> Result<Vec<(u64, &'static str)>, Error> {
        match rb_self.lock() {
            Ok(mut guard) => match guard.as_mut() {
                Some(server) if !server.stopped() => Ok(server.poll()),
                _ => Err(Self::closed_error(ruby)),
            },
            Err(Busy) => Ok(Vec::new()),
        }
    }

    /// While another thread flushes, the answer is queued for it (true: it will be sent if the
    /// request still waits).
    fn answer(&self, id: u64, status: u16, content_type: String, body: RString) -> bool {
        let body = ffi::bytes_of(body);
        match self.lock() {
            Ok(mut guard) => guard
                .as_mut()
                .is_some_and(|s| s.answer(id, status, &content_type, &body)),
            Err(Busy) => {
                self.deferred
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(Deferred {
                        id,
                        status,
                        content_type,
                        body,
                    });
                true
            }
        }
    }

    fn timeout(&self) -> Option<f64> {
        match self.lock() {
            Ok(guard) => guard.as_ref().and_then(|s| s.timeout()),
            Err(Busy) => Some(FLUSH_SLICE),
        }
        .map(|d| d.as_secs_f64())
    }

    /// Waits without the GVL, in slices: the process is about to exec or exit, but other Ruby
    /// threads (single mode) keep running meanwhile, and may still answer a request.
    fn flush(ruby: &Ruby, rb_self: &Self, seconds: f64) -> Result<bool, Error> {
        let limit = Duration::try_from_secs_f64(seconds).unwrap_or_default();
        let end = Instant::now() + limit;
        let mut guard = rb_self.lock().map_err(|Busy| Self::busy_error(ruby))?;
        let Some(server) = guard.as_mut() else {
            return Ok(true);
        };
        let cut = server.answers_cut();
        loop {
            rb_self.send_deferred(server);
            let left = end.saturating_duration_since(Instant::now());
            let slice = left.min(FLUSH_SLICE);
            // Bounded by the slice, so there is nothing for Ruby to interrupt early.
            let done = match ffi::without_gvl(|| server.flush(slice), &|| {}) {
                Ok(done) => done,
                Err(Blocked::Interrupted) => {
                    drop(guard);
                    ruby.thread_check_ints()?;
                    return Ok(false);
                }
                Err(Blocked::Panicked(message)) => {
                    return Err(Error::new(
                        ruby.exception_runtime_error(),
                        format!("internal error in catamount: {message}"),
                    ))
                }
            };
            let deferred = !rb_self
                .deferred
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .is_empty();
            if (done && !deferred) || left.is_zero() {
                return Ok(done && !deferred && server.answers_cut() == cut);
            }
        }
    }

    /// The descriptor itself stays open until the object is freed, and polls readable: a
    /// thread waiting on it wakes, and its next `poll` raises IOError (a closed descriptor would
    /// make its IO.select raise EBADF instead, or wait on whatever reused the number).
    fn close(ruby: &Ruby, rb_self: &Self) -> Result<(), Error> {
        let mut guard = rb_self.lock().map_err(|Busy| Self::busy_error(ruby))?;
        if let Some(server) = guard.as_mut() {
            server.stop();
        }
        Ok(())
    }

    fn close_in_child(ruby: &Ruby, rb_self: &Self) -> Result<(), Error> {
        if let Some(server) = rb_self
            .lock()
            .map_err(|Busy| Self::busy_error(ruby))?
            .take()
        {
            server.close_in_child();
        }
        Ok(())
    }
}

/// `Native.prometheus(stats, memory)`: the Prometheus text of a single-mode (shape A with
/// `started_at`/`versions`) or cluster (shape B) stats Hash. `memory`: `{pid => [rss, pss or
/// nil]}`; in a cluster this process's pid is the master and a worker's pid that worker (other
/// pids are left out). Keys may be Symbols or Strings (a check-in parsed from JSON); whatever is
/// missing or of another type is left out of the text, never an error.
fn prometheus(stats: RHash, memory: RHash) -> String {
    let mut worker_pids = Vec::new();
    let cluster = get(stats, "worker_status")
        .and_then(RArray::from_value)
        .map(|workers| cluster_stats(stats, workers, &mut worker_pids));
    let single = cluster.is_none();
    let own = u64::from(std::process::id());
    let mut entries = Vec::new();
    let _ = memory.foreach(|pid: Value, value: Value| {
        entries.push((pid, value));
        Ok(ForEach::Continue)
    });
    let memory = entries
        .into_iter()
        .filter_map(|(pid, value)| {
            let pid = u64::try_convert(pid).ok()?;
            let role = if single {
                Role::Single
            } else if pid == own {
                Role::Master
            } else {
                Role::Worker(worker_pids.iter().find(|(p, _)| *p == pid)?.1)
            };
            let pair = RArray::from_value(value)?;
            Some(ProcessMemory {
                role,
                rss_bytes: count(pair.entry::<Value>(0).ok()?)?,
                pss_bytes: pair.entry::<Value>(1).ok().and_then(count),
            })
        })
        .collect();
    metrics::render(&Snapshot {
        server: single.then(|| server_stats(stats)),
        cluster,
        memory,
    })
}

/// `hash[:key]`, else `hash["key"]`.
fn get(hash: RHash, key: &str) -> Option<Value> {
    let ruby = Ruby::get_with(hash);
    hash.get(ruby.to_symbol(key))
        .or_else(|| hash.get(key))
        .filter(|v| !v.is_nil())
}

/// An Array's entries. (They stay reachable from the Array, which the caller holds.)
fn items(array: RArray) -> Vec<Value> {
    (0..array.len())
        .filter_map(|i| array.entry::<Value>(isize::try_from(i).ok()?).ok())
        .collect()
}

/// A non-negative whole number (a Float is truncated), else nothing.
fn count(value: Value) -> Option<u64> {
    if let Some(f) = Float::from_value(value) {
        let f = f.to_f64();
        return (f.is_finite() && f >= 0.0).then_some(f as u64);
    }
    Integer::from_value(value)?.to_u64().ok()
}

fn number(value: Value) -> Option<f64> {
    if let Some(f) = Float::from_value(value) {
        return Some(f.to_f64());
    }
    Integer::from_value(value)
        .and_then(|i| i.to_i64().ok())
        .map(|i| i as f64)
}

fn int_at(hash: RHash, key: &str) -> Option<u64> {
    get(hash, key).and_then(count)
}

fn server_stats(h: RHash) -> ServerStats {
    let responses = get(h, "responses")
        .and_then(RHash::from_value)
        .map(|r| {
            ["1xx", "2xx", "3xx", "4xx", "5xx"]
                .iter()
                .filter_map(|class| Some((class.to_string(), int_at(r, class)?)))
                .collect()
        })
        .unwrap_or_default();
    ServerStats {
        backlog: int_at(h, "backlog"),
        running: int_at(h, "running"),
        pool_capacity: int_at(h, "pool_capacity"),
        busy_threads: int_at(h, "busy_threads"),
        io_threads: int_at(h, "io_threads"),
        max_threads: int_at(h, "max_threads"),
        requests_count: int_at(h, "requests_count"),
        responses,
        request_duration: histogram_at(h, "request_duration"),
        queue_time: histogram_at(h, "queue_time"),
        bytes_in: int_at(h, "bytes_in"),
        bytes_out: int_at(h, "bytes_out"),
        connections_open: int_at(h, "connections_open"),
        connections_accepted: int_at(h, "connections_accepted"),
        request_timeouts: int_at(h, "request_timeouts"),
        threads_lost: int_at(h, "threads_lost"),
    }
}

/// `{bounds:, counts:, sum:}`; nothing unless all three are there and every entry is a number.
fn histogram_at(h: RHash, key: &str) -> Option<Histogram> {
    let hist = get(h, key).and_then(RHash::from_value)?;
    let list = |key: &str| -> Option<Vec<Value>> {
        get(hist, key).and_then(RArray::from_value).map(items)
    };
    Some(Histogram {
        bounds: list("bounds")?
            .into_iter()
            .map(number)
            .collect::<Option<_>>()?,
        counts: list("counts")?
            .into_iter()
            .map(count)
            .collect::<Option<_>>()?,
        sum: get(hist, "sum").and_then(number)?,
    })
}

/// The master's books; `worker_pids` gets `(pid, index)` of each worker with a pid.
fn cluster_stats(h: RHash, workers: RArray, worker_pids: &mut Vec<(u64, u64)>) -> ClusterStats {
    let mut worker_status = Vec::new();
    for w in items(workers) {
        let Some(w) = RHash::from_value(w) else {
            continue;
        };
        let Some(index) = int_at(w, "index") else {
            continue;
        };
        if let Some(pid) = int_at(w, "pid") {
            worker_pids.push((pid, index));
        }
        // `{}` before the first check-in: no per-server series.
        let server = get(w, "last_status")
            .and_then(RHash::from_value)
            .filter(|s| !s.is_empty())
            .map(server_stats);
        worker_status.push(WorkerStats {
            index,
            phase: int_at(w, "phase"),
            booted: get(w, "booted").map(|b| b.to_bool()),
            server,
        });
    }
    ClusterStats {
        workers: int_at(h, "workers"),
        booted_workers: int_at(h, "booted_workers"),
        old_workers: int_at(h, "old_workers"),
        phase: int_at(h, "phase"),
        worker_boots: int_at(h, "worker_boots"),
        worker_restarts: int_at(h, "worker_restarts"),
        worker_status,
    }
}
