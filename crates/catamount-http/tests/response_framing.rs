//! Response heads from the app's header fields: the header rules, body framing, keep-alive and
//! the exact bytes, one table row per case.
#![allow(clippy::unwrap_used)]

use catamount_http::{
    classify_field_name, early_hints, Answering, FieldName, FieldValues, Framing, ResponseHead,
    Version,
};

const fn answering(version: Version, head_request: bool) -> Answering {
    Answering {
        version,
        head_request,
    }
}

const GET11: Answering = answering(Version::Http11, false);
const GET10: Answering = answering(Version::Http10, false);
const HEAD11: Answering = answering(Version::Http11, true);
const HEAD10: Answering = answering(Version::Http10, true);

/// A field value as the app gives it.
#[derive(Clone, Copy)]
enum V {
    /// Rack 2: one String (several values joined by "\n").
    S(&'static str),
    /// Rack 3: an Array of Strings.
    L(&'static [&'static str]),
}

fn head_of(status: u16, fields: &[(&str, V)]) -> Result<ResponseHead, String> {
    let mut head = ResponseHead::new(status);
    for (name, value) in fields {
        let added = match value {
            V::S(text) => head.add(name.as_bytes(), FieldValues::Joined(text.as_bytes())),
            V::L(list) => {
                let list: Vec<Vec<u8>> = list.iter().map(|v| v.as_bytes().to_vec()).collect();
                head.add(name.as_bytes(), FieldValues::List(&list))
            }
        };
        added.map_err(|e| e.to_string())?;
    }
    Ok(head)
}

/// The head's bytes, the framing and the keep-alive decision; or the refusal's message.
type Expect = Result<(&'static str, Framing, bool), &'static str>;

/// One case: what it shows, the status, the request, the app's fields, the body's size when
/// known beforehand (an Array, a file), whether the request and server allow keep-alive, and
/// what comes out.
type Row = (
    &'static str,
    u16,
    Answering,
    &'static [(&'static str, V)],
    Option<u64>,
    bool,
    Expect,
);

/// Runs one row's head through framing, keep-alive and encoding.
fn run(
    &(_, status, to, fields, known, allowed, _): &Row,
) -> Result<(String, Framing, bool), String> {
    let head = head_of(status, fields)?;
    let framing = head.framing(to, known).map_err(|e| e.to_string())?;
    let keep_alive = head.keeps_alive(framing, allowed);
    let bytes = head.encode(to, framing, known, keep_alive);
    Ok((String::from_utf8(bytes).unwrap(), framing, keep_alive))
}

use Framing::{Chunked, Close, Length, NoBody};
use V::{L, S};

#[test]
fn heads_framing_and_keep_alive() {
    // One row per case, one line each where it fits: rustfmt would spread each over ten.
    #[rustfmt::skip]
    let rows: &[Row] = &[
        // Framing from the body's size, the app's length, or neither.
        ("array body", 200, GET11, &[("content-type", S("text/plain"))], Some(5), true,
            Ok(("HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 5\r\n\r\n", Length(5), true))),
        ("empty array body", 200, GET11, &[], Some(0), true,
            Ok(("HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n", Length(0), true))),
        ("streamed body on 1.1 is chunked", 200, GET11, &[], None, true,
            Ok(("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n", Chunked, true))),
        ("streamed body on 1.0 is close-delimited", 200, GET10, &[], None, true,
            Ok(("HTTP/1.0 200 OK\r\n\r\n", Close, false))),
        ("1.0 keep-alive is said", 200, GET10, &[], Some(2), true,
            Ok(("HTTP/1.0 200 OK\r\ncontent-length: 2\r\nconnection: keep-alive\r\n\r\n", Length(2), true))),
        ("1.0 without keep-alive says nothing", 200, GET10, &[], Some(2), false,
            Ok(("HTTP/1.0 200 OK\r\ncontent-length: 2\r\n\r\n", Length(2), false))),
        ("1.1 close is said", 200, GET11, &[], Some(2), false,
            Ok(("HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\n", Length(2), false))),
        ("app length for a streamed body", 200, GET11, &[("Content-Length", S("5"))], None, true,
            Ok(("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", Length(5), true))),
        ("app length equal to the body's", 200, GET11, &[("content-length", S("5"))], Some(5), true,
            Ok(("HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n", Length(5), true))),
        ("app length trimmed, sent as given", 200, GET11, &[("content-length", S(" 7 "))], None, true,
            Ok(("HTTP/1.1 200 OK\r\ncontent-length:  7 \r\n\r\n", Length(7), true))),
        ("app length against the body's", 200, GET11, &[("content-length", S("3"))], Some(5), true,
            Err("content-length 3 does not match the body's 5 bytes")),
        ("app transfer-encoding passes through and closes", 200, GET11, &[("Transfer-Encoding", S("chunked"))], None, true,
            Ok(("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nconnection: close\r\n\r\n", Close, false))),
        ("app transfer-encoding beats a known size: no length added", 200, GET11, &[("transfer-encoding", S("gzip"))], Some(4), true,
            Ok(("HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\nconnection: close\r\n\r\n", Close, false))),
        ("app chunked with an Array body: passed through, not chunked again", 200, GET11, &[("transfer-encoding", S("chunked"))], Some(10), true,
            Ok(("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n", Close, false))),
        ("app transfer-encoding on 1.0", 200, GET10, &[("transfer-encoding", S("chunked"))], Some(10), true,
            Err("transfer-encoding in a response to HTTP/1.0")),
        ("app transfer-encoding on a 1.0 HEAD", 200, HEAD10, &[("transfer-encoding", S("chunked"))], None, true,
            Err("transfer-encoding in a response to HTTP/1.0")),
        ("HEAD with the app's transfer-encoding gets no length", 200, HEAD11, &[("transfer-encoding", S("chunked"))], Some(10), true,
            Ok(("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n", NoBody, true))),
        ("both length and transfer-encoding", 200, GET11, &[("content-length", S("5")), ("transfer-encoding", S("chunked"))], Some(5), true,
            Err("both content-length and transfer-encoding")),
        ("both, transfer-encoding first, streamed", 200, GET11, &[("transfer-encoding", S("chunked")), ("content-length", S("5"))], None, true,
            Err("both content-length and transfer-encoding")),
        ("both on HEAD", 200, HEAD11, &[("content-length", S("5")), ("transfer-encoding", S("chunked"))], None, true,
            Err("both content-length and transfer-encoding")),
        // Statuses and requests without a body.
        ("204 drops the app's framing fields", 204, GET11, &[("content-length", S("0")), ("transfer-encoding", S("chunked"))], Some(0), true,
            Ok(("HTTP/1.1 204 No Content\r\n\r\n", NoBody, true))),
        ("204 still checks the length", 204, GET11, &[("content-length", S("zero"))], None, true,
            Err("invalid content-length \"zero\"")),
        ("304 keeps the app's length line", 304, GET11, &[("content-length", S("10")), ("etag", S("\"x\""))], None, true,
            Ok(("HTTP/1.1 304 Not Modified\r\ncontent-length: 10\r\netag: \"x\"\r\n\r\n", NoBody, true))),
        ("304 adds no length", 304, GET11, &[], Some(0), true,
            Ok(("HTTP/1.1 304 Not Modified\r\n\r\n", NoBody, true))),
        ("304 length need not match", 304, GET11, &[("content-length", S("10"))], Some(0), true,
            Ok(("HTTP/1.1 304 Not Modified\r\ncontent-length: 10\r\n\r\n", NoBody, true))),
        ("1xx drops framing fields", 101, GET11, &[("content-length", S("3")), ("upgrade", S("x"))], None, false,
            Ok(("HTTP/1.1 101 Switching Protocols\r\nupgrade: x\r\nconnection: close\r\n\r\n", NoBody, false))),
        ("100 is not a final status", 100, GET11, &[], Some(0), true, Err("interim status 100 as the final response")),
        ("102 is not a final status", 102, GET11, &[], None, true, Err("interim status 102 as the final response")),
        ("103 is not a final status", 103, GET11, &[("link", S("</a>; rel=preload"))], Some(3), true, Err("interim status 103 as the final response")),
        ("101 never keeps the connection for HTTP", 101, GET11, &[], None, true,
            Ok(("HTTP/1.1 101 Switching Protocols\r\nconnection: close\r\n\r\n", NoBody, false))),
        ("204 with a body known drops it", 204, GET11, &[], Some(5), true,
            Ok(("HTTP/1.1 204 No Content\r\n\r\n", NoBody, true))),
        ("304 with a body known drops it", 304, GET11, &[], Some(5), true,
            Ok(("HTTP/1.1 304 Not Modified\r\n\r\n", NoBody, true))),
        ("HEAD gets the body's size", 200, HEAD11, &[], Some(5), true,
            Ok(("HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n", NoBody, true))),
        ("HEAD with a streamed body gets no length", 200, HEAD11, &[], None, true,
            Ok(("HTTP/1.1 200 OK\r\n\r\n", NoBody, true))),
        ("HEAD keeps the app's length", 200, HEAD11, &[("content-length", S("42"))], None, true,
            Ok(("HTTP/1.1 200 OK\r\ncontent-length: 42\r\n\r\n", NoBody, true))),
        ("HEAD length need not match", 200, HEAD11, &[("content-length", S("42"))], Some(0), true,
            Ok(("HTTP/1.1 200 OK\r\ncontent-length: 42\r\n\r\n", NoBody, true))),
        ("HEAD on 1.0 with keep-alive", 404, HEAD10, &[], Some(9), true,
            Ok(("HTTP/1.0 404 Not Found\r\ncontent-length: 9\r\nconnection: keep-alive\r\n\r\n", NoBody, true))),
        ("HEAD 204", 204, HEAD11, &[], Some(3), true,
            Ok(("HTTP/1.1 204 No Content\r\n\r\n", NoBody, true))),
        // The connection field is the server's.
        ("app's connection: close", 200, GET11, &[("Connection", S("close"))], Some(0), true,
            Ok(("HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n", Length(0), false))),
        ("close among options", 200, GET11, &[("connection", L(&["keep-alive,  Close "]))], Some(0), true,
            Ok(("HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n", Length(0), false))),
        ("app's keep-alive is not passed on", 200, GET11, &[("connection", S("keep-alive"))], Some(0), true,
            Ok(("HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n", Length(0), true))),
        // Values: Rack 2's joined lines, Rack 3's lists.
        ("Rack 2 lines joined by newlines", 200, GET11, &[("set-cookie", S("a=1\nb=2"))], Some(0), true,
            Ok(("HTTP/1.1 200 OK\r\nset-cookie: a=1\r\nset-cookie: b=2\r\ncontent-length: 0\r\n\r\n", Length(0), true))),
        ("Rack 3 list", 200, GET11, &[("set-cookie", L(&["a=1", "b=2"]))], Some(0), true,
            Ok(("HTTP/1.1 200 OK\r\nset-cookie: a=1\r\nset-cookie: b=2\r\ncontent-length: 0\r\n\r\n", Length(0), true))),
        ("empty list sends nothing", 200, GET11, &[("x-empty", L(&[]))], Some(0), true,
            Ok(("HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n", Length(0), true))),
        ("empty value", 200, GET11, &[("x-empty", S(""))], Some(0), true,
            Ok(("HTTP/1.1 200 OK\r\nx-empty: \r\ncontent-length: 0\r\n\r\n", Length(0), true))),
        ("obs-text and tabs are values", 200, GET11, &[("x-v", S("caf\u{e9}\tok"))], Some(0), true,
            Ok(("HTTP/1.1 200 OK\r\nx-v: caf\u{e9}\tok\r\ncontent-length: 0\r\n\r\n", Length(0), true))),
        ("reserved keys are not sent, values unread", 200, GET11, &[("rack.hijack", S("x\r\ny")), ("Status", S("\0")), ("x-a", S("1"))], Some(0), true,
            Ok(("HTTP/1.1 200 OK\r\nx-a: 1\r\ncontent-length: 0\r\n\r\n", Length(0), true))),
        // Refused fields.
        ("name with a space", 200, GET11, &[("bad name", S("x"))], None, true, Err("invalid header name \"bad name\"")),
        ("name with a colon", 200, GET11, &[("a:b", S("x"))], None, true, Err("invalid header name \"a:b\"")),
        ("empty name", 200, GET11, &[("", S("x"))], None, true, Err("invalid header name \"\"")),
        ("name with CRLF", 200, GET11, &[("a\r\nb", S("x"))], None, true, Err("invalid header name \"a\\r\\nb\"")),
        ("value with CR LF", 200, GET11, &[("x", S("a\r\nb"))], None, true, Err("invalid value for header \"x\"")),
        ("value with a bare CR", 200, GET11, &[("x", S("a\rb"))], None, true, Err("invalid value for header \"x\"")),
        ("value with NUL", 200, GET11, &[("x", S("a\0b"))], None, true, Err("invalid value for header \"x\"")),
        ("value with DEL", 200, GET11, &[("x", S("a\x7fb"))], None, true, Err("invalid value for header \"x\"")),
        ("LF inside a list value", 200, GET11, &[("x", L(&["ok", "a\nb"]))], None, true, Err("invalid value for header \"x\"")),
        ("connection value checked too", 200, GET11, &[("connection", S("close\0"))], None, true, Err("invalid value for header \"connection\"")),
        ("length not a number", 200, GET11, &[("content-length", S("12abc"))], None, true, Err("invalid content-length \"12abc\"")),
        ("negative length", 200, GET11, &[("content-length", S("-1"))], None, true, Err("invalid content-length \"-1\"")),
        ("signed length", 200, GET11, &[("content-length", S("+1"))], None, true, Err("invalid content-length \"+1\"")),
        ("length after a non-ASCII space", 200, GET11, &[("content-length", S("\u{a0}1"))], Some(1), true, Err("invalid content-length \"\\u{a0}1\"")),
        ("length with a tab", 200, GET11, &[("content-length", S("\t1"))], Some(1), true,
            Ok(("HTTP/1.1 200 OK\r\ncontent-length: \t1\r\n\r\n", Length(1), true))),
        ("two lengths in one String", 200, GET11, &[("content-length", S("1\n1"))], None, true, Err("invalid content-length \"1\"")),
        ("two lengths in a list", 200, GET11, &[("content-length", L(&["1", "1"]))], None, true, Err("invalid content-length \"1\"")),
        ("no length in a list", 200, GET11, &[("content-length", L(&[]))], None, true, Err("invalid content-length \"\"")),
        ("length too large", 200, GET11, &[("content-length", S("18446744073709551616"))], None, true, Err("invalid content-length \"18446744073709551616\"")),
        ("largest length", 200, GET11, &[("content-length", S("18446744073709551615"))], None, true,
            Ok(("HTTP/1.1 200 OK\r\ncontent-length: 18446744073709551615\r\n\r\n", Length(u64::MAX), true))),
        ("unknown status", 299, GET11, &[], Some(0), true,
            Ok(("HTTP/1.1 299 Unknown\r\ncontent-length: 0\r\n\r\n", Length(0), true))),
    ];
    for r in rows {
        let (case, .., expect) = *r;
        let want = expect
            .map(|(bytes, framing, keep)| (bytes.to_string(), framing, keep))
            .map_err(str::to_string);
        assert_eq!(run(r), want, "{case}");
    }
}

#[test]
fn names_are_classified_before_values() {
    for (name, want) in [
        ("content-type", Ok(FieldName::Sent)),
        ("rack.hijack", Ok(FieldName::Reserved)),
        ("STATUS", Ok(FieldName::Reserved)),
        ("Rack.x", Ok(FieldName::Sent)),
        ("x y", Err("invalid header name \"x y\"".to_string())),
    ] {
        let got = classify_field_name(name.as_bytes()).map_err(|e| e.to_string());
        assert_eq!(got, want, "{name}");
    }
}

#[test]
fn closing_responses() {
    let plain = head_of(500, &[("content-type", S("text/plain"))]).unwrap();
    let given = head_of(503, &[("content-length", S("2")), ("x", S("y"))]).unwrap();
    let no_content = head_of(204, &[]).unwrap();
    let encoded = head_of(500, &[("transfer-encoding", S("chunked"))]).unwrap();
    #[rustfmt::skip]
    let cases = [
        ("500 with its length", &plain, GET11, "oops\n",
            "HTTP/1.1 500 Internal Server Error\r\ncontent-type: text/plain\r\ncontent-length: 5\r\nconnection: close\r\n\r\noops\n"),
        ("HEAD: length, no body", &plain, HEAD11, "oops\n",
            "HTTP/1.1 500 Internal Server Error\r\ncontent-type: text/plain\r\ncontent-length: 5\r\nconnection: close\r\n\r\n"),
        ("1.0", &plain, GET10, "",
            "HTTP/1.0 500 Internal Server Error\r\ncontent-type: text/plain\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"),
        ("the app's length is kept", &given, GET11, "hi",
            "HTTP/1.1 503 Service Unavailable\r\ncontent-length: 2\r\nx: y\r\nconnection: close\r\n\r\nhi"),
        ("204: no length, no body", &no_content, GET11, "ignored",
            "HTTP/1.1 204 No Content\r\nconnection: close\r\n\r\n"),
        ("the app's transfer-encoding: no length added", &encoded, GET11, "1\r\nx\r\n0\r\n\r\n",
            "HTTP/1.1 500 Internal Server Error\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n1\r\nx\r\n0\r\n\r\n"),
    ];
    for (case, head, to, body, want) in cases {
        let got = String::from_utf8(head.closing_response(to, body.as_bytes())).unwrap();
        assert_eq!(got, want, "{case}");
    }
}

#[test]
fn early_hints_bytes() {
    let hints = head_of(
        103,
        &[
            (
                "link",
                L(&["</a.css>; rel=preload", "</b.js>; rel=preload"]),
            ),
            ("content-length", S("0")),
            ("connection", S("close")),
        ],
    )
    .unwrap();
    assert_eq!(
        String::from_utf8(early_hints(Version::Http11, &hints).unwrap()).unwrap(),
        "HTTP/1.1 103 Early Hints\r\nlink: </a.css>; rel=preload\r\nlink: </b.js>; rel=preload\r\n\r\n"
    );
    assert_eq!(early_hints(Version::Http10, &hints), None);
    let empty = ResponseHead::new(103);
    assert_eq!(
        early_hints(Version::Http11, &empty).unwrap(),
        b"HTTP/1.1 103 Early Hints\r\n\r\n"
    );
}
