//! The convolutional blocks of a host chain ([`Dense`](crate::Dense)): a stride-1 square
//! convolution with zero padding, ReLU and a 2×2 max pool (stride 2, floor), the block every CNN
//! of this crate is built from: forward, backward with respect to its input (attacks) and to its
//! weight and bias (host training, [`crate::train`]) on host memory.
//!
//! The convolution and its transpose are computed directly: each output one chain of fused
//! multiply-adds over the input channels and the kernel's taps in order, a tile of 12 vectors of
//! outputs in registers, images spread over the current rayon pool. Three tile shapes compute the
//! same chains (tested to the bit against each other): output columns × 6 channels
//! ([`correlate`], any layer), 16 output channels × pixels where the channels fill vectors
//! ([`correlate_channels`], LeNet's second convolution), and one plane of rows × columns for the
//! input gradient of a one-channel image ([`correlate_plane`]). Without a trace the bias, ReLU and
//! the pool are applied to the tiles as they leave the registers ([`Sink::Pooled`]). (The im2col
//! matrix product this replaces spent most of its time copying windows: LeNet's forward pass on
//! 128 images took 3.3–3.9 ms against 1.6 ms for the first direct version, on a 2-core AVX-512
//! Xeon.) The weight gradient is a matrix product of the output gradients with the input's
//! windows, per group of images. The sums run in another order than a backend's own convolution,
//! so the results are the tensor path's to rounding, not to the bit (tested).

use rayon::prelude::*;

use crate::matmul::{self, Lhs, Rhs};

/// One convolution → ReLU → 2×2 max-pool block.
#[derive(Debug, Clone)]
pub struct ConvBlock {
    /// `[out, in, k, k]`, row-major (burn's and PyTorch's layout).
    pub weight: Vec<f32>,
    /// `[out]`.
    pub bias: Vec<f32>,
    /// Channels in.
    pub channels: usize,
    /// Side of the square kernel.
    pub kernel: usize,
    /// Zero padding on every side.
    pub pad: usize,
    /// Height and width of the input.
    pub input: [usize; 2],
}

/// What the backward pass of one block needs: per pooled output, the flat index (in the image's
/// `[out, rows, columns]` convolution output) of the value that won the pool, or `u32::MAX` where
/// that value was not positive (ReLU passes no gradient there).
pub(crate) struct BlockTrace {
    winners: Vec<u32>,
}

impl ConvBlock {
    /// Channels out.
    pub fn outputs(&self) -> usize {
        self.bias.len()
    }

    /// Height and width of the convolution's output.
    fn conv_side(&self) -> [usize; 2] {
        let [h, w] = self.input;
        [
            (h + 2 * self.pad + 1).saturating_sub(self.kernel),
            (w + 2 * self.pad + 1).saturating_sub(self.kernel),
        ]
    }

    /// Height and width after the pool.
    pub fn output(&self) -> [usize; 2] {
        let [h, w] = self.conv_side();
        [h / 2, w / 2]
    }

    /// Values of one input image.
    pub fn input_size(&self) -> usize {
        self.channels * self.input[0] * self.input[1]
    }

    /// Values of one output image.
    pub fn output_size(&self) -> usize {
        let [h, w] = self.output();
        self.outputs() * h * w
    }

    /// The convolution's output as [`correlate`] computes it: `[out rounded up to OB, rows
    /// rounded up to RB, columns rounded up to L]`.
    fn tile_side(&self) -> [usize; 3] {
        let [ho, wo] = self.conv_side();
        [
            self.outputs().next_multiple_of(OB),
            ho.next_multiple_of(RB),
            wo.next_multiple_of(L),
        ]
    }

    /// One image zero-padded for [`correlate`] and [`correlate_channels`]: `[in, rows,
    /// columns]` with the padding and room for either's whole tiles.
    fn padded_side(&self) -> [usize; 2] {
        let [_, th, tw] = self.tile_side();
        let columns = tw.max(self.conv_side()[1].next_multiple_of(PW));
        [th + self.kernel - 1, columns + self.kernel - 1]
    }

    /// The weights as the forward pass's correlation reads them, output channels in groups of
    /// `width`: `[out / width][in][k][k][width]`, zero for the channels that round `out` up.
    fn forward_weights(&self, width: usize) -> Vec<f32> {
        let (o, c, k) = (self.outputs(), self.channels, self.kernel);
        let groups = o.div_ceil(width);
        let mut wt = vec![0.0f32; groups * c * k * k * width];
        for (oc, w) in self.weight.chunks_exact(c * k * k).enumerate() {
            let (g, lane) = (oc / width, oc % width);
            for (t, v) in w.iter().enumerate() {
                wt[(g * c * k * k + t) * width + lane] = *v;
            }
        }
        wt
    }

    /// The weights of the backward pass's correlation (the convolution transposed: channels
    /// swapped, the kernel turned by 180°), input channels in groups of `width`:
    /// `[in / width][out][k][k][width]`.
    fn backward_weights(&self, width: usize) -> Vec<f32> {
        let (o, c, k) = (self.outputs(), self.channels, self.kernel);
        let groups = c.div_ceil(width);
        let mut wt = vec![0.0f32; groups * o * k * k * width];
        for oc in 0..o {
            for ic in 0..c {
                let (g, lane) = (ic / width, ic % width);
                for i in 0..k {
                    for j in 0..k {
                        let v = self.weight[((oc * c + ic) * k + i) * k + j];
                        let t = (oc * k + (k - 1 - i)) * k + (k - 1 - j);
                        wt[(g * o * k * k + t) * width + lane] = v;
                    }
                }
            }
        }
        wt
    }

    /// Whether the input gradient is one plane computed by [`correlate_plane`]: one input
    /// channel (an image's first convolution) and a kernel side it has loops for.
    fn one_plane(&self) -> bool {
        self.channels == 1 && matches!(self.kernel, 3 | 5)
    }

    /// The block on `rows` images `x` (`[rows, in, h, w]`): the pooled outputs
    /// `[rows, out, h', w']` and, with `trace`, what the backward pass needs; images over the
    /// rayon pool, each convolved directly ([`correlate`]).
    pub(crate) fn forward(
        &self,
        x: &[f32],
        rows: usize,
        trace: bool,
    ) -> (Vec<f32>, Option<BlockTrace>) {
        let (isz, osz) = (self.input_size(), self.output_size());
        let [ho, wo] = self.conv_side();
        let [ph, pw] = self.output();
        let [to, th, tw] = self.tile_side();
        let [xh, xw] = self.padded_side();
        let (o, c, k, hw) = (self.outputs(), self.channels, self.kernel, ho * wo);
        // output channels in vectors where they fill them (LeNet's second convolution), else
        // output columns ([`correlate`]); the same sums either way
        let by_channel = o % L == 0;
        let width = if by_channel { L } else { OB };
        let taps = Taps::new(self.forward_weights(width), c, k, [xh, xw]);
        let mut out = vec![0.0f32; rows * osz];
        let mut winners = vec![0u32; if trace { rows * osz } else { 0 }];
        // per worker: the padded image (its border stays zero) and the convolution's output
        let scratch = || (vec![0.0f32; c * xh * xw], vec![0.0f32; to * th * tw]);
        let image = |(xp, z): &mut (Vec<f32>, Vec<f32>),
                     (xi, (yo, win)): (&[f32], (&mut [f32], &mut [u32]))| {
            self.pad_into(xi, xp);
            // without a trace the pooled image comes straight from the tiles
            let sink = if win.is_empty() {
                Sink::Pooled {
                    out: yo,
                    bias: &self.bias,
                    side: [ph, pw],
                }
            } else {
                Sink::Sums(z)
            };
            if by_channel {
                correlate_channels(xp, &taps, sink, [ho, wo], [th, tw]);
            } else {
                correlate(xp, &taps, sink, [th, tw]);
            }
            if win.is_empty() {
                return;
            }
            // the bias after the sum, as the convolution adds it; ReLU then the pool: the
            // largest of the four (ReLU commutes with the maximum), its first position on ties
            // where it is positive, as burn's max pool
            let planes = z.chunks_exact(th * tw).enumerate().take(o).zip(&self.bias);
            crate::simd::vectorized(
                #[inline(always)]
                || {
                    for ((ch, plane), &b) in planes {
                        for py in 0..ph {
                            let top = 2 * py * tw;
                            let (r0, r1) = (&plane[top..top + tw], &plane[top + tw..][..tw]);
                            let slot = (ch * ph + py) * pw;
                            let pairs = r0.chunks_exact(2).zip(r1.chunks_exact(2));
                            for (y, (t, u)) in yo[slot..slot + pw].iter_mut().zip(pairs) {
                                *y = Sink::pooled([t[0], t[1]], [u[0], u[1]], b);
                            }
                            // the flat index of the pool row's first value, and of the row
                            // below relative to it, as the trace stores them
                            let (row, below) = ((ch * hw + 2 * py * wo) as u32, wo as u32);
                            let pairs = r0.chunks_exact(2).zip(r1.chunks_exact(2));
                            let cells = win[slot..slot + pw].iter_mut().zip(pairs);
                            for (px, (w, (t, u))) in (0u32..).zip(cells) {
                                let q = [t[0] + b, t[1] + b, u[0] + b, u[1] + b];
                                let m = q[0].max(q[1]).max(q[2].max(q[3]));
                                // the first of the four on ties; selects, not branches, and
                                // wrapping arithmetic (the indices fit: the trace is u32), so
                                // that the loop runs on vectors
                                let (down, right) = if q[0] == m || q[1] == m {
                                    (0, u32::from(q[0] != m))
                                } else {
                                    (below, u32::from(q[2] != m))
                                };
                                let flat = row.wrapping_add(down).wrapping_add(px << 1 | right);
                                *w = if m > 0.0 { flat } else { u32::MAX };
                            }
                        }
                    }
                },
            );
        };
        if trace {
            x.par_chunks(isz)
                .zip(out.par_chunks_mut(osz).zip(winners.par_chunks_mut(osz)))
                .for_each_init(scratch, image);
        } else {
            x.par_chunks(isz)
                .zip(out.par_chunks_mut(osz))
                .for_each_init(scratch, |s, (xi, yo)| image(s, (xi, (yo, &mut []))));
        }
        (out, trace.then_some(BlockTrace { winners }))
    }

    /// The gradient with respect to the block's input of a loss whose gradient with respect to
    /// its pooled output is `dy` (`[rows, out, h', w']`): the pool's gradient to its winners,
    /// then the transposed convolution, as a [`correlate`] of the padded output gradient with
    /// the turned kernel.
    pub(crate) fn backward(&self, trace: &BlockTrace, dy: &[f32], rows: usize) -> Vec<f32> {
        let (isz, osz) = (self.input_size(), self.output_size());
        let hw = self.conv_side().iter().product::<usize>();
        let wt = self.transposed_taps();
        let mut dx = vec![0.0f32; rows * isz];
        let scratch = || (vec![0.0f32; self.outputs() * hw], self.transposed_scratch());
        dx.par_chunks_mut(isz)
            .zip(dy.par_chunks(osz).zip(trace.winners.par_chunks(osz)))
            .for_each_init(scratch, |(dz, buffers), (dxi, (dyi, win))| {
                pool_gradient(dyi, win, dz);
                self.transposed(dz, &wt, buffers, dxi);
            });
        dx
    }

    /// The turned kernel ([`ConvBlock::backward_weights`]) as [`ConvBlock::transposed`]'s
    /// correlation reads it.
    fn transposed_taps(&self) -> Taps {
        let (gz, _) = self.transposed_sides();
        let width = if self.one_plane() { 1 } else { OB };
        Taps::new(
            self.backward_weights(width),
            self.outputs(),
            self.kernel,
            gz,
        )
    }

    /// The buffers of [`ConvBlock::transposed`]: the placed output gradient and the tiles.
    fn transposed_scratch(&self) -> (Vec<f32>, Vec<f32>) {
        let ([gh, gw], [th, tw]) = self.transposed_sides();
        let tc = match self.one_plane() {
            true => 1,
            false => self.channels.next_multiple_of(OB),
        };
        (
            vec![0.0f32; self.outputs() * gh * gw],
            vec![0.0f32; tc * th * tw],
        )
    }

    /// The sides of [`ConvBlock::transposed`]'s placed output gradient and of its tiles.
    fn transposed_sides(&self) -> ([usize; 2], [usize; 2]) {
        let [h, w] = self.input;
        let k = self.kernel;
        let [th, tw] = match self.one_plane() {
            true => [h.next_multiple_of(PR), w.next_multiple_of(2 * L)],
            false => [h.next_multiple_of(RB), w.next_multiple_of(L)],
        };
        ([th + k - 1, tw + k - 1], [th, tw])
    }

    /// One image's input gradient `dxi` (`[in, h, w]`) from its convolution's output gradient
    /// `dz` (`[out, rows, columns]`): the transposed convolution, as a [`correlate`] of the
    /// output gradient, placed so that input pixel `(y, x)` reads its rows
    /// `y + pad − (k − 1) … y + pad`, with the turned kernel `wt`
    /// ([`ConvBlock::transposed_taps`]).
    fn transposed(
        &self,
        dz: &[f32],
        wt: &Taps,
        buffers: &mut (Vec<f32>, Vec<f32>),
        dxi: &mut [f32],
    ) {
        let [h, w] = self.input;
        let [ho, wo] = self.conv_side();
        let k = self.kernel;
        let ([gh, gw], [th, tw]) = self.transposed_sides();
        // output (y, x) goes to (y + shift, x + shift), where that is inside the buffer; the
        // same places every image, so the rest of the buffer stays zero from its allocation
        let shift = k as isize - 1 - self.pad as isize;
        let inside = |len: usize, side: usize| {
            let lo = (-shift).clamp(0, len as isize) as usize;
            let hi = (side as isize - shift).clamp(lo as isize, len as isize) as usize;
            lo..hi
        };
        let (ys, xs) = (inside(ho, gh), inside(wo, gw));
        let (to_y, to_x) = (ys.start as isize + shift, xs.start as isize + shift);
        let (gz, out) = buffers;
        for (plane, src) in gz.chunks_exact_mut(gh * gw).zip(dz.chunks_exact(ho * wo)) {
            for (n, y) in ys.clone().enumerate() {
                let at = (to_y as usize + n) * gw + to_x as usize;
                plane[at..at + xs.len()].copy_from_slice(&src[y * wo..][xs.clone()]);
            }
        }
        if self.one_plane() {
            correlate_plane(gz, wt, out, [th, tw]);
        } else {
            correlate(gz, wt, Sink::Sums(out), [th, tw]);
        }
        for (dplane, plane) in dxi.chunks_exact_mut(h * w).zip(out.chunks_exact(th * tw)) {
            for (drow, row) in dplane.chunks_exact_mut(w).zip(plane.chunks_exact(tw)) {
                drow.copy_from_slice(&row[..w]);
            }
        }
    }

    /// One padded image's windows `xp` ([`ConvBlock::pad_into`]) into `cols`, one row of
    /// `in·k·k` values per output pixel; `K` is the kernel's side where it is known when compiling
    /// (its rows then copied as fixed arrays, not by a call per row), else 0.
    fn windows<const K: usize>(&self, xp: &[f32], cols: &mut [f32]) {
        let [_, wo] = self.conv_side();
        let [xh, xw] = self.padded_side();
        let k = self.kernel;
        for (p, window) in cols.chunks_exact_mut(self.channels * k * k).enumerate() {
            let (y, x) = (p / wo, p % wo);
            for (t, run) in window.chunks_exact_mut(k).enumerate() {
                let (ci, i) = (t / k, t % k);
                let src = &xp[(ci * xh + y + i) * xw + x..][..k];
                match (
                    <&mut [f32; K]>::try_from(&mut *run),
                    <&[f32; K]>::try_from(src),
                ) {
                    (Ok(run), Ok(src)) if K > 0 => *run = *src,
                    _ => run.copy_from_slice(src),
                }
            }
        }
    }

    /// One image zero-padded into `xp` (`[in, rows, columns]` of [`ConvBlock::padded_side`]),
    /// whose border is left as it is (zero).
    fn pad_into(&self, xi: &[f32], xp: &mut [f32]) {
        let [h, w] = self.input;
        let [xh, xw] = self.padded_side();
        let pad = self.pad;
        for (plane, src) in xp.chunks_exact_mut(xh * xw).zip(xi.chunks_exact(h * w)) {
            for (y, src) in src.chunks_exact(w).enumerate() {
                plane[(y + pad) * xw + pad..][..w].copy_from_slice(src);
            }
        }
    }

    /// The gradients of the block's weight and bias, and with `input_gradient` of its input
    /// (`x`, `[rows, in, h, w]`), of a loss whose gradient with respect to its pooled output is
    /// `dy`: for training. The weight gradient of a group of [`SUM_GROUP`] images is one
    /// product of their output gradients `[out, images·rows·columns]` with their windows
    /// `[images·rows·columns, in·k·k]`; the groups' are summed in order, so that the sums do not
    /// depend on the threads.
    pub(crate) fn backward_train(
        &self,
        trace: &BlockTrace,
        x: &[f32],
        dy: &[f32],
        rows: usize,
        input_gradient: bool,
    ) -> BlockGradient {
        let (isz, osz) = (self.input_size(), self.output_size());
        let [ho, wo] = self.conv_side();
        let [xh, xw] = self.padded_side();
        let (o, c, k, hw) = (self.outputs(), self.channels, self.kernel, ho * wo);
        let patch = c * k * k;
        let wt = self.transposed_taps();
        let mut dx = vec![0.0f32; if input_gradient { rows * isz } else { 0 }];
        let group = |(((xs, dys), wins), dxs): GroupSlices<'_>| {
            let n = xs.len() / isz.max(1);
            let (mut dw, mut db) = (vec![0.0f32; o * patch], vec![0.0f32; o]);
            // the group's output gradients side by side `[out, n·rows·columns]` and their
            // windows `[n·rows·columns, in·k·k]`: one product for the group
            let (mut dz, mut dzs) = (vec![0.0f32; o * hw], vec![0.0f32; o * n * hw]);
            let (mut xp, mut cols) = (vec![0.0f32; c * xh * xw], vec![0.0f32; n * hw * patch]);
            let mut buffers = self.transposed_scratch();
            let images = xs.chunks_exact(isz).zip(dys.chunks_exact(osz));
            for (m, ((xi, dyi), win)) in images.zip(wins.chunks_exact(osz)).enumerate() {
                pool_gradient(dyi, win, &mut dz);
                for (ch, plane) in dz.chunks_exact(hw).enumerate() {
                    db[ch] += plane.iter().sum::<f32>();
                    dzs[(ch * n + m) * hw..][..hw].copy_from_slice(plane);
                }
                self.pad_into(xi, &mut xp);
                let cols = &mut cols[m * hw * patch..][..hw * patch];
                match k {
                    5 => self.windows::<5>(&xp, cols),
                    3 => self.windows::<3>(&xp, cols),
                    _ => self.windows::<0>(&xp, cols),
                }
                if input_gradient {
                    let dxi = &mut dxs[m * isz..(m + 1) * isz];
                    self.transposed(&dz, &wt, &mut buffers, dxi);
                }
            }
            matmul::single(
                o,
                n * hw,
                patch,
                Lhs::Plain(&dzs),
                Rhs::Plain(&cols),
                &mut dw,
            );
            (dw, db)
        };
        let groups = x[..rows * isz]
            .par_chunks(SUM_GROUP * isz)
            .zip(dy.par_chunks(SUM_GROUP * osz))
            .zip(trace.winners.par_chunks(SUM_GROUP * osz));
        let sums: Vec<(Vec<f32>, Vec<f32>)> = if input_gradient {
            groups
                .zip(dx.par_chunks_mut(SUM_GROUP * isz))
                .map(group)
                .collect()
        } else {
            groups.map(|g| group((g, &mut []))).collect()
        };
        let mut sums = sums.into_iter();
        let (mut weight, mut bias) = sums
            .next()
            .unwrap_or_else(|| (vec![0.0; o * patch], vec![0.0; o]));
        for (dw, db) in sums {
            weight.iter_mut().zip(&dw).for_each(|(a, v)| *a += v);
            bias.iter_mut().zip(&db).for_each(|(a, v)| *a += v);
        }
        BlockGradient {
            weight,
            bias,
            input: input_gradient.then_some(dx),
        }
    }
}

/// One image's convolution output gradient `dz` (`[out, rows, columns]`) from its pooled output
/// gradient `dy` and the pool's `winners`: each value to its winner, none where ReLU was off.
fn pool_gradient(dy: &[f32], winners: &[u32], dz: &mut [f32]) {
    dz.fill(0.0);
    for (g, &at) in dy.iter().zip(winners) {
        if at != u32::MAX {
            dz[at as usize] += g;
        }
    }
}

/// One group's images, output gradients, pool winners and input gradients
/// ([`ConvBlock::backward_train`]).
type GroupSlices<'a> = (((&'a [f32], &'a [f32]), &'a [u32]), &'a mut [f32]);

/// Images whose weight gradients one task of [`ConvBlock::backward_train`] sums.
const SUM_GROUP: usize = 8;

/// A block's gradients ([`ConvBlock::backward_train`]).
pub(crate) struct BlockGradient {
    /// `[out, in, k, k]`.
    pub(crate) weight: Vec<f32>,
    /// `[out]`.
    pub(crate) bias: Vec<f32>,
    /// `[rows, in, h, w]`, where asked for.
    pub(crate) input: Option<Vec<f32>>,
}

/// Output channels one tile of [`correlate`] computes.
const OB: usize = 6;
/// Output rows one tile computes.
const RB: usize = 2;
/// Output columns one tile computes: one 16-lane vector (two on AVX2).
const L: usize = 16;

/// `out[o][y][x] = Σ_{c, i, j} w[o][c][i][j] · input[c][y + i][x + j]`, each sum one chain of
/// fused multiply-adds over `(c, i, j)` in order, for every `y` below `side[0]` (a multiple of
/// [`RB`]) and `x` below `side[1]` (a multiple of [`L`]) and every output channel of `wt`
/// (`[out / OB][channels][k][k][OB]`); `input` is `[channels, dims[0], dims[1]]` with
/// `dims ≥ side + k − 1`. A tile of [`RB`] rows × [`L`] columns × [`OB`] channels stays in
/// registers (12 vectors of 16 lanes) while the taps run, each tap one load of the input per row
/// and a broadcast weight per channel.
fn correlate(input: &[f32], taps: &Taps, out: Sink<'_>, side: [usize; 2]) {
    macerator::AutoArch::new().dispatch(Correlation::<Columns> {
        input,
        taps,
        out,
        valid: side,
        side,
        shape: std::marker::PhantomData,
    })
}

/// A kernel as [`correlate`] reads it: the weights `[out / OB][channels][k][k][OB]` and, per
/// tap `(c, i, j)`, its position `(c · rows + i) · columns + j` in an input of `dims`
/// relative to an output's.
struct Taps {
    weights: Vec<f32>,
    offsets: Vec<usize>,
    /// The position of each kernel row `(c, i)`'s first tap (its `k` taps follow it).
    rows: Vec<usize>,
    /// The kernel's side.
    k: usize,
    /// The input's rows and columns.
    dims: [usize; 2],
}

impl Taps {
    fn new(weights: Vec<f32>, channels: usize, k: usize, [ih, iw]: [usize; 2]) -> Taps {
        let offsets = (0..channels * k * k)
            .map(|t| {
                let (ci, i, j) = (t / (k * k), t / k % k, t % k);
                (ci * ih + i) * iw + j
            })
            .collect();
        Taps {
            weights,
            offsets,
            rows: (0..channels * k)
                .map(|r| (r / k * ih + r % k) * iw)
                .collect(),
            k,
            dims: [ih, iw],
        }
    }
}

/// Where a correlation's tiles go.
enum Sink<'a> {
    /// The sums, `[channels, rows, columns]` with the tiles' strides.
    Sums(&'a mut [f32]),
    /// Straight through the block's bias, ReLU and 2×2 max pool, as [`ConvBlock::forward`]
    /// computes them from the sums (the same operations in the same order): `out`
    /// `[channels, side[0], side[1]]`, the pooled image (a tile's two rows are one pooled row).
    Pooled {
        out: &'a mut [f32],
        bias: &'a [f32],
        side: [usize; 2],
    },
}

impl Sink<'_> {
    /// The pooled value of a 2×2 window of sums whose rows are `r0` and `r1`, with the bias `b`:
    /// the larger of each column's two, the larger of those, then the bias (adding a constant
    /// keeps the order, so this is the largest of the four sums with the bias), then ReLU.
    #[inline(always)]
    fn pooled(r0: [f32; 2], r1: [f32; 2], b: f32) -> f32 {
        let (left, right) = (r0[0].max(r1[0]), r0[1].max(r1[1]));
        (left.max(right) + b).max(0.0)
    }
}

/// The shape of a correlation's tiles: how many output channels a group of weights holds, how
/// many output columns a tile covers (over [`RB`] rows), the tile's loops and where its values go.
trait TileShape {
    /// Output channels per group of weights.
    const WIDTH: usize;
    /// Output columns per tile.
    const COLUMNS: usize;
    /// A tile's sums.
    type Tile;
    /// The tile whose top-left output reads `input[at..]`, a kernel of side `K` a row of taps at a
    /// time (`rows`: each kernel row's first tap).
    fn side<const K: usize>(
        input: &[f32],
        at: usize,
        row: usize,
        rows: &[usize],
        wg: &[f32],
    ) -> Self::Tile;
    /// The same for any side, tap by tap (`offsets`).
    fn any(input: &[f32], at: usize, row: usize, offsets: &[usize], wg: &[f32]) -> Self::Tile;
    /// The tile of group `g` at output `(y, x)` into `out`: the outputs inside `valid`, strides
    /// `side` for the sums.
    fn store(
        tile: &Self::Tile,
        out: &mut Sink<'_>,
        g: usize,
        at: [usize; 2],
        valid: [usize; 2],
        side: [usize; 2],
    );
}

/// A correlation's arguments, dispatched to the CPU's widest vectors: every tile of shape `T`
/// over the `valid` outputs.
struct Correlation<'a, T> {
    input: &'a [f32],
    taps: &'a Taps,
    out: Sink<'a>,
    valid: [usize; 2],
    side: [usize; 2],
    shape: std::marker::PhantomData<T>,
}

impl<T: TileShape> macerator::WithSimd for Correlation<'_, T> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: macerator::Simd>(self) {
        let Correlation {
            input,
            taps,
            mut out,
            valid,
            side,
            ..
        } = self;
        let (offsets, iw) = (&taps.offsets, taps.dims[1]);
        for (g, wg) in taps
            .weights
            .chunks_exact(offsets.len() * T::WIDTH)
            .enumerate()
        {
            for y in (0..valid[0]).step_by(RB) {
                for x in (0..valid[1]).step_by(T::COLUMNS) {
                    let at = y * iw + x;
                    // a kernel side known when compiling: its taps' bounds checked once a row
                    let tile = match taps.k {
                        5 => T::side::<5>(input, at, iw, &taps.rows, wg),
                        3 => T::side::<3>(input, at, iw, &taps.rows, wg),
                        _ => T::any(input, at, iw, offsets, wg),
                    };
                    T::store(&tile, &mut out, g, [y, x], valid, side);
                }
            }
        }
    }
}

/// [`correlate`]'s tiles: [`RB`] rows × [`L`] columns × [`OB`] channels.
struct Columns;

impl TileShape for Columns {
    const WIDTH: usize = OB;
    const COLUMNS: usize = L;
    type Tile = [[f32; L]; OB * RB];

    #[inline(always)]
    fn side<const K: usize>(
        input: &[f32],
        at: usize,
        row: usize,
        rows: &[usize],
        wg: &[f32],
    ) -> Self::Tile {
        tile_rows::<K>(input, at, row, rows, wg)
    }

    #[inline(always)]
    fn any(input: &[f32], at: usize, row: usize, offsets: &[usize], wg: &[f32]) -> Self::Tile {
        tile(input, at, row, offsets, wg)
    }

    #[inline(always)]
    fn store(
        tile: &Self::Tile,
        out: &mut Sink<'_>,
        g: usize,
        [y, x]: [usize; 2],
        _valid: [usize; 2],
        [th, tw]: [usize; 2],
    ) {
        match out {
            Sink::Sums(out) => {
                for (ra, a) in tile.iter().enumerate() {
                    let (r, lane) = (ra / OB, ra % OB);
                    let at = ((g * OB + lane) * th + y + r) * tw + x;
                    out[at..at + L].copy_from_slice(a);
                }
            }
            Sink::Pooled {
                out,
                bias,
                side: [ph, pw],
            } => {
                let (py, px) = (y / 2, x / 2);
                if py >= *ph {
                    return;
                }
                let lanes = tile[..OB].iter().zip(&tile[OB..]).zip(&bias[g * OB..]);
                for (lane, ((r0, r1), &b)) in lanes.enumerate() {
                    let row = &mut out[((g * OB + lane) * *ph + py) * *pw..][..*pw];
                    let pairs = r0.chunks_exact(2).zip(r1.chunks_exact(2));
                    for (v, (t, u)) in row[px.min(*pw)..].iter_mut().zip(pairs) {
                        *v = Sink::pooled([t[0], t[1]], [u[0], u[1]], b);
                    }
                }
            }
        }
    }
}

/// One tile of [`correlate`] whose top-left output reads `input[at..]`: `acc[r · OB + o][l]`,
/// the output of channel `o` at row `r`, column `l` of the tile, each one chain of fused
/// multiply-adds over the taps in order (`offsets[t]`, tap `t`'s position relative to `at`, with
/// its weights `wg[t · OB..][..OB]`); `row` is the input's row length.
#[inline(always)]
fn tile(
    input: &[f32],
    at: usize,
    row: usize,
    offsets: &[usize],
    wg: &[f32],
) -> [[f32; L]; OB * RB] {
    let mut a0 = [[0.0f32; L]; OB];
    let mut a1 = [[0.0f32; L]; OB];
    for (&off, wv) in offsets.iter().zip(wg.chunks_exact(OB)) {
        let wv: &[f32; OB] = wv.try_into().expect("OB weights");
        let x0: &[f32; L] = input[at + off..][..L].try_into().expect("L pixels");
        let x1: &[f32; L] = input[at + off + row..][..L].try_into().expect("L pixels");
        for o in 0..OB {
            for l in 0..L {
                a0[o][l] = wv[o].mul_add(x0[l], a0[o][l]);
            }
        }
        for o in 0..OB {
            for l in 0..L {
                a1[o][l] = wv[o].mul_add(x1[l], a1[o][l]);
            }
        }
    }
    std::array::from_fn(|ra| if ra < OB { a0[ra] } else { a1[ra - OB] })
}

/// [`tile`] for a kernel of side `K`, a row of `K` taps at a time (`rows[r]`, kernel row `r`'s
/// first tap relative to `at`): the same sums in the same order.
#[inline(always)]
fn tile_rows<const K: usize>(
    input: &[f32],
    at: usize,
    row: usize,
    rows: &[usize],
    wg: &[f32],
) -> [[f32; L]; OB * RB] {
    let mut a0 = [[0.0f32; L]; OB];
    let mut a1 = [[0.0f32; L]; OB];
    for (&off, w) in rows.iter().zip(wg.chunks_exact(K * OB)) {
        let x0 = &input[at + off..][..L + K - 1];
        let x1 = &input[at + off + row..][..L + K - 1];
        for j in 0..K {
            let wv: &[f32; OB] = w[j * OB..][..OB].try_into().expect("OB weights");
            let v0: &[f32; L] = x0[j..j + L].try_into().expect("L pixels");
            let v1: &[f32; L] = x1[j..j + L].try_into().expect("L pixels");
            for o in 0..OB {
                for l in 0..L {
                    a0[o][l] = wv[o].mul_add(v0[l], a0[o][l]);
                }
            }
            for o in 0..OB {
                for l in 0..L {
                    a1[o][l] = wv[o].mul_add(v1[l], a1[o][l]);
                }
            }
        }
    }
    std::array::from_fn(|ra| if ra < OB { a0[ra] } else { a1[ra - OB] })
}

/// Rows one tile of [`correlate_plane`] computes (of two vectors each).
const PR: usize = 6;

/// [`correlate`] for one output channel (the input gradient of an image's first
/// convolution), where [`correlate`]'s tiles would compute five channels of zero weights for
/// each real one: tiles of [`PR`] rows × 2 vectors of [`L`] columns, each tap a broadcast weight
/// and one load per vector. `taps` has one channel per group (`width` 1) and a kernel side of 3
/// or 5; `side` is a multiple of [`PR`] rows and `2 · L` columns. The same chains of fused
/// multiply-adds in the same order as [`correlate`]'s (tested).
fn correlate_plane(input: &[f32], taps: &Taps, out: &mut [f32], side: [usize; 2]) {
    macerator::AutoArch::new().dispatch(CorrelatePlane {
        input,
        taps,
        out,
        side,
    })
}

/// [`correlate_plane`]'s arguments, dispatched to the CPU's widest vectors.
struct CorrelatePlane<'a> {
    input: &'a [f32],
    taps: &'a Taps,
    out: &'a mut [f32],
    side: [usize; 2],
}

impl macerator::WithSimd for CorrelatePlane<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: macerator::Simd>(self) {
        let CorrelatePlane {
            input,
            taps,
            out,
            side: [oh, ow],
        } = self;
        let iw = taps.dims[1];
        for y in (0..oh).step_by(PR) {
            for x in (0..ow).step_by(2 * L) {
                let at = y * iw + x;
                let acc = match taps.k {
                    5 => plane_rows::<5>(input, at, iw, &taps.rows, &taps.weights),
                    _ => plane_rows::<3>(input, at, iw, &taps.rows, &taps.weights),
                };
                for (r, [left, right]) in acc.iter().enumerate() {
                    let row = &mut out[(y + r) * ow + x..][..2 * L];
                    row[..L].copy_from_slice(left);
                    row[L..].copy_from_slice(right);
                }
            }
        }
    }
}

/// One tile of [`correlate_plane`] whose top-left output reads `input[at..]`: `acc[r][v][l]`,
/// the output at row `r`, column `v · L + l` of the tile, each one chain of fused
/// multiply-adds over the taps in order (kernel row `t` first tap at `rows[t]`, its `K` weights
/// `w[t · K..]`); `row` is the input's row length.
#[inline(always)]
fn plane_rows<const K: usize>(
    input: &[f32],
    at: usize,
    row: usize,
    rows: &[usize],
    w: &[f32],
) -> [[[f32; L]; 2]; PR] {
    let mut a0 = [[0.0f32; L]; PR];
    let mut a1 = [[0.0f32; L]; PR];
    for (&off, wk) in rows.iter().zip(w.chunks_exact(K)) {
        let x: [&[f32]; PR] =
            std::array::from_fn(|r| &input[at + off + r * row..][..2 * L + K - 1]);
        for (j, &wv) in wk.iter().enumerate() {
            for r in 0..PR {
                let v: &[f32; L] = x[r][j..j + L].try_into().expect("L pixels");
                for l in 0..L {
                    a0[r][l] = wv.mul_add(v[l], a0[r][l]);
                }
            }
            for r in 0..PR {
                let v: &[f32; L] = x[r][j + L..j + 2 * L].try_into().expect("L pixels");
                for l in 0..L {
                    a1[r][l] = wv.mul_add(v[l], a1[r][l]);
                }
            }
        }
    }
    std::array::from_fn(|r| [a0[r], a1[r]])
}

/// Output columns one tile of [`correlate_channels`] computes, in each of its [`RB`] rows.
const PW: usize = 6;

/// [`correlate`] with the output channels in the vectors: for `out` a multiple of [`L`]
/// channels, tiles of [`RB`] rows × [`PW`] columns of output pixels × [`L`] channels (12
/// vectors), each tap one vector of weights and a broadcast pixel per output pixel, so that no
/// lane computes a column beyond the image's (6 of 16 in LeNet's second convolution) or a
/// channel that rounds `out` up. Each sum is the same chain of fused multiply-adds over the taps
/// in the same order as [`correlate`]'s, so the results are its to the bit (tested). `valid` is
/// the output's rows and columns (the input as [`correlate`] needs it for them), `side` the
/// strides of `out` (`[out, side[0], side[1]]`, as [`correlate`] writes it; `side[1] ≥ valid[1]`
/// rounded up to [`PW`]).
fn correlate_channels(
    input: &[f32],
    taps: &Taps,
    out: Sink<'_>,
    valid: [usize; 2],
    side: [usize; 2],
) {
    macerator::AutoArch::new().dispatch(Correlation::<Channels> {
        input,
        taps,
        out,
        valid,
        side,
        shape: std::marker::PhantomData,
    })
}

/// [`correlate_channels`]' tiles: [`RB`] rows × [`PW`] columns × [`L`] channels.
struct Channels;

impl TileShape for Channels {
    const WIDTH: usize = L;
    const COLUMNS: usize = PW;
    type Tile = [[[f32; L]; PW]; RB];

    #[inline(always)]
    fn side<const K: usize>(
        input: &[f32],
        at: usize,
        row: usize,
        rows: &[usize],
        wg: &[f32],
    ) -> Self::Tile {
        pixel_rows::<K>(input, at, row, rows, wg)
    }

    #[inline(always)]
    fn any(input: &[f32], at: usize, row: usize, offsets: &[usize], wg: &[f32]) -> Self::Tile {
        pixel_tile(input, at, row, offsets, wg)
    }

    #[inline(always)]
    fn store(
        tile: &Self::Tile,
        out: &mut Sink<'_>,
        g: usize,
        [y, x]: [usize; 2],
        [oh, ow]: [usize; 2],
        [th, tw]: [usize; 2],
    ) {
        match out {
            Sink::Sums(out) => {
                for (r, row) in tile.iter().enumerate().take(oh - y) {
                    for (j, a) in row.iter().enumerate().take(ow - x) {
                        for (lane, v) in a.iter().enumerate() {
                            out[((g * L + lane) * th + y + r) * tw + x + j] = *v;
                        }
                    }
                }
            }
            Sink::Pooled {
                out,
                bias,
                side: [ph, pw],
            } => {
                let (py, px) = (y / 2, x / 2);
                if py >= *ph {
                    return;
                }
                let b: &[f32; L] = bias[g * L..][..L].try_into().expect("L biases");
                let pairs = tile[0].chunks_exact(2).zip(tile[1].chunks_exact(2));
                for (m, (t, u)) in pairs.enumerate().take(pw.saturating_sub(px)) {
                    for (lane, b) in b.iter().enumerate() {
                        let v =
                            Sink::pooled([t[0][lane], t[1][lane]], [u[0][lane], u[1][lane]], *b);
                        out[((g * L + lane) * *ph + py) * *pw + px + m] = v;
                    }
                }
            }
        }
    }
}

/// One tile of [`correlate_channels`] whose top-left output reads `input[at..]`:
/// `acc[r][j][o]`, channel `o` at row `r`, column `j` of the tile, each one chain of fused
/// multiply-adds over the taps in order; `row` is the input's row length.
#[inline(always)]
fn pixel_tile(
    input: &[f32],
    at: usize,
    row: usize,
    offsets: &[usize],
    wg: &[f32],
) -> [[[f32; L]; PW]; RB] {
    let mut a0 = [[0.0f32; L]; PW];
    let mut a1 = [[0.0f32; L]; PW];
    for (&off, wv) in offsets.iter().zip(wg.chunks_exact(L)) {
        let wv: &[f32; L] = wv.try_into().expect("L weights");
        let x0: &[f32; PW] = input[at + off..][..PW].try_into().expect("PW pixels");
        let x1: &[f32; PW] = input[at + off + row..][..PW].try_into().expect("PW pixels");
        for j in 0..PW {
            for l in 0..L {
                a0[j][l] = wv[l].mul_add(x0[j], a0[j][l]);
            }
        }
        for j in 0..PW {
            for l in 0..L {
                a1[j][l] = wv[l].mul_add(x1[j], a1[j][l]);
            }
        }
    }
    [a0, a1]
}

/// [`pixel_tile`] for a kernel of side `K`, a row of `K` taps at a time (as [`tile_rows`]).
#[inline(always)]
fn pixel_rows<const K: usize>(
    input: &[f32],
    at: usize,
    row: usize,
    rows: &[usize],
    wg: &[f32],
) -> [[[f32; L]; PW]; RB] {
    let mut a0 = [[0.0f32; L]; PW];
    let mut a1 = [[0.0f32; L]; PW];
    for (&off, w) in rows.iter().zip(wg.chunks_exact(K * L)) {
        let x0 = &input[at + off..][..PW + K - 1];
        let x1 = &input[at + off + row..][..PW + K - 1];
        for j in 0..K {
            let wv: &[f32; L] = w[j * L..][..L].try_into().expect("L weights");
            for p in 0..PW {
                for l in 0..L {
                    a0[p][l] = wv[l].mul_add(x0[j + p], a0[p][l]);
                }
            }
            for p in 0..PW {
                for l in 0..L {
                    a1[p][l] = wv[l].mul_add(x1[j + p], a1[p][l]);
                }
            }
        }
    }
    [a0, a1]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Convolutions whose output channels fill vectors ([`correlate_channels`]) sum as the
    /// column tiles do ([`correlate`]): the same outputs to the bit, on odd sides, one and
    /// several input channels, 16 and 32 output channels.
    #[test]
    fn channel_tiles_are_column_tiles_to_the_bit() {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        for (channels, outputs, kernel, pad, input) in [
            (6, 16, 5, 0, [14, 14]),
            (1, 32, 5, 2, [28, 28]),
            (3, 16, 3, 1, [9, 13]),
            // 16 output columns: the last tile of 6 reads beyond a vector's 16
            (2, 16, 5, 0, [12, 20]),
            // a side with no loops of its own
            (2, 16, 4, 1, [11, 9]),
        ] {
            let block = ConvBlock {
                weight: crate::gemm::tests::draw(&mut state, outputs * channels * kernel * kernel),
                bias: vec![0.0; outputs],
                channels,
                kernel,
                pad,
                input,
            };
            let [ho, wo] = block.conv_side();
            let [to, th, tw] = block.tile_side();
            let [xh, xw] = block.padded_side();
            let x = crate::gemm::tests::draw(&mut state, block.input_size());
            let mut xp = vec![0.0f32; channels * xh * xw];
            block.pad_into(&x, &mut xp);
            let rows = Taps::new(block.forward_weights(OB), channels, kernel, [xh, xw]);
            let vectors = Taps::new(block.forward_weights(L), channels, kernel, [xh, xw]);
            let (mut a, mut b) = (vec![0.0f32; to * th * tw], vec![0.0f32; outputs * th * tw]);
            correlate(&xp, &rows, Sink::Sums(&mut a), [th, tw]);
            correlate_channels(&xp, &vectors, Sink::Sums(&mut b), [ho, wo], [th, tw]);
            // and the loops over any kernel side, where a side known when compiling has its own
            let mut generic = Taps::new(block.forward_weights(OB), channels, kernel, [xh, xw]);
            generic.k = 0;
            let mut g = vec![0.0f32; to * th * tw];
            correlate(&xp, &generic, Sink::Sums(&mut g), [th, tw]);
            let mut generic = Taps::new(block.forward_weights(L), channels, kernel, [xh, xw]);
            generic.k = 0;
            let mut h = vec![0.0f32; outputs * th * tw];
            correlate_channels(&xp, &generic, Sink::Sums(&mut h), [ho, wo], [th, tw]);
            for o in 0..outputs {
                for y in 0..ho {
                    for c in 0..wo {
                        let at = (o * th + y) * tw + c;
                        let bits = [a[at], b[at], g[at], h[at]].map(f32::to_bits);
                        assert!(
                            bits.iter().all(|v| *v == bits[0]),
                            "channel {o} at ({y}, {c}): {bits:?}"
                        );
                    }
                }
            }
        }
    }

    /// The input gradient of a one-channel convolution ([`correlate_plane`]) is the column
    /// tiles' ([`correlate`]) to the bit, for both kernel sides it has loops for.
    #[test]
    fn one_plane_is_the_column_tiles_to_the_bit() {
        let mut state = 0x5851_f42d_4c95_7f2du64;
        for (outputs, kernel, pad, input) in [(6, 5, 2, [28, 28]), (4, 3, 1, [13, 21])] {
            let block = ConvBlock {
                weight: crate::gemm::tests::draw(&mut state, outputs * kernel * kernel),
                bias: vec![0.0; outputs],
                channels: 1,
                kernel,
                pad,
                input,
            };
            assert!(block.one_plane());
            let ([gh, gw], [th, tw]) = block.transposed_sides();
            let gz = crate::gemm::tests::draw(&mut state, outputs * gh * gw);
            let plane = block.transposed_taps();
            let mut a = vec![0.0f32; th * tw];
            correlate_plane(&gz, &plane, &mut a, [th, tw]);
            let columns = Taps::new(block.backward_weights(OB), outputs, kernel, [gh, gw]);
            let mut b = vec![0.0f32; OB * th * tw];
            correlate(&gz, &columns, Sink::Sums(&mut b), [th, tw]);
            let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
            assert_eq!(
                bits(&a),
                bits(&b[..th * tw]),
                "{outputs} channels, side {kernel}"
            );
        }
    }

    /// Without a trace the pooled image comes straight from the tiles ([`Sink::Pooled`]); it is
    /// the pool of the sums to the bit, for column and channel tiles and odd sides.
    #[test]
    fn pooling_in_the_tiles_is_pooling_the_sums() {
        let mut state = 0x2545_f491_4f6c_dd1du64;
        for (channels, outputs, pad, input) in [
            (1, 6, 2, [28, 28]),
            (6, 16, 0, [14, 14]),
            (2, 16, 1, [13, 15]),
            (3, 7, 2, [11, 17]),
        ] {
            let block = ConvBlock {
                weight: crate::gemm::tests::draw(&mut state, outputs * channels * 25),
                bias: crate::gemm::tests::draw(&mut state, outputs),
                channels,
                kernel: 5,
                pad,
                input,
            };
            let x = crate::gemm::tests::draw(&mut state, 3 * block.input_size());
            let (fused, _) = block.forward(&x, 3, false);
            let (sums, trace) = block.forward(&x, 3, true);
            assert!(trace.is_some());
            let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
            assert_eq!(
                bits(&fused),
                bits(&sums),
                "{channels} → {outputs} on {input:?}"
            );
        }
    }
}
