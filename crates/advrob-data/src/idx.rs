//! The IDX format of MNIST (LeCun et al.): a big-endian header, then raw `u8` data.
//!
//! Images are `idx3` (magic `0x00000803`, then count, rows, cols), labels are `idx1` (magic
//! `0x00000801`, then count). Files may be gzip-compressed; compression is detected from the first
//! two bytes, not the file name.

use std::io::{Read, Write};
use std::path::Path;

use flate2::read::GzDecoder;

use crate::error::{DataError, Result};

/// Magic number of an unsigned-byte, three-dimensional IDX file (images).
pub const IMAGES_MAGIC: u32 = 0x0000_0803;
/// Magic number of an unsigned-byte, one-dimensional IDX file (labels).
pub const LABELS_MAGIC: u32 = 0x0000_0801;

/// A stack of images, `count × channels × rows × cols` bytes, row-major: greyscale as stored in
/// IDX (one channel), or colour as CIFAR-10 stores it (three planes per image, red, green, blue).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdxImages {
    /// Number of images.
    pub count: usize,
    /// Channels per image: 1 for IDX files, 3 for CIFAR-10.
    pub channels: usize,
    /// Rows per image.
    pub rows: usize,
    /// Columns per image.
    pub cols: usize,
    /// Pixel values 0..=255, `count * channels * rows * cols` of them.
    pub pixels: Vec<u8>,
}

impl IdxImages {
    /// Bytes per image, `channels · rows · cols`.
    pub fn image_size(&self) -> usize {
        self.channels * self.rows * self.cols
    }

    /// `[channels, rows, cols]`.
    pub fn image(&self) -> [usize; 3] {
        [self.channels, self.rows, self.cols]
    }
}

/// Reads a whole file and decompresses it if it starts with the gzip magic bytes.
pub fn read_maybe_gz(path: &Path) -> Result<Vec<u8>> {
    let raw = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
    decompress_if_gz(raw).map_err(|reason| DataError::Gzip {
        path: path.to_path_buf(),
        reason,
    })
}

/// The most a file advrob reads may decompress to (MNIST's largest file is 47 MB).
pub const MAX_DECOMPRESSED: u64 = 1 << 30;

/// The size an IDX file declares in its header (magic, dimensions), `None` when `head` does not
/// start like one.
fn declared_size(head: &[u8]) -> Option<u64> {
    if head.len() < 4 || head[0] != 0 || head[1] != 0 {
        return None;
    }
    let dims = usize::from(head[3]);
    if dims == 0 || head.len() < 4 + 4 * dims {
        return None;
    }
    let body = (0..dims).try_fold(1u64, |p, i| {
        p.checked_mul(u64::from(be_u32(head, 4 + 4 * i)))
    })?;
    body.checked_add(4 + 4 * dims as u64)
}

/// Decompresses `raw` if it is a gzip stream, else returns it unchanged. The output is bounded by
/// what the IDX header at its start declares: a stream that inflates far beyond it (twice the
/// declared size and 1 MiB more; [`MAX_DECOMPRESSED`] at most, or where there is no header) is
/// refused as soon as it does, without holding the rest in memory. Within the bound the bytes are
/// returned as they are, so that the IDX parser names what is wrong with them.
pub(crate) fn decompress_if_gz(raw: Vec<u8>) -> std::result::Result<Vec<u8>, String> {
    if !raw.starts_with(&[0x1f, 0x8b]) {
        return Ok(raw);
    }
    let mut dec = GzDecoder::new(raw.as_slice());
    let mut out = Vec::with_capacity(16);
    (&mut dec)
        .take(16)
        .read_to_end(&mut out)
        .map_err(|e| e.to_string())?;
    let declared = declared_size(&out);
    let limit = declared
        .map_or(MAX_DECOMPRESSED, |n| {
            n.saturating_mul(2).saturating_add(1 << 20)
        })
        .min(MAX_DECOMPRESSED);
    (&mut dec)
        .take(limit.saturating_sub(out.len() as u64) + 1)
        .read_to_end(&mut out)
        .map_err(|e| e.to_string())?;
    if out.len() as u64 > limit {
        return Err(match declared {
            Some(n) => format!(
                "decompresses to more than {limit} bytes, far beyond the {n} bytes its header declares (a damaged file, or a decompression bomb)"
            ),
            None => format!("decompresses to more than the {limit} bytes advrob reads"),
        });
    }
    Ok(out)
}

fn be_u32(bytes: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

fn check_len(path: &Path, bytes: &[u8], expected: u64) -> Result<()> {
    if bytes.len() as u64 != expected {
        return Err(DataError::Truncated {
            path: path.to_path_buf(),
            expected,
            found: bytes.len() as u64,
        });
    }
    Ok(())
}

/// Parses an `idx3-ubyte` image file from its (decompressed) bytes.
pub fn parse_images(path: &Path, bytes: &[u8]) -> Result<IdxImages> {
    if bytes.len() < 16 {
        return Err(DataError::Truncated {
            path: path.to_path_buf(),
            expected: 16,
            found: bytes.len() as u64,
        });
    }
    let magic = be_u32(bytes, 0);
    if magic != IMAGES_MAGIC {
        return Err(DataError::BadMagic {
            path: path.to_path_buf(),
            expected: IMAGES_MAGIC,
            found: magic,
        });
    }
    let count = be_u32(bytes, 4) as usize;
    let rows = be_u32(bytes, 8) as usize;
    let cols = be_u32(bytes, 12) as usize;
    if rows == 0 || cols == 0 {
        return Err(DataError::EmptyImages {
            path: path.to_path_buf(),
            rows,
            cols,
        });
    }
    // A damaged header can claim up to 2^96 bytes: saturate, the length check then refuses it.
    let expected = (count as u64)
        .saturating_mul(rows as u64)
        .saturating_mul(cols as u64)
        .saturating_add(16);
    check_len(path, bytes, expected)?;
    Ok(IdxImages {
        count,
        channels: 1,
        rows,
        cols,
        pixels: bytes[16..].to_vec(),
    })
}

/// Parses an `idx1-ubyte` label file from its (decompressed) bytes.
pub fn parse_labels(path: &Path, bytes: &[u8]) -> Result<Vec<u8>> {
    if bytes.len() < 8 {
        return Err(DataError::Truncated {
            path: path.to_path_buf(),
            expected: 8,
            found: bytes.len() as u64,
        });
    }
    let magic = be_u32(bytes, 0);
    if magic != LABELS_MAGIC {
        return Err(DataError::BadMagic {
            path: path.to_path_buf(),
            expected: LABELS_MAGIC,
            found: magic,
        });
    }
    let count = be_u32(bytes, 4) as usize;
    check_len(path, bytes, 8 + count as u64)?;
    Ok(bytes[8..].to_vec())
}

/// Reads an image file (plain or gzip).
pub fn read_images(path: &Path) -> Result<IdxImages> {
    parse_images(path, &read_maybe_gz(path)?)
}

/// Reads a label file (plain or gzip).
pub fn read_labels(path: &Path) -> Result<Vec<u8>> {
    parse_labels(path, &read_maybe_gz(path)?)
}

/// Encodes one-channel images as `idx3-ubyte` bytes (IDX files hold greyscale images; the
/// channels of colour images would be written as extra images).
pub fn encode_images(images: &IdxImages) -> Vec<u8> {
    debug_assert_eq!(images.channels, 1, "IDX image files are greyscale");
    let mut out = Vec::with_capacity(16 + images.pixels.len());
    for v in [
        IMAGES_MAGIC,
        images.count as u32,
        images.rows as u32,
        images.cols as u32,
    ] {
        out.extend_from_slice(&v.to_be_bytes());
    }
    out.extend_from_slice(&images.pixels);
    out
}

/// Encodes labels as `idx1-ubyte` bytes.
pub fn encode_labels(labels: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + labels.len());
    out.extend_from_slice(&LABELS_MAGIC.to_be_bytes());
    out.extend_from_slice(&(labels.len() as u32).to_be_bytes());
    out.extend_from_slice(labels);
    out
}

/// Writes `bytes` to `path` atomically (temporary file in the same directory, then rename),
/// gzip-compressed when `gzip` is true. A crash never leaves a half-written `path`.
pub fn write_file(path: &Path, bytes: &[u8], gzip: bool) -> Result<()> {
    let data = if gzip {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(bytes).map_err(|e| DataError::io(path, e))?;
        enc.finish().map_err(|e| DataError::io(path, e))?
    } else {
        bytes.to_vec()
    };
    crate::atomic_write(path, &data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_round_trip_plain_and_gzip() {
        let dir = tempfile::tempdir().expect("temp dir");
        let images = IdxImages {
            count: 2,
            channels: 1,
            rows: 2,
            cols: 3,
            pixels: (0..12).collect(),
        };
        for gz in [false, true] {
            let p = dir.path().join(format!("img{gz}"));
            write_file(&p, &encode_images(&images), gz).expect("write");
            assert_eq!(read_images(&p).expect("read"), images);
        }
    }

    #[test]
    fn labels_round_trip() {
        let dir = tempfile::tempdir().expect("temp dir");
        let p = dir.path().join("labels.gz");
        write_file(&p, &encode_labels(&[3, 1, 4]), true).expect("write");
        assert_eq!(read_labels(&p).expect("read"), vec![3, 1, 4]);
    }

    #[test]
    fn wrong_magic_is_named() {
        let bytes = encode_labels(&[1, 2]);
        let err = parse_images(Path::new("x.idx"), &[bytes.clone(), vec![0; 8]].concat())
            .expect_err("labels are not images");
        let msg = err.to_string();
        assert!(msg.contains("x.idx") && msg.contains("magic"), "{msg}");
        assert!(matches!(
            err,
            DataError::BadMagic {
                expected: IMAGES_MAGIC,
                found: LABELS_MAGIC,
                ..
            }
        ));
    }

    #[test]
    fn truncated_body_and_header_are_errors() {
        let mut bytes = encode_images(&IdxImages {
            count: 3,
            channels: 1,
            rows: 2,
            cols: 2,
            pixels: vec![7; 12],
        });
        bytes.truncate(bytes.len() - 1);
        // header says 16 + 12 = 28 bytes, 27 are there
        let err = parse_images(Path::new("t.idx"), &bytes).expect_err("truncated");
        assert!(matches!(
            err,
            DataError::Truncated {
                expected: 28,
                found: 27,
                ..
            }
        ));
        let err = parse_labels(Path::new("l.idx"), &[0, 0, 8]).expect_err("short header");
        assert!(matches!(err, DataError::Truncated { .. }));
    }

    #[test]
    fn a_gzip_stream_is_never_inflated_beyond_its_header() {
        // 10 images of 28×28 declared, 10 000 delivered: refused soon after the declared size
        let mut bytes = encode_images(&IdxImages {
            count: 10,
            channels: 1,
            rows: 28,
            cols: 28,
            pixels: vec![0; 10 * 28 * 28],
        });
        bytes.extend(std::iter::repeat_n(0u8, 9990 * 28 * 28));
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, &bytes).expect("gzip");
        let packed = gz.finish().expect("gzip");
        assert!(packed.len() < 100_000, "{}", packed.len());
        let e = decompress_if_gz(packed).expect_err("bomb");
        assert!(
            e.contains("more than 1064288 bytes, far beyond the 7856 bytes its header declares"),
            "{e}"
        );
        // a little more than declared is left to the parser, which says how much
        let mut over = encode_labels(&[1, 2, 3]);
        over.extend([0, 0]);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, &over).expect("gzip");
        assert_eq!(
            decompress_if_gz(gz.finish().expect("gzip")).expect("bytes"),
            over
        );
    }

    #[test]
    fn truncated_gzip_stream_is_an_error() {
        let dir = tempfile::tempdir().expect("temp dir");
        let p = dir.path().join("labels.gz");
        write_file(&p, &encode_labels(&[1; 5000]), true).expect("write");
        let mut raw = std::fs::read(&p).expect("read back");
        raw.truncate(raw.len() / 2);
        std::fs::write(&p, raw).expect("rewrite");
        let err = read_labels(&p).expect_err("truncated gzip");
        assert!(matches!(err, DataError::Gzip { .. }), "{err}");
        assert!(err.to_string().contains("labels.gz"));
    }
}
