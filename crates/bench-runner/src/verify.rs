//! `bench-runner verify`: the certified side of robust accuracy for one saved model
//! ([`advrob_verify`]): per ε, how many test images are verified robust, attacked, misclassified
//! or left unknown, and what it cost.

use std::path::PathBuf;
use std::time::Instant;

use advrob_data::range_tensors;
use advrob_experiment::{DataSource, load_data};
use advrob_model::{backend, checkpoint};
use advrob_verify::{Network, Status, VerifySettings, verify};
use anyhow::Context;
use clap::Args;
use serde::Serialize;

use crate::cli::DataArgs;

/// What `verify` verifies.
#[derive(Debug, Clone, Args)]
pub struct VerifyArgs {
    /// A saved model: a `models/<name>` directory of a run.
    #[arg(long)]
    pub model: PathBuf,
    /// A dataset by name (fetched and verified into --data-dir), unless --dataset-dir is given.
    #[arg(long, default_value = "mnist")]
    pub dataset: String,
    /// IDX files in a directory, used as they are.
    #[arg(long)]
    pub dataset_dir: Option<PathBuf>,
    /// L∞ radii, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "0.1")]
    pub eps: Vec<f32>,
    /// The first N test images.
    #[arg(long, default_value_t = 1000)]
    pub test_limit: usize,
    /// Branch and bound: domains bounded per image at most (0: bounds and the margin PGD only).
    #[arg(long, default_value_t = VerifySettings::default().max_domains)]
    pub max_domains: usize,
    /// The backend the bounds are computed on.
    #[arg(long, default_value = "ndarray")]
    pub backend: String,
    /// Write every image's verdict here as JSON (atomically).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// One ε's verdicts.
#[derive(Debug, Serialize)]
struct AtEps {
    eps: f32,
    verified: usize,
    attacked: usize,
    misclassified: usize,
    unknown: usize,
    seconds: f64,
    images: Vec<advrob_verify::ImageResult>,
}

/// Runs the verifier and prints one line per ε.
pub fn run(args: &VerifyArgs, data: &DataArgs) -> anyhow::Result<()> {
    let device = backend::device(&args.backend)?;
    let (model, _, _) = checkpoint::load(&args.model, &device)?;
    let net = Network::new(&model, &device).with_context(|| format!("{}", args.model.display()))?;
    let source = match &args.dataset_dir {
        Some(d) => DataSource::Dir(d.clone()),
        None => DataSource::Named(args.dataset.clone()),
    };
    let (ds, name) = load_data(&source, &data.data_dir, &data.mirrors())?;
    let test = ds.test.take(args.test_limit);
    let n = test.len();
    let (images, _) = range_tensors(&test, 0, n, &device);
    let labels: Vec<usize> = test.labels.iter().map(|&y| usize::from(y)).collect();
    let settings = VerifySettings {
        max_domains: args.max_domains,
        ..VerifySettings::default()
    };
    let mut rows = Vec::new();
    println!(
        "{} on {name}, first {n} test images; verified (certified lower bound) .. clean minus \
         attacked (upper bound)",
        args.model.display()
    );
    for &eps in &args.eps {
        let t = Instant::now();
        let images = verify(&model, &net, images.clone(), &labels, eps, &settings)?;
        let count = |s: Status| images.iter().filter(|r| r.status == s).count();
        let row = AtEps {
            eps,
            verified: count(Status::Verified),
            attacked: count(Status::Attacked),
            misclassified: count(Status::Misclassified),
            unknown: count(Status::Unknown),
            seconds: t.elapsed().as_secs_f64(),
            images,
        };
        let pct = |k: usize| 100.0 * k as f64 / n.max(1) as f64;
        println!(
            "eps {eps}: robust accuracy in [{:.2}%, {:.2}%] ({} verified, {} attacked, {} \
             misclassified, {} unknown) in {:.1} s",
            pct(row.verified),
            pct(row.verified + row.unknown),
            row.verified,
            row.attacked,
            row.misclassified,
            row.unknown,
            row.seconds
        );
        rows.push(row);
    }
    if let Some(out) = &args.out {
        let doc = serde_json::json!({
            "model": args.model.display().to_string(),
            "dataset": name,
            "test_images": n,
            "backend": args.backend,
            "settings": settings,
            "eps": rows,
        });
        advrob_data::atomic_write(out, serde_json::to_string_pretty(&doc)?.as_bytes())?;
        println!("{}", out.display());
    }
    Ok(())
}
