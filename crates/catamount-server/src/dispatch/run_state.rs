//! Whether a pool thread is asleep right now, from the kernel's own books.
//!
//! A thread serving a request is, at any instant, either running (on a CPU or ready for one)
//! or asleep in a system call: blocked in the app's I/O, a sleep, a lock, or waiting for the
//! GVL. `/proc/thread-self/stat` shows which (`R` against `S`/`D`). Each pool thread opens its
//! own file when it joins the pool (the path names the calling thread, and the open file keeps
//! naming it); any thread may then read it, one `pread` of a few dozen bytes.

use std::fs::File;
use std::os::unix::fs::FileExt;

/// A handle on one thread's run state.
#[derive(Debug)]
pub(crate) struct RunState {
    stat: File,
}

impl RunState {
    /// The calling thread's run state; None where the kernel does not show it (no `/proc`).
    pub(crate) fn of_current_thread() -> Option<RunState> {
        let stat = File::open("/proc/thread-self/stat").ok()?;
        let probe = RunState { stat };
        probe.read().map(|_| probe)
    }

    /// Whether the thread is asleep (`S` or `D`). A file that stopped answering (the thread is
    /// gone) counts as awake: that never makes another thread join on a guess.
    pub(crate) fn asleep(&self) -> bool {
        matches!(self.read(), Some(b'S' | b'D'))
    }

    fn read(&self) -> Option<u8> {
        // "tid (comm) S ...": comm is at most 15 bytes, so the state is within the first 40.
        let mut buf = [0u8; 64];
        let n = self.stat.read_at(&mut buf, 0).ok()?;
        state_letter(buf.get(..n)?)
    }
}

/// The state letter of a `stat` line: the field after the command name, which is in
/// parentheses and may itself hold spaces and parentheses (so the last `)` ends it).
fn state_letter(line: &[u8]) -> Option<u8> {
    let close = line.iter().rposition(|&b| b == b')')?;
    match line.get(close + 1..close + 3)? {
        [b' ', letter] if letter.is_ascii_alphabetic() => Some(*letter),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_letter_after_the_command_name() {
        assert_eq!(state_letter(b"4242 (ruby) S 1 2 3"), Some(b'S'));
        assert_eq!(state_letter(b"7 (a) b) (c) R 0"), Some(b'R'));
        assert_eq!(state_letter(b"7 (worker 1) D"), Some(b'D'));
        assert_eq!(state_letter(b"7 (ruby) "), None, "cut short");
        assert_eq!(state_letter(b"7 (ruby)S 1"), None);
        assert_eq!(state_letter(b"7 ruby S 1"), None, "no command name");
        assert_eq!(state_letter(b""), None);
    }

    #[test]
    fn sees_a_thread_sleep_and_run() {
        let (tx, rx) = std::sync::mpsc::channel();
        let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
        let sleeper = std::thread::spawn(move || {
            let _ = tx.send(RunState::of_current_thread());
            let _ = go_rx.recv();
        });
        let Ok(Some(probe)) = rx.recv() else {
            eprintln!("no /proc/thread-self/stat here: nothing to read");
            return;
        };
        // The thread is parked in recv(): asleep, once it got there (bounded wait).
        let asleep = (0..2000).any(|_| {
            std::thread::sleep(std::time::Duration::from_millis(1));
            probe.asleep()
        });
        assert!(asleep, "a thread blocked in recv() never showed as asleep");
        let _ = go_tx.send(());
        let _ = sleeper.join();
        // join() returns once the kernel clears the thread's id word, which is part-way
        // through its exit: for a moment the task can still show `S`/`D`. Once gone, its file
        // stops answering (bounded wait).
        let awake = (0..2000).any(|_| {
            std::thread::sleep(std::time::Duration::from_millis(1));
            !probe.asleep()
        });
        assert!(awake, "a finished thread counts as awake");
        let me = RunState::of_current_thread();
        assert!(me.is_some_and(|me| !me.asleep()), "the reading thread runs");
    }
}
