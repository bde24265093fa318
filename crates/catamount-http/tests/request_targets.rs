//! Request targets as the env builder reads them (`target_without_fragment`), the bytes a
//! target may hold, and the header-name rules of `names` (which names share an env key, which
//! keys a name with `_` never takes).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use catamount_http::names::{same_env_key, underscore_poses_as_guarded};
use catamount_http::{parse_head, ErrorKind, Limits};

fn head(raw: &str) -> catamount_http::RequestHead {
    parse_head(raw.as_bytes(), &Limits::default())
        .unwrap_or_else(|e| panic!("{raw:?}: {e}"))
        .unwrap_or_else(|| panic!("{raw:?}: incomplete"))
        .0
}

fn refused(raw: &[u8]) -> ErrorKind {
    match parse_head(raw, &Limits::default()) {
        Err(e) => e.kind(),
        Ok(_) => panic!("{:?} accepted", String::from_utf8_lossy(raw)),
    }
}

#[test]
fn request_uri_leaves_the_fragment_out() {
    for (target, uri, fragment) in [
        ("/a#frag", "/a", Some("frag")),
        ("/a?q=1#frag", "/a?q=1", Some("frag")),
        ("/a#", "/a", Some("")),
        ("/a#b?c/d", "/a", Some("b?c/d")),
        ("http://h/p#f", "http://h/p", Some("f")),
        ("/a?q", "/a?q", None),
        ("*", "*", None),
    ] {
        let method = if target == "*" { "OPTIONS" } else { "GET" };
        let h = head(&format!("{method} {target} HTTP/1.1\r\nHost: x\r\n\r\n"));
        assert_eq!(h.target(), target.as_bytes(), "{target}");
        assert_eq!(h.target_without_fragment(), uri.as_bytes(), "{target}");
        assert_eq!(h.fragment(), fragment.map(str::as_bytes), "{target}");
    }
}

#[test]
fn targets_refuse_quotes_angle_brackets_and_a_second_hash() {
    for target in [
        "/a\"b",
        "/a<b",
        "/a>b",
        "/a?\"",
        "/a?<x>",
        "/a#\"",
        "/a#b#c",
        "/a##",
        "http://h/a\"b",
    ] {
        let raw = format!("GET {target} HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!(
            refused(raw.as_bytes()),
            ErrorKind::InvalidTarget,
            "{target}"
        );
    }
    // The other characters RFC 3986 leaves out are served, as Puma serves them.
    let h = head("GET /a{b}|\\^`[c] HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(h.path(), b"/a{b}|\\^`[c]");
}

#[test]
fn names_sharing_an_env_key() {
    assert!(same_env_key(b"X-Forwarded-For", b"x_forwarded_for"));
    assert!(same_env_key(b"X_Forwarded-For", b"X-FORWARDED-FOR"));
    assert!(!same_env_key(b"X-Forwarded-For", b"X-Forwarded-Fo"));
    assert!(!same_env_key(b"Connection_", b"Connection"));
}

#[test]
fn underscored_names_never_take_a_guarded_key() {
    for name in [
        "X_Forwarded_For",
        "X-Forwarded_For",
        "x_forwarded_proto",
        "X_Forwarded_Host",
        "X_Forwarded_Port",
        "X_Forwarded_Prefix",
        "X_Forwarded_Scheme",
        "X_Forwarded_Ssl",
        "X_Real_IP",
        "Client_IP",
        "True_Client_IP",
        "Content_Length",
        "Content_Type",
        "Transfer_Encoding",
    ] {
        assert!(underscore_poses_as_guarded(name.as_bytes(), None), "{name}");
    }
    // Names without `_` are the real fields; other underscored names are kept (as Puma).
    for name in [
        "X-Forwarded-For",
        "Content-Length",
        "X_Custom",
        "API_KEY",
        "Connection_",
    ] {
        assert!(
            !underscore_poses_as_guarded(name.as_bytes(), None),
            "{name}"
        );
    }
    // The header `set_remote_address header:` names is guarded too.
    assert!(underscore_poses_as_guarded(
        b"Fly_Client_IP",
        Some(b"Fly-Client-IP")
    ));
    assert!(!underscore_poses_as_guarded(
        b"Fly-Client-IP",
        Some(b"Fly-Client-IP")
    ));
}
