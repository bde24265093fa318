//! Catamount's HTTP/1.1 codec: strict request parsing with limits, chunked-body decoding, and
//! helpers for encoding responses. No I/O and no Ruby: the reactor feeds it bytes, and it can be
//! tested and fuzzed with plain `cargo test`.
//!
//! Strict means RFC 9110/9112 where Puma is lax: bare LF, bare CR, NUL, obs-fold, a missing
//! Host on HTTP/1.1, Content-Length with Transfer-Encoding, and duplicate Content-Length are all
//! refused, with the status that says why (400, 413, 414, 431, 501, 505).

pub mod chunked;
pub mod error;
pub mod limits;
pub mod request;
pub mod response;

pub use chunked::{ChunkProgress, ChunkedDecoder};
pub use error::{ErrorKind, ParseError};
pub use limits::{Limits, MethodPolicy};
pub use request::{parse_head, BodyFraming, HeadParser, RequestHead, Version};
pub use response::{
    error_response, is_token, is_valid_field_value, reason_phrase, status_has_body, write_chunk,
    write_status_line, LAST_CHUNK,
};
