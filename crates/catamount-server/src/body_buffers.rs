//! Buffers for request bodies read into memory, kept for the next body.
//!
//! A body buffer is allocated on the reactor thread and dropped on a pool thread once Ruby has
//! copied it into `rack.input`. Allocated afresh each time, a buffer of tens of KiB sits at the
//! top of the reactor's malloc heap: glibc gives that memory back to the kernel when the buffer
//! is freed, and the next body faults every page in again (about 25 page faults for a 100 KiB
//! body, measured with perf in the POST echo benchmark). A few buffers kept here skip the
//! malloc, the trim and the faults; bodies too small to cause them are allocated as before.

use std::ops::Deref;
use std::sync::{Arc, Mutex};

/// Bodies shorter than this get a buffer of their own size, not a kept one: small allocations
/// come from malloc's bins and never fault pages in.
pub const KEPT_FROM: usize = 16 * 1024;

/// At most this many bytes of buffers are kept: 73 at the default 112 KiB in-memory limit.
/// Every connection can have a body read or queued at once (25 per worker in the benchmark's
/// cluster), and a buffer not kept is freed and faults its pages in again when allocated anew;
/// what is kept after a burst of uploads is memory the burst used anyway.
pub const KEPT_BYTES: usize = 8 * 1024 * 1024;

/// The buffers kept for reuse, each with room for the largest body read into memory.
#[derive(Debug)]
pub struct BodyBuffers {
    free: Mutex<Vec<Vec<u8>>>,
    /// Capacity of every kept buffer (`ServerConfig::body_in_memory_max`).
    capacity: usize,
    /// At most this many are kept; more come back only when many bodies are in flight at once.
    keep: usize,
}

impl BodyBuffers {
    /// Buffers for bodies up to `in_memory_max` bytes, as many kept as fit in [`KEPT_BYTES`]
    /// (none when one buffer would not).
    pub fn for_limit(in_memory_max: usize) -> Arc<BodyBuffers> {
        BodyBuffers::new(in_memory_max, KEPT_BYTES / in_memory_max.max(1))
    }

    /// Keeps up to `keep` buffers of `capacity` bytes.
    pub fn new(capacity: usize, keep: usize) -> Arc<BodyBuffers> {
        Arc::new(BodyBuffers {
            free: Mutex::new(Vec::new()),
            capacity,
            keep,
        })
    }

    /// An empty buffer with room for at least `len` bytes.
    pub fn take(self: &Arc<Self>, len: usize) -> BodyBuffer {
        if len < KEPT_FROM || len > self.capacity || self.keep == 0 {
            return BodyBuffer::from(Vec::with_capacity(len));
        }
        let kept = self.lock().pop();
        BodyBuffer {
            bytes: kept.unwrap_or_else(|| Vec::with_capacity(self.capacity)),
            home: Some(Arc::clone(self)),
        }
    }

    /// How many buffers are kept now.
    pub fn kept(&self) -> usize {
        self.lock().len()
    }

    fn give_back(&self, mut bytes: Vec<u8>) {
        bytes.clear();
        let mut free = self.lock();
        if free.len() < self.keep {
            free.push(bytes);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Vec<u8>>> {
        // The list stays valid whatever a panicking holder was doing.
        self.free.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A request body in memory. Dropping it returns a kept buffer to its [`BodyBuffers`].
#[derive(Debug, Default)]
pub struct BodyBuffer {
    bytes: Vec<u8>,
    home: Option<Arc<BodyBuffers>>,
}

impl BodyBuffer {
    /// The bytes, for filling (the reactor reads into the spare capacity).
    pub(crate) fn vec_mut(&mut self) -> &mut Vec<u8> {
        &mut self.bytes
    }
}

impl From<Vec<u8>> for BodyBuffer {
    /// A buffer of its own, freed when dropped.
    fn from(bytes: Vec<u8>) -> BodyBuffer {
        BodyBuffer { bytes, home: None }
    }
}

impl Deref for BodyBuffer {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.bytes
    }
}

impl Drop for BodyBuffer {
    fn drop(&mut self) {
        if let Some(home) = self.home.take() {
            home.give_back(std::mem::take(&mut self.bytes));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_bodies_reuse_kept_buffers_up_to_the_limit() {
        let buffers = BodyBuffers::new(64 * 1024, 2);
        let mut first = buffers.take(20 * 1024);
        first.vec_mut().extend_from_slice(b"body");
        let address = first.as_ptr();
        drop(first);
        assert_eq!(buffers.kept(), 1);
        let again = buffers.take(40 * 1024);
        assert_eq!(again.as_ptr(), address, "the kept buffer is reused");
        assert!(again.is_empty(), "and comes back empty");
        let others: Vec<_> = (0..3).map(|_| buffers.take(KEPT_FROM)).collect();
        drop(again);
        drop(others);
        assert_eq!(buffers.kept(), 2, "no more than `keep` are kept");
    }

    #[test]
    fn the_kept_bytes_are_bounded() {
        assert_eq!(BodyBuffers::for_limit(112 * 1024).keep, 73);
        let huge = BodyBuffers::for_limit(KEPT_BYTES + 1);
        assert_eq!(huge.keep, 0);
        drop(huge.take(KEPT_FROM));
        assert_eq!(huge.kept(), 0, "a limit above KEPT_BYTES keeps nothing");
    }

    #[test]
    fn small_and_oversized_bodies_get_their_own_buffer() {
        let buffers = BodyBuffers::new(64 * 1024, 2);
        drop(buffers.take(KEPT_FROM - 1));
        drop(buffers.take(64 * 1024 + 1));
        drop(BodyBuffer::from(vec![1, 2, 3]));
        assert_eq!(buffers.kept(), 0);
    }
}
