//! The network as the verifier sees it: a per-pixel input map, then affine layers with ReLU
//! between them, read from a model's host chain ([`Classifier::dense`]).
//!
//! What is bounded soundly and how:
//!
//! - input quantisation `round(x·s)/s` and standardisation `(x − mean)/std` act on each pixel alone
//!   and never decrease (f32 rounding included), so the box `[lo, hi]` maps to the box
//!   `[map(lo), map(hi)]`, which contains every mapped point;
//! - a log-softmax after the last layer, or a positive logit scale, leaves the sign of every
//!   margin `z_y − z_j` unchanged (a log-softmax subtracts the same number from every logit), so
//!   the margins are bounded on the last layer's outputs and a margin certified there is certified
//!   for the deployed model;
//! - convolutional blocks (convolution → ReLU → max-pool) are refused by name: their bounds are not
//!   implemented yet.

use advrob_model::{Classifier, PixelMap};
use burn::tensor::{Device, Tensor, TensorData};

use crate::error::{Result, VerifyError};

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
    device: Device,
}

impl Network {
    /// Reads `model`'s host chain and puts its layers on `device`.
    ///
    /// # Errors
    ///
    /// [`VerifyError::Unsupported`] when the model has no host chain (a model read from ONNX),
    /// has convolutional blocks, or scales its logits by a factor that is not positive.
    pub fn new(model: &dyn Classifier, device: &Device) -> Result<Self> {
        let dense = model.dense().ok_or_else(|| {
            VerifyError::Unsupported(
                "the model is not a chain of dense layers the verifier can read (Classifier::dense \
                 is None: a model read from ONNX, or weights that are not f32)"
                    .into(),
            )
        })?;
        if !dense.convs.is_empty() {
            return Err(VerifyError::Unsupported(format!(
                "{} convolutional block(s) with max-pool: bounds through convolutions are not \
                 implemented yet (MLPs only)",
                dense.convs.len()
            )));
        }
        if let Some(s) = dense.logit_scale
            && !(s.is_finite() && s > 0.0)
        {
            return Err(VerifyError::Unsupported(format!(
                "logit scale {s}: only a positive scale keeps the margins' signs"
            )));
        }
        let layers = dense
            .layers
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
        Ok(Network {
            pixel: dense.pixel,
            layers,
            inputs,
            classes,
            device: device.clone(),
        })
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

    /// Widths of the hidden layers (the ReLUs), first to last.
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
