//! Every attack on three-channel images `[B, 3, H, W]`: the budget kept in the attack's norm, the
//! pixels in [0, 1], the shape unchanged, and Square's windows signed channel by channel — on an
//! MLP (Square's incremental path through the affine first layer) and on a CIFAR PreAct ResNet-18
//! read from ONNX (every query through the whole graph).

use std::path::Path;

use advrob_attack::{ApgdConfig, Attack, Ensemble, Fgsm, FmnConfig, Norm, PgdConfig, SquareConfig};
use advrob_model::backend::on_test_backends;
use advrob_model::{Classifier, MlpConfig, Net, OnnxConfig, OnnxModel};
use burn::tensor::{Int, Tensor, TensorData};

fn host(t: Tensor<4>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .try_to_vec::<f32>()
        .expect("f32")
}

/// Seeded pixels in [0, 1] of `b` images `[c, h, w]`, and the model's own predictions as labels
/// (every image starts correctly classified).
fn batch(
    model: &dyn Classifier,
    [b, c, h, w]: [usize; 4],
    device: &burn::tensor::Device,
) -> (Tensor<4>, Tensor<1, Int>) {
    let x: Vec<f32> = (0..b * c * h * w)
        .map(|i| ((i * 7919) % 251) as f32 / 250.0)
        .collect();
    let images = Tensor::<4>::from_data(TensorData::new(x, [b, c, h, w]), device);
    let labels = model.logits(images.clone()).argmax(1).flatten::<1>(0, 1);
    (images, labels)
}

fn attacks() -> Vec<Box<dyn Attack>> {
    let square = || {
        SquareConfig {
            queries: 60,
            ..SquareConfig::default()
        }
        .check()
        .expect("square")
    };
    let apgd = |c: ApgdConfig| ApgdConfig { steps: 8, ..c }.check().expect("apgd");
    let fmn = FmnConfig {
        steps: 10,
        ..FmnConfig::default()
    };
    vec![
        Box::new(Fgsm::new()),
        Box::new(PgdConfig::linf(5).check().expect("pgd")),
        Box::new(PgdConfig::l2(5).check().expect("pgd l2")),
        Box::new(apgd(ApgdConfig::ce())),
        Box::new(apgd(ApgdConfig::targeted())),
        Box::new(fmn.check().expect("fmn")),
        Box::new(square()),
        Box::new(
            Ensemble::new(
                "ensemble",
                vec![
                    Box::new(apgd(ApgdConfig::ce())),
                    Box::new(fmn.check().expect("fmn")),
                    Box::new(square()),
                ],
            )
            .expect("ensemble"),
        ),
    ]
}

/// Runs every attack on `model` and checks the invariants; returns Square's adversarial images.
fn check_every_attack(
    model: &dyn Classifier,
    dims: [usize; 4],
    eps: f64,
    device: &burn::tensor::Device,
) -> Vec<f32> {
    let (images, labels) = batch(model, dims, device);
    let clean = host(images.clone());
    let size = dims[1] * dims[2] * dims[3];
    let mut square = Vec::new();
    for attack in attacks() {
        let name = attack.name();
        let adv = attack
            .perturb_seeded(model, images.clone(), labels.clone(), eps, 3)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(adv.dims(), dims, "{name}");
        let a = host(adv);
        assert!(
            a.iter().all(|v| (0.0..=1.0).contains(v)),
            "{name}: a pixel outside [0, 1]"
        );
        for (row, (x, y)) in a.chunks(size).zip(clean.chunks(size)).enumerate() {
            let norm = match attack.info().norm {
                Norm::Linf => x
                    .iter()
                    .zip(y)
                    .fold(0.0f32, |m, (p, q)| m.max((p - q).abs())),
                Norm::L2 => x
                    .iter()
                    .zip(y)
                    .map(|(p, q)| (p - q) * (p - q))
                    .sum::<f32>()
                    .sqrt(),
            };
            assert!(
                f64::from(norm) <= eps * (1.0 + 1e-5) + 1e-6,
                "{name}: image {row} moved {norm} > ε = {eps}"
            );
        }
        if name.starts_with("square") {
            square = a;
        }
    }
    // Square: a pixel where the channels moved in opposite directions (one sign per channel, as
    // AutoAttack draws them), none beyond the budget
    let plane = dims[2] * dims[3];
    let opposite = square.chunks(size).zip(clean.chunks(size)).any(|(x, y)| {
        (0..plane).any(|k| {
            let d0 = x[k] - y[k];
            let d1 = x[plane + k] - y[plane + k];
            d0 * d1 < 0.0
        })
    });
    assert!(
        opposite,
        "Square moved every channel of every pixel the same way"
    );
    square
}

#[test]
fn every_attack_keeps_its_budget_on_three_channel_images() {
    on_test_backends(|device| {
        let mlp = MlpConfig::new()
            .with_input(3 * 8 * 8)
            .with_hidden(vec![24])
            .with_seed(11)
            .init(device)
            .expect("mlp");
        assert!(
            mlp.affine_first().is_some(),
            "the incremental path is tested"
        );
        check_every_attack(&mlp, [6, 3, 8, 8], 0.05, device);
        let onnx = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../examples/pytorch/onnx/preact_resnet18.onnx");
        let resnet =
            Net::Onnx(OnnxModel::load(&onnx, &OnnxConfig::new([3, 32, 32]), device).expect("onnx"));
        assert!(
            resnet.affine_first().is_none(),
            "the whole-graph path is tested"
        );
        check_every_attack(&resnet, [3, 3, 32, 32], 8.0 / 255.0, device);
    });
}
