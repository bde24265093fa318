//! The control server as Ruby sees it: `Catamount::Native::ControlServer` (a handle on
//! `catamount_control::ControlServer`, polled from the caller's loop) and the module functions
//! `control_token` and `process_memory`.
//!
//! No method blocks: `poll`, `answer` and `timeout` only do what the sockets allow now, and
//! `flush` waits (bounded) without the GVL. A second thread using the handle while one flushes
//! gets an error rather than waiting.

use std::sync::{Mutex, MutexGuard, TryLockError};
use std::time::Duration;

use catamount_control::ControlServer;
use magnus::{function, method, prelude::*, Error, RModule, RString, Ruby};

use crate::errors;
use crate::ffi::{self, Blocked};

/// Defines the class and the module functions under `Catamount::Native`.
pub fn define(ruby: &Ruby, native: RModule) -> Result<(), Error> {
    native.define_singleton_method("control_token", function!(control_token, 0))?;
    native.define_singleton_method("process_memory", function!(process_memory, 1))?;
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
