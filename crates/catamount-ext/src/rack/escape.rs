//! Non-local exits met while serving a request: `Thread#kill`, `throw` to a `catch` outside the
//! pool's loop, and Ruby's other tag jumps. magnus's protected calls hand them to us as an
//! `Error` without an exception value; they are not errors to log or answer for, but a unwinding
//! that must go on once our cleanup (the 500 or the close, `body.close`) has run.
//!
//! Every place in the Rack bridge that catches a Ruby error (the app, `each`, `close`, the
//! callbacks, header and error reporting) passes it through [`caught`]: an exception comes back
//! to be handled; a jump is kept here (the first one wins) and the bridge stops calling app code
//! for the request. The pool's loop takes it back with [`take`] when the request is done and
//! returns it to Ruby, which resumes the jump (`rb_jump_tag`). A jump carries no Ruby object
//! (only its tag), so keeping it in a thread-local is invisible to the GC; its state stays in
//! Ruby's `errinfo`, which cleanup code must not lose ([`cleanup`]).
//!
//! Kept per Fiber (the thread-local list is keyed by the current fiber): in the fiber mode a
//! request whose cleanup waits lets the thread's other requests run meanwhile, and those must
//! neither see its jump nor take it. An empty list (no jump anywhere on the thread, the
//! common case) is answered without asking Ruby for the current fiber.

use std::cell::RefCell;

use magnus::rb_sys::AsRawValue;
use magnus::{value::ReprValue, Error, Ruby, Value};

thread_local! {
    /// (fiber, jump) for each fiber of this thread with a jump to go on.
    static PENDING: RefCell<Vec<(usize, Error)>> = const { RefCell::new(Vec::new()) };
}

/// The calling fiber (its raw VALUE, compared only).
fn current_fiber() -> usize {
    Ruby::get().map_or(0, |ruby| ruby.fiber_current().as_value().as_raw() as usize)
}

/// The exception `e` carries, or None when it is a jump (which is then kept for [`take`]).
pub(crate) fn caught(e: Error) -> Option<Value> {
    let value = e.value();
    if value.is_none() {
        let fiber = current_fiber();
        PENDING.with(|p| {
            let mut p = p.borrow_mut();
            if !p.iter().any(|(f, _)| *f == fiber) {
                p.push((fiber, e));
            }
        });
    }
    value
}

/// Whether a jump is waiting to go on: no more app code runs for this request.
pub(crate) fn pending() -> bool {
    PENDING.with(|p| {
        let p = p.borrow();
        !p.is_empty() && {
            let fiber = current_fiber();
            p.iter().any(|(f, _)| *f == fiber)
        }
    })
}

/// The jump kept for this fiber, if any (and forgets it).
pub(crate) fn take() -> Option<Error> {
    PENDING.with(|p| {
        let mut p = p.borrow_mut();
        if p.is_empty() {
            return None;
        }
        let fiber = current_fiber();
        let i = p.iter().position(|(f, _)| *f == fiber)?;
        Some(p.swap_remove(i).1)
    })
}

/// Runs `f`, cleanup code that calls Ruby (`body.close`): when a jump waits, Ruby's record of
/// it is kept across the call ([`ffi::keeping_errinfo`](crate::ffi::keeping_errinfo)), which
/// Ruby code that rescues anything would otherwise lose; resuming the jump then crashes Ruby.
/// Every Ruby call made while [`pending`] goes through here.
pub(crate) fn cleanup<R>(f: impl FnOnce() -> R) -> R {
    if pending() {
        crate::ffi::keeping_errinfo(f)
    } else {
        f()
    }
}

/// `Err(jump)` when a jump is pending, else `Ok(())`: for callers that must stop at once.
pub(crate) fn check() -> Result<(), Error> {
    take().map_or(Ok(()), Err)
}

/// `v.inspect` for a message; a jump in it is kept (and no more app code runs after it).
pub(crate) fn inspect(v: Value) -> String {
    const UNKNOWN: &str = "(an object whose inspect failed)";
    if pending() {
        return UNKNOWN.to_string();
    }
    match v.funcall::<_, _, magnus::RString>("inspect", ()) {
        Ok(s) => String::from_utf8_lossy(&crate::ffi::bytes_of(s)).into_owned(),
        Err(e) => {
            caught(e);
            UNKNOWN.to_string()
        }
    }
}

/// A Ruby call whose result only feeds a message: an exception becomes None, a jump is kept.
pub(crate) fn quietly<T>(result: Result<T, Error>) -> Option<T> {
    result.map_err(caught).ok()
}
