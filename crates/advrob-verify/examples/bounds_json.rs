//! Writes, for the first test images of an MNIST directory, every logit's IBP and CROWN bounds over
//! the L∞ ball of radius ε cut to [0, 1], and the complete verifier's verdict, as JSON: what
//! `peers/verify_vs_lirpa.py` compares with auto_LiRPA and an exact MILP.
//!
//! ```text
//! cargo run --example bounds_json -p advrob-verify -- MODEL_DIR MNIST_DIR EPS IMAGES OUT.json [MAX_DOMAINS]
//! ```

use std::path::PathBuf;

use advrob_data::{Dataset, range_tensors};
use advrob_model::{backend, checkpoint};
use advrob_verify::{Method, Network, VerifySettings, logit_bounds, verify};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [model_dir, data_dir, eps, count, out, rest @ ..] = args.as_slice() else {
        return Err(
            "usage: bounds_json MODEL_DIR MNIST_DIR EPS IMAGES OUT.json [MAX_DOMAINS]".into(),
        );
    };
    let eps: f32 = eps.parse()?;
    let count: usize = count.parse()?;
    let settings = VerifySettings {
        max_domains: rest.first().map_or(Ok(2000), |s| s.parse())?,
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
    let host: Vec<f32> = images.clone().into_data().try_into_vec_as::<f32>()?;
    let lo: Vec<f32> = host.iter().map(|&x| (x - eps).max(0.0)).collect();
    let hi: Vec<f32> = host.iter().map(|&x| (x + eps).min(1.0)).collect();
    let ibp = logit_bounds(&net, lo.clone(), hi.clone(), count, Method::Ibp)?;
    let crown = logit_bounds(&net, lo, hi, count, Method::Crown)?;
    let verdict = verify(&model, &net, images, &labels, eps, &settings)?;
    let k = net.classes();
    let rows: Vec<serde_json::Value> = (0..count)
        .map(|i| {
            let r = |v: &[f32]| v[i * k..(i + 1) * k].to_vec();
            serde_json::json!({
                "index": i,
                "label": labels[i],
                "ibp": {"lower": r(&ibp.lower), "upper": r(&ibp.upper)},
                "crown": {"lower": r(&crown.lower), "upper": r(&crown.upper)},
                "verdict": verdict[i],
            })
        })
        .collect();
    let doc = serde_json::json!({
        "model": model_dir, "eps": eps, "images": count,
        "max_domains": settings.max_domains, "rows": rows,
    });
    std::fs::write(out, serde_json::to_string_pretty(&doc)?)?;
    Ok(())
}
