//! catamountctl's flags, read the way pumactl's option parser reads them: options anywhere
//! on the line (before or after the command), `--` ends them, short flags bundle (`-Qp 12`)
//! and take their value attached or as the next word (whatever it looks like), long flags take
//! `--name=value` and may be shortened to an unambiguous prefix in any case, and a letter that
//! is no short flag stands for the long flag it begins (`-q` is `--quiet`, `-s` `--state`).

/// What the flags said.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Flags {
    pub state: Option<String>,
    pub quiet: bool,
    pub pidfile: Option<String>,
    pub pid: Option<i64>,
    pub control_url: Option<String>,
    pub control_auth_token: Option<String>,
    pub config_file: Option<String>,
    pub environment: Option<String>,
}

#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Parsed {
    Help,
    Version,
    /// `words`: what is not a flag or a flag's value; the first is the command.
    Run {
        flags: Flags,
        words: Vec<String>,
    },
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Key {
    State,
    Quiet,
    Pidfile,
    Pid,
    ControlUrl,
    ControlToken,
    ConfigFile,
    Environment,
    Help,
    Version,
}

struct Opt {
    short: char,
    long: &'static str,
    /// The value's name in the usage text; empty for a flag without one.
    value: &'static str,
    help: &'static str,
    key: Key,
}

const OPTS: &[Opt] = &[
    Opt {
        short: 'S',
        long: "state",
        value: "PATH",
        help: "Read the pid, control URL and token from this state file",
        key: Key::State,
    },
    Opt {
        short: 'Q',
        long: "quiet",
        value: "",
        help: "Print no messages of catamountctl's own (-q works too)",
        key: Key::Quiet,
    },
    Opt {
        short: 'P',
        long: "pidfile",
        value: "PATH",
        help: "Read the pid from this file",
        key: Key::Pidfile,
    },
    Opt {
        short: 'p',
        long: "pid",
        value: "PID",
        help: "The server's process id",
        key: Key::Pid,
    },
    Opt {
        short: 'C',
        long: "control-url",
        value: "URL",
        help: "The control server's address (tcp://HOST:PORT, ssl://HOST:PORT, unix://PATH, unix://@NAME)",
        key: Key::ControlUrl,
    },
    Opt {
        short: 'T',
        long: "control-token",
        value: "TOKEN",
        help: "The control server's auth token",
        key: Key::ControlToken,
    },
    Opt {
        short: 'F',
        long: "config-file",
        value: "PATH",
        help: "Read state_path, control URL, token and pidfile from this config file (- for none)",
        key: Key::ConfigFile,
    },
    Opt {
        short: 'e',
        long: "environment",
        value: "ENVIRONMENT",
        help: "Which config/puma/<ENVIRONMENT>.rb to look for (default development)",
        key: Key::Environment,
    },
    Opt {
        short: 'H',
        long: "help",
        value: "",
        help: "Print this help",
        key: Key::Help,
    },
    Opt {
        short: 'V',
        long: "version",
        value: "",
        help: "Print the version",
        key: Key::Version,
    },
];

/// `-H`'s text.
pub fn usage() -> String {
    let names: Vec<&str> = crate::command_names().collect();
    let mut out = format!(
        "Usage: catamountctl (-p PID | -P pidfile | -S state_file | -C url -T token | -F config.rb) ({})\n",
        names.join("|")
    );
    for opt in OPTS {
        let label = if opt.value.is_empty() {
            format!("-{}, --{}", opt.short, opt.long)
        } else {
            format!("-{}, --{} {}", opt.short, opt.long, opt.value)
        };
        out.push_str(&format!("    {label:<33}{}\n", opt.help));
    }
    out
}

/// Parses the arguments after the program name; the error is pumactl's message.
pub(crate) fn parse(argv: &[String]) -> Result<Parsed, String> {
    let mut flags = Flags::default();
    let mut words = Vec::new();
    let mut rest = argv.iter();
    while let Some(arg) = rest.next() {
        let mut next_word = || rest.next().cloned();
        let key_and_value = if arg == "--" {
            words.extend(next_word_all(&mut next_word));
            break;
        } else if let Some(long) = arg.strip_prefix("--") {
            Some(long_option(arg, long, &mut next_word)?)
        } else if arg.len() > 1 && arg.starts_with('-') {
            match short_options(arg, &mut flags, &mut next_word)? {
                Some(done) => return Ok(done),
                None => None,
            }
        } else {
            words.push(arg.clone());
            None
        };
        if let Some((key, value)) = key_and_value {
            if let Some(done) = apply(&mut flags, key, value) {
                return Ok(done);
            }
        }
    }
    Ok(Parsed::Run { flags, words })
}

fn next_word_all(next: &mut dyn FnMut() -> Option<String>) -> Vec<String> {
    std::iter::from_fn(next).collect()
}

/// `--name`, `--name=value`, `--name value`.
fn long_option(
    arg: &str,
    body: &str,
    next_word: &mut dyn FnMut() -> Option<String>,
) -> Result<(Key, Option<String>), String> {
    let (name, inline) = match body.split_once('=') {
        Some((n, v)) => (n, Some(v.to_string())),
        None => (body, None),
    };
    let opt = find_long(name).map_err(|why| format!("{why}: --{name}"))?;
    if opt.value.is_empty() {
        if inline.is_some() {
            return Err(format!("needless argument: {arg}"));
        }
        return Ok((opt.key, None));
    }
    match inline.or_else(next_word) {
        Some(value) => Ok((opt.key, Some(value))),
        None => Err(format!("missing argument: {arg}")),
    }
}

/// Exactly, else by completion in any case.
fn find_long(name: &str) -> Result<&'static Opt, &'static str> {
    match OPTS.iter().find(|o| o.long == name) {
        Some(opt) => Ok(opt),
        None => complete(name, true),
    }
}

/// The option whose long name `prefix` begins: one candidate, or the shortest when it begins
/// every other (`--p` is `--pid`, not `--pidfile`); else ambiguous or invalid.
fn complete(prefix: &str, any_case: bool) -> Result<&'static Opt, &'static str> {
    let fold = |s: &str| {
        if any_case {
            s.to_ascii_lowercase()
        } else {
            s.to_string()
        }
    };
    let prefix = fold(prefix);
    let mut found: Vec<&Opt> = OPTS
        .iter()
        .filter(|o| !prefix.is_empty() && fold(o.long).starts_with(&prefix))
        .collect();
    found.sort_by_key(|o| o.long.len());
    match found.split_first() {
        None => Err("invalid option"),
        Some((first, others)) if others.iter().all(|o| o.long.starts_with(first.long)) => Ok(first),
        Some(_) => Err("ambiguous option"),
    }
}

/// `-Q`, `-Qp 12`, `-p12`. Returns help or version when one of them comes up.
fn short_options(
    arg: &str,
    flags: &mut Flags,
    next_word: &mut dyn FnMut() -> Option<String>,
) -> Result<Option<Parsed>, String> {
    let body = &arg[1..];
    for (at, c) in body.char_indices() {
        let opt = find_short(c).map_err(|why| {
            // The whole word when it starts wrong, else the letter (as pumactl reports it).
            if at == 0 && why == "invalid option" {
                format!("{why}: {arg}")
            } else {
                format!("{why}: -{c}")
            }
        })?;
        let value = if opt.value.is_empty() {
            None
        } else {
            let attached = &body[at + c.len_utf8()..];
            let value = if attached.is_empty() {
                next_word().ok_or_else(|| format!("missing argument: -{c}"))?
            } else {
                attached.to_string()
            };
            Some(value)
        };
        let takes_value = value.is_some();
        if let Some(done) = apply(flags, opt.key, value) {
            return Ok(Some(done));
        }
        if takes_value {
            break;
        }
    }
    Ok(None)
}

/// Exactly, else the long option the letter begins (`-q` is `--quiet`; case counts here).
fn find_short(c: char) -> Result<&'static Opt, &'static str> {
    match OPTS.iter().find(|o| o.short == c) {
        Some(opt) => Ok(opt),
        None => complete(c.encode_utf8(&mut [0; 4]), false),
    }
}

fn apply(flags: &mut Flags, key: Key, value: Option<String>) -> Option<Parsed> {
    let value = value.unwrap_or_default();
    match key {
        Key::State => flags.state = Some(value),
        Key::Quiet => flags.quiet = true,
        Key::Pidfile => flags.pidfile = Some(value),
        Key::Pid => flags.pid = Some(crate::ruby_to_i(&value)),
        Key::ControlUrl => flags.control_url = Some(value),
        Key::ControlToken => flags.control_auth_token = Some(value),
        Key::ConfigFile => flags.config_file = Some(value),
        Key::Environment => flags.environment = Some(value),
        Key::Help => return Some(Parsed::Help),
        Key::Version => return Some(Parsed::Version),
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_line(line: &str) -> Result<Parsed, String> {
        let argv: Vec<String> = line.split_whitespace().map(String::from).collect();
        parse(&argv)
    }

    fn run_of(line: &str) -> (Flags, Vec<String>) {
        match parse_line(line) {
            Ok(Parsed::Run { flags, words }) => (flags, words),
            other => panic!("{line}: {other:?}"),
        }
    }

    #[test]
    fn every_flag_short_and_long() {
        let (f, words) =
            run_of("-S s -Q -P pf -p 12 -C tcp://h:1 -T tok -F conf.rb -e prod stop extra");
        let want = Flags {
            state: Some("s".into()),
            quiet: true,
            pidfile: Some("pf".into()),
            pid: Some(12),
            control_url: Some("tcp://h:1".into()),
            control_auth_token: Some("tok".into()),
            config_file: Some("conf.rb".into()),
            environment: Some("prod".into()),
        };
        assert_eq!(f, want);
        assert_eq!(words, ["stop", "extra"]);
        let (long, _) = run_of(
            "--state s --quiet --pidfile pf --pid 12 --control-url tcp://h:1 \
             --control-token tok --config-file conf.rb --environment prod stop",
        );
        assert_eq!(long, want);
    }

    #[test]
    fn options_after_the_command_count_too() {
        let (f, words) = run_of("stop -p 12 -Q");
        assert_eq!(f.pid, Some(12));
        assert!(f.quiet);
        assert_eq!(words, ["stop"]);
        // The last one wins.
        assert_eq!(run_of("-p 5 stop -p 6").0.pid, Some(6));
    }

    #[test]
    fn values_attached_bundled_or_next_whatever_they_look_like() {
        assert_eq!(run_of("-p12 stop").0.pid, Some(12));
        let (f, _) = run_of("-Qp 12 stop");
        assert!(f.quiet);
        assert_eq!(f.pid, Some(12));
        assert_eq!(run_of("--pid=12 stop").0.pid, Some(12));
        assert_eq!(run_of("-S -Q stop").0.state.as_deref(), Some("-Q"));
        assert_eq!(run_of("-F - stop").0.config_file.as_deref(), Some("-"));
        assert_eq!(run_of("-p abc stop").0.pid, Some(0));
    }

    #[test]
    fn prefixes_and_case() {
        assert_eq!(run_of("--sta s stop").0.state.as_deref(), Some("s"));
        assert!(run_of("--q stop").0.quiet);
        assert!(run_of("--QUIET stop").0.quiet);
        assert!(run_of("-q stop").0.quiet);
        assert!(run_of("-Qq stop").0.quiet);
        assert_eq!(run_of("-s s stop").0.state.as_deref(), Some("s"));
        assert_eq!(run_of("-sfoo stop").0.state.as_deref(), Some("foo"));
        // The shorter name wins when it begins the other.
        assert_eq!(run_of("--P 7 stop").0.pid, Some(7));
        assert_eq!(run_of("--pidf x stop").0.pidfile.as_deref(), Some("x"));
        assert_eq!(run_of("--e=x stop").0.environment.as_deref(), Some("x"));
        // -p and -P are both exact.
        assert_eq!(run_of("-P x stop").0.pidfile.as_deref(), Some("x"));
        assert_eq!(parse_line("-h"), Ok(Parsed::Help));
        assert_eq!(parse_line("-v"), Ok(Parsed::Version));
        assert_eq!(parse_line("--ver"), Ok(Parsed::Version));
    }

    #[test]
    fn double_dash_and_lone_dash_are_words() {
        assert_eq!(run_of("-p 1 -- --quiet").1, ["--quiet"]);
        assert!(!run_of("-p 1 -- --quiet").0.quiet);
        assert_eq!(run_of("- stop").1, ["-", "stop"]);
    }

    #[test]
    fn help_and_version_end_parsing_where_they_stand() {
        assert_eq!(parse_line("-p 1 -Hx"), Ok(Parsed::Help));
        assert_eq!(parse_line("stop --help --bogus"), Ok(Parsed::Help));
        assert_eq!(parse_line("-V"), Ok(Parsed::Version));
        // A mistake before them wins.
        assert_eq!(parse_line("-x -H"), Err("invalid option: -x".to_string()));
    }

    #[test]
    fn mistakes_in_pumactl_words() {
        for (line, want) in [
            ("-x stop", "invalid option: -x"),
            ("-Qx stop", "invalid option: -x"),
            ("-xQ stop", "invalid option: -xQ"),
            ("-E foo stop", "invalid option: -E"),
            ("--foo stop", "invalid option: --foo"),
            ("-c x stop", "ambiguous option: -c"),
            ("-t x stop", "invalid option: -t"),
            ("-f - stop", "invalid option: -f"),
            ("--c x stop", "ambiguous option: --c"),
            ("--control x stop", "ambiguous option: --control"),
            ("--quiet=1 stop", "needless argument: --quiet=1"),
            ("-S", "missing argument: -S"),
            ("-Q -p", "missing argument: -p"),
            ("--state", "missing argument: --state"),
            ("stop -T", "missing argument: -T"),
        ] {
            assert_eq!(parse_line(line), Err(want.to_string()), "{line}");
        }
    }

    #[test]
    fn usage_lists_every_flag_and_command() {
        let text = usage();
        for opt in OPTS {
            assert!(
                text.contains(&format!("-{}, --{}", opt.short, opt.long)),
                "{}",
                opt.long
            );
        }
        assert!(text.contains("(gc|gc-stats|halt|info|phased-restart|refork|reload-worker-directory|reopen-log|restart|start|stats|status|stop|thread-backtraces|worker-count-down|worker-count-up)"));
    }
}
