//! The host chain's matrix products ([`crate::dense`], [`crate::conv_host`]) and the elementwise
//! passes after them.
//!
//! The products go through ndarray's `general_mat_mul` (`matrixmultiply`'s `sgemm`), which is
//! what burn-ndarray's `matmul` calls with the same strides, so the host chain computes the
//! tensor path's numbers to the bit; on CPUs with AVX-512, through [`crate::gemm`], which computes
//! the same sums in wider vectors. faer's kernels measured 1.5–1.8× faster on the README MLP's
//! products (AVX-512), but they sum in another order: the attacks inside adversarial training
//! then round differently, and five of the default study's nine models trained to other weights
//! (table cells up to 1.5 points away), so they are not used.
//!
//! A row's result must not depend on the rows beside it (an attack drops the images it has
//! broken from its batch; a sharded run puts other images beside an image): each element of a
//! product is the same sum in the same order whichever block its row falls in (tested).

use ndarray::linalg::general_mat_mul;
use ndarray::{ArrayView2, ArrayViewMut2, ShapeBuilder};
use rayon::prelude::*;

pub(crate) use crate::gemm::{Lhs, Rhs};

/// `c = a · b` for a row-major `a` `[m, k]`: `[m, n]`, row-major. Large products are split by
/// rows over the current rayon pool (all cores; a job's share of them in a run of several jobs).
pub(crate) fn rows(m: usize, k: usize, n: usize, a: &[f32], b: Rhs<'_>) -> Vec<f32> {
    rows_into(m, k, n, a, b, Vec::new())
}

/// [`rows`] into `c`'s memory (its values are not read: every element of the product is
/// written), where an iterative caller hands back the buffer of its last product: no fresh
/// allocation to zero and fault in at every step.
pub(crate) fn rows_into(
    m: usize,
    k: usize,
    n: usize,
    a: &[f32],
    b: Rhs<'_>,
    mut c: Vec<f32>,
) -> Vec<f32> {
    let block = rows_per_block(m, k, n, rayon::current_num_threads());
    c.resize(m * n, 0.0);
    blocks_into(block, m, k, n, Lhs::Plain(&a[..m * k]), b, &mut c);
    c
}

/// `c = aᵀ · b` for a row-major `a` `[k, m]`: `[m, n]`, row-major (a dense layer's weight
/// gradient: its inputs, transposed, times the gradient of its outputs). Large products are split
/// by rows of `c`, columns of `a`, over the current rayon pool, as [`rows`].
pub(crate) fn transposed_rows(m: usize, k: usize, n: usize, a: &[f32], b: Rhs<'_>) -> Vec<f32> {
    let block = rows_per_block(m, k, n, rayon::current_num_threads());
    in_blocks(block, m, k, n, Lhs::Transposed(a, m), b)
}

/// `c = a · b` (`[m, n]`, row-major) in blocks of `block` rows of `c`, in parallel when there are
/// several: each block is the product of A's rows in it ([`Lhs::rows_from`]).
fn in_blocks(block: usize, m: usize, k: usize, n: usize, a: Lhs<'_>, b: Rhs<'_>) -> Vec<f32> {
    let mut c = vec![0.0f32; m * n];
    blocks_into(block, m, k, n, a, b, &mut c);
    c
}

/// [`in_blocks`] into `c` (`[m, n]`, every element written).
fn blocks_into(block: usize, m: usize, k: usize, n: usize, a: Lhs<'_>, b: Rhs<'_>, c: &mut [f32]) {
    if block >= m || n == 0 || k == 0 {
        single(m, k, n, a, b, c);
    } else {
        c.par_chunks_mut(block * n).enumerate().for_each(|(q, c)| {
            single(c.len() / n, k, n, a.rows_from(q * block, k), b, c);
        });
    }
}

/// Rows of each block when a `[m, k] · [k, n]` product is split over `threads`: all `m` (one
/// block) below about a million multiply-adds, else blocks of at least 64 rows, one per thread.
pub(crate) fn rows_per_block(m: usize, k: usize, n: usize, threads: usize) -> usize {
    const MIN_WORK: usize = 1 << 20;
    const MIN_ROWS: usize = 64;
    if threads <= 1 || m * k * n < MIN_WORK || m < 2 * MIN_ROWS {
        return m;
    }
    m.div_ceil(threads).max(MIN_ROWS)
}

/// `c = a · b` into the row-major `c` `[m, n]`, on this thread: on a CPU with AVX-512,
/// [`crate::gemm`]'s product (matrixmultiply's sums to the bit, in wider vectors), else
/// matrixmultiply's.
pub(crate) fn single(m: usize, k: usize, n: usize, a: Lhs<'_>, b: Rhs<'_>, c: &mut [f32]) {
    if crate::gemm::product(m, k, n, a, b, c) {
        return;
    }
    let mut c = ArrayViewMut2::from_shape((m, n), &mut c[..m * n]).expect("c is [m, n]");
    let a_plain;
    let a_transposed;
    let a = match a {
        Lhs::Plain(a) => {
            a_plain = ArrayView2::from_shape((m, k), &a[..m * k]).expect("a is [m, k]");
            a_plain.view()
        }
        Lhs::Transposed(a, stride) => {
            let len = if k == 0 { 0 } else { (k - 1) * stride + m };
            a_transposed = ArrayView2::from_shape((k, m).strides((stride, 1)), &a[..len])
                .expect("a is [k, stride]");
            a_transposed.t()
        }
    };
    match b {
        Rhs::Plain(b) => {
            let b = ArrayView2::from_shape((k, n), &b[..k * n]).expect("b is [k, n]");
            general_mat_mul(1.0, &a, &b, 0.0, &mut c);
        }
        Rhs::Transposed(b) => {
            let b = ArrayView2::from_shape((n, k), &b[..k * n]).expect("b is [n, k]");
            general_mat_mul(1.0, &a, &b.t(), 0.0, &mut c);
        }
    }
}

/// `f` on each row (`n` values) of the row-major `c`, in parallel over the current rayon pool
/// for a large `c`: the elementwise step after a product (a bias, ReLU).
pub(crate) fn each_row(c: &mut [f32], n: usize, f: impl Fn(&mut [f32]) + Sync) {
    let n = n.max(1);
    if c.len() < ELEMENTWISE_SPLIT {
        c.chunks_mut(n).for_each(f);
    } else {
        c.par_chunks_mut(n * (ELEMENTWISE_SPLIT / n).max(1))
            .for_each(|rows| rows.chunks_mut(n).for_each(&f));
    }
}

/// `f` on matching chunks of `c` and `other` (of the same length), in parallel for large ones.
pub(crate) fn each_pair(c: &mut [f32], other: &[f32], f: impl Fn(&mut [f32], &[f32]) + Sync) {
    if c.len() < ELEMENTWISE_SPLIT {
        f(c, other);
    } else {
        c.par_chunks_mut(ELEMENTWISE_SPLIT)
            .zip(other.par_chunks(ELEMENTWISE_SPLIT))
            .for_each(|(c, o)| f(c, o));
    }
}

/// Elements of an elementwise pass worth one rayon task.
const ELEMENTWISE_SPLIT: usize = 1 << 15;

#[cfg(test)]
mod tests {
    use super::{Lhs, Rhs, in_blocks, rows, rows_per_block, single, transposed_rows};
    use crate::gemm::tests::draw;

    /// The plain triple loop in f64: the reference the kernels are checked against.
    fn reference(m: usize, k: usize, n: usize, a: &[f32], b: &[f32], transposed: bool) -> Vec<f64> {
        let mut c = vec![0.0f64; m * n];
        for i in 0..m {
            for j in 0..n {
                c[i * n + j] = (0..k)
                    .map(|l| {
                        let bv = if transposed {
                            b[j * k + l]
                        } else {
                            b[l * n + j]
                        };
                        f64::from(a[i * k + l]) * f64::from(bv)
                    })
                    .sum();
            }
        }
        c
    }

    #[test]
    fn products_are_the_sums_they_compute() {
        let mut s = 0x2545_f491_4f6c_dd1du64;
        for (m, k, n) in [(1, 5, 3), (70, 33, 17), (200, 784, 128), (3, 128, 10)] {
            let (a, b) = (draw(&mut s, m * k), draw(&mut s, k * n));
            for transposed in [false, true] {
                let rhs = if transposed {
                    Rhs::Transposed(&b)
                } else {
                    Rhs::Plain(&b)
                };
                let want = reference(m, k, n, &a, &b, transposed);
                let got = rows(m, k, n, &a, rhs);
                let mut one = vec![0.0f32; m * n];
                single(m, k, n, Lhs::Plain(&a), rhs, &mut one);
                for (c, what) in [(&got, "rows"), (&one, "single")] {
                    for (x, y) in c.iter().zip(&want) {
                        assert!(
                            (f64::from(*x) - y).abs() <= 1e-5 * (k as f64).sqrt(),
                            "{what} {m}x{k}x{n} (transposed {transposed}): {x} vs {y}"
                        );
                    }
                }
            }
        }
        // a transposed left-hand side: aᵀ · b for a stored [k, m]
        let (m, k, n) = (25, 6, 40);
        let (at, b) = (draw(&mut s, k * m), draw(&mut s, k * n));
        let a: Vec<f32> = (0..m * k).map(|i| at[(i % k) * m + i / k]).collect();
        let mut got = vec![0.0f32; m * n];
        single(m, k, n, Lhs::Transposed(&at, m), Rhs::Plain(&b), &mut got);
        for (x, y) in got.iter().zip(reference(m, k, n, &a, &b, false)) {
            assert!((f64::from(*x) - y).abs() < 1e-5, "{x} vs {y}");
        }
    }

    /// A row's result is the same bits whatever the batch around it: alone, among other rows,
    /// at another position, in a batch on either side of the parallel threshold.
    #[test]
    fn a_rows_result_does_not_depend_on_the_rows_beside_it() {
        let mut s = 0x9e37_79b9_7f4a_7c15u64;
        let (k, n) = (784, 128);
        let (a, w) = (draw(&mut s, 300 * k), draw(&mut s, k * n));
        let g = draw(&mut s, 300 * n);
        for (a, k, n, rhs) in [(&a, k, n, Rhs::Plain(&w)), (&g, n, k, Rhs::Transposed(&w))] {
            let m = a.len() / k;
            let whole = rows(m, k, n, a, rhs);
            for (start, len) in [(0, 1), (5, 1), (7, 63), (3, 65), (17, 250), (1, 299)] {
                let part = rows(len, k, n, &a[start * k..(start + len) * k], rhs);
                assert!(
                    part.iter()
                        .zip(&whole[start * n..(start + len) * n])
                        .all(|(x, y)| x.to_bits() == y.to_bits()),
                    "rows {start}..{} of {m} ({k}x{n})",
                    start + len
                );
            }
        }
    }

    #[test]
    fn a_product_split_by_rows_is_the_single_product_to_the_bit() {
        // the README MLP's first layer on a batch of 300: forward and the input gradient's product
        let mut s = 0x2545_f491_4f6c_dd1du64;
        let (m, k, n) = (300, 784, 128);
        let (a, w, g) = (
            draw(&mut s, m * k),
            draw(&mut s, k * n),
            draw(&mut s, m * n),
        );
        for (a, k, n, b) in [(&a, k, n, Rhs::Plain(&w)), (&g, n, k, Rhs::Transposed(&w))] {
            let whole = in_blocks(m, m, k, n, Lhs::Plain(a), b);
            for block in [64, 100, 150, 299] {
                let split = in_blocks(block, m, k, n, Lhs::Plain(a), b);
                assert!(
                    whole
                        .iter()
                        .zip(&split)
                        .all(|(x, y)| x.to_bits() == y.to_bits()),
                    "blocks of {block} rows ({k}x{n})"
                );
            }
        }
        assert_eq!(rows_per_block(1000, 784, 128, 2), 500);
        assert_eq!(rows_per_block(1000, 784, 128, 1), 1000);
        assert_eq!(
            rows_per_block(100, 784, 128, 2),
            100,
            "too few rows to split"
        );
        assert_eq!(
            rows_per_block(1000, 10, 10, 2),
            1000,
            "too little work to split"
        );
    }

    /// A weight gradient's product (the inputs transposed times the output gradient) is the
    /// single product's bits whichever blocks of columns it is split into, and the sums it
    /// computes.
    #[test]
    fn a_transposed_product_split_by_columns_is_the_single_product_to_the_bit() {
        let mut s = 0x5851_f42d_4c95_7f2du64;
        let (m, k, n) = (300, 128, 70);
        let (at, g) = (draw(&mut s, k * m), draw(&mut s, k * n));
        let a: Vec<f32> = (0..m * k).map(|i| at[(i % k) * m + i / k]).collect();
        let mut whole = vec![0.0f32; m * n];
        single(m, k, n, Lhs::Transposed(&at, m), Rhs::Plain(&g), &mut whole);
        for (x, y) in whole.iter().zip(reference(m, k, n, &a, &g, false)) {
            assert!((f64::from(*x) - y).abs() < 1e-4, "{x} vs {y}");
        }
        for block in [64, 100, 150, 299, 300] {
            let split = in_blocks(block, m, k, n, Lhs::Transposed(&at, m), Rhs::Plain(&g));
            assert!(
                whole
                    .iter()
                    .zip(&split)
                    .all(|(x, y)| x.to_bits() == y.to_bits()),
                "blocks of {block} columns"
            );
        }
        let pooled = transposed_rows(m, k, n, &at, Rhs::Plain(&g));
        assert!(
            whole
                .iter()
                .zip(&pooled)
                .all(|(x, y)| x.to_bits() == y.to_bits())
        );
    }
}
