//! The Square attack (Andriushchenko, Croce, Flammarion, Hein 2020), L∞: a score-based black-box
//! attack. It never asks for a gradient, only for the model's logits, so masked gradients do not
//! stop it — the check that catches masking no gradient attack can.
//!
//! Each example starts from vertical stripes of ±ε; each query redraws one square window of the
//! perturbation to ±ε and keeps it when the margin `z_y − max_{j≠y} z_j` drops. The window's side
//! shrinks along the paper's schedule of `p` (the share of pixels it covers), rescaled to the
//! query budget.

use advrob_data::rng::SplitMix64;
use advrob_model::Classifier;
use burn::tensor::{Int, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use crate::error::{AttackError, Result, check_eps};
use crate::grad::{AttackLoss, per_example_loss};
use crate::info::{Access, AttackInfo, Family, Norm};
use crate::rows::{host, host_int, mix_seed};
use crate::{Attack, AttackConfig};

/// The settings of [`Square`]; the defaults are the paper's (5000 queries, p = 0.8).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SquareConfig {
    /// Queries (forward passes) per example and restart, the initial one included.
    pub queries: usize,
    /// Initial share of the pixels a window covers.
    pub p_init: f64,
    /// Runs from independent starts, each on the examples the earlier ones did not break.
    pub restarts: usize,
    /// Seed of the stripes, windows and signs.
    pub seed: u64,
}

impl Default for SquareConfig {
    fn default() -> Self {
        Self {
            queries: 5000,
            p_init: 0.8,
            restarts: 1,
            seed: 0,
        }
    }
}

impl SquareConfig {
    /// Checks the settings once: at least one query and restart, `p_init` in (0, 1].
    pub fn check(self) -> Result<Square> {
        if self.queries == 0 {
            return Err(AttackError::Invalid {
                field: "queries",
                reason: "must be at least 1".into(),
            });
        }
        if self.restarts == 0 {
            return Err(AttackError::Invalid {
                field: "restarts",
                reason: "must be at least 1".into(),
            });
        }
        if !(self.p_init > 0.0 && self.p_init <= 1.0) {
            return Err(AttackError::Invalid {
                field: "p_init",
                reason: format!("{} is outside (0, 1]", self.p_init),
            });
        }
        Ok(Square(self))
    }
}

impl AttackConfig for SquareConfig {
    fn build(&self) -> Result<Box<dyn Attack>> {
        Ok(Box::new(self.check()?))
    }
}

/// The Square attack with checked settings ([`SquareConfig::check`]). Per example it returns its
/// first misclassified query, else the query of lowest margin: within ε in L∞ and in [0, 1].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Square(SquareConfig);

/// The share of pixels a window covers at query `i` of `n` (the paper's schedule, on a budget
/// rescaled to 10,000 queries).
pub fn p_schedule(p_init: f64, i: usize, n: usize) -> f64 {
    let it = (i as f64 / n as f64 * 10_000.0) as usize;
    let halvings = match it {
        0..=10 => 0,
        11..=50 => 1,
        51..=200 => 2,
        201..=500 => 3,
        501..=1000 => 4,
        1001..=2000 => 5,
        2001..=4000 => 6,
        4001..=6000 => 7,
        6001..=8000 => 8,
        _ => 9,
    };
    p_init / f64::from(1u32 << halvings)
}

/// One example under attack: its clean pixels, its best query and that query's margin.
struct Example {
    row: usize,
    clean: Vec<f32>,
    best: Vec<f32>,
    margin: f32,
    rng: SplitMix64,
}

impl Square {
    /// The settings.
    pub fn config(&self) -> &SquareConfig {
        &self.0
    }

    /// Margins `z_y − max_{j≠y} z_j` of `images` (`n` examples of `h × w`).
    fn margins(
        model: &dyn Classifier,
        images: Vec<f32>,
        n: usize,
        hw: [usize; 2],
        labels: &[i64],
        device: &burn::tensor::Device,
    ) -> Result<Vec<f32>> {
        let x = Tensor::<3>::from_data(TensorData::new(images, [n, hw[0], hw[1]]), device);
        let y = Tensor::<1, Int>::from_data(TensorData::new(labels.to_vec(), [n]), device);
        // the margin loss is max_{j≠y} z_j − z_y: its negation
        Ok(
            host(per_example_loss(model.logits(x), y, AttackLoss::Margin))?
                .into_iter()
                .map(|m| -m)
                .collect(),
        )
    }

    /// One run on `examples` (all correctly classified so far); returns them with their best
    /// queries.
    #[allow(clippy::too_many_arguments)] // one run's inputs
    fn run(
        &self,
        model: &dyn Classifier,
        mut examples: Vec<Example>,
        labels: &[i64],
        hw: [usize; 2],
        eps: f32,
        device: &burn::tensor::Device,
    ) -> Result<Vec<Example>> {
        let [h, w] = hw;
        let size = h * w;
        let mut done: Vec<Example> = examples.extract_if(.., |e| e.margin <= 0.0).collect();
        for i in 1..self.0.queries {
            if examples.is_empty() {
                break;
            }
            let active_labels: Vec<i64> = examples.iter().map(|e| labels[e.row]).collect();
            let p = p_schedule(self.0.p_init, i, self.0.queries);
            let s = ((p * size as f64).sqrt().round() as usize).clamp(1, h.min(w));
            let mut candidates = Vec::with_capacity(examples.len() * size);
            for e in &mut examples {
                let (vh, vw) = (
                    e.rng.below((h - s + 1) as u64) as usize,
                    e.rng.below((w - s + 1) as u64) as usize,
                );
                let sign = if e.rng.next_u64() & 1 == 1 { 1.0 } else { -1.0 };
                let mut cand = e.best.clone();
                for r in vh..vh + s {
                    for c in vw..vw + s {
                        let k = r * w + c;
                        cand[k] = (e.clean[k] + sign * eps).clamp(0.0, 1.0);
                    }
                }
                candidates.extend_from_slice(&cand);
            }
            let margins = Self::margins(
                model,
                candidates.clone(),
                examples.len(),
                hw,
                &active_labels,
                device,
            )?;
            for (j, e) in examples.iter_mut().enumerate() {
                if margins[j] < e.margin {
                    e.margin = margins[j];
                    e.best
                        .copy_from_slice(&candidates[j * size..(j + 1) * size]);
                }
            }
            done.extend(examples.extract_if(.., |e| e.margin <= 0.0));
        }
        done.extend(examples);
        Ok(done)
    }
}

impl Attack for Square {
    fn name(&self) -> String {
        let mut n = format!("square-{}", self.0.queries);
        if self.0.restarts > 1 {
            n.push_str(&format!("x{}", self.0.restarts));
        }
        n
    }

    fn info(&self) -> AttackInfo {
        AttackInfo {
            restarts: self.0.restarts,
            access: Access::BlackBox,
            ..AttackInfo::white_box(
                Family::Square,
                Norm::Linf,
                AttackLoss::Margin,
                self.0.queries,
            )
        }
    }

    fn perturb_seeded(
        &self,
        model: &dyn Classifier,
        images: Tensor<3>,
        labels: Tensor<1, Int>,
        eps: f64,
        seed: u64,
    ) -> Result<Tensor<3>> {
        check_eps(eps)?;
        let x = images.without_autodiff();
        let [b, h, w] = x.dims();
        let device = x.device();
        let size = h * w;
        let clean = host(x)?;
        let labels = host_int(labels)?;
        let eps = eps as f32;
        let mut result = clean.clone();
        let mut best_margin = vec![f32::INFINITY; b];
        let mut pending: Vec<usize> = (0..b).collect();
        for restart in 0..self.0.restarts {
            if pending.is_empty() || eps == 0.0 {
                break;
            }
            // the start: vertical stripes, each column of each example at +ε or −ε
            let mut starts = Vec::with_capacity(pending.len());
            for &row in &pending {
                let mut rng =
                    SplitMix64::new(mix_seed(&[self.0.seed, seed, restart as u64, row as u64]));
                let px = &clean[row * size..(row + 1) * size];
                let signs: Vec<f32> = (0..w)
                    .map(|_| if rng.next_u64() & 1 == 1 { eps } else { -eps })
                    .collect();
                let best: Vec<f32> = (0..size)
                    .map(|k| (px[k] + signs[k % w]).clamp(0.0, 1.0))
                    .collect();
                starts.push((row, px.to_vec(), best, rng));
            }
            let first: Vec<f32> = starts.iter().flat_map(|s| s.2.iter().copied()).collect();
            let row_labels: Vec<i64> = pending.iter().map(|&r| labels[r]).collect();
            let margins = Self::margins(model, first, pending.len(), [h, w], &row_labels, &device)?;
            let examples: Vec<Example> = starts
                .into_iter()
                .zip(margins)
                .map(|((row, clean, best, rng), margin)| Example {
                    row,
                    clean,
                    best,
                    margin,
                    rng,
                })
                .collect();
            let finished = self.run(model, examples, &labels, [h, w], eps, &device)?;
            pending.clear();
            for e in finished {
                // success first, margin second
                if e.margin < best_margin[e.row] {
                    best_margin[e.row] = e.margin;
                    result[e.row * size..(e.row + 1) * size].copy_from_slice(&e.best);
                }
                if e.margin > 0.0 {
                    pending.push(e.row);
                }
            }
            pending.sort_unstable();
        }
        Ok(Tensor::from_data(
            TensorData::new(result, [b, h, w]),
            &device,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::PgdConfig;
    use advrob_model::backend::on_test_backends;
    use advrob_model::{DeployConfig, Deployed, MlpConfig};

    #[test]
    fn the_schedule_halves_p_as_in_the_paper() {
        assert_eq!(p_schedule(0.8, 0, 10_000), 0.8);
        assert_eq!(p_schedule(0.8, 11, 10_000), 0.4);
        assert_eq!(p_schedule(0.8, 300, 10_000), 0.1);
        assert_eq!(p_schedule(0.8, 9_000, 10_000), 0.8 / 512.0);
        // rescaled to the budget: query 50 of 1000 is query 500 of 10,000
        assert_eq!(p_schedule(0.8, 50, 1000), 0.1);
    }

    #[test]
    fn square_breaks_a_masked_model_within_budget_where_pgd_cannot() {
        on_test_backends(|device| {
            let mlp = MlpConfig::new()
                .with_hidden(vec![16])
                .with_seed(4)
                .init(device)
                .expect("init");
            let model = Deployed {
                net: mlp.into(),
                config: DeployConfig::new().with_quantize(Some(16)),
            };
            let x: Vec<f32> = (0..8 * 784)
                .map(|i| ((i * 31) % 97) as f32 / 96.0)
                .collect();
            let images = Tensor::<3>::from_data(TensorData::new(x.clone(), [8, 28, 28]), device);
            // the model's own predictions as labels: every example starts correctly classified
            let labels = model.logits(images.clone()).argmax(1).flatten::<1>(0, 1);
            let eps = 0.3;
            let broken = |adv: Tensor<3>| -> i64 {
                8 - model
                    .logits(adv)
                    .argmax(1)
                    .flatten::<1>(0, 1)
                    .equal(labels.clone())
                    .int()
                    .sum()
                    .into_scalar::<i64>()
            };
            let pgd = PgdConfig::bim(5).check().expect("pgd");
            let plain = pgd
                .perturb(&model, images.clone(), labels.clone(), eps)
                .expect("pgd");
            assert_eq!(broken(plain), 0, "zero gradient: PGD cannot move");
            let square = SquareConfig {
                queries: 300,
                ..SquareConfig::default()
            }
            .check()
            .expect("square");
            let adv = square
                .perturb_seeded(&model, images.clone(), labels.clone(), eps, 5)
                .expect("square");
            assert!(
                broken(adv.clone()) >= 4,
                "{} of 8 broken",
                broken(adv.clone())
            );
            let a = host(adv.clone()).expect("host");
            for (ex, c) in a.chunks(784).zip(x.chunks(784)) {
                for (p, q) in ex.iter().zip(c) {
                    assert!((p - q).abs() <= eps as f32 + 1e-6 && (0.0..=1.0).contains(p));
                }
            }
            // seeded: the same seed gives the same images, another seed other ones
            let again = square
                .perturb_seeded(&model, images.clone(), labels.clone(), eps, 5)
                .expect("square");
            assert_eq!(host(again).expect("host"), a);
            let other = square
                .perturb_seeded(&model, images, labels, eps, 6)
                .expect("square");
            assert_ne!(host(other).expect("host"), a);
            assert_eq!(square.info().access, Access::BlackBox);
        });
    }
}
