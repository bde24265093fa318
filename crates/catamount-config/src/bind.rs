//! Bind URLs: where the server listens, in Puma's URL syntax.
//!
//! Supported now: `tcp://HOST:PORT` (IPv6 literals in brackets, `localhost` meaning every loopback
//! address) with `?backlog=N` and `?low_latency=true|false`, and `unix:///path` with `?backlog=N`,
//! `?umask=0177` and `?mode=0660`, and `ssl://HOST:PORT?cert=..&key=..` ([`BindUrl::parse_tls`],
//! the TLS options in `tls.rs`).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::tls::TlsOptions;

/// The listen(2) backlog when the URL does not say (Puma's default too).
pub const DEFAULT_BACKLOG: u32 = 1024;

/// A parsed bind URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindUrl {
    pub kind: BindKind,
    /// listen(2) backlog; the kernel caps it at `net.core.somaxconn`.
    pub backlog: u32,
    /// The URL as the user wrote it, for log lines and error messages.
    pub original: String,
    /// Where a config file gave it (`file:line`, [`Layer::set_at`](crate::options::Layer::set_at)),
    /// for the boot's error when it cannot be opened (a certificate that will not load is found
    /// only then); None from the command line.
    pub origin: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BindKind {
    Tcp {
        /// `localhost` expands to more than one address.
        hosts: Vec<IpAddr>,
        port: u16,
        /// TCP_NODELAY on the listener. Accepted sockets always get TCP_NODELAY (we write whole
        /// responses, so Nagle only adds latency); the flag is kept for Puma compatibility.
        low_latency: bool,
    },
    Unix {
        path: String,
        /// umask applied while the socket file is created.
        umask: Option<u32>,
        /// chmod applied after the socket file is created.
        mode: Option<u32>,
    },
    /// `ssl://`: a TCP listener whose connections are TLS.
    Tls {
        hosts: Vec<IpAddr>,
        port: u16,
        /// On unless `low_latency=false` (Puma's TLS listeners default to it).
        low_latency: bool,
        tls: Box<TlsOptions>,
    },
}

/// A parsed `ssl://` bind ([`BindUrl::parse_tls`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsBind {
    pub hosts: Vec<IpAddr>,
    pub port: u16,
    pub backlog: u32,
    pub low_latency: bool,
    pub tls: TlsOptions,
}

/// Why a bind URL was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindError {
    pub url: String,
    pub reason: String,
}

impl fmt::Display for BindError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid bind URL {:?}: {}", self.url, self.reason)
    }
}

impl std::error::Error for BindError {}

impl BindUrl {
    /// Parses a bind URL such as `tcp://0.0.0.0:9292` or `unix:///tmp/app.sock?umask=0077`.
    pub fn parse(url: &str) -> Result<BindUrl, BindError> {
        if url.starts_with("ssl://") {
            let t = BindUrl::parse_tls(url)?;
            return Ok(BindUrl {
                kind: BindKind::Tls {
                    hosts: t.hosts,
                    port: t.port,
                    low_latency: t.low_latency,
                    tls: Box::new(t.tls),
                },
                backlog: t.backlog,
                original: url.to_string(),
                origin: None,
            });
        }
        let fail = |reason: &str| BindError {
            url: url.to_string(),
            reason: reason.to_string(),
        };
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| fail("expected tcp://HOST:PORT or unix://PATH"))?;
        let (location, query) = match rest.split_once('?') {
            Some((loc, q)) => (loc, Some(q)),
            None => (rest, None),
        };
        let params = parse_query(query).map_err(|r| fail(&r))?;
        let mut backlog = DEFAULT_BACKLOG;
        let mut low_latency = false;
        let mut umask = None;
        let mut mode = None;
        for (key, value) in &params {
            match (scheme, key.as_str()) {
                (_, "backlog") => {
                    backlog = value
                        .parse::<u32>()
                        .ok()
                        .filter(|b| *b > 0)
                        .ok_or_else(|| fail("backlog must be a positive integer"))?;
                }
                ("tcp", "low_latency") => low_latency = value != "false",
                ("unix", "umask") => umask = Some(parse_octal(value).map_err(|r| fail(&r))?),
                ("unix", "mode") => mode = Some(parse_octal(value).map_err(|r| fail(&r))?),
                _ => return Err(fail(&format!("unknown parameter {key:?} for {scheme}://"))),
            }
        }
        let kind = match scheme {
            "tcp" => {
                let (hosts, port) = parse_host_port(location).map_err(|r| fail(&r))?;
                BindKind::Tcp {
                    hosts,
                    port,
                    low_latency,
                }
            }
            "unix" => {
                if location.is_empty() {
                    return Err(fail("unix:// needs a socket path"));
                }
                BindKind::Unix {
                    path: location.replace("%20", " "),
                    umask,
                    mode,
                }
            }
            _ => return Err(fail("unknown scheme (expected tcp://, unix:// or ssl://)")),
        };
        Ok(BindUrl {
            kind,
            backlog,
            original: url.to_string(),
            origin: None,
        })
    }

    /// Parses and checks an `ssl://HOST:PORT?...` URL: the host and port as for `tcp://`,
    /// `backlog`, `low_latency` (on unless `false`, as Puma's TLS listeners), and the TLS
    /// options (values `%`-decoded, as Puma's `ssl_bind` escapes paths into the URL).
    pub fn parse_tls(url: &str) -> Result<TlsBind, BindError> {
        let fail = |reason: String| BindError {
            url: url.to_string(),
            reason,
        };
        let rest = url
            .strip_prefix("ssl://")
            .ok_or_else(|| fail("expected ssl://HOST:PORT?cert=PATH&key=PATH".into()))?;
        let (location, query) = match rest.split_once('?') {
            Some((loc, q)) => (loc, Some(q)),
            None => (rest, None),
        };
        // A path (`ssl:///run/app.sock`, `ssl://@name`): Puma cannot serve TLS there either
        // (it fails with a NoMethodError), so say what is missing rather than "HOST:PORT".
        if location.starts_with('/') || location.starts_with('@') || location.starts_with("unix:") {
            return Err(fail(
                "TLS on a UNIX socket is not supported: ssl:// takes HOST:PORT (serve the socket with unix:// and terminate TLS in front of it)".into(),
            ));
        }
        let (hosts, port) = parse_host_port(location).map_err(&fail)?;
        let mut backlog = DEFAULT_BACKLOG;
        let mut low_latency = true;
        let mut tls_params = Vec::new();
        for (key, value) in parse_query(query).map_err(&fail)? {
            let value = percent_decoded(&value).map_err(|r| fail(format!("{key}: {r}")))?;
            match key.as_str() {
                "backlog" => {
                    backlog = value
                        .parse::<u32>()
                        .ok()
                        .filter(|b| *b > 0)
                        .ok_or_else(|| fail("backlog must be a positive integer".into()))?;
                }
                "low_latency" => low_latency = value != "false",
                _ => tls_params.push((key, value)),
            }
        }
        let tls = TlsOptions::from_params(&tls_params).map_err(&fail)?;
        Ok(TlsBind {
            hosts,
            port,
            backlog,
            low_latency,
            tls,
        })
    }

    /// A TCP bind for `port` on `host` (the DSL's `port` and the `-p` flag).
    pub fn tcp(host: &str, port: u16) -> Result<BindUrl, BindError> {
        BindUrl::parse(&format!("tcp://{}:{port}", bracket_if_v6(host)))
    }
}

/// Puts brackets around a bare IPv6 literal so it can be joined with a port.
pub fn bracket_if_v6(host: &str) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host.to_string()
    }
}

fn parse_query(query: Option<&str>) -> Result<Vec<(String, String)>, String> {
    let Some(query) = query else {
        return Ok(Vec::new());
    };
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| match pair.split_once('=') {
            Some((k, v)) => Ok((k.to_string(), v.to_string())),
            None => Err(format!("parameter {pair:?} has no value")),
        })
        .collect()
}

/// `%XX` escapes decoded (a `+` stays a `+`: these are paths and commands, not form data).
fn percent_decoded(value: &str) -> Result<String, String> {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| format!("{value:?} has a broken %-escape"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(b);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| format!("{value:?} is not UTF-8 once decoded"))
}

fn parse_octal(value: &str) -> Result<u32, String> {
    u32::from_str_radix(value, 8)
        .ok()
        .filter(|m| *m <= 0o7777)
        .ok_or_else(|| format!("{value:?} is not an octal file mode"))
}

fn parse_host_port(location: &str) -> Result<(Vec<IpAddr>, u16), String> {
    let (host, port) = if let Some(rest) = location.strip_prefix('[') {
        let (host, after) = rest.split_once(']').ok_or("unclosed '[' in IPv6 address")?;
        let port = after
            .strip_prefix(':')
            .ok_or("expected :PORT after the IPv6 address")?;
        (host, port)
    } else {
        location
            .rsplit_once(':')
            .ok_or("expected HOST:PORT (e.g. tcp://0.0.0.0:9292)")?
    };
    let port: u16 = port
        .parse()
        .map_err(|_| format!("{port:?} is not a port number (0-65535)"))?;
    let hosts = match host {
        "localhost" => vec![
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(Ipv6Addr::LOCALHOST),
        ],
        "" => return Err("missing host".into()),
        _ => vec![host.parse::<IpAddr>().map_err(|_| {
            format!(
                "{host:?} is not an IP address (host names other than localhost are not resolved)"
            )
        })?],
    };
    Ok((hosts, port))
}

/// Whether this machine has a non-loopback IPv6 address, from the text of `/proc/net/if_inet6`.
/// Puma 8 binds `[::]` by default in that case (a dual-stack socket that also takes IPv4).
pub fn has_non_loopback_ipv6(if_inet6: &str) -> bool {
    if_inet6.lines().any(|line| {
        let mut fields = line.split_whitespace();
        let address = fields.next().unwrap_or("");
        let device = fields.last().unwrap_or("lo");
        !address.is_empty() && address != "00000000000000000000000000000001" && device != "lo"
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tcp_ipv4() {
        let b = BindUrl::parse("tcp://127.0.0.1:9292").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            b.kind,
            BindKind::Tcp {
                hosts: vec![IpAddr::V4(Ipv4Addr::LOCALHOST)],
                port: 9292,
                low_latency: false
            }
        );
        assert_eq!(b.backlog, DEFAULT_BACKLOG);
    }

    #[test]
    fn tcp_ipv6_and_params() {
        let b = BindUrl::parse("tcp://[::1]:0?backlog=16&low_latency=true")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(b.backlog, 16);
        assert!(matches!(
            b.kind,
            BindKind::Tcp {
                port: 0,
                low_latency: true,
                ..
            }
        ));
    }

    #[test]
    fn localhost_expands() {
        let b = BindUrl::parse("tcp://localhost:3000").unwrap_or_else(|e| panic!("{e}"));
        let BindKind::Tcp { hosts, .. } = b.kind else {
            panic!("not tcp")
        };
        assert_eq!(hosts.len(), 2);
    }

    #[test]
    fn unix_with_mode() {
        let b = BindUrl::parse("unix:///tmp/a%20b.sock?umask=0077&mode=0660")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            b.kind,
            BindKind::Unix {
                path: "/tmp/a b.sock".into(),
                umask: Some(0o77),
                mode: Some(0o660)
            }
        );
    }

    #[test]
    fn bad_urls_say_why() {
        for (url, needle) in [
            ("0.0.0.0:9292", "expected tcp://"),
            ("http://0.0.0.0:9292", "unknown scheme"),
            ("tcp://0.0.0.0", "HOST:PORT"),
            ("tcp://0.0.0.0:99999", "not a port"),
            ("tcp://example.com:80", "not an IP address"),
            ("tcp://[::1:80", "unclosed"),
            ("tcp://1.2.3.4:80?backlog=x", "backlog"),
            ("tcp://1.2.3.4:80?umask=1", "unknown parameter"),
            ("unix://", "needs a socket path"),
            ("unix:///x?mode=9", "octal"),
        ] {
            let err = BindUrl::parse(url)
                .err()
                .unwrap_or_else(|| panic!("{url} parsed"));
            assert!(err.to_string().contains(needle), "{url}: {err}");
        }
    }

    #[test]
    fn ssl_urls() {
        let b = BindUrl::parse_tls(
            "ssl://[::1]:9443?cert=%2Fetc%2Fmy%20certs%2Fa.crt&key=/k.pem&backlog=64&verify_mode=none",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(b.hosts, vec![IpAddr::V6(Ipv6Addr::LOCALHOST)]);
        assert_eq!((b.port, b.backlog, b.low_latency), (9443, 64, true));
        assert_eq!(
            b.tls.cert,
            Some(crate::tls::Pem::File("/etc/my certs/a.crt".into()))
        );
        for (url, needle) in [
            ("ssl://0.0.0.0:443?cert=c", "needs its key"),
            ("ssl://0.0.0.0?cert=c&key=k", "HOST:PORT"),
            (
                "ssl:///run/app.sock?cert=c&key=k",
                "UNIX socket is not supported",
            ),
            ("ssl://@app?cert=c&key=k", "UNIX socket is not supported"),
            ("ssl://unix:/run/app.sock", "UNIX socket is not supported"),
            ("ssl://0.0.0.0:443?cert=%zz&key=k", "broken %-escape"),
            ("ssl://0.0.0.0:443?umask=1", "unknown parameter \"umask\""),
            ("tcp://0.0.0.0:443", "expected ssl://"),
        ] {
            let err = BindUrl::parse_tls(url)
                .err()
                .unwrap_or_else(|| panic!("{url} parsed"));
            assert!(err.to_string().contains(needle), "{url}: {err}");
        }
    }

    #[test]
    fn ipv6_detection() {
        let lo = "00000000000000000000000000000001 01 80 10 80       lo\n";
        assert!(!has_non_loopback_ipv6(lo));
        let eth = "fe800000000000000000000000000001 02 40 20 80     eth0\n";
        assert!(has_non_loopback_ipv6(&format!("{lo}{eth}")));
        assert!(!has_non_loopback_ipv6(""));
    }
}
