//! What the accept loop does when taking a connection fails: retry at once, or back off.
//!
//! Some errors belong to the one connection being taken (it was aborted or reset before we got
//! to it, or Linux reports a network error already pending on it): the next pending connection
//! is fine, so the loop goes on at once. Every other error is about the process or the machine
//! (out of descriptors, kernel memory or buffers, a security module saying no): retrying at once
//! would fail the same way and spin the reactor thread at 100% CPU while the connections already
//! accepted wait for it. Those back off, longer each time in a row, up to a cap, so the server
//! notices quickly when the condition passes but never spins. A run of those is logged once, at
//! its first error, and its end once (`Listen loop: accepting again`): a server out of
//! descriptors fails an accept every second for as long as that lasts, and a line each time
//! would bury what the log is for.

use std::io;
use std::time::{Duration, Instant};

use rustix::io::Errno;

/// The first back-off after a resource error.
pub(super) const FIRST_BACKOFF: Duration = Duration::from_millis(10);
/// The longest back-off: a server out of descriptors still accepts within a second of one
/// being freed.
pub(super) const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// A run of resource errors that begins this soon after the last one logged is not logged (a
/// process hovering at its descriptor limit fails and succeeds in turn); the next line that is
/// says how many failed unlogged.
pub(super) const LOG_AGAIN_AFTER: Duration = Duration::from_secs(60);

/// What to do after a failed accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum AfterError {
    /// The error was this connection's: take the next one now (nothing logged).
    Retry,
    /// The process or the machine is short of something: log, then wait this long.
    BackOff(Duration),
}

/// Decides for the `failures_in_a_row`-th consecutive failed accept (1 for the first).
pub(super) fn after_accept_error(e: &io::Error, failures_in_a_row: u32) -> AfterError {
    if is_per_connection(e) {
        return AfterError::Retry;
    }
    // 10 ms, 20 ms, 40 ms, ... doubling up to the cap.
    let doublings = failures_in_a_row.saturating_sub(1).min(16);
    let wait = FIRST_BACKOFF.saturating_mul(1u32 << doublings);
    AfterError::BackOff(wait.min(MAX_BACKOFF))
}

/// The accept loop's count of resource errors in a row, which sets how long it backs off, and
/// what of them was logged.
#[derive(Debug, Default)]
pub(super) struct AcceptErrors {
    in_a_row: u32,
    /// Resource errors of the current logged run, and since the last line (not logged).
    in_logged_run: u64,
    unlogged: u64,
    logged_at: Option<Instant>,
}

impl AcceptErrors {
    /// A connection was taken: the next resource error starts from the shortest back-off.
    /// Some(n) when this ends a logged run of errors: n accepts failed in it (worth a line).
    pub(super) fn succeeded(&mut self) -> Option<u64> {
        self.in_a_row = 0;
        Some(std::mem::take(&mut self.in_logged_run)).filter(|&n| n > 0)
    }

    /// Called for each resource error (after [`after`](Self::after) said back off), at `now`:
    /// the line to log, if this error begins a run that is to be logged (the first error of a
    /// run, or the first one `LOG_AGAIN_AFTER` past the last line when runs came close). The line names the
    /// error and the failed accepts not logged since the last line, if any.
    pub(super) fn line(&mut self, e: &io::Error, wait: Duration, now: Instant) -> Option<String> {
        if self.in_logged_run > 0 {
            self.in_logged_run += 1;
            return None;
        }
        let quiet = self
            .logged_at
            .is_some_and(|at| now.saturating_duration_since(at) < LOG_AGAIN_AFTER);
        if quiet {
            self.unlogged += 1;
            return None;
        }
        self.logged_at = Some(now);
        self.in_logged_run = 1;
        let unlogged = match std::mem::take(&mut self.unlogged) {
            0 => String::new(),
            n => format!("; {n} more failed unlogged since the last line"),
        };
        Some(format!(
            "Listen loop: {e} (next accept in {wait:?}, retried at most every {MAX_BACKOFF:?}; logged once until it accepts again{unlogged})"
        ))
    }

    /// What to do after `e`. Only resource errors count in a row; a per-connection one (an
    /// aborted connection) says the process could accept, so it starts the count again: a
    /// burst of those and then one EMFILE waits the shortest back-off, not the longest.
    pub(super) fn after(&mut self, e: &io::Error) -> AfterError {
        let next = after_accept_error(e, self.in_a_row.saturating_add(1));
        self.in_a_row = match next {
            AfterError::Retry => 0,
            AfterError::BackOff(_) => self.in_a_row.saturating_add(1),
        };
        next
    }
}

/// Errors that concern only the connection being accepted. accept(2) on Linux: "already-pending
/// network errors on the new socket" are reported by accept and should be treated like EAGAIN
/// (ENETDOWN, EPROTO, ENOPROTOOPT, EHOSTDOWN, ENONET, EHOSTUNREACH, EOPNOTSUPP, ENETUNREACH);
/// ECONNABORTED and ECONNRESET: the client left before we took it; EINTR: a signal, nothing
/// wrong. EPERM (a firewall rule) is left to back off: a rule that refuses one connection
/// usually refuses the next, and logging each at full speed would flood the log.
const PER_CONNECTION: [Errno; 11] = [
    Errno::CONNABORTED,
    Errno::CONNRESET,
    Errno::INTR,
    Errno::PROTO,
    Errno::NETDOWN,
    Errno::NOPROTOOPT,
    Errno::HOSTDOWN,
    Errno::NONET,
    Errno::HOSTUNREACH,
    Errno::OPNOTSUPP,
    Errno::NETUNREACH,
];

fn is_per_connection(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
    ) || Errno::from_io_error(e).is_some_and(|errno| PER_CONNECTION.contains(&errno))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(errno: Errno) -> io::Error {
        io::Error::from_raw_os_error(errno.raw_os_error())
    }

    #[test]
    fn per_connection_errors_are_retried_at_once() {
        for errno in PER_CONNECTION.into_iter().chain([Errno::AGAIN]) {
            for n in [1, 5, 1000] {
                assert_eq!(
                    after_accept_error(&os(errno), n),
                    AfterError::Retry,
                    "{errno}"
                );
            }
        }
    }

    #[test]
    fn resource_errors_back_off() {
        for errno in [
            Errno::MFILE,
            Errno::NFILE,
            Errno::NOBUFS,
            Errno::NOMEM,
            Errno::PERM,
            Errno::INVAL,
            Errno::BADF,
        ] {
            assert_eq!(
                after_accept_error(&os(errno), 1),
                AfterError::BackOff(FIRST_BACKOFF),
                "{errno}"
            );
        }
        // Not an OS error at all (e.g. registering the socket failed): back off too.
        let other = io::Error::other("registration failed");
        assert!(matches!(
            after_accept_error(&other, 1),
            AfterError::BackOff(_)
        ));
    }

    #[test]
    fn the_back_off_doubles_up_to_its_cap() {
        let waits: Vec<_> = [1, 2, 3, 4, 7, 8, 100, u32::MAX]
            .iter()
            .map(|&n| after_accept_error(&os(Errno::NOBUFS), n))
            .collect();
        let ms = |n| AfterError::BackOff(Duration::from_millis(n));
        assert_eq!(
            waits,
            vec![
                ms(10),
                ms(20),
                ms(40),
                ms(80),
                ms(640),
                AfterError::BackOff(MAX_BACKOFF),
                AfterError::BackOff(MAX_BACKOFF),
                AfterError::BackOff(MAX_BACKOFF),
            ]
        );
    }

    #[test]
    fn only_resource_errors_count_in_a_row() {
        let mut errors = AcceptErrors::default();
        for _ in 0..20 {
            assert_eq!(errors.after(&os(Errno::CONNABORTED)), AfterError::Retry);
        }
        assert_eq!(
            errors.after(&os(Errno::MFILE)),
            AfterError::BackOff(FIRST_BACKOFF),
            "a burst of aborted connections does not lengthen the back-off"
        );
        assert_eq!(
            errors.after(&os(Errno::MFILE)),
            AfterError::BackOff(FIRST_BACKOFF * 2)
        );
        errors.after(&os(Errno::CONNRESET));
        assert_eq!(
            errors.after(&os(Errno::MFILE)),
            AfterError::BackOff(FIRST_BACKOFF)
        );
        errors.after(&os(Errno::MFILE));
        errors.succeeded();
        assert_eq!(
            errors.after(&os(Errno::NFILE)),
            AfterError::BackOff(FIRST_BACKOFF)
        );
    }

    /// Feeds `n` EMFILE errors at `now`; returns how many lines they would log.
    fn fail(errors: &mut AcceptErrors, n: usize, now: Instant) -> Vec<String> {
        (0..n)
            .filter_map(|_| match errors.after(&os(Errno::MFILE)) {
                AfterError::BackOff(wait) => errors.line(&os(Errno::MFILE), wait, now),
                AfterError::Retry => None,
            })
            .collect()
    }

    #[test]
    fn a_run_of_resource_errors_is_logged_once_and_its_end_once() {
        let t0 = Instant::now();
        let mut errors = AcceptErrors::default();
        let lines = fail(&mut errors, 100, t0);
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(lines[0].starts_with("Listen loop: "), "{}", lines[0]);
        assert!(!lines[0].contains("unlogged"), "{}", lines[0]);
        assert_eq!(
            errors.succeeded(),
            Some(100),
            "the end of the run, with its count"
        );
        assert_eq!(errors.succeeded(), None, "said once");
        // A process hovering at its limit: runs close together are not logged...
        for _ in 0..5 {
            assert!(fail(&mut errors, 3, t0 + Duration::from_secs(1)).is_empty());
            assert_eq!(errors.succeeded(), None);
        }
        // ...until a minute after the last line; that one counts what went unlogged.
        let lines = fail(&mut errors, 2, t0 + LOG_AGAIN_AFTER);
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(lines[0].contains("15 more failed unlogged"), "{}", lines[0]);
        assert_eq!(errors.succeeded(), Some(2));
    }

    #[test]
    fn a_long_quiet_run_is_logged_once_the_minute_is_over() {
        let t0 = Instant::now();
        let mut errors = AcceptErrors::default();
        assert_eq!(fail(&mut errors, 1, t0).len(), 1);
        errors.succeeded();
        assert!(fail(&mut errors, 10, t0 + Duration::from_secs(30)).is_empty());
        assert_eq!(
            fail(&mut errors, 10, t0 + LOG_AGAIN_AFTER).len(),
            1,
            "a run that began in the quiet minute is logged once it is over"
        );
    }

    #[test]
    fn per_connection_errors_log_nothing() {
        let mut errors = AcceptErrors::default();
        for _ in 0..10 {
            assert_eq!(errors.after(&os(Errno::CONNABORTED)), AfterError::Retry);
        }
        assert_eq!(errors.succeeded(), None);
    }
}
