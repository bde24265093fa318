//! Size limits and the accepted methods. Size defaults follow Puma's, so a request Puma
//! accepts is accepted here too; where Puma has no limit (chunk lines, extensions, header
//! count) the default is far above what real clients send.

/// Which request methods are served; a valid method outside the policy gets 501.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MethodPolicy {
    /// Any method token (RFC 9110 `token`, 1 to 32 bytes).
    Any,
    /// Only these methods, compared case-sensitively as RFC 9110 §9.1 requires.
    Only(Vec<String>),
}

/// The methods Puma 6+ serves by default.
const STANDARD_METHODS: [&str; 8] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "TRACE", "PATCH",
];

impl MethodPolicy {
    /// `GET HEAD POST PUT DELETE OPTIONS TRACE PATCH`, the default.
    pub fn standard() -> MethodPolicy {
        MethodPolicy::Only(STANDARD_METHODS.iter().map(|m| m.to_string()).collect())
    }

    /// Whether `method` is served.
    pub fn allows(&self, method: &str) -> bool {
        match self {
            MethodPolicy::Any => true,
            MethodPolicy::Only(list) => list.iter().any(|m| m == method),
        }
    }
}

impl Default for MethodPolicy {
    fn default() -> Self {
        MethodPolicy::standard()
    }
}

/// Limits on a request. Each violation is refused with the status noted (see
/// [`crate::ErrorKind`]); byte counts never include the CRLF that ends a line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Longest header name. Default 256 bytes. Over it: 431.
    pub max_header_name: usize,
    /// Longest header value, not counting whitespace around it. Default 80 KiB (81 920 bytes).
    /// Over it: 431.
    pub max_header_value: usize,
    /// Longest request-target (path, query and fragment with their `?` and `#`, or the whole
    /// absolute-form URI). Default 12 KiB (12 288 bytes). Over it: 414.
    pub max_target: usize,
    /// Longest path. Default 8 KiB (8 192 bytes). Over it: 414.
    pub max_path: usize,
    /// Longest query string, without the `?`. Default 10 KiB (10 240 bytes). Over it: 414.
    pub max_query: usize,
    /// Longest fragment, without the `#`. Default 1 KiB (1 024 bytes). Over it: 414.
    pub max_fragment: usize,
    /// Longest head: request line, header lines and the empty line that ends them, CRLFs
    /// counted (up to two tolerated empty lines before the request line are not). Enforced
    /// while the head is still arriving, so a slow client cannot park more than this.
    /// Default 112 KiB (114 688 bytes). Over it: 431.
    pub max_head: usize,
    /// Most header fields (repeated names count once each). Default 200. Over it: 431.
    pub max_headers: usize,
    /// Longest chunk-size line, extensions included. Default 4 KiB (4 096 bytes). Over it: 400.
    pub max_chunk_line: usize,
    /// Most chunk-extension bytes (everything on a size line after the size) and trailer
    /// bytes over a whole body. Default 16 KiB (16 384 bytes). Over it: 400.
    pub max_chunk_extensions: usize,
    /// Largest body, declared by Content-Length or announced by chunk sizes.
    /// Default `None`: no limit. Over it: 413.
    pub max_body: Option<u64>,
    /// Accepted methods. Default: [`MethodPolicy::standard`]. Others: 501.
    pub methods: MethodPolicy,
    /// Whether an HTTP/1.1 request must name a Host (RFC 9112 §3.2). Default true: without
    /// one, 400. The control server turns it off: health checks written with `printf | nc`
    /// send none, and Puma's control server answers them.
    pub require_host: bool,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_header_name: 256,
            max_header_value: 80 * 1024,
            max_target: 12 * 1024,
            max_path: 8 * 1024,
            max_query: 10 * 1024,
            max_fragment: 1024,
            max_head: 112 * 1024,
            max_headers: 200,
            max_chunk_line: 4096,
            max_chunk_extensions: 16 * 1024,
            max_body: None,
            methods: MethodPolicy::standard(),
            require_host: true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_documentation() {
        let l = Limits::default();
        assert_eq!(l.max_header_name, 256);
        assert_eq!(l.max_header_value, 81_920);
        assert_eq!(l.max_target, 12_288);
        assert_eq!(l.max_path, 8_192);
        assert_eq!(l.max_query, 10_240);
        assert_eq!(l.max_fragment, 1_024);
        assert_eq!(l.max_head, 114_688);
        assert_eq!(l.max_headers, 200);
        assert_eq!(l.max_chunk_line, 4_096);
        assert_eq!(l.max_chunk_extensions, 16_384);
        assert_eq!(l.max_body, None);
        assert_eq!(l.methods, MethodPolicy::standard());
    }

    #[test]
    fn method_policy() {
        let standard = MethodPolicy::default();
        for m in STANDARD_METHODS {
            assert!(standard.allows(m));
        }
        assert!(!standard.allows("get"), "methods are case-sensitive");
        assert!(!standard.allows("CONNECT"));
        assert!(!standard.allows("FOO"));
        assert!(MethodPolicy::Any.allows("FOO"));
        assert!(MethodPolicy::Only(vec!["PURGE".into()]).allows("PURGE"));
        assert!(!MethodPolicy::Only(vec![]).allows("GET"));
    }
}
