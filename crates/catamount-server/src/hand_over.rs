//! How many response bytes pool threads may hand to the reactor for clients that read slowly,
//! per connection and for the whole process, and the count of what is handed over now.
//!
//! A slow reader costs buffered bytes instead of a Ruby thread (see `response.rs`), but bytes
//! are memory: without a bound, a few thousand clients that stop reading large responses could
//! make the process hold gigabytes. Past either bound the pool thread stops copying and waits,
//! without the GVL, for its own client to read, or (past the total) for any release to bring
//! the total back under its bound (a thread per slow client, as Puma spends one always). The per-connection bound is `ServerConfig::max_buffered_response` (16 MiB: a large
//! download still goes out without tying a thread to it); the total is
//! `ServerConfig::max_buffered_total` (64 MiB: hundreds of slow readers of ordinary pages fit,
//! and a handful of very large responses do).
//!
//! The bounds are soft by at most one piece per pool thread: a thread checks before each
//! hand-over, and one hand-over is at most [`PIECE`] bytes (of an Array body or a streamed
//! body; a joined small response is at most 64 KiB). What is counted is the memory held: a
//! buffer's capacity, not only the bytes in it.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, Weak};

/// An Array body's bytes beyond what the socket took are copied and handed over in pieces of at
/// most this size, the bounds checked before each.
pub const PIECE: usize = 256 * 1024;

/// A pool thread waiting for the process-wide count to fall (it is over the total bound).
pub(crate) trait Wake: Send + Sync + std::fmt::Debug {
    /// Wakes it to check the bounds again; it registers again if it must go on waiting.
    fn wake(&self);
}

/// The bytes handed over and not written yet, over every connection (and the most there ever
/// were, for tests), and who waits for it to fall.
#[derive(Debug, Default)]
pub(crate) struct HandedOver {
    now: AtomicU64,
    peak: AtomicU64,
    /// Threads waiting because the total was over its bound: any connection's release may let
    /// them go on, not only their own client's. Woken all at once on the next release (at most
    /// one per pool thread, and only while the total is over its bound).
    waiting: Mutex<Vec<Weak<dyn Wake>>>,
    /// `waiting` is not empty: lets a release skip the lock in the common case.
    any_waiting: AtomicBool,
}

impl HandedOver {
    pub(crate) fn add(&self, n: u64) {
        let now = self.now.fetch_add(n, Ordering::SeqCst).saturating_add(n);
        self.peak.fetch_max(now, Ordering::SeqCst);
    }

    /// `n` bytes were written (or dropped). Call it holding no connection's lock: it may wake
    /// waiting threads, which takes theirs.
    pub(crate) fn sub(&self, n: u64) {
        if n == 0 {
            return;
        }
        self.now.fetch_sub(n, Ordering::SeqCst);
        // SeqCst with `register`: either the waiter sees the new count, or this sees it waiting.
        if self.any_waiting.load(Ordering::SeqCst) {
            let woken = {
                let mut list = self.waiting.lock().unwrap_or_else(|p| p.into_inner());
                self.any_waiting.store(false, Ordering::SeqCst);
                std::mem::take(&mut *list)
            };
            for waiter in woken.iter().filter_map(Weak::upgrade) {
                waiter.wake();
            }
        }
    }

    /// `waiter` is to be woken by the next release on any connection. Register before checking
    /// the count, so a release in between is not missed.
    pub(crate) fn register(&self, waiter: Weak<dyn Wake>) {
        let mut list = self.waiting.lock().unwrap_or_else(|p| p.into_inner());
        list.push(waiter);
        self.any_waiting.store(true, Ordering::SeqCst);
    }

    pub(crate) fn now(&self) -> u64 {
        self.now.load(Ordering::SeqCst)
    }

    pub(crate) fn peak(&self) -> u64 {
        self.peak.load(Ordering::SeqCst)
    }
}

/// The two bounds.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Bounds {
    pub(crate) per_connection: u64,
    pub(crate) total: u64,
}

impl Bounds {
    /// With `queued` bytes handed over on this connection and `total` in the process: stop
    /// handing over and wait for the client. Over the total, a connection hands over only while
    /// its client has taken everything before (it goes at its client's pace); one with nothing
    /// queued may always go on, so the bound cannot stall a client that reads.
    pub(crate) fn must_wait(&self, queued: u64, total: u64) -> bool {
        queued > self.per_connection || (queued > 0 && total > self.total)
    }

    /// A wait may end: this connection is down to half its bound, and the total is under its
    /// bound or this client has read everything.
    pub(crate) fn may_resume(&self, queued: u64, total: u64) -> bool {
        queued <= self.per_connection / 2 && (queued == 0 || total <= self.total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const B: Bounds = Bounds {
        per_connection: 1000,
        total: 5000,
    };

    #[test]
    fn a_connection_waits_past_its_own_bound_until_half_of_it_is_read() {
        assert!(!B.must_wait(1000, 1000));
        assert!(B.must_wait(1001, 1001));
        assert!(!B.may_resume(501, 501));
        assert!(B.may_resume(500, 500));
        assert!(B.may_resume(0, 0));
    }

    #[test]
    fn past_the_total_a_connection_goes_at_its_clients_pace() {
        assert!(!B.must_wait(0, 9000), "nothing queued here: go on");
        assert!(B.must_wait(1, 5001));
        assert!(!B.must_wait(1, 5000));
        assert!(!B.may_resume(1, 5001));
        assert!(B.may_resume(0, 9000), "the client took everything");
        assert!(B.may_resume(400, 5000), "the total is back under its bound");
    }

    #[test]
    fn waiting_and_resuming_never_overlap() {
        // A thread that resumes must not be told to wait again at once (it would spin).
        for queued in (0..3000).step_by(50) {
            for total in (0..12_000).step_by(250) {
                let total = total.max(queued);
                assert!(
                    !(B.may_resume(queued, total) && B.must_wait(queued, total)),
                    "{queued} {total}"
                );
            }
        }
    }

    #[test]
    fn the_count_keeps_its_peak() {
        let h = HandedOver::default();
        h.add(300);
        h.add(200);
        h.sub(400);
        h.add(50);
        assert_eq!((h.now(), h.peak()), (150, 500));
    }
}
