//! Opening the listening sockets described by bind URLs.
//!
//! Binding happens before the app is loaded and before any thread starts, so a port in use or a
//! bad path fails the boot with one clear line and nothing half-started. The sockets are plain
//! std listeners in non-blocking mode; the reactor adopts them once it runs.
//!
//! A socket handed over by the process before this one (a hot restart's `PUMA_INHERIT_n`, or
//! systemd's `LISTEN_FDS`) is used instead of binding anew when it matches a bind, so the
//! connections waiting in its backlog are served rather than refused.

use std::fmt;
use std::io;
use std::net::IpAddr;
use std::net::SocketAddr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use catamount_config::options::ActivatedSockets;
use catamount_config::{BindKind, BindUrl};
use socket2::{Domain, SockAddr, Socket, Type};

/// One listening socket.
#[derive(Debug)]
pub enum Listener {
    Tcp(std::net::TcpListener),
    Unix(UnixListener),
}

/// A listening socket with what the logs and the Rack env need to know about it.
#[derive(Debug)]
pub struct BoundListener {
    pub listener: Listener,
    /// `http://127.0.0.1:9292` or `unix:///tmp/app.sock`, as printed in "Listening on ...".
    pub display: String,
    /// The socket file this process owns, removed again at shutdown.
    pub unix_path: Option<PathBuf>,
    /// The bind URL it serves, as configured (`tcp://0.0.0.0:9292`): what a hot restart passes
    /// on with the socket, so the next process matches it to the same bind.
    pub bind: String,
    /// Handed over by the previous process rather than bound by this one.
    pub inherited: bool,
    /// One of systemd's sockets (`LISTEN_FDS`) that no bind asked for, served because of
    /// `bind_to_activated_sockets`: a hot restart hands it on as systemd's again (no bind of
    /// the next process would match it), and its socket file is systemd's, never removed here
    /// (`unix_path` is None).
    pub activated: bool,
    /// A TLS listener's configuration: its connections are TLS sessions.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// What `tls` was built from, to build it again ([`reload_tls`]).
    pub tls_options: Option<Box<catamount_config::tls::TlsOptions>>,
}

/// Builds every TLS listener's configuration again from its options, reading certificates and
/// keys anew: a cluster worker does it as it boots, so the workers of a phased restart serve a
/// renewed certificate (the master read the old one when it bound).
///
/// A listener whose certificate or key no longer loads (a renewal gone wrong: a half-written
/// file, a key that does not match, an expired certificate) keeps the configuration it had, and
/// the problem is returned, one line per listener, for the worker to log. Failing the boot
/// instead would leave the worker restarting in a loop, one worker fewer, the phased restart
/// stalled, and the others still serving the old certificate anyway.
pub fn reload_tls(listeners: &mut [BoundListener]) -> Vec<String> {
    let mut problems = Vec::new();
    for l in listeners {
        if let Some(opts) = &l.tls_options {
            match tls_config(&l.bind, opts) {
                Ok(config) => l.tls = Some(config),
                Err(e) => problems.push(format!("{}: {e}", l.bind)),
            }
        }
    }
    problems
}

/// A listening socket handed over by the process that ran before this one.
#[derive(Debug)]
pub struct InheritedSocket {
    /// The bind URL the previous process opened it for (hot restart); None from systemd.
    pub url: Option<String>,
    pub fd: OwnedFd,
}

impl AsFd for Listener {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            Listener::Tcp(l) => l.as_fd(),
            Listener::Unix(l) => l.as_fd(),
        }
    }
}

impl BoundListener {
    /// The same socket under a second descriptor (close-on-exec, like every descriptor here),
    /// described the same way: what a stopped server keeps so it can serve the socket again (a
    /// hot restart, a worker that forks).
    pub fn try_clone(&self) -> io::Result<BoundListener> {
        let listener = match &self.listener {
            Listener::Tcp(l) => Listener::Tcp(l.try_clone()?),
            Listener::Unix(l) => Listener::Unix(l.try_clone()?),
        };
        Ok(BoundListener {
            listener,
            display: self.display.clone(),
            unix_path: self.unix_path.clone(),
            bind: self.bind.clone(),
            inherited: self.inherited,
            activated: self.activated,
            tls: self.tls.clone(),
            tls_options: self.tls_options.clone(),
        })
    }
}

/// Why a listener could not be opened.
#[derive(Debug)]
pub struct ListenError {
    pub url: String,
    pub reason: String,
    /// The config file's `file:line` that gave the bind, if one did.
    pub origin: Option<String>,
}

impl fmt::Display for ListenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(origin) = &self.origin {
            write!(f, "{origin}: ")?;
        }
        write!(f, "could not listen on {}: {}", self.url, self.reason)
    }
}

impl std::error::Error for ListenError {}

/// Opens every bind in order; on the first failure, closes what was opened and says which failed.
pub fn bind_all(binds: &[BindUrl]) -> Result<Vec<BoundListener>, ListenError> {
    bind_all_inheriting(binds, Vec::new(), None)
}

/// [`bind_all`], using a matching inherited socket instead of binding wherever there is one.
///
/// A TCP socket matches a bind when its address is one of the bind's hosts and either its port
/// is the bind's or it was inherited under the bind's exact URL (so `tcp://127.0.0.1:0` keeps its
/// port across a hot restart). A UNIX socket matches a bind of the same path. With `activated`
/// (`bind_to_activated_sockets`), systemd's sockets no bind matched are served as well (`Also`),
/// or instead of every configured bind (`Only`). Inherited sockets nothing uses are closed, and
/// their socket files removed.
pub fn bind_all_inheriting(
    binds: &[BindUrl],
    inherited: Vec<InheritedSocket>,
    activated: Option<ActivatedSockets>,
) -> Result<Vec<BoundListener>, ListenError> {
    let mut pool: Vec<Adoptable> = inherited.into_iter().filter_map(Adoptable::new).collect();
    let mut out = Vec::new();
    let binds = if activated == Some(ActivatedSockets::Only) {
        &[][..]
    } else {
        binds
    };
    for bind in binds {
        match bind_one(bind, &mut pool, &mut out) {
            Ok(()) => {}
            Err(reason) => {
                remove_socket_files(&out);
                return Err(ListenError {
                    url: bind.original.clone(),
                    reason,
                    origin: bind.origin.clone(),
                });
            }
        }
    }
    for socket in pool {
        if activated.is_some() && socket.url.is_none() {
            out.push(socket.into_listener(None));
        } else if let Local::Unix(path) = &socket.local {
            let _ = std::fs::remove_file(path);
        }
    }
    Ok(out)
}

/// An inherited socket and the address it listens on.
struct Adoptable {
    url: Option<String>,
    local: Local,
    socket: Socket,
}

enum Local {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

impl Adoptable {
    /// None (and the descriptor closed) for anything that is not a listening TCP or UNIX
    /// stream socket with an address.
    fn new(inherited: InheritedSocket) -> Option<Adoptable> {
        let socket = Socket::from(inherited.fd);
        if !matches!(socket.r#type(), Ok(t) if t == Type::STREAM)
            || !matches!(socket.is_listener(), Ok(true))
        {
            return None;
        }
        let addr = socket.local_addr().ok()?;
        let local = match (addr.as_socket(), addr.as_pathname()) {
            (Some(a), _) => Local::Tcp(a),
            (None, Some(p)) => Local::Unix(p.to_path_buf()),
            _ => return None,
        };
        socket.set_nonblocking(true).ok()?;
        Some(Adoptable {
            url: inherited.url,
            local,
            socket,
        })
    }

    fn matches_tcp(&self, bind: &BindUrl, host: IpAddr, port: u16) -> bool {
        match &self.local {
            Local::Tcp(a) => {
                a.ip() == host
                    && (a.port() == port || self.url.as_deref() == Some(bind.original.as_str()))
            }
            Local::Unix(_) => false,
        }
    }

    fn matches_unix(&self, path: &Path) -> bool {
        matches!(&self.local, Local::Unix(p) if p == path)
    }

    /// Serves it for `bind`, or, without one, as an activated socket of systemd's.
    fn into_listener(self, bind: Option<&BindUrl>) -> BoundListener {
        let activated = bind.is_none();
        let bind = bind.map(|b| b.original.clone());
        match self.local {
            Local::Tcp(a) => BoundListener {
                display: format!("http://{a}"),
                listener: Listener::Tcp(self.socket.into()),
                unix_path: None,
                bind: bind.unwrap_or_else(|| format!("tcp://{a}")),
                inherited: true,
                activated,
                tls: None,
                tls_options: None,
            },
            Local::Unix(p) => BoundListener {
                display: format!("unix://{}", p.display()),
                listener: Listener::Unix(self.socket.into()),
                bind: bind.unwrap_or_else(|| format!("unix://{}", p.display())),
                unix_path: (!activated).then_some(p),
                inherited: true,
                activated,
                tls: None,
                tls_options: None,
            },
        }
    }
}

/// Takes the first inherited socket `pick` accepts out of `pool`.
fn take(pool: &mut Vec<Adoptable>, pick: impl Fn(&Adoptable) -> bool) -> Option<Adoptable> {
    let at = pool.iter().position(pick)?;
    Some(pool.remove(at))
}

/// Removes the UNIX socket files these listeners created.
pub fn remove_socket_files(listeners: &[BoundListener]) {
    for l in listeners {
        if let Some(path) = &l.unix_path {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Where the self-signed development certificate may be kept; None (the default) outside the
/// development and test environments, where a TLS bind without `cert` and `key` is refused.
static DEVELOPMENT_CERTIFICATES: std::sync::Mutex<Option<PathBuf>> = std::sync::Mutex::new(None);

/// Allows (`Some(cache directory)`) or forbids the development certificate for TLS binds made
/// from now on in this process.
pub fn allow_development_certificate(dir: Option<PathBuf>) {
    *DEVELOPMENT_CERTIFICATES
        .lock()
        .unwrap_or_else(|p| p.into_inner()) = dir;
}

/// A TLS bind's rustls configuration (read now: files, keys, validity), its notes logged
/// naming the bind (several TLS binds may each have their own).
fn tls_config(
    bind: &str,
    opts: &catamount_config::tls::TlsOptions,
) -> Result<Arc<rustls::ServerConfig>, String> {
    let dir = DEVELOPMENT_CERTIFICATES
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let built = catamount_tls::server_config(opts, dir.as_deref())?;
    for note in &built.notes {
        crate::log::stdout(&format!("* {bind}: {note}\n"));
    }
    Ok(built.config)
}

fn bind_one(
    bind: &BindUrl,
    pool: &mut Vec<Adoptable>,
    out: &mut Vec<BoundListener>,
) -> Result<(), String> {
    let backlog = i32::try_from(bind.backlog).unwrap_or(i32::MAX);
    let tls_options = match &bind.kind {
        BindKind::Tls { tls, .. } => Some(tls.clone()),
        _ => None,
    };
    let (tcp, tls) = match &bind.kind {
        BindKind::Tcp {
            hosts,
            port,
            low_latency,
        } => (Some((hosts, port, low_latency)), None),
        BindKind::Tls {
            hosts,
            port,
            low_latency,
            tls,
        } => (
            Some((hosts, port, low_latency)),
            Some(tls_config(&bind.original, tls)?),
        ),
        BindKind::Unix { .. } => (None, None),
    };
    match &bind.kind {
        BindKind::Tcp { .. } | BindKind::Tls { .. } => {
            let Some((hosts, port, low_latency)) = tcp else {
                return Ok(());
            };
            let scheme = if tls.is_some() { "ssl" } else { "http" };
            for host in hosts {
                if let Some(socket) = take(pool, |s| s.matches_tcp(bind, *host, *port)) {
                    let mut adopted = socket.into_listener(Some(bind));
                    if let Some(config) = &tls {
                        adopted.tls = Some(config.clone());
                        adopted.tls_options = tls_options.clone();
                        adopted.display = adopted.display.replacen("http://", "ssl://", 1);
                    }
                    out.push(adopted);
                    continue;
                }
                let addr = SocketAddr::new(*host, *port);
                let socket =
                    Socket::new(Domain::for_address(addr), Type::STREAM, None).map_err(describe)?;
                socket.set_reuse_address(true).map_err(describe)?;
                if *low_latency {
                    socket.set_tcp_nodelay(true).map_err(describe)?;
                }
                socket.bind(&addr.into()).map_err(describe)?;
                socket.listen(backlog).map_err(describe)?;
                socket.set_nonblocking(true).map_err(describe)?;
                let listener: std::net::TcpListener = socket.into();
                let local = listener.local_addr().map_err(describe)?;
                out.push(BoundListener {
                    display: format!("{scheme}://{local}"),
                    listener: Listener::Tcp(listener),
                    unix_path: None,
                    bind: bind.original.clone(),
                    inherited: false,
                    activated: false,
                    tls: tls.clone(),
                    tls_options: tls_options.clone(),
                });
            }
        }
        BindKind::Unix { path, umask, mode } => {
            let path = PathBuf::from(path);
            if let Some(socket) = take(pool, |s| s.matches_unix(&path)) {
                out.push(socket.into_listener(Some(bind)));
                return Ok(());
            }
            if path.exists() {
                // A socket file someone still answers on is a running server: refuse, as Puma
                // does. One nobody answers on is stale and is replaced.
                if UnixStream::connect(&path).is_ok() {
                    return Err(format!(
                        "there is already a server bound to {}",
                        path.display()
                    ));
                }
                std::fs::remove_file(&path).map_err(describe)?;
            }
            let socket = Socket::new(Domain::UNIX, Type::STREAM, None).map_err(describe)?;
            let addr = SockAddr::unix(&path).map_err(describe)?;
            let bound = match umask {
                Some(mask) => {
                    let old = rustix::process::umask(rustix::fs::Mode::from_raw_mode(*mask));
                    let r = socket.bind(&addr);
                    rustix::process::umask(old);
                    r
                }
                None => socket.bind(&addr),
            };
            bound.map_err(describe)?;
            if let Some(mode) = mode {
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(*mode))
                    .map_err(describe)?;
            }
            socket.listen(backlog).map_err(describe)?;
            socket.set_nonblocking(true).map_err(describe)?;
            out.push(BoundListener {
                display: format!("unix://{}", path.display()),
                listener: Listener::Unix(socket.into()),
                unix_path: Some(path),
                bind: bind.original.clone(),
                inherited: false,
                activated: false,
                tls: None,
                tls_options: None,
            });
        }
    }
    Ok(())
}

fn describe(e: io::Error) -> String {
    match e.kind() {
        io::ErrorKind::AddrInUse => "address already in use (is another server running?)".into(),
        io::ErrorKind::PermissionDenied => "permission denied".into(),
        io::ErrorKind::AddrNotAvailable => "address not available on this machine".into(),
        _ => e.to_string(),
    }
}
