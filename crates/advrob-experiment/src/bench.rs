//! A timed harness: training, FGSM and inference throughput of the default model on one backend.
//! Figures are measured, printed and compared by people; no test asserts a time.

use std::time::Instant;

use advrob_attack::{Attack, Fgsm};
use advrob_data::{Dataset, range_tensors};
use advrob_model::{Classifier, MlpConfig, Plain, TrainConfig, backend, train};
use serde::{Deserialize, Serialize};

use crate::error::Result;

/// Throughputs of one backend.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BenchResult {
    /// Backend name.
    pub backend: String,
    /// What ran it: the CPU and its threads, or the wgpu adapter (name, kind, graphics API).
    #[serde(default)]
    pub device: String,
    /// Training examples in the timed epoch.
    pub train_examples: usize,
    /// Wall time of one training epoch (batch 128).
    pub train_epoch_seconds: f64,
    /// Training throughput.
    pub train_samples_per_second: f64,
    /// Test images attacked (batch 1000).
    pub fgsm_images: usize,
    /// Wall time of making FGSM examples for them.
    pub fgsm_seconds: f64,
    /// FGSM throughput.
    pub fgsm_images_per_second: f64,
    /// Wall time of clean inference on the test images (batch 1000).
    pub inference_seconds: f64,
    /// Inference throughput.
    pub inference_images_per_second: f64,
    /// Cores busy on average during the timed training epoch: the CPU time of every thread of
    /// this process over the wall time (1.0: one core; `None` where the system does not say).
    #[serde(default)]
    pub train_cores_busy: Option<f64>,
    /// The same during FGSM.
    #[serde(default)]
    pub fgsm_cores_busy: Option<f64>,
    /// The same during inference.
    #[serde(default)]
    pub inference_cores_busy: Option<f64>,
}

/// CPU seconds the threads of this process have run, summed over them (`/proc/self/task/*/
/// schedstat`, nanoseconds); `None` off Linux. Threads that have ended are not counted: call it
/// around work whose threads (a backend's pool) outlive it.
pub fn cpu_seconds() -> Option<f64> {
    let ns: u64 = std::fs::read_dir("/proc/self/task")
        .ok()?
        .filter_map(|task| {
            // a thread that ends meanwhile has no schedstat any more
            let text = std::fs::read_to_string(task.ok()?.path().join("schedstat")).ok()?;
            text.split_whitespace().next()?.parse::<u64>().ok()
        })
        .sum();
    Some(ns as f64 / 1e9)
}

/// Wall seconds and cores busy (CPU seconds over wall seconds) of `work`. The benches run with
/// the pool kept awake from their warm-up on ([`backend::keep_awake`], what [`crate::run`] does
/// for a whole run), so the cores busy count the spinning thread's time too.
fn timed<T>(work: impl FnOnce() -> Result<T>) -> Result<(T, f64, Option<f64>)> {
    let cpu = cpu_seconds();
    let t = Instant::now();
    let out = work()?;
    let wall = t.elapsed().as_secs_f64();
    let busy = cpu
        .zip(cpu_seconds())
        .map(|(a, b)| (b - a) / wall.max(1e-9));
    Ok((out, wall, busy))
}

/// Floating-point operations per example of the benched model (multiply and add counted apart),
/// from its layer widths: `forward` is Σ 2·inᵢ·outᵢ over the layers; a training example costs the
/// forward, the weight gradients (one more `forward`) and the input gradients of every layer but
/// the first; FGSM, with frozen weights, the forward and the input gradients of every layer. Biases,
/// activations and the optimiser step are left out (under 1%).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Flops {
    /// One forward pass.
    pub forward: f64,
    /// One training example (forward and backward).
    pub train: f64,
    /// One FGSM example (forward and the gradient with respect to the input).
    pub fgsm: f64,
}

impl Flops {
    /// The counts of the MLP `cfg`.
    pub fn of(cfg: &MlpConfig) -> Flops {
        let widths: Vec<usize> = std::iter::once(cfg.input)
            .chain(cfg.hidden.iter().copied())
            .chain(std::iter::once(cfg.classes))
            .collect();
        let layer = |w: &[usize]| 2.0 * w[0] as f64 * w[1] as f64;
        let forward: f64 = widths.windows(2).map(layer).sum();
        let first = layer(&widths[..2]);
        Flops {
            forward,
            train: 3.0 * forward - first,
            fgsm: 2.0 * forward,
        }
    }

    /// The counts of the model [`bench`] times.
    pub fn benched(input: usize) -> Flops {
        Flops::of(&MlpConfig::new().with_input(input))
    }
}

/// Times one epoch of training of the README model (batch 128), FGSM generation at ε = 0.1 and
/// clean inference on the test set (batch 1000), each after a warm-up (a short training, one
/// batch of FGSM and of inference), with the pool kept awake throughout.
pub fn bench(ds: &Dataset, backend_name: &str) -> Result<BenchResult> {
    // as a run computes: the pool awake throughout, from the warm-up to the last timer (a second
    // core left asleep between the warm-up and a timer came back late: the first FGSM batches of
    // some rounds took 8-13 ms instead of 2.4)
    backend::keep_awake(|| bench_awake(ds, backend_name))
}

/// [`bench`], with the pool kept awake.
fn bench_awake(ds: &Dataset, backend_name: &str) -> Result<BenchResult> {
    let device = backend::device(backend_name)?;
    let cfg = MlpConfig::new().with_input(ds.train.image_size());
    let cfg = advrob_model::NetConfig::from(cfg);
    // warm-up: allocations, kernel compilation on GPU backends
    let warm = ds.train.take(2048);
    let (_, _) = train(
        cfg.init(&device)?,
        &warm,
        &TrainConfig::new().with_epochs(1),
        &device,
        &mut Plain,
        &mut |_| {},
    )?;
    // training converts each batch of bytes inside the timed epoch, as every run does
    let ((model, _), train_epoch_seconds, train_cores_busy) = timed(|| {
        Ok(train(
            cfg.init(&device)?,
            &ds.train,
            &TrainConfig::new().with_epochs(1),
            &device,
            &mut Plain,
            &mut |_| {},
        )?)
    })?;

    // the test batches are tensors before the timers start, as the peer's test set is
    let n = ds.test.len();
    let batches: Vec<_> = (0..n)
        .step_by(1000)
        .map(|s| range_tensors(&ds.test, s, 1000, &device))
        .collect();
    let fgsm = Fgsm::new();
    // one batch of each part right before its timer, as the peer does (its first FGSM call pays
    // autograd's set-up, ours the allocator's first pages: 19 page faults of 2 MiB pages in a
    // timed FGSM part without it). Right before: with the inference warm-up between the FGSM
    // warm-up and its timer, the first timed FGSM batch found its 3 MiB block taken and faulted
    // 768 fresh pages in every round that followed the peer (+0.5-10 ms on a ~15 ms part)
    if let Some((x, y)) = batches.first() {
        let _: f32 = fgsm
            .perturb(&model, x.clone(), y.clone(), 0.1)?
            .slice([0..1, 0..1, 0..1, 0..1])
            .into_scalar();
    }
    let ((), fgsm_seconds, fgsm_cores_busy) = timed(|| {
        for (x, y) in &batches {
            let adv = fgsm.perturb(&model, x.clone(), y.clone(), 0.1)?;
            // read one value back so that lazy backends finish the work inside the timing (one
            // value, not a sum over the batch: the peer reduces nothing either)
            let _: f32 = adv.slice([0..1, 0..1, 0..1, 0..1]).into_scalar();
        }
        Ok(())
    })?;

    if let Some((x, _)) = batches.first() {
        let _: i64 = model.logits(x.clone()).argmax(1).sum().into_scalar();
    }
    let ((), inference_seconds, inference_cores_busy) = timed(|| {
        for (x, _) in &batches {
            let _: i64 = model.logits(x.clone()).argmax(1).sum().into_scalar();
        }
        Ok(())
    })?;
    Ok(BenchResult {
        backend: backend_name.to_string(),
        device: backend::describe(backend_name)?,
        train_examples: ds.train.len(),
        train_epoch_seconds,
        train_samples_per_second: ds.train.len() as f64 / train_epoch_seconds,
        fgsm_images: n,
        fgsm_seconds,
        fgsm_images_per_second: n as f64 / fgsm_seconds,
        inference_seconds,
        inference_images_per_second: n as f64 / inference_seconds,
        train_cores_busy,
        fgsm_cores_busy,
        inference_cores_busy,
    })
}

/// One timed LeNet-5 training epoch on one backend ([`bench_lenet`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LenetBench {
    /// Backend name.
    pub backend: String,
    /// Training examples in the timed epoch.
    pub examples: usize,
    /// Wall time of the epoch (batch 128, Adam, as the study trains).
    pub seconds: f64,
    /// Training throughput.
    pub samples_per_second: f64,
    /// Cores busy during the epoch, as [`BenchResult::train_cores_busy`].
    #[serde(default)]
    pub cores_busy: Option<f64>,
}

/// Times one training epoch of LeNet-5 ([`LenetConfig`](advrob_model::LenetConfig), batch 128)
/// on the first `limit` training images (all with `None`), after a warm-up on 512 of them: the
/// CNN the study's `cnn` preset trains, and the convolutions a backend has.
pub fn bench_lenet(ds: &Dataset, backend_name: &str, limit: Option<usize>) -> Result<LenetBench> {
    backend::keep_awake(|| bench_lenet_awake(ds, backend_name, limit))
}

/// [`bench_lenet`], with the pool kept awake as [`bench`] keeps it.
fn bench_lenet_awake(ds: &Dataset, backend_name: &str, limit: Option<usize>) -> Result<LenetBench> {
    let device = backend::device(backend_name)?;
    let [h, w] = [ds.train.images.rows, ds.train.images.cols];
    let cfg = advrob_model::NetConfig::Lenet(advrob_model::LenetConfig::new().with_image([h, w]));
    let data = ds.train.take(limit.unwrap_or(usize::MAX));
    let epoch = TrainConfig::new().with_epochs(1);
    let one_epoch = |data: &advrob_data::Split| -> Result<()> {
        train(
            cfg.init(&device)?,
            data,
            &epoch,
            &device,
            &mut Plain,
            &mut |_| {},
        )?;
        Ok(())
    };
    one_epoch(&ds.train.take(512))?;
    let ((), seconds, cores_busy) = timed(|| one_epoch(&data))?;
    Ok(LenetBench {
        backend: backend_name.to_string(),
        examples: data.len(),
        seconds,
        samples_per_second: data.len() as f64 / seconds,
        cores_busy,
    })
}

/// A Markdown table of bench results, one row per backend.
pub fn format_table(results: &[BenchResult]) -> String {
    let mut s = String::from(
        "| backend | device | train samples/s (batch 128) | FGSM images/s (batch 1000) | inference images/s | cores busy (train / FGSM / inference) |\n|---|---|---:|---:|---:|---:|\n",
    );
    let busy = |v: Option<f64>| v.map_or_else(|| "–".to_string(), |x| format!("{x:.2}"));
    for r in results {
        s.push_str(&format!(
            "| {} | {} | {:.0} | {:.0} | {:.0} | {} / {} / {} |\n",
            r.backend,
            r.device,
            r.train_samples_per_second,
            r.fgsm_images_per_second,
            r.inference_images_per_second,
            busy(r.train_cores_busy),
            busy(r.fgsm_cores_busy),
            busy(r.inference_cores_busy)
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// CPU seconds of the calling thread.
    fn own_cpu() -> f64 {
        let t = std::fs::read_to_string("/proc/thread-self/schedstat").expect("schedstat");
        t.split_whitespace()
            .next()
            .and_then(|v| v.parse::<f64>().ok())
            .expect("ns")
            / 1e9
    }

    /// Runs on the CPU until this thread has used `secs` of CPU time.
    fn burn_cpu(secs: f64) {
        let start = own_cpu();
        let mut x = 0u64;
        while own_cpu() - start < secs {
            for _ in 0..10_000 {
                x = x.wrapping_add(std::hint::black_box(1));
            }
        }
        std::hint::black_box(x);
    }

    #[test]
    fn cpu_seconds_count_the_work_of_every_thread() {
        let before = cpu_seconds().expect("Linux says");
        let (done, wait) = std::sync::mpsc::channel::<()>();
        let (measured, release) = std::sync::mpsc::channel::<()>();
        let helper = std::thread::spawn(move || {
            burn_cpu(0.1);
            done.send(()).expect("send");
            // alive until measured: an ended thread is not counted
            release.recv().expect("recv");
        });
        burn_cpu(0.1);
        wait.recv().expect("helper done");
        let after = cpu_seconds().expect("Linux says");
        measured.send(()).expect("send");
        helper.join().expect("join");
        // both threads' 0.1 s, and not much more
        assert!(after - before >= 0.2, "{}", after - before);
        assert!(after - before < 1.0, "{}", after - before);
    }

    #[test]
    fn flops_of_the_readme_mlp() {
        // 784-128-10: 2·(784·128 + 128·10) per forward pass
        let f = Flops::benched(784);
        assert_eq!(f.forward, 203_264.0);
        assert_eq!(f.fgsm, 406_528.0);
        assert_eq!(f.train, 3.0 * 203_264.0 - 2.0 * 784.0 * 128.0);
    }
}
