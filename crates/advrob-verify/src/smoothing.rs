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
pub fn certified_accuracy(results: &[Smoothed], labels: &[usize], r: f64) -> f64 {
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
                    radius: settings.sigma * normal_quantile(p_lower),
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
        let k = logits.dims()[1];
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

/// The first index of the largest logit (a NaN never wins).
fn argmax_f32(row: &[f32]) -> usize {
    let mut best = 0;
    for (c, &v) in row.iter().enumerate() {
        if v > row[best] || row[best].is_nan() {
            best = c;
        }
    }
    best
}

/// The one-sided Clopper–Pearson lower bound at level `1 − α` on a probability of which `k`
/// successes were seen in `n` trials: the `α` quantile of Beta(k, n − k + 1) (0 for k = 0,
/// `α^{1/n}` exactly for k = n), never above the exact value by rounding.
pub fn clopper_pearson_lower(k: usize, n: usize, alpha: f64) -> f64 {
    if k == 0 || n == 0 {
        return 0.0;
    }
    let (a, b) = (k as f64, (n - k.min(n)) as f64 + 1.0);
    if k >= n {
        // I_x(n, 1) = xⁿ; one ulp down for the rounding of the power
        return next_down(alpha.powf(1.0 / n as f64));
    }
    // I_x(a, b) increases in x: bisect for I_x = α, keeping I(lo) ≤ α
    let (mut lo, mut hi) = (0.0f64, 1.0f64);
    for _ in 0..200 {
        let mid = 0.5 * (lo + hi);
        if mid <= lo || mid >= hi {
            break;
        }
        if incomplete_beta(a, b, mid) <= alpha {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    lo
}

/// The standard normal CDF `Φ(x)`, through the regularised incomplete gamma function
/// (`erfc(z) = Q(1/2, z²)`).
pub fn normal_cdf(x: f64) -> f64 {
    let z2 = 0.5 * x * x;
    if x >= 0.0 {
        1.0 - 0.5 * gamma_q(0.5, z2)
    } else {
        0.5 * gamma_q(0.5, z2)
    }
}

/// `Φ⁻¹(p)` for `p` in (0, 1), never above the exact value by rounding: the lower end of a
/// bisection bracket with `Φ(lo) ≤ p`.
pub fn normal_quantile(p: f64) -> f64 {
    if p <= 0.0 {
        return f64::NEG_INFINITY;
    }
    if p >= 1.0 {
        return f64::INFINITY;
    }
    let (mut lo, mut hi) = (-40.0f64, 40.0f64);
    for _ in 0..200 {
        let mid = 0.5 * (lo + hi);
        if mid <= lo || mid >= hi {
            break;
        }
        if normal_cdf(mid) <= p {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    lo
}

/// The next smaller f64 (for positive finite values).
fn next_down(x: f64) -> f64 {
    if x > 0.0 && x.is_finite() {
        f64::from_bits(x.to_bits() - 1)
    } else {
        x
    }
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
/// `betacf`, on the side where it converges fast).
fn incomplete_beta(a: f64, b: f64, x: f64) -> f64 {
    if x <= 0.0 {
        return 0.0;
    }
    if x >= 1.0 {
        return 1.0;
    }
    let front =
        (ln_gamma(a + b) - ln_gamma(a) - ln_gamma(b) + a * x.ln() + b * (1.0 - x).ln()).exp();
    if x < (a + 1.0) / (a + b + 2.0) {
        front * beta_fraction(a, b, x) / a
    } else {
        1.0 - front * beta_fraction(b, a, 1.0 - x) / b
    }
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
        if (del - 1.0).abs() < 1e-16 {
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
            if (del - 1.0).abs() < 1e-16 {
                break;
            }
        }
        front * h
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// scipy 1.x, `beta.ppf(α, k, n − k + 1)`.
    #[test]
    fn clopper_pearson_matches_scipy() {
        for (k, n, a, want) in [
            (990, 1000, 0.001, 0.976_036_187_155_311_4),
            (100_000, 100_000, 0.001, 0.999_930_924_833_009_4),
            (99_990, 100_000, 0.001, 0.999_758_677_343_591_1),
            (55, 100, 0.001, 0.392_146_827_221_255_27),
            (1, 10, 0.05, 0.005_116_196_891_823_701),
            (50_000, 100_000, 0.001, 0.495_109_042_903_695_95),
            (9, 10, 0.05, 0.605_836_697_563_495_2),
        ] {
            let got = clopper_pearson_lower(k, n, a);
            assert!(got <= want + 1e-12, "{k}/{n}: {got} above {want}");
            assert!(
                (got - want).abs() < 1e-9 * want.max(1e-3),
                "{k}/{n}: {got} vs {want}"
            );
        }
        assert_eq!(clopper_pearson_lower(0, 10, 0.05), 0.0);
    }

    /// scipy, `norm.ppf` and `norm.cdf`.
    #[test]
    fn the_normal_quantile_and_cdf_match_scipy() {
        for (p, want) in [
            (0.5, 0.0),
            (0.75, 0.674_489_750_196_081_7),
            (0.9, 1.281_551_565_544_600_4),
            (0.975, 1.959_963_984_540_054),
            (0.999, 3.090_232_306_167_813),
            (0.9999, 3.719_016_485_455_709),
            (0.001, -3.090_232_306_167_813),
        ] {
            let got = normal_quantile(p);
            assert!(got <= want + 1e-12, "{p}: {got} above {want}");
            assert!((got - want).abs() < 1e-9, "{p}: {got} vs {want}");
        }
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
