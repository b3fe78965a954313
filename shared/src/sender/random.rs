//! Seeded random inputs for the sender's property tests: every run prints its seed, and
//! `WSBRIDGE_TEST_SEED={seed}` replays a failure.

use std::ops::Range;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

pub(super) fn seeded() -> (u64, StdRng) {
    let seed = std::env::var("WSBRIDGE_TEST_SEED")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or_else(rand::random);
    println!("seed {seed} (WSBRIDGE_TEST_SEED={seed} replays it)");
    (seed, StdRng::seed_from_u64(seed))
}

/// Characters that mean something in a URI, a header or SigV4, and some that are not ASCII.
const AWKWARD: &[char] = &[
    '=', '+', '/', ' ', '%', '.', '-', '_', '~', '@', '?', '#', ':', ',', ';', '&', '*', '!', '\'',
    '"', '\\', '[', ']', '{', '}', '|', '^', '`', '<', '>', '$', '(', ')', '\t', 'é', 'ß', '日',
    '本', '😀', '\u{7f}',
];

const PLAIN: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

/// A string of `length` characters, half of them awkward.
pub(super) fn text(rng: &mut StdRng, length: Range<usize>) -> String {
    let length = rng.random_range(length);
    (0..length)
        .map(|_| {
            if rng.random_bool(0.5) {
                AWKWARD[rng.random_range(0..AWKWARD.len())]
            } else {
                char::from(PLAIN[rng.random_range(0..PLAIN.len())])
            }
        })
        .collect()
}

/// A string of `length` characters from `alphabet`.
pub(super) fn word(rng: &mut StdRng, length: Range<usize>, alphabet: &[u8]) -> String {
    let length = rng.random_range(length);
    (0..length)
        .map(|_| char::from(alphabet[rng.random_range(0..alphabet.len())]))
        .collect()
}
