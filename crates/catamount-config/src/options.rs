//! The option model: what can be configured, its default, and how layers combine.
//!
//! Precedence is Puma's: a value from the command line (the *user* layer) wins over the config
//! file (the *file* layer), which wins over the built-in default (some defaults read environment
//! variables, as Puma's do). Within one layer a later setting replaces an earlier one, except
//! binds, which accumulate, and the rackup file, where the first value wins.
//!
//! Every option is set by name through [`Layer::set`], from the CLI parser and from the Ruby
//! config DSL alike, so validation and error messages live in one place.

use std::time::Duration;

use crate::bind::{BindError, BindUrl};

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
}

impl Value {
    fn describe(&self) -> String {
        match self {
            Value::Nil => "nil".into(),
            Value::Bool(b) => b.to_string(),
            Value::Int(i) => i.to_string(),
            Value::Float(f) => f.to_string(),
            Value::Str(s) => format!("{s:?}"),
            Value::Sym(s) => format!(":{s}"),
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

/// One layer of settings; `None` means "this layer does not say".
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Layer {
    /// Listeners. Accumulates within a layer (`bind` twice = two listeners).
    pub binds: Option<Vec<BindUrl>>,
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
    pub silent: Option<bool>,
    pub directory: Option<String>,
}

/// The options the server runs with, after layering and defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct Options {
    /// Listeners; default `tcp://0.0.0.0:9292` (`tcp://[::]:9292` where IPv6 is usable).
    pub binds: Vec<BindUrl>,
    /// Ruby threads kept alive even when idle. Default 0 (env `PUMA_MIN_THREADS`/`MIN_THREADS`).
    pub min_threads: u32,
    /// Most Ruby threads running the app at once. Default 5 (env `PUMA_MAX_THREADS`/`MAX_THREADS`).
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
    /// Allow HTTP keep-alive. Default true.
    pub enable_keep_alives: bool,
    /// Requests served on one connection before it is closed. Default 999 (Puma 7+).
    pub max_keep_alive: u64,
    /// Discard informational log output. Default false.
    pub silent: bool,
    /// Directory to change to before loading the app. Default: stay.
    pub directory: Option<String>,
}

pub const DEFAULT_PORT: u16 = 9292;
pub const DEFAULT_MAX_THREADS: u32 = 5;
pub const DEFAULT_PERSISTENT_TIMEOUT: Duration = Duration::from_secs(65);
pub const DEFAULT_FIRST_DATA_TIMEOUT: Duration = Duration::from_secs(30);
pub const DEFAULT_MAX_KEEP_ALIVE: u64 = 999;

/// What the defaults may depend on: environment variables and whether IPv6 is usable.
pub struct Environment<'a> {
    pub var: &'a dyn Fn(&str) -> Option<String>,
    pub ipv6_usable: bool,
}

impl Layer {
    /// Applies one setting by its DSL name. `args` are the method's arguments.
    pub fn set(&mut self, name: &str, args: &[Value]) -> Result<(), String> {
        let first = args.first().unwrap_or(&Value::Nil);
        let flag = || -> Result<bool, String> {
            match args {
                [] => Ok(true),
                [v] => truthy(v),
                _ => Err(arity(name, args.len(), "0..1")),
            }
        };
        match name {
            "bind" => {
                let url = exactly_one_str(name, args)?;
                self.push_bind(BindUrl::parse(&url).map_err(|e: BindError| e.to_string())?);
            }
            "port" => {
                let (port, host) = match args {
                    [p] => (p, None),
                    [p, h] => (p, Some(h)),
                    _ => return Err(arity(name, args.len(), "1..2")),
                };
                let port = match port {
                    Value::Int(p) => u16::try_from(*p).ok(),
                    Value::Str(s) => s.trim().parse::<u16>().ok(),
                    _ => None,
                }
                .ok_or_else(|| {
                    format!("port: {} is not a port number (0-65535)", port.describe())
                })?;
                let host = match host {
                    None | Some(Value::Nil) => "0.0.0.0".to_string(),
                    Some(Value::Str(h)) => h.clone(),
                    Some(other) => {
                        return Err(format!(
                            "port: host must be a String, got {}",
                            other.describe()
                        ))
                    }
                };
                self.push_bind(BindUrl::tcp(&host, port).map_err(|e| e.to_string())?);
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
            "log_requests" => self.log_requests = Some(flag()?),
            "quiet" => self.log_requests = Some(!flag()?),
            "silent" => self.silent = Some(flag()?),
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
            "enable_keep_alives" => self.enable_keep_alives = Some(flag()?),
            "max_keep_alive" => {
                self.max_keep_alive = Some(match first {
                    Value::Int(n) if *n >= 1 && args.len() == 1 => *n as u64,
                    Value::Float(f) if f.is_infinite() && *f > 0.0 && args.len() == 1 => u64::MAX,
                    _ => {
                        return Err(format!(
                        "max_keep_alive: expected a positive Integer or Float::INFINITY, got {}",
                        first.describe()
                    ))
                    }
                });
            }
            _ => return Err(format!("unknown option {name:?}")),
        }
        Ok(())
    }

    fn push_bind(&mut self, bind: BindUrl) {
        self.binds.get_or_insert_with(Vec::new).push(bind);
    }
}

/// Combines the layers: `user` over `file` over defaults.
pub fn resolve(user: &Layer, file: &Layer, env: &Environment<'_>) -> Result<Options, String> {
    macro_rules! pick {
        ($field:ident) => {
            user.$field.clone().or_else(|| file.$field.clone())
        };
    }
    let env_count = |names: &[&str]| -> Result<Option<u32>, String> {
        for name in names {
            if let Some(v) = (env.var)(name).filter(|v| !v.trim().is_empty()) {
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
        None => match (env.var)("PUMA_PERSISTENT_TIMEOUT").filter(|v| !v.trim().is_empty()) {
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
        enable_keep_alives: pick!(enable_keep_alives).unwrap_or(true),
        max_keep_alive: pick!(max_keep_alive).unwrap_or(DEFAULT_MAX_KEEP_ALIVE),
        silent: pick!(silent).unwrap_or(false),
        directory: pick!(directory),
    })
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

fn arity(name: &str, got: usize, want: &str) -> String {
    format!("{name}: wrong number of arguments (given {got}, expected {want})")
}

fn exactly_one_str(name: &str, args: &[Value]) -> Result<String, String> {
    match args {
        [Value::Str(s)] => Ok(s.clone()),
        [Value::Sym(s)] => Ok(s.clone()),
        [other] => Err(format!(
            "{name}: expected a String, got {}",
            other.describe()
        )),
        _ => Err(arity(name, args.len(), "1")),
    }
}

fn count(name: &str, v: &Value) -> Result<u32, String> {
    match v {
        Value::Int(n) => u32::try_from(*n).ok(),
        Value::Str(s) => s.trim().parse::<u32>().ok(),
        _ => None,
    }
    .ok_or_else(|| format!("{name}: {} is not a whole number of threads", v.describe()))
}

fn truthy(v: &Value) -> Result<bool, String> {
    Ok(!matches!(v, Value::Nil | Value::Bool(false)))
}

fn seconds(name: &str, args: &[Value]) -> Result<Duration, String> {
    let secs = match args {
        [Value::Int(n)] if *n >= 0 => Some(*n as f64),
        [Value::Float(f)] if f.is_finite() && *f >= 0.0 => Some(*f),
        [Value::Str(s)] => s
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|f| f.is_finite() && *f >= 0.0),
        [_] => None,
        _ => return Err(arity(name, args.len(), "1")),
    };
    secs.map(Duration::from_secs_f64).ok_or_else(|| {
        format!(
            "{name}: expected a number of seconds, got {}",
            args.first().map(Value::describe).unwrap_or_default()
        )
    })
}

fn parse_seconds(s: &str) -> Option<Duration> {
    s.trim()
        .parse::<f64>()
        .ok()
        .filter(|f| f.is_finite() && *f >= 0.0)
        .map(Duration::from_secs_f64)
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
}
