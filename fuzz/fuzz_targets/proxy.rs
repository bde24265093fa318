//! Fuzz target for the PROXY protocol parsers: v1 (`catamount_http::parse_proxy_v1`) and v2
//! (`parse_proxy_v2`, and `parse_proxy`, which refuses the other version's header); the input
//! is the start of a connection's bytes, read by each.
//!
//! Beyond "no panic", for both versions: the verdict never depends on how the bytes were split
//! (the first prefix that is not `Incomplete` says what the whole says), and a complete header
//! lies within the input. v1: within the 107-byte limit, ending with CRLF, the announced source
//! port is the line's, and `Absent` means the input cannot start a line. v2: the length is the
//! header's own field, a TCP header re-encodes to its own bytes, and a header built from the
//! input (addresses and a TLV) parses back to what it was built from.
#![no_main]

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};

use catamount_http::{
    encode_proxy_v2, parse_proxy, parse_proxy_v1, parse_proxy_v2, ProxyAddresses, ProxyCommand,
    ProxyHeader, ProxyLine, ProxyV2, ProxyVersion, MAX_PROXY_LINE,
};
use libfuzzer_sys::fuzz_target;

const V2_SIGNATURE: &[u8] = b"\r\n\r\n\0\r\nQUIT\n";

fuzz_target!(|data: &[u8]| {
    v1(data);
    v2(data);
    v2_round_trip(data);
});

/// `parse` of the whole input, asserting it is what the input says fed as it arrives: the
/// first answer that is not `incomplete` among its prefixes.
fn split_invariant<T: PartialEq + std::fmt::Debug>(
    data: &[u8],
    parse: fn(&[u8]) -> T,
    incomplete: &T,
) -> T {
    let whole = parse(data);
    let first = (0..=data.len())
        .map(|end| parse(data.get(..end).unwrap_or_default()))
        .find(|v| v != incomplete);
    assert_eq!(
        first.as_ref().unwrap_or(incomplete),
        &whole,
        "the verdict depends on where the bytes were split"
    );
    whole
}

fn v1(data: &[u8]) {
    let whole = split_invariant(data, parse_proxy_v1, &Ok(ProxyLine::Incomplete));

    match whole {
        Ok(ProxyLine::Absent) => {
            assert!(!data.starts_with(b"PROXY ") && !b"PROXY ".starts_with(data));
        }
        Ok(ProxyLine::Incomplete) => {
            assert!(data.len() < MAX_PROXY_LINE);
            assert!(!data.windows(2).any(|w| w == b"\r\n"));
        }
        Ok(ProxyLine::Complete { source, len }) => {
            assert!(len <= data.len() && len <= MAX_PROXY_LINE);
            let line = data.get(..len).unwrap_or_default();
            assert!(line.starts_with(b"PROXY ") && line.ends_with(b"\r\n"));
            assert_eq!(parse_proxy_v1(line), whole, "the line alone says the same");
            match source {
                None => assert!(line.starts_with(b"PROXY UNKNOWN")),
                Some(addr) => {
                    assert!(line.starts_with(b"PROXY TCP"));
                    // `PROXY TCPn SRC DST SPORT DPORT`: the fifth field is the source port.
                    let fields: Vec<&[u8]> = line.split(|&b| b == b' ').collect();
                    let port = addr.port().to_string();
                    assert_eq!(fields.get(4).copied(), Some(port.as_bytes()));
                    assert_eq!(addr.is_ipv4(), line.starts_with(b"PROXY TCP4 "));
                }
            }
        }
        Err(e) => {
            assert!(data.starts_with(b"PROXY "));
            assert!(!e.reason().is_empty() && !e.to_string().is_empty());
        }
    }
}

fn v2(data: &[u8]) {
    let whole = split_invariant(data, parse_proxy_v2, &Ok(ProxyV2::Incomplete));
    match &whole {
        Ok(ProxyV2::Absent) => {
            assert!(!data.starts_with(V2_SIGNATURE) && !V2_SIGNATURE.starts_with(data));
        }
        Ok(ProxyV2::Incomplete) => {}
        Ok(ProxyV2::Complete(header)) => {
            let (hi, lo) = (data.get(14).copied(), data.get(15).copied());
            let announced = u16::from_be_bytes([hi.unwrap_or(0), lo.unwrap_or(0)]);
            assert_eq!(header.len, 16 + usize::from(announced));
            assert!(header.len <= data.len() && data.starts_with(V2_SIGNATURE));
            let own = data.get(..header.len).unwrap_or_default();
            assert_eq!(parse_proxy_v2(own), whole, "the header alone says the same");
            if let ProxyAddresses::Tcp { source, .. } = header.addresses {
                assert_eq!(header.client(), Some(source));
                let block = if source.is_ipv4() { 12 } else { 36 };
                let tlvs = own.get(16 + block..).unwrap_or_default();
                let again = encode_proxy_v2(header.command, &header.addresses, tlvs);
                assert_eq!(again, own, "a TCP header re-encodes to its own bytes");
            } else {
                assert_eq!(header.client(), None);
            }
        }
        Err(e) => assert!(!e.reason().is_empty()),
    }
    // `parse_proxy` for a v2 listener says what `parse_proxy_v2` says.
    let line = parse_proxy(data, ProxyVersion::V2);
    match (&whole, &line) {
        (Ok(ProxyV2::Complete(h)), Ok(ProxyLine::Complete { source, len })) => {
            assert_eq!((h.client(), h.len), (*source, *len));
        }
        (Ok(ProxyV2::Absent), Ok(ProxyLine::Absent))
        | (Ok(ProxyV2::Incomplete), Ok(ProxyLine::Incomplete))
        | (Err(_), Err(_)) => {}
        other => panic!("parse_proxy disagrees: {other:?}"),
    }
    // And for a v1 listener it refuses a v2 header.
    if data.starts_with(V2_SIGNATURE) {
        assert!(parse_proxy(data, ProxyVersion::V1).is_err());
    }
}

/// Builds a PROXY header from the input (IPv4 or IPv6 by its first byte, addresses and ports
/// from the bytes after it, then one TLV carrying the rest) and parses it back.
fn v2_round_trip(data: &[u8]) {
    let Some((&kind, rest)) = data.split_first() else {
        return;
    };
    let byte = |i: usize| rest.get(i).copied().unwrap_or(0);
    let port = |i: usize| u16::from_be_bytes([byte(i), byte(i + 1)]);
    let (addresses, used) = if kind & 1 == 0 {
        let ip = |at: usize| Ipv4Addr::new(byte(at), byte(at + 1), byte(at + 2), byte(at + 3));
        let addresses = ProxyAddresses::Tcp {
            source: SocketAddr::new(ip(0).into(), port(8)),
            destination: SocketAddr::new(ip(4).into(), port(10)),
        };
        (addresses, 12)
    } else {
        let ip = |at: usize| {
            let mut o = [0u8; 16];
            for (k, b) in o.iter_mut().enumerate() {
                *b = byte(at + k);
            }
            Ipv6Addr::from(o)
        };
        let addresses = ProxyAddresses::Tcp {
            source: SocketAddr::new(ip(0).into(), port(32)),
            destination: SocketAddr::new(ip(16).into(), port(34)),
        };
        (addresses, 36)
    };
    let value = rest.get(used..).unwrap_or_default();
    let mut tlv = vec![kind];
    tlv.extend_from_slice(&(value.len() as u16).to_be_bytes());
    tlv.extend_from_slice(value);
    let header = encode_proxy_v2(ProxyCommand::Proxy, &addresses, &tlv);
    let expected = ProxyHeader {
        command: ProxyCommand::Proxy,
        addresses,
        len: header.len(),
    };
    assert_eq!(parse_proxy_v2(&header), Ok(ProxyV2::Complete(expected)));
}
