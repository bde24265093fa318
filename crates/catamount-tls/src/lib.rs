//! A TLS listener's rustls configuration, built from its checked options
//! (`catamount_config::tls::TlsOptions`).
//!
//! Everything that can make a boot fail is found here, before a socket is served: an unreadable
//! or empty certificate file, a key that does not match the certificate, a certificate that is
//! expired or not yet valid, a passphrase command that fails, a cipher list or verification
//! flag rustls cannot honour. Each refusal is one line saying what and why; the caller names
//! the bind. Nothing is ever made weaker silently: what cannot be done is refused; what a
//! setting names that does not exist in rustls (an OpenSSL-only cipher in a list that still
//! leaves suites to offer) is reported in [`Built::notes`] for the boot to log.
//!
//! Always: TLS 1.2 and 1.3 only (narrowed by `min_version`/`max_version`), no renegotiation
//! (rustls has none), ALPN `http/1.1`, session tickets and a session cache on unless `reuse`
//! says otherwise.

mod certificates;
mod ciphers;
mod development;
mod validity;

use std::path::Path;
use std::sync::Arc;

use catamount_config::tls::{SessionReuse, TlsOptions, TlsVersion, VerifyMode};
use rustls::crypto::CryptoProvider;
use rustls::server::{NoServerSessionStorage, ServerSessionMemoryCache, WebPkiClientVerifier};
use rustls::{RootCertStore, ServerConfig};

pub use development::DEVELOPMENT_NAMES;

/// Sessions the server-side cache keeps when `reuse` does not say (OpenSSL keeps 20,480; a
/// resumed session is a few hundred bytes).
pub const DEFAULT_SESSION_CACHE: usize = 4096;

/// A listener's TLS configuration and what the boot should say about it.
#[derive(Debug)]
pub struct Built {
    pub config: Arc<ServerConfig>,
    /// Lines for the boot's log: suites named that rustls does not have, the development
    /// certificate's path.
    pub notes: Vec<String>,
}

/// Where a development certificate may come from: `None` outside development (a bind without
/// `cert` and `key` is then refused), else the directory it is cached in.
pub type DevelopmentCache<'a> = Option<&'a Path>;

/// Builds the rustls configuration for one listener.
pub fn server_config(
    opts: &TlsOptions,
    development: DevelopmentCache<'_>,
) -> Result<Built, String> {
    let mut notes = Vec::new();
    let (chain, key) = match (&opts.cert, &opts.key) {
        (Some(cert), Some(key)) => (
            certificates::chain("cert", cert)?,
            certificates::key(key, opts.key_password_command.as_deref())?,
        ),
        _ => {
            let Some(dir) = development else {
                return Err("needs cert and key (a self-signed development certificate is made only in the development and test environments)".into());
            };
            let (chain, key, path) = development::certificate(dir)?;
            notes.push(format!(
                "Using the self-signed development certificate {} (for {})",
                path.display(),
                DEVELOPMENT_NAMES.join(", ")
            ));
            (chain, key)
        }
    };
    if let Some(leaf) = chain.first() {
        validity::check_now(leaf.as_ref())?;
    }
    let mut provider = provider();
    let selected = ciphers::select(opts)?;
    notes.extend(selected.notes);
    provider.cipher_suites = selected.suites;
    let provider = Arc::new(provider);
    let versions: Vec<&'static rustls::SupportedProtocolVersion> = [
        (TlsVersion::Tls12, &rustls::version::TLS12),
        (TlsVersion::Tls13, &rustls::version::TLS13),
    ]
    .into_iter()
    .filter(|(v, _)| (opts.min_version..=opts.max_version).contains(v))
    .map(|(_, v)| v)
    .collect();
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&versions)
        .map_err(|e| format!("TLS versions: {e}"))?;
    let builder = match client_verifier(opts, &provider)? {
        Some(verifier) => builder.with_client_cert_verifier(verifier),
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_single_cert(chain, key).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => "the key does not match the certificate".to_string(),
        other => format!("the certificate or key cannot be used: {other}"),
    })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    match opts.reuse {
        SessionReuse::Default => {
            config.session_storage = ServerSessionMemoryCache::new(DEFAULT_SESSION_CACHE);
        }
        SessionReuse::Off => config.session_storage = Arc::new(NoServerSessionStorage {}),
        SessionReuse::Sized {
            timeout: Some(_), ..
        } => {
            return Err("reuse: a session timeout cannot be honoured (rustls keeps a session until the cache evicts it): give only a size".into());
        }
        SessionReuse::Sized { size, .. } => {
            config.session_storage = ServerSessionMemoryCache::new(size.max(1) as usize);
        }
    }
    config.ticketer =
        rustls::crypto::ring::Ticketer::new().map_err(|e| format!("session tickets: {e}"))?;
    Ok(Built {
        config: Arc::new(config),
        notes,
    })
}

/// The *ring* provider. rustls 0.23.48 deprecates it because it has no post-quantum key
/// exchange (X25519MLKEM768, which only the aws-lc-rs provider offers); aws-lc-rs needs cmake
/// and nasm and builds several times slower here, so Catamount stays on *ring* for now: classic
/// X25519/P-256/P-384 key exchange, the suites below.
#[allow(deprecated)]
pub(crate) fn provider() -> CryptoProvider {
    rustls::crypto::ring::default_provider()
}

/// `verify_mode peer` (a certificate is checked when sent) or `force_peer` (one is required),
/// against the roots in `ca`. OpenSSL's `verification_flags` have no rustls counterpart: any is
/// refused rather than ignored.
fn client_verifier(
    opts: &TlsOptions,
    provider: &Arc<CryptoProvider>,
) -> Result<Option<Arc<dyn rustls::server::danger::ClientCertVerifier>>, String> {
    if let Some(flag) = opts.verification_flags.first() {
        return Err(format!(
            "verification_flags ({flag}) are OpenSSL's and cannot be honoured by rustls, which verifies client certificates by the WebPKI rules"
        ));
    }
    if opts.verify_mode == VerifyMode::None {
        return Ok(None);
    }
    let Some(ca) = &opts.ca else {
        return Err("verify_mode peer and force_peer need ca".into());
    };
    let mut roots = RootCertStore::empty();
    for cert in certificates::chain("ca", &catamount_config::tls::Pem::File(ca.clone()))? {
        roots
            .add(cert)
            .map_err(|e| format!("ca {}: a certificate cannot be a root: {e}", ca.display()))?;
    }
    let builder = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone());
    let builder = match opts.verify_mode {
        VerifyMode::Peer => builder.allow_unauthenticated(),
        _ => builder,
    };
    builder
        .build()
        .map(Some)
        .map_err(|e| format!("ca {}: {e}", ca.display()))
}

#[cfg(test)]
mod tests;
