//! A TLS connection ([`TlsStream`], `Stream::Tls`): a TCP socket and its rustls session.
//!
//! The reactor reads it; a pool thread writes a response into it directly, as on plain TCP
//! (encrypting under the session's lock, which the reactor takes only briefly to read), and
//! hands the rest to the reactor when the socket is full. Without that, every TLS response
//! cost the reactor a wake-up and the pool thread a hand-off (hello world over TLS: most of
//! the reactor's time was in context switches, next to nothing in the crypto). Files are the
//! reactor's: read and encrypted in pieces, there is no sendfile(2) through TLS (and no kernel
//! TLS on this kernel).
//!
//! rustls buffers both ways: plaintext it decrypted that was not read yet (so readiness is
//! "the session holds plaintext, or the socket is readable"), and records it encrypted that
//! the socket did not take yet (so a write is complete only once [`flush`](TlsStream::flush)
//! says so). The session's lock is never held across an await.

use std::io::{self, BufRead, Read, Write};
use std::net::Shutdown;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::BufMut;
use rustls::{ServerConfig, ServerConnection};
use tokio::net::TcpStream;

/// Plaintext taken from rustls per read, and written into it per write (one TLS record's
/// worth of data).
pub(crate) const PIECE: usize = 16 * 1024;

#[derive(Debug)]
pub struct TlsStream {
    tcp: TcpStream,
    session: Mutex<ServerConnection>,
}

/// rustls's view of the socket: non-blocking reads and writes (`WouldBlock` when not ready,
/// which also clears tokio's readiness so the next wait is real).
struct Socket<'a>(&'a TcpStream);

impl Read for Socket<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.try_read(buf)
    }
}

impl Write for Socket<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.try_write(buf)
    }

    // rustls hands over every queued record at once: one system call for them all.
    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        self.0.try_write_vectored(bufs)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn invalid(e: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

impl TlsStream {
    pub fn new(tcp: TcpStream, config: Arc<ServerConfig>) -> io::Result<TlsStream> {
        let session = ServerConnection::new(config).map_err(invalid)?;
        Ok(TlsStream {
            tcp,
            session: Mutex::new(session),
        })
    }

    fn lock(&self) -> MutexGuard<'_, ServerConnection> {
        self.session.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn tcp(&self) -> &TcpStream {
        &self.tcp
    }

    /// `set_remote_address proxy_protocol: :v1` on a TLS listener: a proxy in TCP mode (HAProxy's
    /// `send-proxy`) sends its PROXY line before the client's TLS bytes, in the clear. Reads the
    /// line (bound it with a timeout) and returns the client it names (None: `PROXY UNKNOWN`,
    /// or no line at all: bytes that do not begin with `PROXY ` are the handshake). What was
    /// read past the line is the handshake's beginning: it is given to rustls first.
    pub async fn read_proxy_line(&self) -> Result<Option<std::net::SocketAddr>, BeforeTls> {
        let mut head: Vec<u8> = Vec::with_capacity(catamount_http::MAX_PROXY_LINE);
        loop {
            match catamount_http::parse_proxy_v1(&head).map_err(BeforeTls::Proxy)? {
                catamount_http::ProxyLine::Absent => {
                    self.feed(&head).map_err(BeforeTls::Tls)?;
                    return Ok(None);
                }
                catamount_http::ProxyLine::Complete { source, len } => {
                    self.feed(head.get(len..).unwrap_or_default())
                        .map_err(BeforeTls::Tls)?;
                    return Ok(source);
                }
                catamount_http::ProxyLine::Incomplete => {}
            }
            self.tcp.readable().await.map_err(BeforeTls::Tls)?;
            // At most what a line can still need: the rest stays in the socket for rustls.
            let room = catamount_http::MAX_PROXY_LINE - head.len();
            let mut more = (&mut head).limit(room);
            match self.tcp.try_read_buf(&mut more) {
                Ok(0) => return Err(BeforeTls::Tls(io::ErrorKind::UnexpectedEof.into())),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(BeforeTls::Tls(e)),
            }
        }
    }

    /// Gives rustls bytes of the handshake read from the socket before it began.
    fn feed(&self, mut bytes: &[u8]) -> io::Result<()> {
        let mut s = self.lock();
        while !bytes.is_empty() {
            if s.read_tls(&mut bytes)? == 0 {
                break;
            }
            s.process_new_packets().map_err(invalid)?;
        }
        Ok(())
    }

    /// Completes the handshake (bound it with a timeout: a client may stall). Fails on a TLS
    /// error (an alert is sent when rustls has one), or when the client leaves first.
    pub async fn handshake(&self) -> io::Result<()> {
        loop {
            let (handshaking, flushed) = {
                let mut s = self.lock();
                let flushed = flush_locked(&self.tcp, &mut s)?;
                (s.is_handshaking(), flushed)
            };
            if !flushed {
                self.tcp.writable().await?;
                continue;
            }
            if !handshaking {
                return Ok(());
            }
            self.tcp.readable().await?;
            let mut s = self.lock();
            match s.read_tls(&mut Socket(&self.tcp)) {
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(_) => {
                    if let Err(e) = s.process_new_packets() {
                        // The alert rustls queued goes out if the socket takes it now.
                        let _ = flush_locked(&self.tcp, &mut s);
                        return Err(invalid(e));
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Ready to read: the session holds plaintext (or the end), or the socket has bytes.
    pub async fn readable(&self) -> io::Result<()> {
        {
            let mut s = self.lock();
            if let Ok(state) = s.process_new_packets() {
                if state.plaintext_bytes_to_read() > 0 || state.peer_has_closed() {
                    return Ok(());
                }
            }
        }
        self.tcp.readable().await
    }

    pub async fn writable(&self) -> io::Result<()> {
        self.tcp.writable().await
    }

    /// Reads plaintext into `buf`'s next chunk of spare space: what the session holds, else
    /// what one read of the socket brings. 0: the client closed (with or without close_notify);
    /// `WouldBlock`: nothing yet.
    pub fn try_read_buf<B: BufMut>(&self, buf: &mut B) -> io::Result<usize> {
        let mut s = self.lock();
        let want = buf.chunk_mut().len().min(PIECE);
        loop {
            // Copied once, from rustls's buffer into `buf` (no zeroed piece in between).
            let mut reader = s.reader();
            match reader.fill_buf() {
                Ok(chunk) => {
                    let n = chunk.len().min(want);
                    buf.put_slice(chunk.get(..n).unwrap_or_default());
                    reader.consume(n);
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                // The TCP stream ended without close_notify: an end all the same.
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(0),
                Err(e) => return Err(e),
            }
            match s.read_tls(&mut Socket(&self.tcp)) {
                Ok(0) => return Ok(0),
                Ok(_) => {
                    if let Err(e) = s.process_new_packets() {
                        let _ = flush_locked(&self.tcp, &mut s);
                        return Err(invalid(e));
                    }
                    // A key update or an alert may want an answer.
                    flush_locked(&self.tcp, &mut s)?;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Encrypts up to one piece of `data` and sends what the socket takes; `WouldBlock` while
    /// earlier records still wait for the socket. Returns the plaintext bytes taken: they may
    /// still sit encrypted in the session ([`flush`](Self::flush)).
    pub fn try_write(&self, data: &[u8]) -> io::Result<usize> {
        self.try_write_vectored(&[io::IoSlice::new(data)])
    }

    /// [`try_write`](Self::try_write) for several buffers: up to one piece of them, gathered,
    /// goes out as one record (a response's head and a small body: one record, not two).
    pub fn try_write_vectored(&self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        let mut s = self.lock();
        if !flush_locked(&self.tcp, &mut s)? {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let mut rest = bufs.iter().filter(|b| !b.is_empty());
        let n = match (rest.next(), rest.next()) {
            (None, _) => 0,
            (Some(only), None) => s.writer().write(only.get(..PIECE).unwrap_or(only))?,
            (Some(first), Some(_)) if first.len() >= PIECE => {
                s.writer().write(first.get(..PIECE).unwrap_or(first))?
            }
            _ => {
                let total: usize = bufs.iter().map(|b| b.len()).sum();
                let mut piece = Vec::with_capacity(total.min(PIECE));
                for b in bufs {
                    let take = b.len().min(PIECE - piece.len());
                    piece.extend_from_slice(b.get(..take).unwrap_or_default());
                }
                s.writer().write(&piece)?
            }
        };
        flush_locked(&self.tcp, &mut s)?;
        Ok(n)
    }

    /// Sends the records the socket did not take yet; true when none is left.
    pub fn flush(&self) -> io::Result<bool> {
        flush_locked(&self.tcp, &mut self.lock())
    }

    /// The client's certificate (DER), when it sent one (`verify_mode peer`/`force_peer`).
    pub fn peer_certificate(&self) -> Option<Vec<u8>> {
        let s = self.lock();
        s.peer_certificates()
            .and_then(|chain| chain.first())
            .map(|leaf| leaf.as_ref().to_vec())
    }

    /// Queues close_notify: nothing more will be written ([`flush`](Self::flush) sends it).
    pub(crate) fn queue_close_notify(&self) {
        self.lock().send_close_notify();
    }

    /// close_notify, sent if the socket takes it now, then the TCP half-close.
    pub fn shutdown_write(&self) {
        {
            let mut s = self.lock();
            s.send_close_notify();
            let _ = flush_locked(&self.tcp, &mut s);
        }
        let _ = socket2::SockRef::from(&self.tcp).shutdown(Shutdown::Write);
    }
}

/// Why a connection ended before its TLS handshake did.
#[derive(Debug)]
pub enum BeforeTls {
    /// A malformed PROXY line (from a broken or hostile proxy).
    Proxy(catamount_http::ProxyError),
    /// The handshake failed, or the client left.
    Tls(io::Error),
}

/// Writes queued records until the socket would block; true when none is left.
fn flush_locked(tcp: &TcpStream, s: &mut ServerConnection) -> io::Result<bool> {
    while s.wants_write() {
        match s.write_tls(&mut Socket(tcp)) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}
