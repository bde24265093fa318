//! What a pool thread receives: a whole request, already read from the client, and the
//! [`Responder`] to answer it with; and the queue of them ([`WorkQueue`]).

use std::fs::File;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use catamount_http::RequestHead;

use crate::body_buffers::BodyBuffer;
use crate::dispatch::{self, Running, Work};
use crate::response::Responder;

/// The queue between the reactor and the pool threads, carrying [`Job`]s.
pub type WorkQueue = dispatch::WorkQueue<Box<Job>>;
/// What a pool thread got from [`WorkQueue::pop`].
pub type Pop = dispatch::Pop<Box<Job>>;

/// One unit of work for the Ruby thread pool.
#[derive(Debug)]
pub struct Job {
    pub request: Request,
    pub responder: Responder,
}

/// A taken job counts as running until its responder is dropped: the response is handed over,
/// or the connection dropped. The time it waited for a thread is counted now.
impl Work for Box<Job> {
    fn taken(&mut self, running: Running) {
        let now = Instant::now();
        self.request.taken_at = now;
        self.responder
            .count_as_running(running, now.saturating_duration_since(self.request.read_at));
    }
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
    /// When it was read in full (queued for the pool).
    pub read_at: Instant,
    /// When a pool thread took it (`read_at` until then): `taken_at - read_at` is the time it
    /// waited for a thread (`catamount.queue_time`).
    pub taken_at: Instant,
    /// It came over TLS (an `ssl://` listener).
    pub tls: bool,
    /// The TLS client's certificate (DER), when it sent one.
    pub peer_certificate: Option<std::sync::Arc<[u8]>>,
}

impl Request {
    /// How long it waited, read in full, for a pool thread.
    pub fn queue_time(&self) -> Duration {
        self.taken_at.saturating_duration_since(self.read_at)
    }
}

/// The request body, as `rack.input` will present it.
#[derive(Debug)]
pub enum Body {
    Empty,
    /// Small bodies (up to `ServerConfig::body_in_memory_max`).
    Memory(BodyBuffer),
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
                    Some(v4) => ipv4_text(v4),
                    None => v6.to_string(),
                },
                IpAddr::V4(v4) => ipv4_text(v4),
            },
            Peer::Unix => "127.0.0.1".to_string(),
        }
    }
}

/// Dotted-quad text, written by hand: this runs for every request, and the `Display` of
/// `Ipv4Addr` goes through the formatting machinery (over a thousand instructions).
fn ipv4_text(ip: Ipv4Addr) -> String {
    let mut text = String::with_capacity(15);
    for (i, octet) in ip.octets().into_iter().enumerate() {
        if i > 0 {
            text.push('.');
        }
        if octet >= 100 {
            text.push(char::from(b'0' + octet / 100));
        }
        if octet >= 10 {
            text.push(char::from(b'0' + octet / 10 % 10));
        }
        text.push(char::from(b'0' + octet % 10));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_text_matches_display() {
        for n in [
            0u32,
            1,
            99,
            100,
            109,
            110,
            199,
            200,
            250,
            0x0a09_64ff,
            0x7f00_0001,
            0x0114_c707,
            u32::MAX,
        ] {
            let ip = Ipv4Addr::from(n);
            assert_eq!(ipv4_text(ip), ip.to_string());
        }
    }
}
