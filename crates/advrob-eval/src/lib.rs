#![doc = include_str!("../README.md")]

pub mod agreement;
pub mod probes;

pub use agreement::{Agreement, EpsAgreement, OnBackend, agreement};
pub use probes::{Probe, probe};

use std::time::Instant;

use advrob_attack::{Attack, AttackError};
use advrob_data::{Split, range_tensors};
use advrob_model::Classifier;
use burn::tensor::activation::softmax;
use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};

/// What can go wrong evaluating.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    /// The attack refused its parameters or failed.
    #[error(transparent)]
    Attack(#[from] AttackError),
    /// A tensor could not be read back to the host.
    #[error("reading a tensor back from the device: {0}")]
    Readback(String),
    /// A nonsensical request.
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// The argument.
        field: &'static str,
        /// Why.
        reason: String,
    },
}

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, EvalError>;

/// The robustness of one model against one attack at one ε, over a set of examples.
///
/// Every count and mean is over the `examples` evaluated (all of them, correctly classified or
/// not) unless its doc says otherwise.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalRecord {
    /// The attack's budget.
    pub eps: f64,
    /// Number of examples evaluated.
    pub examples: usize,
    /// Examples whose clean prediction equals the label.
    pub clean_correct: usize,
    /// Examples whose prediction on the adversarial input equals the label.
    pub adversarial_correct: usize,
    /// `clean_correct / examples`.
    pub clean_accuracy: f64,
    /// `adversarial_correct / examples` (robust accuracy under this attack).
    pub adversarial_accuracy: f64,
    /// Attack success rate: among the examples correctly classified before the attack, the share
    /// misclassified after it. `None` when no example was correct to begin with. (This is not the
    /// notebooks' `1 − adv_acc / clean_acc`, which also credits examples that the attack happens
    /// to fix.)
    pub success_rate: Option<f64>,
    /// Targeted attacks only: the share of all examples whose prediction on the adversarial input
    /// equals the attack's target class (the success of a targeted attack; accuracy against the
    /// true label does not measure it). `None` for untargeted attacks.
    #[serde(default)]
    pub targeted_success: Option<f64>,
    /// Mean over examples of ‖x_adv − x‖∞, measured after clipping.
    pub mean_linf: f64,
    /// Mean over examples of ‖x_adv − x‖₂, measured after clipping.
    pub mean_l2: f64,
    /// Mean over examples of the softmax probability of the predicted class on the adversarial
    /// input.
    pub mean_confidence: f64,
    /// Wall time of evaluating the whole ε grid this record belongs to (attack and inference);
    /// the same in every record of one grid, since work such as FGSM's gradient is shared.
    pub seconds: f64,
    /// Per example, in the order evaluated: whether its prediction on the adversarial input
    /// equals the label. What per-example statistics need (the worst case over attacks, paired
    /// tests between models, bootstrap intervals). Absent in records written before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adversarial_correct_examples: Option<Bits>,
}

/// A vector of booleans, serialised as a hexadecimal string (4 examples per character, first
/// example in the highest bit of the first character) followed by `:` and the length.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Bits(pub Vec<bool>);

impl Bits {
    /// Number of set entries.
    pub fn count(&self) -> usize {
        self.0.iter().filter(|b| **b).count()
    }

    /// The hexadecimal form.
    pub fn encode(&self) -> String {
        let mut s = String::with_capacity(self.0.len() / 4 + 8);
        for chunk in self.0.chunks(4) {
            let mut v = 0u32;
            for (i, b) in chunk.iter().enumerate() {
                if *b {
                    v |= 8 >> i;
                }
            }
            s.push(char::from_digit(v, 16).unwrap_or('0'));
        }
        s.push(':');
        s.push_str(&self.0.len().to_string());
        s
    }

    /// Parses [`Bits::encode`]'s form; an error says what is wrong.
    pub fn decode(s: &str) -> std::result::Result<Self, String> {
        let (hex, len) = s
            .rsplit_once(':')
            .ok_or_else(|| format!("no ':length' at the end of {:.20}…", s))?;
        let len: usize = len.parse().map_err(|e| format!("length {len:?}: {e}"))?;
        if hex.len() != len.div_ceil(4) {
            return Err(format!(
                "{} hexadecimal digits for {len} entries (expected {})",
                hex.len(),
                len.div_ceil(4)
            ));
        }
        let mut out = Vec::with_capacity(len);
        for c in hex.chars() {
            let v = c
                .to_digit(16)
                .ok_or_else(|| format!("{c:?} is not a hexadecimal digit"))?;
            for i in 0..4 {
                if out.len() < len {
                    out.push(v & (8 >> i) != 0);
                }
            }
        }
        Ok(Self(out))
    }
}

impl Serialize for Bits {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.encode())
    }
}

impl<'de> Deserialize<'de> for Bits {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Bits::decode(&s).map_err(serde::de::Error::custom)
    }
}

#[derive(Default, Clone)]
struct Acc {
    adv_correct: i64,
    per_example: Vec<bool>,
    flipped: i64,
    target_hits: i64,
    linf: f64,
    l2: f64,
    confidence: f64,
}

fn sum_f64(t: Tensor<1>) -> f64 {
    f64::from(t.sum().into_scalar::<f32>())
}

/// Sums over examples of ‖a − x‖∞ and ‖a − x‖₂, each example `size` values, in one host pass
/// (in f64, so that the norms are exact to f32 rounding of the inputs).
fn perturbation_norms(adv: &[f32], x: &[f32], size: usize) -> (f64, f64) {
    let (mut linf, mut l2) = (0.0, 0.0);
    for (a, c) in adv.chunks(size).zip(x.chunks(size)) {
        let (mut m, mut s) = (0.0f64, 0.0f64);
        for (p, q) in a.iter().zip(c) {
            let d = (f64::from(*p) - f64::from(*q)).abs();
            m = m.max(d);
            s += d * d;
        }
        linf += m;
        l2 += s.sqrt();
    }
    (linf, l2)
}

fn host(t: Tensor<3>) -> Result<Vec<f32>> {
    t.into_data()
        .try_into_vec_as::<f32>()
        .map_err(|e| EvalError::Readback(format!("{e:?}")))
}

/// Refuses a batch size of 0 and an ε that is negative or not finite.
fn check_request(eps: &[f64], batch_size: usize) -> Result<()> {
    if batch_size == 0 {
        return Err(EvalError::Invalid {
            field: "batch_size",
            reason: "must be at least 1".into(),
        });
    }
    for &e in eps {
        advrob_attack::check_eps(e)?;
    }
    Ok(())
}

/// Evaluates `model` against `attack` at every ε of `eps` on `data`, in batches of `batch_size`.
/// `on_batch(done, total)` is called after each batch, for progress bars.
///
/// The attack sees the true labels; the model is used in inference mode throughout.
pub fn evaluate(
    model: &dyn Classifier,
    attack: &dyn Attack,
    data: &Split,
    eps: &[f64],
    batch_size: usize,
    device: &Device,
    on_batch: &mut dyn FnMut(usize, usize),
) -> Result<Vec<EvalRecord>> {
    check_request(eps, batch_size)?;
    let start = Instant::now();
    let n = data.len();
    let total = n.div_ceil(batch_size);
    let mut clean_correct = 0i64;
    let mut accs = vec![Acc::default(); eps.len()];
    let mut targeted = false;
    for (bi, s) in (0..n).step_by(batch_size).enumerate() {
        let (x, y) = range_tensors(data, s, batch_size, device);
        let [b] = y.dims();
        let size = data.image_size();
        // the clean images on the host, exactly as `range_tensors` scaled them
        let x_host: Vec<f32> = data.images.pixels[s * size..(s + b) * size]
            .iter()
            .map(|&p| f32::from(p) / 255.0)
            .collect();
        let clean_pred = model.logits(x.clone()).argmax(1).flatten::<1>(0, 1);
        let clean_ok = clean_pred.equal(y.clone());
        clean_correct += clean_ok.clone().int().sum().into_scalar::<i64>();
        let targets = attack.targets(model, x.clone(), y.clone())?;
        targeted |= targets.is_some();
        let advs = attack.perturb_grid(model, x.clone(), y.clone(), eps)?;
        for (acc, adv) in accs.iter_mut().zip(advs) {
            let adv = adv.without_autodiff();
            let probs = softmax(model.logits(adv.clone()), 1);
            let conf = probs.clone().max_dim(1).flatten::<1>(0, 1);
            let pred = probs.argmax(1).flatten::<1>(0, 1);
            if let Some(t) = &targets {
                acc.target_hits += pred
                    .clone()
                    .equal(t.clone())
                    .int()
                    .sum()
                    .into_scalar::<i64>();
            }
            let adv_ok = pred.equal(y.clone());
            let ok_host = adv_ok
                .clone()
                .int()
                .into_data()
                .try_into_vec_as::<i64>()
                .map_err(|e| EvalError::Readback(format!("{e:?}")))?;
            acc.adv_correct += ok_host.iter().sum::<i64>();
            acc.per_example.extend(ok_host.iter().map(|v| *v != 0));
            acc.flipped += (clean_ok.clone().int() - adv_ok.int())
                .clamp_min(0)
                .sum()
                .into_scalar::<i64>();
            let (linf, l2) = perturbation_norms(&host(adv)?, &x_host, size);
            acc.linf += linf;
            acc.l2 += l2;
            acc.confidence += sum_f64(conf);
        }
        on_batch(bi + 1, total);
    }
    let seconds = start.elapsed().as_secs_f64();
    let nf = n.max(1) as f64;

    Ok(eps
        .iter()
        .zip(accs)
        .map(|(&e, a)| EvalRecord {
            eps: e,
            examples: n,
            clean_correct: clean_correct as usize,
            adversarial_correct: a.adv_correct as usize,
            clean_accuracy: clean_correct as f64 / nf,
            adversarial_accuracy: a.adv_correct as f64 / nf,
            success_rate: (clean_correct > 0).then(|| a.flipped as f64 / clean_correct as f64),
            targeted_success: targeted.then(|| a.target_hits as f64 / nf),
            mean_linf: a.linf / nf,
            mean_l2: a.l2 / nf,
            mean_confidence: a.confidence / nf,
            seconds,
            adversarial_correct_examples: Some(Bits(a.per_example)),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use advrob_attack::Fgsm;
    use advrob_data::idx::IdxImages;
    use advrob_model::backend::on_test_backends;
    use burn::tensor::Int;

    /// A classifier that says class 0 when the mean pixel is below 0.5, else class 1.
    struct Threshold;
    impl Classifier for Threshold {
        fn logits(&self, images: Tensor<3>) -> Tensor<2> {
            let [b, _, _] = images.dims();
            let m: Tensor<2> = images.reshape([b as i64, -1]).mean_dim(1);
            // logits (0.5 − m, m − 0.5) · 100
            Tensor::cat(vec![(m.clone().neg() + 0.5) * 100.0, (m - 0.5) * 100.0], 1)
        }
    }

    /// Moves every pixel up by ε (a fixed "attack" whose effect is known in advance).
    struct Brighten;
    impl Attack for Brighten {
        fn name(&self) -> String {
            "brighten".into()
        }
        fn info(&self) -> advrob_attack::AttackInfo {
            advrob_attack::AttackInfo::white_box(
                advrob_attack::Family::Other,
                advrob_attack::Norm::Linf,
                advrob_attack::AttackLoss::CrossEntropy,
                1,
            )
        }
        fn perturb(
            &self,
            _: &dyn Classifier,
            images: Tensor<3>,
            _: Tensor<1, Int>,
            eps: f64,
        ) -> advrob_attack::Result<Tensor<3>> {
            Ok((images + eps).clamp(0.0, 1.0))
        }
    }

    #[test]
    fn bits_round_trip_and_bad_strings_are_explained() {
        for n in [0usize, 1, 3, 4, 5, 17] {
            let b = Bits((0..n).map(|i| i % 3 == 0).collect());
            let s = b.encode();
            assert_eq!(Bits::decode(&s).expect("decode"), b, "{s}");
        }
        assert_eq!(Bits(vec![true, false, false, true, true]).encode(), "98:5");
        assert!(Bits::decode("9g:5").expect_err("digit").contains("'g'"));
        assert!(
            Bits::decode("98:9")
                .expect_err("length")
                .contains("expected 3")
        );
        assert!(
            Bits::decode("98")
                .expect_err("no length")
                .contains("length")
        );
    }

    fn split() -> Split {
        // four 1×2 images: means 0.2, 0.45, 0.8, 0.45 with labels 0, 0, 1, 1
        let px = |v: f32| (v * 255.0).round() as u8;
        Split {
            images: IdxImages {
                count: 4,
                rows: 1,
                cols: 2,
                pixels: vec![
                    px(0.2),
                    px(0.2),
                    px(0.45),
                    px(0.45),
                    px(0.8),
                    px(0.8),
                    px(0.45),
                    px(0.45),
                ],
            },
            labels: vec![0, 0, 1, 1],
        }
    }

    #[test]
    fn metrics_count_what_their_docs_say() {
        on_test_backends(|device| {
            let device = device.clone();
            let recs = evaluate(
                &Threshold,
                &Brighten,
                &split(),
                &[0.0, 0.1],
                3,
                &device,
                &mut |_, _| {},
            )
            .expect("evaluate");
            // clean: 0.2→0 ✓, 0.45→0 ✓, 0.8→1 ✓, 0.45→0 ✗ (label 1): 3 of 4
            let r0 = &recs[0];
            assert_eq!((r0.clean_correct, r0.adversarial_correct), (3, 3));
            assert_eq!(r0.success_rate, Some(0.0));
            assert!(r0.mean_linf.abs() < 1e-6);
            // ε = 0.1: 0.3→0 ✓, 0.55→1 ✗, 0.9→1 ✓, 0.55→1 ✓ (the attack fixes the 4th)
            let r1 = &recs[1];
            assert_eq!(r1.adversarial_correct, 3);
            // per example, across the batches of 3 and 1
            assert_eq!(
                r1.adversarial_correct_examples,
                Some(Bits(vec![true, false, true, true]))
            );
            assert_eq!(
                r0.adversarial_correct_examples,
                Some(Bits(vec![true, true, true, false]))
            );
            assert!((r1.adversarial_accuracy - 0.75).abs() < 1e-12);
            // success rate counts only the 3 clean-correct ones: 1 of them flipped
            assert!((r1.success_rate.expect("defined") - 1.0 / 3.0).abs() < 1e-12);
            // every pixel moved by 0.1 (none clipped): L∞ 0.1, L2 0.1·√2
            assert!((r1.mean_linf - 0.1).abs() < 1e-5, "{}", r1.mean_linf);
            assert!(
                (r1.mean_l2 - 0.1 * 2f64.sqrt()).abs() < 1e-5,
                "{}",
                r1.mean_l2
            );
            assert!(r1.mean_confidence > 0.5 && r1.mean_confidence <= 1.0);
        });
    }

    /// [`Brighten`], declared as targeted at class 1.
    struct BrightenTowardsOne;
    impl Attack for BrightenTowardsOne {
        fn name(&self) -> String {
            "brighten-to-1".into()
        }
        fn info(&self) -> advrob_attack::AttackInfo {
            advrob_attack::AttackInfo {
                targeted: true,
                ..Brighten.info()
            }
        }
        fn targets(
            &self,
            _: &dyn Classifier,
            _: Tensor<3>,
            labels: Tensor<1, Int>,
        ) -> advrob_attack::Result<Option<Tensor<1, Int>>> {
            Ok(Some(labels.ones_like()))
        }
        fn perturb(
            &self,
            m: &dyn Classifier,
            images: Tensor<3>,
            y: Tensor<1, Int>,
            eps: f64,
        ) -> advrob_attack::Result<Tensor<3>> {
            Brighten.perturb(m, images, y, eps)
        }
    }

    #[test]
    fn targeted_success_counts_predictions_equal_to_the_target() {
        on_test_backends(|device| {
            let device = device.clone();
            let recs = evaluate(
                &Threshold,
                &BrightenTowardsOne,
                &split(),
                &[0.0, 0.1],
                4,
                &device,
                &mut |_, _| {},
            )
            .expect("evaluate");
            // ε = 0: predictions 0, 0, 1, 0 → 1 of 4 equal the target 1
            assert_eq!(recs[0].targeted_success, Some(0.25));
            // ε = 0.1: predictions 0, 1, 1, 1 → 3 of 4
            assert_eq!(recs[1].targeted_success, Some(0.75));
            // untargeted attacks leave it empty
            let plain = evaluate(
                &Threshold,
                &Brighten,
                &split(),
                &[0.1],
                4,
                &device,
                &mut |_, _| {},
            )
            .expect("evaluate");
            assert_eq!(plain[0].targeted_success, None);
        });
    }

    #[test]
    fn fgsm_budget_is_respected_in_the_records() {
        on_test_backends(|device| {
            let model = advrob_model::MlpConfig::new()
                .with_hidden(vec![8])
                .init(device)
                .expect("init");
            let (images, labels) = advrob_data::synthetic::make_split(20, 3);
            let data = Split { images, labels };
            let recs = evaluate(
                &model,
                &Fgsm::new(),
                &data,
                &[0.05, 0.2],
                7,
                device,
                &mut |_, _| {},
            )
            .expect("evaluate");
            for r in recs {
                assert!(r.mean_linf <= r.eps + 1e-6, "{r:?}");
                assert_eq!(r.examples, 20);
            }
        });
    }

    #[test]
    fn host_norms_match_hand_computation() {
        // two examples of two values: deltas (0.3, −0.4) and (0, 0)
        let (linf, l2) = perturbation_norms(&[0.3, 0.6, 0.5, 0.5], &[0.0, 1.0, 0.5, 0.5], 2);
        assert!((linf - 0.4).abs() < 1e-6, "{linf}");
        assert!((l2 - 0.5).abs() < 1e-6, "{l2}");
    }

    #[test]
    fn negative_eps_is_refused() {
        on_test_backends(|device| {
            let err = evaluate(
                &Threshold,
                &Brighten,
                &split(),
                &[-0.1],
                2,
                device,
                &mut |_, _| {},
            )
            .expect_err("eps < 0");
            assert!(err.to_string().contains("eps"), "{err}");
        });
    }
}
