//! A classifier that is a chain of dense layers with ReLU between them, behind a per-pixel input
//! map and, for a CNN, convolution → ReLU → max-pool blocks ([`ConvBlock`]), with a log-softmax
//! and its logits scaled where the model has them, opened on the host: the forward pass and the
//! gradient with respect to the input as a few matrix products over host memory, with no tensor
//! graph and no per-operation allocation ([`Classifier::dense`](crate::Classifier::dense)).
//!
//! The products compute the sums of matrixmultiply's `sgemm`, as burn-ndarray's `matmul` does
//! ([`crate::matmul`]: matrixmultiply itself, or on AVX-512 CPUs the same sums in wider tiles), and every elementwise step is the f32
//! operation burn-ndarray performs (bias added after the product, ReLU, the input map's
//! arithmetic, the logit scale; backward: the product with the transposed weight, ReLU's mask,
//! the map's derivative), so for an MLP on burn-ndarray the results are the tensor path's to the
//! bit (tested); a CNN's convolutions sum in another order than burn's, so its results are the
//! tensor path's to rounding (tested). Attacks use the chain on burn-ndarray
//! ([`crate::backend::is_ndarray`]); on other backends the tensor path runs.

use burn::tensor::{Tensor, TensorData};

use crate::conv_host::BlockTrace;
pub use crate::conv_host::ConvBlock;
use crate::matmul::{self, Lhs, Rhs};

/// One dense layer, `[inputs, outputs]` row-major weights and its bias.
#[derive(Debug, Clone)]
pub struct DenseLayer {
    /// `[inputs, outputs]`, row-major.
    pub weight: Vec<f32>,
    /// `[outputs]`.
    pub bias: Vec<f32>,
}

impl DenseLayer {
    /// Inputs of the layer.
    pub fn inputs(&self) -> usize {
        self.weight.len() / self.outputs().max(1)
    }

    /// Outputs of the layer.
    pub fn outputs(&self) -> usize {
        self.bias.len()
    }
}

/// What happens to each pixel before the first layer, in [`crate::DeployConfig`]'s order:
/// quantisation, then standardisation.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct PixelMap {
    /// Quantisation to `steps + 1` levels: `round(x · steps) / steps`, ties to even.
    pub quantize_steps: Option<f32>,
    /// Quantisation passes gradients straight through (BPDA) instead of blocking them.
    pub straight_through: bool,
    /// `(x − mean) / std`.
    pub normalize: Option<(f32, f32)>,
}

impl PixelMap {
    fn forward(&self, x: f32) -> f32 {
        let q = match self.quantize_steps {
            None => x,
            Some(s) => {
                let q = (x * s).round_ties_even() / s;
                if self.straight_through {
                    // `x + (q − x).detach()`
                    x + (q - x)
                } else {
                    // `x · 0 + q.detach()`
                    x * 0.0 + q
                }
            }
        };
        match self.normalize {
            Some((mean, std)) => (q - mean) / std,
            None => q,
        }
    }

    fn backward(&self, g: f32) -> f32 {
        let g = match self.normalize {
            // burn's backward of a division by a scalar multiplies by its reciprocal
            Some((_, std)) => g * (1.0 / std),
            None => g,
        };
        match self.quantize_steps {
            Some(_) if !self.straight_through => g * 0.0,
            _ => g,
        }
    }
}

/// A dense chain on the host, behind convolutional blocks where the network has them; `count`
/// (when set) is told the rows of every pass and whether it took a gradient, as a counted model's
/// own passes would be.
pub struct Dense<'a> {
    /// The input map.
    pub pixel: PixelMap,
    /// Convolution → ReLU → max-pool blocks before the dense layers (none for an MLP); the last
    /// one's output, flattened channel by channel, is the first dense layer's input.
    pub convs: Vec<ConvBlock>,
    /// The layers; every one but the last is followed by ReLU.
    pub layers: Vec<DenseLayer>,
    /// A log-softmax after the last layer (a network whose outputs are log-probabilities).
    pub log_softmax: bool,
    /// The logits' scale, `None` for 1 (after the log-softmax).
    pub logit_scale: Option<f32>,
    /// Told `(rows, with_gradient)` at every forward pass.
    pub count: Option<Box<dyn Fn(usize, bool) + 'a>>,
    /// Each layer's weight transposed, made at the chain's second backward pass
    /// (`Default::default()` when building a chain).
    pub transposed: Transposed,
}

/// A chain's weights transposed (`[outputs, inputs]`), which its backward products read from
/// its second backward pass on: a plain right-hand side is packed by copying rows instead of
/// gathering a column per value (the same panels, so the same numbers; 12–14% faster on the
/// README MLP's first layer). A chain used once (an FGSM batch) gathers instead: its transpose
/// would cost as much as the gathers it saves.
#[derive(Debug, Default)]
pub struct Transposed {
    /// Backward passes so far.
    passes: std::sync::atomic::AtomicUsize,
    /// The transposed weights, layer by layer.
    weights: std::sync::OnceLock<Vec<Vec<f32>>>,
}

/// What the backward pass needs of a forward one.
pub struct DenseForward {
    rows: usize,
    /// Each convolutional block's trace.
    traces: Vec<BlockTrace>,
    /// The input of every layer but the first: each hidden layer's output after ReLU.
    hidden: Vec<Vec<f32>>,
    /// The logits, `[rows, classes]`.
    pub logits: Vec<f32>,
    /// With a log-softmax: the softmax of the last layer's outputs, for its backward.
    probs: Vec<f32>,
}

impl DenseForward {
    /// Rows of the pass.
    pub fn rows(&self) -> usize {
        self.rows
    }
}

/// The log-softmax and logit scale after a chain's last layer, apart from the chain.
#[derive(Debug, Clone, Copy)]
struct Finish {
    log_softmax: bool,
    logit_scale: Option<f32>,
}

impl Finish {
    /// Both applied in place to the last layer's outputs `[rows, classes]`; returns the softmax
    /// the log-softmax's backward needs (empty without one).
    fn apply(self, logits: &mut [f32], rows: usize) -> Vec<f32> {
        let mut probs = Vec::new();
        if self.log_softmax {
            let classes = logits.len() / rows.max(1);
            probs.reserve(logits.len());
            for row in logits.chunks_exact_mut(classes.max(1)) {
                // z − max − ln Σ exp(z − max), as burn's log_softmax
                let m = row.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
                let sum: f32 = row.iter().map(|v| (v - m).exp()).sum();
                let lse = sum.ln();
                for v in row.iter_mut() {
                    *v = *v - m - lse;
                    probs.push(v.exp());
                }
            }
        }
        if let Some(s) = self.logit_scale {
            logits.iter_mut().for_each(|v| *v *= s);
        }
        probs
    }
}

/// Rows of the smallest block of a chain's head run on one thread ([`Dense::head`]).
const HEAD_ROWS: usize = 64;

/// `a · W + b` for the `rows` rows of `a`: the product, then the bias, as burn's `linear`; with
/// `relu`, ReLU after the bias in the same pass (the same two f32 operations in the same order).
pub(crate) fn affine(layer: &DenseLayer, a: &[f32], rows: usize, relu: bool) -> Vec<f32> {
    let (k, n) = (layer.inputs(), layer.outputs());
    let mut h = matmul::rows(rows, k, n, a, Rhs::Plain(&layer.weight));
    matmul::each_row(&mut h, n, |row| bias_relu(row, &layer.bias, relu));
    h
}

/// The bias added to one row of a product, then ReLU with `relu`.
fn bias_relu(row: &mut [f32], bias: &[f32], relu: bool) {
    for (v, b) in row.iter_mut().zip(bias) {
        let s = *v + b;
        *v = if relu { s.max(0.0) } else { s };
    }
}

/// ReLU's backward on `d`, the gradient of a layer's outputs `h` (after ReLU): zero where `h` is
/// not positive. A select in the CPU's widest vectors, not a branch: half of a trained
/// network's units are off, in no order a branch predictor can follow (the branch cost a
/// quarter of an attack's backward pass).
pub(crate) fn relu_mask(d: &mut [f32], h: &[f32]) {
    crate::simd::vectorized(
        #[inline(always)]
        || {
            for (v, h) in d.iter_mut().zip(h) {
                *v = if *h <= 0.0 { 0.0 } else { *v };
            }
        },
    )
}

/// The dense `layers` (ReLU after all but the last) on `x` (`rows` rows), keeping nothing for a
/// backward pass: each block of rows through every layer on one thread, one parallel section
/// instead of one per product and pass (a row's values are [`affine`]'s whichever block it is
/// in).
fn layers_in_blocks(layers: &[DenseLayer], x: &[f32], rows: usize) -> Vec<f32> {
    let (inputs, outputs) = (layers[0].inputs(), layers[0].outputs());
    let classes = layers.last().map_or(0, DenseLayer::outputs);
    let block = matmul::rows_per_block(rows, inputs, outputs, rayon::current_num_threads());
    let chain = |x: &[f32], out: &mut [f32]| {
        let r = x.len() / inputs.max(1);
        let last = layers.len() - 1;
        let mut a: Option<Vec<f32>> = None;
        for (i, layer) in layers.iter().enumerate() {
            let (k, n) = (layer.inputs(), layer.outputs());
            let mut h = vec![0.0f32; r * n];
            let input = a.as_deref().unwrap_or(x);
            matmul::single(
                r,
                k,
                n,
                Lhs::Plain(input),
                Rhs::Plain(&layer.weight),
                &mut h,
            );
            h.chunks_mut(n.max(1))
                .for_each(|row| bias_relu(row, &layer.bias, i < last));
            a = Some(h);
        }
        out.copy_from_slice(&a.unwrap_or_default());
    };
    in_row_blocks(x, rows, inputs, classes, block, chain)
}

/// `chain` on each block of `block` rows of `x` (`rows` rows of `inputs` values) into its block
/// of the output (`classes` values a row), the blocks over the rayon pool.
fn in_row_blocks(
    x: &[f32],
    rows: usize,
    inputs: usize,
    classes: usize,
    block: usize,
    chain: impl Fn(&[f32], &mut [f32]) + Sync,
) -> Vec<f32> {
    use rayon::prelude::*;
    let mut out = vec![0.0f32; rows * classes];
    if block >= rows || classes == 0 || inputs == 0 {
        chain(&x[..rows * inputs], &mut out);
    } else {
        out.par_chunks_mut(block * classes)
            .zip(x[..rows * inputs].par_chunks(block * inputs))
            .for_each(|(out, x)| chain(x, out));
    }
    out
}

/// The logits of `images` through the host chain `chain()` builds where it runs (a plain
/// burn-ndarray tensor: no autodiff, no graph to keep), else through `forward` (the network's
/// tensor path); the chain, which reads the weights back, is only built where it runs.
pub(crate) fn logits_or<'a>(
    chain: impl FnOnce() -> Option<Dense<'a>>,
    images: Tensor<4>,
    forward: impl FnOnce(Tensor<4>) -> Tensor<2>,
) -> Tensor<2> {
    if !images.is_autodiff()
        && crate::backend::is_ndarray(&images.device())
        && let Some(logits) = chain().and_then(|d| d.logits_of(&images))
    {
        return logits;
    }
    forward(images)
}

impl<'a> Dense<'a> {
    /// The logits of `images` through this chain, as a tensor on their device; `None` when
    /// their values cannot be read as f32 or the chain has no layer.
    fn logits_of(&self, images: &Tensor<4>) -> Option<Tensor<2>> {
        let classes = self.layers.last().map(DenseLayer::outputs)?;
        let b = images.dims()[0];
        let out = crate::backend::on_host_f32(images, |x| self.forward(x, b, false))?;
        Some(Tensor::from_data(
            TensorData::new(out.logits, [b, classes]),
            &images.device(),
        ))
    }

    /// The host images `x` through the input map; the identity map (a bare model) reads the
    /// caller's pixels as they are.
    fn mapped<'x>(&self, x: &'x [f32]) -> std::borrow::Cow<'x, [f32]> {
        if self.pixel == PixelMap::default() {
            std::borrow::Cow::Borrowed(x)
        } else {
            std::borrow::Cow::Owned(x.iter().map(|&p| self.pixel.forward(p)).collect())
        }
    }

    /// The features the last layer reads, `[rows, its inputs]`, of the host images `x`: the input
    /// map, the convolutional blocks and every dense layer but the last (each followed by ReLU).
    /// For a chain of one dense layer, the mapped (and convolved) pixels themselves.
    pub fn features(&self, x: &[f32], rows: usize) -> Vec<f32> {
        let mut a = self.mapped(x).into_owned();
        for block in &self.convs {
            a = block.forward(&a, rows, false).0;
        }
        let hidden = self.layers.len().saturating_sub(1);
        for layer in &self.layers[..hidden] {
            a = affine(layer, &a, rows, true);
        }
        a
    }

    /// The first dense layer's outputs before its ReLU, `[rows, its outputs]`, of the host images
    /// `x`, where they are an affine function of the pixels: no convolutional block, no
    /// quantisation in the input map, at least one layer (`None` otherwise). An attack that moves
    /// its images by affine combinations can move these outputs by the same combination instead
    /// of a product, and go on with [`Dense::forward_from_first`]. The numbers are those
    /// [`Dense::forward`] computes before the ReLU.
    pub fn first(&self, x: &[f32], rows: usize) -> Option<Vec<f32>> {
        let layer = self.layers.first()?;
        if !self.convs.is_empty() || self.pixel.quantize_steps.is_some() {
            return None;
        }
        let x = self.mapped(x);
        let n = layer.outputs();
        let mut h = matmul::rows(rows, layer.inputs(), n, &x, Rhs::Plain(&layer.weight));
        matmul::each_row(&mut h, n, |row| bias_relu(row, &layer.bias, false));
        Some(h)
    }

    /// [`Dense::forward`] from the first layer's outputs before its ReLU ([`Dense::first`]):
    /// the same numbers as the forward pass on the images they were computed from, and a
    /// backward pass from it gives the gradient with respect to those images.
    pub fn forward_from_first(
        &self,
        first: &[f32],
        rows: usize,
        with_gradient: bool,
    ) -> DenseForward {
        if let Some(count) = &self.count {
            count(rows, with_gradient);
        }
        let last = self.layers.len().saturating_sub(1);
        let mut a: Vec<f32> = if last > 0 {
            first.iter().map(|v| v.max(0.0)).collect()
        } else {
            first.to_vec()
        };
        let mut hidden = Vec::with_capacity(last);
        for (i, layer) in self.layers.iter().enumerate().skip(1) {
            let h = affine(layer, &a, rows, i < last);
            hidden.push(std::mem::replace(&mut a, h));
        }
        let probs = self.finish(&mut a, rows);
        DenseForward {
            rows,
            traces: Vec::new(),
            hidden,
            logits: a,
            probs,
        }
    }

    /// Logits `[rows, classes]` of the host images `x` (`rows` images, pixels row-major),
    /// keeping what the backward pass needs.
    pub fn forward(&self, x: &[f32], rows: usize, with_gradient: bool) -> DenseForward {
        if let Some(count) = &self.count {
            count(rows, with_gradient);
        }
        let mapped = self.mapped(x);
        let x: &[f32] = &mapped;
        let mut traces = Vec::with_capacity(self.convs.len());
        let mut a: Option<Vec<f32>> = None;
        for block in &self.convs {
            let (out, trace) = block.forward(a.as_deref().unwrap_or(x), rows, with_gradient);
            traces.extend(trace);
            a = Some(out);
        }
        let mut hidden = Vec::with_capacity(self.layers.len().saturating_sub(1));
        let last = self.layers.len().saturating_sub(1);
        if with_gradient || self.layers.is_empty() {
            for (i, layer) in self.layers.iter().enumerate() {
                let input = a.as_deref().unwrap_or(x);
                let h = affine(layer, input, rows, i < last);
                if let Some(done) = a.replace(h)
                    && i > 0
                {
                    hidden.push(done);
                }
            }
        } else {
            let input = a.as_deref().unwrap_or(x);
            a = Some(layers_in_blocks(&self.layers, input, rows));
        }
        let mut logits = a.unwrap_or_else(|| x.to_vec());
        let probs = self.finish(&mut logits, rows);
        DenseForward {
            rows,
            traces,
            hidden,
            logits,
            probs,
        }
    }

    /// The gradient with respect to the input pixels, `[rows, pixels]`, of a loss whose
    /// gradient with respect to the logits of `forward` is `dlogits`.
    ///
    /// # Panics
    ///
    /// When the chain has convolutional blocks and `forward` ran without `with_gradient` (it
    /// then kept no pooling trace).
    pub fn backward(&self, forward: &DenseForward, dlogits: &[f32]) -> Vec<f32> {
        self.backward_into(forward, dlogits, Vec::new())
    }

    /// [`Dense::backward`] into `spare`'s memory (its values are not read), where an iterative
    /// attack hands back its last gradient: the same numbers, without a fresh `[rows, pixels]`
    /// allocation to zero and fault in at every step.
    ///
    /// # Panics
    ///
    /// As [`Dense::backward`].
    pub fn backward_into(
        &self,
        forward: &DenseForward,
        dlogits: &[f32],
        spare: Vec<f32>,
    ) -> Vec<f32> {
        assert_eq!(
            forward.traces.len(),
            self.convs.len(),
            "the backward pass of a CNN's host chain needs a forward pass with_gradient"
        );
        let rows = forward.rows;
        let mut g: Vec<f32> = match self.logit_scale {
            Some(s) => dlogits.iter().map(|v| v * s).collect(),
            None => dlogits.to_vec(),
        };
        if self.log_softmax {
            // ∂ log softmax(z)_i / ∂z_j = δ_ij − p_j: g − p · Σ g, row by row
            let classes = g.len() / rows.max(1);
            for (row, p) in g
                .chunks_exact_mut(classes.max(1))
                .zip(forward.probs.chunks_exact(classes.max(1)))
            {
                let total: f32 = row.iter().sum();
                for (v, q) in row.iter_mut().zip(p) {
                    *v -= q * total;
                }
            }
        }
        let mut spare = Some(spare);
        let transposed = self.transposed();
        for (i, layer) in self.layers.iter().enumerate().rev() {
            let (k, n) = (layer.inputs(), layer.outputs());
            // dx = g · Wᵀ; the first layer's (the largest) into the spare buffer
            let out = if i == 0 { spare.take() } else { None };
            let b = match transposed {
                Some(t) => Rhs::Plain(&t[i]),
                None => Rhs::Transposed(&layer.weight),
            };
            let mut d = matmul::rows_into(rows, n, k, &g, b, out.unwrap_or_default());
            if i > 0 {
                // ReLU's mask: its output was this layer's input
                let hidden = &forward.hidden[i - 1];
                matmul::each_pair(&mut d, hidden, relu_mask);
            }
            g = d;
        }
        for (block, trace) in self.convs.iter().zip(&forward.traces).rev() {
            g = block.backward(trace, &g, rows);
        }
        if self.pixel != PixelMap::default() {
            g.iter_mut().for_each(|v| *v = self.pixel.backward(*v));
        }
        g
    }

    /// Logits `[rows, classes]` from the first layer's outputs before its ReLU (`first`,
    /// `[rows, outputs of the first layer]`): the rest of the chain, for an attack that updates
    /// the first layer itself ([`AffineFirst`](crate::AffineFirst)); each row counts as a forward
    /// pass.
    pub fn head(&self, first: &[f32], rows: usize) -> Vec<f32> {
        if let Some(count) = &self.count {
            count(rows, false);
        }
        let outputs = first.len() / rows.max(1);
        let classes = self.layers.last().map_or(outputs, DenseLayer::outputs);
        let (layers, finish) = (&self.layers[..], self.finishing());
        let last = layers.len().saturating_sub(1);
        // each block of rows through the rest of the chain on one thread, the blocks over the
        // rayon pool (a row's values are the same whichever block it is in)
        let chain = |first: &[f32], out: &mut [f32]| {
            let r = first.len() / outputs.max(1);
            // ReLU between the first layer and the next, where there is a next
            let mut a: Vec<f32> = if last > 0 {
                first.iter().map(|v| v.max(0.0)).collect()
            } else {
                first.to_vec()
            };
            for (i, layer) in layers.iter().enumerate().skip(1) {
                let (k, n) = (layer.inputs(), layer.outputs());
                let mut h = vec![0.0f32; r * n];
                matmul::single(r, k, n, Lhs::Plain(&a), Rhs::Plain(&layer.weight), &mut h);
                h.chunks_mut(n.max(1))
                    .for_each(|row| bias_relu(row, &layer.bias, i < last));
                a = h;
            }
            finish.apply(&mut a, r);
            out.copy_from_slice(&a);
        };
        let block = rows
            .div_ceil(rayon::current_num_threads().max(1))
            .max(HEAD_ROWS);
        in_row_blocks(first, rows, outputs, classes, block, chain)
    }

    /// The log-softmax (where the network has one) and the logit scale applied in place to the
    /// last layer's outputs `[rows, classes]`; returns the softmax the log-softmax's backward
    /// needs (empty without one).
    fn finish(&self, logits: &mut [f32], rows: usize) -> Vec<f32> {
        self.finishing().apply(logits, rows)
    }

    /// What [`Dense::finish`] applies, apart from the chain (which is not `Sync`).
    fn finishing(&self) -> Finish {
        Finish {
            log_softmax: self.log_softmax,
            logit_scale: self.logit_scale,
        }
    }

    /// Each layer's weight transposed, `[outputs, inputs]` row-major, from the chain's second
    /// backward pass on ([`Transposed`]); `None` at its first.
    fn transposed(&self) -> Option<&[Vec<f32>]> {
        use std::sync::atomic::Ordering;
        if self.transposed.passes.fetch_add(1, Ordering::Relaxed) == 0 {
            return None;
        }
        let weights = self.transposed.weights.get_or_init(|| {
            self.layers
                .iter()
                .map(|l| {
                    let (k, n) = (l.inputs(), l.outputs());
                    let mut t = vec![0.0f32; k * n];
                    for (i, row) in l.weight.chunks_exact(n.max(1)).enumerate() {
                        for (j, &v) in row.iter().enumerate() {
                            t[j * k + i] = v;
                        }
                    }
                    t
                })
                .collect()
        });
        Some(weights)
    }

    /// The same chain told to `count` at every pass instead (a counted model's view).
    pub fn counted<'b>(self, count: impl Fn(usize, bool) + 'b) -> Dense<'b>
    where
        'a: 'b,
    {
        Dense {
            pixel: self.pixel,
            convs: self.convs,
            layers: self.layers,
            log_softmax: self.log_softmax,
            logit_scale: self.logit_scale,
            count: Some(Box::new(count)),
            transposed: self.transposed,
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::backend::on_test_backends;
    use crate::{Classifier, DeployConfig, Deployed, MlpConfig, Normalize};
    use burn::tensor::activation::log_softmax;
    use burn::tensor::{Tensor, TensorData};

    fn host<const D: usize>(t: Tensor<D>) -> Vec<f32> {
        t.into_data().try_into_vec_as::<f32>().expect("f32")
    }

    /// The host chain gives the tensor path's logits and input gradient: to the bit on
    /// burn-ndarray (the same kernel and f32 steps), to rounding elsewhere.
    #[test]
    fn the_host_chain_is_the_tensor_path() {
        on_test_backends(|d| {
            let exact = crate::backend::is_ndarray(d);
            let mlp = MlpConfig::new()
                .with_hidden(vec![12, 7])
                .with_seed(9)
                .init(d)
                .expect("init");
            let deployed = |quantize, scale| Deployed {
                net: mlp.clone().into(),
                config: DeployConfig::new()
                    .with_quantize(quantize)
                    .with_logit_scale(scale)
                    .with_normalize(Some(Normalize {
                        mean: 0.13,
                        std: 0.31,
                    })),
            };
            let (plain, quantized) = (deployed(None, 3.0), deployed(Some(16), 1.0));
            let through = quantized
                .straight_through()
                .expect("a straight-through view");
            let x: Vec<f32> = (0..3 * 784)
                .map(|i| ((i * 37) % 101) as f32 / 100.0)
                .collect();
            let models: [&dyn Classifier; 5] =
                [&mlp, &plain.net, &plain, &quantized, through.as_ref()];
            for (mi, m) in models.into_iter().enumerate() {
                let dense = m.dense().expect("an MLP opens on the host");
                let images = Tensor::<4>::from_data(TensorData::new(x.clone(), [3, 1, 28, 28]), d);
                let xg = images.autodiff().require_grad();
                let logits = m.logits(xg.clone());
                let labels = [3usize, 0, 9];
                let pick: Vec<f32> = (0..30)
                    .map(|i| f32::from(u8::from(labels[i / 10] == i % 10)))
                    .collect();
                let onehot = Tensor::<2>::from_data(TensorData::new(pick, [3, 10]), d).autodiff();
                let loss = (log_softmax(logits.clone(), 1) * onehot.clone())
                    .sum()
                    .neg();
                let grads = loss.backward();
                let want_grad = host(xg.grad(&grads).expect("gradient"));
                let want_logits = host(logits.without_autodiff());

                let f = dense.forward(&x, 3, true);
                // the loss's gradient with respect to the logits: softmax − one-hot
                let z = Tensor::<2>::from_data(TensorData::new(f.logits.clone(), [3, 10]), d)
                    .autodiff()
                    .require_grad();
                let onehot = onehot.without_autodiff().autodiff();
                let loss = (log_softmax(z.clone(), 1) * onehot).sum().neg();
                let dz = host(z.grad(&loss.backward()).expect("dz"));
                let got_grad = dense.backward(&f, &dz);
                for (what, got, want) in [
                    ("logits", &f.logits, &want_logits),
                    ("gradient", &got_grad, &want_grad),
                ] {
                    assert_eq!(got.len(), want.len());
                    for (a, b) in got.iter().zip(want.iter()) {
                        if exact {
                            assert!(
                                a == b || a.to_bits() == b.to_bits(),
                                "model {mi} {what}: {a} vs {b}"
                            );
                        } else {
                            assert!((a - b).abs() <= 1e-4 * (1.0 + b.abs()), "{a} vs {b}");
                        }
                    }
                }
            }
        });
    }

    /// From the first layer's outputs, the chain gives the full forward pass's logits and
    /// input gradient to the bit; moved by an affine combination of two images, those outputs
    /// give the combined image's logits to rounding. A quantising input map or a convolution in
    /// front has no such outputs.
    #[test]
    fn the_chain_goes_on_from_its_first_layer() {
        let d = &crate::backend::device("ndarray").expect("ndarray");
        let mlp = MlpConfig::new()
            .with_hidden(vec![12, 7])
            .with_seed(4)
            .init(d)
            .expect("init");
        let deployed = |quantize| Deployed {
            net: mlp.clone().into(),
            config: DeployConfig::new()
                .with_quantize(quantize)
                .with_logit_scale(2.0)
                .with_normalize(Some(Normalize {
                    mean: 0.13,
                    std: 0.31,
                })),
        };
        let (plain, quantized) = (deployed(None), deployed(Some(16)));
        let x0: Vec<f32> = (0..4 * 784)
            .map(|i| ((i * 37) % 101) as f32 / 100.0)
            .collect();
        let x1: Vec<f32> = (0..4 * 784)
            .map(|i| ((i * 53 + 7) % 97) as f32 / 96.0)
            .collect();
        let models: [&dyn Classifier; 2] = [&mlp, &plain];
        for (mi, m) in models.into_iter().enumerate() {
            let dense = m.dense().expect("an MLP opens on the host");
            let full = dense.forward(&x1, 4, true);
            let first = dense.first(&x1, 4).expect("an affine first layer");
            let from = dense.forward_from_first(&first, 4, true);
            assert_eq!(from.logits, full.logits, "model {mi}");
            let dz: Vec<f32> = (0..40).map(|i| (i % 7) as f32 - 3.0).collect();
            assert_eq!(dense.backward(&from, &dz), dense.backward(&full, &dz));
            // x0 + β (x1 − x0), and the same combination of the first layer's outputs
            let beta = 0.9f32;
            let pulled: Vec<f32> = x0
                .iter()
                .zip(&x1)
                .map(|(a, b)| a + (b - a) * beta)
                .collect();
            let f0 = dense.first(&x0, 4).expect("affine");
            let moved: Vec<f32> = f0
                .iter()
                .zip(&first)
                .map(|(a, b)| a + (b - a) * beta)
                .collect();
            let want = dense.forward(&pulled, 4, false).logits;
            let got = dense.forward_from_first(&moved, 4, false).logits;
            for (a, b) in got.iter().zip(&want) {
                assert!(
                    (a - b).abs() <= 1e-4 * (1.0 + b.abs()),
                    "model {mi}: {a} vs {b}"
                );
            }
        }
        let q = quantized.dense().expect("on the host");
        assert!(q.first(&x0, 4).is_none(), "quantisation is not affine");
        let lenet = crate::LenetConfig::new()
            .with_seed(5)
            .init(d)
            .expect("init");
        let l = lenet.dense().expect("a LeNet opens on the host");
        assert!(l.first(&x0, 4).is_none(), "a convolution comes first");
    }

    /// The CNNs' host chains (LeNet, the Madry CNN, the FGSM tutorial's net, behind a deployment's
    /// input map) give the
    /// tensor path's logits and input gradient to rounding on every backend.
    #[test]
    fn the_host_cnn_chain_is_the_tensor_path_to_rounding() {
        on_test_backends(|d| {
            let lenet = crate::LenetConfig::new()
                .with_seed(5)
                .init(d)
                .expect("init");
            let madry = crate::MadryCnnConfig::new()
                .with_seed(6)
                .init(d)
                .expect("init");
            let deployed = Deployed {
                net: crate::Net::Lenet(lenet.clone()),
                config: DeployConfig::new()
                    .with_logit_scale(2.0)
                    .with_normalize(Some(Normalize {
                        mean: 0.13,
                        std: 0.31,
                    })),
            };
            // odd sides: the pools drop the last row and column
            let odd = crate::LenetConfig::new()
                .with_image([29, 31])
                .with_seed(7)
                .init(d)
                .expect("init");
            // log-probabilities out, pool before ReLU
            let tutorial = crate::FgsmTutorialConfig::new()
                .with_seed(8)
                .init(d)
                .expect("init");
            let models: [(&dyn Classifier, [usize; 2]); 5] = [
                (&lenet, [28, 28]),
                (&madry, [28, 28]),
                (&deployed, [28, 28]),
                (&odd, [29, 31]),
                (&tutorial, [28, 28]),
            ];
            for (mi, (m, [ih, iw])) in models.into_iter().enumerate() {
                let x: Vec<f32> = (0..2 * ih * iw)
                    .map(|i| ((i * 37) % 101) as f32 / 100.0)
                    .collect();
                let dense = m.dense().expect("a CNN opens on the host");
                let images = Tensor::<4>::from_data(TensorData::new(x.clone(), [2, 1, ih, iw]), d);
                let xg = images.autodiff().require_grad();
                let logits = m.logits(xg.clone());
                // a loss with a different weight on every logit
                let w = Tensor::<2>::from_data(
                    TensorData::new(
                        (0..20).map(|i| (i % 7) as f32 - 3.0).collect::<Vec<f32>>(),
                        [2, 10],
                    ),
                    d,
                )
                .autodiff();
                let grads = (logits.clone() * w.clone()).sum().backward();
                let want_grad = host(xg.grad(&grads).expect("gradient"));
                let want_logits = host(logits.without_autodiff());
                let f = dense.forward(&x, 2, true);
                let got_grad = dense.backward(&f, &host(w.without_autodiff()));
                for (what, got, want) in [
                    ("logits", &f.logits, &want_logits),
                    ("gradient", &got_grad, &want_grad),
                ] {
                    assert_eq!(got.len(), want.len());
                    let top = want.iter().fold(0f32, |a, b| a.max(b.abs()));
                    for (a, b) in got.iter().zip(want.iter()) {
                        assert!(
                            (a - b).abs() <= 1e-4 * (1.0 + top),
                            "model {mi} {what}: {a} vs {b}"
                        );
                    }
                }
                // and the logits of a plain tensor are the chain's where it runs
                let plain = host(m.logits(Tensor::<4>::from_data(
                    TensorData::new(x.clone(), [2, 1, ih, iw]),
                    d,
                )));
                for (a, b) in plain.iter().zip(&want_logits) {
                    assert!(
                        (a - b).abs() <= 1e-4 * (1.0 + b.abs()),
                        "model {mi}: {a} vs {b}"
                    );
                }
            }
        });
    }
}
