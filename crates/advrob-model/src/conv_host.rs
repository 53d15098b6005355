//! The convolutional blocks of a host chain ([`Dense`](crate::Dense)): a stride-1 square
//! convolution with zero padding, ReLU and a 2×2 max pool (stride 2, floor), the block every CNN
//! of this crate is built from, forward and backward with respect to its input on host memory.
//!
//! The convolution is a matrix product per image over the image's windows (im2col):
//! `W [out, in·k·k] · cols [in·k·k, rows·columns]`, images spread over the current rayon pool.
//! Its sums run in another order than a backend's own convolution, so the results are the tensor
//! path's to rounding, not to the bit (tested).

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

    /// The rows of the im2col matrix.
    fn patch(&self) -> usize {
        self.channels * self.kernel * self.kernel
    }

    /// The columns `x` of the convolution's output row that window column `j` reads inside
    /// the image (the rest read padding), as a range of output columns.
    fn inside(&self, j: usize) -> std::ops::Range<usize> {
        let [_, w] = self.input;
        let [_, wo] = self.conv_side();
        let lo = self.pad.saturating_sub(j).min(wo);
        let hi = (w + self.pad).saturating_sub(j).min(wo).max(lo);
        lo..hi
    }

    /// One image's windows `[in·k·k, rows·columns]`, zero where they reach into the padding.
    fn im2col(&self, x: &[f32], cols: &mut [f32]) {
        let [h, w] = self.input;
        let [ho, wo] = self.conv_side();
        let (k, pad) = (self.kernel, self.pad);
        for c in 0..self.channels {
            let plane = &x[c * h * w..(c + 1) * h * w];
            for i in 0..k {
                for j in 0..k {
                    let row = &mut cols[((c * k + i) * k + j) * ho * wo..][..ho * wo];
                    let inside = self.inside(j);
                    for (y, out) in row.chunks_exact_mut(wo).enumerate() {
                        let sy = (y + i).wrapping_sub(pad);
                        if sy >= h {
                            out.fill(0.0);
                            continue;
                        }
                        // output column x reads pixel x + j − pad of row sy
                        let src = &plane[sy * w + inside.start + j - pad..][..inside.len()];
                        out[..inside.start].fill(0.0);
                        out[inside.clone()].copy_from_slice(src);
                        out[inside.end..].fill(0.0);
                    }
                }
            }
        }
    }

    /// Adds one image's window gradients `[in·k·k, rows·columns]` back onto its pixels.
    fn col2im(&self, cols: &[f32], dx: &mut [f32]) {
        let [h, w] = self.input;
        let [ho, wo] = self.conv_side();
        let (k, pad) = (self.kernel, self.pad);
        for c in 0..self.channels {
            let plane = &mut dx[c * h * w..(c + 1) * h * w];
            for i in 0..k {
                for j in 0..k {
                    let row = &cols[((c * k + i) * k + j) * ho * wo..][..ho * wo];
                    let inside = self.inside(j);
                    for (y, g) in row.chunks_exact(wo).enumerate() {
                        let sy = (y + i).wrapping_sub(pad);
                        if sy >= h {
                            continue;
                        }
                        let dst = &mut plane[sy * w + inside.start + j - pad..][..inside.len()];
                        for (d, v) in dst.iter_mut().zip(&g[inside.clone()]) {
                            *d += v;
                        }
                    }
                }
            }
        }
    }

    /// The block on `rows` images `x` (`[rows, in, h, w]`): the pooled outputs
    /// `[rows, out, h', w']` and, with `trace`, what the backward pass needs. One product per
    /// image, images over the rayon pool: several images in one wider product measured 10–35%
    /// slower (an image's windows, 78 kB for LeNet's first convolution, stay in the core's cache).
    pub(crate) fn forward(
        &self,
        x: &[f32],
        rows: usize,
        trace: bool,
    ) -> (Vec<f32>, Option<BlockTrace>) {
        let (isz, osz) = (self.input_size(), self.output_size());
        let [ho, wo] = self.conv_side();
        let [ph, pw] = self.output();
        let (o, patch, hw) = (self.outputs(), self.patch(), ho * wo);
        let mut out = vec![0.0f32; rows * osz];
        let mut winners = vec![0u32; if trace { rows * osz } else { 0 }];
        let image = |(xi, (yo, win)): (&[f32], (&mut [f32], &mut [u32]))| {
            let mut cols = vec![0.0f32; patch * hw];
            self.im2col(xi, &mut cols);
            let mut z = vec![0.0f32; o * hw];
            let (w, cols) = (Lhs::Plain(&self.weight), Rhs::Plain(&cols));
            matmul::single(o, patch, hw, w, cols, &mut z);
            // the bias after the product, as the convolution adds it
            for (row, b) in z.chunks_exact_mut(hw).zip(&self.bias) {
                row.iter_mut().for_each(|v| *v += b);
            }
            // ReLU then the pool: the largest of the four (ReLU commutes with the maximum), its
            // first position on ties where it is positive, as burn's max pool
            for (c, plane) in z.chunks_exact(hw).enumerate() {
                for py in 0..ph {
                    let top = (2 * py) * wo;
                    let (r0, r1) = (&plane[top..top + wo], &plane[top + wo..top + 2 * wo]);
                    let slot = (c * ph + py) * pw;
                    for px in 0..pw {
                        let q = [r0[2 * px], r0[2 * px + 1], r1[2 * px], r1[2 * px + 1]];
                        let m = q[0].max(q[1]).max(q[2].max(q[3]));
                        yo[slot + px] = m.max(0.0);
                        if !win.is_empty() {
                            win[slot + px] = if m > 0.0 {
                                let at = q.iter().position(|v| *v == m).unwrap_or(0);
                                (c * hw + top + (at / 2) * wo + 2 * px + at % 2) as u32
                            } else {
                                u32::MAX
                            };
                        }
                    }
                }
            }
        };
        if trace {
            x.par_chunks(isz)
                .zip(out.par_chunks_mut(osz).zip(winners.par_chunks_mut(osz)))
                .for_each(image);
        } else {
            x.par_chunks(isz)
                .zip(out.par_chunks_mut(osz))
                .for_each(|(xi, yo)| image((xi, (yo, &mut []))));
        }
        (out, trace.then_some(BlockTrace { winners }))
    }

    /// The gradient with respect to the block's input of a loss whose gradient with respect to
    /// its pooled output is `dy` (`[rows, out, h', w']`).
    pub(crate) fn backward(&self, trace: &BlockTrace, dy: &[f32], rows: usize) -> Vec<f32> {
        let (isz, osz) = (self.input_size(), self.output_size());
        let [ho, wo] = self.conv_side();
        let (o, patch, hw) = (self.outputs(), self.patch(), ho * wo);
        let mut dx = vec![0.0f32; rows * isz];
        dx.par_chunks_mut(isz)
            .zip(dy.par_chunks(osz).zip(trace.winners.par_chunks(osz)))
            .for_each(|(dxi, (dyi, win))| {
                // the pool's gradient goes to its winner, none where ReLU was off
                let mut dz = vec![0.0f32; o * hw];
                for (gv, &at) in dyi.iter().zip(win) {
                    if at != u32::MAX {
                        dz[at as usize] += gv;
                    }
                }
                let mut dcols = vec![0.0f32; patch * hw];
                let (wt, dz) = (Lhs::Transposed(&self.weight, patch), Rhs::Plain(&dz));
                matmul::single(patch, o, hw, wt, dz, &mut dcols);
                self.col2im(&dcols, dxi);
            });
        dx
    }
}
