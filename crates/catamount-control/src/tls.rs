//! A control connection's TLS session (`ssl://` control URLs): rustls driven over the
//! non-blocking, edge-triggered socket the server polls. Every call goes as far as the socket
//! allows and returns `WouldBlock` when it must wait; the handshake happens inside the first
//! reads, so it is bound by the connection's deadline like the request head.

use std::io::{self, Read, Write};
use std::sync::Arc;

use mio::net::TcpStream;
use rustls::{ServerConfig, ServerConnection};

/// One connection's rustls state.
pub(crate) struct Session {
    conn: ServerConnection,
    /// Whether close_notify is queued already (it follows the whole answer, once).
    close_sent: bool,
}

/// The socket as rustls reads and writes it.
struct Raw<'a>(&'a TcpStream);

impl Read for Raw<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        (&*self.0).read(buf)
    }
}

impl Write for Raw<'_> {
    /// A write that cannot raise SIGPIPE when the client has gone.
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        socket2::SockRef::from(self.0).send_with_flags(buf, libc::MSG_NOSIGNAL)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Session {
    pub(crate) fn new(config: Arc<ServerConfig>) -> Result<Session, rustls::Error> {
        Ok(Session {
            conn: ServerConnection::new(config)?,
            close_sent: false,
        })
    }

    /// Sends the records rustls has queued (handshake messages, alerts, the answer).
    fn flush(&mut self, sock: &TcpStream) -> io::Result<()> {
        while self.conn.wants_write() {
            match self.conn.write_tls(&mut Raw(sock)) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Plaintext into `buf`, handshaking first: `Ok(0)` when the client has ended (close_notify
    /// or the TCP end), `WouldBlock` when nothing more can be done now, another error when the
    /// connection is unusable (garbage, plain HTTP, a refused handshake: the alert is sent).
    pub(crate) fn read(&mut self, sock: &TcpStream, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            // What the handshake owes the client first: its next message depends on it.
            self.flush(sock)?;
            match self.conn.reader().read(buf) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
            match self.conn.read_tls(&mut Raw(sock)) {
                Ok(0) => return Ok(0),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            if let Err(e) = self.conn.process_new_packets() {
                // Best effort: the alert saying why, before the connection is closed.
                let _ = self.flush(sock);
                return Err(io::Error::new(io::ErrorKind::InvalidData, e));
            }
        }
    }

    /// Encrypts and sends `out` from `*sent` on (counting the plaintext taken), then
    /// close_notify. `Ok(())` once every record is sent (the caller then shuts the write side);
    /// `WouldBlock` when the socket is full.
    pub(crate) fn write_then_close(
        &mut self,
        sock: &TcpStream,
        out: &[u8],
        sent: &mut usize,
    ) -> io::Result<()> {
        loop {
            self.flush(sock)?;
            if let Some(rest) = out.get(*sent..).filter(|r| !r.is_empty()) {
                // Taken up to rustls's own buffer limit; the flush above sends it.
                let n = self.conn.writer().write(rest)?;
                if n == 0 && !self.conn.wants_write() {
                    return Err(io::ErrorKind::WriteZero.into());
                }
                *sent += n;
            } else if !self.close_sent {
                self.conn.send_close_notify();
                self.close_sent = true;
            } else {
                return Ok(());
            }
        }
    }
}
