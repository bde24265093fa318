//! Building the Rack env for a request, in one native call.
//!
//! Keys are frozen, interned strings made once (a Hash with frozen String keys does not copy
//! them), fixed values (`SERVER_PROTOCOL`, `GATEWAY_INTERFACE`, ...) are shared frozen strings,
//! and each request allocates only what is really per request: its values, the Hash,
//! `rack.after_reply`, `rack.response_finished`, and `rack.input` when it has a body. The pairs are gathered on the stack
//! (where the GC can see them) and go into the Hash in one call.

use std::borrow::Cow;
use std::cmp::Ordering;

use magnus::value::{Lazy, Opaque, ReprValue};
use magnus::{prelude::*, Error, IntoValue, RArray, RClass, RHash, RString, Ruby, Value};

use catamount_http::{names, RequestHead, Version};
use catamount_server::{Body, Request};

use super::{RackSettings, RemoteAddr};
use crate::ffi;

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
    RACK_HIJACK = "rack.hijack";
    RACK_AFTER_REPLY = "rack.after_reply";
    RACK_RESPONSE_FINISHED = "rack.response_finished";
    RACK_EARLY_HINTS = "rack.early_hints";
    RACK_PROTOCOL = "rack.protocol";
    PUMA_BODY_WAIT = "puma.request_body_wait";
    PUMA_MARK_AS_IO_BOUND = "puma.mark_as_io_bound";
    CATAMOUNT_BODY_WAIT = "catamount.request_body_wait";
    CATAMOUNT_QUEUE_TIME = "catamount.queue_time";
    // Values shared by every request.
    V_HTTP11 = "HTTP/1.1";
    V_HTTP10 = "HTTP/1.0";
    V_CGI = "CGI/1.2";
    V_HTTP = "http";
    V_HTTPS = "https";
    HTTPS = "HTTPS";
    PUMA_PEERCERT = "puma.peercert";
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

/// The interned `puma.mark_as_io_bound` key (the callable is the pool thread's own, added by
/// the pool loop: see `server::io_bound_mark`).
pub fn mark_as_io_bound_key(ruby: &Ruby) -> RString {
    ruby.get_inner(&PUMA_MARK_AS_IO_BOUND)
}

/// What every request's env says the same way for the life of the server.
pub struct Shared {
    /// `rack.multithread`: more than one thread may call the app at once.
    pub multithread: bool,
    /// `rack.multiprocess`: other processes call the app too (a cluster's workers).
    pub multiprocess: bool,
    /// `rack.version`, only when the loaded Rack still defines one.
    pub rack_version: Option<Value>,
    pub script_name: Value,
    pub server_software: Value,
    /// `rack.errors`.
    pub errors: Value,
    /// `rack.hijack`: one callable for every request ([`super::hijack`]).
    pub hijack: Value,
}

/// The env entries that are the same for every request, made once at boot. Each request's env
/// starts as a copy of this Hash: Ruby copies the table with the keys' stored hashes, so these
/// keys are never hashed or inserted again (in a profile of hello world, inserting a pair cost
/// about 300 instructions, two thirds of it hashing the key). Frozen, so nothing can change it.
pub fn template(ruby: &Ruby, shared: &Shared) -> Result<RHash, Error> {
    let k = |key: &Lazy<RString>| ruby.get_inner(key);
    let env = ruby.hash_new();
    let mut pairs = Pairs::new(env);
    pairs.push(k(&SCRIPT_NAME), shared.script_name)?;
    pairs.push(k(&GATEWAY_INTERFACE), k(&V_CGI))?;
    pairs.push(k(&SERVER_SOFTWARE), shared.server_software)?;
    if let Some(version) = shared.rack_version {
        pairs.push(k(&RACK_VERSION), version)?;
    }
    pairs.push(k(&RACK_ERRORS), shared.errors)?;
    pairs.push(k(&RACK_MULTITHREAD), shared.multithread)?;
    pairs.push(k(&RACK_MULTIPROCESS), shared.multiprocess)?;
    pairs.push(k(&RACK_RUN_ONCE), false)?;
    pairs.push(k(&RACK_HIJACK_P), true)?;
    pairs.push(k(&RACK_HIJACK), shared.hijack)?;
    pairs.flush()?;
    env.freeze();
    Ok(env)
}

/// Builds the env Hash for `request`. `body` is moved into `rack.input`.
pub fn build(ruby: &Ruby, settings: &RackSettings, request: &mut Request) -> Result<RHash, Error> {
    let env = ffi::hash_dup(ruby.get_inner(settings.env_template))?;
    let mut pairs = Pairs::new(env);
    let head = &request.head;
    let k = |key: &Lazy<RString>| ruby.get_inner(key);
    let bin = |bytes: &[u8]| ruby.str_from_slice(bytes);

    let method = match head.method() {
        "GET" => k(&V_GET),
        "POST" => k(&V_POST),
        "HEAD" => k(&V_HEAD),
        other => ruby.str_new(other),
    };
    pairs.push(k(&REQUEST_METHOD), method)?;
    let path = head.path();
    pairs.push(k(&PATH_INFO), bin(path))?;
    pairs.push(k(&REQUEST_PATH), bin(path))?;
    pairs.push(k(&REQUEST_URI), bin(head.target_without_fragment()))?;
    let query = match head.query() {
        Some(q) => bin(q),
        None => ruby.str_new(""),
    };
    pairs.push(k(&QUERY_STRING), query)?;
    if let Some(fragment) = head.fragment() {
        pairs.push(k(&FRAGMENT), bin(fragment))?;
    }
    let protocol = match head.version() {
        Version::Http11 => k(&V_HTTP11),
        Version::Http10 => k(&V_HTTP10),
    };
    pairs.push(k(&SERVER_PROTOCOL), protocol)?;
    pairs.push(k(&REMOTE_ADDR), remote_addr(ruby, settings, request))?;

    let chunked = matches!(head.body(), catamount_http::BodyFraming::Chunked);
    // Any one field saying so counts, before repeated fields are joined.
    let https = request.tls || head.headers().any(|(name, value)| says_https(name, value));
    let mut scratch = Vec::new();
    let address_header = match &settings.remote_addr {
        RemoteAddr::Header(name) => Some(name.as_slice()),
        _ => None,
    };
    for entry in header_entries(
        head,
        chunked,
        settings.allow_underscore_headers,
        address_header,
    ) {
        let key = header_key(ruby, entry.name, &mut scratch);
        pairs.push(key, bin(&entry.value))?;
    }
    // RFC 9112 §3.2.2: an absolute-form target's authority (or CONNECT's) replaces the Host
    // header, so HTTP_HOST says what SERVER_NAME and SERVER_PORT say (a later pair wins).
    if let Some(authority) = head.authority() {
        pairs.push(k(&K_HOST), bin(authority))?;
    }
    if chunked {
        let length = ruby.str_new(&request.body.len().to_string());
        pairs.push(k(&CONTENT_LENGTH), length)?;
    }
    // After the headers (a later pair wins): a client's `Version:` header must not stand in
    // for the protocol.
    if settings.set_http_version {
        pairs.push(k(&HTTP_VERSION), protocol)?;
    }
    let scheme = match settings.url_scheme {
        Some(fixed) => ruby.get_inner(fixed),
        None if https => k(&V_HTTPS).as_value(),
        None => k(&V_HTTP).as_value(),
    };
    pairs.push(k(&RACK_URL_SCHEME), scheme)?;
    if request.tls {
        // Puma sets it on its TLS listeners; Rack and Rails read it too.
        pairs.push(k(&HTTPS), k(&V_HTTPS))?;
    }
    if let Some(der) = &request.peer_certificate {
        pairs.push(k(&PUMA_PEERCERT), peer_certificate(ruby, der)?)?;
    }
    add_server_name_and_port(ruby, &mut pairs, request, https)?;

    // Rack 3.1: the protocols a client asking to upgrade offers (an app answers 101 with one).
    if let Some(offered) = request.head.offered_protocols() {
        let list = ruby.ary_from_iter(offered.into_iter().map(|p| ruby.str_from_slice(p)));
        pairs.push(k(&RACK_PROTOCOL), list)?;
    }
    pairs.push(k(&RACK_INPUT), rack_input(ruby, settings, request)?)?;
    pairs.push(k(&RACK_AFTER_REPLY), ruby.ary_new())?;
    pairs.push(k(&RACK_RESPONSE_FINISHED), ruby.ary_new())?;
    let wait_ms = request.body_wait.as_secs_f64() * 1000.0;
    pairs.push(k(&PUMA_BODY_WAIT), wait_ms)?;
    pairs.push(k(&CATAMOUNT_BODY_WAIT), wait_ms)?;
    // Seconds the request waited, read in full, for a pool thread.
    pairs.push(k(&CATAMOUNT_QUEUE_TIME), request.queue_time().as_secs_f64())?;
    pairs.flush()?;
    Ok(env)
}

/// Most env pairs gathered before one insert; a hello-world request has about 30.
const PAIRS_AT_ONCE: usize = 48;

/// Key/value pairs on their way into the env Hash, gathered here and inserted with one
/// `rb_hash_bulk_insert` per batch: the table is sized once and Ruby's exception guard is set
/// up once, where a `Hash#[]=` per pair paid for both about thirty times a request (a third of
/// the env's cost in a profile of hello world). As in a Hash, a later pair with the same key
/// wins. The batch lives on the machine stack, where the GC's conservative scan sees every
/// value in it until it is in the Hash.
struct Pairs {
    hash: RHash,
    batch: [Value; PAIRS_AT_ONCE * 2],
    len: usize,
}

impl Pairs {
    fn new(hash: RHash) -> Pairs {
        let nil = Ruby::get_with(hash).qnil().as_value();
        Pairs {
            hash,
            batch: [nil; PAIRS_AT_ONCE * 2],
            len: 0,
        }
    }

    fn push(&mut self, key: impl IntoValue, value: impl IntoValue) -> Result<(), Error> {
        if self.len == self.batch.len() {
            self.flush()?;
        }
        let ruby = Ruby::get_with(self.hash);
        self.batch[self.len] = ruby.into_value(key);
        self.batch[self.len + 1] = ruby.into_value(value);
        self.len += 2;
        Ok(())
    }

    fn flush(&mut self) -> Result<(), Error> {
        if self.len > 0 {
            self.hash.bulk_insert(&self.batch[..self.len])?;
            self.len = 0;
        }
        Ok(())
    }
}

/// One env entry made from the request's header fields.
struct HeaderEntry<'h> {
    /// Where the first field with this key came in the head.
    arrival: usize,
    /// The name as that field had it.
    name: &'h [u8],
    /// The value; the values of repeated fields joined with ", " (RFC 9110 §5.3).
    value: Cow<'h, [u8]>,
}

impl HeaderEntry<'_> {
    fn underscored(&self) -> bool {
        self.name.contains(&b'_')
    }
}

/// The header fields that become env entries, one per env key, in the order the keys first
/// appear. Names with `_` come only where allowed, after the dash-named ones, never with the
/// key of a field the server reads or a proxy sets (`catamount_http::names`; `address_header`
/// is `set_remote_address header:`'s), and never over a dash-named field with the same key: a
/// client must not be able to smuggle `X_Forwarded_For` over (or in place of) a proxy's
/// `X-Forwarded-For`. Of two underscored fields with the same key, the first wins. A chunked
/// body's framing headers are left out (`CONTENT_LENGTH` is then the decoded length).
///
/// Fields are grouped by sorting, so even a head with the most fields allowed costs
/// O(n log n) comparisons, not O(n²).
fn header_entries<'h>(
    head: &'h RequestHead,
    chunked: bool,
    allow_underscores: bool,
    address_header: Option<&[u8]>,
) -> Vec<HeaderEntry<'h>> {
    let mut entries: Vec<HeaderEntry> = head
        .headers()
        .enumerate()
        .filter(|(_, (name, _))| {
            let framing = name.eq_ignore_ascii_case(b"transfer-encoding")
                || name.eq_ignore_ascii_case(b"content-length");
            let underscored_ok = !name.contains(&b'_')
                || (allow_underscores && !names::underscore_poses_as_guarded(name, address_header));
            !(chunked && framing) && underscored_ok
        })
        .map(|(arrival, (name, value))| HeaderEntry {
            arrival,
            name,
            value: Cow::Borrowed(value),
        })
        .collect();
    if entries.len() < 2 {
        return entries;
    }
    // By key, dash-named first within a key, then in arrival order (the sort is stable).
    entries
        .sort_by(|a, b| env_key_order(a.name, b.name).then(a.underscored().cmp(&b.underscored())));
    // `dedup_by` hands each entry with the one kept before it: the first of a key stays.
    entries.dedup_by(|later, kept| {
        if env_key_order(later.name, kept.name).is_ne() {
            return false;
        }
        if !kept.underscored() && !later.underscored() {
            let joined = kept.value.to_mut();
            joined.extend_from_slice(b", ");
            joined.extend_from_slice(&later.value);
        }
        true
    });
    entries.sort_by_key(|e| (e.underscored(), e.arrival));
    entries
}

/// Orders header names by the env key they become: `Content-Type` and `Content-Length` are
/// keys of their own (`CONTENT_TYPE`, `CONTENT_LENGTH`); any other name becomes `HTTP_` and the
/// name upper-cased with `-` as `_`.
fn env_key_order(a: &[u8], b: &[u8]) -> Ordering {
    fn cgi(name: &[u8]) -> u8 {
        if name.eq_ignore_ascii_case(b"content-type") {
            1
        } else if name.eq_ignore_ascii_case(b"content-length") {
            2
        } else {
            0
        }
    }
    fn folded(name: &[u8]) -> impl Iterator<Item = u8> + '_ {
        name.iter().map(|&c| names::env_key_byte(c))
    }
    cgi(a).cmp(&cgi(b)).then_with(|| folded(a).cmp(folded(b)))
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
    scratch.extend(name.iter().map(|&c| names::env_key_byte(c)));
    let key = ruby.str_from_slice(scratch);
    // A frozen String key goes into the Hash as is; an unfrozen one would be copied.
    key.freeze();
    key
}

/// `REMOTE_ADDR`: UNIX-socket clients are always `127.0.0.1` (as in Puma, whatever the mode);
/// otherwise the fixed value, the header's first address, or the peer.
fn remote_addr(ruby: &Ruby, settings: &RackSettings, request: &Request) -> Value {
    match remote_address(settings, request) {
        Address::Bytes(bytes) => ruby.str_from_slice(&bytes).as_value(),
        Address::Fixed(v) => ruby.get_inner(v),
    }
}

/// A request's `REMOTE_ADDR`: bytes, or the fixed frozen String `set_remote_address` gave.
pub(crate) enum Address<'r> {
    Bytes(Cow<'r, [u8]>),
    Fixed(Opaque<Value>),
}

/// `REMOTE_ADDR` as `set_remote_address` says: the env's and the JSON access log's.
pub(crate) fn remote_address<'r>(settings: &RackSettings, request: &'r Request) -> Address<'r> {
    if matches!(request.peer, catamount_server::Peer::Unix) {
        return Address::Bytes(Cow::Borrowed(b"127.0.0.1"));
    }
    let socket = || Cow::Owned(request.peer.ip_string().into_bytes());
    match &settings.remote_addr {
        RemoteAddr::Fixed(v) => Address::Fixed(*v),
        RemoteAddr::Header(name) => Address::Bytes(
            request
                .head
                .header(name)
                .and_then(first_address)
                .map_or_else(socket, Cow::Borrowed),
        ),
        RemoteAddr::Socket => Address::Bytes(socket()),
    }
}

/// The first address of a `set_remote_address header:` value (`X-Forwarded-For: a, b`).
fn first_address(value: &[u8]) -> Option<&[u8]> {
    value
        .split(|c| *c == b',' || c.is_ascii_whitespace())
        .find(|t| !t.is_empty())
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
/// The TLS client's certificate as Puma gives it: an `OpenSSL::X509::Certificate` (the
/// library is loaded on the first one: only apps verifying clients pay for it).
fn peer_certificate(ruby: &Ruby, der: &[u8]) -> Result<Value, Error> {
    let object = ruby.class_object();
    let openssl: magnus::RModule = match object.const_get("OpenSSL") {
        Ok(module) => module,
        Err(_) => {
            let _: bool = ruby.require("openssl")?;
            object.const_get("OpenSSL")?
        }
    };
    let class: Value = openssl
        .const_get::<_, magnus::RModule>("X509")?
        .const_get("Certificate")?;
    class.funcall("new", (ruby.str_from_slice(der),))
}

fn add_server_name_and_port(
    ruby: &Ruby,
    pairs: &mut Pairs,
    request: &Request,
    https: bool,
) -> Result<(), Error> {
    let k = |key: &Lazy<RString>| ruby.get_inner(key);
    let default_port = if https { k(&V_443) } else { k(&V_80) };
    let host = request.head.authority().or_else(|| request.head.host());
    let Some(host) = host.filter(|h| !h.is_empty()) else {
        pairs.push(k(&SERVER_NAME), k(&V_LOCALHOST))?;
        pairs.push(k(&SERVER_PORT), default_port)?;
        return Ok(());
    };
    let (name, port) = split_host_port(host);
    pairs.push(k(&SERVER_NAME), ruby.str_from_slice(name))?;
    match port {
        Some(p) if !p.is_empty() => pairs.push(k(&SERVER_PORT), ruby.str_from_slice(p))?,
        _ => pairs.push(k(&SERVER_PORT), default_port)?,
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

/// `rack.input`: the shared null input without a body, a StringIO over the bytes for small
/// bodies, a binary File for large ones.
fn rack_input(ruby: &Ruby, settings: &RackSettings, request: &mut Request) -> Result<Value, Error> {
    let body = std::mem::replace(&mut request.body, Body::Empty);
    match body {
        Body::Empty => Ok(settings.null_input(ruby)),
        // `str_from_slice` makes a binary (ASCII-8BIT) String, as rack.input must read.
        Body::Memory(bytes) => ruby
            .get_inner(&STRING_IO)
            .new_instance((ruby.str_from_slice(&bytes),)),
        Body::File { file, .. } => {
            use std::os::fd::IntoRawFd;
            // Given up before the call: an Err does not say whether the IO was made (a kill
            // lands once `for_fd` has returned, the IO then owning the descriptor), and closing
            // it here too could close another connection's socket by then. A failed call leaks
            // the descriptor instead (only a raise inside `for_fd` itself: none is expected).
            let fd = file.into_raw_fd();
            ruby.get_inner(&FILE).funcall("for_fd", (fd, "rb"))
        }
    }
}

/// Whether `request`'s body is spooled to a file: its `rack.input` then holds a descriptor,
/// closed when the request is over ([`close_spooled_input`]). Asked before [`build`] takes the
/// body.
pub fn spooled(request: &Request) -> bool {
    matches!(request.body, Body::File { .. })
}

/// The `rack.input` [`build`] put in `env` (before the app could replace or wrap it).
pub fn input(ruby: &Ruby, env: RHash) -> Option<Value> {
    env.get(ruby.get_inner(&RACK_INPUT))
}

/// Closes a spooled body's File once the response is done (as Puma closes its body tempfile):
/// left to the GC, every upload kept a descriptor open until a collection (a soak of uploads
/// held dozens; with little allocation, enough to run out). A second close is a no-op; a jump
/// met is kept for the pool loop as elsewhere.
pub fn close_spooled_input(input: Value) {
    if let Err(e) = input.funcall::<_, _, Value>("close", ()) {
        let _ = super::escape::caught(e);
    }
}

/// Runs each `rack.after_reply` callable in order; errors are logged and do not stop the rest.
/// A non-local exit (the thread killed, a `throw`) stops them and is kept in
/// [`escape`](super::escape) for the pool loop to resume.
pub fn run_after_reply(ruby: &Ruby, env: RHash) {
    let Some(callbacks) = env.get(ruby.get_inner(&RACK_AFTER_REPLY)) else {
        return;
    };
    let Ok(callbacks) = RArray::try_convert(callbacks) else {
        return;
    };
    for callback in callbacks.into_iter() {
        if let Err(e) = callback.funcall::<_, _, Value>("call", ()) {
            let Some(exception) = super::escape::caught(e) else {
                return;
            };
            catamount_server::log::error(&format!(
                "rack.after_reply callback failed: {}",
                super::escape::inspect(exception)
            ));
        }
    }
}

/// The `rack.response_finished` Array (Rack 3), when the app left one there.
pub fn response_finished(ruby: &Ruby, env: RHash) -> Option<RArray> {
    RArray::from_value(env.get(ruby.get_inner(&RACK_RESPONSE_FINISHED))?)
}
