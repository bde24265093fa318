//! The self-signed certificate for `ssl_bind` without `cert:` and `key:` in development (what
//! Puma does with the `localhost` gem): made on first use, kept in a cache directory and used
//! again until it expires, so a browser's exception for it lasts.
//!
//! The certificate and its key live in one file, written under a temporary name and renamed:
//! cluster workers that build their listeners at the same moment each read a whole pair,
//! never one's certificate with another's key.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use catamount_config::tls::Pem;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// The names the development certificate is good for.
pub const DEVELOPMENT_NAMES: &[&str] = &["localhost", "127.0.0.1", "::1"];

const FILE_NAME: &str = "localhost.pem";

/// The development certificate chain and key, and the file they are kept in (made now when
/// missing, unreadable or expired).
pub(crate) fn certificate(
    dir: &Path,
) -> Result<
    (
        Vec<CertificateDer<'static>>,
        PrivateKeyDer<'static>,
        PathBuf,
    ),
    String,
> {
    let path = dir.join(FILE_NAME);
    if let Some((chain, key)) = usable(&path) {
        return Ok((chain, key, path));
    }
    let names: Vec<String> = DEVELOPMENT_NAMES.iter().map(|n| n.to_string()).collect();
    let made = rcgen::generate_simple_self_signed(names)
        .map_err(|e| format!("cannot make a development certificate: {e}"))?;
    let pem = format!("{}{}", made.cert.pem(), made.key_pair.serialize_pem());
    store(dir, &path, pem.as_bytes()).map_err(|e| {
        format!(
            "cannot keep the development certificate in {}: {e}",
            path.display()
        )
    })?;
    let key = PrivateKeyDer::try_from(made.key_pair.serialize_der())
        .map_err(|e| format!("development certificate: {e}"))?;
    Ok((vec![made.cert.der().clone()], key, path))
}

/// The pair in `path`, when it reads and is valid now.
fn usable(path: &Path) -> Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)> {
    let pem = Pem::File(path.to_path_buf());
    let chain = crate::certificates::chain("cert", &pem).ok()?;
    let key = crate::certificates::key(&pem, None).ok()?;
    crate::validity::check_now(chain.first()?.as_ref()).ok()?;
    Some((chain, key))
}

/// Writes `bytes` to `path` through a temporary file and a rename (readable by the owner
/// only: it holds a key).
fn store(dir: &Path, path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let temp = dir.join(format!(".{FILE_NAME}.{}", std::process::id()));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&temp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&temp, path)
}
