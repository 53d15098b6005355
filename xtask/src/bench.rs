//! `cargo xtask bench`: throughput of the default model per backend, and (with `--peer`) of the
//! same work in PyTorch, interleaved round by round; printed and kept in reports/.

use std::path::{Path, PathBuf};
use std::process::Command;

use advrob_experiment::bench::{
    BenchResult, Flops, LenetBench, bench as run_bench, bench_lenet, format_table,
};
use advrob_experiment::{DataSource, load_data};
use bench_runner::cli::{DataArgs, backends_or_compiled};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// The PyTorch peer: a Python with torch, and `torch_bench.py`.
#[derive(Debug, Clone)]
pub struct Peer {
    /// The interpreter.
    pub python: String,
    /// The script (prints one JSON line of throughputs).
    pub script: PathBuf,
}

/// What `cargo xtask bench` was asked.
#[derive(Debug, Clone)]
pub struct BenchArgs {
    /// Backends (none: every compiled-in one).
    pub backends: Vec<String>,
    /// IDX directory instead of the verified MNIST.
    pub dataset_dir: Option<PathBuf>,
    /// Training examples of the timed epoch (none: all).
    pub train_limit: Option<usize>,
    /// The peer to time beside advrob.
    pub peer: Option<Peer>,
    /// Rounds of the interleaving.
    pub rounds: usize,
    /// Also time a LeNet-5 training epoch on the first N training images (`Some(None)`: all of
    /// them), on every backend and, with a peer, in PyTorch (`lenet_script`).
    pub lenet: Option<Option<usize>>,
    /// The peer's LeNet script.
    pub lenet_script: PathBuf,
}

/// What the peer script prints, and the cores it kept busy.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct PeerResult {
    torch: String,
    train_sps: f64,
    fgsm_ips: f64,
    infer_ips: f64,
    /// Cores busy on average over the whole script (loading the data included): its CPU time
    /// over its wall time, measured from outside.
    #[serde(default)]
    cores_busy: Option<f64>,
}

/// CPU seconds of this process's waited-for children (`/proc/self/stat` fields cutime and
/// cstime, in the kernel's 100 ticks a second); `None` off Linux.
fn children_cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // the fields after the command name, which is in parentheses and may hold spaces
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // fields 16 and 17 of stat(5), counted from 1; `rest` starts at field 3
    let ticks = f.get(13)?.parse::<f64>().ok()? + f.get(14)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

/// What the peer's LeNet script prints, and the cores it kept busy.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct PeerLenet {
    torch: String,
    lenet_sps: f64,
    lenet_examples: usize,
    #[serde(default)]
    cores_busy: Option<f64>,
}

/// One round: every backend, then the peer; then the same for a LeNet epoch when asked.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Round {
    advrob: Vec<BenchResult>,
    peer: Option<PeerResult>,
    #[serde(default)]
    lenet: Vec<LenetBench>,
    #[serde(default)]
    peer_lenet: Option<PeerLenet>,
}

pub fn bench(args: &BenchArgs, data: &DataArgs, reports: &Path) -> anyhow::Result<()> {
    let backends = backends_or_compiled(args.backends.clone());
    for b in &backends {
        advrob_model::backend::device(b)?;
    }
    anyhow::ensure!(args.rounds >= 1, "invalid --rounds: must be at least 1");
    anyhow::ensure!(
        args.peer.is_none() || args.train_limit.is_none(),
        "invalid --train-limit: the peer times a full epoch; drop --train-limit to compare with it"
    );
    let source = DataSource::dir_or_mnist(args.dataset_dir.clone());
    let (mut ds, name) = load_data(&source, &data.data_dir, &data.mirrors())?;
    if let Some(n) = args.train_limit {
        ds.train = ds.train.take(n);
    }
    let dir = match &source {
        DataSource::Dir(d) => d.clone(),
        DataSource::Named(n) => data.data_dir.join(n),
    };
    // the peer reads gzip IDX files; the download cache holds them decompressed
    let peer_data = tempfile::tempdir()?;
    if args.peer.is_some() {
        for f in advrob_data::FILE_NAMES {
            let plain = find(&dir, f)?;
            let bytes = advrob_data::idx::read_maybe_gz(&plain)?;
            advrob_data::idx::write_file(&peer_data.path().join(format!("{f}.gz")), &bytes, true)?;
        }
    }
    let mut rounds = Vec::new();
    for round in 1..=args.rounds {
        let mut advrob = Vec::new();
        for b in &backends {
            log::info!("round {round}: bench on {b} ({name})");
            advrob.push(run_bench(&ds, b)?);
        }
        let peer = match &args.peer {
            Some(p) => {
                log::info!("round {round}: the PyTorch peer");
                let (mut r, busy) = run_script::<PeerResult>(
                    p,
                    &p.script,
                    "--peer-script",
                    peer_data.path(),
                    None,
                )?;
                r.cores_busy = busy;
                Some(r)
            }
            None => None,
        };
        let (mut lenet, mut peer_lenet) = (Vec::new(), None);
        if let Some(limit) = args.lenet {
            for b in &backends {
                log::info!("round {round}: a LeNet epoch on {b}");
                lenet.push(bench_lenet(&ds, b, limit)?);
            }
            if let Some(p) = &args.peer {
                log::info!("round {round}: a LeNet epoch in PyTorch");
                let (mut r, busy) = run_script::<PeerLenet>(
                    p,
                    &args.lenet_script,
                    "--lenet-script",
                    peer_data.path(),
                    limit,
                )?;
                r.cores_busy = busy;
                peer_lenet = Some(r);
            }
        }
        rounds.push(Round {
            advrob,
            peer,
            lenet,
            peer_lenet,
        });
    }
    let mut table = if args.peer.is_some() || args.rounds > 1 {
        rounds_table(&rounds, Flops::benched(ds.train.image_size()))
    } else {
        format_table(&rounds[0].advrob)
    };
    if args.lenet.is_some() {
        table.push_str(&lenet_table(&rounds));
    }
    print!("{table}");
    std::fs::create_dir_all(reports)?;
    advrob_data::atomic_write(&reports.join("bench.md"), table.as_bytes())?;
    advrob_data::atomic_write(
        &reports.join("bench.json"),
        serde_json::to_string_pretty(&rounds)?.as_bytes(),
    )?;
    Ok(())
}

/// `dir/name`, plain or gzip.
fn find(dir: &Path, name: &str) -> anyhow::Result<PathBuf> {
    [dir.join(name), dir.join(format!("{name}.gz"))]
        .into_iter()
        .find(|p| p.is_file())
        .ok_or_else(|| anyhow::anyhow!("{}: no {name} (plain or .gz) here", dir.display()))
}

/// Runs a peer script (`script`, named by the option `option`) on the IDX directory `data`
/// (and `limit`, the training images to use, when given), and parses its last line; with the
/// cores it kept busy, measured from outside.
fn run_script<T: DeserializeOwned>(
    peer: &Peer,
    script: &Path,
    option: &str,
    data: &Path,
    limit: Option<usize>,
) -> anyhow::Result<(T, Option<f64>)> {
    anyhow::ensure!(
        script.is_file(),
        "{}: no such peer script ({option})",
        script.display()
    );
    let cpu = children_cpu_seconds();
    let wall = std::time::Instant::now();
    let mut cmd = Command::new(&peer.python);
    cmd.arg(script).arg(data);
    if let Some(n) = limit {
        cmd.arg(n.to_string());
    }
    let out = cmd
        .output()
        .map_err(|e| anyhow::anyhow!("{}: {e} (--peer names the Python to run)", peer.python))?;
    let wall = wall.elapsed().as_secs_f64();
    let cores_busy = cpu
        .zip(children_cpu_seconds())
        .map(|(a, b)| (b - a) / wall.max(1e-9));
    let stdout = String::from_utf8_lossy(&out.stdout);
    anyhow::ensure!(
        out.status.success(),
        "{} {}: {}\n{}",
        peer.python,
        script.display(),
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    let line = stdout.lines().last().unwrap_or_default();
    let r: T = serde_json::from_str(line).map_err(|e| {
        anyhow::anyhow!(
            "{}: not the JSON line of throughputs ({e}): {line}",
            script.display()
        )
    })?;
    Ok((r, cores_busy))
}

/// The LeNet table: per backend and for the peer the range of samples per second over the
/// rounds and the cores busy, then each backend's ratio to the peer round by round.
fn lenet_table(rounds: &[Round]) -> String {
    let Some(first) = rounds.first() else {
        return String::new();
    };
    let examples = first.lenet.first().map_or(0, |r| r.examples);
    let with_peer = rounds.iter().all(|r| r.peer_lenet.is_some());
    let mut s = format!(
        "\nOne LeNet-5 training epoch (the `cnn` preset's network; batch 128, Adam) on the first {examples} training images, over {} interleaved round(s), after a warm-up on 512: thousands of samples per second, range over rounds; cores busy as above.{}\n\n| | LeNet epoch samples/s | cores busy |\n|---|---:|---:|\n",
        rounds.len(),
        if with_peer {
            " PyTorch: `peers/torch_lenet_bench.py`, the same network, optimiser and batches, its training set a tensor before the timer."
        } else {
            ""
        }
    );
    for (i, r) in first.lenet.iter().enumerate() {
        let sps: Vec<f64> = rounds
            .iter()
            .map(|x| x.lenet[i].samples_per_second / 1e3)
            .collect();
        let b: Vec<Option<f64>> = rounds.iter().map(|x| x.lenet[i].cores_busy).collect();
        s.push_str(&format!(
            "| advrob {} | {}k | {} |\n",
            r.backend,
            range(&sps, 2),
            busy(&b)
        ));
    }
    if !with_peer {
        return s;
    }
    let peer: Vec<f64> = rounds
        .iter()
        .filter_map(|r| r.peer_lenet.as_ref().map(|p| p.lenet_sps))
        .collect();
    let torch = first.peer_lenet.as_ref().map_or("", |p| p.torch.as_str());
    let pb: Vec<Option<f64>> = rounds
        .iter()
        .map(|r| r.peer_lenet.as_ref().and_then(|p| p.cores_busy))
        .collect();
    let k: Vec<f64> = peer.iter().map(|v| v / 1e3).collect();
    s.push_str(&format!(
        "| PyTorch {torch} | {}k | {} (whole script) |\n",
        range(&k, 2),
        busy(&pb)
    ));
    for (i, r) in first.lenet.iter().enumerate() {
        let ratio: Vec<f64> = rounds
            .iter()
            .zip(&peer)
            .map(|(x, p)| x.lenet[i].samples_per_second / p)
            .collect();
        s.push_str(&format!(
            "| advrob {} / PyTorch | {}× | |\n",
            r.backend,
            range(&ratio, 2)
        ));
    }
    s
}

/// The range of cores busy over the rounds (`–` where none was measured).
fn busy(v: &[Option<f64>]) -> String {
    let v: Vec<f64> = v.iter().flatten().copied().collect();
    if v.is_empty() {
        "–".into()
    } else {
        range(&v, 2)
    }
}

/// `lo–hi` of `v` (one value: itself), with `digits` decimals.
fn range(v: &[f64], digits: usize) -> String {
    let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if (hi - lo).abs() < f64::EPSILON || v.len() == 1 {
        format!("{lo:.digits$}")
    } else {
        format!("{lo:.digits$}–{hi:.digits$}")
    }
}

/// The three throughputs of one row, per round.
type Row = [Vec<f64>; 3];

/// The table of an interleaved run: per backend and for the peer the range of each throughput over
/// the rounds (thousands per second) with the GFLOP/s it amounts to, then each backend's ratio to
/// the peer taken round by round.
fn rounds_table(rounds: &[Round], flops: Flops) -> String {
    let backends: Vec<(String, String)> = rounds[0]
        .advrob
        .iter()
        .map(|r| (r.backend.clone(), r.device.clone()))
        .collect();
    let of = |i: usize| -> Row {
        let get = |f: fn(&BenchResult) -> f64| rounds.iter().map(|r| f(&r.advrob[i])).collect();
        [
            get(|r| r.train_samples_per_second),
            get(|r| r.fgsm_images_per_second),
            get(|r| r.inference_images_per_second),
        ]
    };
    let peer: Option<Row> = rounds.iter().all(|r| r.peer.is_some()).then(|| {
        let get = |f: fn(&PeerResult) -> f64| {
            rounds
                .iter()
                .filter_map(|r| r.peer.as_ref().map(f))
                .collect()
        };
        [
            get(|p| p.train_sps),
            get(|p| p.fgsm_ips),
            get(|p| p.infer_ips),
        ]
    });
    let per = [flops.train, flops.fgsm, flops.forward];
    let cells = |row: &Row| -> String {
        row.iter()
            .zip(per)
            .map(|(v, f)| {
                let k: Vec<f64> = v.iter().map(|x| x / 1e3).collect();
                let g: Vec<f64> = v.iter().map(|x| x * f / 1e9).collect();
                format!(" {}k ({} GFLOP/s) |", range(&k, 1), range(&g, 1))
            })
            .collect()
    };
    let mut s = format!(
        "Throughput of the README MLP (784-128-10) over {} interleaved round(s): thousands per second, range over rounds, and the GFLOP/s it amounts to ({:.2} MFLOP a training example, {:.2} an FGSM example, {:.2} a forward pass). The same work on both sides: FGSM and inference time tensors made before their timers (advrob converts the test batches first, PyTorch its test set); training times the epoch with advrob converting each batch of bytes inside it, as every run does, while PyTorch converts its training set before its timer. Each part after a warm-up on both sides, right before its timer (one FGSM batch, one inference batch; advrob also a short training). *Cores busy*: CPU time of the process's threads over wall time, measured per timed part for advrob (train / FGSM / inference) and over the whole script, data loading included, for PyTorch (from outside: the peer script reports no CPU time). advrob keeps its pool awake while it computes, as a run does (one thread spins for work, as OpenMP's threads do), and counts that thread's time; on the ~10 ms inference part the figure can read above the cores, since the kernel counts a running thread's time at its ticks.\n\n| | device | train samples/s (batch 128) | FGSM images/s (batch 1000) | inference images/s (batch 1000) | cores busy |\n|---|---|---:|---:|---:|---:|\n",
        rounds.len(),
        flops.train / 1e6,
        flops.fgsm / 1e6,
        flops.forward / 1e6
    );
    for (i, (b, device)) in backends.iter().enumerate() {
        let part = |f: fn(&BenchResult) -> Option<f64>| -> String {
            busy(&rounds.iter().map(|r| f(&r.advrob[i])).collect::<Vec<_>>())
        };
        s.push_str(&format!(
            "| advrob {b} | {device} |{} {} / {} / {} |\n",
            cells(&of(i)),
            part(|r| r.train_cores_busy),
            part(|r| r.fgsm_cores_busy),
            part(|r| r.inference_cores_busy)
        ));
    }
    let Some(peer) = peer else {
        return s;
    };
    let torch = rounds[0].peer.as_ref().map_or("", |p| p.torch.as_str());
    let peer_busy: Vec<Option<f64>> = rounds
        .iter()
        .map(|r| r.peer.as_ref().and_then(|p| p.cores_busy))
        .collect();
    s.push_str(&format!(
        "| PyTorch {torch} | CPU, torch.set_num_threads(2) |{} {} (whole script) |\n",
        cells(&peer),
        busy(&peer_busy)
    ));
    for (i, (b, _)) in backends.iter().enumerate() {
        let row = of(i);
        let ratios: String = (0..3)
            .map(|k| {
                let r: Vec<f64> = row[k].iter().zip(&peer[k]).map(|(a, p)| a / p).collect();
                format!(" {}× |", range(&r, 2))
            })
            .collect();
        s.push_str(&format!(
            "| advrob {b} / PyTorch | (same round) |{ratios} |\n"
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lenet(backend: &str, sps: f64) -> LenetBench {
        LenetBench {
            backend: backend.into(),
            examples: 1000,
            seconds: 1000.0 / sps,
            samples_per_second: sps,
            cores_busy: Some(1.0),
        }
    }

    fn round(advrob: f64, peer: Option<f64>) -> Round {
        Round {
            advrob: vec![],
            peer: None,
            lenet: vec![lenet("flex", advrob)],
            peer_lenet: peer.map(|p| PeerLenet {
                torch: "2.x".into(),
                lenet_sps: p,
                lenet_examples: 1000,
                cores_busy: Some(1.5),
            }),
        }
    }

    #[test]
    fn the_lenet_table_gives_ranges_and_ratios_round_by_round() {
        let t = lenet_table(&[round(4000.0, Some(16000.0)), round(5000.0, Some(10000.0))]);
        assert!(
            t.contains("first 1000 training images, over 2 interleaved"),
            "{t}"
        );
        assert!(t.contains("| advrob flex | 4.00–5.00k | 1.00 |"), "{t}");
        assert!(
            t.contains("| PyTorch 2.x | 10.00–16.00k | 1.50 (whole script) |"),
            "{t}"
        );
        // each round's ratio (4/16, 5/10), not the ratio of the ranges
        assert!(
            t.contains("| advrob flex / PyTorch | 0.25–0.50× | |"),
            "{t}"
        );
    }

    #[test]
    fn without_the_peer_in_every_round_the_lenet_table_has_no_ratio() {
        let t = lenet_table(&[round(4000.0, Some(16000.0)), round(5000.0, None)]);
        assert!(t.contains("| advrob flex | 4.00–5.00k |"), "{t}");
        assert!(!t.contains("PyTorch"), "{t}");
        assert!(!t.contains("×"), "{t}");
    }
}
