//! CIFAR-10's binary version (`cifar-10-binary.tar.gz`, Krizhevsky 2009): the archive read in
//! memory (gzip, then tar), its SHA-256 checked against the canonical digest, and its six batch
//! files parsed into images `[N, 3, 32, 32]` (channel-major, as the files hold them) and labels.
//!
//! Each batch file is a sequence of records of 1 + 3072 bytes: the label (0–9), then the red, green
//! and blue planes of a 32×32 image, row-major. `data_batch_1.bin` … `data_batch_5.bin` are the
//! 50 000 training images, `test_batch.bin` the 10 000 test images.

use std::io::Read;
use std::path::Path;

use crate::error::{DataError, Result};
use crate::idx::IdxImages;
use crate::split::{Split, sha256_hex};

/// The archive's file name on the dataset's page.
pub const ARCHIVE: &str = "cifar-10-binary.tar.gz";
/// SHA-256 of the canonical archive (170 052 171 bytes; MD5 c32a1d4ab5d03f1284b67883e8d87530 as
/// the dataset's page gives it).
pub const ARCHIVE_SHA256: &str = "c4a38c50a1bc5f3a1c5537f2155ab9d68f9f25eb1ed8d9ddda3db29a59bca1dd";
/// Channels, rows and columns of an image.
pub const IMAGE: [usize; 3] = [3, 32, 32];
/// Bytes of one record: the label, then the image.
pub const RECORD: usize = 1 + 3 * 32 * 32;
/// The training batch files, in order.
pub const TRAIN_FILES: [&str; 5] = [
    "data_batch_1.bin",
    "data_batch_2.bin",
    "data_batch_3.bin",
    "data_batch_4.bin",
    "data_batch_5.bin",
];
/// The test batch file.
pub const TEST_FILE: &str = "test_batch.bin";

/// CIFAR-10's training and test splits, images `[n, 3, 32, 32]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cifar10 {
    /// The 50 000 training images (fewer in a synthetic archive).
    pub train: Split,
    /// The 10 000 test images.
    pub test: Split,
}

fn empty_split() -> Split {
    Split {
        images: IdxImages {
            count: 0,
            channels: IMAGE[0],
            rows: IMAGE[1],
            cols: IMAGE[2],
            pixels: Vec::new(),
        },
        labels: Vec::new(),
    }
}

/// Reads a CIFAR-10 binary archive. With `verify`, its SHA-256 must be [`ARCHIVE_SHA256`] (the
/// canonical archive); without, any archive of the same layout is read (synthetic files for
/// tests, a copy prepared by hand). Errors name the file and what is wrong.
pub fn read_archive(path: &Path, verify: bool) -> Result<Cifar10> {
    let (cifar, found) = read_archive_with_digest(path)?;
    if verify && found != ARCHIVE_SHA256 {
        return Err(DataError::Checksum {
            source_name: path.display().to_string(),
            file: ARCHIVE.into(),
            expected: ARCHIVE_SHA256.into(),
            found,
        });
    }
    Ok(cifar)
}

/// Reads a CIFAR-10 binary archive of any content and returns it with the SHA-256 of its bytes.
pub fn read_archive_with_digest(path: &Path) -> Result<(Cifar10, String)> {
    let bytes = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
    let digest = sha256_hex(&bytes);
    Ok((parse_archive(path, &bytes)?, digest))
}

fn parse_archive(path: &Path, bytes: &[u8]) -> Result<Cifar10> {
    let mut tar = Vec::new();
    flate2::read::GzDecoder::new(bytes)
        .read_to_end(&mut tar)
        .map_err(|e| DataError::Gzip {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
    let entries = tar_entries(path, &tar)?;
    let file = |name: &str| -> Result<&[u8]> {
        entries
            .iter()
            .find(|(n, _)| n.rsplit('/').next() == Some(name))
            .map(|(_, b)| *b)
            .ok_or_else(|| DataError::Malformed {
                path: path.to_path_buf(),
                reason: format!("the archive holds no {name}"),
            })
    };
    let mut train = empty_split();
    for name in TRAIN_FILES {
        let part = parse_batch(&path.join(name), file(name)?)?;
        train.images.count += part.images.count;
        train.images.pixels.extend_from_slice(&part.images.pixels);
        train.labels.extend_from_slice(&part.labels);
    }
    let test = parse_batch(&path.join(TEST_FILE), file(TEST_FILE)?)?;
    Ok(Cifar10 { train, test })
}

/// Parses one batch file's bytes (`path` names it in errors): a whole number of records, each
/// label in 0–9.
pub fn parse_batch(path: &Path, bytes: &[u8]) -> Result<Split> {
    if bytes.is_empty() || !bytes.len().is_multiple_of(RECORD) {
        return Err(DataError::Malformed {
            path: path.to_path_buf(),
            reason: format!(
                "{} bytes are not a whole number of {RECORD}-byte records",
                bytes.len()
            ),
        });
    }
    let n = bytes.len() / RECORD;
    let mut labels = Vec::with_capacity(n);
    let mut pixels = Vec::with_capacity(n * (RECORD - 1));
    for (index, record) in bytes.chunks_exact(RECORD).enumerate() {
        if record[0] > 9 {
            return Err(DataError::LabelOutOfRange {
                path: path.to_path_buf(),
                label: record[0],
                index,
                max: 9,
            });
        }
        labels.push(record[0]);
        pixels.extend_from_slice(&record[1..]);
    }
    let mut split = empty_split();
    split.images.count = n;
    split.images.pixels = pixels;
    split.labels = labels;
    Ok(split)
}

/// The regular files of a tar archive (ustar or old-style headers), by path.
fn tar_entries<'a>(path: &Path, tar: &'a [u8]) -> Result<Vec<(String, &'a [u8])>> {
    let bad = |reason: String| DataError::Malformed {
        path: path.to_path_buf(),
        reason,
    };
    let text = |b: &[u8]| -> String {
        let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
        String::from_utf8_lossy(&b[..end]).into_owned()
    };
    let mut out = Vec::new();
    let mut at = 0;
    while at + 512 <= tar.len() {
        let header = &tar[at..at + 512];
        if header.iter().all(|&b| b == 0) {
            break;
        }
        let mut name = text(&header[..100]);
        if &header[257..262] == b"ustar" {
            let prefix = text(&header[345..500]);
            if !prefix.is_empty() {
                name = format!("{prefix}/{name}");
            }
        }
        let size_text = text(&header[124..136]);
        let size = usize::from_str_radix(size_text.trim(), 8).map_err(|_| {
            bad(format!(
                "tar entry {name:?}: size {size_text:?} is not octal"
            ))
        })?;
        let start = at + 512;
        let end = start
            .checked_add(size)
            .filter(|&e| e <= tar.len())
            .ok_or_else(|| bad(format!("tar entry {name:?} is cut short")))?;
        if matches!(header[156], b'0' | 0) {
            out.push((name, &tar[start..end]));
        }
        at = start + size.div_ceil(512) * 512;
    }
    Ok(out)
}

/// Writes a synthetic archive in CIFAR-10's layout to `path` (atomically): `per_batch` seeded
/// random images in each of the five training files and `test` in the test file, under
/// `cifar-10-batches-bin/` as the real archive has them. For tests; nothing is downloaded.
pub fn write_synthetic_archive(
    path: &Path,
    per_batch: usize,
    test: usize,
    seed: u64,
) -> Result<()> {
    let mut rng = crate::rng::SplitMix64::new(seed);
    let mut batch = |n: usize| -> Vec<u8> {
        let mut b = Vec::with_capacity(n * RECORD);
        for _ in 0..n {
            let r = rng.next_u64();
            b.push((r % 10) as u8);
            for k in 0..RECORD - 1 {
                b.push(((r >> (k % 56)) as u8).wrapping_add(k as u8));
            }
        }
        b
    };
    let mut tar = Vec::new();
    let mut add = |name: &str, data: &[u8]| {
        let mut h = [0u8; 512];
        let full = format!("cifar-10-batches-bin/{name}");
        h[..full.len()].copy_from_slice(full.as_bytes());
        h[100..108].copy_from_slice(b"0000644\0");
        h[108..116].copy_from_slice(b"0000000\0");
        h[116..124].copy_from_slice(b"0000000\0");
        h[124..136].copy_from_slice(format!("{:011o}\0", data.len()).as_bytes());
        h[136..148].copy_from_slice(b"00000000000\0");
        h[156] = b'0';
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        h[148..156].copy_from_slice(b"        ");
        let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
        h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        tar.extend_from_slice(&h);
        tar.extend_from_slice(data);
        tar.resize(tar.len().div_ceil(512) * 512, 0);
    };
    for name in TRAIN_FILES {
        add(name, &batch(per_batch));
    }
    add(TEST_FILE, &batch(test));
    tar.resize(tar.len() + 1024, 0);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, &tar).map_err(|e| DataError::io(path, e))?;
    let bytes = gz.finish().map_err(|e| DataError::io(path, e))?;
    crate::atomic_write(path, &bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_synthetic_archive_reads_back_as_written_and_a_damaged_one_is_refused_by_name() {
        let dir = tempfile::tempdir().expect("temp");
        let path = dir.path().join(ARCHIVE);
        write_synthetic_archive(&path, 7, 5, 3).expect("write");
        let c = read_archive(&path, false).expect("read");
        assert_eq!((c.train.images.count, c.test.images.count), (35, 5));
        assert_eq!(c.train.images.pixels.len(), 35 * 3072);
        assert_eq!(c.train.labels.len(), 35);
        assert!(c.test.labels.iter().all(|&l| l < 10));
        assert_eq!(c.train.images.image(), [3, 32, 32]);
        // the same seed, the same archive; the canonical digest it does not have
        let again = dir.path().join("again.tar.gz");
        write_synthetic_archive(&again, 7, 5, 3).expect("write");
        assert_eq!(read_archive(&again, false).expect("read"), c);
        let e = read_archive(&path, true)
            .expect_err("not canonical")
            .to_string();
        assert!(
            e.contains("SHA-256 mismatch") && e.contains(ARCHIVE_SHA256),
            "{e}"
        );
        // cut short: the gzip stream or a tar entry ends early
        let bytes = std::fs::read(&path).expect("read");
        std::fs::write(&path, &bytes[..bytes.len() / 2]).expect("write");
        let e = read_archive(&path, false).expect_err("cut").to_string();
        assert!(e.contains(ARCHIVE), "{e}");
    }

    #[test]
    fn a_batch_file_must_hold_whole_records_with_labels_below_ten() {
        let p = Path::new("data_batch_1.bin");
        let mut b = vec![3u8; RECORD * 2];
        let s = parse_batch(p, &b).expect("two records");
        assert_eq!((s.images.count, s.labels.clone()), (2, vec![3, 3]));
        assert_eq!(&s.images.pixels[..3], &[3, 3, 3]);
        let e = parse_batch(p, &b[..RECORD + 5])
            .expect_err("partial")
            .to_string();
        assert!(
            e.contains("data_batch_1.bin") && e.contains("3073-byte records"),
            "{e}"
        );
        b[RECORD] = 10;
        let e = parse_batch(p, &b).expect_err("label 10").to_string();
        assert!(e.contains("label 10 at index 1"), "{e}");
    }
}
