//! The connections apps took (full hijack, 101 upgrades), remembered for a stop's drain time.
//!
//! Once taken, a connection is the app's: the reactor forgets it and nothing here holds its
//! descriptor (a second descriptor would keep the socket open after the app closed it, and the
//! client would never see the close). What is kept is the app's own IO object, weakly, in an
//! `ObjectSpace::WeakMap` (an IO the app drops is collected and leaves the map). The map holds
//! its values weakly too, so each entry's value is the IO itself (alive exactly as long as the
//! key); what it served and when it was taken hang on the IO as an instance variable
//! (`@__catamount_taken`). `Native.taken_connections` lists the open ones for
//! Ruby's drain (lib/catamount/drain.rb), which waits for them and shuts down what is left.

use magnus::value::{Lazy, ReprValue};
use magnus::{prelude::*, Error, RArray, RHash, RString, Ruby, Value};

use crate::ffi;

/// `io => io`, weakly.
static TAKEN: Lazy<Value> = Lazy::new(|ruby| {
    let map: Value = ruby
        .eval("ObjectSpace::WeakMap.new")
        .unwrap_or_else(|_| ruby.qnil().as_value());
    ruby.gc_register_mark_object(map);
    map
});

/// The map made at load time (see `look_up_now` in lib.rs): making it runs Ruby code.
pub fn look_up_now(ruby: &Ruby) {
    ruby.get_inner(&TAKEN);
}

/// The instance variable holding `[description, monotonic seconds when taken]`.
const ABOUT: &str = "@__catamount_taken";

/// `Native.taken_connections`: `[[io, description, monotonic time taken], ...]` for every
/// taken connection whose IO is not closed. (`keys` is one call that runs no Ruby code, so a
/// pool thread adding to the map meanwhile cannot disturb an iteration.)
pub fn open(ruby: &Ruby) -> Result<RArray, Error> {
    let out = ruby.ary_new();
    let map = ruby.get_inner(&TAKEN);
    if map.is_nil() {
        return Ok(out);
    }
    let keys: RArray = map.funcall("keys", ())?;
    for io in keys.into_iter() {
        if io.funcall::<_, _, bool>("closed?", ())? {
            continue;
        }
        let about: Value = io.funcall("instance_variable_get", (ABOUT,))?;
        let Some(about) = RArray::from_value(about) else {
            continue;
        };
        out.push(ruby.ary_new_from_values(&[io, about.entry(0)?, about.entry(1)?]))?;
    }
    Ok(out)
}

/// Remembers `io`, taken by the app for the request `env` describes.
pub fn remember(ruby: &Ruby, io: Value, env: RHash) -> Result<(), Error> {
    let map = ruby.get_inner(&TAKEN);
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
    let about = ruby.ary_new_from_values(&[ruby.str_new(&description).as_value(), clock]);
    let _: Value = io.funcall("instance_variable_set", (ABOUT, about))?;
    let _: Value = map.funcall("[]=", (io, io))?;
    Ok(())
}
