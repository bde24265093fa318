//! Turning the app's `[status, headers, body]` into bytes on the wire: the Ruby side.
//!
//! This reads the triple (is it well-formed, else a clean 500), hands each header field to
//! `catamount_http::ResponseHead` (which applies the header rules: an invalid name or value is the
//! app's bug, a 500, never a corrupt response), asks it for the framing, keep-alive and head bytes
//! (`catamount_http::response`), and walks the body. `body.close` is always called, then the access
//! log line and the `rack.after_reply` callbacks.
//!
//! A non-local exit in app code (`Thread#kill`, a `throw` to an outer `catch`) is kept by
//! [`escape`](super::escape): the client still gets the built-in 500 when nothing was sent yet
//! (else the connection is aborted), `body.close` still runs, no other app code does, and the pool
//! loop resumes the exit when the request is done.

use std::fs::File;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use magnus::value::ReprValue;
use magnus::{Error, Integer, Module, RArray, RClass, RHash, RString, Ruby, Symbol, Value};

use catamount_http::{
    classify_field_name, reason_phrase, write_chunk, Answering, FieldName, FieldValues, Framing,
    ResponseHead, Version, LAST_CHUNK,
};
use catamount_server::{log, Request, Responder, Waiter, HAND_OVER_PIECE};

use super::{escape, ids, RackSettings};
use crate::ffi;

/// Streamed pieces larger than this (already copied into Rust) are written with the GVL
/// released while the kernel copies them; smaller writes keep it (see docs/architecture.md,
/// "Writes keep the GVL": a hand-off would cost more than the copy).
const RELEASE_GVL_ABOVE: usize = 64 * 1024;
/// Array bodies up to this size (with the head) are joined into one buffer and sent with one
/// write; larger ones are written from the Ruby strings with one vectored write.
const JOIN_BELOW: u64 = 64 * 1024;

/// A response the app built wrongly; becomes a 500 and an error log line.
pub(crate) struct AppBug(pub(crate) String);

enum BodyKind {
    /// An Array body (or `to_ary`) and its Strings' total length, written without copying the
    /// bytes into Rust (see [`write_array`]).
    Array(ArrayBody),
    File(File, u64),
    Stream,
    /// A callable that writes the body itself: a Rack 3 streaming body (`call` and no `each`)
    /// or the Rack 2 `rack.hijack` response header's value.
    Callable(Value),
}

/// The Rack response headers Catamount reads and does not send.
#[derive(Default)]
pub(crate) struct RackFields {
    /// `rack.hijack` (Rack 2 partial hijack): a callable given the stream after the head.
    hijack: Option<Value>,
    /// `rack.protocol` (Rack 3.1): the protocol a 101 switches to.
    protocol: Option<Value>,
}

/// No Ruby value of it is kept on the Rust heap: the GC neither sees it there (to keep it alive)
/// nor updates it when compaction moves the object (Ruby may allocate, and so compact, at any
/// call, and another thread may run `GC.compact` while this one waits without the GVL). The
/// Strings are read from `array` each time they are used, with the GVL held and nothing
/// allocated in between.
struct ArrayBody {
    /// The app's Array. It lives on this thread's stack, where the GC's conservative scan finds
    /// and pins it; [`write_array`] guards it past its last use.
    array: Option<RArray>,
    /// The Strings' total length when the response began (the content-length sent).
    len: u64,
}

impl ArrayBody {
    fn empty() -> ArrayBody {
        ArrayBody {
            array: None,
            len: 0,
        }
    }
}

/// Writes the response for `result` (what `app.call(env)` returned or raised). A non-local exit
/// met on the way is left in [`escape`] for the caller to resume.
pub fn respond(
    ruby: &Ruby,
    settings: &RackSettings,
    request: &Request,
    env: RHash,
    result: Result<Value, Error>,
    responder: Responder,
    started: Instant,
) -> Result<(), Error> {
    let triple = match result {
        Ok(triple) => triple,
        Err(e) => {
            let exception = escape::caught(e);
            match exception {
                // Past `request_timeout` the server answered and logged it already: what the
                // app raises as it unwinds (Catamount::RequestTimeout) is no news.
                Some(_) if responder.is_overdue() => {}
                Some(exception) => log_app_error(request, exception),
                // Not an exception: the thread was killed in the app, or a `throw` left it. The
                // client still gets its answer (the built-in 500: no more app code runs), then
                // the exit goes on.
                None => log_jump(request),
            }
            let status = write_error(settings, request, env, responder, exception);
            if settings.log_json {
                super::access_json::log(ruby, settings, request, Some(status), None);
            }
            // Puma runs `rack.after_reply` whatever the app did; after a kill or a `throw`
            // no more app code runs.
            if exception.is_some() && !escape::pending() {
                super::env::run_after_reply(ruby, env);
            }
            finished(ruby, env, status, None, exception);
            return Ok(());
        }
    };
    let parts = match split_triple(triple) {
        Ok(parts) => parts,
        Err(AppBug(why)) => {
            log::error(&format!("{}: {why}", app_context(request)));
            let status = write_error(settings, request, env, responder, None);
            if settings.log_json {
                super::access_json::log(ruby, settings, request, Some(status), None);
            }
            super::env::run_after_reply(ruby, env);
            finished(ruby, env, status, None, None);
            return Ok(());
        }
    };
    let (status_value, headers_value, body) = parts;
    let outcome = write_triple(
        ruby,
        settings,
        request,
        env,
        status_value,
        headers_value,
        body,
        responder,
        started,
    );
    // Cleanup runs even when a jump is on its way.
    close_body(body);
    if settings.log_json {
        let (status, bytes) = match &outcome {
            Ok(written) => (written.status, written.body_bytes),
            Err(failure) => (failure.status, None),
        };
        super::access_json::log(ruby, settings, request, Some(status), bytes);
    } else if let Ok(Written {
        status, app_length, ..
    }) = outcome
    {
        if settings.log_requests {
            access_log(ruby, settings, request, status, app_length, started);
        }
    }
    if escape::pending() {
        log_jump(request);
    } else {
        super::env::run_after_reply(ruby, env);
    }
    let (status, app_headers, error) = match outcome {
        Ok(Written { status, .. }) => (status, true, None),
        Err(Failure {
            status,
            app_head,
            error,
        }) => (status, app_head, error),
    };
    finished(
        ruby,
        env,
        status,
        app_headers.then_some(headers_value),
        error,
    );
    Ok(())
}

/// Runs the `rack.response_finished` callables (Rack 3) once the response is written, failed or
/// abandoned by its client, as Puma 7 does: after `body.close` and the `rack.after_reply`
/// callables, in reverse order of registration (the spec's order: the last middleware to
/// register, the innermost, finishes first), each with `env, status, headers, error`. `status`
/// is the one sent (the error response's when it replaced the app's), `headers` the app's Hash
/// (an empty one when the app's response was not sent), `error` the exception that ended the
/// response (the app's, or the write's when the client went away) or nil. A callable that raises
/// is logged and the others still run; after a non-local exit none runs.
pub(crate) fn finished<S: magnus::IntoValue + Copy>(
    ruby: &Ruby,
    env: RHash,
    status: S,
    headers: Option<Value>,
    error: Option<Value>,
) {
    if escape::pending() {
        return;
    }
    let Some(callbacks) = super::env::response_finished(ruby, env) else {
        return;
    };
    let headers = headers.unwrap_or_else(|| ruby.hash_new().as_value());
    let error = error.unwrap_or_else(|| ruby.qnil().as_value());
    for i in (0..callbacks.len()).rev() {
        let Ok(callback) = callbacks.entry::<Value>(i as isize) else {
            continue;
        };
        if let Err(e) = callback.funcall::<_, _, Value>("call", (env, status, headers, error)) {
            let Some(exception) = escape::caught(e) else {
                return;
            };
            log::error(&format!(
                "rack.response_finished callback failed: {}",
                escape::inspect(exception)
            ));
        }
    }
}

struct Written {
    status: u16,
    app_length: Option<u64>,
    /// Body bytes sent (the JSON access log's `bytes`); None after a 101 (the app's stream).
    body_bytes: Option<u64>,
}

/// A response that failed: already logged and answered (or the connection aborted); a
/// non-local exit met on the way is in [`escape`]. What `rack.response_finished` is told.
struct Failure {
    /// The status sent: the app's, or the error response's.
    status: u16,
    /// The app's head was sent (else the error response replaced it).
    app_head: bool,
    /// What ended the response: the app's exception, or the write's when the client left.
    error: Option<Value>,
}

impl Failure {
    /// The error response `status` replaced the app's.
    fn answered(status: u16, error: Option<Value>) -> Failure {
        Failure {
            status,
            app_head: false,
            error,
        }
    }

    /// The app's head (with `status`) went out, then the response failed.
    fn after(status: u16, error: Option<Value>) -> Failure {
        Failure {
            status,
            app_head: true,
            error,
        }
    }

    /// The client went away while the app's response was written.
    fn client_gone(ruby: &Ruby, status: u16, cause: &std::io::Error) -> Failure {
        let error = client_gone_error(ruby, Some(cause)).value();
        Failure::after(status, error)
    }
}

fn split_triple(triple: Value) -> Result<(Value, Value, Value), AppBug> {
    let array = RArray::from_value(triple).ok_or_else(|| {
        AppBug(format!(
            "app returned {} instead of [status, headers, body]",
            escape::inspect(triple)
        ))
    })?;
    if array.len() != 3 {
        return Err(AppBug(format!(
            "app returned an Array of {} elements instead of [status, headers, body]",
            array.len()
        )));
    }
    let get = |i| array.entry::<Value>(i).map_err(|e| AppBug(e.to_string()));
    Ok((get(0)?, get(1)?, get(2)?))
}

#[allow(clippy::too_many_arguments)]
fn write_triple(
    ruby: &Ruby,
    settings: &RackSettings,
    request: &Request,
    env: RHash,
    status_value: Value,
    headers_value: Value,
    body: Value,
    mut responder: Responder,
    started: Instant,
) -> Result<Written, Failure> {
    let to = answering(request);
    let bug = |responder: Responder, why: String| {
        log::error(&format!("{}: {why}", app_context(request)));
        Failure::answered(write_error(settings, request, env, responder, None), None)
    };
    let status = match parse_status(status_value) {
        Ok(s) => s,
        Err(AppBug(why)) => return Err(bug(responder, why)),
    };
    let mut rack = RackFields::default();
    let head = match collect_headers_and(status, headers_value, &mut rack) {
        Ok(h) => h,
        Err(AppBug(why)) => return Err(bug(responder, why)),
    };
    let bodiless = head.is_bodiless(to);
    let kind = if let Some(callable) = rack.hijack {
        // Rack 2: the header's callable writes the body; the returned body is only closed.
        BodyKind::Callable(callable)
    } else if bodiless && head.content_length().is_some() {
        BodyKind::Array(ArrayBody::empty())
    } else {
        match body_kind(ruby, body) {
            Ok(k) => k,
            Err(BodyError::Jump) => {
                let sent = write_error(settings, request, env, responder, None);
                return Err(Failure::answered(sent, None));
            }
            Err(BodyError::Raised(exception)) => {
                log_app_error(request, exception);
                let sent = write_error(settings, request, env, responder, Some(exception));
                return Err(Failure::answered(sent, Some(exception)));
            }
            Err(BodyError::Bug(why)) => return Err(bug(responder, why)),
        }
    };
    if status == 101 {
        // Whatever the body: no switch the client did not ask for, none to HTTP/1.0.
        let protocol = chosen_protocol(rack.protocol);
        if let Err(why) = request.head.may_switch_to(protocol.as_deref()) {
            return Err(bug(responder, why));
        }
        if let BodyKind::Callable(callable) = kind {
            return switch_protocols(ruby, request, env, &head, protocol, callable, responder);
        }
    }
    let known_len = match &kind {
        BodyKind::Array(array) if !bodiless || head.content_length().is_none() => Some(array.len),
        BodyKind::Array(_) => None,
        BodyKind::File(_, len) => Some(*len),
        BodyKind::Stream | BodyKind::Callable(_) => None,
    };
    let framing = match head.framing(to, known_len) {
        Ok(framing) => framing,
        Err(mismatch) => return Err(bug(responder, mismatch.to_string())),
    };
    let keep_alive = head.keeps_alive(framing, responder.keep_alive_allowed());
    let out = head.encode(to, framing, known_len, keep_alive);
    responder.set_status(status);

    let mut written = Written {
        status,
        app_length: head.content_length(),
        body_bytes: Some(0),
    };
    let gone = |e: std::io::Error| Failure::client_gone(ruby, status, &e);
    // A callable body is walked as an `each` body whose parts are its stream's writes
    // (framing, bounds and keep-alive as for any streamed body; the head goes out before the
    // call). It is not called when no body may follow.
    let (body, kind) = match kind {
        BodyKind::Callable(callable) if framing != Framing::NoBody => {
            match callable_body(ruby, callable) {
                Ok(wrapped) => (wrapped, BodyKind::Stream),
                Err(e) => {
                    let exception = escape::caught(e);
                    if let Some(exception) = exception {
                        log_app_error(request, exception);
                    }
                    let sent = write_error(settings, request, env, responder, exception);
                    return Err(Failure::answered(sent, exception));
                }
            }
        }
        kind => (body, kind),
    };
    match (framing, kind) {
        (Framing::NoBody, _) | (_, BodyKind::Callable(_)) => {
            responder.write_whole(out, started).map_err(gone)?;
        }
        (_, BodyKind::Array(array)) => {
            written.body_bytes = Some(array.len);
            write_array(ruby, &mut responder, out, &array, status, started)?;
        }
        (_, BodyKind::File(file, len)) => {
            written.body_bytes = Some(len);
            send(&mut responder, out).map_err(gone)?;
            // Reading the file may wait for the disk: only this request waits for it.
            released(&mut responder, file, |r, file| r.send_file(file, 0, len)).map_err(gone)?;
        }
        (framing, BodyKind::Stream) => {
            let limit = match framing {
                Framing::Length(len) => Some(len),
                _ => None,
            };
            if limit.is_none() {
                // Open-ended (SSE, a callable body without a length): a stop's drain time
                // bounds it.
                responder.mark_streaming();
            }
            let body_bytes;
            (responder, body_bytes) = stream_body(
                ruby,
                settings,
                request,
                env,
                body,
                out,
                framing == Framing::Chunked,
                limit,
                status,
                responder,
            )?;
            written.body_bytes = Some(body_bytes);
        }
    }
    // Slow readers hold all the process may hand over, in memory and in spill files: this
    // thread waits for its own client (or the total to fall) before it takes another request.
    // Needed although this response is whole: every response may hand over its first piece
    // unchecked, so without this wait one thread could leave a piece for each of any number of
    // slow clients.
    if responder.over_budget() {
        wait_for_client(ruby, &responder).map_err(|e| interrupted(e, status))?;
    }
    responder.finish(keep_alive);
    Ok(written)
}

/// Writes an `each` body as it is produced: every part goes out as it is yielded (the head with
/// the first), so a slow producer (SSE, `ActionController::Live`) reaches its client piece by
/// piece. An exception before anything was sent still becomes a clean 500; after that the
/// connection is aborted, so the client sees a truncated response (a chunked body without its
/// last chunk), never a wrong one. Once the client is gone, the block raises the write's error
/// into `each`, so an endless body stops and its thread is free (then `close` runs).
struct Streaming {
    responder: Responder,
    pending: Vec<u8>,
    flushed: bool,
    body_bytes: u64,
    failure: Option<String>,
    /// Why the client can no longer be written to.
    gone: Option<std::io::Error>,
    chunked: bool,
    limit: Option<u64>,
    scratch: Vec<u8>,
}

impl Streaming {
    /// Takes one yielded part; the app's errors are recorded, not raised, so `each` ends
    /// normally. False once the client is gone: `each` must stop. Err: an interrupt met while
    /// waiting for the client, to go on through `each`.
    fn take(&mut self, ruby: &Ruby, part: Option<RString>) -> Result<bool, Error> {
        if self.gone.is_some() {
            return Ok(false);
        }
        if self.failure.is_some() {
            return Ok(true);
        }
        let Some(part) = part else {
            self.failure = Some("body yielded a non-String".to_string());
            return Ok(true);
        };
        self.scratch.clear();
        ffi::copy_bytes(part, &mut self.scratch);
        if self.scratch.is_empty() {
            // An empty part sends the head if it is still here (a callable body's head goes
            // out before the call; a flush with nothing written does the same).
            return Ok(self.flushed || self.flush(ruby)?);
        }
        self.body_bytes += self.scratch.len() as u64;
        if self.limit.is_some_and(|l| self.body_bytes > l) {
            self.failure = Some("body is longer than its content-length".to_string());
            return Ok(true);
        }
        // A large String goes out in pieces, the hand-over bounds checked after each, so one
        // huge part passes them by one piece at most (the copy above is this thread's own: the
        // app's String may change while the thread waits for its client without the GVL).
        let scratch = std::mem::take(&mut self.scratch);
        let mut flushed = Ok(true);
        for piece in scratch.chunks(HAND_OVER_PIECE) {
            if self.chunked {
                write_chunk(&mut self.pending, piece);
            } else {
                self.pending.extend_from_slice(piece);
            }
            flushed = self.flush(ruby);
            if !matches!(flushed, Ok(true)) {
                break;
            }
        }
        self.scratch = scratch;
        flushed?;
        Ok(self.gone.is_none())
    }

    /// Sends what is pending, then waits for the client if a bound is passed; false once the
    /// client is gone.
    fn flush(&mut self, ruby: &Ruby) -> Result<bool, Error> {
        self.flushed = true;
        if let Err(e) = send(&mut self.responder, std::mem::take(&mut self.pending)) {
            self.gone = Some(e);
            return Ok(false);
        }
        if self.responder.over_budget() {
            wait_for_client(ruby, &self.responder)?;
        }
        Ok(true)
    }
}

#[allow(clippy::too_many_arguments)]
fn stream_body(
    ruby: &Ruby,
    settings: &RackSettings,
    request: &Request,
    env: RHash,
    body: Value,
    head: Vec<u8>,
    chunked: bool,
    limit: Option<u64>,
    status: u16,
    responder: Responder,
) -> Result<(Responder, u64), Failure> {
    let state = Arc::new(Mutex::new(Some(Streaming {
        responder,
        pending: head,
        flushed: false,
        body_bytes: 0,
        failure: None,
        gone: None,
        chunked,
        limit,
        scratch: Vec::new(),
    })));
    let shared = state.clone();
    // A part yielded (from another thread) while the state was out for the previous one.
    let overlapped = Arc::new(AtomicBool::new(false));
    let seen = overlapped.clone();
    let block = ruby.proc_from_fn(move |ruby: &Ruby, args: &[Value], _blk| {
        // Out of the mutex while it is used: `take` may wait for the client without the GVL,
        // and no lock may be held across a GVL release (another Ruby thread taking it would
        // wait forever for a thread that waits for the GVL).
        let taken = shared.lock().unwrap_or_else(|p| p.into_inner()).take();
        match taken {
            Some(mut st) => {
                let open = st.take(ruby, args.first().and_then(|v| RString::from_value(*v)));
                let gone =
                    matches!(open, Ok(false)).then(|| client_gone_error(ruby, st.gone.as_ref()));
                *shared.lock().unwrap_or_else(|p| p.into_inner()) = Some(st);
                open?;
                if let Some(error) = gone {
                    return Err(error);
                }
            }
            // The part cannot be written now, nor dropped: the body would be short.
            None => seen.store(true, Ordering::SeqCst),
        }
        Ok(ruby.qnil())
    });
    let result = body.funcall_with_block::<_, _, Value>(*ids::EACH, (), block);
    let taken = state.lock().unwrap_or_else(|p| p.into_inner()).take();
    let Some(mut st) = taken else {
        // Still out for a part (another thread's `each`): this one's head may be out.
        return Err(Failure::after(status, None));
    };
    if overlapped.load(Ordering::SeqCst) && st.failure.is_none() {
        st.failure =
            Some("body yielded a part from another thread while one was being written".to_string());
    }
    if let Some(cause) = st.gone.take() {
        // What `each` raised is the client's departure (or what the app made of it): nothing
        // to log or answer.
        if let Err(e) = result {
            escape::caught(e);
        }
        return Err(Failure::client_gone(ruby, status, &cause));
    }
    // The app's failure: a 500 when nothing was sent yet, else an aborted connection (an
    // abandoned responder aborts it).
    let fail = |st: &mut Streaming, exception: Option<Value>| {
        if st.flushed {
            return Failure::after(status, exception);
        }
        let sent = write_error_to(settings, request, env, &mut st.responder, exception);
        Failure::answered(sent, exception)
    };
    if let Err(e) = result {
        let exception = escape::caught(e);
        if let Some(exception) = exception {
            log_app_error(request, exception);
        }
        let failure = fail(&mut st, exception);
        if !failure.app_head {
            st.responder.finish(false);
        }
        return Err(failure);
    }
    if let Some(why) = st.failure.take() {
        log::error(&format!("{}: {why}", app_context(request)));
        let failure = fail(&mut st, None);
        if !failure.app_head {
            st.responder.finish(false);
        }
        return Err(failure);
    }
    if st.limit.is_some_and(|l| st.body_bytes < l) {
        log::error(&format!(
            "{}: body is shorter than its content-length",
            app_context(request)
        ));
        return Err(Failure::after(status, None));
    }
    if st.chunked {
        st.pending.extend_from_slice(LAST_CHUNK);
    }
    send(&mut st.responder, std::mem::take(&mut st.pending))
        .map_err(|e| Failure::client_gone(ruby, status, &e))?;
    Ok((st.responder, st.body_bytes))
}

/// The `each` body that runs a callable body: `Catamount::CallableBody` (lib/catamount/
/// callable_body.rb) hands the callable a stream whose writes are the parts it yields.
fn callable_body(ruby: &Ruby, callable: Value) -> Result<Value, Error> {
    use magnus::Module;
    let class: Value = ruby
        .class_object()
        .const_get::<_, magnus::RModule>("Catamount")?
        .const_get("CallableBody")?;
    class.funcall("new", (callable,))
}

/// The protocol an app's 101 names in its `rack.protocol` response header (a String, or an
/// Array's first). Never a value that could break the head: an invalid one is left out.
fn chosen_protocol(protocol: Option<Value>) -> Option<Vec<u8>> {
    let protocol = protocol.and_then(|p| {
        let p = RArray::from_value(p)
            .and_then(|a| a.entry::<Value>(0).ok())
            .unwrap_or(p);
        RString::from_value(p).map(ffi::bytes_of)
    });
    protocol.filter(|p| !p.is_empty() && catamount_http::is_valid_field_value(p))
}

/// A 101 Switching Protocols with a callable (a Rack 3 streaming body or a `rack.hijack`
/// header): the head (with `upgrade` naming the app's `rack.protocol` and `connection:
/// upgrade`), then the connection is taken from the reactor as a full hijack takes it, and the
/// callable gets the raw socket IO: from then on the connection is the app's. An exception the
/// callable raises closes the IO (the app's client would otherwise wait forever).
fn switch_protocols(
    ruby: &Ruby,
    request: &Request,
    env: RHash,
    head: &ResponseHead,
    protocol: Option<Vec<u8>>,
    callable: Value,
    mut responder: Responder,
) -> Result<Written, Failure> {
    const STATUS: u16 = 101;
    responder.set_status(STATUS);
    let out = head.encode_upgrade(answering(request), protocol.as_deref());
    send(&mut responder, out).map_err(|e| Failure::client_gone(ruby, STATUS, &e))?;
    let (io, serving) =
        super::hijack::take_connection(ruby, responder, env, &drop).map_err(|e| {
            let exception = escape::caught(e);
            if let Some(exception) = exception {
                log_app_error(request, exception);
            }
            Failure::after(STATUS, exception)
        })?;
    let result = callable.funcall::<_, _, Value>(*ids::CALL, (io,));
    let outcome = match result {
        Ok(_) => Ok(Written {
            status: STATUS,
            app_length: None,
            body_bytes: None,
        }),
        Err(e) => {
            let exception = escape::caught(e);
            if let Some(exception) = exception {
                log_app_error(request, exception);
            }
            escape::cleanup(|| {
                if let Err(e) = io.funcall::<_, _, Value>(*ids::CLOSE, ()) {
                    escape::caught(e);
                }
            });
            Err(Failure::after(STATUS, exception))
        }
    };
    // The request counted as running until its callable returned.
    drop(serving);
    outcome
}

/// The error a write to a departed client raises into the body's `each` (an `Errno::EPIPE` or
/// the like, a `SystemCallError` as a write to a closed socket raises), to stop it.
fn client_gone_error(ruby: &Ruby, cause: Option<&std::io::Error>) -> Error {
    let errno = cause
        .and_then(std::io::Error::raw_os_error)
        .unwrap_or(libc::EPIPE);
    let made = ruby.exception_system_call_error().funcall::<_, _, Value>(
        "new",
        (
            "the client closed the connection during the response",
            errno,
        ),
    );
    match made.map(magnus::Exception::from_value) {
        Ok(Some(exception)) => exception.into(),
        _ => Error::new(
            ruby.exception_io_error(),
            "the client closed the connection",
        ),
    }
}

/// Waits until the client has read enough for the hand-over bounds: without the GVL, or in the
/// fiber mode through the Fiber scheduler, so the thread's other requests run meanwhile. Err:
/// an interrupt (a kill, `Thread#raise`, `request_timeout`) that must go on through the app.
fn wait_for_client(ruby: &Ruby, responder: &Responder) -> Result<(), Error> {
    if waits_through_scheduler(ruby) {
        // Nothing rings a fiber when the reactor drains the connection: it looks again after
        // a pause that grows to the thread-mode wait's own interrupt check (50 ms).
        let mut pause = 0.001_f64;
        while !responder.client_caught_up() {
            ruby.module_kernel()
                .funcall::<_, _, Value>("sleep", (pause,))?;
            pause = (pause * 2.0).min(0.05);
        }
        return Ok(());
    }
    let waiter = Waiter::new();
    let unblock = || waiter.set_interrupted();
    if ffi::without_gvl(|| responder.wait_for_client(&waiter), &unblock).is_err() {
        ruby.thread_check_ints()?;
    }
    Ok(())
}

/// Whether the calling fiber's waits go through a Fiber scheduler (the fiber mode's requests).
fn waits_through_scheduler(ruby: &Ruby) -> bool {
    let Ok(fiber) = ruby.class_object().const_get::<_, RClass>("Fiber") else {
        return false;
    };
    let scheduler = fiber.funcall::<_, _, Value>("scheduler", ());
    let blocking = ruby
        .fiber_current()
        .as_value()
        .funcall::<_, _, bool>("blocking?", ());
    matches!((scheduler, blocking), (Ok(s), Ok(false)) if !s.is_nil())
}

/// Writes bytes, releasing the GVL while the kernel copies a large buffer.
fn send(responder: &mut Responder, data: Vec<u8>) -> std::io::Result<()> {
    if data.len() <= RELEASE_GVL_ABOVE {
        return responder.write_vec(data);
    }
    released(responder, data, |r, data| r.write_vec(data))
}

/// Runs `op(responder, item)` with the GVL released. `op` must return promptly by itself (a
/// non-blocking write, a file read): there is nothing to unblock.
fn released<T: Send>(
    responder: &mut Responder,
    item: T,
    op: impl Fn(&mut Responder, T) -> std::io::Result<()> + Sync,
) -> std::io::Result<()> {
    let mut pending = Some(item);
    let result = ffi::without_gvl(|| pending.take().map(|item| op(responder, item)), &|| {});
    match (result, pending) {
        (Ok(Some(result)), _) => result,
        // Ruby had an interrupt pending (a thread switch is due, typically) and skipped the
        // call: it is still prompt, so do it with the GVL held.
        (_, Some(item)) => op(responder, item),
        (_, None) => Err(std::io::ErrorKind::Interrupted.into()),
    }
}

/// The app's status: an Integer or a String of one, 100..=599 (RFC 9110 §15: a client takes
/// anything else as a 5xx, so the server says 500 itself).
fn parse_status(v: Value) -> Result<u16, AppBug> {
    let status = if let Some(i) = Integer::from_value(v) {
        i.to_i64().ok()
    } else if let Some(s) = RString::from_value(v) {
        String::from_utf8_lossy(&ffi::bytes_of(s))
            .trim()
            .parse::<i64>()
            .ok()
    } else {
        None
    };
    status
        .filter(|s| (100..=599).contains(s))
        .map(|s| s as u16)
        .ok_or_else(|| AppBug(format!("invalid status {}", escape::inspect(v))))
}

/// The request's side of the framing decision.
fn answering(request: &Request) -> Answering {
    Answering {
        version: request.head.version(),
        head_request: request.head.method() == "HEAD",
    }
}

pub(crate) fn collect_headers(status: u16, headers: Value) -> Result<ResponseHead, AppBug> {
    collect_headers_and(status, headers, &mut RackFields::default())
}

/// [`collect_headers`], keeping the Rack fields Catamount acts on in `rack`.
fn collect_headers_and(
    status: u16,
    headers: Value,
    rack: &mut RackFields,
) -> Result<ResponseHead, AppBug> {
    let hash = RHash::from_value(headers).ok_or_else(|| {
        AppBug(format!(
            "headers must be a Hash, got {}",
            escape::inspect(headers)
        ))
    })?;
    let mut head = ResponseHead::new(status);
    let mut problem: Option<String> = None;
    let walk = hash.foreach(|key: Value, value: Value| {
        if problem.is_none() {
            if let Err(AppBug(why)) = add_header(&mut head, key, value, rack) {
                problem = Some(why);
            }
        }
        Ok(magnus::r_hash::ForEach::Continue)
    });
    if let Err(e) = walk {
        let why = format!("reading the headers raised {e}");
        escape::caught(e);
        return Err(AppBug(why));
    }
    if escape::pending() {
        return Err(AppBug("left while its headers were read".to_string()));
    }
    match problem {
        Some(why) => Err(AppBug(why)),
        None => Ok(head),
    }
}

/// Reads one header field from Ruby and hands it to `head`, which applies the header rules.
fn add_header(
    head: &mut ResponseHead,
    key: Value,
    value: Value,
    rack: &mut RackFields,
) -> Result<(), AppBug> {
    let name = if let Some(s) = RString::from_value(key) {
        ffi::bytes_of(s)
    } else if let Some(sym) = Symbol::from_value(key) {
        sym.name()
            .map(|n| n.as_bytes().to_vec())
            .unwrap_or_default()
    } else {
        return Err(AppBug(format!(
            "header name {} is not a String",
            escape::inspect(key)
        )));
    };
    // The name first, so a bad one is reported as such whatever its value is.
    let field = classify_field_name(&name).map_err(|e| AppBug(e.to_string()))?;
    if field == FieldName::Reserved || value.is_nil() {
        if value.is_nil() {
        } else if name == b"rack.hijack" {
            rack.hijack = Some(value);
        } else if name == b"rack.protocol" {
            rack.protocol = Some(value);
        }
        return Ok(());
    }
    let added = if let Some(s) = RString::from_value(value) {
        // Rack 2: several values in one String, separated by newlines.
        head.add_values(&name, FieldValues::Joined(&ffi::bytes_of(s)))
    } else if let Some(list) = RArray::from_value(value) {
        // Rack 3: an Array of values, one header line each.
        let mut values: Vec<Vec<u8>> = Vec::with_capacity(list.len());
        for item in list.into_iter() {
            let s = RString::from_value(item).ok_or_else(|| {
                AppBug(format!(
                    "header {:?} has a non-String value",
                    String::from_utf8_lossy(&name)
                ))
            })?;
            values.push(ffi::bytes_of(s));
        }
        head.add_values(&name, FieldValues::List(&values))
    } else {
        return Err(AppBug(format!(
            "header {:?} has value {} (expected a String or an Array of Strings)",
            String::from_utf8_lossy(&name),
            escape::inspect(value)
        )));
    };
    added.map_err(|e| AppBug(e.to_string()))
}

enum BodyError {
    /// A non-local exit, kept in [`escape`].
    Jump,
    Raised(Value),
    Bug(String),
}

fn body_kind(ruby: &Ruby, body: Value) -> Result<BodyKind, BodyError> {
    let lift = |e: Error| match escape::caught(e) {
        Some(exception) => BodyError::Raised(exception),
        None => BodyError::Jump,
    };
    if let Some(array) = RArray::from_value(body) {
        return array_bytes(array);
    }
    if body.respond_to(*ids::TO_PATH, false).map_err(lift)? {
        let path: Value = body.funcall(*ids::TO_PATH, ()).map_err(lift)?;
        if let Some(path) = RString::from_value(path) {
            use std::os::unix::ffi::OsStrExt;
            let path = std::ffi::OsStr::from_bytes(&ffi::bytes_of(path)).to_owned();
            if let Some((file, len)) = open_regular(ruby, path).map_err(lift)? {
                return Ok(BodyKind::File(file, len));
            }
        }
    }
    if body.respond_to(*ids::TO_ARY, false).map_err(lift)? {
        let array: Value = body.funcall(*ids::TO_ARY, ()).map_err(lift)?;
        if let Some(array) = RArray::from_value(array) {
            return array_bytes(array);
        }
    }
    if body.respond_to(*ids::EACH, false).map_err(lift)? {
        return Ok(BodyKind::Stream);
    }
    // Rack 3: a body that only responds to `call` is a streaming body.
    if body.respond_to(*ids::CALL, false).map_err(lift)? {
        return Ok(BodyKind::Callable(body));
    }
    Err(BodyError::Bug(format!(
        "body {} responds to neither each, to_path nor call",
        escape::inspect(body)
    )))
}

/// Opens `path` for `sendfile` when it names a regular file, without the GVL: a slow disk
/// stalls only this request. Anything else is never opened (the body is then read with
/// `each`): opening a FIFO would wait for a writer, or, opened non-blocking, release a writer
/// waiting in its own `open` into a pipe about to close; opening a device can have effects.
/// The open is still non-blocking and checked again with `fstat`, should the path change
/// between the two.
fn open_regular(ruby: &Ruby, path: std::ffi::OsString) -> Result<Option<(File, u64)>, Error> {
    use std::os::unix::fs::OpenOptionsExt;
    loop {
        let path = path.clone();
        let open = move || {
            if !std::fs::metadata(&path).ok()?.is_file() {
                return None;
            }
            let file = std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NONBLOCK)
                .open(path)
                .ok()?;
            let meta = file.metadata().ok()?;
            meta.is_file().then_some((file, meta.len()))
        };
        match ffi::without_gvl(open, &|| {}) {
            Ok(found) => return Ok(found),
            // Ruby skipped the call for a pending interrupt: let it land, then try again.
            Err(ffi::Blocked::Interrupted) => ruby.thread_check_ints()?,
            Err(ffi::Blocked::Panicked(_)) => return Ok(None),
        }
    }
}

fn array_bytes(array: RArray) -> Result<BodyKind, BodyError> {
    let mut len = 0u64;
    for item in array.into_iter() {
        if item.is_nil() {
            continue;
        }
        let s = RString::from_value(item).ok_or_else(|| {
            BodyError::Bug(format!(
                "body element {} is not a String",
                escape::inspect(item)
            ))
        })?;
        len += s.len() as u64;
    }
    Ok(BodyKind::Array(ArrayBody {
        array: Some(array),
        len,
    }))
}

/// Writes the head and an Array body. A small response is joined into one buffer (one write,
/// by this thread or the reactor: see `Responder::write_whole`); a large one goes out with one
/// vectored write straight from the Ruby strings, and only what the socket did not take is
/// copied, for the reactor to finish.
fn write_array(
    ruby: &Ruby,
    responder: &mut Responder,
    mut head: Vec<u8>,
    array: &ArrayBody,
    status: u16,
    started: Instant,
) -> Result<(), Failure> {
    let gone = |e: std::io::Error| Failure::client_gone(ruby, status, &e);
    if head.len() as u64 + array.len <= JOIN_BELOW {
        // No Ruby code has run since the length was summed, and copying allocates no Ruby object.
        if let Some(strings) = array.array {
            for part in strings.into_iter().filter_map(RString::from_value) {
                ffi::copy_bytes(part, &mut head);
            }
            ffi::gc_guard(strings);
        }
        return responder
            .write_whole(head, started)
            .map(|_| ())
            .map_err(gone);
    }
    // Our own copy (copy-on-write): while this thread waits without the GVL below, the app's
    // threads cannot change which Strings it holds (only the Strings themselves).
    let strings = match array.array {
        Some(source) => {
            let copy = source.dup();
            ffi::gc_guard(source);
            copy
        }
        None => ruby.ary_new(),
    };
    // Copied for the reactor only while the hand-over bounds allow; past them, wait (without
    // the GVL) for the client, then go on from where the copy stopped.
    let mut sent = 0;
    let result = loop {
        match ffi::write_strings_from(responder, &head, strings, array.len, &mut sent) {
            Ok(true) => break Ok(()),
            Ok(false) => {
                if let Err(e) = wait_for_client(ruby, responder) {
                    break Err(interrupted(e, status));
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
                // Ruby ran while this thread waited (the app's other threads): bytes that no
                // longer add up to the content-length sent would desync the connection.
                log::error(&format!(
                    "Rack app: {e} while the response was being sent; connection aborted"
                ));
                break Err(Failure::after(status, None));
            }
            Err(e) => break Err(gone(e)),
        }
    };
    ffi::gc_guard(strings);
    result
}

/// An interrupt that landed while this thread waited for its client (a kill, `Thread#raise`):
/// the response is abandoned (the connection aborts); a jump goes on once the request is done.
fn interrupted(e: Error, status: u16) -> Failure {
    let exception = escape::caught(e);
    if let Some(exception) = exception {
        log::error(&format!(
            "Rack app: the response was interrupted by {}",
            escape::inspect(exception)
        ));
    }
    Failure::after(status, exception)
}

/// `body.close`, which Rack requires even when the response failed or a jump is on its way
/// (whose state Ruby code may change: see [`escape::cleanup`]).
pub(crate) fn close_body(body: Value) {
    escape::cleanup(|| call_close(body));
}

fn call_close(body: Value) {
    if escape::quietly(body.respond_to(*ids::CLOSE, false)) != Some(true) {
        return;
    }
    if let Err(e) = body.funcall::<_, _, Value>(*ids::CLOSE, ()) {
        if let Some(exception) = escape::caught(e) {
            log::error(&format!(
                "Rack app: body.close raised {}",
                escape::inspect(exception)
            ));
        }
    }
}

/// A 500 for an app error (or a response the app built wrongly).
fn write_error(
    settings: &RackSettings,
    request: &Request,
    env: RHash,
    mut responder: Responder,
    exception: Option<Value>,
) -> u16 {
    let status = write_error_to(settings, request, env, &mut responder, exception);
    responder.finish(false);
    status
}

/// The 500 response: the `lowlevel_error_handler`'s when there is one (and it works), else the
/// built-in one. Either way the connection closes after it. Returns the status sent.
fn write_error_to(
    settings: &RackSettings,
    request: &Request,
    env: RHash,
    responder: &mut Responder,
    exception: Option<Value>,
) -> u16 {
    // After a jump no app code runs: the handler is app code.
    if let Some(handler) = settings.error_handler.filter(|_| !escape::pending()) {
        let ruby = Ruby::get_with(env);
        match handled_error(&ruby, ruby.get_inner(handler), request, env, exception) {
            Ok((status, bytes)) => {
                responder.set_status(status);
                let _ = responder.write_vec(bytes);
                return status;
            }
            Err(why) => log::error(&format!(
                "{}: lowlevel_error_handler failed, sending the default 500: {why}",
                app_context(request)
            )),
        }
    }
    let shown = exception.filter(|_| settings.show_errors);
    responder.set_status(500);
    let _ = responder.write_vec(builtin_500(request, shown));
    500
}

/// The built-in 500 (closing the connection): the exception described in its body when given
/// (`show_errors`), else just the reason phrase.
fn builtin_500(request: &Request, shown: Option<Value>) -> Vec<u8> {
    let body = match shown {
        Some(exc) => describe_exception(exc),
        None => format!("{}\n", reason_phrase(500)),
    };
    let mut head = ResponseHead::new(500);
    // A valid field: it cannot be refused.
    let _ = head.add(b"content-type", FieldValues::Joined(b"text/plain"));
    head.closing_response(answering(request), body.as_bytes())
}

/// Calls the handler as Puma does (with 1, 2 or 3 arguments by its arity) and turns its
/// `[status, headers, body]` into its status and the response's bytes.
fn handled_error(
    ruby: &Ruby,
    handler: Value,
    request: &Request,
    env: RHash,
    exception: Option<Value>,
) -> Result<(u16, Vec<u8>), String> {
    let exception = match exception {
        Some(e) => e,
        None => ruby
            .exception_runtime_error()
            .funcall::<_, _, Value>("new", ("the application's response was invalid",))
            .map_err(failed)?,
    };
    let has_arity = escape::quietly(handler.respond_to("arity", false)) == Some(true);
    if escape::pending() {
        // `respond_to?` was left by a jump: no more app code runs.
        return Err(failed_by_jump());
    }
    let callable = if has_arity {
        handler
    } else {
        handler
            .funcall::<_, _, Value>("method", (ruby.to_symbol("call"),))
            .map_err(failed)?
    };
    let arity: i64 = callable.funcall("arity", ()).map_err(failed)?;
    let triple: Value = match arity {
        1 => handler.funcall("call", (exception,)),
        2 => handler.funcall("call", (exception, env)),
        _ => handler.funcall("call", (exception, env, 500)),
    }
    .map_err(failed)?;
    let (status, headers, body) = split_triple(triple).map_err(|AppBug(why)| why)?;
    let status = parse_status(status).map_err(|AppBug(why)| why)?;
    let head = collect_headers(status, headers).map_err(|AppBug(why)| why)?;
    let mut content = Vec::new();
    let mut take = |chunk: Value| -> Result<(), String> {
        let s = RString::from_value(chunk).ok_or_else(|| {
            format!(
                "body yielded {} instead of a String",
                escape::inspect(chunk)
            )
        })?;
        content.extend_from_slice(&crate::ffi::bytes_of(s));
        Ok(())
    };
    if let Some(array) = RArray::from_value(body) {
        for chunk in array.into_iter() {
            take(chunk)?;
        }
    } else {
        let chunks: RArray = body.funcall("to_a", ()).map_err(failed)?;
        for chunk in chunks.into_iter() {
            take(chunk)?;
        }
    }
    if escape::quietly(body.respond_to(*ids::CLOSE, false)) == Some(true) {
        escape::quietly(body.funcall::<_, _, Value>(*ids::CLOSE, ()));
    }
    // The handler's answer is framed by the same rules as the app's.
    let to = answering(request);
    head.framing(to, Some(content.len() as u64))
        .map_err(|e| e.to_string())?;
    Ok((status, head.closing_response(to, &content)))
}

fn describe_exception(exception: Value) -> String {
    let message: String = escape::quietly(exception.funcall("message", ())).unwrap_or_default();
    let class = escape::inspect(exception.class().as_value());
    let backtrace = backtrace_of(exception);
    let mut text = format!("Catamount caught this error: {message} ({class})\n");
    for line in backtrace {
        text.push_str(&line);
        text.push('\n');
    }
    text
}

fn app_context(request: &Request) -> String {
    let head = &request.head;
    let query = head
        .query()
        .map(|q| format!("?{}", String::from_utf8_lossy(q)))
        .unwrap_or_default();
    format!(
        "Rack app (\"{} {}{query}\" - ({}))",
        head.method(),
        String::from_utf8_lossy(head.path()),
        request.peer.ip_string()
    )
}

/// The exception's backtrace (empty when it has none, or asking for it failed).
fn backtrace_of(exception: Value) -> Vec<String> {
    if escape::pending() {
        return Vec::new();
    }
    escape::quietly(exception.funcall::<_, _, Option<Vec<String>>>("backtrace", ()))
        .flatten()
        .unwrap_or_default()
}

/// What a failed Ruby call gives the error log; a jump in it is kept in [`escape`].
fn failed(e: Error) -> String {
    match escape::caught(e) {
        Some(exception) => escape::inspect(exception),
        None => failed_by_jump(),
    }
}

fn failed_by_jump() -> String {
    "left by a non-local exit (Thread#kill, throw)".to_string()
}

/// The error line for a request whose thread was killed (or left by a `throw`) in app code.
fn log_jump(request: &Request) {
    log::error(&format!(
        "{}: left by a non-local exit (Thread#kill, throw); answering 500 if nothing was sent",
        app_context(request)
    ));
}

pub(crate) fn log_app_error(request: &Request, exception: Value) {
    let backtrace = backtrace_of(exception);
    let mut line = format!("{}: {}", app_context(request), escape::inspect(exception));
    for frame in backtrace {
        line.push_str("\n    ");
        line.push_str(&frame);
    }
    log::error(&line);
}

fn access_log(
    ruby: &Ruby,
    settings: &RackSettings,
    request: &Request,
    status: u16,
    app_length: Option<u64>,
    started: Instant,
) {
    let length = match app_length {
        Some(0) | None => "-".to_string(),
        Some(n) => n.to_string(),
    };
    write_access_line(
        ruby,
        settings,
        request,
        &format!("{status} {length}"),
        started,
    );
}

/// The access line of a request whose app took the connection (full hijack): no status or
/// length was sent, so `HIJACKED -1` stands in, as in Puma's log.
pub(crate) fn access_log_hijacked(
    ruby: &Ruby,
    settings: &RackSettings,
    request: &Request,
    started: Instant,
) {
    write_access_line(ruby, settings, request, "HIJACKED -1", started);
}

/// One Common Log Format line, `outcome` in the status and length columns.
fn write_access_line(
    ruby: &Ruby,
    settings: &RackSettings,
    request: &Request,
    outcome: &str,
    started: Instant,
) {
    let head = &request.head;
    let query = head
        .query()
        .map(|q| format!("?{}", String::from_utf8_lossy(q)))
        .unwrap_or_default();
    let protocol = match head.version() {
        Version::Http11 => "HTTP/1.1",
        Version::Http10 => "HTTP/1.0",
    };
    let line = format!(
        "{} - - [{}] \"{} {}{query} {protocol}\" {outcome} {:.4}\n",
        request.peer.ip_string(),
        log::common_log_time(std::time::SystemTime::now()),
        head.method(),
        String::from_utf8_lossy(head.path()),
        started.elapsed().as_secs_f64()
    );
    emit_access_line(ruby, settings, line);
}

/// An access line to `custom_logger` when there is one, else stdout (the log queue).
pub(crate) fn emit_access_line(ruby: &Ruby, settings: &RackSettings, line: String) {
    let Some(logger) = settings.access_logger else {
        log::emit(log::Stream::Out, line);
        return;
    };
    if escape::pending() {
        return; // the logger is app code, and none runs once a jump is on its way
    }
    let logger = ruby.get_inner(logger);
    let method = if escape::quietly(logger.respond_to("write", false)) == Some(true) {
        "write"
    } else {
        "<<"
    };
    if let Err(e) = logger.funcall::<_, _, Value>(method, (line,)) {
        log::error(&format!("custom_logger failed: {}", failed(e)));
    }
}
