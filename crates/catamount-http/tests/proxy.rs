//! PROXY protocol v1 lines: valid TCP4/TCP6/UNKNOWN lines at every split point, ordinary
//! requests left alone, the 107-byte limit at its boundary, and every malformed shape refused.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;

use catamount_http::{parse_proxy_v1, ProxyError, ProxyLine, MAX_PROXY_LINE};

/// What a client sends after the PROXY line; never part of `len`.
const REQUEST: &[u8] = b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n";

fn show(buf: &[u8]) -> String {
    String::from_utf8_lossy(buf).escape_debug().to_string()
}

/// The buffer is a complete line of its full length, announcing `source`.
fn complete(buf: &[u8], source: Option<&str>) {
    let source: Option<SocketAddr> = source.map(|s| s.parse().unwrap());
    let expected = ProxyLine::Complete {
        source,
        len: buf.len(),
    };
    assert_eq!(parse_proxy_v1(buf), Ok(expected), "{}", show(buf));
}

fn incomplete(buf: &[u8]) {
    assert_eq!(
        parse_proxy_v1(buf),
        Ok(ProxyLine::Incomplete),
        "{}",
        show(buf)
    );
}

fn absent(buf: &[u8]) {
    assert_eq!(parse_proxy_v1(buf), Ok(ProxyLine::Absent), "{}", show(buf));
}

fn refused(buf: &[u8]) -> ProxyError {
    match parse_proxy_v1(buf) {
        Err(e) => e,
        Ok(r) => panic!("{} accepted: {r:?}", show(buf)),
    }
}

/// Every strict prefix of `line` waits; the whole line, alone or followed by a request (or
/// any prefix of one), is complete with `len` the line's own length.
fn valid_at_every_split(line: &[u8], source: Option<&str>) {
    for k in 0..line.len() {
        incomplete(&line[..k]);
    }
    complete(line, source);
    let source: Option<SocketAddr> = source.map(|s| s.parse().unwrap());
    let mut stream = line.to_vec();
    stream.extend_from_slice(REQUEST);
    for k in line.len()..=stream.len() {
        let expected = ProxyLine::Complete {
            source,
            len: line.len(),
        };
        assert_eq!(
            parse_proxy_v1(&stream[..k]),
            Ok(expected),
            "{}",
            show(&stream[..k])
        );
    }
}

/// `line` is refused once complete, and its prefixes go Incomplete... then Err... and never
/// back: an error never depends on how the bytes were split.
fn invalid_at_every_split(line: &[u8]) {
    let mut seen_error = false;
    for k in 0..=line.len() {
        match parse_proxy_v1(&line[..k]) {
            Ok(ProxyLine::Incomplete) => assert!(!seen_error, "{}", show(&line[..k])),
            Err(_) => seen_error = true,
            Ok(r) => panic!("{}: {r:?}", show(&line[..k])),
        }
    }
    assert!(seen_error, "{}", show(line));
    let mut stream = line.to_vec();
    stream.extend_from_slice(REQUEST);
    refused(&stream);
}

#[test]
fn tcp4() {
    valid_at_every_split(
        b"PROXY TCP4 203.0.113.7 192.0.2.1 51234 443\r\n",
        Some("203.0.113.7:51234"),
    );
    complete(b"PROXY TCP4 0.0.0.0 0.0.0.0 0 0\r\n", Some("0.0.0.0:0"));
    complete(
        b"PROXY TCP4 255.255.255.255 255.255.255.255 65535 65535\r\n",
        Some("255.255.255.255:65535"),
    );
}

#[test]
fn tcp6() {
    valid_at_every_split(
        b"PROXY TCP6 2001:db8::7 2001:db8::1 51234 443\r\n",
        Some("[2001:db8::7]:51234"),
    );
    complete(b"PROXY TCP6 ::1 ::1 80 8080\r\n", Some("[::1]:80"));
    complete(b"PROXY TCP6 :: :: 0 0\r\n", Some("[::]:0"));
    // Embedded IPv4 is IPv6 as std parses it; the source stays a V6 address.
    complete(
        b"PROXY TCP6 ::ffff:192.0.2.7 ::ffff:192.0.2.1 1 2\r\n",
        Some("[::ffff:192.0.2.7]:1"),
    );
    complete(
        b"PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n",
        Some("[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535"),
    );
}

#[test]
fn unknown_with_and_without_fields() {
    valid_at_every_split(b"PROXY UNKNOWN\r\n", None);
    valid_at_every_split(b"PROXY UNKNOWN ffff:f::1 ffff:f::2 65535 65535\r\n", None);
    // Whatever follows UNKNOWN is ignored, even if it would be invalid for TCP.
    complete(b"PROXY UNKNOWN \r\n", None);
    complete(b"PROXY UNKNOWN  garbage\t\x00\xff 99999\r\n", None);
}

#[test]
fn empty_buffer_and_signature_prefixes_wait() {
    // Empty: "PROXY " could still come, so the caller must read before deciding.
    incomplete(b"");
    for k in 1..=6 {
        incomplete(&b"PROXY "[..k]);
    }
    incomplete(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2");
    incomplete(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r");
    // Faults other than line endings and length are only judged once the CRLF is here.
    incomplete(b"PROXY UDP4 1.2.3.4");
}

#[test]
fn ordinary_requests_are_absent() {
    absent(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
    absent(b"POST /");
    absent(b"PUT /");
    absent(b"G");
    absent(b"PO");
    absent(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
    absent(b"PROPFIND / HTTP/1.1\r\n");
    absent(b"PROXY\r\n");
    absent(b"PROXYTCP4 1.2.3.4 5.6.7.8 1 2\r\n");
    absent(b"PROXY\t");
    absent(b"proxy TCP4 1.2.3.4 5.6.7.8 1 2\r\n");
    absent(b" PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n");
    absent(b"\r\n");
    // The binary v2 signature is not a v1 line.
    absent(b"\r\n\r\n\x00\r\nQUIT\n\x21\x11");
}

#[test]
fn line_limit_at_the_boundary() {
    assert_eq!(MAX_PROXY_LINE, 107);
    let mut unterminated = b"PROXY UNKNOWN ".to_vec();
    unterminated.resize(106, b'x');
    incomplete(&unterminated);
    unterminated.push(b'x');
    assert_eq!(unterminated.len(), 107);
    refused(&unterminated);
    unterminated.push(b'x');
    refused(&unterminated);

    // A CR as byte 106 can still be followed by LF as byte 107; a CR as byte 107 cannot.
    let mut line = b"PROXY UNKNOWN ".to_vec();
    line.resize(105, b'x');
    line.push(b'\r');
    incomplete(&line);
    line.push(b'\n');
    assert_eq!(line.len(), 107);
    valid_at_every_split(&line, None);

    let mut long = b"PROXY UNKNOWN ".to_vec();
    long.resize(106, b'x');
    long.push(b'\r');
    refused(&long);
    long.push(b'\n');
    assert_eq!(long.len(), 108);
    invalid_at_every_split(&long);

    // A TCP6 line of exactly 107 bytes is fine; one more address digit is too long.
    let tcp6 =
        b"PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff ffff:ffff:ffff:ffff:ffff:ffff:255.255.25.1 65535 65535\r\n";
    assert_eq!(tcp6.len(), 107);
    valid_at_every_split(
        tcp6,
        Some("[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535"),
    );
    let tcp6 =
        b"PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.1 65535 65535\r\n";
    assert_eq!(tcp6.len(), 108);
    invalid_at_every_split(tcp6);
}

#[test]
fn bare_lf_and_bare_cr() {
    for line in [
        &b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n"[..],
        b"PROXY UNKNOWN\n",
        b"PROXY UNKNOWN x\ny\r\n",
        b"PROXY \n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rX",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\r\n",
        b"PROXY UNKNOWN\r \r\n",
        b"PROXY TCP4\r1.2.3.4 5.6.7.8 1 2\r\n",
        b"PROXY \r\r\n",
    ] {
        invalid_at_every_split(line);
    }
    // Refused as soon as seen, not only once a CRLF turns up.
    refused(b"PROXY UNKNOWN\n");
    refused(b"PROXY UNKNOWN\rX");
}

#[test]
fn protocol_word() {
    for line in [
        &b"PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n"[..],
        b"PROXY UDP6 ::1 ::1 1 2\r\n",
        b"PROXY TCP 1.2.3.4 5.6.7.8 1 2\r\n",
        b"PROXY tcp4 1.2.3.4 5.6.7.8 1 2\r\n",
        b"PROXY TCP44 1.2.3.4 5.6.7.8 1 2\r\n",
        b"PROXY unknown\r\n",
        b"PROXY UNKNOWNX\r\n",
        b"PROXY UNKNOWN\t1\r\n",
        b"PROXY \r\n",
        b"PROXY  TCP4 1.2.3.4 5.6.7.8 1 2\r\n",
        b"PROXY  UNKNOWN\r\n",
    ] {
        invalid_at_every_split(line);
    }
}

#[test]
fn wrong_family_for_the_protocol() {
    for line in [
        &b"PROXY TCP4 ::1 5.6.7.8 1 2\r\n"[..],
        b"PROXY TCP4 1.2.3.4 ::1 1 2\r\n",
        b"PROXY TCP4 ::ffff:1.2.3.4 ::ffff:5.6.7.8 1 2\r\n",
        b"PROXY TCP6 1.2.3.4 ::1 1 2\r\n",
        b"PROXY TCP6 ::1 5.6.7.8 1 2\r\n",
        b"PROXY TCP6 1.2.3.4 5.6.7.8 1 2\r\n",
    ] {
        invalid_at_every_split(line);
    }
}

#[test]
fn malformed_addresses() {
    for line in [
        &b"PROXY TCP4 1.2.3 5.6.7.8 1 2\r\n"[..],
        b"PROXY TCP4 1.2.3.4.5 5.6.7.8 1 2\r\n",
        b"PROXY TCP4 256.2.3.4 5.6.7.8 1 2\r\n",
        b"PROXY TCP4 01.2.3.4 5.6.7.8 1 2\r\n",
        b"PROXY TCP4 1.2.3.4:1 5.6.7.8 1 2\r\n",
        b"PROXY TCP4 localhost 5.6.7.8 1 2\r\n",
        b"PROXY TCP4 0x01020304 5.6.7.8 1 2\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8. 1 2\r\n",
        b"PROXY TCP4 1.2.3.\xff 5.6.7.8 1 2\r\n",
        b"PROXY TCP6 [::1] ::1 1 2\r\n",
        b"PROXY TCP6 fe80::1%eth0 ::1 1 2\r\n",
        b"PROXY TCP6 ::1 1::2::3 1 2\r\n",
        b"PROXY TCP6 ::g ::1 1 2\r\n",
    ] {
        invalid_at_every_split(line);
    }
}

#[test]
fn missing_extra_and_misplaced_fields() {
    for line in [
        &b"PROXY TCP4\r\n"[..],
        b"PROXY TCP4 \r\n",
        b"PROXY TCP4 1.2.3.4\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n",
        b"PROXY TCP6 ::1 ::1 1 2 x\r\n",
        b"PROXY TCP4 1.2.3.4 1 5.6.7.8 2\r\n",
        // Double spaces at each gap, and a trailing or tab separator.
        b"PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n",
        b"PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8  1 2\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1  2\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n",
        b"PROXY TCP6 ::1 ::1 1 2 \r\n",
        b"PROXY TCP4 1.2.3.4\t5.6.7.8 1 2\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1\t2\r\n",
    ] {
        invalid_at_every_split(line);
    }
}

#[test]
fn ports() {
    complete(b"PROXY TCP4 1.2.3.4 5.6.7.8 0 0\r\n", Some("1.2.3.4:0"));
    complete(
        b"PROXY TCP4 1.2.3.4 5.6.7.8 65535 1\r\n",
        Some("1.2.3.4:65535"),
    );
    complete(b"PROXY TCP4 1.2.3.4 5.6.7.8 10 100\r\n", Some("1.2.3.4:10"));
    for (src, dst) in [
        ("65536", "1"),
        ("1", "65536"),
        ("99999", "1"),
        ("100000", "1"),
        ("4294967297", "1"),
        ("080", "1"),
        ("1", "080"),
        ("00", "1"),
        ("00000", "1"),
        ("01", "1"),
        ("+80", "1"),
        ("-1", "1"),
        ("1", "-0"),
        ("0x50", "1"),
        ("8a", "1"),
        ("1e3", "1"),
        ("\u{661}", "1"),
    ] {
        let line = format!("PROXY TCP4 1.2.3.4 5.6.7.8 {src} {dst}\r\n");
        invalid_at_every_split(line.as_bytes());
    }
}

#[test]
fn error_is_a_loggable_error() {
    let e = refused(b"PROXY TCP4 1.2.3.4 5.6.7.8 65536 1\r\n");
    let boxed: Box<dyn std::error::Error> = Box::new(e);
    let text = boxed.to_string();
    assert!(text.contains("PROXY"), "{text}");
    assert!(text.contains("source port"), "{text}");
    assert!(!format!("{e:?}").is_empty());
    assert!(refused(b"PROXY UNKNOWN\n").to_string().contains("LF"));
}

/// A tiny deterministic generator, so the no-panic test needs no dependency.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 33
    }
}

/// Whatever the bytes, the answer is consistent: `len` lies within the buffer and the
/// limit, ends in CRLF, and the same prefix gives the same answer with more bytes after it.
fn check_consistent(buf: &[u8]) {
    match parse_proxy_v1(buf) {
        Ok(ProxyLine::Complete { len, .. }) => {
            assert!(len <= buf.len() && len <= MAX_PROXY_LINE, "{}", show(buf));
            assert!(buf[..len].ends_with(b"\r\n"), "{}", show(buf));
            assert_eq!(parse_proxy_v1(&buf[..len]), parse_proxy_v1(buf));
        }
        Ok(ProxyLine::Absent) => assert!(!buf.starts_with(b"PROXY ")),
        Ok(ProxyLine::Incomplete) => assert!(buf.len() < MAX_PROXY_LINE),
        Err(_) => {}
    }
}

#[test]
fn mutated_and_random_input_never_panics() {
    let seeds: [&[u8]; 4] = [
        b"PROXY TCP4 203.0.113.7 192.0.2.1 51234 443\r\nGET / HTTP/1.1\r\n\r\n",
        b"PROXY TCP6 2001:db8::7 2001:db8::1 51234 443\r\n",
        b"PROXY UNKNOWN ffff:f::1 ffff:f::2 65535 65535\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n",
    ];
    let alphabet = b" \r\n\t\x00\xff09:.PROXYTCP46UNKOWabcdefx+-[]%";
    for seed in seeds {
        for i in 0..seed.len() {
            for &b in alphabet {
                let mut buf = seed.to_vec();
                buf[i] = b;
                for k in 0..=buf.len() {
                    check_consistent(&buf[..k]);
                }
                let mut removed = seed.to_vec();
                removed.remove(i);
                check_consistent(&removed);
                let mut inserted = seed.to_vec();
                inserted.insert(i, b);
                check_consistent(&inserted);
            }
        }
    }
    let mut rng = Lcg(0x5eed);
    for _ in 0..20_000 {
        let len = (rng.next() % 140) as usize;
        let mut buf = b"PROXY ".to_vec();
        for _ in 0..len {
            let pick = rng.next() as usize;
            buf.push(if pick & 3 == 0 {
                (pick >> 8) as u8
            } else {
                alphabet[(pick >> 8) % alphabet.len()]
            });
        }
        check_consistent(&buf);
        check_consistent(&buf[6..]);
    }
}
