//! Opening the listening sockets described by bind URLs.
//!
//! Binding happens before the app is loaded and before any thread starts, so a port in use or a
//! bad path fails the boot with one clear line and nothing half-started. The sockets are plain
//! std listeners in non-blocking mode; the reactor adopts them once it runs.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;

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
    /// The socket file this process created, removed again at shutdown.
    pub unix_path: Option<PathBuf>,
}

/// Why a listener could not be opened.
#[derive(Debug)]
pub struct ListenError {
    pub url: String,
    pub reason: String,
}

impl fmt::Display for ListenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "could not listen on {}: {}", self.url, self.reason)
    }
}

impl std::error::Error for ListenError {}

/// Opens every bind in order; on the first failure, closes what was opened and says which failed.
pub fn bind_all(binds: &[BindUrl]) -> Result<Vec<BoundListener>, ListenError> {
    let mut out = Vec::new();
    for bind in binds {
        match bind_one(bind, &mut out) {
            Ok(()) => {}
            Err(reason) => {
                remove_socket_files(&out);
                return Err(ListenError {
                    url: bind.original.clone(),
                    reason,
                });
            }
        }
    }
    Ok(out)
}

/// Removes the UNIX socket files these listeners created.
pub fn remove_socket_files(listeners: &[BoundListener]) {
    for l in listeners {
        if let Some(path) = &l.unix_path {
            let _ = std::fs::remove_file(path);
        }
    }
}

fn bind_one(bind: &BindUrl, out: &mut Vec<BoundListener>) -> Result<(), String> {
    let backlog = i32::try_from(bind.backlog).unwrap_or(i32::MAX);
    match &bind.kind {
        BindKind::Tcp {
            hosts,
            port,
            low_latency,
        } => {
            for host in hosts {
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
                    display: format!("http://{local}"),
                    listener: Listener::Tcp(listener),
                    unix_path: None,
                });
            }
        }
        BindKind::Unix { path, umask, mode } => {
            let path = PathBuf::from(path);
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
