//! Several attacks as one, in the protocol of AutoAttack (Croce & Hein 2020): each runs only on
//! the examples that every earlier one left correctly classified, so the strong-but-slow attacks
//! spend their budget where it is still needed, and the result is the per-example worst case.
//!
//! Over an ε grid the cascade goes from the smallest budget up: an example broken at ε₁ is broken
//! at every ε₂ > ε₁ by the same image (it lies in the larger ball too), so only the examples still
//! robust at the previous budget are attacked again. This is exact, not an approximation, for
//! attacks that respect their budget in one norm — which [`Ensemble::new`] requires.

use advrob_model::Classifier;
use burn::tensor::{Int, Tensor, TensorData};

use crate::Attack;
use crate::error::{AttackError, Result, check_eps};
use crate::info::{Access, AttackInfo, Family};
use crate::rows::{Ledger, host, host_int, mix_seed, select_rows};

/// Attacks run in turn on what is still robust. Built from its components with [`Ensemble::new`].
pub struct Ensemble {
    name: String,
    attacks: Vec<Box<dyn Attack>>,
}

/// The result of [`cascade`] at one ε.
#[derive(Debug, Clone)]
pub struct Cascade {
    /// The adversarial images (the clean image where no component broke the example).
    pub images: Tensor<4>,
    /// Per example, the component that broke it: `None` when it stayed robust or was already
    /// misclassified without attack.
    pub broken_by: Vec<Option<usize>>,
    /// Per component, the examples it was run on at this ε: those classified correctly without
    /// attack that no earlier component, at this ε or a smaller one, had broken. The others are
    /// skipped: attacking them could not change a number.
    pub attacked: Vec<usize>,
    /// Per example, the model passes the components spent on it
    /// ([`Attack::perturb_costed`]) — at this ε and every smaller one of the grid — up to the
    /// pass that first broke it, or all of them where none did; `None` when a component does not
    /// count its passes. The cascade's own clean and checking passes are not in it.
    pub costs: Option<Vec<u64>>,
}

impl Ensemble {
    /// The ensemble `name` of `attacks`, in order. Refuses an empty list, a targeted component (its
    /// success is not a misclassification), one that breaks its budget, and components of
    /// different norms.
    pub fn new(name: impl Into<String>, attacks: Vec<Box<dyn Attack>>) -> Result<Self> {
        let first = attacks.first().ok_or_else(|| AttackError::Invalid {
            field: "attacks",
            reason: "an ensemble needs at least one attack".into(),
        })?;
        let norm = first.info().norm;
        for a in &attacks {
            let info = a.info();
            let bad = |reason: String| AttackError::Invalid {
                field: "attacks",
                reason,
            };
            if info.targeted {
                return Err(bad(format!("{} is targeted", a.name())));
            }
            if !info.bounded {
                return Err(bad(format!("{} breaks its budget", a.name())));
            }
            if info.norm != norm {
                return Err(bad(format!(
                    "{} is not in the norm of {}",
                    a.name(),
                    first.name()
                )));
            }
        }
        Ok(Self {
            name: name.into(),
            attacks,
        })
    }
}

impl Attack for Ensemble {
    fn name(&self) -> String {
        self.name.clone()
    }

    /// The strongest access of its components (white-box if any is), their norm, the largest
    /// number of steps, bounded.
    fn info(&self) -> AttackInfo {
        let infos: Vec<AttackInfo> = self.attacks.iter().map(|a| a.info()).collect();
        let access = if infos.iter().any(|i| i.access == Access::WhiteBox) {
            Access::WhiteBox
        } else if infos.iter().any(|i| i.access == Access::BlackBox) {
            Access::BlackBox
        } else {
            Access::Transfer
        };
        AttackInfo {
            family: Family::Ensemble,
            norm: infos[0].norm,
            loss: None,
            steps: infos.iter().map(|i| i.steps).max().unwrap_or(1),
            restarts: 1,
            targeted: false,
            labels: infos[0].labels,
            adaptive: infos.iter().any(|i| i.adaptive),
            bounded: true,
            access,
        }
    }

    fn components(&self) -> &[Box<dyn Attack>] {
        &self.attacks
    }

    fn perturb_seeded(
        &self,
        model: &dyn Classifier,
        images: Tensor<4>,
        labels: Tensor<1, Int>,
        eps: f64,
        seed: u64,
    ) -> Result<Tensor<4>> {
        Ok(self
            .perturb_grid(model, images, labels, &[eps], seed)?
            .remove(0))
    }

    fn perturb_grid(
        &self,
        model: &dyn Classifier,
        images: Tensor<4>,
        labels: Tensor<1, Int>,
        eps: &[f64],
        seed: u64,
    ) -> Result<Vec<Tensor<4>>> {
        Ok(cascade(model, &self.attacks, images, labels, eps, seed)?
            .into_iter()
            .map(|c| c.images)
            .collect())
    }
}

/// Runs `attacks` in turn at every ε of `eps` on the examples still robust — correctly classified
/// clean and by every earlier attack, and at every smaller ε — and records which attack broke
/// each example. The results come in the order of `eps`.
///
/// # Shapes
///
/// - images: `[B, C, H, W]`, labels: `[B]`; each result's images `[B, C, H, W]`
pub fn cascade(
    model: &dyn Classifier,
    attacks: &[Box<dyn Attack>],
    images: Tensor<4>,
    labels: Tensor<1, Int>,
    eps: &[f64],
    seed: u64,
) -> Result<Vec<Cascade>> {
    for &e in eps {
        check_eps(e)?;
    }
    let x = images.without_autodiff();
    let y = labels.without_autodiff();
    let dims = x.dims();
    let [b, c, h, w] = dims;
    let size = c * h * w;
    let device = x.device();
    let y_host = host_int(y.clone())?;
    let clean_pred = host_int(model.logits(x.clone()).argmax(1).flatten::<1>(0, 1))?;
    let mut current = host(x.clone())?;
    let mut broken_by: Vec<Option<usize>> = vec![None; b];
    let mut ledger = Ledger::new(b);
    let mut costed = true;
    let mut order: Vec<usize> = (0..eps.len()).collect();
    order.sort_by(|&i, &j| eps[i].total_cmp(&eps[j]));
    let mut out: Vec<Option<Cascade>> = vec![None; eps.len()];
    for &k in &order {
        // no budget, nothing to attack: every image stays what it is
        let mut attacked = vec![0; attacks.len()];
        let active = if eps[k] > 0.0 { attacks } else { &[] };
        for (a, attack) in active.iter().enumerate() {
            let rows: Vec<usize> = (0..b)
                .filter(|&i| clean_pred[i] == y_host[i] && broken_by[i].is_none())
                .collect();
            attacked[a] = rows.len();
            if rows.is_empty() {
                break;
            }
            let xs = select_rows(x.clone(), &rows);
            let ys = select_rows(y.clone(), &rows);
            let (adv, costs) =
                attack.perturb_costed(model, xs, ys, eps[k], mix_seed(&[seed, a as u64]))?;
            let adv = adv.without_autodiff();
            costed &= costs.is_some();
            let costs = costs.unwrap_or_default();
            let pred = host_int(model.logits(adv.clone()).argmax(1).flatten::<1>(0, 1))?;
            let pixels = host(adv)?;
            for (j, &row) in rows.iter().enumerate() {
                let cost = costs.get(j).copied().unwrap_or(0);
                if pred[j] != y_host[row] {
                    broken_by[row] = Some(a);
                    ledger.succeed(row, cost);
                    current[row * size..(row + 1) * size]
                        .copy_from_slice(&pixels[j * size..(j + 1) * size]);
                }
                ledger.charge(row, cost);
            }
        }
        out[k] = Some(Cascade {
            images: Tensor::from_data(TensorData::new(current.clone(), dims), &device),
            broken_by: broken_by.clone(),
            attacked,
            costs: costed.then(|| ledger.costs()),
        });
    }
    Ok(out.into_iter().flatten().collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{AttackLoss, Fgsm, Norm, PgdConfig};
    use advrob_model::backend::on_test_backends;
    use std::cell::RefCell;
    use std::rc::Rc;

    /// A classifier that says class 0 when the mean pixel is below 0.5, else class 1.
    struct Threshold;
    impl Classifier for Threshold {
        fn logits(&self, images: Tensor<4>) -> Tensor<2> {
            let [b, ..] = images.dims();
            let m: Tensor<2> = images.reshape([b as i64, -1]).mean_dim(1);
            Tensor::cat(vec![(m.clone().neg() + 0.5) * 100.0, (m - 0.5) * 100.0], 1)
        }
    }

    /// Moves every pixel up by `share`·ε and records how many examples it was run on.
    struct Up {
        share: f64,
        seen: Rc<RefCell<Vec<usize>>>,
    }
    impl Attack for Up {
        fn name(&self) -> String {
            format!("up-{}", self.share)
        }
        fn info(&self) -> AttackInfo {
            AttackInfo::white_box(Family::Other, Norm::Linf, AttackLoss::CrossEntropy, 1)
        }
        fn perturb_seeded(
            &self,
            _: &dyn Classifier,
            images: Tensor<4>,
            _: Tensor<1, Int>,
            eps: f64,
            _: u64,
        ) -> Result<Tensor<4>> {
            self.seen.borrow_mut().push(images.dims()[0]);
            Ok((images + eps * self.share).clamp(0.0, 1.0))
        }
    }

    #[test]
    fn each_attack_runs_on_what_the_earlier_ones_left_and_breaks_carry_to_larger_eps() {
        on_test_backends(|device| {
            // 1×1 images, all of class 0 (below 0.5): 0.1, 0.3, 0.42, 0.48, 0.7 (the last one is
            // misclassified without attack)
            let x = Tensor::<4>::from_data(
                TensorData::new(vec![0.1f32, 0.3, 0.42, 0.48, 0.7], [5, 1, 1, 1]),
                device,
            );
            let y = Tensor::<1, Int>::zeros([5], device);
            let (weak_seen, strong_seen) = (Rc::default(), Rc::default());
            let weak = Up {
                share: 0.5,
                seen: Rc::clone(&weak_seen),
            };
            let strong = Up {
                share: 1.0,
                seen: Rc::clone(&strong_seen),
            };
            let attacks: Vec<Box<dyn Attack>> = vec![Box::new(weak), Box::new(strong)];
            // ε = 0.1: weak moves 0.05 (breaks 0.48), strong 0.1 (breaks 0.42);
            // ε = 0.25: weak moves 0.125 (breaks none of 0.1, 0.3 left), strong 0.25 (breaks 0.3)
            let runs = cascade(&Threshold, &attacks, x, y, &[0.25, 0.1, 0.0], 0).expect("cascade");
            let at_01 = &runs[1].broken_by;
            assert_eq!(at_01, &vec![None, None, Some(1), Some(0), None]);
            assert_eq!(
                runs[0].broken_by,
                vec![None, Some(1), Some(1), Some(0), None]
            );
            // the runs only saw the robust examples: at 0.1, weak 4 (not the misclassified 0.7),
            // strong the 3 weak left; at 0.25 only the 2 still robust at 0.1, for both
            assert_eq!(*weak_seen.borrow(), vec![4, 2]);
            assert_eq!(*strong_seen.borrow(), vec![3, 2]);
            // and each run says so; at ε = 0 nothing is attacked
            assert_eq!(runs[1].attacked, vec![4, 3]);
            assert_eq!(runs[0].attacked, vec![2, 2]);
            assert_eq!(runs[2].attacked, vec![0, 0]);
            assert_eq!(runs[2].broken_by, vec![None; 5]);
        });
    }

    #[test]
    fn the_ensemble_refuses_what_cannot_be_a_robust_figure() {
        let fgsm = || Box::new(Fgsm::new()) as Box<dyn Attack>;
        assert!(Ensemble::new("e", vec![]).is_err());
        let targeted = Box::new(Fgsm::new().with_target(crate::TargetRule::Shift(1)));
        assert!(Ensemble::new("e", vec![fgsm(), targeted]).is_err());
        let cumulative = Box::new(Fgsm::new().with_cumulative(true));
        assert!(Ensemble::new("e", vec![cumulative]).is_err());
        let l2 = Box::new(PgdConfig::l2(5).check().expect("pgd"));
        let e = Ensemble::new("e", vec![fgsm(), l2])
            .err()
            .expect("mixed norms");
        assert!(e.to_string().contains("norm"), "{e}");
        let ok = Ensemble::new("e", vec![fgsm()]).expect("ensemble");
        assert_eq!(ok.components().len(), 1);
        assert_eq!(ok.info().family, Family::Ensemble);
    }
}
