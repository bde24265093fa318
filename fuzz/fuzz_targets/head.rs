//! Fuzz target for the request-head parser (`catamount_http::HeadParser`), with the bodies
//! that follow each head (Content-Length skipped, chunked decoded) so pipelined requests are
//! parsed as the reactor parses them.
//!
//! Beyond "no panic": the verdict is the same fed at once, byte by byte, and in reads of any
//! size; a head's consumed length is within the input and ends with the empty line; an
//! incomplete head never holds more than `max_head`; every limit holds in what is accepted;
//! an error is repeated on the next call. And a valid request built from the input's lines
//! (any served method, path and query characters, extension fields with any visible value)
//! is always accepted, with each part as it was sent.
#![no_main]

use catamount_fuzz::{limit_profiles, split_points};
use catamount_http::{
    parse_head, BodyFraming, ChunkedDecoder, HeadParser, Limits, ParseError, RequestHead, Version,
};
use libfuzzer_sys::fuzz_target;

/// Pipelined requests looked at per input: enough to reach the second head's code paths.
const MAX_REQUESTS: usize = 4;

/// Empty lines skipped before a request line (two CRLFs) and the CR of a third, which the
/// parser holds before it refuses the LF: what a head may hold beyond `max_head`.
const LEADING_SLACK: usize = 5;

type Verdict = Result<Option<(RequestHead, usize)>, ParseError>;

fuzz_target!(|data: &[u8]| {
    for limits in limit_profiles() {
        let mut rest = data;
        for _ in 0..MAX_REQUESTS {
            let Some((consumed, framing)) = check_head(rest, &limits) else {
                break;
            };
            match rest.get(consumed..) {
                Some(after) => rest = after,
                None => panic!("consumed {consumed} of {} bytes", rest.len()),
            }
            let Some(body_len) = skip_body(rest, framing, &limits) else {
                break;
            };
            rest = rest.get(body_len..).unwrap_or_default();
        }
    }
    valid_request_round_trip(data);
});

/// Most fields in the built request: room under `max_headers` for the Host it adds.
const MAX_BUILT_FIELDS: usize = 40;

/// A valid request made of the input: method from the first byte, path from the first line,
/// query from the second, an `x-` field for each further line (name and value mapped onto
/// the allowed characters). The parser must accept it and give back each part unchanged.
fn valid_request_round_trip(data: &[u8]) {
    const METHODS: [&str; 8] = [
        "GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "TRACE", "PATCH",
    ];
    const PATH: &[u8] = b"abcxyzABCXYZ0189-._~!$&'()*+,;=:@/%";
    const NAME: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789!#$%&'*+-.^_`|~";
    let map = |bytes: &[u8], set: &[u8]| -> Vec<u8> {
        bytes
            .iter()
            .map(|&b| set[usize::from(b) % set.len()])
            .collect()
    };
    let method = METHODS[usize::from(data.first().copied().unwrap_or(0)) % METHODS.len()];
    let mut lines = data.split(|&b| b == b'\n');
    let mut path = b"/".to_vec();
    path.extend(map(
        lines
            .next()
            .unwrap_or_default()
            .get(..2000)
            .unwrap_or_default(),
        PATH,
    ));
    let query = lines.next().map(|q| map(q.get(..2000).unwrap_or(q), PATH));
    let fields: Vec<(Vec<u8>, Vec<u8>)> = lines
        .take(MAX_BUILT_FIELDS)
        .map(|line| {
            let (name, value) = line.split_at(line.len().min(1 + line.len() / 4).min(60));
            let mut field_name = b"x-".to_vec();
            field_name.extend(map(name, NAME));
            // Visible ASCII, with spaces and tabs inside; the parser trims them at the ends.
            let value: Vec<u8> = value
                .iter()
                .map(|&b| match b {
                    b' ' | b'\t' | 0x21..=0x7e => b,
                    _ => 0x21 + b % 94,
                })
                .collect();
            (field_name, value)
        })
        .collect();

    let mut request = format!("{method} ").into_bytes();
    request.extend_from_slice(&path);
    if let Some(q) = &query {
        request.push(b'?');
        request.extend_from_slice(q);
    }
    request.extend_from_slice(b" HTTP/1.1\r\nHost: example.test:8080\r\n");
    for (name, value) in &fields {
        request.extend_from_slice(name);
        request.extend_from_slice(b": ");
        request.extend_from_slice(value);
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"\r\n");

    let limits = Limits::default();
    let (head, consumed) = match parse_head(&request, &limits) {
        Ok(Some(parsed)) => parsed,
        other => panic!("a valid request was not accepted: {other:?}\n{request:?}"),
    };
    assert_eq!(consumed, request.len());
    assert_eq!(head.method(), method);
    assert_eq!(head.path(), path.as_slice());
    assert_eq!(head.query(), query.as_deref());
    assert_eq!(head.host(), Some(&b"example.test:8080"[..]));
    let got: Vec<(&[u8], &[u8])> = head.headers().skip(1).collect();
    let sent: Vec<(&[u8], &[u8])> = fields
        .iter()
        .map(|(n, v)| (n.as_slice(), trim(v)))
        .collect();
    assert_eq!(got, sent, "fields as sent");
}

/// `value` without the spaces and tabs at its ends.
fn trim(value: &[u8]) -> &[u8] {
    let start = value.iter().position(|&b| b != b' ' && b != b'\t');
    let end = value.iter().rposition(|&b| b != b' ' && b != b'\t');
    match (start, end) {
        (Some(s), Some(e)) => value.get(s..=e).unwrap_or_default(),
        _ => &[],
    }
}

/// Parses the head at the start of `data` in three ways and checks what it got; the bytes
/// the head took and the body framing it announced, if one completed.
fn check_head(data: &[u8], limits: &Limits) -> Option<(usize, BodyFraming)> {
    let whole = parse_head(data, limits);

    let mut bytewise = HeadParser::new();
    let prefixes = (0..=data.len()).map(|end| data.get(..end).unwrap_or_default());
    assert_eq!(
        feed(&mut bytewise, prefixes, limits),
        whole,
        "fed byte by byte"
    );

    let mut reads = HeadParser::new();
    let ends = split_points(data).into_iter().chain([data.len()]);
    let prefixes = ends.map(|end| data.get(..end).unwrap_or_default());
    assert_eq!(feed(&mut reads, prefixes, limits), whole, "fed in reads");

    match whole {
        Ok(Some((head, consumed))) => {
            assert!(consumed <= data.len());
            assert_eq!(head.head_len(), consumed);
            let taken = data.get(..consumed).unwrap_or_default();
            assert!(
                taken.ends_with(b"\r\n\r\n"),
                "a head ends with an empty line"
            );
            check_accepted(&head, limits);
            Some((consumed, head.body()))
        }
        Ok(None) => {
            assert!(
                data.len() <= limits.max_head + LEADING_SLACK,
                "an incomplete head of {} bytes is held (max_head {})",
                data.len(),
                limits.max_head
            );
            None
        }
        Err(e) => {
            assert_eq!(bytewise.parse(data, limits), Err(e), "an error is repeated");
            assert!(matches!(e.status(), 400 | 413 | 414 | 431 | 501 | 505));
            assert!(!e.to_string().is_empty());
            None
        }
    }
}

/// Calls `parser` with each buffer in turn (each extends the one before) until it answers.
fn feed<'a>(
    parser: &mut HeadParser,
    prefixes: impl Iterator<Item = &'a [u8]>,
    limits: &Limits,
) -> Verdict {
    let mut verdict = Ok(None);
    for buf in prefixes {
        verdict = parser.parse(buf, limits);
        if !matches!(verdict, Ok(None)) {
            break;
        }
    }
    verdict
}

/// What an accepted head promises: each limit holds, the parts fit together, and every
/// accessor answers.
fn check_accepted(head: &RequestHead, limits: &Limits) {
    let method = head.method();
    assert!(
        !method.is_empty() && method.len() <= 32,
        "method {method:?}"
    );
    assert!(method.bytes().all(is_tchar), "method {method:?}");
    assert!(
        limits.methods.allows(method),
        "method {method:?} is not served"
    );

    let target = head.target();
    assert!(!target.is_empty() && target.len() <= limits.max_target);
    assert!(
        target.iter().all(|b| (0x21..=0x7e).contains(b)),
        "target {target:?}"
    );
    let path = head.path();
    assert!(path.len() <= limits.max_path);
    let query = head.query();
    assert!(query.map_or(0, <[u8]>::len) <= limits.max_query);
    let fragment = head.fragment();
    assert!(fragment.map_or(0, <[u8]>::len) <= limits.max_fragment);
    if target.starts_with(b"/") {
        // Origin form: the target is exactly its parts put back together.
        let mut rebuilt = path.to_vec();
        if let Some(q) = query {
            rebuilt.push(b'?');
            rebuilt.extend_from_slice(q);
        }
        if let Some(f) = fragment {
            rebuilt.push(b'#');
            rebuilt.extend_from_slice(f);
        }
        assert_eq!(rebuilt, target, "origin-form target rebuilt from its parts");
        assert_eq!(head.authority(), None);
    }

    assert!(head.header_count() <= limits.max_headers);
    assert_eq!(head.headers().len(), head.header_count());
    for (name, value) in head.headers() {
        assert!(!name.is_empty() && name.len() <= limits.max_header_name);
        assert!(name.iter().copied().all(is_tchar), "name {name:?}");
        assert!(value.len() <= limits.max_header_value);
        assert!(
            !value.iter().any(|&b| b == b'\r' || b == b'\n' || b == 0),
            "value {value:?}"
        );
        assert!(!value.starts_with(b" ") && !value.starts_with(b"\t"));
        assert!(!value.ends_with(b" ") && !value.ends_with(b"\t"));
        assert!(head.header(name).is_some());
    }

    if head.version() == Version::Http11 && limits.require_host {
        assert!(
            head.host().is_some_and(|h| !h.is_empty()),
            "HTTP/1.1 names a host"
        );
    }
    match head.body() {
        BodyFraming::None => assert!(matches!(head.content_length(), None | Some(0))),
        BodyFraming::Length(n) => {
            assert!(n > 0);
            assert_eq!(head.content_length(), Some(n));
            assert!(limits.max_body.is_none_or(|max| n <= max));
        }
        BodyFraming::Chunked => {
            assert_eq!(head.content_length(), None);
            assert_eq!(head.version(), Version::Http11);
        }
    }

    let _ = (head.keep_alive(), head.expects_continue());
    let _ = head.may_switch_to(None);
    match head.offered_protocols() {
        Some(offered) => {
            assert!(!offered.is_empty());
            for protocol in offered {
                assert_eq!(head.may_switch_to(Some(protocol)), Ok(()));
            }
        }
        None => assert!(head.may_switch_to(Some(b"websocket")).is_err()),
    }
}

/// The body after a head, as the server reads it: the bytes it takes, or None when it does
/// not end within `data` (or is refused), which ends the pipeline.
fn skip_body(data: &[u8], framing: BodyFraming, limits: &Limits) -> Option<usize> {
    match framing {
        BodyFraming::None => Some(0),
        BodyFraming::Length(n) => usize::try_from(n).ok().filter(|&n| n <= data.len()),
        BodyFraming::Chunked => {
            let mut decoder = ChunkedDecoder::new();
            let mut out = Vec::new();
            let progress = decoder.decode(data, &mut out, limits).ok()?;
            assert!(out.len() <= progress.consumed);
            progress.done.then_some(progress.consumed)
        }
    }
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}
