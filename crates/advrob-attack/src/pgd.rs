//! Iterative attacks: projected gradient descent under L∞ or L2 (Madry et al. 2018) with random
//! starts and restarts, BIM / I-FGSM (Kurakin et al. 2017) and MI-FGSM (Dong et al. 2018), all one
//! configurable [`Pgd`], built from a [`PgdConfig`] that is checked once.

use advrob_data::rng::SplitMix64;
use advrob_model::Classifier;
use burn::tensor::{Int, Tensor};
use serde::{Deserialize, Serialize};

use crate::attack::{Attack, AttackConfig};
use crate::error::{AttackError, Result, check_eps};
use crate::grad::{AttackLoss, HostModel, HostPass, LabelMode, per_example_loss, target_labels};
use crate::info::{AttackInfo, Family, Norm};
use crate::rows::{
    Best, copy_rows, host, host_int, mix_seed, norm_l2, project_l2_row, project_linf, select_rows,
    sign, sum_f32, take_rows,
};
use crate::targets::TargetRule;

/// The settings of a [`Pgd`]: iterated gradient steps of size `step_size` on the loss, each
/// followed by a projection onto the ε-ball around the clean image and onto [0, 1].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PgdConfig {
    /// Budget norm.
    pub norm: Norm,
    /// Gradient steps per restart.
    pub steps: usize,
    /// Step size; `None`: 2.5·ε / steps (Madry et al.), or ε / steps without a random start.
    pub step_size: Option<f64>,
    /// Start each restart from a uniformly random point of the ε-ball (else from the clean image).
    pub random_start: bool,
    /// Independent runs; the worst case per example is kept.
    pub restarts: usize,
    /// Momentum μ of MI-FGSM (gradients L1-normalised per example, then accumulated).
    pub momentum: Option<f64>,
    /// The loss ascended.
    pub loss: AttackLoss,
    /// Labels the loss is computed against.
    pub labels: LabelMode,
    /// Seed of the random starts (mixed with the evaluation's seed of each batch and the
    /// restart).
    pub seed: u64,
    /// Take gradients through the model's straight-through view (BPDA) when it has one
    /// ([`Classifier::straight_through`]).
    pub bpda: bool,
    /// Push towards a target class (descending the loss against it) instead of away from the
    /// label; success is then "classified as the target".
    pub target: Option<TargetRule>,
    /// Return each example's iterate after the last step, every example taking every step (the
    /// training attack of Madry et al.), instead of the first iterate that fools the model (the
    /// evaluation's choice, which stops there). Left out of the settings when off, so that the
    /// records of evaluation attacks keep their keys.
    #[serde(skip_serializing_if = "is_false")]
    pub keep_last: bool,
}

/// Whether `b` is false (serde's `skip_serializing_if`).
fn is_false(b: &bool) -> bool {
    !*b
}

impl Default for PgdConfig {
    fn default() -> Self {
        Self {
            norm: Norm::Linf,
            steps: 40,
            step_size: None,
            random_start: true,
            restarts: 1,
            momentum: None,
            loss: AttackLoss::CrossEntropy,
            labels: LabelMode::True,
            seed: 0,
            bpda: false,
            target: None,
            keep_last: false,
        }
    }
}

impl PgdConfig {
    /// L∞ PGD with a random start and `steps` steps of 2.5·ε/steps.
    pub fn linf(steps: usize) -> Self {
        Self {
            steps,
            ..Self::default()
        }
    }

    /// L2 PGD with a random start.
    pub fn l2(steps: usize) -> Self {
        Self {
            norm: Norm::L2,
            steps,
            ..Self::default()
        }
    }

    /// BIM / I-FGSM: no random start, `steps` steps of ε/steps.
    pub fn bim(steps: usize) -> Self {
        Self {
            steps,
            random_start: false,
            ..Self::default()
        }
    }

    /// MI-FGSM: BIM with momentum μ (1.0 in the paper).
    pub fn mi_fgsm(steps: usize, mu: f64) -> Self {
        Self {
            momentum: Some(mu),
            ..Self::bim(steps)
        }
    }

    /// Checks the settings once: refuses zero steps or restarts, and step sizes or momenta that
    /// are not positive (momentum: not ≥ 0), naming the field.
    pub fn check(self) -> Result<Pgd> {
        let bad = |field: &'static str, reason: String| AttackError::Invalid { field, reason };
        if self.steps == 0 {
            return Err(bad("steps", "must be at least 1".into()));
        }
        if self.restarts == 0 {
            return Err(bad("restarts", "must be at least 1".into()));
        }
        if let Some(a) = self.step_size
            && !(a.is_finite() && a > 0.0)
        {
            return Err(bad("step_size", format!("{a} is not a positive number")));
        }
        if let Some(m) = self.momentum
            && !(m.is_finite() && m >= 0.0)
        {
            return Err(bad("momentum", format!("{m} is not a number ≥ 0")));
        }
        if let Some(t) = self.target {
            t.check()?;
        }
        Ok(Pgd(self))
    }
}

impl AttackConfig for PgdConfig {
    fn build(&self) -> Result<Box<dyn Attack>> {
        Ok(Box::new(self.check()?))
    }
}

/// PGD, BIM or MI-FGSM with checked settings ([`PgdConfig::check`]).
///
/// Per example the result is (unless [`PgdConfig::keep_last`] asks for the last iterate, as
/// adversarial training does) the first iterate that is misclassified (targeted: classified as the
/// target) — once found it is kept and the example takes no more steps — else the iterate of
/// highest loss over all steps. Restarts run on the examples the earlier ones did not break and
/// merge the same way: success first, loss second. The iterates after each step are the
/// candidates, so one step from the clean image with `step_size = ε` is FGSM.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pgd(PgdConfig);

impl Pgd {
    /// The settings.
    pub fn config(&self) -> &PgdConfig {
        &self.0
    }

    fn alpha(&self, eps: f64) -> f64 {
        let c = &self.0;
        c.step_size.unwrap_or(if c.random_start {
            2.5 * eps / c.steps as f64
        } else {
            eps / c.steps as f64
        })
    }

    /// The random start of each example: uniform in the L∞ ball, or uniform in the L2 ball (a
    /// Gaussian direction scaled to a radius ε·U^(1/d)); one SplitMix64 stream per example from
    /// `seed` and its row, so that a start does not depend on the other rows.
    fn random_delta(&self, rows: &[usize], size: usize, eps: f64, seed: u64) -> Vec<f32> {
        let mut out = Vec::with_capacity(rows.len() * size);
        for &row in rows {
            let mut rng = SplitMix64::new(mix_seed(&[seed, row as u64]));
            match self.0.norm {
                Norm::Linf => {
                    out.extend((0..size).map(|_| ((rng.next_f64() * 2.0 - 1.0) * eps) as f32))
                }
                Norm::L2 => {
                    let v: Vec<f64> = (0..size).map(|_| rng.gaussian()).collect();
                    let norm = v.iter().map(|a| a * a).sum::<f64>().sqrt().max(1e-12);
                    // uniform in the ball: the radius's d-th power is uniform
                    let radius = eps * rng.next_f64().powf(1.0 / size as f64);
                    out.extend(v.iter().map(|a| (a * radius / norm) as f32));
                }
            }
        }
        out
    }

    /// The direction of one step from the gradient rows `g` (MI-FGSM: with the momentum
    /// `velocity`), in place, `size` values a row: the f32 operations of the tensor version
    /// (L1 normalisation, momentum, sign or L2 normalisation), reductions as [`sum_f32`].
    fn direction(&self, g: &mut [f32], size: usize, velocity: &mut Option<Vec<f32>>) {
        let c = &self.0;
        if let Some(mu) = c.momentum {
            let mu = mu as f32;
            for (j, row) in g.chunks_mut(size).enumerate() {
                let l1 = sum_f32(&row.iter().map(|v| v.abs()).collect::<Vec<f32>>()).max(1e-12);
                match velocity.as_ref() {
                    Some(v) => row
                        .iter_mut()
                        .zip(&v[j * size..(j + 1) * size])
                        .for_each(|(g, v)| *g = v * mu + *g / l1),
                    None => row.iter_mut().for_each(|g| *g /= l1),
                }
            }
            *velocity = Some(g.to_vec());
        }
        for row in g.chunks_mut(size) {
            match c.norm {
                Norm::Linf => row.iter_mut().for_each(|v| *v = sign(*v)),
                Norm::L2 => {
                    let n = norm_l2(row).max(1e-12);
                    row.iter_mut().for_each(|v| *v /= n);
                }
            }
        }
    }

    /// The first iterate of a restart on the examples `rows` of the host images `x`: a random
    /// start in the ε-ball when the settings ask for one (and ε > 0), else the clean images.
    fn start(&self, x: &[f32], size: usize, rows: &[usize], eps: f64, seed: u64) -> Vec<f32> {
        if self.0.random_start && eps > 0.0 {
            let d = self.random_delta(rows, size, eps, seed);
            x.iter()
                .zip(&d)
                .map(|(x, d)| (x + d).clamp(0.0, 1.0))
                .collect()
        } else {
            x.to_vec()
        }
    }

    /// One restart on the examples `rows` of the batch, offering each example's result to `best`.
    /// The iterates, gradients and candidates live on the host and each step updates every row
    /// in one pass after one gradient readback (the same f32 operations as the tensor version
    /// it replaced); the model's pass is the only device work.
    fn restart(
        &self,
        grad_model: &HostModel<'_>,
        batch: Restart,
        eps: f64,
        seed: u64,
        best: &mut Best,
    ) -> Result<()> {
        let Restart { x, goal, mut rows } = batch;
        let c = &self.0;
        let targeted = c.target.is_some();
        let (alpha, sign) = (self.alpha(eps), if targeted { -1.0 } else { 1.0 });
        let [_, ch, h, w] = x.dims();
        let size = ch * h * w;
        let mut goal_host = host_int(goal.clone())?;
        let mut goal = goal;
        let mut x = host(x)?;
        let mut adv = self.start(&x, size, &rows, eps, seed);
        let mut cand = Candidates::new(adv.clone(), rows.len());
        let mut velocity: Option<Vec<f32>> = None;
        let (e, by) = (eps as f32, (sign * alpha) as f32);
        for step in 0..=c.steps {
            let y = goal.clone();
            let loss = move |z: Tensor<2>| per_example_loss(z, y.clone(), c.loss);
            let p = grad_model.pass(&adv, [rows.len(), ch, h, w], &loss, step < c.steps)?;
            if step > 0 {
                let judge = Judge {
                    goal: &goal_host,
                    targeted,
                    sign,
                };
                cand.offer(&adv, size, &p, &judge, c.keep_last);
            }
            let Some(mut g) = p.grad else { break };
            // rows already broken take no more steps: hand them over and drop them
            let done = cand.fooled.iter().filter(|f| **f).count();
            if !c.keep_last && done > 0 && done * 8 >= rows.len() {
                let (finished, kept): (Vec<usize>, Vec<usize>) =
                    (0..rows.len()).partition(|&i| cand.fooled[i]);
                for &i in &finished {
                    let image = &cand.images[i * size..(i + 1) * size];
                    best.offer(rows[i], image, cand.score[i], true);
                }
                if kept.is_empty() {
                    return Ok(());
                }
                cand = cand.keep(&kept, size);
                goal_host = take_rows(&goal_host, 1, &kept);
                rows = take_rows(&rows, 1, &kept);
                x = take_rows(&x, size, &kept);
                goal = select_rows(goal, &kept);
                adv = take_rows(&adv, size, &kept);
                g = take_rows(&g, size, &kept);
                velocity = velocity.map(|v| take_rows(&v, size, &kept));
            }
            self.direction(&mut g, size, &mut velocity);
            match c.norm {
                Norm::Linf => {
                    for ((a, d), x) in adv.iter_mut().zip(&g).zip(&x) {
                        *a = project_linf(*x, *a + d * by, e);
                    }
                }
                Norm::L2 => {
                    for ((a, d), x) in adv.chunks_mut(size).zip(g.chunks(size)).zip(x.chunks(size))
                    {
                        a.iter_mut().zip(d).for_each(|(a, d)| *a += d * by);
                        project_l2_row(x, a, e);
                    }
                }
            }
        }
        for (i, &row) in rows.iter().enumerate() {
            let image = &cand.images[i * size..(i + 1) * size];
            best.offer(row, image, cand.score[i], cand.fooled[i]);
        }
        Ok(())
    }
}

/// The rows one restart attacks: their images, the class each is judged against (its label, or
/// its target when targeted) and their places in the batch.
struct Restart {
    x: Tensor<4>,
    goal: Tensor<1, Int>,
    rows: Vec<usize>,
}

/// How a step's iterate is judged: broken when its prediction equals `goal` (targeted) or
/// differs from it, else scored by the loss times `sign` (−1 when targeted: the loss descends).
#[derive(Clone, Copy)]
struct Judge<'a> {
    goal: &'a [i64],
    targeted: bool,
    sign: f64,
}

/// The candidate of each row of a restart: an iterate after a step, misclassified (targeted:
/// classified as the target) if one was found, else the one of highest loss.
struct Candidates {
    /// The candidate images, on the host.
    images: Vec<f32>,
    /// The loss of each, negated when targeted (higher is better).
    score: Vec<f32>,
    /// Whether each is misclassified (targeted: classified as the target).
    fooled: Vec<bool>,
}

impl Candidates {
    /// `n` rows whose candidates are `images`, none scored yet.
    fn new(images: Vec<f32>, n: usize) -> Self {
        Self {
            images,
            score: vec![f32::NEG_INFINITY; n],
            fooled: vec![false; n],
        }
    }

    /// Offers the iterates `adv` of a step (`size` values a row), on which `p` is the pass,
    /// judged by `judge`: a row not broken yet takes its iterate when that breaks it or scores
    /// higher; with `always`, every row takes it.
    fn offer(&mut self, adv: &[f32], size: usize, p: &HostPass, judge: &Judge<'_>, always: bool) {
        let Judge {
            goal: goal_host,
            targeted,
            sign,
        } = *judge;
        let fooled: Vec<bool> = p
            .pred
            .iter()
            .zip(goal_host)
            .map(|(p, g)| (p == g) == targeted)
            .collect();
        let take: Vec<bool> = (0..self.score.len())
            .map(|i| {
                always
                    || (!self.fooled[i] && (fooled[i] || sign as f32 * p.loss[i] > self.score[i]))
            })
            .collect();
        copy_rows(&mut self.images, adv, size, &take);
        for i in 0..take.len() {
            if take[i] {
                self.score[i] = sign as f32 * p.loss[i];
                self.fooled[i] = fooled[i];
            }
        }
    }

    /// Keeps the rows `kept` (indices into the current rows), in that order, none broken.
    fn keep(self, kept: &[usize], size: usize) -> Self {
        Self {
            score: take_rows(&self.score, 1, kept),
            fooled: vec![false; kept.len()],
            images: take_rows(&self.images, size, kept),
        }
    }
}

impl Attack for Pgd {
    fn name(&self) -> String {
        let c = &self.0;
        let mut n = match (c.momentum, c.random_start, c.norm) {
            (Some(_), _, _) => format!("mi-fgsm-{}", c.steps),
            (None, false, Norm::Linf) => format!("bim-{}", c.steps),
            (None, _, Norm::Linf) => format!("pgd-linf-{}", c.steps),
            (None, _, Norm::L2) => format!("pgd-l2-{}", c.steps),
        };
        if let Some(t) = &c.target {
            n.push_str("-targeted-");
            n.push_str(&t.name());
        }
        if c.restarts > 1 {
            n.push_str(&format!("x{}", c.restarts));
        }
        n.push_str(c.loss.suffix());
        if c.labels == LabelMode::Predicted {
            n.push_str("-pred");
        }
        if c.bpda {
            n.push_str("-bpda");
        }
        n
    }

    fn info(&self) -> AttackInfo {
        let c = &self.0;
        let family = match (c.momentum, c.random_start) {
            (Some(_), _) => Family::MiFgsm,
            (None, false) => Family::Bim,
            (None, true) => Family::Pgd,
        };
        AttackInfo {
            restarts: c.restarts,
            labels: c.labels,
            targeted: c.target.is_some(),
            adaptive: c.bpda || c.loss == AttackLoss::Margin,
            ..AttackInfo::white_box(family, c.norm, c.loss, c.steps)
        }
    }

    fn targets(
        &self,
        model: &dyn Classifier,
        images: Tensor<4>,
        labels: Tensor<1, Int>,
    ) -> Result<Option<Tensor<1, Int>>> {
        match self.0.target {
            Some(rule) => Ok(Some(rule.targets(model, images, labels)?)),
            None => Ok(None),
        }
    }

    fn perturb_seeded(
        &self,
        model: &dyn Classifier,
        images: Tensor<4>,
        labels: Tensor<1, Int>,
        eps: f64,
        seed: u64,
    ) -> Result<Tensor<4>> {
        check_eps(eps)?;
        let c = &self.0;
        let x = images.without_autodiff();
        if eps == 0.0 {
            // no step can move a pixel: the clean images are every iterate
            return Ok(x);
        }
        let dims = x.dims();
        let device = x.device();
        let view = if c.bpda {
            model.straight_through()
        } else {
            None
        };
        let grad_model = HostModel::new(view.as_deref().unwrap_or(model), &device);
        let goal = match self.targets(model, x.clone(), labels.clone())? {
            Some(t) => t,
            None => target_labels(model, x.clone(), labels, c.labels),
        };
        let mut best = Best::new(host(x.clone())?, dims[0]);
        for restart in 0..c.restarts {
            let rows = best.pending();
            if rows.is_empty() {
                break;
            }
            let all = rows.len() == dims[0];
            let sub = |t: Tensor<4>| if all { t } else { select_rows(t, &rows) };
            let goal_rows = if all {
                goal.clone()
            } else {
                select_rows(goal.clone(), &rows)
            };
            let batch = Restart {
                x: sub(x.clone()),
                goal: goal_rows,
                rows: rows.clone(),
            };
            self.restart(
                &grad_model,
                batch,
                eps,
                mix_seed(&[c.seed, seed, restart as u64]),
                &mut best,
            )?;
        }
        Ok(best.tensor(dims, &device))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Fgsm, TargetRule};
    use advrob_model::backend::on_test_backends;
    use advrob_model::{DeployConfig, Deployed, MlpConfig};
    use burn::tensor::TensorData;

    fn pgd(c: PgdConfig) -> Pgd {
        c.check().expect("valid settings")
    }

    fn host(t: Tensor<4>) -> Vec<f32> {
        t.into_data().try_into_vec_as::<f32>().expect("f32")
    }

    fn setup(
        device: &burn::tensor::Device,
    ) -> (advrob_model::Mlp, Tensor<4>, Tensor<1, Int>, Vec<f32>) {
        let model = MlpConfig::new()
            .with_hidden(vec![16])
            .with_seed(3)
            .init(device)
            .expect("init");
        let x: Vec<f32> = (0..3 * 784).map(|i| [0.0, 1.0, 0.35, 0.8][i % 4]).collect();
        let images = Tensor::<4>::from_data(TensorData::new(x.clone(), [3, 1, 28, 28]), device);
        let labels = Tensor::<1, Int>::from_data(TensorData::new(vec![2i64, 5, 7], [3]), device);
        (model, images, labels, x)
    }

    #[test]
    fn keep_last_returns_the_last_iterate_of_every_example() {
        on_test_backends(|device| {
            let (model, images, labels, _) = setup(device);
            let (eps, alpha) = (0.2, 0.1);
            let two = |keep_last| {
                pgd(PgdConfig {
                    step_size: Some(alpha),
                    keep_last,
                    ..PgdConfig::bim(2)
                })
            };
            let one = pgd(PgdConfig {
                step_size: Some(alpha),
                ..PgdConfig::bim(1)
            });
            // two steps of α from x stay within 2α = ε of it, so they are one step from x and one
            // more from where it ended
            let x1 = one
                .perturb(&model, images.clone(), labels.clone(), alpha)
                .expect("step 1");
            let x2 = host(
                one.perturb(&model, x1, labels.clone(), alpha)
                    .expect("step 2"),
            );
            let last = host(
                two(true)
                    .perturb(&model, images.clone(), labels.clone(), eps)
                    .expect("keep last"),
            );
            // (equal up to the rounding of projecting around x rather than around the first step)
            let gap = last
                .iter()
                .zip(&x2)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0f32, f32::max);
            assert!(gap < 1e-6, "every example took both steps: {gap}");
            // the untrained model misclassifies most examples at once: the evaluation's PGD stops
            // them after the first step
            let first = host(
                two(false)
                    .perturb(&model, images, labels, eps)
                    .expect("stop"),
            );
            assert_ne!(first, last);
        });
    }

    #[test]
    fn budgets_and_pixel_range_hold_for_every_variant() {
        on_test_backends(|device| {
            let device = device.clone();
            let (model, images, labels, x) = setup(&device);
            let eps = 0.2;
            for attack in [
                pgd(PgdConfig::linf(5)),
                pgd(PgdConfig::bim(4)),
                pgd(PgdConfig::mi_fgsm(4, 1.0)),
                pgd(PgdConfig {
                    restarts: 2,
                    loss: AttackLoss::Margin,
                    ..PgdConfig::linf(3)
                }),
            ] {
                let adv = host(
                    attack
                        .perturb(&model, images.clone(), labels.clone(), eps)
                        .expect("attack"),
                );
                for (p, q) in adv.iter().zip(&x) {
                    assert!((0.0..=1.0).contains(p), "{}: pixel {p}", attack.name());
                    assert!((p - q).abs() <= eps as f32 + 1e-6, "{}", attack.name());
                }
            }
            // L2: per example ‖δ‖₂ ≤ ε
            let eps2 = 1.5;
            let adv = host(
                pgd(PgdConfig::l2(5))
                    .perturb(&model, images.clone(), labels.clone(), eps2)
                    .expect("attack"),
            );
            for (a, c) in adv.chunks(784).zip(x.chunks(784)) {
                let n: f32 = a
                    .iter()
                    .zip(c)
                    .map(|(p, q)| (p - q) * (p - q))
                    .sum::<f32>()
                    .sqrt();
                assert!(n <= eps2 as f32 + 1e-4, "‖δ‖₂ = {n}");
                assert!(a.iter().all(|p| (0.0..=1.0).contains(p)));
            }
        });
    }

    #[test]
    fn one_step_without_random_start_is_fgsm() {
        on_test_backends(|device| {
            let device = device.clone();
            let (model, images, labels, _) = setup(&device);
            let one = pgd(PgdConfig {
                steps: 1,
                random_start: false,
                ..PgdConfig::default()
            });
            let a = host(
                one.perturb(&model, images.clone(), labels.clone(), 0.1)
                    .expect("pgd"),
            );
            let b = host(
                Fgsm::new()
                    .perturb(&model, images, labels, 0.1)
                    .expect("fgsm"),
            );
            assert_eq!(a, b);
        });
    }

    #[test]
    fn more_steps_never_make_the_attack_weaker() {
        on_test_backends(|device| {
            let device = device.clone();
            let (model, images, labels, _) = setup(&device);
            let run = |steps: usize| -> (Vec<f32>, Vec<i64>) {
                let attack = pgd(PgdConfig {
                    step_size: Some(0.02),
                    ..PgdConfig::linf(steps)
                });
                let adv = attack
                    .perturb(&model, images.clone(), labels.clone(), 0.1)
                    .expect("attack");
                let z = model.logits(adv);
                (
                    host(
                        per_example_loss(z.clone(), labels.clone(), AttackLoss::CrossEntropy)
                            .reshape([3, 1, 1, 1]),
                    ),
                    z.argmax(1)
                        .flatten::<1>(0, 1)
                        .into_data()
                        .try_into_vec_as::<i64>()
                        .expect("i64"),
                )
            };
            let y = [2i64, 5, 7];
            let ((few_loss, few_pred), (more_loss, more_pred)) = (run(2), run(6));
            for i in 0..3 {
                // the same random start and first steps: a break found in 2 steps is kept in 6, and
                // without a break the loss only rises
                let (few_broken, more_broken) = (few_pred[i] != y[i], more_pred[i] != y[i]);
                assert!(!few_broken || more_broken, "example {i} lost its break");
                if !more_broken {
                    assert!(
                        more_loss[i] >= few_loss[i],
                        "{} < {}",
                        more_loss[i],
                        few_loss[i]
                    );
                }
            }
            // and the attack actually raises the loss over the clean images
            let clean = host(
                per_example_loss(
                    model.logits(images.clone()),
                    labels.clone(),
                    AttackLoss::CrossEntropy,
                )
                .reshape([3, 1, 1, 1]),
            );
            assert!(
                (0..3).all(|i| more_pred[i] != y[i] || more_loss[i] > clean[i]),
                "{more_loss:?} vs {clean:?}"
            );
        });
    }

    /// Three classes as functions of the mean pixel m: class 0 holds 1.001; class 1 has a bump to
    /// 1.2 at m = 0.6 and is ~1 elsewhere; class 2 rises steeply, 0.99 at m = 0.8. The
    /// cross-entropy against class 0 rises along m = 0.6, 0.7, 0.8, but only m = 0.6 and 0.7 are
    /// misclassified: the highest-loss iterate (m = 0.8) is correctly classified.
    struct Bump;
    impl Classifier for Bump {
        fn logits(&self, images: Tensor<4>) -> Tensor<2> {
            let [b, ..] = images.dims();
            let m: Tensor<2> = images.reshape([b as i64, -1]).mean_dim(1);
            let z0 = m.clone().zeros_like() + 1.001;
            let bump = ((m.clone() - 0.6) / 0.05).square().neg().exp() * 0.2 + 1.0;
            let z2 = (m - 0.8) * 5.0 + 0.99;
            Tensor::cat(vec![z0, bump, z2], 1)
        }
    }

    #[test]
    fn a_misclassified_iterate_is_kept_over_a_later_one_of_higher_loss() {
        on_test_backends(|device| {
            let x = Tensor::<4>::ones([1, 1, 2, 2], device) * 0.5;
            let y = Tensor::<1, Int>::zeros([1], device);
            // BIM, 3 steps of 0.1 upwards: m = 0.6, 0.7, 0.8
            let attack = pgd(PgdConfig {
                step_size: Some(0.1),
                ..PgdConfig::bim(3)
            });
            let adv = attack.perturb(&Bump, x, y, 0.3).expect("attack");
            let m = host(adv.clone()).iter().sum::<f32>() / 4.0;
            assert!(
                (m - 0.6).abs() < 1e-4,
                "returned the iterate at m = {m}, not the break at 0.6"
            );
            let pred: i64 = Bump.logits(adv).argmax(1).into_scalar();
            assert_eq!(pred, 1, "misclassified");
        });
    }

    #[test]
    fn random_starts_differ_by_seed_and_the_l2_start_is_uniform_in_the_ball() {
        on_test_backends(|device| {
            let device = device.clone();
            let (model, images, labels, _) = setup(&device);
            // one tiny step: the result is its random start plus little
            let attack = pgd(PgdConfig {
                step_size: Some(1e-6),
                ..PgdConfig::linf(1)
            });
            let at = |seed| {
                host(
                    attack
                        .perturb_seeded(&model, images.clone(), labels.clone(), 0.1, seed)
                        .expect("attack"),
                )
            };
            assert_eq!(at(1), at(1));
            assert_ne!(at(1), at(2), "another batch seed, another start");
        });
        // uniform in a 784-dimensional ball: the radius's 784th power is uniform, so nearly every
        // start lies close to the sphere (a radius uniform in [0, ε] would put half below ε/2)
        let p = pgd(PgdConfig::l2(1));
        let rows: Vec<usize> = (0..200).collect();
        let d = p.random_delta(&rows, 784, 1.0, 3);
        let mut radii: Vec<f64> = d
            .chunks(784)
            .map(|r| r.iter().map(|v| f64::from(*v).powi(2)).sum::<f64>().sqrt())
            .collect();
        radii.sort_by(f64::total_cmp);
        assert!(radii[199] <= 1.0 + 1e-6, "{}", radii[199]);
        assert!(radii[100] > 0.99, "median radius {}", radii[100]);
    }

    #[test]
    fn targeted_pgd_reaches_its_target_within_budget() {
        on_test_backends(|device| {
            let device = device.clone();
            let (model, images, labels, x) = setup(&device);
            for norm in [Norm::Linf, Norm::L2] {
                let eps = if norm == Norm::Linf { 0.5 } else { 8.0 };
                let attack = pgd(PgdConfig {
                    norm,
                    target: Some(TargetRule::Shift(3)),
                    ..PgdConfig::linf(20)
                });
                assert!(attack.info().targeted);
                let targets = attack
                    .targets(&model, images.clone(), labels.clone())
                    .expect("targets")
                    .expect("targeted");
                let adv = attack
                    .perturb(&model, images.clone(), labels.clone(), eps)
                    .expect("attack");
                let hit: i64 = model
                    .logits(adv.clone())
                    .argmax(1)
                    .flatten::<1>(0, 1)
                    .equal(targets)
                    .int()
                    .sum()
                    .into_scalar();
                assert!(hit >= 2, "{norm:?}: {hit} of 3 examples reached the target");
                let a = host(adv);
                for (ex, c) in a.chunks(784).zip(x.chunks(784)) {
                    let d: Vec<f32> = ex.iter().zip(c).map(|(p, q)| p - q).collect();
                    let n = match norm {
                        Norm::Linf => d.iter().fold(0.0f32, |m, v| m.max(v.abs())),
                        Norm::L2 => d.iter().map(|v| v * v).sum::<f32>().sqrt(),
                    };
                    assert!(n <= eps as f32 + 1e-4, "{norm:?}: {n}");
                    assert!(ex.iter().all(|p| (0.0..=1.0).contains(p)));
                }
            }
            let e = PgdConfig {
                target: Some(TargetRule::Shift(0)),
                ..PgdConfig::default()
            }
            .check()
            .expect_err("shift 0");
            assert!(e.to_string().contains("target"), "{e}");
        });
    }

    #[test]
    fn bpda_goes_around_a_quantisation_that_stops_plain_pgd() {
        on_test_backends(|device| {
            let device = device.clone();
            let (mlp, images, labels, x) = setup(&device);
            let model = Deployed {
                net: mlp.into(),
                config: DeployConfig::new().with_quantize(Some(16)),
            };
            let plain = host(
                pgd(PgdConfig::bim(5))
                    .perturb(&model, images.clone(), labels.clone(), 0.2)
                    .expect("pgd"),
            );
            assert_eq!(plain, x, "zero gradient: plain BIM cannot move");
            let through = pgd(PgdConfig {
                bpda: true,
                ..PgdConfig::bim(5)
            });
            assert_eq!(through.name(), "bim-5-bpda");
            let adv = host(through.perturb(&model, images, labels, 0.2).expect("bpda"));
            assert!(adv != x, "BPDA moves the pixels");
        });
    }

    #[test]
    fn bad_settings_name_the_field() {
        let e = PgdConfig {
            steps: 0,
            ..PgdConfig::default()
        }
        .check()
        .expect_err("steps");
        assert!(e.to_string().contains("steps"));
        let e = PgdConfig {
            restarts: 0,
            ..PgdConfig::default()
        }
        .check()
        .expect_err("restarts");
        assert!(e.to_string().contains("restarts"));
    }
}
