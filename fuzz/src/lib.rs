//! What the fuzz targets share: the limit profiles every input is checked under, and the
//! splits of an input into reads (derived from the input itself, so a crash replays exactly).

use catamount_http::{Limits, MethodPolicy};

/// The limits every input is parsed under: the defaults the server runs with, and small
/// ones, so that each limit is reached (and checked) by inputs of a few hundred bytes.
pub fn limit_profiles() -> [Limits; 2] {
    let tiny = Limits {
        max_header_name: 16,
        max_header_value: 64,
        max_target: 64,
        max_path: 40,
        max_query: 24,
        max_fragment: 8,
        max_head: 256,
        max_headers: 6,
        max_chunk_line: 24,
        max_chunk_extensions: 48,
        max_body: Some(300),
        // Any method and no Host requirement reach the paths the defaults refuse early.
        methods: MethodPolicy::Any,
        require_host: false,
    };
    [Limits::default(), tiny]
}

/// Cut points that split `data` into pieces, as reads from a socket would: ascending, each in
/// `1..data.len()`, chosen by a generator seeded with a hash of the bytes.
pub fn split_points(data: &[u8]) -> Vec<usize> {
    // FNV-1a, then xorshift: cheap and deterministic (no randomness outside the input).
    let mut state = data.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    }) | 1;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut points = Vec::new();
    let mut at = 0usize;
    while at < data.len() {
        // Mostly short reads, now and then a long one.
        let step = match next() % 4 {
            0 => 1 + (next() % 64) as usize,
            _ => 1 + (next() % 8) as usize,
        };
        at += step;
        if at < data.len() {
            points.push(at);
        }
    }
    points
}

/// `data` as the pieces [`split_points`] cuts it into.
pub fn pieces(data: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut start = 0;
    for end in split_points(data).into_iter().chain([data.len()]) {
        if let Some(piece) = data.get(start..end) {
            out.push(piece);
        }
        start = end;
    }
    out
}
