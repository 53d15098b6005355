//! The evaluation loop: a model under an attack over an ε grid, batch after batch, into one
//! [`EvalRecord`] per ε.

use std::cell::Cell;
use std::time::Instant;

use advrob_attack::{Attack, project};
use advrob_data::{Split, range_tensors};
use advrob_model::Classifier;
use burn::tensor::activation::softmax;
use burn::tensor::{Device, Int, Tensor};

use crate::counting::Counting;
use crate::record::{Bits, ComponentResult, Costs, EvalRecord, MinNorm, Passes};
use crate::{EvalError, Result};
use crate::{host, host_int};

#[derive(Default, Clone)]
struct Acc {
    adv_correct: i64,
    per_example: Vec<bool>,
    flipped: i64,
    target_hits: i64,
    linf: f64,
    l2: f64,
    confidence: f64,
    /// Ensembles: per component, the examples it broke first.
    broken: Vec<usize>,
    /// Ensembles: per component, the examples it was run on.
    attacked: Vec<usize>,
    /// Minimum-norm attacks: ε* of every clean-correct example.
    min_norms: Option<Vec<f64>>,
    /// Ensembles whose components count their passes: the cost of every broken example, and the
    /// most spent on any example.
    first_success: Vec<u64>,
    most_passes: u64,
    /// Whether a batch came without costs (a single attack, or a component that does not count).
    uncounted: bool,
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

/// Refuses a batch size of 0 and an ε that is negative or not finite.
pub(crate) fn check_request(eps: &[f64], batch_size: usize) -> Result<()> {
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

/// What an attack produced for one batch at one ε.
struct Attacked {
    images: Tensor<4>,
    /// Ensembles: per example, the component that broke it.
    broken_by: Option<Vec<Option<usize>>>,
    /// Ensembles: per component, the examples it was run on.
    attacked: Option<Vec<usize>>,
    /// Minimum-norm attacks: per example, ε*.
    min_norms: Option<Vec<f64>>,
    /// Ensembles: per example, the passes up to its first break, or all of them.
    costs: Option<Vec<u64>>,
}

/// The attack's images for one batch at every ε: a grid for a single attack, the cascade of an
/// ensemble (with who broke what), one run projected onto each ε for a minimum-norm attack.
fn attack_batch(
    model: &dyn Classifier,
    attack: &dyn Attack,
    x: Tensor<4>,
    y: Tensor<1, Int>,
    eps: &[f64],
    seed: u64,
) -> Result<Vec<Attacked>> {
    if !attack.components().is_empty() {
        let runs = advrob_attack::cascade(model, attack.components(), x, y, eps, seed)?;
        return Ok(runs
            .into_iter()
            .map(|c| Attacked {
                images: c.images,
                broken_by: Some(c.broken_by),
                attacked: Some(c.attacked),
                min_norms: None,
                costs: c.costs,
            })
            .collect());
    }
    if let Some((best, norms)) = attack.minimum_norm(model, x.clone(), y.clone(), seed)? {
        let norm = attack.info().norm;
        return Ok(eps
            .iter()
            .map(|&e| Attacked {
                images: (x.clone() + project(best.clone() - x.clone(), norm, e)).clamp(0.0, 1.0),
                broken_by: None,
                attacked: None,
                min_norms: Some(norms.clone()),
                costs: None,
            })
            .collect());
    }
    Ok(attack
        .perturb_grid(model, x, y, eps, seed)?
        .into_iter()
        .map(|images| Attacked {
            images,
            broken_by: None,
            attacked: None,
            min_norms: None,
            costs: None,
        })
        .collect())
}

/// One batch's results at one ε, added to `acc`.
struct BatchView<'a> {
    y: &'a Tensor<1, Int>,
    clean_ok: &'a [bool],
    targets: Option<&'a Tensor<1, Int>>,
    x_host: &'a [f32],
    size: usize,
}

impl BatchView<'_> {
    fn add(&self, model: &dyn Classifier, acc: &mut Acc, attacked: Attacked) -> Result<()> {
        let adv = attacked.images.without_autodiff();
        let probs = softmax(model.logits(adv.clone()), 1);
        let conf = probs.clone().max_dim(1).flatten::<1>(0, 1);
        let pred = probs.argmax(1).flatten::<1>(0, 1);
        if let Some(t) = self.targets {
            acc.target_hits += pred
                .clone()
                .equal(t.clone())
                .int()
                .sum()
                .into_scalar::<i64>();
        }
        let adv_ok = host_int(pred.equal(self.y.clone()).int())?;
        for (ok, clean) in adv_ok.iter().zip(self.clean_ok) {
            let robust = *ok != 0 && *clean;
            acc.adv_correct += i64::from(robust);
            acc.flipped += i64::from(*clean && *ok == 0);
            acc.per_example.push(robust);
        }
        match &attacked.costs {
            Some(costs) => {
                for ((ok, clean), c) in adv_ok.iter().zip(self.clean_ok).zip(costs) {
                    if *clean && *ok == 0 {
                        acc.first_success.push(*c);
                    }
                }
                let batch_most = costs.iter().copied().max().unwrap_or(0);
                acc.most_passes = acc.most_passes.max(batch_most);
            }
            None => acc.uncounted = true,
        }
        let (linf, l2) = perturbation_norms(&host(adv)?, self.x_host, self.size);
        acc.linf += linf;
        acc.l2 += l2;
        acc.confidence += f64::from(conf.sum().into_scalar::<f32>());
        if let Some(by) = attacked.broken_by {
            for b in by.into_iter().flatten() {
                if acc.broken.len() <= b {
                    acc.broken.resize(b + 1, 0);
                }
                acc.broken[b] += 1;
            }
        }
        if let Some(runs) = attacked.attacked {
            if acc.attacked.len() < runs.len() {
                acc.attacked.resize(runs.len(), 0);
            }
            for (total, n) in acc.attacked.iter_mut().zip(runs) {
                *total += n;
            }
        }
        if let Some(norms) = attacked.min_norms {
            acc.min_norms.get_or_insert_with(Vec::new).extend(
                norms
                    .iter()
                    .zip(self.clean_ok)
                    .filter(|(_, c)| **c)
                    .map(|(n, _)| *n),
            );
        }
        Ok(())
    }
}

/// What an evaluation runs on and how ([`evaluate`]).
#[derive(Debug, Clone, Copy)]
pub struct EvalRequest<'a> {
    /// The examples, in order.
    pub data: &'a Split,
    /// The budgets, each evaluated on every example.
    pub eps: &'a [f64],
    /// Examples per batch.
    pub batch_size: usize,
    /// The run's seed; each batch's attack seed is derived from it and the batch's first example.
    pub seed: u64,
    /// Where the model computes.
    pub device: &'a Device,
}

/// Evaluates `model` against `attack` at every ε of `eps` on `data`, in batches of `batch_size`.
/// `seed` (the run's) is mixed with each batch's first example into the seed of the attack's
/// random draws, so that batches draw independently. `on_batch(done, total)` is called after
/// each batch, for progress bars.
///
/// The attack sees the true labels; the model is used in inference mode throughout. An
/// ensemble ([`Attack::components`]) runs as a cascade, each component on what the earlier ones
/// left robust, and the records say which broke how many examples.
pub fn evaluate(
    model: &dyn Classifier,
    attack: &dyn Attack,
    request: &EvalRequest<'_>,
    on_batch: &mut dyn FnMut(usize, usize),
) -> Result<Vec<EvalRecord>> {
    let EvalRequest {
        data,
        eps,
        batch_size,
        seed,
        device,
    } = *request;
    check_request(eps, batch_size)?;
    if data.is_empty() {
        return Err(EvalError::Invalid {
            field: "data",
            reason: "no examples to evaluate".into(),
        });
    }
    let start = Instant::now();
    let passes = Cell::new(Passes::default());
    let counted = Counting {
        inner: model,
        passes: &passes,
    };
    let n = data.len();
    let total = n.div_ceil(batch_size);
    let size = data.image_size();
    let mut clean_correct = 0usize;
    let mut accs = vec![Acc::default(); eps.len()];
    let mut targeted = false;
    for (bi, s) in (0..n).step_by(batch_size).enumerate() {
        let (x, y) = range_tensors(data, s, batch_size, device);
        let [b] = y.dims();
        // the clean images on the host, exactly as `range_tensors` scaled them
        let x_host: Vec<f32> = data.images.pixels[s * size..(s + b) * size]
            .iter()
            .map(|&p| advrob_data::unit_pixel(p))
            .collect();
        let clean_pred = counted.logits(x.clone()).argmax(1).flatten::<1>(0, 1);
        let clean_ok: Vec<bool> = host_int(clean_pred.equal(y.clone()).int())?
            .iter()
            .map(|v| *v != 0)
            .collect();
        clean_correct += clean_ok.iter().filter(|c| **c).count();
        let targets = attack.targets(&counted, x.clone(), y.clone())?;
        targeted |= targets.is_some();
        let batch_seed = advrob_attack::mix_seed(&[seed, s as u64]);
        let attacked = attack_batch(&counted, attack, x, y.clone(), eps, batch_seed)?;
        let view = BatchView {
            y: &y,
            clean_ok: &clean_ok,
            targets: targets.as_ref(),
            x_host: &x_host,
            size,
        };
        for (acc, a) in accs.iter_mut().zip(attacked) {
            view.add(&counted, acc, a)?;
        }
        on_batch(bi + 1, total);
    }
    let totals = Totals {
        n,
        clean_correct,
        targeted,
        seconds: start.elapsed().as_secs_f64(),
        passes: passes.get(),
    };
    Ok(eps
        .iter()
        .zip(accs)
        .map(|(&e, a)| record(attack, e, &totals, a))
        .collect())
}

/// What every ε of one evaluation shares: the examples, how many were correct before the attack,
/// whether the attack was targeted, the time and the model passes it took.
struct Totals {
    n: usize,
    clean_correct: usize,
    targeted: bool,
    seconds: f64,
    passes: Passes,
}

/// The record of one ε from its accumulated counts.
fn record(attack: &dyn Attack, eps: f64, totals: &Totals, a: Acc) -> EvalRecord {
    let Totals {
        n,
        clean_correct,
        targeted,
        seconds,
        passes,
    } = *totals;
    let nf = n.max(1) as f64;
    let components = (!attack.components().is_empty()).then(|| {
        attack
            .components()
            .iter()
            .enumerate()
            .map(|(i, c)| ComponentResult {
                attack: c.name(),
                info: c.info(),
                broken: a.broken.get(i).copied().unwrap_or(0),
                attacked: Some(a.attacked.get(i).copied().unwrap_or(0)),
            })
            .collect()
    });
    let min_norm = a.min_norms.map(|mut v| {
        v.sort_by(f64::total_cmp);
        let median = v.get(v.len() / 2).copied().filter(|m| m.is_finite());
        MinNorm {
            found: v.iter().filter(|m| m.is_finite()).count(),
            attacked: v.len(),
            median,
        }
    });
    EvalRecord {
        eps,
        examples: n,
        clean_correct,
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
        components,
        min_norm,
        passes: Some(passes),
        costs: (!a.uncounted).then(|| {
            let mut first_success = a.first_success;
            first_success.sort_unstable();
            Costs {
                first_success,
                most: a.most_passes,
            }
        }),
    }
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
        fn logits(&self, images: Tensor<4>) -> Tensor<2> {
            let [b, ..] = images.dims();
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
        fn perturb_seeded(
            &self,
            _: &dyn Classifier,
            images: Tensor<4>,
            _: Tensor<1, Int>,
            eps: f64,
            _: u64,
        ) -> advrob_attack::Result<Tensor<4>> {
            Ok((images + eps).clamp(0.0, 1.0))
        }
    }

    /// Records the seed of every call.
    struct Seeds(std::cell::RefCell<Vec<u64>>);
    impl Attack for Seeds {
        fn name(&self) -> String {
            "seeds".into()
        }
        fn info(&self) -> advrob_attack::AttackInfo {
            Brighten.info()
        }
        fn perturb_seeded(
            &self,
            m: &dyn Classifier,
            images: Tensor<4>,
            y: Tensor<1, Int>,
            eps: f64,
            seed: u64,
        ) -> advrob_attack::Result<Tensor<4>> {
            self.0.borrow_mut().push(seed);
            Brighten.perturb(m, images, y, eps)
        }
    }

    #[test]
    fn every_batch_draws_from_its_own_seed() {
        on_test_backends(|device| {
            let run = |seed: u64| {
                let attack = Seeds(std::cell::RefCell::new(Vec::new()));
                on_split(&attack, &[0.1], 1, seed, device).expect("evaluate");
                attack.0.into_inner()
            };
            let a = run(42);
            let mut distinct = a.clone();
            distinct.sort_unstable();
            distinct.dedup();
            assert_eq!(distinct.len(), 4, "four batches, four seeds: {a:?}");
            assert_eq!(run(42), a, "the same run seed, the same draws");
            assert_ne!(run(43), a, "another run seed, other draws");
        });
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

    /// [`evaluate`] of [`Threshold`] under `attack` on [`split`], nothing reported per batch.
    fn on_split(
        attack: &dyn Attack,
        eps: &[f64],
        batch_size: usize,
        seed: u64,
        device: &Device,
    ) -> Result<Vec<EvalRecord>> {
        let data = split();
        let request = EvalRequest {
            data: &data,
            eps,
            batch_size,
            seed,
            device,
        };
        evaluate(&Threshold, attack, &request, &mut |_, _| {})
    }

    fn split() -> Split {
        // four 1×2 images: means 0.2, 0.45, 0.8, 0.45 with labels 0, 0, 1, 1
        let px = |v: f32| (v * 255.0).round() as u8;
        Split {
            images: IdxImages {
                count: 4,
                channels: 1,
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

    /// An ensemble's record says what each component was run on: the clean-correct examples no
    /// earlier component and no smaller ε had broken; the rest are skipped.
    #[test]
    fn an_ensemble_record_says_what_each_component_attacked() {
        on_test_backends(|device| {
            let both: Vec<Box<dyn Attack>> = vec![Box::new(Brighten), Box::new(Brighten)];
            let ensemble = advrob_attack::Ensemble::new("twice", both).expect("ensemble");
            let recs = on_split(&ensemble, &[0.0, 0.1, 0.4], 3, 0, device).expect("evaluate");
            let counts = |r: &EvalRecord| -> Vec<(Option<usize>, usize)> {
                r.components
                    .as_ref()
                    .expect("components")
                    .iter()
                    .map(|c| (c.attacked, c.broken))
                    .collect()
            };
            // clean-correct: 0.2, 0.45, 0.8 (the 4th, 0.45 labelled 1, is skipped throughout)
            assert_eq!(counts(&recs[0]), vec![(Some(0), 0), (Some(0), 0)]);
            // ε = 0.1: the first runs on the 3 and breaks 0.45; the second on the 2 left
            assert_eq!(counts(&recs[1]), vec![(Some(3), 1), (Some(2), 0)]);
            // ε = 0.4: 0.45 carried over; the first runs on 0.2 and 0.8 and breaks 0.2 (0.6)
            assert_eq!(counts(&recs[2]), vec![(Some(2), 2), (Some(1), 0)]);
            assert_eq!(recs[2].adversarial_correct, 1);
        });
    }

    /// [`Brighten`], saying it spent `0` passes on every example.
    struct CostedBrighten(u64);
    impl Attack for CostedBrighten {
        fn name(&self) -> String {
            "costed-brighten".into()
        }
        fn info(&self) -> advrob_attack::AttackInfo {
            Brighten.info()
        }
        fn perturb_seeded(
            &self,
            model: &dyn Classifier,
            images: Tensor<4>,
            labels: Tensor<1, Int>,
            eps: f64,
            seed: u64,
        ) -> advrob_attack::Result<Tensor<4>> {
            Brighten.perturb_seeded(model, images, labels, eps, seed)
        }
        fn perturb_costed(
            &self,
            model: &dyn Classifier,
            images: Tensor<4>,
            labels: Tensor<1, Int>,
            eps: f64,
            seed: u64,
        ) -> advrob_attack::Result<(Tensor<4>, Option<Vec<u64>>)> {
            let b = images.dims()[0];
            let adv = self.perturb_seeded(model, images, labels, eps, seed)?;
            Ok((adv, Some(vec![self.0; b])))
        }
    }

    /// An ensemble's record keeps what each break cost: the cost curve starts at the clean
    /// accuracy, ends at the robust accuracy, and steps where the components broke examples.
    #[test]
    fn an_ensemble_record_keeps_the_cost_of_every_break() {
        on_test_backends(|device| {
            let parts: Vec<Box<dyn Attack>> =
                vec![Box::new(CostedBrighten(3)), Box::new(CostedBrighten(5))];
            let ensemble = advrob_attack::Ensemble::new("costed", parts).expect("ensemble");
            let recs = on_split(&ensemble, &[0.1, 0.4], 3, 0, device).expect("evaluate");
            // ε = 0.1: the first component breaks 0.45 after its 3 passes; the others had 3 + 5
            let c = recs[0].costs.as_ref().expect("costs");
            assert_eq!(c.first_success, vec![3]);
            assert_eq!(c.most, 8);
            // ε = 0.4: 0.2 broken by the first component after the 8 of ε 0.1 (11), 0.45 carried
            // over at 3; 0.8 stays robust after 16
            let c = recs[1].costs.as_ref().expect("costs");
            assert_eq!(c.first_success, vec![3, 11]);
            assert_eq!(c.most, 16);
            let r = &recs[1];
            assert_eq!(
                c.robust_at(0, r.clean_correct, r.examples),
                r.clean_accuracy
            );
            assert_eq!(c.robust_at(3, r.clean_correct, r.examples), 0.5);
            assert_eq!(
                c.robust_at(c.most, r.clean_correct, r.examples),
                r.adversarial_accuracy
            );
            // an ensemble of components that do not count, and a single attack: no costs
            let plain: Vec<Box<dyn Attack>> = vec![Box::new(Brighten)];
            let plain = advrob_attack::Ensemble::new("plain", plain).expect("ensemble");
            assert!(
                on_split(&plain, &[0.1], 3, 0, device).expect("evaluate")[0]
                    .costs
                    .is_none()
            );
            assert!(
                on_split(&Brighten, &[0.1], 3, 0, device).expect("evaluate")[0]
                    .costs
                    .is_none()
            );
        });
    }

    #[test]
    fn metrics_count_what_their_docs_say() {
        on_test_backends(|device| {
            let device = device.clone();
            let recs = on_split(&Brighten, &[0.0, 0.1], 3, 0, &device).expect("evaluate");
            // clean: 0.2→0 ✓, 0.45→0 ✓, 0.8→1 ✓, 0.45→0 ✗ (label 1): 3 of 4
            let r0 = &recs[0];
            assert_eq!((r0.clean_correct, r0.adversarial_correct), (3, 3));
            assert_eq!(r0.success_rate, Some(0.0));
            assert!(r0.mean_linf.abs() < 1e-6);
            // ε = 0.1: 0.3→0 ✓, 0.55→1 ✗, 0.9→1 ✓, 0.55→1 ✓ — but the attack "fixed" the 4th,
            // which was wrong before it: not robust. Robust accuracy never exceeds clean accuracy.
            let r1 = &recs[1];
            assert_eq!(r1.adversarial_correct, 2);
            assert!(r1.adversarial_accuracy <= r1.clean_accuracy);
            // per example, across the batches of 3 and 1
            assert_eq!(
                r1.adversarial_correct_examples,
                Some(Bits(vec![true, false, true, false]))
            );
            assert_eq!(
                r0.adversarial_correct_examples,
                Some(Bits(vec![true, true, true, false]))
            );
            assert!((r1.adversarial_accuracy - 0.5).abs() < 1e-12);
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
            _: Tensor<4>,
            labels: Tensor<1, Int>,
        ) -> advrob_attack::Result<Option<Tensor<1, Int>>> {
            Ok(Some(labels.ones_like()))
        }
        fn perturb_seeded(
            &self,
            m: &dyn Classifier,
            images: Tensor<4>,
            y: Tensor<1, Int>,
            eps: f64,
            _: u64,
        ) -> advrob_attack::Result<Tensor<4>> {
            Brighten.perturb(m, images, y, eps)
        }
    }

    #[test]
    fn targeted_success_counts_predictions_equal_to_the_target() {
        on_test_backends(|device| {
            let device = device.clone();
            let recs = on_split(&BrightenTowardsOne, &[0.0, 0.1], 4, 0, &device).expect("evaluate");
            // ε = 0: predictions 0, 0, 1, 0 → 1 of 4 equal the target 1
            assert_eq!(recs[0].targeted_success, Some(0.25));
            // ε = 0.1: predictions 0, 1, 1, 1 → 3 of 4
            assert_eq!(recs[1].targeted_success, Some(0.75));
            // untargeted attacks leave it empty
            let plain = on_split(&Brighten, &[0.1], 4, 0, &device).expect("evaluate");
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
                &EvalRequest {
                    data: &data,
                    eps: &[0.05, 0.2],
                    batch_size: 7,
                    seed: 0,
                    device,
                },
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
            let err = on_split(&Brighten, &[-0.1], 2, 0, device).expect_err("eps < 0");
            assert!(err.to_string().contains("eps"), "{err}");
        });
    }
}
