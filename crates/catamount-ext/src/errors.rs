//! The exception classes Ruby sees: `Catamount::Error` and its kinds, so the launcher can turn
//! each into one clear line and an exit status.

use magnus::value::Lazy;
use magnus::{prelude::*, ExceptionClass, RModule, Ruby};

static USAGE_ERROR: Lazy<ExceptionClass> = Lazy::new(|ruby| lookup(ruby, "UsageError"));
static CONFIG_ERROR: Lazy<ExceptionClass> = Lazy::new(|ruby| lookup(ruby, "ConfigError"));
static LISTEN_ERROR: Lazy<ExceptionClass> = Lazy::new(|ruby| lookup(ruby, "ListenError"));
static REQUEST_TIMEOUT: Lazy<ExceptionClass> = Lazy::new(|ruby| lookup(ruby, "RequestTimeout"));

fn lookup(ruby: &Ruby, name: &str) -> ExceptionClass {
    ruby.class_object()
        .const_get::<_, RModule>("Catamount")
        .and_then(|m| m.const_get::<_, ExceptionClass>(name))
        .unwrap_or_else(|_| ruby.exception_runtime_error())
}

/// Defines `Catamount::Error < StandardError` and `UsageError`, `ConfigError`, `ListenError`;
/// and `Catamount::RequestTimeout < Exception` (`request_timeout` raises it into a pool thread:
/// not a StandardError, so an app's `rescue => e` does not swallow it and the request unwinds,
/// its `ensure` blocks run, as with Rack::Timeout's and Ruby's own Timeout's inner exceptions).
pub fn define(ruby: &Ruby, catamount: RModule) -> Result<(), magnus::Error> {
    let base = catamount.define_error("Error", ruby.exception_standard_error())?;
    for name in ["UsageError", "ConfigError", "ListenError"] {
        catamount.define_error(name, base)?;
    }
    catamount.define_error("RequestTimeout", ruby.exception_exception())?;
    Ok(())
}

/// The classes' lookups, made at load time (see `look_up_now` in lib.rs).
pub fn look_up_now(ruby: &Ruby) {
    for class in [&USAGE_ERROR, &CONFIG_ERROR, &LISTEN_ERROR, &REQUEST_TIMEOUT] {
        ruby.get_inner(class);
    }
}

pub fn request_timeout(ruby: &Ruby) -> ExceptionClass {
    ruby.get_inner(&REQUEST_TIMEOUT)
}

pub fn usage_error(ruby: &Ruby) -> ExceptionClass {
    ruby.get_inner(&USAGE_ERROR)
}

pub fn config_error(ruby: &Ruby) -> ExceptionClass {
    ruby.get_inner(&CONFIG_ERROR)
}

pub fn listen_error(ruby: &Ruby) -> ExceptionClass {
    ruby.get_inner(&LISTEN_ERROR)
}
