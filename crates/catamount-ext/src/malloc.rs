//! The process's malloc settings: how many glibc arenas its threads may spread over.
//!
//! glibc gives each thread that mallocs at once with another an arena of its own (up to eight
//! per CPU), and an arena keeps the memory its thread freed for that thread's next mallocs. Our
//! pool threads run Ruby one at a time under the GVL, so arenas of their own buy them no
//! parallelism; what they do is hold, each, the freed Strings of the requests it ran: a 100 KiB
//! POST echo at `-t 5:5` ended at 250–290 MiB RSS with five pool arenas of 40–55 MiB, mostly
//! free chunks, against 100–136 MiB with two arenas and Puma's 211 (docs/benchmarks.md, "Memory
//! with large request bodies"). So the extension caps the arenas at [`ARENA_MAX`] when it loads,
//! before the server's threads start, unless the user chose a number (`MALLOC_ARENA_MAX`, or
//! `glibc.malloc.arena_max` in `GLIBC_TUNABLES`), which glibc then applies as usual.

/// Two: the main arena (Ruby's main thread, and some pool threads) and one more, so the
/// reactor thread does not queue behind a pool thread's every malloc.
pub const ARENA_MAX: i32 = 2;

/// The arena cap to set, given the environment's `MALLOC_ARENA_MAX` and `GLIBC_TUNABLES`: none
/// when the user set either for the arenas.
pub fn arena_cap(arena_max_env: Option<&str>, tunables_env: Option<&str>) -> Option<i32> {
    let tuned = tunables_env.is_some_and(|t| {
        t.split(':')
            .any(|setting| setting.trim_start().starts_with("glibc.malloc.arena_max="))
    });
    if arena_max_env.is_some() || tuned {
        return None;
    }
    Some(ARENA_MAX)
}

/// Applies [`arena_cap`] to this process (glibc only: elsewhere malloc is left as it is).
pub fn cap_arenas() {
    let arena_max = std::env::var("MALLOC_ARENA_MAX").ok();
    let tunables = std::env::var("GLIBC_TUNABLES").ok();
    if let Some(max) = arena_cap(arena_max.as_deref(), tunables.as_deref()) {
        crate::ffi::set_malloc_arena_max(max);
    }
}
