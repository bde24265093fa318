//! Feeding a connection's bytes in pieces (split at every byte boundary, one byte at a time,
//! or at random points) gives exactly the same requests and the same verdict as feeding them
//! whole; and mutated or random input never panics nor reports using bytes it was not given.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use catamount_http::{
    BodyFraming, ChunkedDecoder, ErrorKind, HeadParser, Limits, MethodPolicy, Version,
};

/// What the app would see of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Request {
    method: String,
    target: Vec<u8>,
    path: Vec<u8>,
    query: Option<Vec<u8>>,
    version: Version,
    headers: Vec<(Vec<u8>, Vec<u8>)>,
    keep_alive: bool,
    body: Vec<u8>,
}

/// How the connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// All bytes were used by complete requests.
    Clean,
    /// The bytes ran out inside a request.
    Incomplete,
    /// A request was refused.
    Refused(ErrorKind, u16),
}

/// Reads requests back to back from `pieces` arriving in order, as the reactor does: parse
/// the head from the buffer, drain it, read the body it announces, repeat.
fn serve(pieces: &[&[u8]], limits: &Limits) -> (Vec<Request>, End) {
    let mut pieces = pieces.iter();
    let mut buf: Vec<u8> = Vec::new();
    let mut requests = Vec::new();
    loop {
        let mut parser = HeadParser::new();
        let (head, used) = loop {
            match parser.parse(&buf, limits) {
                Ok(Some(done)) => break done,
                Ok(None) => {}
                Err(e) => return (requests, End::Refused(e.kind(), e.status())),
            }
            match pieces.next() {
                Some(p) => buf.extend_from_slice(p),
                None if buf.is_empty() => return (requests, End::Clean),
                None => return (requests, End::Incomplete),
            }
        };
        assert!(used <= buf.len(), "head used {used} of {}", buf.len());
        assert_eq!(head.head_len(), used);
        buf.drain(..used);
        let body = match head.body() {
            BodyFraming::None => Vec::new(),
            BodyFraming::Length(n) => {
                while (buf.len() as u64) < n {
                    match pieces.next() {
                        Some(p) => buf.extend_from_slice(p),
                        None => return (requests, End::Incomplete),
                    }
                }
                buf.drain(..n as usize).collect()
            }
            BodyFraming::Chunked => {
                let mut decoder = ChunkedDecoder::new();
                let mut out = Vec::new();
                loop {
                    match decoder.decode(&buf, &mut out, limits) {
                        Ok(p) => {
                            assert!(p.consumed <= buf.len());
                            assert!(p.done || p.consumed == buf.len(), "stopped early");
                            buf.drain(..p.consumed);
                            if p.done {
                                break;
                            }
                        }
                        Err(e) => return (requests, End::Refused(e.kind(), e.status())),
                    }
                    match pieces.next() {
                        Some(p) => buf.extend_from_slice(p),
                        None => return (requests, End::Incomplete),
                    }
                }
                assert_eq!(decoder.decoded_len(), out.len() as u64);
                out
            }
        };
        requests.push(Request {
            method: head.method().to_string(),
            target: head.target().to_vec(),
            path: head.path().to_vec(),
            query: head.query().map(<[u8]>::to_vec),
            version: head.version(),
            headers: head
                .headers()
                .map(|(n, v)| (n.to_vec(), v.to_vec()))
                .collect(),
            keep_alive: head.keep_alive(),
            body,
        });
    }
}

fn small_limits() -> Limits {
    Limits {
        max_header_name: 8,
        max_header_value: 16,
        max_target: 24,
        max_path: 12,
        max_query: 8,
        max_fragment: 4,
        max_head: 160,
        max_headers: 4,
        max_chunk_line: 12,
        max_chunk_extensions: 16,
        max_body: Some(40),
        methods: MethodPolicy::Any,
        require_host: true,
    }
}

/// Connections worth of bytes: whole requests, pipelines, and refusals at various points.
const STREAMS: &[&[u8]] = &[
    b"GET /a?b=c HTTP/1.1\r\nHost: x\r\nAccept: */*\r\n\r\n",
    b"\r\nGET / HTTP/1.0\r\n\r\n",
    b"GET http://example.com:8080/p?q#f HTTP/1.1\r\nHost: y\r\nConnection: close\r\n\r\n",
    b"POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\r\nhello world",
    b"POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n6;q=\"a b\"\r\n world\r\n0\r\nT: v\r\n\r\n",
    b"GET /1 HTTP/1.1\r\nHost: x\r\n\r\nPOST /2 HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc\r\nPOST /3 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n1A\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\n\r\nGET /4 HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\nBad: lf\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\nX: a\0\r\n\r\n",
    b"FOO / HTTP/1.1\r\nHost: x\r\n\r\n",
    b"POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n",
    b"POST /c HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
    b"GET /1 HTTP/1.1\r\nHost: x\r\n\r\nGET /2 HTTP/2.0\r\n\r\n",
    b"POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nshort",
    b"POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel",
];

/// Checks that every way of splitting `raw` gives the one-shot result.
fn check_splits(raw: &[u8], limits: &Limits) {
    let whole = serve(&[raw], limits);
    let show = || String::from_utf8_lossy(raw).into_owned();
    for cut in 0..=raw.len() {
        let (a, b) = raw.split_at(cut);
        assert_eq!(serve(&[a, b], limits), whole, "{:?} cut at {cut}", show());
    }
    let bytes: Vec<&[u8]> = raw.chunks(1).collect();
    assert_eq!(serve(&bytes, limits), whole, "{:?} byte by byte", show());
    for a in 1..raw.len() {
        for b in (a + 1..raw.len()).step_by(7) {
            let parts = [&raw[..a], &raw[a..b], &raw[b..]];
            assert_eq!(serve(&parts, limits), whole, "{:?} cut at {a}, {b}", show());
        }
    }
}

#[test]
fn every_split_point_gives_the_same_result() {
    for raw in STREAMS {
        check_splits(raw, &Limits::default());
    }
}

#[test]
fn every_split_point_gives_the_same_result_near_limits() {
    let streams: &[&[u8]] = &[
        b"GET /aaaaaaaaaaaa HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /aaaaaaaaaaaaa HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /?qqqqqqqqq HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /#fffff HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /p?q#f HTTP/1.1\r\nHost: x\r\nNNNNNNNN: vvvvvvvvvvvvvvvv  \r\n\r\n",
        b"GET /p HTTP/1.1\r\nHost: x\r\nNNNNNNNNN: v\r\n\r\n",
        b"GET /p HTTP/1.1\r\nHost: x\r\nN: vvvvvvvvvvvvvvvvv\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nA: vvvvvvvvvvvvvvvv\r\nB: vvvvvvvvvvvvvvvv\r\nC: vvvvvvvvvvvvvvvv\r\nD: vvvvvvvvvvvvvvvv\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n14;a=b\r\n01234567890123456789\r\n14;c\r\n01234567890123456789\r\n0\r\nT: 1\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n1;aaaaaaaaaaa\r\nx\r\n0\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 41\r\n\r\n",
    ];
    let limits = small_limits();
    for raw in streams {
        check_splits(raw, &limits);
    }
}

#[test]
fn the_streams_parse_as_expected() {
    let limits = Limits::default();
    let (requests, end) = serve(&[STREAMS[5]], &limits);
    assert_eq!(end, End::Clean);
    let paths: Vec<&[u8]> = requests.iter().map(|r| r.path.as_slice()).collect();
    assert_eq!(paths, [&b"/1"[..], b"/2", b"/3", b"/4"]);
    assert_eq!(requests[1].body, b"abc");
    assert_eq!(requests[2].body, b"abcdefghijklmnopqrstuvwxyz");
    let (requests, end) = serve(&[STREAMS[4]], &limits);
    assert_eq!(
        (requests[0].body.as_slice(), end),
        (&b"hello world"[..], End::Clean)
    );
    assert_eq!(
        serve(&[STREAMS[6]], &limits).1,
        End::Refused(ErrorKind::BareLf, 400)
    );
    assert_eq!(
        serve(&[STREAMS[8]], &limits).1,
        End::Refused(ErrorKind::UnsupportedMethod, 501)
    );
    let (requests, end) = serve(&[STREAMS[11]], &limits);
    assert_eq!(requests.len(), 1);
    assert_eq!(end, End::Refused(ErrorKind::UnsupportedVersion, 505));
    assert_eq!(serve(&[STREAMS[12]], &limits).1, End::Incomplete);
    assert_eq!(serve(&[STREAMS[13]], &limits).1, End::Incomplete);
}

/// A tiny deterministic PRNG, so the test needs no dependency and always runs the same cases.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

const SNIPPETS: &[&[u8]] = &[
    b"\r\n",
    b"\r",
    b"\n",
    b"\0",
    b" ",
    b"\t",
    b":",
    b";",
    b",",
    b"\"",
    b"?",
    b"#",
    b"/",
    b"0\r\n\r\n",
    b"Transfer-Encoding: chunked\r\n",
    b"Content-Length: 5\r\n",
    b"Host: h\r\n",
    b"HTTP/1.1",
    b"ffffffffffffffff",
    b"\xff",
];

/// A valid stream with a few random edits.
fn mutate(rng: &mut XorShift, base: &[u8]) -> Vec<u8> {
    let mut input = base.to_vec();
    for _ in 0..1 + rng.below(6) {
        let at = rng.below(input.len() + 1);
        match rng.below(5) {
            0 if !input.is_empty() => {
                input.remove(at.min(input.len() - 1));
            }
            1 => {
                let snippet = rng.pick(SNIPPETS);
                input.splice(at..at, snippet.iter().copied());
            }
            2 => {
                if let Some(b) = input.get_mut(at) {
                    *b = rng.next() as u8;
                }
            }
            3 => {
                let end = (at + rng.below(20)).min(input.len());
                let copy = input[at..end].to_vec();
                input.splice(at..at, copy);
            }
            _ => input.truncate(at),
        }
    }
    input
}

/// Random cut points for `len` bytes.
fn random_pieces<'a>(rng: &mut XorShift, input: &'a [u8]) -> Vec<&'a [u8]> {
    let mut cuts: Vec<usize> = (0..rng.below(5))
        .map(|_| rng.below(input.len() + 1))
        .collect();
    cuts.push(0);
    cuts.push(input.len());
    cuts.sort_unstable();
    cuts.windows(2).map(|w| &input[w[0]..w[1]]).collect()
}

#[test]
fn mutated_and_random_input_never_panics_and_split_agrees() {
    let started = std::time::Instant::now();
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    let default_limits = Limits::default();
    let small = small_limits();
    let alphabet: Vec<u8> = b"GET POST / HTTP/1.1\r\n:;,= \t0123456789abcdefABCDEF\"?#Host Content-Length Transfer-Encoding chunked\0\x7f\xff".to_vec();
    let mut outcomes = [0usize; 3];
    for i in 0..30_000 {
        let input = if i % 5 == 0 {
            (0..rng.below(200)).map(|_| *rng.pick(&alphabet)).collect()
        } else {
            let base = rng.pick(STREAMS);
            mutate(&mut rng, base)
        };
        let limits = if i % 3 == 0 { &small } else { &default_limits };
        let whole = serve(&[&input], limits);
        outcomes[match whole.1 {
            End::Clean => 0,
            End::Incomplete => 1,
            End::Refused(..) => 2,
        }] += 1;
        let pieces = random_pieces(&mut rng, &input);
        assert_eq!(
            serve(&pieces, limits),
            whole,
            "{:?} in {} pieces",
            String::from_utf8_lossy(&input),
            pieces.len()
        );
        if i % 10 == 0 {
            let bytes: Vec<&[u8]> = input.chunks(1).collect();
            assert_eq!(serve(&bytes, limits), whole);
        }
        // The decoder straight on arbitrary bytes, too.
        let mut d = ChunkedDecoder::new();
        let mut out = Vec::new();
        if let Ok(p) = d.decode(&input, &mut out, limits) {
            assert!(p.consumed <= input.len());
            assert!(p.done || p.consumed == input.len());
            assert!(out.len() <= input.len());
        }
    }
    // The mutations reach all three outcomes, so the agreement above means something.
    assert!(outcomes.iter().all(|&n| n > 100), "{outcomes:?}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
}
