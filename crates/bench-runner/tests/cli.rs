//! End to end: the real `bench-runner` binary on a small synthetic IDX dataset in a temp dir.

use std::path::Path;
use std::process::{Command, Output};

use advrob_data::synthetic;

fn bench_runner(args: &[&str], cwd: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_bench-runner"))
        .args(args)
        .current_dir(cwd)
        .env("RUST_LOG", "warn")
        .env_remove("ADVROB_MIRROR")
        .output()
        .expect("bench-runner runs")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

const QUICK: &[&str] = &[
    "run",
    "--dataset-dir",
    "ds",
    "--out",
    "out",
    "--epochs",
    "1",
    "--batch-size",
    "32",
    "--hidden",
    "16",
    "--eps",
    "0,0.1,0.3",
];

/// Runs the quick matrix, which must succeed and print `summary`.
fn run_quick(dir: &Path, summary: &str) {
    let o = bench_runner(QUICK, dir);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains(summary), "{}", text(&o));
}

fn records(dir: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(dir.join("out/records.jsonl"))
        .expect("records")
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect()
}

#[test]
fn run_writes_records_with_provenance_and_resumes() {
    let tmp = tempfile::tempdir().expect("temp");
    synthetic::write_dataset(&tmp.path().join("ds"), 400, 100, 7).expect("dataset");

    run_quick(
        tmp.path(),
        "3 new records, 0 already there; 1 models trained",
    );
    let recs = records(tmp.path());
    assert_eq!(recs.len(), 3);
    let r = &recs[1];
    for field in [
        "model_config",
        "train_config",
        "seed",
        "backend",
        "device",
        "versions",
        "dataset_files",
        "checkpoint_sha256",
        "train_seconds",
        "seconds",
        "adversarial_accuracy",
        "success_rate",
        "mean_linf",
    ] {
        assert!(r.get(field).is_some(), "record lacks {field}: {r}");
    }
    assert_eq!(r["dataset_verified"], false);
    assert!(
        r["clean_accuracy"].as_f64().expect("number") > 0.8,
        "learns the synthetic task: {r}"
    );
    assert!(r["mean_linf"].as_f64().expect("number") <= r["eps"].as_f64().expect("eps") + 1e-6);

    // rerun: nothing to do
    run_quick(
        tmp.path(),
        "0 new records, 3 already there; 0 models trained, 0 loaded",
    );

    // a run killed after writing some records: the missing ones are made, from the cached model
    let path = tmp.path().join("out/records.jsonl");
    let kept: Vec<String> = std::fs::read_to_string(&path)
        .expect("read")
        .lines()
        .take(2)
        .map(String::from)
        .collect();
    std::fs::write(&path, kept.join("\n") + "\n").expect("write");
    run_quick(
        tmp.path(),
        "1 new records, 2 already there; 0 models trained, 1 loaded",
    );
    assert_eq!(records(tmp.path()).len(), 3);
}

#[test]
fn bad_inputs_are_clear_errors() {
    let tmp = tempfile::tempdir().expect("temp");
    synthetic::write_dataset(&tmp.path().join("ds"), 50, 20, 7).expect("dataset");

    let o = bench_runner(&[QUICK, &["--backends", "tpu"]].concat(), tmp.path());
    assert!(!o.status.success());
    assert!(
        text(&o).contains("unknown backend \"tpu\"") && text(&o).contains("available: ndarray"),
        "{}",
        text(&o)
    );

    let o = bench_runner(&[QUICK, &["--eps", "0.1,-0.2"]].concat(), tmp.path());
    assert!(!o.status.success());
    assert!(text(&o).contains("invalid eps: -0.2"), "{}", text(&o));

    let o = bench_runner(
        &["download", "--data-dir", "data", "--mirror", "no/such/dir"],
        tmp.path(),
    );
    assert!(!o.status.success());
    assert!(
        text(&o).contains("mirror directory no/such/dir does not exist"),
        "{}",
        text(&o)
    );
    assert!(
        !tmp.path()
            .join("data/mnist/train-images-idx3-ubyte")
            .exists()
    );

    // a truncated gzip file: the error names it, and no record file is started
    let f = tmp.path().join("ds/t10k-images-idx3-ubyte.gz");
    let bytes = std::fs::read(&f).expect("read");
    std::fs::write(&f, &bytes[..bytes.len() / 2]).expect("truncate");
    let o = bench_runner(QUICK, tmp.path());
    assert!(!o.status.success());
    assert!(
        text(&o).contains("t10k-images-idx3-ubyte.gz"),
        "{}",
        text(&o)
    );
    assert!(!tmp.path().join("out/records.jsonl").exists());
}

#[test]
fn a_mirror_with_wrong_content_is_refused_and_nothing_is_cached() {
    let tmp = tempfile::tempdir().expect("temp");
    synthetic::write_dataset(&tmp.path().join("fake-mirror"), 30, 10, 1).expect("dataset");
    let o = bench_runner(
        &["download", "--data-dir", "data", "--mirror", "fake-mirror"],
        tmp.path(),
    );
    assert!(!o.status.success());
    assert!(text(&o).contains("SHA-256 mismatch"), "{}", text(&o));
    let left = std::fs::read_dir(tmp.path().join("data/mnist"))
        .expect("dir")
        .count();
    assert_eq!(left, 0, "nothing half-written");
}

#[test]
fn backends_lists_ndarray() {
    let tmp = tempfile::tempdir().expect("temp");
    let o = bench_runner(&["backends"], tmp.path());
    assert!(o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .any(|l| l == "ndarray")
    );
}
