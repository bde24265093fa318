//! `Catamount::Native.ctl(argv, config_reader)`: runs a `catamountctl` command line
//! (crates/catamount-ctl) with Ruby around it: its output goes to `$stdout`, and a config file
//! is evaluated by `config_reader.call(path, environment)`, which returns a Hash with `:state`,
//! `:control_url`, `:control_auth_token` and `:pidfile`. Returns the exit status, or, for
//! `start` (and a `restart` of a server that is gone), the Array of arguments to run
//! `catamount` with.
//!
//! Runs holding the GVL: nothing else runs in a ctl process, and every wait is bounded.

use catamount_ctl::{ConfigValues, Host, Outcome};
use magnus::value::ReprValue;
use magnus::{Error, IntoValue, RHash, Ruby, Value};

pub fn ctl(ruby: &Ruby, argv: Vec<String>, config_reader: Value) -> Result<Value, Error> {
    let mut host = RubyHost {
        ruby,
        stdout: ruby.eval("$stdout")?,
        reader: config_reader,
        raised: None,
    };
    let outcome = catamount_ctl::run(&argv, &mut host);
    if let Some(error) = host.raised {
        return Err(error);
    }
    let _: Result<Value, Error> = host.stdout.funcall("flush", ());
    Ok(match outcome {
        Outcome::Exit(status) => status.into_value_with(ruby),
        Outcome::Start(args) => ruby.ary_from_vec(args).as_value(),
    })
}

struct RubyHost<'r> {
    ruby: &'r Ruby,
    stdout: Value,
    reader: Value,
    /// What the config reader raised that is no error of the file's (an interrupt, `exit`,
    /// `throw`): raised again once `run` returns; nothing is printed meanwhile.
    raised: Option<Error>,
}

impl Host for RubyHost<'_> {
    fn print(&mut self, text: &str) {
        if self.raised.is_none() {
            // A closed stdout (EPIPE) is no reason to fail the command.
            let _: Result<Value, Error> = self.stdout.funcall("write", (text,));
        }
    }

    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }

    fn read_config(&mut self, path: &str, environment: &str) -> Result<ConfigValues, String> {
        let hash = self
            .reader
            .funcall::<_, _, RHash>("call", (path, environment))
            .map_err(|e| self.file_error(e))?;
        let field = |key: &str| -> Result<Option<String>, String> {
            let value: Option<Value> = hash.get(self.ruby.to_symbol(key));
            match value.filter(|v| !v.is_nil()) {
                None => Ok(None),
                Some(v) => v
                    .funcall::<_, _, String>("to_s", ())
                    .map(Some)
                    .map_err(|e| e.to_string()),
            }
        };
        Ok(ConfigValues {
            state: field("state")?,
            control_url: field("control_url")?,
            control_auth_token: field("control_auth_token")?,
            pidfile: field("pidfile")?,
        })
    }
}

impl RubyHost<'_> {
    /// A mistake in the file (any StandardError or ScriptError) is its message; anything
    /// else is kept to be raised again.
    fn file_error(&mut self, error: Error) -> String {
        let ruby = self.ruby;
        if error.is_kind_of(ruby.exception_standard_error())
            || error.is_kind_of(ruby.exception_script_error())
        {
            if let Some(message) = error
                .value()
                .and_then(|e| e.funcall::<_, _, String>("message", ()).ok())
            {
                return message;
            }
            return error.to_string();
        }
        self.raised = Some(error);
        String::new()
    }
}
