//! Puma-compatible command-line flags.
//!
//! Every flag Puma 8 knows is recognised. The ones Catamount serves are parsed into the *user*
//! layer; the ones whose subsystem has not landed yet are refused with a message that says so,
//! because silently accepting a flag that does nothing is worse than failing.

use crate::options::{Layer, Value};

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

/// Puma flags that Catamount recognises but does not serve yet, with the release that brings them.
const NOT_YET: &[(&str, Option<char>, &str)] = &[
    ("workers", Some('w'), "cluster mode"),
    ("preload", None, "cluster mode"),
    ("fork-worker", Some('f'), "cluster mode"),
    ("prune-bundler", None, "cluster mode"),
    ("extra-runtime-dependencies", None, "cluster mode"),
    ("restart-cmd", Some('R'), "hot restarts"),
    (
        "bind-to-activated-sockets",
        None,
        "systemd socket activation",
    ),
    ("control-url", None, "the control server"),
    ("control-token", None, "the control server"),
    ("state", Some('S'), "the control server"),
    ("early-hints", None, "early hints"),
    ("plugin", None, "plugins"),
    ("idle-timeout", None, "the configuration release"),
    ("debug", None, "the configuration release"),
    ("redirect-stdout", None, "the configuration release"),
    ("redirect-stderr", None, "the configuration release"),
    ("redirect-append", None, "the configuration release"),
    ("no-redirect-append", None, "the configuration release"),
];

pub const USAGE: &str = "\
Usage: catamount [options] [rackup file]

Serves a Rack application (config.ru by default). Flags follow Puma's.

Options:
  -b, --bind URI              Listen on URI: tcp://HOST:PORT or unix:///PATH (repeatable)
  -C, --config PATH           Load PATH as a config file (repeatable; - for none)
      --no-config             Do not look up config/puma/<env>.rb or config/puma.rb
      --dir DIR               Change to DIR before starting
  -e, --environment ENV       Rack environment (default: APP_ENV, RACK_ENV, RAILS_ENV or development)
  -I, --include PATH          Prepend PATH (colon-separated list) to $LOAD_PATH
  -p, --port PORT             Listen on tcp://0.0.0.0:PORT
      --pidfile PATH          Write the process id to PATH
  -q, --quiet                 Do not log requests (the default)
  -v, --log-requests          Log every request to stdout
  -s, --silent                Do not print informational messages
  -t, --threads MIN:MAX       Ruby threads serving requests (MIN:MAX or N; default 0:5)
      --tag NAME              Text shown in the process title
  -V, --version               Print the version and exit
  -h, --help                  Show this help and exit
";

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
        let value = if spec.takes_value {
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
        apply(&mut cli, &spec, value.unwrap_or_default())?;
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

struct FlagSpec {
    name: &'static str,
    display: String,
    takes_value: bool,
}

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
    const SERVED: &[(&str, Option<char>, bool)] = &[
        ("bind", Some('b'), true),
        ("config", Some('C'), true),
        ("no-config", None, false),
        ("dir", None, true),
        ("environment", Some('e'), true),
        ("include", Some('I'), true),
        ("port", Some('p'), true),
        ("pidfile", None, true),
        ("quiet", Some('q'), false),
        ("log-requests", Some('v'), false),
        ("silent", Some('s'), false),
        ("threads", Some('t'), true),
        ("tag", None, true),
        ("version", Some('V'), false),
        ("help", Some('h'), false),
    ];
    let matches = |long: &str, short: Option<char>| {
        flag.strip_prefix("--") == Some(long)
            || short
                .is_some_and(|c| flag.len() == 2 && flag.ends_with(c) && !flag.starts_with("--"))
    };
    if let Some((name, short, takes_value)) = SERVED.iter().find(|(l, s, _)| matches(l, *s)) {
        let display = match short {
            Some(c) => format!("-{c}/--{name}"),
            None => format!("--{name}"),
        };
        return Ok(FlagSpec {
            name,
            display,
            takes_value: *takes_value,
        });
    }
    if let Some((name, _, what)) = NOT_YET.iter().find(|(l, s, _)| matches(l, *s)) {
        return Err(UsageError(format!(
            "--{name} is not supported yet (it needs {what}, which Catamount does not have yet)"
        )));
    }
    Err(UsageError(format!(
        "unknown option {flag} (see catamount --help)"
    )))
}

fn apply(cli: &mut Cli, spec: &FlagSpec, value: String) -> Result<(), UsageError> {
    let in_flag = |msg: String| UsageError(format!("{}: {msg}", spec.display));
    let set = |layer: &mut Layer, name: &str, args: Vec<Value>| {
        layer.set(name, &args).map_err(|e| {
            // Layer errors start with the DSL name; the flag name is what the user typed.
            let detail = e
                .strip_prefix(&format!("{name}: "))
                .unwrap_or(&e)
                .to_string();
            in_flag(detail)
        })
    };
    match spec.name {
        "bind" => set(&mut cli.user, "bind", vec![Value::Str(value)])?,
        "port" => set(&mut cli.user, "port", vec![Value::Str(value)])?,
        "threads" => {
            let args = match value.split_once(':') {
                Some((min, max)) => vec![Value::Str(min.into()), Value::Str(max.into())],
                None => vec![Value::Str(value)],
            };
            set(&mut cli.user, "threads", args)?
        }
        "environment" => set(&mut cli.user, "environment", vec![Value::Str(value)])?,
        "dir" => set(&mut cli.user, "directory", vec![Value::Str(value)])?,
        "pidfile" => set(&mut cli.user, "pidfile", vec![Value::Str(value)])?,
        "tag" => set(&mut cli.user, "tag", vec![Value::Str(value)])?,
        "quiet" => set(&mut cli.user, "quiet", vec![])?,
        "log-requests" => set(&mut cli.user, "log_requests", vec![])?,
        "silent" => set(&mut cli.user, "silent", vec![])?,
        "config" => {
            if value == "-" {
                cli.no_config = true;
            } else if value.is_empty() {
                return Err(in_flag("missing argument".into()));
            } else {
                cli.config_files.push(value);
            }
        }
        "no-config" => cli.no_config = true,
        "include" => cli
            .includes
            .extend(value.split(':').filter(|p| !p.is_empty()).map(String::from)),
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
            (vec!["-w", "2"], "--workers is not supported yet"),
            (vec!["--preload"], "--preload is not supported yet"),
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
