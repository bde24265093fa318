//! Catamount's HTTP/1.1 codec: a strict request-head parser with limits, a chunked-body
//! decoder, and response encoding: header rules, body framing, keep-alive, the head's bytes.
//!
//! It does no I/O and knows nothing of Ruby: the reactor buffers bytes from a socket and calls
//! [`HeadParser::parse`] and [`ChunkedDecoder::decode`] as they arrive. Both resume where the
//! previous call stopped, so a request that trickles in costs linear time, and both refuse bad
//! input at the first byte that shows it, with the same verdict however the bytes were split.
//!
//! Strict means RFC 9110/9112 where Puma is lax: bare LF, bare CR, NUL and other control
//! characters, obs-fold, a missing or repeated Host on HTTP/1.1, Content-Length together with
//! Transfer-Encoding, repeated Content-Length (even with equal values), and any transfer coding
//! other than a single `chunked` are all refused, with a status that says why (400, 413, 414,
//! 431, 501, 505; see [`ErrorKind`]). Size limits and the served methods are in [`Limits`].
//!
//! What it does not do: percent-decode or normalise paths, case-fold or rename header names
//! (the Rack env builder maps them), decode content codings, handle `Upgrade` or HTTP/2, parse
//! responses, or time anything (slow clients are the reactor's business; this crate only
//! bounds how much they can make it hold).

#![cfg_attr(not(test), warn(clippy::indexing_slicing))]

pub mod chunked;
pub mod error;
pub mod limits;
pub mod names;
pub mod proxy;
pub mod proxy_v2;
pub mod request;
pub mod response;
mod syntax;

pub use chunked::{ChunkProgress, ChunkedDecoder};
pub use error::{ErrorKind, ParseError};
pub use limits::{Limits, MethodPolicy};
pub use proxy::{parse_proxy_v1, ProxyError, ProxyLine, MAX_PROXY_LINE};
pub use proxy_v2::{
    encode_proxy_v2, parse_proxy, parse_proxy_v2, ProxyAddresses, ProxyCommand, ProxyHeader,
    ProxyV2, ProxyVersion, MAX_PROXY_V2,
};
pub use request::{parse_head, BodyFraming, HeadParser, RequestHead, Version};
pub use response::{
    classify_field_name, early_hints, error_response, is_token, is_valid_field_value,
    reason_phrase, status_has_body, write_chunk, write_status_line, Answering, FieldError,
    FieldName, FieldValues, Framing, FramingError, ResponseHead, LAST_CHUNK,
};
