//! Verifies a saved advrob model on the first test images of an MNIST directory at one ε and
//! prints how many are verified, attacked, misclassified and unknown, with the time it took.
//!
//! ```text
//! cargo run --example certify -p advrob-verify --features advrob-model/ndarray -- \
//!     MODEL_DIR MNIST_DIR [EPS=0.1] [IMAGES=100] [MAX_DOMAINS=2000]
//! ```

use std::path::PathBuf;
use std::time::Instant;

use advrob_data::Dataset;
use advrob_data::range_tensors;
use advrob_model::{backend, checkpoint};
use advrob_verify::{Method, Network, Status, VerifySettings, margin_bounds, verify};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [model_dir, data_dir, ..] = args.as_slice() else {
        return Err("usage: certify MODEL_DIR MNIST_DIR [EPS] [IMAGES] [MAX_DOMAINS]".into());
    };
    let arg = |i: usize, default: &str| args.get(i).cloned().unwrap_or(default.into());
    let eps: f32 = arg(2, "0.1").parse()?;
    let count: usize = arg(3, "100").parse()?;
    let settings = VerifySettings {
        max_domains: arg(4, "2000").parse()?,
        ..VerifySettings::default()
    };
    let device = backend::device("ndarray")?;
    let (model, _, _) = checkpoint::load(&PathBuf::from(model_dir), &device)?;
    let test = Dataset::load_dir(&PathBuf::from(data_dir))?
        .test
        .take(count);
    let (images, _) = range_tensors(&test, 0, count, &device);
    let labels: Vec<usize> = test.labels.iter().map(|&y| usize::from(y)).collect();
    let net = Network::new(&model, &device)?;
    let host: Vec<f32> = images
        .clone()
        .into_data()
        .try_into_vec_as::<f32>()?
        .to_vec();
    for method in [Method::Ibp, Method::Crown, Method::alpha_crown()] {
        let t = Instant::now();
        let m = margin_bounds(&net, &host, &labels, eps, method)?;
        let certified = m
            .chunks(net.classes())
            .filter(|r| r.iter().all(|&v| v > 1e-4))
            .count();
        println!(
            "{:>12}: {certified} of {count} certified ({:.2} s)",
            method.name(),
            t.elapsed().as_secs_f64()
        );
    }
    let t = Instant::now();
    let verdict = verify(&model, &net, images, &labels, eps, &settings)?;
    let n = |s: Status| verdict.iter().filter(|r| r.status == s).count();
    println!(
        "    complete: {} verified, {} attacked, {} misclassified, {} unknown ({:.1} s, {} domains)",
        n(Status::Verified),
        n(Status::Attacked),
        n(Status::Misclassified),
        n(Status::Unknown),
        t.elapsed().as_secs_f64(),
        verdict.iter().map(|r| r.domains).sum::<usize>()
    );
    for (i, r) in verdict
        .iter()
        .enumerate()
        .filter(|(_, r)| r.status == Status::Unknown)
    {
        println!(
            "    unknown #{i}: {} unstable ReLUs, root bound {:.4}, {} domains",
            r.unstable, r.root_bound, r.domains
        );
    }
    Ok(())
}
