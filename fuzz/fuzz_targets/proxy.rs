//! Fuzz target for the PROXY protocol v1 parser (`catamount_http::parse_proxy_v1`); the input
//! is the start of a connection's bytes. (Catamount has no v2 parser: the binary signature
//! reads as "no PROXY line".)
//!
//! Beyond "no panic": the verdict never depends on how the bytes were split (the first
//! prefix that is not `Incomplete` says what the whole says), a complete line lies within the
//! input and the 107-byte limit and ends with CRLF, the announced source port is the line's,
//! and `Absent` means the input cannot start a line.
#![no_main]

use catamount_http::{parse_proxy_v1, ProxyLine, MAX_PROXY_LINE};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let whole = parse_proxy_v1(data);

    // Fed as it arrives: Incomplete until the first answer, which is the whole input's.
    let first = (0..=data.len())
        .map(|end| parse_proxy_v1(data.get(..end).unwrap_or_default()))
        .find(|v| *v != Ok(ProxyLine::Incomplete))
        .unwrap_or(Ok(ProxyLine::Incomplete));
    assert_eq!(
        first, whole,
        "the verdict depends on where the bytes were split"
    );

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
});
