//! TLS to an `ssl://` control server, as pumactl speaks it: OpenSSL's default client context,
//! which verifies nothing. The server's certificate is taken as it is (the handshake's
//! signatures are still checked, so the session is with the holder of that certificate's key):
//! the token is what authorizes, and a control URL usually names a self-signed certificate.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, ClientConnection, DigitallySignedStruct, SignatureScheme, StreamOwned};
use socket2::Socket;

use crate::http::Connection;
use crate::os_message;

/// The *ring* provider, as the server's (catamount-tls says why not aws-lc-rs).
#[allow(deprecated)]
fn provider() -> CryptoProvider {
    rustls::crypto::ring::default_provider()
}

/// Accepts any certificate; checks the handshake's signatures with it.
#[derive(Debug)]
struct Unverified(Arc<CryptoProvider>);

impl ServerCertVerifier for Unverified {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The TLS handshake over a connected socket, within `timeout`.
pub(crate) fn handshake(
    socket: Socket,
    host: &str,
    timeout: Duration,
) -> Result<Connection, String> {
    let failed = |e: &dyn std::fmt::Display| format!("SSL_connect: {e}");
    let provider = Arc::new(provider());
    let config = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| failed(&e))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(Unverified(provider)))
        .with_no_client_auth();
    // SNI names the host when it is a DNS name (an IP address is sent as none).
    let name = ServerName::try_from(host.to_string())
        .unwrap_or(ServerName::IpAddress(std::net::Ipv4Addr::LOCALHOST.into()));
    let conn = ClientConnection::new(Arc::new(config), name).map_err(|e| failed(&e))?;
    socket
        .set_read_timeout(Some(timeout))
        .and_then(|()| socket.set_write_timeout(Some(timeout)))
        .map_err(|e| os_message(&e))?;
    let mut stream = StreamOwned::new(conn, socket);
    while stream.conn.is_handshaking() {
        if let Err(e) = stream.conn.complete_io(&mut stream.sock) {
            return Err(match e.kind() {
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => format!(
                    "No TLS handshake with the control server within {} s",
                    timeout.as_secs_f64()
                ),
                io::ErrorKind::UnexpectedEof => failed(&"the control server closed the connection"),
                _ => failed(&e),
            });
        }
    }
    Ok(Connection::Tls(Box::new(stream)))
}
