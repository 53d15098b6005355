//! Auto-PGD (Croce & Hein 2020, "Reliable evaluation of adversarial robustness with an ensemble of
//! diverse parameter-free attacks"): PGD whose step size needs no tuning. It starts at 2ε, keeps a
//! momentum of 0.75, and at checkpoints (after 22%, then every 3% fewer steps down to 6% of the
//! budget) halves the step of every example whose loss stopped rising, restarting it from its best
//! point. On the cross-entropy (APGD-CE), on the difference-of-logits ratio (APGD-DLR), or on its
//! targeted version against each of the top-k other classes in turn (APGD-T).

use advrob_data::rng::SplitMix64;
use advrob_model::Classifier;
use advrob_model::simd::vectorized;
use burn::tensor::{Int, Tensor};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::attack::{Attack, AttackConfig};
use crate::error::{AttackError, Result, check_eps};
use crate::grad::{AttackLoss, HostLoss, HostModel, HostPass};
use crate::info::{AttackInfo, Family, Norm};
use crate::rows::{
    Best, copy_rows, host, mix_seed, norm_l2, project_l2_row, project_linf, select_rows, sign,
    take_rows,
};

/// The loss APGD ascends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum ApgdLoss {
    /// Cross-entropy against the label (APGD-CE).
    #[default]
    CrossEntropy,
    /// Difference-of-logits ratio `−(z_y − max_{i≠y} z_i) / (z_π1 − z_π3)` (APGD-DLR): invariant
    /// to shifting and scaling the logits, so a saturated softmax cannot starve it.
    Dlr,
    /// Targeted DLR `−(z_y − z_t) / (z_π1 − (z_π3 + z_π4)/2)` against each of the
    /// `target_classes` most likely other classes in turn (APGD-T); success is still any
    /// misclassification.
    TargetedDlr,
}

/// The settings of [`Apgd`]; the defaults are the paper's (100 steps, one restart, ρ = 0.75,
/// 9 target classes for APGD-T).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApgdConfig {
    /// Budget norm.
    pub norm: Norm,
    /// Iterations per run.
    pub steps: usize,
    /// Runs from independent random starts (per target class for APGD-T), each on the examples
    /// the earlier ones did not break.
    pub restarts: usize,
    /// The loss.
    pub loss: ApgdLoss,
    /// APGD-T only: how many of the most likely other classes are targeted, one after another.
    pub target_classes: usize,
    /// Share of the steps since the last checkpoint in which the loss must have risen for the step
    /// size to be kept.
    pub rho: f64,
    /// Seed of the random starts.
    pub seed: u64,
}

impl Default for ApgdConfig {
    fn default() -> Self {
        Self {
            norm: Norm::Linf,
            steps: 100,
            restarts: 1,
            loss: ApgdLoss::CrossEntropy,
            target_classes: 9,
            rho: 0.75,
            seed: 0,
        }
    }
}

impl ApgdConfig {
    /// APGD-CE with the paper's settings.
    pub fn ce() -> Self {
        Self::default()
    }

    /// APGD-T (targeted DLR, 9 target classes) with the paper's settings.
    pub fn targeted() -> Self {
        Self {
            loss: ApgdLoss::TargetedDlr,
            ..Self::default()
        }
    }

    /// Checks the settings once: at least one step, restart and target class, ρ in (0, 1].
    pub fn check(self) -> Result<Apgd> {
        let bad = |field: &'static str, reason: &str| AttackError::Invalid {
            field,
            reason: reason.into(),
        };
        if self.steps == 0 {
            return Err(bad("steps", "must be at least 1"));
        }
        if self.restarts == 0 {
            return Err(bad("restarts", "must be at least 1"));
        }
        if self.loss == ApgdLoss::TargetedDlr && self.target_classes == 0 {
            return Err(bad("target_classes", "must be at least 1"));
        }
        if !(self.rho > 0.0 && self.rho <= 1.0) {
            return Err(AttackError::Invalid {
                field: "rho",
                reason: format!("{} is outside (0, 1]", self.rho),
            });
        }
        Ok(Apgd(self))
    }
}

impl AttackConfig for ApgdConfig {
    fn build(&self) -> Result<Box<dyn Attack>> {
        Ok(Box::new(self.check()?))
    }
}

/// Auto-PGD with checked settings ([`ApgdConfig::check`]). Per example it returns the first
/// iterate that was misclassified, else the iterate of highest loss; always within ε of the clean
/// image in its norm and in [0, 1].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Apgd(ApgdConfig);

/// The rows one run attacks: their images, labels, targets (APGD-T) and places in the batch.
struct Rows {
    x: Tensor<4>,
    y: Tensor<1, Int>,
    targets: Option<Tensor<1, Int>>,
    rows: Vec<usize>,
}

/// The per-example state of one APGD run; rows leave it once misclassified. The images and
/// gradients live on the host, `size` values a row: each step reads the gradient back once and
/// updates every row in one pass, where the same step as tensor operations took a dozen passes
/// and allocations over the batch (on burn-ndarray they cost more than the model's own matrix
/// products). The model's pass is the only device work.
struct Run {
    /// The example of each row.
    rows: Vec<usize>,
    /// `[H, W]` of an image.
    shape: [usize; 3],
    x: Vec<f32>,
    y: Vec<i64>,
    targets: Option<Vec<i64>>,
    adv: Vec<f32>,
    old: Vec<f32>,
    grad: Vec<f32>,
    /// The iterate of highest loss and its gradient.
    best: Vec<f32>,
    grad_best: Vec<f32>,
    loss_best: Vec<f32>,
    previous: Vec<f32>,
    rises: Vec<usize>,
    eta: Vec<f32>,
    reduced_last: Vec<bool>,
    best_at_last: Vec<f32>,
    /// A buffer of a row-major iterate's size whose values are dead (the step's output).
    spare: Vec<f32>,
}

impl Run {
    /// Values per image.
    fn size(&self) -> usize {
        self.shape.iter().product()
    }

    /// Keeps the rows `kept` (indices into the current rows), in that order.
    fn keep(&mut self, kept: &[usize]) {
        let size = self.size();
        self.rows = take_rows(&self.rows, 1, kept);
        self.y = take_rows(&self.y, 1, kept);
        self.targets = self.targets.as_ref().map(|t| take_rows(t, 1, kept));
        self.rises = take_rows(&self.rises, 1, kept);
        self.reduced_last = take_rows(&self.reduced_last, 1, kept);
        self.loss_best = take_rows(&self.loss_best, 1, kept);
        self.previous = take_rows(&self.previous, 1, kept);
        self.eta = take_rows(&self.eta, 1, kept);
        self.best_at_last = take_rows(&self.best_at_last, 1, kept);
        for t in [
            &mut self.x,
            &mut self.adv,
            &mut self.old,
            &mut self.grad,
            &mut self.best,
            &mut self.grad_best,
        ] {
            *t = take_rows(t, size, kept);
        }
    }
}

impl Apgd {
    /// The settings.
    pub fn config(&self) -> &ApgdConfig {
        &self.0
    }

    /// The per-example loss against `y` (and `targets` for APGD-T).
    fn loss<'a>(&self, y: &'a [i64], targets: Option<&'a [i64]>) -> HostLoss<'a> {
        match self.0.loss {
            ApgdLoss::CrossEntropy => HostLoss::CrossEntropy(y),
            ApgdLoss::Dlr => HostLoss::Dlr {
                labels: y,
                targets: None,
            },
            ApgdLoss::TargetedDlr => HostLoss::Dlr { labels: y, targets },
        }
    }

    /// The random start of each example: uniform in the L∞ ball scaled so that its largest
    /// coordinate is ε, or a Gaussian direction of L2 norm ε (the paper's initialisation); one
    /// stream per example.
    fn start(&self, rows: &[usize], size: usize, eps: f64, seed: u64) -> Vec<f32> {
        let mut out = Vec::with_capacity(rows.len() * size);
        for &row in rows {
            let mut rng = SplitMix64::new(mix_seed(&[seed, row as u64]));
            let t: Vec<f64> = match self.0.norm {
                Norm::Linf => (0..size).map(|_| rng.next_f64() * 2.0 - 1.0).collect(),
                Norm::L2 => (0..size)
                    .map(|_| {
                        let (u, w) = (rng.next_f64().max(1e-12), rng.next_f64());
                        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * w).cos()
                    })
                    .collect(),
            };
            let n = match self.0.norm {
                Norm::Linf => t.iter().fold(0.0f64, |m, v| m.max(v.abs())),
                Norm::L2 => t.iter().map(|v| v * v).sum::<f64>().sqrt(),
            };
            out.extend(t.iter().map(|v| (eps * v / (n + 1e-12)) as f32));
        }
        out
    }

    /// The targets of APGD-T's run against each example's `rank`-th most likely class on the
    /// clean image (rank 1 is the runner-up).
    fn targets_of_rank(model: &dyn Classifier, x: &Tensor<4>, rank: usize) -> Tensor<1, Int> {
        let logits = model.logits(x.clone().without_autodiff());
        let [b, _] = logits.dims();
        logits
            .argsort_descending(1)
            .slice([0..b, rank..rank + 1])
            .flatten::<1>(0, 1)
    }

    /// One APGD run from a random start on the examples `rows` (whose images and labels `x`, `y`
    /// are), offering each example's result to `best`: its first misclassified iterate, else its
    /// iterate of highest loss.
    fn run(
        &self,
        model: &HostModel<'_>,
        batch: Rows,
        eps: f64,
        seed: u64,
        best: &mut Best,
    ) -> Result<()> {
        let c = &self.0;
        let (mut s, fooled) = self.begin(model, batch, eps, seed)?;
        // one forward and backward pass per row at the start and at every step
        best.charge(&s.rows, 2);
        // an example misclassified at its random start is done
        self.retire(&mut s, &fooled, best);
        let (n_first, n_min, n_decr) = (
            ((0.22 * c.steps as f64) as usize).max(1),
            ((0.06 * c.steps as f64) as usize).max(1),
            ((0.03 * c.steps as f64) as usize).max(1),
        );
        let mut k = n_first;
        let mut since_check = 0usize;
        for i in 0..c.steps {
            if s.rows.is_empty() {
                return Ok(());
            }
            let momentum = if i == 0 { 1.0 } else { 0.75 };
            let pred = self.step(model, &mut s, momentum, eps)?;
            best.charge(&s.rows, 2);
            since_check += 1;
            if since_check == k {
                self.checkpoint(&mut s, k);
                since_check = 0;
                k = k.saturating_sub(n_decr).max(n_min);
            }
            let fooled: Vec<bool> = pred.iter().zip(&s.y).map(|(p, l)| p != l).collect();
            self.retire(&mut s, &fooled, best);
        }
        let size = s.size();
        for (i, &row) in s.rows.iter().enumerate() {
            best.offer(
                row,
                &s.best[i * size..(i + 1) * size],
                s.loss_best[i],
                false,
            );
        }
        Ok(())
    }

    /// The state of a run on the examples `rows` of `x`, `y` at its random start, with its first
    /// pass (step 2ε, every row's best point the start), and which rows the start already
    /// misclassifies.
    fn begin(
        &self,
        model: &HostModel<'_>,
        batch: Rows,
        eps: f64,
        seed: u64,
    ) -> Result<(Run, Vec<bool>)> {
        let Rows {
            x,
            y,
            targets,
            rows,
        } = batch;
        let [b, c, h, w] = x.dims();
        let x = host(x)?;
        let start = self.start(&rows, c * h * w, eps, seed);
        // as the tensor sum `(x + start).clamp(0, 1)`
        let adv: Vec<f32> = x
            .iter()
            .zip(&start)
            .map(|(x, d)| (x + d).clamp(0.0, 1.0))
            .collect();
        let y = crate::rows::host_int(y)?;
        let targets = targets.map(crate::rows::host_int).transpose()?;
        let p = self.pass(model, &adv, [b, c, h, w], &y, targets.as_deref())?;
        let grad = p.grad.ok_or(AttackError::NoGradient)?;
        let mut s = Run {
            rows,
            shape: [c, h, w],
            x,
            y,
            targets,
            old: adv.clone(),
            best: adv.clone(),
            grad_best: grad.clone(),
            adv,
            grad,
            loss_best: p.loss.clone(),
            previous: p.loss,
            rises: vec![0; b],
            eta: vec![(2.0 * eps) as f32; b],
            reduced_last: vec![true; b],
            best_at_last: Vec::new(),
            spare: Vec::new(),
        };
        s.best_at_last = s.loss_best.clone();
        let fooled: Vec<bool> = p.pred.iter().zip(&s.y).map(|(p, l)| p != l).collect();
        Ok((s, fooled))
    }

    /// One step of the run: along the gradient's sign (L2: its direction) by each row's step
    /// size, with `momentum`, projected onto the ε-ball and [0, 1]; then the pass on the new
    /// iterate updates the gradient, the best points and the loss rises. Returns the predictions
    /// on the new iterate.
    fn step(
        &self,
        model: &HostModel<'_>,
        s: &mut Run,
        momentum: f64,
        eps: f64,
    ) -> Result<Vec<i64>> {
        let size = s.size();
        let (m, m1, e) = (momentum as f32, (1.0 - momentum) as f32, eps as f32);
        // the buffer of two iterates ago: every value is written
        let mut next = std::mem::take(&mut s.spare);
        next.resize(s.adv.len(), 0.0);
        // each row on its own, the rows over the rayon pool, each in the CPU's widest vectors
        next.par_chunks_mut(size.max(1))
            .enumerate()
            .for_each(|(j, out)| {
                let r = j * size..(j + 1) * size;
                let (x, adv, old, g) = (
                    &s.x[r.clone()],
                    &s.adv[r.clone()],
                    &s.old[r.clone()],
                    &s.grad[r.clone()],
                );
                let eta = s.eta[j];
                match self.0.norm {
                    Norm::Linf => vectorized(
                        #[inline(always)]
                        || {
                            let rows = out.iter_mut().zip(x).zip(adv).zip(old).zip(g);
                            for ((((out, &x), &a), &old), &g) in rows {
                                let z = project_linf(x, a + sign(g) * eta, e);
                                let moved = a + (z - a) * m + (a - old) * m1;
                                *out = project_linf(x, moved, e);
                            }
                        },
                    ),
                    Norm::L2 => {
                        let n = norm_l2(g).max(1e-12);
                        let mut z: Vec<f32> =
                            adv.iter().zip(g).map(|(a, g)| a + g / n * eta).collect();
                        project_l2_row(x, &mut z, e);
                        for i in 0..size {
                            out[i] = adv[i] + (z[i] - adv[i]) * m + (adv[i] - old[i]) * m1;
                        }
                        project_l2_row(x, out, e);
                    }
                }
            });
        s.spare = std::mem::replace(&mut s.old, std::mem::replace(&mut s.adv, next));
        let dims = [s.rows.len(), s.shape[0], s.shape[1], s.shape[2]];
        // the last gradient, read by the step above, is the new one's buffer
        let spare = std::mem::take(&mut s.grad);
        let p = model.pass_into(
            &s.adv,
            dims,
            &self.loss(&s.y, s.targets.as_deref()),
            true,
            spare,
        )?;
        s.grad = p.grad.ok_or(AttackError::NoGradient)?;
        let improved: Vec<bool> = p
            .loss
            .iter()
            .zip(&s.loss_best)
            .map(|(l, b)| l > b)
            .collect();
        copy_rows(&mut s.best, &s.adv, size, &improved);
        copy_rows(&mut s.grad_best, &s.grad, size, &improved);
        for (j, l) in p.loss.iter().enumerate() {
            s.rises[j] += usize::from(*l > s.previous[j]);
            s.loss_best[j] = s.loss_best[j].max(*l);
        }
        s.previous = p.loss;
        Ok(p.pred)
    }

    /// A checkpoint: every row whose loss rose in at most ρ·k of the last k steps, or did not
    /// improve since the last checkpoint without a reduction then, halves its step and restarts
    /// from its best point.
    fn checkpoint(&self, s: &mut Run, k: usize) {
        let halve: Vec<bool> = (0..s.rows.len())
            .map(|j| {
                let oscillates = s.rises[j] as f64 <= k as f64 * self.0.rho;
                let stuck = !s.reduced_last[j] && s.best_at_last[j] >= s.loss_best[j];
                oscillates || stuck
            })
            .collect();
        for (j, &h) in halve.iter().enumerate() {
            if h {
                s.eta[j] /= 2.0;
            }
        }
        let size = s.size();
        copy_rows(&mut s.adv, &s.best, size, &halve);
        copy_rows(&mut s.grad, &s.grad_best, size, &halve);
        s.reduced_last = halve;
        s.best_at_last = s.loss_best.clone();
        s.rises.iter_mut().for_each(|r| *r = 0);
    }

    /// Hands the rows whose current iterate is misclassified to `best` and drops them.
    fn retire(&self, s: &mut Run, fooled: &[bool], best: &mut Best) {
        let (done, kept): (Vec<usize>, Vec<usize>) = (0..s.rows.len()).partition(|&i| fooled[i]);
        if done.is_empty() {
            return;
        }
        let size = s.size();
        for &i in &done {
            best.offer(
                s.rows[i],
                &s.adv[i * size..(i + 1) * size],
                s.previous[i],
                true,
            );
        }
        s.keep(&kept);
    }

    /// The model's pass on the host images `adv` of shape `dims`.
    fn pass(
        &self,
        model: &HostModel<'_>,
        adv: &[f32],
        dims: [usize; 4],
        y: &[i64],
        targets: Option<&[i64]>,
    ) -> Result<HostPass> {
        model.pass(adv, dims, &self.loss(y, targets), true)
    }
}

impl Attack for Apgd {
    fn name(&self) -> String {
        let c = &self.0;
        let norm = match c.norm {
            Norm::Linf => "",
            Norm::L2 => "-l2",
        };
        let mut n = match c.loss {
            ApgdLoss::CrossEntropy => format!("apgd{norm}-ce-{}", c.steps),
            ApgdLoss::Dlr => format!("apgd{norm}-dlr-{}", c.steps),
            ApgdLoss::TargetedDlr => format!("apgd{norm}-t-{}-top{}", c.steps, c.target_classes),
        };
        if c.restarts > 1 {
            n.push_str(&format!("x{}", c.restarts));
        }
        n
    }

    fn info(&self) -> AttackInfo {
        let c = &self.0;
        let loss = match c.loss {
            ApgdLoss::CrossEntropy => AttackLoss::CrossEntropy,
            ApgdLoss::Dlr => AttackLoss::Dlr,
            ApgdLoss::TargetedDlr => AttackLoss::TargetedDlr,
        };
        let runs = match c.loss {
            ApgdLoss::TargetedDlr => c.restarts * c.target_classes,
            _ => c.restarts,
        };
        AttackInfo {
            restarts: runs,
            ..AttackInfo::white_box(Family::Apgd, c.norm, loss, c.steps)
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
        Ok(self.perturb_costed(model, images, labels, eps, seed)?.0)
    }

    fn perturb_costed(
        &self,
        model: &dyn Classifier,
        images: Tensor<4>,
        labels: Tensor<1, Int>,
        eps: f64,
        seed: u64,
    ) -> Result<(Tensor<4>, Option<Vec<u64>>)> {
        check_eps(eps)?;
        let c = &self.0;
        let x = images.without_autodiff();
        let dims = x.dims();
        if eps == 0.0 {
            return Ok((x, Some(vec![0; dims[0]])));
        }
        let device = x.device();
        let classes = model.logits(x.clone().slice(0..1)).dims()[1];
        let needed = match c.loss {
            ApgdLoss::CrossEntropy => 2,
            ApgdLoss::Dlr => 3,
            ApgdLoss::TargetedDlr => 4,
        };
        if classes < needed {
            return Err(AttackError::Invalid {
                field: "loss",
                reason: format!("{} classes: the loss needs at least {needed}", classes),
            });
        }
        let mut best = Best::new(host(x.clone())?, dims[0]);
        // the pass that read the number of classes
        best.charge(&[0], 1);
        let on_host = HostModel::new(model, &device);
        let ranks: Vec<Option<usize>> = match c.loss {
            ApgdLoss::TargetedDlr => (1..=c.target_classes.min(classes - 1)).map(Some).collect(),
            _ => vec![None],
        };
        for (run, rank) in ranks.iter().enumerate() {
            for restart in 0..c.restarts {
                let rows = best.pending();
                if rows.is_empty() {
                    return Ok((best.tensor(dims, &device), Some(best.costs())));
                }
                let xs = select_rows(x.clone(), &rows);
                let ys = select_rows(labels.clone().without_autodiff(), &rows);
                let ts = rank.map(|r| Self::targets_of_rank(model, &xs, r));
                if ts.is_some() {
                    best.charge(&rows, 1);
                }
                let seed = mix_seed(&[c.seed, seed, run as u64, restart as u64]);
                let batch = Rows {
                    x: xs,
                    y: ys,
                    targets: ts,
                    rows,
                };
                self.run(&on_host, batch, eps, seed, &mut best)?;
            }
        }
        Ok((best.tensor(dims, &device), Some(best.costs())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::PgdConfig;
    use crate::losses::dlr_loss;
    use advrob_model::backend::on_test_backends;
    use advrob_model::{Mlp, MlpConfig};
    use burn::tensor::TensorData;

    fn setup(device: &burn::tensor::Device) -> (Mlp, Tensor<4>, Tensor<1, Int>, Vec<f32>) {
        let model = MlpConfig::new()
            .with_hidden(vec![16])
            .with_seed(3)
            .init(device)
            .expect("init");
        let x: Vec<f32> = (0..6 * 784)
            .map(|i| [0.0, 1.0, 0.35, 0.8, 0.5][i % 5])
            .collect();
        let images = Tensor::<4>::from_data(TensorData::new(x.clone(), [6, 1, 28, 28]), device);
        let labels =
            Tensor::<1, Int>::from_data(TensorData::new(vec![2i64, 5, 7, 0, 1, 9], [6]), device);
        (model, images, labels, x)
    }

    fn linf(a: &[f32], x: &[f32]) -> f32 {
        a.iter()
            .zip(x)
            .fold(0.0f32, |m, (p, q)| m.max((p - q).abs()))
    }

    #[test]
    fn dlr_matches_hand_computation() {
        on_test_backends(|device| {
            // logits sorted: 4 (class 1), 3 (class 0), 1 (class 2), 0 (class 3); label 0
            let z = Tensor::<2>::from_data(
                TensorData::new(vec![3.0f32, 4.0, 1.0, 0.0], [1, 4]),
                device,
            );
            let y = Tensor::<1, Int>::from_data(TensorData::new(vec![0i64], [1]), device);
            let d: f32 = dlr_loss(z.clone(), y.clone(), None).into_scalar();
            // −(3 − 4) / (4 − 1) = 1/3
            assert!((d - 1.0 / 3.0).abs() < 1e-6, "{d}");
            let t = Tensor::<1, Int>::from_data(TensorData::new(vec![2i64], [1]), device);
            let dt: f32 = dlr_loss(z, y, Some(t)).into_scalar();
            // −(3 − 1) / (4 − (1 + 0)/2) = −2 / 3.5
            assert!((dt + 2.0 / 3.5).abs() < 1e-6, "{dt}");
        });
    }

    #[test]
    fn every_loss_and_norm_keeps_the_budget_and_the_pixel_range() {
        on_test_backends(|device| {
            let (model, images, labels, x) = setup(device);
            for (norm, eps) in [(Norm::Linf, 0.1f32), (Norm::L2, 1.5)] {
                for loss in [ApgdLoss::CrossEntropy, ApgdLoss::Dlr, ApgdLoss::TargetedDlr] {
                    let attack = ApgdConfig {
                        norm,
                        loss,
                        steps: 12,
                        target_classes: 3,
                        ..ApgdConfig::default()
                    }
                    .check()
                    .expect("valid");
                    let adv = host(
                        attack
                            .perturb(&model, images.clone(), labels.clone(), f64::from(eps))
                            .expect("attack"),
                    )
                    .expect("host");
                    for (a, c) in adv.chunks(784).zip(x.chunks(784)) {
                        let n = match norm {
                            Norm::Linf => linf(a, c),
                            Norm::L2 => a
                                .iter()
                                .zip(c)
                                .map(|(p, q)| (p - q).powi(2))
                                .sum::<f32>()
                                .sqrt(),
                        };
                        assert!(n <= eps + 1e-4, "{}: {n}", attack.name());
                        assert!(a.iter().all(|p| (0.0..=1.0).contains(p)));
                    }
                }
            }
        });
    }

    #[test]
    fn attacks_on_a_cnn_keep_the_budget_and_the_pixel_range() {
        on_test_backends(|device| {
            let net = advrob_model::LenetConfig::new()
                .with_seed(5)
                .init(device)
                .expect("init");
            let (_, images, labels, x) = setup(device);
            let eps = 0.1;
            let attacks: Vec<Box<dyn Attack>> = vec![
                Box::new(crate::Fgsm::new()),
                Box::new(PgdConfig::linf(5).check().expect("pgd")),
                Box::new(
                    ApgdConfig {
                        steps: 10,
                        ..ApgdConfig::default()
                    }
                    .check()
                    .expect("apgd"),
                ),
                Box::new(
                    crate::SquareConfig {
                        queries: 30,
                        ..crate::SquareConfig::default()
                    }
                    .check()
                    .expect("square"),
                ),
                Box::new(
                    crate::FmnConfig {
                        steps: 10,
                        ..crate::FmnConfig::default()
                    }
                    .check()
                    .expect("fmn"),
                ),
            ];
            for a in attacks {
                let adv = host(
                    a.perturb(&net, images.clone(), labels.clone(), eps)
                        .expect("attack"),
                )
                .expect("host");
                for (ex, c) in adv.chunks(784).zip(x.chunks(784)) {
                    assert!(linf(ex, c) <= eps as f32 + 1e-6, "{}", a.name());
                    assert!(ex.iter().all(|p| (0.0..=1.0).contains(p)), "{}", a.name());
                }
            }
        });
    }

    #[test]
    fn apgd_is_at_least_as_strong_as_pgd_here() {
        on_test_backends(|device| {
            let (model, images, labels, _) = setup(device);
            let robust = |adv: Tensor<4>| -> i64 {
                model
                    .logits(adv)
                    .argmax(1)
                    .flatten::<1>(0, 1)
                    .equal(labels.clone())
                    .int()
                    .sum()
                    .into_scalar()
            };
            let eps = 0.05;
            let pgd = PgdConfig::linf(10).check().expect("pgd");
            let apgd = ApgdConfig::ce().check().expect("apgd");
            let apgd_t = ApgdConfig::targeted().check().expect("apgd-t");
            let r_pgd = robust(
                pgd.perturb(&model, images.clone(), labels.clone(), eps)
                    .expect("pgd"),
            );
            let r_apgd = robust(
                apgd.perturb(&model, images.clone(), labels.clone(), eps)
                    .expect("apgd"),
            );
            let r_t = robust(
                apgd_t
                    .perturb(&model, images.clone(), labels.clone(), eps)
                    .expect("t"),
            );
            assert!(r_apgd <= r_pgd, "APGD-CE leaves {r_apgd}, PGD-10 {r_pgd}");
            assert!(r_t <= r_pgd, "APGD-T leaves {r_t}, PGD-10 {r_pgd}");
        });
    }

    #[test]
    fn settings_are_checked_once_and_named() {
        assert!(
            ApgdConfig {
                steps: 0,
                ..ApgdConfig::default()
            }
            .check()
            .is_err()
        );
        let e = ApgdConfig {
            rho: 1.5,
            ..ApgdConfig::default()
        }
        .check()
        .expect_err("rho");
        assert!(e.to_string().contains("rho"));
        let t = ApgdConfig::targeted().check().expect("apgd-t");
        assert_eq!(t.name(), "apgd-t-100-top9");
        // its runs: 9 target classes × 1 restart; success is still any misclassification
        assert_eq!((t.info().restarts, t.info().targeted), (9, false));
    }
}
