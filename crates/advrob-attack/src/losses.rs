//! Losses an attack ascends beside the cross-entropy: the difference-of-logits ratio of APGD and
//! AutoAttack, used by APGD-DLR, APGD-T and any attack whose loss is `dlr` ([`crate::grad`]).

use burn::tensor::{Int, Tensor};

/// The difference-of-logits ratio of each example (Croce & Hein 2020, eq. 5), or its targeted
/// version against `targets`.
///
/// # Shapes
///
/// - logits: `[B, classes]` with classes ≥ 3 (≥ 4 targeted), labels and targets: `[B]`, output:
///   `[B]`
pub fn dlr_loss(
    logits: Tensor<2>,
    labels: Tensor<1, Int>,
    targets: Option<Tensor<1, Int>>,
) -> Tensor<1> {
    let [b, classes] = logits.dims();
    let order = logits.clone().detach().argsort_descending(1);
    let z = logits.clone();
    let ranked = |k: usize| {
        z.clone()
            .gather(1, order.clone().slice([0..b, k..k + 1]))
            .flatten::<1>(0, 1)
    };
    let own = logits
        .clone()
        .gather(1, labels.clone().reshape([b, 1]))
        .flatten::<1>(0, 1);
    match targets {
        None => {
            let is_label = labels.one_hot(classes).equal_elem(1);
            let other = logits
                .mask_fill(is_label, f32::NEG_INFINITY)
                .max_dim(1)
                .flatten::<1>(0, 1);
            (other - own) / (ranked(0) - ranked(2) + 1e-12)
        }
        Some(t) => {
            let target = logits.gather(1, t.reshape([b, 1])).flatten::<1>(0, 1);
            (target - own) / (ranked(0) - (ranked(2) + ranked(3)) * 0.5 + 1e-12)
        }
    }
}
