//! The records of a run directory: safe for several writers at once, on one machine or on a
//! shared filesystem (the shards of a Slurm job array write into one run).
//!
//! Design: every writer (one `run` invocation) appends to a log of its own,
//! `records/<host>-<pid>-<time>.jsonl`, created exclusively, one JSON record per line, each batch
//! of lines written with one `write` and flushed to disk before the next piece of work starts. No
//! writer ever rewrites or truncates a file, so none can lose another's records — there is no
//! read-modify-write of a shared file anywhere. A writer killed mid-write leaves at most a last
//! line without its newline: readers ignore such a torn line (its work is redone on the next
//! run), while a damaged complete line is an error that names the file and line. Readers merge
//! every log (and the single `records.jsonl` of earlier versions) in file-name order and keep the
//! first record of every key, so every reader sees the same records.
//!
//! Each writer also holds file locks (`std::fs::File::lock`, `flock` on Linux; NFS v4 emulates it)
//! while it trains a model (so that two runs never train the same model twice) and while it
//! evaluates one (so that two runs split the models rather than duplicate them).

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{ExperimentError, Result};
use crate::layout::RunDir;
use crate::record::{Record, SCHEMA};
use crate::registry::Registry;

/// Everything a run directory holds, merged.
#[derive(Debug, Clone, Default)]
pub struct RunRecords {
    /// Each key once, in the order of the logs (file name, then line).
    pub records: Vec<Record>,
    /// Records of a key already seen (several writers did the same work).
    pub duplicates: usize,
    /// Logs that end in a torn line (a writer killed mid-write, or one still writing) whose
    /// record no log holds whole: a result missing until a run redoes it.
    pub torn: Vec<PathBuf>,
}

impl RunRecords {
    /// The records by key.
    pub fn by_key(&self) -> BTreeMap<&str, &Record> {
        self.records.iter().map(|r| (r.key.as_str(), r)).collect()
    }
}

/// The logs of a run, in the order they are merged: the legacy single file first, then every
/// writer's log by name.
pub fn logs(run: &RunDir) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    if run.records().is_file() {
        out.push(run.records());
    }
    let dir = run.record_logs();
    match std::fs::read_dir(&dir) {
        Ok(entries) => {
            let mut logs: Vec<PathBuf> = entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
                .collect();
            logs.sort();
            out.extend(logs);
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(ExperimentError::io(&dir, e)),
    }
    Ok(out)
}

/// A log's last line cut short: `Some(key)` where enough of it is there to read its record's key
/// (records begin with it).
type Torn = Option<String>;

/// The key of a record line cut short, if the cut left it whole.
fn torn_key(line: &str) -> Torn {
    let rest = &line[line.find("\"key\":\"")? + 7..];
    Some(rest[..rest.find('"')?].to_string())
}

/// Parses one log: its records, and its torn last line if it has one.
fn read_log(path: &Path, registry: &Registry) -> Result<(Vec<Record>, Option<Torn>)> {
    let bytes = std::fs::read(path).map_err(|e| ExperimentError::io(path, e))?;
    let text = String::from_utf8_lossy(&bytes);
    let mut lines: Vec<&str> = text.split_inclusive('\n').collect();
    let torn = if !bytes.is_empty() && !bytes.ends_with(b"\n") {
        lines.pop().map(torn_key)
    } else {
        None
    };
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let at = |reason: String| ExperimentError::file(path, format!("line {}: {reason}", i + 1));
        let mut r: Record =
            serde_json::from_str(line).map_err(|e| at(format!("not a record: {e}")))?;
        if r.attack_info.is_none() {
            let spec = serde_json::from_value(r.attack_config.clone())
                .map_err(|e| at(format!("attack_config: {e}")))?;
            let described = registry
                .describe(&spec)
                .map_err(|e| at(format!("attack_config: {e}")))?;
            r.attack_info = Some(described.info);
        }
        out.push(r);
    }
    Ok((out, torn))
}

/// Reads and merges every log of `run` (none: no records). Records without typed attack metadata
/// (older versions) get it from their attack's settings through `registry`. A complete line that
/// is not a record is an error naming the file and line; a torn last line is skipped.
pub fn read_run(run: &RunDir, registry: &Registry) -> Result<RunRecords> {
    let mut out = RunRecords::default();
    let mut seen = std::collections::BTreeSet::new();
    let mut torn = Vec::new();
    for log in logs(run)? {
        let (records, cut) = read_log(&log, registry)?;
        if let Some(key) = cut {
            torn.push((log.clone(), key));
        }
        for r in records {
            if seen.insert(r.key.clone()) {
                out.records.push(r);
            } else {
                out.duplicates += 1;
            }
        }
    }
    // a cut line whose record another writer has since written whole is no loss
    for (log, key) in torn {
        if key.is_some_and(|k| seen.contains(&k)) {
            continue;
        }
        log::warn!(
            "{}: its last line is incomplete (a writer was killed, or is still writing): ignored, its work will be redone",
            log.display()
        );
        out.torn.push(log);
    }
    Ok(out)
}

/// Every record of the run directory `run`, merged from every writer's log
/// ([`crate::store::read_run`]).
pub fn read_records(run: &RunDir, registry: &Registry) -> Result<Vec<Record>> {
    Ok(read_run(run, registry)?.records)
}

/// A name for this writer's log, unique across processes, machines and the jobs of one process.
fn writer_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().replace(|c: char| !c.is_ascii_alphanumeric(), "_"))
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "host".into());
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    // jobs of one process (threads) start within the same nanosecond's reach: a counter tells
    // them apart
    static WRITERS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = WRITERS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{host}-{}-{nanos:x}-{n}", std::process::id())
}

/// Where a run writes its records: an append-only log of its own in the run directory, created
/// on the first record (a run with nothing to do writes nothing).
#[derive(Debug)]
pub struct RecordLog {
    dir: PathBuf,
    path: Option<PathBuf>,
    file: Option<File>,
}

impl RecordLog {
    /// The log this process will write into `run`.
    pub fn new(run: &RunDir) -> Self {
        Self {
            dir: run.record_logs(),
            path: None,
            file: None,
        }
    }

    /// The file, once something was written.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Appends `records`, one line each, in one write, and flushes them to disk.
    pub fn append(&mut self, records: &[Record]) -> Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        let mut text = String::new();
        for r in records {
            debug_assert_eq!(r.schema, SCHEMA);
            let line = serde_json::to_string(r).map_err(|e| ExperimentError::file(&self.dir, e))?;
            text.push_str(&line);
            text.push('\n');
        }
        let file = match &mut self.file {
            Some(f) => f,
            None => {
                std::fs::create_dir_all(&self.dir)
                    .map_err(|e| ExperimentError::io(&self.dir, e))?;
                let path = self.dir.join(format!("{}.jsonl", writer_id()));
                let f = OpenOptions::new()
                    .append(true)
                    .create_new(true)
                    .open(&path)
                    .map_err(|e| ExperimentError::io(&path, e))?;
                self.path = Some(path);
                self.file.insert(f)
            }
        };
        let path = self.path.clone().unwrap_or_default();
        file.write_all(text.as_bytes())
            .and_then(|()| file.sync_data())
            .map_err(|e| ExperimentError::io(&path, e))
    }
}

/// An exclusive lock on `path` (created if missing), held until dropped.
#[derive(Debug)]
pub struct Lock(#[allow(dead_code)] File); // held for its lock, released on drop

fn lock_file(path: &Path) -> Result<File> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| ExperimentError::io(dir, e))?;
    }
    OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(|e| ExperimentError::io(path, e))
}

impl Lock {
    /// Waits for the lock on `path`.
    pub fn wait(path: &Path) -> Result<Self> {
        let f = lock_file(path)?;
        f.lock().map_err(|e| ExperimentError::io(path, e))?;
        Ok(Self(f))
    }

    /// The lock on `path` if nobody holds it, else `None`.
    pub fn try_take(path: &Path) -> Result<Option<Self>> {
        let f = lock_file(path)?;
        match f.try_lock() {
            Ok(()) => Ok(Some(Self(f))),
            Err(std::fs::TryLockError::WouldBlock) => Ok(None),
            Err(std::fs::TryLockError::Error(e)) => Err(ExperimentError::io(path, e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(key: &str) -> Record {
        let mut r: Record = serde_json::from_str(include_str!("../tests/fixtures/record.json"))
            .expect("fixture record");
        r.key = key.into();
        r
    }

    #[test]
    fn two_writers_lose_nothing_and_readers_merge_in_one_order() {
        let dir = tempfile::tempdir().expect("temp");
        let run = RunDir::new(dir.path());
        let registry = Registry::default();
        let mut a = RecordLog::new(&run);
        let mut b = RecordLog::new(&run);
        a.append(&[record("k1"), record("k2")]).expect("a");
        b.append(&[record("k2"), record("k3")]).expect("b");
        a.append(&[record("k4")]).expect("a again");
        let merged = read_run(&run, &registry).expect("read");
        let keys: Vec<&str> = merged.records.iter().map(|r| r.key.as_str()).collect();
        let mut sorted = keys.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, ["k1", "k2", "k3", "k4"]);
        assert_eq!(merged.duplicates, 1);
        // the same order for every reader
        let again = read_run(&run, &registry).expect("read");
        assert_eq!(
            again
                .records
                .iter()
                .map(|r| r.key.as_str())
                .collect::<Vec<_>>(),
            keys
        );
    }

    #[test]
    fn a_torn_last_line_is_skipped_and_a_damaged_line_is_an_error() {
        let dir = tempfile::tempdir().expect("temp");
        let run = RunDir::new(dir.path());
        let registry = Registry::default();
        let mut log = RecordLog::new(&run);
        log.append(&[record("k1"), record("k2")]).expect("append");
        let path = log.path().expect("written").to_path_buf();
        let text = std::fs::read_to_string(&path).expect("read");
        // killed mid-write: the second line lost its end
        std::fs::write(&path, &text[..text.len() - 40]).expect("truncate");
        let r = read_run(&run, &registry).expect("torn line skipped");
        assert_eq!((r.records.len(), r.torn.len()), (1, 1));
        // another writer redid it: nothing is missing any more
        let mut redo = RecordLog::new(&run);
        redo.append(&[record("k2")]).expect("append");
        let r = read_run(&run, &registry).expect("read");
        assert_eq!((r.records.len(), r.torn.len()), (2, 0));
        std::fs::remove_file(redo.path().expect("written")).expect("rm");
        // a damaged complete line
        std::fs::write(&path, format!("{}garbage\n", &text[..text.len() / 2 + 1])).expect("write");
        let e = read_run(&run, &registry).expect_err("damaged");
        assert!(
            e.to_string().contains("line 1") || e.to_string().contains("line 2"),
            "{e}"
        );
        assert!(e.to_string().contains(&path.display().to_string()), "{e}");
    }

    #[test]
    fn a_lock_is_exclusive_until_dropped() {
        let dir = tempfile::tempdir().expect("temp");
        let p = dir.path().join("m.lock");
        let held = Lock::wait(&p).expect("lock");
        assert!(Lock::try_take(&p).expect("try").is_none());
        drop(held);
        assert!(Lock::try_take(&p).expect("try").is_some());
    }
}
