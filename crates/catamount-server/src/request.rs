//! What a pool thread receives: a whole request, already read from the client, and the
//! [`Responder`] to answer it with.

use std::fs::File;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use catamount_http::RequestHead;

use crate::response::Responder;

/// One unit of work for the Ruby thread pool.
#[derive(Debug)]
pub struct Job {
    pub request: Request,
    pub responder: Responder,
}

/// A request with its whole body buffered: the app never waits on the client.
#[derive(Debug)]
pub struct Request {
    pub head: RequestHead,
    pub body: Body,
    /// Who sent it.
    pub peer: Peer,
    /// The port of the listener that accepted the connection (None for UNIX sockets).
    pub local_port: Option<u16>,
    /// Time from the end of the head to the end of the body (Puma's `puma.request_body_wait`).
    pub body_wait: Duration,
}

/// The request body, as `rack.input` will present it.
#[derive(Debug)]
pub enum Body {
    Empty,
    /// Small bodies (up to `ServerConfig::body_in_memory_max`).
    Memory(Vec<u8>),
    /// Large and chunked bodies: an unlinked temporary file, positioned at its start.
    File {
        file: File,
        len: u64,
    },
}

impl Body {
    pub fn len(&self) -> u64 {
        match self {
            Body::Empty => 0,
            Body::Memory(v) => v.len() as u64,
            Body::File { len, .. } => *len,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The client's address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peer {
    Ip(SocketAddr),
    /// A UNIX-socket client; Puma reports it as 127.0.0.1, so do we.
    Unix,
}

impl Peer {
    /// The `REMOTE_ADDR` text: IPv4-mapped IPv6 addresses are shown as IPv4 (as Puma 8 does).
    pub fn ip_string(&self) -> String {
        match self {
            Peer::Ip(addr) => match addr.ip() {
                IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                    Some(v4) => v4.to_string(),
                    None => v6.to_string(),
                },
                ip => ip.to_string(),
            },
            Peer::Unix => "127.0.0.1".to_string(),
        }
    }
}
