//! Turning the app's `[status, headers, body]` into bytes on the wire.
//!
//! Decisions, in order: is the triple well-formed (else a clean 500); which headers are valid
//! (an invalid name or value is the app's bug: 500, never a corrupt response); how the body is
//! framed (the app's `content-length`; else the size of an Array body or a file; else chunked on
//! HTTP/1.1 and close-delimited on HTTP/1.0); whether the connection stays open. `body.close` is
//! always called, then the access log line and the `rack.after_reply` callbacks.

use std::fs::File;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use magnus::value::ReprValue;
use magnus::{Error, Integer, RArray, RHash, RString, Ruby, Symbol, Value};

use catamount_http::{
    is_token, is_valid_field_value, reason_phrase, status_has_body, write_chunk, write_status_line,
    Version, LAST_CHUNK,
};
use catamount_server::{log, Request, Responder, Waiter};

use super::{ids, RackSettings};
use crate::ffi;

/// Streamed bodies are written in pieces of about this size.
const FLUSH_AT: usize = 64 * 1024;
/// Streamed pieces larger than this (already copied into Rust) are written with the GVL
/// released while the kernel copies them; smaller writes keep it (see docs/architecture.md,
/// "Writes keep the GVL": a hand-off would cost more than the copy).
const RELEASE_GVL_ABOVE: usize = 64 * 1024;
/// Array bodies up to this size (with the head) are joined into one buffer and sent with one
/// write; larger ones are written from the Ruby strings with one vectored write.
const JOIN_BELOW: u64 = 64 * 1024;

/// A response the app built wrongly; becomes a 500 and an error log line.
pub(crate) struct AppBug(pub(crate) String);

/// How the body will be delimited on the wire.
#[derive(Clone, Copy, PartialEq)]
enum Framing {
    Length(u64),
    Chunked,
    /// HTTP/1.0 with unknown length: the end of the body is the end of the connection.
    Close,
    /// HEAD, 1xx, 204, 304: no body bytes.
    NoBody,
}

enum BodyKind {
    /// An Array body (or `to_ary`): its Strings and their total length, written without
    /// copying them into Rust (see [`write_array`]).
    Array(ArrayBody),
    File(File, u64),
    Stream,
}

struct ArrayBody {
    /// Kept so the strings stay reachable for the GC while we hold them.
    _array: Option<RArray>,
    parts: Vec<RString>,
    len: u64,
}

impl ArrayBody {
    fn empty() -> ArrayBody {
        ArrayBody {
            _array: None,
            parts: Vec::new(),
            len: 0,
        }
    }
}

pub(crate) struct Head {
    status: u16,
    pub(crate) lines: Vec<u8>,
    content_length: Option<u64>,
    app_transfer_encoding: bool,
    app_says_close: bool,
}

/// Writes the response for `result` (what `app.call(env)` returned or raised).
/// Returns Err only for a non-local exit (thread kill, throw) that must propagate to Ruby.
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
            let Some(exception) = e.value() else {
                // A non-local exit, not an exception: the thread was killed in the app. The
                // client still gets its answer (the built-in 500: no Ruby code runs while the
                // thread is being killed), then the exit goes on.
                log::error(&format!(
                    "{}: the thread serving it was killed; answering 500",
                    app_context(request)
                ));
                let mut responder = responder;
                let _ = responder.write_vec(builtin_500(request, None));
                responder.finish(false);
                return Err(e);
            };
            log_app_error(request, exception);
            write_error(settings, request, env, responder, Some(exception));
            return Ok(());
        }
    };
    let parts = match split_triple(triple) {
        Ok(parts) => parts,
        Err(AppBug(why)) => {
            log::error(&format!("{}: {why}", app_context(request)));
            write_error(settings, request, env, responder, None);
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
    close_body(body);
    match outcome {
        Ok(Written { status, app_length }) => {
            if settings.log_requests {
                access_log(ruby, settings, request, status, app_length, started);
            }
        }
        Err(Failure::Jump(e)) => return Err(e),
        Err(Failure::Logged) => {}
    }
    super::env::run_after_reply(ruby, env);
    Ok(())
}

struct Written {
    status: u16,
    app_length: Option<u64>,
}

enum Failure {
    /// A non-local exit from Ruby; re-raise it.
    Jump(Error),
    /// Already logged and answered (or the connection aborted).
    Logged,
}

fn split_triple(triple: Value) -> Result<(Value, Value, Value), AppBug> {
    let array = RArray::from_value(triple).ok_or_else(|| {
        AppBug(format!(
            "app returned {} instead of [status, headers, body]",
            triple.inspect()
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
    let version = request.head.version();
    let head_request = request.head.method() == "HEAD";
    let bug = |responder: Responder, why: String| {
        log::error(&format!("{}: {why}", app_context(request)));
        write_error(settings, request, env, responder, None);
        Failure::Logged
    };
    let status = match parse_status(status_value) {
        Ok(s) => s,
        Err(AppBug(why)) => return Err(bug(responder, why)),
    };
    let head = match collect_headers(status, headers_value) {
        Ok(h) => h,
        Err(AppBug(why)) => return Err(bug(responder, why)),
    };
    let bodiless = head_request || !status_has_body(status);
    let kind = if bodiless && head.content_length.is_some() {
        BodyKind::Array(ArrayBody::empty())
    } else {
        match body_kind(body) {
            Ok(k) => k,
            Err(BodyError::Jump(e)) => return Err(Failure::Jump(e)),
            Err(BodyError::Raised(exception)) => {
                log_app_error(request, exception);
                write_error(settings, request, env, responder, Some(exception));
                return Err(Failure::Logged);
            }
            Err(BodyError::Bug(why)) => return Err(bug(responder, why)),
        }
    };
    let known_len = match &kind {
        BodyKind::Array(array) if !bodiless || head.content_length.is_none() => Some(array.len),
        BodyKind::Array(_) => None,
        BodyKind::File(_, len) => Some(*len),
        BodyKind::Stream => None,
    };
    if let (Some(app), Some(actual), false) = (head.content_length, known_len, bodiless) {
        if app != actual {
            let why = format!("content-length {app} does not match the body's {actual} bytes");
            return Err(bug(responder, why));
        }
    }
    let framing = if bodiless {
        Framing::NoBody
    } else if let Some(len) = head.content_length.or(known_len) {
        Framing::Length(len)
    } else if head.app_transfer_encoding {
        // The app framed the body itself; pass it through and close after it.
        Framing::Close
    } else if version == Version::Http11 {
        Framing::Chunked
    } else {
        Framing::Close
    };
    let keep_alive =
        responder.keep_alive_allowed() && !head.app_says_close && framing != Framing::Close;

    let mut out = Vec::with_capacity(256 + head.lines.len());
    write_status_line(&mut out, version, status);
    out.extend_from_slice(&head.lines);
    let add_length = head.content_length.is_none() && status != 204 && status >= 200;
    match framing {
        Framing::Length(len) if add_length => {
            push_header(&mut out, b"content-length", len.to_string().as_bytes())
        }
        Framing::NoBody if add_length && head_request => {
            if let Some(len) = known_len {
                push_header(&mut out, b"content-length", len.to_string().as_bytes());
            }
        }
        Framing::Chunked => push_header(&mut out, b"transfer-encoding", b"chunked"),
        _ => {}
    }
    match (version, keep_alive) {
        (Version::Http11, false) => push_header(&mut out, b"connection", b"close"),
        (Version::Http10, true) => push_header(&mut out, b"connection", b"keep-alive"),
        _ => {}
    }
    out.extend_from_slice(b"\r\n");

    let written = Written {
        status,
        app_length: head.content_length,
    };
    match (framing, kind) {
        (Framing::NoBody, _) => {
            responder
                .write_whole(out, started)
                .map_err(|_| Failure::Logged)?;
        }
        (_, BodyKind::Array(array)) => {
            write_array(&mut responder, out, &array, started).map_err(|_| Failure::Logged)?;
        }
        (_, BodyKind::File(file, len)) => {
            send(&mut responder, out).map_err(|_| Failure::Logged)?;
            responder
                .send_file(file, 0, len)
                .map_err(|_| Failure::Logged)?;
        }
        (framing, BodyKind::Stream) => {
            let limit = match framing {
                Framing::Length(len) => Some(len),
                _ => None,
            };
            responder = stream_body(
                ruby,
                settings,
                request,
                env,
                body,
                out,
                framing == Framing::Chunked,
                limit,
                responder,
            )?;
        }
    }
    responder.finish(keep_alive);
    Ok(written)
}

/// Writes an `each` body as it is produced. An exception before anything was sent still becomes
/// a clean 500; after that the connection is aborted, so the client sees a truncated response
/// (a chunked body without its last chunk), never a wrong one.
struct Streaming {
    responder: Responder,
    pending: Vec<u8>,
    flushed: bool,
    body_bytes: u64,
    failure: Option<String>,
    client_gone: bool,
    chunked: bool,
    limit: Option<u64>,
    scratch: Vec<u8>,
}

impl Streaming {
    /// Takes one yielded part; errors are recorded, not raised, so `each` ends normally.
    fn take(&mut self, part: Option<RString>) {
        if self.client_gone || self.failure.is_some() {
            return;
        }
        let Some(part) = part else {
            self.failure = Some("body yielded a non-String".to_string());
            return;
        };
        self.scratch.clear();
        ffi::copy_bytes(part, &mut self.scratch);
        self.body_bytes += self.scratch.len() as u64;
        if self.limit.is_some_and(|l| self.body_bytes > l) {
            self.failure = Some("body is longer than its content-length".to_string());
            return;
        }
        if self.chunked {
            write_chunk(&mut self.pending, &self.scratch);
        } else {
            self.pending.extend_from_slice(&self.scratch);
        }
        if self.pending.len() >= FLUSH_AT {
            self.flushed = true;
            if send(&mut self.responder, std::mem::take(&mut self.pending)).is_err() {
                self.client_gone = true;
            } else if self.responder.over_budget() {
                wait_for_client(&self.responder);
            }
        }
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
    responder: Responder,
) -> Result<Responder, Failure> {
    let state = Arc::new(Mutex::new(Some(Streaming {
        responder,
        pending: head,
        flushed: false,
        body_bytes: 0,
        failure: None,
        client_gone: false,
        chunked,
        limit,
        scratch: Vec::new(),
    })));
    let shared = state.clone();
    let block = ruby.proc_from_fn(move |ruby: &Ruby, args: &[Value], _blk| {
        if let Some(st) = shared.lock().unwrap_or_else(|p| p.into_inner()).as_mut() {
            st.take(args.first().and_then(|v| RString::from_value(*v)));
        }
        ruby.qnil()
    });
    let result = body.funcall_with_block::<_, _, Value>(*ids::EACH, (), block);
    let taken = state.lock().unwrap_or_else(|p| p.into_inner()).take();
    let Some(mut st) = taken else {
        return Err(Failure::Logged);
    };
    if let Err(e) = result {
        let Some(exception) = e.value() else {
            return Err(Failure::Jump(e));
        };
        log_app_error(request, exception);
        if !st.flushed {
            write_error_to(settings, request, env, &mut st.responder, Some(exception));
            st.responder.finish(false);
        }
        // An abandoned responder aborts the connection.
        return Err(Failure::Logged);
    }
    if st.client_gone {
        return Err(Failure::Logged);
    }
    if let Some(why) = st.failure.take() {
        log::error(&format!("{}: {why}", app_context(request)));
        if !st.flushed {
            write_error_to(settings, request, env, &mut st.responder, None);
            st.responder.finish(false);
        }
        return Err(Failure::Logged);
    }
    if st.limit.is_some_and(|l| st.body_bytes < l) {
        log::error(&format!(
            "{}: body is shorter than its content-length",
            app_context(request)
        ));
        return Err(Failure::Logged);
    }
    if st.chunked {
        st.pending.extend_from_slice(LAST_CHUNK);
    }
    send(&mut st.responder, std::mem::take(&mut st.pending)).map_err(|_| Failure::Logged)?;
    Ok(st.responder)
}

fn wait_for_client(responder: &Responder) {
    let waiter = Waiter::new();
    let unblock = || waiter.set_interrupted();
    let _ = ffi::without_gvl(|| responder.wait_for_client(&waiter), &unblock);
}

/// Writes bytes, releasing the GVL while the kernel copies a large buffer.
fn send(responder: &mut Responder, data: Vec<u8>) -> std::io::Result<()> {
    if data.len() <= RELEASE_GVL_ABOVE {
        return responder.write_vec(data);
    }
    // A non-blocking write returns promptly by itself; there is nothing to unblock.
    let mut pending = Some(data);
    let released = ffi::without_gvl(|| pending.take().map(|d| responder.write_vec(d)), &|| {});
    match (released, pending) {
        (Ok(Some(result)), _) => result,
        // Ruby had an interrupt pending (a thread switch is due, typically) and skipped the
        // call: the write is still non-blocking, so do it with the GVL held.
        (_, Some(data)) => responder.write_vec(data),
        (_, None) => Err(std::io::ErrorKind::Interrupted.into()),
    }
}

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
        .filter(|s| (100..=999).contains(s))
        .map(|s| s as u16)
        .ok_or_else(|| AppBug(format!("invalid status {}", v.inspect())))
}

pub(crate) fn collect_headers(status: u16, headers: Value) -> Result<Head, AppBug> {
    let hash = RHash::from_value(headers)
        .ok_or_else(|| AppBug(format!("headers must be a Hash, got {}", headers.inspect())))?;
    let mut head = Head {
        status,
        lines: Vec::with_capacity(256),
        content_length: None,
        app_transfer_encoding: false,
        app_says_close: false,
    };
    let mut problem: Option<String> = None;
    let walk = hash.foreach(|key: Value, value: Value| {
        if problem.is_none() {
            if let Err(AppBug(why)) = add_header(&mut head, key, value) {
                problem = Some(why);
            }
        }
        Ok(magnus::r_hash::ForEach::Continue)
    });
    if let Err(e) = walk {
        return Err(AppBug(format!("reading the headers raised {e}")));
    }
    match problem {
        Some(why) => Err(AppBug(why)),
        None => Ok(head),
    }
}

fn add_header(head: &mut Head, key: Value, value: Value) -> Result<(), AppBug> {
    let name = if let Some(s) = RString::from_value(key) {
        ffi::bytes_of(s)
    } else if let Some(sym) = Symbol::from_value(key) {
        sym.name()
            .map(|n| n.as_bytes().to_vec())
            .unwrap_or_default()
    } else {
        return Err(AppBug(format!(
            "header name {} is not a String",
            key.inspect()
        )));
    };
    // Rack reserves `rack.*` keys for the server (e.g. rack.hijack); they are not sent.
    if name.starts_with(b"rack.") || name.eq_ignore_ascii_case(b"status") {
        return Ok(());
    }
    if !is_token(&name) {
        return Err(AppBug(format!(
            "invalid header name {:?}",
            String::from_utf8_lossy(&name)
        )));
    }
    let mut values: Vec<Vec<u8>> = Vec::new();
    if value.is_nil() {
        return Ok(());
    } else if let Some(s) = RString::from_value(value) {
        // Rack 2: several values in one String, separated by newlines.
        values.extend(ffi::bytes_of(s).split(|c| *c == b'\n').map(<[u8]>::to_vec));
    } else if let Some(list) = RArray::from_value(value) {
        // Rack 3: an Array of values, one header line each.
        for item in list.into_iter() {
            let s = RString::from_value(item).ok_or_else(|| {
                AppBug(format!(
                    "header {:?} has a non-String value",
                    String::from_utf8_lossy(&name)
                ))
            })?;
            values.push(ffi::bytes_of(s));
        }
    } else {
        return Err(AppBug(format!(
            "header {:?} has value {} (expected a String or an Array of Strings)",
            String::from_utf8_lossy(&name),
            value.inspect()
        )));
    }
    for v in &values {
        if !is_valid_field_value(v) {
            return Err(AppBug(format!(
                "invalid value for header {:?}",
                String::from_utf8_lossy(&name)
            )));
        }
    }
    if name.eq_ignore_ascii_case(b"content-length") {
        let text = values
            .first()
            .map(|v| String::from_utf8_lossy(v).trim().to_string())
            .unwrap_or_default();
        let len = text
            .parse::<u64>()
            .ok()
            .filter(|_| values.len() == 1 && text.bytes().all(|b| b.is_ascii_digit()))
            .ok_or_else(|| AppBug(format!("invalid content-length {text:?}")))?;
        if head.status == 204 || head.status < 200 {
            return Ok(());
        }
        head.content_length = Some(len);
    } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
        if head.status == 204 || head.status < 200 {
            return Ok(());
        }
        head.app_transfer_encoding = true;
    } else if name.eq_ignore_ascii_case(b"connection") {
        head.app_says_close = values.iter().any(|v| {
            v.split(|c| *c == b',')
                .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"close"))
        });
        // We decide the connection header ourselves from the keep-alive decision.
        return Ok(());
    }
    for v in values {
        push_header(&mut head.lines, &name, &v);
    }
    Ok(())
}

fn push_header(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

enum BodyError {
    Jump(Error),
    Raised(Value),
    Bug(String),
}

fn body_kind(body: Value) -> Result<BodyKind, BodyError> {
    let lift = |e: Error| match e.value() {
        Some(exception) => BodyError::Raised(exception),
        None => BodyError::Jump(e),
    };
    if let Some(array) = RArray::from_value(body) {
        return array_bytes(array);
    }
    if body.respond_to(*ids::TO_PATH, false).map_err(lift)? {
        let path: Value = body.funcall(*ids::TO_PATH, ()).map_err(lift)?;
        if let Some(path) = RString::from_value(path) {
            let path = String::from_utf8_lossy(&ffi::bytes_of(path)).into_owned();
            if let Ok(file) = File::open(&path) {
                if let Ok(meta) = file.metadata() {
                    if meta.is_file() {
                        return Ok(BodyKind::File(file, meta.len()));
                    }
                }
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
    Err(BodyError::Bug(format!(
        "body {} responds to neither each nor to_path (streaming bodies arrive with hijack support)",
        body.inspect()
    )))
}

fn array_bytes(array: RArray) -> Result<BodyKind, BodyError> {
    let mut parts = Vec::with_capacity(array.len());
    let mut len = 0u64;
    for item in array.into_iter() {
        if item.is_nil() {
            continue;
        }
        let s = RString::from_value(item).ok_or_else(|| {
            BodyError::Bug(format!("body element {} is not a String", item.inspect()))
        })?;
        len += s.len() as u64;
        parts.push(s);
    }
    Ok(BodyKind::Array(ArrayBody {
        _array: Some(array),
        parts,
        len,
    }))
}

/// Writes the head and an Array body. A small response is joined into one buffer (one write,
/// by this thread or the reactor: see `Responder::write_whole`); a large one goes out with one
/// vectored write straight from the Ruby strings, and only what the socket did not take is
/// copied, for the reactor to finish.
fn write_array(
    responder: &mut Responder,
    mut head: Vec<u8>,
    array: &ArrayBody,
    started: Instant,
) -> std::io::Result<()> {
    if head.len() as u64 + array.len <= JOIN_BELOW {
        for part in &array.parts {
            ffi::copy_bytes(*part, &mut head);
        }
        return responder.write_whole(head, started).map(|_| ());
    }
    ffi::with_bytes_of(&array.parts, |parts| responder.write_parts(&head, parts))
}

fn close_body(body: Value) {
    if body.respond_to(*ids::CLOSE, false).unwrap_or(false) {
        if let Err(e) = body.funcall::<_, _, Value>(*ids::CLOSE, ()) {
            log::error(&format!("Rack app: body.close raised {e}"));
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
) {
    write_error_to(settings, request, env, &mut responder, exception);
    responder.finish(false);
}

/// The 500 response: the `lowlevel_error_handler`'s when there is one (and it works), else the
/// built-in one. Either way the connection closes after it.
fn write_error_to(
    settings: &RackSettings,
    request: &Request,
    env: RHash,
    responder: &mut Responder,
    exception: Option<Value>,
) {
    if let Some(handler) = settings.error_handler {
        let ruby = Ruby::get_with(env);
        match handled_error(&ruby, ruby.get_inner(handler), request, env, exception) {
            Ok(bytes) => {
                let _ = responder.write_vec(bytes);
                return;
            }
            Err(why) => log::error(&format!(
                "{}: lowlevel_error_handler failed, sending the default 500: {why}",
                app_context(request)
            )),
        }
    }
    let shown = exception.filter(|_| settings.show_errors);
    let _ = responder.write_vec(builtin_500(request, shown));
}

/// The built-in 500 (closing the connection): the exception described in its body when given
/// (`show_errors`), else just the reason phrase.
fn builtin_500(request: &Request, shown: Option<Value>) -> Vec<u8> {
    let body = match shown {
        Some(exc) => describe_exception(exc),
        None => format!("{}\n", reason_phrase(500)),
    };
    closing_response(
        request,
        500,
        b"content-type: text/plain\r\n",
        true,
        body.as_bytes(),
    )
}

/// Calls the handler as Puma does (with 1, 2 or 3 arguments by its arity) and turns its
/// `[status, headers, body]` into response bytes.
fn handled_error(
    ruby: &Ruby,
    handler: Value,
    request: &Request,
    env: RHash,
    exception: Option<Value>,
) -> Result<Vec<u8>, String> {
    let exception = match exception {
        Some(e) => e,
        None => ruby
            .exception_runtime_error()
            .funcall::<_, _, Value>("new", ("the application's response was invalid",))
            .map_err(|e| e.to_string())?,
    };
    let callable = if handler.respond_to("arity", false).unwrap_or(false) {
        handler
    } else {
        handler
            .funcall::<_, _, Value>("method", (ruby.to_symbol("call"),))
            .map_err(|e| e.to_string())?
    };
    let arity: i64 = callable.funcall("arity", ()).map_err(|e| e.to_string())?;
    let triple: Value = match arity {
        1 => handler.funcall("call", (exception,)),
        2 => handler.funcall("call", (exception, env)),
        _ => handler.funcall("call", (exception, env, 500)),
    }
    .map_err(|e| e.to_string())?;
    let (status, headers, body) = split_triple(triple).map_err(|AppBug(why)| why)?;
    let status = parse_status(status).map_err(|AppBug(why)| why)?;
    let head = collect_headers(status, headers).map_err(|AppBug(why)| why)?;
    let mut content = Vec::new();
    let mut take = |chunk: Value| -> Result<(), String> {
        let s = RString::from_value(chunk)
            .ok_or_else(|| format!("body yielded {} instead of a String", chunk.inspect()))?;
        content.extend_from_slice(&crate::ffi::bytes_of(s));
        Ok(())
    };
    if let Some(array) = RArray::from_value(body) {
        for chunk in array.into_iter() {
            take(chunk)?;
        }
    } else {
        let chunks: RArray = body.funcall("to_a", ()).map_err(|e| e.to_string())?;
        for chunk in chunks.into_iter() {
            take(chunk)?;
        }
    }
    if body.respond_to(*ids::CLOSE, false).unwrap_or(false) {
        let _ = body.funcall::<_, _, Value>(*ids::CLOSE, ());
    }
    let add_length = head.content_length.is_none();
    Ok(closing_response(
        request,
        status,
        &head.lines,
        add_length,
        &content,
    ))
}

/// A whole response that ends the connection: status line, `header_lines` (already formatted),
/// a content-length when asked, `connection: close`, and the body unless none is allowed.
fn closing_response(
    request: &Request,
    status: u16,
    header_lines: &[u8],
    add_length: bool,
    body: &[u8],
) -> Vec<u8> {
    let bodiless = request.head.method() == "HEAD" || !status_has_body(status);
    let mut out = Vec::with_capacity(128 + header_lines.len() + body.len());
    write_status_line(&mut out, request.head.version(), status);
    out.extend_from_slice(header_lines);
    if add_length && status_has_body(status) {
        push_header(
            &mut out,
            b"content-length",
            body.len().to_string().as_bytes(),
        );
    }
    push_header(&mut out, b"connection", b"close");
    out.extend_from_slice(b"\r\n");
    if !bodiless {
        out.extend_from_slice(body);
    }
    out
}

fn describe_exception(exception: Value) -> String {
    let message: String = exception.funcall("message", ()).unwrap_or_default();
    let class = exception.class().inspect();
    let backtrace: Vec<String> = exception
        .funcall::<_, _, Option<Vec<String>>>("backtrace", ())
        .ok()
        .flatten()
        .unwrap_or_default();
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

fn log_app_error(request: &Request, exception: Value) {
    let backtrace: Vec<String> = exception
        .funcall::<_, _, Option<Vec<String>>>("backtrace", ())
        .ok()
        .flatten()
        .unwrap_or_default();
    let mut line = format!("{}: {}", app_context(request), exception.inspect());
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
    let head = &request.head;
    let query = head
        .query()
        .map(|q| format!("?{}", String::from_utf8_lossy(q)))
        .unwrap_or_default();
    let protocol = match head.version() {
        Version::Http11 => "HTTP/1.1",
        Version::Http10 => "HTTP/1.0",
    };
    let length = match app_length {
        Some(0) | None => "-".to_string(),
        Some(n) => n.to_string(),
    };
    let line = format!(
        "{} - - [{}] \"{} {}{query} {protocol}\" {status} {length} {:.4}\n",
        request.peer.ip_string(),
        log::common_log_time(std::time::SystemTime::now()),
        head.method(),
        String::from_utf8_lossy(head.path()),
        started.elapsed().as_secs_f64()
    );
    let Some(logger) = settings.access_logger else {
        log::stdout(&line);
        return;
    };
    let logger = ruby.get_inner(logger);
    let method = if logger.respond_to("write", false).unwrap_or(false) {
        "write"
    } else {
        "<<"
    };
    if let Err(e) = logger.funcall::<_, _, Value>(method, (line,)) {
        log::error(&format!("custom_logger failed: {e}"));
    }
}
