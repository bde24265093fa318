//! The control server's path: its URL (`tcp://HOST:PORT`, `ssl://HOST:PORT`, `unix://PATH`,
//! `unix://@NAME`), the connection (bounded in time; TLS for `ssl://`, see [`crate::tls`]), one
//! HTTP/1.0 request and its answer. Errors are the one-line messages pumactl prints (Ruby's
//! wording for a failed connect).

use std::io::{self, Read, Write};
use std::net::{SocketAddr, ToSocketAddrs};
use std::os::unix::ffi::OsStrExt;
use std::time::{Duration, Instant};

use socket2::{Domain, SockAddr, Socket, Type};

use crate::os_message;

/// The most of an answer read (thread backtraces of many threads fit easily).
const MAX_ANSWER: usize = 16 << 20;

/// Where the control server listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Target {
    Tcp {
        host: String,
        port: u16,
    },
    /// `ssl://`: TCP, then TLS (the server's certificate is not verified, as by pumactl).
    Tls {
        host: String,
        port: u16,
    },
    /// `path`'s bytes (a NUL first for an abstract name); `shown` as messages print it.
    Unix {
        path: Vec<u8>,
        shown: String,
    },
}

impl Target {
    pub(crate) fn parse(url: &str) -> Result<Target, String> {
        let bad = || format!("bad URI(is not URI?): {url:?}");
        let scheme = match url.split_once(':') {
            Some((scheme, _)) if is_scheme(scheme) => scheme,
            // A relative reference (no scheme) is a URI all the same.
            Some((before, _)) if !before.contains('/') => return Err(bad()),
            _ => "",
        };
        let rest = url[scheme.len()..].strip_prefix(':').unwrap_or(url);
        let after_slashes = rest.strip_prefix("//");
        // The query and fragment are no part of the address.
        let cut = |s: &'_ str| -> String { s.split(['?', '#']).next().unwrap_or("").to_string() };
        match (scheme, after_slashes) {
            ("tcp" | "ssl", Some(rest)) => {
                let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
                let (host, port) = split_host_port(authority).ok_or_else(bad)?;
                Ok(if scheme == "ssl" {
                    Target::Tls { host, port }
                } else {
                    Target::Tcp { host, port }
                })
            }
            ("unix", Some(rest)) => Ok(match rest.strip_prefix('@') {
                Some(name) => {
                    let name = cut(name);
                    let mut path = vec![0];
                    path.extend_from_slice(name.as_bytes());
                    Target::Unix {
                        path,
                        shown: format!("\\0{name}"),
                    }
                }
                None => {
                    let path = cut(rest);
                    Target::Unix {
                        path: path.as_bytes().to_vec(),
                        shown: path,
                    }
                }
            }),
            (scheme, _) => Err(format!("Invalid scheme: {scheme}")),
        }
    }

    /// A connected socket, or Ruby's message for the failure (`Connection refused -
    /// connect(2) for "127.0.0.1" port 9293`).
    pub(crate) fn connect(&self, timeout: Duration) -> Result<Connection, String> {
        let socket = self.connect_socket(timeout)?;
        match self {
            Target::Tls { host, .. } => crate::tls::handshake(socket, host, timeout),
            _ => Ok(Connection::Plain(socket)),
        }
    }

    fn connect_socket(&self, timeout: Duration) -> Result<Socket, String> {
        match self {
            Target::Tcp { host, port } | Target::Tls { host, port } => {
                let failed = |e: &io::Error| {
                    format!(
                        "{} - connect(2) for \"{host}\" port {port}",
                        connect_message(e)
                    )
                };
                let addrs: Vec<SocketAddr> = (host.as_str(), *port)
                    .to_socket_addrs()
                    .map_err(|e| format!("getaddrinfo: {}", resolve_message(&e)))?
                    .collect();
                let mut last = io::Error::from(io::ErrorKind::AddrNotAvailable);
                for addr in addrs {
                    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)
                        .map_err(|e| failed(&e))?;
                    match socket.connect_timeout(&addr.into(), timeout) {
                        Ok(()) => return Ok(socket),
                        Err(e) => last = e,
                    }
                }
                Err(failed(&last))
            }
            Target::Unix { path, shown } => {
                let failed =
                    |e: &io::Error| format!("{} - connect(2) for {shown}", connect_message(e));
                let addr =
                    SockAddr::unix(std::ffi::OsStr::from_bytes(path)).map_err(|e| failed(&e))?;
                let socket =
                    Socket::new(Domain::UNIX, Type::STREAM, None).map_err(|e| failed(&e))?;
                socket
                    .connect_timeout(&addr, timeout)
                    .map_err(|e| failed(&e))?;
                Ok(socket)
            }
        }
    }
}

fn is_scheme(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
}

/// `host:port`, `[v6]:port`, `host` (port 0: nothing listens there, as Ruby's nil port).
fn split_host_port(authority: &str) -> Option<(String, u16)> {
    let authority = authority.rsplit_once('@').map_or(authority, |(_, a)| a);
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (host, after) = v6.split_once(']')?;
        (host, after.strip_prefix(':'))
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    let port = match port {
        None | Some("") => 0,
        Some(p) if p.bytes().all(|b| b.is_ascii_digit()) => p.parse().ok()?,
        Some(_) => return None,
    };
    Some((host.to_string(), port))
}

/// The OS's words; a timeout of our own says what the OS would.
fn connect_message(e: &io::Error) -> String {
    if e.kind() == io::ErrorKind::TimedOut && e.raw_os_error().is_none() {
        return "Connection timed out".into();
    }
    os_message(e)
}

fn resolve_message(e: &io::Error) -> String {
    let text = e.to_string();
    text.strip_prefix("failed to lookup address information: ")
        .map_or(text.clone(), str::to_string)
}

/// The control server's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Answer {
    /// The status line's second word ("" when there is none).
    pub code: String,
    pub body: String,
}

/// A connection to the control server.
pub(crate) enum Connection {
    Plain(Socket),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, Socket>>),
}

impl Connection {
    fn socket(&self) -> &Socket {
        match self {
            Connection::Plain(s) => s,
            Connection::Tls(t) => t.get_ref(),
        }
    }

    fn set_write_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        self.socket().set_write_timeout(timeout)
    }

    fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        self.socket().set_read_timeout(timeout)
    }
}

impl Read for Connection {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Connection::Plain(s) => s.read(buf),
            Connection::Tls(t) => t.read(buf),
        }
    }
}

impl Write for Connection {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Connection::Plain(s) => s.write(buf),
            Connection::Tls(t) => t.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Connection::Plain(s) => s.flush(),
            Connection::Tls(t) => t.flush(),
        }
    }
}

/// Sends `GET <path> HTTP/1.0` and reads the answer: until the server closes, or until the
/// body its `content-length` announces is in; all of it within `timeout`.
pub(crate) fn exchange(
    mut socket: Connection,
    path: &str,
    timeout: Duration,
) -> Result<Answer, String> {
    let deadline = Instant::now() + timeout;
    let late = || {
        format!(
            "No answer from the control server within {} s",
            timeout.as_secs_f64()
        )
    };
    socket
        .set_write_timeout(Some(timeout))
        .and_then(|()| socket.write_all(format!("GET {path} HTTP/1.0\r\n\r\n").as_bytes()))
        .and_then(|()| socket.flush())
        .map_err(|e| match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => late(),
            _ => os_message(&e),
        })?;
    let mut data = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        if complete(&data) {
            break;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(late());
        }
        socket
            .set_read_timeout(Some(left))
            .map_err(|e| os_message(&e))?;
        match socket.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => data.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Err(late())
            }
            // What came before a reset still counts (pumactl would print the reset).
            Err(e) if data.is_empty() => return Err(os_message(&e)),
            Err(_) => break,
        }
        if data.len() > MAX_ANSWER {
            return Err(format!(
                "The control server's answer is over {} MiB",
                MAX_ANSWER >> 20
            ));
        }
    }
    parse_answer(&data)
}

/// The head and the whole body its `content-length` announces are in.
fn complete(data: &[u8]) -> bool {
    let Some(end) = find(data, b"\r\n\r\n") else {
        return false;
    };
    content_length(&data[..end]).is_some_and(|length| data.len() - (end + 4) >= length)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn content_length(head: &[u8]) -> Option<usize> {
    String::from_utf8_lossy(head)
        .split("\r\n")
        .skip(1)
        .find_map(|field| {
            let (name, value) = field.split_once(':')?;
            name.trim()
                .eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())?
        })
}

fn parse_answer(data: &[u8]) -> Result<Answer, String> {
    // pumactl looks at the CRLF-separated lines: none that is not empty is no answer.
    if data
        .split(|b| *b == b'\n')
        .all(|l| l.is_empty() || l == b"\r")
    {
        return Err("Server sent empty response".into());
    }
    let text = String::from_utf8_lossy(data);
    let status_line = text.split("\r\n").find(|l| !l.is_empty()).unwrap_or("");
    let code = status_line.split(' ').nth(1).unwrap_or("").to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    if content_length(head.as_bytes()).is_some_and(|length| body.len() < length) {
        return Err("Server closed connection before responding".into());
    }
    Ok(Answer {
        code,
        body: body.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tcp(host: &str, port: u16) -> Target {
        Target::Tcp {
            host: host.into(),
            port,
        }
    }

    #[test]
    fn urls() {
        assert_eq!(
            Target::parse("tcp://127.0.0.1:9293"),
            Ok(tcp("127.0.0.1", 9293))
        );
        assert_eq!(Target::parse("tcp://[::1]:9293/x?y"), Ok(tcp("::1", 9293)));
        assert_eq!(Target::parse("tcp://localhost"), Ok(tcp("localhost", 0)));
        assert_eq!(
            Target::parse("unix:///tmp/c.sock"),
            Ok(Target::Unix {
                path: b"/tmp/c.sock".to_vec(),
                shown: "/tmp/c.sock".into()
            })
        );
        assert_eq!(
            Target::parse("unix://@ctl?x=1"),
            Ok(Target::Unix {
                path: b"\0ctl".to_vec(),
                shown: "\\0ctl".into()
            })
        );
        assert_eq!(
            Target::parse("unix://rel/c.sock"),
            Ok(Target::Unix {
                path: b"rel/c.sock".to_vec(),
                shown: "rel/c.sock".into()
            })
        );
        for (url, message) in [
            ("foo://x", "Invalid scheme: foo"),
            ("auto", "Invalid scheme: "),
            ("localhost:9293", "Invalid scheme: localhost"),
            ("127.0.0.1:1", "bad URI(is not URI?): \"127.0.0.1:1\""),
            (":bad", "bad URI(is not URI?): \":bad\""),
            ("tcp://h:port", "bad URI(is not URI?): \"tcp://h:port\""),
        ] {
            assert_eq!(Target::parse(url), Err(message.to_string()), "{url}");
        }
        assert_eq!(
            Target::parse("ssl://127.0.0.1:9293?key=k.pem&cert=c.pem"),
            Ok(Target::Tls {
                host: "127.0.0.1".into(),
                port: 9293
            })
        );
    }

    #[test]
    fn answers() {
        let ok = parse_answer(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}");
        assert_eq!(
            ok,
            Ok(Answer {
                code: "200".into(),
                body: "{}".into()
            })
        );
        assert_eq!(
            parse_answer(b""),
            Err("Server sent empty response".to_string())
        );
        assert_eq!(
            parse_answer(b"\r\n\r\n"),
            Err("Server sent empty response".to_string())
        );
        assert_eq!(
            parse_answer(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n{}"),
            Err("Server closed connection before responding".to_string())
        );
        assert_eq!(parse_answer(b"garbage").map(|a| a.code), Ok(String::new()));
        let multi = parse_answer(b"HTTP/1.0 404 Not Found\r\n\r\nline one\nline two");
        assert_eq!(multi.map(|a| a.body), Ok("line one\nline two".to_string()));
        assert!(complete(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nab"));
        assert!(!complete(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nab"));
        assert!(
            !complete(b"HTTP/1.1 200 OK\r\n\r\nab"),
            "no length: read to the close"
        );
    }
}
