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

use std::collections::{BTreeMap, BTreeSet};
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
    /// Each key once, in the order of the logs (file name, then line): only records that passed
    /// [`validate`] and agree with every other copy of their key.
    pub records: Vec<Record>,
    /// Records of a key already seen with the same result (several writers did the same work).
    pub duplicates: usize,
    /// Logs that end in a torn line (a writer killed mid-write, or one still writing) whose
    /// record no log holds whole: a result missing until a run redoes it.
    pub torn: Vec<PathBuf>,
    /// Complete lines that are not used: not a record, a record that fails [`validate`], or a
    /// copy of a key whose copies disagree. The rest of the directory stays readable.
    pub quarantined: Vec<Quarantined>,
    /// Keys whose valid copies disagree (the same work, different results): none of them is
    /// used, and a run does not redo the work (a third copy would settle nothing); the user
    /// removes the wrong line.
    pub conflicts: BTreeSet<String>,
}

impl RunRecords {
    /// The records by key.
    pub fn by_key(&self) -> BTreeMap<&str, &Record> {
        self.records.iter().map(|r| (r.key.as_str(), r)).collect()
    }

    /// Keys a run must not compute again: those with a record, and those in conflict.
    pub fn settled(&self) -> BTreeSet<String> {
        self.records
            .iter()
            .map(|r| r.key.clone())
            .chain(self.conflicts.iter().cloned())
            .collect()
    }
}

/// A complete line of a record log that is not used, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Quarantined {
    /// The log.
    pub file: PathBuf,
    /// The 1-based line.
    pub line: usize,
    /// Why it is not used.
    pub reason: String,
}

impl std::fmt::Display for Quarantined {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: line {}: {}",
            self.file.display(),
            self.line,
            self.reason
        )
    }
}

/// Checks that a record read from a log can be true: the schema is one this build knows, the
/// counts and the accuracies agree with each other and lie in their ranges (robust never above
/// clean, `adversarial_correct ≤ clean_correct ≤ examples`, rates in [0, 1]), the per-example
/// results count what the record says, and the key is the one its model, attack and ε give.
/// Figures that may be undefined (the norms, the mean confidence) may be NaN.
pub fn validate(r: &Record) -> std::result::Result<(), String> {
    if r.schema == 0 || r.schema > SCHEMA {
        return Err(format!(
            "schema {}: not a schema this build reads (1 to {SCHEMA}; a newer advrob wrote it?)",
            r.schema
        ));
    }
    let e = &r.eval;
    let ratio = |n: usize| n as f64 / e.examples as f64;
    let close = |a: f64, b: f64| (a - b).abs() <= 1e-9;
    let in_unit = |name: &str, v: f64| {
        if (0.0..=1.0).contains(&v) {
            Ok(())
        } else {
            Err(format!("{name} = {v}: outside [0, 1]"))
        }
    };
    if e.examples == 0 {
        return Err("examples = 0: a record of no examples".into());
    }
    if e.clean_correct > e.examples {
        return Err(format!(
            "clean_correct = {} exceeds examples = {}",
            e.clean_correct, e.examples
        ));
    }
    in_unit("clean_accuracy", e.clean_accuracy)?;
    in_unit("adversarial_accuracy", e.adversarial_accuracy)?;
    if !close(e.clean_accuracy, ratio(e.clean_correct)) {
        return Err(format!(
            "clean_accuracy = {} but clean_correct / examples = {} / {}",
            e.clean_accuracy, e.clean_correct, e.examples
        ));
    }
    if !close(e.adversarial_accuracy, ratio(e.adversarial_correct)) {
        return Err(format!(
            "adversarial_accuracy = {} but adversarial_correct / examples = {} / {}",
            e.adversarial_accuracy, e.adversarial_correct, e.examples
        ));
    }
    // schema 1 counted an example the attack happened to repair as robust
    if r.schema >= 2 && e.adversarial_correct > e.clean_correct {
        return Err(format!(
            "adversarial_accuracy = {} above clean_accuracy = {}: robust accuracy never exceeds clean accuracy",
            e.adversarial_accuracy, e.clean_accuracy
        ));
    }
    for (name, v) in [
        ("success_rate", e.success_rate),
        ("targeted_success", e.targeted_success),
    ] {
        if let Some(v) = v {
            in_unit(name, v)?;
        }
    }
    if !(e.eps.is_finite() && e.eps >= 0.0) {
        return Err(format!("eps = {}: not a budget", e.eps));
    }
    for (name, v) in [("mean_linf", e.mean_linf), ("mean_l2", e.mean_l2)] {
        if v < 0.0 {
            return Err(format!("{name} = {v}: a norm is never negative"));
        }
    }
    if !(e.mean_confidence.is_nan() || (0.0..=1.0).contains(&e.mean_confidence)) {
        return Err(format!(
            "mean_confidence = {}: outside [0, 1]",
            e.mean_confidence
        ));
    }
    if let Some(bits) = &e.adversarial_correct_examples
        && (bits.0.len() != e.examples || bits.count() != e.adversarial_correct)
    {
        return Err(format!(
            "adversarial_correct_examples holds {} of {} examples robust, the record says {} of {}",
            bits.count(),
            bits.0.len(),
            e.adversarial_correct,
            e.examples
        ));
    }
    if r.eval_key().is_none() {
        return Err(format!(
            "key {:?} is not the key of model key {:?}, attack {:?} and eps = {}",
            r.key,
            r.model_key(),
            r.attack,
            e.eps
        ));
    }
    Ok(())
}

/// What two copies of one key must agree on: the weights and every count (floats such as the
/// norms may differ in the last bits between writers on a GPU; the counts may not).
fn same_result(a: &Record, b: &Record) -> bool {
    type Counts<'a> = (
        &'a str,
        (usize, usize, usize),
        &'a Option<advrob_eval::Bits>,
        Option<Vec<usize>>,
    );
    fn counts(r: &Record) -> Counts<'_> {
        let e = &r.eval;
        (
            r.checkpoint_sha256.as_str(),
            (e.examples, e.clean_correct, e.adversarial_correct),
            &e.adversarial_correct_examples,
            e.components
                .as_ref()
                .map(|c| c.iter().map(|c| c.broken).collect::<Vec<_>>()),
        )
    }
    counts(a) == counts(b)
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

/// One log read: its records with their line numbers, the lines quarantined, and its torn last
/// line if it has one.
type Log = (Vec<(usize, Record)>, Vec<Quarantined>, Option<Torn>);

/// Parses one log. A complete line that is not a valid record is quarantined, not an error: the
/// rest of the directory stays readable.
fn read_log(path: &Path) -> Result<Log> {
    let bytes = std::fs::read(path).map_err(|e| ExperimentError::io(path, e))?;
    let text = String::from_utf8_lossy(&bytes);
    let mut lines: Vec<&str> = text.split_inclusive('\n').collect();
    let torn = if !bytes.is_empty() && !bytes.ends_with(b"\n") {
        lines.pop().map(torn_key)
    } else {
        None
    };
    let mut out = Vec::new();
    let mut quarantined = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match parse_line(line) {
            Ok(r) => out.push((i + 1, r)),
            Err(reason) => quarantined.push(Quarantined {
                file: path.to_path_buf(),
                line: i + 1,
                reason,
            }),
        }
    }
    Ok((out, quarantined, torn))
}

/// Why a record without typed attack metadata is not used: [`migrate`] adds it.
pub const NO_ATTACK_INFO: &str = "no typed attack metadata (attack_info): written by an advrob before it; migrate the run directory once";

/// One line as a valid record with its attack metadata, or why it is not one.
fn parse_line(line: &str) -> std::result::Result<Record, String> {
    let r: Record = serde_json::from_str(line).map_err(|e| format!("not a record: {e}"))?;
    if r.attack_info.is_none() {
        return Err(NO_ATTACK_INFO.to_string());
    }
    validate(&r).map_err(|e| format!("not a valid record: {e}"))?;
    Ok(r)
}

/// What [`migrate`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Migrated {
    /// Logs rewritten.
    pub files: Vec<PathBuf>,
    /// Records given their attack metadata.
    pub records: usize,
}

/// Upgrades the records of `run` written by earlier versions, once: a record without typed attack
/// metadata gets it from its attack's settings through `registry`, and its log is rewritten
/// (atomically; every other line, a torn last line included, kept as it was). Reading a run needs
/// no registry afterwards. Run it while no writer appends to the directory.
pub fn migrate(run: &RunDir, registry: &Registry) -> Result<Migrated> {
    let mut out = Migrated::default();
    for log in logs(run)? {
        let bytes = std::fs::read(&log).map_err(|e| ExperimentError::io(&log, e))?;
        let text = String::from_utf8_lossy(&bytes);
        let mut changed = 0;
        let mut lines = Vec::new();
        for line in text.split_inclusive('\n') {
            let Some(body) = line.strip_suffix('\n') else {
                lines.push(line.to_string());
                continue;
            };
            match serde_json::from_str::<Record>(body) {
                Ok(mut r) if r.attack_info.is_none() => {
                    let spec = serde_json::from_value(r.attack_config.clone()).map_err(|e| {
                        ExperimentError::file(&log, format!("record {}: attack_config: {e}", r.key))
                    })?;
                    let described = registry.describe(&spec).map_err(|e| {
                        ExperimentError::file(&log, format!("record {}: attack_config: {e}", r.key))
                    })?;
                    r.attack_info = Some(described.info);
                    let json = serde_json::to_string(&r)
                        .map_err(|e| ExperimentError::file(&log, e.to_string()))?;
                    lines.push(json + "\n");
                    changed += 1;
                }
                _ => lines.push(line.to_string()),
            }
        }
        if changed > 0 {
            advrob_data::atomic_write(&log, lines.concat().as_bytes())?;
            out.files.push(log);
            out.records += changed;
        }
    }
    Ok(out)
}

/// Reads and merges every log of `run` (none: no records). A complete line that is not a valid
/// record (one without typed attack metadata among them: [`migrate`] upgrades those) is
/// quarantined with its file, line and reason; a torn last line is skipped.
pub fn read_run(run: &RunDir) -> Result<RunRecords> {
    let mut out = RunRecords::default();
    let mut torn = Vec::new();
    // every valid copy of every key, in the order of the logs
    let mut copies: Vec<(PathBuf, usize, Record)> = Vec::new();
    for log in logs(run)? {
        let (records, quarantined, cut) = read_log(&log)?;
        if let Some(key) = cut {
            torn.push((log.clone(), key));
        }
        out.quarantined.extend(quarantined);
        copies.extend(records.into_iter().map(|(line, r)| (log.clone(), line, r)));
    }
    let mut first: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, (_, _, r)) in copies.iter().enumerate() {
        match first.get(r.key.as_str()) {
            None => {
                first.insert(&r.key, i);
            }
            Some(&j) if !same_result(&copies[j].2, r) => {
                out.conflicts.insert(r.key.clone());
            }
            Some(_) => {}
        }
    }
    for (i, (file, line, r)) in copies.iter().enumerate() {
        if out.conflicts.contains(&r.key) {
            let j = first[r.key.as_str()];
            let other = if i == j {
                copies
                    .iter()
                    .find(|(_, _, o)| o.key == r.key && !same_result(o, r))
            } else {
                Some(&copies[j])
            };
            out.quarantined.push(Quarantined {
                file: file.clone(),
                line: *line,
                reason: format!(
                    "record {} conflicts with {}: the same work with another result; neither is used (remove the wrong line)",
                    r.key,
                    other.map_or_else(String::new, |(f, l, _)| format!(
                        "{}: line {l}",
                        f.display()
                    ))
                ),
            });
        } else if first[r.key.as_str()] == i {
            out.records.push(r.clone());
        } else {
            out.duplicates += 1;
        }
    }
    // a run re-reads its records before each model: say each once
    static WARNED: std::sync::Mutex<BTreeSet<String>> = std::sync::Mutex::new(BTreeSet::new());
    for q in &out.quarantined {
        let line = q.to_string();
        let new = WARNED
            .lock()
            .map(|mut w| w.insert(line.clone()))
            .unwrap_or(true);
        if new {
            log::warn!("{line}: quarantined, not used");
        }
    }
    // a cut line whose record another writer has since written whole is no loss
    for (log, key) in torn {
        if key.is_some_and(|k| first.contains_key(k.as_str()) && !out.conflicts.contains(&k)) {
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
pub fn read_records(run: &RunDir) -> Result<Vec<Record>> {
    Ok(read_run(run)?.records)
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

    /// The fixture record (model key `m`, FGSM, ε 0.1) with the evaluation part of its key `key`.
    fn record(key: &str) -> Record {
        let mut r: Record = serde_json::from_str(include_str!("../tests/fixtures/record.json"))
            .expect("fixture record");
        r.key = format!("m/fgsm/{key}/0.1");
        r
    }

    /// The evaluation parts of the keys of `records`.
    fn parts(records: &[Record]) -> Vec<&str> {
        records
            .iter()
            .map(|r| r.key.split('/').nth(2).unwrap_or_default())
            .collect()
    }

    #[test]
    fn records_of_earlier_versions_are_quarantined_until_migrated_once() {
        let dir = tempfile::tempdir().expect("temp");
        let run = RunDir::new(dir.path());
        let mut old = record("old");
        old.attack_info = None;
        let new = record("new");
        // an earlier version's line, a current one and a torn last line
        let mut text = String::new();
        for r in [&old, &new] {
            text.push_str(&serde_json::to_string(r).expect("json"));
            text.push('\n');
        }
        text.push_str("{\"schema\":2,\"key\":\"m/fgsm/cut");
        std::fs::create_dir_all(run.record_logs()).expect("mkdir");
        let log = run.record_logs().join("w.jsonl");
        std::fs::write(&log, &text).expect("write");
        let read = read_run(&run).expect("read");
        assert_eq!(parts(&read.records), ["new"]);
        assert_eq!(read.quarantined.len(), 1);
        assert_eq!(read.quarantined[0].reason, NO_ATTACK_INFO);

        let m = migrate(&run, &Registry::default()).expect("migrate");
        assert_eq!((m.files, m.records), (vec![log.clone()], 1));
        let read = read_run(&run).expect("read");
        assert_eq!(parts(&read.records), ["old", "new"]);
        assert!(read.quarantined.is_empty(), "{:?}", read.quarantined);
        assert_eq!(read.records[0].attack_info, new.attack_info);
        // the other lines as they were, the torn one included
        let after = std::fs::read_to_string(&log).expect("read");
        let lines: Vec<&str> = after.split_inclusive('\n').collect();
        assert_eq!(
            lines[1..],
            text.split_inclusive('\n').collect::<Vec<_>>()[1..]
        );
        // once: nothing left to do
        assert_eq!(
            migrate(&run, &Registry::default()).expect("again"),
            Migrated::default()
        );
    }

    #[test]
    fn records_that_cannot_be_true_are_quarantined_and_the_rest_read() {
        let dir = tempfile::tempdir().expect("temp");
        let run = RunDir::new(dir.path());
        let good = record("k1");
        assert_eq!(validate(&good), Ok(()));
        type Forgery = (&'static str, fn(&mut Record));
        let forged: [Forgery; 7] = [
            ("adversarial_accuracy = 1.5: outside [0, 1]", |r| {
                r.eval.adversarial_accuracy = 1.5
            }),
            ("adversarial_accuracy = 0.5 but adversarial_correct", |r| {
                r.eval.adversarial_accuracy = 0.5
            }),
            ("above clean_accuracy", |r| {
                r.eval.clean_correct = 3;
                r.eval.clean_accuracy = 0.75;
            }),
            ("mean_linf = -0.1: a norm is never negative", |r| {
                r.eval.mean_linf = -0.1
            }),
            (
                "is not the key of model key \"m\", attack \"fgsm\" and eps = 0.2",
                |r| r.eval.eps = 0.2,
            ),
            ("schema 3: not a schema this build reads", |r| r.schema = 3),
            ("adversarial_correct_examples holds 4 of 4", |r| {
                r.eval.adversarial_correct = 3;
                r.eval.adversarial_accuracy = 0.75;
            }),
        ];
        let mut log = RecordLog::new(&run);
        log.append(std::slice::from_ref(&good)).expect("append");
        for (i, (says, f)) in forged.iter().enumerate() {
            let mut r = record(&format!("bad{i}"));
            f(&mut r);
            let e = validate(&r).expect_err(says);
            assert!(e.contains(says), "{says}: {e}");
            // written by hand: the writer itself only writes what it computed
            let mut line = serde_json::to_string(&r).expect("json");
            line.push('\n');
            let path = log.path().expect("written").to_path_buf();
            let mut text = std::fs::read_to_string(&path).expect("read");
            text.push_str(&line);
            std::fs::write(&path, text).expect("write");
        }
        let read = read_run(&run).expect("the rest stays readable");
        assert_eq!(parts(&read.records), ["k1"]);
        assert_eq!(read.quarantined.len(), forged.len());
        assert_eq!(read.quarantined[0].line, 2);
        assert!(
            read.quarantined[0]
                .to_string()
                .contains("line 2: not a valid record")
        );
        assert!(read.conflicts.is_empty());
    }

    #[test]
    fn copies_of_a_key_that_disagree_are_both_quarantined_in_either_order() {
        for flip in [false, true] {
            let dir = tempfile::tempdir().expect("temp");
            let run = RunDir::new(dir.path());
            let a = record("k1");
            let mut b = record("k1");
            b.checkpoint_sha256 = "0".repeat(64);
            let (first, second) = if flip {
                (b.clone(), a.clone())
            } else {
                (a.clone(), b)
            };
            RecordLog::new(&run)
                .append(&[first, record("k2")])
                .expect("a");
            RecordLog::new(&run)
                .append(&[second, a.clone()])
                .expect("b");
            let read = read_run(&run).expect("read");
            assert_eq!(parts(&read.records), ["k2"]);
            assert_eq!(read.quarantined.len(), 3, "{:?}", read.quarantined);
            assert!(
                read.quarantined
                    .iter()
                    .all(|q| q.reason.contains("conflicts with"))
            );
            assert_eq!(read.conflicts.len(), 1);
            // settled: a run does not redo it
            assert!(read.settled().contains(&a.key));
        }
    }

    #[test]
    fn an_undefined_figure_is_written_and_read_back() {
        let dir = tempfile::tempdir().expect("temp");
        let run = RunDir::new(dir.path());
        let mut r = record("k1");
        r.eval.mean_confidence = f64::NAN;
        r.eval.mean_l2 = f64::INFINITY;
        RecordLog::new(&run).append(&[r]).expect("append");
        let read = read_run(&run).expect("read");
        assert_eq!(read.records.len(), 1, "{:?}", read.quarantined);
        assert!(read.records[0].eval.mean_confidence.is_nan());
        assert!(read.records[0].eval.mean_l2.is_nan());
    }

    #[test]
    fn two_writers_lose_nothing_and_readers_merge_in_one_order() {
        let dir = tempfile::tempdir().expect("temp");
        let run = RunDir::new(dir.path());
        let mut a = RecordLog::new(&run);
        let mut b = RecordLog::new(&run);
        a.append(&[record("k1"), record("k2")]).expect("a");
        b.append(&[record("k2"), record("k3")]).expect("b");
        a.append(&[record("k4")]).expect("a again");
        let merged = read_run(&run).expect("read");
        let keys: Vec<&str> = parts(&merged.records);
        let mut sorted = keys.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, ["k1", "k2", "k3", "k4"]);
        assert_eq!(merged.duplicates, 1);
        // the same order for every reader
        let again = read_run(&run).expect("read");
        assert_eq!(parts(&again.records), keys);
    }

    #[test]
    fn a_torn_last_line_is_skipped_and_a_damaged_line_is_quarantined() {
        let dir = tempfile::tempdir().expect("temp");
        let run = RunDir::new(dir.path());
        let mut log = RecordLog::new(&run);
        log.append(&[record("k1"), record("k2")]).expect("append");
        let path = log.path().expect("written").to_path_buf();
        let text = std::fs::read_to_string(&path).expect("read");
        // killed mid-write: the second line lost its end
        std::fs::write(&path, &text[..text.len() - 40]).expect("truncate");
        let r = read_run(&run).expect("torn line skipped");
        assert_eq!((r.records.len(), r.torn.len()), (1, 1));
        // another writer redid it: nothing is missing any more
        let mut redo = RecordLog::new(&run);
        redo.append(&[record("k2")]).expect("append");
        let r = read_run(&run).expect("read");
        assert_eq!((r.records.len(), r.torn.len()), (2, 0));
        std::fs::remove_file(redo.path().expect("written")).expect("rm");
        // a damaged complete line: quarantined, named with its file and line
        let first_line = text.lines().next().expect("line").to_string();
        std::fs::write(&path, format!("garbage\n{first_line}\n")).expect("write");
        let r = read_run(&run).expect("the rest stays readable");
        assert_eq!(r.records.len(), 1);
        assert_eq!(r.quarantined.len(), 1);
        let q = r.quarantined[0].to_string();
        assert!(
            q.contains(&format!("{}: line 1: not a record", path.display())),
            "{q}"
        );
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
