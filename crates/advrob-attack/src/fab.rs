//! FAB-T: the targeted Fast Adaptive Boundary attack (Croce & Hein, ICML 2020), as AutoAttack's
//! standard version runs it (`fab-t`: 9 target classes, 100 iterations, one run per target, α_max
//! 0.1, η 1.05, β 0.9), in L∞ or L2.
//!
//! FAB looks for the adversarial point closest to the clean image. For each target class `t` (the
//! classes the model ranks 2nd to 10th on the clean image), it linearises the decision boundary
//! between the label `y` and `t` at the current iterate, `z_t − z_y ≈ f + ⟨∇, x' − x⟩ = 0`, and
//! projects both the iterate and the clean image onto that hyperplane inside the pixel box [0, 1]
//! (the minimal-norm projection of [`project_onto_hyperplane`]). The next iterate is a convex
//! combination of the two projections, overshot by η, biased towards the clean image by a weight
//! α ≤ α_max that grows with the distance of the iterate's projection. Whenever the iterate is
//! misclassified, the closest one so far is kept and the iterate is pulled back towards the clean
//! image by β. Success is any misclassification, not the target (as in AutoAttack). An example
//! counts as broken when the closest point found is within ε; otherwise its clean image is
//! returned, so the result is always within the budget.

use advrob_data::rng::SplitMix64;
use advrob_model::Classifier;
use advrob_model::simd::vectorized;
use burn::tensor::{Int, Tensor, TensorData};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::attack::{Attack, AttackConfig};
use crate::error::{AttackError, Result, check_eps};
use crate::grad::{AttackLoss, HostLoss, HostModel};
use crate::info::{AttackInfo, Family, Norm};
use crate::rows::{Ledger, host, host_int, mix_seed};

/// The settings of [`Fab`]; the defaults are AutoAttack's FAB-T in its standard version.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FabConfig {
    /// The norm the distance is measured in (and the budget's).
    pub norm: Norm,
    /// Iterations per target class and run.
    pub steps: usize,
    /// Runs per target class; the first from the clean image, the others from a random point at
    /// distance ε/2 (AutoAttack's standard version: 1).
    pub restarts: usize,
    /// Target classes: the model's 2nd, 3rd, … most likely classes on the clean image.
    pub targets: usize,
    /// The largest weight of the clean image's projection in a step.
    pub alpha_max: f64,
    /// Overshoot of each projection.
    pub eta: f64,
    /// How far an adversarial iterate is pulled back towards the clean image.
    pub beta: f64,
    /// Seed of the random starts.
    pub seed: u64,
}

impl Default for FabConfig {
    fn default() -> Self {
        Self {
            norm: Norm::Linf,
            steps: 100,
            restarts: 1,
            targets: 9,
            alpha_max: 0.1,
            eta: 1.05,
            beta: 0.9,
            seed: 0,
        }
    }
}

impl FabConfig {
    /// AutoAttack's FAB-T in `norm`.
    pub fn targeted(norm: Norm) -> Self {
        Self {
            norm,
            ..Self::default()
        }
    }

    /// Checks the settings once: at least one step, restart and target; α_max in [0, 1], η ≥ 1,
    /// β in (0, 1].
    pub fn check(self) -> Result<Fab> {
        let at_least_one = |field: &'static str, v: usize| {
            if v == 0 {
                Err(AttackError::Invalid {
                    field,
                    reason: "must be at least 1".into(),
                })
            } else {
                Ok(())
            }
        };
        at_least_one("steps", self.steps)?;
        at_least_one("restarts", self.restarts)?;
        at_least_one("targets", self.targets)?;
        let bad = |field: &'static str, v: f64, domain: &str| AttackError::Invalid {
            field,
            reason: format!("{v} is not {domain}"),
        };
        if !(0.0..=1.0).contains(&self.alpha_max) {
            return Err(bad("alpha_max", self.alpha_max, "in [0, 1]"));
        }
        if !(self.eta.is_finite() && self.eta >= 1.0) {
            return Err(bad("eta", self.eta, "at least 1"));
        }
        if !(self.beta > 0.0 && self.beta <= 1.0) {
            return Err(bad("beta", self.beta, "in (0, 1]"));
        }
        Ok(Fab(self))
    }
}

impl AttackConfig for FabConfig {
    fn build(&self) -> Result<Box<dyn Attack>> {
        Ok(Box::new(self.check()?))
    }
}

/// The closest misclassified point a run found for one example and its distance, if any.
type Closest = Option<(Vec<f32>, f32)>;

/// FAB-T with checked settings ([`FabConfig::check`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Fab(FabConfig);

/// Lanes of the split sums below: sixteen independent accumulators, which the compiler keeps in
/// one AVX-512 register or two AVX ones (a float sum in one accumulator is a chain of dependent
/// additions, which it may not reorder); the sums are the same on every CPU.
const LANES: usize = 16;

/// `⟨a, b⟩` in [`LANES`] interleaved partial sums, added up at the end.
#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let ((a, a_tail), (b, b_tail)) = (a[..n].as_chunks::<LANES>(), b[..n].as_chunks::<LANES>());
    let mut acc = [0.0f32; LANES];
    for (a, b) in a.iter().zip(b) {
        for l in 0..LANES {
            acc[l] += a[l] * b[l];
        }
    }
    let tail: f32 = a_tail.iter().zip(b_tail).map(|(a, b)| a * b).sum();
    acc.iter().sum::<f32>() + tail
}

/// `Σ v` in [`dot`]'s order.
#[inline(always)]
fn sum(v: &[f32]) -> f32 {
    let (whole, tail) = v.as_chunks::<LANES>();
    let mut acc = [0.0f32; LANES];
    for c in whole {
        for l in 0..LANES {
            acc[l] += c[l];
        }
    }
    acc.iter().sum::<f32>() + tail.iter().sum::<f32>()
}

/// The norm of a row.
#[inline(always)]
fn norm_of(norm: Norm, v: &[f32]) -> f32 {
    match norm {
        Norm::Linf => {
            let mut m = [0.0f32; LANES];
            let (whole, tail) = v.as_chunks::<LANES>();
            for c in whole {
                for (m, x) in m.iter_mut().zip(c) {
                    *m = m.max(x.abs());
                }
            }
            tail.iter().chain(&m).fold(0.0f32, |m, d| m.max(d.abs()))
        }
        Norm::L2 => dot(v, v).sqrt(),
    }
}

/// How coordinate `i` of `t` moves towards the hyperplane, for `w_i` turned by `sign`: its
/// turned weight, its room in the box (to 1 where the weight is negative, else to 0) and its rate
/// `m_i` (1 in L∞, `|w_i|` in L2).
#[inline(always)]
fn mover(norm: Norm, w: f32, t: f32, sign: f32) -> (f32, f32, f32) {
    let wi = w * sign;
    let room = if wi < 0.0 { 1.0 - t } else { t };
    let m = match norm {
        Norm::Linf => 1.0,
        Norm::L2 => wi.abs(),
    };
    (wi, room, m)
}

/// Scratch space of [`project_onto_hyperplane`] for rows of one size, kept across calls: each
/// coordinate's breakpoint, rate of `⟨w, x⟩` while it moves, and change of `⟨w, x⟩` once capped.
#[derive(Debug, Default)]
struct Projector {
    breakpoint: Vec<f32>,
    rate: Vec<f32>,
    capped: Vec<f32>,
}

/// Newton steps [`Projector::project`] takes before it sorts the breakpoints instead (a step
/// passes at least one breakpoint; on the PGD-trained MLP's FAB-T, 2.4 steps per projection on
/// average, and 1 of 1.46 million projections fell back to the sort).
const NEWTON_STEPS: usize = 32;

impl Projector {
    /// `g(λ) = capped + λ · free` on the piece of λ: the sums over the coordinates whose
    /// breakpoint is at most λ (capped) and the others (moving), and how many are capped.
    #[inline(always)]
    fn piece(&self, lambda: f32) -> (f32, f32, usize) {
        let (bp, bp_tail) = self.breakpoint.as_chunks::<LANES>();
        let (rate, rate_tail) = self.rate.as_chunks::<LANES>();
        let (cap, cap_tail) = self.capped.as_chunks::<LANES>();
        let (mut capped, mut free, mut count) = ([0.0f32; LANES], [0.0f32; LANES], [0u32; LANES]);
        for ((bp, rate), cap) in bp.iter().zip(rate).zip(cap) {
            for l in 0..LANES {
                let below = bp[l] <= lambda;
                // the sums of a select, as products with 0 or 1 (exact), which vectorise to
                // registers where the select kept its sums in memory
                let m = if below { 1.0f32 } else { 0.0 };
                capped[l] += cap[l] * m;
                free[l] += rate[l] - rate[l] * m;
                // wrapping: the dev profile's overflow check would keep the loop from vectorising
                count[l] = count[l].wrapping_add(u32::from(below));
            }
        }
        let (mut c, mut f) = (capped.iter().sum::<f32>(), free.iter().sum::<f32>());
        let mut k: usize = count.iter().map(|&v| v as usize).sum();
        for ((&bp, &rate), &cap) in bp_tail.iter().zip(rate_tail).zip(cap_tail) {
            if bp <= lambda {
                c += cap;
                k += 1;
            } else {
                f += rate;
            }
        }
        (c, f, k)
    }

    /// [`project_onto_hyperplane`] with this scratch space.
    #[inline(always)]
    fn project(&mut self, norm: Norm, t: &[f32], w: &[f32], b: f32, out: &mut [f32]) {
        let n = t.len();
        let c = dot(w, t) - b;
        // the distance to go, in ⟨w, x⟩, after turning w so that it has to fall
        let sign = if c >= 0.0 { 1.0f32 } else { -1.0 };
        let need = c * sign;
        for v in [&mut self.breakpoint, &mut self.rate, &mut self.capped] {
            v.clear();
            v.resize(n, 0.0);
        }
        // coordinate i moves by min(λ m_i, p_i) (room p_i, m_i = 1 in L∞ and |w_i| in L2):
        // breakpoint p_i / m_i, rate |w_i| m_i, capped |w_i| p_i; nothing where w_i = 0
        let rows = (self.breakpoint.iter_mut())
            .zip(self.rate.iter_mut())
            .zip(self.capped.iter_mut());
        for (((bp, rate), cap), (&w, &t)) in rows.zip(w.iter().zip(t)) {
            let (wi, room, m) = mover(norm, w, t, sign);
            *bp = if wi != 0.0 { room / m } else { 0.0 };
            *rate = wi.abs() * m;
            *cap = wi.abs() * room;
        }
        let lambda = if need <= 0.0 {
            0.0
        } else if sum(&self.capped) < need {
            // the box does not reach the hyperplane: every coordinate to its end
            f32::INFINITY
        } else {
            self.solve(need)
        };
        for (out, (&w, &t)) in out.iter_mut().zip(w.iter().zip(t)) {
            let (wi, room, m) = mover(norm, w, t, sign);
            // the direction that lowers sign · ⟨w, x⟩: against the sign of sign · w_i
            let dir = if wi < 0.0 { 1.0 } else { -1.0 };
            *out = if wi == 0.0 {
                0.0
            } else {
                dir * (lambda * m).min(room)
            };
        }
    }

    /// λ with `g(λ) = need`, where `g` (concave, piecewise linear, increasing) reaches `need`:
    /// Newton's method from λ = 0. On a concave function each step lands at or left of the root,
    /// past at least one breakpoint, and the step from the root's own piece lands on it; the
    /// piece is the root's once a step leaves the capped set as it was, the sums then the same
    /// to the bit. If rounding keeps it from settling, the breakpoints are sorted and walked.
    #[inline(always)]
    fn solve(&self, need: f32) -> f32 {
        let (mut capped, mut free, mut count) = self.piece(0.0);
        for _ in 0..NEWTON_STEPS {
            if free <= 0.0 {
                break;
            }
            let next = ((need - capped) / free).max(0.0);
            let (c2, f2, n2) = self.piece(next);
            if n2 == count {
                return next;
            }
            (capped, free, count) = (c2, f2, n2);
        }
        self.walk_sorted(need)
    }

    /// λ by a walk over the breakpoints in ascending order: the first one at which `g` reaches
    /// `need` brackets it.
    #[inline(never)]
    fn walk_sorted(&self, need: f32) -> f32 {
        let mut order: Vec<usize> = (0..self.breakpoint.len())
            .filter(|&i| self.rate[i] > 0.0)
            .collect();
        order.sort_unstable_by(|&i, &j| self.breakpoint[i].total_cmp(&self.breakpoint[j]));
        let mut capped = 0.0f32;
        let mut free: f32 = order.iter().map(|&i| self.rate[i]).sum();
        for &i in &order {
            if capped + self.breakpoint[i] * free >= need {
                return ((need - capped) / free).max(0.0);
            }
            capped += self.capped[i];
            free -= self.rate[i];
        }
        f32::INFINITY
    }
}

/// The smallest `d` in `norm` (L∞ or L2) with `⟨w, t + d⟩ = b` and `t + d` in the box [0, 1],
/// written to `out`; where the box does not reach the hyperplane, the box's corner closest to it
/// (the largest move towards it in every coordinate). Coordinates with `w = 0` do not move.
///
/// Moving towards the hyperplane, coordinate `i` goes by `min(λ·m_i, p_i)` in the direction that
/// lowers `sign · ⟨w, x⟩`, where `p_i` is its room in the box and `m_i` is 1 for L∞ (every
/// coordinate moves by the same amount until its room runs out) and `|w_i|` for L2 (the move is
/// along `w`, clipped by the box, as the KKT conditions of the L2 problem give). The change of
/// `⟨w, x⟩`, `g(λ)`, is concave, piecewise linear and increasing in λ, with breakpoints `p_i /
/// m_i`: λ is found by Newton's method on it, a few passes over the row instead of a sort. This
/// is the projection of AutoAttack's `projection_linf` (there by a bisection over the sorted
/// breakpoints) and `projection_l2`.
pub fn project_onto_hyperplane(norm: Norm, t: &[f32], w: &[f32], b: f32, out: &mut [f32]) {
    Projector::default().project(norm, t, w, b, out);
}

impl Fab {
    /// The settings.
    pub fn config(&self) -> &FabConfig {
        &self.0
    }

    /// One run towards `targets` on the clean rows `x0` (labels `y`), from `x0` or a random point
    /// at distance ε/2: the closest misclassified point found and its distance per row
    /// (`None` when none was found); per row, the passes (forward 1, forward and backward 2) up to
    /// the first point found within `eps`; and the passes of the whole run, the same for every row.
    #[allow(clippy::too_many_arguments)]
    fn run(
        &self,
        model: &HostModel<'_>,
        x0: &[f32],
        image: [usize; 3],
        y: &[i64],
        targets: &[i64],
        (eps, random_start): (f64, Option<(f64, u64)>),
    ) -> Result<(Vec<Closest>, Vec<Option<u64>>, u64)> {
        let c = &self.0;
        let n = y.len();
        let size: usize = image.iter().product();
        let dims = [n, image[0], image[1], image[2]];
        let mut x1 = x0.to_vec();
        if let Some((eps, seed)) = random_start {
            for (j, row) in x1.chunks_mut(size).enumerate() {
                let mut rng = SplitMix64::new(mix_seed(&[seed, j as u64]));
                let t: Vec<f64> = match c.norm {
                    Norm::Linf => (0..size).map(|_| rng.next_f64() * 2.0 - 1.0).collect(),
                    Norm::L2 => (0..size).map(|_| rng.gaussian()).collect(),
                };
                let scale = match c.norm {
                    Norm::Linf => t.iter().fold(0.0f64, |m, v| m.max(v.abs())),
                    Norm::L2 => t.iter().map(|v| v * v).sum::<f64>().sqrt(),
                }
                .max(1e-12);
                for (x, t) in row.iter_mut().zip(&t) {
                    *x = (f64::from(*x) + eps * t / scale * 0.5).clamp(0.0, 1.0) as f32;
                }
            }
        }
        // z_t − z_y: positive once the target beats the label
        let diff = HostLoss::Difference { labels: y, targets };
        let mut best: Vec<Closest> = vec![None; n];
        let mut within_at: Vec<Option<u64>> = vec![None; n];
        let mut spent = 0u64;
        let (alpha_max, eta, beta) = (c.alpha_max as f32, c.eta as f32, c.beta as f32);
        // the last step's gradient, whose memory the next one's takes
        let mut spare = Vec::new();
        // Where the model's first layer is an affine function of the pixels (an MLP on the
        // host), its outputs before ReLU move with the iterates: the pull-back towards the
        // clean image is an affine combination of two images, so it moves these outputs by the
        // same combination instead of a product over the pixels. `clean` is the clean images'
        // outputs; `first` the iterates' (recomputed from the pixels at every step, so the
        // combination's rounding never carries past one pull-back).
        let clean = model.first(x0, n);
        let mut first = match (&clean, random_start) {
            (Some(_), Some(_)) => model.first(&x1, n),
            (clean, _) => clean.clone(),
        };
        for _ in 0..c.steps {
            let kept = std::mem::take(&mut spare);
            let p = match &first {
                Some(first) => model.pass_from_first(first, n, &diff, true, kept)?,
                None => model.pass_into(&x1, dims, &diff, true, kept)?,
            };
            spent += 2;
            let g = p.grad.ok_or(AttackError::NoGradient)?;
            // every iterate at its clean image with a zero gradient (a masked model): both
            // projections are zero, the step leaves the iterates where they are (up to the
            // rounding of x·(1 − α) + x·α) and every later iteration repeats this one
            if x1 == x0 && g.iter().all(|v| *v == 0.0) {
                break;
            }
            x1.par_chunks_mut(size)
                .zip(x0.par_chunks(size))
                .zip(g.par_chunks(size))
                .zip(p.loss.par_iter())
                .for_each_init(
                    || (Projector::default(), vec![0.0f32; size], vec![0.0f32; size]),
                    |(projector, d1, d2), (((x1, x0), w), &f)| {
                        // the row's passes compiled for the CPU's widest vectors; the numbers
                        // are the same on every CPU
                        vectorized(
                            #[inline(always)]
                            || {
                                // the boundary's linearisation at x1: ⟨w, x⟩ = ⟨w, x1⟩ − f
                                let b = dot(w, x1) - f;
                                projector.project(c.norm, x1, w, b, d1);
                                projector.project(c.norm, x0, w, b, d2);
                                let a1 = norm_of(c.norm, d1).max(1e-8);
                                let a2 = norm_of(c.norm, d2).max(1e-8);
                                let alpha = (a1 / (a1 + a2)).max(0.0).min(alpha_max);
                                let rows = x1.iter_mut().zip(x0).zip(d1.iter()).zip(d2.iter());
                                for (((x, x0), d1), d2) in rows {
                                    *x = ((*x + eta * d1) * (1.0 - alpha)
                                        + (x0 + eta * d2) * alpha)
                                        .clamp(0.0, 1.0);
                                }
                            },
                        )
                    },
                );
            let pred = match first.as_mut() {
                Some(first) => {
                    *first = model.first(&x1, n).ok_or(AttackError::NoGradient)?;
                    model
                        .predict_from_first(first, n)
                        .ok_or(AttackError::NoGradient)?
                }
                None => model.pass(&x1, dims, &diff, false)?.pred,
            };
            spent += 1;
            if let (Some(first), Some(clean)) = (first.as_mut(), &clean) {
                // the misclassified rows' pull-back below, on the first layer's outputs
                let width = first.len() / n.max(1);
                first
                    .par_chunks_mut(width)
                    .zip(clean.par_chunks(width))
                    .zip(pred.par_iter().zip(y))
                    .filter(|(_, (p, y))| p != y)
                    .for_each(|((f, f0), _)| {
                        for (v, v0) in f.iter_mut().zip(f0) {
                            *v = v0 + (*v - v0) * beta;
                        }
                    });
            }
            // each misclassified row: kept if closer than the row's best, then pulled back
            // towards its clean image by β
            x1.par_chunks_mut(size)
                .zip(x0.par_chunks(size))
                .zip(best.par_iter_mut())
                .zip(within_at.par_iter_mut())
                .zip(pred.par_iter().zip(y))
                .filter(|(_, (p, y))| p != y)
                .for_each_init(
                    || vec![0.0f32; size],
                    |delta, ((((x1, x0), best), within_at), _)| {
                        for ((d, a), b) in delta.iter_mut().zip(x1.iter()).zip(x0) {
                            *d = a - b;
                        }
                        let dist = norm_of(c.norm, delta);
                        match best {
                            Some((kept, d)) if dist < *d => {
                                kept.copy_from_slice(x1);
                                *d = dist;
                            }
                            Some(_) => {}
                            None => *best = Some((x1.to_vec(), dist)),
                        }
                        if f64::from(dist) <= eps && within_at.is_none() {
                            *within_at = Some(spent);
                        }
                        for (x, (d, x0)) in x1.iter_mut().zip(delta.iter().zip(x0)) {
                            *x = x0 + d * beta;
                        }
                    },
                );
            spare = g;
        }
        Ok((best, within_at, spent))
    }
}

impl Attack for Fab {
    fn name(&self) -> String {
        let c = &self.0;
        let norm = match c.norm {
            Norm::Linf => "",
            Norm::L2 => "-l2",
        };
        let mut n = format!("fab{norm}-t-{}-top{}", c.steps, c.targets);
        if c.restarts > 1 {
            n.push_str(&format!("x{}", c.restarts));
        }
        n
    }

    fn info(&self) -> AttackInfo {
        let c = &self.0;
        AttackInfo {
            // it follows the logit difference of each target, no loss of the labels
            loss: None,
            restarts: c.restarts * c.targets,
            ..AttackInfo::white_box(Family::Fab, c.norm, AttackLoss::Margin, c.steps)
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
        let x_dev = images.without_autodiff();
        let dims = x_dev.dims();
        let [b, ch, h, w] = dims;
        let size = ch * h * w;
        let device = x_dev.device();
        let logits = host(model.logits(x_dev.clone()))?;
        let x = host(x_dev)?;
        let y = host_int(labels.without_autodiff())?;
        let classes = logits.len() / b.max(1);
        let on_host = HostModel::new(model, &device);
        // the classes of each example from the most likely down, on the clean image
        let ranked: Vec<Vec<i64>> = logits
            .chunks(classes.max(1))
            .map(|z| {
                let mut order: Vec<usize> = (0..z.len()).collect();
                order.sort_by(|&i, &j| z[j].total_cmp(&z[i]).then(i.cmp(&j)));
                order.into_iter().map(|i| i as i64).collect()
            })
            .collect();
        let mut robust: Vec<bool> = (0..b).map(|j| ranked[j][0] == y[j]).collect();
        let mut out = x.clone();
        // the clean forward pass, then every run's passes on the rows it attacked
        let mut ledger = Ledger::new(b);
        (0..b).for_each(|j| ledger.charge(j, 1));
        if eps == 0.0 {
            return Ok((
                Tensor::from_data(TensorData::new(out, dims), &device),
                Some(ledger.costs()),
            ));
        }
        // the k-th most likely class of each example, k = 1 (the second) up
        for k in 1..=c.targets.min(classes.saturating_sub(1)) {
            let target: Vec<i64> = ranked.iter().map(|order| order[k]).collect();
            for restart in 0..c.restarts {
                let rows: Vec<usize> = (0..b).filter(|&j| robust[j]).collect();
                if rows.is_empty() {
                    break;
                }
                let x0: Vec<f32> = rows
                    .iter()
                    .flat_map(|&j| x[j * size..(j + 1) * size].iter().copied())
                    .collect();
                let yr: Vec<i64> = rows.iter().map(|&j| y[j]).collect();
                let tr: Vec<i64> = rows.iter().map(|&j| target[j]).collect();
                let start = (restart > 0)
                    .then(|| (eps, mix_seed(&[c.seed, seed, k as u64, restart as u64])));
                let (found, within_at, run_spent) =
                    self.run(&on_host, &x0, [ch, h, w], &yr, &tr, (eps, start))?;
                for ((&j, f), at) in rows.iter().zip(found).zip(within_at) {
                    if let Some((adv, dist)) = f
                        && f64::from(dist) <= eps
                    {
                        robust[j] = false;
                        out[j * size..(j + 1) * size].copy_from_slice(&adv);
                    }
                    if let Some(at) = at {
                        ledger.succeed(j, at);
                    }
                    ledger.charge(j, run_spent);
                }
            }
        }
        Ok((
            Tensor::from_data(TensorData::new(out, dims), &device),
            Some(ledger.costs()),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use advrob_model::MlpConfig;
    use advrob_model::backend::on_test_backends;

    /// The smallest distance to the hyperplane inside the box, by brute force on a grid of λ.
    fn brute(norm: Norm, t: &[f32], w: &[f32], b: f32) -> f32 {
        let c: f32 = w.iter().zip(t).map(|(w, t)| w * t).sum::<f32>() - b;
        let mut best = f32::INFINITY;
        // along the optimal family: every coordinate moved by min(λ m_i, room_i)
        for step in 0..=200_000 {
            let lambda = step as f32 * 1e-5;
            let d: Vec<f32> = w
                .iter()
                .zip(t)
                .map(|(&wi, &ti)| {
                    let wi = wi * c.signum();
                    if wi == 0.0 {
                        return 0.0;
                    }
                    let room = if wi < 0.0 { 1.0 - ti } else { ti };
                    let rate = if norm == Norm::Linf { 1.0 } else { wi.abs() };
                    let dir = if wi < 0.0 { 1.0 } else { -1.0 };
                    dir * (lambda * rate).min(room)
                })
                .collect();
            let v: f32 = w
                .iter()
                .zip(t.iter().zip(&d))
                .map(|(w, (t, d))| w * (t + d))
                .sum();
            if (v - b).abs() < 2e-4 {
                best = best.min(norm_of(norm, &d));
            }
        }
        best
    }

    #[test]
    fn the_projection_lands_on_the_hyperplane_in_the_box_at_the_least_distance() {
        let t = [0.2f32, 0.9, 0.5, 0.0, 0.7];
        let w = [1.0f32, -2.0, 0.5, 0.0, 3.0];
        for norm in [Norm::Linf, Norm::L2] {
            for b in [-1.5f32, -0.4, 0.3, 2.9] {
                let mut d = [0.0f32; 5];
                project_onto_hyperplane(norm, &t, &w, b, &mut d);
                let x: Vec<f32> = t.iter().zip(&d).map(|(t, d)| t + d).collect();
                assert!(x.iter().all(|v| (-1e-6..=1.0 + 1e-6).contains(v)), "{x:?}");
                assert_eq!(d[3], 0.0, "w = 0 does not move");
                let v: f32 = w.iter().zip(&x).map(|(w, x)| w * x).sum();
                assert!((v - b).abs() < 1e-5, "{norm:?} b {b}: ⟨w, x⟩ = {v}");
                let found = norm_of(norm, &d);
                let least = brute(norm, &t, &w, b);
                assert!(
                    (found - least).abs() < 1e-3,
                    "{norm:?} b {b}: {found} vs {least}"
                );
            }
            // out of the box's reach: the closest corner
            let mut d = [0.0f32; 5];
            project_onto_hyperplane(norm, &t, &w, 10.0, &mut d);
            let x: Vec<f32> = t.iter().zip(&d).map(|(t, d)| t + d).collect();
            assert_eq!(x, [1.0, 0.0, 1.0, 0.0, 1.0], "{norm:?}");
        }
        // L∞ against a hand computation: ⟨(1, 1), x⟩ from 0.4 to 1.0 moves both by 0.3
        let mut d = [0.0f32; 2];
        project_onto_hyperplane(Norm::Linf, &[0.2, 0.2], &[1.0, 1.0], 1.0, &mut d);
        assert!(
            (d[0] - 0.3).abs() < 1e-6 && (d[1] - 0.3).abs() < 1e-6,
            "{d:?}"
        );
        // …from 1.1 to 1.6 with the first one's room 0.1: it stops at 1, the second goes by 0.4
        project_onto_hyperplane(Norm::Linf, &[0.9, 0.2], &[1.0, 1.0], 1.6, &mut d);
        assert!(
            (d[0] - 0.1).abs() < 1e-6 && (d[1] - 0.4).abs() < 1e-6,
            "{d:?}"
        );
    }

    #[test]
    fn newton_finds_the_lambda_of_the_sorted_walk() {
        // rows like a digit's: most pixels at 0 or 1 (tied breakpoints 0 and 1), some between,
        // a gradient with zeros; hyperplanes near and far
        let mut rng = SplitMix64::new(11);
        let mut p = Projector::default();
        let mut out = vec![0.0f32; 300];
        let mut solved = 0;
        for case in 0..400 {
            let t: Vec<f32> = (0..300)
                .map(|_| match rng.next_f64() {
                    u if u < 0.5 => 0.0,
                    u if u < 0.7 => 1.0,
                    _ => rng.next_f64() as f32,
                })
                .collect();
            let w: Vec<f32> = (0..300)
                .map(|_| {
                    if rng.next_f64() < 0.1 {
                        0.0
                    } else {
                        rng.gaussian() as f32
                    }
                })
                .collect();
            let norm = if case % 2 == 0 { Norm::Linf } else { Norm::L2 };
            let at = dot(&w, &t);
            let b = at + (rng.next_f64() as f32 - 0.5) * 40.0;
            p.project(norm, &t, &w, b, &mut out);
            let need = (at - b).abs();
            if need > 0.0 && sum(&p.capped) >= need {
                let (newton, walk) = (p.solve(need), p.walk_sorted(need));
                assert!(
                    (newton - walk).abs() <= 1e-5 * walk.max(1.0),
                    "case {case}: {newton} against {walk}"
                );
                solved += 1;
            }
        }
        assert!(solved > 200, "{solved} cases within the box's reach");
    }

    #[test]
    fn fab_t_stays_within_its_budget_and_finds_the_boundary_of_a_linear_region() {
        on_test_backends(|device| {
            let mlp = MlpConfig::new()
                .with_hidden(vec![32])
                .with_seed(7)
                .init(device)
                .expect("mlp");
            let x: Vec<f32> = (0..6 * 784)
                .map(|i| ((i * 37) % 101) as f32 / 100.0)
                .collect();
            let images = Tensor::<4>::from_data(TensorData::new(x.clone(), [6, 1, 28, 28]), device);
            let labels = mlp.logits(images.clone()).argmax(1).flatten::<1>(0, 1);
            for norm in [Norm::Linf, Norm::L2] {
                let eps = if norm == Norm::Linf { 0.1 } else { 2.0 };
                let fab = FabConfig {
                    steps: 30,
                    targets: 3,
                    ..FabConfig::targeted(norm)
                }
                .check()
                .expect("fab");
                let adv = fab
                    .perturb_seeded(&mlp, images.clone(), labels.clone(), eps, 1)
                    .expect("fab");
                let a = host(adv.clone()).expect("host");
                assert!(a.iter().all(|v| (0.0..=1.0).contains(v)));
                let pred = host_int(mlp.logits(adv).argmax(1).flatten::<1>(0, 1)).expect("pred");
                let y = host_int(labels.clone()).expect("labels");
                let mut broken = 0;
                for (j, (row, clean)) in a.chunks(784).zip(x.chunks(784)).enumerate() {
                    let d: Vec<f32> = row.iter().zip(clean).map(|(a, b)| a - b).collect();
                    let dist = norm_of(norm, &d);
                    assert!(f64::from(dist) <= eps + 1e-6, "{norm:?}: {dist} > {eps}");
                    if pred[j] != y[j] {
                        broken += 1;
                        assert!(dist > 0.0);
                    } else {
                        assert_eq!(dist, 0.0, "a robust example keeps its clean image");
                    }
                }
                assert!(broken >= 4, "{norm:?}: {broken} of 6 broken");
            }
        });
    }

    #[test]
    fn fab_t_cannot_follow_a_quantised_model_and_returns_clean_images() {
        on_test_backends(|device| {
            let (model, images, labels, x) = crate::testing::quantised_mlp(device, 4);
            let fab = FabConfig {
                steps: 10,
                targets: 2,
                ..FabConfig::default()
            }
            .check()
            .expect("fab");
            let adv = fab
                .perturb_seeded(&model, images, labels, 0.3, 0)
                .expect("fab");
            assert_eq!(host(adv).expect("host"), x, "zero gradients: nothing moves");
        });
    }

    #[test]
    fn bad_settings_are_refused_by_name() {
        for (c, field) in [
            (
                FabConfig {
                    steps: 0,
                    ..FabConfig::default()
                },
                "steps",
            ),
            (
                FabConfig {
                    targets: 0,
                    ..FabConfig::default()
                },
                "targets",
            ),
            (
                FabConfig {
                    eta: 0.5,
                    ..FabConfig::default()
                },
                "eta",
            ),
            (
                FabConfig {
                    beta: 0.0,
                    ..FabConfig::default()
                },
                "beta",
            ),
            (
                FabConfig {
                    alpha_max: 1.5,
                    ..FabConfig::default()
                },
                "alpha_max",
            ),
        ] {
            let e = c.check().expect_err(field);
            assert!(e.to_string().contains(field), "{e}");
        }
        assert_eq!(Fab(FabConfig::default()).name(), "fab-t-100-top9");
        let info = Fab(FabConfig::default()).info();
        assert_eq!(
            (info.family, info.restarts, info.targeted, info.loss),
            (Family::Fab, 9, false, None)
        );
    }
}
