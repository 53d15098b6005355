//! The binarization test of an attack (Zimmermann et al., NeurIPS 2022, "Increasing Confidence in
//! Adversarial Robustness Evaluations"): a unit test that tells whether an attack is strong
//! enough on a model, not only whether the model's gradients look healthy.
//!
//! Around a test image x, a binary classifier is built from the model's own features for which an
//! adversarial example inside the budget is known to exist; an attack that cannot find one there
//! cannot be trusted to find one on the model itself.
//!
//! # Construction (per sample image x, budget ε, L∞)
//!
//! 1. **Points.** x itself and [`INNER_POINTS`] points x + u, u uniform in [−ηε, ηε] per pixel
//!    ([`INNER_SHRINK`] η = 0.95), are the *inner* points (class 0); one *boundary* point
//!    x + ε·s, s a random sign per pixel (a corner of the ε-ball), is class 1. Every point is
//!    clipped to [0, 1], so the boundary point lies inside the ball and the pixel box: an
//!    adversarial example within the budget exists by construction.
//! 2. **Features.** Each point goes through the deployed model up to its last linear layer (its
//!    input transform, convolutions and hidden layers with their ReLUs: the features that layer
//!    reads, [`advrob_model::Dense::features`]).
//! 3. **Readout.** A linear readout on those features: the direction w from the inner points'
//!    mean feature to the boundary point's, its threshold halfway between the highest inner score
//!    and the boundary score, scaled so that the boundary point's logit margin is ½. The readout
//!    replaces the model's last layer ([`advrob_model::Deployed::with_head`]): a two-class
//!    classifier that keeps everything the model does before it — quantisation, saturation,
//!    convolutions — so an attack meets the same obstacles there as on the model. The head keeps
//!    the model's number of classes: classes 2 and up get the constant logit [`PAD_LOGIT`], far
//!    below the two that decide, so they are never predicted, and the attack meets the class count
//!    it meets on the model (APGD-T's and FAB-T's target classes, the four logits of DLR).
//! 4. **Validity.** The sample counts only when the readout separates every inner point (x
//!    included) from the boundary point, and the two-class model itself classifies x as 0 and the
//!    boundary point as 1 (on the backend's tensor path). Otherwise the sample is *invalid*: the
//!    features cannot tell the corner from the inside of the ball.
//! 5. **Attack.** The attack runs on the two-class model at x with label 0 and budget ε. It
//!    *solves* the sample when its output is classified 1, within ε in L∞ and inside [0, 1].
//!
//! The test's figure is the share of valid samples solved. It **passes** at [`PASS_SHARE`] (90%)
//! or more, with at least [`MIN_VALID`] valid samples (fewer: inconclusive, the check does not
//! run). Samples are drawn from both sides of the attack's result on the model (the images it
//! broke and those it left robust: the second are where a weak attack would hide), when the run's
//! records say which is which.

use advrob_attack::Attack;
use advrob_data::Split;
use advrob_data::rng::SplitMix64;
use advrob_model::{Classifier, Deployed};
use burn::tensor::{Device, Int, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use crate::{EvalError, Result, host, host_int};

/// Inner points (besides x itself) of each binary classifier.
pub const INNER_POINTS: usize = 999;
/// The inner points lie within η·ε of x (η = 0.95): a gap between them and the boundary.
pub const INNER_SHRINK: f64 = 0.95;
/// Sample images per side of the attack's result (broken, left robust) by default.
pub const PER_GROUP: usize = 16;
/// Share of valid samples the attack must solve to pass.
pub const PASS_SHARE: f64 = 0.9;
/// Valid samples needed for the test to be conclusive.
pub const MIN_VALID: usize = 5;
/// The logit of the classes a binary head pads to the model's class count: never predicted.
pub const PAD_LOGIT: f32 = -1000.0;

/// The test of one attack on one model at one ε.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Binarization {
    /// The attack tested (its name in the matrix).
    pub attack: String,
    /// The budget.
    pub eps: f64,
    /// Sample images.
    pub tested: usize,
    /// Of them, those whose binary classifier is valid (step 4 of the module's doc).
    pub valid: usize,
    /// Of the valid ones, those the attack solved.
    pub solved: usize,
    /// Valid samples among the images the attack had left robust on the model (0 when the run's
    /// records did not say).
    pub robust_valid: usize,
    /// Of them, those solved.
    pub robust_solved: usize,
}

impl Binarization {
    /// Share of the valid samples solved; `None` with none valid.
    pub fn share(&self) -> Option<f64> {
        (self.valid > 0).then(|| self.solved as f64 / self.valid as f64)
    }

    /// Whether the attack passed ([`PASS_SHARE`]); `None` with fewer than [`MIN_VALID`] valid
    /// samples.
    pub fn passed(&self) -> Option<bool> {
        if self.valid < MIN_VALID {
            return None;
        }
        self.share().map(|s| s >= PASS_SHARE)
    }
}

/// One sample image: its test index and whether the attack left it robust on the model (`None`
/// when unknown).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    /// Index into the test split.
    pub index: usize,
    /// Left robust by the attack on the model.
    pub robust: Option<bool>,
}

/// `2 · per_group` sample images: up to `per_group` the attack left robust and `per_group` it
/// broke, the first of each in test order, by `robust` (per test example, from the run's
/// records), a side with too few made up from the other; without `robust`, the first
/// `2 · per_group`. Only images the model classifies correctly are taken (`clean_correct`, per
/// test example); fewer when there are not enough.
pub fn choose(clean_correct: &[bool], robust: Option<&[bool]>, per_group: usize) -> Vec<Sample> {
    let side = |index: usize| robust.and_then(|r| r.get(index).copied());
    let candidates: Vec<usize> = (0..clean_correct.len())
        .filter(|&i| clean_correct[i])
        .collect();
    let mut chosen: Vec<usize> = Vec::new();
    for want in [Some(true), Some(false)] {
        chosen.extend(
            candidates
                .iter()
                .copied()
                .filter(|&i| side(i) == want)
                .take(per_group),
        );
    }
    // the sides' shortfall (all of it without `robust`), from the images not taken yet
    let missing = (2 * per_group).saturating_sub(chosen.len());
    let rest: Vec<usize> = candidates
        .iter()
        .copied()
        .filter(|i| !chosen.contains(i))
        .take(missing)
        .collect();
    chosen.extend(rest);
    chosen.sort_unstable();
    chosen
        .into_iter()
        .map(|index| Sample {
            index,
            robust: side(index),
        })
        .collect()
}

/// Per test example of `data`, whether `model` classifies it correctly, in batches of 1000.
pub fn clean_correct(model: &dyn Classifier, data: &Split, device: &Device) -> Result<Vec<bool>> {
    let mut out = Vec::with_capacity(data.len());
    for start in (0..data.len()).step_by(1000) {
        let (x, y) = advrob_data::range_tensors(data, start, 1000, device);
        let pred = host_int(model.logits(x).argmax(1).flatten::<1>(0, 1))?;
        let y = host_int(y)?;
        out.extend(pred.iter().zip(&y).map(|(p, y)| p == y));
    }
    Ok(out)
}

/// The binarization test of `attack` (named `name`) on `model` at `eps`, on the test images
/// `samples` of `data`; `seed` draws the points. `None` when the model has no readable last
/// layer (a model read from ONNX): the test needs its features.
#[allow(clippy::too_many_arguments)]
pub fn binarization_test(
    model: &Deployed,
    attack: &dyn Attack,
    name: &str,
    data: &Split,
    samples: &[Sample],
    eps: f64,
    seed: u64,
    device: &Device,
) -> Result<Option<Binarization>> {
    let Some(dense) = model.dense() else {
        return Ok(None);
    };
    let mut out = Binarization {
        attack: name.to_string(),
        eps,
        tested: samples.len(),
        valid: 0,
        solved: 0,
        robust_valid: 0,
        robust_solved: 0,
    };
    for s in samples {
        let point_seed = seed ^ (s.index as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let Some(solved) = one_sample(
            (model, &dense),
            attack,
            data,
            s.index,
            eps,
            point_seed,
            device,
        )?
        else {
            continue;
        };
        out.valid += 1;
        out.solved += usize::from(solved);
        if s.robust == Some(true) {
            out.robust_valid += 1;
            out.robust_solved += usize::from(solved);
        }
    }
    Ok(Some(out))
}

/// The readout of step 3: `[features, classes]` weights and the bias of the head (classes 0 and
/// 1 decide, the others are padding at [`PAD_LOGIT`]), or `None` when the inner points' scores do
/// not all lie below the boundary point's (the first row of `features` is x, the last the boundary
/// point, the others the inner points).
pub fn readout(features: &[f32], rows: usize, classes: usize) -> Option<(Vec<f32>, Vec<f32>)> {
    let d = features.len() / rows.max(1);
    if rows < 2 || d == 0 || classes < 2 {
        return None;
    }
    let row = |i: usize| &features[i * d..(i + 1) * d];
    let inner = rows - 1;
    let mut mean = vec![0f64; d];
    for i in 0..inner {
        for (m, v) in mean.iter_mut().zip(row(i)) {
            *m += f64::from(*v) / inner as f64;
        }
    }
    let w: Vec<f64> = row(rows - 1)
        .iter()
        .zip(&mean)
        .map(|(b, m)| f64::from(*b) - m)
        .collect();
    let score = |i: usize| -> f64 { row(i).iter().zip(&w).map(|(v, w)| f64::from(*v) * w).sum() };
    let lo = (0..inner).map(score).fold(f64::NEG_INFINITY, f64::max);
    let hi = score(rows - 1);
    let gap = hi - lo;
    // a margin that f32 arithmetic of the head can still see
    if !(gap.is_finite() && gap > 1e-4 * (hi.abs() + lo.abs() + 1.0)) {
        return None;
    }
    let mid = (hi + lo) / 2.0;
    // logits (−z/2, z/2) with z = (w·f − mid) / gap: the boundary point's margin is ½
    let mut weight = vec![0f32; d * classes];
    for (k, wk) in w.iter().enumerate() {
        weight[classes * k] = (-wk / (2.0 * gap)) as f32;
        weight[classes * k + 1] = (wk / (2.0 * gap)) as f32;
    }
    let mut bias = vec![PAD_LOGIT; classes];
    bias[0] = (mid / (2.0 * gap)) as f32;
    bias[1] = (-mid / (2.0 * gap)) as f32;
    Some((weight, bias))
}

/// Steps 1–5 of the module's doc on test image `index`: `None` when the sample is invalid, else
/// whether the attack solved it.
fn one_sample(
    (model, dense): (&Deployed, &advrob_model::Dense<'_>),
    attack: &dyn Attack,
    data: &Split,
    index: usize,
    eps: f64,
    seed: u64,
    device: &Device,
) -> Result<Option<bool>> {
    let size = data.image_size();
    let shape = data.images.image();
    let x: Vec<f32> = data.images.pixels[index * size..(index + 1) * size]
        .iter()
        .map(|&p| advrob_data::unit_pixel(p))
        .collect();
    let mut rng = SplitMix64::new(seed);
    let rows = INNER_POINTS + 2;
    let mut points = Vec::with_capacity(rows * size);
    points.extend_from_slice(&x);
    let inner = (INNER_SHRINK * eps) as f32;
    for _ in 0..INNER_POINTS {
        points.extend(
            x.iter()
                .map(|&p| (p + inner * (2.0 * rng.next_f64() as f32 - 1.0)).clamp(0.0, 1.0)),
        );
    }
    let corner: Vec<f32> = x
        .iter()
        .map(|&p| {
            let sign = if rng.next_u64() & 1 == 0 { -1.0 } else { 1.0 };
            (p + sign * eps as f32).clamp(0.0, 1.0)
        })
        .collect();
    points.extend_from_slice(&corner);
    let features = dense.features(&points, rows);
    let Some((weight, bias)) = readout(&features, rows, model.net.classes()) else {
        return Ok(None);
    };
    let Some(binary) = model.with_head(weight, bias) else {
        return Ok(None);
    };
    let image = |pixels: Vec<f32>, b: usize| {
        Tensor::<4>::from_data(
            TensorData::new(pixels, [b, shape[0], shape[1], shape[2]]),
            device,
        )
    };
    // the two-class model itself must say x is 0 and the corner 1
    let both = image([x.clone(), corner].concat(), 2);
    if host_int(binary.logits(both).argmax(1).flatten::<1>(0, 1))? != [0, 1] {
        return Ok(None);
    }
    let label = Tensor::<1, Int>::from_data(TensorData::new(vec![0i64], [1]), device);
    let adv = attack.perturb_seeded(&binary, image(x.clone(), 1), label, eps, seed)?;
    let predicted = host_int(binary.logits(adv.clone()).argmax(1).flatten::<1>(0, 1))?;
    let adv = host(adv)?;
    if adv.len() != x.len() {
        return Err(EvalError::Invalid {
            field: "attack",
            reason: format!(
                "{} returned {} pixels for an image of {}",
                attack.name(),
                adv.len(),
                x.len()
            ),
        });
    }
    let within = adv.iter().zip(&x).all(|(a, p)| {
        (0.0..=1.0).contains(a) && f64::from((a - p).abs()) <= eps * (1.0 + 1e-6) + 1e-7
    });
    Ok(Some(predicted.first() == Some(&1) && within))
}

#[cfg(test)]
mod tests {
    use super::*;
    use advrob_attack::{ApgdConfig, AttackConfig, Ensemble, FabConfig, Fgsm, Norm, SquareConfig};
    use advrob_data::synthetic;
    use advrob_model::{DeployConfig, MlpConfig, NetConfig};

    /// AutoAttack's standard recipe (APGD-CE, APGD-T, FAB-T, Square), as the default matrix runs it.
    fn autoattack() -> Ensemble {
        let parts: Vec<Box<dyn Attack>> = vec![
            ApgdConfig::ce().build().expect("apgd-ce"),
            ApgdConfig::targeted().build().expect("apgd-t"),
            FabConfig::targeted(Norm::Linf).build().expect("fab-t"),
            SquareConfig::default().build().expect("square"),
        ];
        Ensemble::new("ensemble", parts).expect("ensemble")
    }

    /// On a model whose input quantisation zeroes every gradient, FGSM cannot move and fails the
    /// test; the ensemble, whose Square needs no gradient, passes it. On the same network without
    /// the quantisation, FGSM's gradient step finds the boundary.
    #[test]
    fn fgsm_against_a_masked_model_fails_the_test_and_the_ensemble_passes_it() {
        let device = advrob_model::backend::test_devices().remove(0);
        let ds = synthetic::dataset(10, 12, 5);
        let net = NetConfig::from(MlpConfig::new().with_hidden(vec![64]))
            .init(&device)
            .expect("init");
        let masked = Deployed {
            net,
            config: DeployConfig::new().with_quantize(Some(8)),
        };
        let samples: Vec<Sample> = (0..10)
            .map(|index| Sample {
                index,
                robust: None,
            })
            .collect();
        let run = |attack: &dyn Attack, model: &Deployed| {
            binarization_test(
                model,
                attack,
                &attack.name(),
                &ds.test,
                &samples,
                0.3,
                7,
                &device,
            )
            .expect("test")
            .expect("an MLP has a last layer")
        };
        let fgsm = run(&Fgsm::new(), &masked);
        assert!(fgsm.valid >= MIN_VALID, "{fgsm:?}");
        assert_eq!(fgsm.solved, 0, "{fgsm:?}");
        assert_eq!(fgsm.passed(), Some(false));
        let ensemble = run(&autoattack(), &masked);
        assert!(ensemble.valid >= MIN_VALID, "{ensemble:?}");
        assert_eq!(ensemble.passed(), Some(true), "{ensemble:?}");
        let plain = Deployed {
            net: masked.net.clone(),
            config: DeployConfig::new(),
        };
        let fgsm_plain = run(&Fgsm::new(), &plain);
        assert!(fgsm_plain.solved > 0, "{fgsm_plain:?}");
    }

    #[test]
    fn the_readout_puts_every_inner_point_below_and_the_boundary_point_above() {
        // 3 inner points and a boundary point in 2-D features
        let f = [0.0, 0.0, 0.1, 0.0, 0.0, 0.1, 1.0, 1.0];
        let (w, b) = readout(&f, 4, 3).expect("separable");
        let logit = |i: usize, c: usize| f[2 * i] * w[c] + f[2 * i + 1] * w[3 + c] + b[c];
        let z = |i: usize| logit(i, 1) - logit(i, 0);
        // the padding class is never predicted
        for i in 0..4 {
            assert_eq!(logit(i, 2), PAD_LOGIT);
        }
        for i in 0..3 {
            assert!(z(i) < 0.0, "inner point {i}: {}", z(i));
        }
        // the boundary point's margin is ½
        assert!((z(3) - 0.5).abs() < 1e-5, "{}", z(3));
        // a boundary point inside the inner points' hull cannot be separated this way
        let g = [0.0, 0.0, 1.0, 1.0, -1.0, -1.0, 0.0, 0.0];
        assert!(readout(&g, 4, 2).is_none());
    }

    #[test]
    fn the_sample_takes_both_sides_of_the_attack_and_only_clean_correct_images() {
        let clean = [true, false, true, true, true, true, true];
        let robust = [true, true, false, true, false, true, false];
        let s = choose(&clean, Some(&robust), 2);
        let idx: Vec<(usize, Option<bool>)> = s.iter().map(|s| (s.index, s.robust)).collect();
        assert_eq!(
            idx,
            vec![
                (0, Some(true)),
                (2, Some(false)),
                (3, Some(true)),
                (4, Some(false))
            ]
        );
        // one side short: the other makes it up
        let all_robust = [true; 7];
        let s = choose(&clean, Some(&all_robust), 2);
        assert_eq!(
            s.iter().map(|s| s.index).collect::<Vec<_>>(),
            vec![0, 2, 3, 4]
        );
        let s = choose(&clean, None, 2);
        assert_eq!(
            s.iter().map(|s| s.index).collect::<Vec<_>>(),
            vec![0, 2, 3, 4]
        );
    }
}
