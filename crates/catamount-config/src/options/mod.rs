//! The option model: what can be configured, its default, and how layers combine.
//!
//! Precedence is Puma's: a value from the command line (the *user* layer) wins over the config
//! file (the *file* layer), which wins over the built-in default (some defaults read environment
//! variables, as Puma's do). Within one layer a later setting replaces an earlier one, except
//! binds and plugins, which accumulate, and the rackup file, where the first value wins.
//!
//! Every option is set by name through [`Layer::set`], from the CLI parser and from the Ruby
//! config DSL alike, so validation and error messages live in one place. Options whose subsystem
//! has not landed yet (cluster mode, the control server, TLS, systemd sockets) are validated and
//! stored here like any other; [`Options::not_supported_yet`] says which of them a boot asks for.
//!
//! Options holding Ruby objects (hooks, `lowlevel_error_handler`, `custom_logger`, `app`, ...) live
//! on the Ruby side (`Catamount::Configuration`); everything with a plain value lives here.

mod args;

use std::time::Duration;

use crate::bind::{BindError, BindUrl};
use args::{
    arity, count, exactly_one_str, flag, hash, one_of, parse_seconds, port_number, seconds,
    seconds_value, string, truthy, whole,
};

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

/// Which workers `TTOU` stops first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Culling {
    Youngest,
    Oldest,
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

/// One layer of settings; `None` means "this layer does not say".
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Layer {
    /// Listeners. Accumulates within a layer (`bind` twice = two listeners).
    pub binds: Option<Vec<BindUrl>>,
    /// Host used by a later `port` without a host (`set_default_host`).
    pub default_host: Option<String>,
    pub min_threads: Option<u32>,
    pub max_threads: Option<u32>,
    pub environment: Option<String>,
    /// The rackup file; the first value given in a layer wins, as in Puma.
    pub rackup: Option<String>,
    pub tag: Option<String>,
    pub log_requests: Option<bool>,
    pub pidfile: Option<String>,
    pub persistent_timeout: Option<Duration>,
    pub first_data_timeout: Option<Duration>,
    pub force_shutdown_after: Option<ForceShutdown>,
    pub enable_keep_alives: Option<bool>,
    pub max_keep_alive: Option<u64>,
    /// `max_fast_inline`: Puma 7+ treats it as `max_keep_alive` when that is not set.
    pub max_fast_inline: Option<u64>,
    pub silent: Option<bool>,
    pub directory: Option<String>,
    pub idle_timeout: Option<Duration>,
    pub queue_requests: Option<bool>,
    pub drain_on_shutdown: Option<bool>,
    pub remote_address: Option<RemoteAddress>,
    pub rack_url_scheme: Option<String>,
    pub http_methods: Option<HttpMethods>,
    pub http_content_length_limit: Option<u64>,
    pub allow_underscore_headers: Option<bool>,
    pub io_selector_backend: Option<String>,
    pub early_hints: Option<bool>,
    pub max_io_threads: Option<u32>,
    pub fiber_per_request: Option<bool>,
    pub raise_exception_on_sigterm: Option<bool>,
    pub redirect_stdout: Option<String>,
    pub redirect_stderr: Option<String>,
    pub redirect_append: Option<bool>,
    pub sync_stdio: Option<bool>,
    pub debug: Option<bool>,
    pub shutdown_debug: Option<ShutdownDebug>,
    pub restart_command: Option<String>,
    pub state_path: Option<String>,
    pub state_permission: Option<u32>,
    pub control: Option<ControlApp>,
    /// Plugin names, in order (accumulate; both layers' lists are loaded).
    pub plugins: Option<Vec<String>>,
    /// `ssl_bind` calls, kept as their URLs until TLS lands.
    pub tls_binds: Option<Vec<String>>,
    pub activated_sockets: Option<ActivatedSockets>,
    // Cluster mode.
    pub workers: Option<u32>,
    pub preload_app: Option<bool>,
    /// `Some(n)`: fork_worker on, refork after n requests (0 = never).
    pub fork_worker: Option<u64>,
    pub prune_bundler: Option<bool>,
    pub extra_runtime_dependencies: Option<Vec<String>>,
    pub wait_for_less_busy_worker: Option<Duration>,
    pub worker_culling_strategy: Option<Culling>,
    pub worker_check_interval: Option<Duration>,
    pub worker_timeout: Option<Duration>,
    pub worker_boot_timeout: Option<Duration>,
    pub worker_shutdown_timeout: Option<Duration>,
    pub nakayoshi_fork: Option<bool>,
    pub silence_single_worker_warning: Option<bool>,
    pub silence_fork_callback_warning: Option<bool>,
}

/// The options the server runs with, after layering and defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct Options {
    /// Listeners; default `tcp://0.0.0.0:9292` (`tcp://[::]:9292` where IPv6 is usable).
    /// Example: `bind "unix:///run/app.sock"`, `port 3000, "::"`.
    pub binds: Vec<BindUrl>,
    /// Ruby threads kept alive even when idle. Default 0 (env `PUMA_MIN_THREADS`/`MIN_THREADS`).
    pub min_threads: u32,
    /// Most Ruby threads running the app at once. Default 5 (env `PUMA_MAX_THREADS`/`MAX_THREADS`).
    /// Example: `threads 5` (= 5:5), `threads 2, 8`.
    pub max_threads: u32,
    /// Rack environment. Default from `APP_ENV`, `RACK_ENV`, `RAILS_ENV`, else `development`.
    pub environment: String,
    /// Rackup file. Default `config.ru`.
    pub rackup: String,
    /// Process-title suffix. Default: basename of the working directory (decided at boot).
    pub tag: Option<String>,
    /// Access log, one line per request on stdout. Default off.
    pub log_requests: bool,
    /// File the server PID is written to, removed at exit. Default none.
    pub pidfile: Option<String>,
    /// Idle time allowed between requests on a keep-alive connection. Default 65 s
    /// (env `PUMA_PERSISTENT_TIMEOUT`), long enough for cloud load balancers' 60 s idle pools.
    pub persistent_timeout: Duration,
    /// Longest wait for the next bytes of a request once a connection is open. Default 30 s.
    pub first_data_timeout: Duration,
    /// How long a graceful stop waits for in-flight requests. Default: until they finish.
    pub force_shutdown_after: ForceShutdown,
    /// Allow HTTP keep-alive. Default true. `queue_requests false` turns it off too.
    pub enable_keep_alives: bool,
    /// Requests served on one connection before it is closed. Default 999 (Puma 7+);
    /// `Float::INFINITY` for no limit.
    pub max_keep_alive: u64,
    /// Discard informational log output. Default false.
    pub silent: bool,
    /// Directory to change to before loading the app. Default: stay.
    pub directory: Option<String>,
    /// Stop the server when no connection was accepted for this long. Default: never.
    pub idle_timeout: Option<Duration>,
    /// Puma's reactor switch. Catamount always buffers whole requests before a thread sees them;
    /// `false` keeps Puma's visible effect: no keep-alive. Default true.
    pub queue_requests: bool,
    /// On a graceful stop, still accept and serve the connections already waiting in the listen
    /// backlog. Default false.
    pub drain_on_shutdown: bool,
    /// Where `REMOTE_ADDR` comes from. Default: the socket's peer.
    /// Example: `set_remote_address header: "X-Real-IP"`, `set_remote_address proxy_protocol: :v1`.
    pub remote_address: RemoteAddress,
    /// Forces `rack.url_scheme`. Default: `https` when the request says it came over TLS
    /// (`X-Forwarded-Proto` and friends), else `http`.
    pub rack_url_scheme: Option<String>,
    /// Methods served; others get 501. Default the standard eight.
    /// Example: `supported_http_methods %w[GET HEAD PROPFIND]`, `supported_http_methods :any`.
    pub http_methods: HttpMethods,
    /// Largest request body in bytes; larger gets 413. Default: no limit.
    pub http_content_length_limit: Option<u64>,
    /// `false` drops request headers whose names contain `_` (they could pose as `-` headers in
    /// the env). Default true.
    pub allow_underscore_headers: bool,
    /// Accepted for compatibility (nio4r's backend); Catamount's reactor always uses epoll.
    pub io_selector_backend: String,
    /// Offer `env["rack.early_hints"]` (103 responses). Default false.
    pub early_hints: bool,
    /// Puma 8's extra threads for IO-bound requests. Default 0.
    pub max_io_threads: u32,
    /// Run each request in a fresh Fiber (clean fiber-locals). Default false
    /// (env `PUMA_FIBER_PER_REQUEST`). Alias: `clean_thread_locals`.
    pub fiber_per_request: bool,
    /// When a queued request goes to another thread. Default `gvl` (only once that thread could
    /// run it: the GVL is free); `eager` hands it to any idle thread at once, as Puma does.
    /// Set by the environment variable `CATAMOUNT_THREAD_HANDOFF`, so a config file stays one
    /// Puma can read. Example: `CATAMOUNT_THREAD_HANDOFF=eager catamount`.
    pub thread_handoff: ThreadHandoff,
    /// After a TERM-initiated stop, end the process by SIGTERM (exit status 143 in a shell), as
    /// Puma does. Default true.
    pub raise_exception_on_sigterm: bool,
    /// Reopen stdout / stderr to these files at boot (and on HUP). Default: keep them.
    pub redirect_stdout: Option<String>,
    pub redirect_stderr: Option<String>,
    /// Append instead of truncating. Default false.
    pub redirect_append: bool,
    /// Make stdout/stderr unbuffered at boot. Default true.
    pub sync_stdio: bool,
    /// Print `- `debug lines about the server's inner workings. Default false.
    pub debug: bool,
    /// Dump all thread backtraces at shutdown. Default off.
    pub shutdown_debug: ShutdownDebug,
    /// Command a hot restart runs. Default: the original command line.
    pub restart_command: Option<String>,
    /// YAML state file for `pumactl`. Default none.
    pub state_path: Option<String>,
    /// File mode of the state file. Default: per umask.
    pub state_permission: Option<u32>,
    /// The control server. Default off.
    pub control: Option<ControlApp>,
    /// Plugins to load, user's then file's. Example: `plugin :tmp_restart`.
    pub plugins: Vec<String>,
    pub tls_binds: Vec<String>,
    pub activated_sockets: Option<ActivatedSockets>,
    /// Worker processes; 0 is single mode. Default `WEB_CONCURRENCY` (a number or `auto`), else 0.
    pub workers: u32,
    /// Load the app once in the master. `None`: Puma 7+'s default (on in cluster mode).
    pub preload_app: Option<bool>,
    /// Fork workers from worker 0; refork after this many requests (0 = never).
    pub fork_worker: Option<u64>,
    pub prune_bundler: bool,
    pub extra_runtime_dependencies: Vec<String>,
    /// Delay before a busy worker accepts (cluster). Default 0.005 s.
    pub wait_for_less_busy_worker: Duration,
    /// Which workers TTOU stops first. Default youngest.
    pub worker_culling_strategy: Culling,
    /// How often workers check in. Default 5 s.
    pub worker_check_interval: Duration,
    /// A worker silent for this long is killed and replaced. Default 60 s.
    pub worker_timeout: Duration,
    /// Allowed boot time of a worker. Default: `worker_timeout`.
    pub worker_boot_timeout: Duration,
    /// After TERM, a worker still alive this long later is killed. Default 30 s.
    pub worker_shutdown_timeout: Duration,
    pub nakayoshi_fork: bool,
    pub silence_single_worker_warning: bool,
    pub silence_fork_callback_warning: bool,
}

pub const DEFAULT_PORT: u16 = 9292;
pub const DEFAULT_MAX_THREADS: u32 = 5;
pub const DEFAULT_PERSISTENT_TIMEOUT: Duration = Duration::from_secs(65);
pub const DEFAULT_FIRST_DATA_TIMEOUT: Duration = Duration::from_secs(30);
pub const DEFAULT_MAX_KEEP_ALIVE: u64 = 999;
pub const DEFAULT_WORKER_TIMEOUT: Duration = Duration::from_secs(60);
pub const DEFAULT_WORKER_CHECK_INTERVAL: Duration = Duration::from_secs(5);
pub const DEFAULT_WORKER_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);
pub const DEFAULT_FORK_WORKER_REQUESTS: u64 = 1000;

/// What the defaults may depend on: environment variables, whether IPv6 is usable, and how many
/// processors there are (`WEB_CONCURRENCY=auto`).
pub struct Environment<'a> {
    pub var: &'a dyn Fn(&str) -> Option<String>,
    pub ipv6_usable: bool,
    pub processors: u32,
}

/// nio4r's backends, accepted by `io_selector_backend`.
const SELECTOR_BACKENDS: &[&str] = &[
    "auto", "epoll", "kqueue", "select", "poll", "linuxaio", "io_uring",
];

impl Layer {
    /// Applies one setting by its DSL name. `args` are the method's arguments.
    pub fn set(&mut self, name: &str, args: &[Value]) -> Result<(), String> {
        match name {
            "bind" => {
                let url = exactly_one_str(name, args)?;
                if url.starts_with("ssl://") {
                    self.tls_binds.get_or_insert_with(Vec::new).push(url);
                } else {
                    self.push_bind(BindUrl::parse(&url).map_err(|e: BindError| e.to_string())?);
                }
            }
            "clear_binds!" => {
                if !args.is_empty() {
                    return Err(arity(name, args.len(), "0"));
                }
                self.binds = Some(Vec::new());
            }
            "set_default_host" => self.default_host = Some(exactly_one_str(name, args)?),
            "port" => {
                let (port, host) = match args {
                    [p] => (p, None),
                    [p, h] => (p, Some(h)),
                    _ => return Err(arity(name, args.len(), "1..2")),
                };
                let port = port_number(name, port)?;
                let host = match host {
                    None | Some(Value::Nil) => self
                        .default_host
                        .clone()
                        .unwrap_or_else(|| "0.0.0.0".to_string()),
                    Some(h) => string("port: host", h)?,
                };
                self.push_bind(BindUrl::tcp(&host, port).map_err(|e| e.to_string())?);
            }
            "ssl_bind" => {
                let [host, port, opts] = args else {
                    return Err(arity(name, args.len(), "3"));
                };
                let host = string(name, host)?;
                let port = port_number(name, port)?;
                let pairs = hash(name, opts, TLS_KEYS)?;
                let has = |k: &str| pairs.iter().any(|(key, v)| key == k && truthy(v));
                if !(has("cert") || has("cert_pem")) || !(has("key") || has("key_pem")) {
                    return Err(format!(
                        "{name}: needs cert: (or cert_pem:) and key: (or key_pem:)"
                    ));
                }
                let url = format!("ssl://{}:{port}", crate::bind::bracket_if_v6(&host));
                self.tls_binds.get_or_insert_with(Vec::new).push(url);
            }
            "threads" => {
                let (min, max) = match args {
                    [n] => (count(name, n)?, count(name, n)?),
                    [a, b] => (count(name, a)?, count(name, b)?),
                    _ => return Err(arity(name, args.len(), "1..2")),
                };
                check_threads(min, max)?;
                self.min_threads = Some(min);
                self.max_threads = Some(max);
            }
            "environment" => self.environment = Some(exactly_one_str(name, args)?),
            "rackup" => {
                let path = exactly_one_str(name, args)?;
                self.rackup.get_or_insert(path);
            }
            "tag" => self.tag = Some(exactly_one_str(name, args)?),
            "log_requests" => self.log_requests = Some(flag(name, args)?),
            "quiet" => self.log_requests = Some(!flag(name, args)?),
            "silent" => self.silent = Some(flag(name, args)?),
            "pidfile" => self.pidfile = Some(exactly_one_str(name, args)?),
            "directory" => self.directory = Some(exactly_one_str(name, args)?),
            "persistent_timeout" => self.persistent_timeout = Some(seconds(name, args)?),
            "first_data_timeout" => self.first_data_timeout = Some(seconds(name, args)?),
            "force_shutdown_after" => {
                self.force_shutdown_after = Some(match args {
                    [] => ForceShutdown::Never,
                    [Value::Sym(s)] if s == "forever" => ForceShutdown::Never,
                    [Value::Sym(s)] if s == "immediately" => ForceShutdown::After(Duration::ZERO),
                    [_] => ForceShutdown::After(seconds(name, args)?),
                    _ => return Err(arity(name, args.len(), "0..1")),
                });
            }
            "enable_keep_alives" => self.enable_keep_alives = Some(flag(name, args)?),
            "max_keep_alive" => self.max_keep_alive = Some(keep_alive_count(name, args)?),
            "max_fast_inline" => self.max_fast_inline = Some(keep_alive_count(name, args)?),
            "idle_timeout" => self.idle_timeout = Some(positive_seconds(name, args)?),
            "queue_requests" => self.queue_requests = Some(flag(name, args)?),
            "drain_on_shutdown" => self.drain_on_shutdown = Some(flag(name, args)?),
            "set_remote_address" => self.remote_address = Some(remote_address(name, args)?),
            "rack_url_scheme" => {
                self.rack_url_scheme = match args {
                    [] | [Value::Nil] => None,
                    [v] => Some(string(name, v)?),
                    _ => return Err(arity(name, args.len(), "0..1")),
                }
            }
            "supported_http_methods" => self.http_methods = Some(http_methods(name, args)?),
            "http_content_length_limit" => {
                self.http_content_length_limit = match args {
                    [Value::Nil] => None,
                    [v] => Some(whole(name, v, " of bytes")?),
                    _ => return Err(arity(name, args.len(), "1")),
                }
            }
            "allow_underscore_headers" => self.allow_underscore_headers = Some(flag(name, args)?),
            "io_selector_backend" => {
                let [v] = args else {
                    return Err(arity(name, args.len(), "1"));
                };
                self.io_selector_backend = Some(one_of(name, v, SELECTOR_BACKENDS)?);
            }
            "early_hints" => self.early_hints = Some(flag(name, args)?),
            "max_io_threads" => {
                let [v] = args else {
                    return Err(arity(name, args.len(), "1"));
                };
                self.max_io_threads = Some(count(name, v)?);
            }
            "fiber_per_request" | "clean_thread_locals" => {
                self.fiber_per_request = Some(flag(name, args)?)
            }
            "raise_exception_on_sigterm" => {
                self.raise_exception_on_sigterm = Some(flag(name, args)?)
            }
            "stdout_redirect" => {
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
                self.redirect_stdout = path(out)?;
                self.redirect_stderr = path(err)?;
                self.redirect_append = Some(truthy(append));
            }
            "redirect_stdout" => self.redirect_stdout = Some(exactly_one_str(name, args)?),
            "redirect_stderr" => self.redirect_stderr = Some(exactly_one_str(name, args)?),
            "redirect_append" => self.redirect_append = Some(flag(name, args)?),
            "mutate_stdout_and_stderr_to_sync_on_write" => {
                self.sync_stdio = Some(flag(name, args)?)
            }
            "debug" => self.debug = Some(flag(name, args)?),
            "shutdown_debug" => self.shutdown_debug = Some(shutdown_debug(name, args)?),
            "restart_command" => self.restart_command = Some(exactly_one_str(name, args)?),
            "state_path" => self.state_path = Some(exactly_one_str(name, args)?),
            "state_permission" => {
                let [v] = args else {
                    return Err(arity(name, args.len(), "1"));
                };
                let mode = whole(name, v, "")
                    .ok()
                    .and_then(|m| u32::try_from(m).ok())
                    .filter(|m| *m <= 0o7777)
                    .ok_or_else(|| {
                        format!("{name}: {} is not a file mode (e.g. 0o640)", v.describe())
                    })?;
                self.state_permission = Some(mode);
            }
            "activate_control_app" => self.control = Some(control_app(name, args)?),
            "control_url" => {
                let url = exactly_one_str(name, args)?;
                check_control_url(name, &url)?;
                self.control.get_or_insert_with(ControlApp::default).url = url;
            }
            "control_auth_token" => {
                let token = exactly_one_str(name, args)?;
                let control = self.control.get_or_insert_with(ControlApp::default);
                if token == "none" {
                    control.no_token = true;
                } else {
                    control.auth_token = Some(token);
                }
            }
            "plugin" => {
                let plugin = exactly_one_str(name, args)?;
                if plugin.is_empty()
                    || !plugin
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
                {
                    return Err(format!("{name}: {plugin:?} is not a plugin name"));
                }
                self.plugins.get_or_insert_with(Vec::new).push(plugin);
            }
            "bind_to_activated_sockets" => {
                self.activated_sockets = match args {
                    [] => Some(ActivatedSockets::Also),
                    [Value::Str(s)] | [Value::Sym(s)] if s == "only" => {
                        Some(ActivatedSockets::Only)
                    }
                    [v] if truthy(v) => Some(ActivatedSockets::Also),
                    [_] => None,
                    _ => return Err(arity(name, args.len(), "0..1")),
                }
            }
            "workers" => {
                let [v] = args else {
                    return Err(arity(name, args.len(), "1"));
                };
                self.workers = Some(match v {
                    Value::Sym(s) | Value::Str(s) if s == "auto" => WORKERS_AUTO,
                    Value::Nil => 0,
                    v => u32::try_from(whole(name, v, " of workers")?)
                        .map_err(|_| format!("{name}: too many workers"))?,
                });
            }
            "preload_app!" | "preload_app" => self.preload_app = Some(flag(name, args)?),
            "fork_worker" => {
                self.fork_worker = Some(match args {
                    [] => DEFAULT_FORK_WORKER_REQUESTS,
                    [v] => whole(name, v, " of requests")?,
                    _ => return Err(arity(name, args.len(), "0..1")),
                })
            }
            "prune_bundler" => self.prune_bundler = Some(flag(name, args)?),
            "extra_runtime_dependencies" => {
                let gems = match args {
                    [Value::Array(items)] => items
                        .iter()
                        .map(|g| string(name, g))
                        .collect::<Result<Vec<_>, _>>()?,
                    [Value::Str(list)] => list
                        .split(',')
                        .filter(|g| !g.is_empty())
                        .map(String::from)
                        .collect(),
                    [v] => {
                        return Err(format!(
                            "{name}: expected an Array of gem names, got {}",
                            v.describe()
                        ))
                    }
                    _ => return Err(arity(name, args.len(), "1")),
                };
                self.extra_runtime_dependencies = Some(gems);
            }
            "wait_for_less_busy_worker" => {
                self.wait_for_less_busy_worker = Some(match args {
                    [] => Duration::from_millis(5),
                    [v] => seconds_value(name, v)?,
                    _ => return Err(arity(name, args.len(), "0..1")),
                })
            }
            "worker_culling_strategy" => {
                let [v] = args else {
                    return Err(arity(name, args.len(), "1"));
                };
                self.worker_culling_strategy =
                    Some(match one_of(name, v, &["youngest", "oldest"])?.as_str() {
                        "oldest" => Culling::Oldest,
                        _ => Culling::Youngest,
                    });
            }
            "worker_check_interval" => {
                self.worker_check_interval = Some(positive_seconds(name, args)?)
            }
            "worker_timeout" => self.worker_timeout = Some(positive_seconds(name, args)?),
            "worker_boot_timeout" => self.worker_boot_timeout = Some(positive_seconds(name, args)?),
            "worker_shutdown_timeout" => self.worker_shutdown_timeout = Some(seconds(name, args)?),
            "nakayoshi_fork" => self.nakayoshi_fork = Some(flag(name, args)?),
            "silence_single_worker_warning" => {
                self.silence_single_worker_warning = Some(flag(name, args)?)
            }
            "silence_fork_callback_warning" => {
                self.silence_fork_callback_warning = Some(flag(name, args)?)
            }
            _ => return Err(format!("unknown option {name:?}")),
        }
        Ok(())
    }

    fn push_bind(&mut self, bind: BindUrl) {
        self.binds.get_or_insert_with(Vec::new).push(bind);
    }
}

/// `workers :auto` before the processor count is known.
const WORKERS_AUTO: u32 = u32::MAX;

/// Keys `ssl_bind` knows (Puma's, MRI ones).
const TLS_KEYS: &[&str] = &[
    "cert",
    "key",
    "cert_pem",
    "key_pem",
    "key_password_command",
    "ca",
    "verify_mode",
    "verification_flags",
    "ssl_cipher_filter",
    "ssl_ciphersuites",
    "no_tlsv1",
    "no_tlsv1_1",
    "reuse",
    "backlog",
    "low_latency",
];

fn keep_alive_count(name: &str, args: &[Value]) -> Result<u64, String> {
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

fn positive_seconds(name: &str, args: &[Value]) -> Result<Duration, String> {
    let d = seconds(name, args)?;
    if d.is_zero() {
        return Err(format!("{name}: must be more than 0 seconds"));
    }
    Ok(d)
}

fn remote_address(name: &str, args: &[Value]) -> Result<RemoteAddress, String> {
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
                    one_of(&format!("{name}: proxy_protocol:"), p, &["v1"])?;
                    Ok(RemoteAddress::ProxyV1)
                }
                _ => Err(format!("{name}: give exactly one of header: or proxy_protocol:")),
            }
        }
        [v] => Err(format!(
            "{name}: expected :socket, :localhost, a String, header: NAME or proxy_protocol: :v1, got {}",
            v.describe()
        )),
        _ => Err(arity(name, args.len(), "0..1")),
    }
}

fn http_methods(name: &str, args: &[Value]) -> Result<HttpMethods, String> {
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

fn shutdown_debug(name: &str, args: &[Value]) -> Result<ShutdownDebug, String> {
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

fn check_control_url(name: &str, url: &str) -> Result<(), String> {
    if url == "auto" || url.starts_with("ssl://") {
        return Ok(());
    }
    BindUrl::parse(url)
        .map(|_| ())
        .map_err(|e| format!("{name}: {e}"))
}

fn control_app(name: &str, args: &[Value]) -> Result<ControlApp, String> {
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

/// Combines the layers: `user` over `file` over defaults.
pub fn resolve(user: &Layer, file: &Layer, env: &Environment<'_>) -> Result<Options, String> {
    macro_rules! pick {
        ($field:ident) => {
            user.$field.clone().or_else(|| file.$field.clone())
        };
    }
    let var = |name: &str| (env.var)(name).filter(|v| !v.trim().is_empty());
    let env_count = |names: &[&str]| -> Result<Option<u32>, String> {
        for name in names {
            if let Some(v) = var(name) {
                return v.trim().parse::<u32>().map(Some).map_err(|_| {
                    format!("environment variable {name}={v:?} is not a whole number")
                });
            }
        }
        Ok(None)
    };
    let min_threads = match pick!(min_threads) {
        Some(n) => n,
        None => env_count(&["PUMA_MIN_THREADS", "MIN_THREADS"])?.unwrap_or(0),
    };
    let max_threads = match pick!(max_threads) {
        Some(n) => n,
        None => env_count(&["PUMA_MAX_THREADS", "MAX_THREADS"])?.unwrap_or(DEFAULT_MAX_THREADS),
    };
    check_threads(min_threads, max_threads)?;
    let environment = pick!(environment)
        .or_else(|| {
            ["APP_ENV", "RACK_ENV", "RAILS_ENV"]
                .iter()
                .find_map(|n| (env.var)(n).filter(|v| !v.is_empty()))
        })
        .unwrap_or_else(|| "development".to_string());
    let persistent_timeout = match pick!(persistent_timeout) {
        Some(d) => d,
        None => match var("PUMA_PERSISTENT_TIMEOUT") {
            Some(v) => parse_seconds(&v).ok_or_else(|| {
                format!(
                    "environment variable PUMA_PERSISTENT_TIMEOUT={v:?} is not a number of seconds"
                )
            })?,
            None => DEFAULT_PERSISTENT_TIMEOUT,
        },
    };
    let binds = match pick!(binds) {
        Some(b) => b,
        None => {
            let host = if env.ipv6_usable { "::" } else { "0.0.0.0" };
            vec![BindUrl::tcp(host, DEFAULT_PORT).map_err(|e| e.to_string())?]
        }
    };
    let workers = match pick!(workers) {
        Some(n) => n,
        None => match var("WEB_CONCURRENCY") {
            Some(v) if v.trim() == "auto" => WORKERS_AUTO,
            Some(v) => v.trim().parse::<u32>().map_err(|_| {
                format!(
                    "environment variable WEB_CONCURRENCY={v:?} is not a whole number or \"auto\""
                )
            })?,
            None => 0,
        },
    };
    let workers = if workers == WORKERS_AUTO {
        env.processors.max(1)
    } else {
        workers
    };
    let thread_handoff = match var("CATAMOUNT_THREAD_HANDOFF").as_deref().map(str::trim) {
        None | Some("gvl") => ThreadHandoff::GvlAware,
        Some("eager") => ThreadHandoff::Eager,
        Some(v) => {
            return Err(format!(
                "environment variable CATAMOUNT_THREAD_HANDOFF={v:?} is not \"gvl\" or \"eager\""
            ))
        }
    };
    let fiber_per_request = match pick!(fiber_per_request) {
        Some(b) => b,
        None => var("PUMA_FIBER_PER_REQUEST").is_some_and(|v| v != "false" && v != "0"),
    };
    let queue_requests = pick!(queue_requests).unwrap_or(true);
    let worker_check_interval =
        pick!(worker_check_interval).unwrap_or(DEFAULT_WORKER_CHECK_INTERVAL);
    let worker_timeout = pick!(worker_timeout).unwrap_or(DEFAULT_WORKER_TIMEOUT);
    if worker_timeout <= worker_check_interval {
        return Err(format!(
            "worker_timeout ({} s) must be longer than worker_check_interval ({} s)",
            worker_timeout.as_secs_f64(),
            worker_check_interval.as_secs_f64()
        ));
    }
    // Both layers' plugins load (the user's first), each once.
    let mut plugins: Vec<String> = Vec::new();
    for p in user.plugins.iter().chain(file.plugins.iter()).flatten() {
        if !plugins.contains(p) {
            plugins.push(p.clone());
        }
    }
    let mut tls_binds: Vec<String> = Vec::new();
    tls_binds.extend(user.tls_binds.iter().flatten().cloned());
    if user.binds.is_none() && user.tls_binds.is_none() {
        tls_binds.extend(file.tls_binds.iter().flatten().cloned());
    }
    let mut control = pick!(control);
    if let Some(c) = &control {
        if c.url.is_empty() {
            control = None; // a token without a URL turns nothing on, as in Puma.
        }
    }
    Ok(Options {
        binds,
        min_threads,
        max_threads,
        environment,
        rackup: pick!(rackup).unwrap_or_else(|| "config.ru".to_string()),
        tag: pick!(tag),
        log_requests: pick!(log_requests).unwrap_or(false),
        pidfile: pick!(pidfile),
        persistent_timeout,
        first_data_timeout: pick!(first_data_timeout).unwrap_or(DEFAULT_FIRST_DATA_TIMEOUT),
        force_shutdown_after: pick!(force_shutdown_after).unwrap_or(ForceShutdown::Never),
        enable_keep_alives: pick!(enable_keep_alives).unwrap_or(true) && queue_requests,
        max_keep_alive: pick!(max_keep_alive)
            .or(pick!(max_fast_inline))
            .unwrap_or(DEFAULT_MAX_KEEP_ALIVE),
        silent: pick!(silent).unwrap_or(false),
        directory: pick!(directory),
        idle_timeout: pick!(idle_timeout),
        queue_requests,
        drain_on_shutdown: pick!(drain_on_shutdown).unwrap_or(false),
        remote_address: pick!(remote_address).unwrap_or(RemoteAddress::Socket),
        rack_url_scheme: pick!(rack_url_scheme),
        http_methods: pick!(http_methods).unwrap_or(HttpMethods::Standard),
        http_content_length_limit: pick!(http_content_length_limit),
        allow_underscore_headers: pick!(allow_underscore_headers).unwrap_or(true),
        io_selector_backend: pick!(io_selector_backend).unwrap_or_else(|| "auto".to_string()),
        early_hints: pick!(early_hints).unwrap_or(false),
        max_io_threads: pick!(max_io_threads).unwrap_or(0),
        fiber_per_request,
        thread_handoff,
        raise_exception_on_sigterm: pick!(raise_exception_on_sigterm).unwrap_or(true),
        redirect_stdout: pick!(redirect_stdout),
        redirect_stderr: pick!(redirect_stderr),
        redirect_append: pick!(redirect_append).unwrap_or(false),
        sync_stdio: pick!(sync_stdio).unwrap_or(true),
        debug: pick!(debug).unwrap_or(false),
        shutdown_debug: pick!(shutdown_debug).unwrap_or(ShutdownDebug::Off),
        restart_command: pick!(restart_command),
        state_path: pick!(state_path),
        state_permission: pick!(state_permission),
        control,
        plugins,
        tls_binds,
        activated_sockets: pick!(activated_sockets),
        workers,
        preload_app: pick!(preload_app),
        fork_worker: pick!(fork_worker),
        prune_bundler: pick!(prune_bundler).unwrap_or(false),
        extra_runtime_dependencies: pick!(extra_runtime_dependencies).unwrap_or_default(),
        wait_for_less_busy_worker: pick!(wait_for_less_busy_worker)
            .unwrap_or(Duration::from_millis(5)),
        worker_culling_strategy: pick!(worker_culling_strategy).unwrap_or(Culling::Youngest),
        worker_check_interval,
        worker_timeout,
        worker_boot_timeout: pick!(worker_boot_timeout).unwrap_or(worker_timeout),
        worker_shutdown_timeout: pick!(worker_shutdown_timeout)
            .unwrap_or(DEFAULT_WORKER_SHUTDOWN_TIMEOUT),
        nakayoshi_fork: pick!(nakayoshi_fork).unwrap_or(false),
        silence_single_worker_warning: pick!(silence_single_worker_warning).unwrap_or(false),
        silence_fork_callback_warning: pick!(silence_fork_callback_warning).unwrap_or(false),
    })
}

impl Options {
    /// The first thing this configuration asks for that Catamount cannot do yet, as
    /// "<what> (<option>)"; the launcher refuses to boot with it rather than ignore it.
    pub fn not_supported_yet(&self) -> Option<String> {
        if let Some(url) = self.tls_binds.first() {
            return Some(format!("TLS ({url})"));
        }
        if self.control.is_some() {
            return Some("the control server (activate_control_app / --control-url)".into());
        }
        if self.max_io_threads > 0 {
            return Some("IO-bound thread marking (max_io_threads)".into());
        }
        None
    }
}

fn check_threads(min: u32, max: u32) -> Result<(), String> {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn env<'a>(f: &'a dyn Fn(&str) -> Option<String>) -> Environment<'a> {
        Environment {
            var: f,
            ipv6_usable: false,
            processors: 4,
        }
    }

    #[test]
    fn defaults() {
        let o = resolve(&Layer::default(), &Layer::default(), &env(&no_env))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(o.min_threads, 0);
        assert_eq!(o.max_threads, 5);
        assert_eq!(o.environment, "development");
        assert_eq!(o.rackup, "config.ru");
        assert_eq!(o.binds[0].original, "tcp://0.0.0.0:9292");
        assert_eq!(o.persistent_timeout, Duration::from_secs(65));
        assert_eq!(o.first_data_timeout, Duration::from_secs(30));
        assert_eq!(o.max_keep_alive, 999);
    }

    #[test]
    fn ipv6_default_bind() {
        let e = Environment {
            var: &no_env,
            ipv6_usable: true,
            processors: 4,
        };
        let o = resolve(&Layer::default(), &Layer::default(), &e).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(o.binds[0].original, "tcp://[::]:9292");
    }

    #[test]
    fn user_beats_file_beats_env() {
        let mut file = Layer::default();
        file.set("threads", &[Value::Int(2), Value::Int(8)])
            .unwrap_or_else(|e| panic!("{e}"));
        file.set("environment", &[Value::Str("staging".into())])
            .unwrap_or_else(|e| panic!("{e}"));
        let mut user = Layer::default();
        user.set("threads", &[Value::Int(3)])
            .unwrap_or_else(|e| panic!("{e}"));
        let vars = |n: &str| (n == "MAX_THREADS" || n == "RACK_ENV").then(|| "7".to_string());
        let o = resolve(&user, &file, &env(&vars)).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((o.min_threads, o.max_threads), (3, 3));
        assert_eq!(o.environment, "staging");
        let o = resolve(&Layer::default(), &Layer::default(), &env(&vars))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(o.max_threads, 7);
        assert_eq!(o.environment, "7");
    }

    #[test]
    fn binds_accumulate_and_user_binds_replace_file_binds() {
        let mut file = Layer::default();
        file.set("bind", &[Value::Str("tcp://127.0.0.1:1".into())])
            .unwrap_or_else(|e| panic!("{e}"));
        file.set("port", &[Value::Int(2), Value::Str("::1".into())])
            .unwrap_or_else(|e| panic!("{e}"));
        let o = resolve(&Layer::default(), &file, &env(&no_env)).unwrap_or_else(|e| panic!("{e}"));
        let urls: Vec<_> = o.binds.iter().map(|b| b.original.as_str()).collect();
        assert_eq!(urls, ["tcp://127.0.0.1:1", "tcp://[::1]:2"]);
        let mut user = Layer::default();
        user.set("port", &[Value::Int(3)])
            .unwrap_or_else(|e| panic!("{e}"));
        let o = resolve(&user, &file, &env(&no_env)).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(o.binds.len(), 1);
        assert_eq!(o.binds[0].original, "tcp://0.0.0.0:3");
    }

    #[test]
    fn first_rackup_wins() {
        let mut l = Layer::default();
        l.set("rackup", &[Value::Str("a.ru".into())])
            .unwrap_or_else(|e| panic!("{e}"));
        l.set("rackup", &[Value::Str("b.ru".into())])
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(l.rackup.as_deref(), Some("a.ru"));
    }

    #[test]
    fn errors_name_the_option() {
        let mut l = Layer::default();
        for (name, args, needle) in [
            (
                "threads",
                vec![Value::Int(5), Value::Int(2)],
                "greater than",
            ),
            ("threads", vec![Value::Int(0), Value::Int(0)], "at least 1"),
            ("threads", vec![Value::Str("x".into())], "whole number"),
            ("port", vec![Value::Int(70000)], "not a port"),
            ("bind", vec![Value::Str("nope".into())], "invalid bind URL"),
            ("bind", vec![], "wrong number"),
            (
                "persistent_timeout",
                vec![Value::Str("soon".into())],
                "seconds",
            ),
            ("max_keep_alive", vec![Value::Int(0)], "positive"),
            ("tag", vec![Value::Int(1)], "expected a String"),
            ("frobnicate", vec![], "unknown option"),
        ] {
            let err = l
                .set(name, &args)
                .err()
                .unwrap_or_else(|| panic!("{name} accepted"));
            assert!(err.contains(needle), "{name}: {err}");
        }
    }

    #[test]
    fn force_shutdown_forms() {
        let mut l = Layer::default();
        l.set("force_shutdown_after", &[Value::Sym("immediately".into())])
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            l.force_shutdown_after,
            Some(ForceShutdown::After(Duration::ZERO))
        );
        l.set("force_shutdown_after", &[Value::Int(5)])
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            l.force_shutdown_after,
            Some(ForceShutdown::After(Duration::from_secs(5)))
        );
        l.set("force_shutdown_after", &[Value::Sym("forever".into())])
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(l.force_shutdown_after, Some(ForceShutdown::Never));
    }

    #[test]
    fn bad_env_var_is_an_error() {
        let vars = |n: &str| (n == "PUMA_MAX_THREADS").then(|| "lots".to_string());
        let err = resolve(&Layer::default(), &Layer::default(), &env(&vars))
            .err()
            .unwrap_or_default();
        assert!(err.contains("PUMA_MAX_THREADS"), "{err}");
    }

    #[test]
    fn thread_handoff_from_the_environment() {
        let handoff = |value: &'static str| {
            let vars = move |n: &str| (n == "CATAMOUNT_THREAD_HANDOFF").then(|| value.to_string());
            resolve(&Layer::default(), &Layer::default(), &env(&vars)).map(|o| o.thread_handoff)
        };
        assert_eq!(
            handoff(""),
            Ok(ThreadHandoff::GvlAware),
            "unset: the default"
        );
        assert_eq!(handoff("gvl"), Ok(ThreadHandoff::GvlAware));
        assert_eq!(handoff(" eager "), Ok(ThreadHandoff::Eager));
        let err = handoff("lazy").err().unwrap_or_default();
        assert!(err.contains("CATAMOUNT_THREAD_HANDOFF=\"lazy\""), "{err}");
    }

    fn set(layer: &mut Layer, name: &str, args: Vec<Value>) {
        layer
            .set(name, &args)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
    }

    fn sym(s: &str) -> Value {
        Value::Sym(s.into())
    }

    fn str(s: &str) -> Value {
        Value::Str(s.into())
    }

    #[test]
    fn web_concurrency_number_auto_and_garbage() {
        let two = |n: &str| (n == "WEB_CONCURRENCY").then(|| "2".to_string());
        let o = resolve(&Layer::default(), &Layer::default(), &env(&two))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(o.workers, 2);
        assert_eq!(o.not_supported_yet(), None, "cluster mode is served");
        let mut fork = Layer::default();
        fork.set("fork_worker", &[])
            .unwrap_or_else(|e| panic!("{e}"));
        let o = resolve(&Layer::default(), &fork, &env(&two)).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(o.fork_worker, Some(1000));
        assert_eq!(o.not_supported_yet(), None, "fork_worker is served");
        let auto = |n: &str| (n == "WEB_CONCURRENCY").then(|| "auto".to_string());
        let o = resolve(&Layer::default(), &Layer::default(), &env(&auto))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(o.workers, 4);
        let bad = |n: &str| (n == "WEB_CONCURRENCY").then(|| "many".to_string());
        let err = resolve(&Layer::default(), &Layer::default(), &env(&bad))
            .err()
            .unwrap_or_default();
        assert!(err.contains("WEB_CONCURRENCY"), "{err}");
        let mut file = Layer::default();
        set(&mut file, "workers", vec![Value::Int(0)]);
        let o = resolve(&Layer::default(), &file, &env(&two)).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(o.workers, 0, "the file's workers beats the environment");
        assert_eq!(o.not_supported_yet(), None);
    }

    #[test]
    fn later_subsystems_are_stored_and_named() {
        let mut file = Layer::default();
        set(&mut file, "worker_timeout", vec![Value::Int(3600)]);
        set(&mut file, "preload_app!", vec![]);
        set(&mut file, "fork_worker", vec![]);
        set(&mut file, "plugin", vec![sym("tmp_restart")]);
        let o = resolve(&Layer::default(), &file, &env(&no_env)).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(o.worker_timeout, Duration::from_secs(3600));
        assert_eq!(o.worker_boot_timeout, Duration::from_secs(3600));
        assert_eq!(o.preload_app, Some(true));
        assert_eq!(o.fork_worker, Some(1000));
        assert_eq!(o.plugins, ["tmp_restart"]);
        assert_eq!(
            o.not_supported_yet(),
            None,
            "single mode with cluster settings boots"
        );
        let mut tls = Layer::default();
        set(
            &mut tls,
            "ssl_bind",
            vec![
                str("0.0.0.0"),
                Value::Int(9443),
                Value::Hash(vec![
                    ("cert".into(), str("c.pem")),
                    ("key".into(), str("k.pem")),
                ]),
            ],
        );
        let o = resolve(&Layer::default(), &tls, &env(&no_env)).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            o.not_supported_yet().as_deref(),
            Some("TLS (ssl://0.0.0.0:9443)")
        );
        let mut control = Layer::default();
        set(
            &mut control,
            "activate_control_app",
            vec![str("tcp://127.0.0.1:9293")],
        );
        let o =
            resolve(&Layer::default(), &control, &env(&no_env)).unwrap_or_else(|e| panic!("{e}"));
        assert!(o
            .not_supported_yet()
            .is_some_and(|w| w.contains("control server")));
    }

    #[test]
    fn network_options() {
        let mut l = Layer::default();
        set(&mut l, "set_default_host", vec![str("::1")]);
        set(&mut l, "port", vec![Value::Int(3000)]);
        set(
            &mut l,
            "supported_http_methods",
            vec![Value::Array(vec![str("GET"), str("PROPFIND")])],
        );
        set(&mut l, "http_content_length_limit", vec![Value::Int(1024)]);
        set(
            &mut l,
            "set_remote_address",
            vec![Value::Hash(vec![("header".into(), str("X-Real-IP"))])],
        );
        set(&mut l, "queue_requests", vec![Value::Bool(false)]);
        set(&mut l, "max_fast_inline", vec![Value::Int(7)]);
        let o = resolve(&Layer::default(), &l, &env(&no_env)).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(o.binds[0].original, "tcp://[::1]:3000");
        assert_eq!(
            o.http_methods,
            HttpMethods::Only(vec!["GET".into(), "PROPFIND".into()])
        );
        assert_eq!(o.http_content_length_limit, Some(1024));
        assert_eq!(o.remote_address, RemoteAddress::Header("X-Real-IP".into()));
        assert!(
            !o.enable_keep_alives,
            "queue_requests false turns keep-alive off"
        );
        assert_eq!(
            o.max_keep_alive, 7,
            "max_fast_inline stands in for max_keep_alive"
        );
        set(
            &mut l,
            "set_remote_address",
            vec![Value::Hash(vec![("proxy_protocol".into(), sym("v1"))])],
        );
        assert_eq!(l.remote_address, Some(RemoteAddress::ProxyV1));
        set(&mut l, "set_remote_address", vec![sym("localhost")]);
        assert_eq!(
            l.remote_address,
            Some(RemoteAddress::Fixed("127.0.0.1".into()))
        );
        set(&mut l, "clear_binds!", vec![]);
        assert_eq!(l.binds, Some(Vec::new()));
    }

    #[test]
    fn more_bad_values_name_the_option() {
        let mut l = Layer::default();
        for (name, args, needle) in [
            (
                "supported_http_methods",
                vec![Value::Array(vec![str("get")])],
                "upper-case",
            ),
            (
                "supported_http_methods",
                vec![Value::Array(vec![str("GET"), str("GET")])],
                "twice",
            ),
            (
                "supported_http_methods",
                vec![Value::Int(1)],
                "expected :any",
            ),
            (
                "set_remote_address",
                vec![Value::Hash(vec![("proxy_protocol".into(), sym("v2"))])],
                ":v1",
            ),
            (
                "set_remote_address",
                vec![Value::Hash(vec![("hedaer".into(), str("X"))])],
                "unknown key",
            ),
            ("workers", vec![str("lots")], "whole number"),
            ("worker_timeout", vec![Value::Int(0)], "more than 0"),
            ("worker_culling_strategy", vec![sym("random")], ":youngest"),
            ("io_selector_backend", vec![sym("iocp")], "expected one of"),
            (
                "ssl_bind",
                vec![str("0.0.0.0"), Value::Int(1), Value::Hash(vec![])],
                "needs cert",
            ),
            ("state_permission", vec![Value::Int(0o17777)], "file mode"),
            ("plugin", vec![str("../evil")], "not a plugin name"),
            (
                "activate_control_app",
                vec![str("http://x")],
                "invalid bind URL",
            ),
            (
                "http_content_length_limit",
                vec![Value::Int(-1)],
                "whole number",
            ),
        ] {
            let err = l
                .set(name, &args)
                .err()
                .unwrap_or_else(|| panic!("{name} accepted"));
            assert!(err.contains(needle), "{name}: {err}");
            assert!(err.starts_with(name), "{name}: {err}");
        }
    }

    #[test]
    fn worker_timeout_must_exceed_check_interval() {
        let mut l = Layer::default();
        set(&mut l, "worker_check_interval", vec![Value::Int(10)]);
        set(&mut l, "worker_timeout", vec![Value::Int(5)]);
        let err = resolve(&Layer::default(), &l, &env(&no_env))
            .err()
            .unwrap_or_default();
        assert!(err.contains("worker_check_interval"), "{err}");
    }
}
