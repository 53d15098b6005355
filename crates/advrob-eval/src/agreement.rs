//! Cross-backend agreement: the same weights and the same attack run on two backends, compared
//! example by example. It measures the numerics of the backends, not training noise (the weights
//! are identical), and tells whether a result obtained on one backend holds on the other.

use advrob_attack::Attack;
use advrob_data::{Split, range_tensors};
use advrob_model::Classifier;
use burn::tensor::Device;
use serde::{Deserialize, Serialize};

use crate::{Result, host, host_int};

/// One model on one backend: the model must live on `device`.
#[derive(Clone, Copy)]
pub struct OnBackend<'a> {
    /// The model, with its weights on `device`.
    pub model: &'a dyn Classifier,
    /// Where the inputs are sent.
    pub device: &'a Device,
}

/// How far two backends agree on one model against one attack at one ε.
///
/// Every count is over all `examples` evaluated.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpsAgreement {
    /// The attack's budget (0: the clean inputs).
    pub eps: f64,
    /// Accuracy on backend A (on the inputs A's attack made).
    pub accuracy_a: f64,
    /// Accuracy on backend B (on the inputs B's attack made).
    pub accuracy_b: f64,
    /// Examples whose prediction differs between the backends.
    pub prediction_differs: usize,
    /// Examples whose adversarial input differs between the backends in at least one pixel by
    /// more than 1e-6 (FGSM takes the sign of the gradient: a component that is almost zero can
    /// have either sign on two backends, and the pixel then moves by 2ε).
    pub input_differs: usize,
    /// Largest absolute difference between the two adversarial inputs, over all pixels.
    pub max_input_diff: f64,
}

/// How far two backends agree on one model: logits on the clean test set and an attack per ε.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Agreement {
    /// Examples evaluated.
    pub examples: usize,
    /// Largest absolute difference between the clean logits of the two backends, over all
    /// examples and classes.
    pub max_logit_diff: f64,
    /// Mean absolute difference between the clean logits.
    pub mean_logit_diff: f64,
    /// Largest absolute clean logit on backend A: the scale `max_logit_diff` is to be read
    /// against (a model whose logits are scaled by 1000 differs by 1000 times more in absolute
    /// terms at the same relative precision).
    pub max_abs_logit: f64,
    /// Per ε of the grid, in its order.
    pub eps: Vec<EpsAgreement>,
}

/// Runs `attack` at every ε of `eps` with the model on both backends, each backend crafting its
/// own adversarial inputs from its own gradients (as a user of that backend would), and compares
/// logits, predictions and inputs. Batches of `batch_size` test examples.
pub fn agreement(
    a: OnBackend<'_>,
    b: OnBackend<'_>,
    attack: &dyn Attack,
    data: &Split,
    eps: &[f64],
    batch_size: usize,
) -> Result<Agreement> {
    crate::evaluate::check_request(eps, batch_size)?;
    let n = data.len();
    let (mut max_logit, mut sum_logit, mut logit_count) = (0.0f64, 0.0f64, 0usize);
    let mut max_abs_logit = 0.0f64;
    #[derive(Default, Clone)]
    struct Acc {
        correct_a: usize,
        correct_b: usize,
        pred_differs: usize,
        input_differs: usize,
        max_input_diff: f64,
    }
    let mut accs = vec![Acc::default(); eps.len()];
    let size = data.image_size();
    for s in (0..n).step_by(batch_size) {
        let (xa, ya) = range_tensors(data, s, batch_size, a.device);
        let (xb, yb) = range_tensors(data, s, batch_size, b.device);
        let labels = host_int(ya.clone())?;
        for (l, r) in host(a.model.logits(xa.clone()))?
            .iter()
            .zip(host(b.model.logits(xb.clone()))?)
        {
            let d = (f64::from(*l) - f64::from(r)).abs();
            max_abs_logit = max_abs_logit.max(f64::from(l.abs()));
            max_logit = max_logit.max(if d.is_nan() { f64::INFINITY } else { d });
            sum_logit += d;
            logit_count += 1;
        }
        let advs_a = attack.perturb_grid(a.model, xa, ya, eps, 0)?;
        let advs_b = attack.perturb_grid(b.model, xb, yb, eps, 0)?;
        for ((acc, adv_a), adv_b) in accs.iter_mut().zip(advs_a).zip(advs_b) {
            let (adv_a, adv_b) = (adv_a.without_autodiff(), adv_b.without_autodiff());
            let pa = host_int(a.model.logits(adv_a.clone()).argmax(1).flatten::<1>(0, 1))?;
            let pb = host_int(b.model.logits(adv_b.clone()).argmax(1).flatten::<1>(0, 1))?;
            for ((p, q), y) in pa.iter().zip(&pb).zip(&labels) {
                acc.correct_a += usize::from(p == y);
                acc.correct_b += usize::from(q == y);
                acc.pred_differs += usize::from(p != q);
            }
            for (ia, ib) in host(adv_a)?.chunks(size).zip(host(adv_b)?.chunks(size)) {
                let m = ia
                    .iter()
                    .zip(ib)
                    .map(|(p, q)| (f64::from(*p) - f64::from(*q)).abs())
                    .fold(0.0f64, f64::max);
                acc.input_differs += usize::from(m > 1e-6);
                acc.max_input_diff = acc.max_input_diff.max(m);
            }
        }
    }
    let nf = n.max(1) as f64;
    Ok(Agreement {
        examples: n,
        max_logit_diff: max_logit,
        mean_logit_diff: sum_logit / logit_count.max(1) as f64,
        max_abs_logit,
        eps: eps
            .iter()
            .zip(accs)
            .map(|(&e, a)| EpsAgreement {
                eps: e,
                accuracy_a: a.correct_a as f64 / nf,
                accuracy_b: a.correct_b as f64 / nf,
                prediction_differs: a.pred_differs,
                input_differs: a.input_differs,
                max_input_diff: a.max_input_diff,
            })
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use advrob_attack::Fgsm;
    use advrob_data::synthetic;
    use advrob_model::backend::on_test_backends;
    use advrob_model::{MlpConfig, checkpoint};

    /// The same weights on the same backend agree exactly; weights moved through a checkpoint to
    /// every compiled-in backend agree within float tolerance with the first one.
    #[test]
    fn a_model_agrees_with_itself_and_across_backends() {
        let ds = synthetic::dataset(10, 200, 3);
        let first = advrob_model::backend::test_devices().remove(0);
        let config = advrob_model::NetConfig::from(MlpConfig::new().with_hidden(vec![32]));
        let model = advrob_model::Deployed::plain(config.init(&first).expect("init"));
        let dir = tempfile::tempdir().expect("tmp");
        checkpoint::save(&model, &config, dir.path()).expect("save");
        let eps = [0.0, 0.1, 0.3];
        let same = agreement(
            OnBackend {
                model: &model,
                device: &first,
            },
            OnBackend {
                model: &model,
                device: &first,
            },
            &Fgsm::new(),
            &ds.test,
            &eps,
            64,
        )
        .expect("agreement");
        assert_eq!(same.examples, 200);
        assert_eq!(same.max_logit_diff, 0.0);
        for e in &same.eps {
            assert_eq!((e.prediction_differs, e.input_differs), (0, 0), "{e:?}");
            assert_eq!(e.accuracy_a, e.accuracy_b);
        }
        on_test_backends(|device| {
            let (other, _, _) = checkpoint::load(dir.path(), device).expect("load");
            let r = agreement(
                OnBackend {
                    model: &model,
                    device: &first,
                },
                OnBackend {
                    model: &other,
                    device,
                },
                &Fgsm::new(),
                &ds.test,
                &eps,
                64,
            )
            .expect("agreement");
            assert!(r.max_logit_diff < 1e-3, "{r:?}");
            // the clean inputs are the same on both sides
            assert_eq!(r.eps[0].input_differs, 0, "{r:?}");
            for e in &r.eps {
                assert!(e.max_input_diff <= 2.0 * e.eps + 1e-6, "{e:?}");
            }
        });
    }

    #[test]
    fn zero_batch_is_refused() {
        let ds = synthetic::dataset(10, 10, 3);
        let device = advrob_model::backend::test_devices().remove(0);
        let model = MlpConfig::new().init(&device).expect("init");
        let side = OnBackend {
            model: &model,
            device: &device,
        };
        let err = agreement(side, side, &Fgsm::new(), &ds.test, &[0.1], 0).expect_err("batch 0");
        assert!(err.to_string().contains("batch_size"), "{err}");
    }
}
