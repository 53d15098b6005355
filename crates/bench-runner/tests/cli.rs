//! End to end: the real `bench-runner` binary on a small synthetic IDX dataset in a temp dir.

mod common;

use std::path::Path;

use advrob_data::synthetic;
use common::{bench_runner, text};

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
    "--attack-labels",
    "true",
];

/// The backends the end-to-end runs use: every compiled-in one, or `ADVROB_TEST_BACKENDS`.
fn backends() -> Vec<String> {
    advrob_model::backend::test_backend_names()
}

/// Runs the quick matrix on `backend`, which must succeed and print `summary`.
fn run_quick(dir: &Path, backend: &str, summary: &str) {
    let o = bench_runner(&[QUICK, &["--backends", backend]].concat(), dir);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains(summary), "{}", text(&o));
}

/// The record logs of the run in `dir/out`.
fn logs(dir: &Path) -> Vec<std::path::PathBuf> {
    common::logs(&dir.join("out"))
}

/// Every record line of the run in `dir/out`.
fn lines(dir: &Path) -> Vec<String> {
    common::lines(&dir.join("out"))
}

/// Replaces the logs of the run in `dir/out` by one holding `kept`.
fn keep_only(dir: &Path, kept: &[String]) {
    common::keep_only(&dir.join("out"), kept);
}

/// Every record of the run in `dir/out`.
fn records(dir: &Path) -> Vec<serde_json::Value> {
    common::records(&dir.join("out"))
}

#[test]
fn run_writes_records_with_provenance_and_resumes() {
    for backend in backends() {
        run_writes_records_on(&backend);
    }
}

fn run_writes_records_on(backend: &str) {
    let tmp = tempfile::tempdir().expect("temp");
    synthetic::write_dataset(&tmp.path().join("ds"), 400, 100, 7).expect("dataset");

    run_quick(
        tmp.path(),
        backend,
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
    assert_eq!(r["backend"], backend);
    assert!(
        r["clean_accuracy"].as_f64().expect("number") > 0.8,
        "learns the synthetic task: {r}"
    );
    assert!(r["mean_linf"].as_f64().expect("number") <= r["eps"].as_f64().expect("eps") + 1e-6);

    // rerun: nothing to do
    run_quick(
        tmp.path(),
        backend,
        "0 new records, 3 already there; 0 models trained, 0 loaded",
    );

    // a run killed after writing some records: the missing ones are made, from the cached model
    let kept: Vec<String> = lines(tmp.path()).into_iter().take(2).collect();
    keep_only(tmp.path(), &kept);
    run_quick(
        tmp.path(),
        backend,
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
    assert!(logs(tmp.path()).is_empty(), "no record log started");
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
            .any(|l| l.split('\t').next() == Some("ndarray") && l.contains("calling thread"))
    );
}

const DEFENSES: &str = r#"
name = "defenses"
eps = [0.0, 0.2]
[train]
epochs = 2
batch_size = 20
[[models]]
name = "base"
hidden = [16]
[[models]]
name = "at"
from = "base"
epochs = 1
defense = { kind = "adversarial-training", eps = 0.1 }
[[models]]
name = "quantized"
hidden = [16]
defense = { kind = "gradient-masking", mechanism = "quantize", levels = 8 }
[[models]]
name = "kd"
hidden = [16]
teacher = "base"
defense = { kind = "distillation", temperature = 1.0 }
[[attacks]]
kind = "fgsm"
[[attacks]]
kind = "fgsm"
target = { shift = 2 }
"#;

fn run_defenses(dir: &Path, backend: &str, summary: &str) {
    let o = bench_runner(
        &[
            "run",
            "--config",
            "m.toml",
            "--dataset-dir",
            "ds",
            "--out",
            "out",
            "--backends",
            backend,
        ],
        dir,
    );
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains(summary), "{}", text(&o));
}

#[test]
fn defenses_train_in_order_record_their_settings_and_resume() {
    for backend in backends() {
        defenses_on(&backend);
    }
}

fn defenses_on(backend: &str) {
    let tmp = tempfile::tempdir().expect("temp");
    synthetic::write_dataset(&tmp.path().join("ds"), 400, 100, 3).expect("dataset");
    std::fs::write(tmp.path().join("m.toml"), DEFENSES).expect("matrix");

    // 4 models × 2 attacks × 2 ε
    run_defenses(
        tmp.path(),
        backend,
        "16 new records, 0 already there; 4 models trained, 0 loaded",
    );
    let recs = records(tmp.path());
    let find = |model: &str, attack: &str, eps: f64| {
        recs.iter()
            .find(|r| r["model"] == model && r["attack"] == attack && r["eps"] == eps)
            .unwrap_or_else(|| panic!("no record {model} {attack} {eps}"))
            .clone()
    };
    let at = find("at", "fgsm", 0.2);
    assert_eq!(at["defense"], "adversarial-training");
    assert_eq!(at["defense_config"]["eps"], 0.1);
    assert_eq!(at["fine_tuned_from"], "base");
    assert_eq!(at["attack_labels"], "true");
    assert_eq!(at["loss"], "cross-entropy");
    assert_eq!(
        at["stages"][0]["record"]["epochs"].as_array().map(Vec::len),
        Some(1)
    );
    // the quantised model is deployed with its rounding, which leaves FGSM nothing to follow
    let q = find("quantized", "fgsm", 0.2);
    assert_eq!(q["deploy_config"]["quantize"], 8);
    assert_eq!(q["mean_linf"], 0.0);
    assert_eq!(q["adversarial_accuracy"], q["clean_accuracy"]);
    // distillation learned from the given teacher: one stage, no teacher training
    let kd = find("kd", "fgsm", 0.0);
    assert_eq!(kd["teacher"], "base");
    assert_eq!(kd["stages"].as_array().map(Vec::len), Some(1));
    // targeted records carry their success; untargeted ones do not
    let t = find("base", "fgsm-targeted-shift2", 0.2);
    assert!(t["targeted_success"].as_f64().is_some(), "{t}");
    assert!(find("base", "fgsm", 0.2)["targeted_success"].is_null());

    run_defenses(
        tmp.path(),
        backend,
        "0 new records, 16 already there; 0 models trained, 0 loaded",
    );

    // lose the fine-tuned model's records and checkpoint: it is trained again from the cached
    // base model, which is loaded (not retrained) because it is needed
    let kept: Vec<String> = lines(tmp.path())
        .into_iter()
        .filter(|l| !l.contains("\"model\":\"at\""))
        .collect();
    assert_eq!(kept.len(), 12);
    keep_only(tmp.path(), &kept);
    for entry in std::fs::read_dir(tmp.path().join("out/models")).expect("models") {
        let p = entry.expect("entry").path();
        if p.is_dir()
            && p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("at-"))
        {
            std::fs::remove_dir_all(&p).expect("remove");
        }
    }
    run_defenses(
        tmp.path(),
        backend,
        "4 new records, 12 already there; 1 models trained, 1 loaded",
    );
}

#[test]
fn presets_are_selectable_by_name_and_unknown_ones_are_refused() {
    let tmp = tempfile::tempdir().expect("temp");
    synthetic::write_dataset(&tmp.path().join("ds"), 60, 20, 3).expect("dataset");
    let o = bench_runner(
        &["run", "--preset", "seed-005", "--dataset-dir", "ds"],
        tmp.path(),
    );
    assert!(!o.status.success());
    assert!(
        text(&o).contains("unknown preset \"seed-005\"") && text(&o).contains("seed-004-notebook"),
        "{}",
        text(&o)
    );
    // the seed-004 preset on a sliver of data: 5 models (the retrained one and its control), 2
    // attacks, 8 ε
    let o = bench_runner(
        &[
            "run",
            "--preset",
            "seed-004-notebook",
            "--dataset-dir",
            "ds",
            "--out",
            "out",
            "--epochs",
            "1",
            "--cumulative-eps",
        ],
        tmp.path(),
    );
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("80 new records"), "{}", text(&o));
    let recs = records(tmp.path());
    assert!(recs.iter().all(|r| r["preset"] == "seed-004-notebook"));
    assert!(
        recs.iter()
            .any(|r| r["attack"] == "fgsm-targeted-shift2-cumulative")
    );
}

#[test]
fn num_seeds_trains_one_model_per_seed() {
    let tmp = tempfile::tempdir().expect("temp");
    synthetic::write_dataset(&tmp.path().join("ds"), 200, 50, 5).expect("dataset");
    let o = bench_runner(&[QUICK, &["--num-seeds", "2"]].concat(), tmp.path());
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("6 new records, 0 already there; 2 models trained"),
        "{}",
        text(&o)
    );
    let mut seeds: Vec<u64> = records(tmp.path())
        .iter()
        .map(|r| r["seed"].as_u64().expect("seed"))
        .collect();
    seeds.dedup();
    assert_eq!(seeds, [42, 43]);
    let o = bench_runner(&[QUICK, &["--num-seeds", "0"]].concat(), tmp.path());
    assert!(
        !o.status.success() && text(&o).contains("--num-seeds"),
        "{}",
        text(&o)
    );
}

#[test]
fn a_pytorch_model_is_evaluated_and_reported_by_one_command() {
    let tmp = tempfile::tempdir().expect("temp");
    synthetic::write_dataset(&tmp.path().join("ds"), 40, 30, 2).expect("dataset");
    let weights = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../advrob-model/tests/fixtures/lenet.safetensors");
    let weights = weights.to_string_lossy().to_string();
    for backend in backends() {
        let args = [
            "evaluate",
            "--weights",
            &weights,
            "--arch",
            "lenet",
            "--dataset-dir",
            "ds",
            "--eps",
            "0,0.1",
            "--attack-labels",
            "true",
            "--out",
            "out",
            "--reports",
            "rep",
            "--backends",
            &backend,
            // one run directory, a matrix per backend
            "--extend",
        ];
        let o = bench_runner(&args, tmp.path());
        assert!(o.status.success(), "{}", text(&o));
        let results = std::fs::read_to_string(tmp.path().join("rep/results.md")).expect("results");
        assert!(results.contains("| lenet | none | fgsm |"), "{results}");
        assert!(
            tmp.path()
                .join(format!("rep/cards/lenet-{backend}.json"))
                .is_file()
        );
    }
    // the wrong architecture: the error says what was expected and what the file holds
    let o = bench_runner(
        &[
            "evaluate",
            "--weights",
            &weights,
            "--arch",
            "madry-cnn",
            "--dataset-dir",
            "ds",
            "--attack-labels",
            "true",
            "--out",
            "out2",
        ],
        tmp.path(),
    );
    common::assert_fails_naming(
        &o,
        &["conv1.weight has shape [6, 1, 5, 5]", "[32, 1, 5, 5]"],
    );
}

const CNNS: &str = r#"
name = "cnns"
eps = [0.0, 0.2]
[train]
epochs = 1
batch_size = 20
[[models]]
name = "lenet"
arch = "lenet"
[[models]]
name = "lenet-at"
arch = "lenet"
from = "lenet"
defense = { kind = "adversarial-training", eps = 0.1 }
[[models]]
name = "lenet-distilled"
arch = "lenet"
teacher = "lenet"
defense = { kind = "distillation", temperature = 5.0 }
[[models]]
name = "madry"
arch = "madry-cnn"
[[models]]
name = "madry-at"
arch = "madry-cnn"
from = "madry"
defense = { kind = "adversarial-training", eps = 0.1 }
[[attacks]]
kind = "fgsm"
[[attacks]]
kind = "pgd"
steps = 2
"#;

#[test]
fn cnns_train_are_defended_and_attacked_in_a_matrix() {
    let tmp = tempfile::tempdir().expect("temp");
    synthetic::write_dataset(&tmp.path().join("ds"), 40, 20, 4).expect("dataset");
    std::fs::write(tmp.path().join("cnns.toml"), CNNS).expect("matrix");
    for backend in backends() {
        let out = format!("out-{backend}");
        let o = bench_runner(
            &[
                "run",
                "--config",
                "cnns.toml",
                "--dataset-dir",
                "ds",
                "--out",
                &out,
                "--backends",
                &backend,
            ],
            tmp.path(),
        );
        assert!(o.status.success(), "{}", text(&o));
        assert!(
            text(&o).contains("20 new records, 0 already there; 5 models trained"),
            "{}",
            text(&o)
        );
        let lines: Vec<serde_json::Value> =
            std::fs::read_dir(tmp.path().join(&out).join("records"))
                .expect("logs")
                .flat_map(|e| {
                    std::fs::read_to_string(e.expect("entry").path())
                        .expect("log")
                        .lines()
                        .map(|l| serde_json::from_str(l).expect("record"))
                        .collect::<Vec<_>>()
                })
                .collect();
        for r in &lines {
            assert!(
                r["mean_linf"].as_f64().expect("norm") <= r["eps"].as_f64().expect("eps") + 1e-6
            );
            let arch = r["model_config"]["arch"].as_str().expect("arch");
            let want = if r["model"].as_str().expect("model").starts_with("madry") {
                "madry-cnn"
            } else {
                "lenet"
            };
            assert_eq!(arch, want, "{r}");
        }
        // CNNs are left out of the bounds unless verify.cnns: every file says so, with no radii
        let bounds: Vec<serde_json::Value> =
            std::fs::read_dir(tmp.path().join(&out).join("bounds"))
                .expect("bounds/")
                .map(|e| {
                    serde_json::from_slice(&std::fs::read(e.expect("entry").path()).expect("file"))
                        .expect("JSON")
                })
                .collect();
        assert!(!bounds.is_empty());
        for b in &bounds {
            let why = b["refused"].as_str().expect("refused");
            assert!(why.contains("verify.cnns is false"), "{b}");
            assert_eq!(b["radii"].as_array().map(Vec::len), Some(0), "{b}");
        }
    }
}

/// Every regular file under `dir` with its permission bits.
#[cfg(unix)]
fn modes(dir: &Path) -> Vec<(std::path::PathBuf, u32)> {
    use std::os::unix::fs::PermissionsExt;
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).expect("read dir").flatten() {
            let meta = e.metadata().expect("metadata");
            if meta.is_dir() {
                todo.push(e.path());
            } else if meta.is_file() {
                out.push((e.path(), meta.permissions().mode() & 0o777));
            }
        }
    }
    out
}

#[cfg(unix)]
#[test]
fn every_file_a_run_and_its_report_write_follows_the_umask() {
    let weights = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../advrob-model/tests/fixtures/lenet.safetensors");
    for (umask, want) in [("022", 0o644), ("027", 0o640)] {
        let tmp = tempfile::tempdir().expect("temp");
        synthetic::write_dataset(&tmp.path().join("ds"), 40, 30, 2).expect("dataset");
        let o = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("umask {umask} && exec \"$0\" \"$@\""))
            .arg(env!("CARGO_BIN_EXE_bench-runner"))
            .args([
                "evaluate",
                "--weights",
                &weights.to_string_lossy(),
                "--arch",
                "lenet",
                "--dataset-dir",
                "ds",
                "--eps",
                "0,0.1",
                "--attack-labels",
                "true",
                "--out",
                "out",
                "--reports",
                "rep",
                "--backends",
                "ndarray",
            ])
            .current_dir(tmp.path())
            .env("RUST_LOG", "warn")
            .env_remove("ADVROB_MIRROR")
            .output()
            .expect("bench-runner runs");
        assert!(o.status.success(), "{}", text(&o));
        let files: Vec<_> = ["out", "rep"]
            .iter()
            .flat_map(|d| modes(&tmp.path().join(d)))
            .collect();
        // the tables of the report among them, which a bare temporary file left at 0600
        for name in [
            "results.csv",
            "results.parquet",
            "intervals.csv",
            "index.html",
        ] {
            assert!(
                files.iter().any(|(p, _)| p.ends_with(name)),
                "{name} written: {files:?}"
            );
        }
        let wrong: Vec<_> = files.iter().filter(|(_, m)| *m != want).collect();
        assert!(
            wrong.is_empty(),
            "umask {umask}: files not {want:o}: {wrong:?}"
        );
    }
}

/// Copies the files of `from` into `to`, leaving out the directories named `skip`.
fn copy_tree(from: &Path, to: &Path, skip: &[&str]) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("read dir").flatten() {
        let name = e.file_name();
        if skip.iter().any(|s| name == *s) {
            continue;
        }
        if e.file_type().expect("type").is_dir() {
            copy_tree(&e.path(), &to.join(&name), skip);
        } else {
            std::fs::copy(e.path(), to.join(&name)).expect("copy");
        }
    }
}

#[test]
fn a_run_directory_copied_without_data_or_checkpoints_reports_the_same() {
    let tmp = tempfile::tempdir().expect("temp");
    synthetic::write_dataset(&tmp.path().join("ds"), 400, 100, 7).expect("dataset");
    run_quick(tmp.path(), "ndarray", "3 new records");
    let o = bench_runner(&["report", "--run", "out", "--reports", "here"], tmp.path());
    assert!(o.status.success(), "{}", text(&o));
    // the verdict's checks that measure the checkpoint ran, from what the run observed
    let verdict = std::fs::read_to_string(tmp.path().join("here/verdict.md")).expect("verdict");
    assert!(
        verdict.contains("input gradient") && !verdict.contains("no probe"),
        "{verdict}"
    );
    let examples = |dir: &Path| -> Vec<String> {
        std::fs::read_dir(dir)
            .expect("reports")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().to_string())
            .filter(|n| n.starts_with("examples_") && n.ends_with(".png"))
            .collect()
    };
    let drawn = examples(&tmp.path().join("here"));
    assert_eq!(drawn.len(), 1, "{drawn:?}");

    // elsewhere: no dataset, no checkpoints, only the run directory's records and observations
    let away = tempfile::tempdir().expect("temp");
    copy_tree(
        &tmp.path().join("out"),
        &away.path().join("out"),
        &["models"],
    );
    assert!(!away.path().join("out/models").exists() && !away.path().join("ds").exists());
    let o = bench_runner(
        &["report", "--run", "out", "--reports", "there"],
        away.path(),
    );
    assert!(o.status.success(), "{}", text(&o));
    common::same_tables(&tmp.path().join("here"), &away.path().join("there"));
    let cards: Vec<String> = std::fs::read_dir(tmp.path().join("here/cards"))
        .expect("cards")
        .flatten()
        .map(|e| format!("cards/{}", e.file_name().to_string_lossy()))
        .collect();
    assert!(!cards.is_empty());
    for f in ["results.csv".to_string()].iter().chain(&cards) {
        let a = std::fs::read(tmp.path().join("here").join(f)).expect(f);
        let b = std::fs::read(away.path().join("there").join(f)).expect(f);
        assert!(a == b, "{f} differs");
    }
    assert_eq!(examples(&away.path().join("there")), drawn);
}

#[test]
fn evaluate_offers_only_what_applies_to_one_foreign_model() {
    let tmp = tempfile::tempdir().expect("temp");
    let o = bench_runner(&["evaluate", "--help"], tmp.path());
    assert!(o.status.success(), "{}", text(&o));
    let help = text(&o);
    for applies in [
        "--weights",
        "--arch",
        "--config",
        "--eps",
        "--test-limit",
        "--hidden",
    ] {
        assert!(help.contains(applies), "{applies} missing: {help}");
    }
    // nothing is trained, and the model is not a preset's
    for foreign in [
        "--preset",
        "--epochs",
        "--batch-size",
        "--loss",
        "--train-limit",
        "--cumulative-eps",
        "replaces the models",
    ] {
        assert!(!help.contains(foreign), "{foreign} offered: {help}");
    }
    let o = bench_runner(
        &["evaluate", "--weights", "w.safetensors", "--epochs", "3"],
        tmp.path(),
    );
    assert!(!o.status.success());
    assert!(text(&o).contains("--epochs"), "{}", text(&o));
    // a run still has them
    let run = text(&bench_runner(&["run", "--help"], tmp.path()));
    assert!(
        run.contains("--preset") && run.contains("--epochs"),
        "{run}"
    );
}

/// The rows of `results.csv` in `dir` with the columns that do not depend on the run's name or
/// timing, sorted.
fn result_rows(dir: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(dir.join("results.csv")).expect("results.csv");
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().expect("header").split(',').collect();
    let keep = [
        "model",
        "attack",
        "attack_labels",
        "backend",
        "seed",
        "eps",
        "examples",
        "clean_accuracy",
        "adversarial_accuracy",
        "checkpoint_sha256",
    ];
    let cols: Vec<usize> = keep
        .iter()
        .map(|k| header.iter().position(|h| h == k).expect("column"))
        .collect();
    let mut rows: Vec<String> = lines
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            cols.iter().map(|&c| f[c]).collect::<Vec<_>>().join(",")
        })
        .collect();
    rows.sort();
    rows
}

fn report_files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = walk(dir)
        .into_iter()
        .map(|p| {
            p.strip_prefix(dir)
                .expect("inside")
                .to_string_lossy()
                .to_string()
        })
        .collect();
    names.sort();
    names
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).expect("dir") {
        let p = e.expect("entry").path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn an_onnx_model_is_evaluated_by_one_command_into_the_report_a_matrix_run_writes() {
    let tmp = tempfile::tempdir().expect("temp");
    synthetic::write_dataset(&tmp.path().join("ds"), 40, 30, 2).expect("dataset");
    let onnx = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples/pytorch/onnx/mlp_softmax.onnx")
        .to_string_lossy()
        .to_string();
    // the same model named in a matrix file, beside nothing else
    let toml = format!(
        "name = \"matrix-onnx\"\n[[models]]\nname = \"mlp_softmax\"\narch = \"onnx\"\nweights = {onnx:?}\n"
    );
    std::fs::write(tmp.path().join("m.toml"), toml).expect("toml");
    for backend in backends() {
        let common = [
            "--dataset-dir",
            "ds",
            "--eps",
            "0,0.1",
            "--attack-labels",
            "true",
            "--backends",
            &backend,
        ];
        let (a, ra) = (format!("a-{backend}"), format!("ra-{backend}"));
        let o = bench_runner(
            &[
                &["evaluate", "--onnx", &onnx, "--out", &a, "--reports", &ra][..],
                &common,
            ]
            .concat(),
            tmp.path(),
        );
        assert!(o.status.success(), "{}", text(&o));
        let (b, rb) = (format!("b-{backend}"), format!("rb-{backend}"));
        let o = bench_runner(
            &[&["run", "--config", "m.toml", "--out", &b][..], &common].concat(),
            tmp.path(),
        );
        assert!(o.status.success(), "{}", text(&o));
        let o = bench_runner(&["report", "--run", &b, "--reports", &rb], tmp.path());
        assert!(o.status.success(), "{}", text(&o));
        let (ra, rb) = (tmp.path().join(ra), tmp.path().join(rb));
        assert_eq!(report_files(&ra), report_files(&rb), "{backend}");
        let rows = result_rows(&ra);
        assert!(
            rows.iter().any(|r| r.starts_with("mlp_softmax,fgsm,")),
            "{rows:?}"
        );
        assert_eq!(rows, result_rows(&rb), "{backend}");
    }
    // a graph the dataset's images do not fit: both shapes named
    let cifar = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples/pytorch/onnx/wide_resnet.onnx")
        .to_string_lossy()
        .to_string();
    let o = bench_runner(
        &[
            "evaluate",
            "--onnx",
            &cifar,
            "--dataset-dir",
            "ds",
            "--attack-labels",
            "true",
            "--out",
            "c",
        ],
        tmp.path(),
    );
    common::assert_fails_naming(&o, &["[?, 3, 32, 32]", "[1, 1, 28, 28]"]);
}

#[test]
fn a_cifar10_resnet_in_onnx_is_evaluated_on_three_channel_images_and_advrobs_cnns_are_refused_them()
{
    let tmp = tempfile::tempdir().expect("temp");
    // CIFAR-10's binary layout with seeded random images: read, not downloaded
    let dir = tmp.path().join("cifar");
    std::fs::create_dir_all(&dir).expect("dir");
    advrob_data::cifar::write_synthetic_archive(&dir.join(advrob_data::cifar::ARCHIVE), 4, 6, 5)
        .expect("archive");
    let onnx = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples/pytorch/onnx/preact_resnet18.onnx")
        .to_string_lossy()
        .to_string();
    for backend in backends() {
        let (out, reports) = (format!("c-{backend}"), format!("rc-{backend}"));
        let o = bench_runner(
            &[
                "evaluate",
                "--onnx",
                &onnx,
                "--dataset-dir",
                "cifar",
                "--eps",
                "0,0.03",
                "--attack-labels",
                "true",
                "--backends",
                &backend,
                "--out",
                &out,
                "--reports",
                &reports,
            ],
            tmp.path(),
        );
        assert!(o.status.success(), "{backend}: {}", text(&o));
        let reports = tmp.path().join(reports);
        let rows = result_rows(&reports);
        assert!(
            rows.iter()
                .any(|r| r.starts_with("preact_resnet18,fgsm,") && r.contains(",0.03,")),
            "{rows:?}"
        );
        let files = report_files(&reports);
        assert!(
            files.iter().any(|f| f.starts_with("examples_")),
            "{files:?}"
        );
    }
    // LeNet takes one channel: named, not a shape panic
    std::fs::write(
        tmp.path().join("m.toml"),
        "name = \"m\"\n[train]\nepochs = 1\n[[models]]\nname = \"le\"\narch = \"lenet\"\n",
    )
    .expect("toml");
    let o = bench_runner(
        &[
            "run",
            "--config",
            "m.toml",
            "--dataset-dir",
            "cifar",
            "--attack-labels",
            "true",
            "--out",
            "m",
        ],
        tmp.path(),
    );
    common::assert_fails_naming(&o, &["le", "3 channels"]);
}

/// A masked model (its input quantised: every gradient zero) under two quoted attacks.
fn quoted(ensemble: &str) -> String {
    format!(
        r#"
name = "quoted"
eps = [0.3]
[train]
epochs = 2
batch_size = 20
[eval]
binarization_samples = 4
convergence_examples = 50
[[models]]
name = "quantized"
hidden = [64]
defense = {{ kind = "gradient-masking", mechanism = "quantize", levels = 8 }}
[[attacks]]
kind = "ensemble"
name = "quoted"
{ensemble}
"#
    )
}

/// The binarization test runs on the attack a run quotes (its ensemble) and flags the weak one:
/// FGSM alone cannot move through a quantised input and fails its unit test, which makes the
/// verdict "robustness not established (attack failed its unit test)"; the AutoAttack-like
/// ensemble (APGD and Square) solves the test's binary classifiers. Both get the convergence run;
/// the second, whose attacks count their passes, its cost curve.
#[test]
fn the_quoted_attack_is_unit_tested_and_a_weak_one_is_flagged() {
    let tmp = tempfile::tempdir().expect("temp");
    synthetic::write_dataset(&tmp.path().join("ds"), 400, 100, 9).expect("dataset");
    let weak = "[[attacks.attacks]]\nkind = \"fgsm\"\n";
    let strong = "[[attacks.attacks]]\nkind = \"apgd\"\nsteps = 10\n[[attacks.attacks]]\nkind = \"square\"\n";
    for (name, ensemble) in [("weak", weak), ("strong", strong)] {
        std::fs::write(tmp.path().join(format!("{name}.toml")), quoted(ensemble)).expect("toml");
        let o = bench_runner(
            &[
                "run",
                "--config",
                &format!("{name}.toml"),
                "--dataset-dir",
                "ds",
                "--out",
                name,
                "--backends",
                "ndarray",
            ],
            tmp.path(),
        );
        assert!(o.status.success(), "{}", text(&o));
        let rep = format!("{name}-rep");
        let o = bench_runner(&["report", "--run", name, "--reports", &rep], tmp.path());
        assert!(o.status.success(), "{}", text(&o));
        let verdict = std::fs::read_to_string(tmp.path().join(format!("{name}-rep/verdict.md")))
            .expect("verdict");
        assert!(
            verdict.contains(
                "converged: quoted → quoted-stronger on the first 50 test examples at ε 0.3"
            ),
            "{verdict}"
        );
        let failed = verdict.contains("attack failed its unit test");
        if name == "weak" {
            assert!(
                failed && verdict.contains("✗ binarization test: quoted at ε 0.3 solved 0 of"),
                "{verdict}"
            );
        } else {
            assert!(
                !failed && verdict.contains("✓ binarization test: quoted at ε 0.3"),
                "{verdict}"
            );
        }
        // APGD and Square count their passes: the cost curve and the card's effort; FGSM does
        // not, and nothing is drawn for it
        let drawn = tmp
            .path()
            .join(format!("{name}-rep/cost_curves.png"))
            .is_file();
        let cards = std::fs::read_to_string(tmp.path().join(format!("{name}-rep/cards.md")))
            .expect("cards");
        let effort = cards.contains("at 1% / 10% / all of");
        assert_eq!(
            (drawn, effort),
            (name == "strong", name == "strong"),
            "{cards}"
        );
    }
}

#[test]
fn verify_brackets_robust_accuracy_between_proof_and_counterexample() {
    let tmp = tempfile::tempdir().expect("temp");
    synthetic::write_dataset(&tmp.path().join("ds"), 400, 100, 7).expect("dataset");
    run_quick(tmp.path(), "ndarray", "1 models trained");
    let model = std::fs::read_dir(tmp.path().join("out/models"))
        .expect("models")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.is_dir())
        .expect("the trained model's directory");
    let model = model.to_str().expect("utf-8 path");
    let args = [
        "verify",
        "--model",
        model,
        "--dataset-dir",
        "ds",
        "--eps",
        "0,0.3",
        "--test-limit",
        "40",
        "--max-domains",
        "200",
        "--out",
        "v.json",
    ];
    let o = bench_runner(&args, tmp.path());
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("eps 0.3: robust accuracy in ["),
        "{}",
        text(&o)
    );
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(tmp.path().join("v.json")).expect("v.json"))
            .expect("JSON");
    let rows = v["eps"].as_array().expect("one row per eps");
    let n = |r: &serde_json::Value, k: &str| r[k].as_u64().expect(k);
    for r in rows {
        assert_eq!(
            n(r, "verified") + n(r, "attacked") + n(r, "misclassified") + n(r, "unknown"),
            40,
            "{r}"
        );
        assert_eq!(r["images"].as_array().map(Vec::len), Some(40));
    }
    // at ε = 0 the ball is the image itself: nothing to attack, every right answer proven
    assert_eq!(n(&rows[0], "attacked"), 0);
    assert_eq!(n(&rows[0], "unknown"), 0);
    // a larger ball can only lose proofs
    assert!(n(&rows[1], "verified") <= n(&rows[0], "verified"));
    assert_eq!(n(&rows[1], "misclassified"), n(&rows[0], "misclassified"));

    let o = bench_runner(
        &["verify", "--model", "nowhere", "--dataset-dir", "ds"],
        tmp.path(),
    );
    common::assert_fails_naming(&o, &["nowhere"]);
}

const SMOOTHING: &str = r#"
name = "smoothing"
eps = [0.0, 0.1]
[train]
epochs = 2
batch_size = 20
[[models]]
name = "base"
hidden = [16]
[[models]]
name = "noisy"
hidden = [16]
defense = { kind = "gaussian-noise", sigma = 0.5 }
[[attacks]]
kind = "fgsm"
[verify]
enabled = false
[smoothing]
enabled = true
n0 = 20
n = 400
batch = 150
test_limit = 30
radii = [0.0, 0.25]
"#;

/// Randomized smoothing in a matrix: only the model trained with noise is smoothed (no σ is
/// given for the others), its file says it is an L2 certificate of the smoothed classifier, a
/// rerun does not redo it, the report puts it in a table of its own; `bench-runner smooth`
/// certifies one saved model and refuses a bad σ by name.
#[test]
fn smoothing_certifies_the_noise_trained_model_in_a_table_of_its_own() {
    let tmp = tempfile::tempdir().expect("temp");
    let d = tmp.path();
    synthetic::write_dataset(&d.join("ds"), 400, 100, 7).expect("dataset");
    std::fs::write(d.join("m.toml"), SMOOTHING).expect("matrix");
    let run = [
        "run",
        "--config",
        "m.toml",
        "--dataset-dir",
        "ds",
        "--out",
        "out",
        "--backends",
        "ndarray",
    ];
    let o = bench_runner(&run, d);
    assert!(o.status.success(), "{}", text(&o));
    let files: Vec<_> = std::fs::read_dir(d.join("out/smoothing"))
        .expect("smoothing/")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    let s: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&files[0]).expect("file")).expect("JSON");
    assert_eq!(s["threat_model"], "l2-smoothed");
    assert_eq!(s["model"], "noisy");
    assert_eq!(s["settings"]["sigma"], 0.5);
    assert_eq!(s["test_examples"], 30);
    let acc: Vec<f64> = s["accuracy"]
        .as_array()
        .expect("accuracy")
        .iter()
        .map(|a| a["accuracy"].as_f64().expect("share"))
        .collect();
    // a larger radius can only certify fewer images; some are certified; the per-image radii
    // give the same shares
    assert!(acc[1] <= acc[0] && acc[0] > 0.0, "{acc:?}");
    let radii: Vec<f64> = s["radii_correct"]
        .as_array()
        .expect("radii")
        .iter()
        .map(|r| r.as_f64().expect("radius"))
        .collect();
    for (r, a) in [(0.0, acc[0]), (0.25, acc[1])] {
        let k = radii.iter().filter(|&&x| x >= r).count();
        assert_eq!(k as f64 / 30.0, a, "{radii:?}");
    }
    let modified = std::fs::metadata(&files[0])
        .and_then(|m| m.modified())
        .expect("mtime");
    let o = bench_runner(&run, d);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(
        std::fs::metadata(&files[0])
            .and_then(|m| m.modified())
            .expect("mtime"),
        modified,
        "a rerun redid the certificates"
    );
    // another radius (the run extended with that matrix): tabulated from the per-image radii,
    // not certified again
    std::fs::write(
        d.join("m2.toml"),
        SMOOTHING.replace("radii = [0.0, 0.25]", "radii = [0.0, 0.25, 0.5]"),
    )
    .expect("matrix");
    let extended = [&run[..], &["--extend"]].concat();
    let extended: Vec<&str> = extended
        .iter()
        .map(|a| if *a == "m.toml" { "m2.toml" } else { a })
        .collect();
    let o = bench_runner(&extended, d);
    assert!(o.status.success(), "{}", text(&o));
    let t: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&files[0]).expect("file")).expect("JSON");
    assert_eq!(t["seconds"], s["seconds"], "certified again");
    assert_eq!(t["radii_correct"], s["radii_correct"]);
    let radii: Vec<f64> = t["accuracy"]
        .as_array()
        .expect("accuracy")
        .iter()
        .map(|a| a["radius"].as_f64().expect("radius"))
        .collect();
    assert_eq!(radii, [0.0, 0.25, 0.5]);
    assert_eq!(t["accuracy"][1], s["accuracy"][1]);

    let o = bench_runner(&["report", "--run", "out", "--reports", "rep"], d);
    assert!(o.status.success(), "{}", text(&o));
    let md = std::fs::read_to_string(d.join("rep/smoothing.md")).expect("smoothing.md");
    assert!(
        md.contains("| noisy | ndarray | 42 | 0.5 | 30 | 400 | 0.001 | 0 |"),
        "{md}"
    );
    assert!(!md.contains("| base |"), "{md}");
    let results = std::fs::read_to_string(d.join("rep/results.md")).expect("results.md");
    assert!(!results.contains("smooth"), "{results}");

    let model = std::fs::read_dir(d.join("out/models"))
        .expect("models")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.is_dir() && p.to_string_lossy().contains("noisy"))
        .expect("the noisy model's directory");
    let model = model.to_str().expect("utf-8 path");
    let smooth = |sigma: &str| {
        bench_runner(
            &[
                "smooth",
                "--model",
                model,
                "--dataset-dir",
                "ds",
                "--sigma",
                sigma,
                "--n0",
                "20",
                "--n",
                "400",
                "--test-limit",
                "10",
                "--out",
                "s.json",
            ],
            d,
        )
    };
    let o = smooth("0.5");
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("radius 0.5: certified accuracy"),
        "{}",
        text(&o)
    );
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(d.join("s.json")).expect("s.json")).expect("JSON");
    assert_eq!(v["images"].as_array().map(Vec::len), Some(10));
    common::assert_fails_naming(&smooth("-1"), &["sigma"]);
}
