//! The FFI boundary: the one module allowed `unsafe`, audited as a whole. Thirteen things live here:
//! releasing the GVL, reading the bytes of Ruby Strings (copied, or lent to one vectored socket
//! write while the GVL is held), keeping a Ruby object visible to the GC's stack scan
//! (`gc_guard`), keeping a pending jump's state while cleanup code runs (`keeping_errinfo`),
//! copying a Hash with Ruby's own table copy, taking ownership of a listening
//! socket's descriptor handed over by the process that ran before this one, making the cluster
//! master the reaper of the workers its worker 0 forks (`prctl`), starting native threads
//! with the signals Ruby handles blocked (`pthread_sigmask`) and under the batch scheduling
//! policy (`sched_setscheduler`, [`with_batch_scheduling`]), ending the process at once
//! (`_exit`, [`exit_now`]), the fiber scheduler's `poll(2)` ([`poll`]), capping glibc's
//! malloc arenas ([`set_malloc_arena_max`]), and registering a postponed job from a native
//! thread ([`postpone`], the fiber mode's turns).
//!
//! Pool threads wait for work, wait for slow clients and write large streamed pieces *without*
//! the GVL, so the other Ruby threads run meanwhile. Ruby's rule for that is
//! `rb_thread_call_without_gvl2(func, data, ubf, data2)`:
//! - `func` runs without the GVL: it must not touch any Ruby object, and must not unwind into C.
//!   We run it inside `catch_unwind` and hand a panic back as an error. `func` and its result
//!   must be `Send`: magnus's Ruby handle and values are not, so a closure that could call Ruby
//!   through them does not compile.
//! - `ubf` (the unblocking function) is how Ruby wakes `func` for `Thread#kill`, `Thread#raise`,
//!   signals and shutdown. It may run on another thread, while `func` runs. Ours only calls the
//!   closure the caller gave (which sets a flag and notifies a condvar), also inside `catch_unwind`.
//! - The `2` variant may skip `func` entirely when an interrupt is already pending, and it never
//!   raises after `func` returns (the variant without `2` may, which would longjmp over our
//!   frames). A skipped `func` is reported as [`Blocked::Interrupted`]; the caller then lets Ruby
//!   handle the interrupt (`thread_check_ints`, which may raise through magnus's protected call)
//!   and retries.
#![allow(unsafe_code)]

use std::ffi::c_void;
use std::panic::{catch_unwind, AssertUnwindSafe};

/// Why a call without the GVL produced no value.
#[derive(Debug)]
pub enum Blocked {
    /// Ruby had an interrupt pending and did not run the function.
    Interrupted,
    /// The function panicked; the message is for the error log.
    Panicked(String),
}

struct Call<F, R> {
    func: Option<F>,
    result: Option<std::thread::Result<R>>,
}

extern "C" fn run_call<F: FnOnce() -> R, R>(data: *mut c_void) -> *mut c_void {
    // SAFETY: `data` is the `&mut Call<F, R>` passed by `without_gvl` below, alive and not
    // otherwise borrowed for the duration of `rb_thread_call_without_gvl2`.
    let call = unsafe { &mut *(data as *mut Call<F, R>) };
    if let Some(func) = call.func.take() {
        call.result = Some(catch_unwind(AssertUnwindSafe(func)));
    }
    std::ptr::null_mut()
}

extern "C" fn run_unblock<U: Fn()>(data: *mut c_void) {
    // SAFETY: `data` is the `&U` passed by `without_gvl`; `U: Sync` makes the shared use from
    // Ruby's interrupting thread sound, and it outlives the call.
    let unblock = unsafe { &*(data as *const U) };
    let _ = catch_unwind(AssertUnwindSafe(unblock));
}

/// Runs `func` with the GVL released; `unblock` must make `func` return promptly.
pub fn without_gvl<F, R, U>(func: F, unblock: &U) -> Result<R, Blocked>
where
    F: FnOnce() -> R + Send,
    R: Send,
    U: Fn() + Sync,
{
    let mut call = Call::<F, R> {
        func: Some(func),
        result: None,
    };
    // SAFETY: both function pointers match the signatures Ruby expects; the data pointers are
    // valid for the whole call (they point at locals of this frame), and neither callback
    // touches Ruby objects or unwinds.
    unsafe {
        rb_sys::rb_thread_call_without_gvl2(
            Some(run_call::<F, R>),
            &mut call as *mut Call<F, R> as *mut c_void,
            Some(run_unblock::<U>),
            unblock as *const U as *mut c_void,
        );
    }
    match call.result {
        None => Err(Blocked::Interrupted),
        Some(Ok(value)) => Ok(value),
        Some(Err(panic)) => Err(Blocked::Panicked(panic_message(&panic))),
    }
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "panic".to_string())
}

/// Appends the bytes of a Ruby String to `out`.
pub fn copy_bytes(s: magnus::RString, out: &mut Vec<u8>) {
    // SAFETY: the slice is borrowed only for the copy; no Ruby code runs and nothing allocates a
    // Ruby object while it is alive, so the GC can neither move nor free the string's buffer.
    out.extend_from_slice(unsafe { s.as_slice() });
}

/// Writes `head` and the bytes of the Strings in `array` (nils skipped) to the client with
/// vectored writes (`Responder::write_parts_from`, which says how `sent` and the result work),
/// lending the strings' buffers instead of copying them. An `InvalidData` error when the
/// Strings no longer add up to `expected` bytes (or one is no longer a String): Ruby code ran
/// while the caller waited without the GVL; what was sent was counted against the old bytes.
///
/// Sound because the caller holds the GVL for the whole call and the only code that runs while
/// the bytes are lent is `Responder::write_parts_from`, from catamount-server, a crate that does
/// not link to Ruby and so cannot call it (this takes no closure that could): no other Ruby
/// thread runs, nothing can mutate or free the strings, and the GC (which runs only when Ruby
/// allocates, and nothing here does) can neither move nor collect them. The Strings and their
/// slices are taken afresh from `array` at each call, so neither a String changed nor an
/// object moved by compaction while the caller waited without the GVL is read through a stale
/// pointer. `array` must be reachable from something the GC sees: the caller keeps it on its
/// stack and passes it to [`gc_guard`] after its last call.
pub fn write_strings_from(
    responder: &mut catamount_server::Responder,
    head: &[u8],
    array: magnus::RArray,
    expected: u64,
    sent: &mut u64,
) -> std::io::Result<bool> {
    let changed = || {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "a body String changed length",
        )
    };
    // Rust's heap holds these VALUEs for this call only: nothing in it allocates a Ruby object.
    let strings = array
        .into_iter()
        .filter(|item| !magnus::value::ReprValue::is_nil(*item))
        .map(|item| magnus::RString::from_value(item).ok_or_else(changed))
        .collect::<std::io::Result<Vec<magnus::RString>>>()?;
    if strings.iter().map(|s| s.len() as u64).sum::<u64>() != expected {
        return Err(changed());
    }
    // SAFETY: see above; the slices do not outlive this call.
    let slices: Vec<&[u8]> = strings.iter().map(|s| unsafe { s.as_slice() }).collect();
    responder.write_parts_from(head, &slices, sent)
}

/// Runs `func` (which calls Ruby only through magnus's protected calls) and then puts back what
/// Ruby's execution context held as its current error (`errinfo`) before the call.
///
/// A jump caught by a protected call (`throw`, `Thread#kill`) leaves its state there (the
/// throw's target and value, or the kill's tag) for `rb_jump_tag` to resume from. Ruby code run
/// before that, `body.close` typically, changes it as soon as it rescues anything (to nil, in
/// the end), and the resumed jump then reads nil: Ruby crashes. So every Ruby call made while a
/// jump waits (`escape::pending`) goes through here.
///
/// Done with `rb_ensure`, whose own frame keeps the saved value (so the GC sees it) and puts it
/// back after the ensure function, which runs `func`; assigning it ourselves has no public API
/// (`rb_set_errinfo` takes only exceptions). A panic in `func` is carried over the C frame and
/// resumed here.
pub fn keeping_errinfo<F: FnOnce() -> R, R>(func: F) -> R {
    use rb_sys::VALUE;
    struct Cleanup<F, R> {
        func: Option<F>,
        result: Option<std::thread::Result<R>>,
    }
    extern "C" fn nothing(_: VALUE) -> VALUE {
        rb_sys::Qnil as VALUE
    }
    extern "C" fn run<F: FnOnce() -> R, R>(data: VALUE) -> VALUE {
        // SAFETY: `data` is the `&mut Cleanup<F, R>` passed below, alive and not otherwise
        // borrowed for the duration of `rb_ensure`.
        let cleanup = unsafe { &mut *(data as *mut Cleanup<F, R>) };
        if let Some(func) = cleanup.func.take() {
            cleanup.result = Some(catch_unwind(AssertUnwindSafe(func)));
        }
        rb_sys::Qnil as VALUE
    }
    let mut cleanup = Cleanup {
        func: Some(func),
        result: None,
    };
    // SAFETY: both functions have the signature Ruby expects; neither raises nor unwinds
    // (`nothing` does nothing, `run` catches panics and `func` calls Ruby only through protected
    // calls), so `rb_ensure` neither jumps over our frames nor skips putting errinfo back. The
    // data pointer is a local of this frame, valid for the whole call.
    unsafe {
        rb_sys::rb_ensure(
            Some(nothing),
            rb_sys::Qnil as VALUE,
            Some(run::<F, R>),
            &mut cleanup as *mut Cleanup<F, R> as VALUE,
        );
    }
    match (cleanup.result, cleanup.func) {
        (Some(Ok(value)), _) => value,
        (Some(Err(panic)), _) => std::panic::resume_unwind(panic),
        // Ruby always runs the ensure function; were it not run, run `func` unguarded.
        (None, Some(func)) => func(),
        (None, None) => unreachable!("the ensure function took `func` and set its result"),
    }
}

/// Ruby's `RB_GC_GUARD`: keeps `value` on the machine stack, where the GC's conservative scan
/// finds it, at least until this call; the objects reachable from it stay alive meanwhile.
pub fn gc_guard<T: magnus::value::ReprValue>(value: T) {
    use magnus::rb_sys::AsRawValue;
    let raw = value.as_value().as_raw();
    let _ = rb_sys::rb_gc_guard!(raw);
}

/// The bytes of a Ruby String, copied.
pub fn bytes_of(s: magnus::RString) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    copy_bytes(s, &mut out);
    out
}

/// A new Hash with the same entries as `hash` (`Hash#dup` without the method call): Ruby copies
/// the table as it is, stored key hashes included, so no key is hashed again.
pub fn hash_dup(hash: magnus::RHash) -> Result<magnus::RHash, magnus::Error> {
    use magnus::rb_sys::{protect, AsRawValue, FromRawValue};
    use magnus::TryConvert;
    // SAFETY: `rb_hash_dup` takes and returns a VALUE; `hash` is a live Hash (the caller holds
    // it, so the GC keeps it), and `protect` turns a raise (only NoMemoryError is possible)
    // into an Err instead of a longjmp over our frames.
    let copy = protect(|| unsafe { rb_sys::rb_hash_dup(hash.as_raw()) })?;
    // SAFETY: a VALUE Ruby just returned, reachable from this stack frame.
    let copy = unsafe { magnus::Value::from_raw(copy) };
    magnus::RHash::try_convert(copy)
}

/// Takes ownership of descriptor `raw`, which the process before this one handed over as a
/// listening socket (`PUMA_INHERIT_n` after a hot restart, `LISTEN_FDS` from systemd). None if
/// it is not an open socket, or is one of stdin/stdout/stderr.
///
/// The caller must pass each number once, and nothing else in the process may own it (the
/// launcher reads the numbers from the environment, removes them from it, and wraps them in
/// Ruby only with `autoclose: false`).
pub fn adopt_inherited_socket(raw: i32) -> Option<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    if raw < 3 {
        return None;
    }
    // Checked without touching the descriptor: /proc names an open socket "socket:[inode]".
    let target = std::fs::read_link(format!("/proc/self/fd/{raw}")).ok()?;
    if !target.to_string_lossy().starts_with("socket:") {
        return None;
    }
    // SAFETY: the descriptor is open and a socket (checked above), and by the contract above no
    // other owner exists, so this OwnedFd is its only owner and closes it exactly once.
    Some(unsafe { std::os::fd::OwnedFd::from_raw_fd(raw) })
}

/// Makes this process the reaper of its orphaned descendants (Linux's
/// `PR_SET_CHILD_SUBREAPER`): in `fork_worker` mode worker 0 forks a short-lived child that
/// forks the new worker and exits, so the new worker is re-parented to the cluster master,
/// which then waits for it and sees its exit status like any worker's.
pub fn become_child_subreaper() -> std::io::Result<()> {
    use std::ffi::{c_int, c_ulong};
    const PR_SET_CHILD_SUBREAPER: c_int = 36;
    extern "C" {
        fn prctl(option: c_int, ...) -> c_int;
    }
    // SAFETY: prctl(2) takes four unsigned long arguments after the option (glibc's wrapper
    // reads them all); PR_SET_CHILD_SUBREAPER uses the first, the rest must be 0. No pointer is
    // passed: no memory of ours is touched.
    let rc = unsafe {
        prctl(
            PR_SET_CHILD_SUBREAPER,
            1 as c_ulong,
            0 as c_ulong,
            0 as c_ulong,
            0 as c_ulong,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// The signals a thread must never block: the kernel sends them to the thread that faulted,
/// and blocked they kill the process without Ruby's crash report (or hang it).
pub const CRASH_SIGNALS: [i32; 4] = [libc::SIGSEGV, libc::SIGBUS, libc::SIGILL, libc::SIGFPE];

/// Runs `spawn` (which starts native threads) with every signal but [`CRASH_SIGNALS`] blocked in
/// the calling thread, then restores the caller's mask. The threads started meanwhile inherit
/// that mask, so a signal sent to the process (TERM, INT, USR2, ...) is always delivered to a
/// Ruby thread and never to a native one, which has no business with signals: Ruby turns a
/// signal into a trap run by its main thread, and the fewer paths that takes, the fewer ways it
/// can be missed. A crash in a native thread is still reported by Ruby's SEGV handler.
pub fn with_signals_blocked<R>(spawn: impl FnOnce() -> R) -> R {
    use std::mem::MaybeUninit;
    let mut all = MaybeUninit::<libc::sigset_t>::uninit();
    let mut old = MaybeUninit::<libc::sigset_t>::uninit();
    // SAFETY: sigfillset fills the set we own and cannot fail for a valid pointer, sigdelset
    // takes valid signal numbers out of it; pthread_sigmask reads `all` (now initialised) and
    // writes the caller's mask into `old`, both ours, and changes only this thread's mask.
    let blocked = unsafe {
        libc::sigfillset(all.as_mut_ptr());
        for sig in CRASH_SIGNALS {
            libc::sigdelset(all.as_mut_ptr(), sig);
        }
        libc::pthread_sigmask(libc::SIG_BLOCK, all.as_ptr(), old.as_mut_ptr()) == 0
    };
    let result = catch_unwind(AssertUnwindSafe(spawn));
    if blocked {
        // SAFETY: `old` was written by the successful call above; restoring it is the inverse.
        unsafe {
            libc::pthread_sigmask(libc::SIG_SETMASK, old.as_ptr(), std::ptr::null_mut());
        }
    }
    match result {
        Ok(value) => value,
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

/// Runs `spawn` (which starts native threads) with the calling thread under Linux's
/// `SCHED_BATCH` policy, then puts the caller back under `SCHED_OTHER`; the threads started
/// meanwhile inherit the batch policy. A batch thread has the same weight (the same share of a
/// busy CPU) but, woken, never preempts the thread running on that CPU: it runs when that
/// thread blocks, on an idle CPU, or at the next scheduler tick. A caller under another policy
/// (a real-time one someone chose with `chrt`) is left alone, and so are its threads; so is
/// everything where the kernel refuses (a seccomp filter): the threads then run as before.
pub fn with_batch_scheduling<R>(spawn: impl FnOnce() -> R) -> R {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: sched_getscheduler(0) reads the calling thread's policy; sched_setscheduler(0, ..)
    // changes only the calling thread's, reading `param`, a plain struct we own. Neither
    // touches any other memory.
    let switched = unsafe {
        libc::sched_getscheduler(0) == libc::SCHED_OTHER
            && libc::sched_setscheduler(0, libc::SCHED_BATCH, &param) == 0
    };
    let result = catch_unwind(AssertUnwindSafe(spawn));
    if switched {
        // SAFETY: as above; SCHED_OTHER is the policy the thread had before.
        unsafe {
            libc::sched_setscheduler(0, libc::SCHED_OTHER, &param);
        }
    }
    match result {
        Ok(value) => value,
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

/// Ends the process now with `status`, without running the C library's exit handlers: the
/// reactor thread's way out after a panic (`catamount_server::set_fatal_exit`), while Ruby
/// threads still run and Ruby's own handlers could hang or crash under them.
pub fn exit_now(status: i32) -> ! {
    // SAFETY: `_exit` takes a plain int and never returns; it touches no memory of ours.
    unsafe { libc::_exit(status) }
}

/// `poll(2)` on `fds` for at most `timeout_ms` (-1: no limit); the fiber scheduler's one wait.
/// EINTR counts as nothing ready (the caller looks again).
pub fn poll(fds: &mut [libc::pollfd], timeout_ms: i32) -> std::io::Result<usize> {
    // SAFETY: the pointer and length describe `fds`, an exclusively borrowed slice of plain
    // structs the kernel only writes `revents` of.
    let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms) };
    if n < 0 {
        let e = std::io::Error::last_os_error();
        return match e.kind() {
            std::io::ErrorKind::Interrupted => Ok(0),
            _ => Err(e),
        };
    }
    Ok(n as usize)
}

/// Caps how many malloc arenas glibc makes for this process's threads (`mallopt(M_ARENA_MAX)`);
/// threads that have one keep it. Elsewhere than glibc, nothing. Why: crate::malloc.
pub fn set_malloc_arena_max(max: i32) {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only stores a tuning parameter of glibc's allocator (under its own lock);
    // it takes two plain ints and touches no memory of ours. A refused value leaves it unchanged.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, max);
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    let _ = max;
}

/// A job Ruby runs at the next interrupt check of the thread that holds the GVL (see
/// [`postpone`]). `run` is called with the GVL, on a Ruby thread, in whatever fiber that thread
/// runs; a panic in it is caught and dropped.
pub trait PostponedJob {
    fn run();
}

extern "C" fn run_postponed<J: PostponedJob>(_data: *mut c_void) {
    let _ = catch_unwind(J::run);
}

/// Asks Ruby to run `J` at the next interrupt check of the thread that holds the GVL
/// (`rb_postponed_job_register_one`: at most one `J` waits at a time). Callable from a native
/// thread that is no Ruby thread: Ruby 3.1 then flags the execution context running in the main
/// Ractor (the GVL holder's current fiber, or the last one's). False when Ruby's job buffer is
/// full (it holds about a thousand).
///
/// The caller must know the VM is alive for the whole call (the fiber mode's ticker registers
/// only while a fiber-mode pool thread is booked, under the lock those threads unbook with: they
/// all end before Ruby tears its VM down).
///
/// Ruby before 3.3 has a race here (fixed by 3.3's rewrite of postponed jobs): a job registered
/// from another thread while a flush on the GVL holder has just taken the last slot may be
/// written into that slot as the flush reads it. Profilers (stackprof) register the same
/// way hundreds of times a second; the fiber mode does at most once a tick, only while a turn is
/// due.
pub fn postpone<J: PostponedJob>() -> bool {
    // SAFETY: the function pointer has the signature Ruby expects and never unwinds (panics are
    // caught); it ignores its data pointer, null here. Ruby's registration is async-signal-safe
    // and takes no lock; the VM is alive per the contract above.
    unsafe {
        rb_sys::rb_postponed_job_register_one(0, Some(run_postponed::<J>), std::ptr::null_mut())
            != 0
    }
}
