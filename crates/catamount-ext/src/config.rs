//! Ruby-facing configuration objects: the parsed command line and the resolved options.
//!
//! The Ruby launcher asks for `Native.parse_cli(ARGV)`, evaluates config files with the DSL
//! (which only records `[name, args, "file:line"]`), and calls `cli.resolve(settings)`; all
//! validation happens in `catamount-config`, so a flag and a DSL line get the same checks.

use std::cell::RefCell;

use catamount_config::cli::{self, Command};
use catamount_config::options::{HttpMethods, RemoteAddress, ShutdownDebug};
use catamount_config::{Environment, ForceShutdown, Layer, Options, Value as ConfValue};
use magnus::value::ReprValue;
use magnus::{
    prelude::*, Error, Float, Integer, IntoValue, RArray, RHash, RString, Ruby, Symbol, TryConvert,
    Value,
};

use crate::errors;

/// A parsed command line (`Catamount::Native::Cli`).
#[magnus::wrap(class = "Catamount::Native::Cli", free_immediately, size)]
pub struct RbCli(pub RefCell<cli::Cli>);

/// Resolved options (`Catamount::Native::Options`).
#[magnus::wrap(class = "Catamount::Native::Options", free_immediately, size)]
pub struct RbOptions(pub Options);

/// `Native.parse_cli(argv)`: `:help`, `:version`, or a `Cli`; raises `Catamount::UsageError`.
pub fn parse_cli(ruby: &Ruby, argv: Vec<String>) -> Result<Value, Error> {
    match cli::parse(&argv) {
        Ok(Command::Help) => Ok(ruby.to_symbol("help").as_value()),
        Ok(Command::Version) => Ok(ruby.to_symbol("version").as_value()),
        Ok(Command::Run(parsed)) => Ok(ruby.obj_wrap(RbCli(RefCell::new(*parsed))).as_value()),
        Err(e) => Err(Error::new(errors::usage_error(ruby), e.0)),
    }
}

pub fn usage() -> &'static str {
    cli::USAGE
}

impl RbCli {
    pub fn includes(&self) -> Vec<String> {
        self.0.borrow().includes.clone()
    }

    pub fn config_files(&self) -> Vec<String> {
        self.0.borrow().config_files.clone()
    }

    pub fn no_config(&self) -> bool {
        self.0.borrow().no_config
    }

    /// The environment named on the command line, if any (config-file lookup needs it).
    pub fn environment(&self) -> Option<String> {
        self.0.borrow().user.environment.clone()
    }

    /// Applies the recorded config-file settings and resolves every option.
    /// `settings` is an Array of `[name, args, location]`; errors name the location.
    pub fn resolve(ruby: &Ruby, rb_self: &Self, settings: RArray) -> Result<RbOptions, Error> {
        let mut file = Layer::default();
        for entry in settings.into_iter() {
            let entry = RArray::try_convert(entry)?;
            let name: String = entry.entry(0)?;
            let args: RArray = entry.entry(1)?;
            let location: String = entry.entry(2)?;
            let fail =
                |msg: String| Error::new(errors::config_error(ruby), format!("{location}: {msg}"));
            let mut values = Vec::with_capacity(args.len());
            for arg in args.into_iter() {
                values.push(to_conf_value(arg).map_err(|m| fail(format!("{name}: {m}")))?);
            }
            file.set(&name, &values).map_err(fail)?;
        }
        let ipv6_usable = std::fs::read_to_string("/proc/net/if_inet6")
            .map(|t| catamount_config::bind::has_non_loopback_ipv6(&t))
            .unwrap_or(false);
        let var = |name: &str| std::env::var(name).ok();
        let processors = std::thread::available_parallelism()
            .map(|n| u32::try_from(n.get()).unwrap_or(1))
            .unwrap_or(1);
        let env = Environment {
            var: &var,
            ipv6_usable,
            processors,
        };
        let options = catamount_config::resolve(&rb_self.0.borrow().user, &file, &env)
            .map_err(|e| Error::new(errors::config_error(ruby), e))?;
        Ok(RbOptions(options))
    }
}

fn to_conf_value(v: Value) -> Result<ConfValue, String> {
    if v.is_nil() {
        return Ok(ConfValue::Nil);
    }
    if v.is_kind_of(ruby_class(v, "TrueClass")) || v.is_kind_of(ruby_class(v, "FalseClass")) {
        return Ok(ConfValue::Bool(v.to_bool()));
    }
    if let Some(i) = Integer::from_value(v) {
        return i
            .to_i64()
            .map(ConfValue::Int)
            .map_err(|_| "integer out of range".into());
    }
    if let Some(f) = Float::from_value(v) {
        return Ok(ConfValue::Float(f.to_f64()));
    }
    if let Some(s) = RString::from_value(v) {
        return Ok(ConfValue::Str(
            String::from_utf8_lossy(&crate::ffi::bytes_of(s)).into_owned(),
        ));
    }
    if let Some(s) = Symbol::from_value(v) {
        return Ok(ConfValue::Sym(
            s.name().map(|n| n.to_string()).unwrap_or_default(),
        ));
    }
    if let Some(a) = RArray::from_value(v) {
        return a
            .into_iter()
            .map(to_conf_value)
            .collect::<Result<Vec<_>, _>>()
            .map(ConfValue::Array);
    }
    if let Some(h) = RHash::from_value(v) {
        let arg_error = Ruby::get_with(v).exception_arg_error();
        let mut pairs = Vec::new();
        h.foreach(|key: Value, value: Value| {
            let key = match to_conf_value(key) {
                Ok(ConfValue::Sym(k)) | Ok(ConfValue::Str(k)) => k,
                _ => return Err(Error::new(arg_error, key.inspect())),
            };
            let value = to_conf_value(value).map_err(|m| Error::new(arg_error, m))?;
            pairs.push((key, value));
            Ok(magnus::r_hash::ForEach::Continue)
        })
        .map_err(|e| format!("unsupported hash key {e}"))?;
        return Ok(ConfValue::Hash(pairs));
    }
    Err(format!(
        "unsupported value {} (a {})",
        v.inspect(),
        class_name(v)
    ))
}

impl RbOptions {
    pub fn environment(&self) -> String {
        self.0.environment.clone()
    }
    pub fn rackup(&self) -> String {
        self.0.rackup.clone()
    }
    pub fn directory(&self) -> Option<String> {
        self.0.directory.clone()
    }
    pub fn pidfile(&self) -> Option<String> {
        self.0.pidfile.clone()
    }
    pub fn tag(&self) -> Option<String> {
        self.0.tag.clone()
    }
    pub fn min_threads(&self) -> u32 {
        self.0.min_threads
    }
    pub fn max_threads(&self) -> u32 {
        self.0.max_threads
    }
    pub fn silent(&self) -> bool {
        self.0.silent
    }
    pub fn log_requests(&self) -> bool {
        self.0.log_requests
    }
    pub fn binds(&self) -> Vec<String> {
        self.0.binds.iter().map(|b| b.original.clone()).collect()
    }
    /// What this configuration asks for that cannot be served yet, or nil.
    pub fn not_supported_yet(&self) -> Option<String> {
        self.0.not_supported_yet()
    }

    /// Every option, under Puma's option names (for `get`, `PUMA_LOG_CONFIG`, plugins and
    /// the hooks' configuration object).
    pub fn to_h(ruby: &Ruby, rb_self: &Self) -> Result<RHash, Error> {
        let o = &rb_self.0;
        let h = ruby.hash_new();
        let put = |k: &str, v: Value| h.aset(ruby.to_symbol(k), v);
        let secs = |d: std::time::Duration| d.as_secs_f64().into_value_with(ruby);
        let opt_str = |s: &Option<String>| s.clone().into_value_with(ruby);
        let sym = |s: &str| ruby.to_symbol(s).as_value();
        put(
            "binds",
            o.binds
                .iter()
                .map(|b| b.original.clone())
                .collect::<Vec<_>>()
                .into_value_with(ruby),
        )?;
        put("min_threads", o.min_threads.into_value_with(ruby))?;
        put("max_threads", o.max_threads.into_value_with(ruby))?;
        put("environment", o.environment.clone().into_value_with(ruby))?;
        put("rackup", o.rackup.clone().into_value_with(ruby))?;
        put("tag", opt_str(&o.tag))?;
        put("log_requests", o.log_requests.into_value_with(ruby))?;
        put("pidfile", opt_str(&o.pidfile))?;
        put("persistent_timeout", secs(o.persistent_timeout))?;
        put("first_data_timeout", secs(o.first_data_timeout))?;
        put(
            "force_shutdown_after",
            match o.force_shutdown_after {
                ForceShutdown::Never => sym("forever"),
                ForceShutdown::After(d) => secs(d),
            },
        )?;
        put(
            "enable_keep_alives",
            o.enable_keep_alives.into_value_with(ruby),
        )?;
        put(
            "max_keep_alive",
            if o.max_keep_alive == u64::MAX {
                f64::INFINITY.into_value_with(ruby)
            } else {
                o.max_keep_alive.into_value_with(ruby)
            },
        )?;
        put("silent", o.silent.into_value_with(ruby))?;
        put("directory", opt_str(&o.directory))?;
        put(
            "idle_timeout",
            o.idle_timeout
                .map(|d| d.as_secs_f64())
                .into_value_with(ruby),
        )?;
        put("queue_requests", o.queue_requests.into_value_with(ruby))?;
        put(
            "drain_on_shutdown",
            o.drain_on_shutdown.into_value_with(ruby),
        )?;
        let (mode, value) = match &o.remote_address {
            RemoteAddress::Socket => ("socket", None),
            RemoteAddress::Fixed(v) => ("value", Some(v.clone())),
            RemoteAddress::Header(v) => ("header", Some(v.clone())),
            RemoteAddress::ProxyV1 => ("proxy_protocol", Some("v1".to_string())),
        };
        put("remote_address", sym(mode))?;
        put("remote_address_value", value.into_value_with(ruby))?;
        put("rack_url_scheme", opt_str(&o.rack_url_scheme))?;
        put(
            "supported_http_methods",
            match &o.http_methods {
                HttpMethods::Any => sym("any"),
                HttpMethods::Standard => catamount_http_standard().into_value_with(ruby),
                HttpMethods::Only(list) => list.clone().into_value_with(ruby),
            },
        )?;
        put(
            "http_content_length_limit",
            o.http_content_length_limit.into_value_with(ruby),
        )?;
        put(
            "allow_underscore_headers",
            o.allow_underscore_headers.into_value_with(ruby),
        )?;
        put("io_selector_backend", sym(&o.io_selector_backend))?;
        put("early_hints", o.early_hints.into_value_with(ruby))?;
        put("max_io_threads", o.max_io_threads.into_value_with(ruby))?;
        put(
            "fiber_per_request",
            o.fiber_per_request.into_value_with(ruby),
        )?;
        put(
            "raise_exception_on_sigterm",
            o.raise_exception_on_sigterm.into_value_with(ruby),
        )?;
        put("redirect_stdout", opt_str(&o.redirect_stdout))?;
        put("redirect_stderr", opt_str(&o.redirect_stderr))?;
        put("redirect_append", o.redirect_append.into_value_with(ruby))?;
        put(
            "mutate_stdout_and_stderr_to_sync_on_write",
            o.sync_stdio.into_value_with(ruby),
        )?;
        put("debug", o.debug.into_value_with(ruby))?;
        put(
            "shutdown_debug",
            match o.shutdown_debug {
                ShutdownDebug::Off => false.into_value_with(ruby),
                ShutdownDebug::Always => true.into_value_with(ruby),
                ShutdownDebug::OnForce => sym("on_force"),
            },
        )?;
        put("restart_cmd", opt_str(&o.restart_command))?;
        put("state", opt_str(&o.state_path))?;
        put("state_permission", o.state_permission.into_value_with(ruby))?;
        put(
            "control_url",
            o.control
                .as_ref()
                .map(|c| c.url.clone())
                .into_value_with(ruby),
        )?;
        put(
            "control_auth_token",
            o.control
                .as_ref()
                .and_then(|c| c.auth_token.clone())
                .into_value_with(ruby),
        )?;
        put("plugins", o.plugins.clone().into_value_with(ruby))?;
        put("workers", o.workers.into_value_with(ruby))?;
        put("preload_app", o.preload_app.into_value_with(ruby))?;
        put("fork_worker", o.fork_worker.into_value_with(ruby))?;
        put("prune_bundler", o.prune_bundler.into_value_with(ruby))?;
        put(
            "extra_runtime_dependencies",
            o.extra_runtime_dependencies.clone().into_value_with(ruby),
        )?;
        put(
            "wait_for_less_busy_worker",
            secs(o.wait_for_less_busy_worker),
        )?;
        put(
            "worker_culling_strategy",
            sym(match o.worker_culling_strategy {
                catamount_config::options::Culling::Youngest => "youngest",
                catamount_config::options::Culling::Oldest => "oldest",
            }),
        )?;
        put("worker_check_interval", secs(o.worker_check_interval))?;
        put("worker_timeout", secs(o.worker_timeout))?;
        put("worker_boot_timeout", secs(o.worker_boot_timeout))?;
        put("worker_shutdown_timeout", secs(o.worker_shutdown_timeout))?;
        put("nakayoshi_fork", o.nakayoshi_fork.into_value_with(ruby))?;
        put(
            "silence_single_worker_warning",
            o.silence_single_worker_warning.into_value_with(ruby),
        )?;
        put(
            "silence_fork_callback_warning",
            o.silence_fork_callback_warning.into_value_with(ruby),
        )?;
        Ok(h)
    }

    /// Seconds, or nil for "wait as long as it takes".
    pub fn force_shutdown_after(&self) -> Option<f64> {
        match self.0.force_shutdown_after {
            ForceShutdown::Never => None,
            ForceShutdown::After(d) => Some(d.as_secs_f64()),
        }
    }
}

fn catamount_http_standard() -> Vec<String> {
    match catamount_http::MethodPolicy::standard() {
        catamount_http::MethodPolicy::Only(list) => list,
        catamount_http::MethodPolicy::Any => Vec::new(),
    }
}

fn class_name(v: Value) -> String {
    v.class().inspect()
}

fn ruby_class(v: Value, name: &str) -> magnus::RClass {
    let ruby = Ruby::get_with(v);
    ruby.class_object()
        .const_get(name)
        .unwrap_or_else(|_| ruby.class_object())
}
