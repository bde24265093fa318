//! The option model: every option Catamount knows, defined once in the `options!` table below.
//!
//! **To add an option, add one entry to the table** (and, if its arguments are more than one
//! plain value, a parser in `setters.rs`). An entry gives the option's DSL methods with their
//! validation and `get` keys, its flags with their `--help` lines, the fields it fills with
//! their types, defaults and Puma keys, a one-line doc, the default in words and an example.
//! From the table come `Layer` (one source's settings), `Options` (the resolved values),
//! [`resolve`], `Layer::set` (flags and DSL lines alike, so validation and error messages live
//! in one place), the CLI parser's flags and `--help`, the DSL's methods
//! (`Native.dsl_options`), `Options::export` (Ruby's options Hash) and the options table of
//! docs/configuration.md (a test fails when it disagrees with the table:
//! `cargo run -p catamount-config --example options-doc` rewrites it).
//!
//! An entry, every slot named (copy it; `persistent_timeout` is a simple real one, `threads`
//! one with two fields, a flag parser and a cross-field check):
//!
//! ```text
//! my_option {                           // the docs row's name
//!     doc: "what it does, one line",
//!     default: "30 s (`MY_VAR`)",      // the stated value first: a test compares it with the
//!                                       // field's exported default
//!     example: "my_option 10",          // a config-file line calling one of its DSL methods
//!     methods: [
//!         // set!(field, parser): store the parser's value (args.rs / setters.rs) in `field`
//!         "my_option" => set!(my_option, seconds),
//!         // a setters.rs fn(&mut Layer, name, args) when a method fills several fields
//!         "my_pair" => my_pair,
//!         // (flag_only): only a flag calls it; config files cannot (not in Puma's DSL)
//!         "my_url" (flag_only) => set!(my_url, exactly_one_str),
//!     ],
//!     flags: [Flag::value("my-option", "my_option")   // or ::switch / ::optional
//!         .short('m')                                  // each long and short flag once
//!         .with(parse_flag_value)                      // the flag's text as the method's args
//!         .help("SECONDS", "its --help line")],
//!     fields: {
//!         // name: Layer type => Options type = resolve, export;
//!         // resolve: or(x) / or_none() / a closure |given, sources| that may read fields
//!         //          above it in the table by name (resolved in table order)
//!         // export:  same (the field's name is Puma's key), hidden (not exported),
//!         //          named!("puma_key"), or an `Export` fn in values.rs (several keys)
//!         my_option: Duration => Duration = or(Duration::from_secs(30)), same;
//!     }
//! }
//! ```
//!
//! A field no layer may set (only the environment does, like `thread_handoff`) has the layer
//! type `EnvironmentOnly`. A config file's `get` reads what [`given_values`] exports, so the
//! export slot is also what `get` answers under.
//!
//! Precedence is Puma's: a value from the command line (the *user* layer) wins over the config
//! file (the *file* layer), which wins over the built-in default (some defaults read environment
//! variables, as Puma's do). Within one layer a later setting replaces an earlier one, except
//! binds and plugins, which accumulate, and the rackup file, where the first value wins.
//!
//! Options whose subsystem has not landed yet (none now) are
//! validated and stored like any other; [`Options::not_supported_yet`] says which of them a boot
//! asks for. Options holding Ruby objects (hooks, `lowlevel_error_handler`, `custom_logger`,
//! `app`, ...) live on the Ruby side (`Catamount::Configuration`).

mod args;
#[macro_use]
pub(crate) mod define;
mod setters;
mod values;

use std::time::Duration;

use crate::bind::BindUrl;
use args::{exactly_one_str, flag, seconds};
use define::{hidden, or, or_none, same, EnvironmentOnly, Sources};
pub use define::{Definition, Flag, FlagArg, Method, ToValue};
use setters::*;
pub use values::*;

/// `wait_for_less_busy_worker` without a value (and its default).
const DEFAULT_LESS_BUSY_DELAY: Duration = Duration::from_millis(5);

options! {
    binds {
        doc: "listeners: `tcp://HOST:PORT`, `unix:///PATH`, `ssl://HOST:PORT?cert=PATH&key=PATH` (see README; `ssl_bind HOST, PORT, {cert:, key:, ...}` with Puma's TLS keys, Catamount adds `min_version`/`max_version`); `port N, host` is a TCP one on `set_default_host`'s host, else `0.0.0.0`; `clear_binds!` drops those so far",
        default: "`tcp://0.0.0.0:9292` (`[::]` where IPv6 is usable)",
        example: "bind \"unix:///run/app.sock\"",
        methods: [
            "bind" => bind,
            "ssl_bind" => ssl_bind,
            "port" => port,
            "clear_binds!" => clear_binds,
            "set_default_host" => set!(default_host, exactly_one_str),
        ],
        flags: [
            Flag::value("bind", "bind")
                .short('b')
                .help("URI", "Listen on URI: tcp://HOST:PORT or unix:///PATH (repeatable)"),
            Flag::value("port", "port")
                .short('p')
                .help("PORT", "Listen on tcp://0.0.0.0:PORT"),
        ],
        fields: {
            binds: Vec<BindUrl> => Vec<BindUrl> = default_binds, same;
            /// The host a later `port` without one binds.
            default_host: String => Option<String> = or_none(), same;
        }
    }
    threads {
        doc: "Ruby threads running the app: MIN kept alive even when idle, at most MAX at once (`threads N` is `N, N`)",
        default: "`0, 5` (`PUMA_MIN_THREADS`/`MIN_THREADS`, `PUMA_MAX_THREADS`/`MAX_THREADS`)",
        example: "threads 2, 8",
        methods: ["threads" => threads],
        flags: [Flag::value("threads", "threads")
            .short('t')
            .with(min_max)
            .help("MIN:MAX", "Ruby threads serving requests (MIN:MAX or N; default 0:5)")],
        fields: {
            min_threads: u32 => u32 = |v, s| {
                Ok(match v {
                    Some(n) => n,
                    None => s.count_var(&["PUMA_MIN_THREADS", "MIN_THREADS"])?.unwrap_or(0),
                })
            }, same;
            max_threads: u32 => u32 = |v, s| {
                let max = match v {
                    Some(n) => n,
                    None => s.count_var(&["PUMA_MAX_THREADS", "MAX_THREADS"])?.unwrap_or(5),
                };
                if s.cross_checks {
                    check_threads(min_threads, max)?;
                }
                Ok(max)
            }, same;
        }
    }
    environment {
        doc: "the Rack environment; exported as `RACK_ENV`",
        default: "`APP_ENV`, `RACK_ENV`, `RAILS_ENV`, else `development`",
        example: "environment \"production\"",
        methods: ["environment" => set!(environment, exactly_one_str)],
        flags: [Flag::value("environment", "environment").short('e').help(
            "ENV",
            "Rack environment (default: APP_ENV, RACK_ENV, RAILS_ENV or development)"
        )],
        fields: {
            environment: String => String = |v, s| {
                Ok(v.or_else(|| {
                    ["APP_ENV", "RACK_ENV", "RAILS_ENV"]
                        .iter()
                        .find_map(|n| (s.env.var)(n).filter(|v| !v.is_empty()))
                })
                .unwrap_or_else(|| "development".to_string()))
            }, same;
        }
    }
    directory {
        doc: "directory to change to before loading the app (and where a hot restart runs)",
        default: "stay",
        example: "directory \"/srv/app/current\"",
        methods: ["directory" => set!(directory, exactly_one_str)],
        flags: [Flag::value("dir", "directory").help("DIR", "Change to DIR before starting")],
        fields: {
            directory: String => Option<String> = or_none(), same;
        }
    }
    rackup {
        doc: "the rackup file (a rackup file named on the command line wins; the first one given wins)",
        default: "`config.ru`",
        example: "rackup \"app.ru\"",
        methods: ["rackup" => rackup],
        flags: [],
        fields: {
            rackup: String => String = or("config.ru".to_string()), same;
        }
    }
    tag {
        doc: "text shown in the process title",
        default: "the working directory's name",
        example: "tag \"shop\"",
        methods: ["tag" => set!(tag, exactly_one_str)],
        flags: [Flag::value("tag", "tag").help("NAME", "Text shown in the process title")],
        fields: {
            tag: String => Option<String> = or_none(), same;
        }
    }
    pidfile {
        doc: "file the server's PID is written to, removed at exit",
        default: "none",
        example: "pidfile \"tmp/pids/server.pid\"",
        methods: ["pidfile" => set!(pidfile, exactly_one_str)],
        flags: [Flag::value("pidfile", "pidfile").help("PATH", "Write the process id to PATH")],
        fields: {
            pidfile: String => Option<String> = or_none(), same;
        }
    }
    persistent_timeout {
        doc: "idle time allowed between requests on a keep-alive connection (long enough for cloud load balancers' 60 s pools)",
        default: "65 s (`PUMA_PERSISTENT_TIMEOUT`)",
        example: "persistent_timeout 20",
        methods: ["persistent_timeout" => set!(persistent_timeout, seconds)],
        flags: [],
        fields: {
            persistent_timeout: Duration => Duration = |v, s| match v {
                Some(d) => Ok(d),
                None => match s.var("PUMA_PERSISTENT_TIMEOUT") {
                    Some(v) => args::parse_seconds(&v).ok_or_else(|| {
                        format!("environment variable PUMA_PERSISTENT_TIMEOUT={v:?} is not a number of seconds")
                    }),
                    None => Ok(Duration::from_secs(65)),
                },
            }, same;
        }
    }
    first_data_timeout {
        doc: "longest wait for the next bytes of a request once a connection is open",
        default: "30 s",
        example: "first_data_timeout 10",
        methods: ["first_data_timeout" => set!(first_data_timeout, seconds)],
        flags: [],
        fields: {
            first_data_timeout: Duration => Duration = or(Duration::from_secs(30)), same;
        }
    }
    idle_timeout {
        doc: "stop (exit 0) when no request arrived for this many seconds",
        default: "never",
        example: "idle_timeout 300",
        methods: ["idle_timeout" => set!(idle_timeout, positive_seconds)],
        flags: [Flag::value("idle-timeout", "idle_timeout")
            .help("SECONDS", "Stop after SECONDS without a new connection")],
        fields: {
            idle_timeout: Duration => Option<Duration> = or_none(), same;
        }
    }
    force_shutdown_after {
        doc: "how long a graceful stop waits for in-flight requests: seconds, `:forever` or `:immediately`",
        default: "`:forever`",
        example: "force_shutdown_after 25",
        methods: ["force_shutdown_after" => set!(force_shutdown_after, force_shutdown)],
        flags: [],
        fields: {
            force_shutdown_after: ForceShutdown => ForceShutdown = or(ForceShutdown::Never), same;
        }
    }
    drain_timeout {
        doc: "on a stop or phased restart, how long open-ended streams (SSE) and hijacked or upgraded connections (WebSockets) may go on before they are closed, each logged (Catamount's own: Puma closes them at once; a hot restart does not drain)",
        default: "10 s",
        example: "drain_timeout 30",
        methods: ["drain_timeout" => set!(drain_timeout, seconds)],
        flags: [],
        fields: {
            drain_timeout: Duration => Duration = or(Duration::from_secs(10)), same;
        }
    }
    request_timeout {
        doc: "a request still running this long is answered (`request_timeout_status`) and `Catamount::RequestTimeout` is raised into its thread, its backtrace logged; a response already begun is cut instead (Catamount's own: Puma has none; see differences)",
        default: "off",
        example: "request_timeout 30",
        methods: ["request_timeout" => set!(request_timeout, positive_seconds)],
        flags: [],
        fields: {
            request_timeout: Duration => Option<Duration> = or_none(), same;
        }
    }
    request_timeout_grace {
        doc: "how long a thread given `Catamount::RequestTimeout` may take to leave the request before it counts as lost (a cluster worker is then replaced; single mode runs on with a thread fewer)",
        default: "10 s",
        example: "request_timeout_grace 5",
        methods: ["request_timeout_grace" => set!(request_timeout_grace, seconds)],
        flags: [],
        fields: {
            request_timeout_grace: Duration => Duration = or(Duration::from_secs(10)), same;
        }
    }
    request_timeout_status {
        doc: "the status a timed-out request is answered with (400..=599)",
        default: "503",
        example: "request_timeout_status 504",
        methods: ["request_timeout_status" => set!(request_timeout_status, error_status)],
        flags: [],
        fields: {
            request_timeout_status: u32 => u32 = or(503), same;
        }
    }
    queue_requests {
        doc: "Puma's reactor switch; `false` turns keep-alive off (Catamount always buffers whole requests, see differences)",
        default: "true",
        example: "queue_requests false",
        methods: ["queue_requests" => set!(queue_requests, flag)],
        flags: [],
        fields: {
            queue_requests: bool => bool = or(true), same;
        }
    }
    enable_keep_alives {
        doc: "allow HTTP keep-alive",
        default: "true",
        example: "enable_keep_alives false",
        methods: ["enable_keep_alives" => set!(enable_keep_alives, flag)],
        flags: [],
        fields: {
            enable_keep_alives: bool => bool = |v, _| Ok(v.unwrap_or(true) && queue_requests), same;
        }
    }
    max_keep_alive {
        doc: "requests served on one connection before it is closed (`Float::INFINITY`: no limit); `max_fast_inline` stands in when this is unset (Puma 7+)",
        default: "999",
        example: "max_keep_alive 100",
        methods: [
            "max_keep_alive" => set!(max_keep_alive, keep_alive_count),
            "max_fast_inline" => set!(max_fast_inline, keep_alive_count),
        ],
        flags: [],
        fields: {
            max_fast_inline: u64 => Option<u64> = or_none(), same;
            max_keep_alive: u64 => u64 = |v, _| Ok(v.or(max_fast_inline).unwrap_or(999)), export_keep_alive;
        }
    }
    drain_on_shutdown {
        doc: "on a graceful stop, still accept and serve the connections already waiting in the listen backlog",
        default: "off",
        example: "drain_on_shutdown",
        methods: ["drain_on_shutdown" => set!(drain_on_shutdown, flag)],
        flags: [],
        fields: {
            drain_on_shutdown: bool => bool = or(false), same;
        }
    }
    supported_http_methods {
        doc: "methods served (a list, or `:any`); others get 501",
        default: "GET HEAD POST PUT DELETE OPTIONS TRACE PATCH",
        example: "supported_http_methods %w[GET HEAD POST PROPFIND]",
        methods: ["supported_http_methods" => set!(http_methods, http_methods)],
        flags: [],
        fields: {
            http_methods: HttpMethods => HttpMethods = or(HttpMethods::Standard), named!("supported_http_methods");
        }
    }
    http_content_length_limit {
        doc: "largest request body in bytes; larger gets 413",
        default: "none",
        example: "http_content_length_limit 10_000_000",
        methods: ["http_content_length_limit" => content_length_limit],
        flags: [],
        fields: {
            http_content_length_limit: u64 => Option<u64> = or_none(), same;
        }
    }
    max_buffered_response {
        doc: "bytes of one response the server keeps in memory for a client that reads slowly, so that the app's thread moves on; past it the rest goes to a temporary file (`max_spilled_total`) or, when that is full too, the thread waits for its client (Catamount's own: a Puma thread always waits)",
        default: "16777216 (16 MiB)",
        example: "max_buffered_response 4 * 1024 * 1024",
        methods: ["max_buffered_response" => set!(max_buffered_response, bytes)],
        flags: [],
        fields: {
            max_buffered_response: u64 => u64 = or(16 * 1024 * 1024), same;
        }
    }
    max_buffered_total {
        doc: "bytes of responses the server keeps in memory for slow readers over all connections of a process; past it further bytes go to a temporary file (`max_spilled_total`) or, when that is full too, each thread goes at its own client's pace",
        default: "67108864 (64 MiB)",
        example: "max_buffered_total 256 * 1024 * 1024",
        methods: ["max_buffered_total" => set!(max_buffered_total, bytes)],
        flags: [],
        fields: {
            max_buffered_total: u64 => u64 = or(64 * 1024 * 1024), same;
        }
    }
    max_spilled_total {
        doc: "bytes of responses for slow readers a process may write to unlinked temporary files in `$TMPDIR` once the memory bounds are reached (as nginx's proxy buffering does); 0 turns spilling off",
        default: "1073741824 (1 GiB)",
        example: "max_spilled_total 0",
        methods: ["max_spilled_total" => set!(max_spilled_total, bytes)],
        flags: [],
        fields: {
            max_spilled_total: u64 => u64 = or(1024 * 1024 * 1024), same;
        }
    }
    allow_underscore_headers {
        doc: "`false` drops request headers with `_` in the name (they could pose as `-` headers in the env)",
        default: "true (kept, never clobbering a `-` twin nor taking a key the server reads or a proxy sets)",
        example: "allow_underscore_headers false",
        methods: ["allow_underscore_headers" => set!(allow_underscore_headers, flag)],
        flags: [],
        fields: {
            allow_underscore_headers: bool => bool = or(true), same;
        }
    }
    set_remote_address {
        doc: "where `REMOTE_ADDR` comes from: `:socket`, `:localhost`, a fixed `\"ip\"`, `header: NAME` (its first address), or `proxy_protocol: :v1` (a PROXY v1 line, at most 107 bytes, first on the connection, names the client; a malformed one drops the connection; on a TLS listener it comes before the handshake, in the clear, as HAProxy's `send-proxy` sends it), or `proxy_protocol: :v2` (Catamount's own, Puma has only v1: the binary header HAProxy's `send-proxy-v2` sends, TCP over IPv4/IPv6; a UNIX client, LOCAL health checks and UNSPEC keep the socket's address; TLVs skipped; UDP, unknown families, a v1 line or a malformed header drop the connection, as does one unfinished at `first_data_timeout`)",
        default: "`:socket`",
        example: "set_remote_address header: \"X-Real-IP\"",
        methods: ["set_remote_address" => set!(remote_address, remote_address)],
        flags: [],
        fields: {
            remote_address: RemoteAddress => RemoteAddress = or(RemoteAddress::Socket), export_remote_address;
        }
    }
    rack_url_scheme {
        doc: "a fixed `rack.url_scheme`",
        default: "`https` when `X-Forwarded-Proto`/`-Scheme`/`-Ssl` say so, else `http`",
        example: "rack_url_scheme \"https\"",
        methods: ["rack_url_scheme" => rack_url_scheme],
        flags: [],
        fields: {
            rack_url_scheme: String => Option<String> = or_none(), same;
        }
    }
    early_hints {
        doc: "offer `env[\"rack.early_hints\"]`: calling it with headers sends a 103",
        default: "off",
        example: "early_hints",
        methods: ["early_hints" => set!(early_hints, flag)],
        flags: [Flag::switch("early-hints", "early_hints")
            .help("", "Offer rack.early_hints (103 responses)")],
        fields: {
            early_hints: bool => bool = or(false), same;
        }
    }
    fiber_per_request {
        doc: "run each request in a fresh Fiber (clean `Thread.current[:x]`)",
        default: "off (`PUMA_FIBER_PER_REQUEST`)",
        example: "fiber_per_request",
        methods: [
            "fiber_per_request" => set!(fiber_per_request, flag),
            "clean_thread_locals" => set!(fiber_per_request, flag),
        ],
        flags: [],
        fields: {
            fiber_per_request: bool => bool = |v, s| {
                Ok(v.unwrap_or_else(|| s.var("PUMA_FIBER_PER_REQUEST").is_some_and(|v| v != "false" && v != "0")))
            }, same;
        }
    }
    fiber_scheduler {
        doc: "run each request in its own Fiber under Catamount's Fiber scheduler: while a request waits (a socket, `sleep`, a Mutex or Queue, `Timeout`, a name lookup) its thread runs other requests, up to `max_fibers_per_thread` at once (Catamount's own; what it changes for apps: the fiber mode section below)",
        default: "off",
        example: "fiber_scheduler",
        methods: ["fiber_scheduler" => set!(fiber_scheduler, flag)],
        flags: [],
        fields: {
            fiber_scheduler: bool => bool = or(false), same;
        }
    }
    max_fibers_per_thread {
        doc: "with `fiber_scheduler`, how many requests one pool thread runs at once (the process takes up to this times `max_threads`)",
        default: "64",
        example: "max_fibers_per_thread 64",
        methods: ["max_fibers_per_thread" => set!(max_fibers_per_thread, fiber_limit)],
        flags: [],
        fields: {
            max_fibers_per_thread: u32 => u32 = or(64), same;
        }
    }
    thread_handoff {
        doc: "when a queued request goes to another Ruby thread: `gvl`, once that thread could run it, or `eager`, at once (as Puma); an environment variable only, so config files stay Puma's (see above)",
        default: "`gvl` (`CATAMOUNT_THREAD_HANDOFF`)",
        example: "",
        methods: [],
        flags: [],
        fields: {
            thread_handoff: EnvironmentOnly => ThreadHandoff = |_, s| {
                s.choice_var(
                    "CATAMOUNT_THREAD_HANDOFF",
                    &[("gvl", ThreadHandoff::GvlAware), ("eager", ThreadHandoff::Eager)],
                )
            }, hidden;
        }
    }
    reactor_scheduling {
        doc: "the Linux scheduling policy of the reactor and log writer threads: `batch` (`SCHED_BATCH`: the same share of the CPU, but a thread woken by network activity on a busy CPU waits until the app's thread blocks or the next scheduler tick, instead of preempting it for every request that arrives), `normal` (`SCHED_OTHER`, as every Puma thread), or `auto`: `batch` where a serving process's share of the CPUs is one (single mode pinned to one CPU or with a CPU quota of one, cluster workers as many as the CPUs), else `normal`; an environment variable only, so config files stay Puma's (see above)",
        default: "`auto` (`CATAMOUNT_REACTOR_SCHEDULING`)",
        example: "",
        methods: [],
        flags: [],
        fields: {
            reactor_scheduling: EnvironmentOnly => ReactorScheduling = |_, s| {
                s.choice_var(
                    "CATAMOUNT_REACTOR_SCHEDULING",
                    &[
                        ("auto", ReactorScheduling::Auto),
                        ("batch", ReactorScheduling::Batch),
                        ("normal", ReactorScheduling::Normal),
                    ],
                )
            }, hidden;
        }
    }
    log_requests {
        doc: "access log: one line per request on stdout (or `custom_logger`); `log_requests :json` writes one JSON object a line instead of Puma's plain line (see below); `quiet` turns it off",
        default: "off",
        example: "log_requests :json",
        methods: [
            "log_requests" => log_requests,
            "quiet" => set!(log_requests, not_flag),
        ],
        flags: [
            Flag::switch("quiet", "quiet")
                .short('q')
                .help("", "Do not log requests (the default)"),
            Flag::switch("log-requests", "log_requests")
                .short('v')
                .help("", "Log every request to stdout"),
        ],
        fields: {
            log_requests: bool => bool = or(false), same;
            /// `log_requests :json`: JSON lines (not a Puma key: Puma takes `:json` as "on").
            log_requests_json: bool => bool = or(false), hidden;
        }
    }
    silent {
        doc: "discard all informational output (a flag only, as in Puma)",
        default: "off",
        example: "",
        methods: ["silent" (flag_only) => set!(silent, flag)],
        flags: [Flag::switch("silent", "silent")
            .short('s')
            .help("", "Do not print informational messages")],
        fields: {
            silent: bool => bool = or(false), same;
        }
    }
    stdout_redirect {
        doc: "reopen stdout/stderr to files at boot (`=== catamount startup: … ===`), appending or not; `HUP` reopens them",
        default: "keep them",
        example: "stdout_redirect \"log/out.log\", \"log/err.log\", true",
        methods: [
            "stdout_redirect" => stdout_redirect,
            "redirect_stdout" (flag_only) => set!(redirect_stdout, exactly_one_str),
            "redirect_stderr" (flag_only) => set!(redirect_stderr, exactly_one_str),
            "redirect_append" (flag_only) => set!(redirect_append, flag),
        ],
        flags: [
            Flag::value("redirect-stdout", "redirect_stdout").help("FILE", "Reopen stdout to FILE"),
            Flag::value("redirect-stderr", "redirect_stderr").help("FILE", "Reopen stderr to FILE"),
            Flag::switch("redirect-append", "redirect_append")
                .help("", "Append to (instead of truncating) the redirect files"),
            Flag::switch("no-redirect-append", "redirect_append").with(off),
        ],
        fields: {
            redirect_stdout: String => Option<String> = or_none(), same;
            redirect_stderr: String => Option<String> = or_none(), same;
            redirect_append: bool => bool = or(false), same;
        }
    }
    mutate_stdout_and_stderr_to_sync_on_write {
        doc: "make stdout/stderr unbuffered at boot",
        default: "true",
        example: "mutate_stdout_and_stderr_to_sync_on_write false",
        methods: ["mutate_stdout_and_stderr_to_sync_on_write" => set!(sync_stdio, flag)],
        flags: [],
        fields: {
            sync_stdio: bool => bool = or(true), named!("mutate_stdout_and_stderr_to_sync_on_write");
        }
    }
    debug {
        doc: "print `- ` debug lines about the server's inner workings (also `PUMA_DEBUG`)",
        default: "off",
        example: "debug",
        methods: ["debug" => set!(debug, flag)],
        flags: [Flag::switch("debug", "debug")
            .help("", "Print debug lines about the server's inner workings")],
        fields: {
            debug: bool => bool = or(false), same;
        }
    }
    shutdown_debug {
        doc: "print every thread's backtrace when stopping (`on_force: true`: only when `force_shutdown_after` ran out)",
        default: "off",
        example: "shutdown_debug on_force: true",
        methods: ["shutdown_debug" => set!(shutdown_debug, shutdown_debug)],
        flags: [],
        fields: {
            shutdown_debug: ShutdownDebug => ShutdownDebug = or(ShutdownDebug::Off), same;
        }
    }
    raise_exception_on_sigterm {
        doc: "after a TERM-initiated stop, end the process by SIGTERM (exit status 143 in a shell); `false` exits 0",
        default: "true",
        example: "raise_exception_on_sigterm false",
        methods: ["raise_exception_on_sigterm" => set!(raise_exception_on_sigterm, flag)],
        flags: [],
        fields: {
            raise_exception_on_sigterm: bool => bool = or(true), same;
        }
    }
    state_path {
        doc: "YAML state file for `pumactl` (`pid`, `running_from`), and its file mode",
        default: "none; mode per umask",
        example: "state_path \"tmp/pids/puma.state\"",
        methods: [
            "state_path" => set!(state_path, exactly_one_str),
            "state_permission" => set!(state_permission, file_mode),
        ],
        flags: [Flag::value("state", "state_path")
            .short('S')
            .help("PATH", "Write a state file for pumactl")],
        fields: {
            state_path: String => Option<String> = or_none(), named!("state");
            state_permission: u32 => Option<u32> = or_none(), same;
        }
    }
    restart_command {
        doc: "the command a hot restart runs, the original arguments appended",
        default: "this Ruby running the same script",
        example: "restart_command \"bin/catamount\"",
        methods: ["restart_command" => set!(restart_command, exactly_one_str)],
        flags: [Flag::value("restart-cmd", "restart_command")
            .short('R')
            .help("CMD", "Command a hot restart runs")],
        fields: {
            restart_command: String => Option<String> = or_none(), named!("restart_cmd");
        }
    }
    plugin {
        doc: "load a plugin: `tmp_restart`, `systemd`, or `puma/plugin/NAME.rb` from the load path (`Puma::Plugin.create`, `config(dsl)`, `start(launcher)`); the flags' then the files'",
        default: "none (`systemd` under systemd)",
        example: "plugin :tmp_restart",
        methods: ["plugin" => plugin],
        flags: [Flag::value("plugin", "plugin").help("NAME", "Load plugin NAME (repeatable)")],
        fields: {
            plugins: Vec<String> => Vec<String> = all_plugins, same;
        }
    }
    io_selector_backend {
        doc: "accepted and validated (nio4r's backends); the reactor always uses epoll",
        default: "`:auto`",
        example: "io_selector_backend :epoll",
        methods: ["io_selector_backend" => set!(io_selector_backend, selector_backend)],
        flags: [],
        fields: {
            io_selector_backend: String => String = or("auto".to_string()), export_symbol;
        }
    }
    max_io_threads {
        doc: "Puma 8's extra threads beyond `max` for requests that called `env[\"puma.mark_as_io_bound\"]` (they wait on IO, not the CPU); marked threads past this many take places of `max`",
        default: "0",
        example: "max_io_threads 5",
        methods: ["max_io_threads" => set!(max_io_threads, thread_count)],
        flags: [],
        fields: {
            max_io_threads: u32 => u32 = or(0), same;
        }
    }
    activate_control_app {
        doc: "the control server in the master (single mode: the server process): `tcp://HOST:PORT` (port 0 picks a free one), `ssl://HOST:PORT?key=..&cert=..` (TLS, parameters as for an `ssl://` bind), `unix:///PATH`, `unix://@NAME` or `auto` (a UNIX socket in the temp dir); `auth_token:` (default: a random one, printed at boot), `no_token: true` (or `--control-token none`), `data_only: true` (only `stats`, `gc-stats` and `metrics`); endpoints in docs/control.md",
        default: "off",
        example: "activate_control_app \"unix:///tmp/control.sock\", no_token: true",
        methods: [
            "activate_control_app" => set!(control, control_app),
            "control_url" (flag_only) => control_url,
            "control_auth_token" (flag_only) => control_token,
        ],
        flags: [
            Flag::value("control-url", "control_url")
                .help("URL", "Start the control server on URL (`auto`: a UNIX socket)"),
            Flag::value("control-token", "control_auth_token")
                .help("TOKEN", "The control server's token (`none`: no token)"),
        ],
        fields: {
            control: ControlApp => Option<ControlApp> = merged_control, export_control;
        }
    }
    metrics {
        doc: "Prometheus metrics (docs/metrics.md): `metrics_url URL` serves `/metrics` on a listener of its own, without a token (puma-metrics' method); `control_metrics` serves it on the control server too, under its token rules",
        default: "off",
        example: "metrics_url \"tcp://127.0.0.1:9394\"",
        methods: [
            "metrics_url" => set!(metrics_url, metrics_url),
            "control_metrics" => set!(control_metrics, flag),
        ],
        flags: [Flag::value("metrics-url", "metrics_url")
            .help("URL", "Serve Prometheus metrics on URL")],
        fields: {
            metrics_url: String => Option<String> = or_none(), same;
            control_metrics: bool => bool = or(false), same;
        }
    }
    bind_to_activated_sockets {
        doc: "serve the sockets systemd passed (`LISTEN_FDS`) besides the binds, or `\"only\"` them; without it an activated socket serves the bind with its address and the others are closed",
        default: "off",
        example: "bind_to_activated_sockets \"only\"",
        methods: ["bind_to_activated_sockets" => activated_sockets],
        flags: [Flag::optional("bind-to-activated-sockets", "bind_to_activated_sockets")
            .help("only", "Serve systemd's sockets too (or only them)")],
        fields: {
            activated_sockets: ActivatedSockets => Option<ActivatedSockets> = or_none(), hidden;
        }
    }
    workers {
        doc: "worker processes (cluster mode; `:auto` is one per processor); 0 is single mode",
        default: "`WEB_CONCURRENCY` (a number or `auto`), else 0",
        example: "workers 4",
        methods: ["workers" => set!(workers, workers)],
        flags: [Flag::value("workers", "workers")
            .short('w')
            .help("COUNT", "Worker processes (cluster mode)")],
        fields: {
            workers: u32 => u32 = |v, s| {
                let n = match v {
                    Some(n) => n,
                    None => match s.var("WEB_CONCURRENCY") {
                        Some(v) if v.trim() == "auto" => WORKERS_AUTO,
                        Some(v) => v.trim().parse::<u32>().map_err(|_| {
                            format!("environment variable WEB_CONCURRENCY={v:?} is not a whole number or \"auto\"")
                        })?,
                        None => 0,
                    },
                };
                Ok(if n == WORKERS_AUTO { s.env.processors.max(1) } else { n })
            }, same;
        }
    }
    preload_app {
        doc: "load the app once in the master, before forking workers",
        default: "on when workers > 1 (Puma 7+)",
        example: "preload_app!",
        methods: ["preload_app!" => set!(preload_app, flag)],
        flags: [Flag::switch("preload", "preload_app!")
            .help("", "Load the app before forking workers (cluster mode)")],
        fields: {
            preload_app: bool => Option<bool> = or_none(), same;
        }
    }
    fork_worker {
        doc: "fork every worker but 0 from worker 0, and refork after N requests of worker 0 (0: only on `URG`)",
        default: "off; N 1000",
        example: "fork_worker 2000",
        methods: ["fork_worker" => set!(fork_worker, fork_worker)],
        flags: [Flag::optional("fork-worker", "fork_worker")
            .short('f')
            .help("REQUESTS", "Fork workers from worker 0 (cluster mode)")],
        fields: {
            fork_worker: u64 => Option<u64> = or_none(), same;
        }
    }
    prune_bundler {
        doc: "started under Bundler, the master re-runs itself outside it so only workers load the bundle (cluster mode without preload)",
        default: "off",
        example: "prune_bundler",
        methods: ["prune_bundler" => set!(prune_bundler, flag)],
        flags: [Flag::switch("prune-bundler", "prune_bundler")
            .help("", "Re-exec without Bundler (cluster mode)")],
        fields: {
            prune_bundler: bool => bool = or(false), same;
        }
    }
    extra_runtime_dependencies {
        doc: "gems whose load paths the pruned master keeps",
        default: "none",
        example: "extra_runtime_dependencies [\"puma_worker_killer\"]",
        methods: ["extra_runtime_dependencies" => set!(extra_runtime_dependencies, gem_names)],
        flags: [Flag::value("extra-runtime-dependencies", "extra_runtime_dependencies")
            .help("GEM,GEM", "Gems kept after pruning (cluster mode)")],
        fields: {
            extra_runtime_dependencies: Vec<String> => Vec<String> = or(Vec::new()), same;
        }
    }
    wait_for_less_busy_worker {
        doc: "a busy worker waits up to this long before accepting, so an idle one takes the connection (2+ workers; 0: off)",
        default: "0.005 s",
        example: "wait_for_less_busy_worker 0.01",
        methods: ["wait_for_less_busy_worker" => set!(wait_for_less_busy_worker, less_busy_delay)],
        flags: [],
        fields: {
            wait_for_less_busy_worker: Duration => Duration = or(DEFAULT_LESS_BUSY_DELAY), same;
        }
    }
    worker_culling_strategy {
        doc: "which worker `TTOU` stops: `:youngest` or `:oldest`",
        default: "`:youngest`",
        example: "worker_culling_strategy :oldest",
        methods: ["worker_culling_strategy" => set!(worker_culling_strategy, culling)],
        flags: [],
        fields: {
            worker_culling_strategy: Culling => Culling = or(Culling::Youngest), same;
        }
    }
    worker_check_interval {
        doc: "how often workers check in with the master",
        default: "5 s",
        example: "worker_check_interval 10",
        methods: ["worker_check_interval" => set!(worker_check_interval, positive_seconds)],
        flags: [],
        fields: {
            worker_check_interval: Duration => Duration = or(Duration::from_secs(5)), same;
        }
    }
    worker_timeout {
        doc: "a worker silent this long is killed and replaced (longer than `worker_check_interval`)",
        default: "60 s",
        example: "worker_timeout 3600",
        methods: ["worker_timeout" => set!(worker_timeout, positive_seconds)],
        flags: [],
        fields: {
            worker_timeout: Duration => Duration = |v, s| {
                let timeout = v.unwrap_or(Duration::from_secs(60));
                if s.cross_checks && timeout <= worker_check_interval {
                    return Err(format!(
                        "worker_timeout ({} s) must be longer than worker_check_interval ({} s)",
                        timeout.as_secs_f64(),
                        worker_check_interval.as_secs_f64()
                    ));
                }
                Ok(timeout)
            }, same;
        }
    }
    worker_boot_timeout {
        doc: "time a worker has to boot",
        default: "`worker_timeout`",
        example: "worker_boot_timeout 120",
        methods: ["worker_boot_timeout" => set!(worker_boot_timeout, positive_seconds)],
        flags: [],
        fields: {
            worker_boot_timeout: Duration => Duration = |v, _| Ok(v.unwrap_or(worker_timeout)), same;
        }
    }
    worker_shutdown_timeout {
        doc: "after TERM, a worker still alive this long later is killed",
        default: "30 s",
        example: "worker_shutdown_timeout 60",
        methods: ["worker_shutdown_timeout" => set!(worker_shutdown_timeout, seconds)],
        flags: [],
        fields: {
            worker_shutdown_timeout: Duration => Duration = or(Duration::from_secs(30)), same;
        }
    }
    nakayoshi_fork {
        doc: "run GC (and compact where possible) in the master before forking",
        default: "off",
        example: "nakayoshi_fork",
        methods: ["nakayoshi_fork" => set!(nakayoshi_fork, flag)],
        flags: [],
        fields: {
            nakayoshi_fork: bool => bool = or(false), same;
        }
    }
    silence_single_worker_warning {
        doc: "no warning for cluster mode with one worker",
        default: "off",
        example: "silence_single_worker_warning",
        methods: ["silence_single_worker_warning" => set!(silence_single_worker_warning, flag)],
        flags: [],
        fields: {
            silence_single_worker_warning: bool => bool = or(false), same;
        }
    }
    silence_fork_callback_warning {
        doc: "no warning for cluster hooks configured in single mode",
        default: "off",
        example: "silence_fork_callback_warning",
        methods: ["silence_fork_callback_warning" => set!(silence_fork_callback_warning, flag)],
        flags: [],
        fields: {
            silence_fork_callback_warning: bool => bool = or(false), same;
        }
    }
}

/// What the defaults may depend on: environment variables, whether IPv6 is usable, and how many
/// processors there are (`WEB_CONCURRENCY=auto`).
pub struct Environment<'a> {
    pub var: &'a dyn Fn(&str) -> Option<String>,
    pub ipv6_usable: bool,
    pub processors: u32,
}

fn no_var(_: &str) -> Option<String> {
    None
}

impl Environment<'static> {
    /// No variables set, no IPv6, one processor: the environment of [`Options::default`].
    pub fn none() -> Environment<'static> {
        Environment {
            var: &no_var,
            ipv6_usable: false,
            processors: 1,
        }
    }
}

impl Default for Options {
    /// Every default, with no environment variable set: the one set of defaults the server
    /// core's `ServerConfig::default` is derived from.
    fn default() -> Options {
        match resolve(&Layer::default(), &Layer::default(), &Environment::none()) {
            Ok(options) => options,
            Err(e) => unreachable!("the defaults resolve without any input: {e}"),
        }
    }
}

impl Options {
    /// Every exported option under Puma's key, as plain values (for Ruby's
    /// `Catamount.config.options`, plugins and `PUMA_LOG_CONFIG`), in table order.
    pub fn export(&self) -> Vec<(&'static str, Value)> {
        DEFINITIONS
            .iter()
            .flat_map(|d| d.fields)
            .flat_map(|field| self.export_field(field))
            .collect()
    }
}

/// What a config file's `get` reads: the fields `file` sets (so far), resolved over the
/// defaults and exported under Puma's keys, so `port 3000` after `set_default_host "::1"` reads
/// as the bind it makes and `quiet` as `log_requests`. Fields the file leaves alone are absent,
/// as in Puma, whose `get` reads only the file's own options. The checks between options wait
/// for the whole file: a later line may still set the other option.
pub fn given_values(
    file: &Layer,
    env: &Environment<'_>,
) -> Result<Vec<(&'static str, Value)>, String> {
    let options = resolve_checking(&Layer::default(), file, env, false)?;
    Ok(file
        .given_fields()
        .into_iter()
        .flat_map(|field| options.export_field(field))
        .collect())
}

/// The DSL methods that take plain values, for `Catamount::DSL`.
pub fn dsl_methods() -> impl Iterator<Item = &'static Method> {
    DEFINITIONS.iter().flat_map(|d| d.methods).filter(|m| m.dsl)
}

fn default_binds(given: Option<Vec<BindUrl>>, s: &Sources<'_, '_>) -> Result<Vec<BindUrl>, String> {
    match given {
        Some(binds) => Ok(binds),
        None => {
            let host = if s.env.ipv6_usable { "::" } else { "0.0.0.0" };
            Ok(vec![BindUrl::tcp(host, 9292).map_err(|e| e.to_string())?])
        }
    }
}

/// Both layers' plugins load (the user's first), each once.
fn all_plugins(_: Option<Vec<String>>, s: &Sources<'_, '_>) -> Result<Vec<String>, String> {
    let mut plugins: Vec<String> = Vec::new();
    for p in s.user.plugins.iter().chain(s.file.plugins.iter()).flatten() {
        if !plugins.contains(p) {
            plugins.push(p.clone());
        }
    }
    Ok(plugins)
}

/// The control server's settings, each from the layer that gave it: `--control-url` replaces
/// only the file's URL and `--control-token` only its token (as in Puma, where each is its own
/// option), so the file's `data_only` and token survive a URL given on the command line. A
/// token without a URL turns nothing on.
fn merged_control(
    _: Option<ControlApp>,
    s: &Sources<'_, '_>,
) -> Result<Option<ControlApp>, String> {
    let (user, file) = (s.user.control.as_ref(), s.file.control.as_ref());
    let url = [user, file]
        .into_iter()
        .flatten()
        .map(|c| c.url.clone())
        .find(|u| !u.is_empty());
    let Some(url) = url else { return Ok(None) };
    let token_from = [user, file]
        .into_iter()
        .flatten()
        .find(|c| c.no_token || c.auth_token.is_some());
    Ok(Some(ControlApp {
        url,
        auth_token: token_from.and_then(|c| c.auth_token.clone()),
        no_token: token_from.is_some_and(|c| c.no_token),
        data_only: [user, file].into_iter().flatten().any(|c| c.data_only),
    }))
}

impl Options {
    /// The first thing this configuration asks for that Catamount cannot do yet, as
    /// "<what> (<option>)"; the launcher refuses to boot with it rather than ignore it.
    pub fn not_supported_yet(&self) -> Option<String> {
        if self.fiber_scheduler && self.max_io_threads > 0 {
            return Some("max_io_threads together with fiber_scheduler".into());
        }
        None
    }
}

#[cfg(test)]
mod tests;
