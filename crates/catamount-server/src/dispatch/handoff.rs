//! When a queued request goes to another pool thread: at once, or only once that thread could
//! run it.
//!
//! Only one Ruby thread runs at a time. A queued request handed to an idle thread while another
//! thread is running Ruby does not run sooner: the new thread just queues at the GVL. And in
//! Ruby 3.1 a thread queued at the GVL is not free. Every short release of the GVL by the
//! running thread (a `File.exist?`, the `stat` of a template, a log write) hands the GVL to a
//! waiter, which must be woken, scheduled and warmed up before it runs, and the thread that
//! released it then queues in turn. A Sinatra route that stats four files per request thus cost
//! half again the CPU with five threads than with one (docs/benchmarks.md), with no gain: the
//! work never waited on anything but the GVL. Puma's threads all queue at the GVL and pay this.
//!
//! So the pool hands a queued request to another thread only when that thread would run it:
//!
//! - when no thread is serving (nothing holds the GVL for requests);
//! - when every serving thread is asleep (blocked in I/O, a sleep, a lock: the GVL is free).
//!   The idle thread woken for the request looks at once; while the answer is no, one idle
//!   thread (the watcher) looks again every [`LOOK_EVERY`];
//! - when every serving thread has been on its request for [`LONG_REQUEST`]: a slow request
//!   must not hold up the queue, so from then on the threads share the GVL by Ruby's own time
//!   slices, as every thread would with Puma.
//!
//! A thread whose request marked itself IO-bound (`env["puma.mark_as_io_bound"]`) is not
//! counted as serving at all: the app said it waits on IO, so it holds the GVL only for short
//! moments between waits, and a queued request must not wait for a look to catch it asleep (or
//! for [`LONG_REQUEST`]) when the point of the mark is to run another request beside it. Should
//! it run Ruby for long after all, the threads share the GVL by Ruby's time slices, as in Puma.
//!
//! The other way, a serving thread steps back (leaves the queue to the others and goes idle)
//! at most once every [`STEP_BACK_EVERY`] while more than one thread serves: joins are decided
//! on a glimpse, and a pool whose threads now only queue at the GVL must shrink again. If the
//! threads it left were blocked in I/O after all, the watcher sees them asleep and a thread
//! joins again within a look or two.
//!
//! The run state comes from [`RunState`]; where the kernel does not show it, or the operator
//! turned this off ([`Handoff::Eager`]), every idle thread takes a queued request at once.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::run_state::RunState;

/// How a queued request is handed to the pool's threads (`ServerConfig::handoff`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Handoff {
    /// To another thread only once it could run the request (see the module docs). Default.
    #[default]
    GvlAware,
    /// To any idle thread at once, as Puma does.
    Eager,
}

/// How often the watcher looks at the serving threads. Short, because a request that could run
/// waits this long at most; each look costs a wake-up and a few microseconds per serving thread.
pub(crate) const LOOK_EVERY: Duration = Duration::from_millis(1);

/// A request running this long no longer holds up the queue on its own: once every serving
/// thread is on one, an idle thread joins in.
pub(crate) const LONG_REQUEST: Duration = Duration::from_millis(50);

/// How often, at most, a serving thread steps back while more than one serves.
pub(crate) const STEP_BACK_EVERY: Duration = Duration::from_millis(100);

/// Names a pool thread's [`Seat`] to code that cannot hold the seat itself (the callable an
/// app calls to mark its request IO-bound).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeatId(pub(crate) u64);

/// A pool thread's place in the queue's books, from `WorkQueue::thread_started`. Only the
/// thread it was given to uses it.
#[derive(Debug)]
pub struct Seat {
    pub(crate) id: u64,
    /// Just stepped back: the threads it left are queued at the GVL it is about to release and
    /// look asleep for a moment, so its first look waits until the next [`LOOK_EVERY`].
    pub(crate) stepped_back: bool,
    /// The serving threads to look at, filled by [`Crew::verdict`] (kept, so a look allocates
    /// nothing once the pool has run a while).
    pub(crate) look: Vec<Arc<RunState>>,
    /// A fiber-mode thread with no request of its own, only fibers its requests scheduled
    /// (see `WorkQueue::idle_in_background`): since when.
    pub(crate) background_since: Option<Instant>,
}

impl Seat {
    pub fn id(&self) -> SeatId {
        SeatId(self.id)
    }
}

/// The books of one pool thread.
#[derive(Debug)]
struct Member {
    id: u64,
    run_state: Option<Arc<RunState>>,
    /// When it took the request it is on; None while it is not serving (serving lasts from
    /// taking a request to coming back to wait: it may take several in a row).
    busy_since: Option<Instant>,
    /// Its request said it waits on IO (`env["puma.mark_as_io_bound"]`): it is not counted as
    /// serving, so it never holds a queued request back from another thread.
    io: bool,
}

/// What an idle thread with a queued request in front of it does next.
#[derive(Debug)]
pub(crate) enum Verdict {
    /// Take the request.
    Join,
    /// Leave it for now; look again after [`LOOK_EVERY`] if this thread is the watcher.
    Wait,
    /// Take it if every thread in the seat's `look` is asleep (read them without the queue's
    /// lock).
    Look,
}

/// The pool's threads as the hand-off sees them. Kept inside the queue's lock.
#[derive(Debug)]
pub(crate) struct Crew {
    handoff: Handoff,
    members: Vec<Member>,
    next_id: u64,
    /// Members serving (with a `busy_since`) and not marked IO-bound, counted.
    serving: usize,
    /// Members marked IO-bound, counted.
    pub(crate) io: usize,
    /// The idle thread that looks again every [`LOOK_EVERY`] (at most one).
    pub(crate) watcher: Option<u64>,
    /// When a thread last joined the serving ones or stepped back from them.
    last_change: Instant,
    /// Some thread's run state cannot be read: hand off eagerly.
    blind: bool,
}

impl Crew {
    pub(crate) fn new(handoff: Handoff) -> Crew {
        Crew {
            handoff,
            members: Vec::new(),
            next_id: 0,
            serving: 0,
            io: 0,
            watcher: None,
            last_change: Instant::now(),
            blind: false,
        }
    }

    /// Books the calling thread; it reads its own run state, so call this on that thread.
    pub(crate) fn enlist(&mut self, run_state: Option<RunState>) -> Seat {
        let id = self.next_id;
        self.next_id += 1;
        if self.handoff == Handoff::GvlAware && run_state.is_none() {
            self.blind = true;
        }
        self.members.push(Member {
            id,
            run_state: run_state.map(Arc::new),
            busy_since: None,
            io: false,
        });
        Seat {
            id,
            stepped_back: false,
            look: Vec::new(),
            background_since: None,
        }
    }

    /// Forgets a thread that leaves the pool.
    pub(crate) fn discharge(&mut self, seat: &Seat) {
        self.idle(seat);
        self.unmark_io(seat.id());
        self.members.retain(|m| m.id != seat.id);
        if self.watcher == Some(seat.id) {
            self.watcher = None;
        }
    }

    fn eager(&self) -> bool {
        self.handoff == Handoff::Eager || self.blind
    }

    fn member(&mut self, seat: &Seat) -> Option<&mut Member> {
        self.members.iter_mut().find(|m| m.id == seat.id)
    }

    /// The thread took a request.
    pub(crate) fn took(&mut self, seat: &Seat, now: Instant) {
        if let Some(m) = self.member(seat) {
            if m.busy_since.replace(now).is_none() && !m.io {
                self.serving += 1;
            }
        }
    }

    /// The thread came back to wait for work.
    pub(crate) fn idle(&mut self, seat: &Seat) {
        if let Some(m) = self.member(seat) {
            if m.busy_since.take().is_some() && !m.io {
                self.serving -= 1;
            }
        }
    }

    /// Marks the thread IO-bound; false if it already was, is gone, or serves no request (a
    /// callable an app kept and called after its request must not raise the pool's limit).
    pub(crate) fn mark_io(&mut self, id: SeatId) -> bool {
        let Some(m) = self.members.iter_mut().find(|m| m.id == id.0) else {
            return false;
        };
        if m.io || m.busy_since.is_none() {
            return false;
        }
        m.io = true;
        self.serving -= 1;
        self.io += 1;
        true
    }

    /// The thread is no longer IO-bound; false if it was not.
    pub(crate) fn unmark_io(&mut self, id: SeatId) -> bool {
        let Some(m) = self.members.iter_mut().find(|m| m.id == id.0) else {
            return false;
        };
        if !m.io {
            return false;
        }
        m.io = false;
        if m.busy_since.is_some() {
            self.serving += 1;
        }
        self.io -= 1;
        true
    }

    /// Whether a thread that is not serving would take a request pushed now, with `claiming`
    /// threads already on their way to one, without looking first. The reactor wakes an idle
    /// thread only then, or to become the watcher.
    pub(crate) fn takes_at_once(&self, claiming: usize) -> bool {
        self.eager() || self.serving + claiming == 0
    }

    /// What an idle thread does about a queued request (see the module docs).
    pub(crate) fn verdict(&self, seat: &mut Seat, claiming: usize, now: Instant) -> Verdict {
        let stepped_back = std::mem::take(&mut seat.stepped_back);
        if self.takes_at_once(claiming) {
            return Verdict::Join;
        }
        if self.serving > 0 && !self.any_short_request(now) {
            return Verdict::Join;
        }
        // A thread on its way to a request is about to run Ruby; one that just stepped back
        // would see the threads it left still queued at the GVL.
        if claiming > 0 || stepped_back {
            return Verdict::Wait;
        }
        seat.look.clear();
        seat.look.extend(
            self.members
                .iter()
                .filter(|m| m.busy_since.is_some() && !m.io)
                .filter_map(|m| m.run_state.clone()),
        );
        Verdict::Look
    }

    /// An idle thread joins the serving ones.
    pub(crate) fn joined(&mut self, seat: &Seat, now: Instant) {
        if self.watcher == Some(seat.id) {
            self.watcher = None;
        }
        if self.serving > 0 {
            self.last_change = now;
        }
    }

    /// Whether a serving thread about to take another queued request steps back instead.
    pub(crate) fn steps_back(&mut self, seat: &mut Seat, now: Instant) -> bool {
        let serving = self
            .member(seat)
            .is_some_and(|m| m.busy_since.is_some() && !m.io);
        let due = serving
            && self.serving > 1
            && !self.eager()
            && now.saturating_duration_since(self.last_change) >= STEP_BACK_EVERY
            // Threads on long requests share the GVL on purpose.
            && self.any_short_request(now);
        if due {
            self.last_change = now;
            seat.stepped_back = true;
        }
        due
    }

    fn any_short_request(&self, now: Instant) -> bool {
        self.members.iter().any(|m| {
            !m.io
                && m.busy_since
                    .is_some_and(|t| now.saturating_duration_since(t) < LONG_REQUEST)
        })
    }
}

/// Whether every thread looked at is asleep (an empty list: nobody holds the GVL).
pub(crate) fn all_asleep(threads: &[Arc<RunState>]) -> bool {
    threads.iter().all(|t| t.asleep())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn crew_of(n: usize) -> (Crew, Vec<Seat>) {
        let mut crew = Crew::new(Handoff::GvlAware);
        let seats = (0..n)
            .map(|_| {
                let run_state = RunState::of_current_thread();
                assert!(run_state.is_some(), "no /proc/thread-self/stat");
                crew.enlist(run_state)
            })
            .collect();
        (crew, seats)
    }

    #[test]
    fn joins_at_once_when_nobody_serves_else_looks() {
        let (mut crew, mut seats) = crew_of(2);
        let now = Instant::now();
        assert!(crew.takes_at_once(0));
        assert!(matches!(crew.verdict(&mut seats[1], 0, now), Verdict::Join));
        assert!(!crew.takes_at_once(1), "one thread is already on its way");
        assert!(matches!(crew.verdict(&mut seats[1], 1, now), Verdict::Wait));
        crew.took(&seats[0], now);
        assert!(!crew.takes_at_once(0));
        match crew.verdict(&mut seats[1], 0, now) {
            Verdict::Look => assert_eq!(seats[1].look.len(), 1, "the serving one"),
            other => panic!("{other:?}"),
        }
        crew.idle(&seats[0]);
        assert!(crew.takes_at_once(0));
    }

    #[test]
    fn joins_when_every_serving_thread_is_on_a_long_request() {
        let (mut crew, mut seats) = crew_of(3);
        let start = Instant::now();
        crew.took(&seats[0], start);
        let later = start + LONG_REQUEST;
        assert!(matches!(
            crew.verdict(&mut seats[2], 0, later),
            Verdict::Join
        ));
        crew.took(&seats[1], later);
        assert!(
            matches!(crew.verdict(&mut seats[2], 0, later), Verdict::Look),
            "a short request is running"
        );
    }

    #[test]
    fn a_thread_that_stepped_back_waits_a_look_and_steps_back_rarely() {
        let (mut crew, mut seats) = crew_of(2);
        let start = Instant::now();
        let (a, b) = seats.split_at_mut(1);
        crew.took(&a[0], start);
        assert!(!crew.steps_back(&mut a[0], start), "it serves alone");
        crew.took(&b[0], start);
        crew.joined(&b[0], start);
        assert!(!crew.steps_back(&mut a[0], start), "a thread just joined");
        let later = start + STEP_BACK_EVERY;
        crew.took(&b[0], later); // its next request: a short one is running
        assert!(crew.steps_back(&mut a[0], later));
        crew.idle(&a[0]);
        assert!(!crew.steps_back(&mut b[0], later), "one at a time");
        assert!(matches!(crew.verdict(&mut a[0], 0, later), Verdict::Wait));
        assert!(
            matches!(crew.verdict(&mut a[0], 0, later), Verdict::Look),
            "the next look is a real one"
        );
    }

    #[test]
    fn an_io_bound_thread_never_holds_a_request_back() {
        let (mut crew, mut seats) = crew_of(3);
        let now = Instant::now();
        assert!(!crew.mark_io(seats[0].id()), "not serving: no mark");
        crew.took(&seats[0], now);
        assert!(crew.mark_io(seats[0].id()));
        assert!(!crew.mark_io(seats[0].id()), "once");
        assert!(crew.takes_at_once(0), "only an IO-bound thread serves");
        crew.took(&seats[1], now);
        match crew.verdict(&mut seats[2], 0, now) {
            Verdict::Look => assert_eq!(seats[2].look.len(), 1, "not the IO-bound one"),
            other => panic!("{other:?}"),
        }
        let (a, rest) = seats.split_at_mut(1);
        let later = now + STEP_BACK_EVERY;
        assert!(!crew.steps_back(&mut rest[0], later), "it serves alone");
        assert!(crew.unmark_io(a[0].id()));
        assert_eq!(crew.io, 0);
        crew.idle(&a[0]);
        crew.idle(&rest[0]);
        assert!(
            crew.takes_at_once(0),
            "the books add up once the mark is gone"
        );
        crew.took(&a[0], later);
        crew.mark_io(a[0].id());
        crew.discharge(&a[0]);
        assert_eq!(
            (crew.io, crew.serving),
            (0, 0),
            "a marked thread that leaves"
        );
    }

    #[test]
    fn eager_hand_off_never_holds_work_back() {
        let mut crew = Crew::new(Handoff::Eager);
        let mut a = crew.enlist(RunState::of_current_thread());
        let mut b = crew.enlist(RunState::of_current_thread());
        let now = Instant::now();
        crew.took(&a, now);
        assert!(crew.takes_at_once(3));
        assert!(matches!(crew.verdict(&mut b, 0, now), Verdict::Join));
        crew.took(&b, now);
        assert!(!crew.steps_back(&mut a, now + STEP_BACK_EVERY));
    }

    #[test]
    fn a_thread_without_a_readable_run_state_makes_the_hand_off_eager() {
        let mut crew = Crew::new(Handoff::GvlAware);
        let a = crew.enlist(RunState::of_current_thread());
        let mut b = crew.enlist(None);
        crew.took(&a, Instant::now());
        assert!(matches!(
            crew.verdict(&mut b, 0, Instant::now()),
            Verdict::Join
        ));
    }
}
