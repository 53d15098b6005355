//! How a trained network is deployed: an optional input quantisation in front of it and a scale on
//! its logits behind it. Both leave the plain network's weights untouched, and both are ways to
//! mask gradients, which is why they live beside the network rather than inside a defense.

use burn::config::Config;
use burn::tensor::Tensor;

use crate::affine::AffineFirst;
use crate::classifier::Classifier;
use crate::dense::{Dense, PixelMap};
use crate::error::ModelError;
use crate::network::Net;

/// What is wrapped around a network at deployment. The default wraps nothing.
#[derive(Config, Debug, PartialEq)]
pub struct DeployConfig {
    /// Round every input pixel to one of this many evenly spaced levels in [0, 1] before the
    /// network sees it. The rounding has a zero derivative almost everywhere, so a white-box
    /// gradient through it is zero: a gradient-masking mechanism, not a robustness one.
    #[config(default = "None")]
    pub quantize: Option<u32>,
    /// Multiply the logits by this factor. The predictions do not change (argmax is invariant to a
    /// positive scale) but a large factor saturates the softmax, so the cross-entropy gradient
    /// underflows to zero on confidently classified inputs: gradient masking again.
    #[config(default = 1.0)]
    pub logit_scale: f64,
    /// Standardise every pixel as `(x − mean) / std` before the network (after any quantisation),
    /// as a model trained on standardised inputs expects: attacks still see and perturb images in
    /// [0, 1]. `None`: the network sees [0, 1].
    #[config(default = "None")]
    pub normalize: Option<Normalize>,
}

/// A standardisation of the inputs: `(x − mean) / std`.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Normalize {
    /// Subtracted from every pixel.
    pub mean: f64,
    /// What the difference is divided by.
    pub std: f64,
}

impl DeployConfig {
    /// Refuses fewer than two quantisation levels and a scale that is not positive and finite.
    pub fn check(&self) -> crate::Result<()> {
        if let Some(l) = self.quantize
            && l < 2
        {
            return Err(ModelError::invalid(
                "quantize",
                format!("{l} levels: at least 2 are needed"),
            ));
        }
        if let Some(n) = self.normalize
            && !(n.mean.is_finite() && n.std.is_finite() && n.std > 0.0)
        {
            return Err(ModelError::invalid(
                "normalize",
                format!(
                    "mean {} and std {}: the std must be positive, both finite",
                    n.mean, n.std
                ),
            ));
        }
        if !(self.logit_scale.is_finite() && self.logit_scale > 0.0) {
            return Err(ModelError::invalid(
                "logit_scale",
                format!("{} is not a positive finite number", self.logit_scale),
            ));
        }
        Ok(())
    }

    /// Whether this wraps nothing.
    pub fn is_identity(&self) -> bool {
        self.quantize.is_none() && self.logit_scale == 1.0 && self.normalize.is_none()
    }

    /// The input transform alone: quantisation, then standardisation (identity without either).
    ///
    /// # Shapes
    ///
    /// `[B, C, H, W]` in and out
    pub fn preprocess(&self, images: Tensor<4>) -> Tensor<4> {
        self.normalized(self.quantized(images))
    }

    /// The quantisation alone (identity without `quantize`): the non-differentiable part.
    ///
    /// # Shapes
    ///
    /// `[B, C, H, W]` in and out
    pub fn quantized(&self, images: Tensor<4>) -> Tensor<4> {
        match self.quantize {
            Some(levels) => quantize(images, levels),
            None => images,
        }
    }

    /// The standardisation alone (identity without `normalize`).
    ///
    /// # Shapes
    ///
    /// `[B, C, H, W]` in and out
    pub fn normalized(&self, images: Tensor<4>) -> Tensor<4> {
        match self.normalize {
            Some(n) => (images - n.mean) / n.std,
            None => images,
        }
    }
}

/// `round(x · (L − 1)) / (L − 1)`, with a derivative of exactly zero with respect to `x`.
///
/// The result is built as `0 · x + q` with `q` detached, so the autodiff graph still reaches the
/// input (an attack gets a zero gradient, not a missing one), as it would through a rounding
/// implemented in any framework with a zero-derivative `round`.
///
/// # Shapes
///
/// `[B, C, H, W]` in and out
pub fn quantize(images: Tensor<4>, levels: u32) -> Tensor<4> {
    let steps = f64::from(levels.max(2) - 1);
    let q = (images.clone().detach() * steps).round() / steps;
    images * 0.0 + q.detach()
}

/// A network with its deployment wrapper: what attacks and evaluations see of a defended model.
#[derive(Debug, Clone)]
pub struct Deployed {
    /// The network, in inference mode.
    pub net: Net,
    /// What wraps it.
    pub config: DeployConfig,
}

impl Deployed {
    /// The network with nothing around it.
    pub fn plain(net: impl Into<Net>) -> Self {
        Self {
            net: net.into(),
            config: DeployConfig::new(),
        }
    }
}

impl From<Net> for Deployed {
    fn from(net: Net) -> Self {
        Self::plain(net)
    }
}

impl Deployed {
    /// The same deployed network with a new last layer ([`Net::with_head`]) and no logit scale:
    /// the input transform stays, so the new head reads the features the deployed model computes.
    /// `None` where [`Net::with_head`] is.
    pub fn with_head(&self, weight: Vec<f32>, bias: Vec<f32>) -> Option<Deployed> {
        Some(Deployed {
            net: self.net.with_head(weight, bias)?,
            config: DeployConfig {
                logit_scale: 1.0,
                ..self.config.clone()
            },
        })
    }
}

impl Deployed {
    fn scaled(&self, z: Tensor<2>) -> Tensor<2> {
        if self.config.logit_scale == 1.0 {
            z
        } else {
            z * self.config.logit_scale
        }
    }
}

impl Classifier for Deployed {
    fn logits(&self, images: Tensor<4>) -> Tensor<2> {
        // the network's own logits: an MLP's host chain on plain burn-ndarray tensors
        self.scaled(self.net.logits(self.config.preprocess(images)))
    }

    fn straight_through(&self) -> Option<Box<dyn Classifier + '_>> {
        self.config
            .quantize
            .map(|_| Box::new(StraightThrough(self)) as Box<dyn Classifier + '_>)
    }

    /// The network's split behind the deployment's input transform, which acts on each pixel
    /// alone (the same f32 arithmetic as [`DeployConfig::preprocess`]), and with the logit scale
    /// after its head.
    fn affine_first(&self) -> Option<AffineFirst<'_>> {
        let split = self.net.affine_first()?;
        let steps = self.config.quantize.map(|l| (l.max(2) - 1) as f32);
        let norm = self.config.normalize.map(|n| (n.mean as f32, n.std as f32));
        // no map for the identity (neither quantised nor normalised)
        let map = (steps.is_some() || norm.is_some()).then_some(move |x: f32| {
            let q = steps.map_or(x, |s| (x * s).round_ties_even() / s);
            norm.map_or(q, |(mean, std)| (q - mean) / std)
        });
        Some(split.wrap(map, |z| self.scaled(z)))
    }

    fn dense(&self) -> Option<Dense<'_>> {
        self.dense_with(false)
    }
}

impl Deployed {
    /// The network's host chain behind the deployment's input map (quantisation blocking
    /// gradients, or passing them straight through) and with its logit scale.
    fn dense_with(&self, straight_through: bool) -> Option<Dense<'_>> {
        let mut d = self.net.dense()?;
        d.pixel = PixelMap {
            quantize_steps: self.config.quantize.map(|l| (l.max(2) - 1) as f32),
            straight_through,
            normalize: self.config.normalize.map(|n| (n.mean as f32, n.std as f32)),
        };
        d.logit_scale = (self.config.logit_scale != 1.0).then_some(self.config.logit_scale as f32);
        Some(d)
    }
}

/// A [`Deployed`] model whose quantisation passes gradients straight through:
/// `x + (q(x) − x)` with the difference detached, so the forward value is `q(x)` and `∂/∂x` is 1.
struct StraightThrough<'a>(&'a Deployed);

impl Classifier for StraightThrough<'_> {
    fn logits(&self, images: Tensor<4>) -> Tensor<2> {
        let c = &self.0.config;
        let q = c.quantized(images.clone()).detach();
        let through = images.clone() + (q - images.detach()).detach();
        self.0.scaled(self.0.net.forward(c.normalized(through)))
    }

    fn dense(&self) -> Option<Dense<'_>> {
        self.0.dense_with(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::on_test_backends;
    use crate::mlp::MlpConfig;
    use burn::tensor::TensorData;

    fn host<const D: usize>(t: Tensor<D>) -> Vec<f32> {
        t.into_data().try_into_vec_as::<f32>().expect("f32")
    }

    #[test]
    fn quantize_rounds_to_levels() {
        on_test_backends(|d| {
            let d = d.clone();
            let x = Tensor::<4>::from_data(
                TensorData::new(vec![0.0f32, 0.2, 0.26, 0.5, 0.74, 1.0], [1, 1, 2, 3]),
                &d,
            );
            // 3 levels {0, 0.5, 1}: 0.2 → 0, 0.26 → 0.5, 0.74 → 0.5
            assert_eq!(host(quantize(x, 3)), [0.0, 0.0, 0.5, 0.5, 0.5, 1.0]);
        });
    }

    #[test]
    fn quantised_model_has_zero_input_gradient_almost_everywhere() {
        on_test_backends(|d| {
            let d = d.clone();
            let mlp = MlpConfig::new()
                .with_hidden(vec![8])
                .init(&d)
                .expect("init");
            let model = Deployed {
                net: mlp.clone().into(),
                config: DeployConfig::new().with_quantize(Some(16)),
            };
            let v: Vec<f32> = (0..2 * 784).map(|i| (i % 97) as f32 / 97.0).collect();
            let gradient = |m: &dyn Classifier| {
                let x = Tensor::<4>::from_data(TensorData::new(v.clone(), [2, 1, 28, 28]), &d)
                    .autodiff()
                    .require_grad();
                let grads = m.logits(x.clone()).sum().backward();
                host(x.grad(&grads).expect("the graph reaches the input"))
            };
            // the plain network has a gradient; the quantised one has exactly none
            assert!(gradient(&mlp).iter().any(|g| *g != 0.0));
            assert!(gradient(&model).iter().all(|g| *g == 0.0));
        });
    }

    #[test]
    fn straight_through_keeps_the_values_and_restores_the_gradient() {
        on_test_backends(|d| {
            let d = d.clone();
            let mlp = MlpConfig::new()
                .with_hidden(vec![8])
                .init(&d)
                .expect("init");
            let model = Deployed {
                net: mlp.into(),
                config: DeployConfig::new().with_quantize(Some(4)),
            };
            let bpda = model.straight_through().expect("quantised");
            let v: Vec<f32> = (0..784).map(|i| (i % 13) as f32 / 13.0).collect();
            let x = || Tensor::<4>::from_data(TensorData::new(v.clone(), [1, 1, 28, 28]), &d);
            let (a, b) = (host(model.logits(x())), host(bpda.logits(x())));
            for (p, q) in a.iter().zip(&b) {
                assert!((p - q).abs() < 1e-5, "{p} {q}");
            }
            let xa = x().autodiff().require_grad();
            let grads = bpda.logits(xa.clone()).sum().backward();
            let g = host(xa.grad(&grads).expect("gradient"));
            assert!(g.iter().any(|v| *v != 0.0));
            // a model with nothing to go around has no straight-through view
            assert!(
                Deployed::plain(model.net.clone())
                    .straight_through()
                    .is_none()
            );
        });
    }

    #[test]
    fn logit_scale_keeps_predictions() {
        on_test_backends(|d| {
            let d = d.clone();
            let mlp = MlpConfig::new()
                .with_hidden(vec![8])
                .init(&d)
                .expect("init");
            let x = Tensor::<4>::ones([4, 1, 28, 28], &d) * 0.3;
            let scaled = Deployed {
                net: mlp.clone().into(),
                config: DeployConfig::new().with_logit_scale(1000.0),
            };
            let a = host(mlp.logits(x.clone()));
            let b = host(scaled.logits(x));
            for (p, q) in a.iter().zip(&b) {
                assert!((p * 1000.0 - q).abs() <= 1e-3 * q.abs().max(1.0), "{p} {q}");
            }
        });
    }

    #[test]
    fn bad_deploy_config_names_the_field() {
        let e = DeployConfig::new().with_quantize(Some(1)).check();
        assert!(e.expect_err("1 level").to_string().contains("quantize"));
        let e = DeployConfig::new().with_logit_scale(0.0).check();
        assert!(e.expect_err("scale 0").to_string().contains("logit_scale"));
    }
}
