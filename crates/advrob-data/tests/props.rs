//! Property tests of the IDX reader: no input makes it panic (or allocate what the bytes do not
//! hold); whatever it accepts is consistent with its header.

use std::path::Path;

use advrob_data::idx::{self, IdxImages};
use proptest::prelude::*;

/// A well-formed image file of `n` images of `rows`×`cols`, then mutated at `flips` positions.
fn mutated_images(n: usize, rows: usize, cols: usize, flips: &[(usize, u8)]) -> Vec<u8> {
    let mut bytes = idx::encode_images(&IdxImages {
        count: n,
        channels: 1,
        rows,
        cols,
        pixels: vec![3; n * rows * cols],
    });
    for &(at, v) in flips {
        let i = at % bytes.len();
        bytes[i] = v;
    }
    bytes
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let p = Path::new("x-idx3-ubyte");
        if let Ok(img) = idx::parse_images(p, &bytes) {
            prop_assert_eq!(img.pixels.len(), img.count * img.rows * img.cols);
            prop_assert!(img.rows > 0 && img.cols > 0);
        }
        if let Ok(labels) = idx::parse_labels(p, &bytes) {
            prop_assert_eq!(labels.len() + 8, bytes.len());
        }
    }

    #[test]
    fn mutated_headers_are_errors_or_consistent(
        n in 0usize..6,
        rows in 1usize..6,
        cols in 1usize..6,
        flips in proptest::collection::vec((0usize..64, any::<u8>()), 0..4),
        cut in 0usize..8,
    ) {
        let mut bytes = mutated_images(n, rows, cols, &flips);
        bytes.truncate(bytes.len().saturating_sub(cut));
        let p = Path::new("m-idx3-ubyte");
        match idx::parse_images(p, &bytes) {
            Ok(img) => {
                prop_assert_eq!(16 + img.count * img.rows * img.cols, bytes.len());
            }
            Err(e) => prop_assert!(e.to_string().starts_with("m-idx3-ubyte"), "{}", e),
        }
    }

    #[test]
    fn gzip_of_anything_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let dir = tempfile::tempdir().expect("temp");
        let p = dir.path().join("f.gz");
        std::fs::write(&p, &bytes).expect("write");
        if let Ok(plain) = idx::read_maybe_gz(&p) {
            let _ = idx::parse_images(&p, &plain);
            let _ = idx::parse_labels(&p, &plain);
        }
    }
}

/// A header whose count × rows × cols overflows 64 bits is a clear error, not a panic
/// (found by the property test above in CI).
#[test]
fn a_header_past_u64_is_an_error() {
    let mut bytes = idx::encode_images(&IdxImages {
        count: 1,
        channels: 1,
        rows: 1,
        cols: 1,
        pixels: vec![0],
    });
    for field in [4, 8, 12] {
        bytes[field..field + 4].copy_from_slice(&u32::MAX.to_be_bytes());
    }
    let e = idx::parse_images(Path::new("huge-idx3-ubyte"), &bytes).expect_err("refused");
    assert!(e.to_string().starts_with("huge-idx3-ubyte"), "{e}");
}
