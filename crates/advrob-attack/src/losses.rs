//! Losses an attack ascends beside the cross-entropy: the difference-of-logits ratio of APGD and
//! AutoAttack, used by APGD-DLR, APGD-T and any attack whose loss is `dlr` ([`crate::grad`]).

use advrob_model::RowsLoss;
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

/// [`dlr_loss`] on host logits `[rows, classes]` (`rows` = `labels.len()`), with the gradient of the
/// losses' sum with respect to the logits: burn-ndarray's operations and its autodiff's in the
/// same order, so the same numbers (tested) without a tensor graph for a few hundred small rows.
/// `None` when a label or target is not a class, the logits are not `rows × classes`, or there
/// are fewer classes than the loss reads (3, targeted 4).
pub fn dlr_rows(
    logits: &[f32],
    labels: &[i64],
    targets: Option<&[i64]>,
    classes: usize,
) -> Option<RowsLoss> {
    let rows = labels.len();
    let needed = if targets.is_some() { 4 } else { 3 };
    if classes < needed
        || logits.len() != rows * classes
        || targets.is_some_and(|t| t.len() != rows)
    {
        return None;
    }
    let class = |c: i64| usize::try_from(c).ok().filter(|&c| c < classes);
    let mut loss = Vec::with_capacity(rows);
    let mut dlogits = vec![0.0f32; rows * classes];
    let mut order: Vec<usize> = Vec::with_capacity(classes);
    for (j, (z, d)) in logits
        .chunks_exact(classes)
        .zip(dlogits.chunks_exact_mut(classes))
        .enumerate()
    {
        let y = class(labels[j])?;
        // the classes by falling logit, ties in class order (burn's sort of a short row)
        order.clear();
        order.extend(0..classes);
        order.sort_by(|&a, &b| z[b].partial_cmp(&z[a]).unwrap_or(std::cmp::Ordering::Equal));
        let (r0, r2, r3) = (order[0], order[2], order[3.min(classes - 1)]);
        // the numerator's other class: the target, or the largest logit but the label's (the
        // first of equals, as burn's max_dim)
        let other = match targets {
            Some(t) => class(t[j])?,
            None => (0..classes)
                .filter(|&c| c != y)
                .reduce(|m, c| if z[c] > z[m] { c } else { m })?,
        };
        let den = match targets {
            Some(_) => z[r0] - (z[r2] + z[r3]) * 0.5 + 1e-12,
            None => z[r0] - z[r2] + 1e-12,
        };
        let num = z[other] - z[y];
        loss.push(num / den);
        // burn's division: 1/den for the numerator, −num/den² for the denominator; each
        // gathered logit's share added into the zeros (at most two shares meet in one class)
        let g_num = 1.0 / den;
        let g_den = -num / (den * den);
        d[other] += g_num;
        d[y] += -g_num;
        d[r0] += g_den;
        match targets {
            Some(_) => {
                d[r2] += -g_den * 0.5;
                d[r3] += -g_den * 0.5;
            }
            None => d[r2] += -g_den,
        }
    }
    Some(RowsLoss { loss, dlogits })
}

/// `z_t − z_y` of each row of the host logits `[rows, classes]` (FAB's boundary function, positive
/// once the target beats the label) with the gradient of its sum: +1 at the target, −1 at the
/// label. `None` when a label or target is not a class or the logits are not `rows × classes`.
pub fn difference_rows(
    logits: &[f32],
    labels: &[i64],
    targets: &[i64],
    classes: usize,
) -> Option<RowsLoss> {
    let rows = labels.len();
    if classes == 0 || logits.len() != rows * classes || targets.len() != rows {
        return None;
    }
    let class = |c: i64| usize::try_from(c).ok().filter(|&c| c < classes);
    let mut loss = Vec::with_capacity(rows);
    let mut dlogits = vec![0.0f32; rows * classes];
    for (j, (z, d)) in logits
        .chunks_exact(classes)
        .zip(dlogits.chunks_exact_mut(classes))
        .enumerate()
    {
        let (y, t) = (class(labels[j])?, class(targets[j])?);
        loss.push(z[t] - z[y]);
        d[t] += 1.0;
        d[y] += -1.0;
    }
    Some(RowsLoss { loss, dlogits })
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::TensorData;

    /// burn's loss of each row and the gradient of their sum with respect to the logits, through
    /// its autodiff on burn-ndarray.
    fn burns(
        logits: &[f32],
        rows: usize,
        classes: usize,
        loss: impl Fn(Tensor<2>) -> Tensor<1>,
    ) -> (Vec<f32>, Vec<f32>) {
        let device = advrob_model::backend::device("ndarray").expect("ndarray");
        let z = Tensor::<2>::from_data(TensorData::new(logits.to_vec(), [rows, classes]), &device)
            .autodiff()
            .require_grad();
        let l = loss(z.clone());
        let grads = l.clone().sum().backward();
        let dz = z.grad(&grads).expect("a gradient");
        let v = |t: Tensor<2>| t.into_data().try_into_vec_as::<f32>().expect("f32");
        let loss = l
            .without_autodiff()
            .into_data()
            .try_into_vec_as::<f32>()
            .expect("f32");
        (loss, v(dz))
    }

    fn same_bits(a: &[f32], b: &[f32], what: &str) {
        assert_eq!(a.len(), b.len(), "{what}: lengths");
        for (i, (x, y)) in a.iter().zip(b).enumerate() {
            assert!(
                x.to_bits() == y.to_bits() || x == y,
                "{what}[{i}]: host {x:e}, burn {y:e}"
            );
        }
    }

    #[test]
    fn host_losses_are_burns_to_the_bit() {
        let (rows, classes) = (64, 10);
        let mut rng = advrob_data::rng::SplitMix64::new(17);
        let mut logits: Vec<f32> = (0..rows * classes)
            .map(|_| (rng.next_f64() * 24.0 - 12.0) as f32)
            .collect();
        // rows with equal logits and a saturated row, where the ranks and maxima tie
        logits[..classes].iter_mut().for_each(|v| *v = 1.5);
        logits[classes + 3] = logits[classes + 7];
        logits[2 * classes..3 * classes]
            .iter_mut()
            .enumerate()
            .for_each(|(c, v)| *v = if c == 4 { 1e4 } else { -1e4 });
        let labels: Vec<i64> = (0..rows as i64).map(|i| (i * 7) % 10).collect();
        // targets that are the label, the top class, the runner-up and others
        let targets: Vec<i64> = (0..rows as i64).map(|i| (i * 3 + i / 10) % 10).collect();
        assert!(labels.iter().zip(&targets).any(|(y, t)| y == t));
        let device = advrob_model::backend::device("ndarray").expect("ndarray");
        let int =
            |v: &[i64]| Tensor::<1, Int>::from_data(TensorData::new(v.to_vec(), [rows]), &device);
        let autodiff_int = |v: &[i64]| int(v).autodiff();

        let host = dlr_rows(&logits, &labels, None, classes).expect("dlr");
        let (loss, dz) = burns(&logits, rows, classes, |z| {
            dlr_loss(z, autodiff_int(&labels), None)
        });
        same_bits(&host.loss, &loss, "dlr loss");
        same_bits(&host.dlogits, &dz, "dlr gradient");

        let host = dlr_rows(&logits, &labels, Some(&targets), classes).expect("targeted dlr");
        let (loss, dz) = burns(&logits, rows, classes, |z| {
            dlr_loss(z, autodiff_int(&labels), Some(autodiff_int(&targets)))
        });
        same_bits(&host.loss, &loss, "targeted dlr loss");
        same_bits(&host.dlogits, &dz, "targeted dlr gradient");

        let host = difference_rows(&logits, &labels, &targets, classes).expect("difference");
        let (loss, dz) = burns(&logits, rows, classes, |z| {
            let zt = z
                .clone()
                .gather(1, autodiff_int(&targets).reshape([rows, 1]));
            let zy = z.gather(1, autodiff_int(&labels).reshape([rows, 1]));
            (zt - zy).flatten::<1>(0, 1)
        });
        same_bits(&host.loss, &loss, "difference");
        same_bits(&host.dlogits, &dz, "difference gradient");

        // what the host versions refuse
        let three: Vec<i64> = labels.iter().map(|y| y % 3).collect();
        assert!(dlr_rows(&logits[..rows * 3], &three, None, 3).is_some());
        assert!(dlr_rows(&logits[..rows * 3], &three, Some(&three), 3).is_none());
        assert!(dlr_rows(&logits, &labels[..rows - 1], None, classes).is_none());
        let mut bad = labels.clone();
        bad[5] = 10;
        assert!(dlr_rows(&logits, &bad, None, classes).is_none());
        assert!(difference_rows(&logits, &labels, &bad, classes).is_none());
    }
}
