//! What the end-to-end tests share: the real `bench-runner` binary and a run directory's records.
#![allow(dead_code)] // each test file uses its own part

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// `bench-runner args` in `cwd`, quiet, without a mirror from the environment.
pub fn bench_runner(args: &[&str], cwd: &Path) -> Output {
    bench_runner_env(args, cwd, &[])
}

/// [`bench_runner`] with extra environment variables.
pub fn bench_runner_env(args: &[&str], cwd: &Path, env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_bench-runner"));
    c.args(args)
        .current_dir(cwd)
        .env("RUST_LOG", "warn")
        .env_remove("ADVROB_MIRROR");
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("bench-runner runs")
}

/// Its standard output and error, together.
pub fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Asserts that the command failed and that its output names every one of `parts`.
#[allow(dead_code)]
pub fn assert_fails_naming(o: &Output, parts: &[&str]) {
    assert!(!o.status.success(), "{}", text(o));
    let t = text(o);
    assert!(parts.iter().all(|p| t.contains(p)), "{t}");
}

/// The record logs of the run directory `run`, by name.
pub fn logs(run: &Path) -> Vec<PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(run.join("records"))
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    v.sort();
    v
}

/// Every record line of the run directory `run`.
pub fn lines(run: &Path) -> Vec<String> {
    logs(run)
        .iter()
        .flat_map(|p| {
            std::fs::read_to_string(p)
                .expect("log")
                .lines()
                .map(String::from)
                .collect::<Vec<_>>()
        })
        .collect()
}

/// The record lines of the run directory `run` that a writer finished (newline-terminated): a
/// writer killed mid-line leaves a torn last line that the run ignores and redoes.
#[allow(dead_code)]
pub fn complete_lines(run: &Path) -> usize {
    logs(run)
        .iter()
        .map(|p| {
            std::fs::read_to_string(p)
                .expect("log")
                .matches('\n')
                .count()
        })
        .sum()
}

/// Every record of the run directory `run`, parsed.
pub fn records(run: &Path) -> Vec<serde_json::Value> {
    lines(run)
        .iter()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect()
}

/// Replaces the logs of the run directory `run` by one holding `kept`: records lost to a crash.
pub fn keep_only(run: &Path, kept: &[String]) {
    for p in logs(run) {
        std::fs::remove_file(p).expect("remove");
    }
    std::fs::write(run.join("records/kept.jsonl"), kept.join("\n") + "\n").expect("write");
}

/// Asserts that the report directories `a` and `b` hold the same tables, byte for byte (they
/// hold no wall times).
pub fn same_tables(a: &Path, b: &Path) {
    for f in [
        "results.md",
        "summary.md",
        "verdict.md",
        "intervals.csv",
        "cards.md",
    ] {
        let x = std::fs::read_to_string(a.join(f)).expect("table");
        let y = std::fs::read_to_string(b.join(f)).expect("table");
        assert!(
            x == y,
            "{f} differs between {} and {}:\n--- {0}\n{x}\n--- {1}\n{y}",
            a.display(),
            b.display()
        );
    }
}
