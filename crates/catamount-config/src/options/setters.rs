//! Parsers and setters for the options whose arguments are more than one plain value: each
//! checks a method's argument list and returns the typed value (or sets several fields), with
//! a message that starts with the method's name.

use std::time::Duration;

use super::args::{
    arity, count, exactly_one_str, flag, hash, one_of, port_number, seconds, string, truthy, whole,
};
use super::{
    ActivatedSockets, ControlApp, HttpMethods, Layer, RemoteAddress, ShutdownDebug, Value,
};
use crate::bind::{BindError, BindKind, BindUrl};
use crate::tls::{Pem, TLS_PARAMS};

pub(super) const WORKERS_AUTO: u32 = u32::MAX;

/// Keys `ssl_bind` knows besides the `ssl://` parameters (`tls::TLS_PARAMS`).
const SSL_BIND_KEYS: &[&str] = &["cert_pem", "key_pem", "backlog", "low_latency"];

pub(super) fn keep_alive_count(name: &str, args: &[Value]) -> Result<u64, String> {
    match args {
        [Value::Int(n)] if *n >= 1 => Ok(*n as u64),
        [Value::Float(f)] if f.is_infinite() && *f > 0.0 => Ok(u64::MAX),
        [Value::Float(f)] if f.is_finite() && *f >= 1.0 => Ok(*f as u64),
        [v] => Err(format!(
            "{name}: expected a positive Integer or Float::INFINITY, got {}",
            v.describe()
        )),
        _ => Err(arity(name, args.len(), "1")),
    }
}

pub(super) fn positive_seconds(name: &str, args: &[Value]) -> Result<Duration, String> {
    let d = seconds(name, args)?;
    if d.is_zero() {
        return Err(format!("{name}: must be more than 0 seconds"));
    }
    Ok(d)
}

/// An error status an answer of the server's may carry: an Integer in 400..=599.
pub(super) fn error_status(name: &str, args: &[Value]) -> Result<u32, String> {
    match args {
        [Value::Int(n)] if (400..=599).contains(n) => Ok(*n as u32),
        [v] => Err(format!(
            "{name}: expected an Integer status from 400 to 599, got {}",
            v.describe()
        )),
        _ => Err(arity(name, args.len(), "1")),
    }
}

pub(super) fn remote_address(name: &str, args: &[Value]) -> Result<RemoteAddress, String> {
    match args {
        [] => Ok(RemoteAddress::Socket),
        [Value::Sym(s)] if s == "socket" => Ok(RemoteAddress::Socket),
        [Value::Sym(s)] if s == "localhost" => Ok(RemoteAddress::Fixed("127.0.0.1".into())),
        [Value::Str(s)] => Ok(RemoteAddress::Fixed(s.clone())),
        [v @ Value::Hash(_)] => {
            let pairs = hash(name, v, &["header", "proxy_protocol"])?;
            match pairs {
                [(k, h)] if k == "header" => {
                    let header = string(name, h)?;
                    if header.is_empty() {
                        return Err(format!("{name}: header: needs a header name"));
                    }
                    Ok(RemoteAddress::Header(header))
                }
                [(k, p)] if k == "proxy_protocol" => {
                    let version = one_of(&format!("{name}: proxy_protocol:"), p, &["v1", "v2"])?;
                    Ok(if version == "v2" {
                        RemoteAddress::ProxyV2
                    } else {
                        RemoteAddress::ProxyV1
                    })
                }
                _ => Err(format!("{name}: give exactly one of header: or proxy_protocol:")),
            }
        }
        [v] => Err(format!(
            "{name}: expected :socket, :localhost, a String, header: NAME or proxy_protocol: :v1/:v2, got {}",
            v.describe()
        )),
        _ => Err(arity(name, args.len(), "0..1")),
    }
}

pub(super) fn http_methods(name: &str, args: &[Value]) -> Result<HttpMethods, String> {
    match args {
        [Value::Sym(s)] | [Value::Str(s)] if s == "any" => Ok(HttpMethods::Any),
        [Value::Array(items)] => {
            let mut methods: Vec<String> = Vec::with_capacity(items.len());
            for item in items {
                let m = string(name, item)?;
                let is_token = !m.is_empty()
                    && m.len() <= 32
                    && m.bytes().all(|b| {
                        b.is_ascii_uppercase() || b == b'-' || b == b'_' || b.is_ascii_digit()
                    });
                if !is_token {
                    return Err(format!("{name}: {m:?} is not an upper-case method name"));
                }
                if methods.contains(&m) {
                    return Err(format!("{name}: {m:?} is listed twice"));
                }
                methods.push(m);
            }
            if methods.is_empty() {
                return Err(format!(
                    "{name}: the list is empty (nothing could be served)"
                ));
            }
            Ok(HttpMethods::Only(methods))
        }
        [v] => Err(format!(
            "{name}: expected :any or an Array of method names, got {}",
            v.describe()
        )),
        _ => Err(arity(name, args.len(), "1")),
    }
}

pub(super) fn shutdown_debug(name: &str, args: &[Value]) -> Result<ShutdownDebug, String> {
    let (on, opts) = match args {
        [] => (true, None),
        [v @ Value::Hash(_)] => (true, Some(v)),
        [v] => (truthy(v), None),
        [v, o] => (truthy(v), Some(o)),
        _ => return Err(arity(name, args.len(), "0..2")),
    };
    let on_force = match opts {
        Some(o) => hash(name, o, &["on_force"])?.iter().any(|(_, v)| truthy(v)),
        None => false,
    };
    Ok(match (on, on_force) {
        (false, _) => ShutdownDebug::Off,
        (true, true) => ShutdownDebug::OnForce,
        (true, false) => ShutdownDebug::Always,
    })
}

pub(super) fn check_control_url(name: &str, url: &str) -> Result<(), String> {
    if url == "auto" || url.starts_with("ssl://") {
        return Ok(());
    }
    BindUrl::parse(url)
        .map(|_| ())
        .map_err(|e| format!("{name}: {e}"))
}

/// `metrics_url`: a TCP or UNIX bind URL for the metrics listener.
pub(super) fn metrics_url(name: &str, args: &[Value]) -> Result<String, String> {
    let url = exactly_one_str(name, args)?;
    if url == "auto" || url.starts_with("ssl://") {
        return Err(format!("{name}: {url} is not a tcp:// or unix:// URL"));
    }
    check_control_url(name, &url)?;
    Ok(url)
}

pub(super) fn control_app(name: &str, args: &[Value]) -> Result<ControlApp, String> {
    let (url, opts) = match args {
        [] => ("auto".to_string(), None),
        [u] => (string(name, u)?, None),
        [u, o] => (string(name, u)?, Some(o)),
        _ => return Err(arity(name, args.len(), "0..2")),
    };
    check_control_url(name, &url)?;
    let mut control = ControlApp {
        url,
        auth_token: None,
        no_token: false,
        data_only: false,
    };
    if let Some(o) = opts {
        for (key, v) in hash(name, o, &["auth_token", "no_token", "umask", "data_only"])? {
            match key.as_str() {
                "auth_token" => control.auth_token = Some(string(name, v)?),
                "no_token" => control.no_token = truthy(v),
                "data_only" => control.data_only = truthy(v),
                _ => {}
            }
        }
    }
    Ok(control)
}

pub(super) fn check_threads(min: u32, max: u32) -> Result<(), String> {
    if max < 1 {
        return Err("threads: the maximum must be at least 1".into());
    }
    if min > max {
        return Err(format!(
            "threads: the minimum ({min}) is greater than the maximum ({max})"
        ));
    }
    Ok(())
}

/// nio4r's backends, accepted by `io_selector_backend`.
const SELECTOR_BACKENDS: &[&str] = &[
    "auto", "epoll", "kqueue", "select", "poll", "linuxaio", "io_uring",
];

/// `fork_worker` without a count: refork after this many requests.
pub(super) const DEFAULT_FORK_WORKER_REQUESTS: u64 = 1000;

impl Layer {
    /// Applies one setting by its method name (DSL or flag). `args` are the method's arguments.
    pub fn set(&mut self, name: &str, args: &[Value]) -> Result<(), String> {
        let method = super::DEFINITIONS
            .iter()
            .flat_map(|d| d.methods)
            .find(|m| m.name == name)
            .ok_or_else(|| format!("unknown option {name:?}"))?;
        (method.set)(self, name, args)
    }

    /// [`Layer::set`] for a config file's line `origin` (`file:line`): the binds it adds
    /// (`bind`, `ssl_bind`, `port`) remember it, so an error opening them names the line.
    pub fn set_at(&mut self, name: &str, args: &[Value], origin: &str) -> Result<(), String> {
        let before = self.binds.as_ref().map_or(0, Vec::len);
        self.set(name, args)?;
        for bind in self.binds.iter_mut().flatten().skip(before) {
            bind.origin = Some(origin.to_string());
        }
        Ok(())
    }

    fn push_bind(&mut self, bind: BindUrl) {
        self.binds.get_or_insert_with(Vec::new).push(bind);
    }
}

pub(super) fn bind(l: &mut Layer, name: &str, args: &[Value]) -> Result<(), String> {
    let url = exactly_one_str(name, args)?;
    l.push_bind(BindUrl::parse(&url).map_err(|e: BindError| e.to_string())?);
    Ok(())
}

pub(super) fn clear_binds(l: &mut Layer, name: &str, args: &[Value]) -> Result<(), String> {
    if !args.is_empty() {
        return Err(arity(name, args.len(), "0"));
    }
    l.binds = Some(Vec::new());
    Ok(())
}

pub(super) fn port(l: &mut Layer, name: &str, args: &[Value]) -> Result<(), String> {
    let (port, host) = match args {
        [p] => (p, None),
        [p, h] => (p, Some(h)),
        _ => return Err(arity(name, args.len(), "1..2")),
    };
    let port = port_number(name, port)?;
    let host = match host {
        None | Some(Value::Nil) => l
            .default_host
            .clone()
            .unwrap_or_else(|| "0.0.0.0".to_string()),
        Some(h) => string("port: host", h)?,
    };
    l.push_bind(BindUrl::tcp(&host, port).map_err(|e| e.to_string())?);
    Ok(())
}

/// `ssl_bind HOST, PORT, {cert:, key:, ...}` (the Hash may be left out: a development
/// certificate). The keys are checked as the `ssl://` URL's parameters are (`tls.rs`);
/// `cert_pem`/`key_pem` hold PEM text, never put in a URL.
pub(super) fn ssl_bind(l: &mut Layer, name: &str, args: &[Value]) -> Result<(), String> {
    let empty = Value::Hash(Vec::new());
    let (host, port, opts) = match args {
        [host, port] => (host, port, &empty),
        [host, port, opts] => (host, port, opts),
        _ => return Err(arity(name, args.len(), "2..3")),
    };
    let host = string(name, host)?;
    let port = port_number(name, port)?;
    let known: Vec<&str> = TLS_PARAMS.iter().chain(SSL_BIND_KEYS).copied().collect();
    let pairs = hash(name, opts, &known)?;
    let mut params: Vec<(String, String)> = Vec::new();
    let pem = |key: &str| -> Result<Option<Pem>, String> {
        match pairs.iter().find(|(k, v)| k == key && truthy(v)) {
            Some((_, v)) => Ok(Some(Pem::Inline(string(&format!("{name}: {key}"), v)?))),
            None => Ok(None),
        }
    };
    let (cert_pem, key_pem) = (pem("cert_pem")?, pem("key_pem")?);
    for (key, value) in pairs {
        if matches!(
            key.as_str(),
            "cert_pem" | "key_pem" | "backlog" | "low_latency"
        ) || !truthy(value) && !matches!(value, Value::Bool(false))
        {
            continue;
        }
        params.push((key.clone(), tls_param(name, key, value)?));
    }
    for key in ["backlog", "low_latency"] {
        if let Some((_, v)) = pairs.iter().find(|(k, v)| k == key && truthy(v)) {
            params.push((key.to_string(), tls_param(name, key, v)?));
        }
    }
    // The URL it shows and a hot restart passes on: every setting but the PEM text.
    let query: Vec<String> = params
        .iter()
        .map(|(k, v)| format!("{k}={}", url_escaped(v)))
        .collect();
    let url = format!(
        "ssl://{}:{port}{}{}",
        crate::bind::bracket_if_v6(&host),
        if query.is_empty() { "" } else { "?" },
        query.join("&")
    );
    let mut bind = BindUrl::parse(&url).map_err(|e| format!("{name}: {}", e.reason))?;
    if let BindKind::Tls { tls, .. } = &mut bind.kind {
        tls.cert = cert_pem.or(tls.cert.take());
        tls.key = key_pem.or(tls.key.take());
        tls.check().map_err(|e| format!("{name}: {e}"))?;
    }
    l.push_bind(bind);
    Ok(())
}

/// `%`-escapes what would end or split a query value.
fn url_escaped(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '%' | '&' | '=' | '?' | '#' | ' ' => out.push_str(&format!("%{:02X}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

/// An `ssl_bind` Hash value as the `ssl://` parameter it stands for: `true`/`false`, a
/// String or Symbol, an Integer, `verification_flags` as an Array, `reuse` as `{size:,
/// timeout:}`.
fn tls_param(name: &str, key: &str, v: &Value) -> Result<String, String> {
    let what = format!("{name}: {key}");
    match (key, v) {
        (_, Value::Str(s) | Value::Sym(s)) => Ok(s.clone()),
        (_, Value::Bool(b)) => Ok(b.to_string()),
        (_, Value::Int(n)) => Ok(n.to_string()),
        ("verification_flags", Value::Array(items)) => Ok(items
            .iter()
            .map(|i| string(&what, i))
            .collect::<Result<Vec<_>, _>>()?
            .join(",")),
        ("reuse", Value::Hash(pairs)) => {
            let get = |k: &str| pairs.iter().find(|(key, _)| key == k).map(|(_, v)| v);
            let size = get("size")
                .map(|v| whole(&format!("{what}: size"), v, ""))
                .transpose()?;
            let timeout = get("timeout")
                .map(|v| whole(&format!("{what}: timeout"), v, ""))
                .transpose()?;
            match (size, timeout) {
                (Some(size), Some(timeout)) => Ok(format!("{size},{timeout}")),
                (Some(size), None) => Ok(size.to_string()),
                (None, Some(_)) => Err(format!("{what}: a timeout needs a size")),
                (None, None) => Ok("dflt".into()),
            }
        }
        (_, other) => Err(format!("{what}: unexpected {}", other.describe())),
    }
}

pub(super) fn threads(l: &mut Layer, name: &str, args: &[Value]) -> Result<(), String> {
    let (min, max) = match args {
        [n] => {
            let n = count(name, n)?;
            (n, n)
        }
        [a, b] => (count(name, a)?, count(name, b)?),
        _ => return Err(arity(name, args.len(), "1..2")),
    };
    check_threads(min, max)?;
    l.min_threads = Some(min);
    l.max_threads = Some(max);
    Ok(())
}

/// `-t MIN:MAX` or `-t N`.
pub(super) fn min_max(value: Option<&str>) -> Vec<Value> {
    let value = value.unwrap_or_default();
    match value.split_once(':') {
        Some((min, max)) => vec![Value::Str(min.into()), Value::Str(max.into())],
        None => vec![Value::Str(value.into())],
    }
}

/// `--no-redirect-append`.
pub(super) fn off(_: Option<&str>) -> Vec<Value> {
    vec![Value::Bool(false)]
}

/// The first rackup file given in a layer wins, as in Puma.
pub(super) fn rackup(l: &mut Layer, name: &str, args: &[Value]) -> Result<(), String> {
    let path = exactly_one_str(name, args)?;
    l.rackup.get_or_insert(path);
    Ok(())
}

/// `log_requests` / `log_requests(true/false)` as Puma's; `log_requests :json` (or `"json"`)
/// turns it on with JSON lines. Without an argument (`-v`) the format another layer chose stays.
pub(super) fn log_requests(l: &mut Layer, name: &str, args: &[Value]) -> Result<(), String> {
    let json = matches!(args, [Value::Sym(s) | Value::Str(s)] if s == "json");
    l.log_requests = Some(flag(name, args)?);
    if !args.is_empty() {
        l.log_requests_json = Some(json);
    }
    Ok(())
}

pub(super) fn not_flag(name: &str, args: &[Value]) -> Result<bool, String> {
    flag(name, args).map(|on| !on)
}

pub(super) fn force_shutdown(name: &str, args: &[Value]) -> Result<super::ForceShutdown, String> {
    use super::ForceShutdown;
    Ok(match args {
        [] => ForceShutdown::Never,
        [Value::Sym(s)] if s == "forever" => ForceShutdown::Never,
        [Value::Sym(s)] if s == "immediately" => ForceShutdown::After(Duration::ZERO),
        [_] => ForceShutdown::After(seconds(name, args)?),
        _ => return Err(arity(name, args.len(), "0..1")),
    })
}

/// `nil` (or no argument) unsets the layer's value.
pub(super) fn rack_url_scheme(l: &mut Layer, name: &str, args: &[Value]) -> Result<(), String> {
    l.rack_url_scheme = match args {
        [] | [Value::Nil] => None,
        [v] => Some(string(name, v)?),
        _ => return Err(arity(name, args.len(), "0..1")),
    };
    Ok(())
}

/// A size in bytes: a whole number (0 allowed).
pub(super) fn bytes(name: &str, args: &[Value]) -> Result<u64, String> {
    match args {
        [v] => whole(name, v, " of bytes"),
        _ => Err(arity(name, args.len(), "1")),
    }
}

pub(super) fn content_length_limit(
    l: &mut Layer,
    name: &str,
    args: &[Value],
) -> Result<(), String> {
    l.http_content_length_limit = match args {
        [Value::Nil] => None,
        [v] => Some(whole(name, v, " of bytes")?),
        _ => return Err(arity(name, args.len(), "1")),
    };
    Ok(())
}

pub(super) fn selector_backend(name: &str, args: &[Value]) -> Result<String, String> {
    let [v] = args else {
        return Err(arity(name, args.len(), "1"));
    };
    one_of(name, v, SELECTOR_BACKENDS)
}

pub(super) fn thread_count(name: &str, args: &[Value]) -> Result<u32, String> {
    let [v] = args else {
        return Err(arity(name, args.len(), "1"));
    };
    count(name, v)
}

/// `max_fibers_per_thread`: at least one request a thread.
pub(super) fn fiber_limit(name: &str, args: &[Value]) -> Result<u32, String> {
    match thread_count(name, args)? {
        0 => Err(format!("{name}: must be at least 1")),
        n => Ok(n),
    }
}

pub(super) fn stdout_redirect(l: &mut Layer, name: &str, args: &[Value]) -> Result<(), String> {
    let (out, err, append) = match args {
        [] => (&Value::Nil, &Value::Nil, &Value::Bool(false)),
        [o] => (o, &Value::Nil, &Value::Bool(false)),
        [o, e] => (o, e, &Value::Bool(false)),
        [o, e, a] => (o, e, a),
        _ => return Err(arity(name, args.len(), "0..3")),
    };
    let path = |v: &Value| match v {
        Value::Nil => Ok(None),
        v => string(name, v).map(Some),
    };
    l.redirect_stdout = path(out)?;
    l.redirect_stderr = path(err)?;
    l.redirect_append = Some(truthy(append));
    Ok(())
}

pub(super) fn file_mode(name: &str, args: &[Value]) -> Result<u32, String> {
    let [v] = args else {
        return Err(arity(name, args.len(), "1"));
    };
    whole(name, v, "")
        .ok()
        .and_then(|m| u32::try_from(m).ok())
        .filter(|m| *m <= 0o7777)
        .ok_or_else(|| format!("{name}: {} is not a file mode (e.g. 0o640)", v.describe()))
}

pub(super) fn control_url(l: &mut Layer, name: &str, args: &[Value]) -> Result<(), String> {
    let url = exactly_one_str(name, args)?;
    check_control_url(name, &url)?;
    l.control.get_or_insert_with(ControlApp::default).url = url;
    Ok(())
}

pub(super) fn control_token(l: &mut Layer, name: &str, args: &[Value]) -> Result<(), String> {
    let token = exactly_one_str(name, args)?;
    let control = l.control.get_or_insert_with(ControlApp::default);
    if token == "none" {
        control.no_token = true;
    } else {
        control.auth_token = Some(token);
    }
    Ok(())
}

pub(super) fn plugin(l: &mut Layer, name: &str, args: &[Value]) -> Result<(), String> {
    let plugin = exactly_one_str(name, args)?;
    if plugin.is_empty()
        || !plugin
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err(format!("{name}: {plugin:?} is not a plugin name"));
    }
    l.plugins.get_or_insert_with(Vec::new).push(plugin);
    Ok(())
}

pub(super) fn activated_sockets(l: &mut Layer, name: &str, args: &[Value]) -> Result<(), String> {
    l.activated_sockets = match args {
        [] => Some(ActivatedSockets::Also),
        [Value::Str(s)] | [Value::Sym(s)] if s == "only" => Some(ActivatedSockets::Only),
        [v] if truthy(v) => Some(ActivatedSockets::Also),
        [_] => None,
        _ => return Err(arity(name, args.len(), "0..1")),
    };
    Ok(())
}

pub(super) fn workers(name: &str, args: &[Value]) -> Result<u32, String> {
    let [v] = args else {
        return Err(arity(name, args.len(), "1"));
    };
    Ok(match v {
        Value::Sym(s) | Value::Str(s) if s == "auto" => WORKERS_AUTO,
        Value::Nil => 0,
        v => u32::try_from(whole(name, v, " of workers")?)
            .map_err(|_| format!("{name}: too many workers"))?,
    })
}

pub(super) fn fork_worker(name: &str, args: &[Value]) -> Result<u64, String> {
    match args {
        [] => Ok(DEFAULT_FORK_WORKER_REQUESTS),
        [v] => whole(name, v, " of requests"),
        _ => Err(arity(name, args.len(), "0..1")),
    }
}

pub(super) fn gem_names(name: &str, args: &[Value]) -> Result<Vec<String>, String> {
    match args {
        // No argument: none kept (Puma's default argument is an empty list).
        [] => Ok(Vec::new()),
        [Value::Array(items)] => items.iter().map(|g| string(name, g)).collect(),
        [Value::Str(list)] => Ok(list
            .split(',')
            .filter(|g| !g.is_empty())
            .map(String::from)
            .collect()),
        [v] => Err(format!(
            "{name}: expected an Array of gem names, got {}",
            v.describe()
        )),
        _ => Err(arity(name, args.len(), "0..1")),
    }
}

pub(super) fn less_busy_delay(name: &str, args: &[Value]) -> Result<Duration, String> {
    match args {
        [] => Ok(super::DEFAULT_LESS_BUSY_DELAY),
        [v] => super::args::seconds_value(name, v),
        _ => Err(arity(name, args.len(), "0..1")),
    }
}

pub(super) fn culling(name: &str, args: &[Value]) -> Result<super::Culling, String> {
    let [v] = args else {
        return Err(arity(name, args.len(), "1"));
    };
    Ok(match one_of(name, v, &["youngest", "oldest"])?.as_str() {
        "oldest" => super::Culling::Oldest,
        _ => super::Culling::Youngest,
    })
}
