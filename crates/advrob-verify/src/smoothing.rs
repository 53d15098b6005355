//! Randomized smoothing (Cohen, Rosenfeld and Kolter 2019): a certified L2 radius for the
//! *smoothed* classifier `g(x) = argmax_c P(f(x + δ) = c)`, `δ ~ N(0, σ²I)`, of a base
//! classifier `f`.
//!
//! [`certify_with`] is Cohen et al.'s `CERTIFY`: `n0` noisy copies of the image choose the class
//! `ĉ` (the most frequent prediction), `n` fresh copies count how often `f` predicts it, and the
//! one-sided Clopper–Pearson bound `p̲` of that frequency at level `1 − α` gives the radius
//! `σ·Φ⁻¹(p̲)` — or an abstention when `p̲ ≤ 1/2`. With probability at least `1 − α` over the
//! noise, `g` predicts `ĉ` everywhere in the L2 ball of that radius. Noise is added to the pixels
//! in [0, 1] and not clipped (as Cohen et al. do); the model's own input map (standardisation,
//! quantisation) acts on the noisy pixels.
//!
//! This certifies a different classifier from the one the L∞ bounds of this crate speak about
//! (`g`, not `f`), in another norm, and with a probability of failure `α`: its accuracies are a
//! threat model of their own and are never to be mixed into an L∞ table.
//!
//! The statistics are computed in f64 and rounded towards the safe side: the Clopper–Pearson
//! bound is the lower end of a bisection bracket of the regularised incomplete beta function, and
//! `Φ⁻¹` the lower end of a bracket of the normal CDF (computed through the regularised incomplete
//! gamma function), so no rounding of them can enlarge a radius.

use advrob_data::rng::SplitMix64;
use advrob_model::Classifier;
use burn::tensor::{Device, Tensor, TensorData};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::{Result, VerifyError};

/// The settings of [`certify_with`]; the defaults are Cohen et al.'s (σ aside, which is the
/// model's own).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SmoothingSettings {
    /// The noise's standard deviation, in pixel units (pixels in [0, 1]).
    pub sigma: f64,
    /// Noisy copies that choose the class.
    pub n0: usize,
    /// Noisy copies that estimate how often the base classifier predicts it.
    pub n: usize,
    /// The probability that a certificate is wrong (over the noise drawn).
    pub alpha: f64,
    /// Noisy copies per forward pass.
    pub batch: usize,
    /// The noise's seed: the same seed gives the same certificates on every machine.
    pub seed: u64,
}

impl Default for SmoothingSettings {
    fn default() -> Self {
        SmoothingSettings {
            sigma: 0.25,
            n0: 100,
            n: 100_000,
            alpha: 0.001,
            batch: 1000,
            seed: 0,
        }
    }
}

impl SmoothingSettings {
    /// Refuses settings that certify nothing, naming the field.
    ///
    /// # Errors
    ///
    /// [`VerifyError::Invalid`] naming the field.
    pub fn check(&self) -> Result<()> {
        let bad = |field: &'static str, why: String| Err(VerifyError::invalid(field, why));
        if !(self.sigma.is_finite() && self.sigma > 0.0) {
            return bad("sigma", format!("{} is not a positive number", self.sigma));
        }
        if !(self.alpha > 0.0 && self.alpha < 1.0) {
            return bad("alpha", format!("{} is outside (0, 1)", self.alpha));
        }
        for (field, v) in [("n0", self.n0), ("n", self.n), ("batch", self.batch)] {
            if v == 0 {
                return bad(field, "must be at least 1".into());
            }
        }
        Ok(())
    }

    /// The largest radius any image can get with these settings: `σ·Φ⁻¹(α^{1/n})`, what every one
    /// of the `n` copies agreeing proves.
    pub fn max_radius(&self) -> f64 {
        self.sigma * normal_quantile(clopper_pearson_lower(self.n, self.n, self.alpha))
    }
}

/// One image's certificate for the smoothed classifier.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Smoothed {
    /// The class the smoothed classifier is certified to predict; `None` when it abstains
    /// (`p̲ ≤ 1/2`).
    pub prediction: Option<usize>,
    /// The certified L2 radius (0 when it abstains).
    pub radius: f64,
    /// How many of the `n` noisy copies the base classifier put in the chosen class.
    pub count: usize,
    /// The Clopper–Pearson lower bound on that class's probability.
    pub p_lower: f64,
}

impl Smoothed {
    /// Whether the image counts as certified correct at L2 radius `r`: the smoothed classifier
    /// predicts `label` and its radius is at least `r` (an abstention never counts).
    pub fn certified_at(&self, label: usize, r: f64) -> bool {
        self.prediction == Some(label) && self.radius >= r
    }
}

/// The share of `results` (with their `labels`) certified correct at L2 radius `r`: Cohen et
/// al.'s certified test-set accuracy. Every image counts in the denominator, abstentions too.
///
/// # Panics
///
/// When `labels` and `results` differ in length.
pub fn certified_accuracy(results: &[Smoothed], labels: &[usize], r: f64) -> f64 {
    assert_eq!(results.len(), labels.len(), "one label per certificate");
    let k = results
        .iter()
        .zip(labels)
        .filter(|(s, y)| s.certified_at(**y, r))
        .count();
    k as f64 / results.len().max(1) as f64
}

/// Cohen et al.'s `CERTIFY` for a base classifier given as `classify(pixels, rows)` → the class
/// of each of the `rows` images in `pixels` (row-major, `pixels.len() / rows` values each). Each
/// image of `images` (`pixels_per_image` values in [0, 1] each) gets its certificate.
///
/// # Errors
///
/// [`VerifyError::Invalid`] for bad settings, an image buffer that is not whole images, or a class
/// `classify` returns out of range (or too few or many); any error of `classify`.
pub fn certify_with(
    mut classify: impl FnMut(&[f32], usize) -> Result<Vec<usize>>,
    images: &[f32],
    pixels_per_image: usize,
    classes: usize,
    settings: &SmoothingSettings,
) -> Result<Vec<Smoothed>> {
    settings.check()?;
    if pixels_per_image == 0 || !images.len().is_multiple_of(pixels_per_image) {
        return Err(VerifyError::invalid(
            "images",
            format!(
                "{} values are not whole images of {pixels_per_image} pixels",
                images.len()
            ),
        ));
    }
    images
        .chunks(pixels_per_image)
        .enumerate()
        .map(|(i, x)| {
            let mut count = |phase: u64, samples: usize| -> Result<Vec<usize>> {
                let mut counts = vec![0usize; classes];
                let mut done = 0;
                let mut block = 0u64;
                while done < samples {
                    let rows = settings.batch.min(samples - done);
                    let stream = stream_seed(settings.seed, i as u64, phase, block);
                    let noisy = noisy_copies(x, rows, settings.sigma as f32, stream);
                    let predicted = classify(&noisy, rows)?;
                    if predicted.len() != rows {
                        return Err(VerifyError::invalid(
                            "classify",
                            format!("{} classes returned for {rows} images", predicted.len()),
                        ));
                    }
                    for c in predicted {
                        *counts.get_mut(c).ok_or_else(|| {
                            VerifyError::invalid("classify", format!("class {c} of {classes}"))
                        })? += 1;
                    }
                    done += rows;
                    block += 1;
                }
                Ok(counts)
            };
            let selection = count(0, settings.n0)?;
            let chosen = argmax(&selection);
            let estimate = count(1, settings.n)?;
            let k = estimate[chosen];
            let p_lower = clopper_pearson_lower(k, settings.n, settings.alpha);
            Ok(if p_lower > 0.5 {
                Smoothed {
                    prediction: Some(chosen),
                    // Φ⁻¹ is moved down for rounding: just above 1/2 it can dip below 0
                    radius: (settings.sigma * normal_quantile(p_lower)).max(0.0),
                    count: k,
                    p_lower,
                }
            } else {
                Smoothed {
                    prediction: None,
                    radius: 0.0,
                    count: k,
                    p_lower,
                }
            })
        })
        .collect()
}

/// [`certify_with`] for an advrob classifier: `images` of shape `[C, H, W]` each, classified by
/// `model`'s logits (argmax) on `device`.
///
/// # Errors
///
/// As [`certify_with`], and [`VerifyError::Readback`] when the model's logits cannot be read.
pub fn certify_smoothed(
    model: &dyn Classifier,
    images: &[f32],
    shape: [usize; 3],
    classes: usize,
    settings: &SmoothingSettings,
    device: &Device,
) -> Result<Vec<Smoothed>> {
    let [c, h, w] = shape;
    let classify = |x: &[f32], rows: usize| -> Result<Vec<usize>> {
        let t = Tensor::<4>::from_data(TensorData::new(x.to_vec(), [rows, c, h, w]), device);
        let logits = model.logits(t);
        let k = logits.dims()[1].max(1);
        let v = logits
            .into_data()
            .try_into_vec::<f32>()
            .map_err(|e| VerifyError::Readback(format!("the model's logits: {e:?}")))?;
        Ok(v.chunks(k).map(argmax_f32).collect())
    };
    certify_with(classify, images, c * h * w, classes, settings)
}

/// The seed of one block of noise: image `i`, phase (0 selection, 1 estimation), block `b`.
fn stream_seed(seed: u64, i: u64, phase: u64, b: u64) -> u64 {
    let mut h = SplitMix64::new(seed ^ 0x5A0_07E1).next_u64();
    for v in [i, phase, b] {
        h = SplitMix64::new(h ^ v.wrapping_mul(0x9E37_79B9_7F4A_7C15)).next_u64();
    }
    h
}

/// `rows` copies of `x` with N(0, σ²) noise on every pixel, drawn in chunks of 64 copies (each its
/// own stream, so the noise does not depend on the number of threads).
fn noisy_copies(x: &[f32], rows: usize, sigma: f32, seed: u64) -> Vec<f32> {
    const CHUNK: usize = 64;
    let d = x.len();
    let mut out = vec![0f32; rows * d];
    out.par_chunks_mut(CHUNK * d)
        .enumerate()
        .for_each(|(j, block)| {
            let mut rng = SplitMix64::new(seed ^ (j as u64).wrapping_mul(0xA076_1D64_78BD_642F));
            let mut spare = None;
            for (o, &p) in block.iter_mut().zip(x.iter().cycle()) {
                let z = spare.take().unwrap_or_else(|| {
                    let (a, b) = rng.gaussian_pair();
                    spare = Some(b);
                    a
                });
                *o = p + sigma * z as f32;
            }
        });
    out
}

/// The first class with the most counts.
fn argmax(counts: &[usize]) -> usize {
    let mut best = 0;
    for (c, &v) in counts.iter().enumerate() {
        if v > counts[best] {
            best = c;
        }
    }
    best
}

/// The first index of the largest logit; a NaN never wins over a number (a row of NaNs: 0).
fn argmax_f32(row: &[f32]) -> usize {
    let mut best = 0;
    for (c, &v) in row.iter().enumerate() {
        if v > row[best] || (row[best].is_nan() && !v.is_nan()) {
            best = c;
        }
    }
    best
}

/// Relative error allowed for each f64 evaluation below before a result is moved to the safe
/// side: the bisections decide on values widened by it, and every result is shrunk by it.
const ROUNDING: f64 = 64.0 * f64::EPSILON;

/// The one-sided Clopper–Pearson lower bound at level `1 − α` on a probability of which `k`
/// successes were seen in `n` trials: the `α` quantile of Beta(k, n − k + 1) (0 for k = 0,
/// `α^{1/n}` for k = n; 0 for an `α` outside (0, 1)), never above the exact value: the bisection
/// decides on `I_x` widened by a bound on its evaluation's rounding (which grows with the
/// log-gamma terms it cancels), and the result is moved down by [`ROUNDING`].
pub fn clopper_pearson_lower(k: usize, n: usize, alpha: f64) -> f64 {
    if k == 0 || n == 0 || alpha.is_nan() || alpha <= 0.0 || alpha >= 1.0 {
        return 0.0;
    }
    let x = if k >= n {
        // I_x(n, 1) = xⁿ
        (alpha.ln() / n as f64).exp()
    } else {
        let (a, b) = (k as f64, (n - k) as f64 + 1.0);
        // I_x(a, b) increases in x: bisect for I_x = α, keeping I(lo) ≤ α even after rounding
        let (mut lo, mut hi) = (0.0f64, 1.0f64);
        for _ in 0..200 {
            let mid = 0.5 * (lo + hi);
            if mid <= lo || mid >= hi {
                break;
            }
            let (value, magnitude) = incomplete_beta(a, b, mid);
            if value * (1.0 + ROUNDING * (1.0 + magnitude)) <= alpha {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        lo
    };
    x * (1.0 - ROUNDING)
}

/// The standard normal CDF `Φ(x)`, through the regularised incomplete gamma function
/// (`erfc(z) = Q(1/2, z²)`).
pub fn normal_cdf(x: f64) -> f64 {
    let tail = 0.5 * gamma_q(0.5, 0.5 * x * x);
    if x >= 0.0 { 1.0 - tail } else { tail }
}

/// `Φ⁻¹(p)` for `p` in (0, 1) (−∞ at or below 0 and for NaN, +∞ at or above 1), never above the
/// exact value: a bisection that keeps `Φ(lo) ≤ p` even after rounding — deciding on the tail
/// `Q` beyond `|x|` (for `p ≥ 1/2` against `1 − p`, which is exact there, not on `1 − Q`, whose
/// rounding near 1 would decide wrongly), widened by a bound on its evaluation's error — then
/// moved down by [`ROUNDING`].
pub fn normal_quantile(p: f64) -> f64 {
    if p.is_nan() || p <= 0.0 {
        return f64::NEG_INFINITY;
    }
    if p >= 1.0 {
        return f64::INFINITY;
    }
    let surely_below = |x: f64| {
        let z2 = 0.5 * x * x;
        let tail = 0.5 * gamma_q(0.5, z2);
        let err = ROUNDING * (1.0 + z2);
        if x >= 0.0 {
            // Φ(x) = 1 − Q ≤ p ⇔ Q ≥ 1 − p; impossible below 1/2
            p >= 0.5 && tail * (1.0 - err) >= 1.0 - p
        } else {
            tail * (1.0 + err) <= p
        }
    };
    let (mut lo, mut hi) = (-40.0f64, 40.0f64);
    for _ in 0..200 {
        let mid = 0.5 * (lo + hi);
        if mid <= lo || mid >= hi {
            break;
        }
        if surely_below(mid) {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    lo - ROUNDING * lo.abs().max(1.0)
}

/// `ln Γ(x)` for `x > 0` (Lanczos, g = 7, nine terms: ~1e-15 relative).
fn ln_gamma(x: f64) -> f64 {
    const G: f64 = 7.0;
    const C: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        // reflection
        let pi = std::f64::consts::PI;
        return (pi / (pi * x).sin()).ln() - ln_gamma(1.0 - x);
    }
    let x = x - 1.0;
    let mut s = C[0];
    for (i, &c) in C.iter().enumerate().skip(1) {
        s += c / (x + i as f64);
    }
    let t = x + G + 0.5;
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + s.ln()
}

/// The regularised incomplete beta function `I_x(a, b)` (continued fraction, Numerical Recipes'
/// `betacf`, on the side where it converges fast), and the magnitude of the logarithms its
/// prefactor sums (its rounding error, relative to the value, is about ε times that).
fn incomplete_beta(a: f64, b: f64, x: f64) -> (f64, f64) {
    if x <= 0.0 {
        return (0.0, 0.0);
    }
    if x >= 1.0 {
        return (1.0, 0.0);
    }
    let terms = [
        ln_gamma(a + b),
        -ln_gamma(a),
        -ln_gamma(b),
        a * x.ln(),
        b * (1.0 - x).ln(),
    ];
    let magnitude = terms.iter().map(|t| t.abs()).sum::<f64>();
    let front = terms.iter().sum::<f64>().exp();
    let value = if x < (a + 1.0) / (a + b + 2.0) {
        front * beta_fraction(a, b, x) / a
    } else {
        1.0 - front * beta_fraction(b, a, 1.0 - x) / b
    };
    (value, magnitude)
}

/// The continued fraction of the incomplete beta function (modified Lentz).
fn beta_fraction(a: f64, b: f64, x: f64) -> f64 {
    let (qab, qap, qam) = (a + b, a + 1.0, a - 1.0);
    let mut c = 1.0;
    let mut d = 1.0 / away_from_zero(1.0 - qab * x / qap);
    let mut h = d;
    for m in 1..100_000 {
        let m = m as f64;
        let m2 = 2.0 * m;
        // the even step, then the odd one, of the fraction's terms
        let even = m * (b - m) * x / ((qam + m2) * (a + m2));
        let odd = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2));
        h *= lentz_step(even, &mut c, &mut d);
        let del = lentz_step(odd, &mut c, &mut d);
        h *= del;
        if (del - 1.0).abs() < 2.0 * f64::EPSILON {
            break;
        }
    }
    h
}

/// One step of the modified Lentz method for a term `aa` with denominators 1: updates `c` and
/// `d` and returns the factor the fraction's value is multiplied by.
fn lentz_step(aa: f64, c: &mut f64, d: &mut f64) -> f64 {
    *d = 1.0 / away_from_zero(1.0 + aa * *d);
    *c = away_from_zero(1.0 + aa / *c);
    *d * *c
}

/// `v`, or a tiny number where `v` is (nearly) zero: Lentz's guard against dividing by zero.
fn away_from_zero(v: f64) -> f64 {
    const TINY: f64 = 1e-300;
    if v.abs() < TINY { TINY } else { v }
}

/// The regularised upper incomplete gamma function `Q(a, x)` (series below `a + 1`, continued
/// fraction above).
fn gamma_q(a: f64, x: f64) -> f64 {
    if x <= 0.0 {
        return 1.0;
    }
    let front = (-x + a * x.ln() - ln_gamma(a)).exp();
    if x < a + 1.0 {
        let (mut ap, mut del) = (a, 1.0 / a);
        let mut sum = del;
        for _ in 0..100_000 {
            ap += 1.0;
            del *= x / ap;
            sum += del;
            if del.abs() < sum.abs() * 1e-17 {
                break;
            }
        }
        1.0 - sum * front
    } else {
        let mut b = x + 1.0 - a;
        let mut c = 1.0 / away_from_zero(0.0);
        let mut d = 1.0 / b;
        let mut h = d;
        for i in 1..100_000 {
            let an = -(i as f64) * (i as f64 - a);
            b += 2.0;
            d = 1.0 / away_from_zero(an * d + b);
            c = away_from_zero(b + an / c);
            let del = d * c;
            h *= del;
            if (del - 1.0).abs() < 2.0 * f64::EPSILON {
                break;
            }
        }
        front * h
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The exact quantiles, mpmath at 40 digits (`betainc` bisected; scipy's `beta.ppf` agrees to
    /// 1e-15): the bound is never above them and within 1e-12 (relative) below.
    #[test]
    #[allow(clippy::excessive_precision)]
    fn clopper_pearson_is_never_above_the_exact_quantile() {
        for (k, n, a, exact) in [
            (990, 1000, 0.001, 0.976_036_187_155_311_373_224_232),
            (100_000, 100_000, 0.001, 0.999_930_924_833_009_392_971_678_4),
            (99_990, 100_000, 0.001, 0.999_758_677_343_591_162_489_499_4),
            (55, 100, 0.001, 0.392_146_827_221_255_308_194_731_1),
            (1, 10, 0.05, 0.005_116_196_891_823_701_425_410_687),
            // 0.001 in f64 is a little above 1/1000: its cube root is a little above 0.1, yet
            // below the f64 0.1
            (3, 3, 0.001, 0.100_000_000_000_000_000_693_889_4),
        ] {
            let got = clopper_pearson_lower(k, n, a);
            assert!(got <= exact, "{k}/{n}: {got} above {exact}");
            assert!(exact - got < 1e-12 * exact, "{k}/{n}: {got} vs {exact}");
        }
        assert_eq!(clopper_pearson_lower(0, 10, 0.05), 0.0);
        assert_eq!(clopper_pearson_lower(5, 10, 1.0), 0.0);
        assert_eq!(clopper_pearson_lower(5, 10, f64::NAN), 0.0);
    }

    /// mpmath at 40 digits (`√2·erfinv(2p − 1)`); scipy's `norm.cdf` for the CDF.
    #[test]
    #[allow(clippy::excessive_precision)]
    fn the_normal_quantile_is_never_above_the_exact_one() {
        for (p, exact) in [
            (0.75, 0.674_489_750_196_081_743_202_227),
            (0.9, 1.281_551_565_544_600_593_487_448),
            (0.975, 1.959_963_984_540_053_855_604_431),
            (0.999, 3.090_232_306_167_813_277_758_202),
            (0.9999, 3.719_016_485_455_708_386_722_759),
            (0.001, -3.090_232_306_167_813_535_358_005),
            // the cap of n = 100 000, α = 0.001
            (0.999_930_924_833_009_4, 3.811_456_563_389_914_233_530_751),
        ] {
            let got = normal_quantile(p);
            assert!(got <= exact, "{p}: {got} above {exact}");
            assert!(exact - got < 1e-9, "{p}: {got} vs {exact}");
        }
        assert!(normal_quantile(0.5) <= 0.0 && normal_quantile(0.5) > -1e-12);
        assert_eq!(normal_quantile(f64::NAN), f64::NEG_INFINITY);
        for (x, want) in [
            (0.0, 0.5),
            (1.0, 0.841_344_746_068_542_9),
            (-2.5, 0.006_209_665_325_776_132),
            (4.0, 0.999_968_328_758_166_9),
            (6.0, 0.999_999_999_013_412_3),
        ] {
            assert!(
                (normal_cdf(x) - want).abs() < 1e-13,
                "{x}: {}",
                normal_cdf(x)
            );
        }
    }

    #[test]
    fn bad_settings_are_refused_by_name() {
        for (s, field) in [
            (
                SmoothingSettings {
                    sigma: 0.0,
                    ..Default::default()
                },
                "sigma",
            ),
            (
                SmoothingSettings {
                    alpha: 1.0,
                    ..Default::default()
                },
                "alpha",
            ),
            (
                SmoothingSettings {
                    n: 0,
                    ..Default::default()
                },
                "n:",
            ),
        ] {
            let e = s.check().expect_err(field);
            assert!(e.to_string().contains(field), "{e}");
        }
    }

    /// A linear two-class rule `f(x) = [w·x + b > 0]`: its smoothed classifier is itself, and the
    /// exact certified radius is the distance to the hyperplane `|w·x + b| / ‖w‖` (Cohen et al.,
    /// the linear case). The certificates never exceed it, and with many samples come close.
    #[test]
    fn a_linear_rule_is_certified_up_to_its_distance_to_the_boundary() {
        let d = 16;
        let w: Vec<f64> = (0..d)
            .map(|i| if i % 2 == 0 { 1.0 } else { -0.5 })
            .collect();
        let norm = w.iter().map(|v| v * v).sum::<f64>().sqrt();
        let b = -0.1;
        let score =
            |x: &[f32]| -> f64 { x.iter().zip(&w).map(|(&p, &wi)| p as f64 * wi).sum::<f64>() + b };
        let classify = |x: &[f32], rows: usize| -> Result<Vec<usize>> {
            Ok(x.chunks(x.len() / rows)
                .map(|r| usize::from(score(r) > 0.0))
                .collect())
        };
        let mut rng = SplitMix64::new(3);
        let images: Vec<f32> = (0..12 * d).map(|_| rng.next_f64() as f32).collect();
        let settings = SmoothingSettings {
            sigma: 0.5,
            n0: 100,
            n: 20_000,
            alpha: 0.001,
            batch: 700,
            seed: 9,
        };
        let got = certify_with(classify, &images, d, 2, &settings).expect("certify");
        let mut checked = 0;
        for (s, x) in got.iter().zip(images.chunks(d)) {
            let distance = score(x).abs() / norm;
            let class = usize::from(score(x) > 0.0);
            match s.prediction {
                Some(c) => {
                    assert_eq!(c, class, "{s:?}");
                    assert!(s.radius <= distance + 1e-9, "{s:?} beyond {distance}");
                    // far from the budget's cap, the estimate is tight
                    if distance < 0.8 * settings.max_radius() {
                        assert!(s.radius > distance - 0.08, "{s:?} vs {distance}");
                        checked += 1;
                    }
                }
                None => assert!(distance < 0.05, "abstained at {distance}"),
            }
        }
        assert!(checked >= 4, "{checked}");
        // the same seed, the same certificates
        let again = certify_with(classify, &images, d, 2, &settings).expect("certify");
        assert_eq!(got, again);
    }
}
