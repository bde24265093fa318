//! The JSON access log line (`log_requests :json`): one object per request, built from plain
//! Rust values (no Ruby objects), with its escaping, its time format and the request id's rules
//! (which client ids are kept, how one is made otherwise).

use std::collections::hash_map::RandomState;
use std::fmt::Write as _;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The longest client `X-Request-Id` kept (Rails keeps 255 characters of its own cleaned one).
pub const MAX_REQUEST_ID: usize = 255;

/// What one line says about one request.
#[derive(Debug, Clone)]
pub struct Entry<'a> {
    /// When the response was done.
    pub at: SystemTime,
    pub method: &'a str,
    pub path: &'a [u8],
    /// The query without its `?`; None when the target had none.
    pub query: Option<&'a [u8]>,
    /// `HTTP/1.1` or `HTTP/1.0`.
    pub http: &'a str,
    /// None for a fully hijacked connection (the app wrote whatever it wrote).
    pub status: Option<u16>,
    /// Body bytes sent; None when not known (hijacked, or the response broke off).
    pub bytes: Option<u64>,
    /// From the request read in full to the response done (`request_duration`'s clock).
    pub duration: Duration,
    /// How long it waited, read, for a thread (`queue_time`'s clock).
    pub queue: Duration,
    /// As `REMOTE_ADDR` gives it.
    pub remote_addr: &'a [u8],
    pub request_id: &'a [u8],
    /// The listener's port (None for UNIX sockets).
    pub port: Option<u16>,
}

/// The line, newline included.
pub fn json_line(e: &Entry) -> String {
    let mut out = String::with_capacity(256 + e.path.len() + e.query.map_or(0, <[u8]>::len));
    out.push_str("{\"time\":\"");
    iso_time(&mut out, e.at);
    out.push_str("\",\"method\":");
    string(&mut out, e.method.as_bytes());
    out.push_str(",\"path\":");
    string(&mut out, e.path);
    out.push_str(",\"query\":");
    match e.query {
        Some(q) => string(&mut out, q),
        None => out.push_str("null"),
    }
    out.push_str(",\"status\":");
    number(&mut out, e.status.map(u64::from));
    out.push_str(",\"bytes\":");
    number(&mut out, e.bytes);
    let _ = write!(
        out,
        ",\"duration\":{:.6},\"queue\":{:.6},\"remote_addr\":",
        e.duration.as_secs_f64(),
        e.queue.as_secs_f64()
    );
    string(&mut out, e.remote_addr);
    out.push_str(",\"request_id\":");
    string(&mut out, e.request_id);
    out.push_str(",\"http\":");
    string(&mut out, e.http.as_bytes());
    out.push_str(",\"port\":");
    number(&mut out, e.port.map(u64::from));
    let _ = writeln!(out, ",\"pid\":{}}}", std::process::id());
    out
}

fn number(out: &mut String, n: Option<u64>) {
    match n {
        Some(n) => {
            let _ = write!(out, "{n}");
        }
        None => out.push_str("null"),
    }
}

/// A JSON string: quotes, backslashes and control characters escaped; bytes that are not UTF-8
/// become U+FFFD (as the plain line shows them), so every line parses.
fn string(out: &mut String, bytes: &[u8]) {
    out.push('"');
    for c in String::from_utf8_lossy(bytes).chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            // The rest of C0, and DEL (valid JSON raw, but a terminal would act on it).
            c if c < ' ' || c == '\u{7f}' => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// `2026-12-06T03:01:05.123Z`
fn iso_time(out: &mut String, at: SystemTime) {
    let since = at.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = crate::log::civil_from_days(days as i64);
    let _ = write!(
        out,
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60,
        since.subsec_millis()
    );
}

/// A client's `X-Request-Id` is kept when it is 1 to [`MAX_REQUEST_ID`] bytes of printable
/// ASCII without spaces (what proxies and Rails make: UUIDs, hex, base64); anything else is
/// replaced, so a log line never carries a client's control bytes or a huge value.
pub fn sane_request_id(id: &[u8]) -> bool {
    !id.is_empty() && id.len() <= MAX_REQUEST_ID && id.iter().all(|b| b.is_ascii_graphic())
}

/// A fresh request id in the UUID v4 text form (what Rails makes): random per process (the
/// standard library's hasher keys are seeded from the OS), a counter keeping ids distinct.
/// Not a secret: ids only correlate log lines.
pub fn new_request_id() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    thread_local! {
        static KEYS: RandomState = RandomState::new();
    }
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let (a, b) = KEYS.with(|k| (k.hash_one((n, 0u8)), k.hash_one((n, 1u8))));
    let v = (u128::from(a) << 64) | u128::from(b);
    // The version (4) in the 13th hex digit, the RFC 4122 variant in the 17th.
    let v = (v & !(0xf << 76)) | (0x4 << 76);
    let v = (v & !(0x3 << 62)) | (0x2 << 62);
    format!(
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        v >> 96,
        (v >> 80) & 0xffff,
        (v >> 64) & 0xffff,
        (v >> 48) & 0xffff,
        v & 0xffff_ffff_ffff
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry<'a>(path: &'a [u8], query: Option<&'a [u8]>) -> Entry<'a> {
        Entry {
            at: UNIX_EPOCH + Duration::from_millis(1_796_526_065_123),
            method: "GET",
            path,
            query,
            http: "HTTP/1.1",
            status: Some(200),
            bytes: Some(12),
            duration: Duration::from_micros(1_500),
            queue: Duration::from_micros(20),
            remote_addr: b"127.0.0.1",
            request_id: b"abc-123",
            port: Some(9292),
        }
    }

    #[test]
    fn a_line_has_every_field_in_order() {
        let line = json_line(&entry(b"/a", Some(b"x=1")));
        let pid = std::process::id();
        assert_eq!(
            line,
            format!(
                "{{\"time\":\"2026-12-06T03:01:05.123Z\",\"method\":\"GET\",\"path\":\"/a\",\
                 \"query\":\"x=1\",\"status\":200,\"bytes\":12,\"duration\":0.001500,\
                 \"queue\":0.000020,\"remote_addr\":\"127.0.0.1\",\"request_id\":\"abc-123\",\
                 \"http\":\"HTTP/1.1\",\"port\":9292,\"pid\":{pid}}}\n"
            )
        );
    }

    #[test]
    fn unknown_values_are_null() {
        let mut e = entry(b"/", None);
        e.status = None;
        e.bytes = None;
        e.port = None;
        let line = json_line(&e);
        assert!(line.contains("\"query\":null,\"status\":null,\"bytes\":null,"));
        assert!(line.contains("\"port\":null,"));
    }

    #[test]
    fn strings_are_escaped() {
        let mut out = String::new();
        string(&mut out, b"a\"b\\c\n\r\t\x01\x1f\x7f/\xc3\xa9");
        assert_eq!(out, "\"a\\\"b\\\\c\\n\\r\\t\\u0001\\u001f\\u007f/\u{e9}\"");
    }

    #[test]
    fn invalid_utf8_becomes_the_replacement_character() {
        let mut out = String::new();
        string(&mut out, b"/\xff\xfe\xc3");
        assert_eq!(out, "\"/\u{fffd}\u{fffd}\u{fffd}\"");
    }

    #[test]
    fn times_are_utc_with_milliseconds() {
        let mut out = String::new();
        iso_time(
            &mut out,
            UNIX_EPOCH + Duration::from_millis(951_782_400_007),
        );
        assert_eq!(out, "2000-02-29T00:00:00.007Z");
    }

    #[test]
    fn request_ids_kept_only_when_short_and_printable() {
        assert!(sane_request_id(b"0b9c2f6e-6f4c-4a4e-9d0a-1c2b3d4e5f60"));
        assert!(sane_request_id(&[b'a'; MAX_REQUEST_ID]));
        assert!(!sane_request_id(&[b'a'; MAX_REQUEST_ID + 1]));
        assert!(!sane_request_id(b""));
        assert!(!sane_request_id(b"a b"));
        assert!(!sane_request_id(b"a\x01"));
        assert!(!sane_request_id("é".as_bytes()));
    }

    #[test]
    fn new_request_ids_look_like_uuids_and_differ() {
        let a = new_request_id();
        let b = new_request_id();
        assert_ne!(a, b);
        assert_eq!(a.len(), 36);
        assert!(sane_request_id(a.as_bytes()));
        let dashes: Vec<usize> = a.match_indices('-').map(|(i, _)| i).collect();
        assert_eq!(dashes, [8, 13, 18, 23]);
        assert_eq!(a.as_bytes()[14], b'4');
        assert!(matches!(a.as_bytes()[19], b'8' | b'9' | b'a' | b'b'));
    }
}
