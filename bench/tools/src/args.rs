//! Hand-written argument parsing shared by the subcommands: `--flag value` pairs, positional
//! arguments, and typed lookups that fail with a message naming the flag (the caller turns a
//! [`UsageError`] into exit status 2).

use std::fmt;
use std::net::IpAddr;

/// A command line the user got wrong; printed as one line, exit status 2.
#[derive(Debug)]
pub struct UsageError(pub String);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The flags and positional arguments of one subcommand, after splitting.
#[derive(Debug)]
pub struct Flags {
    values: Vec<(&'static str, String)>,
    positional: Vec<String>,
}

/// Splits `args` (everything after the subcommand name) into `--flag value` pairs and positional
/// arguments. Only flags listed in `known` are accepted; each may appear once and must have a
/// value. `--help`/`-h` is not handled here (the dispatcher looks for it first).
pub fn parse(args: &[String], known: &[&'static str]) -> Result<Flags, UsageError> {
    let mut values: Vec<(&'static str, String)> = Vec::new();
    let mut positional = Vec::new();
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        if let Some(name) = arg.strip_prefix("--") {
            let Some(flag) = known.iter().copied().find(|k| *k == name) else {
                return Err(UsageError(format!("unknown flag --{name}")));
            };
            if values.iter().any(|(k, _)| *k == flag) {
                return Err(UsageError(format!("--{flag} given more than once")));
            }
            let Some(value) = iter.next() else {
                return Err(UsageError(format!("--{flag} needs a value")));
            };
            values.push((flag, value.clone()));
        } else if arg.starts_with('-') && arg.len() > 1 {
            return Err(UsageError(format!("unknown flag {arg}")));
        } else {
            positional.push(arg.clone());
        }
    }
    Ok(Flags { values, positional })
}

impl Flags {
    fn raw(&self, name: &str) -> Option<&str> {
        self.values
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Fails when positional arguments were given to a subcommand that takes none.
    pub fn no_positional(&self) -> Result<(), UsageError> {
        match self.positional.first() {
            Some(extra) => Err(UsageError(format!("unexpected argument {extra:?}"))),
            None => Ok(()),
        }
    }

    /// A string flag, or `default` when absent.
    pub fn string(&self, name: &str, default: &str) -> String {
        self.raw(name).unwrap_or(default).to_owned()
    }

    /// An unsigned number in `min..=max`; `default` when absent (`None` = the flag is required).
    pub fn number(
        &self,
        name: &str,
        default: Option<u64>,
        min: u64,
        max: u64,
    ) -> Result<u64, UsageError> {
        let Some(raw) = self.raw(name) else {
            return default.ok_or_else(|| UsageError(format!("--{name} is required")));
        };
        let value: u64 = raw
            .parse()
            .map_err(|_| UsageError(format!("--{name} must be a whole number, got {raw:?}")))?;
        if value < min || value > max {
            return Err(UsageError(format!(
                "--{name} must be between {min} and {max}, got {value}"
            )));
        }
        Ok(value)
    }

    /// A TCP port; `default` when absent (`None` = required). Port 0 only when `allow_zero`.
    pub fn port(
        &self,
        name: &str,
        default: Option<u16>,
        allow_zero: bool,
    ) -> Result<u16, UsageError> {
        let min = u64::from(!allow_zero);
        let value = self.number(name, default.map(u64::from), min, u64::from(u16::MAX))?;
        u16::try_from(value).map_err(|_| UsageError(format!("--{name} is not a port")))
    }

    /// A loopback IP address (these tools refuse to aim at anything else).
    pub fn loopback_host(&self, name: &str, default: &str) -> Result<IpAddr, UsageError> {
        let raw = self.raw(name).unwrap_or(default);
        let ip: IpAddr = raw.parse().map_err(|_| {
            UsageError(format!(
                "--{name} must be an IP address such as 127.0.0.1, got {raw:?}"
            ))
        })?;
        if !ip.is_loopback() {
            return Err(UsageError(format!(
                "--{name} must be a loopback address, got {ip}"
            )));
        }
        Ok(ip)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(args: &[&str]) -> Vec<String> {
        args.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn flags_and_positional() {
        let flags = parse(&strings(&["--port", "80", "7", "8"]), &["port"]).unwrap();
        assert_eq!(flags.port("port", None, false).unwrap(), 80);
        assert_eq!(flags.positional, strings(&["7", "8"]));
        assert!(flags.no_positional().is_err());
    }

    #[test]
    fn rejects_bad_input() {
        assert!(parse(&strings(&["--nope", "1"]), &["port"]).is_err());
        assert!(parse(&strings(&["--port"]), &["port"]).is_err());
        assert!(parse(&strings(&["--port", "1", "--port", "2"]), &["port"]).is_err());
        assert!(parse(&strings(&["-x"]), &["port"]).is_err());
        let flags = parse(&strings(&["--port", "70000"]), &["port"]).unwrap();
        assert!(flags.port("port", None, false).is_err());
        let flags = parse(&strings(&["--port", "0"]), &["port"]).unwrap();
        assert!(flags.port("port", None, false).is_err());
        assert_eq!(flags.port("port", None, true).unwrap(), 0);
        let flags = parse(&strings(&["--host", "10.0.0.1"]), &["host"]).unwrap();
        assert!(flags.loopback_host("host", "127.0.0.1").is_err());
        let flags = parse(&[], &["host"]).unwrap();
        assert!(flags.number("conns", None, 1, 10).is_err());
        assert!(flags.loopback_host("host", "127.0.0.1").is_ok());
    }
}
