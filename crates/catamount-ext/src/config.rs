//! Ruby-facing configuration objects: the parsed command line and the resolved options.
//!
//! The Ruby launcher asks for `Native.parse_cli(ARGV)`, evaluates config files with the DSL
//! (which only records `[name, args, "file:line"]`), and calls `cli.resolve(settings)`; all
//! validation happens in `catamount-config`, so a flag and a DSL line get the same checks.
//! `Options#to_h` (Ruby's options Hash), `Native.given_values` (the DSL's `get`) and
//! `Native.dsl_options` are made from the option definitions: nothing here names an option.

use std::cell::RefCell;

use catamount_config::cli::{self, Command};
use catamount_config::{Environment, Layer, Options, Value as ConfValue};
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

pub fn usage() -> String {
    cli::usage()
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
        let file = file_layer(ruby, settings)?;
        let options = catamount_config::resolve(&rb_self.0.borrow().user, &file, &process_env())
            .map_err(|e| Error::new(errors::config_error(ruby), e))?;
        Ok(RbOptions(options))
    }
}

/// `Native.given_values(settings)`: what the config-file settings so far set, as a Hash under
/// Puma's keys (the DSL's `get`); the command line plays no part, as in Puma.
pub fn given_values(ruby: &Ruby, settings: RArray) -> Result<RHash, Error> {
    let file = file_layer(ruby, settings)?;
    let values = catamount_config::options::given_values(&file, &process_env())
        .map_err(|e| Error::new(errors::config_error(ruby), e))?;
    to_hash(ruby, values)
}

/// The config files' layer from the recorded `[name, args, location]` settings.
fn file_layer(ruby: &Ruby, settings: RArray) -> Result<Layer, Error> {
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
        file.set_at(&name, &values, &location).map_err(fail)?;
    }
    Ok(file)
}

fn process_var(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// The defaults' inputs from this process: its environment, IPv6, processor count.
fn process_env() -> Environment<'static> {
    let ipv6_usable = std::fs::read_to_string("/proc/net/if_inet6")
        .map(|t| catamount_config::bind::has_non_loopback_ipv6(&t))
        .unwrap_or(false);
    let processors = std::thread::available_parallelism()
        .map(|n| u32::try_from(n.get()).unwrap_or(1))
        .unwrap_or(1);
    Environment {
        var: &process_var,
        ipv6_usable,
        processors,
    }
}

fn to_hash(ruby: &Ruby, pairs: Vec<(&'static str, ConfValue)>) -> Result<RHash, Error> {
    let h = ruby.hash_new();
    for (key, value) in pairs {
        h.aset(ruby.to_symbol(key), to_ruby(ruby, &value)?)?;
    }
    Ok(h)
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
    /// What this configuration asks for that cannot be served yet, or nil.
    pub fn not_supported_yet(&self) -> Option<String> {
        self.0.not_supported_yet()
    }

    /// Every option, under Puma's option names (for `get`, `PUMA_LOG_CONFIG`, plugins and
    /// the hooks' configuration object); which and how is said by the option definitions.
    pub fn to_h(ruby: &Ruby, rb_self: &Self) -> Result<RHash, Error> {
        to_hash(ruby, rb_self.0.export())
    }
}

/// A plain value as Ruby sees it (the reverse of `to_conf_value`).
fn to_ruby(ruby: &Ruby, v: &ConfValue) -> Result<Value, Error> {
    Ok(match v {
        ConfValue::Nil => ruby.qnil().as_value(),
        ConfValue::Bool(b) => b.into_value_with(ruby),
        ConfValue::Int(i) => i.into_value_with(ruby),
        ConfValue::Float(f) => f.into_value_with(ruby),
        ConfValue::Str(s) => s.as_str().into_value_with(ruby),
        ConfValue::Sym(s) => ruby.to_symbol(s).as_value(),
        ConfValue::Array(items) => {
            let array = ruby.ary_new_capa(items.len());
            for item in items {
                array.push(to_ruby(ruby, item)?)?;
            }
            array.as_value()
        }
        ConfValue::Hash(pairs) => {
            let hash = ruby.hash_new();
            for (key, value) in pairs {
                hash.aset(ruby.to_symbol(key), to_ruby(ruby, value)?)?;
            }
            hash.as_value()
        }
    })
}

/// `Native.dsl_options`: the names of the DSL methods with plain values, from the option
/// definitions.
pub fn dsl_options() -> Vec<&'static str> {
    catamount_config::options::dsl_methods()
        .map(|m| m.name)
        .collect()
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
