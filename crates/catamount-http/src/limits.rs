//! Size limits and the accepted methods. Defaults are Puma's, so a request Puma accepts is
//! accepted here too.

/// Which request methods are served; others get 501.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MethodPolicy {
    /// Any method token.
    Any,
    /// Only these (upper-case) methods.
    Only(Vec<String>),
}

impl MethodPolicy {
    pub fn allows(&self, method: &str) -> bool {
        match self {
            MethodPolicy::Any => true,
            MethodPolicy::Only(list) => list.iter().any(|m| m == method),
        }
    }
}

/// Limits on a request. Each violation is answered with an error response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Longest header name. Default 256 bytes. Over it: 431.
    pub max_header_name: usize,
    /// Longest header value. Default 80 KiB. Over it: 431.
    pub max_header_value: usize,
    /// Longest request-target (path, query and fragment). Default 12 KiB. Over it: 414.
    pub max_target: usize,
    /// Longest path. Default 8 KiB. Over it: 414.
    pub max_path: usize,
    /// Longest query string. Default 10 KiB. Over it: 414.
    pub max_query: usize,
    /// Longest fragment. Default 1 KiB. Over it: 414.
    pub max_fragment: usize,
    /// Longest head (request line, headers and the blank line that ends them, CRLFs counted),
    /// enforced also while the head is incomplete. Default 112 KiB. Over it: 431.
    pub max_head: usize,
    /// Most header fields. Default 200. Over it: 431.
    pub max_headers: usize,
    /// Longest chunk-size line, extensions included. Default 4 KiB. Over it: 400.
    pub max_chunk_line: usize,
    /// Most chunk-extension and trailer bytes over a whole body. Default 16 KiB. Over it: 400.
    pub max_chunk_extensions: usize,
    /// Largest body, declared or decoded. Default: no limit. Over it: 413.
    pub max_body: Option<u64>,
    /// Accepted methods. Default: GET HEAD POST PUT DELETE OPTIONS TRACE PATCH (Puma 6+).
    pub methods: MethodPolicy,
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
            methods: MethodPolicy::Only(
                [
                    "GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "TRACE", "PATCH",
                ]
                .iter()
                .map(|m| m.to_string())
                .collect(),
            ),
        }
    }
}
