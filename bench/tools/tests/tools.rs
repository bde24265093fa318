//! Runs the built `catamount-bench` binary against loopback servers (its own `limit`, or tiny
//! servers in this file) with OS-chosen ports; every wait here has a deadline.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_catamount-bench");
const HELLO: &[u8] =
    b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 12\r\n\r\nHello World\n";
const GET: &[u8] = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
const ECHO_HEAD: &str =
    "HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\ncontent-length: ";

/// A child process killed when the test ends, however it ends.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `limit` (with `args`) on an OS-chosen port and returns it with the port it announced.
fn start_limit(args: &[&str]) -> (Running, u16) {
    let mut child = Command::new(BIN)
        .args(["limit", "--port", "0"])
        .args(args)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let running = Running(child);
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("limit printed nothing");
    let port = line
        .trim_end()
        .strip_prefix("listening on 127.0.0.1:")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .parse()
        .unwrap();
    (running, port)
}

fn connect(port: u16) -> TcpStream {
    let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream
}

/// Reads exactly `count` hello responses.
fn expect_hellos(stream: &mut TcpStream, count: usize) {
    let mut got = vec![0u8; HELLO.len() * count];
    stream.read_exact(&mut got).unwrap();
    assert_eq!(got, HELLO.repeat(count));
}

/// Reads until EOF (or a reset); returns what came.
fn read_to_close(stream: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return got,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return got,
            Err(e) => panic!("waiting for the server to close: {e}"),
        }
    }
}

/// Runs the binary to completion (at most `limit`), returning (status code, stdout, stderr).
fn run(args: &[&str], limit: Duration) -> (i32, String, String) {
    let mut child = Command::new(BIN)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out_reader = thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let err_reader = thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let mut child = Running(child);
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "{args:?} still running after {limit:?}"
        );
        thread::sleep(Duration::from_millis(20));
    };
    let out = out_reader.join().unwrap();
    let err = err_reader.join().unwrap();
    (status.code().unwrap_or(-1), out, err)
}

/// The value of `"key":N` in a one-line JSON object of numbers.
fn field(json: &str, key: &str) -> u64 {
    let pattern = format!("\"{key}\":");
    let start = json
        .find(&pattern)
        .unwrap_or_else(|| panic!("no {key} in {json:?}"))
        + pattern.len();
    json[start..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .unwrap()
}

/// A std listener on an OS-chosen port, and a flag that stops its accept loop.
fn tiny_server(
    handle: impl Fn(TcpStream, &AtomicBool) + Send + Sync + 'static,
) -> (u16, Arc<AtomicBool>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    listener.set_nonblocking(true).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let handle = Arc::new(handle);
    let stop_flag = Arc::clone(&stop);
    thread::spawn(move || {
        // Never outlives the test binary's patience, even if nobody sets the flag.
        let deadline = Instant::now() + Duration::from_secs(20);
        while !stop_flag.load(Ordering::Relaxed) && Instant::now() < deadline {
            match listener.accept() {
                Ok((stream, _)) => {
                    stream.set_nonblocking(false).unwrap();
                    stream
                        .set_read_timeout(Some(Duration::from_secs(3)))
                        .unwrap();
                    stream
                        .set_write_timeout(Some(Duration::from_secs(3)))
                        .unwrap();
                    let handle = Arc::clone(&handle);
                    let stop = Arc::clone(&stop_flag);
                    thread::spawn(move || handle(stream, &stop));
                }
                Err(_) => thread::sleep(Duration::from_millis(5)),
            }
        }
    });
    (port, stop)
}

#[test]
fn limit_keep_alive_pipelining_and_bodies() {
    let (_server, port) = start_limit(&[]);
    let mut s = connect(port);
    s.set_nodelay(true).unwrap();

    // Two requests one after the other on one connection.
    s.write_all(GET).unwrap();
    expect_hellos(&mut s, 1);
    s.write_all(GET).unwrap();
    expect_hellos(&mut s, 1);

    // A pipelined pair in one write.
    s.write_all(&GET.repeat(2)).unwrap();
    expect_hellos(&mut s, 2);

    // A request split across writes.
    s.write_all(b"GET / HTTP/1.1\r\nHo").unwrap();
    thread::sleep(Duration::from_millis(50));
    s.write_all(b"st: x\r\n\r").unwrap();
    thread::sleep(Duration::from_millis(50));
    s.write_all(b"\n").unwrap();
    expect_hellos(&mut s, 1);

    // A body is skipped, including its part that arrives in a later write.
    s.write_all(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nhello")
        .unwrap();
    expect_hellos(&mut s, 1);
    let mut rest = b"world".to_vec();
    rest.extend_from_slice(GET);
    s.write_all(&rest).unwrap();
    expect_hellos(&mut s, 1);

    // Connection: close is answered, then the server closes.
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    assert_eq!(read_to_close(&mut s), HELLO);
}

#[test]
fn limit_echoes_request_bodies() {
    let (_server, port) = start_limit(&["--body-from", "request"]);
    let mut s = connect(port);
    let body: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let head = format!(
        "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    // A reader thread, so neither side blocks on a full socket buffer.
    let mut reader = s.try_clone().unwrap();
    let expected_len = 2 * (ECHO_HEAD.len() + "300000\r\n\r\n".len() + body.len());
    let got = thread::spawn(move || {
        let mut got = vec![0u8; expected_len];
        reader.read_exact(&mut got).map(|()| got)
    });
    for _ in 0..2 {
        s.write_all(head.as_bytes()).unwrap();
        s.write_all(&body).unwrap();
    }
    let got = got.join().unwrap().unwrap();
    let one = [
        format!("{ECHO_HEAD}{}\r\n\r\n", body.len()).into_bytes(),
        body,
    ]
    .concat();
    assert!(
        got == one.repeat(2),
        "both bodies came back, each after its head"
    );

    // A request without a body gets an empty answer; Connection: close is honoured.
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    assert_eq!(
        read_to_close(&mut s),
        format!("{ECHO_HEAD}0\r\n\r\n").into_bytes()
    );
}

/// A self-signed certificate for localhost, written as PEM files into a fresh directory;
/// returns the directory and the certificate (DER) a client trusts.
fn certificate_files(
    name: &str,
) -> (
    std::path::PathBuf,
    rustls::pki_types::CertificateDer<'static>,
) {
    let made = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let dir = std::env::temp_dir().join(format!("catamount-bench-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("cert.pem"), made.cert.pem()).unwrap();
    std::fs::write(dir.join("key.pem"), made.key_pair.serialize_pem()).unwrap();
    (dir, made.cert.der().clone())
}

#[test]
fn limit_over_tls_with_two_threads_answers_pipelined_requests() {
    let (dir, cert) = certificate_files("tls");
    let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
    let (_server, port) = start_limit(&[
        "--tls-cert",
        cert_path.to_str().unwrap(),
        "--tls-key",
        key_path.to_str().unwrap(),
        "--threads",
        "2",
    ]);
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert).unwrap();
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let client = Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    );
    // Several connections (the two threads accept from one listener; each is checked alike).
    for _ in 0..8 {
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let conn = rustls::ClientConnection::new(client.clone(), name).unwrap();
        let mut tls = rustls::StreamOwned::new(conn, connect(port));
        tls.write_all(&GET.repeat(3)).unwrap();
        let mut got = vec![0u8; HELLO.len() * 3];
        tls.read_exact(&mut got).unwrap();
        assert_eq!(got, HELLO.repeat(3));
        assert_eq!(tls.conn.alpn_protocol(), None, "the client offered no ALPN");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn limit_refuses_tls_options_it_cannot_serve() {
    let (dir, _) = certificate_files("tls-refused");
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let (cert, key) = (cert.to_str().unwrap(), key.to_str().unwrap());
    for (args, says) in [
        (
            vec!["limit", "--tls-cert", cert],
            "--tls-cert and --tls-key go together",
        ),
        (
            vec![
                "limit",
                "--tls-cert",
                cert,
                "--tls-key",
                key,
                "--body-bytes",
                "9",
                "--body-from",
                "file",
            ],
            "over TLS only the hello world and --body-from memory are served",
        ),
        (vec!["limit", "--threads", "0"], "--threads"),
    ] {
        let (code, _, err) = run(&args, Duration::from_secs(10));
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(err.contains(says), "{args:?}: {err}");
    }
    let (code, _, err) = run(
        &["limit", "--tls-cert", key, "--tls-key", key],
        Duration::from_secs(10),
    );
    assert_eq!(code, 1, "a key is no certificate: {err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn limit_refuses_an_echo_with_a_fixed_size() {
    let (code, _, err) = run(
        &["limit", "--body-bytes", "10", "--body-from", "request"],
        Duration::from_secs(10),
    );
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("--body-from request takes no --body-bytes"),
        "{err}"
    );
}

#[test]
fn limit_closes_on_an_oversized_head() {
    let (_server, port) = start_limit(&[]);
    let mut s = connect(port);
    let mut head = b"GET / HTTP/1.1\r\nX-big: ".to_vec();
    head.resize(70 * 1024, b'a');
    // The server may close before it has read everything; a failed write is fine.
    let _ = s.write_all(&head);
    assert!(read_to_close(&mut s).is_empty());
}

#[test]
fn slowloris_counts_server_closes() {
    // Reads once, then closes: every slowloris connection is closed by the "server".
    let (port, stop) = tiny_server(|mut stream, _| {
        let mut buf = [0u8; 1024];
        let _ = stream.read(&mut buf);
    });
    let port = port.to_string();
    let args = [
        "slowloris",
        "--port",
        &port,
        "--conns",
        "3",
        "--duration",
        "2",
        "--interval-ms",
        "100",
    ];
    let (code, out, err) = run(&args, Duration::from_secs(10));
    stop.store(true, Ordering::Relaxed);
    assert_eq!(code, 0, "stderr: {err}");
    assert_eq!(out.lines().count(), 1, "{out:?}");
    assert_eq!(field(&out, "conns"), 3);
    assert!(field(&out, "opened") >= 3, "{out}");
    assert!(field(&out, "closed_by_server") > 0, "{out}");
    assert!(field(&out, "bytes_sent") > 0, "{out}");
}

/// Answers keep-alive GETs with a 64 KiB body, framed by Content-Length or chunked.
fn big_body_server(chunked: bool) -> (u16, Arc<AtomicBool>) {
    tiny_server(move |mut stream, stop| {
        let body = vec![b'x'; 64 * 1024];
        let mut response = Vec::new();
        if chunked {
            response.extend_from_slice(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n");
            for piece in body.chunks(10_000) {
                response.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
                response.extend_from_slice(piece);
                response.extend_from_slice(b"\r\n");
            }
            response.extend_from_slice(b"0\r\n\r\n");
        } else {
            response.extend_from_slice(b"HTTP/1.1 200 OK\r\ncontent-length: 65536\r\n\r\n");
            response.extend_from_slice(&body);
        }
        let mut pending = Vec::new();
        let mut buf = [0u8; 4096];
        while !stop.load(Ordering::Relaxed) {
            let n = match stream.read(&mut buf) {
                Ok(n) if n > 0 => n,
                _ => return,
            };
            pending.extend_from_slice(&buf[..n]);
            while let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
                assert!(pending.starts_with(b"GET /big HTTP/1.1\r\n"));
                pending.drain(..end + 4);
                if stream.write_all(&response).is_err() {
                    return;
                }
            }
        }
    })
}

fn slowread_against(chunked: bool) {
    let (port, stop) = big_body_server(chunked);
    let port = port.to_string();
    let args = [
        "slowread",
        "--port",
        &port,
        "--path",
        "/big",
        "--conns",
        "2",
        "--rate",
        "200000",
        "--duration",
        "2",
    ];
    let (code, out, err) = run(&args, Duration::from_secs(10));
    stop.store(true, Ordering::Relaxed);
    assert_eq!(code, 0, "stderr: {err}");
    assert_eq!(out.lines().count(), 1, "{out:?}");
    assert_eq!(field(&out, "conns"), 2);
    assert!(field(&out, "responses_completed") >= 1, "{out}");
    assert!(field(&out, "bytes_read") >= 64 * 1024, "{out}");
    assert_eq!(field(&out, "errors"), 0, "{out}");
}

#[test]
fn slowread_completes_content_length_responses() {
    slowread_against(false);
}

#[test]
fn slowread_completes_chunked_responses() {
    slowread_against(true);
}

#[test]
fn rss_pss_of_this_process() {
    let pid = std::process::id().to_string();
    let (code, out, err) = run(&["rss-pss", &pid], Duration::from_secs(10));
    assert_eq!(code, 0, "stderr: {err}");
    assert!(field(&out, "rss_kib") > 0, "{out}");
    assert!(field(&out, "pss_kib") > 0, "{out}");
}

#[test]
fn rss_pss_of_a_vanished_process_fails() {
    let mut child = Command::new(BIN)
        .arg("--help")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id().to_string();
    child.wait().unwrap();
    let (code, _, err) = run(&["rss-pss", &pid], Duration::from_secs(10));
    assert_eq!(code, 1, "stderr: {err}");
    assert!(err.contains(&pid), "{err}");
}

#[test]
fn bad_arguments_exit_2_with_a_message() {
    let cases: &[&[&str]] = &[
        &[],
        &["nope"],
        &["limit", "--port", "abc"],
        &["limit", "--port", "70000"],
        &["limit", "--bogus", "1"],
        &["limit", "extra"],
        &["slowloris", "--duration", "1"],
        &[
            "slowloris",
            "--port",
            "1",
            "--duration",
            "1",
            "--host",
            "192.0.2.1",
        ],
        &["slowloris", "--port", "1", "--duration"],
        &["slowread", "--port", "1", "--duration", "1"],
        &[
            "slowread",
            "--port",
            "1",
            "--duration",
            "1",
            "--rate",
            "10",
            "--path",
            "x",
        ],
        &["rss-pss"],
        &["rss-pss", "abc"],
    ];
    for args in cases {
        let (code, out, err) = run(args, Duration::from_secs(10));
        assert_eq!(code, 2, "{args:?}: stdout {out:?} stderr {err:?}");
        assert!(err.contains("catamount-bench"), "{args:?}: {err:?}");
        assert!(err.contains("usage:"), "{args:?}: {err:?}");
    }
    let (code, out, _) = run(&["--help"], Duration::from_secs(10));
    assert_eq!(code, 0);
    assert!(
        out.contains("slowloris") && out.contains("rss-pss"),
        "{out}"
    );
    let (code, out, _) = run(&["slowread", "--help"], Duration::from_secs(10));
    assert_eq!(code, 0);
    assert!(out.contains("--rate"), "{out}");
}
