//! The control token: checking a request's query for it without leaking how much of it matched,
//! and making a new one from the kernel's random source.

use std::io::Read;

/// Whether the query, split on `&` or `;`, has a `token=<token>` part. Every part is compared in
/// full whatever the earlier ones gave, and each comparison takes time independent of where the
/// bytes differ (only lengths may show).
pub fn query_has_token(query: &[u8], token: &[u8]) -> bool {
    let mut found = false;
    for part in query.split(|b| *b == b'&' || *b == b';') {
        if let Some(value) = part.strip_prefix(b"token=") {
            found |= constant_time_eq(value, token);
        }
    }
    found
}

/// Compares two byte strings; the time depends on their lengths only.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    // Through black_box so the compiler cannot turn the fold back into an early exit.
    std::hint::black_box(diff) == 0
}

/// `n` random bytes from /dev/urandom.
pub fn random_bytes(n: usize) -> std::io::Result<Vec<u8>> {
    let mut out = vec![0u8; n];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut out)?;
    Ok(out)
}

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A new token: 32 lowercase hex characters (128 random bits).
pub fn generate_token() -> std::io::Result<String> {
    Ok(hex(&random_bytes(16)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_query_is_split_on_ampersand_and_semicolon() {
        assert!(query_has_token(b"token=abc", b"abc"));
        assert!(query_has_token(b"a=1&token=abc", b"abc"));
        assert!(query_has_token(b"a=1;token=abc;b=2", b"abc"));
        assert!(query_has_token(b"token=x&token=abc", b"abc"));
        assert!(!query_has_token(b"", b"abc"));
        assert!(!query_has_token(b"token=ab", b"abc"));
        assert!(!query_has_token(b"token=abcd", b"abc"));
        assert!(!query_has_token(b"token=ABC", b"abc"));
        assert!(!query_has_token(b"xtoken=abc", b"abc"));
        assert!(!query_has_token(b"token =abc", b"abc"));
        assert!(!query_has_token(b"token=abc&;", b"abd"));
    }

    #[test]
    fn constant_time_eq_is_equality() {
        assert!(constant_time_eq(b"", b""));
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }

    #[test]
    fn tokens_are_32_lowercase_hex_and_differ() {
        let a = generate_token().unwrap_or_else(|e| panic!("{e}"));
        let b = generate_token().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(a.len(), 32);
        assert!(a
            .bytes()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c)));
        assert_ne!(a, b);
    }
}
