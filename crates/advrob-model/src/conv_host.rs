//! The convolutional blocks of a host chain ([`Dense`](crate::Dense)): a stride-1 square
//! convolution with zero padding, ReLU and a 2×2 max pool (stride 2, floor), the block every CNN
//! of this crate is built from: forward, backward with respect to its input (attacks) and to its
//! weight and bias (host training, [`crate::train`]) on host memory.
//!
//! The convolution and its transpose are computed directly ([`correlate`]): each output one
//! chain of fused multiply-adds over the input channels and the kernel's taps, a tile of outputs
//! in vector registers, images spread over the current rayon pool. (The im2col matrix product it
//! replaces spent most of its time copying windows: LeNet's forward pass on 128 images took
//! 3.3–3.9 ms, 1.6 ms directly, on a 2-core AVX-512 Xeon.) The weight gradient is a matrix
//! product of the output gradients with the input's windows, per group of images. The sums run in
//! another order than a backend's own convolution, so the results are the tensor path's to
//! rounding, not to the bit (tested).

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

    /// One image zero-padded for [`correlate`]: `[in, rows, columns]` with the padding and room
    /// for whole tiles.
    fn padded_side(&self) -> [usize; 2] {
        let [_, th, tw] = self.tile_side();
        [th + self.kernel - 1, tw + self.kernel - 1]
    }

    /// The weights as [`correlate`] reads them for the forward pass: `[out / OB][in][k][k][OB]`,
    /// zero for the channels that round `out` up.
    fn forward_weights(&self) -> Vec<f32> {
        let (o, c, k) = (self.outputs(), self.channels, self.kernel);
        let groups = o.div_ceil(OB);
        let mut wt = vec![0.0f32; groups * c * k * k * OB];
        for (oc, w) in self.weight.chunks_exact(c * k * k).enumerate() {
            let (g, lane) = (oc / OB, oc % OB);
            for (t, v) in w.iter().enumerate() {
                wt[(g * c * k * k + t) * OB + lane] = *v;
            }
        }
        wt
    }

    /// The weights of the backward pass's correlation (the convolution transposed: channels
    /// swapped, the kernel turned by 180°): `[in / OB][out][k][k][OB]`.
    fn backward_weights(&self) -> Vec<f32> {
        let (o, c, k) = (self.outputs(), self.channels, self.kernel);
        let groups = c.div_ceil(OB);
        let mut wt = vec![0.0f32; groups * o * k * k * OB];
        for oc in 0..o {
            for ic in 0..c {
                let (g, lane) = (ic / OB, ic % OB);
                for i in 0..k {
                    for j in 0..k {
                        let v = self.weight[((oc * c + ic) * k + i) * k + j];
                        let t = (oc * k + (k - 1 - i)) * k + (k - 1 - j);
                        wt[(g * o * k * k + t) * OB + lane] = v;
                    }
                }
            }
        }
        wt
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
        let wt = self.forward_weights();
        let mut out = vec![0.0f32; rows * osz];
        let mut winners = vec![0u32; if trace { rows * osz } else { 0 }];
        // per worker: the padded image (its border stays zero) and the convolution's output
        let scratch = || (vec![0.0f32; c * xh * xw], vec![0.0f32; to * th * tw]);
        let image = |(xp, z): &mut (Vec<f32>, Vec<f32>),
                     (xi, (yo, win)): (&[f32], (&mut [f32], &mut [u32]))| {
            self.pad_into(xi, xp);
            correlate(xp, c, [xh, xw], &wt, k, z, [th, tw]);
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
                            let quad = |px: usize| {
                                let q = [
                                    r0[2 * px] + b,
                                    r0[2 * px + 1] + b,
                                    r1[2 * px] + b,
                                    r1[2 * px + 1] + b,
                                ];
                                (q, q[0].max(q[1]).max(q[2].max(q[3])))
                            };
                            for (px, y) in yo[slot..slot + pw].iter_mut().enumerate() {
                                *y = quad(px).1.max(0.0);
                            }
                            if win.is_empty() {
                                continue;
                            }
                            for (px, w) in win[slot..slot + pw].iter_mut().enumerate() {
                                let (q, m) = quad(px);
                                // the first of the four on ties
                                let at = if q[0] == m {
                                    0
                                } else if q[1] == m {
                                    1
                                } else if q[2] == m {
                                    2
                                } else {
                                    3
                                };
                                let flat = ch * hw + (2 * py + at / 2) * wo + 2 * px + at % 2;
                                *w = if m > 0.0 { flat as u32 } else { u32::MAX };
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
        let wt = self.backward_weights();
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

    /// The buffers of [`ConvBlock::transposed`]: the placed output gradient and the tiles.
    fn transposed_scratch(&self) -> (Vec<f32>, Vec<f32>) {
        let ([gh, gw], [th, tw]) = self.transposed_sides();
        let tc = self.channels.next_multiple_of(OB);
        (
            vec![0.0f32; self.outputs() * gh * gw],
            vec![0.0f32; tc * th * tw],
        )
    }

    /// The sides of [`ConvBlock::transposed`]'s placed output gradient and of its tiles.
    fn transposed_sides(&self) -> ([usize; 2], [usize; 2]) {
        let [h, w] = self.input;
        let k = self.kernel;
        let [th, tw] = [h.next_multiple_of(RB), w.next_multiple_of(L)];
        ([th + k - 1, tw + k - 1], [th, tw])
    }

    /// One image's input gradient `dxi` (`[in, h, w]`) from its convolution's output gradient
    /// `dz` (`[out, rows, columns]`): the transposed convolution, as a [`correlate`] of the
    /// output gradient, placed so that input pixel `(y, x)` reads its rows
    /// `y + pad − (k − 1) … y + pad`, with the turned kernel `wt`
    /// ([`ConvBlock::backward_weights`]).
    fn transposed(
        &self,
        dz: &[f32],
        wt: &[f32],
        buffers: &mut (Vec<f32>, Vec<f32>),
        dxi: &mut [f32],
    ) {
        let [h, w] = self.input;
        let [ho, wo] = self.conv_side();
        let (o, k) = (self.outputs(), self.kernel);
        let ([gh, gw], [th, tw]) = self.transposed_sides();
        let shift = k as isize - 1 - self.pad as isize;
        let (gz, out) = buffers;
        gz.fill(0.0);
        for (plane, src) in gz.chunks_exact_mut(gh * gw).zip(dz.chunks_exact(ho * wo)) {
            for (y, src) in src.chunks_exact(wo).enumerate() {
                let gy = y as isize + shift;
                if !(0..gh as isize).contains(&gy) {
                    continue;
                }
                for (x, v) in src.iter().enumerate() {
                    let gx = x as isize + shift;
                    if (0..gw as isize).contains(&gx) {
                        plane[gy as usize * gw + gx as usize] = *v;
                    }
                }
            }
        }
        correlate(gz, o, [gh, gw], wt, k, out, [th, tw]);
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
        let wt = self.backward_weights();
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
const SUM_GROUP: usize = 16;

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
fn correlate(
    input: &[f32],
    channels: usize,
    dims: [usize; 2],
    wt: &[f32],
    k: usize,
    out: &mut [f32],
    side: [usize; 2],
) {
    macerator::AutoArch::new().dispatch(Correlate {
        input,
        channels,
        dims,
        wt,
        k,
        out,
        side,
    })
}

/// [`correlate`]'s arguments, dispatched to the CPU's widest vectors.
struct Correlate<'a> {
    input: &'a [f32],
    channels: usize,
    dims: [usize; 2],
    wt: &'a [f32],
    k: usize,
    out: &'a mut [f32],
    side: [usize; 2],
}

impl macerator::WithSimd for Correlate<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: macerator::Simd>(self) {
        let Correlate {
            input,
            channels,
            dims: [ih, iw],
            wt,
            k,
            out,
            side: [oh, ow],
        } = self;
        let taps = channels * k * k;
        // tap (c, i, j) reads the input `(c · rows + i) · columns + j` after the tile's corner
        let offsets: Vec<usize> = (0..taps)
            .map(|t| {
                let (ci, i, j) = (t / (k * k), t / k % k, t % k);
                (ci * ih + i) * iw + j
            })
            .collect();
        for (g, wg) in wt.chunks_exact(taps * OB).enumerate() {
            for y in (0..oh).step_by(RB) {
                for x in (0..ow).step_by(L) {
                    let acc = tile(input, y * iw + x, iw, &offsets, wg);
                    for (ra, a) in acc.iter().enumerate() {
                        let (r, lane) = (ra / OB, ra % OB);
                        {
                            let at = ((g * OB + lane) * oh + y + r) * ow + x;
                            out[at..at + L].copy_from_slice(a);
                        }
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
