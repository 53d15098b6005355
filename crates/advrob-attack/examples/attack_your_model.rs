//! Attack your own burn model: FGSM, PGD and the standard ensemble (AutoAttack's standard
//! version: APGD-CE → APGD-T → FAB-T → Square) on a batch of synthetic digits, each result checked against its L∞ budget.
//!
//! `cargo run -p advrob-attack --example attack_your_model` (a few seconds, no download).

use advrob_attack::{ApgdConfig, Attack, Ensemble, FabConfig, Fgsm, Norm, PgdConfig, SquareConfig};
use advrob_data::{range_tensors, synthetic};
use advrob_model::{Classifier, MlpConfig, Net, Plain, TrainConfig, backend, train};
use burn::module::Module;
use burn::nn::Linear;
use burn::tensor::Tensor;
use burn::tensor::activation::relu;

/// Your model: any burn module. The attacks need one method of it, `Classifier::logits`.
#[derive(Module, Debug)]
struct MyNet {
    hidden: Linear,
    out: Linear,
}

impl Classifier for MyNet {
    /// Images `[B, 1, 28, 28]` in [0, 1] in, logits `[B, 10]` out.
    fn logits(&self, images: Tensor<4>) -> Tensor<2> {
        let x: Tensor<2> = images.flatten(1, 3);
        self.out.forward(relu(self.hidden.forward(x)))
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let device = backend::device("ndarray")?;
    // A stand-in for your own training: advrob's trainer fits the two layers on synthetic digits
    // (class c is a bright bar at rows 2c + 4 and 2c + 5), so nothing is downloaded.
    let data = synthetic::dataset(2000, 64, 7);
    let config = TrainConfig::new().with_epochs(2).with_batch_size(32);
    let mlp = MlpConfig::new().with_hidden(vec![64]).init(&device)?;
    let (Net::Mlp(mlp), _) = train(mlp, &data.train, &config, &device, &mut Plain, &mut |_| {})?
    else {
        return Err("the trainer returned another architecture".into());
    };
    let model = MyNet {
        hidden: mlp.layers[0].clone(),
        out: mlp.layers[1].clone(),
    };
    let (images, labels) = range_tensors(&data.test, 0, 64, &device);

    // The standard ensemble: each attack runs on the images the earlier ones left correct.
    let components: Vec<Box<dyn Attack>> = vec![
        Box::new(ApgdConfig::ce().check()?),
        Box::new(ApgdConfig::targeted().check()?),
        Box::new(FabConfig::targeted(Norm::Linf).check()?),
        Box::new(SquareConfig::default().check()?),
    ];
    let ensemble = Ensemble::new("ensemble(apgd-ce,apgd-t,fab-t,square)", components)?;
    let (fgsm, pgd) = (Fgsm::new(), PgdConfig::linf(20).check()?);
    let attacks: [&dyn Attack; 3] = [&fgsm, &pgd, &ensemble];

    let y = backend::host_i64(labels.clone())?;
    let clean = correct(&model, images.clone(), &y)?;
    println!(
        "clean accuracy {:.1}% ({} images)",
        percent(&clean),
        y.len()
    );
    for eps in [0.05, 0.1, 0.2] {
        for attack in attacks {
            let adversarial = attack.perturb(&model, images.clone(), labels.clone(), eps)?;
            let delta = adversarial.clone() - images.clone();
            let linf: f32 = delta.abs().max().into_scalar();
            let low: f32 = adversarial.clone().min().into_scalar();
            let high: f32 = adversarial.clone().max().into_scalar();
            assert!(linf <= eps as f32 + 1e-6 && low >= 0.0 && high <= 1.0);
            // robust: classified correctly both before and after the attack
            let after = correct(&model, adversarial, &y)?;
            let robust: Vec<bool> = clean.iter().zip(&after).map(|(c, a)| *c && *a).collect();
            let info = attack.info();
            println!(
                "ε = {eps:<4}  {:<36} {:?}, {:?}, {:>4} steps  robust {:5.1}%  max |δ| {linf:.3}",
                attack.name(),
                info.family,
                info.access,
                info.steps,
                percent(&robust)
            );
        }
    }
    Ok(())
}

/// Per image, whether `model` predicts its label.
fn correct(
    model: &dyn Classifier,
    images: Tensor<4>,
    labels: &[i64],
) -> Result<Vec<bool>, backend::Readback> {
    let predicted = backend::host_i64(model.logits(images).argmax(1))?;
    Ok(predicted.iter().zip(labels).map(|(p, y)| p == y).collect())
}

/// The share of `true` in `hits`, in percent.
fn percent(hits: &[bool]) -> f64 {
    100.0 * hits.iter().filter(|h| **h).count() as f64 / hits.len().max(1) as f64
}
