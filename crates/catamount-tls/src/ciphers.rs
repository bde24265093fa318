//! `ssl_cipher_filter` (an OpenSSL cipher string, TLS 1.2) and `ssl_ciphersuites` (a TLS 1.3
//! suite list) mapped onto the suites rustls offers.
//!
//! rustls offers six TLS 1.2 suites, all ECDHE with an AEAD cipher, and three TLS 1.3 suites;
//! everything OpenSSL has besides (static RSA, DHE, CBC, RC4, export, PSK, ...) it never
//! offers. So a cipher string is read as OpenSSL reads it, left to right: a name or alias adds
//! its suites, `-X` removes them, `!X` removes them for good, `A+B` is the suites in both,
//! `@STRENGTH`/`@SECLEVEL=n` and a leading `+` (ordering) change nothing here. Aliases that
//! only name what rustls lacks (`aNULL`, `RC4`, `kRSA`, `DHE`, ...) select nothing, so
//! excluding them is free; a specific OpenSSL suite rustls lacks is left out and reported; a
//! word OpenSSL would not know either is refused; a list that leaves nothing is refused.

use catamount_config::tls::{TlsOptions, TlsVersion};
use rustls::crypto::ring::cipher_suite as suite;
use rustls::SupportedCipherSuite;

/// The suites a listener offers, and what the boot should report.
pub(crate) struct Selected {
    pub suites: Vec<SupportedCipherSuite>,
    pub notes: Vec<String>,
}

/// A TLS 1.2 suite rustls offers, with the properties OpenSSL's aliases select on.
struct Tls12 {
    openssl: &'static str,
    suite: SupportedCipherSuite,
    ecdsa: bool,
    cipher: &'static str,
    hash: &'static str,
}

fn tls12_suites() -> [Tls12; 6] {
    let s = |openssl, suite, ecdsa, cipher, hash| Tls12 {
        openssl,
        suite,
        ecdsa,
        cipher,
        hash,
    };
    [
        s(
            "ECDHE-ECDSA-AES256-GCM-SHA384",
            suite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
            true,
            "AES256",
            "SHA384",
        ),
        s(
            "ECDHE-ECDSA-AES128-GCM-SHA256",
            suite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
            true,
            "AES128",
            "SHA256",
        ),
        s(
            "ECDHE-ECDSA-CHACHA20-POLY1305",
            suite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
            true,
            "CHACHA20",
            "SHA256",
        ),
        s(
            "ECDHE-RSA-AES256-GCM-SHA384",
            suite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
            false,
            "AES256",
            "SHA384",
        ),
        s(
            "ECDHE-RSA-AES128-GCM-SHA256",
            suite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
            false,
            "AES128",
            "SHA256",
        ),
        s(
            "ECDHE-RSA-CHACHA20-POLY1305",
            suite::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
            false,
            "CHACHA20",
            "SHA256",
        ),
    ]
}

/// OpenSSL aliases and keywords that select only suites rustls does not have.
const NOTHING_HERE: &[&str] = &[
    "aNULL",
    "eNULL",
    "NULL",
    "COMPLEMENTOFALL",
    "COMPLEMENTOFDEFAULT",
    "LOW",
    "MEDIUM",
    "EXPORT",
    "EXP",
    "EXPORT40",
    "EXPORT56",
    "MD5",
    "RC4",
    "RC2",
    "DES",
    "3DES",
    "IDEA",
    "SEED",
    "CAMELLIA",
    "CAMELLIA128",
    "CAMELLIA256",
    "ARIA",
    "ARIA128",
    "ARIA256",
    "ARIAGCM",
    "PSK",
    "kPSK",
    "aPSK",
    "ECDHEPSK",
    "kECDHEPSK",
    "DHEPSK",
    "kDHEPSK",
    "RSAPSK",
    "kRSAPSK",
    "SRP",
    "kSRP",
    "aSRP",
    "DSS",
    "aDSS",
    "kRSA",
    "RSA",
    "DH",
    "DHE",
    "EDH",
    "kDHE",
    "kEDH",
    "ADH",
    "AECDH",
    "kDH",
    "kDHr",
    "kDHd",
    "aDH",
    "ECDH",
    "kECDHr",
    "kECDHe",
    "aECDH",
    "SHA1",
    "SHA",
    "AESCCM",
    "AESCCM8",
    "CCM",
    "CCM8",
    "SSLv3",
    "TLSv1",
    "TLSv1.0",
    "GOST94",
    "GOST89MAC",
    "kGOST",
    "aGOST",
    "aGOST01",
    "GOST2012",
    "SUITEB128",
    "SUITEB128ONLY",
    "SUITEB192",
];

pub(crate) fn select(opts: &TlsOptions) -> Result<Selected, String> {
    let mut notes = Vec::new();
    let tls12_on = opts.min_version <= TlsVersion::Tls12;
    let tls13_on = opts.max_version >= TlsVersion::Tls13;
    let tls12 = match &opts.cipher_filter {
        Some(filter) => {
            let (chosen, missing) = filter_tls12(filter)?;
            if chosen.is_empty() && tls12_on {
                return Err(format!(
                    "ssl_cipher_filter {filter:?} leaves no TLS 1.2 suite rustls offers (it offers {}{})",
                    tls12_suites().map(|s| s.openssl).join(", "),
                    not_offered(&missing)
                ));
            }
            note_left_out(&mut notes, "ssl_cipher_filter", &missing);
            chosen
        }
        None => tls12_suites().map(|s| s.suite).to_vec(),
    };
    let tls13 = match &opts.ciphersuites {
        Some(list) => {
            let (chosen, missing) = list_tls13(list)?;
            if chosen.is_empty() && tls13_on {
                return Err(format!(
                    "ssl_ciphersuites {list:?} leaves no TLS 1.3 suite rustls offers (it offers TLS_AES_256_GCM_SHA384, TLS_AES_128_GCM_SHA256, TLS_CHACHA20_POLY1305_SHA256{})",
                    not_offered(&missing)
                ));
            }
            note_left_out(&mut notes, "ssl_ciphersuites", &missing);
            chosen
        }
        None => tls13_suites().iter().map(|(_, s)| *s).collect(),
    };
    Ok(Selected {
        suites: tls13.into_iter().chain(tls12).collect(),
        notes,
    })
}

/// A refusal's tail naming the OpenSSL suites asked for that rustls lacks (a list of only CBC,
/// RC4, DHE, CCM, ... suites), so the user sees those are the problem.
fn not_offered(missing: &[String]) -> String {
    if missing.is_empty() {
        String::new()
    } else {
        format!("; not offered: {}", missing.join(", "))
    }
}

/// The boot's note about OpenSSL suites `option` named that rustls lacks, when it still leaves
/// suites to offer.
fn note_left_out(notes: &mut Vec<String>, option: &str, missing: &[String]) {
    if !missing.is_empty() {
        notes.push(format!(
            "{option}: {} not offered by rustls (left out)",
            missing.join(", ")
        ));
    }
}

fn tls13_suites() -> [(&'static str, SupportedCipherSuite); 3] {
    [
        ("TLS_AES_256_GCM_SHA384", suite::TLS13_AES_256_GCM_SHA384),
        ("TLS_AES_128_GCM_SHA256", suite::TLS13_AES_128_GCM_SHA256),
        (
            "TLS_CHACHA20_POLY1305_SHA256",
            suite::TLS13_CHACHA20_POLY1305_SHA256,
        ),
    ]
}

/// The TLS 1.3 suites a list selects, and the OpenSSL suites it names that rustls lacks.
type Tls13Choice = (Vec<SupportedCipherSuite>, Vec<String>);

/// `ssl_ciphersuites`: TLS 1.3 suite names separated by `:`, in OpenSSL's spelling (the CCM
/// ones are OpenSSL's and not rustls's).
fn list_tls13(list: &str) -> Result<Tls13Choice, String> {
    let mut chosen = Vec::new();
    let mut missing = Vec::new();
    for name in list.split(':').map(str::trim).filter(|n| !n.is_empty()) {
        match tls13_suites().into_iter().find(|(n, _)| *n == name) {
            Some((_, s)) => {
                if !chosen.contains(&s) {
                    chosen.push(s);
                }
            }
            None if matches!(name, "TLS_AES_128_CCM_SHA256" | "TLS_AES_128_CCM_8_SHA256") => {
                missing.push(name.to_string());
            }
            None => {
                return Err(format!(
                    "ssl_ciphersuites: {name:?} is not a TLS 1.3 suite name"
                ))
            }
        }
    }
    Ok((chosen, missing))
}

/// Which of the six TLS 1.2 suites one cipher-string word selects; Err(word) when OpenSSL
/// would not know it either; `missing` gets a specific OpenSSL suite rustls lacks.
fn word(word: &str, missing: &mut Vec<String>) -> Result<[bool; 6], String> {
    let all = tls12_suites();
    let by = |f: &dyn Fn(&Tls12) -> bool| all.each_ref().map(f);
    Ok(match word {
        "ALL" | "DEFAULT" | "HIGH" | "ECDHE" | "EECDH" | "kECDHE" | "kEECDH" | "AEAD"
        | "TLSv1.2" | "FIPS" => [true; 6],
        "aECDSA" | "ECDSA" => by(&|s| s.ecdsa),
        "aRSA" => by(&|s| !s.ecdsa),
        "AES" => by(&|s| s.cipher.starts_with("AES")),
        "AESGCM" => by(&|s| s.cipher.starts_with("AES")),
        "AES128" => by(&|s| s.cipher == "AES128"),
        "AES256" => by(&|s| s.cipher == "AES256"),
        "CHACHA20" => by(&|s| s.cipher == "CHACHA20"),
        "SHA256" => by(&|s| s.hash == "SHA256"),
        "SHA384" => by(&|s| s.hash == "SHA384"),
        w if NOTHING_HERE.contains(&w) => [false; 6],
        w => match all.iter().position(|s| s.openssl == w) {
            Some(i) => {
                let mut one = [false; 6];
                if let Some(slot) = one.get_mut(i) {
                    *slot = true;
                }
                one
            }
            // Shaped like an OpenSSL suite name (`AES128-SHA`, `DHE-RSA-AES256-GCM-SHA384`).
            None if w.contains('-')
                && w.bytes()
                    .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'-') =>
            {
                if !missing.iter().any(|m| m == w) {
                    missing.push(w.to_string());
                }
                [false; 6]
            }
            None => return Err(w.to_string()),
        },
    })
}

/// The TLS 1.2 suites `filter` selects (in rustls's order of preference), and the specific
/// OpenSSL suites it names that rustls lacks.
fn filter_tls12(filter: &str) -> Result<(Vec<SupportedCipherSuite>, Vec<String>), String> {
    let mut on = [false; 6];
    let mut banned = [false; 6];
    let mut missing = Vec::new();
    for token in filter
        .split([':', ',', ' '])
        .map(str::trim)
        .filter(|t| !t.is_empty())
    {
        // `@STRENGTH`, `@SECLEVEL=n`: also written straight after a word (`!aNULL@STRENGTH`).
        let token = token.split('@').next().unwrap_or_default();
        if token.is_empty() {
            continue;
        }
        let (op, rest) = match token.as_bytes().first() {
            Some(b'!') => ('!', token.get(1..).unwrap_or_default()),
            Some(b'-') => ('-', token.get(1..).unwrap_or_default()),
            Some(b'+') => continue,
            _ => (' ', token),
        };
        let mut selected = [true; 6];
        for part in rest.split('+') {
            let these = word(part, &mut missing).map_err(|w| {
                format!("ssl_cipher_filter: {w:?} is not an OpenSSL cipher name or alias")
            })?;
            for (s, t) in selected.iter_mut().zip(these) {
                *s &= t;
            }
        }
        for i in 0..6 {
            let (Some(&picked), Some(o), Some(b)) =
                (selected.get(i), on.get_mut(i), banned.get_mut(i))
            else {
                continue;
            };
            if !picked {
                continue;
            }
            match op {
                '!' => {
                    *o = false;
                    *b = true;
                }
                '-' => *o = false,
                _ => *o = !*b,
            }
        }
    }
    let chosen = tls12_suites()
        .into_iter()
        .zip(on)
        .filter(|(_, on)| *on)
        .map(|(s, _)| s.suite)
        .collect();
    Ok((chosen, missing))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(filter: &str) -> Result<(Vec<String>, Vec<String>), String> {
        filter_tls12(filter).map(|(suites, missing)| {
            (
                suites.iter().map(|s| format!("{:?}", s.suite())).collect(),
                missing,
            )
        })
    }

    #[test]
    fn pumas_default_and_common_strings() {
        let (all, missing) = names("HIGH:!aNULL@STRENGTH").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(all.len(), 6);
        assert!(missing.is_empty());
        // Mozilla's "intermediate" list for TLS 1.2.
        let (some, missing) = names("ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305:DHE-RSA-AES128-GCM-SHA256:DHE-RSA-AES256-GCM-SHA384")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(some.len(), 6);
        assert_eq!(
            missing,
            vec!["DHE-RSA-AES128-GCM-SHA256", "DHE-RSA-AES256-GCM-SHA384"]
        );
        assert_eq!(
            names("ECDHE+AES128:!ECDSA").map(|(s, _)| s),
            Ok(vec!["TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256".to_string()])
        );
        assert_eq!(
            names("ALL:-CHACHA20:CHACHA20").map(|(s, _)| s.len()),
            Ok(6),
            "- can be added back"
        );
        assert_eq!(
            names("ALL:!CHACHA20:CHACHA20").map(|(s, _)| s.len()),
            Ok(4),
            "! cannot"
        );
        assert_eq!(
            names("aRSA:!RSA:!kRSA").map(|(s, _)| s.len()),
            Ok(3),
            "!RSA is static RSA key exchange, not RSA certificates"
        );
    }

    #[test]
    fn refusals() {
        assert!(names("HIGH:NOPE")
            .err()
            .unwrap_or_default()
            .contains("\"NOPE\" is not an OpenSSL cipher name"));
        let none = TlsOptions {
            cipher_filter: Some("AES128-SHA:RC4".into()),
            ..TlsOptions::default()
        };
        let err = select(&none).err().unwrap_or_default();
        assert!(err.contains("leaves no TLS 1.2 suite"), "{err}");
        assert!(err.contains("; not offered: AES128-SHA)"), "{err}");
        // ... unless TLS 1.2 is off anyway.
        let only13 = TlsOptions {
            min_version: TlsVersion::Tls13,
            ..none
        };
        assert!(select(&only13).is_ok());
        let bad13 = TlsOptions {
            ciphersuites: Some("TLS_AES_128_GCM_SHA256:TLS_RC4".into()),
            ..TlsOptions::default()
        };
        assert!(select(&bad13)
            .err()
            .unwrap_or_default()
            .contains("\"TLS_RC4\" is not a TLS 1.3 suite"));
    }

    #[test]
    fn both_lists_together() {
        let o = TlsOptions {
            cipher_filter: Some("ECDHE-RSA-AES256-GCM-SHA384:AES128-SHA".into()),
            ciphersuites: Some("TLS_CHACHA20_POLY1305_SHA256:TLS_AES_128_CCM_SHA256".into()),
            ..TlsOptions::default()
        };
        let s = select(&o).unwrap_or_else(|e| panic!("{e}"));
        let names: Vec<String> = s
            .suites
            .iter()
            .map(|s| format!("{:?}", s.suite()))
            .collect();
        assert_eq!(
            names,
            vec![
                "TLS13_CHACHA20_POLY1305_SHA256",
                "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384"
            ]
        );
        assert_eq!(
            s.notes,
            vec![
                "ssl_cipher_filter: AES128-SHA not offered by rustls (left out)",
                "ssl_ciphersuites: TLS_AES_128_CCM_SHA256 not offered by rustls (left out)"
            ]
        );
    }
}
