//! `request_timeout`: the watch over the pool threads' running requests.
//!
//! Each pool thread has a slot; taking a request writes its start, its request line and its
//! [`Overdue`] handle there (one uncontended lock, no timer, no thread per request), and
//! finishing it clears them. One Ruby thread (`Serving#watch_request_timeouts`) sleeps without
//! the GVL until the earliest deadline, then, holding the GVL, acts on every slot that is due:
//! the server answers the request (or cuts its connection, `catamount_server::Overdue`), logs
//! the thread's backtrace, and raises `Catamount::RequestTimeout` into it. A thread still on
//! that request `request_timeout_grace` later is logged and counted as lost.
//!
//! Why the GVL makes this safe: a pool thread begins and ends a request only while it holds the
//! GVL, and the watch checks the slot and raises into the thread without letting go of it, so
//! the exception can only be meant for the request it was raised for. It may still be pending
//! when the request ends (the thread was in native code): the pool loop then takes it there,
//! before the next request ([`Post::end`]). Nothing is due unless a request started at least
//! `request_timeout` ago, so a new request never needs to wake the watch.
//!
//! In the fiber mode each request has a slot of its own (taken for the request, by its fiber),
//! and the exception must reach that fiber: when its fibers run on the thread now
//! ([`FiberSignals::is_running`]) the thread's raise lands there; otherwise the request waits
//! (or is ready to run), and the thread's loop raises into it (`FiberSignals::overdue`, rung).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use magnus::rb_sys::AsRawValue;
use magnus::value::{Opaque, ReprValue};
use magnus::{Error, RArray, Ruby, Value};

use catamount_server::{log, Expired, Metrics, Overdue, Request, Responder};

use crate::errors;
use crate::fibers::FiberSignals;

/// Request targets are cut to this many bytes in the log.
const LOGGED_TARGET: usize = 200;

/// The watch of one running server (made at `start`: a re-armed server gets a new one).
pub struct Watch {
    timeout: Duration,
    grace: Duration,
    status: u16,
    metrics: Arc<Metrics>,
    slots: Mutex<Slots>,
    wake: Condvar,
    /// The watching thread was interrupted by Ruby (its unblocking function).
    interrupted: AtomicBool,
    /// The pool threads' `Thread` objects by slot (in the fiber mode `[thread, fiber]` of the
    /// slot's request), in a Ruby Array the GC marks (and updates, should compaction move them).
    threads: Opaque<RArray>,
}

#[derive(Default)]
struct Slots {
    list: Vec<Slot>,
    closed: bool,
}

#[derive(Default)]
struct Slot {
    used: bool,
    /// The request being served, if any.
    serving: Option<Serving>,
    /// Its method and target (cut); the buffer is reused from request to request.
    line: Vec<u8>,
    /// Bumped by every request: the watch acts only on the request it looked at.
    seq: u64,
    /// The fiber mode: the thread's signals and the request fiber (its raw VALUE).
    fiber: Option<(Arc<FiberSignals>, usize)>,
}

struct Serving {
    started: Instant,
    overdue: Overdue,
    stage: Stage,
}

#[derive(Clone, Copy)]
enum Stage {
    Running,
    /// `Catamount::RequestTimeout` was raised into the thread at this time.
    Raised(Instant),
    /// Still there past the grace.
    Lost,
    /// The app took the connection: not a request any more.
    Taken,
}

/// What the watch found due, copied out of a slot.
struct Due {
    index: usize,
    seq: u64,
    started: Instant,
    line: String,
    overdue: Overdue,
    stage: Stage,
    fiber: Option<(Arc<FiberSignals>, usize)>,
}

/// Where a slot's exception goes: its thread, and in the fiber mode its request's fiber.
struct Target {
    thread: Value,
    fiber: Option<Value>,
}

impl Target {
    fn of(entry: Value) -> Option<Target> {
        match RArray::from_value(entry) {
            Some(pair) => Some(Target {
                thread: pair.entry(0).ok()?,
                fiber: pair.entry(1).ok(),
            }),
            None => (!entry.is_nil()).then_some(Target {
                thread: entry,
                fiber: None,
            }),
        }
    }
}

impl Watch {
    pub fn new(
        ruby: &Ruby,
        timeout: Duration,
        grace: Duration,
        status: u16,
        metrics: Arc<Metrics>,
    ) -> Watch {
        let threads = ruby.ary_new();
        ruby.gc_register_mark_object(threads);
        Watch {
            timeout,
            grace,
            status,
            metrics,
            slots: Mutex::default(),
            wake: Condvar::new(),
            interrupted: AtomicBool::new(false),
            threads: Opaque::from(threads),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Slots> {
        self.slots.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The calling pool thread's slot, for its life (with the GVL).
    pub fn enter(self: &Arc<Self>, ruby: &Ruby) -> Result<Post, Error> {
        self.enter_as(ruby, ruby.thread_current().as_value(), None)
    }

    /// The fiber mode: a slot for the request the calling fiber serves, for that request.
    pub fn enter_fiber(
        self: &Arc<Self>,
        ruby: &Ruby,
        signals: &Arc<FiberSignals>,
    ) -> Result<Post, Error> {
        let fiber = ruby.fiber_current().as_value();
        let entry = ruby.ary_new_from_values(&[ruby.thread_current().as_value(), fiber]);
        let raw = fiber.as_raw() as usize;
        self.enter_as(ruby, entry.as_value(), Some((signals.clone(), raw)))
    }

    fn enter_as(
        self: &Arc<Self>,
        ruby: &Ruby,
        entry: Value,
        fiber: Option<(Arc<FiberSignals>, usize)>,
    ) -> Result<Post, Error> {
        let index = {
            let mut slots = self.lock();
            let index = match slots.list.iter().position(|s| !s.used) {
                Some(i) => i,
                None => {
                    slots.list.push(Slot::default());
                    slots.list.len() - 1
                }
            };
            if let Some(slot) = slots.list.get_mut(index) {
                slot.used = true;
                slot.fiber = fiber;
            }
            index
        };
        let index_value = isize::try_from(index).unwrap_or(isize::MAX);
        ruby.get_inner(self.threads).store(index_value, entry)?;
        Ok(Post {
            watch: self.clone(),
            index,
        })
    }

    /// The fiber of the fiber-mode request in `slot`, if it is still request `seq` and the
    /// exception was raised for it (for the thread's loop to raise into).
    pub(crate) fn raised_fiber(&self, ruby: &Ruby, slot: usize, seq: u64) -> Option<Value> {
        let raised = self.lock().list.get(slot).is_some_and(|s| {
            s.seq == seq
                && matches!(
                    s.serving,
                    Some(Serving {
                        stage: Stage::Raised(_),
                        ..
                    })
                )
        });
        if !raised {
            return None;
        }
        let entry = ruby
            .get_inner(self.threads)
            .entry(isize::try_from(slot).ok()?)
            .ok()?;
        Target::of(entry)?.fiber
    }

    /// No more watching: the server ended. The watching thread returns.
    pub fn close(&self) {
        self.lock().closed = true;
        self.wake.notify_all();
    }

    /// Ruby's unblocking function for the watching thread.
    fn interrupt(&self) {
        self.interrupted.store(true, Ordering::SeqCst);
        let _guard = self.lock();
        self.wake.notify_all();
    }

    /// When `serving` is due next, if ever.
    fn due_at(&self, serving: &Serving) -> Option<Instant> {
        match serving.stage {
            Stage::Running => Some(serving.started + self.timeout),
            Stage::Raised(at) => Some(at + self.grace),
            Stage::Lost | Stage::Taken => None,
        }
    }

    /// Waits (without the GVL) until a request is due; false when closed or interrupted.
    fn wait_until_due(&self) -> bool {
        let mut slots = self.lock();
        loop {
            if slots.closed || self.interrupted.swap(false, Ordering::SeqCst) {
                return false;
            }
            let now = Instant::now();
            // A request taken from now on is due `timeout` from now at the earliest, so looking
            // again then is soon enough for those; the slots hold every request taken before.
            // The bound holds also while a slot waits out its grace (often longer than the
            // timeout): a request taken meanwhile is not left for the grace's end.
            let next = slots
                .list
                .iter()
                .filter_map(|s| s.serving.as_ref().and_then(|v| self.due_at(v)))
                .fold(now + self.timeout, Instant::min);
            if next <= now {
                return true;
            }
            let (guard, _) = self
                .wake
                .wait_timeout(slots, next - now)
                .unwrap_or_else(|p| p.into_inner());
            slots = guard;
        }
    }

    /// Copies out what is due now.
    fn take_due(&self) -> Vec<Due> {
        let now = Instant::now();
        let slots = self.lock();
        slots
            .list
            .iter()
            .enumerate()
            .filter_map(|(index, slot)| {
                let serving = slot.serving.as_ref()?;
                let due = self.due_at(serving)?;
                (due <= now).then(|| Due {
                    index,
                    seq: slot.seq,
                    started: serving.started,
                    line: String::from_utf8_lossy(&slot.line).into_owned(),
                    overdue: serving.overdue.clone(),
                    stage: serving.stage,
                    fiber: slot.fiber.clone(),
                })
            })
            .collect()
    }

    /// Moves the request `due` looked at from the stage it had to `stage`; false when it has
    /// ended or moved since.
    fn set_stage(&self, due: &Due, stage: Stage) -> bool {
        let mut slots = self.lock();
        match slots
            .list
            .get_mut(due.index)
            .filter(|s| s.seq == due.seq)
            .and_then(|s| s.serving.as_mut())
        {
            Some(serving)
                if std::mem::discriminant(&serving.stage) == std::mem::discriminant(&due.stage) =>
            {
                serving.stage = stage;
                true
            }
            _ => false,
        }
    }

    /// Acts on every due request (with the GVL, never letting go of it between deciding and
    /// raising: see the module's comment). Returns how many threads became lost.
    fn act(&self, ruby: &Ruby) -> usize {
        let mut lost = 0;
        for due in self.take_due() {
            let target = ruby
                .get_inner(self.threads)
                .entry(isize::try_from(due.index).unwrap_or(isize::MAX))
                .ok()
                .and_then(Target::of);
            // Ruby code (which may let the GVL go, and the request end): before the stage is
            // checked and moved below.
            let trace = backtrace(target.as_ref());
            let elapsed = due.started.elapsed().as_secs_f64();
            match due.stage {
                Stage::Running => {
                    let what = match due.overdue.expire() {
                        Expired::Taken => {
                            self.set_stage(&due, Stage::Taken);
                            continue;
                        }
                        Expired::Answered => format!("answered {}", self.status),
                        Expired::Cut => "its response had begun: connection closed".to_string(),
                        Expired::Finished => "its response was sent already".to_string(),
                    };
                    // The request ended meanwhile (its expiry found it so and did nothing).
                    if !self.set_stage(&due, Stage::Raised(Instant::now())) {
                        continue;
                    }
                    log::error(&format!(
                        "! Request timeout: {} still running after {elapsed:.2} s (request_timeout {} s); {what}; raising Catamount::RequestTimeout into its thread.{trace}",
                        due.line,
                        self.timeout.as_secs_f64(),
                    ));
                    let message = format!(
                        "request_timeout ({} s) passed: {}",
                        self.timeout.as_secs_f64(),
                        due.line
                    );
                    match (&due.fiber, &target) {
                        // A fiber-mode request not running now: its thread's loop raises it.
                        (Some((signals, fiber)), _) if !signals.is_running(*fiber) => {
                            signals.overdue(due.index, due.seq, message);
                        }
                        (_, Some(target)) => {
                            let raised = target.thread.funcall::<_, _, Value>(
                                "raise",
                                (errors::request_timeout(ruby), message),
                            );
                            if let Err(e) = raised {
                                log::error(&format!("! Request timeout: could not raise: {e}"));
                            }
                        }
                        (_, None) => {}
                    }
                }
                Stage::Raised(_) => {
                    if !self.set_stage(&due, Stage::Lost) {
                        continue;
                    }
                    lost += 1;
                    self.metrics.thread_lost(true);
                    log::error(&format!(
                        "! Request timeout: {} still running after {elapsed:.2} s, {} s after Catamount::RequestTimeout was raised (request_timeout_grace): its thread counts as lost, the pool has one thread fewer.{trace}",
                        due.line,
                        self.grace.as_secs_f64(),
                    ));
                }
                Stage::Lost | Stage::Taken => {}
            }
        }
        lost
    }

    /// The threads lost now.
    pub fn lost_threads(&self, ruby: &Ruby) -> Vec<Value> {
        let lost: Vec<usize> = self
            .lock()
            .list
            .iter()
            .enumerate()
            .filter(|(_, s)| {
                matches!(
                    s.serving,
                    Some(Serving {
                        stage: Stage::Lost,
                        ..
                    })
                )
            })
            .map(|(i, _)| i)
            .collect();
        let threads = ruby.get_inner(self.threads);
        lost.into_iter()
            .filter_map(|i| Target::of(threads.entry(isize::try_from(i).ok()?).ok()?))
            .map(|t| t.thread)
            .collect()
    }
}

/// `  ` + each line of the target's backtrace (its fiber's in the fiber mode), after a newline
/// (or a note that there is none).
fn backtrace(target: Option<&Target>) -> String {
    let lines: Option<Vec<String>> =
        target.and_then(|t| t.fiber.unwrap_or(t.thread).funcall("backtrace", ()).ok());
    match lines {
        Some(lines) if !lines.is_empty() => {
            let mut out = String::from(" Its backtrace:");
            for line in lines {
                out.push_str("\n  ");
                out.push_str(&line);
            }
            out
        }
        _ => " (no backtrace: the thread has ended)".to_string(),
    }
}

/// `Native::Server#watch_request_timeouts`' loop: waits for deadlines and acts on them; returns
/// the number of threads just lost (more than 0), or None once the watch is closed.
pub fn watch(ruby: &Ruby, watch: &Watch) -> Result<Option<usize>, Error> {
    loop {
        let due = crate::server::blocking(ruby, || watch.wait_until_due(), &|| watch.interrupt())?;
        match due {
            Some(true) => {
                let lost = watch.act(ruby);
                if lost > 0 {
                    return Ok(Some(lost));
                }
            }
            Some(false) | None => {
                if watch.lock().closed {
                    return Ok(None);
                }
                ruby.thread_check_ints()?;
            }
        }
    }
}

/// A pool thread's slot in the watch.
pub struct Post {
    watch: Arc<Watch>,
    index: usize,
}

/// How a watched request ended, for the pool loop.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Left {
    /// Within its time (or the app took the connection).
    InTime,
    /// `Catamount::RequestTimeout` was raised into the thread: it may still be pending.
    Raised,
}

impl Post {
    /// The thread took `request` (with the GVL): its deadline starts now.
    pub fn begin(&self, request: &Request, responder: &Responder) {
        let overdue = responder.overdue(request.head.version(), self.watch.status);
        let mut slots = self.watch.lock();
        if let Some(slot) = slots.list.get_mut(self.index) {
            slot.seq = slot.seq.wrapping_add(1);
            slot.line.clear();
            slot.line
                .extend_from_slice(request.head.method().as_bytes());
            slot.line.push(b' ');
            let target = request.head.target();
            slot.line
                .extend_from_slice(target.get(..LOGGED_TARGET).unwrap_or(target));
            slot.serving = Some(Serving {
                started: request.taken_at,
                overdue,
                stage: Stage::Running,
            });
        }
    }

    /// The request is over (with the GVL).
    pub fn end(&self) -> Left {
        let mut slots = self.watch.lock();
        let Some(slot) = slots.list.get_mut(self.index) else {
            return Left::InTime;
        };
        match slot.serving.take().map(|s| (s.stage, s.started)) {
            Some((Stage::Raised(_), _)) => Left::Raised,
            Some((Stage::Lost, started)) => {
                self.watch.metrics.thread_lost(false);
                log::error(&format!(
                    "* Request timeout: {}: a lost thread left its request at last, after {:.2} s; the pool has it back",
                    String::from_utf8_lossy(&slot.line),
                    started.elapsed().as_secs_f64()
                ));
                Left::Raised
            }
            _ => Left::InTime,
        }
    }
}

impl Drop for Post {
    fn drop(&mut self) {
        let mut slots = self.watch.lock();
        if let Some(slot) = slots.list.get_mut(self.index) {
            if matches!(
                slot.serving,
                Some(Serving {
                    stage: Stage::Lost,
                    ..
                })
            ) {
                self.watch.metrics.thread_lost(false);
            }
            slot.serving = None;
            slot.used = false;
            // A fiber-mode slot's entry would keep its ended fiber alive until the slot is
            // taken again.
            if slot.fiber.take().is_some() {
                if let (Ok(ruby), Ok(index)) = (Ruby::get(), isize::try_from(self.index)) {
                    let _ = ruby.get_inner(self.watch.threads).store(index, ruby.qnil());
                }
            }
        }
    }
}

/// Whether `e` is `Catamount::RequestTimeout` (raised by the watch; the pool loop swallows one
/// still pending when its request ended).
pub fn is_request_timeout(ruby: &Ruby, e: &Error) -> bool {
    e.value()
        .is_some_and(|v| v.is_kind_of(errors::request_timeout(ruby)))
}
