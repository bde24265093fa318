//! The connections apps took (full hijack, 101 upgrades), remembered for a stop's drain time.
//!
//! Once taken, a connection is the app's: the reactor forgets it and nothing here holds its
//! descriptor (a second descriptor would keep the socket open after the app closed it, and the
//! client would never see the close). What is kept is the app's own IO object, weakly, in an
//! `ObjectSpace::WeakMap` (an IO the app drops is collected and leaves the map), with what it
//! served and when it was taken: `Native.taken_connections` hands that map to Ruby's drain
//! (lib/catamount/drain.rb), which waits for the ones still open and shuts down what is left.

use magnus::value::{Lazy, ReprValue};
use magnus::{prelude::*, Error, RHash, RString, Ruby, Value};

use crate::ffi;

/// `io => [description, monotonic seconds when taken]`.
static TAKEN: Lazy<Value> = Lazy::new(|ruby| {
    let map: Value = ruby
        .eval("ObjectSpace::WeakMap.new")
        .unwrap_or_else(|_| ruby.qnil().as_value());
    ruby.gc_register_mark_object(map);
    map
});

/// `Native.taken_connections`: the map of taken connections (see the module comment).
pub fn map(ruby: &Ruby) -> Value {
    ruby.get_inner(&TAKEN)
}

/// Remembers `io`, taken by the app for the request `env` describes.
pub fn remember(ruby: &Ruby, io: Value, env: RHash) -> Result<(), Error> {
    let map = map(ruby);
    if map.is_nil() {
        return Ok(());
    }
    let text = |key: &str| {
        env.get(key)
            .and_then(RString::from_value)
            .map(|s| String::from_utf8_lossy(&ffi::bytes_of(s)).into_owned())
            .unwrap_or_default()
    };
    let description = format!(
        "{} {} from {}",
        text("REQUEST_METHOD"),
        text("REQUEST_URI"),
        text("REMOTE_ADDR")
    );
    let process: magnus::RModule = ruby.class_object().const_get("Process")?;
    let monotonic: Value = process.const_get("CLOCK_MONOTONIC")?;
    let clock: Value = process.funcall("clock_gettime", (monotonic,))?;
    let entry = ruby.ary_new_from_values(&[ruby.str_new(&description).as_value(), clock]);
    let _: Value = map.funcall("[]=", (io, entry))?;
    Ok(())
}
