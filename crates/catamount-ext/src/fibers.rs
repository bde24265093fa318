//! The fiber mode's native half (`fiber_scheduler`): a pool thread that runs several requests at
//! once, each in its own Fiber under `Catamount::FiberScheduler` (lib/catamount/fiber_scheduler.rb,
//! which owns the fibers, their timers and the loop).
//!
//! Here: taking requests from the queue (at once while the thread has requests of its own; with
//! the thread-mode wait when it has none), and the thread's one wait without the GVL while its
//! requests wait, which ends on whichever comes first: a descriptor one of its fibers waits on,
//! the earliest timer, a new request (the queue rings the thread's [`Bell`]), a wake-up from
//! another thread (`unblock`), or Ruby's interrupt.
//!
//! And what `request_timeout`'s watch needs to reach an overdue request's fiber
//! ([`FiberSignals`]): which request's fibers run on the thread right now (the watch then raises
//! into the thread, which lands in that fiber), and a list of overdue requests for the loop to
//! raise into when they wait. The same signals tell the turn ticker (crate::turns) how long the
//! running fiber has run.

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use magnus::rb_sys::AsRawValue;
use magnus::{prelude::*, Error, Fiber, RArray, Ruby, Value};

use catamount_server::{Doorbell, Idling, Job, Seat, Server, Waiter};

use crate::ffi;
use crate::server::{blocking, next_job};
use crate::timeout::Watch;
use crate::turns;

/// A thread's wake-up: a socket pair whose read end is in every wait of the thread.
#[derive(Debug)]
struct Bell {
    rx: UnixStream,
    tx: UnixStream,
    /// Set while the thread waits and may take a request: only then does a queued request
    /// ring (a busy pool rings nobody).
    armed: AtomicBool,
}

impl Bell {
    fn new() -> std::io::Result<Bell> {
        let (rx, tx) = UnixStream::pair()?;
        rx.set_nonblocking(true)?;
        tx.set_nonblocking(true)?;
        Ok(Bell {
            rx,
            tx,
            armed: AtomicBool::new(false),
        })
    }

    /// Wakes the thread's wait, or makes its next one return at once. A full socket buffer
    /// means it is rung already.
    fn ring_always(&self) {
        let _ = (&self.tx).write(&[1]);
    }

    fn drain(&self) {
        let mut buf = [0u8; 64];
        while matches!((&self.rx).read(&mut buf), Ok(n) if n == buf.len()) {}
    }
}

impl Doorbell for Bell {
    fn ring(&self) {
        if self.armed.load(Ordering::SeqCst) {
            self.ring_always();
        }
    }

    fn closing(&self) {
        self.ring_always();
    }
}

/// A fiber-mode thread's side of `request_timeout` (shared with the watch's slots).
#[derive(Debug)]
pub(crate) struct FiberSignals {
    /// The request fiber whose fibers run on the thread now (its raw VALUE, compared only),
    /// 0 while the loop runs. Set by `run` right before the switch and cleared by `park`
    /// right before the switch back, both without a point where Ruby could let the GVL go
    /// between the store and the switch: so while the watch holds the GVL, a nonzero value
    /// names the fiber a `Thread#raise` into this thread would land in (or one it resumed,
    /// which passes the exception on). A fiber that ends leaves it set until the loop runs
    /// again; its request has no slot by then.
    current: AtomicUsize,
    /// Requests the watch found overdue while they were not running, as (slot, sequence,
    /// message), for the loop to raise into.
    overdue: Mutex<Vec<(usize, u64, String)>>,
    bell: Arc<Bell>,
    // The turns (crate::turns). Hints for the ticker, read without the GVL: a stale one costs a
    // job that finds nothing to do, or a turn one tick late.
    /// The fiber `run` switched to last (its raw VALUE, compared only).
    fiber: AtomicUsize,
    /// Set by `run`, cleared by each look of the ticker: the run is younger than a tick.
    fresh: AtomicBool,
    /// Other fibers of the thread were alive at the last `run` (none after `take(true)`).
    crowd: AtomicBool,
    /// Since the thread last had nothing else (`take(true)`), the running fiber made a timer or
    /// a fiber (`want_turns`), or the watch listed an overdue request: something that could be
    /// ready before the fiber waits.
    wanted: AtomicBool,
    /// The ticker found the run a tick old: the next job on this thread offers the turn.
    due: AtomicBool,
    /// The fibers inside the turn job now (raw VALUEs; several may wait there at once), and
    /// how many: `run` resuming one of them leaves `current` to the job.
    in_turn: Mutex<Vec<usize>>,
    in_turn_count: AtomicUsize,
}

impl FiberSignals {
    /// Whether `fiber`'s fibers run on the thread now (with the GVL).
    pub(crate) fn is_running(&self, fiber: usize) -> bool {
        self.current.load(Ordering::SeqCst) == fiber
    }

    /// The watch found a request of this thread overdue while it was not running: the loop
    /// raises into it when it next looks (`RbFiberWorker::overdue`).
    pub(crate) fn overdue(&self, slot: usize, seq: u64, message: String) {
        locked(&self.overdue).push((slot, seq, message));
        // A request that gave its turn and runs on alone still has its turns, to reach the loop.
        self.wanted.store(true, Ordering::Relaxed);
        self.bell.ring_always();
    }

    /// The ticker's look (without the GVL): whether the fiber running now has run since the
    /// last look while something else of the thread could be ready; if so the thread is due.
    pub(crate) fn look_for_turn(&self) -> bool {
        let fresh = self.fresh.swap(false, Ordering::Relaxed);
        let due = !fresh
            && self.current.load(Ordering::SeqCst) != 0
            && (self.crowd.load(Ordering::Relaxed) || self.wanted.load(Ordering::Relaxed));
        if due {
            self.due.store(true, Ordering::Relaxed);
        }
        due
    }

    /// The turn job, on this thread: the running request's owner if the thread is due (once:
    /// the next look decides again), None otherwise.
    pub(crate) fn turn_due(&self) -> Option<usize> {
        if !self.due.swap(false, Ordering::Relaxed) || self.fresh.load(Ordering::Relaxed) {
            return None;
        }
        let owner = self.current.load(Ordering::SeqCst);
        (owner != 0).then_some(owner)
    }

    /// Whether `fiber` is the one the loop runs now (not the loop, nor a fiber it resumed).
    pub(crate) fn runs_fiber(&self, fiber: usize) -> bool {
        self.fiber.load(Ordering::Relaxed) == fiber
    }

    /// The turn job starts in `fiber`: the watch must not raise into the thread until
    /// `end_turn`.
    pub(crate) fn begin_turn(&self, fiber: usize) {
        locked(&self.in_turn).push(fiber);
        self.in_turn_count.fetch_add(1, Ordering::Relaxed);
        self.current.store(0, Ordering::SeqCst);
    }

    /// The turn job ends in `fiber` (it resumed, or gave no turn): it runs for `owner` again.
    pub(crate) fn end_turn(&self, fiber: usize, owner: usize) {
        let mut in_turn = locked(&self.in_turn);
        if let Some(i) = in_turn.iter().position(|f| *f == fiber) {
            in_turn.swap_remove(i);
            self.in_turn_count.fetch_sub(1, Ordering::Relaxed);
        }
        drop(in_turn);
        self.current.store(owner, Ordering::SeqCst);
    }

    /// Whether `fiber` waits inside the turn job.
    fn in_turn(&self, fiber: usize) -> bool {
        self.in_turn_count.load(Ordering::Relaxed) != 0 && locked(&self.in_turn).contains(&fiber)
    }
}

fn locked<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// `Catamount::Native::FiberWorker`: one fiber-mode pool thread's place in the queue.
#[magnus::wrap(class = "Catamount::Native::FiberWorker", free_immediately, size)]
pub struct RbFiberWorker {
    server: Arc<Server>,
    /// None once the queue discharged the thread (trimmed, stopped) or `finish` ran.
    seat: Mutex<Option<Seat>>,
    waiter: Waiter,
    /// Requests taken and not yet started, oldest first: the fiber the thread starts for each
    /// takes it (`Server#serve_job`), so a request is no Ruby object of its own. Dropped
    /// unserved (the thread died first), a request closes its connection and counts as done.
    taken: Mutex<VecDeque<Box<Job>>>,
    bell: Arc<Bell>,
    /// The same bell as the queue holds it (to take it back).
    rung_by_queue: Arc<dyn Doorbell>,
    signals: Arc<FiberSignals>,
    /// `request_timeout`'s watch, if on.
    watch: Option<Arc<Watch>>,
}

impl RbFiberWorker {
    /// Books the calling thread (see `WorkQueue::thread_started`) and hangs its bell on the
    /// queue.
    pub(crate) fn new(
        ruby: &Ruby,
        server: Arc<Server>,
        watch: Option<Arc<Watch>>,
    ) -> Result<RbFiberWorker, Error> {
        let bell = Arc::new(Bell::new().map_err(|e| {
            Error::new(
                ruby.exception_runtime_error(),
                format!("fiber scheduler: no wake-up socket: {e}"),
            )
        })?);
        let rung_by_queue: Arc<dyn Doorbell> = bell.clone();
        let queue = server.queue();
        let seat = queue.thread_started();
        queue.add_doorbell(rung_by_queue.clone());
        let signals = Arc::new(FiberSignals {
            current: AtomicUsize::new(0),
            overdue: Mutex::default(),
            bell: bell.clone(),
            fiber: AtomicUsize::new(0),
            fresh: AtomicBool::new(false),
            crowd: AtomicBool::new(false),
            wanted: AtomicBool::new(false),
            due: AtomicBool::new(false),
            in_turn: Mutex::default(),
            in_turn_count: AtomicUsize::new(0),
        });
        turns::book(&signals);
        Ok(RbFiberWorker {
            server,
            seat: Mutex::new(Some(seat)),
            waiter: Waiter::new(),
            taken: Mutex::new(VecDeque::new()),
            bell,
            rung_by_queue,
            signals,
            watch,
        })
    }

    /// `take(wait)`: true when a queued request was taken (kept for the next `Server#serve_job`
    /// on this worker), nil when none is queued now beyond what idle threads are there for
    /// (`try_pop_spare`: an idle thread comes first). With `wait` (the thread has no request of
    /// its own) blocks as a thread-mode pool thread does; false then means the thread should end.
    pub fn take(ruby: &Ruby, rb_self: &Self, wait: bool) -> Result<Value, Error> {
        let queue = rb_self.server.queue();
        let mut seat = locked(&rb_self.seat);
        let Some(seat_ref) = seat.as_mut() else {
            return Ok(ruby.qfalse().as_value());
        };
        let job = if wait {
            queue.busy_again(seat_ref);
            // The thread has nothing else (its fibers all ended, its timers were dropped); the
            // fiber that takes the request itself runs on without a `run` to say so.
            rb_self.signals.crowd.store(false, Ordering::Relaxed);
            rb_self.signals.wanted.store(false, Ordering::Relaxed);
            match next_job(ruby, queue, seat_ref, &rb_self.waiter)? {
                Some(job) => Some(job),
                None => {
                    *seat = None;
                    return Ok(ruby.qfalse().as_value());
                }
            }
        } else {
            queue.try_pop_spare(seat_ref)
        };
        Ok(match job {
            Some(job) => {
                queue.busy_again(seat_ref);
                locked(&rb_self.taken).push_back(job);
                ruby.qtrue().as_value()
            }
            None => ruby.qnil().as_value(),
        })
    }

    /// `idle_in_background`: the thread has no request left, only fibers its requests scheduled
    /// (`WorkQueue::idle_in_background`). Returns the seconds after which it asks again at most
    /// (infinite: when it wakes), or nil when it leaves the pool now (stopping, or trimmed),
    /// ending those fibers.
    pub fn idle_in_background(ruby: &Ruby, rb_self: &Self) -> Value {
        let mut seat = locked(&rb_self.seat);
        let Some(seat_ref) = seat.as_mut() else {
            return ruby.qnil().as_value();
        };
        match rb_self.server.queue().idle_in_background(seat_ref) {
            Idling::Stay { again_in } => ruby
                .float_from_f64(again_in.map_or(f64::INFINITY, |t| t.as_secs_f64()))
                .as_value(),
            Idling::Leave => {
                *seat = None;
                ruby.qnil().as_value()
            }
        }
    }

    /// `queued?`: whether requests wait in the queue (for any thread).
    pub fn queued(&self) -> bool {
        self.server.queue().has_waiting()
    }

    /// The oldest request taken and not yet started, if any.
    pub(crate) fn next_taken(&self) -> Option<Box<Job>> {
        locked(&self.taken).pop_front()
    }

    pub(crate) fn server(&self) -> &Arc<Server> {
        &self.server
    }

    /// `request_timeout`'s watch, if on, and this thread's side of it.
    pub(crate) fn watch(&self) -> Option<&Arc<Watch>> {
        self.watch.as_ref()
    }

    pub(crate) fn signals(&self) -> &Arc<FiberSignals> {
        &self.signals
    }

    /// `wait(fds, events, timeout, take)`: blocks without the GVL until one of `fds` is ready
    /// for its `events` (`IO::READABLE`, `IO::PRIORITY`, `IO::WRITABLE`: poll's bits), `timeout`
    /// seconds passed (nil: no limit), `ring` was called, Ruby interrupts, or (with `take`) a
    /// request is queued. Returns each descriptor's ready events (0: not ready).
    pub fn wait(
        ruby: &Ruby,
        rb_self: &Self,
        fds: Vec<i32>,
        events: Vec<i16>,
        timeout: Option<f64>,
        take: bool,
    ) -> Result<Vec<i16>, Error> {
        let mut polled: Vec<libc::pollfd> = std::iter::once((rb_self.bell.rx.as_raw_fd(), 1))
            .chain(fds.into_iter().zip(events))
            .map(|(fd, events)| libc::pollfd {
                fd,
                events,
                revents: 0,
            })
            .collect();
        let timeout_ms = timeout_ms(timeout);
        let bell = &rb_self.bell;
        let queue = rb_self.server.queue();
        let waited = blocking(
            ruby,
            || {
                let mut timeout_ms = timeout_ms;
                if take {
                    bell.armed.store(true, Ordering::SeqCst);
                    // Queued before the bell was armed: no ring is coming for it. The
                    // descriptors are still looked at (without waiting): a thread that keeps
                    // finding work queued must not leave its waiting fibers unpolled.
                    if queue.has_spare_work() {
                        timeout_ms = 0;
                    }
                }
                let polled = ffi::poll(&mut polled, timeout_ms);
                bell.armed.store(false, Ordering::SeqCst);
                bell.drain();
                polled
            },
            &|| bell.ring_always(),
        )?;
        if let Some(Err(e)) = waited {
            return Err(Error::new(
                ruby.exception_runtime_error(),
                format!("fiber scheduler: poll failed: {e}"),
            ));
        }
        Ok(polled.iter().skip(1).map(|p| p.revents).collect())
    }

    /// `run(fiber, owner, value, alive)`: switches to `fiber` (a fiber of the request fiber
    /// `owner`) until a fiber of the thread parks or ends; returns what it passed back. `alive`:
    /// the thread's fibers alive (for the turns).
    pub fn run(
        rb_self: &Self,
        fiber: Fiber,
        owner: Value,
        value: Value,
        alive: i64,
    ) -> Result<Value, Error> {
        let signals = &rb_self.signals;
        let raw = fiber.as_raw() as usize;
        signals.fiber.store(raw, Ordering::Relaxed);
        signals.crowd.store(alive > 1, Ordering::Relaxed);
        signals.fresh.store(true, Ordering::Relaxed);
        // A fiber that gave its turn resumes inside the turn job, which names its owner running
        // again once the fiber is past its own Ruby calls there (crate::turns).
        let owner = if signals.in_turn(raw) {
            0
        } else {
            owner.as_raw() as usize
        };
        signals.current.store(owner, Ordering::SeqCst);
        let back = fiber.transfer::<_, Value>((value,));
        signals.current.store(0, Ordering::SeqCst);
        back
    }

    /// `want_turns`: the running fiber made something else of the thread (a timer, a fiber)
    /// that could be ready before it waits.
    pub fn want_turns(&self) {
        self.signals.wanted.store(true, Ordering::Relaxed);
    }

    /// `raise_into(thread, fiber, exception)` (from another Ruby thread): raises `exception` into
    /// `thread` (this worker's) if `fiber` is the one its loop runs and it is running (not
    /// waiting, not inside the turn job); true if raised. The look and the raise hold the GVL
    /// throughout, so the exception lands in that fiber (as the `request_timeout` watch's does).
    pub fn raise_into(
        rb_self: &Self,
        thread: Value,
        fiber: Value,
        exception: Value,
    ) -> Result<bool, Error> {
        let signals = &rb_self.signals;
        if signals.current.load(Ordering::SeqCst) == 0
            || !signals.runs_fiber(fiber.as_raw() as usize)
        {
            return Ok(false);
        }
        thread.funcall::<_, _, Value>("raise", (exception,))?;
        Ok(true)
    }

    /// `overdue_waiting?`: the watch listed an overdue request the loop has not taken yet.
    pub fn overdue_waiting(&self) -> bool {
        !locked(&self.signals.overdue).is_empty()
    }

    /// `park(root)`: the calling fiber gives the thread back to the loop (the root fiber);
    /// returns the value the loop resumes it with.
    pub fn park(rb_self: &Self, root: Fiber) -> Result<Value, Error> {
        rb_self.signals.current.store(0, Ordering::SeqCst);
        root.transfer::<_, Value>(())
    }

    /// `watched?`: whether `request_timeout` watches this thread's requests.
    pub fn watched(&self) -> bool {
        self.watch.is_some()
    }

    /// `overdue`: `[[fiber, message], ...]`, the requests of this thread the watch found
    /// overdue while they waited (each still on that request), for the loop to raise into.
    pub fn overdue(ruby: &Ruby, rb_self: &Self) -> Result<RArray, Error> {
        let list = ruby.ary_new();
        let found = std::mem::take(&mut *locked(&rb_self.signals.overdue));
        if let Some(watch) = rb_self.watch.as_ref() {
            for (slot, seq, message) in found {
                if let Some(fiber) = watch.raised_fiber(ruby, slot, seq) {
                    list.push(
                        ruby.ary_new_from_values(&[fiber, ruby.str_new(&message).as_value()]),
                    )?;
                }
            }
        }
        Ok(list)
    }

    /// `ring`: wakes the thread's wait (an `unblock` from another thread); safe from any thread.
    pub fn ring(&self) {
        self.bell.ring_always();
    }

    /// `finish`: the thread leaves; if the queue did not discharge it, it is booked as dead.
    pub fn finish(&self) {
        turns::unbook(&self.signals);
        locked(&self.taken).clear();
        let queue = self.server.queue();
        queue.remove_doorbell(&self.rung_by_queue);
        if let Some(mut seat) = locked(&self.seat).take() {
            queue.thread_died(&mut seat);
        }
    }
}

impl Drop for RbFiberWorker {
    fn drop(&mut self) {
        self.finish();
    }
}

/// poll's timeout: milliseconds rounded up (a timer never fires early), -1 for none.
fn timeout_ms(timeout: Option<f64>) -> i32 {
    match timeout {
        None => -1,
        Some(t) if t.is_nan() || t <= 0.0 => 0,
        Some(t) => (t * 1000.0).ceil().min(i32::MAX as f64) as i32,
    }
}
