//! The app's response header fields turned into header lines, with the rules the server applies
//! to them: which names are refused (not a token) or silently kept back (`rack.*`, `status`),
//! which values are refused (CR, LF, NUL and other control characters), Rack 2's several values
//! in one String joined by "\n", and the fields the server owns: `content-length` and
//! `transfer-encoding` are checked and remembered for framing (and dropped where no body may
//! follow), `connection` is never passed on (the keep-alive decision writes it).

use std::fmt;

use super::{is_token, is_valid_field_value, status_has_body};

/// The header fields of one response, as lines ready to send, and what they said about framing
/// and the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseHead {
    status: u16,
    /// `name: value\r\n` for every field passed on, in the app's order.
    lines: Vec<u8>,
    content_length: Option<u64>,
    transfer_encoding: bool,
    says_close: bool,
}

/// One header field's values as the app gave them.
#[derive(Debug, Clone, Copy)]
pub enum FieldValues<'a> {
    /// Rack 2: one String, several values separated by "\n", one header line each.
    Joined(&'a [u8]),
    /// Rack 3: an Array of Strings, one header line each.
    List(&'a [Vec<u8>]),
}

/// What a header field name means to the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldName {
    /// A field to check and send.
    Sent,
    /// A key Rack reserves for the server (`rack.*`, e.g. `rack.hijack`) or a `status` key:
    /// never sent, and its value is not looked at.
    Reserved,
}

/// A header field the app got wrong: the response is refused (a 500), never sent corrupt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FieldError {
    /// The name is not an RFC 9110 token.
    InvalidName(Vec<u8>),
    /// A value holds a byte a field value may not (CR, LF, NUL, other controls, DEL).
    InvalidValue(Vec<u8>),
    /// `content-length` is not one plain decimal number (its text, trimmed).
    InvalidContentLength(String),
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FieldError::InvalidName(name) => {
                write!(f, "invalid header name {:?}", String::from_utf8_lossy(name))
            }
            FieldError::InvalidValue(name) => write!(
                f,
                "invalid value for header {:?}",
                String::from_utf8_lossy(name)
            ),
            FieldError::InvalidContentLength(text) => write!(f, "invalid content-length {text:?}"),
        }
    }
}

impl std::error::Error for FieldError {}

/// Whether the server sends a field of this name: refused when it is not a token, kept back
/// when Rack reserves it. Check it before reading the values, so a bad name is reported as such
/// whatever its value is.
pub fn classify_field_name(name: &[u8]) -> Result<FieldName, FieldError> {
    if name.starts_with(b"rack.") || name.eq_ignore_ascii_case(b"status") {
        return Ok(FieldName::Reserved);
    }
    if !is_token(name) {
        return Err(FieldError::InvalidName(name.to_vec()));
    }
    Ok(FieldName::Sent)
}

impl<'a> FieldValues<'a> {
    fn iter(self) -> Values<'a> {
        match self {
            FieldValues::Joined(text) => Values::Joined(text.split(is_newline as fn(&u8) -> bool)),
            FieldValues::List(list) => Values::List(list.iter()),
        }
    }
}

fn is_newline(c: &u8) -> bool {
    *c == b'\n'
}

/// The values of a [`FieldValues`], one header line each (no allocation).
enum Values<'a> {
    Joined(std::slice::Split<'a, u8, fn(&u8) -> bool>),
    List(std::slice::Iter<'a, Vec<u8>>),
}

impl<'a> Iterator for Values<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        match self {
            Values::Joined(split) => split.next(),
            Values::List(list) => list.next().map(Vec::as_slice),
        }
    }
}

impl ResponseHead {
    /// An empty head for `status` (the status decides which fields matter: no framing fields
    /// for 1xx and 204).
    pub fn new(status: u16) -> ResponseHead {
        ResponseHead {
            status,
            lines: Vec::with_capacity(256),
            content_length: None,
            transfer_encoding: false,
            says_close: false,
        }
    }

    pub fn status(&self) -> u16 {
        self.status
    }

    /// The header lines passed on, each ending in CRLF.
    pub fn lines(&self) -> &[u8] {
        &self.lines
    }

    /// The app's `content-length` (None when absent, or dropped for 1xx/204).
    pub fn content_length(&self) -> Option<u64> {
        self.content_length
    }

    /// Whether the app framed the body itself with `transfer-encoding` (never for 1xx/204).
    pub fn has_transfer_encoding(&self) -> bool {
        self.transfer_encoding
    }

    /// Whether the app's `connection` field asked for the connection to close.
    pub fn says_close(&self) -> bool {
        self.says_close
    }

    /// Adds one field: [`classify_field_name`], then [`add_values`](Self::add_values).
    pub fn add(&mut self, name: &[u8], values: FieldValues<'_>) -> Result<(), FieldError> {
        match classify_field_name(name)? {
            FieldName::Reserved => Ok(()),
            FieldName::Sent => self.add_values(name, values),
        }
    }

    /// Adds the values of a field whose name [`classify_field_name`] found [`FieldName::Sent`]:
    /// every value is checked first, then the server's own fields are taken in, the others
    /// become one line per value.
    pub fn add_values(&mut self, name: &[u8], values: FieldValues<'_>) -> Result<(), FieldError> {
        if !values.iter().all(is_valid_field_value) {
            return Err(FieldError::InvalidValue(name.to_vec()));
        }
        let no_framing = self.status == 204 || self.status < 200;
        if name.eq_ignore_ascii_case(b"content-length") {
            let len = parse_content_length(values)?;
            if no_framing {
                return Ok(());
            }
            self.content_length = Some(len);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            if no_framing {
                return Ok(());
            }
            self.transfer_encoding = true;
        } else if name.eq_ignore_ascii_case(b"connection") {
            self.says_close = values.iter().any(has_close_token);
            // The keep-alive decision writes the connection field itself.
            return Ok(());
        }
        for value in values.iter() {
            push_field(&mut self.lines, name, value);
        }
        Ok(())
    }
}

/// The single value of a `content-length` field as a number: one value, decimal digits only
/// once surrounding spaces and tabs are trimmed. Only ASCII whitespace: a value sent as given
/// must read as the same number to the client (a Unicode space such as U+00A0 does not).
fn parse_content_length(values: FieldValues<'_>) -> Result<u64, FieldError> {
    let mut all = values.iter();
    let first = all.next();
    let single = all.next().is_none();
    let text = first
        .map(|v| String::from_utf8_lossy(v.trim_ascii()).into_owned())
        .unwrap_or_default();
    text.parse::<u64>()
        .ok()
        .filter(|_| single && text.bytes().all(|b| b.is_ascii_digit()))
        .ok_or(FieldError::InvalidContentLength(text))
}

/// Whether a `connection` value lists the `close` option.
fn has_close_token(value: &[u8]) -> bool {
    value
        .split(|c| *c == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"close"))
}

/// Appends `name: value\r\n`.
pub(super) fn push_field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Whether a response with this status to this request carries no body.
pub(super) fn bodiless(status: u16, head_request: bool) -> bool {
    head_request || !status_has_body(status)
}
