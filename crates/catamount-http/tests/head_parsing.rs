//! Request heads: grammar, every limit at and over its bound, smuggling vectors, keep-alive.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use catamount_http::{
    parse_head, BodyFraming, ErrorKind, HeadParser, Limits, MethodPolicy, Version,
};

fn ok(raw: &str) -> catamount_http::RequestHead {
    let limits = Limits::default();
    let (head, consumed) = parse_head(raw.as_bytes(), &limits)
        .unwrap_or_else(|e| panic!("{raw:?}: {e}"))
        .unwrap_or_else(|| panic!("{raw:?}: incomplete"));
    assert_eq!(consumed, raw.len(), "{raw:?}");
    head
}

fn err(raw: &[u8]) -> (ErrorKind, u16) {
    err_with(raw, &Limits::default())
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

#[test]
fn simple_get() {
    let h = ok("GET /a/b?x=1&y=2#top HTTP/1.1\r\nHost: example.com\r\nAccept:  */*  \r\n\r\n");
    assert_eq!(h.method(), "GET");
    assert_eq!(h.target(), b"/a/b?x=1&y=2#top");
    assert_eq!(h.path(), b"/a/b");
    assert_eq!(h.query(), Some(&b"x=1&y=2"[..]));
    assert_eq!(h.fragment(), Some(&b"top"[..]));
    assert_eq!(h.version(), Version::Http11);
    assert_eq!(h.host(), Some(&b"example.com"[..]));
    let headers: Vec<_> = h.headers().collect();
    assert_eq!(headers[1], (&b"Accept"[..], &b"*/*"[..]), "value trimmed");
    assert_eq!(h.body(), BodyFraming::None);
    assert!(h.keep_alive());
}

#[test]
fn absolute_form_and_asterisk() {
    let h = ok("GET http://example.com:8080/p?q=1 HTTP/1.1\r\nHost: other\r\n\r\n");
    assert_eq!(h.path(), b"/p");
    assert_eq!(h.query(), Some(&b"q=1"[..]));
    assert_eq!(h.authority(), Some(&b"example.com:8080"[..]));
    let h = ok("GET https://example.com HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(h.path(), b"/");
    let h = ok("OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(h.path(), b"*");
    assert_eq!(
        err(b"GET * HTTP/1.1\r\nHost: x\r\n\r\n").0,
        ErrorKind::InvalidTarget
    );
    assert_eq!(
        err(b"GET ftp://x/ HTTP/1.1\r\nHost: x\r\n\r\n").0,
        ErrorKind::InvalidTarget
    );
}

#[test]
fn versions() {
    assert_eq!(ok("GET / HTTP/1.0\r\n\r\n").version(), Version::Http10);
    assert_eq!(
        ok("GET / HTTP/1.2\r\nHost: x\r\n\r\n").version(),
        Version::Http11
    );
    assert_eq!(
        err(b"GET / HTTP/2.0\r\n\r\n"),
        (ErrorKind::UnsupportedVersion, 505)
    );
    assert_eq!(err(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").1, 505);
    assert_eq!(err(b"GET / HTTP/0.9\r\n\r\n").1, 505);
    assert_eq!(
        err(b"GET / http/1.1\r\n\r\n").0,
        ErrorKind::MalformedRequestLine
    );
    assert_eq!(
        err(b"GET / HTTP/1.10\r\n\r\n").0,
        ErrorKind::MalformedRequestLine
    );
    assert_eq!(
        err(b"GET /\r\n\r\n").0,
        ErrorKind::MalformedRequestLine,
        "HTTP/0.9"
    );
}

#[test]
fn methods() {
    assert_eq!(
        err(b"FOO / HTTP/1.1\r\nHost: x\r\n\r\n"),
        (ErrorKind::UnsupportedMethod, 501)
    );
    assert_eq!(err(b"get / HTTP/1.1\r\nHost: x\r\n\r\n").1, 501);
    assert_eq!(
        err(b"G(T / HTTP/1.1\r\nHost: x\r\n\r\n").0,
        ErrorKind::InvalidMethod
    );
    let any = Limits {
        methods: MethodPolicy::Any,
        ..Limits::default()
    };
    let (h, _) = parse_head(b"FOO / HTTP/1.1\r\nHost: x\r\n\r\n", &any)
        .unwrap()
        .unwrap();
    assert_eq!(h.method(), "FOO");
    // Refused as soon as the request line is complete, before any header arrives.
    assert_eq!(
        HeadParser::new()
            .parse(b"FOO / HTTP/1.1\r\n", &Limits::default())
            .unwrap_err()
            .status(),
        501
    );
}

#[test]
fn malformed_lines() {
    for raw in [
        &b"GET  / HTTP/1.1\r\nHost: x\r\n\r\n"[..],
        b"GET / HTTP/1.1 \r\nHost: x\r\n\r\n",
        b" GET / HTTP/1.1\r\nHost: x\r\n\r\n",
    ] {
        assert_eq!(err(raw).1, 400, "{:?}", String::from_utf8_lossy(raw));
    }
    assert_eq!(err(b"GET / HTTP/1.1\nHost: x\n\n").0, ErrorKind::BareLf);
    assert_eq!(err(b"GET / HTTP/1.1\r\nHost: x\n\r\n").0, ErrorKind::BareLf);
    assert_eq!(
        err(b"GET / HTTP/1.1\r\nHost: x\rY: z\r\n\r\n").0,
        ErrorKind::BareCr
    );
    assert_eq!(
        err(b"GET / HTTP/1.1\r\nHost: x\r\nX: a\0b\r\n\r\n").0,
        ErrorKind::ControlCharacter
    );
    assert_eq!(
        err(b"GET /a\0 HTTP/1.1\r\nHost: x\r\n\r\n").0,
        ErrorKind::ControlCharacter
    );
    assert_eq!(
        err(b"GET /\x7f HTTP/1.1\r\nHost: x\r\n\r\n").0,
        ErrorKind::ControlCharacter
    );
    assert_eq!(
        err(b"GET /\xc3\xa9 HTTP/1.1\r\nHost: x\r\n\r\n").0,
        ErrorKind::InvalidTarget
    );
    assert_eq!(
        err(b"GET / HTTP/1.1\r\nHost: x\r\nX: a\r\n b\r\n\r\n").0,
        ErrorKind::ObsFold
    );
    assert_eq!(
        err(b"GET / HTTP/1.1\r\nHost: x\r\nX : a\r\n\r\n").0,
        ErrorKind::MalformedHeader
    );
    assert_eq!(
        err(b"GET / HTTP/1.1\r\nHost: x\r\n: a\r\n\r\n").0,
        ErrorKind::MalformedHeader
    );
    assert_eq!(
        err(b"GET / HTTP/1.1\r\nHost: x\r\nNoColon\r\n\r\n").0,
        ErrorKind::MalformedHeader
    );
    assert_eq!(
        err(b"GET / HTTP/1.1\r\nHost: x\r\nX[]: a\r\n\r\n").0,
        ErrorKind::MalformedHeader
    );
    // obs-text and HTAB are fine in values.
    ok("GET / HTTP/1.1\r\nHost: x\r\nX: caf\u{e9}\tok\r\n\r\n");
}

#[test]
fn leading_empty_lines_are_tolerated_but_bounded() {
    let raw = "\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n";
    let (h, n) = parse_head(raw.as_bytes(), &Limits::default())
        .unwrap()
        .unwrap();
    assert_eq!(h.method(), "GET");
    assert_eq!(n, raw.len());
    assert_eq!(err(b"\r\n\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n").1, 400);
}

#[test]
fn host_rules() {
    assert_eq!(
        err(b"GET / HTTP/1.1\r\n\r\n"),
        (ErrorKind::MissingHost, 400)
    );
    assert_eq!(
        err(b"GET / HTTP/1.1\r\nHost:\r\n\r\n").0,
        ErrorKind::MissingHost
    );
    assert_eq!(
        err(b"GET / HTTP/1.1\r\nHost: a\r\nhost: b\r\n\r\n").0,
        ErrorKind::DuplicateHost
    );
    assert_eq!(ok("GET / HTTP/1.0\r\n\r\n").host(), None);
}

#[test]
fn limits_at_and_over() {
    let l = Limits::default();
    let line = |target: String| format!("GET {target} HTTP/1.1\r\nHost: x\r\n\r\n");
    ok(&line(format!("/{}", "a".repeat(l.max_path - 1))));
    assert_eq!(
        err(line(format!("/{}", "a".repeat(l.max_path))).as_bytes()),
        (ErrorKind::PathTooLong, 414)
    );
    ok(&line(format!("/?{}", "q".repeat(l.max_query))));
    assert_eq!(
        err(line(format!("/?{}", "q".repeat(l.max_query + 1))).as_bytes()),
        (ErrorKind::QueryTooLong, 414)
    );
    ok(&line(format!("/#{}", "f".repeat(l.max_fragment))));
    assert_eq!(
        err(line(format!("/#{}", "f".repeat(l.max_fragment + 1))).as_bytes()).0,
        ErrorKind::FragmentTooLong
    );
    let long_target = format!("/{}?{}", "p".repeat(4000), "q".repeat(l.max_target - 4002));
    ok(&line(long_target.clone()));
    assert_eq!(
        err(line(format!("{long_target}x")).as_bytes()),
        (ErrorKind::TargetTooLong, 414)
    );

    let header = |name: String, value: String| {
        format!("GET / HTTP/1.1\r\nHost: x\r\n{name}: {value}\r\n\r\n")
    };
    ok(&header("N".repeat(l.max_header_name), "v".into()));
    assert_eq!(
        err(header("N".repeat(l.max_header_name + 1), "v".into()).as_bytes()),
        (ErrorKind::HeaderNameTooLong, 431)
    );
    ok(&header("N".into(), "v".repeat(l.max_header_value)));
    assert_eq!(
        err(header("N".into(), "v".repeat(l.max_header_value + 1)).as_bytes()),
        (ErrorKind::HeaderValueTooLong, 431)
    );

    let many = |n: usize| {
        format!(
            "GET / HTTP/1.1\r\n{}\r\n",
            (0..n).map(|i| format!("H{i}: v\r\n")).collect::<String>()
        )
    };
    let exactly = many(l.max_headers).replacen("H0: v", "Host: v", 1);
    ok(&exactly);
    assert_eq!(
        err(many(l.max_headers + 1)
            .replacen("H0: v", "Host: v", 1)
            .as_bytes()),
        (ErrorKind::TooManyHeaders, 431)
    );

    let small = Limits {
        max_head: 100,
        ..Limits::default()
    };
    let fits = "GET / HTTP/1.1\r\nHost: x\r\nX: ".to_string();
    let pad = 100 - fits.len() - 4; // value, CRLF, final CRLF
    let at = format!("{fits}{}\r\n\r\n", "v".repeat(pad));
    assert_eq!(at.len(), 100);
    parse_head(at.as_bytes(), &small).unwrap().unwrap();
    let over = format!("{fits}{}\r\n\r\n", "v".repeat(pad + 1));
    assert_eq!(
        err_with(over.as_bytes(), &small),
        (ErrorKind::HeadTooLarge, 431)
    );
}

#[test]
fn oversize_parts_are_refused_while_the_head_is_incomplete() {
    let l = Limits::default();
    let mut p = HeadParser::new();
    let partial = format!("GET /{}", "a".repeat(l.max_target + 64));
    assert_eq!(p.parse(partial.as_bytes(), &l).unwrap_err().status(), 414);
    let mut p = HeadParser::new();
    let partial = format!(
        "GET / HTTP/1.1\r\nHost: x\r\nBig: {}",
        "v".repeat(l.max_header_name + l.max_header_value + 100)
    );
    assert_eq!(p.parse(partial.as_bytes(), &l).unwrap_err().status(), 431);
    let mut p = HeadParser::new();
    let mut garbage = b"GET / HTTP/1.1\r\nHost: x\r\n".to_vec();
    for i in 0.. {
        garbage.extend_from_slice(format!("H{i}: {}\r\n", "v".repeat(1000)).as_bytes());
        match p.parse(&garbage, &l) {
            Ok(None) => assert!(
                garbage.len() <= l.max_head + 1100,
                "not refused at {}",
                garbage.len()
            ),
            Err(e) => {
                assert_eq!(e.kind(), ErrorKind::HeadTooLarge);
                break;
            }
            Ok(Some(_)) => panic!("complete?"),
        }
    }
    // A bare LF is refused at once, not when the head would end.
    assert_eq!(
        HeadParser::new()
            .parse(b"GET / HTTP/1.1\nHo", &l)
            .unwrap_err()
            .kind(),
        ErrorKind::BareLf
    );
}

#[test]
fn content_length_and_transfer_encoding() {
    let h = ok("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 42\r\n\r\n");
    assert_eq!(h.body(), BodyFraming::Length(42));
    assert_eq!(
        ok("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n").body(),
        BodyFraming::None
    );
    assert_eq!(
        ok("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n").body(),
        BodyFraming::Chunked
    );
    assert_eq!(
        ok("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding:  Chunked \r\n\r\n").body(),
        BodyFraming::Chunked
    );
    for (raw, kind, status) in [
        (
            "Content-Length: 3\r\nTransfer-Encoding: chunked",
            ErrorKind::ContentLengthWithTransferEncoding,
            400,
        ),
        (
            "Transfer-Encoding: chunked\r\nContent-Length: 3",
            ErrorKind::ContentLengthWithTransferEncoding,
            400,
        ),
        (
            "Content-Length: 3\r\nContent-Length: 4",
            ErrorKind::InvalidContentLength,
            400,
        ),
        (
            "Content-Length: 3\r\nContent-Length: 3",
            ErrorKind::InvalidContentLength,
            400,
        ),
        ("Content-Length: 3, 3", ErrorKind::InvalidContentLength, 400),
        ("Content-Length: +3", ErrorKind::InvalidContentLength, 400),
        ("Content-Length: -1", ErrorKind::InvalidContentLength, 400),
        ("Content-Length: 0x5", ErrorKind::InvalidContentLength, 400),
        ("Content-Length: 1 2", ErrorKind::InvalidContentLength, 400),
        ("Content-Length:", ErrorKind::InvalidContentLength, 400),
        (
            "Content-Length: 99999999999999999999999",
            ErrorKind::InvalidContentLength,
            400,
        ),
        (
            "Transfer-Encoding: chunked, chunked",
            ErrorKind::InvalidTransferEncoding,
            400,
        ),
        (
            "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked",
            ErrorKind::InvalidTransferEncoding,
            400,
        ),
        (
            "Transfer-Encoding: chunked, gzip",
            ErrorKind::InvalidTransferEncoding,
            400,
        ),
        (
            "Transfer-Encoding: gzip",
            ErrorKind::InvalidTransferEncoding,
            400,
        ),
        (
            "Transfer-Encoding: identity",
            ErrorKind::InvalidTransferEncoding,
            400,
        ),
        (
            "Transfer-Encoding:",
            ErrorKind::InvalidTransferEncoding,
            400,
        ),
        (
            "Transfer-Encoding: chunked,",
            ErrorKind::InvalidTransferEncoding,
            400,
        ),
        (
            "Transfer-Encoding: gzip, chunked",
            ErrorKind::UnsupportedTransferCoding,
            501,
        ),
    ] {
        let full = format!("POST / HTTP/1.1\r\nHost: x\r\n{raw}\r\n\r\n");
        assert_eq!(err(full.as_bytes()), (kind, status), "{raw:?}");
    }
    assert_eq!(
        err(b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n").0,
        ErrorKind::TransferEncodingHttp10
    );
    let capped = Limits {
        max_body: Some(10),
        ..Limits::default()
    };
    parse_head(
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n",
        &capped,
    )
    .unwrap()
    .unwrap();
    assert_eq!(
        err_with(
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\r\n",
            &capped
        ),
        (ErrorKind::BodyTooLarge, 413)
    );
}

#[test]
fn keep_alive_and_expect() {
    assert!(ok("GET / HTTP/1.1\r\nHost: x\r\n\r\n").keep_alive());
    assert!(!ok("GET / HTTP/1.1\r\nHost: x\r\nConnection: Close\r\n\r\n").keep_alive());
    assert!(!ok("GET / HTTP/1.1\r\nHost: x\r\nConnection: upgrade, close\r\n\r\n").keep_alive());
    assert!(!ok("GET / HTTP/1.0\r\n\r\n").keep_alive());
    assert!(ok("GET / HTTP/1.0\r\nConnection: keep-alive, Upgrade\r\n\r\n").keep_alive());
    assert!(
        ok("POST / HTTP/1.1\r\nHost: x\r\nExpect: 100-Continue\r\nContent-Length: 1\r\n\r\n")
            .expects_continue()
    );
    assert!(
        !ok("POST / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n")
            .expects_continue()
    );
}

#[test]
fn pipelined_heads_parse_in_sequence() {
    let raw = b"GET /1 HTTP/1.1\r\nHost: x\r\n\r\nPOST /2 HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabcGET /3 HTTP/1.1\r\nHost: x\r\n\r\n";
    let limits = Limits::default();
    let (first, n1) = parse_head(raw, &limits).unwrap().unwrap();
    assert_eq!(first.path(), b"/1");
    let (second, n2) = parse_head(&raw[n1..], &limits).unwrap().unwrap();
    assert_eq!(second.path(), b"/2");
    let body_end = n1 + n2 + 3;
    assert_eq!(&raw[n1 + n2..body_end], b"abc");
    let (third, n3) = parse_head(&raw[body_end..], &limits).unwrap().unwrap();
    assert_eq!(third.path(), b"/3");
    assert_eq!(body_end + n3, raw.len());
}
