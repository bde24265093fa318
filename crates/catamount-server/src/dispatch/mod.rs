//! The hand-off between the reactor and the Ruby thread pool.
//!
//! The reactor pushes complete requests; Ruby threads pop them while waiting *without* the GVL.
//! The queue also keeps the pool's books (threads spawned, waiting, requests in flight), because
//! the decisions that need them are made here: whether the reactor may accept another connection
//! (only while a thread is free, Puma's rule, so in cluster mode an idle worker gets it), and
//! whether the pool should grow (a request waits and no thread is idle) or shrink (a thread above
//! `min` idled for `idle_trim`).
//!
//! Every wait takes a [`Waiter`]: Ruby's unblocking function calls [`WorkQueue::interrupt`] on it
//! so `Thread#kill` and shutdown never hang on a thread parked here.
//!
//! Which idle thread takes a queued request, and when, is the [`handoff`] module's call: by
//! default a second thread takes one only once it could run it (the GVL is free).
//!
//! A request may mark its thread IO-bound (Puma 8's `max_io_threads`): while marked, the pool
//! may have up to `max_io_threads` threads beyond `max` (see [`WorkQueue::thread_limit`]), and
//! a marked thread that finishes its request while the pool is over its limit exits.
//!
//! The count of requests running is kept by one guard, [`Running`]: a pool thread that takes a
//! request gets one (the count goes up under the queue's lock), and the count goes down when it
//! is dropped, with the job that holds it (see [`Work`]).
//!
//! This module knows nothing of what it carries: the queue is generic over its jobs, so it
//! depends on no other module of the crate (`request::WorkQueue` names the server's queue).

use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

mod handoff;
mod run_state;

use handoff::{Crew, Verdict, LOOK_EVERY};
pub use handoff::{Handoff, Seat, SeatId};
use run_state::RunState;

/// A thread's handle for one blocking wait; interrupting it wakes the wait.
#[derive(Debug, Default)]
pub struct Waiter {
    interrupted: AtomicBool,
}

impl Waiter {
    pub fn new() -> Waiter {
        Waiter::default()
    }

    /// Clears a previous interrupt before a new wait.
    pub fn reset(&self) {
        self.interrupted.store(false, Ordering::SeqCst);
    }

    /// Marks this waiter interrupted without waking anything (for waits that poll the flag).
    pub fn set_interrupted(&self) {
        self.interrupted.store(true, Ordering::SeqCst);
    }

    pub(crate) fn is_interrupted(&self) -> bool {
        self.interrupted.load(Ordering::SeqCst)
    }
}

/// What a pool thread got from [`WorkQueue::pop`].
#[derive(Debug)]
pub enum Pop<T> {
    Job(T),
    /// The wait was interrupted (Ruby wants the thread back: kill, raise, signal).
    Interrupted,
    /// The thread idled long enough above `min`: it should exit. Already uncounted.
    Trim,
    /// The server is stopping and no work is left: exit. Already uncounted.
    Closed,
}

/// What a pool thread learned from [`WorkQueue::wait_for_work`].
#[derive(Debug, PartialEq, Eq)]
pub enum Wait {
    /// A request is queued and this thread may [`claim`](WorkQueue::claim) it (with the GVL).
    Ready,
    /// The wait was interrupted (Ruby wants the thread back: kill, raise, signal).
    Interrupted,
    /// The thread idled long enough above `min`: it should exit. Already uncounted.
    Trim,
    /// The server is stopping and no work is left: exit. Already uncounted.
    Closed,
}

/// What the pool manager should do next, from [`WorkQueue::next_pool_action`].
#[derive(Debug, PartialEq, Eq)]
pub enum PoolAction {
    /// Start one more thread (already counted as spawned).
    Spawn,
    Interrupted,
    Closed,
}

/// A fiber-mode pool thread's doorbell (see [`WorkQueue::add_doorbell`]): rung when a request
/// is queued, so a thread waiting on its requests' I/O (not on this queue) comes to take it.
pub trait Doorbell: Send + Sync + fmt::Debug {
    fn ring(&self);

    /// The queue closed: a thread that serves no request must come and see it (and leave).
    fn closing(&self) {
        self.ring();
    }
}

/// What a fiber-mode thread with only fibers its requests scheduled does, from
/// [`WorkQueue::idle_in_background`].
#[derive(Debug, PartialEq, Eq)]
pub enum Idling {
    /// Goes on running them, and asks again after `again_in` at most (when it would be
    /// trimmed, or soon while a closed queue still holds requests); None: when it wakes.
    Stay { again_in: Option<Duration> },
    /// It leaves the pool now (already uncounted), ending them.
    Leave,
}

/// What the queue carries: a job that is told when a pool thread takes it, and keeps the
/// [`Running`] guard it is given for as long as its request is being served.
pub trait Work {
    fn taken(&mut self, running: Running);
}

/// A request taken by a pool thread, counted as running from the moment it was taken (under the
/// queue's lock, with the take) until this guard is dropped. The only way the count changes.
pub struct Running {
    books: Arc<dyn Books>,
}

impl Running {
    /// Whether other requests wait in the queue this one was taken from.
    pub fn others_waiting(&self) -> bool {
        self.books.has_waiting()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.books.request_done();
    }
}

impl fmt::Debug for Running {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Running")
    }
}

/// The queue's books as the [`Running`] guard sees them, whatever the jobs' type.
trait Books: Send + Sync {
    fn request_done(&self);
    fn has_waiting(&self) -> bool;
}

impl<T: Send> Books for WorkQueue<T> {
    fn request_done(&self) {
        let mut st = self.lock();
        st.running = st.running.saturating_sub(1);
        drop(st);
        self.capacity.notify_waiters();
    }

    fn has_waiting(&self) -> bool {
        WorkQueue::has_waiting(self)
    }
}

/// A snapshot of the pool's books, for stats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PoolStats {
    pub min_threads: usize,
    pub max_threads: usize,
    /// Threads alive (or being started).
    pub spawned: usize,
    /// Threads parked waiting for work (and fiber-mode threads left with only fibers their
    /// requests scheduled: `idle_in_background`).
    pub waiting: usize,
    /// Requests waiting for a thread.
    pub backlog: usize,
    /// Requests being run by the app right now.
    pub running: usize,
    /// Requests handed to the app since start.
    pub requests_count: u64,
    /// Threads marked IO-bound now.
    pub io_threads: usize,
}

#[derive(Debug)]
struct State<T> {
    jobs: VecDeque<T>,
    spawned: usize,
    /// Spawned threads that have not asked for work yet: they count as idle, or the manager
    /// would start a thread per check while the first one is still booting.
    starting: usize,
    waiting: usize,
    /// Threads woken for a queued request that have not taken it yet (they are getting the GVL).
    claiming: usize,
    /// Who serves and who watches (see [`handoff`]).
    crew: Crew,
    running: usize,
    /// Connections just accepted whose first request is not queued yet (cluster workers only,
    /// for a short while: see `ServerConfig::new_connection_hold`).
    arriving: usize,
    closed: bool,
    /// Fiber-mode threads that may take a request while serving others.
    doorbells: Vec<Arc<dyn Doorbell>>,
    /// Fiber-mode threads with no request, only fibers their requests scheduled: idle in the
    /// stats (not in `idle()`: they take a request only by their doorbell).
    background: usize,
}

impl<T> State<T> {
    /// Threads that will take a queued request without a new thread being started.
    fn idle(&self) -> usize {
        self.waiting + self.starting + self.claiming
    }

    /// More requests queued than idle threads are there for: the pool should grow, and a
    /// fiber-mode thread busy with waiting requests may take one.
    fn has_spare_work(&self) -> bool {
        self.jobs.len() > self.idle()
    }

    /// Queued requests no woken thread is on its way to yet.
    fn unclaimed(&self) -> bool {
        self.jobs.len() > self.claiming
    }
}

/// The request queue and the pool's accounting. Shared by the reactor and every pool thread.
#[derive(Debug)]
pub struct WorkQueue<T> {
    state: Mutex<State<T>>,
    work: Condvar,
    manager: Condvar,
    /// Woken when a thread frees up, so the reactor can accept a waiting connection.
    capacity: Notify,
    min_threads: usize,
    max_threads: usize,
    /// Threads allowed beyond `max_threads` while threads are marked IO-bound.
    max_io_threads: usize,
    /// How many requests one thread may run at once (`with_requests_per_thread`, the fiber
    /// mode): `has_capacity` allows that many a thread.
    requests_per_thread: usize,
    idle_trim: Duration,
    requests_count: AtomicU64,
}

impl<T> WorkQueue<T> {
    /// `idle_trim`: how long a thread above `min_threads` may idle before it exits.
    pub fn new(
        min_threads: usize,
        max_threads: usize,
        idle_trim: Duration,
        handoff: Handoff,
    ) -> Self {
        WorkQueue {
            state: Mutex::new(State {
                jobs: VecDeque::new(),
                spawned: 0,
                starting: 0,
                waiting: 0,
                claiming: 0,
                crew: Crew::new(handoff),
                running: 0,
                arriving: 0,
                closed: false,
                doorbells: Vec::new(),
                background: 0,
            }),
            work: Condvar::new(),
            manager: Condvar::new(),
            capacity: Notify::new(),
            min_threads,
            max_threads: max_threads.max(1),
            max_io_threads: 0,
            requests_per_thread: 1,
            idle_trim,
            requests_count: AtomicU64::new(0),
        }
    }

    /// Allows up to `n` threads beyond `max_threads` for requests marked IO-bound (Puma 8's
    /// `max_io_threads`; 0, the default: marking is counted but grows nothing).
    pub fn with_io_threads(mut self, n: usize) -> Self {
        self.max_io_threads = n;
        self
    }

    /// How many threads the pool may have now. Puma's rule, "spawned − io < max − (io beyond
    /// max_io_threads)", said as a limit: `max` plus one per IO-bound thread, up to
    /// `max_io_threads`. A marked thread thus frees its place for a normal one, and IO-bound
    /// threads past `max_io_threads` take places of `max`.
    fn thread_limit(&self, st: &State<T>) -> usize {
        self.max_threads + st.crew.io.min(self.max_io_threads)
    }

    /// Lets each thread run up to `n` requests at once: the reactor accepts connections until
    /// `n` times the threads allowed run or wait.
    pub fn with_requests_per_thread(mut self, n: usize) -> Self {
        self.requests_per_thread = n.max(1);
        self
    }

    /// Rings `bell` for every request queued from now on, until
    /// [`remove_doorbell`](Self::remove_doorbell).
    pub fn add_doorbell(&self, bell: Arc<dyn Doorbell>) {
        self.lock().doorbells.push(bell);
    }

    pub fn remove_doorbell(&self, bell: &Arc<dyn Doorbell>) {
        self.lock().doorbells.retain(|b| !Arc::ptr_eq(b, bell));
    }

    fn lock(&self) -> MutexGuard<'_, State<T>> {
        // A panic while holding this lock cannot leave the books half-updated in a way that
        // matters more than stopping the server, so poisoning is ignored.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether requests wait in the queue for a thread.
    pub fn has_waiting(&self) -> bool {
        !self.lock().jobs.is_empty()
    }

    /// Whether more requests are queued than idle threads are there for: the ones a fiber-mode
    /// thread, busy with requests that wait, may take (see [`try_pop_spare`](Self::try_pop_spare)).
    pub fn has_spare_work(&self) -> bool {
        self.lock().has_spare_work()
    }

    /// Queues a complete request; returns how many wait now (for the backlog high). Called by
    /// the reactor.
    pub fn push(&self, job: T) -> usize {
        let mut st = self.lock();
        st.jobs.push_back(job);
        let backlog = st.jobs.len();
        // Wake a thread only for a request nobody was woken for yet, and only to take it or to
        // start watching the threads that serve (a watcher looks again by itself).
        if st.waiting > 0
            && st.unclaimed()
            && (st.crew.takes_at_once(st.claiming) || st.crew.watcher.is_none())
        {
            self.work.notify_one();
        }
        // More requests than idle threads: ask the manager for another thread.
        if st.has_spare_work() && st.spawned < self.thread_limit(&st) {
            self.manager.notify_one();
        }
        // Fiber-mode threads take a request while their own requests wait; an idle thread takes
        // it first, so a request that turns out never to wait does not land beside (and hold up)
        // requests whose waits end meanwhile while a thread of its own was free.
        if st.has_spare_work() {
            for bell in &st.doorbells {
                bell.ring();
            }
        }
        backlog
    }

    /// Whether the reactor may accept another connection: fewer requests queued or running than
    /// threads allowed. Connections still sending their request do not count: they cost no thread.
    pub fn has_capacity(&self) -> bool {
        let st = self.lock();
        st.running + st.jobs.len() + st.arriving
            < self
                .thread_limit(&st)
                .saturating_mul(self.requests_per_thread)
    }

    /// Whether no request is queued or running (called by a pool thread after its own request
    /// finished: then every other thread is idle too).
    pub fn is_quiet(&self) -> bool {
        let st = self.lock();
        st.jobs.is_empty() && st.running == 0
    }

    /// A connection was just accepted and its first request is expected at once: count it
    /// against capacity until [`connection_arrived`](Self::connection_arrived).
    pub fn connection_arriving(&self) {
        self.lock().arriving += 1;
    }

    /// The connection counted by [`connection_arriving`](Self::connection_arriving) has queued
    /// its first request, went away, or took too long to count any more.
    pub fn connection_arrived(&self) {
        let mut st = self.lock();
        st.arriving = st.arriving.saturating_sub(1);
        drop(st);
        self.capacity.notify_waiters();
    }

    /// Waits until [`has_capacity`](Self::has_capacity) holds. Called by the reactor.
    pub async fn wait_for_capacity(&self) {
        loop {
            let notified = self.capacity.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.has_capacity() {
                return;
            }
            notified.await;
        }
    }

    /// `wait_for_less_busy_worker`: returns at once when nothing is queued, running or arriving
    /// here, else when the load changes (a request finished, or an arriving connection sent
    /// its request) or `delay` passed. Of the cluster workers woken for a new connection, an
    /// idle one thus takes it before a busy one, while a busy worker still accepts about as
    /// fast as its requests finish. Called by the reactor.
    pub async fn wait_while_busy(&self, delay: Duration) {
        let changed = self.capacity.notified();
        tokio::pin!(changed);
        changed.as_mut().enable();
        let idle = {
            let st = self.lock();
            st.jobs.is_empty() && st.running == 0 && st.arriving == 0
        };
        if !idle {
            let _ = tokio::time::timeout(delay, changed).await;
        }
    }

    /// A thread granted by [`next_pool_action`](Self::next_pool_action) (or any thread that
    /// will serve from this queue) is running and about to ask for work. Call it on that
    /// thread: the hand-off reads the thread's own run state.
    pub fn thread_started(&self) -> Seat {
        let run_state = RunState::of_current_thread();
        let mut st = self.lock();
        st.starting = st.starting.saturating_sub(1);
        st.crew.enlist(run_state)
    }

    /// Blocks until this thread has a request: [`wait_for_work`](Self::wait_for_work), then
    /// [`claim`](Self::claim), for callers with no GVL to get back in between.
    pub fn pop(self: &Arc<Self>, seat: &mut Seat, waiter: &Waiter) -> Pop<T>
    where
        T: Work + Send + 'static,
    {
        loop {
            match self.wait_for_work(seat, waiter) {
                Wait::Ready => {
                    if let Some(job) = self.claim(seat) {
                        return Pop::Job(job);
                    }
                }
                Wait::Interrupted => return Pop::Interrupted,
                Wait::Trim => return Pop::Trim,
                Wait::Closed => return Pop::Closed,
            }
        }
    }

    /// Blocks until a queued request is there for this thread (call it without the GVL), but
    /// does not take it: the thread first gets the GVL back, then [`claim`](Self::claim)s it.
    /// A request is thus only ever taken by a thread that can run it at once; a thread that
    /// took one and then waited for the GVL could hold it up behind another thread's work.
    ///
    /// While other threads serve, a queued request is for this thread only once it could run
    /// it (see [`handoff`]); until then one idle thread watches and the others sleep.
    pub fn wait_for_work(&self, seat: &mut Seat, waiter: &Waiter) -> Wait {
        let mut st = self.lock();
        st.crew.idle(seat);
        loop {
            if waiter.is_interrupted() {
                self.stop_watching(&mut st, seat);
                return Wait::Interrupted;
            }
            if st.unclaimed() {
                let now = Instant::now();
                let join = match st.crew.verdict(seat, st.claiming, now) {
                    Verdict::Join => true,
                    Verdict::Wait => false,
                    Verdict::Look => {
                        // A few microseconds a thread: not under the lock the reactor needs.
                        drop(st);
                        let asleep = handoff::all_asleep(&seat.look);
                        // Holds no thread's stat file open past the look.
                        seat.look.clear();
                        st = self.lock();
                        if !st.unclaimed() {
                            continue;
                        }
                        asleep
                    }
                };
                if join {
                    st.crew.joined(seat, now);
                    st.claiming += 1;
                    self.pass_watch_on(&st);
                    return Wait::Ready;
                }
                if st.crew.watcher.is_none() {
                    st.crew.watcher = Some(seat.id);
                }
                if st.crew.watcher == Some(seat.id) {
                    st.waiting += 1;
                    let (guard, _) = self
                        .work
                        .wait_timeout(st, LOOK_EVERY)
                        .unwrap_or_else(|p| p.into_inner());
                    st = guard;
                    st.waiting -= 1;
                    continue;
                }
            } else {
                self.stop_watching(&mut st, seat);
            }
            if st.closed && !st.unclaimed() {
                st.spawned = st.spawned.saturating_sub(1);
                st.crew.discharge(seat);
                self.manager.notify_all();
                return Wait::Closed;
            }
            st.waiting += 1;
            let (guard, timeout) = self
                .work
                .wait_timeout(st, self.idle_trim)
                .unwrap_or_else(|p| p.into_inner());
            st = guard;
            st.waiting -= 1;
            if timeout.timed_out() && st.jobs.is_empty() && st.spawned > self.min_threads {
                st.spawned -= 1;
                st.crew.discharge(seat);
                return Wait::Trim;
            }
        }
    }

    /// `seat` no longer watches (if it did); another idle thread takes over if a request still
    /// waits for one.
    fn stop_watching(&self, st: &mut State<T>, seat: &Seat) {
        if st.crew.watcher == Some(seat.id) {
            st.crew.watcher = None;
            self.pass_watch_on(st);
        }
    }

    /// Wakes an idle thread to look at a request nobody is on yet, if no thread watches.
    fn pass_watch_on(&self, st: &State<T>) {
        if st.unclaimed() && st.waiting > 0 && st.crew.watcher.is_none() {
            self.work.notify_one();
        }
    }

    /// Takes the request [`wait_for_work`](Self::wait_for_work) announced; None if a thread
    /// that was already running took it first (call `wait_for_work` again).
    pub fn claim(self: &Arc<Self>, seat: &mut Seat) -> Option<T>
    where
        T: Work + Send + 'static,
    {
        let mut st = self.lock();
        st.claiming = st.claiming.saturating_sub(1);
        let job = st.jobs.pop_front()?;
        Some(self.took(st, seat, job))
    }

    /// Takes a request only if one is queued right now (no wait, so no GVL release needed),
    /// unless this thread steps back from serving (see [`handoff`]) and leaves it to others.
    pub fn try_pop(self: &Arc<Self>, seat: &mut Seat) -> Option<T>
    where
        T: Work + Send + 'static,
    {
        let mut st = self.lock();
        if st.jobs.is_empty() || st.crew.steps_back(seat, Instant::now()) {
            return None;
        }
        let job = st.jobs.pop_front()?;
        Some(self.took(st, seat, job))
    }

    /// [`try_pop`](Self::try_pop) for a fiber-mode thread that already has requests (all
    /// waiting): it takes only a request no idle thread is there for, so while a thread is idle
    /// (or woken, or starting) a new request gets a thread of its own, and a request that never
    /// waits does not land beside requests whose waits end meanwhile.
    pub fn try_pop_spare(self: &Arc<Self>, seat: &mut Seat) -> Option<T>
    where
        T: Work + Send + 'static,
    {
        let mut st = self.lock();
        if !st.has_spare_work() || st.crew.steps_back(seat, Instant::now()) {
            return None;
        }
        let job = st.jobs.pop_front()?;
        Some(self.took(st, seat, job))
    }

    /// Books a job taken by a pool thread and gives it its [`Running`] guard, and asks for
    /// another thread if requests are still queued with nobody idle to take them (the manager
    /// may have been told "enough" while this thread was starting).
    fn took(self: &Arc<Self>, mut st: MutexGuard<'_, State<T>>, seat: &mut Seat, mut job: T) -> T
    where
        T: Work + Send + 'static,
    {
        st.crew.took(seat, Instant::now());
        st.running += 1;
        self.requests_count.fetch_add(1, Ordering::Relaxed);
        if st.has_spare_work() && st.spawned < self.thread_limit(&st) {
            self.manager.notify_one();
        }
        drop(st);
        job.taken(Running {
            books: self.clone(),
        });
        job
    }

    /// The request on the thread `id` waits on IO (`env["puma.mark_as_io_bound"]`): the thread
    /// no longer counts against `max_threads` (up to `max_io_threads` such threads) nor as
    /// serving for the hand-off, so a queued request gets a thread now. Marking twice is
    /// marking once. Safe to call from any thread.
    pub fn mark_io_bound(&self, id: SeatId) {
        let mut st = self.lock();
        if !st.crew.mark_io(id) {
            return;
        }
        if st.has_spare_work() && st.spawned < self.thread_limit(&st) {
            self.manager.notify_one();
        }
        // An idle thread may take a queued request at once now.
        if st.unclaimed() && st.waiting > 0 {
            self.work.notify_one();
        }
        drop(st);
        // The reactor may accept another connection.
        self.capacity.notify_waiters();
    }

    /// The thread finished a request (call it before it looks for the next). If the request had
    /// marked it IO-bound, the mark ends, and when the pool now has more threads than it may,
    /// the thread leaves it instead of taking more work (Puma's rule): true, already uncounted.
    pub fn request_ended(&self, seat: &mut Seat) -> bool {
        let mut st = self.lock();
        if !st.crew.unmark_io(seat.id()) || st.spawned <= self.thread_limit(&st) {
            return false;
        }
        st.spawned -= 1;
        st.crew.discharge(seat);
        self.pass_watch_on(&st);
        true
    }

    /// A fiber-mode thread serves no request any more, only fibers its requests scheduled that
    /// outlived them (`Fiber.schedule`). As a thread-mode thread whose request started a Thread
    /// would be, it is idle: in the stats and for the hand-off (no longer serving). And it
    /// leaves the pool as an idle thread does: when the queue closed with nothing queued, or
    /// after `idle_trim` above `min_threads`. Call it each time the thread is about to wait so;
    /// [`busy_again`](Self::busy_again) when it takes a request.
    pub fn idle_in_background(&self, seat: &mut Seat) -> Idling {
        let now = Instant::now();
        let mut st = self.lock();
        st.crew.idle(seat);
        let since = *seat.background_since.get_or_insert_with(|| {
            st.background += 1;
            now
        });
        let idled = now.saturating_duration_since(since);
        let above_min = st.spawned > self.min_threads;
        if st.jobs.is_empty() && (st.closed || (above_min && idled >= self.idle_trim)) {
            seat.background_since = None;
            st.background = st.background.saturating_sub(1);
            st.spawned = st.spawned.saturating_sub(1);
            st.crew.discharge(seat);
            self.manager.notify_all();
            return Idling::Leave;
        }
        let again_in = if st.closed {
            // Other threads take what is left; nothing rings this one when they are done.
            Some(LOOK_EVERY)
        } else {
            above_min.then(|| self.idle_trim.saturating_sub(idled))
        };
        Idling::Stay { again_in }
    }

    /// The thread [`idle_in_background`](Self::idle_in_background) booked idle takes requests
    /// again (nothing to do if it was not).
    pub fn busy_again(&self, seat: &mut Seat) {
        if seat.background_since.take().is_some() {
            let mut st = self.lock();
            st.background = st.background.saturating_sub(1);
        }
    }

    /// A pool thread is gone for a reason the queue did not decide (it was killed or raised).
    pub fn thread_died(&self, seat: &mut Seat) {
        let mut st = self.lock();
        if seat.background_since.take().is_some() {
            st.background = st.background.saturating_sub(1);
        }
        st.spawned = st.spawned.saturating_sub(1);
        st.crew.discharge(seat);
        // It may have been the watcher: another idle thread takes over.
        self.pass_watch_on(&st);
        if !st.jobs.is_empty() || st.spawned < self.min_threads {
            self.manager.notify_one();
        }
    }

    /// Blocks the pool manager until a thread should be started (call it without the GVL).
    /// The pool grows when requests wait and no thread is idle, and keeps `min_threads` alive.
    pub fn next_pool_action(&self, waiter: &Waiter) -> PoolAction {
        let mut st = self.lock();
        loop {
            // Decide before honouring an interrupt: starting a thread is quick, and the
            // interrupt is seen on the next call.
            if st.closed {
                return PoolAction::Closed;
            }
            let starved = st.has_spare_work();
            if st.spawned < self.thread_limit(&st) && (starved || st.spawned < self.min_threads) {
                st.spawned += 1;
                st.starting += 1;
                return PoolAction::Spawn;
            }
            if waiter.is_interrupted() {
                return PoolAction::Interrupted;
            }
            st = self.manager.wait(st).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// Wakes `waiter` out of whatever wait it is in. Safe to call from any thread.
    pub fn interrupt(&self, waiter: &Waiter) {
        waiter.interrupted.store(true, Ordering::SeqCst);
        // Taking the lock orders the flag store before the waits re-check it.
        drop(self.lock());
        self.work.notify_all();
        self.manager.notify_all();
    }

    /// No more requests will come: idle threads exit once the queue is empty.
    pub fn close(&self) {
        let mut st = self.lock();
        st.closed = true;
        for bell in &st.doorbells {
            bell.closing();
        }
        drop(st);
        self.work.notify_all();
        self.manager.notify_all();
        self.capacity.notify_waiters();
    }

    pub fn stats(&self) -> PoolStats {
        let st = self.lock();
        PoolStats {
            min_threads: self.min_threads,
            max_threads: self.max_threads,
            spawned: st.spawned,
            waiting: st.waiting + st.background,
            backlog: st.jobs.len(),
            running: st.running,
            requests_count: self.requests_count.load(Ordering::Relaxed),
            io_threads: st.crew.io,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A test job: a number, and the guard it holds once taken.
    #[derive(Debug)]
    struct Task(u32, Option<Running>);

    impl Work for Task {
        fn taken(&mut self, running: Running) {
            self.1 = Some(running);
        }
    }

    fn task(n: u32) -> Task {
        Task(n, None)
    }

    /// The job's number (dropping it, so it no longer counts as running).
    fn id(task: Option<Task>) -> Option<u32> {
        task.map(|t| t.0)
    }

    fn queue(min: usize, max: usize) -> Arc<WorkQueue<Task>> {
        Arc::new(WorkQueue::new(
            min,
            max,
            Duration::from_secs(30),
            Handoff::GvlAware,
        ))
    }

    /// Runs the manager's decision once without blocking: Some(action) if it decided at once.
    fn manager_step(q: &WorkQueue<Task>) -> Option<PoolAction> {
        let waiter = Waiter::new();
        waiter.set_interrupted();
        match q.next_pool_action(&waiter) {
            PoolAction::Interrupted => None,
            other => Some(other),
        }
    }

    #[test]
    fn grows_one_thread_per_waiting_request_and_no_more() {
        let q = queue(0, 3);
        assert_eq!(manager_step(&q), None, "nothing to do yet");
        q.push(task(1));
        assert_eq!(manager_step(&q), Some(PoolAction::Spawn));
        assert_eq!(manager_step(&q), None, "the starting thread will take it");
        q.push(task(2));
        q.push(task(3));
        assert_eq!(manager_step(&q), Some(PoolAction::Spawn));
        assert_eq!(manager_step(&q), Some(PoolAction::Spawn));
        assert_eq!(manager_step(&q), None, "at max");
        let mut taken = Vec::new();
        for _ in 0..3 {
            let mut seat = q.thread_started();
            taken.extend(q.try_pop(&mut seat));
        }
        assert_eq!(taken.len(), 3);
        let s = q.stats();
        assert_eq!((s.spawned, s.running, s.backlog), (3, 3, 0));
        assert!(!q.has_capacity());
        let guards = taken.iter().filter_map(|t| t.1.as_ref());
        assert_eq!(guards.filter(|g| !g.others_waiting()).count(), 3);
        drop(taken.pop());
        assert!(q.has_capacity(), "a dropped guard frees its thread");
        assert_eq!(q.stats().running, 2);
    }

    /// Counts its rings.
    #[derive(Debug, Default)]
    struct Bell(AtomicU64);

    impl Doorbell for Bell {
        fn ring(&self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn a_doorbell_rings_for_each_request_queued_until_taken_off() {
        let q = queue(0, 1);
        let bell = Arc::new(Bell::default());
        let hung: Arc<dyn Doorbell> = bell.clone();
        q.add_doorbell(hung.clone());
        q.push(task(1));
        q.push(task(2));
        assert_eq!(bell.0.load(Ordering::SeqCst), 2);
        q.remove_doorbell(&hung);
        q.push(task(3));
        assert_eq!(bell.0.load(Ordering::SeqCst), 2, "taken off: no more rings");
    }

    #[test]
    fn doorbells_ring_only_for_requests_no_idle_thread_is_there_for() {
        let q = queue(2, 2);
        let bell = Arc::new(Bell::default());
        q.add_doorbell(bell.clone());
        let (q2, waiter) = (q.clone(), Arc::new(Waiter::new()));
        let idle = std::thread::spawn(move || {
            let mut seat = q2.thread_started();
            q2.wait_for_work(&mut seat, &waiter)
        });
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while q.stats().waiting == 0 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        q.push(task(1));
        assert_eq!(bell.0.load(Ordering::SeqCst), 0, "the idle thread takes it");
        let mut busy = q.thread_started();
        assert!(!q.has_spare_work());
        assert_eq!(
            id(q.try_pop_spare(&mut busy)),
            None,
            "left to the idle thread"
        );
        q.push(task(2));
        assert_eq!(
            bell.0.load(Ordering::SeqCst),
            1,
            "one more than idle threads"
        );
        assert!(q.has_spare_work());
        assert_eq!(
            id(q.try_pop_spare(&mut busy)),
            Some(1),
            "the one beyond the idle thread"
        );
        assert!(matches!(idle.join(), Ok(Wait::Ready)));
    }

    #[test]
    fn threads_running_several_requests_raise_the_capacity() {
        let q = Arc::new(
            WorkQueue::new(1, 2, Duration::from_secs(30), Handoff::GvlAware)
                .with_requests_per_thread(3),
        );
        let mut seat = q.thread_started();
        let mut taken = Vec::new();
        for n in 0..5 {
            assert!(q.has_capacity(), "{n} of 6 requests");
            q.push(task(n));
            taken.extend(q.try_pop(&mut seat));
        }
        assert_eq!(taken.len(), 5, "one thread takes several");
        q.push(task(5));
        assert!(!q.has_capacity(), "2 threads x 3 requests");
        drop(taken.pop());
        assert!(q.has_capacity());
    }

    #[test]
    fn arriving_connections_count_against_capacity_until_they_arrive() {
        let q = queue(0, 2);
        q.connection_arriving();
        assert!(q.has_capacity());
        q.connection_arriving();
        assert!(
            !q.has_capacity(),
            "two threads, two connections about to send requests"
        );
        q.push(task(1));
        q.connection_arrived();
        assert!(
            !q.has_capacity(),
            "the request replaced the connection in the count"
        );
        q.connection_arrived();
        assert!(q.has_capacity());
        q.connection_arrived();
        assert!(q.has_capacity(), "never below zero");
    }

    #[test]
    fn a_woken_thread_claims_only_what_is_left_and_counts_as_idle_meanwhile() {
        let q = queue(2, 2);
        let mut seat = q.thread_started();
        let waiter = Waiter::new();
        q.push(task(7));
        assert_eq!(q.wait_for_work(&mut seat, &waiter), Wait::Ready);
        // While it gets the GVL, the request is not announced to a second thread ...
        let second = Arc::new(Waiter::new());
        let (q2, w2) = (q.clone(), second.clone());
        let t = std::thread::spawn(move || {
            let mut seat = q2.thread_started();
            q2.wait_for_work(&mut seat, &w2)
        });
        std::thread::sleep(Duration::from_millis(50));
        assert!(
            !t.is_finished(),
            "a second thread was woken for one request"
        );
        q.interrupt(&second);
        assert!(matches!(t.join(), Ok(Wait::Interrupted)));
        // ... and a thread already holding the GVL may take it first.
        let mut running = q.thread_started();
        assert_eq!(id(q.try_pop(&mut running)), Some(7));
        assert_eq!(id(q.claim(&mut seat)), None);
        q.push(task(8));
        assert_eq!(q.wait_for_work(&mut running, &waiter), Wait::Ready);
        let eight = q.claim(&mut running);
        assert_eq!(eight.as_ref().map(|t| t.0), Some(8));
        assert_eq!(q.stats().running, 1, "counted while its job is held");
        drop(eight);
        assert_eq!(q.stats().running, 0);
    }

    #[test]
    fn a_thread_that_started_late_still_gets_help() {
        let q = queue(0, 2);
        q.push(task(1));
        assert_eq!(manager_step(&q), Some(PoolAction::Spawn));
        q.push(task(2)); // arrives while the first thread is starting: no new thread yet
        assert_eq!(manager_step(&q), Some(PoolAction::Spawn));
    }

    #[test]
    fn keeps_min_threads_and_trims_above_min() {
        let q = Arc::new(WorkQueue::<Task>::new(
            1,
            2,
            Duration::from_millis(20),
            Handoff::GvlAware,
        ));
        assert_eq!(manager_step(&q), Some(PoolAction::Spawn));
        assert_eq!(manager_step(&q), None);
        let _first = q.thread_started();
        q.push(task(1));
        q.push(task(2));
        assert_eq!(manager_step(&q), Some(PoolAction::Spawn));
        let mut second = q.thread_started();
        let w = Waiter::new();
        assert!(matches!(q.pop(&mut second, &w), Pop::Job(Task(1, Some(_)))));
        assert!(matches!(q.pop(&mut second, &w), Pop::Job(Task(2, Some(_)))));
        assert!(
            matches!(q.pop(&mut second, &w), Pop::Trim),
            "second thread idles out"
        );
        let stats = q.stats();
        assert_eq!(stats.spawned, 1);
    }

    /// Puma 8's growth rule, `spawned − io < max − (io beyond max_io_threads)`, for every small
    /// pool: the queue's limit allows exactly the threads Puma would spawn.
    #[test]
    fn io_bound_threads_follow_pumas_growth_rule() {
        for max in 1..4usize {
            for max_io in 0..4usize {
                for io in 0..6usize {
                    let q = WorkQueue::<Task>::new(0, max, Duration::from_secs(30), Handoff::Eager)
                        .with_io_threads(max_io);
                    let mut st = q.lock();
                    for _ in 0..io {
                        let seat = st.crew.enlist(None);
                        st.crew.took(&seat, Instant::now());
                        assert!(st.crew.mark_io(seat.id()));
                    }
                    let limit = q.thread_limit(&st);
                    drop(st);
                    let beyond = io.saturating_sub(max_io);
                    for spawned in 0..10usize {
                        let puma = spawned as i64 - (io as i64) < max as i64 - beyond as i64;
                        assert_eq!(spawned < limit, puma, "max {max} max_io {max_io} io {io}");
                    }
                }
            }
        }
    }

    /// `threads 1, 1` with `max_io_threads`.
    fn io_queue(max_io: usize) -> Arc<WorkQueue<Task>> {
        Arc::new(
            WorkQueue::new(1, 1, Duration::from_secs(30), Handoff::GvlAware)
                .with_io_threads(max_io),
        )
    }

    #[test]
    fn a_marked_request_lets_the_pool_grow_by_max_io_threads_then_shrink_back() {
        let q = io_queue(1);
        assert_eq!(manager_step(&q), Some(PoolAction::Spawn));
        let mut a = q.thread_started();
        q.push(task(1));
        let one = q.try_pop(&mut a);
        assert!(!q.has_capacity(), "max 1, one running");
        q.push(task(2));
        assert_eq!(manager_step(&q), None, "at max");
        q.mark_io_bound(a.id());
        q.mark_io_bound(a.id());
        assert_eq!(q.stats().io_threads, 1, "marking twice is marking once");
        assert_eq!(manager_step(&q), Some(PoolAction::Spawn), "one beyond max");
        let mut b = q.thread_started();
        let two = q.try_pop(&mut b);
        assert_eq!(id(two), Some(2));
        q.push(task(3));
        let mut b_again = q.try_pop(&mut b);
        assert!(b_again.is_some());
        q.mark_io_bound(b.id());
        assert_eq!(q.stats().io_threads, 2);
        assert!(!q.has_capacity(), "two marked, one allowed beyond max");
        q.push(task(4));
        assert_eq!(
            manager_step(&q),
            None,
            "the second marked thread takes max's place"
        );
        // a's request ends: b is still marked, so a may rejoin and take 4.
        drop(one);
        assert!(!q.request_ended(&mut a));
        assert_eq!(id(q.try_pop(&mut a)), Some(4));
        // b's ends while a fills max: b leaves, uncounted.
        b_again.take();
        assert!(q.request_ended(&mut b));
        let s = q.stats();
        assert_eq!((s.spawned, s.io_threads), (1, 0));
        assert!(!q.request_ended(&mut a), "an unmarked thread stays");
        assert_eq!(q.stats().spawned, 1);
    }

    #[test]
    fn a_marked_thread_that_dies_is_uncounted() {
        let q = io_queue(1);
        assert_eq!(manager_step(&q), Some(PoolAction::Spawn));
        let mut a = q.thread_started();
        q.mark_io_bound(a.id());
        assert_eq!(
            q.stats().io_threads,
            0,
            "a thread that serves nothing is not marked"
        );
        q.push(task(1));
        let _one = q.try_pop(&mut a);
        q.mark_io_bound(a.id());
        assert_eq!(q.stats().io_threads, 1);
        q.thread_died(&mut a);
        let s = q.stats();
        assert_eq!((s.spawned, s.io_threads), (0, 0));
    }

    #[test]
    fn interrupt_wakes_a_blocked_pop_and_close_ends_it() {
        let q = queue(0, 1);
        let w = Arc::new(Waiter::new());
        let (q2, w2) = (q.clone(), w.clone());
        let t = std::thread::spawn(move || {
            let mut seat = q2.thread_started();
            matches!(q2.pop(&mut seat, &w2), Pop::Interrupted)
        });
        std::thread::sleep(Duration::from_millis(20));
        q.interrupt(&w);
        assert!(t.join().unwrap_or(false));
        w.reset();
        q.close();
        let mut seat = q.thread_started();
        assert!(matches!(q.pop(&mut seat, &w), Pop::Closed));
        assert_eq!(manager_step(&q), Some(PoolAction::Closed));
    }

    /// A thread of `q` started by the manager that took a request and finished it.
    fn thread_after_a_request(q: &Arc<WorkQueue<Task>>) -> Seat {
        q.push(task(1));
        assert_eq!(manager_step(q), Some(PoolAction::Spawn));
        let mut seat = q.thread_started();
        assert_eq!(id(q.try_pop(&mut seat)), Some(1));
        seat
    }

    #[test]
    fn a_fiber_thread_left_with_fibers_its_requests_scheduled_is_idle_until_it_takes_one() {
        let q = queue(1, 2);
        let mut seat = thread_after_a_request(&q);
        let bell = Arc::new(Bell::default());
        q.add_doorbell(bell.clone());
        assert_eq!(
            q.idle_in_background(&mut seat),
            Idling::Stay { again_in: None },
            "at min_threads: never trimmed"
        );
        assert_eq!(
            q.idle_in_background(&mut seat),
            Idling::Stay { again_in: None }
        );
        assert_eq!(q.stats().waiting, 1, "counted once");
        q.busy_again(&mut seat);
        q.busy_again(&mut seat);
        assert_eq!(q.stats().waiting, 0);
        q.idle_in_background(&mut seat);
        q.push(task(2));
        q.close();
        assert_eq!(
            bell.0.load(Ordering::SeqCst),
            2,
            "rung for the request and the close"
        );
        assert_eq!(
            q.idle_in_background(&mut seat),
            Idling::Stay {
                again_in: Some(LOOK_EVERY)
            },
            "closed, but a request is still queued: it looks again soon"
        );
        assert_eq!(id(q.try_pop(&mut seat)), Some(2));
        q.busy_again(&mut seat);
        assert_eq!(q.idle_in_background(&mut seat), Idling::Leave);
        let s = q.stats();
        assert_eq!((s.spawned, s.waiting), (0, 0), "left the pool, uncounted");
    }

    #[test]
    fn a_fiber_thread_left_with_fibers_its_requests_scheduled_is_trimmed_above_min() {
        let q = queue(0, 2);
        let mut seat = thread_after_a_request(&q);
        match q.idle_in_background(&mut seat) {
            Idling::Stay { again_in: Some(t) } => assert!(t <= Duration::from_secs(30)),
            other => panic!("not trimmed yet, told when: {other:?}"),
        }
        let q = Arc::new(WorkQueue::new(0, 2, Duration::ZERO, Handoff::GvlAware));
        let mut seat = thread_after_a_request(&q);
        q.push(task(2));
        assert!(
            matches!(q.idle_in_background(&mut seat), Idling::Stay { .. }),
            "a request is queued"
        );
        assert_eq!(id(q.try_pop(&mut seat)), Some(2));
        assert_eq!(q.idle_in_background(&mut seat), Idling::Leave);
        assert_eq!(q.stats().spawned, 0);
    }

    #[test]
    fn a_thread_that_dies_idle_in_background_is_uncounted() {
        let q = queue(1, 2);
        let mut seat = thread_after_a_request(&q);
        q.idle_in_background(&mut seat);
        q.thread_died(&mut seat);
        let s = q.stats();
        assert_eq!((s.spawned, s.waiting), (0, 0));
    }
}
