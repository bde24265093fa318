//! The control server over real loopback sockets (TCP, TLS and UNIX), driven as the caller's loop
//! drives it: `poll` in a bounded loop, clients on their own threads.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use catamount_control::command::COMMANDS;
use catamount_control::{ControlServer, Settings};

const BOUND: Duration = Duration::from_secs(20);

fn all() -> Vec<String> {
    COMMANDS.iter().map(|c| c.to_string()).collect()
}

fn server(token: Option<&str>, allowed: &[String]) -> ControlServer {
    ControlServer::bind("tcp://127.0.0.1:0", token, allowed).unwrap_or_else(|e| panic!("{e}"))
}

fn addr(s: &ControlServer) -> String {
    s.url().trim_start_matches("tcp://").to_string()
}

fn tcp(s: &ControlServer) -> TcpStream {
    let c = TcpStream::connect(addr(s)).unwrap_or_else(|e| panic!("{e}"));
    c.set_read_timeout(Some(BOUND))
        .unwrap_or_else(|e| panic!("{e}"));
    c
}

/// A client on its own thread: sends `request`, reads until the server closes.
fn client<S: Read + Write + Send + 'static>(mut sock: S, request: Vec<u8>) -> JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let _ = sock.write_all(&request);
        let mut out = Vec::new();
        let _ = sock.read_to_end(&mut out);
        out
    })
}

/// A client that sends `GET path` but reads the answer only once told (through the sender),
/// so a large answer must wait in the server. Its receive buffer is bounded: the kernel could
/// otherwise grow it past the whole answer.
fn slow_reader(
    s: &ControlServer,
    path: &str,
) -> (JoinHandle<Vec<u8>>, std::sync::mpsc::Sender<()>) {
    let mut reader = tcp(s);
    socket2::SockRef::from(&reader)
        .set_recv_buffer_size(64 * 1024)
        .unwrap_or_else(|e| panic!("{e}"));
    let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
    let request = get(path);
    let thread = std::thread::spawn(move || {
        let _ = reader.write_all(&request);
        let _ = go_rx.recv_timeout(BOUND);
        let mut out = Vec::new();
        let _ = reader.read_to_end(&mut out);
        out
    });
    (thread, go_tx)
}

/// Polls until `done` says so (bounded); returns the commands seen.
fn drive(
    s: &mut ControlServer,
    mut done: impl FnMut(&mut ControlServer, &[(u64, &'static str)]) -> bool,
) -> Vec<(u64, &'static str)> {
    let end = Instant::now() + BOUND;
    let mut seen = Vec::new();
    loop {
        seen.extend(s.poll());
        if done(s, &seen) {
            return seen;
        }
        assert!(Instant::now() < end, "not done within {BOUND:?}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Polls until the client thread has its whole answer.
fn finish(s: &mut ControlServer, c: JoinHandle<Vec<u8>>) -> String {
    drive(s, |_, _| c.is_finished());
    String::from_utf8_lossy(&c.join().unwrap_or_default()).into_owned()
}

fn get(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").into_bytes()
}

/// One request through a server that answers every command with 200 and its name.
fn exchange(s: &mut ControlServer, request: Vec<u8>) -> String {
    let c = client(tcp(s), request);
    drive(s, |s, seen| {
        for (id, cmd) in seen {
            s.answer(
                *id,
                200,
                "application/json",
                format!("{{\"cmd\":\"{cmd}\"}}").as_bytes(),
            );
        }
        c.is_finished()
    });
    String::from_utf8_lossy(&c.join().unwrap_or_default()).into_owned()
}

#[test]
fn a_command_is_handed_over_answered_and_closed() {
    let mut s = server(None, &all());
    let c = client(tcp(&s), get("/stats"));
    let seen = drive(&mut s, |_, seen| !seen.is_empty());
    assert_eq!(seen.len(), 1);
    let (id, command) = seen[0];
    assert_eq!(command, "stats");
    assert!(s.answer(id, 200, "application/json", b"{\"a\":1}"));
    assert!(
        !s.answer(id, 200, "text/plain", b"twice"),
        "answered once only"
    );
    assert_eq!(
        finish(&mut s, c),
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 7\r\nconnection: close\r\n\r\n{\"a\":1}"
    );
    drive(&mut s, |s, _| s.connections() == 0);
}

#[test]
fn routing_by_the_last_segment_method_ignored() {
    let mut s = server(None, &all());
    let r = exchange(
        &mut s,
        b"POST /x/y/gc-stats HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc".to_vec(),
    );
    assert!(r.ends_with("{\"cmd\":\"gc-stats\"}"), "{r}");
    // HTTP/1.1 without Host, as `printf | nc` health checks send it: Puma answers it too.
    let r = exchange(&mut s, b"GET /stats HTTP/1.1\r\n\r\n".to_vec());
    assert!(r.ends_with("{\"cmd\":\"stats\"}"), "{r}");
    let r = exchange(
        &mut s,
        b"DELETE /phased-restart?x=1 HTTP/1.0\r\n\r\n".to_vec(),
    );
    assert!(r.ends_with("{\"cmd\":\"phased-restart\"}"), "{r}");
    let r = exchange(&mut s, get("/stats/"));
    assert!(
        r.starts_with("HTTP/1.1 404 Not Found\r\ncontent-type: text/plain\r\n"),
        "{r}"
    );
    assert!(r.ends_with("\r\n\r\nUnsupported action"), "{r}");
    let r = exchange(&mut s, get("/nope"));
    assert!(r.ends_with("\r\n\r\nUnsupported action"), "{r}");
}

#[test]
fn token_rules() {
    let mut s = server(Some("0123abcd"), &["stats".into(), "gc-stats".into()]);
    for path in [
        "/stats",
        "/stats?token=0123abcc",
        "/stats?token=0123abcd0",
        "/nope",
        "/stop?token=",
    ] {
        let r = exchange(&mut s, get(path));
        assert!(
            r.starts_with(
                "HTTP/1.1 403 Forbidden\r\ncontent-type: text/plain\r\ncontent-length: 18\r\n"
            ),
            "{path}: {r}"
        );
        assert!(r.ends_with("\r\n\r\nInvalid auth token"), "{path}: {r}");
    }
    for path in [
        "/stats?token=0123abcd",
        "/stats?a=b&token=0123abcd",
        "/stats?a=b;token=0123abcd;c",
    ] {
        let r = exchange(&mut s, get(path));
        assert!(r.ends_with("{\"cmd\":\"stats\"}"), "{path}: {r}");
    }
    let r = exchange(&mut s, get("/nope?token=0123abcd"));
    assert!(r.ends_with("\r\n\r\nUnsupported action"), "{r}");
    let r = exchange(&mut s, get("/halt?token=0123abcd"));
    assert!(r.starts_with("HTTP/1.1 404 Not Found\r\n"), "{r}");
    assert!(r.ends_with("\r\n\r\nCommand \"halt\" unavailable"), "{r}");
}

#[test]
fn garbage_and_oversize_get_400() {
    let mut s = server(None, &all());
    for request in [
        b"hello\r\n\r\n".to_vec(),
        b"GET /stats HTTP/1.1\nHost: x\n\n".to_vec(),
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03".to_vec(), // a TLS hello
        {
            let mut big = b"GET /stats HTTP/1.1\r\nHost: x\r\nX: ".to_vec();
            big.extend(std::iter::repeat(b'a').take(9000));
            big.extend_from_slice(b"\r\n\r\n");
            big
        },
    ] {
        let r = exchange(&mut s, request.clone());
        assert!(
            r.starts_with("HTTP/1.1 400 Bad Request\r\n"),
            "{:?}: {r}",
            String::from_utf8_lossy(&request)
        );
        assert!(r.contains("connection: close\r\n"));
    }
    // A client that keeps sending after a 400 is cut off after a bound, not read forever.
    let mut c = tcp(&s);
    let sender = std::thread::spawn(move || {
        let junk = vec![b'x'; 64 * 1024];
        // Far more than the kernel buffers on both sides: writes fail once the server closes.
        for _ in 0..16 * 1024 {
            if c.write_all(&junk).is_err() {
                return true;
            }
        }
        false
    });
    drive(&mut s, |_, _| sender.is_finished());
    assert!(sender.join().unwrap_or(false), "the server kept reading");
}

#[test]
fn deadlines_close_a_silent_client_and_408_a_partial_one() {
    let settings = Settings {
        deadline: Duration::from_millis(300),
        ..Settings::default()
    };
    let mut s = ControlServer::bind_with("tcp://127.0.0.1:0", None, &all(), settings)
        .unwrap_or_else(|e| panic!("{e}"));
    let silent = client(tcp(&s), Vec::new());
    let partial = client(tcp(&s), b"GET /stats HTTP/1.1\r\nHo".to_vec());
    assert!(drive(&mut s, |s, _| s.connections() == 2).is_empty());
    assert!(s.timeout().is_some_and(|t| t <= Duration::from_millis(300)));
    // Meanwhile another client is served: the slow ones delay no one.
    let r = exchange(&mut s, get("/stats"));
    assert!(r.ends_with("{\"cmd\":\"stats\"}"), "{r}");
    assert_eq!(finish(&mut s, silent), "");
    let r = finish(&mut s, partial);
    assert!(r.starts_with("HTTP/1.1 408 Request Timeout\r\n"), "{r}");
    drive(&mut s, |s, _| s.connections() == 0);
    assert_eq!(s.timeout(), None);
}

#[test]
fn at_most_64_connections() {
    let mut s = server(None, &all());
    let held: Vec<TcpStream> = (0..64).map(|_| tcp(&s)).collect();
    drive(&mut s, |s, _| s.connections() == 64);
    let extra = client(tcp(&s), Vec::new());
    assert_eq!(finish(&mut s, extra), "", "the 65th is closed at once");
    assert_eq!(s.connections(), 64);
    drop(held);
    drive(&mut s, |s, _| s.connections() == 0);
    let r = exchange(&mut s, get("/stats"));
    assert!(r.ends_with("{\"cmd\":\"stats\"}"), "{r}");
}

/// Answers the first command with 8 MiB (more than the socket buffers hold), checks that it
/// is still being sent, tells the client to read (`go`), flushes; returns the body.
fn answer_large(s: &mut ControlServer, go: &std::sync::mpsc::Sender<()>) -> Vec<u8> {
    let seen = drive(s, |_, seen| !seen.is_empty());
    let body: Vec<u8> = (0..8 * 1024 * 1024)
        .map(|i| b'a' + (i % 26) as u8)
        .collect();
    assert!(s.answer(seen[0].0, 200, "application/json", &body));
    assert_eq!(
        s.sending(),
        1,
        "the kernel took it all: make the body larger"
    );
    let _ = go.send(());
    assert!(s.flush(BOUND), "flush finished the answer");
    body
}

/// `out` is a 200 answer carrying `body` unchanged.
fn assert_whole_answer(out: &[u8], body: &[u8]) {
    let split = out.windows(4).position(|w| w == b"\r\n\r\n").unwrap_or(0) + 4;
    assert!(out.starts_with(b"HTTP/1.1 200 OK\r\n"));
    let got = out.get(split..).unwrap_or_default();
    assert_eq!(got.len(), body.len());
    assert!(got == body, "the body arrived changed");
}

#[test]
fn an_answer_larger_than_the_socket_buffer_goes_out_over_several_polls() {
    let mut s = server(None, &all());
    let (c, go_tx) = slow_reader(&s, "/thread-backtraces");
    let body = answer_large(&mut s, &go_tx);
    let out = c.join().unwrap_or_default();
    assert_whole_answer(&out, &body);
    drive(&mut s, |s, _| s.connections() == 0);
}

#[test]
fn unix_sockets_and_close_unlinks() {
    let dir = std::env::temp_dir().join(format!("cc-server-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    let path = dir.join("control.sock");
    let url = format!("unix://{}", path.display());
    let mut s = ControlServer::bind(&url, Some("t"), &all()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(s.url(), url);
    let sock = UnixStream::connect(&path).unwrap_or_else(|e| panic!("{e}"));
    let c = client(sock, get("/gc?token=t"));
    let seen = drive(&mut s, |_, seen| !seen.is_empty());
    assert_eq!(seen[0].1, "gc");
    s.answer(
        seen[0].0,
        200,
        "application/json",
        b"{ \"status\": \"ok\" }",
    );
    assert!(finish(&mut s, c).ends_with("\r\n\r\n{ \"status\": \"ok\" }"));
    s.close();
    assert!(!path.exists());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn close_in_child_leaves_the_file() {
    let dir = std::env::temp_dir().join(format!("cc-child-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    let path = dir.join("control.sock");
    let s = ControlServer::bind(&format!("unix://{}", path.display()), None, &all())
        .unwrap_or_else(|e| panic!("{e}"));
    s.close_in_child();
    assert!(path.exists());
    let _ = std::fs::remove_dir_all(&dir);
}

/// A poll of the test's own on the server's descriptor, as the caller's loop waits on it.
fn watcher(s: &ControlServer) -> mio::Poll {
    let outer = mio::Poll::new().unwrap_or_else(|e| panic!("{e}"));
    let fd = s.fd();
    outer
        .registry()
        .register(
            &mut mio::unix::SourceFd(&fd),
            mio::Token(7),
            mio::Interest::READABLE,
        )
        .unwrap_or_else(|e| panic!("{e}"));
    outer
}

/// Whether the descriptor polls readable within `wait`.
fn readable(outer: &mut mio::Poll, wait: Duration) -> bool {
    let mut events = mio::Events::with_capacity(4);
    outer
        .poll(&mut events, Some(wait))
        .unwrap_or_else(|e| panic!("{e}"));
    !events.is_empty()
}

#[test]
fn the_fd_polls_readable_when_a_client_connects() {
    let mut s = server(None, &all());
    let mut outer = watcher(&s);
    assert!(
        !readable(&mut outer, Duration::ZERO),
        "readable with nothing to do"
    );
    let c = client(tcp(&s), get("/stats"));
    assert!(readable(&mut outer, BOUND));
    let seen = drive(&mut s, |_, seen| !seen.is_empty());
    s.answer(seen[0].0, 200, "text/plain", b"ok");
    assert!(finish(&mut s, c).ends_with("ok"));
}

#[test]
fn flush_waits_for_handed_over_requests_not_for_queued_ones() {
    let mut s = server(None, &all());
    // A: its answer is larger than the socket buffers and read only once told.
    let (a, go_tx) = slow_reader(&s, "/stats");
    let seen = drive(&mut s, |_, seen| !seen.is_empty());
    let body = vec![b'a'; 8 * 1024 * 1024];
    assert!(s.answer(seen[0].0, 200, "text/plain", &body));
    // B arrives while A's answer waits: a flush takes B in and keeps it for the next poll.
    let b = client(tcp(&s), get("/gc"));
    let end = Instant::now() + BOUND;
    while s.timeout() != Some(Duration::ZERO) {
        assert!(Instant::now() < end);
        assert!(
            !s.flush(Duration::from_millis(10)),
            "A's answer cannot be done yet"
        );
    }
    let _ = go_tx.send(());
    assert!(
        s.flush(BOUND),
        "A's answer is out; B, not handed over yet, is not waited for"
    );
    assert!(a.join().unwrap_or_default().len() > body.len());
    let seen = s.poll();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].1, "gc");
    // Handed over and not answered: flush waits for it (here in vain, bounded).
    assert!(!s.flush(Duration::from_millis(50)));
    s.answer(seen[0].0, 200, "text/plain", b"late");
    assert!(s.flush(BOUND));
    assert!(finish(&mut s, b).ends_with("\r\n\r\nlate"));
}

#[test]
fn stop_closes_all_but_the_fd_which_stays_readable() {
    let dir = std::env::temp_dir().join(format!("cc-stop-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    let path = dir.join("control.sock");
    let mut s = ControlServer::bind(&format!("unix://{}", path.display()), None, &all())
        .unwrap_or_else(|e| panic!("{e}"));
    let held = UnixStream::connect(&path).unwrap_or_else(|e| panic!("{e}"));
    drive(&mut s, |s, _| s.connections() == 1);
    let mut outer = watcher(&s);
    s.poll(); // the new connection's first writable edge
    assert!(!readable(&mut outer, Duration::ZERO));
    s.stop();
    assert!(s.stopped());
    assert_eq!(s.connections(), 0);
    assert!(!path.exists());
    assert!(UnixStream::connect(&path).is_err());
    let mut rest = Vec::new();
    let mut held = held;
    held.set_read_timeout(Some(BOUND))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        held.read_to_end(&mut rest).unwrap_or(1),
        0,
        "the connection was closed"
    );
    assert!(
        readable(&mut outer, BOUND),
        "a loop waiting on the descriptor wakes"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

// ---- ssl:// ----

/// A control server on `ssl://` with the development certificate made in `dir`.
fn tls_server(dir: &std::path::Path, deadline: Duration) -> ControlServer {
    let settings = Settings {
        deadline,
        development_certificates: Some(dir.to_path_buf()),
        ..Settings::default()
    };
    ControlServer::bind_with("ssl://127.0.0.1:0", None, &all(), settings)
        .unwrap_or_else(|e| panic!("{e}"))
}

/// A rustls client that trusts the development certificate in `dir`.
fn tls_client_config(dir: &std::path::Path) -> std::sync::Arc<rustls::ClientConfig> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_file_iter(dir.join("localhost.pem"))
        .unwrap_or_else(|e| panic!("{e}"))
    {
        roots
            .add(cert.unwrap_or_else(|e| panic!("{e}")))
            .unwrap_or_else(|e| panic!("{e}"));
    }
    #[allow(deprecated)]
    let provider = rustls::crypto::ring::default_provider();
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(provider))
        .with_safe_default_protocol_versions()
        .unwrap_or_else(|e| panic!("{e}"))
        .with_root_certificates(roots)
        .with_no_client_auth();
    std::sync::Arc::new(config)
}

/// A TLS client on its own thread: sends `request`, waits for `go` (when given), reads until
/// the server's close_notify (an end without one is an error: the answer could be cut).
fn tls_client(
    s: &ControlServer,
    config: std::sync::Arc<rustls::ClientConfig>,
    request: Vec<u8>,
    go: Option<std::sync::mpsc::Receiver<()>>,
) -> JoinHandle<Result<Vec<u8>, String>> {
    let sock =
        TcpStream::connect(s.url().trim_start_matches("ssl://")).unwrap_or_else(|e| panic!("{e}"));
    sock.set_read_timeout(Some(BOUND))
        .unwrap_or_else(|e| panic!("{e}"));
    socket2::SockRef::from(&sock)
        .set_recv_buffer_size(64 * 1024)
        .unwrap_or_else(|e| panic!("{e}"));
    std::thread::spawn(move || {
        let name =
            rustls::pki_types::ServerName::try_from("localhost").map_err(|e| e.to_string())?;
        let conn = rustls::ClientConnection::new(config, name).map_err(|e| e.to_string())?;
        let mut tls = rustls::StreamOwned::new(conn, sock);
        tls.write_all(&request).map_err(|e| e.to_string())?;
        if let Some(go) = go {
            let _ = go.recv_timeout(BOUND);
        }
        let mut out = Vec::new();
        tls.read_to_end(&mut out).map_err(|e| e.to_string())?;
        Ok(out)
    })
}

fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("cc-{name}-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    dir
}

#[test]
fn over_tls_a_command_is_answered_then_close_notify() {
    let dir = temp_dir("tls-answer");
    let mut s = tls_server(&dir, Duration::from_secs(10));
    assert!(s.url().starts_with("ssl://127.0.0.1:"), "{}", s.url());
    let c = tls_client(&s, tls_client_config(&dir), get("/stats"), None);
    let seen = drive(&mut s, |_, seen| !seen.is_empty());
    assert_eq!(seen[0].1, "stats");
    assert!(s.answer(seen[0].0, 200, "application/json", b"{\"a\":1}"));
    drive(&mut s, |_, _| c.is_finished());
    let out = c.join().unwrap_or_else(|_| Err("panicked".into()));
    assert_eq!(
        out.map(|o| String::from_utf8_lossy(&o).into_owned()),
        Ok("HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 7\r\nconnection: close\r\n\r\n{\"a\":1}".to_string())
    );
    drive(&mut s, |s, _| s.connections() == 0);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn over_tls_an_answer_larger_than_the_socket_buffer_goes_out_over_several_polls() {
    let dir = temp_dir("tls-large");
    let mut s = tls_server(&dir, Duration::from_secs(10));
    let (go_tx, go_rx) = std::sync::mpsc::channel();
    let c = tls_client(
        &s,
        tls_client_config(&dir),
        get("/thread-backtraces"),
        Some(go_rx),
    );
    let body = answer_large(&mut s, &go_tx);
    let out = c
        .join()
        .unwrap_or_else(|_| Err("panicked".into()))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_whole_answer(&out, &body);
    drive(&mut s, |s, _| s.connections() == 0);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn over_tls_plain_http_and_a_silent_client_get_no_answer_while_others_are_served() {
    let dir = temp_dir("tls-plain");
    let mut s = tls_server(&dir, Duration::from_millis(500));
    let addr = s.url().trim_start_matches("ssl://").to_string();
    let mut silent = TcpStream::connect(&addr).unwrap_or_else(|e| panic!("{e}"));
    silent
        .set_read_timeout(Some(BOUND))
        .unwrap_or_else(|e| panic!("{e}"));
    let plain = client(
        TcpStream::connect(&addr).unwrap_or_else(|e| panic!("{e}")),
        get("/stats"),
    );
    let served = tls_client(&s, tls_client_config(&dir), get("/gc-stats"), None);
    let seen = drive(&mut s, |_, seen| !seen.is_empty());
    assert_eq!(seen, vec![(seen[0].0, "gc-stats")], "only the TLS client");
    assert!(s.answer(seen[0].0, 200, "application/json", b"{}"));
    drive(&mut s, |_, _| served.is_finished() && plain.is_finished());
    let answer = plain.join().unwrap_or_default();
    assert!(
        answer.first().map_or(true, |b| *b == 0x15),
        "a TLS alert at most: {answer:?}"
    );
    let out = served.join().unwrap_or_else(|_| Err("panicked".into()));
    assert!(out.is_ok_and(|o| o.ends_with(b"\r\n\r\n{}")));
    // The silent one is closed at its deadline, without a word.
    drive(&mut s, |s, _| s.connections() == 0);
    let mut rest = Vec::new();
    let _ = silent.read_to_end(&mut rest);
    assert!(rest.is_empty(), "{rest:?}");
    let _ = std::fs::remove_dir_all(&dir);
}
