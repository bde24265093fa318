//! The kinds of values options take: what the CLI parser and the DSL hand over ([`Value`]),
//! and the enums and structs of `Options` fields that are more than a number or a string, with
//! how each is exported to Ruby ([`ToValue`]).

use std::time::Duration;

use super::define::ToValue;

/// A value handed over by the CLI parser or the config DSL.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Nil,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    /// A Ruby Symbol (`:forever`).
    Sym(String),
    Array(Vec<Value>),
    /// A Ruby Hash with String or Symbol keys (`header: "X-Real-IP"`), in insertion order.
    Hash(Vec<(String, Value)>),
}

impl Value {
    pub fn describe(&self) -> String {
        match self {
            Value::Nil => "nil".into(),
            Value::Bool(b) => b.to_string(),
            Value::Int(i) => i.to_string(),
            Value::Float(f) => f.to_string(),
            Value::Str(s) => format!("{s:?}"),
            Value::Sym(s) => format!(":{s}"),
            Value::Array(items) => format!(
                "[{}]",
                items
                    .iter()
                    .map(Value::describe)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            Value::Hash(pairs) => format!(
                "{{{}}}",
                pairs
                    .iter()
                    .map(|(k, v)| format!("{k}: {}", v.describe()))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }
}

/// How long a graceful stop waits for in-flight requests.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ForceShutdown {
    /// Wait until every in-flight request finished (Puma's default).
    Never,
    /// Give up after this long and exit.
    After(Duration),
}

/// Where `REMOTE_ADDR` comes from (`set_remote_address`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RemoteAddress {
    /// The peer address of the socket (default).
    Socket,
    /// Always this text (`:localhost` is `"127.0.0.1"`).
    Fixed(String),
    /// The first address in this request header, else the socket's peer.
    Header(String),
    /// The source address of a PROXY protocol v1 line that starts the connection.
    ProxyV1,
    /// The source address of a PROXY protocol v2 header (binary) that starts the connection.
    ProxyV2,
}

/// Which request methods are served (`supported_http_methods`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HttpMethods {
    /// Puma 6+'s eight: GET HEAD POST PUT DELETE OPTIONS TRACE PATCH.
    Standard,
    /// Any method token.
    Any,
    /// Exactly these.
    Only(Vec<String>),
}

impl HttpMethods {
    /// The request parser's policy for these methods.
    pub fn policy(&self) -> catamount_http::MethodPolicy {
        match self {
            HttpMethods::Standard => catamount_http::MethodPolicy::standard(),
            HttpMethods::Any => catamount_http::MethodPolicy::Any,
            HttpMethods::Only(methods) => catamount_http::MethodPolicy::Only(methods.clone()),
        }
    }
}

/// Which workers `TTOU` stops first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Culling {
    Youngest,
    Oldest,
}

/// The Linux scheduling policy of the server's native threads (Catamount's own knob, no Puma
/// DSL name).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReactorScheduling {
    /// `Batch` where a serving process's share of the CPUs (its affinity or CPU quota, split
    /// among cluster workers) is one, `Normal` elsewhere. Default.
    #[default]
    Auto,
    /// `SCHED_BATCH`: never preempts the app's threads when woken; the same CPU share.
    Batch,
    /// `SCHED_OTHER`, the policy every thread gets unless told otherwise.
    Normal,
}

/// When a queued request goes to another Ruby thread (Catamount's own knob, no Puma DSL name).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ThreadHandoff {
    /// Only once that thread could run it: nobody serves, the serving threads are all blocked
    /// (I/O, sleep, locks), or they are all on long requests. Default.
    #[default]
    GvlAware,
    /// At once to any idle thread, as Puma does (they then queue at the GVL).
    Eager,
}

/// `activate_control_app` / `--control-url`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ControlApp {
    /// A bind URL, or `auto` (a Unix socket in the temp dir).
    pub url: String,
    /// `None`: a random token is made at boot (unless `no_token`).
    pub auth_token: Option<String>,
    pub no_token: bool,
    /// Only `stats` and `gc-stats` are served.
    pub data_only: bool,
}

/// `bind_to_activated_sockets` / `--bind-to-activated-sockets`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActivatedSockets {
    /// Use systemd's sockets as well as the configured binds.
    Also,
    /// Use only systemd's sockets.
    Only,
}

/// `shutdown_debug`: dump every thread's backtrace when stopping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShutdownDebug {
    Off,
    Always,
    /// Only when `force_shutdown_after` ran out.
    OnForce,
}

impl ToValue for ForceShutdown {
    fn to_value(&self) -> Value {
        match self {
            ForceShutdown::Never => Value::Sym("forever".into()),
            ForceShutdown::After(d) => d.to_value(),
        }
    }
}

impl ToValue for HttpMethods {
    fn to_value(&self) -> Value {
        match self.policy() {
            catamount_http::MethodPolicy::Any => Value::Sym("any".into()),
            catamount_http::MethodPolicy::Only(methods) => {
                Value::Array(methods.iter().map(|m| m.to_value()).collect())
            }
        }
    }
}

impl ToValue for ShutdownDebug {
    fn to_value(&self) -> Value {
        match self {
            ShutdownDebug::Off => Value::Bool(false),
            ShutdownDebug::Always => Value::Bool(true),
            ShutdownDebug::OnForce => Value::Sym("on_force".into()),
        }
    }
}

impl ToValue for Culling {
    fn to_value(&self) -> Value {
        Value::Sym(
            match self {
                Culling::Youngest => "youngest",
                Culling::Oldest => "oldest",
            }
            .into(),
        )
    }
}

/// `max_keep_alive`: no limit is `Float::INFINITY`, as it was given.
pub(super) fn export_keep_alive(key: &'static str, v: &u64) -> Vec<(&'static str, Value)> {
    let value = if *v == u64::MAX {
        Value::Float(f64::INFINITY)
    } else {
        v.to_value()
    };
    vec![(key, value)]
}

/// A name that Puma keeps as a Symbol.
#[allow(clippy::ptr_arg)] // an `Export<String>`: the field's type, not a choice
pub(super) fn export_symbol(key: &'static str, v: &String) -> Vec<(&'static str, Value)> {
    vec![(key, Value::Sym(v.clone()))]
}

/// `remote_address` (the mode) and `remote_address_value` (the header, address or version).
pub(super) fn export_remote_address(
    _: &'static str,
    v: &RemoteAddress,
) -> Vec<(&'static str, Value)> {
    let (mode, value) = match v {
        RemoteAddress::Socket => ("socket", None),
        RemoteAddress::Fixed(v) => ("value", Some(v.clone())),
        RemoteAddress::Header(v) => ("header", Some(v.clone())),
        RemoteAddress::ProxyV1 => ("proxy_protocol", Some("v1".to_string())),
        RemoteAddress::ProxyV2 => ("proxy_protocol", Some("v2".to_string())),
    };
    vec![
        ("remote_address", Value::Sym(mode.into())),
        ("remote_address_value", value.to_value()),
    ]
}

/// `control_url`, `control_auth_token` (`"none"` with `no_token`, as Puma keeps it) and
/// `control_data_only`, Puma's keys.
pub(super) fn export_control(
    _: &'static str,
    v: &Option<ControlApp>,
) -> Vec<(&'static str, Value)> {
    let token = v.as_ref().and_then(|c| {
        if c.no_token {
            Some("none".to_string())
        } else {
            c.auth_token.clone()
        }
    });
    vec![
        ("control_url", v.as_ref().map(|c| c.url.clone()).to_value()),
        ("control_auth_token", token.to_value()),
        (
            "control_data_only",
            Value::Bool(v.as_ref().is_some_and(|c| c.data_only)),
        ),
    ]
}
