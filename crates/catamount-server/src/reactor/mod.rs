//! The reactor: one Rust thread running a single-threaded tokio runtime that owns every socket.
//!
//! It accepts (only while the pool has a free thread), reads each request whole, including the
//! body, before any Ruby thread sees it, finishes responses the pool threads could not write at
//! once, and keeps idle keep-alive connections. One thread is enough: it never runs Ruby and
//! never waits on anything but sockets and timers, and on a 2-core machine a second reactor
//! thread would only compete with Ruby for the cores.

mod conn;

use std::io;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, UnixListener};
use tokio::sync::{mpsc, watch};

use crate::listener::{BoundListener, Listener};
use crate::log;
use crate::request::Peer;
use crate::stream::Stream;
use crate::Shared;

/// Runs the reactor until a stop is requested and every connection has finished.
pub(crate) fn run(
    shared: Arc<Shared>,
    listeners: Vec<BoundListener>,
    stop: watch::Receiver<bool>,
) -> io::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()?;
    runtime.block_on(serve(shared, listeners, stop))
}

async fn serve(
    shared: Arc<Shared>,
    listeners: Vec<BoundListener>,
    stop: watch::Receiver<bool>,
) -> io::Result<()> {
    // Every connection task holds a clone of `alive`; when the last clone is dropped,
    // `all_closed.recv()` returns None and the reactor may end.
    let (alive, mut all_closed) = mpsc::channel::<()>(1);
    let mut accept_tasks = Vec::new();
    for bound in listeners {
        let acceptor = match bound.listener {
            Listener::Tcp(l) => Acceptor::Tcp(TcpListener::from_std(l)?),
            Listener::Unix(l) => Acceptor::Unix(UnixListener::from_std(l)?),
        };
        accept_tasks.push(tokio::spawn(accept_loop(
            acceptor,
            shared.clone(),
            stop.clone(),
            alive.clone(),
        )));
    }
    drop(alive);
    for task in accept_tasks {
        let _ = task.await;
    }
    // Listeners are closed now; wait for the connections still being served.
    let _ = all_closed.recv().await;
    Ok(())
}

enum Acceptor {
    Tcp(TcpListener),
    Unix(UnixListener),
}

impl Acceptor {
    /// Cancel-safe: dropping the future before it completes takes no connection.
    async fn accept(&self) -> io::Result<(Stream, Peer, Option<u16>)> {
        match self {
            Acceptor::Tcp(l) => {
                let (s, addr) = l.accept().await?;
                // Responses go out in as few writes as we can make them; Nagle would only
                // delay the last segment of each.
                let _ = s.set_nodelay(true);
                let port = s.local_addr().ok().map(|a| a.port());
                Ok((Stream::Tcp(s), Peer::Ip(addr), port))
            }
            Acceptor::Unix(l) => {
                let (s, _) = l.accept().await?;
                Ok((Stream::Unix(s), Peer::Unix, None))
            }
        }
    }
}

async fn accept_loop(
    acceptor: Acceptor,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
    alive: mpsc::Sender<()>,
) {
    loop {
        // Accept only while a pool thread is free: a connection left in the kernel's backlog
        // can still be taken by another worker process that is idle.
        tokio::select! {
            _ = shared.queue.wait_for_capacity() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        // A pending accept is abandoned the moment the pool fills up, so a connection that
        // arrives while every thread is busy stays in the kernel's queue.
        let accepted = tokio::select! {
            r = acceptor.accept() => r,
            _ = shared.queue.wait_until_full() => continue,
            _ = stop.wait_for(|s| *s) => return,
        };
        match accepted {
            Ok((stream, peer, local_port)) => {
                tokio::spawn(conn::serve(
                    stream,
                    peer,
                    local_port,
                    shared.clone(),
                    stop.clone(),
                    alive.clone(),
                ));
            }
            Err(e) => {
                // Out of file descriptors or a connection reset before accept: keep serving
                // the others; back off briefly so a full fd table does not spin this loop.
                if matches!(e.raw_os_error(), Some(23) | Some(24)) {
                    log::error(&format!("Listen loop: {e}"));
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
        if shared.stopping.load(Ordering::SeqCst) {
            return;
        }
    }
}
