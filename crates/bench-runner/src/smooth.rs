//! `bench-runner smooth`: randomized smoothing (Cohen et al. 2019) for one saved model
//! ([`advrob_verify::certify_smoothed`]): the smoothed classifier's certified L2 radius on each test
//! image and its certified accuracy against the radius — a threat model of its own (L2, the
//! smoothed classifier, a failure probability α), never an L∞ figure.

use std::path::PathBuf;
use std::time::Instant;

use advrob_experiment::{DataSource, load_data};
use advrob_model::{backend, checkpoint};
use advrob_verify::{SmoothingSettings, certified_accuracy, certify_smoothed};
use anyhow::Context;
use clap::Args;

use crate::cli::DataArgs;

/// What `smooth` certifies.
#[derive(Debug, Clone, Args)]
pub struct SmoothArgs {
    /// A saved model: a `models/<name>` directory of a run (the base classifier).
    #[arg(long)]
    pub model: PathBuf,
    /// The noise's standard deviation σ (pixels in [0, 1]); the σ the model was trained with.
    #[arg(long)]
    pub sigma: f64,
    /// A dataset by name (fetched and verified into --data-dir), unless --dataset-dir is given.
    #[arg(long, default_value = "mnist")]
    pub dataset: String,
    /// IDX files in a directory, used as they are.
    #[arg(long)]
    pub dataset_dir: Option<PathBuf>,
    /// The first N test images.
    #[arg(long, default_value_t = 500)]
    pub test_limit: usize,
    /// Noisy copies that choose the class.
    #[arg(long, default_value_t = SmoothingSettings::default().n0)]
    pub n0: usize,
    /// Noisy copies that estimate its probability.
    #[arg(long, default_value_t = SmoothingSettings::default().n)]
    pub n: usize,
    /// The probability that a certificate is wrong.
    #[arg(long, default_value_t = SmoothingSettings::default().alpha)]
    pub alpha: f64,
    /// Noisy copies per forward pass.
    #[arg(long, default_value_t = SmoothingSettings::default().batch)]
    pub batch: usize,
    /// The noise's seed.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// L2 radii at which the certified accuracy is printed, comma-separated.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "0,0.25,0.5,0.75,1,1.25,1.5,1.75,2"
    )]
    pub radii: Vec<f64>,
    /// The backend the base classifier runs on.
    #[arg(long, default_value = "ndarray")]
    pub backend: String,
    /// Write the settings, the certified accuracies and every image's certificate here as JSON
    /// (atomically).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// Certifies the first images and prints the certified accuracy at each radius.
pub fn run(args: &SmoothArgs, data: &DataArgs) -> anyhow::Result<()> {
    let settings = SmoothingSettings {
        sigma: args.sigma,
        n0: args.n0,
        n: args.n,
        alpha: args.alpha,
        batch: args.batch,
        seed: args.seed,
    };
    settings.check()?;
    anyhow::ensure!(
        args.test_limit > 0,
        "invalid --test-limit: 0 test images certify nothing"
    );
    for &r in &args.radii {
        anyhow::ensure!(
            r.is_finite() && r >= 0.0,
            "invalid --radii: {r} is not a radius"
        );
    }
    let device = backend::device(&args.backend)?;
    let (model, _, _) = checkpoint::load(&args.model, &device)
        .with_context(|| format!("{}", args.model.display()))?;
    let source = match &args.dataset_dir {
        Some(d) => DataSource::Dir(d.clone()),
        None => DataSource::Named(args.dataset.clone()),
    };
    let (ds, name) = load_data(&source, &data.data_dir, &data.mirrors())?;
    let test = ds.test.take(args.test_limit);
    let n = test.len();
    let im = &test.images;
    let shape = [im.channels, im.rows, im.cols];
    let labels: Vec<usize> = test.labels.iter().map(|&y| usize::from(y)).collect();
    let pixels: Vec<f32> = im
        .pixels
        .iter()
        .map(|&p| advrob_data::unit_pixel(p))
        .collect();
    println!(
        "{} on {name}, first {n} test images: the smoothed classifier (σ {}, n0 {}, n {}, α {}); \
         certified L2 accuracy (Cohen et al. 2019) — not an L∞ figure",
        args.model.display(),
        settings.sigma,
        settings.n0,
        settings.n,
        settings.alpha
    );
    let t = Instant::now();
    let results = certify_smoothed(
        &model,
        &pixels,
        shape,
        advrob_data::NUM_CLASSES,
        &settings,
        &device,
    )?;
    let seconds = t.elapsed().as_secs_f64();
    let curve: Vec<(f64, f64)> = args
        .radii
        .iter()
        .map(|&r| (r, certified_accuracy(&results, &labels, r)))
        .collect();
    let abstained = results.iter().filter(|s| s.prediction.is_none()).count();
    for (r, a) in &curve {
        println!("radius {r}: certified accuracy {:.1}%", 100.0 * a);
    }
    println!(
        "{abstained} of {n} abstained; largest certifiable radius {:.3}; {seconds:.1} s",
        settings.max_radius()
    );
    if let Some(out) = &args.out {
        let doc = serde_json::json!({
            "threat_model": advrob_experiment::smoothed::THREAT_MODEL,
            "model": args.model.display().to_string(),
            "dataset": name,
            "test_images": n,
            "backend": args.backend,
            "settings": settings,
            "seconds": seconds,
            "certified_accuracy": curve
                .iter()
                .map(|(r, a)| serde_json::json!({"radius": r, "accuracy": a}))
                .collect::<Vec<_>>(),
            "abstained": abstained,
            "images": results
                .iter()
                .zip(&labels)
                .map(|(s, y)| serde_json::json!({"label": y, "certificate": s}))
                .collect::<Vec<_>>(),
        });
        advrob_data::atomic_write(out, serde_json::to_string_pretty(&doc)?.as_bytes())?;
        println!("{}", out.display());
    }
    Ok(())
}
