//! `catamount.so`: the native extension the user's Ruby loads.
//!
//! - [`config`]: the command line and options, as Ruby objects.
//! - [`ctl`]: `catamountctl` (crates/catamount-ctl) with Ruby's stdout and config files.
//! - [`server`]: the server handle and the Ruby thread pool's loop.
//! - [`rack`]: the Rack bridge (env in, response out).
//! - [`control`]: the control server and Prometheus text, as Ruby objects.
//! - [`timeout`]: `request_timeout`'s watch over running requests.
//! - [`fibers`]: the fiber mode's pool thread (taking requests, its one wait).
//! - [`turns`]: the fiber mode's turns for requests that never wait.
//! - [`malloc`]: the process's malloc arenas, capped when the extension loads.
//! - [`ffi`]: the one audited `unsafe` module (GVL release, borrowed string bytes, GC guard, ...).

mod config;
mod control;
mod ctl;
mod errors;
mod ffi;
mod fibers;
mod malloc;
mod rack;
mod server;
mod timeout;
mod turns;

use magnus::{function, method, prelude::*, Error, Ruby};

#[magnus::init(name = "catamount")]
fn init(ruby: &Ruby) -> Result<(), Error> {
    // A reactor panic ends the process without running exit handlers under live Ruby threads.
    catamount_server::set_fatal_exit(ffi::exit_now);
    // Before the reactor and pool threads make their arenas (and before a cluster forks).
    malloc::cap_arenas();
    let catamount = ruby.define_module("Catamount")?;
    errors::define(ruby, catamount)?;
    let native = catamount.define_module("Native")?;
    native.define_singleton_method("parse_cli", function!(config::parse_cli, 1))?;
    native.const_set("USAGE", config::usage())?;
    native.define_singleton_method("dsl_options", function!(config::dsl_options, 0))?;
    native.define_singleton_method("given_values", function!(config::given_values, 1))?;
    native.define_singleton_method("ctl", function!(ctl::ctl, 2))?;
    native.define_singleton_method("log_line", function!(server::log_line, 2))?;
    native.define_singleton_method("log_flush", function!(server::log_flush, 1))?;
    native.define_singleton_method(
        "become_child_subreaper",
        function!(server::become_child_subreaper, 0),
    )?;

    native.define_singleton_method("taken_connections", function!(rack::taken::open, 0))?;
    control::define(ruby, native)?;

    let cli = native.define_class("Cli", ruby.class_object())?;
    cli.define_method("includes", method!(config::RbCli::includes, 0))?;
    cli.define_method("config_files", method!(config::RbCli::config_files, 0))?;
    cli.define_method("no_config?", method!(config::RbCli::no_config, 0))?;
    cli.define_method("environment", method!(config::RbCli::environment, 0))?;
    cli.define_method("resolve", method!(config::RbCli::resolve, 1))?;

    let options = native.define_class("Options", ruby.class_object())?;
    options.define_method("to_h", method!(config::RbOptions::to_h, 0))?;
    options.define_method(
        "not_supported_yet",
        method!(config::RbOptions::not_supported_yet, 0),
    )?;

    let srv = native.define_class("Server", ruby.class_object())?;
    srv.define_singleton_method("new", function!(server::RbServer::new, 2))?;
    srv.define_method("listening", method!(server::RbServer::listening, 0))?;
    srv.define_method("inherited", method!(server::RbServer::inherited, 0))?;
    srv.define_method("restart_fds", method!(server::RbServer::restart_fds, 0))?;
    srv.define_method(
        "close_listeners",
        method!(server::RbServer::close_listeners, 0),
    )?;
    srv.define_method("start", method!(server::RbServer::start, 0))?;
    srv.define_method("rearm", method!(server::RbServer::rearm, 0))?;
    srv.define_method(
        "next_pool_action",
        method!(server::RbServer::next_pool_action, 0),
    )?;
    srv.define_method("run_worker", method!(server::RbServer::run_worker, 1))?;
    srv.define_method("fiber_worker", method!(server::RbServer::fiber_worker, 0))?;
    srv.define_method("serve_job", method!(server::RbServer::serve_job, 2))?;
    let worker = native.define_class("FiberWorker", ruby.class_object())?;
    worker.define_method("take", method!(fibers::RbFiberWorker::take, 1))?;
    worker.define_method("wait", method!(fibers::RbFiberWorker::wait, 4))?;
    worker.define_method("ring", method!(fibers::RbFiberWorker::ring, 0))?;
    worker.define_method("run", method!(fibers::RbFiberWorker::run, 4))?;
    worker.define_method("want_turns", method!(fibers::RbFiberWorker::want_turns, 0))?;
    worker.define_method("raise_into", method!(fibers::RbFiberWorker::raise_into, 3))?;
    worker.define_method(
        "overdue_waiting?",
        method!(fibers::RbFiberWorker::overdue_waiting, 0),
    )?;
    worker.define_method("park", method!(fibers::RbFiberWorker::park, 1))?;
    worker.define_method("watched?", method!(fibers::RbFiberWorker::watched, 0))?;
    worker.define_method("overdue", method!(fibers::RbFiberWorker::overdue, 0))?;
    worker.define_method("finish", method!(fibers::RbFiberWorker::finish, 0))?;
    worker.define_method(
        "idle_in_background",
        method!(fibers::RbFiberWorker::idle_in_background, 0),
    )?;
    worker.define_method("queued?", method!(fibers::RbFiberWorker::queued, 0))?;
    srv.define_method("stop", method!(server::RbServer::stop, 0))?;
    srv.define_method("wait", method!(server::RbServer::wait, 0))?;
    srv.define_method("cut_at_drain", method!(server::RbServer::cut_at_drain, 0))?;
    srv.define_method("end_drain", method!(server::RbServer::end_drain, 0))?;
    srv.define_method("streams_open", method!(server::RbServer::streams_open, 0))?;
    srv.define_method("stats", method!(server::RbServer::stats, -1))?;
    srv.define_method("idle_seconds", method!(server::RbServer::idle_seconds, 0))?;
    srv.define_method(
        "watch_request_timeouts",
        method!(server::RbServer::watch_request_timeouts, 0),
    )?;
    srv.define_method("lost_threads", method!(server::RbServer::lost_threads, 0))?;
    srv.define_method("become_worker", method!(server::RbServer::become_worker, 0))?;
    srv.define_method(
        "unlink_unix_sockets",
        method!(server::RbServer::unlink_unix_sockets, 0),
    )?;
    look_up_now(ruby);
    Ok(())
}

/// Makes the first (lazy) lookup of every Ruby object the extension finds by calling into Ruby
/// now, while one thread runs. Found on first use instead, two pool threads could race it: the
/// first runs Ruby code to look it up and may let the GVL go meanwhile; the second, holding the
/// GVL, waits for that lookup to finish, which needs the GVL back: a deadlock (seen as a fiber
/// mode server that never answered its first request).
fn look_up_now(ruby: &Ruby) {
    use magnus::TypedData;
    config::RbCli::class(ruby);
    config::RbOptions::class(ruby);
    server::RbServer::class(ruby);
    control::RbControl::class(ruby);
    fibers::RbFiberWorker::class(ruby);
    errors::look_up_now(ruby);
    turns::look_up_now(ruby);
    rack::taken::look_up_now(ruby);
}
