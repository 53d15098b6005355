//! The passes an attack says it spent on each example ([`Attack::perturb_costed`]) are the passes
//! the model saw: counted by a wrapper that knows nothing of the attack (a forward pass 1 per
//! example, a forward and backward pass 2), on every backend.

use std::cell::Cell;

use advrob_attack::{
    ApgdConfig, Attack, AttackConfig, Ensemble, FabConfig, Norm, SquareConfig, cascade,
};
use advrob_model::backend::on_test_backends;
use advrob_model::{Classifier, Mlp, MlpConfig};
use burn::tensor::{Int, Tensor, TensorData};

/// A model that counts the passes through it and offers no host view, so every pass goes
/// through `logits`.
struct Counted<'a> {
    inner: &'a Mlp,
    units: Cell<u64>,
}

impl Classifier for Counted<'_> {
    fn logits(&self, images: Tensor<4>) -> Tensor<2> {
        let rows = images.dims()[0] as u64;
        let per = if images.is_require_grad() { 2 } else { 1 };
        self.units.set(self.units.get() + rows * per);
        self.inner.logits(images)
    }
}

fn setup(device: &burn::tensor::Device) -> (Mlp, Tensor<4>, Tensor<1, Int>) {
    let mlp = MlpConfig::new()
        .with_hidden(vec![32])
        .with_seed(3)
        .init(device)
        .expect("mlp");
    let x: Vec<f32> = (0..12 * 784)
        .map(|i| ((i * 7919) % 251) as f32 / 250.0)
        .collect();
    let images = Tensor::<4>::from_data(TensorData::new(x, [12, 1, 28, 28]), device);
    let labels = mlp.logits(images.clone()).argmax(1).flatten::<1>(0, 1);
    (mlp, images, labels)
}

#[test]
fn the_passes_an_attack_counts_are_the_passes_the_model_saw() {
    on_test_backends(|device| {
        let (mlp, images, labels) = setup(device);
        let apgd = ApgdConfig {
            steps: 12,
            ..ApgdConfig::targeted()
        }
        .build()
        .expect("apgd-t");
        let square = SquareConfig {
            queries: 40,
            restarts: 2,
            ..SquareConfig::default()
        }
        .build()
        .expect("square");
        // APGD and Square stop working on an example once they broke it: every pass is counted
        // to some example, exactly once
        for (attack, eps) in [(&apgd, 0.02), (&apgd, 0.2), (&square, 0.02), (&square, 0.3)] {
            let model = Counted {
                inner: &mlp,
                units: Cell::new(0),
            };
            let (_, costs) = attack
                .perturb_costed(&model, images.clone(), labels.clone(), eps, 1)
                .expect("attack");
            let costs = costs.expect("counted");
            assert_eq!(costs.len(), 12);
            assert_eq!(
                costs.iter().sum::<u64>(),
                model.units.get(),
                "{} at ε {eps}: {costs:?}",
                attack.name()
            );
        }
        // FAB keeps going after a first success (for a smaller one): the counted passes up to it
        // are fewer than all
        let fab = FabConfig {
            steps: 8,
            targets: 3,
            ..FabConfig::targeted(Norm::Linf)
        }
        .build()
        .expect("fab");
        let model = Counted {
            inner: &mlp,
            units: Cell::new(0),
        };
        let (_, costs) = fab
            .perturb_costed(&model, images.clone(), labels.clone(), 0.3, 1)
            .expect("fab");
        let costs = costs.expect("counted");
        assert!(costs.iter().sum::<u64>() <= model.units.get(), "{costs:?}");
        assert!(costs.iter().all(|&c| c >= 1), "{costs:?}");
    });
}

#[test]
fn the_cascade_adds_its_components_passes_up_to_the_break() {
    on_test_backends(|device| {
        let (mlp, images, labels) = setup(device);
        let parts: Vec<Box<dyn Attack>> = vec![
            ApgdConfig {
                steps: 5,
                ..ApgdConfig::ce()
            }
            .build()
            .expect("apgd"),
            SquareConfig {
                queries: 30,
                ..SquareConfig::default()
            }
            .build()
            .expect("square"),
        ];
        let ensemble = Ensemble::new("e", parts).expect("ensemble");
        let runs =
            cascade(&mlp, ensemble.components(), images, labels, &[0.05, 0.3], 0).expect("cascade");
        for run in &runs {
            let costs = run.costs.as_ref().expect("every component counts");
            for (i, by) in run.broken_by.iter().enumerate() {
                match by {
                    // broken by APGD: within its 6 forward-backward passes (the class probe
                    // adds 1 to the first example); by Square: after all of APGD's
                    Some(0) => assert!(costs[i] <= 12 + 1, "{i}: {}", costs[i]),
                    Some(_) => assert!(costs[i] > 12, "{i}: {}", costs[i]),
                    None => {}
                }
            }
        }
        // at the larger ε an example still robust has had both budgets' passes
        let small = runs[0].costs.as_ref().expect("costs");
        let large = runs[1].costs.as_ref().expect("costs");
        for i in 0..small.len() {
            if runs[1].broken_by[i].is_none() {
                assert!(large[i] > small[i], "{i}: {} vs {}", large[i], small[i]);
            }
        }
    });
}
