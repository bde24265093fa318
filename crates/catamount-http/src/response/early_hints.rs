//! The bytes of a `103 Early Hints` interim response (RFC 8297), sent before the final one.

use super::{write_status_line, ResponseHead};
use crate::request::Version;

/// The 103 response carrying `head`'s lines (gathered with status 103, so no framing fields),
/// or None on HTTP/1.0, which has no interim responses: a 103 would be taken for the answer.
pub fn early_hints(version: Version, head: &ResponseHead) -> Option<Vec<u8>> {
    if version != Version::Http11 {
        return None;
    }
    let mut out = Vec::with_capacity(32 + head.lines().len());
    write_status_line(&mut out, version, 103);
    out.extend_from_slice(head.lines());
    out.extend_from_slice(b"\r\n");
    Some(out)
}
