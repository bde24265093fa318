//! Fuzz target for bind URLs (`catamount_config::BindUrl::parse`, `parse_tls`, `tcp`, with the
//! TLS parameters behind `ssl://`) and the `/proc/net/if_inet6` reader; the input is the text.
//!
//! Beyond "no panic": an accepted URL keeps its text, has a positive backlog, a host to listen
//! on, file modes that are modes; a TCP bind's addresses make the same bind again through
//! `BindUrl::tcp` (the DSL's `port`), and `ssl://` parses the same through both entry points.
#![no_main]

use catamount_config::bind::{bracket_if_v6, has_non_loopback_ipv6};
use catamount_config::{BindKind, BindUrl};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = has_non_loopback_ipv6(text);
    let parsed = BindUrl::parse(text);
    let as_tls = BindUrl::parse_tls(text);
    if !text.starts_with("ssl://") {
        assert!(as_tls.is_err(), "parse_tls takes ssl:// only");
    }
    let bind = match parsed {
        Ok(bind) => bind,
        Err(e) => {
            assert_eq!(e.url, text);
            assert!(!e.reason.is_empty() && !e.to_string().is_empty());
            return;
        }
    };
    assert_eq!(bind.original, text);
    assert!(bind.backlog > 0);
    match &bind.kind {
        BindKind::Tcp { hosts, port, .. } => {
            assert!(!hosts.is_empty());
            if let [host] = hosts.as_slice() {
                // The DSL's `port PORT, HOST` spells the address and parses it again.
                let again = BindUrl::tcp(&host.to_string(), *port);
                assert!(
                    matches!(&again, Ok(BindUrl { kind: BindKind::Tcp { hosts: h, port: p, .. }, .. }) if h == hosts && p == port),
                    "{text:?} -> {host} -> {again:?} ({})",
                    bracket_if_v6(&host.to_string())
                );
            }
        }
        BindKind::Unix { path, umask, mode } => {
            assert!(!path.is_empty());
            assert!(umask.is_none_or(|m| m <= 0o7777) && mode.is_none_or(|m| m <= 0o7777));
        }
        BindKind::Tls {
            hosts, port, tls, ..
        } => {
            assert!(!hosts.is_empty());
            match as_tls {
                Ok(t) => {
                    assert_eq!((&t.hosts, t.port, t.backlog), (hosts, *port, bind.backlog));
                    assert_eq!(&t.tls, tls.as_ref());
                }
                Err(e) => panic!("ssl:// accepted by parse, refused by parse_tls: {e}"),
            }
        }
    }
});
