//! The limit server over TLS (`limit --tls-cert F --tls-key F`): the same answers as over plain
//! TCP, each connection's rustls session driven directly on its non-blocking socket, with the
//! settings Catamount serves TLS with (TLS 1.2 and 1.3, the *ring* provider, session tickets and
//! a session cache, ALPN `http/1.1`). What a server speaking TLS through rustls can do at best on
//! this machine: no locks, no hand-off between threads, every answer to one read encrypted as
//! one record and sent in one write.

use std::io::{self, Read, Write};
use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::ServerSessionMemoryCache;
use rustls::{ServerConfig, ServerConnection};
use tokio::net::TcpStream;
use tokio::time::timeout;

use crate::limit::{Answer, Next, Requests, IDLE_TIMEOUT, READ_BUFFER};
use crate::Failure;

/// Sessions the cache keeps for resumption without tickets (TLS 1.2 clients without them).
const SESSION_CACHE: usize = 1024;

/// The configuration every connection shares: the certificate chain in `cert`, its key in `key`
/// (PEM files).
pub fn config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, Failure> {
    let fail = |what: &Path, e: &dyn std::fmt::Display| {
        Failure::Runtime(format!("cannot use {}: {e}", what.display()))
    };
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| fail(cert, &e))?;
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| fail(key, &e))?;
    // *ring*, deprecated for lacking post-quantum key exchange, as Catamount uses it
    // (crates/catamount-tls says why).
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Failure::Runtime(format!("TLS versions: {e}")))?
        .with_no_client_auth()
        .with_single_cert(chain, key_der)
        .map_err(|e| fail(cert, &e))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config.session_storage = ServerSessionMemoryCache::new(SESSION_CACHE);
    config.ticketer = rustls::crypto::ring::Ticketer::new()
        .map_err(|e| Failure::Runtime(format!("session tickets: {e}")))?;
    Ok(Arc::new(config))
}

/// One client connection over TLS: read, answer every complete request in the read.
pub async fn connection(tcp: TcpStream, config: Arc<ServerConfig>, answer: Answer) {
    if tcp.set_nodelay(true).is_err() {
        return;
    }
    let Ok(mut tls) = ServerConnection::new(config) else {
        return;
    };
    let mut requests = Requests::default();
    let mut plain = vec![0u8; READ_BUFFER];
    let mut out = Vec::new();
    loop {
        let n = match timeout(IDLE_TIMEOUT, read_plain(&tcp, &mut tls, &mut plain)).await {
            Ok(Ok(n)) if n > 0 => n,
            _ => return, // close_notify, EOF, error or idle too long
        };
        out.clear();
        let (count, next) = requests.feed(plain.get(..n).unwrap_or_default(), &mut out);
        let answered = timeout(IDLE_TIMEOUT, async {
            match &answer {
                Answer::Memory(response) => {
                    for _ in 0..count {
                        write_plain(&tcp, &mut tls, response).await?;
                    }
                    Ok(())
                }
                // `Hello`: every answer is in `out` (`limit` refuses the others over TLS).
                _ => write_plain(&tcp, &mut tls, &out).await,
            }
        })
        .await;
        if !matches!(answered, Ok(Ok(()))) {
            return;
        }
        if next == Next::Close {
            tls.send_close_notify();
            let _ = timeout(IDLE_TIMEOUT, flush(&tcp, &mut tls)).await;
            return;
        }
    }
}

/// rustls's view of the socket: `WouldBlock` when not ready (which also clears tokio's
/// readiness, so the next wait is real).
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

    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        self.0.try_write_vectored(bufs)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Plaintext into `buf`, reading the socket (and finishing the handshake) as needed; 0 at the
/// client's end.
async fn read_plain(
    tcp: &TcpStream,
    tls: &mut ServerConnection,
    buf: &mut [u8],
) -> io::Result<usize> {
    loop {
        match tls.reader().read(buf) {
            Ok(n) => return Ok(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(0),
            Err(e) => return Err(e),
        }
        // The handshake's messages, or a key update's answer.
        flush(tcp, tls).await?;
        tcp.readable().await?;
        match tls.read_tls(&mut Socket(tcp)) {
            Ok(0) => return Ok(0),
            Ok(_) => {
                tls.process_new_packets()
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
}

/// Encrypts all of `data` and sends it, waiting for the socket as needed.
async fn write_plain(
    tcp: &TcpStream,
    tls: &mut ServerConnection,
    mut data: &[u8],
) -> io::Result<()> {
    while !data.is_empty() {
        // rustls takes what its buffer limit allows; flushing makes room for the rest.
        let taken = tls.writer().write(data)?;
        data = data.get(taken..).unwrap_or_default();
        flush(tcp, tls).await?;
    }
    Ok(())
}

/// Sends every record rustls holds.
async fn flush(tcp: &TcpStream, tls: &mut ServerConnection) -> io::Result<()> {
    while tls.wants_write() {
        match tls.write_tls(&mut Socket(tcp)) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => tcp.writable().await?,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
