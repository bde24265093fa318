//! Building the Rack env for a request, in one native call.
//!
//! Keys are frozen, interned strings made once (a Hash with frozen String keys does not copy
//! them), fixed values (`SERVER_PROTOCOL`, `GATEWAY_INTERFACE`, ...) are shared frozen strings,
//! and each request allocates only what is really per request: its values, the Hash, `rack.input`
//! and `rack.after_reply`. Every value goes straight into the Hash, so the GC can always see it.

use magnus::value::{Lazy, ReprValue};
use magnus::{prelude::*, Error, RArray, RClass, RHash, RString, Ruby, Value};

use catamount_http::Version;
use catamount_server::{Body, Request};

use super::{RackSettings, RemoteAddr};

/// A frozen, interned String kept alive for the life of the process.
fn frozen(ruby: &Ruby, s: &str) -> RString {
    let s = ruby.str_new(s).to_interned_str();
    ruby.gc_register_mark_object(s);
    s
}

macro_rules! keys {
    ($($name:ident = $text:expr;)*) => {
        $(static $name: Lazy<RString> = Lazy::new(|ruby| frozen(ruby, $text));)*
    };
}

keys! {
    REQUEST_METHOD = "REQUEST_METHOD";
    SCRIPT_NAME = "SCRIPT_NAME";
    PATH_INFO = "PATH_INFO";
    REQUEST_PATH = "REQUEST_PATH";
    REQUEST_URI = "REQUEST_URI";
    QUERY_STRING = "QUERY_STRING";
    FRAGMENT = "FRAGMENT";
    SERVER_NAME = "SERVER_NAME";
    SERVER_PORT = "SERVER_PORT";
    SERVER_PROTOCOL = "SERVER_PROTOCOL";
    HTTP_VERSION = "HTTP_VERSION";
    SERVER_SOFTWARE = "SERVER_SOFTWARE";
    GATEWAY_INTERFACE = "GATEWAY_INTERFACE";
    REMOTE_ADDR = "REMOTE_ADDR";
    CONTENT_LENGTH = "CONTENT_LENGTH";
    CONTENT_TYPE = "CONTENT_TYPE";
    RACK_VERSION = "rack.version";
    RACK_INPUT = "rack.input";
    RACK_ERRORS = "rack.errors";
    RACK_MULTITHREAD = "rack.multithread";
    RACK_MULTIPROCESS = "rack.multiprocess";
    RACK_RUN_ONCE = "rack.run_once";
    RACK_URL_SCHEME = "rack.url_scheme";
    RACK_HIJACK_P = "rack.hijack?";
    RACK_AFTER_REPLY = "rack.after_reply";
    RACK_EARLY_HINTS = "rack.early_hints";
    PUMA_BODY_WAIT = "puma.request_body_wait";
    CATAMOUNT_BODY_WAIT = "catamount.request_body_wait";
    // Values shared by every request.
    V_HTTP11 = "HTTP/1.1";
    V_HTTP10 = "HTTP/1.0";
    V_CGI = "CGI/1.2";
    V_HTTP = "http";
    V_HTTPS = "https";
    V_80 = "80";
    V_443 = "443";
    V_LOCALHOST = "localhost";
    V_GET = "GET";
    K_HOST = "HTTP_HOST";
    K_ACCEPT = "HTTP_ACCEPT";
    K_ACCEPT_ENCODING = "HTTP_ACCEPT_ENCODING";
    K_ACCEPT_LANGUAGE = "HTTP_ACCEPT_LANGUAGE";
    K_USER_AGENT = "HTTP_USER_AGENT";
    K_CONNECTION = "HTTP_CONNECTION";
    K_COOKIE = "HTTP_COOKIE";
    K_REFERER = "HTTP_REFERER";
    K_CACHE_CONTROL = "HTTP_CACHE_CONTROL";
    K_ORIGIN = "HTTP_ORIGIN";
    K_X_FORWARDED_FOR = "HTTP_X_FORWARDED_FOR";
    K_X_FORWARDED_PROTO = "HTTP_X_FORWARDED_PROTO";
    K_X_REQUEST_ID = "HTTP_X_REQUEST_ID";
    V_POST = "POST";
    V_HEAD = "HEAD";
}

static STRING_IO: Lazy<RClass> = Lazy::new(|ruby| class_named(ruby, "StringIO"));
static FILE: Lazy<RClass> = Lazy::new(|ruby| class_named(ruby, "File"));

/// A top-level class, looked up once and kept alive.
fn class_named(ruby: &Ruby, name: &str) -> RClass {
    let class = ruby
        .class_object()
        .const_get::<_, RClass>(name)
        .unwrap_or_else(|_| ruby.class_object());
    ruby.gc_register_mark_object(class);
    class
}

/// The interned `rack.early_hints` key (the callback is added by the pool loop, which holds
/// the responder it writes to).
pub fn early_hints_key(ruby: &Ruby) -> RString {
    ruby.get_inner(&RACK_EARLY_HINTS)
}

/// Builds the env Hash for `request`. `body` is moved into `rack.input`.
pub fn build(ruby: &Ruby, settings: &RackSettings, request: &mut Request) -> Result<RHash, Error> {
    let head = &request.head;
    let env = ruby.hash_new();
    let k = |key: &Lazy<RString>| ruby.get_inner(key);
    let bin = |bytes: &[u8]| ruby.str_from_slice(bytes);

    let method = match head.method() {
        "GET" => k(&V_GET),
        "POST" => k(&V_POST),
        "HEAD" => k(&V_HEAD),
        other => ruby.str_new(other),
    };
    env.aset(k(&REQUEST_METHOD), method)?;
    env.aset(k(&SCRIPT_NAME), settings.script_name(ruby))?;
    let path = head.path();
    env.aset(k(&PATH_INFO), bin(path))?;
    env.aset(k(&REQUEST_PATH), bin(path))?;
    env.aset(k(&REQUEST_URI), bin(head.target()))?;
    env.aset(
        k(&QUERY_STRING),
        match head.query() {
            Some(q) => bin(q),
            None => ruby.str_new(""),
        },
    )?;
    if let Some(fragment) = head.fragment() {
        env.aset(k(&FRAGMENT), bin(fragment))?;
    }
    let protocol = match head.version() {
        Version::Http11 => k(&V_HTTP11),
        Version::Http10 => k(&V_HTTP10),
    };
    env.aset(k(&SERVER_PROTOCOL), protocol)?;
    env.aset(k(&GATEWAY_INTERFACE), k(&V_CGI))?;
    env.aset(k(&SERVER_SOFTWARE), settings.server_software(ruby))?;
    env.aset(k(&REMOTE_ADDR), remote_addr(ruby, settings, request))?;

    let https = add_headers(ruby, env, request, settings.allow_underscore_headers)?;
    // After the headers: a client's `Version:` header must not stand in for the protocol.
    if settings.set_http_version {
        env.aset(k(&HTTP_VERSION), protocol)?;
    }
    let scheme = match settings.url_scheme {
        Some(fixed) => ruby.get_inner(fixed),
        None if https => k(&V_HTTPS).as_value(),
        None => k(&V_HTTP).as_value(),
    };
    env.aset(k(&RACK_URL_SCHEME), scheme)?;
    add_server_name_and_port(ruby, env, request, https)?;

    if let Some(version) = settings.rack_version(ruby) {
        env.aset(k(&RACK_VERSION), version)?;
    }
    env.aset(k(&RACK_INPUT), rack_input(ruby, request)?)?;
    env.aset(k(&RACK_ERRORS), settings.errors_stream(ruby))?;
    env.aset(k(&RACK_MULTITHREAD), settings.multithread)?;
    env.aset(k(&RACK_MULTIPROCESS), false)?;
    env.aset(k(&RACK_RUN_ONCE), false)?;
    env.aset(k(&RACK_HIJACK_P), false)?;
    env.aset(k(&RACK_AFTER_REPLY), ruby.ary_new())?;
    let wait_ms = request.body_wait.as_secs_f64() * 1000.0;
    env.aset(k(&PUMA_BODY_WAIT), wait_ms)?;
    env.aset(k(&CATAMOUNT_BODY_WAIT), wait_ms)?;
    Ok(env)
}

/// Env keys of the headers most requests carry, made once: no key allocation for them.
static KNOWN_HEADERS: &[(&str, &Lazy<RString>)] = &[
    ("host", &K_HOST),
    ("accept", &K_ACCEPT),
    ("accept-encoding", &K_ACCEPT_ENCODING),
    ("accept-language", &K_ACCEPT_LANGUAGE),
    ("user-agent", &K_USER_AGENT),
    ("connection", &K_CONNECTION),
    ("cookie", &K_COOKIE),
    ("referer", &K_REFERER),
    ("cache-control", &K_CACHE_CONTROL),
    ("origin", &K_ORIGIN),
    ("x-forwarded-for", &K_X_FORWARDED_FOR),
    ("x-forwarded-proto", &K_X_FORWARDED_PROTO),
    ("x-request-id", &K_X_REQUEST_ID),
    ("content-type", &CONTENT_TYPE),
    ("content-length", &CONTENT_LENGTH),
];

/// The env key for a header name: a shared interned String for common ones, else a new frozen
/// `HTTP_NAME` (upper-cased, `-` → `_`).
fn header_key(ruby: &Ruby, name: &[u8], scratch: &mut Vec<u8>) -> RString {
    if let Some((_, key)) = KNOWN_HEADERS
        .iter()
        .find(|(n, _)| name.eq_ignore_ascii_case(n.as_bytes()))
    {
        return ruby.get_inner(*key);
    }
    scratch.clear();
    scratch.extend_from_slice(b"HTTP_");
    scratch.extend(name.iter().map(|c| match c {
        b'-' => b'_',
        c => c.to_ascii_uppercase(),
    }));
    let key = ruby.str_from_slice(scratch);
    // A frozen String key goes into the Hash as is; an unfrozen one would be copied.
    key.freeze();
    key
}

/// Adds `HTTP_*`, `CONTENT_TYPE` and `CONTENT_LENGTH`; returns whether proxy headers say the
/// client used HTTPS (Puma trusts `X-Forwarded-Proto`, `-Scheme` and `-Ssl`; so do we).
fn add_headers(
    ruby: &Ruby,
    env: RHash,
    request: &Request,
    allow_underscores: bool,
) -> Result<bool, Error> {
    let head = &request.head;
    let chunked = matches!(head.body(), catamount_http::BodyFraming::Chunked);
    let mut https = false;
    let mut key = Vec::with_capacity(64);
    // Names with `_` go second and only where no dash-named header made the same key: a
    // client must not be able to smuggle `X_Forwarded_For` over a proxy's `X-Forwarded-For`.
    let any_underscored = head.headers().any(|(name, _)| name.contains(&b'_'));
    let passes: &[bool] = if any_underscored && allow_underscores {
        &[false, true]
    } else {
        &[false]
    };
    for &underscored in passes {
        for (name, value) in head.headers() {
            if name.contains(&b'_') != underscored {
                continue;
            }
            if name.eq_ignore_ascii_case(b"transfer-encoding") && chunked {
                continue;
            }
            if name.eq_ignore_ascii_case(b"content-length") && chunked {
                continue;
            }
            https |= says_https(name, value);
            let rkey = header_key(ruby, name, &mut key);
            match env.get(rkey) {
                Some(existing) if !underscored => {
                    // Repeated header: one value, joined as RFC 9110 §5.3 allows.
                    let existing = RString::try_convert(existing)?;
                    existing.cat(", ");
                    existing.cat(value);
                }
                Some(_) => {}
                None => env.aset(rkey, ruby.str_from_slice(value))?,
            }
        }
    }
    if chunked {
        env.aset(
            ruby.get_inner(&CONTENT_LENGTH),
            ruby.str_new(&request.body.len().to_string()),
        )?;
    }
    Ok(https)
}

/// `REMOTE_ADDR`: UNIX-socket clients are always `127.0.0.1` (as in Puma, whatever the mode);
/// otherwise the fixed value, the header's first address, or the peer.
fn remote_addr(ruby: &Ruby, settings: &RackSettings, request: &Request) -> Value {
    if matches!(request.peer, catamount_server::Peer::Unix) {
        return ruby.str_new("127.0.0.1").as_value();
    }
    match &settings.remote_addr {
        RemoteAddr::Fixed(v) => ruby.get_inner(*v),
        RemoteAddr::Header(name) => {
            let first = request
                .head
                .header(name)
                .and_then(|v| {
                    v.split(|c| *c == b',' || c.is_ascii_whitespace())
                        .find(|t| !t.is_empty())
                })
                .map(|t| ruby.str_from_slice(t).as_value());
            first.unwrap_or_else(|| ruby.str_new(&request.peer.ip_string()).as_value())
        }
        RemoteAddr::Socket => ruby.str_new(&request.peer.ip_string()).as_value(),
    }
}

fn says_https(name: &[u8], value: &[u8]) -> bool {
    (name.eq_ignore_ascii_case(b"x-forwarded-proto")
        && value.len() >= 5
        && value[..5].eq_ignore_ascii_case(b"https"))
        || (name.eq_ignore_ascii_case(b"x-forwarded-scheme")
            && value.eq_ignore_ascii_case(b"https"))
        || (name.eq_ignore_ascii_case(b"x-forwarded-ssl") && value.eq_ignore_ascii_case(b"on"))
}

/// `SERVER_NAME` and `SERVER_PORT` from the Host header (or the absolute-form target's
/// authority); IPv6 literals keep their brackets; no port means the scheme's default.
fn add_server_name_and_port(
    ruby: &Ruby,
    env: RHash,
    request: &Request,
    https: bool,
) -> Result<(), Error> {
    let k = |key: &Lazy<RString>| ruby.get_inner(key);
    let default_port = if https { k(&V_443) } else { k(&V_80) };
    let host = request.head.authority().or_else(|| request.head.host());
    let Some(host) = host.filter(|h| !h.is_empty()) else {
        env.aset(k(&SERVER_NAME), k(&V_LOCALHOST))?;
        env.aset(k(&SERVER_PORT), default_port)?;
        return Ok(());
    };
    let (name, port) = split_host_port(host);
    env.aset(k(&SERVER_NAME), ruby.str_from_slice(name))?;
    match port {
        Some(p) if !p.is_empty() => env.aset(k(&SERVER_PORT), ruby.str_from_slice(p))?,
        _ => env.aset(k(&SERVER_PORT), default_port)?,
    }
    Ok(())
}

fn split_host_port(host: &[u8]) -> (&[u8], Option<&[u8]>) {
    if host.first() == Some(&b'[') {
        if let Some(close) = host.iter().position(|c| *c == b']') {
            let (name, rest) = host.split_at(close + 1);
            return (name, rest.strip_prefix(b":"));
        }
        return (host, None);
    }
    match host.iter().rposition(|c| *c == b':') {
        Some(colon) => (&host[..colon], Some(&host[colon + 1..])),
        None => (host, None),
    }
}

/// `rack.input`: a StringIO over the bytes for small bodies, a binary File for large ones.
fn rack_input(ruby: &Ruby, request: &mut Request) -> Result<Value, Error> {
    let body = std::mem::replace(&mut request.body, Body::Empty);
    match body {
        // `str_from_slice` makes a binary (ASCII-8BIT) String, as rack.input must read.
        Body::Empty => ruby
            .get_inner(&STRING_IO)
            .new_instance((ruby.str_from_slice(b""),)),
        Body::Memory(bytes) => ruby
            .get_inner(&STRING_IO)
            .new_instance((ruby.str_from_slice(&bytes),)),
        Body::File { file, .. } => {
            use std::os::fd::IntoRawFd;
            let fd = file.into_raw_fd();
            ruby.get_inner(&FILE).funcall("for_fd", (fd, "rb"))
        }
    }
}

/// Runs each `rack.after_reply` callable in order; errors are logged and do not stop the rest.
pub fn run_after_reply(ruby: &Ruby, env: RHash) {
    let Some(callbacks) = env.get(ruby.get_inner(&RACK_AFTER_REPLY)) else {
        return;
    };
    let Ok(callbacks) = RArray::try_convert(callbacks) else {
        return;
    };
    for callback in callbacks.into_iter() {
        if let Err(e) = callback.funcall::<_, _, Value>("call", ()) {
            if e.value().is_none() {
                return;
            }
            catamount_server::log::error(&format!("rack.after_reply callback failed: {e}"));
        }
    }
}
