//! The reactor and the responder, driven by a plain Rust "pool" thread: no Ruby involved.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Duration;

use catamount_config::BindUrl;
use catamount_server::{bind_all, Body, Pop, Server, ServerConfig, Waiter};

/// Starts a server on 127.0.0.1 with an OS-chosen port and one pool thread that answers every
/// request with its path and body length, and reports whether the socket had TCP_NODELAY.
fn start(config: ServerConfig) -> (Arc<Server>, u16, std::thread::JoinHandle<()>) {
    let listeners = bind_all(&[BindUrl::parse("tcp://127.0.0.1:0").unwrap()]).unwrap();
    let port: u16 = listeners[0]
        .display
        .rsplit(':')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let server = Arc::new(Server::start(config, listeners).unwrap());
    let queue = server.queue().clone();
    let pool = std::thread::spawn(move || {
        let waiter = Waiter::new();
        let mut seat = queue.thread_started();
        loop {
            match queue.pop(&mut seat, &waiter) {
                Pop::Job(job) => {
                    let job = *job;
                    let nodelay = socket2::SockRef::from(&job.responder)
                        .tcp_nodelay()
                        .unwrap();
                    let body_len = match &job.request.body {
                        Body::Empty => 0,
                        other => other.len(),
                    };
                    let text = format!(
                        "{} {} nodelay={nodelay}",
                        String::from_utf8_lossy(job.request.head.path()),
                        body_len
                    );
                    let mut responder = job.responder;
                    let keep = responder.keep_alive_allowed();
                    let response = format!(
                        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{text}",
                        text.len()
                    );
                    responder.write(response.as_bytes()).unwrap();
                    responder.finish(keep);
                }
                Pop::Closed => return,
                Pop::Interrupted | Pop::Trim => {}
            }
        }
    });
    (server, port, pool)
}

fn exchange(port: u16, request: &[u8], expect_responses: usize) -> String {
    let mut sock = TcpStream::connect(("127.0.0.1", port)).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    sock.write_all(request).unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while out.windows(8).filter(|w| w == b"nodelay=").count() < expect_responses {
        let n = sock.read(&mut buf).unwrap();
        assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&out));
        out.extend_from_slice(&buf[..n]);
    }
    String::from_utf8(out).unwrap()
}

#[test]
fn serves_pipelined_requests_in_order_with_nodelay() {
    let (server, port, pool) = start(ServerConfig {
        max_threads: 1,
        ..ServerConfig::default()
    });
    let out = exchange(
        port,
        b"GET /one HTTP/1.1\r\nHost: x\r\n\r\nPOST /two HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabcGET /three HTTP/1.1\r\nHost: x\r\n\r\n",
        3,
    );
    let one = out.find("/one 0 nodelay=true").unwrap();
    let two = out.find("/two 3 nodelay=true").unwrap();
    let three = out.find("/three 0 nodelay=true").unwrap();
    assert!(one < two && two < three, "{out}");
    server.stop();
    assert!(server.wait(&Waiter::new()).unwrap().is_ok());
    pool.join().unwrap();
}

#[test]
fn large_bodies_spill_to_a_file_and_errors_get_status_codes() {
    let (server, port, pool) = start(ServerConfig::default());
    let body = vec![b'z'; 200_000];
    let mut request = format!(
        "PUT /big HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(&body);
    assert!(exchange(port, &request, 1).contains("/big 200000 nodelay=true"));
    let mut sock = TcpStream::connect(("127.0.0.1", port)).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    sock.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
    let mut reply = String::new();
    sock.read_to_string(&mut reply).unwrap();
    assert!(reply.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{reply}");
    assert!(reply.contains("connection: close"), "{reply}");
    server.stop();
    server.wait(&Waiter::new()).unwrap().unwrap();
    pool.join().unwrap();
}
