//! Writing a response from a pool thread without ever blocking it on a slow client.
//!
//! The pool thread writes straight to the socket while the kernel takes the bytes (the common
//! case: one non-blocking write for a small response, no hop to another thread). The moment the
//! socket would block, everything left, and everything after it, goes to the reactor in order,
//! and the pool thread is free for the next request. A slow reader therefore costs buffered bytes,
//! never a Ruby thread (Puma blocks the thread here).
//!
//! Bodies that are already in memory (Array bodies) or are files (sent with sendfile from the
//! reactor) are handed over whole. Streamed bodies (`each` producing chunks) are bounded by
//! [`ServerConfig::max_buffered_response`](crate::ServerConfig): past it the producer waits for
//! the client, because memory is the only other thing a slow reader could exhaust.

use std::fs::File;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use tokio::sync::mpsc::UnboundedSender;

use crate::dispatch::Waiter;
use crate::stream::Stream;
use crate::Shared;

/// What the pool thread hands to the reactor once the socket stopped taking bytes.
#[derive(Debug)]
pub(crate) enum Outgoing {
    Data(Vec<u8>),
    File {
        file: File,
        offset: u64,
        len: u64,
    },
    /// The response is complete; keep the connection open for the next request or not.
    End {
        keep_alive: bool,
    },
}

/// Bytes queued for the reactor and not yet written, shared by both sides.
#[derive(Debug, Default)]
pub(crate) struct Backlog {
    queued: Mutex<u64>,
    drained: Condvar,
    /// The connection is gone; nothing queued will ever be written.
    closed: AtomicBool,
}

impl Backlog {
    pub(crate) fn release(&self, n: u64) {
        let mut q = self.queued.lock().unwrap_or_else(|p| p.into_inner());
        *q = q.saturating_sub(n);
        self.drained.notify_all();
    }

    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        let _q = self.queued.lock().unwrap_or_else(|p| p.into_inner());
        self.drained.notify_all();
    }

    fn add(&self, n: u64) {
        *self.queued.lock().unwrap_or_else(|p| p.into_inner()) += n;
    }

    fn queued(&self) -> u64 {
        *self.queued.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The pool thread's end of a connection for one response.
#[derive(Debug)]
pub struct Responder {
    stream: Arc<Stream>,
    shared: Arc<Shared>,
    outbox: Option<UnboundedSender<Outgoing>>,
    backlog: Arc<Backlog>,
    /// Once anything was queued, everything after it must be queued too, to keep the order.
    handed_off: bool,
    keep_alive_wanted: bool,
}

impl Responder {
    pub(crate) fn new(
        stream: Arc<Stream>,
        shared: Arc<Shared>,
        outbox: UnboundedSender<Outgoing>,
        backlog: Arc<Backlog>,
        keep_alive_wanted: bool,
    ) -> Responder {
        Responder {
            stream,
            shared,
            outbox: Some(outbox),
            backlog,
            handed_off: false,
            keep_alive_wanted,
        }
    }

    /// Whether this response may leave the connection open: the client asked for it, the server
    /// allows it, this connection has not reached `max_keep_alive`, and the server is not stopping.
    pub fn keep_alive_allowed(&self) -> bool {
        self.keep_alive_wanted && !self.shared.stopping.load(Ordering::SeqCst)
    }

    /// Writes bytes, directly if the socket takes them now, else through the reactor.
    /// Fails only when the client is gone.
    pub fn write(&mut self, data: &[u8]) -> io::Result<()> {
        if data.is_empty() {
            return Ok(());
        }
        if self.handed_off {
            return self.enqueue(Outgoing::Data(data.to_vec()), data.len() as u64);
        }
        let written = self.write_direct(data)?;
        match data.get(written..) {
            Some(rest) if !rest.is_empty() => {
                self.enqueue(Outgoing::Data(rest.to_vec()), rest.len() as u64)
            }
            _ => Ok(()),
        }
    }

    /// Like [`write`](Self::write) for an owned buffer: nothing is copied if it must be queued.
    pub fn write_vec(&mut self, mut data: Vec<u8>) -> io::Result<()> {
        if data.is_empty() {
            return Ok(());
        }
        if !self.handed_off {
            let written = self.write_direct(&data)?;
            if written == data.len() {
                return Ok(());
            }
            data.drain(..written);
        }
        let n = data.len() as u64;
        self.enqueue(Outgoing::Data(data), n)
    }

    /// Sends `len` bytes of `file` from `offset` with sendfile(2): directly while the socket
    /// takes them, the rest from the reactor.
    pub fn send_file(&mut self, file: File, mut offset: u64, len: u64) -> io::Result<()> {
        let end = offset.saturating_add(len);
        if !self.handed_off {
            while offset < end {
                let want = usize::try_from(end - offset)
                    .unwrap_or(usize::MAX)
                    .min(1 << 30);
                match self.stream.try_sendfile(&file, &mut offset, want) {
                    Ok(0) => {
                        return Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "file shorter than its announced length",
                        ))
                    }
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
            if offset >= end {
                return Ok(());
            }
        }
        self.enqueue(
            Outgoing::File {
                file,
                offset,
                len: end - offset,
            },
            0,
        )
    }

    /// True when a streamed body has queued more than the server allows for one response; the
    /// caller should then [`wait_for_client`](Self::wait_for_client) (without the GVL).
    pub fn over_budget(&self) -> bool {
        self.handed_off && self.backlog.queued() > self.shared.config.max_buffered_response
    }

    /// Blocks until the client has read enough that the queued bytes are under half the budget,
    /// the client is gone, or `waiter` is interrupted.
    pub fn wait_for_client(&self, waiter: &Waiter) {
        let low_water = self.shared.config.max_buffered_response / 2;
        let mut q = self
            .backlog
            .queued
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        while *q > low_water
            && !self.backlog.closed.load(Ordering::SeqCst)
            && !waiter.is_interrupted()
        {
            // The timeout bounds how late an interrupt is noticed; the condvar does the real work.
            let (guard, _) = self
                .backlog
                .drained
                .wait_timeout(q, Duration::from_millis(50))
                .unwrap_or_else(|p| p.into_inner());
            q = guard;
        }
    }

    /// The response is complete.
    pub fn finish(mut self, keep_alive: bool) {
        if let Some(outbox) = self.outbox.take() {
            let _ = outbox.send(Outgoing::End {
                keep_alive: keep_alive && self.keep_alive_allowed(),
            });
        }
    }

    fn write_direct(&mut self, data: &[u8]) -> io::Result<usize> {
        let mut off = 0;
        while let Some(rest) = data.get(off..).filter(|r| !r.is_empty()) {
            match self.stream.try_write(rest) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => off += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(off)
    }

    fn enqueue(&mut self, item: Outgoing, bytes: u64) -> io::Result<()> {
        self.handed_off = true;
        let outbox = self.outbox.as_ref().ok_or(io::ErrorKind::BrokenPipe)?;
        self.backlog.add(bytes);
        outbox
            .send(item)
            .map_err(|_| io::Error::from(io::ErrorKind::BrokenPipe))
    }
}

/// The client socket, for what needs it directly (socket options, `puma.socket`, hijack).
impl std::os::fd::AsFd for Responder {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.stream.as_fd()
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        // Dropping the outbox without an End tells the reactor to abort the connection: a
        // response that was not finished must not be followed by another on the same stream.
        self.outbox = None;
        self.shared.queue.finish();
    }
}
