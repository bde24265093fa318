//! Every head limit exactly at its bound (accepted) and one byte over (refused with the right
//! kind and status), for complete heads and for heads still arriving.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use catamount_http::{parse_head, ErrorKind, HeadParser, Limits, MethodPolicy};

/// A complete head is accepted and used entirely.
fn accepts(raw: &[u8], limits: &Limits) {
    match parse_head(raw, limits) {
        Ok(Some((_, n))) => assert_eq!(n, raw.len()),
        other => panic!("{}: {other:?}", preview(raw)),
    }
}

/// An incomplete head is still waited for.
fn waits(raw: &[u8], limits: &Limits) {
    match parse_head(raw, limits) {
        Ok(None) => {}
        other => panic!("{}: {other:?}", preview(raw)),
    }
}

/// The buffer is refused with this kind and status.
fn refuses(raw: &[u8], limits: &Limits, kind: ErrorKind, status: u16) {
    match parse_head(raw, limits) {
        Err(e) => assert_eq!((e.kind(), e.status()), (kind, status), "{}", preview(raw)),
        Ok(r) => panic!("{} accepted: {:?}", preview(raw), r.is_some()),
    }
}

fn preview(raw: &[u8]) -> String {
    let text = String::from_utf8_lossy(raw);
    let cut: String = text.chars().take(60).collect();
    format!("{cut:?}... ({} bytes)", raw.len())
}

const TAIL: &str = " HTTP/1.1\r\nHost: x\r\n\r\n";

/// Checks one request-target limit: `at` fits, `at` plus one more byte does not; both as a
/// complete request and as a request line still arriving.
fn target_limit(at: String, kind: ErrorKind, limits: &Limits) {
    let over = format!("{at}x");
    accepts(format!("GET {at}{TAIL}").as_bytes(), limits);
    refuses(format!("GET {over}{TAIL}").as_bytes(), limits, kind, 414);
    waits(format!("GET {at}").as_bytes(), limits);
    refuses(format!("GET {over}").as_bytes(), limits, kind, 414);
}

#[test]
fn path() {
    let l = Limits::default();
    target_limit(
        format!("/{}", "a".repeat(l.max_path - 1)),
        ErrorKind::PathTooLong,
        &l,
    );
    // The path of an absolute-form target is measured without the scheme and authority.
    target_limit(
        format!("http://example.com/{}", "a".repeat(l.max_path - 1)),
        ErrorKind::PathTooLong,
        &l,
    );
    let small = Limits {
        max_path: 4,
        ..Limits::default()
    };
    target_limit("/abc".into(), ErrorKind::PathTooLong, &small);
}

#[test]
fn query() {
    let l = Limits::default();
    target_limit(
        format!("/?{}", "q".repeat(l.max_query)),
        ErrorKind::QueryTooLong,
        &l,
    );
    let small = Limits {
        max_query: 3,
        ..Limits::default()
    };
    target_limit("/p?abc".into(), ErrorKind::QueryTooLong, &small);
    // A query at its limit followed by a fragment is fine.
    accepts(format!("GET /p?abc#f{TAIL}").as_bytes(), &small);
}

#[test]
fn fragment() {
    let l = Limits::default();
    target_limit(
        format!("/#{}", "f".repeat(l.max_fragment)),
        ErrorKind::FragmentTooLong,
        &l,
    );
    let small = Limits {
        max_fragment: 2,
        ..Limits::default()
    };
    target_limit("/p?q#ab".into(), ErrorKind::FragmentTooLong, &small);
}

#[test]
fn target() {
    let l = Limits::default();
    // Path and query each within their limits, together at the target's.
    let at = format!("/{}?{}", "p".repeat(4000), "q".repeat(l.max_target - 4002));
    assert_eq!(at.len(), l.max_target);
    target_limit(at, ErrorKind::TargetTooLong, &l);
    let small = Limits {
        max_target: 10,
        ..Limits::default()
    };
    target_limit("http://a/b".into(), ErrorKind::TargetTooLong, &small);
    target_limit("/123456789".into(), ErrorKind::TargetTooLong, &small);
}

#[test]
fn the_path_is_reported_before_the_target() {
    let l = Limits {
        max_path: 100,
        max_target: 100,
        ..Limits::default()
    };
    let long = format!("GET /{}{TAIL}", "a".repeat(100));
    refuses(long.as_bytes(), &l, ErrorKind::PathTooLong, 414);
}

#[test]
fn method() {
    let any = Limits {
        methods: MethodPolicy::Any,
        ..Limits::default()
    };
    let at = "M".repeat(32);
    accepts(format!("{at} /{TAIL}").as_bytes(), &any);
    waits(at.as_bytes(), &any);
    refuses(
        format!("{at}M /{TAIL}").as_bytes(),
        &any,
        ErrorKind::InvalidMethod,
        400,
    );
    refuses(
        format!("{at}M").as_bytes(),
        &any,
        ErrorKind::InvalidMethod,
        400,
    );
}

const START: &str = "GET / HTTP/1.1\r\nHost: x\r\n";

#[test]
fn header_name() {
    for l in [
        Limits::default(),
        Limits {
            max_header_name: 5,
            ..Limits::default()
        },
    ] {
        let at = "N".repeat(l.max_header_name);
        accepts(format!("{START}{at}: v\r\n\r\n").as_bytes(), &l);
        waits(format!("{START}{at}").as_bytes(), &l);
        let over = format!("{at}N");
        refuses(
            format!("{START}{over}: v\r\n\r\n").as_bytes(),
            &l,
            ErrorKind::HeaderNameTooLong,
            431,
        );
        refuses(
            format!("{START}{over}").as_bytes(),
            &l,
            ErrorKind::HeaderNameTooLong,
            431,
        );
    }
}

#[test]
fn header_value() {
    for l in [
        Limits::default(),
        Limits {
            max_header_value: 5,
            ..Limits::default()
        },
    ] {
        let at = "v".repeat(l.max_header_value);
        accepts(format!("{START}N: {at}\r\n\r\n").as_bytes(), &l);
        waits(format!("{START}N: {at}").as_bytes(), &l);
        // Whitespace around the value does not count.
        accepts(format!("{START}N: \t {at} \t \r\n\r\n").as_bytes(), &l);
        waits(format!("{START}N:    {at}    ").as_bytes(), &l);
        // Nor does it hide bytes that do: an inner space counts.
        let over = format!("{at}v");
        refuses(
            format!("{START}N: {over}\r\n\r\n").as_bytes(),
            &l,
            ErrorKind::HeaderValueTooLong,
            431,
        );
        refuses(
            format!("{START}N: {over}").as_bytes(),
            &l,
            ErrorKind::HeaderValueTooLong,
            431,
        );
        refuses(
            format!("{START}N: {at} v").as_bytes(),
            &l,
            ErrorKind::HeaderValueTooLong,
            431,
        );
    }
}

#[test]
fn header_count() {
    for max in [200, 3] {
        let l = Limits {
            max_headers: max,
            ..Limits::default()
        };
        let fields = |n: usize| {
            (0..n)
                .map(|i| {
                    if i == 0 {
                        "Host: x\r\n".to_string()
                    } else {
                        format!("H{i}: v\r\n")
                    }
                })
                .collect::<String>()
        };
        accepts(
            format!("GET / HTTP/1.1\r\n{}\r\n", fields(max)).as_bytes(),
            &l,
        );
        waits(format!("GET / HTTP/1.1\r\n{}", fields(max)).as_bytes(), &l);
        refuses(
            format!("GET / HTTP/1.1\r\n{}\r\n", fields(max + 1)).as_bytes(),
            &l,
            ErrorKind::TooManyHeaders,
            431,
        );
        // Refused at the first byte of the field one too many.
        refuses(
            format!("GET / HTTP/1.1\r\n{}X", fields(max)).as_bytes(),
            &l,
            ErrorKind::TooManyHeaders,
            431,
        );
    }
}

#[test]
fn head_size() {
    // A small limit, checked at every length around it.
    let small = Limits {
        max_head: 100,
        ..Limits::default()
    };
    let start = "GET / HTTP/1.1\r\nHost: x\r\nX: ";
    let pad = 100 - start.len() - 4; // value, its CRLF, the final CRLF
    let at = format!("{start}{}\r\n\r\n", "v".repeat(pad));
    assert_eq!(at.len(), 100);
    accepts(at.as_bytes(), &small);
    let over = format!("{start}{}\r\n\r\n", "v".repeat(pad + 1));
    refuses(over.as_bytes(), &small, ErrorKind::HeadTooLarge, 431);
    // Incomplete: 100 bytes of head are waited on; the 101st is refused whatever it is.
    waits(&at.as_bytes()[..99], &small);
    waits(&over.as_bytes()[..100], &small);
    refuses(
        &over.as_bytes()[..101],
        &small,
        ErrorKind::HeadTooLarge,
        431,
    );
    // Tolerated empty lines before the request line do not count.
    let padded = format!("\r\n\r\n{at}");
    accepts(padded.as_bytes(), &small);

    // The default limit, reached with fields each within their own limits.
    let l = Limits::default();
    let mut head = START.as_bytes().to_vec();
    let mut i = 0;
    while head.len() + 1100 < l.max_head {
        head.extend_from_slice(format!("H{i:04}: {}\r\n", "v".repeat(1000)).as_bytes());
        i += 1;
    }
    let fill = l.max_head - head.len() - "Z: \r\n\r\n".len();
    let mut complete = head.clone();
    complete.extend_from_slice(format!("Z: {}\r\n\r\n", "v".repeat(fill)).as_bytes());
    assert_eq!(complete.len(), l.max_head);
    accepts(&complete, &l);
    let mut too_big = head.clone();
    too_big.extend_from_slice(format!("Z: {}\r\n\r\n", "v".repeat(fill + 1)).as_bytes());
    refuses(&too_big, &l, ErrorKind::HeadTooLarge, 431);
    waits(&too_big[..l.max_head], &l);
    refuses(&too_big[..l.max_head + 1], &l, ErrorKind::HeadTooLarge, 431);
}

#[test]
fn a_slow_client_cannot_park_more_than_the_head_limit() {
    let l = Limits::default();
    let mut p = HeadParser::new();
    let mut buf = START.as_bytes().to_vec();
    for i in 0.. {
        buf.extend_from_slice(format!("H{i}: {}\r\n", "v".repeat(1000)).as_bytes());
        match p.parse(&buf, &l) {
            Ok(None) => assert!(buf.len() <= l.max_head, "not refused at {}", buf.len()),
            Err(e) => {
                assert_eq!(e.kind(), ErrorKind::HeadTooLarge);
                assert!(buf.len() > l.max_head);
                break;
            }
            Ok(Some(_)) => panic!("complete?"),
        }
    }
}

#[test]
fn garbage_is_refused_at_once() {
    let l = Limits::default();
    for (raw, kind) in [
        (&b"GET / HTTP/1.1\nHo"[..], ErrorKind::BareLf),
        (
            b"GET / HTTP/1.1\r\nHost: x\r\nA: \0",
            ErrorKind::ControlCharacter,
        ),
        (b"GET /\xff", ErrorKind::InvalidTarget),
        (b"GET / HTTP/1.1\r\nHost: x\rX", ErrorKind::BareCr),
        (b"GET / HTTP/1.1\r\nA B", ErrorKind::MalformedHeader),
        (b"GET / HTTP/1.1\r\n x", ErrorKind::ObsFold),
        (b"GET / HTTP/1.1x", ErrorKind::MalformedRequestLine),
        (b"GET / XTTP", ErrorKind::MalformedRequestLine),
        (b"GE(", ErrorKind::InvalidMethod),
    ] {
        let e = HeadParser::new().parse(raw, &l).unwrap_err();
        assert_eq!(e.kind(), kind, "{}", preview(raw));
    }
}

#[test]
fn body_limit_from_content_length() {
    let capped = Limits {
        max_body: Some(10),
        ..Limits::default()
    };
    accepts(
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n",
        &capped,
    );
    refuses(
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\r\n",
        &capped,
        ErrorKind::BodyTooLarge,
        413,
    );
    let e = parse_head(
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\r\n",
        &capped,
    )
    .unwrap_err();
    assert_eq!(e.to_string(), "request body larger than 10 bytes");
    let zero = Limits {
        max_body: Some(0),
        ..Limits::default()
    };
    accepts(
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
        &zero,
    );
    // Chunked bodies are checked by the decoder, as the sizes arrive.
    accepts(
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n",
        &zero,
    );
}
