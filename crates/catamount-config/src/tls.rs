//! TLS listener options: Puma's `ssl://` query parameters and `ssl_bind` keys (puma-reference
//! §2.4), parsed and checked into [`TlsOptions`], the one place their values are validated.
//!
//! Only the syntax and what can be known without touching a file is checked here: unknown
//! parameters, values out of their set, a `ca` missing for `verify_mode=peer`, versions rustls
//! does not speak. Whether the files exist, the key matches the certificate or a cipher name
//! maps to a rustls suite is decided when the listener's TLS configuration is built, which
//! names the bind in its error too.

use std::path::PathBuf;

/// Where a certificate chain or a private key comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pem {
    /// A PEM file, read when the listener is built (and again by each new worker and after a
    /// hot restart, so a renewed certificate is picked up).
    File(PathBuf),
    /// PEM text given in the config file (`ssl_bind ..., cert_pem: File.read(...)`).
    Inline(String),
}

/// Client certificates (`verify_mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum VerifyMode {
    /// Not asked for (Puma's default).
    #[default]
    None,
    /// Asked for and verified against `ca` when sent; a client without one is served.
    Peer,
    /// Required: a client without a certificate trusted by `ca` is refused.
    ForcePeer,
}

/// A TLS protocol version rustls speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TlsVersion {
    Tls12,
    Tls13,
}

/// The server-side session cache (`reuse`; Puma 6+). Tickets (stateless resumption) are on
/// whatever this says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionReuse {
    /// A cache of the default size (`reuse=true`, `reuse=dflt`, or not given: on by default).
    Default,
    /// No server-side cache (`reuse=off`).
    Off,
    /// `reuse=SIZE` or `reuse=SIZE,TIMEOUT` (Puma's `{size:, timeout:}`): entries, seconds.
    Sized { size: u32, timeout: Option<u32> },
}

/// A TLS listener's options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsOptions {
    /// The certificate chain and key; None for both: a self-signed `localhost` certificate
    /// (development only, decided at boot).
    pub cert: Option<Pem>,
    pub key: Option<Pem>,
    /// A command whose standard output is the key's passphrase.
    pub key_password_command: Option<String>,
    /// Trusted roots for client certificates (required by `peer` and `force_peer`).
    pub ca: Option<PathBuf>,
    pub verify_mode: VerifyMode,
    /// OpenSSL X509 verification flag names: given to the builder, which refuses what rustls
    /// cannot do.
    pub verification_flags: Vec<String>,
    /// An OpenSSL cipher string for TLS 1.2 (`ssl_cipher_filter`) and a TLS 1.3 suite list
    /// (`ssl_ciphersuites`), mapped to rustls suites by the builder.
    pub cipher_filter: Option<String>,
    pub ciphersuites: Option<String>,
    /// TLS 1.2 and 1.3 unless narrowed (`min_version`, `max_version`; `no_tlsv1` and
    /// `no_tlsv1_1` are accepted and change nothing: rustls never speaks below 1.2).
    pub min_version: TlsVersion,
    pub max_version: TlsVersion,
    pub reuse: SessionReuse,
}

impl Default for TlsOptions {
    fn default() -> Self {
        TlsOptions {
            cert: None,
            key: None,
            key_password_command: None,
            ca: None,
            verify_mode: VerifyMode::None,
            verification_flags: Vec::new(),
            cipher_filter: None,
            ciphersuites: None,
            min_version: TlsVersion::Tls12,
            max_version: TlsVersion::Tls13,
            reuse: SessionReuse::Default,
        }
    }
}

/// The parameters [`TlsOptions::from_params`] knows besides the listener's own (`backlog`,
/// `low_latency`).
pub const TLS_PARAMS: &[&str] = &[
    "cert",
    "key",
    "key_password_command",
    "ca",
    "verify_mode",
    "verification_flags",
    "ssl_cipher_filter",
    "ssl_ciphersuites",
    "no_tlsv1",
    "no_tlsv1_1",
    "min_version",
    "max_version",
    "reuse",
];

impl TlsOptions {
    /// From an `ssl://` URL's query parameters (already split, `%`-escapes already decoded),
    /// the listener's own (`backlog`, `low_latency`) left out by the caller. `cert_pem` and
    /// `key_pem` never come this way: they would put a key in a URL that is logged.
    pub fn from_params(params: &[(String, String)]) -> Result<TlsOptions, String> {
        let mut o = TlsOptions::default();
        for (key, value) in params {
            match key.as_str() {
                "cert" => o.cert = Some(Pem::File(path(key, value)?)),
                "key" => o.key = Some(Pem::File(path(key, value)?)),
                "key_password_command" => o.key_password_command = Some(nonempty(key, value)?),
                "ca" => o.ca = Some(path(key, value)?),
                "verify_mode" => o.verify_mode = verify_mode(value)?,
                "verification_flags" => {
                    o.verification_flags = value
                        .split(',')
                        .map(str::trim)
                        .filter(|f| !f.is_empty())
                        .map(str::to_string)
                        .collect();
                }
                "ssl_cipher_filter" => o.cipher_filter = Some(nonempty(key, value)?),
                "ssl_ciphersuites" => o.ciphersuites = Some(nonempty(key, value)?),
                "no_tlsv1" | "no_tlsv1_1" => {
                    boolean(key, value)?;
                }
                "min_version" => o.min_version = version(key, value)?,
                "max_version" => o.max_version = version(key, value)?,
                "reuse" => o.reuse = reuse(value)?,
                _ => {
                    return Err(format!(
                        "unknown parameter {key:?} for ssl:// (known: backlog, low_latency, {})",
                        TLS_PARAMS.join(", ")
                    ))
                }
            }
        }
        o.check()?;
        Ok(o)
    }

    /// What no single parameter shows: a key without a certificate (or the reverse), client
    /// verification without trusted roots, an empty version range.
    pub fn check(&self) -> Result<(), String> {
        match (&self.cert, &self.key) {
            (Some(_), None) => return Err("a cert needs its key (key= or key_pem:)".into()),
            (None, Some(_)) => return Err("a key needs its cert (cert= or cert_pem:)".into()),
            _ => {}
        }
        if self.verify_mode != VerifyMode::None && self.ca.is_none() {
            return Err(
                "verify_mode=peer and force_peer need ca= (the roots client certificates are checked against)"
                    .into(),
            );
        }
        if self.min_version > self.max_version {
            return Err("min_version is above max_version".into());
        }
        Ok(())
    }
}

fn nonempty(key: &str, value: &str) -> Result<String, String> {
    if value.is_empty() {
        return Err(format!("{key} is empty"));
    }
    Ok(value.to_string())
}

fn path(key: &str, value: &str) -> Result<PathBuf, String> {
    nonempty(key, value).map(PathBuf::from)
}

fn boolean(key: &str, value: &str) -> Result<bool, String> {
    match value {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(format!("{key} must be true or false, not {value:?}")),
    }
}

fn verify_mode(value: &str) -> Result<VerifyMode, String> {
    match value {
        "none" => Ok(VerifyMode::None),
        "peer" => Ok(VerifyMode::Peer),
        "force_peer" => Ok(VerifyMode::ForcePeer),
        _ => Err(format!(
            "verify_mode must be none, peer or force_peer, not {value:?}"
        )),
    }
}

fn version(key: &str, value: &str) -> Result<TlsVersion, String> {
    match value.to_ascii_lowercase().replace(['.', '_'], "").as_str() {
        "tlsv12" | "tls12" => Ok(TlsVersion::Tls12),
        "tlsv13" | "tls13" => Ok(TlsVersion::Tls13),
        "sslv3" | "tlsv1" | "tls1" | "tlsv10" | "tls10" | "tlsv11" | "tls11" => Err(format!(
            "{key}={value}: only TLS 1.2 and 1.3 are spoken (older versions are broken)"
        )),
        _ => Err(format!("{key} must be TLSv1_2 or TLSv1_3, not {value:?}")),
    }
}

fn reuse(value: &str) -> Result<SessionReuse, String> {
    let number = |s: &str| s.trim().parse::<u32>().ok();
    match value {
        "true" | "dflt" => return Ok(SessionReuse::Default),
        "off" | "false" => return Ok(SessionReuse::Off),
        _ => {}
    }
    let (size, timeout) = match value.split_once(',') {
        Some((size, timeout)) => (number(size), Some(number(timeout))),
        None => (number(value), None),
    };
    match (size, timeout) {
        (Some(size), None) => Ok(SessionReuse::Sized {
            size,
            timeout: None,
        }),
        (Some(size), Some(Some(timeout))) => Ok(SessionReuse::Sized {
            size,
            timeout: Some(timeout),
        }),
        _ => Err(format!(
            "reuse must be true, dflt, off, SIZE or SIZE,TIMEOUT, not {value:?}"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn parse(pairs: &[(&str, &str)]) -> Result<TlsOptions, String> {
        TlsOptions::from_params(&params(pairs))
    }

    #[test]
    fn the_usual_bind() {
        let o = parse(&[
            ("cert", "/etc/ssl/a.crt"),
            ("key", "/etc/ssl/a.key"),
            ("verify_mode", "none"),
        ])
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(o.cert, Some(Pem::File("/etc/ssl/a.crt".into())));
        assert_eq!(o.key, Some(Pem::File("/etc/ssl/a.key".into())));
        assert_eq!(o.verify_mode, VerifyMode::None);
        assert_eq!(
            (o.min_version, o.max_version),
            (TlsVersion::Tls12, TlsVersion::Tls13)
        );
        assert_eq!(o.reuse, SessionReuse::Default);
    }

    #[test]
    fn no_cert_and_no_key_is_the_development_certificate() {
        let o = parse(&[]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((o.cert, o.key), (None, None));
    }

    #[test]
    fn every_value_form() {
        let o = parse(&[
            ("cert", "c"),
            ("key", "k"),
            ("ca", "ca.pem"),
            ("verify_mode", "force_peer"),
            ("verification_flags", "PARTIAL_CHAIN, CRL_CHECK"),
            ("ssl_cipher_filter", "ECDHE-RSA-AES128-GCM-SHA256"),
            ("ssl_ciphersuites", "TLS_AES_128_GCM_SHA256"),
            ("no_tlsv1", "true"),
            ("no_tlsv1_1", "false"),
            ("min_version", "TLSv1_3"),
            ("max_version", "tls1.3"),
            ("reuse", "100,600"),
            ("key_password_command", "echo secret"),
        ])
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(o.verify_mode, VerifyMode::ForcePeer);
        assert_eq!(o.verification_flags, vec!["PARTIAL_CHAIN", "CRL_CHECK"]);
        assert_eq!(o.min_version, TlsVersion::Tls13);
        assert_eq!(
            o.reuse,
            SessionReuse::Sized {
                size: 100,
                timeout: Some(600)
            }
        );
        assert_eq!(o.key_password_command.as_deref(), Some("echo secret"));
        assert_eq!(
            parse(&[("reuse", "off")]).map(|o| o.reuse),
            Ok(SessionReuse::Off)
        );
        assert_eq!(
            parse(&[("reuse", "64")]).map(|o| o.reuse),
            Ok(SessionReuse::Sized {
                size: 64,
                timeout: None
            })
        );
    }

    #[test]
    fn refusals_say_why() {
        for (pairs, needle) in [
            (&[("cert", "c")][..], "needs its key"),
            (&[("key", "k")][..], "needs its cert"),
            (&[("verify_mode", "peer")][..], "need ca="),
            (&[("verify_mode", "maybe")][..], "none, peer or force_peer"),
            (&[("min_version", "TLSv1_1")][..], "only TLS 1.2 and 1.3"),
            (&[("max_version", "TLSv9")][..], "TLSv1_2 or TLSv1_3"),
            (
                &[("min_version", "TLSv1_3"), ("max_version", "TLSv1_2")][..],
                "above max_version",
            ),
            (&[("reuse", "lots")][..], "SIZE,TIMEOUT"),
            (&[("reuse", "10,x")][..], "SIZE,TIMEOUT"),
            (&[("no_tlsv1", "yes")][..], "true or false"),
            (&[("cert", "")][..], "cert is empty"),
            (&[("sni", "x")][..], "unknown parameter \"sni\""),
        ] {
            let err = parse(pairs)
                .err()
                .unwrap_or_else(|| panic!("{pairs:?} parsed"));
            assert!(err.contains(needle), "{pairs:?}: {err}");
        }
    }
}
