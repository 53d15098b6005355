//! `bench-runner slurm`: a matrix as Slurm job arrays — one array per training stage (a task per
//! model, each stage after the one its models build on), an evaluation array (shards of the
//! (model, attack) units), and a report job after them. The tasks are this same binary: `train
//! --stage`, `run --shard slurm`, `report`, on the run directory the submitting host prepared.

use std::path::{Path, PathBuf};
use std::process::Command;

use advrob_experiment::{DataSource, Matrix, Registry, RunDir, load_data};
use clap::Args;

use crate::cli::DataArgs;

/// Where and how the jobs run.
#[derive(Debug, Clone, Args)]
pub struct SlurmArgs {
    /// Slurm partition (`#SBATCH --partition`).
    #[arg(long)]
    pub partition: Option<String>,
    /// Account to charge (`--account`).
    #[arg(long)]
    pub account: Option<String>,
    /// Time limit of each task (`--time`, e.g. 02:00:00).
    #[arg(long)]
    pub time: Option<String>,
    /// CPUs per task.
    #[arg(long, default_value_t = 1)]
    pub cpus_per_task: usize,
    /// Memory per task (`--mem`, e.g. 4G).
    #[arg(long)]
    pub mem: Option<String>,
    /// Generic resources per task, e.g. `gpu:1` (`--gres`).
    #[arg(long)]
    pub gres: Option<String>,
    /// Another `#SBATCH` line for every job, e.g. `--qos=short` (repeatable).
    #[arg(long = "sbatch-line")]
    pub sbatch_lines: Vec<String>,
    /// At most this many tasks of one array at once (`--array=…%N`).
    #[arg(long)]
    pub array_limit: Option<usize>,
    /// Tasks of the evaluation array (default: one per (model, attack) unit).
    #[arg(long)]
    pub eval_tasks: Option<usize>,
    /// A shell line every task runs first (`module load …`, `source venv/bin/activate`).
    #[arg(long)]
    pub task_prologue: Option<String>,
    /// Print the job scripts and the sbatch commands instead of submitting them.
    #[arg(long)]
    pub dry_run: bool,
}

/// One job to submit.
#[derive(Debug, Clone)]
pub struct Job {
    /// Its name (`advrob-train-0`, `advrob-eval`, `advrob-report`).
    pub name: String,
    /// Array tasks (`None`: a single job).
    pub tasks: Option<usize>,
    /// The script.
    pub script: String,
    /// The script's file.
    pub path: PathBuf,
}

fn absolute(p: &Path) -> anyhow::Result<PathBuf> {
    Ok(if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir()?.join(p)
    })
}

fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// The `#SBATCH` lines every job has: its log file under `dir`, its CPUs, the resources asked
/// for and the extra lines given.
fn common_lines(args: &SlurmArgs, dir: &Path) -> String {
    let mut common = format!(
        "#SBATCH --output={}/logs/%x-%A_%a.out\n#SBATCH --cpus-per-task={}\n",
        dir.display(),
        args.cpus_per_task
    );
    for (flag, v) in [
        ("partition", &args.partition),
        ("account", &args.account),
        ("time", &args.time),
        ("mem", &args.mem),
        ("gres", &args.gres),
    ] {
        if let Some(v) = v {
            common.push_str(&format!("#SBATCH --{flag}={v}\n"));
        }
    }
    for line in &args.sbatch_lines {
        common.push_str(&format!(
            "#SBATCH {}\n",
            line.trim_start_matches("#SBATCH").trim()
        ));
    }
    common
}

/// The `--array` range of `n` tasks, at most `limit` of them at once when given.
fn array_range(n: usize, limit: Option<usize>) -> String {
    match limit {
        Some(k) => format!("0-{}%{k}", n - 1),
        None => format!("0-{}", n - 1),
    }
}

/// A job's script: its name, its array range (none for a single job), the common `#SBATCH`
/// lines, the task prologue and the command it runs.
fn job_script(
    name: &str,
    array: Option<String>,
    common: &str,
    prologue: &str,
    command: String,
) -> String {
    let array = array.map_or_else(String::new, |a| format!("#SBATCH --array={a}\n"));
    format!(
        "#!/bin/bash\n#SBATCH --job-name={name}\n{array}{common}set -euo pipefail\n{prologue}\nexec {command}\n"
    )
}

/// The scripts for `matrix` into the run directory `out`.
pub fn jobs(
    matrix: &Matrix,
    out: &Path,
    data: &DataArgs,
    args: &SlurmArgs,
    exe: &Path,
) -> anyhow::Result<Vec<Job>> {
    let out = absolute(out)?;
    let data_dir = absolute(&data.data_dir)?;
    let dir = out.join("slurm");
    let common = common_lines(args, &dir);
    let mut data_flags = format!("--data-dir {}", quote(&data_dir.to_string_lossy()));
    for m in &data.mirror {
        data_flags.push_str(&format!(" --mirror {}", quote(m)));
    }
    // each submission's tasks read the matrix it submitted, whatever `matrix.toml` says later
    let own = advrob_experiment::runner::matrix_file(&RunDir::new(&out), matrix)?;
    let config = quote(&own.to_string_lossy());
    let exe = quote(&exe.to_string_lossy());
    let outq = quote(&out.to_string_lossy());
    let prologue = args.task_prologue.clone().unwrap_or_default();
    let limit = |n: usize| array_range(n, args.array_limit);
    let script = |name: &str, array: Option<String>, command: String| {
        job_script(name, array, &common, &prologue, command)
    };
    let mut out_jobs = Vec::new();
    for (k, models) in matrix.training_stages().iter().enumerate() {
        let name = format!("advrob-train-{k}");
        let command = format!(
            "{exe} train --config {config} --out {outq} {data_flags} --stage {k} --task \"$SLURM_ARRAY_TASK_ID\""
        );
        out_jobs.push(Job {
            script: script(&name, Some(limit(models.len())), command),
            path: dir.join(format!("{name}.sbatch")),
            tasks: Some(models.len()),
            name,
        });
    }
    let cells = DataSource::of(matrix).len() * matrix.backends.len() * matrix.seeds.len();
    let units = cells * matrix.models.len() * matrix.attacks.len();
    let tasks = args.eval_tasks.unwrap_or(units).clamp(1, units.max(1));
    // the shard count is the array's size as submitted: a task resubmitted alone (`sbatch
    // --array=k`) still does shard k of all of them, not 0 of 1
    let command = format!(
        "{exe} run --config {config} --out {outq} {data_flags} --shard \"$SLURM_ARRAY_TASK_ID/{tasks}\""
    );
    out_jobs.push(Job {
        script: script("advrob-eval", Some(limit(tasks)), command),
        path: dir.join("advrob-eval.sbatch"),
        tasks: Some(tasks),
        name: "advrob-eval".into(),
    });
    let reports = quote(&out.join("reports").to_string_lossy());
    let command = format!("{exe} report --run {outq} --reports {reports}");
    out_jobs.push(Job {
        script: script("advrob-report", None, command),
        path: dir.join("advrob-report.sbatch"),
        tasks: None,
        name: "advrob-report".into(),
    });
    Ok(out_jobs)
}

/// Prepares the run directory (the matrix, the data fetched and verified on this host, the
/// scripts) and submits the jobs in order, each after the one before (`afterok`); returns the
/// job ids (none with `--dry-run`, which prints the scripts instead).
pub fn submit(
    matrix: &Matrix,
    out: &Path,
    data: &DataArgs,
    args: &SlurmArgs,
    extend: bool,
    registry: &Registry,
) -> anyhow::Result<Vec<(String, String)>> {
    matrix.check(registry)?;
    advrob_experiment::runner::check_matrix(&RunDir::new(absolute(out)?), matrix, extend)?;
    let exe = std::env::current_exe()?;
    let jobs = jobs(matrix, out, data, args, &exe)?;
    if args.dry_run {
        for j in &jobs {
            println!("# {}\n{}", j.path.display(), j.script);
        }
        return Ok(Vec::new());
    }
    // every task reads the same matrix and finds the data already fetched and verified
    let run = RunDir::new(absolute(out)?);
    std::fs::create_dir_all(run.root().join("slurm/logs"))?;
    advrob_experiment::runner::write_matrix(&run, matrix)?;
    for source in DataSource::of(matrix) {
        load_data(&source, &data.data_dir, &data.mirrors())?;
    }
    let mut ids: Vec<(String, String)> = Vec::new();
    for j in &jobs {
        advrob_data::atomic_write(&j.path, j.script.as_bytes())?;
        let mut cmd = Command::new("sbatch");
        cmd.arg("--parsable");
        if let Some((_, prev)) = ids.last() {
            cmd.arg(format!("--dependency=afterok:{prev}"));
        }
        let o = cmd
            .arg(&j.path)
            .output()
            .map_err(|e| anyhow::anyhow!("sbatch: {e} (is Slurm's client installed here?)"))?;
        anyhow::ensure!(
            o.status.success(),
            "sbatch {}: {}",
            j.path.display(),
            String::from_utf8_lossy(&o.stderr).trim()
        );
        let id = String::from_utf8_lossy(&o.stdout)
            .trim()
            .split(';')
            .next()
            .unwrap_or_default()
            .to_string();
        anyhow::ensure!(!id.is_empty(), "sbatch {}: no job id", j.path.display());
        ids.push((j.name.clone(), id));
    }
    Ok(ids)
}

/// This task's index and the array's size, from Slurm's environment.
pub fn array_task() -> anyhow::Result<(usize, usize)> {
    let var = |n: &str| -> anyhow::Result<usize> {
        std::env::var(n)
            .map_err(|_| anyhow::anyhow!("{n} is not set: not inside a Slurm array task"))?
            .parse()
            .map_err(|e| anyhow::anyhow!("{n}: {e}"))
    };
    Ok((var("SLURM_ARRAY_TASK_ID")?, var("SLURM_ARRAY_TASK_COUNT")?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scripts_chain_stages_and_carry_the_options() {
        let m = Matrix::from_toml(
            "[[models]]\nname = \"base\"\n[[models]]\nname = \"at\"\nfrom = \"base\"\n\
             defense = { kind = \"adversarial-training\" }\n[[models]]\nname = \"solo\"\n\
             [[attacks]]\nkind = \"fgsm\"\n[[attacks]]\nkind = \"pgd\"\nsteps = 5\n",
        )
        .expect("matrix");
        assert_eq!(m.training_stages(), vec![vec!["base", "solo"], vec!["at"]]);
        let data = DataArgs {
            data_dir: "/data".into(),
            mirror: vec!["/mirror".into()],
        };
        let args = SlurmArgs {
            partition: Some("gpu".into()),
            account: None,
            time: Some("01:00:00".into()),
            cpus_per_task: 2,
            mem: Some("4G".into()),
            gres: Some("gpu:1".into()),
            sbatch_lines: vec!["--qos=short".into()],
            array_limit: Some(8),
            eval_tasks: None,
            task_prologue: Some("module load x".into()),
            dry_run: true,
        };
        let jobs = jobs(
            &m,
            Path::new("/runs/study"),
            &data,
            &args,
            Path::new("/bin/br"),
        )
        .expect("jobs");
        let names: Vec<&str> = jobs.iter().map(|j| j.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "advrob-train-0",
                "advrob-train-1",
                "advrob-eval",
                "advrob-report"
            ]
        );
        assert_eq!(jobs[0].tasks, Some(2));
        // 1 dataset × 1 backend × 1 seed × 3 models × 2 attacks
        assert_eq!(jobs[2].tasks, Some(6));
        let eval = &jobs[2].script;
        for want in [
            "#SBATCH --array=0-5%8",
            "#SBATCH --partition=gpu",
            "#SBATCH --gres=gpu:1",
            "#SBATCH --qos=short",
            "#SBATCH --cpus-per-task=2",
            "module load x",
            "--shard \"$SLURM_ARRAY_TASK_ID/6\"",
            "--mirror '/mirror'",
            // the tasks read the matrix submitted, not whatever matrix.toml holds when they start
            "--config '/runs/study/matrices/",
        ] {
            assert!(eval.contains(want), "{want} in\n{eval}");
        }
        assert!(jobs[1].script.contains("--stage 1"), "{}", jobs[1].script);
        assert!(jobs[3].script.contains("report --run '/runs/study'"));
    }
}
