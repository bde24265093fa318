//! HAProxy PROXY protocol version 2 (the binary form, `proxy-protocol.txt` §2.2), and
//! [`parse_proxy`], which reads whichever version a listener is set to expect.
//!
//! A v2 header is a 12-byte signature, a version/command byte, a family/transport byte, a
//! big-endian length, then that many bytes: the addresses of the announced family followed by
//! TLVs (type-length-value extensions). Catamount uses the source address only; TLVs are walked
//! (each must fit inside the length) and skipped. The LOCAL command (the proxy's own health
//! check) carries no client: the socket's own peer stays. UDP and unknown families, versions
//! and commands are refused, never guessed at: the address is trusted for logs and access
//! control.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::proxy::{parse_proxy_v1, ProxyError, ProxyLine};

/// What every v2 header starts with (`\r\n\r\n\0\r\nQUIT\n`): no HTTP request or TLS record
/// begins like this.
pub const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";

/// The fixed part: signature, version/command, family/transport, length.
pub const V2_FIXED: usize = 16;

/// The longest v2 header: the fixed part and the most a 16-bit length can announce.
pub const MAX_PROXY_V2: usize = V2_FIXED + u16::MAX as usize;

/// What every v1 line starts with.
const V1_SIGNATURE: &[u8] = b"PROXY ";

/// Address block sizes by family (source, destination, then ports for IP).
const INET_BLOCK: usize = 12;
const INET6_BLOCK: usize = 36;
const UNIX_BLOCK: usize = 216;
const UNIX_PATH: usize = 108;

/// Which PROXY protocol version a listener expects (`set_remote_address proxy_protocol:`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyVersion {
    V1,
    V2,
}

/// What the v2 header says the connection is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyCommand {
    /// The proxy's own connection (a health check): keep the socket's own addresses.
    Local,
    /// Relayed for a client: the addresses are the client's.
    Proxy,
}

/// The address block of a v2 header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProxyAddresses {
    /// None given (AF_UNSPEC, or any block of a LOCAL header, which is ignored).
    Unspec,
    /// TCP over IPv4 or IPv6.
    Tcp {
        source: SocketAddr,
        destination: SocketAddr,
    },
    /// AF_UNIX stream sockets: the paths, cut at their first NUL.
    Unix {
        source: Vec<u8>,
        destination: Vec<u8>,
    },
}

/// A complete v2 header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyHeader {
    pub command: ProxyCommand,
    pub addresses: ProxyAddresses,
    /// Bytes the header took (fixed part, addresses and TLVs); what follows is the stream's.
    pub len: usize,
}

impl ProxyHeader {
    /// The client's TCP address, when the header names one (a PROXY command over TCP); None
    /// means the socket's own peer stands (LOCAL, UNSPEC, or a UNIX client with no address).
    pub fn client(&self) -> Option<SocketAddr> {
        match (&self.command, &self.addresses) {
            (ProxyCommand::Proxy, ProxyAddresses::Tcp { source, .. }) => Some(*source),
            _ => None,
        }
    }
}

/// What the start of a connection's bytes says, for v2.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProxyV2 {
    /// The bytes cannot become the v2 signature (plain HTTP, or a TLS handshake).
    Absent,
    /// A prefix of a header (the empty buffer too): read more.
    Incomplete,
    Complete(ProxyHeader),
}

/// Reads a PROXY protocol v2 header from the start of `buf`, everything received so far.
///
/// As for v1, the answer depends only on the bytes, not on how they were split: each strict
/// prefix of a valid header is [`ProxyV2::Incomplete`]. A fault in the fixed part is refused as
/// soon as it is seen; one in the addresses or TLVs once the announced length has arrived.
/// A PROXY v1 line is refused as the wrong version (a proxy set up for v1 in front of a
/// listener that expects v2: better said than served as HTTP).
pub fn parse_proxy_v2(buf: &[u8]) -> Result<ProxyV2, ProxyError> {
    if !buf.starts_with(&V2_SIGNATURE) {
        // A prefix of either signature may still become it (the empty buffer too): wait, so
        // the answer does not depend on where the reads split.
        return if V2_SIGNATURE.starts_with(buf) || V1_SIGNATURE.starts_with(buf) {
            Ok(ProxyV2::Incomplete)
        } else if buf.starts_with(V1_SIGNATURE) {
            Err(ProxyError::new(
                "a version 1 line where version 2 is expected",
            ))
        } else {
            Ok(ProxyV2::Absent)
        };
    }
    if let Some(&ver_cmd) = buf.get(12) {
        if ver_cmd >> 4 != 2 {
            return Err(ProxyError::new("version is not 2"));
        }
        if ver_cmd & 0x0f > 1 {
            return Err(ProxyError::new("unknown command (not LOCAL or PROXY)"));
        }
    }
    let (Some(&ver_cmd), Some(&fam), Some(&hi), Some(&lo)) =
        (buf.get(12), buf.get(13), buf.get(14), buf.get(15))
    else {
        return Ok(ProxyV2::Incomplete);
    };
    let len = V2_FIXED + usize::from(u16::from_be_bytes([hi, lo]));
    let Some(body) = buf.get(V2_FIXED..len) else {
        return Ok(ProxyV2::Incomplete);
    };
    let command = if ver_cmd & 0x0f == 0 {
        ProxyCommand::Local
    } else {
        ProxyCommand::Proxy
    };
    if command == ProxyCommand::Local {
        // The spec has the receiver ignore a LOCAL header's block, whatever it claims.
        return Ok(ProxyV2::Complete(ProxyHeader {
            command,
            addresses: ProxyAddresses::Unspec,
            len,
        }));
    }
    let (addresses, used) = addresses(fam, body)?;
    skip_tlvs(body.get(used..).unwrap_or_default())?;
    Ok(ProxyV2::Complete(ProxyHeader {
        command,
        addresses,
        len,
    }))
}

/// Reads the address block for family/transport byte `fam`; returns it and its size.
fn addresses(fam: u8, body: &[u8]) -> Result<(ProxyAddresses, usize), ProxyError> {
    let block = match fam {
        // The spec has the receiver ignore what follows AF_UNSPEC: its size is unknown, so
        // it takes the whole length (no TLVs are looked for).
        0x00 => return Ok((ProxyAddresses::Unspec, body.len())),
        0x11 => INET_BLOCK,
        0x21 => INET6_BLOCK,
        0x31 => UNIX_BLOCK,
        0x12 | 0x22 | 0x32 => return Err(ProxyError::new("datagram transport (only streams)")),
        _ => return Err(ProxyError::new("unknown address family or transport")),
    };
    let b = body
        .get(..block)
        .ok_or(ProxyError::new("length shorter than the address block"))?;
    let addresses = match fam {
        0x11 => {
            let ip = |at: usize| Ipv4Addr::from(bytes::<4>(b, at));
            ProxyAddresses::Tcp {
                source: SocketAddr::new(ip(0).into(), port(b, 8)),
                destination: SocketAddr::new(ip(4).into(), port(b, 10)),
            }
        }
        0x21 => {
            let ip = |at: usize| Ipv6Addr::from(bytes::<16>(b, at));
            ProxyAddresses::Tcp {
                source: SocketAddr::new(ip(0).into(), port(b, 32)),
                destination: SocketAddr::new(ip(16).into(), port(b, 34)),
            }
        }
        _ => {
            let path = |at: usize| {
                let raw = b.get(at..at + UNIX_PATH).unwrap_or_default();
                let end = raw.iter().position(|&c| c == 0).unwrap_or(raw.len());
                raw.get(..end).unwrap_or_default().to_vec()
            };
            ProxyAddresses::Unix {
                source: path(0),
                destination: path(UNIX_PATH),
            }
        }
    };
    Ok((addresses, block))
}

/// `N` bytes of `b` from `at` (zeros past its end, which the block size check rules out).
fn bytes<const N: usize>(b: &[u8], at: usize) -> [u8; N] {
    let mut out = [0u8; N];
    if let Some(src) = b.get(at..at + N) {
        out.copy_from_slice(src);
    }
    out
}

fn port(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes(bytes::<2>(b, at))
}

/// Walks the TLVs after the addresses: each is a type byte, a 16-bit length and its value,
/// and must end inside the header. Their contents are not used.
fn skip_tlvs(mut rest: &[u8]) -> Result<(), ProxyError> {
    while !rest.is_empty() {
        let [_, hi, lo] = bytes::<3>(rest, 0);
        if rest.len() < 3 {
            return Err(ProxyError::new("truncated TLV"));
        }
        let end = 3 + usize::from(u16::from_be_bytes([hi, lo]));
        rest = rest
            .get(end..)
            .ok_or(ProxyError::new("TLV longer than the header"))?;
    }
    Ok(())
}

/// Reads the PROXY header a listener expects (`version`) as a [`ProxyLine`], the client it
/// names (None: keep the socket's peer) and its length. A header of the other version is
/// refused, so a proxy set up for one version in front of a listener set for the other is
/// said in the log, not half-served.
pub fn parse_proxy(buf: &[u8], version: ProxyVersion) -> Result<ProxyLine, ProxyError> {
    match version {
        ProxyVersion::V1 => {
            if buf.starts_with(&V2_SIGNATURE) {
                return Err(ProxyError::new(
                    "a version 2 header where version 1 is expected",
                ));
            }
            // A prefix of the v2 signature waits, so the refusal above does not depend on where
            // the reads split (costs only a client whose request starts with a blank line).
            if !buf.is_empty() && V2_SIGNATURE.starts_with(buf) {
                return Ok(ProxyLine::Incomplete);
            }
            parse_proxy_v1(buf)
        }
        ProxyVersion::V2 => Ok(match parse_proxy_v2(buf)? {
            ProxyV2::Absent => ProxyLine::Absent,
            ProxyV2::Incomplete => ProxyLine::Incomplete,
            ProxyV2::Complete(header) => ProxyLine::Complete {
                source: header.client(),
                len: header.len,
            },
        }),
    }
}

impl fmt::Display for ProxyVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ProxyVersion::V1 => "v1",
            ProxyVersion::V2 => "v2",
        })
    }
}

/// Encodes a v2 header (PROXY over TCP, or LOCAL) with `tlvs` appended verbatim: for tests and
/// fuzzing's round trip, as HAProxy's `send-proxy-v2` would send it.
pub fn encode_proxy_v2(command: ProxyCommand, addresses: &ProxyAddresses, tlvs: &[u8]) -> Vec<u8> {
    let mut block = Vec::new();
    let fam = match addresses {
        ProxyAddresses::Unspec => 0x00,
        ProxyAddresses::Tcp {
            source,
            destination,
        } => {
            let fam = match (source, destination) {
                (SocketAddr::V4(s), SocketAddr::V4(d)) => {
                    block.extend_from_slice(&s.ip().octets());
                    block.extend_from_slice(&d.ip().octets());
                    0x11
                }
                _ => {
                    block.extend_from_slice(&v6(source).octets());
                    block.extend_from_slice(&v6(destination).octets());
                    0x21
                }
            };
            block.extend_from_slice(&source.port().to_be_bytes());
            block.extend_from_slice(&destination.port().to_be_bytes());
            fam
        }
        ProxyAddresses::Unix {
            source,
            destination,
        } => {
            for path in [source, destination] {
                let mut field: Vec<u8> = path.iter().copied().take(UNIX_PATH).collect();
                field.resize(UNIX_PATH, 0);
                block.extend_from_slice(&field);
            }
            0x31
        }
    };
    let cmd = match command {
        ProxyCommand::Local => 0x20,
        ProxyCommand::Proxy => 0x21,
    };
    let len = (block.len() + tlvs.len()).min(u16::MAX as usize) as u16;
    let mut out = V2_SIGNATURE.to_vec();
    out.push(cmd);
    out.push(fam);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&block);
    out.extend_from_slice(tlvs);
    out
}

fn v6(addr: &SocketAddr) -> Ipv6Addr {
    match addr.ip() {
        std::net::IpAddr::V6(ip) => ip,
        std::net::IpAddr::V4(ip) => ip.to_ipv6_mapped(),
    }
}
