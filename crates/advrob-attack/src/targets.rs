//! How a targeted attack picks its target class, shared by FGSM, PGD and the ensembles.

use advrob_data::rng::SplitMix64;
use advrob_model::Classifier;
use burn::tensor::{Int, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use crate::error::{AttackError, Result};

/// How a targeted attack picks the class it pushes each example towards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub enum TargetRule {
    /// `(y + k) mod classes` (the seed-004 notebook uses k = 2).
    Shift(u32),
    /// The class the model finds least likely on the clean image (Kurakin et al. 2017).
    LeastLikely,
    /// A class other than the label, drawn uniformly from this seed (the same draws for every
    /// batch of the same labels).
    Random(u64),
}

impl TargetRule {
    /// The target class of each example; an error only when the labels cannot be read back
    /// (the random rule draws on the host).
    ///
    /// # Shapes
    ///
    /// - images: `[B, C, H, W]`, labels: `[B]`, output: `[B]`
    pub fn targets(
        &self,
        model: &dyn Classifier,
        images: Tensor<4>,
        labels: Tensor<1, Int>,
    ) -> Result<Tensor<1, Int>> {
        let images = images.without_autodiff();
        // the number of classes is all the other rules need of the model: one image's logits
        let classes = || model.logits(images.clone().slice(0..1)).dims()[1];
        Ok(match *self {
            TargetRule::Shift(k) => {
                let classes = classes();
                if (k as usize).is_multiple_of(classes) {
                    return Err(AttackError::Invalid {
                        field: "target",
                        reason: format!(
                            "a shift of {k} is a multiple of the {classes} classes: it targets the true label"
                        ),
                    });
                }
                labels
                    .add_scalar(i64::from(k))
                    .remainder_scalar(classes as i64)
            }
            TargetRule::LeastLikely => model.logits(images).argmin(1).flatten::<1>(0, 1),
            TargetRule::Random(seed) => {
                let classes = classes();
                let device = labels.device();
                let y = labels
                    .into_data()
                    .try_into_vec_as::<i64>()
                    .map_err(|e| AttackError::Readback(format!("{e:?}")))?;
                let mut rng = SplitMix64::new(seed);
                let t: Vec<i64> = y
                    .iter()
                    .map(|&l| {
                        // a uniform draw among the classes − 1 others, skipping the label
                        let r = rng.below(classes as u64 - 1) as i64;
                        if r >= l { r + 1 } else { r }
                    })
                    .collect();
                let n = t.len();
                Tensor::from_data(TensorData::new(t, [n]), &device)
            }
        })
    }

    /// Refuses a shift of 0, which targets the true label (a shift by a multiple of the class
    /// count is refused when the classes are known, in [`TargetRule::targets`]).
    pub fn check(&self) -> Result<()> {
        if *self == TargetRule::Shift(0) {
            return Err(AttackError::Invalid {
                field: "target",
                reason: "a shift of 0 targets the true label".into(),
            });
        }
        Ok(())
    }

    pub(crate) fn name(&self) -> String {
        match self {
            TargetRule::Shift(k) => format!("shift{k}"),
            TargetRule::LeastLikely => "least-likely".into(),
            TargetRule::Random(seed) => format!("random{seed}"),
        }
    }
}
