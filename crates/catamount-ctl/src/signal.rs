//! The pid's path: a signal to the server, or `status`'s probe. Only a real process id (1 or
//! more) is ever signalled: 0 and negative ids name process groups, which pumactl signals when a
//! pidfile is empty or `-p` is not a number.

use rustix::io::Errno;
use rustix::process::{kill_process, test_kill_process, Pid, Signal};

/// The signals commands are carried by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Sig {
    Term,
    Quit,
    Hup,
    Usr1,
    Usr2,
    Urg,
    Ttin,
    Ttou,
    /// Thread backtraces: BSD's INFO, which Linux lacks; PWR stands in (as in Puma 8, and what
    /// Catamount traps).
    Info,
}

impl Sig {
    fn signal(self) -> Signal {
        match self {
            Sig::Term => Signal::TERM,
            Sig::Quit => Signal::QUIT,
            Sig::Hup => Signal::HUP,
            Sig::Usr1 => Signal::USR1,
            Sig::Usr2 => Signal::USR2,
            Sig::Urg => Signal::URG,
            Sig::Ttin => Signal::TTIN,
            Sig::Ttou => Signal::TTOU,
            Sig::Info => Signal::POWER,
        }
    }
}

fn process(pid: i64) -> Option<Pid> {
    i32::try_from(pid)
        .ok()
        .filter(|p| *p > 0)
        .and_then(Pid::from_raw)
}

/// Sends `sig` to `pid`; an id that names no single process is "no such process".
pub(crate) fn send(pid: i64, sig: Sig) -> Result<(), Errno> {
    kill_process(process(pid).ok_or(Errno::SRCH)?, sig.signal())
}

#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Probe {
    Alive,
    Gone,
    /// It exists but may not be signalled (another user's), or the probe failed otherwise.
    Unreachable,
}

/// Signal 0: is `pid` running?
pub(crate) fn probe(pid: i64) -> Probe {
    match process(pid).map(test_kill_process) {
        Some(Ok(())) => Probe::Alive,
        None | Some(Err(Errno::SRCH)) => Probe::Gone,
        Some(Err(_)) => Probe::Unreachable,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_ids_are_never_signalled() {
        for pid in [0, -1, -5, i64::from(i32::MAX) + 1, i64::MIN] {
            assert_eq!(send(pid, Sig::Term), Err(Errno::SRCH), "{pid}");
            assert_eq!(probe(pid), Probe::Gone, "{pid}");
        }
    }

    #[test]
    fn this_process_is_alive() {
        assert_eq!(probe(i64::from(std::process::id())), Probe::Alive);
    }
}
