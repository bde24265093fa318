//! The configuration built from real certificates (made here with rcgen), checked by real
//! handshakes between a rustls client and the built server configuration, in memory.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use catamount_config::tls::{Pem, SessionReuse, TlsOptions, TlsVersion, VerifyMode};
use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, ServerConnection};

use super::*;

/// A scratch directory removed at the end of the test.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("catamount-tls-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
        Scratch(dir)
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, text).unwrap_or_else(|e| panic!("{e}"));
        path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A CA and what it signed.
struct Pki {
    ca: rcgen::Certificate,
    ca_key: KeyPair,
}

impl Pki {
    fn new() -> Pki {
        let mut params =
            CertificateParams::new(Vec::<String>::new()).unwrap_or_else(|e| panic!("{e}"));
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_key = KeyPair::generate().unwrap_or_else(|e| panic!("{e}"));
        let ca = params
            .self_signed(&ca_key)
            .unwrap_or_else(|e| panic!("{e}"));
        Pki { ca, ca_key }
    }

    /// A leaf for `name`, valid between the two years given (or rcgen's defaults).
    fn leaf(&self, name: &str, years: Option<(i32, i32)>) -> (String, String) {
        let mut params =
            CertificateParams::new(vec![name.to_string()]).unwrap_or_else(|e| panic!("{e}"));
        if let Some((from, to)) = years {
            params.not_before = rcgen::date_time_ymd(from, 1, 1);
            params.not_after = rcgen::date_time_ymd(to, 1, 1);
        }
        let key = KeyPair::generate().unwrap_or_else(|e| panic!("{e}"));
        let cert = params
            .signed_by(&key, &self.ca, &self.ca_key)
            .unwrap_or_else(|e| panic!("{e}"));
        (cert.pem(), key.serialize_pem())
    }
}

fn files(dir: &Scratch, (cert, key): &(String, String)) -> TlsOptions {
    TlsOptions {
        cert: Some(Pem::File(dir.write("cert.pem", cert))),
        key: Some(Pem::File(dir.write("key.pem", key))),
        ..TlsOptions::default()
    }
}

fn client(pki: &Pki, identity: Option<&(String, String)>) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    roots
        .add(pki.ca.der().clone())
        .unwrap_or_else(|e| panic!("{e}"));
    let builder = ClientConfig::builder_with_provider(Arc::new(provider()))
        .with_safe_default_protocol_versions()
        .unwrap_or_else(|e| panic!("{e}"))
        .with_root_certificates(roots);
    let mut config = match identity {
        Some((cert, key)) => {
            use rustls::pki_types::pem::PemObject;
            let chain =
                vec![CertificateDer::from_pem_slice(cert.as_bytes())
                    .unwrap_or_else(|e| panic!("{e}"))];
            let key =
                PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
            builder
                .with_client_auth_cert(chain, key)
                .unwrap_or_else(|e| panic!("{e}"))
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

/// Runs a handshake in memory; Ok with the negotiated ALPN and the client certificates the
/// server saw, or the first error either side met.
fn handshake(
    server: &Built,
    client: Arc<ClientConfig>,
) -> Result<(Option<Vec<u8>>, usize), rustls::Error> {
    let mut c = ClientConnection::new(
        client,
        ServerName::try_from("localhost").unwrap_or_else(|e| panic!("{e}")),
    )?;
    let mut s = ServerConnection::new(server.config.clone())?;
    for _ in 0..20 {
        pump(&mut c, &mut s)?;
        pump(&mut s, &mut c)?;
        if !c.is_handshaking() && !s.is_handshaking() {
            let peers = s.peer_certificates().map_or(0, <[_]>::len);
            return Ok((s.alpn_protocol().map(<[u8]>::to_vec), peers));
        }
    }
    Err(rustls::Error::General("handshake did not finish".into()))
}

/// Moves what `from` has to send into `to`, which processes it.
fn pump<A: rustls::SideData, B: rustls::SideData>(
    from: &mut rustls::ConnectionCommon<A>,
    to: &mut rustls::ConnectionCommon<B>,
) -> Result<(), rustls::Error> {
    let io = |e: std::io::Error| rustls::Error::General(e.to_string());
    let mut buf = Vec::new();
    while from.wants_write() {
        from.write_tls(&mut buf).map_err(io)?;
    }
    if !buf.is_empty() {
        to.read_tls(&mut buf.as_slice()).map_err(io)?;
        to.process_new_packets()?;
    }
    Ok(())
}

fn build(opts: &TlsOptions) -> Result<Built, String> {
    server_config(opts, None)
}

#[test]
fn a_certificate_and_key_serve_tls_with_alpn_http11() {
    let dir = Scratch::new("basic");
    let pki = Pki::new();
    let built = build(&files(&dir, &pki.leaf("localhost", None))).unwrap_or_else(|e| panic!("{e}"));
    assert!(built.notes.is_empty());
    assert_eq!(
        handshake(&built, client(&pki, None)).ok(),
        Some((Some(b"http/1.1".to_vec()), 0))
    );
}

#[test]
fn pem_text_and_tls13_only() {
    let pki = Pki::new();
    let (cert, key) = pki.leaf("localhost", None);
    let opts = TlsOptions {
        cert: Some(Pem::Inline(cert)),
        key: Some(Pem::Inline(key)),
        min_version: TlsVersion::Tls13,
        reuse: SessionReuse::Off,
        ..TlsOptions::default()
    };
    let built = build(&opts).unwrap_or_else(|e| panic!("{e}"));
    assert!(handshake(&built, client(&pki, None)).is_ok());
    let tls12_only = ClientConfig::builder_with_provider(Arc::new(provider()))
        .with_protocol_versions(&[&rustls::version::TLS12])
        .unwrap_or_else(|e| panic!("{e}"))
        .with_root_certificates({
            let mut r = RootCertStore::empty();
            r.add(pki.ca.der().clone())
                .unwrap_or_else(|e| panic!("{e}"));
            r
        })
        .with_no_client_auth();
    assert!(
        handshake(&built, Arc::new(tls12_only)).is_err(),
        "a TLS 1.2 client is refused"
    );
}

#[test]
fn client_certificates_peer_and_force_peer() {
    let dir = Scratch::new("mtls");
    let pki = Pki::new();
    let mut opts = files(&dir, &pki.leaf("localhost", None));
    opts.ca = Some(dir.write("ca.pem", &pki.ca.pem()));
    let member = pki.leaf("client", None);
    let stranger = Pki::new().leaf("client", None);

    opts.verify_mode = VerifyMode::Peer;
    let peer = build(&opts).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        handshake(&peer, client(&pki, None)).map(|r| r.1),
        Ok(0),
        "peer: none is fine"
    );
    assert_eq!(
        handshake(&peer, client(&pki, Some(&member))).map(|r| r.1),
        Ok(1)
    );
    assert!(
        handshake(&peer, client(&pki, Some(&stranger))).is_err(),
        "an untrusted one is refused"
    );

    opts.verify_mode = VerifyMode::ForcePeer;
    let force = build(&opts).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        handshake(&force, client(&pki, None)).is_err(),
        "force_peer: none is refused"
    );
    assert_eq!(
        handshake(&force, client(&pki, Some(&member))).map(|r| r.1),
        Ok(1)
    );
}

#[test]
fn bad_certificates_and_keys_are_one_line_refusals() {
    let dir = Scratch::new("bad");
    let pki = Pki::new();
    let good = pki.leaf("localhost", None);
    let other = pki.leaf("localhost", None);
    let expired = pki.leaf("localhost", Some((2001, 2002)));
    let early = pki.leaf("localhost", Some((2999, 3001)));
    let refuse = |opts: TlsOptions, needle: &str| {
        let err = build(&opts)
            .err()
            .unwrap_or_else(|| panic!("accepted, wanted {needle}"));
        assert!(err.contains(needle), "{err}");
        assert!(!err.contains('\n'), "{err}");
    };
    refuse(
        TlsOptions {
            key: Some(Pem::Inline(other.1.clone())),
            ..files(&dir, &good)
        },
        "the key does not match the certificate",
    );
    refuse(
        files(&dir, &expired),
        "the certificate expired on 2002-01-01 00:00:00 UTC",
    );
    refuse(
        files(&dir, &early),
        "not valid yet (from 2999-01-01 00:00:00 UTC)",
    );
    refuse(
        TlsOptions {
            cert: Some(Pem::File(dir.0.join("missing.pem"))),
            ..files(&dir, &good)
        },
        "cannot read cert ",
    );
    refuse(
        TlsOptions {
            cert: Some(Pem::Inline("not pem".into())),
            ..files(&dir, &good)
        },
        "cert_pem: holds no certificate",
    );
    refuse(
        TlsOptions {
            key: Some(Pem::Inline(good.0.clone())),
            ..files(&dir, &good)
        },
        "key_pem: holds no private key",
    );
    refuse(
        TlsOptions {
            verification_flags: vec!["PARTIAL_CHAIN".into()],
            ..files(&dir, &good)
        },
        "verification_flags (PARTIAL_CHAIN) are OpenSSL's",
    );
    refuse(
        TlsOptions {
            reuse: SessionReuse::Sized {
                size: 10,
                timeout: Some(60),
            },
            ..files(&dir, &good)
        },
        "session timeout cannot be honoured",
    );
    refuse(TlsOptions::default(), "needs cert and key");
}

/// An encrypted PKCS#8 key in PEM, as `openssl pkcs8 -topk8 -v2 aes-256-cbc` writes it.
fn encrypted(key_pem: &str, password: &str) -> String {
    use pkcs8::der::pem::LineEnding;
    let (_, doc) = pkcs8::der::SecretDocument::from_pem(key_pem).unwrap_or_else(|e| panic!("{e}"));
    let info = pkcs8::PrivateKeyInfo::try_from(doc.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
    let params =
        pkcs8::pkcs5::pbes2::Parameters::pbkdf2_sha256_aes256cbc(2048, b"saltsalt", &[7u8; 16])
            .unwrap_or_else(|e| panic!("{e}"));
    let enc = info
        .encrypt_with_params(params, password)
        .unwrap_or_else(|e| panic!("{e}"));
    enc.to_pem("ENCRYPTED PRIVATE KEY", LineEnding::LF)
        .unwrap_or_else(|e| panic!("{e}"))
        .to_string()
}

#[test]
fn an_encrypted_key_opens_with_the_password_command() {
    let dir = Scratch::new("encrypted");
    let pki = Pki::new();
    let (cert, key) = pki.leaf("localhost", None);
    let mut opts = files(&dir, &(cert, encrypted(&key, "s3cret pass")));
    let err = build(&opts).err().unwrap_or_default();
    assert!(
        err.contains("key_password_command must give its passphrase"),
        "{err}"
    );
    opts.key_password_command = Some("echo 's3cret pass'".into());
    let built = build(&opts).unwrap_or_else(|e| panic!("{e}"));
    assert!(handshake(&built, client(&pki, None)).is_ok());
    opts.key_password_command = Some("echo wrong".into());
    assert!(build(&opts)
        .err()
        .unwrap_or_default()
        .contains("does not open the key"));
    opts.key_password_command = Some("exit 3".into());
    assert!(build(&opts)
        .err()
        .unwrap_or_default()
        .contains("it failed (exit status: 3)"));
    opts.key_password_command = Some("true".into());
    assert!(build(&opts)
        .err()
        .unwrap_or_default()
        .contains("printed no passphrase"));
}

#[test]
fn the_development_certificate_is_made_once_and_kept() {
    let dir = Scratch::new("development");
    let cache: &Path = &dir.0.join("cache");
    let first =
        server_config(&TlsOptions::default(), Some(cache)).unwrap_or_else(|e| panic!("{e}"));
    let file = cache.join("localhost.pem");
    assert_eq!(
        first.notes,
        vec![format!(
            "Using the self-signed development certificate {} (for localhost, 127.0.0.1, ::1)",
            file.display()
        )]
    );
    let made = std::fs::read(&file).unwrap_or_else(|e| panic!("{e}"));
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&file)
        .map(|m| m.permissions().mode() & 0o777)
        .unwrap_or(0);
    assert_eq!(mode, 0o600, "it holds a key");
    server_config(&TlsOptions::default(), Some(cache)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        std::fs::read(&file).ok(),
        Some(made),
        "the second boot uses the same one"
    );
    // A broken file is replaced.
    std::fs::write(&file, "junk").unwrap_or_else(|e| panic!("{e}"));
    server_config(&TlsOptions::default(), Some(cache)).unwrap_or_else(|e| panic!("{e}"));
    assert!(std::fs::read_to_string(&file)
        .unwrap_or_default()
        .contains("BEGIN CERTIFICATE"));
}
