//! Convolutional networks of the robustness literature on MNIST: LeNet-5, the small CNN of
//! PyTorch's FGSM tutorial, and the CNN of Madry et al. (2018). Their parameter names are those of
//! the PyTorch modules that define them (`conv1`, `conv2`, `fc1`, ...), so that a PyTorch
//! `state_dict` maps onto them name for name.

use advrob_data::rng::SplitMix64;
use burn::config::Config;
use burn::module::{Module, Param};
use burn::nn::conv::Conv2d;
use burn::nn::pool::{MaxPool2d, MaxPool2dConfig};
use burn::nn::{Linear, PaddingConfig2d};
use burn::tensor::activation::{log_softmax, relu};
use burn::tensor::ops::PadMode;
use burn::tensor::{Device, Tensor, TensorData};

use crate::dense::{ConvBlock, Dense, PixelMap, logits_or};
use crate::error::ModelError;
use crate::mlp::{dropout, glorot_linear, host_layer};

/// A convolution `in → out` with square kernels of side `k` and `pad` pixels of zero padding on
/// every side, its weights Glorot-uniform from `rng` (fans counted over the kernel, as Keras does)
/// and its biases zero.
fn glorot_conv(
    channels: [usize; 2],
    k: usize,
    pad: usize,
    rng: &mut SplitMix64,
    device: &Device,
) -> Conv2d {
    let [cin, cout] = channels;
    let (fan_in, fan_out) = (cin * k * k, cout * k * k);
    let limit = (6.0 / (fan_in + fan_out) as f64).sqrt();
    let w: Vec<f32> = (0..cout * cin * k * k)
        .map(|_| ((rng.next_f64() * 2.0 - 1.0) * limit) as f32)
        .collect();
    Conv2d {
        weight: Param::from_tensor(Tensor::from_data(
            TensorData::new(w, [cout, cin, k, k]),
            device,
        )),
        bias: Some(Param::from_tensor(Tensor::zeros([cout], device))),
        stride: [1, 1],
        kernel_size: [k, k],
        dilation: [1, 1],
        groups: 1,
        padding: if pad == 0 {
            PaddingConfig2d::Valid
        } else {
            PaddingConfig2d::Explicit(pad, pad, pad, pad)
        },
    }
}

/// `conv` applied to `x` `[B, C, H, W]`: on burn-ndarray, whose own convolution is a direct
/// loop (a LeNet epoch 25–70× slower than burn-flex's), as one matrix product per image over
/// the input's windows (im2col from tensor slices, differentiated by autodiff like any tensor
/// operation) for the stride-1, undilated, ungrouped convolutions of these networks; elsewhere,
/// and for anything else, the backend's own convolution.
pub(crate) fn conv_forward(conv: &Conv2d, x: Tensor<4>) -> Tensor<4> {
    if crate::backend::is_ndarray(&x.device()) {
        windowed_conv(conv, x)
    } else {
        conv.forward(x)
    }
}

/// The zero padding `((top, bottom), (left, right))` of a stride-1, undilated, ungrouped
/// convolution with explicit (or no) padding, the convolutions the im2col paths compute; `None`
/// for any other.
fn plain_padding(conv: &Conv2d) -> Option<((usize, usize), (usize, usize))> {
    if conv.stride != [1, 1] || conv.dilation != [1, 1] || conv.groups != 1 {
        return None;
    }
    match &conv.padding {
        PaddingConfig2d::Valid => Some(((0, 0), (0, 0))),
        PaddingConfig2d::Explicit(t, l, b, r) => Some(((*t, *b), (*l, *r))),
        _ => None,
    }
}

/// [`conv_forward`]'s im2col convolution, on any backend.
fn windowed_conv(conv: &Conv2d, x: Tensor<4>) -> Tensor<4> {
    let Some(((top, bottom), (left, right))) = plain_padding(conv) else {
        return conv.forward(x);
    };
    let [b, c, h, w] = x.dims();
    let [kh, kw] = conv.kernel_size;
    let x = if top + bottom + left + right > 0 {
        x.pad([(top, bottom), (left, right)], PadMode::Constant(0.0))
    } else {
        x
    };
    let (hp, wp) = (h + top + bottom, w + left + right);
    let (ho, wo) = (hp + 1 - kh, wp + 1 - kw);
    let windows: Vec<Tensor<4>> = (0..kh)
        .flat_map(|i| (0..kw).map(move |j| (i, j)))
        .map(|(i, j)| {
            x.clone()
                .slice([0..b, 0..c, i..i + ho, j..j + wo])
                .reshape([b, c, 1, ho * wo])
        })
        .collect();
    // [B, C·kh·kw, Ho·Wo], rows in the weight's (channel, row, column) order
    let cols: Tensor<3> = Tensor::cat(windows, 2).reshape([b, c * kh * kw, ho * wo]);
    let [o, ..] = conv.weight.dims();
    let wmat: Tensor<3> = conv.weight.val().reshape([1, o, c * kh * kw]);
    let mut y = wmat.matmul(cols);
    if let Some(bias) = &conv.bias {
        y = y + bias.val().reshape([1, o, 1]);
    }
    y.reshape([b, o, ho, wo])
}

/// `conv` followed by ReLU and the 2×2 max pool as a host block, or `None` when its weights
/// cannot be read or it is not the stride-1 square convolution with symmetric padding the block
/// computes.
fn host_block(conv: &Conv2d, input: [usize; 2]) -> Option<ConvBlock> {
    let [o, c, kh, kw] = conv.weight.dims();
    let ((pad, bottom), (left, right)) = plain_padding(conv)?;
    if [bottom, left, right] != [pad; 3] || kh != kw {
        return None;
    }
    let weight = crate::backend::read_f32(conv.weight.val())?;
    let bias = match &conv.bias {
        Some(b) => crate::backend::read_f32(b.val())?,
        None => vec![0.0; o],
    };
    Some(ConvBlock {
        weight,
        bias,
        channels: c,
        kernel: kh,
        pad,
        input,
    })
}

/// Two conv blocks and dense layers as a host chain, for images of `image`, with a log-softmax
/// at the end where the network has one.
fn host_chain<'a>(
    convs: [&Conv2d; 2],
    dense: &[&Linear],
    image: [usize; 2],
    log_softmax: bool,
) -> Option<Dense<'a>> {
    let first = host_block(convs[0], image)?;
    let second = host_block(convs[1], first.output())?;
    if second.output_size() != dense.first()?.weight.dims()[0] {
        return None;
    }
    let layers = dense
        .iter()
        .map(|l| host_layer(l))
        .collect::<Option<Vec<_>>>()?;
    Some(Dense {
        pixel: PixelMap::default(),
        convs: vec![first, second],
        layers,
        log_softmax,
        logit_scale: None,
        count: None,
        transposed: Default::default(),
    })
}

fn pool() -> MaxPool2d {
    MaxPool2dConfig::new([2, 2]).init()
}

/// Side after a 5×5 convolution with `pad` and a 2×2 max pool, or an error naming the image size.
fn after_block(side: usize, pad: usize, image: [usize; 2]) -> crate::Result<usize> {
    let conv = (side + 2 * pad)
        .checked_sub(4)
        .filter(|s| *s >= 2)
        .ok_or_else(|| {
            ModelError::invalid(
                "image",
                format!(
                    "{}×{} images are too small for this network",
                    image[0], image[1]
                ),
            )
        })?;
    Ok(conv / 2)
}

/// The flattened size after the two conv/pool blocks of an `image`, each convolution padded by
/// `pad`, with `channels` channels out.
fn flat_size(image: [usize; 2], pad: usize, channels: usize) -> crate::Result<usize> {
    let h = after_block(after_block(image[0], pad, image)?, pad, image)?;
    let w = after_block(after_block(image[1], pad, image)?, pad, image)?;
    Ok(channels * h * w)
}

/// LeNet-5 as usually written for MNIST: conv 5×5 (6, padding 2) → ReLU → max-pool 2 → conv 5×5
/// (16) → ReLU → max-pool 2 → FC 120 → ReLU → FC 84 → ReLU → FC `classes`.
#[derive(Config, Debug, PartialEq)]
pub struct LenetConfig {
    /// Image height and width.
    #[config(default = "[28, 28]")]
    pub image: [usize; 2],
    /// Number of classes.
    #[config(default = 10)]
    pub classes: usize,
    /// Seed of the weight initialisation.
    #[config(default = 42)]
    pub seed: u64,
}

/// LeNet-5 ([`LenetConfig`]).
#[derive(Module, Debug)]
pub struct Lenet {
    /// 1 → 6, 5×5, padding 2.
    pub conv1: Conv2d,
    /// 6 → 16, 5×5.
    pub conv2: Conv2d,
    /// 400 → 120 on 28×28 images.
    pub fc1: Linear,
    /// 120 → 84.
    pub fc2: Linear,
    /// 84 → classes.
    pub fc3: Linear,
    pool: MaxPool2d,
    /// Image height and width it was built for.
    image: [usize; 2],
}

impl LenetConfig {
    /// Builds the network, Glorot-uniform weights from `seed`, zero biases.
    pub fn init(&self, device: &Device) -> crate::Result<Lenet> {
        check_classes(self.classes)?;
        // conv1 keeps the size (padding 2), conv2 does not
        let side = |s: usize| after_block(after_block(s, 2, self.image)?, 0, self.image);
        let flat = 16 * side(self.image[0])? * side(self.image[1])?;
        let mut rng = SplitMix64::new(self.seed);
        Ok(Lenet {
            conv1: glorot_conv([1, 6], 5, 2, &mut rng, device),
            conv2: glorot_conv([6, 16], 5, 0, &mut rng, device),
            fc1: glorot_linear(flat, 120, &mut rng, device),
            fc2: glorot_linear(120, 84, &mut rng, device),
            fc3: glorot_linear(84, self.classes, &mut rng, device),
            pool: pool(),
            image: self.image,
        })
    }
}

impl Lenet {
    /// Logits (the network has no dropout: training and inference agree).
    ///
    /// # Shapes
    ///
    /// - images: `[B, 1, H, W]`, output: `[B, classes]`
    pub fn forward(&self, images: Tensor<4>) -> Tensor<2> {
        let x = self.pool.forward(relu(conv_forward(&self.conv1, images)));
        let x = self.pool.forward(relu(conv_forward(&self.conv2, x)));
        let x: Tensor<2> = x.flatten(1, 3);
        let x = relu(self.fc1.forward(x));
        let x = relu(self.fc2.forward(x));
        self.fc3.forward(x)
    }

    /// The network as a host chain ([`Dense`]).
    pub fn dense(&self) -> Option<Dense<'_>> {
        host_chain(
            [&self.conv1, &self.conv2],
            &[&self.fc1, &self.fc2, &self.fc3],
            self.image,
            false,
        )
    }
}

/// The network of PyTorch's FGSM tutorial: conv 5×5 (10) → max-pool 2 → ReLU → conv 5×5 (20) →
/// channel dropout → max-pool 2 → ReLU → FC 50 → ReLU → dropout → FC `classes` → log-softmax.
#[derive(Config, Debug, PartialEq)]
pub struct FgsmTutorialConfig {
    /// Image height and width.
    #[config(default = "[28, 28]")]
    pub image: [usize; 2],
    /// Number of classes.
    #[config(default = 10)]
    pub classes: usize,
    /// Dropout probability of both dropout layers, in training only.
    #[config(default = 0.5)]
    pub dropout: f64,
    /// Seed of the weight initialisation.
    #[config(default = 42)]
    pub seed: u64,
}

/// The FGSM tutorial's network ([`FgsmTutorialConfig`]). Its outputs are log-probabilities,
/// valid logits (a softmax of them gives the same probabilities).
#[derive(Module, Debug)]
pub struct FgsmTutorial {
    /// 1 → 10, 5×5.
    pub conv1: Conv2d,
    /// 10 → 20, 5×5.
    pub conv2: Conv2d,
    /// 320 → 50 on 28×28 images.
    pub fc1: Linear,
    /// 50 → classes.
    pub fc2: Linear,
    /// Dropout probability (training only).
    pub dropout: f64,
    pool: MaxPool2d,
    /// Image height and width it was built for.
    image: [usize; 2],
}

impl FgsmTutorialConfig {
    /// Builds the network, Glorot-uniform weights from `seed`, zero biases.
    pub fn init(&self, device: &Device) -> crate::Result<FgsmTutorial> {
        check_classes(self.classes)?;
        check_dropout(self.dropout)?;
        let flat = flat_size(self.image, 0, 20)?;
        let mut rng = SplitMix64::new(self.seed);
        Ok(FgsmTutorial {
            conv1: glorot_conv([1, 10], 5, 0, &mut rng, device),
            conv2: glorot_conv([10, 20], 5, 0, &mut rng, device),
            fc1: glorot_linear(flat, 50, &mut rng, device),
            fc2: glorot_linear(50, self.classes, &mut rng, device),
            dropout: self.dropout,
            pool: pool(),
            image: self.image,
        })
    }
}

impl FgsmTutorial {
    /// Log-probabilities; with `rng`, training mode (channel dropout after conv2, dropout after
    /// fc1, masks from `rng`).
    ///
    /// # Shapes
    ///
    /// - images: `[B, 1, H, W]`, output: `[B, classes]`
    pub fn forward(&self, images: Tensor<4>, mut rng: Option<&mut SplitMix64>) -> Tensor<2> {
        let x = relu(self.pool.forward(conv_forward(&self.conv1, images)));
        let mut x = conv_forward(&self.conv2, x);
        if let Some(rng) = rng.as_deref_mut()
            && self.dropout > 0.0
        {
            x = channel_dropout(x, self.dropout, rng);
        }
        let x = relu(self.pool.forward(x));
        let x: Tensor<2> = x.flatten(1, 3);
        let mut x = relu(self.fc1.forward(x));
        if let Some(rng) = rng
            && self.dropout > 0.0
        {
            x = dropout(x, self.dropout, rng);
        }
        log_softmax(self.fc2.forward(x), 1)
    }

    /// The network in inference mode as a host chain ([`Dense`]): its max pool before ReLU is
    /// ReLU before the pool (the two commute), its dropout the identity.
    pub fn dense(&self) -> Option<Dense<'_>> {
        host_chain(
            [&self.conv1, &self.conv2],
            &[&self.fc1, &self.fc2],
            self.image,
            true,
        )
    }
}

/// Inverted channel dropout (PyTorch's `Dropout2d`): each whole channel of each example is zeroed
/// with probability `p`, the rest scaled by 1/(1 − p).
fn channel_dropout(x: Tensor<4>, p: f64, rng: &mut SplitMix64) -> Tensor<4> {
    let [b, c, h, w] = x.dims();
    let keep = 1.0 - p;
    let scale = (1.0 / keep) as f32;
    let mask: Vec<f32> = (0..b * c)
        .map(|_| if rng.next_f64() < keep { scale } else { 0.0 })
        .collect();
    let device = x.device().without_autodiff();
    let mask = Tensor::<4>::from_data(TensorData::new(mask, [b, c, 1, 1]), &device);
    x * mask.expand([b, c, h, w])
}

/// The MNIST network of Madry et al. (2018): conv 5×5 (32, padding 2) → ReLU → max-pool 2 → conv
/// 5×5 (64, padding 2) → ReLU → max-pool 2 → FC 1024 → ReLU → FC `classes`.
#[derive(Config, Debug, PartialEq)]
pub struct MadryCnnConfig {
    /// Image height and width.
    #[config(default = "[28, 28]")]
    pub image: [usize; 2],
    /// Number of classes.
    #[config(default = 10)]
    pub classes: usize,
    /// Seed of the weight initialisation.
    #[config(default = 42)]
    pub seed: u64,
}

/// Madry et al.'s CNN ([`MadryCnnConfig`]).
#[derive(Module, Debug)]
pub struct MadryCnn {
    /// 1 → 32, 5×5, padding 2.
    pub conv1: Conv2d,
    /// 32 → 64, 5×5, padding 2.
    pub conv2: Conv2d,
    /// 3136 → 1024 on 28×28 images.
    pub fc1: Linear,
    /// 1024 → classes.
    pub fc2: Linear,
    pool: MaxPool2d,
    /// Image height and width it was built for.
    image: [usize; 2],
}

impl MadryCnnConfig {
    /// Builds the network, Glorot-uniform weights from `seed`, zero biases.
    pub fn init(&self, device: &Device) -> crate::Result<MadryCnn> {
        check_classes(self.classes)?;
        let flat = flat_size(self.image, 2, 64)?;
        let mut rng = SplitMix64::new(self.seed);
        Ok(MadryCnn {
            conv1: glorot_conv([1, 32], 5, 2, &mut rng, device),
            conv2: glorot_conv([32, 64], 5, 2, &mut rng, device),
            fc1: glorot_linear(flat, 1024, &mut rng, device),
            fc2: glorot_linear(1024, self.classes, &mut rng, device),
            pool: pool(),
            image: self.image,
        })
    }
}

impl MadryCnn {
    /// Logits (no dropout).
    ///
    /// # Shapes
    ///
    /// - images: `[B, 1, H, W]`, output: `[B, classes]`
    pub fn forward(&self, images: Tensor<4>) -> Tensor<2> {
        let x = self.pool.forward(relu(conv_forward(&self.conv1, images)));
        let x = self.pool.forward(relu(conv_forward(&self.conv2, x)));
        let x: Tensor<2> = x.flatten(1, 3);
        self.fc2.forward(relu(self.fc1.forward(x)))
    }

    /// The network as a host chain ([`Dense`]).
    pub fn dense(&self) -> Option<Dense<'_>> {
        host_chain(
            [&self.conv1, &self.conv2],
            &[&self.fc1, &self.fc2],
            self.image,
            false,
        )
    }
}

fn check_classes(classes: usize) -> crate::Result<()> {
    if classes < 2 {
        return Err(ModelError::invalid("classes", "must be at least 2"));
    }
    Ok(())
}

fn check_dropout(p: f64) -> crate::Result<()> {
    if !(0.0..1.0).contains(&p) {
        return Err(ModelError::invalid(
            "dropout",
            format!("{p} is outside [0, 1)"),
        ));
    }
    Ok(())
}

/// On a plain burn-ndarray tensor (no autodiff: no graph to keep) the logits come from the host
/// chain ([`Classifier::dense`](crate::Classifier::dense)), the tensor path's to rounding;
/// elsewhere from the network's `forward`.
impl crate::Classifier for Lenet {
    fn logits(&self, images: Tensor<4>) -> Tensor<2> {
        logits_or(|| self.dense(), images, |x| self.forward(x))
    }

    fn dense(&self) -> Option<Dense<'_>> {
        self.dense()
    }
}

/// Logits and host chain as [`Lenet`]'s.
impl crate::Classifier for FgsmTutorial {
    fn logits(&self, images: Tensor<4>) -> Tensor<2> {
        logits_or(|| self.dense(), images, |x| self.forward(x, None))
    }

    fn dense(&self) -> Option<Dense<'_>> {
        self.dense()
    }
}

/// Logits and host chain as [`Lenet`]'s.
impl crate::Classifier for MadryCnn {
    fn logits(&self, images: Tensor<4>) -> Tensor<2> {
        logits_or(|| self.dense(), images, |x| self.forward(x))
    }

    fn dense(&self) -> Option<Dense<'_>> {
        self.dense()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::on_test_backends;

    fn host<const D: usize>(t: Tensor<D>) -> Vec<f32> {
        t.into_data().try_into_vec_as::<f32>().expect("f32")
    }

    fn close(what: &str, got: &[f32], want: &[f32]) {
        assert_eq!(got.len(), want.len(), "{what}");
        for (i, (a, b)) in got.iter().zip(want).enumerate() {
            assert!(
                (a - b).abs() <= 1e-4 * (1.0 + b.abs()),
                "{what}[{i}]: {a} vs {b}"
            );
        }
    }

    /// The im2col convolution gives the backend's own convolution's outputs and, through
    /// autodiff, its gradients with respect to input, weight and bias, with padding and without.
    #[test]
    fn the_windowed_convolution_is_the_backends() {
        on_test_backends(|d| {
            let mut rng = SplitMix64::new(3);
            for (channels, pad, side) in [([1, 6], 2, 9), ([6, 16], 0, 8)] {
                let mut conv = glorot_conv(channels, 5, pad, &mut rng, d);
                let bias: Vec<f32> = (0..channels[1]).map(|i| i as f32 * 0.1 - 0.2).collect();
                conv.bias = Some(Param::from_tensor(Tensor::from_data(
                    TensorData::new(bias, [channels[1]]),
                    d,
                )));
                let n = 2 * channels[0] * side * side;
                let x: Vec<f32> = (0..n).map(|i| ((i * 37) % 101) as f32 / 100.0).collect();
                let shape = [2, channels[0], side, side];
                let run = |windowed: bool| {
                    let conv = conv.clone().train();
                    let x = Tensor::<4>::from_data(TensorData::new(x.clone(), shape), d)
                        .autodiff()
                        .require_grad();
                    let y = if windowed {
                        windowed_conv(&conv, x.clone())
                    } else {
                        conv.forward(x.clone())
                    };
                    // a loss that weighs every output differently
                    let weights = Tensor::<4>::from_data(
                        TensorData::new(
                            (0..y.dims().iter().product::<usize>())
                                .map(|i| ((i * 13) % 7) as f32 - 3.0)
                                .collect::<Vec<f32>>(),
                            y.dims(),
                        ),
                        d,
                    )
                    .autodiff();
                    let grads = (y.clone() * weights).sum().backward();
                    let gb = conv.bias.as_ref().and_then(|b| b.val().grad(&grads));
                    [
                        host(y.without_autodiff()),
                        host(x.grad(&grads).expect("input gradient")),
                        host(conv.weight.val().grad(&grads).expect("weight gradient")),
                        host(gb.expect("bias gradient")),
                    ]
                };
                let (got, want) = (run(true), run(false));
                for (what, (g, w)) in ["output", "input grad", "weight grad", "bias grad"]
                    .iter()
                    .zip(got.iter().zip(&want))
                {
                    close(&format!("pad {pad} {what}"), g, w);
                }
            }
        });
    }
}
