//! A timed harness: training, FGSM and inference throughput of the default model on one backend.
//! Figures are measured, printed and compared by people; no test asserts a time.

use std::time::Instant;

use advrob_attack::{Attack, Fgsm};
use advrob_data::{Dataset, range_tensors};
use advrob_model::{MlpConfig, Plain, TrainConfig, backend, train};
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
/// clean inference on the test set (batch 1000), after a short warm-up.
pub fn bench(ds: &Dataset, backend_name: &str) -> Result<BenchResult> {
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
    let t = Instant::now();
    let (model, _) = train(
        cfg.init(&device)?,
        &ds.train,
        &TrainConfig::new().with_epochs(1),
        &device,
        &mut Plain,
        &mut |_| {},
    )?;
    let train_epoch_seconds = t.elapsed().as_secs_f64();

    let n = ds.test.len();
    let fgsm = Fgsm::new();
    let t = Instant::now();
    for s in (0..n).step_by(1000) {
        let (x, y) = range_tensors(&ds.test, s, 1000, &device);
        let adv = fgsm.perturb(&model, x, y, 0.1)?;
        // read one value back so that lazy backends finish the work inside the timing
        let _: f32 = adv.sum().into_scalar();
    }
    let fgsm_seconds = t.elapsed().as_secs_f64();

    let t = Instant::now();
    for s in (0..n).step_by(1000) {
        let (x, _) = range_tensors(&ds.test, s, 1000, &device);
        let _: i64 = model.forward(x).argmax(1).sum().into_scalar();
    }
    let inference_seconds = t.elapsed().as_secs_f64();
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
    })
}

/// A Markdown table of bench results, one row per backend.
pub fn format_table(results: &[BenchResult]) -> String {
    let mut s = String::from(
        "| backend | device | train samples/s (batch 128) | FGSM images/s (batch 1000) | inference images/s |\n|---|---|---:|---:|---:|\n",
    );
    for r in results {
        s.push_str(&format!(
            "| {} | {} | {:.0} | {:.0} | {:.0} |\n",
            r.backend,
            r.device,
            r.train_samples_per_second,
            r.fgsm_images_per_second,
            r.inference_images_per_second
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flops_of_the_readme_mlp() {
        // 784-128-10: 2·(784·128 + 128·10) per forward pass
        let f = Flops::benched(784);
        assert_eq!(f.forward, 203_264.0);
        assert_eq!(f.fgsm, 406_528.0);
        assert_eq!(f.train, 3.0 * 203_264.0 - 2.0 * 784.0 * 128.0);
    }
}
