//! TLS connections through the reactor: a rustls client over loopback against a listener with
//! a TLS configuration, and a plain Rust "pool" thread answering. Keep-alive, request bodies,
//! large responses handed to the reactor, files read and encrypted in pieces, plain HTTP sent
//! to the TLS port, a stalled handshake that holds up no one, and connections the app takes
//! (`rack.hijack`), relayed through the session.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::Duration;

use catamount_config::BindUrl;
use catamount_server::{bind_all, Body, Responder, Server, ServerConfig, Waiter};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

mod support;

#[allow(deprecated)] // *ring*: see catamount-tls's `provider`.
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

struct Tls {
    server: Arc<rustls::ServerConfig>,
    client: Arc<ClientConfig>,
}

fn certificates() -> Tls {
    let made = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let cert: CertificateDer<'static> = made.cert.der().clone();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(made.key_pair.serialize_der()));
    let server = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.clone()], key)
        .unwrap();
    let mut roots = RootCertStore::empty();
    roots.add(cert).unwrap();
    let client = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    Tls {
        server: Arc::new(server),
        client: Arc::new(client),
    }
}

/// A TLS listener on 127.0.0.1 (OS-chosen port) whose pool thread answers `/big` with 1 MiB,
/// `/file` with a 3 MiB file, anything else with its path and body length.
fn start(
    config: ServerConfig,
    tls: &Tls,
    file: std::path::PathBuf,
) -> (Arc<Server>, u16, std::thread::JoinHandle<()>) {
    start_tuned(config, tls, file, None)
}

/// [`start`], the listener's `SO_SNDBUF` set to `send_buffer` (accepted sockets inherit it).
fn start_tuned(
    config: ServerConfig,
    tls: &Tls,
    file: std::path::PathBuf,
    send_buffer: Option<usize>,
) -> (Arc<Server>, u16, std::thread::JoinHandle<()>) {
    let mut listeners = bind_all(&[BindUrl::parse("tcp://127.0.0.1:0").unwrap()]).unwrap();
    listeners[0].tls = Some(tls.server.clone());
    if let Some(size) = send_buffer {
        socket2::SockRef::from(&listeners[0].listener)
            .set_send_buffer_size(size)
            .unwrap();
    }
    support::start_on(config, listeners, 2, move |job, _queue| {
        let path = String::from_utf8_lossy(job.request.head.path()).into_owned();
        if let Some(how) = path.strip_prefix("/hijack/") {
            return hijacked_app(job.responder, how);
        }
        let mut responder = job.responder;
        let keep = responder.keep_alive_allowed();
        match path.as_str() {
            "/big" => {
                let body = vec![b'b'; 1 << 20];
                let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n", body.len());
                responder.write(head.as_bytes()).unwrap();
                responder.write(&body).unwrap();
            }
            "/held" => {
                // One write of one TLS record's worth (head and body), into a socket too small
                // for it: what is left must not stay in the session once this returns.
                let head = "HTTP/1.1 200 OK\r\ncontent-length: 16000\r\n\r\n";
                let mut whole = head.as_bytes().to_vec();
                whole.resize(head.len() + 16_000, b'h');
                responder.write(&whole).unwrap();
                responder.finish(keep);
                HELD_ANSWERED.store(true, std::sync::atomic::Ordering::SeqCst);
                return;
            }
            "/held-small" => {
                // Small writes (each sent outside the session's lock, from the outbox) into the
                // same small socket: the socket takes some of one and then none.
                let head = "HTTP/1.1 200 OK\r\ncontent-length: 16000\r\n\r\n";
                responder.write(head.as_bytes()).unwrap();
                for _ in 0..8 {
                    responder.write(&[b's'; 2000]).unwrap();
                }
                responder.finish(keep);
                HELD_SMALL_ANSWERED.store(true, std::sync::atomic::Ordering::SeqCst);
                return;
            }
            "/file" => {
                let f = std::fs::File::open(&file).unwrap();
                let len = f.metadata().unwrap().len();
                let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {len}\r\n\r\n");
                responder.write(head.as_bytes()).unwrap();
                responder.send_file(f, 0, len).unwrap();
            }
            _ => {
                let body_len = match &job.request.body {
                    Body::Empty => 0,
                    other => other.len(),
                };
                let text = format!("{path} {body_len}");
                let response = format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{text}",
                    text.len()
                );
                responder.write(response.as_bytes()).unwrap();
            }
        }
        responder.finish(keep);
    })
}

/// Set once `/held` was answered (the pool thread returned from it).
static HELD_ANSWERED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
/// The same for `/held-small`.
static HELD_SMALL_ANSWERED: std::sync::atomic::AtomicBool =
    std::sync::atomic::AtomicBool::new(false);

/// The app side of a hijack, on a thread of its own (the pool thread returns at once). `echo`:
/// greets, then echoes once it read "quit", or says how much it read when the client's side
/// ended; `bulk/N`: reads N bytes, then writes N bytes of a pattern and the sum of what it read;
/// `hold`: keeps the connection until its client or the server ends it, then says which;
/// `flood`: writes until its IO fails.
fn hijacked_app(responder: Responder, how: &str) {
    let hijacked = responder.hijack(&Waiter::new()).unwrap();
    assert!(
        hijacked.unix,
        "a TLS connection is relayed through a UNIX socket pair"
    );
    assert!(
        hijacked.early.is_empty(),
        "early bytes come through the relay"
    );
    let mut io = UnixStream::from(hijacked.fd);
    io.set_nonblocking(false).unwrap();
    io.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let how = how.to_string();
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 65536];
        let mut got = Vec::new();
        if let Some(n) = how.strip_prefix("bulk/") {
            let n: usize = n.parse().unwrap();
            while got.len() < n {
                let read = io.read(&mut buf).unwrap();
                assert!(read > 0, "the client's bytes ended early");
                got.extend_from_slice(&buf[..read]);
            }
            io.write_all(&pattern(n)).unwrap();
            let sum: u64 = got.iter().map(|b| u64::from(*b)).sum();
            io.write_all(format!("sum {sum}").as_bytes()).unwrap();
            return;
        }
        if how == "flood" {
            let chunk = pattern(65536);
            while io.write_all(&chunk).is_ok() {}
            return;
        }
        if how == "echo" {
            io.write_all(b"hello\n").unwrap();
        }
        loop {
            match io.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
            if got.ends_with(b"quit") {
                io.write_all(&got).unwrap();
                return;
            }
        }
        // Still writable: only the client's side ended (or the server cut the relay).
        let _ = io.write_all(format!("the end after {} bytes", got.len()).as_bytes());
    });
}

fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i % 251) as u8).collect()
}

/// Everything until the server's side ends (close_notify: a clean end).
fn read_to_the_end<R: Read>(r: &mut R) -> Vec<u8> {
    let mut got = Vec::new();
    r.read_to_end(&mut got).unwrap();
    got
}

fn connect(port: u16, tls: &Tls) -> StreamOwned<ClientConnection, TcpStream> {
    tls_over(TcpStream::connect(("127.0.0.1", port)).unwrap(), tls)
}

/// A TLS client session over `sock` (connected), its reads bounded.
fn tls_over(sock: TcpStream, tls: &Tls) -> StreamOwned<ClientConnection, TcpStream> {
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let conn = ClientConnection::new(
        tls.client.clone(),
        ServerName::try_from("localhost").unwrap(),
    )
    .unwrap();
    StreamOwned::new(conn, sock)
}

/// Reads one response with a content-length; returns its head and body.
fn read_response<R: Read>(r: &mut R) -> (String, Vec<u8>) {
    let mut data = Vec::new();
    let mut buf = [0u8; 65536];
    loop {
        if let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&data[..end]).into_owned();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length: "))
                .unwrap()
                .parse()
                .unwrap();
            while data.len() < end + 4 + len {
                let n = r.read(&mut buf).unwrap();
                assert!(n > 0, "closed in the body");
                data.extend_from_slice(&buf[..n]);
            }
            return (head, data[end + 4..end + 4 + len].to_vec());
        }
        let n = r.read(&mut buf).unwrap();
        assert!(n > 0, "closed before a response");
        data.extend_from_slice(&buf[..n]);
    }
}

fn stop(server: &Server, pool: std::thread::JoinHandle<()>) {
    server.stop();
    assert!(server.wait(&Waiter::new()).unwrap().is_ok());
    pool.join().unwrap();
}

fn scratch_file(name: &str, len: usize) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!("catamount-tls-{name}-{}", std::process::id()));
    let content: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
    std::fs::write(&path, content).unwrap();
    path
}

#[test]
fn keep_alive_a_body_a_large_response_and_a_file_over_one_tls_connection() {
    let tls = certificates();
    let file = scratch_file("file", 3 << 20);
    let (server, port, pool) = start(ServerConfig::default(), &tls, file.clone());
    let mut c = connect(port, &tls);
    c.write_all(b"GET /one HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    assert_eq!(read_response(&mut c).1, b"/one 0");
    let body = vec![b'p'; 100_000];
    c.write_all(
        format!(
            "POST /two HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    )
    .unwrap();
    c.write_all(&body).unwrap();
    assert_eq!(read_response(&mut c).1, b"/two 100000");
    c.write_all(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let (head, big) = read_response(&mut c);
    assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
    assert!(big.len() == 1 << 20 && big.iter().all(|b| *b == b'b'));
    c.write_all(b"GET /file HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let (_, got) = read_response(&mut c);
    assert_eq!(
        got,
        std::fs::read(&file).unwrap(),
        "the file, read and encrypted in pieces"
    );
    c.write_all(b"GET /last HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    assert_eq!(
        read_response(&mut c).1,
        b"/last 0",
        "still the same connection"
    );
    drop(c);
    let _ = std::fs::remove_file(&file);
    stop(&server, pool);
}

#[test]
fn plain_http_to_the_tls_port_is_closed_and_a_stalled_handshake_holds_up_no_one() {
    let tls = certificates();
    let file = scratch_file("unused", 1);
    let (server, port, pool) = start(
        ServerConfig {
            first_data_timeout: Duration::from_secs(1),
            ..ServerConfig::default()
        },
        &tls,
        file.clone(),
    );
    // Connected, never a byte: its handshake waits in its own task.
    let mut stalled = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stalled
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut plain = TcpStream::connect(("127.0.0.1", port)).unwrap();
    plain
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    plain
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();

    let mut c = connect(port, &tls);
    c.write_all(b"GET /meanwhile HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    assert_eq!(read_response(&mut c).1, b"/meanwhile 0");

    // The plain request gets no HTTP answer: at most a TLS alert, then the end.
    let mut got = Vec::new();
    let _ = plain.read_to_end(&mut got);
    assert!(
        !String::from_utf8_lossy(&got).contains("HTTP/1.1"),
        "{got:?}"
    );
    // The stalled one is closed at first_data_timeout.
    let mut nothing = Vec::new();
    assert_eq!(stalled.read_to_end(&mut nothing).unwrap_or(0), 0);
    drop(c);
    let _ = std::fs::remove_file(&file);
    stop(&server, pool);
}

/// A response written directly by the pool thread into the TLS session, whose last records
/// the socket could not take (the server's send buffer and the client's receive buffer are
/// made smaller than one record, and the client reads only after the pool thread is done):
/// the reactor sends them, they are not left in the session until a next request.
#[test]
fn records_left_in_the_session_by_a_direct_write_are_sent() {
    held_response_arrives_whole("/held", &HELD_ANSWERED, b'h');
}

#[test]
fn records_left_in_the_outbox_by_small_direct_writes_are_sent() {
    held_response_arrives_whole("/held-small", &HELD_SMALL_ANSWERED, b's');
}

/// Requests `path` (a 16,000-byte body of `byte`, written directly into a socket too small for
/// it) over a client with a 4 KiB window; once the app returned (`answered`), the whole
/// response must still arrive.
fn held_response_arrives_whole(path: &str, answered: &std::sync::atomic::AtomicBool, byte: u8) {
    let tls = certificates();
    let file = scratch_file(&path[1..], 1);
    // The kernel's floor for the send buffer is a few KiB; the client's receive window 4 KiB:
    // together less than one record (smaller still and TCP's window probes take seconds).
    let (server, port, pool) = start_tuned(ServerConfig::default(), &tls, file.clone(), Some(1));
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    sock.connect(&std::net::SocketAddr::from(([127, 0, 0, 1], port)).into())
        .unwrap();
    let mut c = tls_over(sock.into(), &tls);
    c.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !answered.load(std::sync::atomic::Ordering::SeqCst) {
        assert!(
            std::time::Instant::now() < deadline,
            "{path} never answered"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let (head, body) = read_response(&mut c);
    assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
    assert!(body.len() == 16_000 && body.iter().all(|b| *b == byte));
    drop(c);
    let _ = std::fs::remove_file(&file);
    stop(&server, pool);
}

/// Stops `server` and waits (at most `limit`) for it to end; false when it did not.
fn stopped_within(server: &Arc<Server>, limit: Duration) -> bool {
    server.stop();
    let waiter = Arc::new(Waiter::new());
    let alarm = {
        let waiter = waiter.clone();
        std::thread::spawn(move || {
            std::thread::sleep(limit);
            waiter.set_interrupted();
        })
    };
    let ended = server.wait(&waiter).is_some();
    drop(alarm); // detached: it only interrupts a wait that is over
    ended
}

#[test]
fn a_hijacked_tls_connection_is_relayed_both_ways_early_bytes_first() {
    let tls = certificates();
    let file = scratch_file("hijack", 1);
    // A drain time far longer than the test's bound on the stop: the relays must all have
    // ended by themselves.
    let config = ServerConfig {
        drain_timeout: Duration::from_secs(3600),
        ..ServerConfig::default()
    };
    let (server, port, pool) = start(config, &tls, file.clone());
    // The request and bytes behind it in one write: the reactor read them with the request.
    let mut c = connect(port, &tls);
    c.write_all(b"GET /hijack/echo HTTP/1.1\r\nHost: x\r\n\r\nEARLY ")
        .unwrap();
    let mut hello = [0u8; 6];
    c.read_exact(&mut hello).unwrap();
    assert_eq!(&hello, b"hello\n");
    c.write_all(b"later quit").unwrap();
    assert_eq!(
        read_to_the_end(&mut c),
        b"EARLY later quit",
        "the app closed first"
    );
    // Kept open by the client: its relay ends by seeing the app hang up.
    let _app_closed_first = c;

    // The client ends its side first (close_notify): the app reads the end, and still writes.
    let mut c = connect(port, &tls);
    c.write_all(b"GET /hijack/wait HTTP/1.1\r\nHost: x\r\n\r\nabc")
        .unwrap();
    c.conn.send_close_notify();
    c.flush().unwrap();
    assert_eq!(read_to_the_end(&mut c), b"the end after 3 bytes");

    // Several MiB each way through bounded buffers, checked.
    let n = 6 << 20;
    let mut c = connect(port, &tls);
    c.write_all(format!("GET /hijack/bulk/{n} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .unwrap();
    let sent: Vec<u8> = (0..n).map(|i| (i * 7 % 256) as u8).collect();
    c.write_all(&sent).unwrap();
    let got = read_to_the_end(&mut c);
    let sum: u64 = sent.iter().map(|b| u64::from(*b)).sum();
    assert_eq!(got.len(), n + format!("sum {sum}").len());
    assert!(
        got[..n] == pattern(n)[..],
        "the app's bytes arrive in order"
    );
    assert_eq!(&got[n..], format!("sum {sum}").as_bytes());

    // Plain requests are served meanwhile, and the relays, all ended, keep no stop waiting.
    let mut c = connect(port, &tls);
    c.write_all(b"GET /after HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    assert_eq!(read_response(&mut c).1, b"/after 0");
    drop(c);
    let _ = std::fs::remove_file(&file);
    assert!(
        stopped_within(&server, Duration::from_secs(30)),
        "a relay outlived both its sides"
    );
    pool.join().unwrap();
}

/// A stop with a relayed connection still open: the reactor waits for it through the drain
/// time, then cuts it (the client sees the end, the app's side too) and ends.
#[test]
fn a_stop_cuts_a_relay_still_open_after_the_drain_time() {
    let tls = certificates();
    let file = scratch_file("hijack-stop", 1);
    let config = ServerConfig {
        drain_timeout: Duration::from_millis(500),
        ..ServerConfig::default()
    };
    let (server, port, pool) = start(config, &tls, file.clone());
    let mut c = connect(port, &tls);
    c.write_all(b"GET /hijack/hold HTTP/1.1\r\nHost: x\r\n\r\nheld")
        .unwrap();
    // Through the relay before the stop: the app has the connection.
    c.write_all(b" still").unwrap();
    server.stop();
    let waited = std::thread::spawn({
        let server = server.clone();
        move || server.wait(&Waiter::new()).unwrap().is_ok()
    });
    // The client sees the end (no close_notify: the relay was cut), whatever came first.
    let mut rest = Vec::new();
    let _ = c.read_to_end(&mut rest);
    assert!(waited.join().unwrap(), "the reactor ended");
    pool.join().unwrap();
    let _ = std::fs::remove_file(&file);
}

/// A client that stops reading a relayed connection while the app still has bytes for it is
/// given up on after `write_timeout` without progress, as a response's client is: the relay
/// ends (the app's writes fail) instead of holding its sockets until the server stops.
#[test]
fn a_relay_whose_client_stopped_reading_ends_after_the_write_timeout() {
    let tls = certificates();
    let file = scratch_file("hijack-stalled", 1);
    let config = ServerConfig {
        write_timeout: Duration::from_millis(500),
        drain_timeout: Duration::from_secs(3600),
        ..ServerConfig::default()
    };
    let (server, port, pool) = start(config, &tls, file.clone());
    let mut c = connect(port, &tls);
    c.write_all(b"GET /hijack/flood HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut first = [0u8; 1];
    c.read_exact(&mut first).unwrap();
    // Not read any further. A stop waits for relays through the drain time (an hour here):
    // it ends within the bound only if this relay ended by itself.
    assert!(
        stopped_within(&server, Duration::from_secs(30)),
        "a relay to a client that does not read never ended"
    );
    pool.join().unwrap();
    drop(c);
    let _ = std::fs::remove_file(&file);
}
