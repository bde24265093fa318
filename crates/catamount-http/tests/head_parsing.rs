//! Request heads: the grammar, target forms, versions, methods, Host, connection options,
//! leading empty lines, and pipelined requests.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use catamount_http::{
    parse_head, BodyFraming, ChunkedDecoder, ErrorKind, HeadParser, Limits, MethodPolicy,
    RequestHead, Version,
};

fn ok_with(raw: &str, limits: &Limits) -> RequestHead {
    let (head, consumed) = parse_head(raw.as_bytes(), limits)
        .unwrap_or_else(|e| panic!("{raw:?}: {e}"))
        .unwrap_or_else(|| panic!("{raw:?}: incomplete"));
    assert_eq!(consumed, raw.len(), "{raw:?}");
    assert_eq!(head.head_len(), consumed);
    head
}

fn ok(raw: &str) -> RequestHead {
    ok_with(raw, &Limits::default())
}

fn err_with(raw: &[u8], limits: &Limits) -> (ErrorKind, u16) {
    match parse_head(raw, limits) {
        Err(e) => (e.kind(), e.status()),
        Ok(r) => panic!(
            "{:?} accepted: {:?}",
            String::from_utf8_lossy(raw),
            r.map(|(h, _)| h.method().to_string())
        ),
    }
}

fn err(raw: &[u8]) -> (ErrorKind, u16) {
    err_with(raw, &Limits::default())
}

fn any_method() -> Limits {
    Limits {
        methods: MethodPolicy::Any,
        ..Limits::default()
    }
}

#[test]
fn simple_get() {
    let h = ok("GET /a/b?x=1&y=2#top HTTP/1.1\r\nHost: example.com\r\nAccept:  */*  \r\n\r\n");
    assert_eq!(h.method(), "GET");
    assert_eq!(h.target(), b"/a/b?x=1&y=2#top");
    assert_eq!(h.path(), b"/a/b");
    assert_eq!(h.query(), Some(&b"x=1&y=2"[..]));
    assert_eq!(h.fragment(), Some(&b"top"[..]));
    assert_eq!(h.authority(), None);
    assert_eq!(h.version(), Version::Http11);
    assert_eq!(h.host(), Some(&b"example.com"[..]));
    let headers: Vec<_> = h.headers().collect();
    assert_eq!(
        headers,
        [(&b"Host"[..], &b"example.com"[..]), (b"Accept", b"*/*"),],
        "names as sent, values trimmed"
    );
    assert_eq!(h.header_count(), 2);
    assert_eq!(h.body(), BodyFraming::None);
    assert_eq!(h.content_length(), None);
    assert!(h.keep_alive());
    assert!(!h.expects_continue());
}

#[test]
fn headers_are_kept_as_sent() {
    let h = ok(
        "GET / HTTP/1.1\r\nHost: x\r\nX-A: 1\r\nx_a: 2\r\nX-A:3\r\nEmpty:\r\nSpaces: \t \r\n\r\n",
    );
    let headers: Vec<_> = h.headers().collect();
    assert_eq!(
        headers,
        [
            (&b"Host"[..], &b"x"[..]),
            (b"X-A", b"1"),
            (b"x_a", b"2"),
            (b"X-A", b"3"),
            (b"Empty", b""),
            (b"Spaces", b""),
        ]
    );
    assert_eq!(h.header(b"x-a"), Some(&b"1"[..]), "first one, any case");
    assert_eq!(h.header(b"X_A"), Some(&b"2"[..]));
    assert_eq!(h.header(b"missing"), None);
    // Whitespace inside a value stays.
    let h = ok("GET / HTTP/1.1\r\nHost: x\r\nUA: a  b\tc\r\n\r\n");
    assert_eq!(h.header(b"ua"), Some(&b"a  b\tc"[..]));
}

#[test]
fn target_forms() {
    let h = ok("GET http://example.com:8080/p?q=1#f HTTP/1.1\r\nHost: other\r\n\r\n");
    assert_eq!(h.path(), b"/p");
    assert_eq!(h.query(), Some(&b"q=1"[..]));
    assert_eq!(h.fragment(), Some(&b"f"[..]));
    assert_eq!(h.authority(), Some(&b"example.com:8080"[..]));
    assert_eq!(h.host(), Some(&b"other"[..]));
    assert_eq!(h.target(), b"http://example.com:8080/p?q=1#f");

    let h = ok("GET HTTPS://example.com HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(h.path(), b"/", "empty path becomes /");
    assert_eq!(h.query(), None);
    assert_eq!(h.authority(), Some(&b"example.com"[..]));
    let h = ok("GET http://[::1]:3000?a HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(h.path(), b"/");
    assert_eq!(h.query(), Some(&b"a"[..]));
    assert_eq!(h.authority(), Some(&b"[::1]:3000"[..]));
    let h = ok("GET http://h/a/b/?c/d HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(h.path(), b"/a/b/");
    assert_eq!(h.query(), Some(&b"c/d"[..]));

    let h = ok("OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(h.path(), b"*");
    assert_eq!(h.target(), b"*");

    let h = ok_with(
        "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n",
        &any_method(),
    );
    assert_eq!(h.authority(), Some(&b"example.com:443"[..]));
    assert_eq!(h.path(), b"");

    // After a path or a query, an absolute-form target may have a fragment.
    assert_eq!(
        ok("GET http://x/#f HTTP/1.1\r\nHost: x\r\n\r\n").fragment(),
        Some(&b"f"[..])
    );
    assert_eq!(
        ok("GET http://x?q#f HTTP/1.1\r\nHost: x\r\n\r\n").fragment(),
        Some(&b"f"[..])
    );

    // Origin-form edge cases.
    let h = ok("GET /?#x HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(h.path(), b"/");
    assert_eq!(h.query(), Some(&b""[..]));
    assert_eq!(h.fragment(), Some(&b"x"[..]));
    let h = ok("GET /a#b?c/d HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(h.path(), b"/a");
    assert_eq!(h.query(), None, "a ? inside the fragment is part of it");
    assert_eq!(h.fragment(), Some(&b"b?c/d"[..]));
    let h = ok("GET //double/slash?a?b HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(h.path(), b"//double/slash");
    assert_eq!(h.query(), Some(&b"a?b"[..]));
    let h = ok("GET /%7Euser/a%20b HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(h.path(), b"/%7Euser/a%20b", "not percent-decoded");

    for bad in [
        &b"GET * HTTP/1.1\r\nHost: x\r\n\r\n"[..],
        b"OPTIONS *x HTTP/1.1\r\nHost: x\r\n\r\n",
        b"OPTIONS *?x HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET ftp://x/ HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET http:/x/ HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET http:///x HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET http://user@x/ HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET example.com:80 HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET a HTTP/1.1\r\nHost: x\r\n\r\n",
        // A fragment right after the authority (llhttp refuses it too).
        b"GET http://x# HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET http://x:80#f HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET http://x#/p HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /caf\xc3\xa9 HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /a\tb HTTP/1.1\r\nHost: x\r\n\r\n",
    ] {
        assert_eq!(
            err(bad),
            (ErrorKind::InvalidTarget, 400),
            "{:?}",
            String::from_utf8_lossy(bad)
        );
    }
    for bad in [
        &b"CONNECT example.com HTTP/1.1\r\nHost: x\r\n\r\n"[..],
        b"CONNECT / HTTP/1.1\r\nHost: x\r\n\r\n",
        b"CONNECT http://example.com:443/ HTTP/1.1\r\nHost: x\r\n\r\n",
    ] {
        assert_eq!(err_with(bad, &any_method()).0, ErrorKind::InvalidTarget);
    }
    assert_eq!(
        err(b"CONNECT example.com:443 HTTP/1.1\r\nHost: x\r\n\r\n").1,
        501,
        "CONNECT is not served by default"
    );
}

#[test]
fn versions() {
    assert_eq!(ok("GET / HTTP/1.0\r\n\r\n").version(), Version::Http10);
    assert_eq!(
        ok("GET / HTTP/1.1\r\nHost: x\r\n\r\n").version(),
        Version::Http11
    );
    // 1.2 to 1.9 too: llhttp refuses them (RFC 9112 §2.3 would serve them as 1.1).
    for v in ["1.2", "1.9", "2.0", "3.0", "9.9", "0.9", "0.0"] {
        let raw = format!("GET / HTTP/{v}\r\nHost: x\r\n\r\n");
        assert_eq!(
            err(raw.as_bytes()),
            (ErrorKind::UnsupportedVersion, 505),
            "{v}"
        );
    }
    assert_eq!(
        err(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"),
        (ErrorKind::UnsupportedVersion, 505),
        "the HTTP/2 preface"
    );
    for bad in [
        &b"GET / http/1.1\r\n\r\n"[..],
        b"GET / HTTP/1.10\r\n\r\n",
        b"GET / HTTP/1\r\n\r\n",
        b"GET / HTTP/1.\r\n\r\n",
        b"GET / HTTP/a.1\r\n\r\n",
        b"GET / HTTP 1.1\r\n\r\n",
        b"GET / HTTPS/1.1\r\n\r\n",
        b"GET / \r\n\r\n",
    ] {
        assert_eq!(
            err(bad),
            (ErrorKind::MalformedRequestLine, 400),
            "{:?}",
            String::from_utf8_lossy(bad)
        );
    }
    assert_eq!(
        err(b"GET /\r\n\r\n"),
        (ErrorKind::MalformedRequestLine, 400),
        "HTTP/0.9"
    );
    assert_eq!(err(b"GET\r\n\r\n"), (ErrorKind::MalformedRequestLine, 400));
}

#[test]
fn methods() {
    for m in [
        "GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "TRACE", "PATCH",
    ] {
        assert_eq!(
            ok(&format!("{m} / HTTP/1.1\r\nHost: x\r\n\r\n")).method(),
            m
        );
    }
    assert_eq!(
        err(b"FOO / HTTP/1.1\r\nHost: x\r\n\r\n"),
        (ErrorKind::UnsupportedMethod, 501)
    );
    assert_eq!(
        err(b"get / HTTP/1.1\r\nHost: x\r\n\r\n"),
        (ErrorKind::UnsupportedMethod, 501),
        "a valid token, but methods are case-sensitive"
    );
    let any = any_method();
    assert_eq!(
        ok_with("FOO / HTTP/1.1\r\nHost: x\r\n\r\n", &any).method(),
        "FOO"
    );
    assert_eq!(
        ok_with("get / HTTP/1.1\r\nHost: x\r\n\r\n", &any).method(),
        "get"
    );
    assert_eq!(
        ok_with("M-SEARCH! / HTTP/1.1\r\nHost: x\r\n\r\n", &any).method(),
        "M-SEARCH!"
    );
    let only_purge = Limits {
        methods: MethodPolicy::Only(vec!["PURGE".into()]),
        ..Limits::default()
    };
    ok_with("PURGE / HTTP/1.1\r\nHost: x\r\n\r\n", &only_purge);
    assert_eq!(
        err_with(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", &only_purge).1,
        501
    );
    for bad in [
        &b"G(T / HTTP/1.1\r\nHost: x\r\n\r\n"[..],
        b"G\"T / HTTP/1.1\r\nHost: x\r\n\r\n",
        b"G\tT / HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET\t/ HTTP/1.1\r\nHost: x\r\n\r\n",
        b"G\xc3\x89T / HTTP/1.1\r\nHost: x\r\n\r\n",
    ] {
        assert_eq!(
            err_with(bad, &any),
            (ErrorKind::InvalidMethod, 400),
            "{:?}",
            String::from_utf8_lossy(bad)
        );
    }
    // Refused as soon as the request line is complete, before any header arrives.
    let e = HeadParser::new()
        .parse(b"FOO / HTTP/1.1\r\n", &Limits::default())
        .unwrap_err();
    assert_eq!((e.kind(), e.status()), (ErrorKind::UnsupportedMethod, 501));
}

#[test]
fn request_line_spacing() {
    for raw in [
        &b"GET  / HTTP/1.1\r\nHost: x\r\n\r\n"[..],
        b"GET /  HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET / HTTP/1.1 \r\nHost: x\r\n\r\n",
        b" GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /a b HTTP/1.1\r\nHost: x\r\n\r\n",
    ] {
        assert_eq!(
            err(raw),
            (ErrorKind::MalformedRequestLine, 400),
            "{:?}",
            String::from_utf8_lossy(raw)
        );
    }
}

#[test]
fn field_syntax() {
    assert_eq!(
        err(b"GET / HTTP/1.1\r\nHost: x\r\nX: a\r\n b\r\n\r\n"),
        (ErrorKind::ObsFold, 400)
    );
    assert_eq!(
        err(b"GET / HTTP/1.1\r\nHost: x\r\nX: a\r\n\tb\r\n\r\n").0,
        ErrorKind::ObsFold
    );
    assert_eq!(
        err(b"GET / HTTP/1.1\r\n Host: x\r\n\r\n").0,
        ErrorKind::ObsFold,
        "whitespace before the first field"
    );
    for bad in [
        &b"GET / HTTP/1.1\r\nHost: x\r\nX : a\r\n\r\n"[..],
        b"GET / HTTP/1.1\r\nHost: x\r\nX\t: a\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\n: a\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nNoColon\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nX[]: a\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nX Y: a\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nX\"Y: a\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nN\xc3\xa9: a\r\n\r\n",
    ] {
        assert_eq!(
            err(bad),
            (ErrorKind::MalformedHeader, 400),
            "{:?}",
            String::from_utf8_lossy(bad)
        );
    }
    // obs-text, HTAB and colons are fine in values.
    let h = ok("GET / HTTP/1.1\r\nHost: x\r\nX: caf\u{e9}\tok: yes\r\n\r\n");
    assert_eq!(h.header(b"x"), Some("caf\u{e9}\tok: yes".as_bytes()));
}

#[test]
fn line_endings_and_control_characters() {
    use ErrorKind::*;
    for (raw, kind) in [
        (&b"GET / HTTP/1.1\nHost: x\n\n"[..], BareLf),
        (b"GET / HTTP/1.1\r\nHost: x\n\r\n", BareLf),
        (b"GET / HTTP/1.1\r\nHost: x\r\n\n", BareLf),
        (b"GET /\n HTTP/1.1\r\nHost: x\r\n\r\n", BareLf),
        (b"\nGET / HTTP/1.1\r\nHost: x\r\n\r\n", BareLf),
        (b"GET / HTTP/1.1\r\nHost: x\rY: z\r\n\r\n", BareCr),
        (b"GET / HTTP/1.1\rHost: x\r\n\r\n", BareCr),
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r\r\n", BareCr),
        (b"GET /\r HTTP/1.1\r\nHost: x\r\n\r\n", MalformedRequestLine),
        (b"GET / HTTP/1.1\r\nX\r: y\r\n\r\n", MalformedHeader),
        (
            b"GET / HTTP/1.1\r\nHost: x\r\nX: a\0b\r\n\r\n",
            ControlCharacter,
        ),
        (
            b"GET / HTTP/1.1\r\nHost: x\r\nX: a\x0bb\r\n\r\n",
            ControlCharacter,
        ),
        (
            b"GET / HTTP/1.1\r\nHost: x\r\nX: a\x7f\r\n\r\n",
            ControlCharacter,
        ),
        (
            b"GET / HTTP/1.1\r\nHost: x\r\nX\0: a\r\n\r\n",
            ControlCharacter,
        ),
        (b"GET /a\0 HTTP/1.1\r\nHost: x\r\n\r\n", ControlCharacter),
        (b"GET /\x7f HTTP/1.1\r\nHost: x\r\n\r\n", ControlCharacter),
        (b"G\0T / HTTP/1.1\r\nHost: x\r\n\r\n", ControlCharacter),
        (b"GET / HTTP/1.1\0\r\nHost: x\r\n\r\n", ControlCharacter),
        (b"\0GET / HTTP/1.1\r\nHost: x\r\n\r\n", ControlCharacter),
    ] {
        assert_eq!(err(raw), (kind, 400), "{:?}", String::from_utf8_lossy(raw));
    }
}

#[test]
fn leading_empty_lines_are_tolerated_but_bounded() {
    for leading in ["", "\r\n", "\r\n\r\n"] {
        let raw = format!("{leading}GET / HTTP/1.1\r\nHost: x\r\n\r\n");
        let (h, n) = parse_head(raw.as_bytes(), &Limits::default())
            .unwrap()
            .unwrap();
        assert_eq!(h.method(), "GET");
        assert_eq!(n, raw.len());
        assert_eq!(h.head_len(), n, "head_len counts the skipped lines");
    }
    assert_eq!(
        err(b"\r\n\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n"),
        (ErrorKind::MalformedRequestLine, 400)
    );
    // Only empty lines so far: wait for more.
    assert!(parse_head(b"\r\n\r\n", &Limits::default())
        .unwrap()
        .is_none());
    assert_eq!(
        err(b"\r\n \r\nGET / HTTP/1.1\r\n").0,
        ErrorKind::MalformedRequestLine,
        "a line of whitespace is not empty"
    );
}

#[test]
fn host_rules() {
    assert_eq!(
        err(b"GET / HTTP/1.1\r\n\r\n"),
        (ErrorKind::MissingHost, 400)
    );
    assert_eq!(
        err(b"GET / HTTP/1.1\r\nHost:\r\n\r\n"),
        (ErrorKind::MissingHost, 400)
    );
    assert_eq!(
        err(b"GET / HTTP/1.1\r\nHost:  \r\n\r\n").0,
        ErrorKind::MissingHost
    );
    assert_eq!(
        err(b"GET http://a/ HTTP/1.1\r\n\r\n").0,
        ErrorKind::MissingHost,
        "HTTP/1.1 clients send Host even with an absolute-form target"
    );
    let no_host_needed = Limits {
        require_host: false,
        ..Limits::default()
    };
    let parsed = parse_head(b"GET / HTTP/1.1\r\n\r\n", &no_host_needed);
    assert!(
        matches!(parsed, Ok(Some((ref head, _))) if head.host().is_none()),
        "without require_host: {parsed:?}"
    );
    assert_eq!(
        err(b"GET / HTTP/1.1\r\nHost: a\r\nhost: b\r\n\r\n"),
        (ErrorKind::DuplicateHost, 400)
    );
    assert_eq!(
        err(b"GET / HTTP/1.1\r\nHost: a\r\nHOST: a\r\n\r\n").0,
        ErrorKind::DuplicateHost,
        "even the same value"
    );
    assert_eq!(
        err(b"GET / HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n").0,
        ErrorKind::DuplicateHost,
        "on HTTP/1.0 too"
    );
    assert_eq!(ok("GET / HTTP/1.0\r\n\r\n").host(), None);
    assert_eq!(ok("GET / HTTP/1.0\r\nHost:\r\n\r\n").host(), None);
    for host in [
        "example.com",
        "example.com:8080",
        "127.0.0.1:80",
        "[::1]:3000",
        "a_b",
    ] {
        let h = ok(&format!("GET / HTTP/1.1\r\nHost: {host}\r\n\r\n"));
        assert_eq!(h.host(), Some(host.as_bytes()));
    }
    for host in ["a b", "a/b", "user@a", "a:b", "[::1", "a:1:2", "\u{e9}"] {
        let raw = format!("GET / HTTP/1.1\r\nHost: {host}\r\n\r\n");
        assert_eq!(
            err(raw.as_bytes()),
            (ErrorKind::InvalidHost, 400),
            "{host:?}"
        );
    }
}

#[test]
fn keep_alive() {
    let cases = [
        ("HTTP/1.1", "", true),
        ("HTTP/1.1", "Connection: close\r\n", false),
        ("HTTP/1.1", "Connection: Close\r\n", false),
        ("HTTP/1.1", "Connection: upgrade, close\r\n", false),
        ("HTTP/1.1", "Connection: keep-alive\r\n", true),
        ("HTTP/1.1", "Connection: keep-alive, Upgrade\r\n", true),
        ("HTTP/1.1", "Connection: closed\r\n", true),
        (
            "HTTP/1.1",
            "Connection: upgrade\r\nConnection: close\r\n",
            false,
        ),
        ("HTTP/1.0", "", false),
        ("HTTP/1.0", "Connection: keep-alive\r\n", true),
        ("HTTP/1.0", "Connection: Keep-Alive\r\n", true),
        ("HTTP/1.0", "Connection: keep-alive, Upgrade\r\n", true),
        ("HTTP/1.0", "Connection: Upgrade,keep-alive\r\n", true),
        ("HTTP/1.0", "Connection: keep-alive, close\r\n", false),
        ("HTTP/1.0", "Connection: close\r\n", false),
        ("HTTP/1.0", "Connection: keep-alive-ish\r\n", false),
    ];
    for (version, fields, expected) in cases {
        let raw = format!("GET / {version}\r\nHost: x\r\n{fields}\r\n");
        assert_eq!(ok(&raw).keep_alive(), expected, "{raw:?}");
    }
}

#[test]
fn expect_continue() {
    let post = |version: &str, expect: &str| {
        ok(&format!(
            "POST / {version}\r\nHost: x\r\n{expect}Content-Length: 1\r\n\r\n"
        ))
        .expects_continue()
    };
    assert!(post("HTTP/1.1", "Expect: 100-continue\r\n"));
    assert!(post("HTTP/1.1", "Expect: 100-Continue\r\n"));
    assert!(post("HTTP/1.1", "Expect:  100-CONTINUE \r\n"));
    assert!(!post("HTTP/1.1", ""));
    assert!(!post("HTTP/1.1", "Expect: 200-ok\r\n"));
    assert!(!post("HTTP/1.0", "Expect: 100-continue\r\n"), "1.1 only");
}

#[test]
fn body_framing() {
    let h = ok("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 42\r\n\r\n");
    assert_eq!(h.body(), BodyFraming::Length(42));
    assert_eq!(h.content_length(), Some(42));
    let h = ok("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(h.body(), BodyFraming::None);
    assert_eq!(h.content_length(), Some(0));
    let h = ok("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 007\r\n\r\n");
    assert_eq!(h.body(), BodyFraming::Length(7));
    let h = ok("POST / HTTP/1.0\r\nContent-Length: 3\r\n\r\n");
    assert_eq!(h.body(), BodyFraming::Length(3));
    let h = ok("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n");
    assert_eq!(h.body(), BodyFraming::Chunked);
    assert_eq!(h.content_length(), None);
    let h = ok("POST / HTTP/1.1\r\nHost: x\r\ntransfer-encoding:  CHUNKED \r\n\r\n");
    assert_eq!(h.body(), BodyFraming::Chunked);
    let h = ok("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 18446744073709551615\r\n\r\n");
    assert_eq!(h.body(), BodyFraming::Length(u64::MAX));
}

#[test]
fn bytes_after_the_head_are_not_consumed() {
    let raw = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello";
    let (h, n) = parse_head(raw, &Limits::default()).unwrap().unwrap();
    assert_eq!(&raw[n..], b"hello");
    assert_eq!(h.head_len(), n);
}

/// Parses requests back to back from one buffer, as a reactor does with pipelined requests.
fn parse_all(raw: &[u8]) -> Vec<(String, Vec<u8>, Vec<u8>)> {
    let limits = Limits::default();
    let mut rest = raw;
    let mut parsed = Vec::new();
    while !rest.is_empty() {
        let (head, used) = parse_head(rest, &limits).unwrap().unwrap();
        rest = &rest[used..];
        let body = match head.body() {
            BodyFraming::None => Vec::new(),
            BodyFraming::Length(n) => {
                let (body, after) = rest.split_at(n as usize);
                rest = after;
                body.to_vec()
            }
            BodyFraming::Chunked => {
                let mut out = Vec::new();
                let p = ChunkedDecoder::new()
                    .decode(rest, &mut out, &limits)
                    .unwrap();
                assert!(p.done);
                rest = &rest[p.consumed..];
                out
            }
        };
        parsed.push((head.method().to_string(), head.path().to_vec(), body));
    }
    parsed
}

#[test]
fn pipelined_requests_parse_in_sequence() {
    let two = b"GET /1 HTTP/1.1\r\nHost: x\r\n\r\nGET /2 HTTP/1.1\r\nHost: x\r\n\r\n";
    assert_eq!(
        parse_all(two),
        [
            ("GET".into(), b"/1".to_vec(), vec![]),
            ("GET".into(), b"/2".to_vec(), vec![]),
        ]
    );
    let three = b"GET /1 HTTP/1.1\r\nHost: x\r\n\r\n\
        POST /2 HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc\
        POST /3 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nde\r\n0\r\n\r\n\
        GET /4 HTTP/1.0\r\n\r\n";
    assert_eq!(
        parse_all(three),
        [
            ("GET".into(), b"/1".to_vec(), vec![]),
            ("POST".into(), b"/2".to_vec(), b"abc".to_vec()),
            ("POST".into(), b"/3".to_vec(), b"de".to_vec()),
            ("GET".into(), b"/4".to_vec(), vec![]),
        ]
    );
    // A stray CRLF after a body (old clients send one) is skipped.
    let stray = b"POST /1 HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\na\r\nGET /2 HTTP/1.1\r\nHost: x\r\n\r\n";
    assert_eq!(parse_all(stray).len(), 2);
}

#[test]
fn one_parser_serves_a_whole_pipeline() {
    // The parser resets itself after a head, ready for the bytes after `consumed`.
    let limits = Limits::default();
    let mut parser = HeadParser::new();
    let mut buf = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHo".to_vec();
    let (a, n) = parser.parse(&buf, &limits).unwrap().unwrap();
    assert_eq!(a.path(), b"/a");
    buf.drain(..n);
    assert!(parser.parse(&buf, &limits).unwrap().is_none());
    buf.extend_from_slice(b"st: x\r\n\r\n");
    let (b, n) = parser.parse(&buf, &limits).unwrap().unwrap();
    assert_eq!(b.path(), b"/b");
    assert_eq!(n, buf.len());
}

#[test]
fn a_head_is_independent_of_its_buffer() {
    let mut buf = b"GET /x?y HTTP/1.1\r\nHost: h\r\n\r\n".to_vec();
    let (head, _) = parse_head(&buf, &Limits::default()).unwrap().unwrap();
    buf.fill(b'!');
    assert_eq!(head.target(), b"/x?y");
    assert_eq!(head.host(), Some(&b"h"[..]));
    let copy = head.clone();
    assert_eq!(copy, head);
}

#[test]
fn errors_have_log_messages() {
    let e = parse_head(
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        &Limits {
            max_head: 10,
            ..Limits::default()
        },
    )
    .unwrap_err();
    assert_eq!(e.to_string(), "request head larger than 10 bytes");
    let e = parse_head(b"GET / HTTP/1.1\r\n\r\n", &Limits::default()).unwrap_err();
    assert_eq!(e.to_string(), "HTTP/1.1 request without Host");
    let boxed: Box<dyn std::error::Error> = Box::new(e);
    assert!(!boxed.to_string().is_empty());
}
