//! The gradient of the loss with respect to the input, the one primitive gradient attacks share.

use advrob_model::{
    Classifier, Dense, DenseForward, LossKind, RowsLoss, argmax_rows, cross_entropy_rows,
};
use burn::tensor::activation::{log_softmax, softmax};
use burn::tensor::{Device, Int, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use crate::error::{AttackError, Result};
use crate::rows::{host, host_int};

/// Which labels the attack's loss is computed against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum LabelMode {
    /// The true labels (as in the study). The attack then knows the answer, which makes it slightly
    /// stronger on examples the model already gets wrong ("label leaking", Kurakin et al. 2017).
    #[default]
    True,
    /// The model's own clean predictions: the attack needs no ground truth and leaks nothing.
    Predicted,
}

/// The labels the loss is computed against under `mode`.
///
/// # Shapes
///
/// - images: `[B, C, H, W]`, labels: `[B]`, output: `[B]`
pub fn target_labels(
    model: &dyn Classifier,
    images: Tensor<4>,
    labels: Tensor<1, Int>,
    mode: LabelMode,
) -> Tensor<1, Int> {
    match mode {
        LabelMode::True => labels,
        LabelMode::Predicted => {
            let images = images.without_autodiff();
            model.logits(images).argmax(1).flatten::<1>(0, 1)
        }
    }
}

/// ∇ₓ Σ_b CE(f(x_b), y_b): the gradient of the summed cross-entropy with respect to the input, the
/// model in inference mode. Summing (not averaging) keeps each example's gradient independent of
/// the batch size.
///
/// # Shapes
///
/// - images: `[B, C, H, W]`, labels: `[B]`, output: `[B, C, H, W]`
pub fn input_gradient(
    model: &dyn Classifier,
    images: Tensor<4>,
    labels: Tensor<1, Int>,
) -> Result<Tensor<4>> {
    loss_gradient(model, images, labels, LossKind::CrossEntropy)
}

/// The loss an attack ascends (or, targeted, descends).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum AttackLoss {
    /// `−log softmax(f(x))_y`.
    #[default]
    CrossEntropy,
    /// `Σ_k (softmax(f(x))_k − onehot(y)_k)²`, the loss of an MSE-trained model (seed-000 notebook).
    Mse,
    /// `max_{j≠y} f(x)_j − f(x)_y` on the logits (Carlini & Wagner): no softmax, so a saturated
    /// softmax (distillation, scaled logits) cannot starve its gradient.
    Margin,
    /// The difference-of-logits ratio of Croce & Hein (2020), `−(z_y − max_{j≠y} z_j) / (z_π1 −
    /// z_π3)`: the margin divided by the spread of the top logits, invariant to shifting and
    /// scaling them ([`crate::losses::dlr_loss`]).
    Dlr,
    /// The targeted difference-of-logits ratio, `−(z_y − z_t) / (z_π1 − (z_π3 + z_π4)/2)`, towards a
    /// target `t`: APGD-T's loss. Computed from labels alone it targets the runner-up class.
    TargetedDlr,
}

impl AttackLoss {
    /// What an attack's name gets for this loss: nothing for the cross-entropy, `-mse`, `-margin`.
    pub fn suffix(self) -> &'static str {
        match self {
            AttackLoss::CrossEntropy => "",
            AttackLoss::Mse => "-mse",
            AttackLoss::Margin => "-margin",
            AttackLoss::Dlr => "-dlr",
            AttackLoss::TargetedDlr => "-tdlr",
        }
    }
}

impl From<LossKind> for AttackLoss {
    fn from(k: LossKind) -> Self {
        match k {
            LossKind::CrossEntropy => AttackLoss::CrossEntropy,
            LossKind::Mse => AttackLoss::Mse,
        }
    }
}

/// The loss of each example.
///
/// # Shapes
///
/// - logits: `[B, classes]`, labels: `[B]`, output: `[B]`
pub fn per_example_loss(logits: Tensor<2>, labels: Tensor<1, Int>, kind: AttackLoss) -> Tensor<1> {
    let [b, classes] = logits.dims();
    match kind {
        AttackLoss::CrossEntropy => log_softmax(logits, 1)
            .gather(1, labels.reshape([b, 1]))
            .flatten::<1>(0, 1)
            .neg(),
        AttackLoss::Mse => (softmax(logits, 1) - labels.one_hot(classes).float())
            .square()
            .sum_dim(1)
            .flatten::<1>(0, 1),
        AttackLoss::Margin => {
            let own = logits.clone().gather(1, labels.clone().reshape([b, 1]));
            let is_label = labels.one_hot(classes).equal_elem(1);
            let other = logits.mask_fill(is_label, f32::NEG_INFINITY).max_dim(1);
            (other - own).flatten::<1>(0, 1)
        }
        AttackLoss::Dlr => crate::losses::dlr_loss(logits, labels, None),
        AttackLoss::TargetedDlr => {
            // the runner-up class: the highest logit other than the label's
            let is_label = labels.clone().one_hot(classes).equal_elem(1);
            let runner_up = logits
                .clone()
                .detach()
                .mask_fill(is_label, f32::NEG_INFINITY)
                .argmax(1)
                .flatten::<1>(0, 1);
            crate::losses::dlr_loss(logits, labels, Some(runner_up))
        }
    }
}

/// What one forward (and backward) pass of an iterative attack gives, per example.
pub(crate) struct Pass {
    /// The loss of each example.
    pub loss: Vec<f32>,
    /// Its gradient with respect to the input (`None` when not asked for).
    pub grad: Option<Tensor<4>>,
    /// The predicted class of each example.
    pub pred: Vec<i64>,
}

/// One pass of `model` on `images`: the per-example `loss(logits)`, its gradient with respect to
/// the input when `with_grad`, and the predictions — the loss tracking of an iterative attack
/// reuses the forward pass of its next gradient step instead of running one of its own.
///
/// # Shapes
///
/// - images: `[B, C, H, W]`; `loss` maps logits `[B, classes]` to `[B]`
pub(crate) fn pass(
    model: &dyn Classifier,
    images: Tensor<4>,
    loss: &dyn Fn(Tensor<2>) -> Tensor<1>,
    with_grad: bool,
) -> Result<Pass> {
    let images = images.without_autodiff();
    if !with_grad {
        let logits = model.logits(images);
        let pred = logits.clone().argmax(1).flatten::<1>(0, 1);
        return Ok(Pass {
            loss: host(loss(logits))?,
            grad: None,
            pred: host_int(pred)?,
        });
    }
    let x = images.autodiff().require_grad();
    let logits = model.logits(x.clone());
    let l = loss(logits.clone());
    let grads = l.clone().sum().backward();
    let grad = x.grad(&grads).ok_or(AttackError::NoGradient)?;
    let pred = logits.without_autodiff().argmax(1).flatten::<1>(0, 1);
    Ok(Pass {
        loss: host(l.without_autodiff())?,
        grad: Some(grad),
        pred: host_int(pred)?,
    })
}

/// The per-example loss of an attack's pass: on a logits tensor (the model's own pass on any
/// device) and, where it has one, on host logits with the gradient of its sum, which the host
/// chain's passes take instead of a tensor graph on the small logits. Every closure on a logits
/// tensor is one (without a host version).
pub(crate) trait PassLoss {
    /// The loss of each row of `logits`, `[B, classes]` → `[B]`.
    fn tensor(&self, logits: Tensor<2>) -> Tensor<1>;

    /// The loss of each row of the host `logits` (`[rows, classes]`) and the gradient of their
    /// sum with respect to them: the tensor version's numbers on burn-ndarray. `None` where
    /// there is no host version.
    fn host(&self, _logits: &[f32], _classes: usize) -> Option<RowsLoss> {
        None
    }
}

impl<F: Fn(Tensor<2>) -> Tensor<1>> PassLoss for F {
    fn tensor(&self, logits: Tensor<2>) -> Tensor<1> {
        self(logits)
    }
}

/// The losses of the attacks that run on host labels, with their host versions.
pub(crate) enum HostLoss<'a> {
    /// The cross-entropy against `labels`.
    CrossEntropy(&'a [i64]),
    /// The difference-of-logits ratio against `labels` ([`crate::losses::dlr_loss`]), targeted
    /// where `targets` are given.
    Dlr {
        labels: &'a [i64],
        targets: Option<&'a [i64]>,
    },
    /// `z_t − z_y` against `labels` and `targets` (FAB's boundary function).
    Difference {
        labels: &'a [i64],
        targets: &'a [i64],
    },
}

impl PassLoss for HostLoss<'_> {
    fn tensor(&self, logits: Tensor<2>) -> Tensor<1> {
        let device = logits.device();
        let int = |v: &[i64]| {
            Tensor::<1, Int>::from_data(TensorData::new(v.to_vec(), [v.len()]), &device)
        };
        match *self {
            HostLoss::CrossEntropy(labels) => {
                per_example_loss(logits, int(labels), AttackLoss::CrossEntropy)
            }
            HostLoss::Dlr { labels, targets } => {
                crate::losses::dlr_loss(logits, int(labels), targets.map(int))
            }
            HostLoss::Difference { labels, targets } => {
                let n = labels.len();
                let zt = logits.clone().gather(1, int(targets).reshape([n, 1]));
                let zy = logits.gather(1, int(labels).reshape([n, 1]));
                (zt - zy).flatten::<1>(0, 1)
            }
        }
    }

    fn host(&self, logits: &[f32], classes: usize) -> Option<RowsLoss> {
        match *self {
            HostLoss::CrossEntropy(labels) => cross_entropy_rows(logits, labels, classes),
            HostLoss::Dlr { labels, targets } => {
                crate::losses::dlr_rows(logits, labels, targets, classes)
            }
            HostLoss::Difference { labels, targets } => {
                crate::losses::difference_rows(logits, labels, targets, classes)
            }
        }
    }
}

/// What one pass on host images gives, per example, on the host.
pub(crate) struct HostPass {
    /// The loss of each example.
    pub loss: Vec<f32>,
    /// Its gradient with respect to the input (`None` when not asked for), row-major.
    pub grad: Option<Vec<f32>>,
    /// The predicted class of each example.
    pub pred: Vec<i64>,
}

/// A model as an iterative attack on host images passes through it: through its dense chain on
/// the host ([`Dense`]) where the device is burn-ndarray — the tensor path's numbers to the bit,
/// without its per-operation allocations and graph — else through the model on the device.
pub(crate) struct HostModel<'a> {
    model: &'a dyn Classifier,
    chain: Option<Dense<'a>>,
    device: Device,
}

/// `model`'s dense chain on the host ([`Dense`]) where passes on `device` should take it:
/// burn-ndarray, where it computes the tensor path's numbers to the bit.
pub(crate) fn host_chain<'a>(model: &'a dyn Classifier, device: &Device) -> Option<Dense<'a>> {
    if advrob_model::backend::is_ndarray(device) {
        model.dense()
    } else {
        None
    }
}

impl<'a> HostModel<'a> {
    /// `model` on `device`.
    pub fn new(model: &'a dyn Classifier, device: &Device) -> Self {
        Self {
            model,
            chain: host_chain(model, device),
            device: device.clone(),
        }
    }

    /// [`pass`] on host images of shape `dims`. On the host chain, the loss and its gradient
    /// with respect to the logits are the loss's host version where it has one
    /// ([`PassLoss::host`]), else burn's on the small logits tensor, so every loss works.
    pub fn pass(
        &self,
        images: &[f32],
        dims: [usize; 4],
        loss: &dyn PassLoss,
        with_grad: bool,
    ) -> Result<HostPass> {
        self.pass_into(images, dims, loss, with_grad, Vec::new())
    }

    /// [`HostModel::pass`] with the gradient written into `spare`'s memory on the host chain
    /// (an iterative attack's last gradient, handed back: [`Dense::backward_into`]).
    pub fn pass_into(
        &self,
        images: &[f32],
        dims: [usize; 4],
        loss: &dyn PassLoss,
        with_grad: bool,
        spare: Vec<f32>,
    ) -> Result<HostPass> {
        let Some(chain) = &self.chain else {
            let t = Tensor::<4>::from_data(TensorData::new(images.to_vec(), dims), &self.device);
            let p = pass(self.model, t, &|z| loss.tensor(z), with_grad)?;
            return Ok(HostPass {
                loss: p.loss,
                grad: p.grad.map(host).transpose()?,
                pred: p.pred,
            });
        };
        let f = chain.forward(images, dims[0], with_grad);
        self.finish_pass(chain, f, loss, with_grad, spare)
    }

    /// The first dense layer's outputs before its ReLU on host images (`rows` of them), where
    /// the model has a host chain whose first layer is an affine function of the pixels
    /// ([`Dense::first`]): an attack that moves its images by affine combinations moves these
    /// by the same combination and passes on from them ([`HostModel::pass_from_first`]).
    pub fn first(&self, images: &[f32], rows: usize) -> Option<Vec<f32>> {
        self.chain.as_ref()?.first(images, rows)
    }

    /// [`HostModel::pass_into`] from the first layer's outputs ([`HostModel::first`]) of the
    /// images: the same numbers as the pass on those images where the outputs were computed
    /// from them, the gradient with respect to the images.
    ///
    /// # Errors
    ///
    /// [`AttackError::NoGradient`] on a model without a host chain (no [`HostModel::first`]).
    pub fn pass_from_first(
        &self,
        first: &[f32],
        rows: usize,
        loss: &dyn PassLoss,
        with_grad: bool,
        spare: Vec<f32>,
    ) -> Result<HostPass> {
        let chain = self.chain.as_ref().ok_or(AttackError::NoGradient)?;
        let f = chain.forward_from_first(first, rows, with_grad);
        self.finish_pass(chain, f, loss, with_grad, spare)
    }

    /// The predicted classes from the first layer's outputs ([`HostModel::first`]): the rest of
    /// the chain without a gradient ([`Dense::head`]).
    pub fn predict_from_first(&self, first: &[f32], rows: usize) -> Option<Vec<i64>> {
        let chain = self.chain.as_ref()?;
        let logits = chain.head(first, rows);
        Some(argmax_rows(&logits, logits.len() / rows.max(1)))
    }

    /// The loss, its gradient through the chain and the predictions of a host chain's forward
    /// pass `f`.
    fn finish_pass(
        &self,
        chain: &Dense<'_>,
        f: DenseForward,
        loss: &dyn PassLoss,
        with_grad: bool,
        spare: Vec<f32>,
    ) -> Result<HostPass> {
        let b = f.rows();
        let classes = f.logits.len() / b.max(1);
        if let Some(l) = loss.host(&f.logits, classes) {
            return Ok(HostPass {
                pred: argmax_rows(&f.logits, classes),
                grad: with_grad.then(|| chain.backward_into(&f, &l.dlogits, spare)),
                loss: l.loss,
            });
        }
        let z = Tensor::<2>::from_data(
            TensorData::new(f.logits.clone(), [b, classes]),
            &self.device,
        );
        let pred = host_int(z.clone().argmax(1).flatten::<1>(0, 1))?;
        if !with_grad {
            return Ok(HostPass {
                loss: host(loss.tensor(z))?,
                grad: None,
                pred,
            });
        }
        let z = z.autodiff().require_grad();
        let l = loss.tensor(z.clone());
        let grads = l.clone().sum().backward();
        let dz = host(z.grad(&grads).ok_or(AttackError::NoGradient)?)?;
        Ok(HostPass {
            loss: host(l.without_autodiff())?,
            grad: Some(chain.backward_into(&f, &dz, spare)),
            pred,
        })
    }
}

/// ∇ₓ of the per-example loss `kind` ([`per_example_loss`]), summed over the batch.
///
/// # Shapes
///
/// - images: `[B, C, H, W]`, labels: `[B]`, output: `[B, C, H, W]`
pub fn loss_gradient(
    model: &dyn Classifier,
    images: Tensor<4>,
    labels: Tensor<1, Int>,
    kind: impl Into<AttackLoss>,
) -> Result<Tensor<4>> {
    let kind = kind.into();
    let dims = images.dims();
    if let Some(grad) = host_loss_gradient(model, &images, labels.clone(), kind)? {
        let device = images.device().without_autodiff();
        return Ok(Tensor::from_data(TensorData::new(grad, dims), &device));
    }
    device_loss_gradient(model, images, labels, kind)
}

/// [`loss_gradient`] through the model on the images' device (burn's autodiff), for models and
/// devices without a host chain.
pub(crate) fn device_loss_gradient(
    model: &dyn Classifier,
    images: Tensor<4>,
    labels: Tensor<1, Int>,
    kind: AttackLoss,
) -> Result<Tensor<4>> {
    let x = images.without_autodiff().autodiff().require_grad();
    let logits = model.logits(x.clone());
    let loss = per_example_loss(logits, labels.without_autodiff().autodiff(), kind).sum();
    let grads = loss.backward();
    x.grad(&grads).ok_or(AttackError::NoGradient)
}

/// [`loss_gradient`] on the host, `[B·H·W]` row-major, where `model` has a host chain on the
/// images' device (burn-ndarray: the tensor path's numbers, the images read where they lie);
/// `None` elsewhere.
pub(crate) fn host_loss_gradient(
    model: &dyn Classifier,
    images: &Tensor<4>,
    labels: Tensor<1, Int>,
    kind: AttackLoss,
) -> Result<Option<Vec<f32>>> {
    let device = images.device().without_autodiff();
    let on_host = HostModel::new(model, &device);
    if on_host.chain.is_none() {
        return Ok(None);
    }
    let dims = images.dims();
    let images = images.clone().without_autodiff();
    let y = labels.without_autodiff();
    // the losses with a host version (burn-ndarray's operations, to the bit) without a tensor
    // graph for the small logits; the others through burn on them
    let labels = match kind {
        AttackLoss::CrossEntropy | AttackLoss::Dlr => Some(crate::rows::host_int(y.clone())?),
        _ => None,
    };
    let tensor_loss = move |z: Tensor<2>| per_example_loss(z, y.clone(), kind);
    let loss: &dyn PassLoss = match (&labels, kind) {
        (Some(labels), AttackLoss::CrossEntropy) => &HostLoss::CrossEntropy(labels),
        (Some(labels), AttackLoss::Dlr) => &HostLoss::Dlr {
            labels,
            targets: None,
        },
        _ => &tensor_loss,
    };
    let p = crate::rows::on_host(&images, |x| on_host.pass(x, dims, loss, true))??;
    p.grad.ok_or(AttackError::NoGradient).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;
    use advrob_model::backend::on_test_backends;
    use advrob_model::{Mlp, MlpConfig};
    use burn::tensor::TensorData;

    /// Central finite differences of the summed cross-entropy, for a few pixels.
    fn numeric(
        model: &Mlp,
        x: &[f32],
        y: i64,
        idx: usize,
        h: f32,
        device: &burn::tensor::Device,
        kind: LossKind,
    ) -> f32 {
        let f = |v: Vec<f32>| {
            let t = Tensor::<4>::from_data(TensorData::new(v, [1, 1, 28, 28]), device);
            let z = model.forward(t);
            match kind {
                LossKind::CrossEntropy => {
                    let l = log_softmax(z, 1)
                        .into_data()
                        .try_into_vec_as::<f32>()
                        .expect("f32");
                    -l[y as usize]
                }
                LossKind::Mse => {
                    let p = softmax(z, 1)
                        .into_data()
                        .try_into_vec_as::<f32>()
                        .expect("f32");
                    p.iter()
                        .enumerate()
                        .map(|(k, q)| (q - if k == y as usize { 1.0 } else { 0.0 }).powi(2))
                        .sum()
                }
            }
        };
        let mut plus = x.to_vec();
        plus[idx] += h;
        let mut minus = x.to_vec();
        minus[idx] -= h;
        (f(plus) - f(minus)) / (2.0 * h)
    }

    /// On burn-ndarray the cross-entropy's input gradient is taken on the host, loss included;
    /// it is burn's autodiff's to the bit, on a plain MLP, one with scaled logits and a
    /// quantised one passed straight through, on labels and on other targets.
    #[test]
    fn host_cross_entropy_gradient_is_burns_to_the_bit() {
        let device = advrob_model::backend::device("ndarray").expect("ndarray");
        let mlp = MlpConfig::new()
            .with_hidden(vec![24, 16])
            .with_seed(9)
            .init(&device)
            .expect("init");
        let scaled = advrob_model::Deployed {
            net: advrob_model::Net::Mlp(mlp.clone()),
            config: advrob_model::DeployConfig::new().with_logit_scale(7.5),
        };
        let models: [&dyn Classifier; 2] = [&mlp, &scaled];
        for (mi, model) in models.into_iter().enumerate() {
            let x: Vec<f32> = (0..9 * 784)
                .map(|i| ((i * 7919) % 1013) as f32 / 1013.0)
                .collect();
            let images = Tensor::<4>::from_data(TensorData::new(x, [9, 1, 28, 28]), &device);
            for shift in [0i64, 3] {
                let y: Vec<i64> = (0..9).map(|i| (i * 7 + shift) % 10).collect();
                let labels = Tensor::<1, Int>::from_data(TensorData::new(y, [9]), &device);
                let host =
                    host_loss_gradient(model, &images, labels.clone(), AttackLoss::CrossEntropy)
                        .expect("gradient")
                        .expect("a host chain on ndarray");
                let burn =
                    device_loss_gradient(model, images.clone(), labels, AttackLoss::CrossEntropy)
                        .expect("gradient")
                        .into_data()
                        .try_into_vec_as::<f32>()
                        .expect("f32");
                assert!(burn.iter().any(|v| *v != 0.0));
                let differ = host
                    .iter()
                    .zip(&burn)
                    .filter(|(a, b)| a.to_bits() != b.to_bits())
                    .count();
                assert_eq!(
                    differ, 0,
                    "model {mi}, labels shifted by {shift}: {differ} pixels differ"
                );
            }
        }
    }

    #[test]
    fn input_gradient_matches_finite_differences() {
        on_test_backends(|device| {
            let device = device.clone();
            let model = MlpConfig::new()
                .with_hidden(vec![16])
                .with_seed(5)
                .init(&device)
                .expect("init");
            let x: Vec<f32> = (0..784).map(|i| ((i * 37) % 101) as f32 / 101.0).collect();
            let images =
                Tensor::<4>::from_data(TensorData::new(x.clone(), [1, 1, 28, 28]), &device);
            let labels = Tensor::<1, Int>::from_data(TensorData::new(vec![3i64], [1]), &device);
            let g = input_gradient(&model, images, labels)
                .expect("gradient")
                .into_data()
                .try_into_vec_as::<f32>()
                .expect("f32");
            for idx in [0, 100, 391, 600, 783] {
                let n = numeric(&model, &x, 3, idx, 1e-3, &device, LossKind::CrossEntropy);
                // f32 central differences at h = 1e-3: rounding error ~1e-4 on a loss of ~2
                assert!(
                    (g[idx] - n).abs() < 2e-3 + 0.02 * n.abs(),
                    "pixel {idx}: analytic {} numeric {n}",
                    g[idx]
                );
            }
        });
    }

    #[test]
    fn a_cnn_input_gradient_matches_finite_differences() {
        on_test_backends(|device| {
            let net = advrob_model::LenetConfig::new()
                .with_seed(3)
                .init(device)
                .expect("init");
            let x: Vec<f32> = (0..784).map(|i| ((i * 29) % 83) as f32 / 83.0).collect();
            let y = 4usize;
            let images = Tensor::<4>::from_data(TensorData::new(x.clone(), [1, 1, 28, 28]), device);
            let labels = Tensor::<1, Int>::from_data(TensorData::new(vec![y as i64], [1]), device);
            let g = input_gradient(&net, images, labels)
                .expect("gradient")
                .into_data()
                .try_into_vec_as::<f32>()
                .expect("f32");
            let ce = |v: Vec<f32>| -> f32 {
                let t = Tensor::<4>::from_data(TensorData::new(v, [1, 1, 28, 28]), device);
                -log_softmax(net.forward(t), 1)
                    .into_data()
                    .try_into_vec_as::<f32>()
                    .expect("f32")[y]
            };
            for idx in [30, 200, 405, 512, 700] {
                let h = 1e-2;
                let (mut plus, mut minus) = (x.clone(), x.clone());
                plus[idx] += h;
                minus[idx] -= h;
                let n = (ce(plus) - ce(minus)) / (2.0 * h);
                // ReLU kinks and max-pool switches can lie inside ±h: a loose but real bound
                assert!(
                    (g[idx] - n).abs() < 2e-3 + 0.05 * n.abs(),
                    "pixel {idx}: analytic {} numeric {n}",
                    g[idx]
                );
            }
        });
    }

    #[test]
    fn squared_error_gradient_matches_finite_differences() {
        on_test_backends(|device| {
            let device = device.clone();
            let model = MlpConfig::new()
                .with_hidden(vec![16])
                .with_seed(8)
                .init(&device)
                .expect("init");
            let x: Vec<f32> = (0..784).map(|i| ((i * 53) % 89) as f32 / 89.0).collect();
            let images =
                Tensor::<4>::from_data(TensorData::new(x.clone(), [1, 1, 28, 28]), &device);
            let labels = Tensor::<1, Int>::from_data(TensorData::new(vec![6i64], [1]), &device);
            let g = loss_gradient(&model, images, labels, LossKind::Mse)
                .expect("gradient")
                .into_data()
                .try_into_vec_as::<f32>()
                .expect("f32");
            for idx in [5, 222, 400, 777] {
                // h = 1e-2: the squared error is ~1 and smooth, so the truncation error is tiny
                let n = numeric(&model, &x, 6, idx, 1e-2, &device, LossKind::Mse);
                assert!(
                    (g[idx] - n).abs() < 1e-3 + 0.02 * n.abs(),
                    "pixel {idx}: analytic {} numeric {n}",
                    g[idx]
                );
            }
        });
    }
}
