//! The reactor and the responder, driven by a plain Rust "pool" thread: no Ruby involved.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use catamount_server::{Body, Server, ServerConfig, Waiter, WriteRoute};

mod support;
use support::start_with;

/// Starts a server on 127.0.0.1 with an OS-chosen port and one pool thread that answers every
/// request with its path and body length, and reports whether the socket had TCP_NODELAY.
fn start(config: ServerConfig) -> (Arc<Server>, u16, std::thread::JoinHandle<()>) {
    start_with(config, |job, _queue| {
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
    })
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

/// Answers `job` with `path` as the body through `write_whole`, as if the thread had been on it
/// since `since`; returns the route the answer took.
fn answer_with_path(job: catamount_server::Job, path: String, since: Instant) -> WriteRoute {
    let mut responder = job.responder;
    let keep = responder.keep_alive_allowed();
    let response = format!(
        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{path}",
        path.len()
    );
    let route = responder.write_whole(response.into_bytes(), since).unwrap();
    responder.finish(keep);
    route
}

/// Sends `GET path` on a new connection whose reads time out after 10 s.
fn send_get(port: u16, path: &str) -> TcpStream {
    let mut sock = TcpStream::connect(("127.0.0.1", port)).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    sock.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .unwrap();
    sock
}

/// Reads the 200 [`answer_with_path`] wrote for `path`.
fn read_path_answer(mut sock: TcpStream, path: &str) {
    let mut out = Vec::new();
    let mut buf = [0u8; 1024];
    while !out.ends_with(path.as_bytes()) {
        let n = sock
            .read(&mut buf)
            .unwrap_or_else(|e| panic!("answer to {path} not sent: {e}"));
        assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&out));
        out.extend_from_slice(&buf[..n]);
    }
    assert!(out.starts_with(b"HTTP/1.1 200 OK\r\n"));
}

/// Serves `/first` and `/second` arriving on two connections, the second sent while the pool's
/// only thread is on the first, each answered with `write_whole` as if the thread had been on
/// it since `serving_since()`; returns the route each response took, and checks both arrive.
fn routes_taken(config: ServerConfig, serving_since: fn() -> Instant) -> Vec<(String, WriteRoute)> {
    let (tx, rx) = mpsc::channel();
    let (server, port, pool) = start_with(config, move |job, queue| {
        let path = String::from_utf8_lossy(job.request.head.path()).into_owned();
        if path == "/first" {
            // Hold the first request until the second one waits in the queue (bounded).
            let deadline = Instant::now() + Duration::from_secs(10);
            while !queue.has_waiting() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        let route = answer_with_path(job, path.clone(), serving_since());
        tx.send((path, route)).unwrap();
    });
    let first = send_get(port, "/first");
    let first_taken = rx.recv_timeout(Duration::from_millis(50)).err();
    let second = send_get(port, "/second");
    read_path_answer(first, "/first");
    read_path_answer(second, "/second");
    let routes = vec![
        rx.recv_timeout(Duration::from_secs(10)).unwrap(),
        rx.recv_timeout(Duration::from_secs(10)).unwrap(),
    ];
    assert!(
        first_taken.is_some(),
        "the first request was answered alone"
    );
    server.stop();
    server.wait(&Waiter::new()).unwrap().unwrap();
    pool.join().unwrap();
    routes
}

#[test]
fn a_long_requests_response_goes_to_the_reactor_while_others_wait() {
    // The rule on, as on a machine with several CPUs (the default is off with one).
    let one_thread = || ServerConfig {
        max_threads: 1,
        reactor_writes_after: Some(Duration::from_micros(50)),
        ..ServerConfig::default()
    };
    let long = || {
        Instant::now()
            .checked_sub(Duration::from_millis(1))
            .unwrap()
    };
    // A start in the future: no time has passed, however slow the machine.
    let quick = || Instant::now() + Duration::from_secs(60);
    // Long, with a request waiting: the reactor writes; the last one, with none waiting, not.
    assert_eq!(
        routes_taken(one_thread(), long),
        [
            ("/first".to_owned(), WriteRoute::Reactor),
            ("/second".to_owned(), WriteRoute::Direct)
        ]
    );
    // A quick request, or the policy turned off: the pool thread writes.
    let direct = [
        ("/first".to_owned(), WriteRoute::Direct),
        ("/second".to_owned(), WriteRoute::Direct),
    ];
    assert_eq!(routes_taken(one_thread(), quick), direct);
    let off = ServerConfig {
        reactor_writes_after: None,
        ..one_thread()
    };
    assert_eq!(routes_taken(off, long), direct);
}

#[test]
fn responses_left_to_the_reactor_go_out_when_no_other_request_comes() {
    // Three requests on three connections, all queued before the only thread answers the
    // first (20 ms later, many reactor ticks): the first two answers go to the reactor (others
    // wait behind them), and their wakes are left to the reactor's next turn. No request arrives after them, so only the
    // reactor's tick can send them: without it the clients below would wait for ever.
    let config = ServerConfig {
        max_threads: 1,
        reactor_writes_after: Some(Duration::from_micros(50)),
        ..ServerConfig::default()
    };
    let (server, port, pool) = start_with(config, move |job, queue| {
        let path = String::from_utf8_lossy(job.request.head.path()).into_owned();
        if path == "/0" {
            // Hold the first request until the other two wait in the queue (bounded).
            let deadline = Instant::now() + Duration::from_secs(10);
            while queue.stats().backlog < 2 && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(1));
            }
            // Longer than a tick: the reactor stays ready for the wake while requests wait.
            std::thread::sleep(Duration::from_millis(20));
        }
        let long_ago = Instant::now()
            .checked_sub(Duration::from_millis(1))
            .unwrap();
        answer_with_path(job, path, long_ago);
    });
    let socks: Vec<TcpStream> = (0..3).map(|i| send_get(port, &format!("/{i}"))).collect();
    for (i, sock) in socks.into_iter().enumerate() {
        read_path_answer(sock, &format!("/{i}"));
    }
    assert!(
        server.deferred_wakes() >= 1,
        "the first answer's wake was left to the reactor"
    );
    server.stop();
    server.wait(&Waiter::new()).unwrap().unwrap();
    pool.join().unwrap();
}
