//! The server's counters for stats and metrics: responses by status class, the request-duration
//! and queue-time histograms, bytes in and out, connections, the backlog and reactor highs, and
//! `request_timeout`'s counts (requests timed out, threads lost).
//!
//! Every update is one or two relaxed atomic operations, no lock and no allocation, so the
//! request path pays a few nanoseconds. Readers take a [`Snapshot`]; values read one by one
//! may be a request apart from each other, which stats tolerate.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

/// Histogram upper bounds (inclusive), in microseconds; the seconds form is [`BOUNDS_SECONDS`].
pub const BOUNDS_MICROS: [u64; 13] = [
    1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000, 2_500_000,
    5_000_000, 10_000_000,
];

/// The same bounds in seconds, as stats and metrics show them.
pub const BOUNDS_SECONDS: [f64; 13] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Buckets: one per bound, and +Inf.
pub const BUCKETS: usize = BOUNDS_MICROS.len() + 1;

/// A histogram of durations with fixed buckets. Each bucket is stored on its own (not
/// cumulative), so an observation is one increment; [`snapshot`](Self::snapshot) accumulates.
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [AtomicU64; BUCKETS],
    sum_micros: AtomicU64,
}

/// A histogram as read: `counts` cumulative (`counts[i]` observations took at most
/// `BOUNDS_SECONDS[i]`; the last is the total), `sum` in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct HistogramSnapshot {
    pub counts: [u64; BUCKETS],
    pub sum: f64,
}

impl Histogram {
    pub fn observe(&self, d: Duration) {
        let micros = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        let i = BOUNDS_MICROS
            .iter()
            .position(|&b| micros <= b)
            .unwrap_or(BOUNDS_MICROS.len());
        if let Some(bucket) = self.buckets.get(i) {
            bucket.fetch_add(1, Ordering::Relaxed);
        }
        self.sum_micros.fetch_add(micros, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> HistogramSnapshot {
        let mut counts = [0u64; BUCKETS];
        let mut total = 0u64;
        for (count, bucket) in counts.iter_mut().zip(&self.buckets) {
            total += bucket.load(Ordering::Relaxed);
            *count = total;
        }
        HistogramSnapshot {
            counts,
            sum: self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6,
        }
    }

    fn reset(&self) {
        for bucket in &self.buckets {
            bucket.store(0, Ordering::Relaxed);
        }
        self.sum_micros.store(0, Ordering::Relaxed);
    }
}

/// Every counter of one serving process (kept across a re-armed server: `fork_worker`).
#[derive(Debug, Default)]
pub struct Metrics {
    /// 1xx..5xx.
    responses: [AtomicU64; 5],
    pub request_duration: Histogram,
    pub queue_time: Histogram,
    bytes_out: AtomicU64,
    /// Open-ended streams being made now (`Responder::mark_streaming` until the responder is
    /// done): a stopping worker with some will drain (not a stat; never reset).
    streams_open: AtomicI64,
    /// Requests past `request_timeout` (answered or cut by the server).
    request_timeouts: AtomicU64,
    /// Threads still on a timed-out request past the grace, now (a gauge: one that leaves its
    /// request at last is uncounted).
    threads_lost: AtomicI64,
    /// What the reactor thread updates, apart from what pool threads update.
    reactor: ReactorSide,
}

/// The counters the reactor thread updates, in cache lines of their own: sharing a line with
/// the pool threads' counters would make the two cores pass it back and forth on every request.
#[derive(Debug, Default)]
#[repr(align(128))]
struct ReactorSide {
    bytes_in: AtomicU64,
    /// Signed: an open and its close are always paired, but a reset between them (a forked
    /// worker's, which has no connections) must not wrap.
    connections_open: AtomicI64,
    connections_accepted: AtomicU64,
    backlog_max: AtomicU64,
    reactor_max: AtomicU64,
}

/// The counters as read by [`Metrics::snapshot`].
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Snapshot {
    /// Responses by class, 1xx first.
    pub responses: [u64; 5],
    pub request_duration: HistogramSnapshot,
    pub queue_time: HistogramSnapshot,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub connections_open: u64,
    pub connections_accepted: u64,
    pub backlog_max: u64,
    pub reactor_max: u64,
    pub request_timeouts: u64,
    pub threads_lost: u64,
}

impl Metrics {
    /// Open-ended streams being made now (see `streams_open`).
    pub fn streams_open(&self) -> u64 {
        u64::try_from(self.streams_open.load(Ordering::Relaxed)).unwrap_or(0)
    }

    pub(crate) fn stream_began(&self) {
        self.streams_open.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn stream_ended(&self) {
        self.streams_open.fetch_sub(1, Ordering::Relaxed);
    }

    /// A request passed `request_timeout`.
    pub fn request_timed_out(&self) {
        self.request_timeouts.fetch_add(1, Ordering::Relaxed);
    }

    /// A timed-out request's thread did not leave it within the grace (`lost`), or left it
    /// at last (`!lost`).
    pub fn thread_lost(&self, lost: bool) {
        self.threads_lost
            .fetch_add(if lost { 1 } else { -1 }, Ordering::Relaxed);
    }

    /// A response head with this status went out (103 Early Hints and 100 Continue are not
    /// counted by their callers; a status outside 100..=599 is ignored).
    pub fn response(&self, status: u16) {
        if let Some(class) = usize::from(status / 100)
            .checked_sub(1)
            .and_then(|i| self.responses.get(i))
        {
            class.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn read(&self, n: usize) {
        self.reactor.bytes_in.fetch_add(n as u64, Ordering::Relaxed);
    }

    pub fn wrote(&self, n: usize) {
        self.bytes_out.fetch_add(n as u64, Ordering::Relaxed);
    }

    pub fn connection_opened(&self) {
        self.reactor
            .connections_accepted
            .fetch_add(1, Ordering::Relaxed);
        let open = self
            .reactor
            .connections_open
            .fetch_add(1, Ordering::Relaxed)
            + 1;
        self.reactor
            .reactor_max
            .fetch_max(u64::try_from(open).unwrap_or(0), Ordering::Relaxed);
    }

    pub fn connection_closed(&self) {
        self.reactor
            .connections_open
            .fetch_sub(1, Ordering::Relaxed);
    }

    /// The queue holds `backlog` requests now.
    pub fn backlog_seen(&self, backlog: usize) {
        self.reactor
            .backlog_max
            .fetch_max(backlog as u64, Ordering::Relaxed);
    }

    /// Reads every counter. With `reset_max`, the two highs restart from the current values
    /// (`backlog_now`, the connections open) once read.
    pub fn snapshot(&self, backlog_now: usize, reset_max: bool) -> Snapshot {
        let open =
            u64::try_from(self.reactor.connections_open.load(Ordering::Relaxed)).unwrap_or(0);
        let (backlog_max, reactor_max) = if reset_max {
            (
                self.reactor
                    .backlog_max
                    .swap(backlog_now as u64, Ordering::Relaxed),
                self.reactor.reactor_max.swap(open, Ordering::Relaxed),
            )
        } else {
            (
                self.reactor.backlog_max.load(Ordering::Relaxed),
                self.reactor.reactor_max.load(Ordering::Relaxed),
            )
        };
        let mut responses = [0u64; 5];
        for (r, c) in responses.iter_mut().zip(&self.responses) {
            *r = c.load(Ordering::Relaxed);
        }
        Snapshot {
            responses,
            request_duration: self.request_duration.snapshot(),
            queue_time: self.queue_time.snapshot(),
            bytes_in: self.reactor.bytes_in.load(Ordering::Relaxed),
            bytes_out: self.bytes_out.load(Ordering::Relaxed),
            connections_open: open,
            connections_accepted: self.reactor.connections_accepted.load(Ordering::Relaxed),
            // A high is never below what is there now.
            backlog_max: backlog_max.max(backlog_now as u64),
            reactor_max: reactor_max.max(open),
            request_timeouts: self.request_timeouts.load(Ordering::Relaxed),
            threads_lost: u64::try_from(self.threads_lost.load(Ordering::Relaxed)).unwrap_or(0),
        }
    }

    /// Back to zero: a worker forked from another serving process starts its own count.
    pub fn reset(&self) {
        for c in &self.responses {
            c.store(0, Ordering::Relaxed);
        }
        self.request_duration.reset();
        self.queue_time.reset();
        for c in [
            &self.reactor.bytes_in,
            &self.bytes_out,
            &self.reactor.connections_accepted,
            &self.reactor.backlog_max,
            &self.reactor.reactor_max,
            &self.request_timeouts,
        ] {
            c.store(0, Ordering::Relaxed);
        }
        self.reactor.connections_open.store(0, Ordering::Relaxed);
        self.threads_lost.store(0, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_in_both_units_agree() {
        for (micros, secs) in BOUNDS_MICROS.iter().zip(BOUNDS_SECONDS) {
            assert_eq!(*micros, (secs * 1e6).round() as u64);
        }
    }

    #[test]
    fn histogram_buckets_are_inclusive_and_cumulative() {
        let h = Histogram::default();
        h.observe(Duration::from_micros(1_000)); // <= 0.001
        h.observe(Duration::from_micros(1_001)); // <= 0.0025
        h.observe(Duration::from_millis(300)); // <= 0.5
        h.observe(Duration::from_secs(11)); // +Inf
        let s = h.snapshot();
        assert_eq!(s.counts[0], 1);
        assert_eq!(s.counts[1], 2);
        assert_eq!(s.counts[7], 2);
        assert_eq!(s.counts[8], 3);
        assert_eq!(s.counts[12], 3);
        assert_eq!(s.counts[13], 4);
        assert!((s.sum - 11.302_001).abs() < 1e-9, "{}", s.sum);
        assert!(s.counts.windows(2).all(|w| w[0] <= w[1]));
    }

    #[test]
    fn responses_by_class() {
        let m = Metrics::default();
        for status in [100, 200, 204, 301, 404, 400, 500, 503, 599, 0, 99, 600, 999] {
            m.response(status);
        }
        assert_eq!(m.snapshot(0, false).responses, [1, 2, 1, 2, 3]);
    }

    #[test]
    fn highs_reset_to_the_current_value_only_when_asked() {
        let m = Metrics::default();
        m.connection_opened();
        m.connection_opened();
        m.connection_opened();
        m.connection_closed();
        m.connection_closed();
        m.backlog_seen(7);
        m.backlog_seen(3);
        let s = m.snapshot(2, false);
        assert_eq!((s.connections_open, s.connections_accepted), (1, 3));
        assert_eq!((s.backlog_max, s.reactor_max), (7, 3));
        assert_eq!(m.snapshot(2, true).backlog_max, 7);
        let s = m.snapshot(2, false);
        assert_eq!((s.backlog_max, s.reactor_max), (2, 1));
        // A high is never below what is there now.
        assert_eq!(m.snapshot(5, false).backlog_max, 5);
    }

    #[test]
    fn bytes_and_reset() {
        let m = Metrics::default();
        m.read(10);
        m.wrote(20);
        m.wrote(5);
        m.response(200);
        m.queue_time.observe(Duration::from_millis(1));
        m.request_timed_out();
        m.thread_lost(true);
        m.thread_lost(true);
        m.thread_lost(false);
        let s = m.snapshot(0, false);
        assert_eq!((s.bytes_in, s.bytes_out), (10, 25));
        assert_eq!((s.request_timeouts, s.threads_lost), (1, 1));
        m.reset();
        assert_eq!(m.snapshot(0, false), Snapshot::default());
    }
}
