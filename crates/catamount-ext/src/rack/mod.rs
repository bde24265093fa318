//! The Rack bridge: the env a request becomes ([`env`]), and the bytes the app's
//! `[status, headers, body]` becomes ([`response`]), and the connection the app may take over
//! ([`hijack`]; remembered for a stop's drain in [`taken`]).

pub mod access_json;
pub mod env;
pub(crate) mod escape;
pub mod hijack;
pub mod response;
pub mod taken;

/// Method names the bridge calls on every request, interned once: a name given as `&str` is
/// looked up in Ruby's symbol table at each call (about a thousand instructions a request in
/// a profile of hello world).
pub(crate) mod ids {
    use magnus::value::LazyId;

    pub(crate) static CALL: LazyId = LazyId::new("call");
    pub(crate) static CLOSE: LazyId = LazyId::new("close");
    pub(crate) static EACH: LazyId = LazyId::new("each");
    pub(crate) static TO_PATH: LazyId = LazyId::new("to_path");
    pub(crate) static TO_ARY: LazyId = LazyId::new("to_ary");
}

use magnus::value::Opaque;
use magnus::{RHash, Ruby, Value};

/// Per-server facts the bridge needs, fixed at boot.
pub struct RackSettings {
    /// Set `HTTP_VERSION` (Rack older than 3.1 expects it; 3.1+ forbids relying on it).
    pub set_http_version: bool,
    /// The env entries every request of this server shares (see [`env::template`]); each
    /// request's env starts as a copy of it.
    pub env_template: Opaque<RHash>,
    /// `rack.input` of a request without a body: one shared, stateless object.
    pub null_input: Opaque<Value>,
    /// Development and test show the error in 500 responses; other environments do not.
    pub show_errors: bool,
    /// Access log on stdout.
    pub log_requests: bool,
    /// `log_requests :json`: the access log (on) writes JSON lines ([`access_json`]).
    pub log_json: bool,
    /// `lowlevel_error_handler`: makes the response when the app raised or answered wrongly.
    pub error_handler: Option<Opaque<Value>>,
    /// `custom_logger`: receives access log lines (`write` or `<<`) instead of stdout.
    pub access_logger: Option<Opaque<Value>>,
    /// Where `REMOTE_ADDR` comes from.
    pub remote_addr: RemoteAddr,
    /// `rack_url_scheme`: a fixed `rack.url_scheme` (a frozen String).
    pub url_scheme: Option<Opaque<Value>>,
    /// `allow_underscore_headers false` drops request headers whose names contain `_`.
    pub allow_underscore_headers: bool,
    /// `early_hints`: offer `rack.early_hints`.
    pub early_hints: bool,
}

/// `set_remote_address`, as the env builder applies it. (PROXY protocol needs nothing here:
/// the reactor already replaced the connection's peer with the address the line announced.)
pub enum RemoteAddr {
    Socket,
    /// Always this frozen String.
    Fixed(Opaque<Value>),
    /// The first address in this header (any case), else the socket's peer.
    Header(Vec<u8>),
}

impl RackSettings {
    fn null_input(&self, ruby: &Ruby) -> Value {
        ruby.get_inner(self.null_input)
    }
}
