//! Control URLs and binding them: `auto` (a UNIX socket in the temp dir named after the pid and
//! a random part), `tcp://HOST:PORT` (port 0: one the OS picks), `ssl://HOST:PORT?key=..&cert=..`
//! (TCP whose connections are TLS: the parameters and the rustls configuration exactly as for an
//! app's `ssl://` bind), `unix:///path` and `unix://@name` (Linux's abstract namespace: no
//! file). The URL syntax is the bind URLs' (`catamount_config::BindUrl`).

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use catamount_config::{bind::bracket_if_v6, BindKind, BindUrl};
use mio::net::{TcpListener, UnixListener};

/// Why a control URL could not be listened on; its one line names the URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlError {
    pub url: String,
    /// Says what is wrong, continuing "Control server address '<url>' ...".
    pub reason: String,
}

impl fmt::Display for ControlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Control server address '{}' {}", self.url, self.reason)
    }
}

impl std::error::Error for ControlError {}

/// A bound control listener.
#[derive(Debug)]
pub enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener),
}

/// What binding gave: the listener, the URL clients use, the socket file this process owns.
#[derive(Debug)]
pub struct Bound {
    pub listener: Listener,
    pub url: String,
    /// The file of a `unix:///path` socket (not for abstract names); unlinked by `close`.
    pub socket_file: Option<PathBuf>,
    /// `ssl://`: what its connections are served with.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Lines for the boot's log (the development certificate's path, suites rustls lacks).
    pub notes: Vec<String>,
}

/// Binds `url`. `development`: where an `ssl://` URL without `cert` and `key` may find the
/// self-signed development certificate (`None`: such a URL is refused, as outside development).
pub fn bind(url: &str, development: Option<&Path>) -> Result<Bound, ControlError> {
    let fail = |reason: String| ControlError {
        url: url.to_string(),
        reason,
    };
    let io_fail = |e: io::Error| {
        fail(if e.kind() == io::ErrorKind::AddrInUse {
            "is already in use".to_string()
        } else {
            format!("cannot be bound: {e}")
        })
    };
    if url == "auto" {
        let path = auto_path().map_err(io_fail)?;
        return bind_unix_path(&path, None).map_err(io_fail);
    }
    let parsed = BindUrl::parse(url).map_err(|e| fail(format!("is invalid: {}", e.reason)))?;
    match parsed.kind {
        BindKind::Tcp { hosts, port, .. } => {
            let Some(host) = hosts.first().copied() else {
                return Err(fail("is invalid: no host".into()));
            };
            bind_tcp(url, host, port, None).map_err(io_fail)
        }
        BindKind::Tls {
            hosts, port, tls, ..
        } => {
            let Some(host) = hosts.first().copied() else {
                return Err(fail("is invalid: no host".into()));
            };
            // Files, keys and validity are read before the socket is bound, so a refused
            // certificate never leaves a port taken.
            let built = catamount_tls::server_config(&tls, development)
                .map_err(|e| fail(format!("cannot serve TLS: {e}")))?;
            let mut bound = bind_tcp(url, host, port, Some(built.config)).map_err(io_fail)?;
            bound.notes = built.notes;
            Ok(bound)
        }
        BindKind::Unix { path, umask, mode } => {
            if let Some(name) = path.strip_prefix('@') {
                if name.is_empty() {
                    return Err(fail("is invalid: an abstract socket needs a name".into()));
                }
                bind_abstract(name).map_err(io_fail)
            } else {
                let mode = mode.or(umask.map(|u| 0o777 & !u));
                bind_unix_path(Path::new(&path), mode).map_err(|e| match e.kind() {
                    io::ErrorKind::AlreadyExists => fail(e.to_string()),
                    _ => io_fail(e),
                })
            }
        }
    }
}

/// A TCP listener; its URL with the port the OS chose and the host as written (`localhost`
/// kept). An `ssl://` URL loses its parameters: clients need only the address.
fn bind_tcp(
    url: &str,
    host: std::net::IpAddr,
    port: u16,
    tls: Option<Arc<rustls::ServerConfig>>,
) -> io::Result<Bound> {
    let listener = TcpListener::bind(SocketAddr::new(host, port))?;
    let port = listener.local_addr()?.port();
    let written = if written_host(url) == Some("localhost") {
        "localhost".to_string()
    } else {
        bracket_if_v6(&host.to_string())
    };
    let scheme = if tls.is_some() { "ssl" } else { "tcp" };
    Ok(Bound {
        listener: Listener::Tcp(listener),
        url: format!("{scheme}://{written}:{port}"),
        socket_file: None,
        tls,
        notes: Vec::new(),
    })
}

/// The host of a `tcp://HOST:PORT` or `ssl://HOST:PORT` URL as written.
fn written_host(url: &str) -> Option<&str> {
    let rest = url
        .strip_prefix("tcp://")
        .or_else(|| url.strip_prefix("ssl://"))?;
    let location = rest.split('?').next()?;
    location.rsplit_once(':').map(|(h, _)| h)
}

/// `$TMPDIR` (or /tmp)`/catamount-control-<pid>-<random>.sock`.
fn auto_path() -> io::Result<PathBuf> {
    let dir = std::env::var_os("TMPDIR")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/tmp"));
    let random = crate::auth::hex(&crate::auth::random_bytes(8)?);
    Ok(dir.join(format!(
        "catamount-control-{}-{random}.sock",
        std::process::id()
    )))
}

/// Binds a socket file. A file already there is taken over only when it is a socket nothing
/// answers on (left by a process that died); a live one is "already in use"; anything that is
/// not a socket is left alone.
fn bind_unix_path(path: &Path, mode: Option<u32>) -> io::Result<Bound> {
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                "exists and is not a socket",
            ));
        }
        // Non-blocking: a live server with a full backlog answers EAGAIN instead of hanging us.
        match mio::net::UnixStream::connect(path) {
            Err(e) if e.raw_os_error() == Some(libc::ECONNREFUSED) => {
                std::fs::remove_file(path)?;
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            _ => return Err(io::Error::from(io::ErrorKind::AddrInUse)),
        }
    }
    let listener = UnixListener::bind(path)?;
    if let Some(mode) = mode {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    }
    Ok(Bound {
        listener: Listener::Unix(listener),
        url: format!("unix://{}", path.display()),
        socket_file: Some(path.to_path_buf()),
        tls: None,
        notes: Vec::new(),
    })
}

fn bind_abstract(name: &str) -> io::Result<Bound> {
    use std::os::linux::net::SocketAddrExt;
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
    let listener = UnixListener::bind_addr(&addr)?;
    Ok(Bound {
        listener: Listener::Unix(listener),
        url: format!("unix://@{name}"),
        socket_file: None,
        tls: None,
        notes: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(url: &str) -> String {
        match bind(url, None) {
            Ok(b) => panic!("{url} bound as {}", b.url),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn refusals_name_the_url() {
        assert_eq!(
            err("ssl://127.0.0.1:0"),
            "Control server address 'ssl://127.0.0.1:0' cannot serve TLS: needs cert and key (a self-signed development certificate is made only in the development and test environments)"
        );
        // The certificate is read before the port is bound; its refusal names the URL.
        let missing = err("ssl://127.0.0.1:0?cert=/nonexistent/c.pem&key=/nonexistent/k.pem");
        assert!(
            missing.starts_with("Control server address 'ssl://127.0.0.1:0?cert=/nonexistent/c.pem&key=/nonexistent/k.pem' cannot serve TLS: ")
                && missing.contains("/nonexistent/c.pem: "),
            "{missing}"
        );
        assert!(err("ssl://127.0.0.1:0?bogus=1")
            .starts_with("Control server address 'ssl://127.0.0.1:0?bogus=1' is invalid: "));
        assert!(err("http://x").starts_with("Control server address 'http://x' is invalid: "));
        assert!(err("unix://@").contains("needs a name"));
    }

    #[test]
    fn tcp_port_zero_resolves() {
        let b = bind("tcp://127.0.0.1:0", None).unwrap_or_else(|e| panic!("{e}"));
        assert!(b.url.starts_with("tcp://127.0.0.1:"));
        assert!(!b.url.ends_with(":0"));
        assert!(b.socket_file.is_none());
        let again = err(&b.url);
        assert_eq!(
            again,
            format!("Control server address '{}' is already in use", b.url)
        );
    }

    #[test]
    fn ssl_resolves_its_port_and_drops_its_parameters() {
        let dir = std::env::temp_dir().join(format!("cc-listen-tls-{}", std::process::id()));
        let b = bind("ssl://localhost:0?backlog=8", Some(&dir)).unwrap_or_else(|e| panic!("{e}"));
        assert!(b.url.starts_with("ssl://localhost:"), "{}", b.url);
        assert!(!b.url.ends_with(":0"));
        assert!(b.tls.is_some());
        assert!(
            b.notes
                .iter()
                .any(|n| n.contains("development certificate")),
            "{:?}",
            b.notes
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn auto_is_a_socket_file_in_the_temp_dir() {
        let b = bind("auto", None).unwrap_or_else(|e| panic!("{e}"));
        let path = b.socket_file.clone().unwrap_or_default();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        assert!(name.starts_with(&format!("catamount-control-{}-", std::process::id())));
        assert_eq!(b.url, format!("unix://{}", path.display()));
        assert!(path.exists());
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn a_live_socket_is_in_use_a_stale_one_is_replaced_a_file_is_kept() {
        let dir = std::env::temp_dir().join(format!("cc-listen-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join("c.sock");
        let url = format!("unix://{}", path.display());
        let live = bind(&url, None).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            err(&url),
            format!("Control server address '{url}' is already in use")
        );
        drop(live); // the file stays: stale
        assert!(path.exists());
        let again = bind(&url, None).unwrap_or_else(|e| panic!("{e}"));
        drop(again);
        let _ = std::fs::remove_file(&path);
        std::fs::write(&path, "data").unwrap_or_else(|e| panic!("{e}"));
        assert!(err(&url).ends_with("exists and is not a socket"));
        assert_eq!(std::fs::read_to_string(&path).unwrap_or_default(), "data");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn abstract_names_have_no_file() {
        let name = format!("cc-abstract-{}", std::process::id());
        let b = bind(&format!("unix://@{name}"), None).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(b.url, format!("unix://@{name}"));
        assert!(b.socket_file.is_none());
        assert!(err(&format!("unix://@{name}")).ends_with("is already in use"));
    }
}
