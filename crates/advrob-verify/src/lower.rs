//! A CNN's convolutional blocks lowered exactly to the chain the verifier bounds: affine layers
//! with ReLU after every one but the last.
//!
//! A block ([`ConvBlock`]: stride-1 convolution with zero padding, ReLU, 2×2 max pool of stride
//! 2 with the floor) becomes three affine layers, each followed by ReLU:
//!
//! 1. the convolution as a dense matrix `[C·H·W, O·2P·2Q]` (input index `c·H·W + r·W + col`,
//!    output `o·2P·2Q + r·2Q + col`), computing only the `2P × 2Q` outputs the pool reads (the
//!    rows and columns the floor drops feed nothing);
//! 2. per pooled cell with window `(a, b; c, d)` (after ReLU, so all ≥ 0): `[a − b, b, c − d,
//!    d]`, since `max(a, b) = relu(a − b) + b` when `b ≥ 0`, and `b = relu(b)`;
//! 3. `[m₁ − m₂, m₂]` with `m₁ = u₁ + u₂ = max(a, b)` and `m₂ = u₃ + u₄ = max(c, d)`, both ≥ 0.
//!
//! The pool's value `v₁ + v₂ = max(m₁, m₂)` is an affine map with no ReLU after it, so it is
//! folded into the next layer (the next block's convolution or the first dense layer): that
//! layer's matrix read twice, once for `v₁` and once for `v₂`. The chain computes the model's
//! function exactly in real arithmetic; in f32 it differs by rounding (tested against the host
//! chain's own forward pass).
//!
//! The matrices are dense: LeNet-5 on 28×28 lowers to about 45 M weights (the first pool layer,
//! 4704 × 4704, is half of them). A chain of more than [`MAX_WEIGHTS`] is refused by name (the
//! CNN of Madry et al. would need billions; a sparse lowering is not implemented).

use advrob_model::{ConvBlock, DenseLayer};

use crate::error::{Result, VerifyError};

/// The most weights a lowered chain may hold, over all its layers (256 MiB of f32; the network
/// keeps three copies on its device: the matrix, its transpose and its magnitude).
pub(crate) const MAX_WEIGHTS: usize = 1 << 26;

/// The sizes of one block's three layers: the convolution's inputs (doubled when a pool's sum is
/// folded into it), its outputs (`O·2P·2Q`) and the pooled values (`O·P·Q`).
struct Plan {
    inputs: usize,
    conv: usize,
    pooled: usize,
}

/// `convs` then `layers` as affine layers with ReLU after every one but the last (an MLP's
/// `layers` as they are).
///
/// # Errors
///
/// [`VerifyError::Unsupported`] when a block's input is not the previous one's output, the last
/// block's output is not the first dense layer's input, a block pools to nothing, or the lowered
/// chain would hold more than [`MAX_WEIGHTS`] weights.
pub(crate) fn lower(convs: &[ConvBlock], layers: Vec<DenseLayer>) -> Result<Vec<DenseLayer>> {
    if convs.is_empty() {
        return Ok(layers);
    }
    let plans = plan(convs, &layers)?;
    let mut out = Vec::with_capacity(3 * convs.len() + layers.len());
    let mut sum: Option<usize> = None;
    for (block, p) in convs.iter().zip(&plans) {
        out.push(fold_sum(sum, conv_matrix(block)));
        let [ph, pw] = block.output();
        let (first, second) = pool_layers(block.outputs(), [ph, pw]);
        out.push(first);
        out.push(second);
        sum = Some(p.pooled);
    }
    for layer in layers {
        out.push(fold_sum(sum.take(), layer));
    }
    Ok(out)
}

/// Checks that the blocks and layers fit together and that the lowered chain is not too big,
/// before anything is allocated.
fn plan(convs: &[ConvBlock], layers: &[DenseLayer]) -> Result<Vec<Plan>> {
    let mut plans: Vec<Plan> = Vec::with_capacity(convs.len());
    for (i, block) in convs.iter().enumerate() {
        let [ph, pw] = block.output();
        if ph == 0 || pw == 0 || block.outputs() == 0 {
            return Err(VerifyError::Unsupported(format!(
                "convolutional block {i} pools its {:?} input to nothing",
                block.input
            )));
        }
        if let Some(prev) = plans.last()
            && prev.pooled != block.input_size()
        {
            return Err(VerifyError::Unsupported(format!(
                "convolutional block {i} reads {} values, the block before gives {}",
                block.input_size(),
                prev.pooled
            )));
        }
        plans.push(Plan {
            inputs: plans
                .last()
                .map_or(block.input_size(), |prev| 2 * prev.pooled),
            conv: block.outputs() * 4 * ph * pw,
            pooled: block.outputs() * ph * pw,
        });
    }
    let pooled = plans.last().map_or(0, |p| p.pooled);
    match layers.first() {
        Some(first) if first.inputs() == pooled => {}
        Some(first) => {
            return Err(VerifyError::Unsupported(format!(
                "the last convolutional block gives {pooled} values, the first dense layer reads \
                 {}",
                first.inputs()
            )));
        }
        None => {
            return Err(VerifyError::Unsupported(
                "convolutional blocks without a dense layer after them".into(),
            ));
        }
    }
    let weights: usize = plans
        .iter()
        .map(|p| p.inputs * p.conv + p.conv * p.conv + p.conv * (p.conv / 2))
        .sum::<usize>()
        + 2 * layers[0].weight.len()
        + layers[1..].iter().map(|l| l.weight.len()).sum::<usize>();
    if weights > MAX_WEIGHTS {
        return Err(VerifyError::Unsupported(format!(
            "the convolutions lowered to dense layers would hold {weights} weights, over the \
             verifier's limit of {MAX_WEIGHTS} (a sparse lowering is not implemented)"
        )));
    }
    Ok(plans)
}

/// `layer` after a pool's final sum `v₁ + v₂` of `n` values (`v₁` the first `n` inputs, `v₂`
/// the next `n`): its matrix read twice. Without a sum (`None`), `layer` itself.
fn fold_sum(sum: Option<usize>, layer: DenseLayer) -> DenseLayer {
    match sum {
        None => layer,
        Some(n) => {
            debug_assert_eq!(layer.inputs(), n, "checked by plan");
            let mut weight = Vec::with_capacity(2 * layer.weight.len());
            weight.extend_from_slice(&layer.weight);
            weight.extend_from_slice(&layer.weight);
            DenseLayer {
                weight,
                bias: layer.bias,
            }
        }
    }
}

/// The convolution of `block` as a dense `[C·H·W, O·2P·2Q]` matrix, only the outputs its pool
/// reads. Each (input, output) pair meets at most one tap of the kernel (the tap is the offset
/// between them), so every entry is one weight or zero.
fn conv_matrix(block: &ConvBlock) -> DenseLayer {
    let (c, k, pad, o) = (block.channels, block.kernel, block.pad, block.outputs());
    let [h, w] = block.input;
    let [ph, pw] = block.output();
    let (rows, cols) = (2 * ph, 2 * pw);
    let outputs = o * rows * cols;
    let mut weight = vec![0.0f32; c * h * w * outputs];
    let mut bias = vec![0.0f32; outputs];
    for oc in 0..o {
        for y in 0..rows {
            for x in 0..cols {
                let j = (oc * rows + y) * cols + x;
                bias[j] = block.bias[oc];
                for ic in 0..c {
                    for ki in 0..k {
                        // input row y + ki − pad, inside the image (the padding is zero)
                        let Some(r) = (y + ki).checked_sub(pad).filter(|&r| r < h) else {
                            continue;
                        };
                        for kj in 0..k {
                            let Some(col) = (x + kj).checked_sub(pad).filter(|&v| v < w) else {
                                continue;
                            };
                            let i = (ic * h + r) * w + col;
                            weight[i * outputs + j] =
                                block.weight[((oc * c + ic) * k + ki) * k + kj];
                        }
                    }
                }
            }
        }
    }
    DenseLayer { weight, bias }
}

/// The two layers of a 2×2 max pool over `channels` planes of `2P × 2Q` values (after ReLU),
/// `N = channels·P·Q` cells: `[4N, …]` ← `[a − b, b, c − d, d]` per cell (each of the four a
/// block of `N`), then `[2N]` ← `[u₁ + u₂ − u₃ − u₄, u₃ + u₄]`.
fn pool_layers(channels: usize, [ph, pw]: [usize; 2]) -> (DenseLayer, DenseLayer) {
    let (rows, cols) = (2 * ph, 2 * pw);
    let n = channels * ph * pw;
    let inputs = channels * rows * cols;
    let mut first = vec![0.0f32; inputs * 4 * n];
    let mut second = vec![0.0f32; 4 * n * 2 * n];
    for oc in 0..channels {
        for i in 0..ph {
            for j in 0..pw {
                let cell = (oc * ph + i) * pw + j;
                let a = (oc * rows + 2 * i) * cols + 2 * j;
                let (b, c, d) = (a + 1, a + cols, a + cols + 1);
                let mut set = |row: usize, col: usize, v: f32| first[row * 4 * n + col] = v;
                set(a, cell, 1.0);
                set(b, cell, -1.0);
                set(b, n + cell, 1.0);
                set(c, 2 * n + cell, 1.0);
                set(d, 2 * n + cell, -1.0);
                set(d, 3 * n + cell, 1.0);
                let mut set = |row: usize, col: usize, v: f32| second[row * 2 * n + col] = v;
                set(cell, cell, 1.0);
                set(n + cell, cell, 1.0);
                set(2 * n + cell, cell, -1.0);
                set(3 * n + cell, cell, -1.0);
                set(2 * n + cell, n + cell, 1.0);
                set(3 * n + cell, n + cell, 1.0);
            }
        }
    }
    (
        DenseLayer {
            weight: first,
            bias: vec![0.0; 4 * n],
        },
        DenseLayer {
            weight: second,
            bias: vec![0.0; 2 * n],
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use advrob_data::rng::SplitMix64;
    use advrob_model::{Dense, LenetConfig, MadryCnnConfig, PixelMap};

    fn draw(rng: &mut SplitMix64, n: usize, scale: f32) -> Vec<f32> {
        (0..n)
            .map(|_| (rng.next_f64() as f32 * 2.0 - 1.0) * scale)
            .collect()
    }

    /// The lowered chain on one image, in plain f32 loops: ReLU after every layer but the last.
    fn chain(layers: &[DenseLayer], x: &[f32]) -> Vec<f32> {
        let mut a = x.to_vec();
        for (k, l) in layers.iter().enumerate() {
            let n = l.outputs();
            let mut z = l.bias.clone();
            for (i, &v) in a.iter().enumerate() {
                if v != 0.0 {
                    for (zj, wj) in z.iter_mut().zip(&l.weight[i * n..(i + 1) * n]) {
                        *zj += v * wj;
                    }
                }
            }
            if k + 1 < layers.len() {
                z.iter_mut().for_each(|v| *v = v.max(0.0));
            }
            a = z;
        }
        a
    }

    /// The lowered chain's logits are the host chain's (`Dense::forward`: convolution, ReLU and
    /// max pool computed directly) to rounding, on `rows` random images.
    fn assert_same_function(dense: &Dense<'_>, rows: usize, seed: u64) {
        let layers = lower(&dense.convs, dense.layers.clone()).expect("lowered");
        let pixels = dense
            .convs
            .first()
            .map_or(dense.layers[0].inputs(), ConvBlock::input_size);
        assert_eq!(layers[0].inputs(), pixels);
        let mut rng = SplitMix64::new(seed);
        let x: Vec<f32> = (0..rows * pixels).map(|_| rng.next_f64() as f32).collect();
        let want = dense.forward(&x, rows, false).logits;
        let classes = want.len() / rows;
        for (r, image) in x.chunks(pixels).enumerate() {
            let got = chain(&layers, image);
            let row = &want[r * classes..(r + 1) * classes];
            let scale = row.iter().fold(1f32, |m, v| m.max(v.abs()));
            for (k, (g, w)) in got.iter().zip(row).enumerate() {
                assert!(
                    (g - w).abs() <= 1e-4 * scale,
                    "image {r} logit {k}: lowered {g}, model {w}"
                );
            }
        }
    }

    /// LeNet-5 on 28×28 (even sides: the pool drops nothing) and on 13×15 (odd: both pools drop
    /// a row and a column, the second pooling 2×3 to 1×1).
    #[test]
    fn a_lowered_lenet_is_the_model() {
        let d = advrob_model::backend::device("ndarray").expect("ndarray");
        for (image, seed) in [([28, 28], 42), ([13, 15], 7)] {
            let model = LenetConfig::new()
                .with_image(image)
                .with_seed(seed)
                .init(&d)
                .expect("lenet");
            let dense = model.dense().expect("a host chain");
            assert_same_function(&dense, 3, seed);
        }
        // 784 → 4704 → 4704 → 2352 → 1600 → 1600 → 800 → 120 → 84 → 10
        let model = LenetConfig::new().init(&d).expect("lenet");
        let dense = model.dense().expect("a host chain");
        let layers = lower(&dense.convs, dense.layers.clone()).expect("lowered");
        let widths: Vec<usize> = layers.iter().map(DenseLayer::outputs).collect();
        assert_eq!(widths, [4704, 4704, 2352, 1600, 1600, 800, 120, 84, 10]);
        assert_eq!(layers[3].inputs(), 2352);
    }

    /// Hand-made CNNs with biases: two input channels, kernels 3 and 2, padding 0, 1 and 2, odd
    /// sides the pool floors, one and two blocks.
    #[test]
    fn a_lowered_random_cnn_is_the_model() {
        let mut rng = SplitMix64::new(3);
        for (case, blocks) in [
            vec![(2, 3, 3, 1, [9, 7])],
            vec![(2, 4, 3, 0, [11, 10]), (4, 3, 2, 2, [4, 4])],
            vec![(1, 2, 3, 2, [5, 6]), (2, 3, 3, 1, [3, 4])],
        ]
        .into_iter()
        .enumerate()
        {
            let convs: Vec<ConvBlock> = blocks
                .iter()
                .map(|&(channels, outputs, kernel, pad, input)| ConvBlock {
                    weight: draw(&mut rng, outputs * channels * kernel * kernel, 0.5),
                    bias: draw(&mut rng, outputs, 0.3),
                    channels,
                    kernel,
                    pad,
                    input,
                })
                .collect();
            for pair in convs.windows(2) {
                assert_eq!(pair[0].output_size(), pair[1].input_size(), "case {case}");
            }
            let flat = convs.last().expect("a block").output_size();
            let layers = vec![
                DenseLayer {
                    weight: draw(&mut rng, flat * 7, 0.5),
                    bias: draw(&mut rng, 7, 0.3),
                },
                DenseLayer {
                    weight: draw(&mut rng, 7 * 3, 0.5),
                    bias: draw(&mut rng, 3, 0.3),
                },
            ];
            let dense = Dense {
                pixel: PixelMap::default(),
                convs,
                layers,
                log_softmax: false,
                logit_scale: None,
                count: None,
                transposed: Default::default(),
            };
            assert_same_function(&dense, 5, 100 + case as u64);
        }
    }

    /// The CNN of Madry et al. would lower to billions of weights: refused, naming the limit.
    #[test]
    fn a_cnn_too_big_to_lower_is_refused_by_name() {
        let d = advrob_model::backend::device("ndarray").expect("ndarray");
        let model = MadryCnnConfig::new().init(&d).expect("madry");
        let dense = model.dense().expect("a host chain");
        let err = lower(&dense.convs, dense.layers.clone()).expect_err("too big");
        assert!(err.to_string().contains("limit of"), "{err}");
    }
}
