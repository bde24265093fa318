//! The control commands and how a request is routed to one: only the last path segment counts
//! (the method is ignored), the token is checked first, then whether the command exists, then
//! whether this server allows it.

use crate::auth;

/// Every command the control server knows (Puma's endpoints, plus `metrics`).
pub const COMMANDS: [&str; 11] = [
    "stop",
    "halt",
    "restart",
    "phased-restart",
    "refork",
    "reload-worker-directory",
    "gc",
    "gc-stats",
    "stats",
    "thread-backtraces",
    "metrics",
];

/// Where a request goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// Authorized and allowed: the caller carries it out and answers.
    Command(&'static str),
    /// 403: the token is missing or wrong.
    Forbidden,
    /// 404: no such command.
    Unknown,
    /// 404: a known command this server does not allow (e.g. `data_only`).
    Unavailable(&'static str),
}

/// The commands a server routes to its caller, and the token that guards them.
#[derive(Debug, Clone, Default)]
pub struct Table {
    token: Option<Vec<u8>>,
    allowed: Vec<&'static str>,
}

impl Table {
    /// `token`: `None` means no check. Names in `allowed` that are not commands are ignored.
    pub fn new(token: Option<&str>, allowed: &[String]) -> Table {
        Table {
            token: token.map(|t| t.as_bytes().to_vec()),
            allowed: COMMANDS
                .iter()
                .copied()
                .filter(|c| allowed.iter().any(|a| a == c))
                .collect(),
        }
    }

    /// Routes a request by its raw path and query (neither percent-decoded, as Puma does).
    pub fn route(&self, path: &[u8], query: Option<&[u8]>) -> Route {
        if let Some(token) = &self.token {
            if !auth::query_has_token(query.unwrap_or_default(), token) {
                return Route::Forbidden;
            }
        }
        let segment = last_segment(path);
        let Some(command) = COMMANDS.iter().copied().find(|c| c.as_bytes() == segment) else {
            return Route::Unknown;
        };
        if self.allowed.contains(&command) {
            Route::Command(command)
        } else {
            Route::Unavailable(command)
        }
    }
}

/// What follows the last `/` (`/a/stats` → `stats`; `/stats/` → empty, which is no command).
fn last_segment(path: &[u8]) -> &[u8] {
    path.rsplit(|b| *b == b'/').next().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all() -> Vec<String> {
        COMMANDS.iter().map(|c| c.to_string()).collect()
    }

    #[test]
    fn only_the_last_segment_counts() {
        let t = Table::new(None, &all());
        assert_eq!(t.route(b"/stats", None), Route::Command("stats"));
        assert_eq!(t.route(b"/any/thing/stats", None), Route::Command("stats"));
        assert_eq!(t.route(b"/stats/", None), Route::Unknown);
        assert_eq!(t.route(b"/stats/x", None), Route::Unknown);
        assert_eq!(t.route(b"/", None), Route::Unknown);
        assert_eq!(t.route(b"/Stats", None), Route::Unknown, "case matters");
        assert_eq!(t.route(b"/gc-stats", None), Route::Command("gc-stats"));
        assert_eq!(
            t.route(b"/phased-restart", None),
            Route::Command("phased-restart")
        );
        assert_eq!(
            t.route(b"/st%61ts", None),
            Route::Unknown,
            "not percent-decoded"
        );
        for c in COMMANDS {
            assert_eq!(t.route(format!("/{c}").as_bytes(), None), Route::Command(c));
        }
    }

    #[test]
    fn the_token_is_checked_before_the_command() {
        let t = Table::new(Some("abc"), &["stats".to_string()]);
        assert_eq!(t.route(b"/stats", None), Route::Forbidden);
        assert_eq!(t.route(b"/nope", None), Route::Forbidden);
        assert_eq!(t.route(b"/stop", Some(b"token=x")), Route::Forbidden);
        assert_eq!(
            t.route(b"/stats", Some(b"token=abc")),
            Route::Command("stats")
        );
        assert_eq!(t.route(b"/nope", Some(b"token=abc")), Route::Unknown);
        assert_eq!(
            t.route(b"/stop", Some(b"token=abc")),
            Route::Unavailable("stop")
        );
    }

    #[test]
    fn allowed_limits_the_commands() {
        let data_only = Table::new(None, &["stats".into(), "gc-stats".into(), "bogus".into()]);
        assert_eq!(data_only.route(b"/stats", None), Route::Command("stats"));
        assert_eq!(
            data_only.route(b"/gc-stats", None),
            Route::Command("gc-stats")
        );
        assert_eq!(data_only.route(b"/halt", None), Route::Unavailable("halt"));
        assert_eq!(data_only.route(b"/bogus", None), Route::Unknown);
    }
}
