//! The matrix as Slurm job arrays, against a real Slurm: runs with the `slurm-tests` feature only,
//! on a machine where `sbatch` reaches a cluster (CI starts a single-node one with
//! `.ci/slurm-up.sh`). The merged tables must be the single-process run's, byte for byte, and an
//! array task cancelled and resubmitted must lose nothing.
#![cfg(feature = "slurm-tests")]

mod common;

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use advrob_data::synthetic;
use common::{bench_runner, same_tables};

fn ok(o: Output) -> String {
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(o.status.success(), "{text}");
    text
}

fn sh(cmd: &str) -> (bool, String) {
    let o = Command::new("sh").args(["-c", cmd]).output().expect("sh");
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stdout).to_string(),
    )
}

/// Waits until job `id` (every task) has left the queue.
fn wait_gone(id: &str, within: Duration) {
    let start = Instant::now();
    loop {
        let (ok, out) = sh(&format!("squeue -h -j {id} -o %i 2>/dev/null"));
        if !ok || out.trim().is_empty() {
            return;
        }
        assert!(
            start.elapsed() < within,
            "job {id} still queued after {within:?}: {}",
            sh(&format!("squeue -r -j {id}")).1
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The final state of every task of job `id`: `index STATE` lines.
fn states(id: &str) -> String {
    sh(&format!("squeue -h -r -t all -j {id} -o '%K %T'")).1
}

fn ids(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|l| l.split_once(": job "))
        .map(|(n, i)| (n.to_string(), i.trim().to_string()))
        .collect()
}

const MATRIX: &str = r#"
name = "slurm-study"
eps = [0.0, 0.1, 0.3]
[train]
epochs = 1
batch_size = 32
[[models]]
name = "base"
hidden = [16]
[[models]]
name = "at"
from = "base"
defense = { kind = "adversarial-training", eps = 0.1 }
[[attacks]]
kind = "fgsm"
[[attacks]]
kind = "pgd"
steps = 3
"#;

#[test]
fn a_matrix_on_job_arrays_gives_the_single_process_tables_and_survives_a_cancelled_task() {
    let tmp = tempfile::tempdir().expect("temp");
    let dir = tmp.path();
    synthetic::write_dataset(&dir.join("ds"), 300, 60, 5).expect("dataset");
    let matrix = format!("dataset_dir = {:?}\n{MATRIX}", dir.join("ds"));
    std::fs::write(dir.join("m.toml"), matrix).expect("matrix");
    ok(bench_runner(
        &["run", "--config", "m.toml", "--out", "single"],
        dir,
    ));
    ok(bench_runner(
        &["report", "--run", "single", "--reports", "single-reports"],
        dir,
    ));

    // the whole study on Slurm: 2 training stages, 4 evaluation shards, the report
    let text = ok(bench_runner(
        &[
            "slurm",
            "--config",
            "m.toml",
            "--out",
            "on-slurm",
            "--array-limit",
            "2",
        ],
        dir,
    ));
    let jobs = ids(&text);
    assert_eq!(
        jobs.iter().map(|j| j.0.as_str()).collect::<Vec<_>>(),
        [
            "advrob-train-0",
            "advrob-train-1",
            "advrob-eval",
            "advrob-report"
        ],
        "{text}"
    );
    let (_, report) = &jobs[3];
    wait_gone(report, Duration::from_secs(240));
    for (name, id) in &jobs {
        let s = states(id);
        assert!(
            !s.is_empty() && s.lines().all(|l| l.ends_with("COMPLETED")),
            "{name} ({id}): {s}"
        );
    }
    same_tables(&dir.join("single-reports"), &dir.join("on-slurm/reports"));

    // again, one evaluation task cancelled while it runs: the report job never runs; that task
    // resubmitted alone and the report made by hand give the same tables
    let text = ok(bench_runner(
        &[
            "slurm",
            "--config",
            "m.toml",
            "--out",
            "cancelled",
            "--array-limit",
            "1",
            "--task-prologue",
            "sleep 3",
        ],
        dir,
    ));
    let jobs = ids(&text);
    let (eval, report) = (&jobs[2].1, &jobs[3].1);
    let start = Instant::now();
    loop {
        let (_, s) = sh(&format!("squeue -h -r -j {eval}_1 -o %T"));
        if s.trim() == "RUNNING" {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(180),
            "task 1 never ran: {s}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    sh(&format!("scancel {eval}_1"));
    wait_gone(eval, Duration::from_secs(180));
    wait_gone(report, Duration::from_secs(60));
    let s = states(eval);
    assert!(s.lines().any(|l| l == "1 CANCELLED"), "{s}");
    assert!(
        !dir.join("cancelled/reports/results.md").exists(),
        "the report waited for every task"
    );
    let (submitted, id) = sh(&format!(
        "sbatch --parsable --array=1 {}",
        dir.join("cancelled/slurm/advrob-eval.sbatch").display()
    ));
    assert!(submitted, "resubmit");
    let id = id.trim().split(';').next().unwrap_or_default().to_string();
    wait_gone(&id, Duration::from_secs(120));
    ok(bench_runner(
        &[
            "report",
            "--run",
            "cancelled",
            "--reports",
            "cancelled-reports",
        ],
        dir,
    ));
    same_tables(&dir.join("single-reports"), &dir.join("cancelled-reports"));
}
