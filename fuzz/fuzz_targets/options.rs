//! Fuzz target for the option values: every DSL/flag setter (`Layer::set`, which parses the
//! durations, sizes, counts, ports, bind URLs and hashes a config file passes), the command
//! line (`cli::parse`), and the layering with environment variables (`resolve`).
//!
//! The input is text, one call a line, so the corpus stays readable:
//! - `METHOD ARG...`: a config file's call; METHOD may be a number, taken as an index into
//!   the option methods (so mutations reach every setter). An ARG is `nil`, `true`, `false`,
//!   an Integer, a Float, `:sym`, `"string` (a String even if it looks like a number),
//!   `[a,b]` (an Array) or `{k:v,k2:v2}` (a Hash); anything else is a String.
//! - `$ ARG...`: the command line's words.
//! - `% NAME=VALUE`: an environment variable (`WEB_CONCURRENCY`, `PORT`, ...).
//!
//! Beyond "no panic": a refusal says something; what resolves exports and is resolved again
//! to the same; `given_values` agrees with `resolve` on whether the file is valid.
#![no_main]

use catamount_config::cli::{self, Command};
use catamount_config::options::{given_values, Method, DEFINITIONS};
use catamount_config::{resolve, Environment, Layer, Value};
use libfuzzer_sys::fuzz_target;

/// Lines looked at per input; more only slows the fuzzer down.
const MAX_LINES: usize = 64;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let methods: Vec<&Method> = DEFINITIONS.iter().flat_map(|d| d.methods).collect();
    let mut file = Layer::default();
    let mut user = Layer::default();
    let mut vars: Vec<(String, String)> = Vec::new();
    for line in text.lines().take(MAX_LINES) {
        if let Some(words) = line.strip_prefix("$ ") {
            let args: Vec<String> = words.split(' ').map(str::to_string).collect();
            match cli::parse(&args) {
                Ok(Command::Run(c)) => user = c.user,
                Ok(Command::Help | Command::Version) => {}
                Err(e) => assert!(!e.to_string().is_empty()),
            }
        } else if let Some(assignment) = line.strip_prefix("% ") {
            if let Some((name, value)) = assignment.split_once('=') {
                vars.push((name.to_string(), value.to_string()));
            }
        } else {
            let mut words = line.split(' ');
            let name = words.next().unwrap_or_default();
            let name = match name.parse::<usize>() {
                Ok(i) if !methods.is_empty() => {
                    methods.get(i % methods.len()).map_or(name, |m| m.name)
                }
                _ => name,
            };
            let args: Vec<Value> = words.map(value).collect();
            if let Err(e) = file.set(name, &args) {
                assert!(!e.is_empty(), "{name} {args:?}: an empty refusal");
            }
        }
    }
    let var = |name: &str| {
        vars.iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    };
    let env = Environment {
        var: &var,
        ipv6_usable: false,
        processors: 2,
    };
    let resolved = resolve(&user, &file, &env);
    match &resolved {
        Ok(options) => {
            let _ = options.export();
            let _ = options.not_supported_yet();
            assert_eq!(
                format!("{:?}", resolve(&user, &file, &env)),
                format!("{resolved:?}"),
                "resolving twice differs"
            );
            // `get` reads the file's values with no command line (as Puma's does), so a command
            // line overriding a bad environment value (`-t 5 -w 2` over MIN_THREADS=sad) may
            // resolve while `get` refuses: the property holds for the file and environment alone.
            if resolve(&Layer::default(), &file, &env).is_ok() {
                assert!(
                    given_values(&file, &env).is_ok(),
                    "resolves, yet `get` refuses"
                );
            }
        }
        Err(e) => assert!(!e.is_empty()),
    }
});

/// One argument word as the value the DSL would hand over.
fn value(word: &str) -> Value {
    match word {
        "nil" => return Value::Nil,
        "true" => return Value::Bool(true),
        "false" => return Value::Bool(false),
        _ => {}
    }
    if let Some(s) = word.strip_prefix('"') {
        return Value::Str(s.to_string());
    }
    if let Some(s) = word.strip_prefix(':') {
        return Value::Sym(s.to_string());
    }
    if let Some(items) = word.strip_prefix('[').and_then(|w| w.strip_suffix(']')) {
        return Value::Array(
            items
                .split(',')
                .filter(|i| !i.is_empty())
                .map(value)
                .collect(),
        );
    }
    if let Some(pairs) = word.strip_prefix('{').and_then(|w| w.strip_suffix('}')) {
        return Value::Hash(
            pairs
                .split(',')
                .filter_map(|p| p.split_once(':'))
                .map(|(k, v)| (k.to_string(), value(v)))
                .collect(),
        );
    }
    if let Ok(n) = word.parse::<i64>() {
        return Value::Int(n);
    }
    if let Ok(f) = word.parse::<f64>() {
        return Value::Float(f);
    }
    Value::Str(word.to_string())
}
