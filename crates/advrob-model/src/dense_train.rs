//! An MLP's training pass on the host: the forward pass with its dropout masks and the backward
//! pass to every weight and bias, as a few matrix products over host memory and the rayon pool,
//! computing burn-ndarray's autodiff numbers to the bit (tested).
//!
//! Each step is the f32 operation burn performs, in its order: forward, the product and then the
//! bias (burn's `linear`), ReLU, the mask multiplied in (inverted dropout); backward, the weight
//! gradient as the product of the transposed inputs with the output gradient
//! (`linear_weight_backward`), the bias gradient as the output gradient's rows added one after
//! the other from zero (ndarray's `sum_axis` along the batch, the strided axis), the input
//! gradient as the product with the transposed weight, the mask multiplied in and ReLU's zeros
//! where its output was not positive (`relu_backward`). The products are [`crate::matmul`]'s,
//! matrixmultiply's sums. [`HostAdam`] is burn-optim's Adam with its f32 operations in its order,
//! and [`cross_entropy`] burn's cross-entropy against labels, value and gradient. Other losses and
//! a hook's change to the logits stay in burn, on the small logits tensor ([`crate::train`]).

use advrob_data::rng::SplitMix64;

use crate::dense::DenseLayer;
use crate::matmul::{self, Rhs};

/// Inverted dropout's mask for `len` units: `1/(1−p)` where a unit is kept (with probability
/// `1 − p`), 0 where it is dropped, drawn from `rng` unit by unit.
pub(crate) fn dropout_mask(len: usize, p: f64, rng: &mut SplitMix64) -> Vec<f32> {
    let keep = 1.0 - p;
    let scale = (1.0 / keep) as f32;
    (0..len)
        .map(|_| if rng.next_f64() < keep { scale } else { 0.0 })
        .collect()
}

/// What the backward pass needs of a training forward pass.
pub(crate) struct TrainForward {
    rows: usize,
    /// Each hidden layer's output after ReLU, before dropout.
    relu: Vec<Vec<f32>>,
    /// Each hidden layer's dropout mask (`None` without dropout).
    masks: Vec<Option<Vec<f32>>>,
    /// The input of every layer but the first: the hidden layer before it after ReLU and dropout.
    inputs: Vec<Vec<f32>>,
    /// `[rows, classes]`.
    pub(crate) logits: Vec<f32>,
}

/// The training-mode forward pass of the MLP `layers` on the host images `x` (`rows` rows):
/// ReLU after every layer but the last, then inverted dropout with probability `dropout`, masks
/// drawn from `rng` layer by layer in [`crate::Mlp::forward_train`]'s order.
pub(crate) fn forward(
    layers: &[DenseLayer],
    x: &[f32],
    rows: usize,
    dropout: f64,
    rng: &mut SplitMix64,
) -> TrainForward {
    let last = layers.len().saturating_sub(1);
    let (mut relu, mut masks, mut inputs) = (Vec::new(), Vec::new(), Vec::new());
    let mut logits = Vec::new();
    for (i, layer) in layers.iter().enumerate() {
        let input = inputs.last().map_or(x, Vec::as_slice);
        if i == last {
            logits = crate::dense::affine(layer, input, rows, false);
            break;
        }
        // the mask is drawn on another core while the layer's product runs
        let units = rows * layer.outputs();
        let (h, mask) = rayon::join(
            || crate::dense::affine(layer, input, rows, true),
            || (dropout > 0.0).then(|| dropout_mask(units, dropout, &mut *rng)),
        );
        let dropped = match &mask {
            Some(mask) => h.iter().zip(mask).map(|(v, m)| v * m).collect(),
            None => h.clone(),
        };
        relu.push(h);
        masks.push(mask);
        inputs.push(dropped);
    }
    TrainForward {
        rows,
        relu,
        masks,
        inputs,
        logits,
    }
}

/// One layer's gradients: `[inputs, outputs]` for the weight, `[outputs]` for the bias.
pub(crate) struct LayerGradient {
    pub(crate) weight: Vec<f32>,
    pub(crate) bias: Vec<f32>,
}

/// The gradients of every layer's weight and bias, first layer first, of a loss whose gradient
/// with respect to the logits of `forward` (run on the inputs `x`) is `dlogits`; with
/// `input_gradient`, also its gradient with respect to `x` (for the layers before them).
pub(crate) fn backward(
    layers: &[DenseLayer],
    x: &[f32],
    forward: &TrainForward,
    dlogits: &[f32],
    input_gradient: bool,
) -> (Vec<LayerGradient>, Option<Vec<f32>>) {
    let rows = forward.rows;
    let mut g = dlogits.to_vec();
    let mut grads = Vec::with_capacity(layers.len());
    for (i, layer) in layers.iter().enumerate().rev() {
        let (k, n) = (layer.inputs(), layer.outputs());
        let input = if i == 0 { x } else { &forward.inputs[i - 1] };
        let weight = matmul::transposed_rows(k, rows, n, input, Rhs::Plain(&g));
        let bias = if rows == 1 {
            // one row is its own sum (a −0 stays −0)
            g.clone()
        } else {
            let mut bias = vec![0.0f32; n];
            for row in g.chunks_exact(n.max(1)) {
                bias.iter_mut().zip(row).for_each(|(b, v)| *b += v);
            }
            bias
        };
        grads.push(LayerGradient { weight, bias });
        // the layer's input gradient, through dropout's mask and ReLU's
        let mut d = match i {
            0 if !input_gradient => break,
            _ => matmul::rows(rows, n, k, &g, Rhs::Transposed(&layer.weight)),
        };
        if i == 0 {
            grads.reverse();
            return (grads, Some(d));
        }
        if let Some(mask) = &forward.masks[i - 1] {
            matmul::each_pair(&mut d, mask, |d, m| {
                d.iter_mut().zip(m).for_each(|(v, m)| *v *= m);
            });
        }
        matmul::each_pair(&mut d, &forward.relu[i - 1], crate::dense::relu_mask);
        g = d;
    }
    grads.reverse();
    (grads, None)
}

/// Adam on the host, with burn-optim's f32 operations in its order (`AdaptiveMomentum`, no
/// AMSGrad, no weight decay, no clipping): the same numbers as burn's Adam on burn-ndarray,
/// without a tensor per operation (tested).
#[derive(Debug, Clone)]
pub(crate) struct HostAdam {
    beta_1: f32,
    beta_2: f32,
    epsilon: f32,
    /// Steps taken.
    time: i32,
    /// Each parameter's first and second moments, in the order of [`HostAdam::step`]'s.
    moments: Vec<(Vec<f32>, Vec<f32>)>,
}

impl HostAdam {
    /// Adam with these settings, no step taken.
    pub(crate) fn new(beta_1: f32, beta_2: f32, epsilon: f32) -> Self {
        HostAdam {
            beta_1,
            beta_2,
            epsilon,
            time: 0,
            moments: Vec::new(),
        }
    }

    /// One step of every parameter with its gradient (the same parameters, in the same order,
    /// at every step), learning rate `lr`.
    pub(crate) fn step(&mut self, lr: f64, params: Vec<(&mut [f32], &[f32])>) {
        let (b1, b2) = (self.beta_1, self.beta_2);
        let (f1, f2) = (1.0 - b1, 1.0 - b2);
        let first = self.time == 0;
        self.time += 1;
        let bc2 = (1.0 - b2.powi(self.time)).sqrt();
        let combined = bc2 / (1.0 - b1.powi(self.time));
        let eps = self.epsilon * bc2;
        let lr = lr as f32;
        if first {
            self.moments = params
                .iter()
                .map(|(_, g)| (vec![0.0; g.len()], vec![0.0; g.len()]))
                .collect();
        }
        for ((w, g), (m, v)) in params.into_iter().zip(&mut self.moments) {
            for (((w, &g), m), v) in w.iter_mut().zip(g).zip(m.iter_mut()).zip(v.iter_mut()) {
                if first {
                    *m = g * f1;
                    *v = (g * g) * f2;
                } else {
                    *m = *m * b1 + g * f1;
                    *v = *v * b2 + (g * g) * f2;
                }
                let delta = (*m * combined) / (v.sqrt() + eps);
                *w -= delta * lr;
            }
        }
    }
}

/// A batch's cross-entropy against class labels on the host, with its gradient with respect to
/// the logits and each example's predicted class.
pub(crate) struct HostLoss {
    /// `mean_b(−log softmax(z_b)_{y_b})`.
    pub(crate) loss: f32,
    /// Each example's first largest logit's class.
    pub(crate) predictions: Vec<i64>,
    /// `[rows, classes]`.
    pub(crate) dlogits: Vec<f32>,
}

/// [`crate::loss`]'s cross-entropy with labels as burn-ndarray computes it, value and autodiff
/// gradient, f32 operation by f32 operation: the log-softmax `(z − max) − ln Σ exp(z − max)`,
/// the mean over the batch, and backward `val · (1 / Σ) · exp(z − max)`, with `−val` added at
/// the label, where `val` is 1/rows rounded from f64 as burn's mean does; the argmax as
/// burn-ndarray's (the first largest, a NaN first). `None` when a label is not a class.
pub(crate) fn cross_entropy(logits: &[f32], labels: &[i64], classes: usize) -> Option<HostLoss> {
    let rows = labels.len();
    let val = (1.0f64 / rows as f64) as f32;
    let rows_loss = log_softmax_rows(logits, labels, classes, val, true)?;
    let loss = -(crate::backend::sum_f32(&rows_loss.picked) / rows as f32);
    Some(HostLoss {
        loss,
        predictions: rows_loss.predictions,
        dlogits: rows_loss.dlogits,
    })
}

/// Each example's cross-entropy against its label and the gradient of their sum with respect to
/// the logits, as burn-ndarray's autodiff computes `−log_softmax(z).gather(y)` summed over the
/// batch (the attacks' per-example loss): [`cross_entropy`]'s operations with `val` = 1.
/// `None` when a label is not a class or the logits are not `labels.len()` rows of `classes`.
pub fn cross_entropy_rows(logits: &[f32], labels: &[i64], classes: usize) -> Option<RowsLoss> {
    let rows = log_softmax_rows(logits, labels, classes, 1.0, false)?;
    Some(RowsLoss {
        loss: rows.picked.iter().map(|v| -v).collect(),
        dlogits: rows.dlogits,
    })
}

/// The class of each row of `logits` (`[rows, classes]`) as burn-ndarray's `argmax(1)` picks it:
/// the first largest value, the first NaN where a row has one.
pub fn argmax_rows(logits: &[f32], classes: usize) -> Vec<i64> {
    logits
        .chunks_exact(classes.max(1))
        .map(|z| argmax_row(z) as i64)
        .collect()
}

/// [`argmax_rows`] of one row.
fn argmax_row(z: &[f32]) -> usize {
    z.iter()
        .enumerate()
        .fold((z[0], 0usize), |acc, (i, &v)| {
            if !acc.0.is_nan() && (v.is_nan() || v > acc.0) {
                (v, i)
            } else {
                acc
            }
        })
        .1
}

/// [`cross_entropy_rows`]' value: `[rows]` losses and `[rows, classes]` gradient.
#[derive(Debug, Clone)]
pub struct RowsLoss {
    /// `−log softmax(z_b)_{y_b}` for each example.
    pub loss: Vec<f32>,
    /// The gradient of their sum with respect to the logits, `[rows, classes]`.
    pub dlogits: Vec<f32>,
}

/// The log-softmax at each row's label and the gradient of `−val · Σ` of them with respect to the
/// logits (with the predictions where asked for).
struct LogSoftmaxRows {
    picked: Vec<f32>,
    predictions: Vec<i64>,
    dlogits: Vec<f32>,
}

/// [`cross_entropy`]'s row-by-row work for an upstream gradient `val` at every label.
fn log_softmax_rows(
    logits: &[f32],
    labels: &[i64],
    classes: usize,
    val: f32,
    predict: bool,
) -> Option<LogSoftmaxRows> {
    let rows = labels.len();
    if classes == 0 || logits.len() != rows * classes {
        return None;
    }
    let mut picked = Vec::with_capacity(rows);
    let mut predictions = Vec::with_capacity(if predict { rows } else { 0 });
    let mut dlogits = vec![0.0f32; rows * classes];
    for ((z, &y), d) in logits
        .chunks_exact(classes)
        .zip(labels)
        .zip(dlogits.chunks_exact_mut(classes))
    {
        let y = usize::try_from(y).ok().filter(|&y| y < classes)?;
        let max = z.iter().copied().fold(z[0], f32::max);
        let shifted: Vec<f32> = z.iter().map(|v| v - max).collect();
        let e: Vec<f32> = shifted.iter().map(|v| v.exp()).collect();
        let sum = crate::backend::sum_f32(&e);
        picked.push(shifted[y] - sum.ln());
        if predict {
            predictions.push(argmax_row(z) as i64);
        }
        let g = val * (1.0 / sum);
        for (c, (d, e)) in d.iter_mut().zip(&e).enumerate() {
            *d = g * e + if c == y { -val } else { 0.0 };
        }
    }
    Some(LogSoftmaxRows {
        picked,
        predictions,
        dlogits,
    })
}
