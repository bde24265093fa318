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
//!
//! Sending has a lock of its own, the outbox's, taken before the session's (never the other way
//! round): one sender at a time, records on the wire in the order rustls made them. A small
//! write (the last piece of a response, a hello world's head and body) is encrypted under the
//! session's lock but sent after it is released: sending on loopback runs the client at once,
//! whose next request would otherwise find the session locked, and the reactor would sleep on
//! the lock (measured: the reactor's most frequent wait in a two-worker cluster over TLS).

use std::io::{self, BufRead, Read, Write};
use std::net::Shutdown;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::BufMut;
use rustls::{ServerConfig, ServerConnection};
use tokio::net::TcpStream;

/// Plaintext taken from rustls per read, and written into it per write (one TLS record's
/// worth of data).
pub(crate) const PIECE: usize = 16 * 1024;

/// A write of at most this much plaintext is sent outside the session's lock (its records are
/// copied out first, which costs next to nothing at this size); a larger one is sent straight
/// from rustls's buffers under the lock (the client cannot answer mid-response anyway).
const SEND_UNLOCKED: usize = 4 * 1024;

#[derive(Debug)]
pub struct TlsStream {
    tcp: TcpStream,
    session: Mutex<ServerConnection>,
    outbox: Mutex<Outbox>,
    /// Records wait to be sent, in the outbox or the session. Set only under the outbox's lock;
    /// read without it, so a writer whose records all left needs no lock to know it.
    unsent: AtomicBool,
}

/// Encrypted bytes taken out of the session that the socket has not taken yet: they go before
/// anything else.
#[derive(Debug, Default)]
struct Outbox {
    bytes: Vec<u8>,
    sent: usize,
}

impl Outbox {
    /// Sends what waits; true when nothing is left.
    fn send(&mut self, tcp: &TcpStream) -> io::Result<bool> {
        while let Some(rest) = self.bytes.get(self.sent..).filter(|r| !r.is_empty()) {
            match tcp.try_write(rest) {
                Ok(n) => self.sent += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) => return Err(e),
            }
        }
        self.bytes.clear();
        self.sent = 0;
        Ok(true)
    }
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
            outbox: Mutex::new(Outbox::default()),
            unsent: AtomicBool::new(false),
        })
    }

    fn lock(&self) -> MutexGuard<'_, ServerConnection> {
        self.session.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_outbox(&self) -> MutexGuard<'_, Outbox> {
        self.outbox.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn tcp(&self) -> &TcpStream {
        &self.tcp
    }

    /// `set_remote_address proxy_protocol: :v1/:v2` on a TLS listener: a proxy in TCP mode
    /// (HAProxy's `send-proxy`, `send-proxy-v2`) sends its PROXY header before the client's TLS
    /// bytes, in the clear. Reads the header (bound it with a timeout) and returns the client it
    /// names (None: `PROXY UNKNOWN`, v2 LOCAL, or no header at all: bytes that cannot begin one
    /// are the handshake). What was read past the header is the handshake's beginning: it is
    /// given to rustls first.
    pub async fn read_proxy_line(
        &self,
        version: catamount_http::ProxyVersion,
    ) -> Result<Option<std::net::SocketAddr>, BeforeTls> {
        let max = match version {
            catamount_http::ProxyVersion::V1 => catamount_http::MAX_PROXY_LINE,
            catamount_http::ProxyVersion::V2 => catamount_http::MAX_PROXY_V2,
        };
        let mut head: Vec<u8> = Vec::with_capacity(catamount_http::MAX_PROXY_LINE);
        loop {
            match catamount_http::parse_proxy(&head, version).map_err(BeforeTls::Proxy)? {
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
            // At most what a header can still need: the rest stays in the socket for rustls.
            let room = max.saturating_sub(head.len());
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
            let processed = s.process_new_packets();
            self.mark_unsent(&s);
            processed.map_err(invalid)?;
        }
        Ok(())
    }

    /// Completes the handshake (bound it with a timeout: a client may stall). Fails on a TLS
    /// error (an alert is sent when rustls has one), or when the client leaves first.
    pub async fn handshake(&self) -> io::Result<()> {
        loop {
            let flushed = self.flush()?;
            let handshaking = self.lock().is_handshaking();
            if !flushed {
                self.tcp.writable().await?;
                continue;
            }
            if !handshaking {
                return Ok(());
            }
            self.tcp.readable().await?;
            let processed = {
                let mut s = self.lock();
                match s.read_tls(&mut Socket(&self.tcp)) {
                    Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                    Ok(_) => {
                        let processed = s.process_new_packets().map(|_| ());
                        self.mark_unsent(&s);
                        processed
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(()),
                    Err(e) => return Err(e),
                }
            };
            if let Err(e) = processed {
                // The alert rustls queued goes out if the socket takes it now.
                let _ = self.flush();
                return Err(invalid(e));
            }
        }
    }

    /// Ready to read: the session holds plaintext (or the end), or the socket has bytes.
    pub async fn readable(&self) -> io::Result<()> {
        {
            let mut s = self.lock();
            let processed = s.process_new_packets();
            self.mark_unsent(&s);
            if let Ok(state) = processed {
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
        let read = self.read_locked(buf);
        // An alert, or the answer to a key update, goes out behind what waits already.
        let _ = self.flush();
        read
    }

    fn read_locked<B: BufMut>(&self, buf: &mut B) -> io::Result<usize> {
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
                    let processed = s.process_new_packets();
                    self.mark_unsent(&s);
                    processed.map_err(invalid)?;
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
        let mut outbox = self.lock_outbox();
        if self.unsent.load(Ordering::Acquire) && !self.flush_with(&mut outbox)? {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let mut s = self.lock();
        let n = encrypt(&mut s, bufs)?;
        let sent = if n <= SEND_UNLOCKED {
            // Records out of the session (a Vec takes them all), then sent without its lock.
            while s.wants_write() {
                s.write_tls(&mut outbox.bytes)?;
            }
            drop(s);
            outbox.send(&self.tcp)?
        } else {
            let sent = flush_locked(&self.tcp, &mut s)?;
            drop(s);
            sent
        };
        self.unsent.store(!sent, Ordering::Release);
        Ok(n)
    }

    /// Sends the records the socket did not take yet; true when none is left. Needs no lock
    /// when none waits: after a pool thread's direct write, the reactor's next read may hold the
    /// session's.
    pub fn flush(&self) -> io::Result<bool> {
        if !self.unsent.load(Ordering::Acquire) {
            return Ok(true);
        }
        self.flush_with(&mut self.lock_outbox())
    }

    /// Called under the session's lock after rustls may have queued records of its own (the
    /// handshake's, an alert, the answer to a key update): a flush has work. (A writer sending
    /// at that moment may clear the mark again; those records then leave with the next write
    /// or flush, which takes every record the session holds.)
    fn mark_unsent(&self, s: &ServerConnection) {
        if s.wants_write() {
            self.unsent.store(true, Ordering::Release);
        }
    }

    /// [`flush`](Self::flush), the outbox's lock held: what it holds first, then the session's.
    fn flush_with(&self, outbox: &mut Outbox) -> io::Result<bool> {
        let sent = outbox.send(&self.tcp)? && flush_locked(&self.tcp, &mut self.lock())?;
        self.unsent.store(!sent, Ordering::Release);
        Ok(sent)
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
        let mut s = self.lock();
        s.send_close_notify();
        self.mark_unsent(&s);
    }

    /// close_notify, sent if the socket takes it now, then the TCP half-close.
    pub fn shutdown_write(&self) {
        self.queue_close_notify();
        let _ = self.flush();
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

/// Encrypts up to one piece of `bufs` into the session (gathered into one record when there are
/// several); returns the plaintext bytes taken.
fn encrypt(s: &mut ServerConnection, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
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
    Ok(n)
}
