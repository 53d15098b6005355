//! The network as the verifier sees it: a per-pixel input map, then affine layers with ReLU
//! between them, read from a model's host chain ([`Classifier::dense`]).
//!
//! What is bounded soundly and how:
//!
//! - input quantisation `round(x·s)/s` and standardisation `(x − mean)/std` act on each pixel alone
//!   and never decrease (f32 rounding included), so the box `[lo, hi]` maps to the box
//!   `[map(lo), map(hi)]`, which contains every mapped point;
//! - convolutional blocks (convolution → ReLU → 2×2 max pool) are lowered exactly to affine layers
//!   with ReLU between them ([`crate::lower`]: the convolution as a dense matrix, the pool of
//!   values ≥ 0 as `max(a, b) = relu(a − b) + b` in two ReLU layers, its last sum folded into the
//!   next layer), so a CNN is bounded as the MLP it equals; a chain too big to hold as dense
//!   matrices is refused by name;
//! - a log-softmax after the last layer, or a positive logit scale, leaves the sign of every
//!   margin `z_y − z_j` unchanged (a log-softmax subtracts the same number from every logit), so
//!   the margins are bounded on the last layer's outputs and a margin certified there is certified
//!   for the deployed model.
//!
//! CROWN's intermediate bounds ([`Intermediate`]) are CROWN's own on networks whose hidden layers
//! are all at most [`CROWN_INTERMEDIATE_MAX_WIDTH`] wide (every MLP of advrob), IBP's on wider ones
//! (a lowered CNN: thousands of neurons per layer, each a backward pass of its own), where only the
//! last layer's specs are bounded by CROWN's backward pass (CROWN-IBP).

use advrob_model::{Classifier, PixelMap};
use burn::tensor::{Device, Tensor, TensorData};

use crate::error::{Result, VerifyError};
use crate::lower;

/// The widest hidden layer a network may have for CROWN to bound its hidden layers by default
/// ([`Intermediate::Crown`]); wider ones get IBP's ([`Intermediate::Ibp`]). Above every advrob MLP
/// (the widest, 900), below a lowered CNN's layers (LeNet-5's: 4704, 2352, 1600, 800, …).
pub const CROWN_INTERMEDIATE_MAX_WIDTH: usize = 1024;

/// Where CROWN's and α-CROWN's pre-activation bounds of the hidden layers come from (the last
/// layer's specs are always bounded by the backward pass). Both are sound; CROWN's are tighter and
/// cost a backward pass from every hidden neuron.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Intermediate {
    /// CROWN's backward pass from each neuron with the identity as spec, intersected with IBP's.
    Crown,
    /// Interval bound propagation's (CROWN-IBP).
    Ibp,
}

/// One affine layer on the device: `z = a · W + b`.
#[derive(Debug, Clone)]
pub(crate) struct Affine {
    /// `[inputs, outputs]`.
    pub weight: Tensor<2>,
    /// `[outputs, inputs]`: the backward pass's product.
    pub weight_t: Tensor<2>,
    /// `[outputs]`.
    pub bias: Tensor<1>,
    /// `|W|`, `[inputs, outputs]`: interval propagation's product.
    pub weight_abs: Tensor<2>,
}

impl Affine {
    pub fn inputs(&self) -> usize {
        self.weight.dims()[0]
    }

    pub fn outputs(&self) -> usize {
        self.weight.dims()[1]
    }

    fn autodiff(&self) -> Self {
        Affine {
            weight: self.weight.clone().autodiff(),
            weight_t: self.weight_t.clone().autodiff(),
            bias: self.bias.clone().autodiff(),
            weight_abs: self.weight_abs.clone().autodiff(),
        }
    }
}

/// A ReLU network ready to be bounded: the model's input map, its affine layers (ReLU after every
/// one but the last) on a device, and how many pixels and classes it has.
#[derive(Debug, Clone)]
pub struct Network {
    pub(crate) pixel: PixelMap,
    pub(crate) layers: Vec<Affine>,
    inputs: usize,
    classes: usize,
    intermediate: Intermediate,
    device: Device,
}

impl Network {
    /// Reads `model`'s host chain and puts its layers on `device`.
    ///
    /// # Errors
    ///
    /// [`VerifyError::Unsupported`] when the model has no host chain (a model read from ONNX),
    /// has convolutional blocks too big to lower to dense matrices ([`crate::lower`]), or scales
    /// its logits by a factor that is not positive.
    pub fn new(model: &dyn Classifier, device: &Device) -> Result<Self> {
        let dense = model.dense().ok_or_else(|| {
            VerifyError::Unsupported(
                "the model is not a chain of dense layers the verifier can read (Classifier::dense \
                 is None: a model read from ONNX, or weights that are not f32)"
                    .into(),
            )
        })?;
        if let Some(s) = dense.logit_scale
            && !(s.is_finite() && s > 0.0)
        {
            return Err(VerifyError::Unsupported(format!(
                "logit scale {s}: only a positive scale keeps the margins' signs"
            )));
        }
        let layers = lower::lower(&dense.convs, dense.layers)?
            .iter()
            .map(|l| {
                let (i, o) = (l.inputs(), l.outputs());
                let w = Tensor::<2>::from_data(TensorData::new(l.weight.clone(), [i, o]), device);
                Affine {
                    weight_t: w.clone().transpose(),
                    weight_abs: w.clone().abs(),
                    weight: w,
                    bias: Tensor::from_data(TensorData::new(l.bias.clone(), [o]), device),
                }
            })
            .collect::<Vec<_>>();
        let (Some(first), Some(last)) = (layers.first(), layers.last()) else {
            return Err(VerifyError::Unsupported("a network without layers".into()));
        };
        let (inputs, classes) = (first.inputs(), last.outputs());
        let widest = layers[..layers.len() - 1]
            .iter()
            .map(Affine::outputs)
            .max()
            .unwrap_or(0);
        let intermediate = if widest <= CROWN_INTERMEDIATE_MAX_WIDTH {
            Intermediate::Crown
        } else {
            Intermediate::Ibp
        };
        Ok(Network {
            pixel: dense.pixel,
            layers,
            inputs,
            classes,
            intermediate,
            device: device.clone(),
        })
    }

    /// The same network with its hidden layers bounded by `intermediate` in CROWN and α-CROWN
    /// (the default: [`Intermediate::Crown`] when no hidden layer is wider than
    /// [`CROWN_INTERMEDIATE_MAX_WIDTH`], else [`Intermediate::Ibp`]).
    pub fn with_intermediate(mut self, intermediate: Intermediate) -> Self {
        self.intermediate = intermediate;
        self
    }

    /// Where CROWN's and α-CROWN's hidden-layer bounds come from.
    pub fn intermediate(&self) -> Intermediate {
        self.intermediate
    }

    /// Pixels per image (the first layer's inputs).
    pub fn inputs(&self) -> usize {
        self.inputs
    }

    /// Classes (the last layer's outputs).
    pub fn classes(&self) -> usize {
        self.classes
    }

    /// The device the layers are on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Widths of the hidden layers (the ReLUs), first to last: for a CNN, those of the lowered
    /// chain (per block: the convolution's outputs the pool reads, then the pool's two layers).
    pub fn hidden_widths(&self) -> Vec<usize> {
        self.layers[..self.layers.len() - 1]
            .iter()
            .map(Affine::outputs)
            .collect()
    }

    /// The same layers tracked by autodiff (for α- and β-optimisation).
    pub(crate) fn autodiff_layers(&self) -> Vec<Affine> {
        self.layers.iter().map(Affine::autodiff).collect()
    }

    /// One pixel through the model's input map, in its f32 arithmetic (quantisation, then
    /// standardisation): non-decreasing, so a box's corners map to the mapped box's corners.
    pub(crate) fn map_pixel(&self, x: f32) -> f32 {
        let q = match self.pixel.quantize_steps {
            None => x,
            Some(s) => (x * s).round_ties_even() / s,
        };
        match self.pixel.normalize {
            Some((mean, std)) => (q - mean) / std,
            None => q,
        }
    }
}
