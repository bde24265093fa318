//! `request_timeout` on the connection's side: who answers a request, its app or the server.
//!
//! Each connection's [`Answer`] says, for its current request, whether the response has begun,
//! is done, or was taken over because the request ran out of time. The pool thread's
//! [`Responder`](crate::Responder) claims the answer at its first write; the watch (the ext's
//! `timeout.rs`, a Ruby thread) expires it through an [`Overdue`] at the deadline. One
//! compare-and-swap decides, so the client gets exactly one of the two: the app's response, or
//! the server's error answer (or, when the app's had begun, a cut connection). A generation
//! number changes with every request, so a late expiry never touches the connection's next
//! request. Nothing here runs unless the option is on but one atomic operation per response.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use catamount_http::{error_response, Version};

use crate::response::{Ending, Exchange, Outgoing};
use crate::stream::Stream;

/// Nothing written yet.
const OPEN: u64 = 0;
/// The app's response began.
const BEGUN: u64 = 1;
/// The app's response is complete.
const DONE: u64 = 2;
/// The server answered (or cut) it: whatever the app writes for this request is refused.
const OVERDUE: u64 = 3;
/// The app took the connection (`rack.hijack`, an upgrade): it is no longer a request, and no
/// deadline applies to it.
const TAKEN: u64 = 4;
/// Bits of the phase.
const SHIFT: u32 = 3;
const PHASE: u64 = (1 << SHIFT) - 1;

/// `(generation << SHIFT) | phase` for a connection's current request.
#[derive(Debug, Default)]
pub(crate) struct Answer(AtomicU64);

impl Answer {
    /// A new request on the connection (the reactor, before its responder is made).
    pub(crate) fn begin(&self) {
        let now = self.0.load(Ordering::Acquire);
        self.0
            .store(((now >> SHIFT) + 1) << SHIFT, Ordering::Release);
    }

    /// The current request's generation.
    pub(crate) fn generation(&self) -> u64 {
        self.0.load(Ordering::Acquire) >> SHIFT
    }

    /// Moves `generation`'s answer from `from` to `to`; the phase found when it is not `from`.
    fn moved(&self, generation: u64, from: u64, to: u64) -> Result<(), u64> {
        let base = generation << SHIFT;
        self.0
            .compare_exchange(base | from, base | to, Ordering::AcqRel, Ordering::Acquire)
            .map(|_| ())
            .map_err(|found| {
                if found >> SHIFT == generation {
                    found & PHASE
                } else {
                    DONE
                }
            })
    }

    /// The app took the connection (after its claim): no deadline applies any more.
    pub(crate) fn taken(&self, generation: u64) {
        let _ = self.moved(generation, BEGUN, TAKEN);
    }

    /// The responder's first write: false when the server answered already.
    pub(crate) fn claim(&self, generation: u64) -> bool {
        self.moved(generation, OPEN, BEGUN) != Err(OVERDUE)
    }

    /// The responder is done with the request: false when the server answered it.
    pub(crate) fn finish(&self, generation: u64) -> bool {
        match self.moved(generation, OPEN, DONE) {
            Ok(()) => true,
            Err(BEGUN) => self.moved(generation, BEGUN, DONE) != Err(OVERDUE),
            Err(found) => found != OVERDUE,
        }
    }

    /// Whether the server answered `generation`'s request.
    pub(crate) fn is_overdue(&self, generation: u64) -> bool {
        self.0.load(Ordering::Acquire) == (generation << SHIFT) | OVERDUE
    }
}

/// What [`Overdue::expire`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expired {
    /// Nothing had been written: the client gets the error answer, then the connection closes.
    Answered,
    /// The app's response had begun: the connection is shut down both ways (the client sees it
    /// end short; the app's next write fails).
    Cut,
    /// The response was complete already (the thread is still in the request's callbacks): the
    /// connection is left alone.
    Finished,
    /// The app took the connection (`rack.hijack`, an upgrade): it is the app's, long-lived by
    /// design; nothing is done.
    Taken,
}

/// A running request's handle for its deadline ([`Responder::overdue`](crate::Responder::overdue)).
#[derive(Debug, Clone)]
pub struct Overdue {
    pub(crate) exchange: Arc<Exchange>,
    pub(crate) stream: Arc<Stream>,
    pub(crate) generation: u64,
    pub(crate) version: Version,
    pub(crate) status: u16,
}

impl Overdue {
    /// The request ran out of time: answer it with the status (if nothing went out yet), else
    /// cut its connection. Counted in the metrics (but for a connection the app took). Call
    /// once per request.
    pub fn expire(&self) -> Expired {
        let exchange = &self.exchange;
        let expired = match exchange.answer.moved(self.generation, OPEN, OVERDUE) {
            Ok(()) => {
                exchange.metrics.response(self.status);
                let bytes = error_response(self.version, self.status);
                // The reactor writes it and closes; the app's responder no longer ends the
                // exchange (its `finish` and drop see the answer taken).
                if exchange.hand_over(Outgoing::Data(bytes)).is_ok() {
                    let ending = Ending::Done {
                        keep_alive: false,
                        at: Instant::now(),
                    };
                    exchange.end(ending, true);
                }
                Expired::Answered
            }
            // Taken from the responder too, so it does not end the exchange after us.
            Err(BEGUN)
                if exchange
                    .answer
                    .moved(self.generation, BEGUN, OVERDUE)
                    .is_ok() =>
            {
                self.stream.shutdown_both();
                exchange.end(Ending::Aborted, true);
                Expired::Cut
            }
            Err(TAKEN) => return Expired::Taken,
            Err(_) => Expired::Finished,
        };
        exchange.metrics.request_timed_out();
        expired
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_to_move_the_answer_wins() {
        let a = Answer::default();
        a.begin();
        let g = a.generation();
        assert!(a.claim(g), "the app writes first");
        assert_eq!(
            a.moved(g, OPEN, OVERDUE),
            Err(BEGUN),
            "the deadline then cuts"
        );
        assert!(a.finish(g));
        assert_eq!(a.moved(g, OPEN, OVERDUE), Err(DONE));

        a.begin();
        let g = a.generation();
        assert_eq!(
            a.moved(g, OPEN, OVERDUE),
            Ok(()),
            "the deadline answers first"
        );
        assert!(a.is_overdue(g));
        assert!(!a.claim(g), "the app's writes are refused");
        assert!(!a.finish(g));
    }

    #[test]
    fn a_late_expiry_never_touches_the_next_request() {
        let a = Answer::default();
        a.begin();
        let old = a.generation();
        assert!(a.finish(old));
        a.begin();
        let new = a.generation();
        assert_ne!(old, new);
        assert_eq!(a.moved(old, OPEN, OVERDUE), Err(DONE));
        assert!(!a.is_overdue(new));
        assert!(a.claim(new));
        a.taken(new);
        assert_eq!(
            a.moved(new, OPEN, OVERDUE),
            Err(TAKEN),
            "a taken connection is the app's"
        );
        assert!(a.finish(new));
    }
}
