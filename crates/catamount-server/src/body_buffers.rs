//! Buffers for request bodies read into memory, kept for the next body.
//!
//! A body buffer is allocated on the reactor thread and dropped on a pool thread once Ruby has
//! copied it into `rack.input`. Allocated afresh each time, a buffer of tens of KiB sits at the
//! top of the reactor's malloc heap: glibc gives that memory back to the kernel when the buffer
//! is freed, and the next body faults every page in again (about 25 page faults for a 100 KiB
//! body, measured with perf in the POST echo benchmark). A few buffers kept here skip the
//! malloc, the trim and the faults; bodies too small to cause them are allocated as before.
//!
//! Memory follows the bytes that arrived, never the length a client announces: a body gets its
//! buffer only when its first bytes are there ([`BodyFill`]), a kept one if there is one, else a
//! buffer that grows (doubling, from 16 KiB, up to the announced length) as bytes come. So a
//! client that announces 100 KiB and sends nothing costs no buffer at all, and one that trickles
//! costs about twice what it sent. [`BodyBuffers::in_use`] counts the bytes held (for tests).

use std::ops::Deref;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// Bodies shorter than this get a buffer of their own, not a kept one: small allocations come
/// from malloc's bins and never fault pages in. Also the first size of a growing buffer.
pub const KEPT_FROM: usize = 16 * 1024;

/// At most this many bytes of buffers are kept: 73 at the default 112 KiB in-memory limit.
/// Every connection can have a body read or queued at once (25 per worker in the benchmark's
/// cluster), and a buffer not kept is freed and faults its pages in again when allocated anew;
/// what is kept after a burst of uploads is memory the burst used anyway.
pub const KEPT_BYTES: usize = 8 * 1024 * 1024;

/// The buffers kept for reuse (each at most the largest body read into memory), and the count of
/// bytes held by the buffers in use.
#[derive(Debug)]
pub struct BodyBuffers {
    free: Mutex<Vec<Vec<u8>>>,
    /// The largest body read into memory (`ServerConfig::body_in_memory_max`).
    capacity: usize,
    /// At most this many are kept; more come back only when many bodies are in flight at once.
    keep: usize,
    /// Capacity of the buffers handed out and not dropped yet (being filled, or queued).
    in_use: AtomicUsize,
}

impl BodyBuffers {
    /// Buffers for bodies up to `in_memory_max` bytes, as many kept as fit in [`KEPT_BYTES`]
    /// (none when one buffer would not).
    pub fn for_limit(in_memory_max: usize) -> Arc<BodyBuffers> {
        BodyBuffers::new(in_memory_max, KEPT_BYTES / in_memory_max.max(1))
    }

    /// Keeps up to `keep` buffers of at most `capacity` bytes.
    pub fn new(capacity: usize, keep: usize) -> Arc<BodyBuffers> {
        Arc::new(BodyBuffers {
            free: Mutex::new(Vec::new()),
            capacity,
            keep,
            in_use: AtomicUsize::new(0),
        })
    }

    /// How many buffers are kept now.
    pub fn kept(&self) -> usize {
        self.lock().len()
    }

    /// Bytes of memory held by body buffers in use (filled by the reactor or waiting for a pool
    /// thread); kept ones waiting for reuse are not counted.
    pub fn in_use(&self) -> usize {
        self.in_use.load(Ordering::Relaxed)
    }

    /// A buffer for a body of `len` bytes of which `arriving` are here: a kept one when the body
    /// is large enough and one is free, else a new one with room for what arrives (at least
    /// [`KEPT_FROM`], at most `len`).
    fn take(self: &Arc<Self>, len: usize, arriving: usize) -> BodyBuffer {
        let keep = (KEPT_FROM..=self.capacity).contains(&len) && self.keep > 0;
        let kept = if keep { self.lock().pop() } else { None };
        let bytes = match kept {
            // Already made: grown once to the whole body now, never again by doubling.
            Some(mut bytes) => {
                bytes.reserve_exact(len);
                bytes
            }
            None => Vec::with_capacity(len.min(arriving.max(KEPT_FROM))),
        };
        self.in_use.fetch_add(bytes.capacity(), Ordering::Relaxed);
        BodyBuffer {
            counted: bytes.capacity(),
            bytes,
            home: Some(Arc::clone(self)),
            keep,
        }
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

/// A body of known length being read into memory: no buffer until its first bytes arrive, then
/// one that grows with them.
#[derive(Debug)]
pub(crate) struct BodyFill {
    buffers: Arc<BodyBuffers>,
    len: usize,
    buffer: Option<BodyBuffer>,
}

impl BodyFill {
    pub(crate) fn new(buffers: Arc<BodyBuffers>, len: usize) -> BodyFill {
        BodyFill {
            buffers,
            len,
            buffer: None,
        }
    }

    /// The room for the next read from the socket: as much as the body still lacks, up to
    /// [`KEPT_FROM`] at least (a read never gets a tiny window at the end of a full buffer).
    pub(crate) fn room_for_read(&mut self) -> &mut Vec<u8> {
        let missing = self.len.saturating_sub(self.filled());
        self.room(missing.min(KEPT_FROM))
    }

    /// Bytes filled so far.
    pub(crate) fn filled(&self) -> usize {
        self.buffer.as_ref().map_or(0, |b| b.bytes.len())
    }

    /// The bytes filled so far, for trimming what a read brought past the body's end.
    pub(crate) fn filled_mut(&mut self) -> Option<&mut Vec<u8>> {
        self.buffer.as_mut().map(|b| &mut b.bytes)
    }

    /// The buffer, with spare room for the `arriving` bytes (at least one, and no more than the
    /// body still lacks): taken now if this is the body's first byte, grown (doubling, capped at
    /// the body's length) if full.
    pub(crate) fn room(&mut self, arriving: usize) -> &mut Vec<u8> {
        let missing = self.len.saturating_sub(self.filled());
        let wanted = arriving.clamp(1, missing.max(1));
        let (buffers, len) = (&self.buffers, self.len);
        let buffer = self.buffer.get_or_insert_with(|| buffers.take(len, wanted));
        let bytes = &mut buffer.bytes;
        if bytes.capacity() - bytes.len() < wanted {
            let grown = bytes
                .capacity()
                .saturating_mul(2)
                .max(KEPT_FROM)
                .min(len)
                .max(bytes.len() + wanted);
            bytes.reserve_exact(grown - bytes.len());
            buffer.recount();
        }
        &mut buffer.bytes
    }

    /// The body read so far (empty when no byte came).
    pub(crate) fn finish(self) -> BodyBuffer {
        self.buffer.unwrap_or_default()
    }
}

/// A request body in memory. Dropping it returns a kept buffer to its [`BodyBuffers`].
#[derive(Debug, Default)]
pub struct BodyBuffer {
    bytes: Vec<u8>,
    home: Option<Arc<BodyBuffers>>,
    /// Capacity counted in `home`'s `in_use`.
    counted: usize,
    /// Go back to `home`'s list when dropped.
    keep: bool,
}

impl BodyBuffer {
    /// Brings `home`'s count up to date after the buffer grew.
    fn recount(&mut self) {
        if let Some(home) = &self.home {
            let now = self.bytes.capacity();
            home.in_use.fetch_add(now - self.counted, Ordering::Relaxed);
            self.counted = now;
        }
    }
}

impl From<Vec<u8>> for BodyBuffer {
    /// A buffer of its own, freed when dropped.
    fn from(bytes: Vec<u8>) -> BodyBuffer {
        BodyBuffer {
            bytes,
            home: None,
            counted: 0,
            keep: false,
        }
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
            home.in_use.fetch_sub(self.counted, Ordering::Relaxed);
            if self.keep {
                home.give_back(std::mem::take(&mut self.bytes));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fill of `len` with `n` bytes appended, as the reactor does (room, then write).
    fn fill(buffers: &Arc<BodyBuffers>, len: usize, n: usize) -> BodyFill {
        let mut fill = BodyFill::new(buffers.clone(), len);
        if n > 0 {
            let room = fill.room(n);
            room.resize(room.len() + n, b'x');
        }
        fill
    }

    #[test]
    fn large_bodies_reuse_kept_buffers() {
        let buffers = BodyBuffers::new(64 * 1024, 2);
        let first = fill(&buffers, 20 * 1024, 4).finish();
        let address = first.as_ptr();
        drop(first);
        assert_eq!(buffers.kept(), 1);
        let mut again = BodyFill::new(buffers.clone(), KEPT_FROM);
        assert_eq!(again.room(1).as_ptr(), address, "the kept buffer is reused");
        assert!(again.room(1).is_empty(), "and comes back empty");
        let others: Vec<_> = (0..3)
            .map(|_| fill(&buffers, KEPT_FROM, 1).finish())
            .collect();
        drop(again);
        drop(others);
        assert_eq!(buffers.kept(), 2, "no more than `keep` are kept");
    }

    #[test]
    fn the_kept_bytes_are_bounded() {
        assert_eq!(BodyBuffers::for_limit(112 * 1024).keep, 73);
        let huge = BodyBuffers::for_limit(KEPT_BYTES + 1);
        assert_eq!(huge.keep, 0);
        drop(fill(&huge, KEPT_FROM, 1).finish());
        assert_eq!(huge.kept(), 0, "a limit above KEPT_BYTES keeps nothing");
    }

    #[test]
    fn small_and_oversized_bodies_get_their_own_buffer() {
        let buffers = BodyBuffers::new(64 * 1024, 2);
        drop(fill(&buffers, KEPT_FROM - 1, 1).finish());
        drop(fill(&buffers, 64 * 1024 + 1, 1).finish());
        drop(BodyBuffer::from(vec![1, 2, 3]));
        assert_eq!(buffers.kept(), 0);
        assert_eq!(buffers.in_use(), 0);
    }

    #[test]
    fn memory_follows_the_bytes_that_arrived_not_the_announced_length() {
        let buffers = BodyBuffers::new(1 << 20, 4);
        let mut body = fill(&buffers, 1 << 20, 0);
        assert_eq!(buffers.in_use(), 0, "nothing before the first byte");
        body.room(10).extend_from_slice(b"0123456789");
        assert_eq!(
            buffers.in_use(),
            KEPT_FROM,
            "a first byte takes the smallest buffer"
        );
        let mut sizes = Vec::new();
        while body.filled() < 1 << 20 {
            let room = body.room(4096);
            let n = (room.capacity() - room.len()).min(4096);
            room.resize(room.len() + n, b'y');
            sizes.push(buffers.in_use());
        }
        sizes.dedup();
        let kib: Vec<usize> = sizes.iter().map(|s| s / 1024).collect();
        assert_eq!(
            kib,
            [16, 32, 64, 128, 256, 512, 1024],
            "doubling, up to the length"
        );
        let done = body.finish();
        assert_eq!(done.len(), 1 << 20);
        drop(done);
        assert_eq!(buffers.in_use(), 0);
        assert_eq!(buffers.kept(), 1);
    }

    #[test]
    fn a_read_always_gets_a_real_window() {
        let buffers = BodyBuffers::new(1 << 20, 0);
        let mut body = fill(&buffers, 100 * 1024, 0);
        body.room(80).extend_from_slice(&[b'h'; 80]);
        // Fill the first buffer up to one byte short of full.
        let room = body.room_for_read();
        let spare = room.capacity() - room.len();
        room.resize(room.len() + spare - 1, b'x');
        let room = body.room_for_read();
        assert!(
            room.capacity() - room.len() >= KEPT_FROM,
            "the next read may take 16 KiB, not one byte"
        );
        let mut reads = 1;
        while body.filled() < 100 * 1024 {
            let room = body.room_for_read();
            let n = room.capacity() - room.len();
            room.resize(room.len() + n.min(100 * 1024 - room.len()), b'y');
            reads += 1;
        }
        assert!(
            reads <= 5,
            "{reads} reads for a 100 KiB body arriving at once"
        );
    }

    #[test]
    fn a_kept_buffer_is_grown_to_the_body_once() {
        let buffers = BodyBuffers::new(1 << 20, 2);
        drop(fill(&buffers, 20 * 1024, 20 * 1024).finish());
        assert_eq!(buffers.kept(), 1);
        let mut body = fill(&buffers, 100 * 1024, 0);
        assert!(
            body.room_for_read().capacity() >= 100 * 1024,
            "the whole body fits in one read"
        );
    }

    #[test]
    fn growth_stops_at_the_announced_length() {
        let buffers = BodyBuffers::new(1 << 20, 0);
        let mut body = fill(&buffers, 20_000, 17_000);
        assert_eq!(body.room(10_000).capacity(), 20_000);
        assert_eq!(buffers.in_use(), 20_000);
        let small = fill(&buffers, 100, 1);
        assert_eq!(buffers.in_use(), 20_100, "a small body gets its own size");
        drop((body, small));
        assert_eq!(buffers.in_use(), 0);
    }
}
