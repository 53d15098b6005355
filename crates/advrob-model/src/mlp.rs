//! The multilayer perceptron of the study: Flatten → [Dense(h, ReLU) → Dropout(p)]* → Dense(classes).

use advrob_data::rng::SplitMix64;
use burn::config::Config;
use burn::module::{Module, Param};
use burn::nn::Linear;
use burn::tensor::activation::relu;
use burn::tensor::{Device, Tensor, TensorData};

use crate::affine::AffineFirst;
use crate::classifier::Classifier;
use crate::dense::{Dense, DenseLayer, PixelMap, logits_or};
use crate::error::ModelError;

/// The most parameters a model may have (4 GiB of f32): a typo such as `--hidden 100000000` is a
/// clear error, not an allocation that aborts the process.
pub const MAX_PARAMETERS: u64 = 1 << 30;

/// Architecture of an [`Mlp`]. The default is the README model of the study: one hidden layer of 128
/// units, dropout 0.2, 10 classes.
#[derive(Config, Debug, PartialEq)]
pub struct MlpConfig {
    /// Input features after flattening (28 × 28 for MNIST).
    #[config(default = 784)]
    pub input: usize,
    /// Width of each hidden layer, in order; empty gives a linear (softmax-regression) model.
    #[config(default = "vec![128]")]
    pub hidden: Vec<usize>,
    /// Dropout probability after each hidden layer, in training only.
    #[config(default = 0.2)]
    pub dropout: f64,
    /// Number of classes (logits).
    #[config(default = 10)]
    pub classes: usize,
    /// Seed of the weight initialisation.
    #[config(default = 42)]
    pub seed: u64,
}

impl MlpConfig {
    /// Refuses sizes of zero and a dropout outside [0, 1), naming the field.
    pub fn check(&self) -> crate::Result<()> {
        if self.input == 0 {
            return Err(ModelError::invalid("input", "must be at least 1"));
        }
        if self.classes < 2 {
            return Err(ModelError::invalid("classes", "must be at least 2"));
        }
        if let Some(i) = self.hidden.iter().position(|&h| h == 0) {
            return Err(ModelError::invalid(
                "hidden",
                format!("layer {i} has width 0"),
            ));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(ModelError::invalid(
                "dropout",
                format!("{} is outside [0, 1)", self.dropout),
            ));
        }
        let mut widths = vec![self.input];
        widths.extend(&self.hidden);
        widths.push(self.classes);
        let params = widths.windows(2).try_fold(0u64, |sum, w| {
            (w[0] as u64)
                .checked_mul(w[1] as u64)
                .and_then(|m| m.checked_add(w[1] as u64))
                .and_then(|l| sum.checked_add(l))
        });
        match params {
            // the weights, and a copy of them while they are built, saved or loaded
            Some(p) if p <= MAX_PARAMETERS => crate::memory::check_fits(
                "hidden",
                &format!("an MLP of widths {:?} ({p} parameters)", self.hidden),
                p * 4 * 2,
            ),
            _ => Err(ModelError::invalid(
                "hidden",
                format!(
                    "{:?} would need {} parameters, more than the {MAX_PARAMETERS} (4 GiB of f32) a model may have",
                    self.hidden,
                    params.map_or_else(|| "over 2^64".to_string(), |p| p.to_string())
                ),
            )),
        }
    }

    /// Builds the model on `device` with Glorot-uniform weights and zero biases (Keras' defaults,
    /// the framework of the study), drawn on the host from `seed` so that the same seed gives the
    /// same weights on every backend.
    pub fn init(&self, device: &Device) -> crate::Result<Mlp> {
        self.check()?;
        let mut rng = SplitMix64::new(self.seed);
        let mut widths = vec![self.input];
        widths.extend(&self.hidden);
        widths.push(self.classes);
        let layers = widths
            .windows(2)
            .map(|w| glorot_linear(w[0], w[1], &mut rng, device))
            .collect();
        Ok(Mlp {
            layers,
            dropout: self.dropout,
        })
    }
}

pub(crate) fn glorot_linear(
    fan_in: usize,
    fan_out: usize,
    rng: &mut SplitMix64,
    device: &Device,
) -> Linear {
    let limit = (6.0 / (fan_in + fan_out) as f64).sqrt();
    let w: Vec<f32> = (0..fan_in * fan_out)
        .map(|_| ((rng.next_f64() * 2.0 - 1.0) * limit) as f32)
        .collect();
    let weight = Tensor::<2>::from_data(TensorData::new(w, [fan_in, fan_out]), device);
    let bias = Tensor::<1>::zeros([fan_out], device);
    Linear {
        weight: Param::from_tensor(weight),
        bias: Some(Param::from_tensor(bias)),
    }
}

/// A multilayer perceptron that returns logits. Dropout is applied only by
/// [`forward_train`](Mlp::forward_train), with masks drawn from the caller's generator, so that
/// training is reproducible from its seed; [`forward`](Mlp::forward) is inference mode.
#[derive(Module, Debug)]
pub struct Mlp {
    /// Dense layers; all but the last are followed by ReLU and dropout.
    pub layers: Vec<Linear>,
    /// Dropout probability (training only).
    pub dropout: f64,
}

impl Mlp {
    /// Inference-mode logits (no dropout).
    ///
    /// # Shapes
    ///
    /// - images: `[B, C, H, W]` with `C * H * W` = the config's `input`
    /// - output: `[B, classes]`
    pub fn forward(&self, images: Tensor<4>) -> Tensor<2> {
        self.run(images, None)
    }

    /// Training-mode logits: inverted dropout after every hidden layer, masks from `rng`.
    ///
    /// # Shapes
    ///
    /// - images: `[B, C, H, W]`, output: `[B, classes]`
    pub fn forward_train(&self, images: Tensor<4>, rng: &mut SplitMix64) -> Tensor<2> {
        self.run(images, Some(rng))
    }

    fn run(&self, images: Tensor<4>, mut rng: Option<&mut SplitMix64>) -> Tensor<2> {
        let mut x: Tensor<2> = images.flatten(1, 3);
        let last = self.layers.len() - 1;
        for (i, layer) in self.layers.iter().enumerate() {
            x = layer.forward(x);
            if i < last {
                x = relu(x);
                if let Some(rng) = rng.as_deref_mut()
                    && self.dropout > 0.0
                {
                    x = dropout(x, self.dropout, rng);
                }
            }
        }
        x
    }
}

/// Inverted dropout: zero each unit with probability `p`, scale the rest by 1/(1-p).
pub(crate) fn dropout(x: Tensor<2>, p: f64, rng: &mut SplitMix64) -> Tensor<2> {
    let dims = x.dims();
    let mask = crate::dense_train::dropout_mask(dims[0] * dims[1], p, rng);
    let device = x.device().without_autodiff();
    x * Tensor::<2>::from_data(TensorData::new(mask, dims), &device)
}

impl Classifier for Mlp {
    /// On a plain burn-ndarray tensor (no autodiff: no graph to keep) the logits come from the
    /// host chain ([`Classifier::dense`]), the tensor path's numbers to the bit, its products
    /// over the current rayon pool; elsewhere from [`Mlp::forward`].
    fn logits(&self, images: Tensor<4>) -> Tensor<2> {
        logits_or(|| self.dense(), images, |x| self.forward(x))
    }

    fn dense(&self) -> Option<Dense<'_>> {
        let layers = self
            .layers
            .iter()
            .map(host_layer)
            .collect::<Option<Vec<_>>>()?;
        Some(Dense {
            pixel: PixelMap::default(),
            convs: Vec::new(),
            layers,
            log_softmax: false,
            logit_scale: None,
            count: None,
            transposed: Default::default(),
        })
    }

    fn affine_first(&self) -> Option<AffineFirst<'_>> {
        let DenseLayer { weight, bias } = host_layer(self.layers.first()?)?;
        let rest = &self.layers[1..];
        Some(AffineFirst {
            pixel: None,
            weight,
            bias,
            head: Box::new(move |z: Tensor<2>| {
                let mut x = z;
                for layer in rest {
                    x = layer.forward(relu(x));
                }
                x
            }),
        })
    }
}

/// A linear layer's weights `[inputs, outputs]` and bias (zeros without one), on the host.
pub(crate) fn host_layer(l: &Linear) -> Option<DenseLayer> {
    // the values without autodiff's wrapper, so that burn-ndarray's are copied where they lie
    let weight = crate::backend::read_f32(l.weight.val().without_autodiff())?;
    let bias = match &l.bias {
        Some(b) => crate::backend::read_f32(b.val().without_autodiff())?,
        None => vec![0.0; l.weight.dims()[1]],
    };
    Some(DenseLayer { weight, bias })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::on_test_backends;

    #[test]
    fn logits_are_the_forward_pass_to_the_bit_and_keep_the_graph() {
        on_test_backends(|device| {
            let device = device.clone();
            let m = MlpConfig::new().init(&device).expect("init");
            // enough rows for the host chain to split its products over the pool
            let x = Tensor::<4>::random(
                [300, 1, 28, 28],
                burn::tensor::Distribution::Uniform(0.0, 1.0),
                &device,
            );
            let bits = |t: Tensor<2>| -> Vec<u32> {
                t.into_data()
                    .try_into_vec_as::<f32>()
                    .expect("f32")
                    .iter()
                    .map(|v| v.to_bits())
                    .collect()
            };
            let logits = m.logits(x.clone());
            assert_eq!(logits.dims(), [300, 10]);
            assert_eq!(bits(logits), bits(m.forward(x.clone())));
            // an empty batch keeps its classes on the host chain (burn-cubecl's own kernels
            // refuse empty tensors, so only ndarray is asked)
            if crate::backend::is_ndarray(&device) {
                let none = m.logits(Tensor::<4>::zeros([0, 1, 28, 28], &device));
                assert_eq!(none.dims(), [0, 10]);
            }
            // with autodiff the logits stay on the graph
            let xa = x.autodiff().require_grad();
            let grads = m.logits(xa.clone()).sum().backward();
            assert!(xa.grad(&grads).is_some(), "a gradient through the logits");
        });
    }

    #[test]
    fn shapes_and_param_count() {
        on_test_backends(|device| {
            let device = device.clone();
            let m = MlpConfig::new().init(&device).expect("init");
            // 784*128 + 128 + 128*10 + 10
            assert_eq!(m.num_params(), 101_770);
            let y = m.forward(Tensor::<4>::zeros([3, 1, 28, 28], &device));
            assert_eq!(y.dims(), [3, 10]);
        });
    }

    #[test]
    fn bad_config_names_the_field() {
        let err = MlpConfig::new()
            .with_dropout(1.0)
            .check()
            .expect_err("dropout 1");
        assert!(err.to_string().contains("dropout"), "{err}");
        let err = MlpConfig::new()
            .with_hidden(vec![5, 0])
            .check()
            .expect_err("width 0");
        assert!(err.to_string().contains("hidden"), "{err}");
    }

    #[test]
    fn same_seed_same_weights() {
        on_test_backends(|device| {
            let device = device.clone();
            let a = MlpConfig::new().with_seed(3).init(&device).expect("init");
            let b = MlpConfig::new().with_seed(3).init(&device).expect("init");
            let c = MlpConfig::new().with_seed(4).init(&device).expect("init");
            let w = |m: &Mlp| {
                m.layers[0]
                    .weight
                    .val()
                    .into_data()
                    .try_into_vec_as::<f32>()
                    .expect("f32")
            };
            assert_eq!(w(&a), w(&b));
            assert_ne!(w(&a), w(&c));
        });
    }

    #[test]
    fn dropout_keeps_expectation_and_inference_is_deterministic() {
        on_test_backends(|device| {
            let device = device.clone();
            let x = Tensor::<2>::ones([100, 100], &device);
            let mut rng = SplitMix64::new(1);
            let y = dropout(x, 0.2, &mut rng);
            let v = y.into_data().try_into_vec_as::<f32>().expect("f32");
            let zeros = v.iter().filter(|&&a| a == 0.0).count();
            // 10_000 units, 20% dropped: 2000 ± a few standard deviations (40)
            assert!((1800..2200).contains(&zeros), "{zeros}");
            let mean: f32 = v.iter().sum::<f32>() / v.len() as f32;
            assert!((mean - 1.0).abs() < 0.05, "{mean}");
        });
    }
}
