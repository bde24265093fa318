//! Helpers shared by the server core's integration tests: a server on a loopback port with a
//! plain Rust thread standing in for the Ruby pool.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use std::sync::Arc;

use catamount_config::BindUrl;
use catamount_server::{bind_all, Job, Pop, Server, ServerConfig, Waiter, WorkQueue};

/// Starts a server on 127.0.0.1 (OS-chosen port) with one pool thread that runs `serve` for
/// every request.
pub fn start_with(
    config: ServerConfig,
    serve: impl Fn(Job, &WorkQueue) + Send + Sync + 'static,
) -> (Arc<Server>, u16, std::thread::JoinHandle<()>) {
    start_pool(config, 1, serve)
}

/// Like [`start_with`], with `threads` pool threads; the handle joins them all.
pub fn start_pool(
    config: ServerConfig,
    threads: usize,
    serve: impl Fn(Job, &WorkQueue) + Send + Sync + 'static,
) -> (Arc<Server>, u16, std::thread::JoinHandle<()>) {
    let listeners = bind_all(&[BindUrl::parse("tcp://127.0.0.1:0").unwrap()]).unwrap();
    start_on(config, listeners, threads, serve)
}

/// Like [`start_pool`], on listeners the caller bound (and set up: a TLS configuration).
pub fn start_on(
    config: ServerConfig,
    listeners: Vec<catamount_server::BoundListener>,
    threads: usize,
    serve: impl Fn(Job, &WorkQueue) + Send + Sync + 'static,
) -> (Arc<Server>, u16, std::thread::JoinHandle<()>) {
    let port: u16 = listeners[0]
        .display
        .rsplit(':')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let server = Arc::new(Server::start(config, listeners).unwrap());
    let serve = Arc::new(serve);
    let workers: Vec<_> = (0..threads)
        .map(|_| {
            let queue = server.queue().clone();
            let serve = serve.clone();
            std::thread::spawn(move || {
                let waiter = Waiter::new();
                let mut seat = queue.thread_started();
                loop {
                    match queue.pop(&mut seat, &waiter) {
                        Pop::Job(job) => serve(*job, &queue),
                        Pop::Closed => return,
                        Pop::Interrupted | Pop::Trim => {}
                    }
                }
            })
        })
        .collect();
    let pool = std::thread::spawn(move || {
        for worker in workers {
            worker.join().unwrap();
        }
    });
    (server, port, pool)
}
