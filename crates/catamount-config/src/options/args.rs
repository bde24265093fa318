//! Reading DSL/flag arguments: each helper checks the shape of one argument list and returns
//! the typed value or a message that starts with the option's name.

use std::time::Duration;

use super::Value;

pub(super) fn arity(name: &str, got: usize, want: &str) -> String {
    format!("{name}: wrong number of arguments (given {got}, expected {want})")
}

/// `name` or `name(true/false)`: an on/off switch whose bare call means "on".
pub(super) fn flag(name: &str, args: &[Value]) -> Result<bool, String> {
    match args {
        [] => Ok(true),
        [v] => Ok(truthy(v)),
        _ => Err(arity(name, args.len(), "0..1")),
    }
}

/// Ruby truthiness: everything but nil and false.
pub(super) fn truthy(v: &Value) -> bool {
    !matches!(v, Value::Nil | Value::Bool(false))
}

pub(super) fn exactly_one_str(name: &str, args: &[Value]) -> Result<String, String> {
    match args {
        [v] => string(name, v),
        _ => Err(arity(name, args.len(), "1")),
    }
}

/// A String (or Symbol, which Ruby code often passes for names).
pub(super) fn string(name: &str, v: &Value) -> Result<String, String> {
    match v {
        Value::Str(s) | Value::Sym(s) => Ok(s.clone()),
        other => Err(format!(
            "{name}: expected a String, got {}",
            other.describe()
        )),
    }
}

/// A whole number, also from a String (`ENV.fetch("X", 5)` gives either).
pub(super) fn whole(name: &str, v: &Value, what: &str) -> Result<u64, String> {
    match v {
        Value::Int(n) => u64::try_from(*n).ok(),
        Value::Str(s) => s.trim().parse::<u64>().ok(),
        _ => None,
    }
    .ok_or_else(|| format!("{name}: {} is not a whole number{what}", v.describe()))
}

/// A TCP port (Integer or numeric String).
pub(super) fn port_number(name: &str, v: &Value) -> Result<u16, String> {
    whole(name, v, "")
        .ok()
        .and_then(|p| u16::try_from(p).ok())
        .ok_or_else(|| format!("{name}: {} is not a port number (0-65535)", v.describe()))
}

pub(super) fn count(name: &str, v: &Value) -> Result<u32, String> {
    let n = whole(name, v, " of threads")?;
    u32::try_from(n).map_err(|_| format!("{name}: {n} is too large"))
}

pub(super) fn seconds(name: &str, args: &[Value]) -> Result<Duration, String> {
    match args {
        [v] => seconds_value(name, v),
        _ => Err(arity(name, args.len(), "1")),
    }
}

/// The longest time an option can say (about 136 years): more is taken as this, which is
/// forever for a server. Beyond it a `Duration` cannot be made from the number, or a deadline
/// computed from it would overflow the clock.
const MAX_SECONDS: f64 = u32::MAX as f64;

pub(super) fn seconds_value(name: &str, v: &Value) -> Result<Duration, String> {
    let secs = match v {
        Value::Int(n) if *n >= 0 => Some(*n as f64),
        Value::Float(f) if f.is_finite() && *f >= 0.0 => Some(*f),
        Value::Str(s) => parse_seconds(s).map(|d| d.as_secs_f64()),
        _ => None,
    };
    secs.map(capped_seconds)
        .ok_or_else(|| format!("{name}: expected a number of seconds, got {}", v.describe()))
}

pub(super) fn parse_seconds(s: &str) -> Option<Duration> {
    s.trim()
        .parse::<f64>()
        .ok()
        .filter(|f| f.is_finite() && *f >= 0.0)
        .map(capped_seconds)
}

/// `secs` (finite, not negative) as a Duration, at most [`MAX_SECONDS`].
fn capped_seconds(secs: f64) -> Duration {
    Duration::from_secs_f64(secs.min(MAX_SECONDS))
}

/// A Symbol or String among `allowed`.
pub(super) fn one_of(name: &str, v: &Value, allowed: &[&str]) -> Result<String, String> {
    match v {
        Value::Sym(s) | Value::Str(s) if allowed.contains(&s.as_str()) => Ok(s.clone()),
        other => Err(format!(
            "{name}: expected one of {}, got {}",
            allowed
                .iter()
                .map(|a| format!(":{a}"))
                .collect::<Vec<_>>()
                .join(", "),
            other.describe()
        )),
    }
}

/// The keys of a Hash argument, refusing any not in `known` (a typo should not pass silently).
pub(super) fn hash<'a>(
    name: &str,
    v: &'a Value,
    known: &[&str],
) -> Result<&'a [(String, Value)], String> {
    let Value::Hash(pairs) = v else {
        return Err(format!("{name}: expected a Hash, got {}", v.describe()));
    };
    if let Some((key, _)) = pairs.iter().find(|(k, _)| !known.contains(&k.as_str())) {
        return Err(format!(
            "{name}: unknown key {key:?} (known: {})",
            known.join(", ")
        ));
    }
    Ok(pairs)
}
