//! The Square attack (Andriushchenko, Croce, Flammarion, Hein 2020), L∞: a score-based black-box
//! attack. It never asks for a gradient, only for the model's logits, so masked gradients do not
//! stop it — the check that catches masking no gradient attack can.
//!
//! Each example starts from vertical stripes of ±ε (each channel its own); each query redraws one
//! square window of the perturbation to ±ε, in every channel with a sign of its own as AutoAttack
//! draws them, and keeps it when the margin `z_y − max_{j≠y} z_j` drops. The window's side
//! shrinks along the paper's schedule of `p` (the share of pixels it covers), counted in queries
//! as AutoAttack runs it (`resc_schedule=False`) or, as an option, rescaled to the query budget.

use advrob_data::rng::SplitMix64;
use advrob_model::simd::vectorized;
use advrob_model::{AffineFirst, Classifier, Dense};
use burn::tensor::{Int, Tensor, TensorData};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::attack::{Attack, AttackConfig};
use crate::error::{AttackError, Result, check_eps};
use crate::grad::{AttackLoss, per_example_loss};
use crate::info::{Access, AttackInfo, Family, Norm};
use crate::rows::{Ledger, host, host_int, mix_seed};

/// The settings of [`Square`]; the defaults are AutoAttack's (5000 queries, p = 0.8, one restart,
/// the schedule not rescaled).
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
    /// Rescale the schedule of `p` to the query budget, as the paper's code can
    /// (`rescale_schedule=True`); AutoAttack runs it unscaled, so that with 5000 queries the
    /// window stops shrinking at `p_init / 128`.
    pub rescale_schedule: bool,
}

impl Default for SquareConfig {
    fn default() -> Self {
        Self {
            queries: 5000,
            p_init: 0.8,
            restarts: 1,
            seed: 0,
            rescale_schedule: false,
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
///
/// On a model with an affine first layer ([`Classifier::affine_first`]: the MLPs, deployed or
/// not) a query updates the first layer's outputs by the window's pixels only and runs the rest
/// of the network; an accepted query's outputs are then recomputed from all pixels, so rounding
/// never accumulates. The queries drawn are the same either way.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Square(SquareConfig);

/// The share of pixels a window covers at query `i` of `n`: the paper's schedule, halving `p` at
/// queries 10, 50, 200, 500, 1000, 2000, 4000, 6000 and 8000 — of the budget rescaled to 10,000
/// queries when `rescale`, else as they come (AutoAttack's).
pub fn p_schedule(p_init: f64, i: usize, n: usize, rescale: bool) -> f64 {
    let it = if rescale {
        (i as f64 / n as f64 * 10_000.0) as usize
    } else {
        i
    };
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

/// The side of a window covering the share `p` of an `h × w` image: at least 1 and, as in the
/// reference, at most `min(h, w) − 1`.
fn window_side(p: f64, h: usize, w: usize) -> usize {
    let s = (p * (h * w) as f64).sqrt().round() as usize;
    s.min(h.min(w).saturating_sub(1)).max(1)
}

/// The most channels an image may have: a window's signs are the bits of one `u64`.
pub const MAX_CHANNELS: usize = 64;

/// One query's change: the `side × side` window at (`top`, `left`) set to clean ± ε in every
/// channel, channel `c` with the sign of bit `c` of `signs` (set: +ε).
struct Window {
    top: usize,
    left: usize,
    side: usize,
    signs: u64,
}

impl Window {
    /// A window of side `s` at a random place (corners drawn as the reference draws them, in
    /// `[0, h − s)` × `[0, w − s)`), with a random sign per channel (one draw for the
    /// `channels` bits, so one-channel images draw what they always drew).
    fn draw(rng: &mut SplitMix64, [c, h, w]: [usize; 3], s: usize) -> Self {
        let top = rng.below(h.saturating_sub(s).max(1) as u64) as usize;
        let left = rng.below(w.saturating_sub(s).max(1) as u64) as usize;
        let signs = rng.next_u64() & channel_mask(c);
        Self {
            top,
            left,
            side: s,
            signs,
        }
    }

    /// `f(k, value)` for each pixel `k` it covers, channel by channel and row by row, with its
    /// new value, in an image `[c, h, w]` (plain loops, inlined into the caller's vectorised
    /// loop).
    #[inline(always)]
    fn each_pixel(
        &self,
        clean: &[f32],
        [c, h, w]: [usize; 3],
        eps: f32,
        mut f: impl FnMut(usize, f32),
    ) {
        let (top, left, side) = (self.top, self.left, self.side);
        for ch in 0..c {
            let step = if self.signs >> ch & 1 == 1 { eps } else { -eps };
            let plane = ch * h * w;
            for r in top..top + side {
                let at = plane + r * w + left;
                for (i, &x) in clean[at..at + side].iter().enumerate() {
                    f(at + i, (x + step).clamp(0.0, 1.0));
                }
            }
        }
    }
}

/// The low `c` bits set.
fn channel_mask(c: usize) -> u64 {
    if c >= 64 { u64::MAX } else { (1u64 << c) - 1 }
}

/// One example under attack: its clean pixels, its best query, that query's margin and, on the
/// incremental path, the first layer's outputs for it.
struct Example {
    row: usize,
    clean: Vec<f32>,
    best: Vec<f32>,
    margin: f32,
    first: Vec<f32>,
    rng: SplitMix64,
    /// Forward passes of this run on the example so far (its start's included).
    queries: u64,
}

/// How the queries are scored: the whole model, or its head after an updated first layer.
struct Scorer<'m> {
    model: &'m dyn Classifier,
    split: Option<AffineFirst<'m>>,
    /// The model's dense chain on the host, where it computes the device's numbers to the bit
    /// (burn-ndarray): the head after the first layer runs there.
    chain: Option<Dense<'m>>,
    /// `[channels, rows, columns]` of an image.
    image: [usize; 3],
    device: burn::tensor::Device,
}

impl Scorer<'_> {
    /// Margins `z_y − max_{j≠y} z_j` of the logits `[n, classes]`.
    fn margins(logits: Tensor<2>, labels: &[i64]) -> Result<Vec<f32>> {
        let device = logits.device();
        let y =
            Tensor::<1, Int>::from_data(TensorData::new(labels.to_vec(), [labels.len()]), &device);
        // the margin loss is max_{j≠y} z_j − z_y: its negation
        Ok(host(per_example_loss(logits, y, AttackLoss::Margin))?
            .into_iter()
            .map(|m| -m)
            .collect())
    }

    /// Margins of whole images, one after another in `images`; with a split, also the first
    /// layer's outputs of each.
    fn score(&self, images: &[f32], labels: &[i64]) -> Result<(Vec<f32>, Vec<Vec<f32>>)> {
        let n = labels.len();
        let size: usize = self.image.iter().product();
        match &self.split {
            Some(f) => {
                let first: Vec<Vec<f32>> = images.chunks(size).map(|x| f.first(x)).collect();
                let margins = self.head(f, &first.concat(), labels)?;
                Ok((margins, first))
            }
            None => {
                let [c, h, w] = self.image;
                let x = Tensor::<4>::from_data(
                    TensorData::new(images.to_vec(), [n, c, h, w]),
                    &self.device,
                );
                Ok((Self::margins(self.model.logits(x), labels)?, vec![]))
            }
        }
    }

    /// The margins of the rest of the model on first-layer outputs `first` (`[n, outputs]`).
    fn head(&self, f: &AffineFirst<'_>, first: &[f32], labels: &[i64]) -> Result<Vec<f32>> {
        if let Some(chain) = &self.chain {
            let z = chain.head(first, labels.len());
            let classes = z.len() / labels.len().max(1);
            // −(max_{j≠y} z_j − z_y), as the margin loss on the tensor computes it
            return Ok(z
                .chunks(classes.max(1))
                .zip(labels)
                .map(|(row, &y)| {
                    let other = row
                        .iter()
                        .enumerate()
                        .filter(|(j, _)| *j as i64 != y)
                        .fold(f32::NEG_INFINITY, |m, (_, v)| m.max(*v));
                    -(other - row[y as usize])
                })
                .collect());
        }
        let z = Tensor::<2>::from_data(
            TensorData::new(first.to_vec(), [labels.len(), f.outputs()]),
            &self.device,
        );
        Self::margins((f.head)(z), labels)
    }

    /// Margins of each example's best image with its window applied; `first` holds the first
    /// layer's outputs of the queries (a buffer kept between queries: every value is written).
    fn queries(
        &self,
        examples: &[Example],
        windows: &[Window],
        labels: &[i64],
        eps: f32,
        first: &mut Vec<f32>,
    ) -> Result<Vec<f32>> {
        let image = self.image;
        match &self.split {
            Some(f) => {
                // each example's first layer on its own, the examples over the rayon pool
                let (layer, n) = (f.layer(), f.outputs());
                first.resize(examples.len() * n, 0.0);
                first
                    .par_chunks_mut(n.max(1))
                    .zip(examples.par_iter().zip(windows))
                    .for_each(|(z, (e, win))| {
                        z.copy_from_slice(&e.first);
                        vectorized(
                            #[inline(always)]
                            || {
                                win.each_pixel(&e.clean, image, eps, |k, v| {
                                    layer.add_row(z, k, layer.pixel(v) - layer.pixel(e.best[k]));
                                });
                            },
                        );
                    });
                self.head(f, first, labels)
            }
            None => {
                let mut images =
                    Vec::with_capacity(examples.len() * image.iter().product::<usize>());
                for (e, win) in examples.iter().zip(windows) {
                    let start = images.len();
                    images.extend_from_slice(&e.best);
                    win.each_pixel(&e.clean, image, eps, |k, v| images[start + k] = v);
                }
                Ok(self.score(&images, labels)?.0)
            }
        }
    }

    /// Makes each window whose query improved its example's margin part of that example's best
    /// image, the examples over the rayon pool.
    fn accept(&self, examples: &mut [Example], windows: &[Window], margins: &[f32], eps: f32) {
        let (image, layer) = (self.image, self.split.as_ref().map(AffineFirst::layer));
        examples
            .par_iter_mut()
            .zip(windows)
            .zip(margins)
            .filter(|((e, _), margin)| **margin < e.margin)
            .for_each(|((e, window), &margin)| {
                window.each_pixel(&e.clean, image, eps, |k, v| e.best[k] = v);
                e.margin = margin;
                if let Some(layer) = &layer {
                    // from all pixels again: the accepted outputs carry no rounding of earlier
                    // updates
                    e.first = layer.first(&e.best);
                }
            });
    }
}

impl Square {
    /// The settings.
    pub fn config(&self) -> &SquareConfig {
        &self.0
    }

    /// One run on `examples` (all correctly classified so far); returns them with their best
    /// queries.
    fn run(
        &self,
        scorer: &Scorer<'_>,
        mut examples: Vec<Example>,
        labels: &[i64],
        eps: f32,
    ) -> Result<Vec<Example>> {
        let [_, h, w] = scorer.image;
        let mut done: Vec<Example> = examples.extract_if(.., |e| e.margin <= 0.0).collect();
        let mut first = Vec::new();
        for i in 1..self.0.queries {
            if examples.is_empty() {
                break;
            }
            let active_labels: Vec<i64> = examples.iter().map(|e| labels[e.row]).collect();
            let p = p_schedule(self.0.p_init, i, self.0.queries, self.0.rescale_schedule);
            let s = window_side(p, h, w);
            let windows: Vec<Window> = examples
                .iter_mut()
                .map(|e| Window::draw(&mut e.rng, scorer.image, s))
                .collect();
            let margins = scorer.queries(&examples, &windows, &active_labels, eps, &mut first)?;
            examples.iter_mut().for_each(|e| e.queries += 1);
            scorer.accept(&mut examples, &windows, &margins, eps);
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
        if self.0.rescale_schedule {
            n.push_str("-rescaled");
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
        let x = images.without_autodiff();
        let [b, c, h, w] = x.dims();
        if c > MAX_CHANNELS {
            return Err(AttackError::Invalid {
                field: "images",
                reason: format!("{c} channels; Square draws at most {MAX_CHANNELS}"),
            });
        }
        let device = x.device();
        let size = c * h * w;
        let clean = host(x)?;
        let labels = host_int(labels)?;
        let eps = eps as f32;
        let scorer = Scorer {
            model,
            split: model
                .affine_first()
                .filter(|f| f.outputs() > 0 && f.weight.len() == size * f.outputs()),
            chain: crate::grad::host_chain(model, &device),
            image: [c, h, w],
            device: device.clone(),
        };
        let mut result = clean.clone();
        let mut best_margin = vec![f32::INFINITY; b];
        let mut pending: Vec<usize> = (0..b).collect();
        // per example, the forward passes so far and those up to its first success
        let mut ledger = Ledger::new(b);
        for restart in 0..self.0.restarts {
            if pending.is_empty() || eps == 0.0 {
                break;
            }
            // the start: vertical stripes, each column of each channel of each example at +ε or
            // −ε
            let mut starts = Vec::with_capacity(pending.len());
            for &row in &pending {
                let mut rng =
                    SplitMix64::new(mix_seed(&[self.0.seed, seed, restart as u64, row as u64]));
                let px = &clean[row * size..(row + 1) * size];
                let signs: Vec<f32> = (0..c * w)
                    .map(|_| if rng.next_u64() & 1 == 1 { eps } else { -eps })
                    .collect();
                let best: Vec<f32> = (0..size)
                    .map(|k| (px[k] + signs[k / (h * w) * w + k % w]).clamp(0.0, 1.0))
                    .collect();
                starts.push((row, px.to_vec(), best, rng));
            }
            let first: Vec<f32> = starts.iter().flat_map(|s| s.2.iter().copied()).collect();
            let row_labels: Vec<i64> = pending.iter().map(|&r| labels[r]).collect();
            let (margins, outputs) = scorer.score(&first, &row_labels)?;
            let mut outputs = outputs.into_iter();
            let examples: Vec<Example> = starts
                .into_iter()
                .zip(margins)
                .map(|((row, clean, best, rng), margin)| Example {
                    row,
                    clean,
                    best,
                    margin,
                    first: outputs.next().unwrap_or_default(),
                    rng,
                    queries: 1,
                })
                .collect();
            let finished = self.run(&scorer, examples, &labels, eps)?;
            pending.clear();
            for e in finished {
                if e.margin <= 0.0 {
                    ledger.succeed(e.row, e.queries);
                }
                ledger.charge(e.row, e.queries);
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
        Ok((
            Tensor::from_data(TensorData::new(result, [b, c, h, w]), &device),
            Some(ledger.costs()),
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
        for rescale in [false, true] {
            assert_eq!(p_schedule(0.8, 0, 10_000, rescale), 0.8);
            assert_eq!(p_schedule(0.8, 11, 10_000, rescale), 0.4);
            assert_eq!(p_schedule(0.8, 300, 10_000, rescale), 0.1);
            assert_eq!(p_schedule(0.8, 9_000, 10_000, rescale), 0.8 / 512.0);
        }
        // rescaled to the budget: query 50 of 1000 is query 500 of 10,000
        assert_eq!(p_schedule(0.8, 50, 1000, true), 0.1);
        assert_eq!(p_schedule(0.8, 50, 1000, false), 0.4);
        // AutoAttack's 5000 queries, unscaled: the last window covers p_init / 128
        assert_eq!(p_schedule(0.8, 4999, 5000, false), 0.8 / 128.0);
        assert_eq!(p_schedule(0.8, 4999, 5000, true), 0.8 / 512.0);
        // sides as the reference rounds them, never the whole image
        assert_eq!(window_side(0.8, 28, 28), 25);
        assert_eq!(window_side(1.0, 28, 28), 27);
        assert_eq!(window_side(0.8 / 512.0, 28, 28), 1);
    }

    #[test]
    fn a_window_moves_each_channel_by_its_own_sign_and_draws_every_pattern() {
        let clean = vec![0.5f32; 2 * 4 * 4];
        let window = Window {
            top: 1,
            left: 2,
            side: 2,
            signs: 0b01,
        };
        let mut out = clean.clone();
        window.each_pixel(&clean, [2, 4, 4], 0.1, |k, v| out[k] = v);
        for ch in 0..2 {
            for r in 0..4 {
                for c in 0..4 {
                    let inside = (1..3).contains(&r) && (2..4).contains(&c);
                    let expected = match (inside, ch) {
                        (false, _) => 0.5,
                        (true, 0) => 0.6,
                        (true, _) => 0.4,
                    };
                    let got = out[ch * 16 + r * 4 + c];
                    assert!((got - expected).abs() < 1e-6, "{ch},{r},{c}: {got}");
                }
            }
        }
        // three channels: all eight sign patterns are drawn, no bit above the third
        let mut rng = SplitMix64::new(9);
        let mut seen = [false; 8];
        for _ in 0..200 {
            let w = Window::draw(&mut rng, [3, 8, 8], 3);
            assert!(w.signs < 8 && w.top <= 5 && w.left <= 5);
            seen[w.signs as usize] = true;
        }
        assert!(seen.iter().all(|&s| s), "{seen:?}");
    }

    #[test]
    fn square_breaks_a_masked_model_within_budget_where_pgd_cannot() {
        on_test_backends(|device| {
            let (model, images, labels, x) = crate::testing::quantised_mlp(device, 8);
            let eps = 0.3;
            let broken = |adv: Tensor<4>| -> i64 {
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

    /// The model without its split: Square scores every query with the whole network.
    struct Opaque<'a>(&'a dyn Classifier);

    impl Classifier for Opaque<'_> {
        fn logits(&self, images: Tensor<4>) -> Tensor<2> {
            self.0.logits(images)
        }
    }

    #[test]
    fn incremental_queries_give_the_full_recomputations_images() {
        on_test_backends(|device| {
            let mlp = MlpConfig::new()
                .with_hidden(vec![32])
                .with_seed(11)
                .init(device)
                .expect("init");
            let x: Vec<f32> = (0..6 * 784)
                .map(|i| ((i * 53) % 89) as f32 / 88.0)
                .collect();
            let images = Tensor::<4>::from_data(TensorData::new(x, [6, 1, 28, 28]), device);
            for deploy in [
                DeployConfig::new(),
                DeployConfig::new()
                    .with_quantize(Some(8))
                    .with_logit_scale(50.0),
            ] {
                let model = Deployed {
                    net: mlp.clone().into(),
                    config: deploy,
                };
                assert!(model.affine_first().is_some());
                let labels = model.logits(images.clone()).argmax(1).flatten::<1>(0, 1);
                for rescale_schedule in [false, true] {
                    let square = SquareConfig {
                        queries: 400,
                        restarts: 2,
                        rescale_schedule,
                        ..SquareConfig::default()
                    }
                    .check()
                    .expect("square");
                    let run = |m: &dyn Classifier| {
                        host(
                            square
                                .perturb_seeded(m, images.clone(), labels.clone(), 0.15, 3)
                                .expect("square"),
                        )
                        .expect("host")
                    };
                    let fast = run(&model);
                    let full = run(&Opaque(&model));
                    assert_eq!(fast, full, "rescale {rescale_schedule}");
                    assert_ne!(fast, host(images.clone()).expect("host"));
                }
            }
        });
    }
}
