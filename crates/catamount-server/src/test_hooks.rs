//! Test-only ways to make the reactor panic where a real bug could, compiled only with the
//! `test-hooks` feature (the crate's own tests turn it on; the extension never does).
//!
//! A request for one of these paths arms the hook; the request itself is served as usual.

use std::sync::atomic::{AtomicBool, Ordering};

/// The connection's task panics when it next writes a hand-over (the pool thread is then in
/// the middle of the response).
pub(crate) const PANIC_IN_DELIVERY: &[u8] = b"/__catamount_test/panic-in-delivery";
/// The next accepted connection makes its accept loop panic: the reactor thread itself fails.
pub(crate) const PANIC_ACCEPT_LOOP: &[u8] = b"/__catamount_test/panic-accept-loop";

/// Process-wide: only a test's child process, which runs nothing else, requests it.
static ACCEPT_LOOP_ARMED: AtomicBool = AtomicBool::new(false);

pub(crate) fn arm_accept_loop_panic() {
    ACCEPT_LOOP_ARMED.store(true, Ordering::SeqCst);
}

/// Panics when armed.
pub(crate) fn accept_loop_checkpoint() {
    if ACCEPT_LOOP_ARMED.swap(false, Ordering::SeqCst) {
        panic!("test hook: the accept loop panics");
    }
}
