//! `slowloris`: clients that start a request and never finish its head, sending one more header
//! line per interval, to see whether a server ties up a thread (or a slot) per such connection
//! and whether it times them out. Connections the server closes are counted and reopened.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{sleep, timeout_at, Instant};

use crate::{args, Failure};

pub const USAGE: &str = "\
usage: catamount-bench slowloris --port P --duration SECS [--host 127.0.0.1] [--conns 50]
                                 [--interval-ms 1000]

Opens CONNS connections to HOST:P, each sending `GET / HTTP/1.1\\r\\nHost: x\\r\\n` and then one
`X-a: b\\r\\n` line every INTERVAL-MS, never ending the head. A connection the server closes
(EOF, error, failed write) is counted and reopened after 100 ms. After SECS seconds prints
  {\"conns\":N,\"opened\":N,\"closed_by_server\":N,\"bytes_sent\":N}
HOST must be a loopback address.
";

const REQUEST_START: &[u8] = b"GET / HTTP/1.1\r\nHost: x\r\n";
const EXTRA_HEADER: &[u8] = b"X-a: b\r\n";
const RECONNECT_PAUSE: Duration = Duration::from_millis(100);

#[derive(Default)]
struct Counters {
    opened: AtomicU64,
    closed_by_server: AtomicU64,
    bytes_sent: AtomicU64,
}

pub fn run(argv: &[String]) -> Result<(), Failure> {
    let flags = args::parse(argv, &["port", "host", "conns", "duration", "interval-ms"])?;
    flags.no_positional()?;
    let host = flags.loopback_host("host", "127.0.0.1")?;
    let port = flags.port("port", None, false)?;
    let conns = flags.number("conns", Some(50), 1, 10_000)?;
    let duration = flags.number("duration", None, 1, 86_400)?;
    let interval = flags.number("interval-ms", Some(1000), 1, 3_600_000)?;
    let addr = SocketAddr::new(host, port);

    let counters = Arc::new(Counters::default());
    let runtime = crate::runtime()?;
    runtime.block_on(async {
        let deadline = Instant::now() + Duration::from_secs(duration);
        let interval = Duration::from_millis(interval);
        let tasks: Vec<_> = (0..conns)
            .map(|_| {
                let counters = Arc::clone(&counters);
                tokio::spawn(async move {
                    // Everything a client does stops at the deadline, whatever it waits on.
                    let _ = timeout_at(deadline, client(addr, interval, &counters)).await;
                })
            })
            .collect();
        for task in tasks {
            // Each task ends by the deadline; the extra second only guards against a stuck one.
            let _ = timeout_at(deadline + Duration::from_secs(1), task).await;
        }
    });
    println!(
        "{{\"conns\":{conns},\"opened\":{},\"closed_by_server\":{},\"bytes_sent\":{}}}",
        counters.opened.load(Ordering::Relaxed),
        counters.closed_by_server.load(Ordering::Relaxed),
        counters.bytes_sent.load(Ordering::Relaxed),
    );
    Ok(())
}

/// One slow client: connect, dribble header lines until the server closes, reconnect. Runs until
/// the caller's deadline cancels it.
async fn client(addr: SocketAddr, interval: Duration, counters: &Counters) {
    loop {
        if let Ok(stream) = TcpStream::connect(addr).await {
            counters.opened.fetch_add(1, Ordering::Relaxed);
            dribble(stream, interval, counters).await;
            counters.closed_by_server.fetch_add(1, Ordering::Relaxed);
        }
        sleep(RECONNECT_PAUSE).await;
    }
}

/// Sends the unfinished head line by line; returns when the server has closed the connection.
async fn dribble(mut stream: TcpStream, interval: Duration, counters: &Counters) {
    let mut next = REQUEST_START;
    let mut sink = [0u8; 4096];
    loop {
        if stream.write_all(next).await.is_err() {
            return;
        }
        counters
            .bytes_sent
            .fetch_add(next.len() as u64, Ordering::Relaxed);
        next = EXTRA_HEADER;
        let wake = Instant::now() + interval;
        // Until it is time for the next line, watch for the server closing (anything it sends,
        // such as a 408 or 431, is read and dropped).
        loop {
            tokio::select! {
                () = tokio::time::sleep_until(wake) => break,
                read = stream.read(&mut sink) => match read {
                    Ok(n) if n > 0 => {}
                    _ => return,
                },
            }
        }
    }
}
