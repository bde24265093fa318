//! Puma's state file, as `pumactl -S` reads it: a small YAML file (`---`, then `key: value`
//! lines) of which only `pid`, `control_url`, `control_auth_token` and `running_from` count.
//! Read line by line as Puma does (no YAML library): a value of digits is a number, one
//! surrounding pair of double quotes is dropped, an empty value is no value.

/// The fields pumactl reads.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StateFile {
    pub pid: Option<i64>,
    pub control_url: Option<String>,
    pub control_auth_token: Option<String>,
    pub running_from: Option<String>,
}

/// Reads a state file's text; lines it does not know are skipped.
pub fn parse(text: &str) -> StateFile {
    let mut state = StateFile::default();
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim_matches(|c: char| c.is_ascii_whitespace() || c == '\0');
        let text = unquote(value);
        let text = (!text.is_empty()).then(|| text.to_string());
        match key {
            // Only a whole number is a pid (Puma would fail on anything else).
            "pid" => {
                state.pid = (!value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()))
                    .then(|| crate::ruby_to_i(value))
            }
            "control_url" => state.control_url = text,
            "control_auth_token" => state.control_auth_token = text,
            "running_from" => state.running_from = text,
            _ => {}
        }
    }
    state
}

/// Drops a leading and a trailing double quote (each on its own, as Puma does).
fn unquote(value: &str) -> &str {
    let value = value.strip_prefix('"').unwrap_or(value);
    value.strip_suffix('"').unwrap_or(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_puma_writes() {
        let text = "---\npid: 4242\ncontrol_url: unix:///tmp/x.sock\n\
                    control_auth_token: abc123\nrunning_from: \"/srv/my app\"\n";
        assert_eq!(
            parse(text),
            StateFile {
                pid: Some(4242),
                control_url: Some("unix:///tmp/x.sock".into()),
                control_auth_token: Some("abc123".into()),
                running_from: Some("/srv/my app".into()),
            }
        );
    }

    #[test]
    fn quotes_comments_blanks_and_strangers() {
        let text = "# a comment\npid:   17  \r\ncontrol_url: \"tcp://127.0.0.1:9293\"\n\
                    control_auth_token:\nother: 5\n  pid: 99\nnonsense\n";
        let state = parse(text);
        assert_eq!(state.pid, Some(17));
        assert_eq!(state.control_url.as_deref(), Some("tcp://127.0.0.1:9293"));
        assert_eq!(state.control_auth_token, None, "an empty value is none");
        assert_eq!(parse("pid: x12\n").pid, None);
        assert_eq!(parse("pid: 1.5\n").pid, None);
        assert_eq!(parse("").pid, None);
        assert_eq!(
            parse("control_auth_token: 0123\n")
                .control_auth_token
                .as_deref(),
            Some("0123"),
            "a token of digits stays text"
        );
        assert_eq!(
            parse("running_from: \"/a\n").running_from.as_deref(),
            Some("/a"),
            "a lone quote goes too"
        );
    }
}
