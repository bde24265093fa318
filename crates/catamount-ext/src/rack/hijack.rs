//! Full hijack (`rack.hijack`): the app takes the raw connection as a Ruby socket IO.
//!
//! Every env holds the same callable (`env["rack.hijack"]`, made once per server). While a pool
//! thread runs `app.call`, the request's [`Responder`] is lent in a thread-local slot, where the
//! callable finds it (and where the `rack.early_hints` callback writes through it). Calling it
//! asks the reactor to let go of the connection ([`Responder::hijack`], waited for without the
//! GVL) and hands the app a `TCPSocket`/`UNIXSocket` over a new descriptor of the socket, with
//! the bytes the client already sent after the request pushed back into the IO's read buffer
//! (`ungetbyte`), so `read`, `read_nonblock`, `wait_readable` and `IO.select` see them first. From
//! then on nothing is written on the connection: the app's response is ignored, but `body.close`,
//! `rack.after_reply` and `rack.response_finished` still run ([`after_call`]); an app that raised after hijacking gets its
//! IO closed (else the client would wait forever). A TLS connection's IO is a `UNIXSocket`, the
//! app's end of the reactor's relay (`reactor/relay.rs` in catamount-server), early bytes first
//! on the socket itself (nothing to push back).

use std::cell::RefCell;
use std::os::fd::IntoRawFd;
use std::sync::{Arc, Mutex, MutexGuard};

use magnus::value::{Lazy, Opaque, ReprValue};
use magnus::{prelude::*, Error, RArray, RHash, RString, Ruby, Value};

use catamount_server::{log, Request, Responder, StillServing, Waiter};

use super::{escape, response};
use crate::ffi::{self, Blocked};

static RACK_HIJACK_IO: Lazy<RString> = Lazy::new(|ruby| {
    let s = ruby.str_new("rack.hijack_io").to_interned_str();
    ruby.gc_register_mark_object(s);
    s
});

/// Where the request's connection stands while `app.call` runs.
pub enum Lending {
    /// Not taken: the response is written as usual once `app.call` returns.
    Responder(Responder),
    /// Taken by the app; dropping this ends the request's count as running.
    Hijacked(StillServing),
    /// Being taken (the hijack waits for the reactor), or lost to an internal error.
    Out,
}

/// The slot a pool thread's request lends to the callbacks it offers the app.
pub type Lent = Arc<Mutex<Lending>>;

struct Current {
    lent: Lent,
    /// The request's env: it lives on the pool thread's stack for the length of `app.call`,
    /// where the GC's conservative scan keeps it alive and in place.
    env: Opaque<RHash>,
}

thread_local! {
    static CURRENT: RefCell<Option<Current>> = const { RefCell::new(None) };
}

pub fn locked(lent: &Lent) -> MutexGuard<'_, Lending> {
    lent.lock().unwrap_or_else(|p| p.into_inner())
}

/// Lends `responder` to this thread's callbacks until [`take_back`].
pub fn lend(responder: Responder, env: RHash) -> Lent {
    let lent = Arc::new(Mutex::new(Lending::Responder(responder)));
    let current = Current {
        lent: lent.clone(),
        env: Opaque::from(env),
    };
    CURRENT.with(|c| *c.borrow_mut() = Some(current));
    lent
}

/// Ends the lending (call when `app.call` returned, however it did).
pub fn take_back(lent: &Lent) -> Lending {
    CURRENT.with(|c| *c.borrow_mut() = None);
    std::mem::replace(&mut *locked(lent), Lending::Out)
}

/// The `rack.hijack` callable every env holds (it needs `TCPSocket` and `UNIXSocket`).
pub fn callable(ruby: &Ruby) -> Result<Value, Error> {
    let _: bool = ruby.require("socket")?;
    Ok(ruby
        .proc_from_fn(|ruby: &Ruby, _args: &[Value], _block| call(ruby))
        .as_value())
}

fn io_error(ruby: &Ruby, message: String) -> Error {
    Error::new(ruby.exception_io_error(), message)
}

fn call(ruby: &Ruby) -> Result<Value, Error> {
    let Some((lent, env)) = CURRENT.with(|c| {
        c.borrow()
            .as_ref()
            .map(|c| (c.lent.clone(), ruby.get_inner(c.env)))
    }) else {
        return Err(io_error(
            ruby,
            "rack.hijack works only during app.call, on the thread running it".to_string(),
        ));
    };
    let key = ruby.get_inner(&RACK_HIJACK_IO);
    // Taken out in a statement of its own: the lock must be released before the match.
    let state = std::mem::replace(&mut *locked(&lent), Lending::Out);
    let responder = match state {
        Lending::Responder(r) => r,
        hijacked @ Lending::Hijacked(_) => {
            // Called again: the same IO (Rack 2 apps may call it twice).
            *locked(&lent) = hijacked;
            return env.aref(key);
        }
        Lending::Out => return Err(io_error(ruby, "the connection is gone".to_string())),
    };
    let (io, serving) = take_connection(ruby, responder, env, &|r| {
        *locked(&lent) = Lending::Responder(r);
    })?;
    *locked(&lent) = Lending::Hijacked(serving);
    env.aset(key, io)?;
    Ok(io)
}

/// Asks the reactor to let go of `responder`'s connection (waited for without the GVL) and
/// makes the app's socket IO over it, the bytes the client sent past the request pushed back to
/// be read first, and remembered for a stop's drain ([`super::taken`]). Until the IO exists the request counts as running through the returned
/// `StillServing`. When the reactor could not let go, the responder is given to `restore` (the
/// response is still the request's to write) and the error raised.
pub fn take_connection(
    ruby: &Ruby,
    responder: Responder,
    env: RHash,
    restore: &dyn Fn(Responder),
) -> Result<(Value, StillServing), Error> {
    let waiter = Waiter::new();
    let mut pending = Some(responder);
    let hijacked = loop {
        let result = ffi::without_gvl(|| pending.take().map(|r| r.hijack(&waiter)), &|| {
            waiter.set_interrupted()
        });
        let failed = match result {
            Ok(Some(Ok(hijacked))) => break hijacked,
            Ok(Some(Err((responder, e)))) => {
                pending = Some(responder);
                (e.kind() != std::io::ErrorKind::Interrupted).then_some(e.to_string())
            }
            Ok(None) | Err(Blocked::Interrupted) => None,
            Err(Blocked::Panicked(message)) => Some(format!("internal error: {message}")),
        };
        // Put back before anything can raise.
        if let Some(why) = failed {
            if let Some(r) = pending.take() {
                restore(r);
            }
            return Err(io_error(ruby, format!("rack.hijack failed: {why}")));
        }
        // Woken for an interrupt (Thread#raise, kill): let it land, else ask again.
        waiter.reset();
        if let Err(e) = ruby.thread_check_ints() {
            if let Some(r) = pending.take() {
                restore(r);
            }
            return Err(e);
        }
    };
    let catamount_server::Hijacked {
        fd,
        early,
        unix,
        serving,
    } = hijacked;
    let class: Value =
        ruby.class_object()
            .const_get(if unix { "UNIXSocket" } else { "TCPSocket" })?;
    // Given up before the call, as for `rack.input`'s File (see env.rs): only a raise inside
    // `for_fd` itself would leak it.
    let io: Value = class.funcall("for_fd", (fd.into_raw_fd(),))?;
    if !early.is_empty() {
        io.funcall::<_, _, Value>("ungetbyte", (ruby.str_from_slice(&early),))?;
    }
    super::taken::remember(ruby, io, env)?;
    Ok((io, serving))
}

/// After `app.call` of a hijacked request: the returned response is ignored (nothing more is
/// written), its body closed; an app that raised (or was left by a non-local exit) gets its IO
/// closed; then `rack.after_reply`, then `rack.response_finished` (with the status and headers
/// the app returned, or its exception: without them a framework that completes its per-request
/// state there, as Rails 7.1+ does, would never complete it for a WebSocket request).
/// `serving` is dropped last: the request stops counting as running.
pub fn after_call(
    ruby: &Ruby,
    request: &Request,
    env: RHash,
    result: Result<Value, Error>,
    serving: StillServing,
) {
    // What `rack.response_finished` is told: the app's status and headers as it returned them
    // (nothing of them was sent), or its exception.
    let mut status = ruby.qnil().as_value();
    let mut headers = None;
    let mut error = None;
    match result {
        Ok(triple) => {
            let triple = RArray::from_value(triple).filter(|a| a.len() == 3);
            if let Some(triple) = triple {
                status = triple.entry::<Value>(0).unwrap_or(status);
                headers = triple.entry::<Value>(1).ok();
                if let Ok(body) = triple.entry::<Value>(2) {
                    response::close_body(body);
                }
            }
        }
        Err(e) => {
            if let Some(exception) = escape::caught(e) {
                response::log_app_error(request, exception);
                error = Some(exception);
            }
            let io = env.get(ruby.get_inner(&RACK_HIJACK_IO));
            escape::cleanup(|| {
                if let Some(io) = io {
                    if let Err(e) = io.funcall::<_, _, Value>("close", ()) {
                        if let Some(exception) = escape::caught(e) {
                            log::error(&format!(
                                "Closing the hijacked connection: {}",
                                escape::inspect(exception)
                            ));
                        }
                    }
                }
            });
        }
    }
    if !escape::pending() {
        super::env::run_after_reply(ruby, env);
    }
    response::finished(ruby, env, status, headers, error);
    drop(serving);
}
