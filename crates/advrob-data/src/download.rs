//! Verified download: try mirrors in order, check the SHA-256 of the decompressed bytes against the
//! canonical digest compiled into this crate, and only then write the file (atomically).

use std::path::{Path, PathBuf};
#[cfg(feature = "download")]
use std::time::Duration;

#[cfg(test)]
use crate::dataset::FILE_NAMES;
use crate::dataset::{DatasetKind, sha256_hex};
use crate::error::{DataError, Result};
use crate::idx::decompress_if_gz;

/// Where dataset files can be fetched from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mirror {
    /// A local directory holding `<file>.gz` or `<file>` (a copy of the public files).
    Dir(PathBuf),
    /// A base URL serving `<file>.gz`.
    Url(String),
}

impl Mirror {
    /// `http://…` and `https://…` are URLs, anything else is a directory.
    pub fn parse(s: &str) -> Mirror {
        if s.starts_with("http://") || s.starts_with("https://") {
            let base = if s.ends_with('/') {
                s.to_string()
            } else {
                format!("{s}/")
            };
            Mirror::Url(base)
        } else {
            Mirror::Dir(PathBuf::from(s))
        }
    }

    /// The public mirrors of a dataset.
    pub fn defaults(kind: DatasetKind) -> Vec<Mirror> {
        kind.mirrors().iter().map(|u| Mirror::parse(u)).collect()
    }

    fn describe(&self, file: &str, stored: Stored) -> String {
        match (self, stored) {
            (Mirror::Dir(d), _) => d.join(file).display().to_string(),
            (Mirror::Url(u), Stored::Decompressed) => redact(&format!("{u}{file}.gz"), u),
            (Mirror::Url(u), Stored::AsIs) => redact(&format!("{u}{file}"), u),
        }
    }

    fn get(&self, file: &str, stored: Stored) -> std::result::Result<Vec<u8>, String> {
        match self {
            Mirror::Dir(dir) => {
                let names = match stored {
                    Stored::Decompressed => vec![format!("{file}.gz"), file.to_string()],
                    Stored::AsIs => vec![file.to_string()],
                };
                for name in names {
                    let p = dir.join(&name);
                    if p.is_file() {
                        return std::fs::read(&p).map_err(|e| e.to_string());
                    }
                }
                Err(match stored {
                    Stored::Decompressed => format!("neither {file}.gz nor {file} is there"),
                    Stored::AsIs => format!("{file} is not there"),
                })
            }
            #[cfg(not(feature = "download"))]
            Mirror::Url(_) => Err(
                "this build of advrob-data has no HTTP client (its `download` feature is off): \
                 give a directory holding the files as the mirror"
                    .to_string(),
            ),
            #[cfg(feature = "download")]
            Mirror::Url(base) => {
                // a dead mirror answers nothing: give up on it quickly (the whole file may
                // still take minutes on a slow line)
                let agent: ureq::Agent = ureq::Agent::config_builder()
                    .timeout_connect(Some(CONNECT_TIMEOUT))
                    .timeout_recv_response(Some(RESPONSE_TIMEOUT))
                    .timeout_global(Some(Duration::from_secs(300)))
                    .build()
                    .into();
                let url = match stored {
                    Stored::Decompressed => format!("{base}{file}.gz"),
                    Stored::AsIs => format!("{base}{file}"),
                };
                let fail = |e: &dyn std::fmt::Display| redact(&e.to_string(), base);
                let mut resp = agent.get(&url).call().map_err(|e| fail(&e))?;
                let mut body = Vec::new();
                use std::io::Read;
                resp.body_mut()
                    .as_reader()
                    .take(256 << 20)
                    .read_to_end(&mut body)
                    .map_err(|e| fail(&e))?;
                Ok(body)
            }
        }
    }
}

/// How a dataset's files are fetched, checked and kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stored {
    /// Served as `<file>.gz` (or plain from a directory); the digest is of the decompressed
    /// bytes, which are what is kept (the IDX files).
    Decompressed,
    /// Served and kept under its own name, the digest of its bytes as published (CIFAR-10's
    /// `.tar.gz`).
    AsIs,
}

/// How long a mirror may take to accept a connection.
#[cfg(feature = "download")]
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a mirror may take to start answering a request.
#[cfg(feature = "download")]
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(30);

/// `text` with the credentials of the mirror URL `base` (`https://user:password@host/`) masked,
/// wherever they appear: logs and errors never print a password.
fn redact(text: &str, base: &str) -> String {
    let Some(rest) = base.split_once("://").map(|(_, r)| r) else {
        return text.to_string();
    };
    let host_part = rest.split('/').next().unwrap_or_default();
    match host_part.rsplit_once('@') {
        Some((userinfo, _)) if !userinfo.is_empty() => {
            let mut out = text.replace(&format!("{userinfo}@"), "***@");
            // a client may print the password alone (or percent-decoded)
            if let Some((_, password)) = userinfo.split_once(':')
                && !password.is_empty()
            {
                out = out.replace(password, "***");
            }
            out
        }
        _ => text.to_string(),
    }
}

/// What [`fetch`] did for each file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchReport {
    /// The directory now holding the four verified, decompressed files.
    pub dir: PathBuf,
    /// Files that were already present and verified.
    pub cached: Vec<String>,
    /// Files fetched, with the mirror each came from.
    pub fetched: Vec<(String, String)>,
}

/// Whether `path` exists and its content hashes to `expected`.
fn is_verified(path: &Path, expected: &str) -> Result<bool> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(sha256_hex(&bytes) == expected),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(DataError::io(path, e)),
    }
}

/// Makes sure `<data_dir>/<kind name>/` holds the four decompressed files of `kind`, each verified
/// against its canonical SHA-256.
///
/// A file already there and verified is kept (nothing is downloaded again); one that fails
/// verification is deleted and fetched anew. Mirrors are tried in order (`mirrors` empty means the
/// public ones); bytes whose digest does not match are discarded and the next mirror is tried. A
/// file is written only once verified, through a temporary file and a rename, so an interrupted
/// download never becomes the cached file. A mirror directory that does not exist is an error
/// before anything is fetched.
pub fn fetch(kind: DatasetKind, data_dir: &Path, mirrors: &[Mirror]) -> Result<FetchReport> {
    let mirrors = if mirrors.is_empty() {
        Mirror::defaults(kind)
    } else {
        mirrors.to_vec()
    };
    let files: Vec<(&str, &str)> = kind
        .files()
        .iter()
        .copied()
        .zip(kind.sha256().iter().copied())
        .collect();
    let stored = if kind.digest_decompressed() {
        Stored::Decompressed
    } else {
        Stored::AsIs
    };
    fetch_verified_as(&data_dir.join(kind.name()), &files, &mirrors, stored)
}

/// The mechanism behind [`fetch`] for any list of `(file name, SHA-256 of its decompressed
/// bytes)`: verified files in `dir` are kept, others are fetched from `mirrors` in order and
/// written atomically once their digest matches.
pub fn fetch_verified(
    dir: &Path,
    files: &[(&str, &str)],
    mirrors: &[Mirror],
) -> Result<FetchReport> {
    fetch_verified_as(dir, files, mirrors, Stored::Decompressed)
}

/// [`fetch_verified`] for files fetched, checked and kept as [`Stored`] says.
pub fn fetch_verified_as(
    dir: &Path,
    files: &[(&str, &str)],
    mirrors: &[Mirror],
    stored: Stored,
) -> Result<FetchReport> {
    for m in mirrors {
        if let Mirror::Dir(d) = m
            && !d.is_dir()
        {
            return Err(DataError::MirrorMissing(d.clone()));
        }
    }
    std::fs::create_dir_all(dir).map_err(|e| DataError::io(dir, e))?;
    let mut report = FetchReport {
        dir: dir.to_path_buf(),
        cached: Vec::new(),
        fetched: Vec::new(),
    };
    // per mirror: why it is not tried again (a URL that could not be fetched from)
    let mut dead: Vec<Option<String>> = vec![None; mirrors.len()];
    for &(file, expected) in files {
        let dest = dir.join(file);
        if is_verified(&dest, expected)? {
            report.cached.push(file.to_string());
            continue;
        }
        if dest.exists() {
            log::warn!(
                "{}: checksum mismatch, deleting and fetching again",
                dest.display()
            );
            std::fs::remove_file(&dest).map_err(|e| DataError::io(&dest, e))?;
        }
        let mut attempts = Vec::new();
        let mut done = false;
        for (i, m) in mirrors.iter().enumerate() {
            let source = m.describe(file, stored);
            if let Some(why) = &dead[i] {
                attempts.push(format!("{source}: not tried: it failed for {why}"));
                continue;
            }
            log::info!("fetching {source}");
            let got = m.get(file, stored);
            if let (Mirror::Url(_), Err(reason)) = (m, &got) {
                // a mirror that cannot be reached is not tried again for the other files
                dead[i] = Some(format!("{file} ({reason})"));
            }
            let got = match stored {
                Stored::Decompressed => got.and_then(decompress_if_gz),
                Stored::AsIs => got,
            };
            let bytes = match got {
                Ok(b) => b,
                Err(reason) => {
                    attempts.push(format!("{source}: {reason}"));
                    continue;
                }
            };
            let found = sha256_hex(&bytes);
            if found != expected {
                let err = DataError::Checksum {
                    source_name: source.clone(),
                    file: file.to_string(),
                    expected: expected.to_string(),
                    found,
                };
                log::warn!("{err}");
                attempts.push(err.to_string());
                continue;
            }
            crate::atomic_write(&dest, &bytes)?;
            report.fetched.push((file.to_string(), source));
            done = true;
            break;
        }
        if !done {
            return Err(DataError::AllMirrorsFailed {
                file: file.to_string(),
                attempts,
            });
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::idx;

    /// A mirror directory with gzip files whose content is not MNIST.
    fn fake_mirror(dir: &Path) {
        crate::synthetic::write_dataset(dir, 10, 10, 3).expect("write synthetic");
    }

    #[test]
    fn checksum_mismatch_writes_nothing_and_names_the_digests() {
        let mirror = tempfile::tempdir().expect("temp");
        let data = tempfile::tempdir().expect("temp");
        fake_mirror(mirror.path());
        let err = fetch(
            DatasetKind::Mnist,
            data.path(),
            &[Mirror::Dir(mirror.path().to_path_buf())],
        )
        .expect_err("synthetic bytes are not MNIST");
        let msg = err.to_string();
        assert!(msg.contains("SHA-256 mismatch"), "{msg}");
        assert!(msg.contains(DatasetKind::Mnist.sha256()[0]), "{msg}");
        let left: Vec<_> = std::fs::read_dir(data.path().join("mnist"))
            .expect("dir")
            .collect();
        assert!(left.is_empty(), "nothing half-written: {left:?}");
    }

    #[test]
    fn missing_mirror_directory_is_a_clear_error() {
        let data = tempfile::tempdir().expect("temp");
        let missing = data.path().join("no-such-mirror");
        let err = fetch(
            DatasetKind::Mnist,
            data.path(),
            &[Mirror::Dir(missing.clone())],
        )
        .expect_err("missing");
        assert!(matches!(err, DataError::MirrorMissing(ref p) if *p == missing));
        assert!(err.to_string().contains("no-such-mirror"));
    }

    #[test]
    fn falls_back_to_next_mirror_replaces_bad_cache_and_skips_verified() {
        let good = tempfile::tempdir().expect("temp");
        let bad = tempfile::tempdir().expect("temp");
        let data = tempfile::tempdir().expect("temp");
        let content = idx::encode_labels(&[1, 2, 3]);
        idx::write_file(&good.path().join("f.gz"), &content, true).expect("write");
        idx::write_file(&bad.path().join("f.gz"), &idx::encode_labels(&[9]), true).expect("write");
        let digest = sha256_hex(&content);
        let files = [("f", digest.as_str())];
        let dest_dir = data.path().join("ds");
        std::fs::create_dir_all(&dest_dir).expect("mkdir");
        std::fs::write(dest_dir.join("f"), b"stale junk").expect("write");
        let mirrors = [
            Mirror::Dir(bad.path().to_path_buf()),
            Mirror::Dir(good.path().to_path_buf()),
        ];
        let report = fetch_verified(&dest_dir, &files, &mirrors).expect("second mirror is good");
        assert_eq!(report.fetched.len(), 1);
        assert!(
            report.fetched[0]
                .1
                .contains(&good.path().display().to_string())
        );
        assert_eq!(std::fs::read(dest_dir.join("f")).expect("read"), content);
        // second call: already verified, nothing fetched even with no usable mirror
        let report = fetch_verified(&dest_dir, &files, &[]).expect("cached");
        assert_eq!(report.cached, vec!["f".to_string()]);
        assert!(report.fetched.is_empty());
    }

    #[cfg(feature = "download")]
    #[test]
    fn a_dead_mirror_is_tried_once_and_credentials_are_never_shown() {
        // a mirror that accepts connections and closes them without an answer
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = accepted.clone();
        listener.set_nonblocking(true).expect("nonblocking");
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopped = stop.clone();
        let server = std::thread::spawn(move || {
            let start = std::time::Instant::now();
            while !stopped.load(std::sync::atomic::Ordering::Relaxed)
                && start.elapsed() < Duration::from_secs(60)
            {
                match listener.accept() {
                    Ok((conn, _)) => {
                        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        drop(conn);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        let src = tempfile::tempdir().expect("temp");
        fake_mirror(src.path());
        let out = tempfile::tempdir().expect("temp");
        let mirrors = [
            Mirror::parse(&format!("http://user:s3cret@127.0.0.1:{port}/mnist")),
            Mirror::Dir(src.path().to_path_buf()),
        ];
        let digests: Vec<(&str, String)> = FILE_NAMES
            .iter()
            .map(|n| {
                let bytes = idx::read_maybe_gz(&src.path().join(format!("{n}.gz"))).expect("read");
                (*n, sha256_hex(&bytes))
            })
            .collect();
        let files: Vec<(&str, &str)> = digests.iter().map(|(a, b)| (*a, b.as_str())).collect();
        let r = fetch_verified(out.path(), &files, &mirrors).expect("second mirror");
        assert_eq!(r.fetched.len(), files.len());
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        server.join().expect("server");
        assert_eq!(accepted.load(std::sync::atomic::Ordering::Relaxed), 1);
        // every file failing: the error names the mirror without its password
        let empty = tempfile::tempdir().expect("temp");
        let out = tempfile::tempdir().expect("temp");
        let mirrors = [
            Mirror::parse("http://user:s3cret@127.0.0.1:9/mnist"),
            Mirror::Dir(empty.path().to_path_buf()),
        ];
        let e = fetch_verified(out.path(), &files, &mirrors).expect_err("nothing there");
        let text = e.to_string();
        assert!(!text.contains("s3cret"), "{text}");
        assert!(text.contains("***@127.0.0.1:9"), "{text}");
    }

    #[test]
    fn cifar10_is_fetched_as_its_archive_from_a_mirror_directory_and_refused_when_not_canonical() {
        let mirror = tempfile::tempdir().expect("temp");
        let data = tempfile::tempdir().expect("temp");
        let archive = mirror.path().join(crate::cifar::ARCHIVE);
        crate::cifar::write_synthetic_archive(&archive, 2, 2, 1).expect("write");
        let e = fetch(
            DatasetKind::Cifar10,
            data.path(),
            &[Mirror::Dir(mirror.path().to_path_buf())],
        )
        .expect_err("a synthetic archive is not CIFAR-10");
        let msg = e.to_string();
        assert!(
            msg.contains(crate::cifar::ARCHIVE_SHA256) && msg.contains(crate::cifar::ARCHIVE),
            "{msg}"
        );
        assert!(
            !data
                .path()
                .join("cifar10")
                .join(crate::cifar::ARCHIVE)
                .exists()
        );
        // the same mechanism with the synthetic archive's own digest: kept byte for byte
        let bytes = std::fs::read(&archive).expect("read");
        let digest = sha256_hex(&bytes);
        let dest = data.path().join("c");
        let r = fetch_verified_as(
            &dest,
            &[(crate::cifar::ARCHIVE, digest.as_str())],
            &[Mirror::Dir(mirror.path().to_path_buf())],
            Stored::AsIs,
        )
        .expect("fetched");
        assert_eq!(r.fetched.len(), 1);
        assert_eq!(
            std::fs::read(dest.join(crate::cifar::ARCHIVE)).expect("read"),
            bytes
        );
        let ds = crate::Dataset::load_dir(&dest).expect("loads as CIFAR");
        assert_eq!(ds.test.images.image(), [3, 32, 32]);
        assert_eq!(ds.verified, None);
        assert_eq!(ds.files[0].sha256, digest);
    }

    #[test]
    fn mirror_parse_tells_urls_from_dirs() {
        assert_eq!(
            Mirror::parse("https://h/x"),
            Mirror::Url("https://h/x/".into())
        );
        assert_eq!(Mirror::parse("../d"), Mirror::Dir(PathBuf::from("../d")));
    }
}
