//! `rss-pss PID...`: the memory a server uses, summed over its processes (master and workers),
//! read from `/proc/PID/smaps_rollup`. RSS counts shared pages once per process; PSS splits them,
//! so the PSS sum is the fair total for a forking server.

use crate::args::UsageError;
use crate::Failure;

pub const USAGE: &str = "\
usage: catamount-bench rss-pss PID...

Reads /proc/PID/smaps_rollup for each PID and prints one JSON line
  {\"rss_kib\":N,\"pss_kib\":N}
with the RSS and PSS summed over all of them. A PID that does not exist (any more) is an
error (exit 1).
";

pub fn run(args: &[String]) -> Result<(), Failure> {
    if args.is_empty() {
        return Err(UsageError("at least one PID is required".to_owned()).into());
    }
    let mut pids = Vec::with_capacity(args.len());
    for arg in args {
        match arg.parse::<u32>() {
            Ok(pid) if pid > 0 => pids.push(pid),
            _ => {
                return Err(
                    UsageError(format!("a PID is a positive whole number, got {arg:?}")).into(),
                )
            }
        }
    }
    let (mut rss, mut pss) = (0u64, 0u64);
    for pid in pids {
        let path = format!("/proc/{pid}/smaps_rollup");
        let text = std::fs::read_to_string(&path)
            .map_err(|e| Failure::Runtime(format!("process {pid}: cannot read {path}: {e}")))?;
        let (r, p) = parse_rollup(&text)
            .ok_or_else(|| Failure::Runtime(format!("{path} has no Rss:/Pss: lines")))?;
        rss += r;
        pss += p;
    }
    println!("{{\"rss_kib\":{rss},\"pss_kib\":{pss}}}");
    Ok(())
}

/// The `Rss:` and `Pss:` values (in KiB) of one smaps_rollup file.
fn parse_rollup(text: &str) -> Option<(u64, u64)> {
    let field = |name: &str| -> Option<u64> {
        text.lines().find_map(|line| {
            let rest = line.strip_prefix(name)?.trim();
            rest.strip_suffix("kB")?.trim().parse().ok()
        })
    };
    Some((field("Rss:")?, field("Pss:")?))
}

#[cfg(test)]
mod tests {
    use super::parse_rollup;

    #[test]
    fn parses_rollup() {
        let text = "55d0c0a0e000-7ffd2f9f4000 ---p 00000000 00:00 0      [rollup]\n\
                    Rss:                3456 kB\n\
                    Pss:                1234 kB\n\
                    Pss_Dirty:           100 kB\n";
        assert_eq!(parse_rollup(text), Some((3456, 1234)));
        assert_eq!(parse_rollup("Rss: 1 kB\n"), None);
    }
}
