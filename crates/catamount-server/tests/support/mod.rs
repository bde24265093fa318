//! Helpers shared by the server core's integration tests: a server on a loopback port with a
//! plain Rust thread standing in for the Ruby pool.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use std::sync::Arc;

use catamount_config::BindUrl;
use catamount_server::{bind_all, Job, Pop, Server, ServerConfig, Waiter, WorkQueue};

/// Starts a server on 127.0.0.1 (OS-chosen port) with one pool thread that runs `serve` for every request.
pub fn start_with(
    config: ServerConfig,
    serve: impl Fn(Job, &WorkQueue) + Send + 'static,
) -> (Arc<Server>, u16, std::thread::JoinHandle<()>) {
    let listeners = bind_all(&[BindUrl::parse("tcp://127.0.0.1:0").unwrap()]).unwrap();
    let port: u16 = listeners[0]
        .display
        .rsplit(':')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let server = Arc::new(Server::start(config, listeners).unwrap());
    let queue = server.queue().clone();
    let pool = std::thread::spawn(move || {
        let waiter = Waiter::new();
        let mut seat = queue.thread_started();
        loop {
            match queue.pop(&mut seat, &waiter) {
                Pop::Job(job) => serve(*job, &queue),
                Pop::Closed => return,
                Pop::Interrupted | Pop::Trim => {}
            }
        }
    });
    (server, port, pool)
}
