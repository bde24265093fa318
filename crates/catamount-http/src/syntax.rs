//! Character classes and small grammar pieces from RFC 9110 §5.6 and RFC 3986, shared by the
//! request parser, the chunked decoder and the response helpers.

/// `tchar`: the characters of a token (method, header name, coding, extension name).
pub(crate) fn is_tchar(b: u8) -> bool {
    matches!(b,
        b'0'..=b'9' | b'a'..=b'z' | b'A'..=b'Z'
        | b'!' | b'#' | b'$' | b'%' | b'&' | b'\'' | b'*' | b'+' | b'-' | b'.' | b'^' | b'_'
        | b'`' | b'|' | b'~')
}

/// A non-empty token.
pub(crate) fn is_token(v: &[u8]) -> bool {
    !v.is_empty() && v.iter().all(|&b| is_tchar(b))
}

/// `OWS`/`BWS` bytes: SP and HTAB.
pub(crate) fn is_ows(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

/// What a field value may contain: HTAB, SP, VCHAR and obs-text (0x80–0xFF).
pub(crate) fn is_field_byte(b: u8) -> bool {
    b == b'\t' || (b >= 0x20 && b != 0x7f)
}

/// Control characters that may appear nowhere in a head: CTL except HTAB (CR and LF are
/// line endings and are checked separately).
pub(crate) fn is_forbidden_control(b: u8) -> bool {
    (b < 0x20 && b != b'\t') || b == 0x7f
}

/// `v` without leading and trailing SP/HTAB.
pub(crate) fn trim_ows(v: &[u8]) -> &[u8] {
    let start = v.iter().position(|&b| !is_ows(b)).unwrap_or(v.len());
    let end = v.iter().rposition(|&b| !is_ows(b)).map_or(start, |e| e + 1);
    v.get(start..end).unwrap_or_default()
}

/// The trimmed elements of a comma-separated list (`#element` in RFC 9110 §5.6.1).
pub(crate) fn list_elements(v: &[u8]) -> impl Iterator<Item = &[u8]> {
    v.split(|&b| b == b',').map(trim_ows)
}

/// `host [ ":" port ]` as in a Host header or an absolute-form authority: a bracketed IP
/// literal or a reg-name/IPv4 (unreserved, pct-encoded, sub-delims), then optional digits.
/// Userinfo (`user@`) is refused: RFC 9110 §4.2.4 forbids sending it.
pub(crate) fn is_host_and_port(v: &[u8]) -> bool {
    split_host_port(v).is_some()
}

/// Like [`is_host_and_port`] but the port must be present, as CONNECT's authority-form needs.
pub(crate) fn is_host_and_required_port(v: &[u8]) -> bool {
    split_host_port(v).is_some_and(|(_, port)| port.is_some_and(|p| !p.is_empty()))
}

/// Splits a valid `host[:port]` into its parts; `None` if it is not valid.
fn split_host_port(v: &[u8]) -> Option<(&[u8], Option<&[u8]>)> {
    let (host, rest) = if v.first() == Some(&b'[') {
        let close = v.iter().position(|&b| b == b']')?;
        let (literal, rest) = v.split_at(close + 1);
        let inner = literal.get(1..close)?;
        if inner.is_empty() || !inner.iter().all(|&b| is_reg_name_byte(b) || b == b':') {
            return None;
        }
        (literal, rest)
    } else {
        let colon = v.iter().position(|&b| b == b':').unwrap_or(v.len());
        let (name, rest) = v.split_at(colon);
        if name.is_empty() || !name.iter().all(|&b| is_reg_name_byte(b)) {
            return None;
        }
        (name, rest)
    };
    match rest.split_first() {
        None => Some((host, None)),
        Some((b':', port)) if port.iter().all(u8::is_ascii_digit) => Some((host, Some(port))),
        Some(_) => None,
    }
}

/// RFC 3986 `unreserved / pct-encoded / sub-delims` (the `%` is accepted without checking
/// the two hex digits that follow; the app sees the value as sent).
fn is_reg_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'-' | b'.'
                | b'_'
                | b'~'
                | b'%'
                | b'!'
                | b'$'
                | b'&'
                | b'\''
                | b'('
                | b')'
                | b'*'
                | b'+'
                | b','
                | b';'
                | b'='
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens() {
        assert!(is_token(b"Content-Type"));
        assert!(is_token(b"x_y.z!#$%&'*+-^`|~09"));
        for bad in [
            &b""[..],
            b"a b",
            b"a:b",
            b"a\"",
            b"(x)",
            b"a/b",
            b"\xc3\xa9",
            b"a\t",
        ] {
            assert!(!is_token(bad), "{bad:?}");
        }
    }

    #[test]
    fn field_bytes() {
        assert!(is_field_byte(b'\t') && is_field_byte(b' ') && is_field_byte(b'~'));
        assert!(is_field_byte(0x80) && is_field_byte(0xff));
        for b in [0u8, b'\r', b'\n', 0x1f, 0x7f] {
            assert!(!is_field_byte(b), "{b}");
        }
        assert!(is_forbidden_control(0) && is_forbidden_control(0x7f));
        assert!(!is_forbidden_control(b'\t') && !is_forbidden_control(b' '));
    }

    #[test]
    fn trimming_and_lists() {
        assert_eq!(trim_ows(b" \t a b \t"), b"a b");
        assert_eq!(trim_ows(b"   "), b"");
        assert_eq!(trim_ows(b""), b"");
        let items: Vec<&[u8]> = list_elements(b"keep-alive ,\tUpgrade,,").collect();
        assert_eq!(items, [&b"keep-alive"[..], b"Upgrade", b"", b""]);
    }

    #[test]
    fn hosts() {
        for ok in [
            &b"example.com"[..],
            b"example.com:8080",
            b"example.com:",
            b"127.0.0.1",
            b"[::1]",
            b"[::1]:3000",
            b"my_host",
            b"xn--bcher-kva.example",
        ] {
            assert!(is_host_and_port(ok), "{ok:?}");
        }
        for bad in [
            &b""[..],
            b":80",
            b"user@host",
            b"host:port",
            b"a b",
            b"a/b",
            b"[::1",
            b"[]",
            b"[::1]x",
            b"host:80:90",
            b"h\xc3\xa9",
        ] {
            assert!(!is_host_and_port(bad), "{bad:?}");
        }
        assert!(is_host_and_required_port(b"example.com:443"));
        assert!(!is_host_and_required_port(b"example.com"));
        assert!(!is_host_and_required_port(b"example.com:"));
    }
}
