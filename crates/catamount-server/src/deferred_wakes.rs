//! Wake-ups of the reactor that a pool thread leaves to the reactor's next turn.
//!
//! A slow request's small response is handed to the reactor whole while other requests wait
//! for a thread (`Responder::write_whole`): the reactor, on its own CPU, pays the send instead
//! of the thread holding the GVL. But handing it over means waking the reactor, and while
//! requests are that slow the reactor is mostly parked in `epoll_wait` on an idle CPU: the
//! wake-up is a write to tokio's eventfd that must interrupt that CPU. On a virtual machine that
//! costs the waker about 15 µs (measured on the 2-vCPU bench host: 10–12% of a Sinatra request's
//! pool thread time, all of it under `eventfd_write`), a tenth of the very request the hand-over
//! was meant to speed up.
//!
//! So while requests queue for a thread, the waker leaves the wake here instead, and the reactor
//! does it on its next turn: when it queues the next request (it is awake then anyway) or, if
//! nothing arrives, at its next tick ([`TICK`], a local timer on the reactor's own CPU, off the
//! GVL holder's path). A response can wait one tick at most, and only while other requests were
//! queued behind it (their waits are longer than that already); with nothing queued, a response
//! is written or woken for at once, as before.
//!
//! The ticker runs only while armed. The reactor arms it when it queues a request behind others
//! (the case in which a pool thread may defer), and a tick that finds nothing deferred disarms
//! it. A pool thread defers only while it is armed, both under one lock, so a deferred wake is
//! always followed by a tick: none is ever left waiting for the next request.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::MissedTickBehavior;

/// How often the armed reactor wakes the tasks whose wakes were left to it: the longest a
/// deferred response waits (tokio's timers count whole milliseconds, so 1–2 ms).
pub(crate) const TICK: Duration = Duration::from_millis(1);

/// A reactor task a pool thread would wake: a connection's record (`response.rs`'s `Exchange`).
pub(crate) trait ReactorTask: Send + Sync + std::fmt::Debug {
    fn wake_reactor(&self);
}

/// The process-wide list of deferred wakes, and whether the reactor ticks for them.
#[derive(Debug, Default)]
pub(crate) struct DeferredWakes {
    state: Mutex<State>,
    /// `state.tasks` is not empty: lets the reactor's turn skip the lock in the common case.
    any: AtomicBool,
    /// Starts the ticker when the reactor arms it (notified from the reactor thread itself).
    armed: Notify,
}

#[derive(Debug, Default)]
struct State {
    /// The ticker runs: a wake deferred now is done within a tick.
    armed: bool,
    tasks: Vec<Arc<dyn ReactorTask>>,
    /// Wakes deferred so far (tests).
    count: u64,
}

impl DeferredWakes {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A pool thread's wake of `task`, left to the reactor's next turn. False when the ticker
    /// is not armed: the caller must wake it now.
    pub(crate) fn defer(&self, task: Arc<dyn ReactorTask>) -> bool {
        let mut st = self.lock();
        if !st.armed {
            return false;
        }
        st.tasks.push(task);
        st.count += 1;
        self.any.store(true, Ordering::Release);
        true
    }

    /// How many wakes were deferred so far.
    pub(crate) fn count(&self) -> u64 {
        self.lock().count
    }

    /// From the reactor, as it queues a request behind others: pool threads may defer their
    /// wakes until a tick finds none.
    pub(crate) fn arm(&self) {
        let mut st = self.lock();
        if !st.armed {
            st.armed = true;
            self.armed.notify_one();
        }
    }

    /// From the reactor, on a turn it takes anyway: wakes every deferred task (on the reactor
    /// thread, so without a system call).
    pub(crate) fn flush(&self) {
        if self.any.load(Ordering::Acquire) {
            let tasks = {
                let mut st = self.lock();
                self.any.store(false, Ordering::Release);
                std::mem::take(&mut st.tasks)
            };
            wake_all(tasks);
        }
    }

    /// Runs on the reactor for as long as it serves: every [`TICK`] while armed, wakes what
    /// was deferred. A tick that finds nothing deferred and no request `queued` disarms it: a
    /// pool thread defers only while requests wait behind its own.
    pub(crate) async fn tick_while_armed(&self, queued: impl Fn() -> bool) {
        loop {
            self.armed.notified().await;
            let mut ticks = tokio::time::interval(TICK);
            ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
            // The first tick of an interval is at once.
            ticks.tick().await;
            loop {
                ticks.tick().await;
                // Read before the lock (the queue has its own): a request queued after it
                // arms the ticker again, and a wake deferred after it is in the list below.
                let queued = queued();
                let tasks = {
                    let mut st = self.lock();
                    if st.tasks.is_empty() {
                        if queued {
                            continue;
                        }
                        st.armed = false;
                        break;
                    }
                    self.any.store(false, Ordering::Release);
                    std::mem::take(&mut st.tasks)
                };
                wake_all(tasks);
            }
        }
    }
}

fn wake_all(tasks: Vec<Arc<dyn ReactorTask>>) {
    for task in tasks {
        task.wake_reactor();
    }
}
