//! Header-field names as Rack env keys: which names become the same key (`X-Forwarded-For`
//! and `X_Forwarded_For` both become `HTTP_X_FORWARDED_FOR`), and which keys a name with `_`
//! may never take. The env builder (catamount-ext's `rack/env.rs`) applies these rules; they
//! live here, beside the parser, so they are unit-tested without Ruby.

/// Fields whose env key a name with `_` never takes, even when no `-` field has it: the server
/// reads them (framing, Host, Connection, the scheme headers), Rack reserves their keys
/// (`CONTENT_TYPE`, `CONTENT_LENGTH`: the spec forbids their `HTTP_` twins), or proxies set them
/// for the app to trust (client address, host, port, prefix). A proxy that strips or never
/// sets the real field would otherwise pass a client's `X_Forwarded_For` on as if it were one.
pub const GUARDED_FIELDS: &[&[u8]] = &[
    b"content-length",
    b"content-type",
    b"transfer-encoding",
    b"host",
    b"connection",
    b"version",
    b"x-forwarded-for",
    b"x-forwarded-host",
    b"x-forwarded-port",
    b"x-forwarded-proto",
    b"x-forwarded-scheme",
    b"x-forwarded-ssl",
    b"x-forwarded-prefix",
    b"x-real-ip",
    b"client-ip",
    b"x-client-ip",
    b"true-client-ip",
    b"x-cluster-client-ip",
];

/// A name byte as it appears in its env key: upper case, `-` as `_`.
pub fn env_key_byte(b: u8) -> u8 {
    match b {
        b'-' => b'_',
        b => b.to_ascii_uppercase(),
    }
}

/// Whether two field names become the same `HTTP_` env key (case and `-`/`_` aside).
pub fn same_env_key(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|(&x, &y)| env_key_byte(x) == env_key_byte(y))
}

/// Whether a field with this name is left out of the env whatever else the request holds:
/// a name with `_` whose key is guarded ([`GUARDED_FIELDS`], or `also`: a field the server
/// was configured to read, such as `set_remote_address header:`'s).
pub fn underscore_poses_as_guarded(name: &[u8], also: Option<&[u8]>) -> bool {
    name.contains(&b'_')
        && (GUARDED_FIELDS.iter().any(|g| same_env_key(name, g))
            || also.is_some_and(|a| same_env_key(name, a)))
}
