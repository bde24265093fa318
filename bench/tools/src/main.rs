//! `catamount-bench`: the Rust helpers of the benchmark (`bench/run.rb`). Dispatches to one
//! subcommand per module:
//!
//! - `limit` ([`limit`]): a minimal keep-alive HTTP/1.1 server, the "what this machine can do"
//!   reference that the Rack servers are measured against.
//! - `slowloris` ([`slowloris`]): clients that never finish their request head.
//! - `slowread` ([`slowread`]): clients that read responses at a trickle.
//! - `rss-pss` ([`memory`]): summed RSS/PSS of a set of processes.
//!
//! Exit status: 0 on success, 1 when the work failed, 2 on a bad command line.

mod args;
mod limit;
mod limit_tls;
mod memory;
mod slowloris;
mod slowread;

use std::process::ExitCode;

use args::UsageError;

const USAGE: &str = "\
usage: catamount-bench <subcommand> [--flag value]...

subcommands:
  limit [--port N] [--tls-cert PEM --tls-key PEM] [--threads N]
      reference HTTP/1.1 server on 127.0.0.1 (port 0 = OS-chosen), plain or over TLS; prints
      `listening on 127.0.0.1:PORT`, then answers every request with `Hello World` until killed
  slowloris --port P --duration SECS [--host 127.0.0.1] [--conns 50] [--interval-ms 1000]
      connections that send one more header line every interval and never end the head;
      prints {\"conns\":N,\"opened\":N,\"closed_by_server\":N,\"bytes_sent\":N}
  slowread --port P --rate BYTES_PER_SEC --duration SECS [--host 127.0.0.1] [--path /] [--conns 50]
      keep-alive GET loops that read each response at about RATE bytes/s per connection;
      prints {\"conns\":N,\"bytes_read\":N,\"responses_completed\":N,\"errors\":N}
  rss-pss PID...
      prints {\"rss_kib\":N,\"pss_kib\":N} summed over the PIDs (from /proc/PID/smaps_rollup)

Only loopback addresses are accepted. `catamount-bench <subcommand> --help` for one subcommand.
";

/// A subcommand's entry point: its arguments (after its name) in, success or failure out.
type Subcommand = fn(&[String]) -> Result<(), Failure>;

/// Why a subcommand did not succeed.
#[derive(Debug)]
pub enum Failure {
    /// Bad command line: exit 2.
    Usage(UsageError),
    /// The work itself failed: exit 1.
    Runtime(String),
}

impl From<UsageError> for Failure {
    fn from(e: UsageError) -> Self {
        Failure::Usage(e)
    }
}

impl From<std::io::Error> for Failure {
    fn from(e: std::io::Error) -> Self {
        Failure::Runtime(e.to_string())
    }
}

/// Builds the single-threaded tokio runtime every networked subcommand runs on.
pub fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
        .map_err(|e| Failure::Runtime(format!("cannot start the tokio runtime: {e}")))
}

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let Some((command, rest)) = argv.split_first() else {
        eprint!("catamount-bench: no subcommand given\n\n{USAGE}");
        return ExitCode::from(2);
    };
    if command == "--help" || command == "-h" || command == "help" {
        print!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    let (run, usage): (Subcommand, &str) = match command.as_str() {
        "limit" => (limit::run, limit::USAGE),
        "slowloris" => (slowloris::run, slowloris::USAGE),
        "slowread" => (slowread::run, slowread::USAGE),
        "rss-pss" => (memory::run, memory::USAGE),
        other => {
            eprint!("catamount-bench: unknown subcommand {other:?}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    if rest.iter().any(|a| a == "--help" || a == "-h") {
        print!("{usage}");
        return ExitCode::SUCCESS;
    }
    match run(rest) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Usage(e)) => {
            eprint!("catamount-bench {command}: {e}\n\n{usage}");
            ExitCode::from(2)
        }
        Err(Failure::Runtime(e)) => {
            eprintln!("catamount-bench {command}: {e}");
            ExitCode::from(1)
        }
    }
}
