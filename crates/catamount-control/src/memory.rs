//! A process's memory as the kernel reports it: resident (RSS) and proportional (PSS, shared
//! pages divided among the processes sharing them) from `/proc/<pid>/smaps_rollup`, or RSS alone
//! from `/proc/<pid>/status` where smaps_rollup cannot be read (older kernels, another user's
//! process).

/// `(rss_bytes, pss_bytes)` of `pid`; `None` when the process is gone (or /proc says nothing).
pub fn process_memory(pid: u32) -> Option<(u64, Option<u64>)> {
    if let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")) {
        if let Some(rss) = kib_field(&text, "Rss:") {
            return Some((rss, kib_field(&text, "Pss:")));
        }
    }
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    kib_field(&text, "VmRSS:").map(|rss| (rss, None))
}

/// The value of a `Name:   123 kB` line, in bytes.
pub fn kib_field(text: &str, name: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with(name))?;
    let mut words = line.get(name.len()..)?.split_whitespace();
    let value: u64 = words.next()?.parse().ok()?;
    match words.next() {
        Some("kB") => value.checked_mul(1024),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_in_bytes() {
        let text = "55d1-7ffd ---p 00000000 00:00 0 [rollup]\nRss:                5120 kB\nPss:                1234 kB\nPss_Anon: 1 kB\n";
        assert_eq!(kib_field(text, "Rss:"), Some(5120 * 1024));
        assert_eq!(kib_field(text, "Pss:"), Some(1234 * 1024));
        assert_eq!(kib_field(text, "Swap:"), None);
        assert_eq!(kib_field("Rss: x kB", "Rss:"), None);
        assert_eq!(kib_field("Rss: 12", "Rss:"), None);
    }

    #[test]
    fn this_process_and_a_gone_one() {
        let (rss, pss) = process_memory(std::process::id()).unwrap_or_default();
        assert!(rss > 0);
        if let Some(pss) = pss {
            assert!(pss > 0);
        }
        // Pids are below 2^22 on Linux.
        assert_eq!(process_memory(u32::MAX), None);
    }
}
