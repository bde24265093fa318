//! A client connection, TCP or UNIX, usable from the reactor (async) and from pool threads
//! (non-blocking `try_*` calls only, so a pool thread never blocks on a socket).

use std::fs::File;
use std::io;
use std::net::Shutdown;

use tokio::io::Interest;
use tokio::net::{TcpStream, UnixStream};

#[derive(Debug)]
pub enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

macro_rules! each {
    ($self:ident, $s:ident => $e:expr) => {
        match $self {
            Stream::Tcp($s) => $e,
            Stream::Unix($s) => $e,
        }
    };
}

impl Stream {
    pub async fn readable(&self) -> io::Result<()> {
        each!(self, s => s.readable().await)
    }

    pub async fn writable(&self) -> io::Result<()> {
        each!(self, s => s.writable().await)
    }

    /// Reads what is available into the spare capacity of `buf`.
    pub fn try_read_buf(&self, buf: &mut Vec<u8>) -> io::Result<usize> {
        each!(self, s => s.try_read_buf(buf))
    }

    pub fn try_write(&self, data: &[u8]) -> io::Result<usize> {
        each!(self, s => s.try_write(data))
    }

    /// Sends up to `count` bytes of `file` from `*offset` with sendfile(2); the kernel copies,
    /// the bytes never pass through user space.
    pub fn try_sendfile(&self, file: &File, offset: &mut u64, count: usize) -> io::Result<usize> {
        let send =
            || rustix::fs::sendfile(self.fd(), file, Some(offset), count).map_err(io::Error::from);
        each!(self, s => s.try_io(Interest::WRITABLE, send))
    }

    /// Half-closes the write side, so the client sees the end of the response even while we
    /// drain what it is still sending (a full close with unread data would reset the connection
    /// and could destroy the response in flight).
    pub fn shutdown_write(&self) {
        let _ = socket2::SockRef::from(self).shutdown(Shutdown::Write);
    }

    fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        use std::os::fd::AsFd;
        each!(self, s => s.as_fd())
    }
}

impl std::os::fd::AsFd for Stream {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.fd()
    }
}
