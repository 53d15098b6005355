//! A classifier opened at its first layer: `logits = head(pixel(x) · W + b)`, where `pixel` maps
//! each pixel on its own (quantisation, standardisation) and the first layer is affine. An attack
//! that changes a few pixels per query (Square) then updates the first layer's outputs by those
//! pixels' rows of `W` instead of recomputing the whole network.

use burn::tensor::Tensor;

/// The first layer of a classifier on the host and the rest of it on the device
/// ([`Classifier::affine_first`](crate::Classifier::affine_first)).
pub struct AffineFirst<'a> {
    /// Each pixel's value as the first layer sees it; `None` for the identity (a bare network),
    /// which then costs no call per pixel.
    pub pixel: Option<Box<dyn Fn(f32) -> f32 + Send + Sync + 'a>>,
    /// The first layer's weights, `[inputs, outputs]` row-major: row `k` is what pixel `k` adds
    /// per unit of its value.
    pub weight: Vec<f32>,
    /// The first layer's bias, `[outputs]`.
    pub bias: Vec<f32>,
    /// The rest of the model: the first layer's outputs `[B, outputs]` to logits `[B, classes]`.
    pub head: Box<dyn Fn(Tensor<2>) -> Tensor<2> + 'a>,
}

impl AffineFirst<'_> {
    /// Width of the first layer.
    pub fn outputs(&self) -> usize {
        self.bias.len()
    }

    /// Inputs of the first layer (pixels per image).
    pub fn inputs(&self) -> usize {
        self.weight.len() / self.bias.len().max(1)
    }

    /// The first layer's outputs for one image, computed from all its pixels.
    pub fn first(&self, image: &[f32]) -> Vec<f32> {
        self.layer().first(image)
    }

    /// `z += by · W[k, :]`: pixel `k`'s contribution, scaled.
    pub fn add_row(&self, z: &mut [f32], k: usize, by: f32) {
        self.layer().add_row(z, k, by);
    }

    /// The first layer alone, without the head: what threads can share (an attack updating
    /// many images' first layers at once).
    pub fn layer(&self) -> FirstLayer<'_> {
        FirstLayer {
            pixel: self.pixel.as_deref(),
            weight: &self.weight,
            bias: &self.bias,
        }
    }

    /// The same split with `before` applied ahead of this one's pixel map (an input transform in
    /// front of the network; `None` for none) and `after` after its head (a transform of the
    /// logits).
    pub fn wrap<'b>(
        self,
        before: Option<impl Fn(f32) -> f32 + Send + Sync + 'b>,
        after: impl Fn(Tensor<2>) -> Tensor<2> + 'b,
    ) -> AffineFirst<'b>
    where
        Self: 'b,
    {
        let (pixel, head) = (self.pixel, self.head);
        let pixel: Option<Box<dyn Fn(f32) -> f32 + Send + Sync + 'b>> = match (pixel, before) {
            (None, None) => None,
            (Some(p), None) => Some(p),
            (None, Some(b)) => Some(Box::new(b)),
            (Some(p), Some(b)) => Some(Box::new(move |x| p(b(x)))),
        };
        AffineFirst {
            pixel,
            weight: self.weight,
            bias: self.bias,
            head: Box::new(move |z| after(head(z))),
        }
    }
}

/// The first layer of an [`AffineFirst`] ([`AffineFirst::layer`]), shareable between threads.
#[derive(Clone, Copy)]
pub struct FirstLayer<'s> {
    pixel: Option<&'s (dyn Fn(f32) -> f32 + Send + Sync)>,
    weight: &'s [f32],
    bias: &'s [f32],
}

impl FirstLayer<'_> {
    /// Pixel value `x` as the first layer sees it.
    #[inline(always)]
    pub fn pixel(&self, x: f32) -> f32 {
        match self.pixel {
            Some(p) => p(x),
            None => x,
        }
    }

    /// The first layer's outputs for one image, computed from all its pixels (the bias, then
    /// each pixel's row in order; in the CPU's widest vectors, the same sums).
    pub fn first(&self, image: &[f32]) -> Vec<f32> {
        let mut z = self.bias.to_vec();
        let mapped: Vec<f32>;
        let seen = match self.pixel {
            None => image,
            Some(p) => {
                mapped = image.iter().map(|&x| p(x)).collect();
                &mapped
            }
        };
        crate::simd::vectorized(
            #[inline(always)]
            || {
                for (k, &by) in seen.iter().enumerate() {
                    self.add_row(&mut z, k, by);
                }
            },
        );
        z
    }

    /// `z += by · W[k, :]`: pixel `k`'s contribution, scaled. Inlined into its caller, so a
    /// caller's loop inside [`vectorized`](crate::simd::vectorized) runs it in wide vectors.
    #[inline(always)]
    pub fn add_row(&self, z: &mut [f32], k: usize, by: f32) {
        if by == 0.0 {
            return;
        }
        let n = z.len();
        for (zi, wi) in z.iter_mut().zip(&self.weight[k * n..(k + 1) * n]) {
            *zi += by * wi;
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::backend::on_test_backends;
    use crate::{Classifier, DeployConfig, Deployed, MlpConfig, Normalize};
    use burn::tensor::{Tensor, TensorData};

    #[test]
    fn the_split_computes_the_models_logits() {
        on_test_backends(|d| {
            let mlp = MlpConfig::new()
                .with_hidden(vec![12, 7])
                .with_seed(9)
                .init(d)
                .expect("init");
            let deployed = Deployed {
                net: mlp.clone().into(),
                config: DeployConfig::new()
                    .with_quantize(Some(16))
                    .with_logit_scale(3.0)
                    .with_normalize(Some(Normalize {
                        mean: 0.13,
                        std: 0.31,
                    })),
            };
            let x: Vec<f32> = (0..3 * 784)
                .map(|i| ((i * 37) % 101) as f32 / 100.0)
                .collect();
            let images = Tensor::<4>::from_data(TensorData::new(x.clone(), [3, 1, 28, 28]), d);
            let models: [&dyn Classifier; 3] = [&mlp, &deployed.net, &deployed];
            for m in models {
                let f = m.affine_first().expect("an MLP opens at its first layer");
                assert_eq!((f.inputs(), f.outputs()), (784, 12));
                let first: Vec<f32> = x.chunks(784).flat_map(|im| f.first(im)).collect();
                let z = Tensor::<2>::from_data(TensorData::new(first, [3, 12]), d);
                let split = (f.head)(z)
                    .into_data()
                    .try_into_vec_as::<f32>()
                    .expect("f32");
                let whole = m
                    .logits(images.clone())
                    .into_data()
                    .try_into_vec_as::<f32>()
                    .expect("f32");
                for (a, b) in split.iter().zip(&whole) {
                    assert!((a - b).abs() <= 1e-4 * (1.0 + b.abs()), "{a} vs {b}");
                }
            }
        });
    }

    #[test]
    fn a_row_update_equals_recomputing_from_all_pixels() {
        on_test_backends(|d| {
            let mlp = MlpConfig::new().with_hidden(vec![5]).init(d).expect("init");
            let f = mlp.affine_first().expect("split");
            let mut x: Vec<f32> = (0..784).map(|i| (i % 7) as f32 / 6.0).collect();
            let mut z = f.first(&x);
            for k in [3, 400, 783] {
                f.add_row(&mut z, k, 0.25 - x[k]);
                x[k] = 0.25;
            }
            for (a, b) in z.iter().zip(f.first(&x)) {
                assert!((a - b).abs() <= 1e-5, "{a} vs {b}");
            }
        });
    }
}
