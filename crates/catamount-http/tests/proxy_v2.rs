//! PROXY protocol v2 headers: every family and command at every split point, TLVs skipped
//! within the length, each malformed shape refused, and `parse_proxy`'s refusal of the other
//! version's header.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;

use catamount_http::{
    encode_proxy_v2, parse_proxy, parse_proxy_v2, ProxyAddresses, ProxyCommand, ProxyHeader,
    ProxyLine, ProxyV2, ProxyVersion,
};

const SIG: &[u8] = b"\r\n\r\n\0\r\nQUIT\n";
const REQUEST: &[u8] = b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n";

fn tcp(source: &str, destination: &str) -> ProxyAddresses {
    ProxyAddresses::Tcp {
        source: source.parse().unwrap(),
        destination: destination.parse().unwrap(),
    }
}

/// Every strict prefix of `header` waits; the header alone, or followed by any prefix of a
/// request, is complete with its own length and the expected command and addresses.
fn valid_at_every_split(header: &[u8], command: ProxyCommand, addresses: ProxyAddresses) {
    for k in 0..header.len() {
        assert_eq!(
            parse_proxy_v2(&header[..k]),
            Ok(ProxyV2::Incomplete),
            "prefix {k}"
        );
    }
    let expected = ProxyV2::Complete(ProxyHeader {
        command,
        addresses,
        len: header.len(),
    });
    let mut stream = header.to_vec();
    stream.extend_from_slice(REQUEST);
    for k in header.len()..=stream.len() {
        assert_eq!(parse_proxy_v2(&stream[..k]), Ok(expected.clone()), "{k}");
    }
}

/// `header` goes Incomplete... then Err, never back, and never anything else.
fn refused(header: &[u8], needle: &str) {
    let mut seen_error = false;
    for k in 0..=header.len() {
        match parse_proxy_v2(&header[..k]) {
            Ok(ProxyV2::Incomplete) => assert!(!seen_error, "prefix {k}"),
            Err(e) => {
                seen_error = true;
                assert!(e.to_string().contains(needle), "{e} lacks {needle}");
            }
            Ok(r) => panic!("prefix {k}: {r:?}"),
        }
    }
    assert!(seen_error);
}

fn header(ver_cmd: u8, fam: u8, body: &[u8]) -> Vec<u8> {
    let mut h = SIG.to_vec();
    h.push(ver_cmd);
    h.push(fam);
    h.extend_from_slice(&(body.len() as u16).to_be_bytes());
    h.extend_from_slice(body);
    h
}

#[test]
fn tcp_over_ipv4() {
    let body = [203, 0, 113, 7, 192, 0, 2, 1, 0xc8, 0x22, 0x01, 0xbb];
    let h = header(0x21, 0x11, &body);
    assert_eq!(h.len(), 28);
    let addresses = tcp("203.0.113.7:51234", "192.0.2.1:443");
    valid_at_every_split(&h, ProxyCommand::Proxy, addresses.clone());
    assert_eq!(encode_proxy_v2(ProxyCommand::Proxy, &addresses, &[]), h);
    let ProxyV2::Complete(parsed) = parse_proxy_v2(&h).unwrap() else {
        panic!()
    };
    assert_eq!(parsed.client(), Some("203.0.113.7:51234".parse().unwrap()));
}

#[test]
fn tcp_over_ipv6() {
    let addresses = tcp("[2001:db8::7]:51234", "[2001:db8::1]:8443");
    let h = encode_proxy_v2(ProxyCommand::Proxy, &addresses, &[]);
    assert_eq!(&h[12..16], &[0x21, 0x21, 0, 36]);
    valid_at_every_split(&h, ProxyCommand::Proxy, addresses);
    let parsed = parse_proxy(&h, ProxyVersion::V2).unwrap();
    assert_eq!(
        parsed,
        ProxyLine::Complete {
            source: Some("[2001:db8::7]:51234".parse().unwrap()),
            len: h.len()
        }
    );
}

#[test]
fn unix_stream_keeps_the_socket_peer() {
    let addresses = ProxyAddresses::Unix {
        source: b"/run/client.sock".to_vec(),
        destination: b"/run/catamount.sock".to_vec(),
    };
    let h = encode_proxy_v2(ProxyCommand::Proxy, &addresses, &[]);
    assert_eq!(h.len(), 16 + 216);
    valid_at_every_split(&h, ProxyCommand::Proxy, addresses);
    let parsed = parse_proxy(&h, ProxyVersion::V2).unwrap();
    assert_eq!(
        parsed,
        ProxyLine::Complete {
            source: None,
            len: h.len()
        }
    );
}

#[test]
fn local_is_a_health_check_whatever_its_block() {
    let h = header(0x20, 0x00, &[]);
    valid_at_every_split(&h, ProxyCommand::Local, ProxyAddresses::Unspec);
    // HAProxy may send its own addresses with LOCAL; they are ignored, as is the family
    // (even one a PROXY header may not carry).
    let own = header(0x20, 0x12, &[127, 0, 0, 1, 127, 0, 0, 1, 0, 1, 0, 2]);
    valid_at_every_split(&own, ProxyCommand::Local, ProxyAddresses::Unspec);
    assert_eq!(
        parse_proxy(&own, ProxyVersion::V2).unwrap(),
        ProxyLine::Complete {
            source: None,
            len: own.len()
        }
    );
}

#[test]
fn proxy_with_unspec_family_keeps_the_socket_peer() {
    let h = header(0x21, 0x00, &[1, 2, 3]);
    valid_at_every_split(&h, ProxyCommand::Proxy, ProxyAddresses::Unspec);
    let ProxyV2::Complete(parsed) = parse_proxy_v2(&h).unwrap() else {
        panic!()
    };
    assert_eq!(parsed.client(), None);
}

#[test]
fn tlvs_are_skipped_within_the_length() {
    let addresses = tcp("10.0.0.5:4000", "10.0.0.1:80");
    // ALPN "h2", AUTHORITY "example.com", an empty NOOP, then a CRC32C-sized value.
    let mut tlvs = vec![0x01, 0, 2, b'h', b'2', 0x02, 0, 11];
    tlvs.extend_from_slice(b"example.com");
    tlvs.extend_from_slice(&[0x04, 0, 0, 0x03, 0, 4, 1, 2, 3, 4]);
    let h = encode_proxy_v2(ProxyCommand::Proxy, &addresses, &tlvs);
    valid_at_every_split(&h, ProxyCommand::Proxy, addresses.clone());
    // A TLV whose value runs past the header's end, or a stub of one, is refused.
    refused(
        &encode_proxy_v2(ProxyCommand::Proxy, &addresses, &[0x01, 0, 9, b'h']),
        "TLV longer",
    );
    refused(
        &encode_proxy_v2(ProxyCommand::Proxy, &addresses, &[0x01, 0]),
        "truncated TLV",
    );
}

#[test]
fn malformed_shapes_are_refused() {
    let v4 = [127, 0, 0, 1, 127, 0, 0, 1, 0x30, 0x39, 0x00, 0x50];
    // Version 1 or 3 in the binary form; a command other than LOCAL/PROXY.
    refused(&header(0x11, 0x11, &v4), "version is not 2");
    refused(&header(0x31, 0x11, &v4), "version is not 2");
    refused(&header(0x22, 0x11, &v4), "unknown command");
    // UDP over IPv4, IPv6, UNIX datagrams.
    refused(&header(0x21, 0x12, &v4), "datagram");
    refused(&header(0x21, 0x22, &[0; 36]), "datagram");
    refused(&header(0x21, 0x32, &[0; 216]), "datagram");
    // Unknown families and transports.
    refused(&header(0x21, 0x41, &v4), "unknown address family");
    refused(&header(0x21, 0x13, &v4), "unknown address family");
    refused(&header(0x21, 0x10, &v4), "unknown address family");
    // A length shorter than the family's block.
    refused(
        &header(0x21, 0x11, &v4[..11]),
        "shorter than the address block",
    );
    refused(
        &header(0x21, 0x21, &[0; 35]),
        "shorter than the address block",
    );
    refused(
        &header(0x21, 0x31, &[0; 215]),
        "shorter than the address block",
    );
}

#[test]
fn other_bytes_are_absent_or_the_wrong_version() {
    for plain in [
        REQUEST,
        b"\x16\x03\x01\x02\x00",
        b"\r\nGET / HTTP/1.1\r\n\r\n",
    ] {
        assert_eq!(parse_proxy_v2(plain), Ok(ProxyV2::Absent));
        assert_eq!(parse_proxy(plain, ProxyVersion::V2), Ok(ProxyLine::Absent));
    }
    // A prefix of either signature waits: "P" may be POST, or PROXY.
    assert_eq!(parse_proxy_v2(b"P"), Ok(ProxyV2::Incomplete));
    assert_eq!(parse_proxy_v2(b"PO"), Ok(ProxyV2::Absent));
    let v1 = b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n";
    refused(v1, "version 1 line where version 2");
    // A v2 header sent to a listener set for v1 is refused, not read as HTTP; its
    // signature's prefixes wait, so where the reads split does not matter.
    let v2 = encode_proxy_v2(ProxyCommand::Proxy, &tcp("1.2.3.4:1", "5.6.7.8:2"), &[]);
    for k in 1..12 {
        assert_eq!(
            parse_proxy(&v2[..k], ProxyVersion::V1),
            Ok(ProxyLine::Incomplete)
        );
    }
    let e = parse_proxy(&v2, ProxyVersion::V1).unwrap_err();
    assert!(e.to_string().contains("version 2 header where version 1"));
    assert_eq!(
        parse_proxy(v1, ProxyVersion::V1),
        Ok(ProxyLine::Complete {
            source: Some("1.2.3.4:1".parse::<SocketAddr>().unwrap()),
            len: v1.len()
        })
    );
    assert_eq!(
        parse_proxy(REQUEST, ProxyVersion::V1),
        Ok(ProxyLine::Absent)
    );
}

#[test]
fn the_longest_header_is_read_whole() {
    let addresses = tcp("10.0.0.5:4000", "10.0.0.1:80");
    // One NOOP TLV filling the 16-bit length after the 12-byte block.
    let value = u16::MAX as usize - 12 - 3;
    let mut tlvs = vec![0x04];
    tlvs.extend_from_slice(&(value as u16).to_be_bytes());
    tlvs.resize(3 + value, 0);
    let h = encode_proxy_v2(ProxyCommand::Proxy, &addresses, &tlvs);
    assert_eq!(h.len(), catamount_http::MAX_PROXY_V2);
    assert_eq!(parse_proxy_v2(&h[..h.len() - 1]), Ok(ProxyV2::Incomplete));
    let ProxyV2::Complete(parsed) = parse_proxy_v2(&h).unwrap() else {
        panic!()
    };
    assert_eq!(parsed.len, h.len());
}
