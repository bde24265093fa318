//! The JSON access log's Ruby side (`log_requests :json`): the request id the app is given and
//! the line is logged with, and the gathering of one line's facts (the line itself is built in
//! `catamount_server::access_log`, without Ruby objects).

use std::borrow::Cow;
use std::cell::RefCell;
use std::time::SystemTime;

use magnus::{RHash, RString, Ruby};

use catamount_http::Version;
use catamount_server::access_log::{self, Entry};
use catamount_server::Request;

use super::env::Address;
use super::RackSettings;

thread_local! {
    /// This thread's current request's id: a pool thread serves one request at a time, from
    /// [`begin`] to its line.
    static REQUEST_ID: RefCell<String> = const { RefCell::new(String::new()) };
}

/// Before the env is built: the request's id is its `X-Request-Id` when sane, else a new one,
/// returned so that [`give_to_app`] puts it in the env.
pub fn begin(request: &Request) -> Option<String> {
    let client = request
        .head
        .header(b"x-request-id")
        .filter(|id| access_log::sane_request_id(id));
    let generated = client.is_none().then(access_log::new_request_id);
    REQUEST_ID.with(|current| {
        let mut current = current.borrow_mut();
        current.clear();
        match (client, &generated) {
            (Some(id), _) => current.push_str(&String::from_utf8_lossy(id)),
            (None, Some(id)) => current.push_str(id),
            (None, None) => {}
        }
    });
    generated
}

/// A made id replaces a missing or unusable header as `HTTP_X_REQUEST_ID`: Rails'
/// `ActionDispatch::RequestId` takes it from there, so the app's logs and this one agree.
pub fn give_to_app(env: RHash, generated: String) {
    let _ = env.aset("HTTP_X_REQUEST_ID", generated);
}

/// The line of a request answered with `status` (None: hijacked) and `bytes` of body (None:
/// not known).
pub fn log(
    ruby: &Ruby,
    settings: &RackSettings,
    request: &Request,
    status: Option<u16>,
    bytes: Option<u64>,
) {
    let head = &request.head;
    let remote = remote_addr(ruby, settings, request);
    let line = REQUEST_ID.with(|id| {
        access_log::json_line(&Entry {
            at: SystemTime::now(),
            method: head.method(),
            path: head.path(),
            query: head.query(),
            http: match head.version() {
                Version::Http11 => "HTTP/1.1",
                Version::Http10 => "HTTP/1.0",
            },
            status,
            bytes,
            duration: request.read_at.elapsed(),
            queue: request.queue_time(),
            remote_addr: &remote,
            request_id: id.borrow().as_bytes(),
            port: request.local_port,
        })
    });
    super::response::emit_access_line(ruby, settings, line);
}

/// `REMOTE_ADDR` as the env builder makes it, as bytes.
fn remote_addr<'r>(ruby: &Ruby, settings: &RackSettings, request: &'r Request) -> Cow<'r, [u8]> {
    match super::env::remote_address(settings, request) {
        Address::Bytes(bytes) => bytes,
        Address::Fixed(v) => Cow::Owned(
            RString::from_value(ruby.get_inner(v))
                .map(crate::ffi::bytes_of)
                .unwrap_or_default(),
        ),
    }
}
