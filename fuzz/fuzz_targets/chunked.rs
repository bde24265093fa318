//! Fuzz target for the chunked body decoder (`catamount_http::ChunkedDecoder`): the input is
//! what follows a `Transfer-Encoding: chunked` head.
//!
//! Beyond "no panic": the output never exceeds the input it was decoded from, `decoded_len`
//! counts it, the decoder takes all of its input until the body ends, no body passes
//! `max_body`, and the outcome (output, bytes taken, end, error) is the same fed at once,
//! byte by byte, and in reads of any size; an error is repeated on the next call. And the
//! other way round: the input taken as body bytes, sent in chunks as the server's own encoder
//! writes them (`write_chunk`), decodes back to exactly those bytes.
#![no_main]

use catamount_fuzz::{limit_profiles, pieces};
use catamount_http::{
    write_chunk, ChunkProgress, ChunkedDecoder, ErrorKind, Limits, ParseError, LAST_CHUNK,
};
use libfuzzer_sys::fuzz_target;

/// What decoding a whole input came to: the body bytes, the input bytes taken (0 after an
/// error: the connection is closed, nothing is taken), whether the body ended, and the error
/// that stopped it, if one did.
#[derive(Debug, PartialEq)]
struct Outcome {
    out: Vec<u8>,
    consumed: usize,
    done: bool,
    error: Option<ParseError>,
}

fuzz_target!(|data: &[u8]| {
    for limits in limit_profiles() {
        let whole = decode_in(std::iter::once(data), &limits);
        let bytewise = decode_in(data.chunks(1), &limits);
        assert_eq!(bytewise, whole, "fed byte by byte");
        let reads = decode_in(pieces(data).into_iter(), &limits);
        assert_eq!(reads, whole, "fed in reads");

        assert!(whole.consumed <= data.len());
        assert!(
            whole.out.len() <= data.len(),
            "output larger than its input"
        );
        if whole.error.is_none() {
            assert!(
                whole.out.len() <= whole.consumed,
                "output larger than its input"
            );
            if !whole.done {
                assert_eq!(
                    whole.consumed,
                    data.len(),
                    "an unfinished body takes all its input"
                );
            }
        }
        if let Some(max) = limits.max_body {
            assert!(whole.out.len() as u64 <= max);
        }
        if let Some(e) = whole.error {
            assert!(matches!(e.status(), 400 | 413));
            assert!(!e.to_string().is_empty());
        }
        round_trip(data, &limits);
    }
});

/// `body` encoded in chunks of the sizes reads would have, then decoded: the same bytes, or
/// the body limit if it is over it.
fn round_trip(body: &[u8], limits: &Limits) {
    let mut encoded = Vec::new();
    for chunk in pieces(body) {
        write_chunk(&mut encoded, chunk);
    }
    encoded.extend_from_slice(LAST_CHUNK);
    let decoded = decode_in(std::iter::once(encoded.as_slice()), limits);
    if limits.max_body.is_some_and(|max| body.len() as u64 > max) {
        assert_eq!(
            decoded.error.map(|e| e.kind()),
            Some(ErrorKind::BodyTooLarge)
        );
        return;
    }
    let expected = Outcome {
        out: body.to_vec(),
        consumed: encoded.len(),
        done: true,
        error: None,
    };
    assert_eq!(decoded, expected, "round trip through write_chunk");
}

/// Decodes the reads in order with one decoder, stopping at the end of the body or an error,
/// and checks what each call promises.
fn decode_in<'a>(reads: impl Iterator<Item = &'a [u8]>, limits: &Limits) -> Outcome {
    let mut decoder = ChunkedDecoder::new();
    let mut outcome = Outcome {
        out: Vec::new(),
        consumed: 0,
        done: false,
        error: None,
    };
    for read in reads {
        let before = outcome.out.len();
        match decoder.decode(read, &mut outcome.out, limits) {
            Ok(ChunkProgress { consumed, done }) => {
                assert!(consumed <= read.len());
                assert!(
                    done || consumed == read.len(),
                    "not done, yet input left over"
                );
                assert!(outcome.out.len() - before <= consumed);
                outcome.consumed += consumed;
                if done {
                    outcome.done = true;
                    // The decoder stays done: more input is the next request's.
                    let again = decoder.decode(b"0\r\n\r\n", &mut outcome.out, limits);
                    assert_eq!(
                        again,
                        Ok(ChunkProgress {
                            consumed: 0,
                            done: true
                        })
                    );
                    break;
                }
            }
            Err(e) => {
                let mut ignored = Vec::new();
                assert_eq!(decoder.decode(read, &mut ignored, limits), Err(e));
                assert!(ignored.is_empty());
                outcome.error = Some(e);
                outcome.consumed = 0;
                break;
            }
        }
        assert_eq!(decoder.decoded_len(), outcome.out.len() as u64);
    }
    outcome
}
