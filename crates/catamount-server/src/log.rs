//! The server's log lines: errors on stderr in Puma's shape (`<time> <context>: <detail>`),
//! access lines on stdout, and the writer thread that puts them there.
//!
//! Once [`start_writer`] ran in this process, a line is never written by the thread that logs
//! it: it goes into a bounded queue ([`QUEUE_LIMIT`] bytes) that one writer thread drains. A
//! pool thread (holding Ruby's GVL) or the reactor therefore never waits for a log reader: when
//! stdout or stderr is a pipe nobody reads, serving goes on, lines past the bound are dropped
//! and counted, and the writer reports the count on stderr once it can write again. Before
//! that (and in a process forked since), lines are written directly, as they always were.
//!
//! Writes use a fresh duplicate of descriptor 1 or 2 per piece (descriptor 1 or 2 itself when
//! the process has none left to duplicate), never the standard library's `Stdout` lock: a
//! writer thread stuck in `write(2)` then holds no lock anyone else (or a forked child, which
//! inherits locks but not threads) could wait for, and a descriptor the launcher reopens
//! (`stdout_redirect`, HUP) is followed at the next piece.
//!
//! Lines keep their order across the two streams (with `2>&1` they share one pipe): a batch is
//! written as runs of consecutive lines of one stream, in queue order, each run in pieces of
//! whole lines of at most `PIPE_BUF` bytes where the lines allow, which the kernel writes to a
//! pipe in one piece: the app's own `puts` cannot land inside one of our lines.

use std::collections::VecDeque;
use std::io::Write;
use std::os::fd::AsFd;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The most bytes of lines waiting for the writer or being written; lines past it are dropped
/// and counted.
pub const QUEUE_LIMIT: usize = 1 << 20;

/// Pieces up to this size are written to a pipe in one piece (POSIX `PIPE_BUF` on Linux).
const PIPE_BUF: usize = 4096;

/// Writes one line to stderr, prefixed with the time (UTC, as Ruby prints `Time.now.utc`).
pub fn error(message: &str) {
    let line = format!("{} {message}\n", timestamp(SystemTime::now()));
    emit(Stream::Err, line);
}

/// Writes one line (already ending in a newline) to stdout.
pub fn stdout(line: &str) {
    emit(Stream::Out, line.to_string());
}

/// A `- ` debug line on stdout, as the launcher prints them (only when `debug` is on: the
/// caller checks).
pub fn debug(line: &str) {
    stdout(&format!("- {line}\n"));
}

/// The debug line for a TLS handshake that did not complete: who, and why in words (`error`
/// None: it timed out), plain HTTP sent to the TLS port named as such.
pub fn handshake_failed(peer: &crate::request::Peer, error: Option<std::io::Error>) -> String {
    let why = match error {
        None => "no handshake within first_data_timeout".to_string(),
        Some(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            "the client closed the connection".to_string()
        }
        Some(e) => match e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
            Some(rustls::Error::InvalidMessage(rustls::InvalidMessage::InvalidContentType)) => {
                "not TLS (plain HTTP sent to the TLS port?)".to_string()
            }
            Some(tls) => tls.to_string(),
            None => e.to_string(),
        },
    };
    format!("TLS handshake failed, peer: {}: {why}", peer.ip_string())
}

/// Which descriptor a line is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    Out,
    Err,
}

/// Queues `line` (ending in a newline) for `stream`; written at once when no writer runs.
pub fn emit(stream: Stream, line: String) {
    match writer() {
        Some(queue) => {
            queue.push(stream, line);
        }
        None => write_now(stream, line.as_bytes()),
    }
}

/// Starts this process's writer thread (once per process: a forked child starts its own).
/// Call it where the thread should inherit a signal mask that leaves signals to Ruby.
pub fn start_writer() -> std::io::Result<()> {
    let mut slot = registry();
    let pid = std::process::id();
    if slot.as_ref().is_some_and(|(owner, _)| *owner == pid) {
        return Ok(());
    }
    let queue = Arc::new(Queue::new(QUEUE_LIMIT));
    let drained = queue.clone();
    std::thread::Builder::new()
        .name("catamount-log".into())
        .spawn(move || drained.run())?;
    *slot = Some((pid, queue));
    Ok(())
}

/// Waits until every line queued so far is written, or `limit` passed; true when written.
/// (For a process about to exit, so its last lines are not lost.)
pub fn flush(limit: Duration) -> bool {
    match writer() {
        Some(queue) => queue.wait_written(Instant::now() + limit),
        None => true,
    }
}

/// [`flush`] for callers that log many lines in a row (the launcher's, one wait each): once a
/// wait ran out, the next ones return at once until the writer has written something, so a
/// stuck reader costs a stop one `limit`, not one per line.
pub fn flush_unless_stuck(limit: Duration) -> bool {
    match writer() {
        Some(queue) => queue.wait_written_unless_stuck(Instant::now() + limit),
        None => true,
    }
}

/// Whether this process runs a writer thread (lines are queued, not written by the caller).
pub fn has_writer() -> bool {
    writer().is_some()
}

/// The running writer's queue, if this process started one.
fn writer() -> Option<Arc<Queue>> {
    let slot = registry();
    let pid = std::process::id();
    slot.as_ref()
        .filter(|(owner, _)| *owner == pid)
        .map(|(_, queue)| queue.clone())
}

fn registry() -> MutexGuard<'static, Option<(u32, Arc<Queue>)>> {
    static REGISTRY: Mutex<Option<(u32, Arc<Queue>)>> = Mutex::new(None);
    REGISTRY.lock().unwrap_or_else(|p| p.into_inner())
}

/// Writes `bytes` to the stream through a duplicate of its descriptor (see the module docs);
/// errors are dropped, as a log line has nowhere else to go.
fn write_now(stream: Stream, bytes: &[u8]) {
    let fd = match stream {
        Stream::Out => std::io::stdout().as_fd().try_clone_to_owned(),
        Stream::Err => std::io::stderr().as_fd().try_clone_to_owned(),
    };
    match fd {
        Ok(fd) => {
            let _ = std::fs::File::from(fd).write_all(bytes);
        }
        // No descriptor left to duplicate (the process is out of them: the one time its
        // lines matter most): written through the descriptor itself, still without the
        // standard library's lock (see the module docs).
        Err(_) => match stream {
            Stream::Out => write_all_to(std::io::stdout().as_fd(), bytes),
            Stream::Err => write_all_to(std::io::stderr().as_fd(), bytes),
        },
    }
}

/// Writes all of `bytes` to `fd` (EINTR retried), dropping the rest on any other error.
fn write_all_to(fd: std::os::fd::BorrowedFd<'_>, mut bytes: &[u8]) {
    while !bytes.is_empty() {
        match rustix::io::write(fd, bytes) {
            Ok(0) => return,
            Ok(n) => bytes = bytes.get(n..).unwrap_or_default(),
            Err(rustix::io::Errno::INTR) => {}
            Err(_) => return,
        }
    }
}

/// A batch as the pieces to write, in order: runs of consecutive lines of one stream, each cut
/// into pieces of whole lines of at most [`PIPE_BUF`] bytes (a longer line is a piece alone).
fn pieces(lines: &[(Stream, String)]) -> Vec<(Stream, Vec<u8>)> {
    let mut out: Vec<(Stream, Vec<u8>)> = Vec::new();
    for (stream, line) in lines {
        match out.last_mut() {
            Some((last, piece)) if last == stream && piece.len() + line.len() <= PIPE_BUF => {
                piece.extend_from_slice(line.as_bytes());
            }
            _ => out.push((*stream, line.as_bytes().to_vec())),
        }
    }
    out
}

/// The lines waiting for the writer thread.
struct Queue {
    state: Mutex<Pending>,
    /// Lines arrived (for the writer) or a batch was written (for `wait_written`).
    changed: Condvar,
    limit: usize,
}

#[derive(Default)]
struct Pending {
    lines: VecDeque<(Stream, String)>,
    /// The bytes of the lines queued and of the batch being written.
    bytes: usize,
    dropped: u64,
    /// Lines ever queued, and lines the writer has finished writing (or dropped).
    queued: u64,
    done: u64,
    /// `done` when a [`Queue::wait_written_unless_stuck`] last ran out of time.
    stuck_at: Option<u64>,
}

impl Queue {
    fn new(limit: usize) -> Queue {
        Queue {
            state: Mutex::new(Pending::default()),
            changed: Condvar::new(),
            limit,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Pending> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues a line, or counts it as dropped when the queue is full; true when queued.
    fn push(&self, stream: Stream, line: String) -> bool {
        let mut st = self.lock();
        st.queued += 1;
        if st.bytes + line.len() > self.limit {
            st.dropped += 1;
            st.done += 1;
            return false;
        }
        st.bytes += line.len();
        st.lines.push_back((stream, line));
        drop(st);
        self.changed.notify_all();
        true
    }

    /// Takes everything queued (waiting for something first): the lines, the count of lines
    /// dropped since the last batch, and the mark `wait_written` compares against. The lines
    /// count against the bound until [`Queue::batch_written`].
    fn next_batch(&self) -> (Vec<(Stream, String)>, u64, u64) {
        let mut st = self.lock();
        while st.lines.is_empty() && st.dropped == 0 {
            st = self.changed.wait(st).unwrap_or_else(|p| p.into_inner());
        }
        let lines: Vec<_> = st.lines.drain(..).collect();
        let dropped = std::mem::take(&mut st.dropped);
        let mark = st.queued;
        (lines, dropped, mark)
    }

    /// The batch taken with `mark`, of `bytes` bytes, is written.
    fn batch_written(&self, mark: u64, bytes: usize) {
        let mut st = self.lock();
        st.done = mark;
        st.bytes = st.bytes.saturating_sub(bytes);
        drop(st);
        self.changed.notify_all();
    }

    fn wait_written(&self, deadline: Instant) -> bool {
        let mut st = self.lock();
        let target = st.queued;
        while st.done < target {
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                return false;
            };
            st = self
                .changed
                .wait_timeout(st, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        true
    }

    fn wait_written_unless_stuck(&self, deadline: Instant) -> bool {
        {
            let mut st = self.lock();
            if st.stuck_at == Some(st.done) && st.done < st.queued {
                return false;
            }
            st.stuck_at = None;
        }
        let written = self.wait_written(deadline);
        if !written {
            let mut st = self.lock();
            st.stuck_at = Some(st.done);
        }
        written
    }

    /// The writer thread: a batch at a time, in order (see [`pieces`]); the note on dropped
    /// lines first, as they were dropped before any line of the batch was written.
    fn run(&self) {
        loop {
            let (lines, dropped, mark) = self.next_batch();
            let bytes = lines.iter().map(|(_, line)| line.len()).sum();
            if dropped > 0 {
                let note = format!(
                    "{} {dropped} log line(s) dropped: stdout or stderr was not being read\n",
                    timestamp(SystemTime::now())
                );
                write_now(Stream::Err, note.as_bytes());
            }
            for (stream, piece) in pieces(&lines) {
                write_now(stream, &piece);
            }
            self.batch_written(mark, bytes);
        }
    }
}

/// `23/Nov/2026:05:44:18 +0000`, the Common Log Format time.
pub fn common_log_time(at: SystemTime) -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let secs = at
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    let month = MONTHS
        .get(m.saturating_sub(1) as usize)
        .copied()
        .unwrap_or("Jan");
    format!(
        "{d:02}/{month}/{y:04}:{:02}:{:02}:{:02} +0000",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// `2026-11-23 05:44:18 +0000`
pub fn timestamp(at: SystemTime) -> String {
    let secs = at
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} +0000",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian date (the well-known era-based conversion).
pub(crate) fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_failed_handshake_says_who_and_why() {
        let peer =
            crate::request::Peer::Ip("127.0.0.1:4000".parse().unwrap_or_else(|e| panic!("{e}")));
        let tls = |e: rustls::Error| Some(std::io::Error::new(std::io::ErrorKind::InvalidData, e));
        assert_eq!(
            handshake_failed(
                &peer,
                tls(rustls::Error::InvalidMessage(
                    rustls::InvalidMessage::InvalidContentType
                ))
            ),
            "TLS handshake failed, peer: 127.0.0.1: not TLS (plain HTTP sent to the TLS port?)"
        );
        assert!(
            handshake_failed(&peer, tls(rustls::Error::NoCertificatesPresented))
                .ends_with(": peer sent no certificates")
        );
        assert!(
            handshake_failed(&peer, Some(std::io::ErrorKind::UnexpectedEof.into()))
                .ends_with(": the client closed the connection")
        );
        assert!(handshake_failed(&peer, None).ends_with(": no handshake within first_data_timeout"));
    }

    #[test]
    fn a_full_queue_drops_and_counts_lines_and_the_next_batch_reports_them() {
        let queue = Queue::new(10);
        assert!(queue.push(Stream::Out, "12345\n".into()));
        assert!(queue.push(Stream::Err, "abc\n".into()));
        assert!(!queue.push(Stream::Out, "too long\n".into()));
        assert!(!queue.push(Stream::Out, "no room\n".into()));
        let (lines, dropped, mark) = queue.next_batch();
        assert_eq!(
            lines,
            vec![
                (Stream::Out, "12345\n".to_string()),
                (Stream::Err, "abc\n".to_string())
            ]
        );
        assert_eq!((dropped, mark), (2, 4));
        // Taken lines count against the bound until they are written.
        assert!(!queue.push(Stream::Out, "again\n".into()));
        queue.batch_written(mark, 10);
        assert!(queue.push(Stream::Out, "again\n".into()));
    }

    #[test]
    fn a_batch_is_written_in_order_in_runs_of_one_stream_cut_at_lines() {
        let line = |stream, text: &str| (stream, text.to_string());
        let long = "y".repeat(PIPE_BUF + 1);
        let batch = vec![
            line(Stream::Out, "a\n"),
            line(Stream::Out, "b\n"),
            line(Stream::Err, "c\n"),
            line(Stream::Out, "d\n"),
            line(Stream::Out, &"x".repeat(PIPE_BUF - 2)),
            line(Stream::Out, &long),
            line(Stream::Out, "e\n"),
        ];
        let got: Vec<(Stream, usize)> = pieces(&batch)
            .into_iter()
            .map(|(stream, piece)| (stream, piece.len()))
            .collect();
        assert_eq!(
            got,
            vec![
                (Stream::Out, 4),
                (Stream::Err, 2),
                (Stream::Out, PIPE_BUF),
                (Stream::Out, PIPE_BUF + 1),
                (Stream::Out, 2),
            ]
        );
        let joined: Vec<u8> = pieces(&batch).into_iter().flat_map(|(_, p)| p).collect();
        let expected: String = batch.iter().map(|(_, l)| l.as_str()).collect();
        assert_eq!(joined, expected.into_bytes());
    }

    #[test]
    fn waiting_for_the_writer_is_bounded_and_ends_when_the_batch_is_written() {
        let queue = Queue::new(100);
        queue.push(Stream::Out, "x\n".into());
        assert!(!queue.wait_written(Instant::now() + Duration::from_millis(10)));
        let (_, _, mark) = queue.next_batch();
        queue.batch_written(mark, 2);
        assert!(queue.wait_written(Instant::now()));
    }

    #[test]
    fn after_a_wait_ran_out_the_next_ones_do_not_wait_until_the_writer_moves() {
        let queue = Queue::new(100);
        queue.push(Stream::Out, "x\n".into());
        assert!(!queue.wait_written_unless_stuck(Instant::now() + Duration::from_millis(10)));
        queue.push(Stream::Out, "y\n".into());
        // No time left would be needed to see this return: it does not wait at all.
        assert!(!queue.wait_written_unless_stuck(Instant::now() + Duration::from_secs(3600)));
        let (_, _, mark) = queue.next_batch();
        queue.batch_written(mark, 4);
        queue.push(Stream::Out, "z\n".into());
        assert!(!queue.wait_written_unless_stuck(Instant::now() + Duration::from_millis(10)));
        let (_, _, mark) = queue.next_batch();
        queue.batch_written(mark, 2);
        assert!(queue.wait_written_unless_stuck(Instant::now()));
    }

    #[test]
    fn formats_known_instants() {
        assert_eq!(timestamp(UNIX_EPOCH), "1970-01-01 00:00:00 +0000");
        let t = UNIX_EPOCH + Duration::from_secs(1_795_412_658);
        assert_eq!(timestamp(t), "2026-11-23 05:44:18 +0000");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(timestamp(leap), "2000-02-29 00:00:00 +0000");
    }
}
