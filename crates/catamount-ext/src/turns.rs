//! The fiber mode's turns: a request that runs Ruby for a whole tick without waiting gives the
//! other fibers of its pool thread a turn, as a busy thread gives the GVL to the others.
//!
//! Ruby switches fibers only where one waits. So a native thread (the *ticker*: no Ruby thread,
//! never holding the GVL) looks at every fiber-mode pool thread each [`TICK`] (the turn fields
//! of [`FiberSignals`], kept by `FiberWorker#run`): a thread still in the same fiber run as at
//! the last look, with other fibers or timers that could be ready, is *due*. The ticker then
//! registers a postponed job ([`ffi::postpone`]), which Ruby runs at the next interrupt check of
//! the thread holding the GVL, in that thread's current fiber. The job ([`take_turn`]) acts only
//! when its own thread is due and runs the fiber its loop ran (not one the request resumed
//! itself): it calls `FiberScheduler#give_turn`, which puts the fiber behind the thread's ready
//! ones and transfers to the loop; the loop resumes it later, inside the job. Ran elsewhere it
//! does nothing; the next tick asks again.
//!
//! Why a postponed job: the first turns (3dcedab) switched inside a line TracePoint's callback,
//! and a fiber parked inside a hook keeps Ruby's hook list "running", so disabled TracePoints
//! were only marked deleted and line tracing stayed on for every thread, growing with each turn.
//! A postponed job is no hook: nothing of Ruby's stays on while the fiber waits in it.
//!
//! What the job must respect (Ruby 3.1's `rb_postponed_job_flush`): jobs run inside a tag that
//! swallows any exception or jump, with postponed jobs masked on that fiber's execution context
//! (each fiber has its own, so the thread's other fibers run theirs). So nothing may be raised
//! in the fiber while it is inside the job: `request_timeout`'s watch, which raises into the
//! thread while the request's fiber runs, is kept off by clearing `current` for the whole job
//! (the watch then lists the request for the loop instead); a raise due when the fiber resumes
//! (`request_timeout`'s, `Timeout`'s, the thread leaving) is raised into the thread by another
//! Ruby thread once the fiber runs on past the job (`FiberScheduler#raise_later`); and a fiber
//! with an exception already queued for its thread does not give its turn (Ruby raises it right
//! after the job).

use std::cell::RefCell;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use magnus::rb_sys::AsRawValue;
use magnus::value::Lazy;
use magnus::{prelude::*, RClass, Ruby, Value};

use catamount_server::log;

use crate::ffi;
use crate::fibers::FiberSignals;

/// How long a fiber runs before the next look finds it due: between one and two ticks (50 to
/// 100 ms), about what a busy thread gets before Ruby hands the GVL on (every 100 ms).
pub(crate) const TICK: Duration = Duration::from_millis(50);

static FIBER: Lazy<RClass> = Lazy::new(|ruby| {
    ruby.class_object()
        .const_get::<_, RClass>("Fiber")
        .unwrap_or_else(|_| ruby.class_object())
});

/// The lookups, made at load time (see `look_up_now` in lib.rs).
pub fn look_up_now(ruby: &Ruby) {
    ruby.get_inner(&FIBER);
}

/// The fiber-mode pool threads of this process, shared with its ticker.
struct Registry {
    pid: u32,
    threads: Mutex<Vec<Arc<FiberSignals>>>,
    /// The ticker sleeps here while no thread is booked.
    booked: Condvar,
}

/// This process's registry. Locked only by Ruby threads holding the GVL (so never across a
/// fork: the forking thread holds the GVL); a forked child makes its own, with its own ticker,
/// and never touches its parent's (whose lock the parent's ticker may have held at the fork).
static REGISTRY: Mutex<Option<Arc<Registry>>> = Mutex::new(None);

thread_local! {
    /// The calling pool thread's signals, for the job.
    static THIS_THREAD: RefCell<Option<Arc<FiberSignals>>> = const { RefCell::new(None) };
}

fn locked<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Books the calling thread (a fiber-mode pool thread, with the GVL) for turns; starts this
/// process's ticker on first use.
pub(crate) fn book(signals: &Arc<FiberSignals>) {
    let _ = THIS_THREAD.try_with(|t| {
        if let Ok(mut t) = t.try_borrow_mut() {
            *t = Some(signals.clone());
        }
    });
    let registry = {
        let mut current = locked(&REGISTRY);
        let pid = std::process::id();
        match current.as_ref() {
            Some(registry) if registry.pid == pid => registry.clone(),
            _ => {
                let registry = Arc::new(Registry {
                    pid,
                    threads: Mutex::new(Vec::new()),
                    booked: Condvar::new(),
                });
                let ticking = registry.clone();
                let spawned = ffi::with_signals_blocked(|| {
                    std::thread::Builder::new()
                        .name("catamount turns".into())
                        .spawn(move || tick(&ticking))
                });
                if let Err(e) = spawned {
                    log::error(&format!("! Fiber turns: no ticker thread: {e}"));
                }
                *current = Some(registry.clone());
                registry
            }
        }
    };
    locked(&registry.threads).push(signals.clone());
    registry.booked.notify_all();
}

/// The thread leaves the fiber mode (or its worker is freed, by the GC on any thread): no more
/// turns for it. Safe to call again.
pub(crate) fn unbook(signals: &Arc<FiberSignals>) {
    let _ = THIS_THREAD.try_with(|t| {
        if let Ok(mut t) = t.try_borrow_mut() {
            if t.as_ref().is_some_and(|s| Arc::ptr_eq(s, signals)) {
                *t = None;
            }
        }
    });
    let registry = locked(&REGISTRY).clone();
    // A worker booked before a fork is not in this process's registry (and the parent's lock
    // may have been held by its ticker at the fork).
    if let Some(registry) = registry.filter(|r| r.pid == std::process::id()) {
        locked(&registry.threads).retain(|s| !Arc::ptr_eq(s, signals));
    }
}

/// The ticker's life: each tick, looks at every booked thread and asks for the job when one is
/// due. The job is registered under the lock threads unbook with, so only while a fiber-mode
/// thread is booked: Ruby's VM is alive then (its pool threads all end before it is torn down).
fn tick(registry: &Registry) {
    loop {
        let mut threads = locked(&registry.threads);
        while threads.is_empty() {
            threads = registry
                .booked
                .wait(threads)
                .unwrap_or_else(|p| p.into_inner());
        }
        drop(threads);
        std::thread::sleep(TICK);
        let threads = locked(&registry.threads);
        let mut due = false;
        for signals in threads.iter() {
            due |= signals.look_for_turn();
        }
        if due {
            ffi::postpone::<TurnJob>();
        }
    }
}

/// The postponed job.
struct TurnJob;

impl ffi::PostponedJob for TurnJob {
    fn run() {
        take_turn();
    }
}

/// In the thread holding the GVL, in its current fiber: if this thread is due and that fiber is
/// the one its loop runs, offers the turn (`FiberScheduler#give_turn`), which may return only
/// after the thread's other fibers ran.
fn take_turn() {
    let signals = THIS_THREAD
        .try_with(|t| t.try_borrow().ok().and_then(|t| t.clone()))
        .ok()
        .flatten();
    let Some(signals) = signals else {
        return;
    };
    let Some(owner) = signals.turn_due() else {
        return;
    };
    let Ok(ruby) = Ruby::get() else {
        return;
    };
    let fiber = ruby.fiber_current().as_raw() as usize;
    if !signals.runs_fiber(fiber) {
        return;
    }
    // No raise into this fiber from here on (see the module's comment): the watch sees the
    // request as not running until the job is over.
    signals.begin_turn(fiber);
    let given = ruby
        .get_inner(&FIBER)
        .funcall::<_, _, Value>("scheduler", ())
        .and_then(|scheduler| scheduler.funcall::<_, _, Value>("give_turn", ()));
    signals.end_turn(fiber, owner);
    if let Err(e) = given {
        log::error(&format!("! Fiber turns: give_turn failed: {e}"));
    }
}
