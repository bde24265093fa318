//! `catamountctl`, pumactl's twin: what a command line asks for and how it is carried out.
//!
//! - [`args`]: the flags (parsed the way pumactl's option parser does).
//! - [`state_file`]: Puma's state file (`pid`, `control_url`, `control_auth_token`).
//! - [`http`]: the control server's path (`GET /<command>?token=<t>` over TCP, TLS or UNIX).
//! - [`tls`]: TLS for `ssl://` control URLs, unverified as pumactl's.
//! - [`signal`]: the pid's path (a signal, or the signal-0 probe of `status`).
//!
//! Behaviour, messages, output stream (stdout for everything) and exit statuses are pumactl
//! 5.6.5's, except where pumactl would hurt: a pid of 0 or below is never signalled (pumactl
//! signals the whole process group for `-p abc` or an empty pidfile). Evaluating a config file
//! needs Ruby, so it is the caller's ([`Host::read_config`]); so is running the server for
//! `start` ([`Outcome::Start`]).

mod args;
mod http;
mod signal;
pub mod state_file;
mod tls;

use std::time::Duration;

pub use args::usage;
use signal::Sig;

/// What a config file says about reaching its server (Puma's option names).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConfigValues {
    /// `state_path`.
    pub state: Option<String>,
    pub control_url: Option<String>,
    pub control_auth_token: Option<String>,
    pub pidfile: Option<String>,
}

/// How long the control server may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    pub connect: Duration,
    /// From the request sent to the whole answer read.
    pub answer: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(5),
            answer: Duration::from_secs(30),
        }
    }
}

/// What `run` needs from the world around it.
pub trait Host {
    /// Writes `text` to standard output.
    fn print(&mut self, text: &str);
    /// An environment variable.
    fn var(&self, name: &str) -> Option<String>;
    /// Evaluates the config file at `path` (for `environment`); the error is one line.
    fn read_config(&mut self, path: &str, environment: &str) -> Result<ConfigValues, String>;
    fn timeouts(&self) -> Timeouts {
        Timeouts::default()
    }
}

/// How a run ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Exit with this status.
    Exit(i32),
    /// Run the server (`catamount`) with these arguments (`start`, or `restart` by pid when the
    /// process is gone).
    Start(Vec<String>),
}

/// How a command reaches a server that has no control URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ByPid {
    /// Not at all: only the control server can do it.
    No,
    Signal(Sig),
    /// `status`: the signal-0 probe.
    Probe,
}

struct Spec {
    name: &'static str,
    by_pid: ByPid,
    /// False: never sent to the control server, even when its URL is known.
    by_http: bool,
    /// The control server's answer is printed.
    prints_body: bool,
}

const fn spec(name: &'static str, by_pid: ByPid, by_http: bool, prints_body: bool) -> Spec {
    Spec {
        name,
        by_pid,
        by_http,
        prints_body,
    }
}

/// The 16 commands, in the order pumactl lists them.
const COMMANDS: &[Spec] = &[
    spec("gc", ByPid::No, true, false),
    spec("gc-stats", ByPid::No, true, true),
    spec("halt", ByPid::Signal(Sig::Quit), true, false),
    spec("info", ByPid::Signal(Sig::Info), false, false),
    spec("phased-restart", ByPid::Signal(Sig::Usr1), true, false),
    spec("refork", ByPid::Signal(Sig::Urg), true, false),
    spec("reload-worker-directory", ByPid::No, true, false),
    spec("reopen-log", ByPid::Signal(Sig::Hup), false, false),
    spec("restart", ByPid::Signal(Sig::Usr2), true, false),
    spec("start", ByPid::No, true, false),
    spec("stats", ByPid::No, true, true),
    spec("status", ByPid::Probe, true, false),
    spec("stop", ByPid::Signal(Sig::Term), true, false),
    spec("thread-backtraces", ByPid::No, true, true),
    spec("worker-count-down", ByPid::Signal(Sig::Ttou), false, false),
    spec("worker-count-up", ByPid::Signal(Sig::Ttin), false, false),
];

/// The command names, in pumactl's order.
pub fn command_names() -> impl Iterator<Item = &'static str> {
    COMMANDS.iter().map(|c| c.name)
}

/// Runs a `catamountctl` command line (the arguments after the program name).
pub fn run(argv: &[String], host: &mut dyn Host) -> Outcome {
    // As pumactl: a mistake in the command line or the config file is printed even with -Q.
    let mut job = match Job::prepare(argv, host) {
        Ok(Prepared::Job(job)) => job,
        Ok(Prepared::Done(status)) => return Outcome::Exit(status),
        Err(message) => {
            line(host, &message);
            return Outcome::Exit(1);
        }
    };
    match job.execute(host) {
        Ok(outcome) => outcome,
        Err(message) => {
            job.message(host, &message);
            Outcome::Exit(1)
        }
    }
}

/// Prints `text` as Ruby's `puts` does: one newline at the end, not two.
fn line(host: &mut dyn Host, text: &str) {
    if text.ends_with('\n') {
        host.print(text);
    } else {
        host.print(&format!("{text}\n"));
    }
}

enum Prepared {
    Job(Box<Job>),
    Done(i32),
}

/// One command with everything known about where its server is.
struct Job {
    command: &'static Spec,
    flags: args::Flags,
    /// `-C` and `-T` as given (before the config file or the state file filled them in).
    given_control: (Option<String>, Option<String>),
    pid: Option<i64>,
}

impl Job {
    fn prepare(argv: &[String], host: &mut dyn Host) -> Result<Prepared, String> {
        let (mut flags, words) = match args::parse(argv)? {
            args::Parsed::Help => {
                host.print(&usage());
                return Ok(Prepared::Done(0));
            }
            args::Parsed::Version => {
                line(host, env!("CARGO_PKG_VERSION"));
                return Ok(Prepared::Done(0));
            }
            args::Parsed::Run { flags, words } => (flags, words),
        };
        if flags.environment.is_none() {
            flags.environment = ["APP_ENV", "RACK_ENV", "RAILS_ENV"]
                .iter()
                .find_map(|k| host.var(k).filter(|v| !v.is_empty()));
        }
        // Words after the command are ignored, as pumactl does.
        let Some(word) = words.first() else {
            let names: Vec<&str> = command_names().collect();
            return Err(format!("Available commands: {}", names.join(", ")));
        };
        let command = COMMANDS
            .iter()
            .find(|c| c.name == word)
            .ok_or_else(|| format!("Invalid command: {word}"))?;
        let given_control = (flags.control_url.clone(), flags.control_auth_token.clone());
        read_config_file(&mut flags, host)?;
        let pid = flags.pid;
        Ok(Prepared::Job(Box::new(Job {
            command,
            flags,
            given_control,
            pid,
        })))
    }

    fn message(&self, host: &mut dyn Host, text: &str) {
        if !self.flags.quiet {
            line(host, text);
        }
    }

    fn execute(&mut self, host: &mut dyn Host) -> Result<Outcome, String> {
        if self.command.name == "start" {
            return Ok(self.start());
        }
        self.read_state_or_pidfile()?;
        match &self.flags.control_url {
            Some(url) if self.command.by_http => {
                let url = url.clone();
                self.by_http(host, &url)
            }
            _ => self.by_pid(host),
        }
    }

    /// The state file (whose values replace -C, -T and -p), else the pidfile (replacing -p).
    fn read_state_or_pidfile(&mut self) -> Result<(), String> {
        if let Some(path) = &self.flags.state {
            if !std::path::Path::new(path).exists() {
                return Err(format!("State file not found: {path}"));
            }
            let text = read_text(path)?;
            let state = state_file::parse(&text);
            self.flags.control_url = state.control_url;
            self.flags.control_auth_token = state.control_auth_token;
            self.pid = state.pid;
        } else if let Some(path) = &self.flags.pidfile {
            self.pid = Some(ruby_to_i(&read_text(path)?));
        }
        Ok(())
    }

    fn by_http(&self, host: &mut dyn Host, url: &str) -> Result<Outcome, String> {
        let name = self.command.name;
        let target = http::Target::parse(url)?;
        let timeouts = host.timeouts();
        let connection = target.connect(timeouts.connect)?;
        if name == "status" {
            self.message(host, "Puma is started");
            return Ok(Outcome::Exit(0));
        }
        let mut path = format!("/{name}");
        if let Some(token) = &self.flags.control_auth_token {
            path.push_str(&format!("?token={token}"));
        }
        let answer = http::exchange(connection, &path, timeouts.answer)?;
        match answer.code.as_str() {
            "200" => {}
            "403" => return Err("Unauthorized access to server (wrong auth token)".into()),
            "404" => return Err(format!("Command error: {}", answer.body)),
            code => return Err(format!("Bad response from server: {code}")),
        }
        self.message(host, &format!("Command {name} sent success"));
        if self.command.prints_body {
            self.message(host, &answer.body);
        }
        Ok(Outcome::Exit(0))
    }

    fn by_pid(&self, host: &mut dyn Host) -> Result<Outcome, String> {
        let name = self.command.name;
        let Some(pid) = self.pid else {
            return Err("Neither pid nor control url available".into());
        };
        match self.command.by_pid {
            // pumactl says so on stdout, -Q or not, and exits 0.
            ByPid::No => line(host, &format!("'{name}' not available via pid only")),
            ByPid::Probe => match signal::probe(pid) {
                signal::Probe::Alive => line(host, "Puma is started"),
                signal::Probe::Gone => return Err("Puma is not running".into()),
                signal::Probe::Unreachable => return Err(format!("No pid '{pid}' found")),
            },
            ByPid::Signal(sig) => match signal::send(pid, sig) {
                Ok(()) => self.message(host, &format!("Command {name} sent success")),
                // A restart of a server that is not running starts it.
                Err(_) if name == "restart" => return Ok(self.start()),
                Err(_) => return Err(format!("No pid '{pid}' found")),
            },
        }
        Ok(Outcome::Exit(0))
    }

    /// The server's command line, from what is known (pumactl's choice of flags). The control
    /// server's URL and token only as given by -C and -T: the server reads the config file
    /// itself, and a `--control-url` from it would replace its `activate_control_app` whole
    /// (losing `data_only` or `no_token`).
    fn start(&self) -> Outcome {
        let f = &self.flags;
        let mut run: Vec<String> = Vec::new();
        if let Some(state) = &f.state {
            run.extend(["-S".to_string(), state.clone()]);
        }
        if f.quiet {
            run.push("-q".into());
        }
        for (flag, value) in [
            ("--pidfile", &f.pidfile),
            ("--control-url", &self.given_control.0),
            ("--control-token", &self.given_control.1),
            ("-C", &f.config_file),
            ("-e", &f.environment),
        ] {
            if let Some(v) = value {
                run.extend([flag.to_string(), v.clone()]);
            }
        }
        Outcome::Start(run)
    }
}

/// `-F FILE`, else `config/puma/<env>.rb`, else `config/puma.rb` (`-F -`: none): its state
/// path, control URL, token and pidfile fill in what the flags did not say.
fn read_config_file(flags: &mut args::Flags, host: &mut dyn Host) -> Result<(), String> {
    if flags.config_file.as_deref() == Some("-") {
        return Ok(());
    }
    let environment = flags
        .environment
        .clone()
        .unwrap_or_else(|| "development".into());
    if flags.config_file.is_none() {
        flags.config_file = [
            format!("config/puma/{environment}.rb"),
            "config/puma.rb".into(),
        ]
        .into_iter()
        .find(|f| std::path::Path::new(f).exists());
    }
    let Some(path) = flags.config_file.clone() else {
        return Ok(());
    };
    if let Err(e) = std::fs::metadata(&path) {
        return Err(format!("{} @ rb_sysopen - {path}", os_message(&e)));
    }
    let found = host.read_config(&path, &environment)?;
    // `auto` names a socket the server picks at boot: the file cannot say which.
    let url = found.control_url.filter(|u| u != "auto");
    flags.state = flags.state.take().or(found.state);
    flags.control_url = flags.control_url.take().or(url);
    flags.control_auth_token = flags.control_auth_token.take().or(found.control_auth_token);
    flags.pidfile = flags.pidfile.take().or(found.pidfile);
    Ok(())
}

fn read_text(path: &str) -> Result<String, String> {
    std::fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .map_err(|e| format!("{} @ rb_sysopen - {path}", os_message(&e)))
}

/// The C library's text for an OS error, as Ruby's messages use it (without Rust's
/// " (os error N)").
fn os_message(e: &std::io::Error) -> String {
    let text = e.to_string();
    match text.find(" (os error ") {
        Some(at) => text[..at].to_string(),
        None => text,
    }
}

/// Ruby's `String#to_i`: leading blanks, a sign, digits (single underscores between them);
/// anything else ends the number; no digits is 0.
pub fn ruby_to_i(text: &str) -> i64 {
    let s = text.trim_start_matches([' ', '\t', '\n', '\x0b', '\x0c', '\r']);
    let (negative, digits) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    let mut value: i64 = 0;
    let mut previous_digit = false;
    let bytes = digits.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        if b.is_ascii_digit() {
            value = value.saturating_mul(10).saturating_add(i64::from(b - b'0'));
            previous_digit = true;
        } else if b == b'_' && previous_digit && bytes.get(i + 1).is_some_and(u8::is_ascii_digit) {
            previous_digit = false;
        } else {
            break;
        }
    }
    if negative {
        -value
    } else {
        value
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn to_i_reads_as_ruby_does() {
        for (text, want) in [
            ("1234\n", 1234),
            ("  42abc", 42),
            ("-5", -5),
            ("+7", 7),
            ("1_000", 1000),
            ("1__0", 1),
            ("_1", 0),
            ("", 0),
            ("abc", 0),
            ("99999999999999999999999", i64::MAX),
        ] {
            assert_eq!(ruby_to_i(text), want, "{text:?}");
        }
    }

    #[test]
    fn sixteen_commands_in_pumactl_order() {
        let names: Vec<&str> = command_names().collect();
        assert_eq!(names.len(), 16);
        let mut sorted = names.clone();
        sorted.sort_unstable();
        assert_eq!(names, sorted);
        let signal_only: Vec<&str> = COMMANDS
            .iter()
            .filter(|c| !c.by_http)
            .map(|c| c.name)
            .collect();
        assert_eq!(
            signal_only,
            ["info", "reopen-log", "worker-count-down", "worker-count-up"]
        );
    }
}
