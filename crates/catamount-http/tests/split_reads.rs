//! Feeding a request in pieces, split at every byte boundary and one byte at a time, gives the
//! same result as feeding it whole; and random input never panics.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use catamount_http::{BodyFraming, ChunkedDecoder, HeadParser, Limits};

/// What a request parses to: method, target, headers, decoded body, bytes used.
type Parsed = (String, Vec<u8>, Vec<(Vec<u8>, Vec<u8>)>, Vec<u8>, usize);

/// Parses one request from chunks delivered in order, as a connection would see them.
fn feed(chunks: &[&[u8]]) -> Result<Parsed, u16> {
    let limits = Limits::default();
    let mut buf = Vec::new();
    let mut parser = HeadParser::new();
    let mut chunks = chunks.iter();
    let (head, used) = loop {
        if let Some(done) = parser.parse(&buf, &limits).map_err(|e| e.status())? {
            break done;
        }
        buf.extend_from_slice(chunks.next().ok_or(0u16)?);
    };
    let mut rest: Vec<u8> = buf[used..].to_vec();
    let mut body = Vec::new();
    let mut total = used;
    match head.body() {
        BodyFraming::None => {}
        BodyFraming::Length(n) => {
            while (rest.len() as u64) < n {
                rest.extend_from_slice(chunks.next().ok_or(0u16)?);
            }
            body = rest[..n as usize].to_vec();
            total += n as usize;
        }
        BodyFraming::Chunked => {
            let mut d = ChunkedDecoder::new();
            loop {
                let p = d
                    .decode(&rest, &mut body, &limits)
                    .map_err(|e| e.status())?;
                total += p.consumed;
                rest.drain(..p.consumed);
                if p.done {
                    break;
                }
                rest.extend_from_slice(chunks.next().ok_or(0u16)?);
            }
        }
    }
    let headers = head
        .headers()
        .map(|(n, v)| (n.to_vec(), v.to_vec()))
        .collect();
    Ok((
        head.method().to_string(),
        head.target().to_vec(),
        headers,
        body,
        total,
    ))
}

const REQUESTS: &[&[u8]] = &[
    b"GET /a?b=c HTTP/1.1\r\nHost: x\r\nAccept: */*\r\n\r\n",
    b"\r\nGET / HTTP/1.0\r\n\r\n",
    b"POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\r\nhello world",
    b"POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nT: v\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\nBad: lf\r\n\r\n",
    b"POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n",
];

#[test]
fn every_split_point_gives_the_same_result() {
    for raw in REQUESTS {
        let whole = feed(&[raw]);
        for cut in 1..raw.len() {
            let (a, b) = raw.split_at(cut);
            assert_eq!(
                feed(&[a, b]),
                whole,
                "{:?} cut at {cut}",
                String::from_utf8_lossy(raw)
            );
        }
        let bytes: Vec<&[u8]> = raw.chunks(1).collect();
        assert_eq!(
            feed(&bytes),
            whole,
            "{:?} byte by byte",
            String::from_utf8_lossy(raw)
        );
        for (a, b) in raw
            .iter()
            .enumerate()
            .flat_map(|(i, _)| (i + 1..raw.len()).step_by(7).map(move |j| (i, j)))
        {
            if a == 0 {
                continue;
            }
            let parts = [&raw[..a], &raw[a..b], &raw[b..]];
            assert_eq!(feed(&parts), whole);
        }
    }
}

/// A tiny deterministic PRNG so the test needs no dependency and always runs the same cases.
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
}

#[test]
fn mutated_and_random_input_never_panics() {
    let limits = Limits::default();
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    let alphabet = b"GET POST / HTTP/1.1\r\n:;, \t0123456789abcdefHost Content-Length Transfer-Encoding chunked\0\x7f\xff";
    for i in 0..20_000 {
        let mut input = REQUESTS[i % REQUESTS.len()].to_vec();
        for _ in 0..rng.below(8) {
            let at = rng.below(input.len() + 1);
            match rng.below(3) {
                0 if !input.is_empty() => {
                    input.remove(at.min(input.len() - 1));
                }
                1 => input.insert(at, alphabet[rng.below(alphabet.len())]),
                _ => {
                    if let Some(b) = input.get_mut(at) {
                        *b = rng.next() as u8;
                    }
                }
            }
        }
        if i % 5 == 0 {
            input = (0..rng.below(200))
                .map(|_| alphabet[rng.below(alphabet.len())])
                .collect();
        }
        if let Ok(Some((_, used))) = HeadParser::new().parse(&input, &limits) {
            assert!(used <= input.len());
            let mut d = ChunkedDecoder::new();
            if let Ok(p) = d.decode(&input[used..], &mut Vec::new(), &limits) {
                assert!(p.consumed <= input.len() - used);
            }
        }
        let mut d = ChunkedDecoder::new();
        if let Ok(p) = d.decode(&input, &mut Vec::new(), &limits) {
            assert!(p.consumed <= input.len());
        }
    }
}
