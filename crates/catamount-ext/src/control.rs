//! The control server as Ruby sees it: `Catamount::Native::ControlServer` (a handle on
//! `catamount_control::ControlServer`, polled from the caller's loop) and the module functions
//! `control_token`, `process_memory` and `prometheus` (a stats Hash → Prometheus text).
//!
//! No method blocks: `poll`, `answer` and `timeout` only do what the sockets allow now, and
//! `flush` waits (bounded) without the GVL. A second thread using the handle while one flushes
//! gets an error rather than waiting.

use std::sync::{Mutex, MutexGuard, TryLockError};
use std::time::Duration;

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
    class.define_singleton_method("new", function!(RbControl::new, 3))?;
    class.define_method("url", method!(RbControl::url, 0))?;
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
    /// `None` once closed.
    server: Mutex<Option<ControlServer>>,
    url: String,
}

impl RbControl {
    /// `ControlServer.new(url, token, allowed)`; a URL that cannot be listened on raises
    /// `Catamount::UsageError` with one line naming it.
    fn new(
        ruby: &Ruby,
        url: String,
        token: Option<String>,
        allowed: Vec<String>,
    ) -> Result<RbControl, Error> {
        let server = ControlServer::bind(&url, token.as_deref(), &allowed)
            .map_err(|e| Error::new(errors::usage_error(ruby), e.to_string()))?;
        Ok(RbControl {
            url: server.url().to_string(),
            server: Mutex::new(Some(server)),
        })
    }

    fn lock(&self, ruby: &Ruby) -> Result<MutexGuard<'_, Option<ControlServer>>, Error> {
        match self.server.try_lock() {
            Ok(guard) => Ok(guard),
            // A panic while held left it consistent enough to close: every step is per call.
            Err(TryLockError::Poisoned(p)) => Ok(p.into_inner()),
            Err(TryLockError::WouldBlock) => Err(Error::new(
                ruby.exception_runtime_error(),
                "the control server is in use by another thread (flush)",
            )),
        }
    }

    fn url(&self) -> String {
        self.url.clone()
    }

    fn fd(ruby: &Ruby, rb_self: &Self) -> Result<i32, Error> {
        match rb_self.lock(ruby)?.as_ref() {
            Some(server) => Ok(server.fd()),
            None => Err(Error::new(
                ruby.exception_io_error(),
                "control server closed",
            )),
        }
    }

    fn poll(ruby: &Ruby, rb_self: &Self) -> Result<Vec<(u64, &'static str)>, Error> {
        Ok(match rb_self.lock(ruby)?.as_mut() {
            Some(server) => server.poll(),
            None => Vec::new(),
        })
    }

    fn answer(
        ruby: &Ruby,
        rb_self: &Self,
        id: u64,
        status: u16,
        content_type: String,
        body: RString,
    ) -> Result<bool, Error> {
        let body = ffi::bytes_of(body);
        Ok(match rb_self.lock(ruby)?.as_mut() {
            Some(server) => server.answer(id, status, &content_type, &body),
            None => false,
        })
    }

    fn timeout(ruby: &Ruby, rb_self: &Self) -> Result<Option<f64>, Error> {
        Ok(rb_self
            .lock(ruby)?
            .as_ref()
            .and_then(|s| s.timeout())
            .map(|d| d.as_secs_f64()))
    }

    /// Waits without the GVL: the process is about to exec or exit, but other Ruby threads
    /// (single mode) keep running meanwhile.
    fn flush(ruby: &Ruby, rb_self: &Self, seconds: f64) -> Result<bool, Error> {
        let limit = Duration::try_from_secs_f64(seconds).unwrap_or_default();
        let mut guard = rb_self.lock(ruby)?;
        let Some(server) = guard.as_mut() else {
            return Ok(true);
        };
        // Bounded by `limit`, so there is nothing for Ruby to interrupt early.
        match ffi::without_gvl(|| server.flush(limit), &|| {}) {
            Ok(done) => Ok(done),
            Err(Blocked::Interrupted) => {
                drop(guard);
                ruby.thread_check_ints()?;
                Ok(false)
            }
            Err(Blocked::Panicked(message)) => Err(Error::new(
                ruby.exception_runtime_error(),
                format!("internal error in catamount: {message}"),
            )),
        }
    }

    fn close(ruby: &Ruby, rb_self: &Self) -> Result<(), Error> {
        if let Some(server) = rb_self.lock(ruby)?.take() {
            server.close();
        }
        Ok(())
    }

    fn close_in_child(ruby: &Ruby, rb_self: &Self) -> Result<(), Error> {
        if let Some(server) = rb_self.lock(ruby)?.take() {
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
        max_threads: int_at(h, "max_threads"),
        requests_count: int_at(h, "requests_count"),
        responses,
        request_duration: histogram_at(h, "request_duration"),
        queue_time: histogram_at(h, "queue_time"),
        bytes_in: int_at(h, "bytes_in"),
        bytes_out: int_at(h, "bytes_out"),
        connections_open: int_at(h, "connections_open"),
        connections_accepted: int_at(h, "connections_accepted"),
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
