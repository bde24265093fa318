//! A client connection, TCP, UNIX or TLS, usable from the reactor (async) and from pool threads
//! (non-blocking `try_*` calls only, so a pool thread never blocks on a socket). A TLS
//! connection's session is shared under a lock (`tls_stream.rs`): the reactor reads it, pool
//! threads write responses into it, files go through the reactor.

use std::fs::File;
use std::io;
use std::net::Shutdown;

use bytes::BufMut;
use tokio::io::Interest;
use tokio::net::{TcpStream, UnixStream};

use crate::tls_stream::TlsStream;

#[derive(Debug)]
pub enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
    Tls(Box<TlsStream>),
}

/// The plain sockets' calls (a TLS connection is handled by its own arm before this).
macro_rules! each {
    ($self:ident, $s:ident => $e:expr, tls => $t:expr) => {
        match $self {
            Stream::Tcp($s) => $e,
            Stream::Unix($s) => $e,
            Stream::Tls(_) => $t,
        }
    };
}

/// For the plain sockets' calls that a TLS connection cannot make (sendfile(2) would bypass
/// the session) or makes through its own arm.
fn not_through_tls() -> io::Error {
    io::Error::new(
        io::ErrorKind::Unsupported,
        "not for a TLS connection (its session encrypts every byte)",
    )
}

impl Stream {
    pub async fn readable(&self) -> io::Result<()> {
        match self {
            Stream::Tls(t) => t.readable().await,
            Stream::Tcp(s) => s.readable().await,
            Stream::Unix(s) => s.readable().await,
        }
    }

    pub async fn writable(&self) -> io::Result<()> {
        match self {
            Stream::Tls(t) => t.writable().await,
            Stream::Tcp(s) => s.writable().await,
            Stream::Unix(s) => s.writable().await,
        }
    }

    /// A TLS connection: no sendfile(2) (the reactor reads and encrypts files), and a hijack
    /// is relayed (`reactor/relay.rs`).
    pub fn is_tls(&self) -> bool {
        matches!(self, Stream::Tls(_))
    }

    /// Sends what a TLS session still holds encrypted; true when nothing is left (always for
    /// plain sockets, which hold nothing).
    pub fn flush(&self) -> io::Result<bool> {
        match self {
            Stream::Tls(t) => t.flush(),
            _ => Ok(true),
        }
    }

    /// Reads what is available into `buf`'s next chunk of spare space (a `Vec`'s spare
    /// capacity; a [`BufMut::limit`] caps it).
    ///
    /// A read that did not fill the space drained the socket, so its readiness is cleared: the
    /// next wait then goes straight to the poller instead of spending a `recv` on an empty socket
    /// (without this, every keep-alive request cost one extra `recv` answering EAGAIN). The
    /// poller reports new data with a new edge, so nothing is missed.
    pub fn try_read_buf<B: BufMut>(&self, buf: &mut B) -> io::Result<usize> {
        if let Stream::Tls(t) = self {
            return t.try_read_buf(buf);
        }
        let spare = buf.chunk_mut().len();
        let mut drained = None;
        let result = each!(self, s => s.try_io(Interest::READABLE, || {
            let n = s.try_read_buf(buf)?;
            if n > 0 && n < spare {
                drained = Some(n);
                return Err(io::ErrorKind::WouldBlock.into());
            }
            Ok(n)
        }), tls => Err(not_through_tls()));
        match drained {
            Some(n) => Ok(n),
            None => result,
        }
    }

    /// Writes what the socket takes now (for TLS: encrypts one piece, which may still sit in
    /// the session: [`flush`](Self::flush)).
    pub fn try_write(&self, data: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.try_write(data),
            Stream::Unix(s) => s.try_write(data),
            Stream::Tls(t) => t.try_write(data),
        }
    }

    /// Writes what the socket takes now of `bufs`, in order (for TLS: one piece, as
    /// [`try_write`](Self::try_write)).
    pub fn try_write_vectored(&self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.try_write_vectored(bufs),
            Stream::Unix(s) => s.try_write_vectored(bufs),
            Stream::Tls(t) => t.try_write_vectored(bufs),
        }
    }

    /// Sends up to `count` bytes of `file` from `*offset` with sendfile(2); the kernel copies,
    /// the bytes never pass through user space.
    pub fn try_sendfile(&self, file: &File, offset: &mut u64, count: usize) -> io::Result<usize> {
        let send =
            || rustix::fs::sendfile(self.fd(), file, Some(offset), count).map_err(io::Error::from);
        each!(self, s => s.try_io(Interest::WRITABLE, send), tls => Err(not_through_tls()))
    }

    /// Half-closes the write side, so the client sees the end of the response even while we
    /// drain what it is still sending (a full close with unread data would reset the connection
    /// and could destroy the response in flight).
    pub fn shutdown_write(&self) {
        match self {
            Stream::Tls(t) => t.shutdown_write(),
            _ => {
                let _ = socket2::SockRef::from(self).shutdown(Shutdown::Write);
            }
        }
    }

    /// Ends the connection both ways for every holder of the socket: a pool thread's direct
    /// write fails (EPIPE) and the client sees the close, though descriptors stay open.
    pub fn shutdown_both(&self) {
        let _ = socket2::SockRef::from(self).shutdown(Shutdown::Both);
    }

    fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        use std::os::fd::AsFd;
        match self {
            Stream::Tcp(s) => s.as_fd(),
            Stream::Unix(s) => s.as_fd(),
            Stream::Tls(t) => t.tcp().as_fd(),
        }
    }
}

impl std::os::fd::AsFd for Stream {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.fd()
    }
}
