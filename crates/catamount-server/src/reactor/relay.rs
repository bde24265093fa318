//! A TLS connection the app took (`rack.hijack`, 101 upgrades): the app cannot continue the
//! rustls session on the raw socket, so the reactor keeps it and relays plaintext between it
//! and one end of a UNIX socket pair whose other end is the app's IO.
//!
//! Client to app: what the reactor read past the request goes first, then what rustls
//! decrypts. App to client: what the app writes is encrypted and sent. Each way reads at most
//! one [`PIECE`] (a TLS record's worth, onto the stack) and reads again only once the other side took all of it, so
//! a side that stops reading stops the other (the kernel's socket buffers do the rest): memory
//! stays bounded, and only what waits for a side is held (an idle relay holds no buffer, as
//! there may be thousands of WebSockets). Ends: the client's end (close_notify or the TCP end) becomes a write shutdown of the
//! app's socket (the app reads its end); the app's end (a close or a write shutdown) becomes
//! close_notify and a TCP write shutdown. The relay ends once both ways ended, or the app can
//! no longer read (it closed its IO: a stop's drain shuts it down both ways) and its writes
//! ended; a TLS or socket error ends it at once, and so does a client that took nothing of
//! what waits for it for `write_timeout` (as a response's client that stopped reading). Both sockets are then shut down both ways (a
//! descriptor copied into a forked child would otherwise keep either open).
//!
//! The relay does not count as an open connection (as a plain hijack does not); the reactor
//! waits for the running ones when it ends, up to the drain time (`shared::Relays`).

use std::io;
use std::net::Shutdown;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::net::UnixStream;

use crate::shared::Shared;
use crate::stream::Stream;
use crate::tls_stream::{TlsStream, PIECE};

/// One relay counted as running (`Shared::relays`) while this lives.
struct Running(Arc<Shared>);

impl Running {
    fn new(shared: Arc<Shared>) -> Running {
        shared.relays.started();
        Running(shared)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.0.relays.ended();
    }
}

/// A UNIX socket pair (close-on-exec, both ends non-blocking as the app's descriptor of a
/// plain connection is): the relay's end, and the app's. Call it on the reactor.
pub(crate) fn socket_pair() -> io::Result<(UnixStream, OwnedFd)> {
    let (ours, theirs) = std::os::unix::net::UnixStream::pair()?;
    ours.set_nonblocking(true)?;
    theirs.set_nonblocking(true)?;
    Ok((UnixStream::from_std(ours)?, OwnedFd::from(theirs)))
}

/// Relays `stream` (a TLS connection) and the app's socket pair end through `app` until both
/// are done; `early` (plaintext read past the request) goes to the app first.
pub(crate) async fn relay(
    stream: Arc<Stream>,
    app: UnixStream,
    early: Vec<u8>,
    shared: Arc<Shared>,
) {
    let write_timeout = shared.config.write_timeout;
    let _running = Running::new(shared);
    if let Stream::Tls(tls) = &*stream {
        let mut relay = Relay::new(tls, &app, early, write_timeout);
        // An error (the client reset, a TLS error, a socket failing) ends both ways at once.
        let _ = relay.run().await;
    }
    let _ = socket2::SockRef::from(&app).shutdown(Shutdown::Both);
    stream.shutdown_both();
}

/// Plaintext on its way: `data[from..]` is still to be written.
#[derive(Default)]
struct Pending {
    data: Vec<u8>,
    from: usize,
}

impl Pending {
    fn rest(&self) -> &[u8] {
        self.data.get(self.from..).unwrap_or_default()
    }

    fn is_empty(&self) -> bool {
        self.from >= self.data.len()
    }

    /// `n` more bytes were written; once all were, the buffer is freed.
    fn sent(&mut self, n: usize) {
        self.from += n;
        if self.is_empty() {
            *self = Pending::default();
        }
    }
}

struct Relay<'a> {
    tls: &'a TlsStream,
    app: &'a UnixStream,
    /// Client to app.
    to_app: Pending,
    /// App to client.
    to_client: Pending,
    /// The client's side ended (close_notify or the TCP end).
    client_ended: bool,
    /// The app's socket gets nothing more: shut down for writing after the client's end, or
    /// the app can no longer read (then what the client still sends is dropped).
    app_told: bool,
    /// The app's side ended (its end of the pair read the end).
    app_ended: bool,
    /// close_notify queued.
    closing: bool,
    /// close_notify sent and the TCP connection shut down for writing.
    client_told: bool,
    /// rustls holds records the socket has not taken yet.
    unflushed: bool,
    /// Since when the client has taken nothing of what waits for it (None: nothing waits, or
    /// its last write went through); past `write_timeout`, the relay ends, as a response to a
    /// client that stopped reading does. Else a client that never reads again would hold the
    /// relay (its sockets and buffers) until the server stops, even after the app closed.
    client_stuck_since: Option<Instant>,
    write_timeout: Duration,
    /// A second registration of the app's socket, made once the app's writes ended, only to
    /// learn that it closed the socket (a hang-up) while nothing else would tell.
    hangup: Option<AsyncFd<OwnedFd>>,
}

impl<'a> Relay<'a> {
    fn new(
        tls: &'a TlsStream,
        app: &'a UnixStream,
        early: Vec<u8>,
        write_timeout: Duration,
    ) -> Relay<'a> {
        Relay {
            tls,
            app,
            to_app: Pending {
                data: early,
                from: 0,
            },
            to_client: Pending::default(),
            client_ended: false,
            app_told: false,
            app_ended: false,
            closing: false,
            client_told: false,
            unflushed: false,
            client_stuck_since: None,
            write_timeout,
            hangup: None,
        }
    }

    async fn run(&mut self) -> io::Result<()> {
        loop {
            self.move_to_app()?;
            self.move_to_client()?;
            if self.app_told && self.client_told {
                return Ok(());
            }
            self.wait().await?;
        }
    }

    /// Moves what the client sent to the app until either side would block.
    fn move_to_app(&mut self) -> io::Result<()> {
        loop {
            if !self.to_app.is_empty() {
                if self.app_told {
                    self.to_app = Pending::default();
                    continue;
                }
                match send(self.app, self.to_app.rest()) {
                    Ok(n) => self.to_app.sent(n),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    // The app no longer reads (it closed its IO, or it was shut down).
                    Err(_) => self.app_told = true,
                }
                continue;
            }
            if self.client_ended {
                if !self.app_told {
                    let _ = socket2::SockRef::from(self.app).shutdown(Shutdown::Write);
                    self.app_told = true;
                }
                return Ok(());
            }
            let mut piece = [0u8; PIECE];
            let mut room: &mut [u8] = &mut piece;
            match self.tls.try_read_buf(&mut room) {
                Ok(0) => self.client_ended = true,
                Ok(n) => self.to_app.data = piece.get(..n).unwrap_or_default().to_vec(),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Moves what the app wrote to the client until either side would block; once the app's
    /// side ended, sends close_notify and shuts the TCP connection down for writing.
    fn move_to_client(&mut self) -> io::Result<()> {
        loop {
            if self.client_told {
                return Ok(());
            }
            if !self.to_client.is_empty() {
                match self.tls.try_write(self.to_client.rest()) {
                    Ok(n) => {
                        self.to_client.sent(n);
                        self.client_stuck_since = None;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        self.unflushed = true;
                        self.client_stuck_since.get_or_insert_with(Instant::now);
                        return Ok(());
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
                continue;
            }
            self.unflushed = !self.tls.flush()?;
            if self.unflushed {
                self.client_stuck_since.get_or_insert_with(Instant::now);
                return Ok(());
            }
            self.client_stuck_since = None;
            if self.app_ended {
                if !self.closing {
                    self.tls.queue_close_notify();
                    self.closing = true;
                    continue;
                }
                let _ = socket2::SockRef::from(self.tls.tcp()).shutdown(Shutdown::Write);
                self.client_told = true;
                return Ok(());
            }
            let mut piece = [0u8; PIECE];
            match self.app.try_read(&mut piece) {
                Ok(0) => self.app_ended = true,
                Ok(n) => self.to_client.data = piece.get(..n).unwrap_or_default().to_vec(),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // The app's socket failed: its side is over.
                Err(_) => self.app_ended = true,
            }
        }
    }

    /// Waits until a way can move again (what `move_to_app` and `move_to_client` stopped on).
    async fn wait(&mut self) -> io::Result<()> {
        let app_writable = !self.app_told && !self.to_app.is_empty();
        let client_readable = self.to_app.is_empty() && !self.client_ended;
        let client_writable = !self.client_told && (self.unflushed || !self.to_client.is_empty());
        let app_readable = !self.client_told && !client_writable && !self.app_ended;
        // Only the end of the app's socket is awaited: nothing else would say the app closed it.
        let watch_hangup = self.app_ended && !self.app_told && !app_writable;
        if watch_hangup && self.hangup.is_none() {
            let fd = self.app.as_fd().try_clone_to_owned()?;
            // Deprecated because a borrowed descriptor could be closed while registered; this
            // AsyncFd owns its descriptor, so it lives exactly as long as the registration.
            #[allow(deprecated)]
            let hangup = AsyncFd::with_interest(fd, Interest::WRITABLE)?;
            self.hangup = Some(hangup);
        }
        let hangup = self.hangup.as_ref().filter(|_| watch_hangup);
        let give_up = self
            .client_stuck_since
            .filter(|_| client_writable)
            .map(|since| since + self.write_timeout);
        tokio::select! {
            r = self.app.writable(), if app_writable => r,
            r = self.tls.readable(), if client_readable => r,
            r = self.tls.writable(), if client_writable => r,
            _ = stuck_until(give_up), if give_up.is_some() => {
                Err(io::Error::new(io::ErrorKind::TimedOut, "relay: the client stopped reading"))
            }
            r = self.app.readable(), if app_readable => r,
            hung_up = hung_up(hangup), if watch_hangup => {
                if hung_up? {
                    self.app_told = true;
                }
                Ok(())
            }
            // Every state above waits on something; should one not, end rather than spin.
            else => Err(io::Error::other("relay: nothing to wait for")),
        }
    }
}

/// Resolves at `until` (never without one).
async fn stuck_until(until: Option<Instant>) {
    match until {
        Some(at) => tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await,
        None => std::future::pending().await,
    }
}

/// Writes to the app's socket without raising SIGPIPE when it is closed (EPIPE instead).
fn send(app: &UnixStream, data: &[u8]) -> io::Result<usize> {
    app.try_io(Interest::WRITABLE, || {
        rustix::net::send(app, data, rustix::net::SendFlags::NOSIGNAL).map_err(io::Error::from)
    })
}

/// Resolves true once the app's socket hung up (the app closed it, or it was shut down both
/// ways), false on another readiness change (look again).
async fn hung_up(hangup: Option<&AsyncFd<OwnedFd>>) -> io::Result<bool> {
    let Some(hangup) = hangup else {
        return Ok(false);
    };
    let mut ready = hangup.writable().await?;
    if ready.ready().is_write_closed() {
        return Ok(true);
    }
    // Writable as before: wait for the next change (the registration is edge-triggered).
    ready.clear_ready();
    Ok(false)
}
