//! Puma-compatible command-line flags.
//!
//! Every flag Puma 8 knows is parsed into the *user* layer, with the same validation a config
//! file line gets: an option's flags are part of its definition (`crate::options`, the
//! `options!` table), and call one of its methods; only the command's own flags (`-C`, `-I`,
//! `--no-config`, `-h`, `-V`) are listed here, and `--help` is made from both. Flags whose subsystem has not landed yet (the
//! control server) are stored like the rest; the launcher refuses to boot with them
//! ([`crate::Options::not_supported_yet`]), because silently ignoring a flag is worse than failing.

use crate::options::{Flag, FlagArg, Layer, DEFINITIONS};

/// What the command line asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    Run(Box<Cli>),
    Help,
    Version,
}

/// A parsed command line that asks to run the server.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Cli {
    /// Settings given as flags (highest precedence).
    pub user: Layer,
    /// `-C` files in order; empty means "look up config/puma/<env>.rb, then config/puma.rb".
    pub config_files: Vec<String>,
    /// `--no-config` or `-C -`: do not load any config file.
    pub no_config: bool,
    /// `-I` paths to prepend to Ruby's `$LOAD_PATH`, in order.
    pub includes: Vec<String>,
}

/// A command-line mistake; the message names the flag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageError(pub String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// `--help`: the command's own flags, then every option's (from the option definitions).
pub fn usage() -> String {
    let mut out = String::from(
        "Usage: catamount [options] [rackup file]\n\n\
         Serves a Rack application (config.ru by default). Flags follow Puma's.\n\n\
         Options:\n",
    );
    let mut line = |label: String, help: &str| {
        // Help in a column; a label too long for it is followed by two spaces.
        let pad = 28usize.saturating_sub(label.len()).max(2);
        out.push_str(&format!("  {label}{}{help}\n", " ".repeat(pad)));
    };
    line(
        "-C, --config PATH".into(),
        "Load PATH as a config file (repeatable; - for none)",
    );
    line(
        "    --no-config".into(),
        "Do not look up config/puma/<env>.rb or config/puma.rb",
    );
    line(
        "-I, --include PATH".into(),
        "Prepend PATH (colon-separated list) to $LOAD_PATH",
    );
    for definition in DEFINITIONS {
        for flag in definition.flags.iter().filter(|f| !f.help.is_empty()) {
            let negated = format!("no-{}", flag.long);
            let long = if definition.flags.iter().any(|f| f.long == negated) {
                format!("--[no-]{}", flag.long)
            } else {
                format!("--{}", flag.long)
            };
            let value = match (flag.arg, flag.metavar) {
                (_, "") => String::new(),
                (FlagArg::OptionalInline, v) => format!("[={v}]"),
                (_, v) => format!(" {v}"),
            };
            let short = flag.short.map_or("    ".to_string(), |c| format!("-{c}, "));
            line(format!("{short}{long}{value}"), flag.help);
        }
    }
    line("-V, --version".into(), "Print the version and exit");
    line("-h, --help".into(), "Show this help and exit");
    out
}

/// Parses the arguments after the program name.
pub fn parse(args: &[String]) -> Result<Command, UsageError> {
    let mut cli = Cli::default();
    let mut positional: Vec<String> = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let arg = &args[i];
        i += 1;
        if arg == "--" {
            positional.extend(args[i..].iter().cloned());
            break;
        }
        let (flag, inline_value) = match split_flag(arg) {
            Some(parts) => parts,
            None => {
                positional.push(arg.clone());
                continue;
            }
        };
        let spec = lookup(&flag)?;
        let value = if spec.arg == FlagArg::OptionalInline {
            inline_value
        } else if spec.arg == FlagArg::Required {
            match inline_value {
                Some(v) => Some(v),
                None => {
                    let v = args
                        .get(i)
                        .ok_or_else(|| UsageError(format!("{}: missing argument", spec.display)))?;
                    i += 1;
                    Some(v.clone())
                }
            }
        } else {
            if inline_value.is_some() {
                return Err(UsageError(format!("{}: takes no argument", spec.display)));
            }
            None
        };
        apply(&mut cli, &spec, value)?;
        match spec.name {
            "help" => return Ok(Command::Help),
            "version" => return Ok(Command::Version),
            _ => {}
        }
    }
    match positional.as_slice() {
        [] => {}
        [rackup] => {
            // The positional rackup file wins over any `rackup` line in a config file.
            cli.user.rackup = Some(rackup.clone());
        }
        [_, extra, ..] => {
            return Err(UsageError(format!(
                "unexpected argument {extra:?}: only one rackup file may be given"
            )))
        }
    }
    Ok(Command::Run(Box::new(cli)))
}

/// A flag: one of the command's own (`-C`, `-I`, `-h`, ...) or an option's.
struct FlagSpec {
    name: &'static str,
    display: String,
    arg: FlagArg,
    /// The option flag, None for the command's own flags.
    option: Option<&'static Flag>,
}

/// Flags about the command rather than an option: config files, load path, help.
pub(crate) const COMMAND_FLAGS: &[(&str, Option<char>, FlagArg)] = &[
    ("config", Some('C'), FlagArg::Required),
    ("no-config", None, FlagArg::None),
    ("include", Some('I'), FlagArg::Required),
    ("version", Some('V'), FlagArg::None),
    ("help", Some('h'), FlagArg::None),
];

/// Splits `--name=value`, `--name`, `-x`, `-xVALUE` into the flag and an inline value.
fn split_flag(arg: &str) -> Option<(String, Option<String>)> {
    if let Some(long) = arg.strip_prefix("--") {
        return Some(match long.split_once('=') {
            Some((name, value)) => (format!("--{name}"), Some(value.to_string())),
            None => (arg.to_string(), None),
        });
    }
    let short = arg.strip_prefix('-')?;
    let mut chars = short.chars();
    let letter = chars.next()?;
    let rest: String = chars.collect();
    Some((format!("-{letter}"), (!rest.is_empty()).then_some(rest)))
}

fn lookup(flag: &str) -> Result<FlagSpec, UsageError> {
    let matches = |long: &str, short: Option<char>| {
        flag.strip_prefix("--") == Some(long)
            || short
                .is_some_and(|c| flag.len() == 2 && flag.ends_with(c) && !flag.starts_with("--"))
    };
    if let Some((name, short, arg)) = COMMAND_FLAGS.iter().find(|(l, s, _)| matches(l, *s)) {
        let display = match short {
            Some(c) => format!("-{c}/--{name}"),
            None => format!("--{name}"),
        };
        return Ok(FlagSpec {
            name,
            display,
            arg: *arg,
            option: None,
        });
    }
    if let Some(option) = option_flags().find(|f| matches(f.long, f.short)) {
        return Ok(FlagSpec {
            name: option.long,
            display: option.display(),
            arg: option.arg,
            option: Some(option),
        });
    }
    Err(UsageError(format!(
        "unknown option {flag} (see catamount --help)"
    )))
}

/// Every option's flags, from the option definitions.
fn option_flags() -> impl Iterator<Item = &'static Flag> {
    DEFINITIONS.iter().flat_map(|d| d.flags)
}

fn apply(cli: &mut Cli, spec: &FlagSpec, value: Option<String>) -> Result<(), UsageError> {
    let in_flag = |msg: String| UsageError(format!("{}: {msg}", spec.display));
    if let Some(option) = spec.option {
        let name = option.method;
        return cli
            .user
            .set(name, &(option.args)(value.as_deref()))
            .map_err(|e| {
                // Layer errors start with the method's name; the flag is what the user typed.
                let detail = e
                    .strip_prefix(&format!("{name}: "))
                    .unwrap_or(&e)
                    .to_string();
                in_flag(detail)
            });
    }
    match spec.name {
        "config" => {
            let value = value.unwrap_or_default();
            if value == "-" {
                cli.no_config = true;
            } else if value.is_empty() {
                return Err(in_flag("missing argument".into()));
            } else {
                cli.config_files.push(value);
            }
        }
        "no-config" => cli.no_config = true,
        "include" => cli.includes.extend(
            value
                .unwrap_or_default()
                .split(':')
                .filter(|p| !p.is_empty())
                .map(String::from),
        ),
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str]) -> Result<Cli, UsageError> {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        match parse(&args)? {
            Command::Run(cli) => Ok(*cli),
            other => panic!("not a run: {other:?}"),
        }
    }

    #[test]
    fn served_flags() {
        let cli = run(&[
            "-b",
            "tcp://127.0.0.1:0",
            "--bind=unix:///tmp/x.sock",
            "-t",
            "2:4",
            "-e",
            "production",
            "--dir",
            "/srv",
            "-v",
            "--pidfile",
            "/tmp/p",
            "-s",
            "-I",
            "lib:vendor",
            "--tag",
            "web",
            "-C",
            "a.rb",
            "--config=b.rb",
            "app.ru",
        ])
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(cli.user.binds.as_ref().map(Vec::len), Some(2));
        assert_eq!(
            (cli.user.min_threads, cli.user.max_threads),
            (Some(2), Some(4))
        );
        assert_eq!(cli.user.environment.as_deref(), Some("production"));
        assert_eq!(cli.user.directory.as_deref(), Some("/srv"));
        assert_eq!(cli.user.log_requests, Some(true));
        assert_eq!(cli.user.silent, Some(true));
        assert_eq!(cli.includes, ["lib", "vendor"]);
        assert_eq!(cli.config_files, ["a.rb", "b.rb"]);
        assert_eq!(cli.user.rackup.as_deref(), Some("app.ru"));
        assert_eq!(cli.user.tag.as_deref(), Some("web"));
    }

    #[test]
    fn short_flags_with_attached_values() {
        let cli = run(&["-p9393", "-t8"]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            cli.user.binds.unwrap_or_default()[0].original,
            "tcp://0.0.0.0:9393"
        );
        assert_eq!(
            (cli.user.min_threads, cli.user.max_threads),
            (Some(8), Some(8))
        );
    }

    #[test]
    fn quiet_after_verbose_wins() {
        let cli = run(&["-v", "-q"]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(cli.user.log_requests, Some(false));
    }

    #[test]
    fn no_config_forms() {
        assert!(
            run(&["-C", "-"])
                .unwrap_or_else(|e| panic!("{e}"))
                .no_config
        );
        assert!(
            run(&["--no-config"])
                .unwrap_or_else(|e| panic!("{e}"))
                .no_config
        );
    }

    #[test]
    fn later_subsystem_flags_are_parsed_and_stored() {
        let cli = run(&[
            "-w",
            "3",
            "--preload",
            "-f",
            "app.ru",
            "--control-url",
            "auto",
            "--control-token",
            "sekrit",
            "--bind-to-activated-sockets=only",
            "-S",
            "/tmp/state",
            "--plugin",
            "tmp_restart",
            "--redirect-stdout",
            "/tmp/out",
            "--redirect-append",
            "--idle-timeout",
            "5",
            "--early-hints",
            "--debug",
        ])
        .unwrap_or_else(|e| panic!("{e}"));
        let u = &cli.user;
        assert_eq!(u.workers, Some(3));
        assert_eq!(u.preload_app, Some(true));
        assert_eq!(u.fork_worker, Some(1000), "-f takes no separate word");
        assert_eq!(u.rackup.as_deref(), Some("app.ru"));
        let control = u.control.clone().unwrap_or_else(|| panic!("no control"));
        assert_eq!(
            (control.url.as_str(), control.auth_token.as_deref()),
            ("auto", Some("sekrit"))
        );
        assert_eq!(
            u.activated_sockets,
            Some(crate::options::ActivatedSockets::Only)
        );
        assert_eq!(u.state_path.as_deref(), Some("/tmp/state"));
        assert_eq!(u.plugins.as_deref(), Some(&["tmp_restart".to_string()][..]));
        assert_eq!(u.redirect_stdout.as_deref(), Some("/tmp/out"));
        assert_eq!(u.redirect_append, Some(true));
        assert_eq!(u.idle_timeout, Some(std::time::Duration::from_secs(5)));
        assert_eq!((u.early_hints, u.debug), (Some(true), Some(true)));
        let cli = run(&["--fork-worker=50"]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(cli.user.fork_worker, Some(50));
    }

    #[test]
    fn usage_lists_every_flag_once_in_columns() {
        let usage = usage();
        for flag in option_flags() {
            let long = flag.long.trim_start_matches("no-");
            assert!(
                usage.contains(&format!("--{long}")) || usage.contains(&format!("--[no-]{long}")),
                "usage lacks --{long}"
            );
            if let Some(c) = flag.short {
                assert!(
                    usage.contains(&format!("-{c}, --{long}")),
                    "usage lacks -{c}"
                );
            }
        }
        assert!(usage.contains("\n  -t, --threads MIN:MAX       Ruby threads serving requests"));
        assert!(usage.contains("\n      --[no-]redirect-append  Append to"));
        assert!(usage.contains("\n  -f, --fork-worker[=REQUESTS]  Fork workers"));
        assert!(usage.contains("\n      --bind-to-activated-sockets[=only]  Serve"));
        assert!(usage.contains("\n      --early-hints           Offer"));
        assert_eq!(usage.matches("redirect-append").count(), 1);
    }

    #[test]
    fn help_and_version() {
        assert_eq!(parse(&["-h".to_string()]), Ok(Command::Help));
        assert_eq!(parse(&["--version".to_string()]), Ok(Command::Version));
        assert_eq!(parse(&["-V".to_string()]), Ok(Command::Version));
    }

    #[test]
    fn errors_name_the_flag() {
        for (args, needle) in [
            (vec!["--frob"], "unknown option --frob"),
            (vec!["-Z"], "unknown option -Z"),
            (
                vec!["-w", "two"],
                "-w/--workers: \"two\" is not a whole number",
            ),
            (vec!["--fork-worker=x"], "-f/--fork-worker:"),
            (
                vec!["--idle-timeout", "0"],
                "--idle-timeout: must be more than 0",
            ),
            (
                vec!["--control-url", "nope"],
                "--control-url: invalid bind URL",
            ),
            (
                vec!["-t", "5:2"],
                "-t/--threads: the minimum (5) is greater",
            ),
            (vec!["-t", "x"], "-t/--threads:"),
            (vec!["-p", "http"], "-p/--port:"),
            (vec!["-b", "0.0.0.0:80"], "-b/--bind: invalid bind URL"),
            (vec!["-b"], "-b/--bind: missing argument"),
            (vec!["--quiet=yes"], "--quiet: takes no argument"),
            (vec!["a.ru", "b.ru"], "only one rackup file"),
        ] {
            let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
            let err = parse(&args)
                .err()
                .unwrap_or_else(|| panic!("{args:?} accepted"));
            assert!(err.0.contains(needle), "{args:?}: {err}");
        }
    }
}
