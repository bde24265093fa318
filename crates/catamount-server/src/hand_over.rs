//! How many response bytes pool threads may hand to the reactor for clients that read slowly,
//! in memory per connection and for the whole process, and in temporary files past that; and
//! the counts of what is handed over now.
//!
//! A slow reader costs buffered bytes instead of a Ruby thread (see `response.rs`), but bytes
//! are memory: without a bound, a few thousand clients that stop reading large responses could
//! make the process hold gigabytes. Past either memory bound a response's further bytes go to
//! an unlinked temporary file ([`SpillFile`], the way nginx buffers a proxied response to disk),
//! which the reactor sends from as the client reads; the files have their own process-wide
//! bound, `ServerConfig::max_spilled_total` (1 GiB). Only when that is full too does the pool
//! thread wait, without the GVL, for its own client to read, or for any release to bring a
//! total back under its bound (a thread per slow client, as Puma spends one always).
//!
//! The memory bounds are `ServerConfig::max_buffered_response` per connection (16 MiB: a large
//! download still goes out without tying a thread to it) and `ServerConfig::max_buffered_total`
//! for the process (64 MiB: hundreds of slow readers of ordinary pages fit, and a handful of
//! very large responses do). All three are options.
//!
//! The bounds are soft by at most one piece per pool thread: a thread checks before each
//! hand-over, and one hand-over is at most [`PIECE`] bytes (of an Array body or a streamed
//! body; a joined small response is at most 64 KiB). What is counted is the memory held: a
//! buffer's capacity, not only the bytes in it; of a file, the bytes written to it, until the
//! last of them is sent (the kernel frees the file then).

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

use crate::deferred_wakes::DeferredWakes;

/// An Array body's bytes beyond what the socket took are copied and handed over in pieces of at
/// most this size, the bounds checked before each.
pub const PIECE: usize = 256 * 1024;

/// A pool thread waiting for the process-wide count to fall (it is over the total bound).
pub(crate) trait Wake: Send + Sync + std::fmt::Debug {
    /// Wakes it to check the bounds again; it registers again if it must go on waiting.
    fn wake(&self);
}

/// The bytes handed over and not written yet, over every connection (and the most there ever
/// were, for tests), in memory and in temporary files, and who waits for them to fall.
#[derive(Debug, Default)]
pub(crate) struct HandedOver {
    now: AtomicU64,
    peak: AtomicU64,
    /// Where spill files go, and how many bytes they may hold in all (0: no spilling).
    spill_dir: PathBuf,
    spill_max: u64,
    spilled: AtomicU64,
    spilled_peak: AtomicU64,
    /// The last spill failed (disk full, no such directory): logged once, until one succeeds.
    spill_failing: AtomicBool,
    /// Threads waiting because the total was over its bound: any connection's release may let
    /// them go on, not only their own client's. Woken all at once on the next release (at most
    /// one per pool thread, and only while the total is over its bound).
    waiting: Mutex<Vec<Weak<dyn Wake>>>,
    /// `waiting` is not empty: lets a release skip the lock in the common case.
    any_waiting: AtomicBool,
    /// Wakes of the reactor for hand-overs, left to its next turn (`deferred_wakes.rs`).
    pub(crate) deferred: DeferredWakes,
}

impl HandedOver {
    /// Counts that spill past the memory bounds into files in `dir`, at most `max` bytes in
    /// all (0: never).
    pub(crate) fn with_spill(dir: PathBuf, max: u64) -> HandedOver {
        HandedOver {
            spill_dir: dir,
            spill_max: max,
            ..HandedOver::default()
        }
    }

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
        self.wake_waiting();
    }

    /// Wakes every thread waiting for a total to fall.
    fn wake_waiting(&self) {
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

    /// Bytes in spill files now, and the most there ever were.
    pub(crate) fn spilled(&self) -> (u64, u64) {
        (
            self.spilled.load(Ordering::SeqCst),
            self.spilled_peak.load(Ordering::SeqCst),
        )
    }

    /// Whether a piece of up to [`PIECE`] bytes could be spilled now (a hint for the decision
    /// to wait: [`reserve_spill`](Self::reserve_spill) is the hard check).
    pub(crate) fn spill_room(&self) -> bool {
        self.spilled
            .load(Ordering::SeqCst)
            .saturating_add(PIECE as u64)
            <= self.spill_max
    }

    /// Counts `n` more spilled bytes if they fit under the bound.
    fn reserve_spill(&self, n: u64) -> bool {
        let max = self.spill_max;
        let reserved = self
            .spilled
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |now| {
                now.checked_add(n).filter(|&after| after <= max)
            });
        match reserved {
            Ok(before) => {
                self.spilled_peak.fetch_max(before + n, Ordering::SeqCst);
                true
            }
            Err(_) => false,
        }
    }

    /// `n` spilled bytes are gone (their file closed, or never written). Call it holding no
    /// connection's lock, as [`sub`](Self::sub).
    fn unspill(&self, n: u64) {
        if n == 0 {
            return;
        }
        self.spilled.fetch_sub(n, Ordering::SeqCst);
        self.wake_waiting();
    }

    /// Records a spill failure; true when it is the first since spilling last worked (log only
    /// that one).
    pub(crate) fn spill_failed(&self) -> bool {
        !self.spill_failing.swap(true, Ordering::Relaxed)
    }

    /// Records a spill that worked; true when it ends a run of failures (log the recovery).
    pub(crate) fn spill_worked(&self) -> bool {
        self.spill_failing.swap(false, Ordering::Relaxed)
    }
}

/// The bytes of one response that went past the memory bounds: an unlinked temporary file the
/// pool thread appends to and the reactor sends from (`sendfile(2)`, or read and encrypted for
/// TLS), each piece handed over as [`Outgoing::Spilled`](crate::response::Outgoing). Its bytes
/// count in the process's spill total until the last reference to it goes, which is when the
/// kernel frees the file.
#[derive(Debug)]
pub(crate) struct SpillFile {
    pub(crate) file: File,
    /// Bytes appended (only the response's pool thread appends).
    len: AtomicU64,
    counts: Arc<HandedOver>,
}

/// Why a piece could not be spilled.
#[derive(Debug)]
pub(crate) enum SpillRefused {
    /// The process's spill bound is reached: wait for the client instead, as without spilling.
    Full,
    /// Creating or writing the file failed (logged once by the caller while it keeps failing).
    Failed(io::Error),
}

impl SpillFile {
    /// Appends `data`, counted against the process's bound; returns the offset it starts at.
    /// `spill` is the response's file so far, created here on its first piece.
    pub(crate) fn append(
        spill: &mut Option<Arc<SpillFile>>,
        counts: &Arc<HandedOver>,
        data: &[u8],
    ) -> Result<(Arc<SpillFile>, u64), SpillRefused> {
        let n = data.len() as u64;
        if !counts.reserve_spill(n) {
            return Err(SpillRefused::Full);
        }
        let written = Self::write(spill, counts, data);
        if written.is_err() {
            counts.unspill(n);
        }
        written.map_err(SpillRefused::Failed)
    }

    fn write(
        spill: &mut Option<Arc<SpillFile>>,
        counts: &Arc<HandedOver>,
        data: &[u8],
    ) -> io::Result<(Arc<SpillFile>, u64)> {
        let file = match spill {
            Some(file) => file.clone(),
            None => {
                let file = Arc::new(SpillFile {
                    file: crate::spill::temp_file(&counts.spill_dir)?,
                    len: AtomicU64::new(0),
                    counts: counts.clone(),
                });
                *spill = Some(file.clone());
                file
            }
        };
        let offset = file.len.load(Ordering::SeqCst);
        file.file.write_all_at(data, offset)?;
        // Counted from here on by the file (released when it is dropped).
        file.len.fetch_add(data.len() as u64, Ordering::SeqCst);
        Ok((file, offset))
    }
}

impl Drop for SpillFile {
    fn drop(&mut self) {
        self.counts.unspill(*self.len.get_mut());
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
