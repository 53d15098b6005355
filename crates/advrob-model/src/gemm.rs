//! A matrix product for CPUs with AVX-512 that computes matrixmultiply's sums to the bit.
//!
//! matrixmultiply's `sgemm` (what burn-ndarray's `matmul` and the host chain call) computes each
//! element of `C = A · B` as one chain of fused multiply-adds per block of 256 along `k`, each
//! chain starting from zero, and adds the blocks' results to `C` in order:
//! `c = ((chain(0..256) + 0) + chain(256..512)) + …`. On every x86-64 CPU with FMA it runs its
//! AVX2 kernel (8 × 8 elements at a time), also where AVX-512 would hold twice as many.
//!
//! This product computes the same chain per element, in the same order and with the same
//! roundings (a fused multiply-add is exact up to its one rounding, whatever the vector width
//! around it), only with more elements at a time: 6 rows × 32 columns in 12 AVX-512 registers
//! (6 × 16 for narrow products), B packed so that the inner loop reads it contiguously, a plain
//! A read where it lies, six rows at a time (packing only copied them: one core's 1000×784×128
//! product went from 132–137 to 145–149 GFLOP/s, a training batch's 128×784×128 from 130–133 to
//! 139–143, four rounds each in turn), a transposed A packed.
//! The results are matrixmultiply's to the bit (tested), so the host chain still agrees with the
//! tensor path and no record changes; on the README MLP's products it measured 1.2–1.5× faster on
//! one core of an AVX-512 Xeon. On CPUs without AVX-512 (AMD Zen 3) it measured no faster than
//! matrixmultiply's kernel, so it is not used there ([`product`] returns `false`).

use macerator::{Simd, WithSimd};

/// The right-hand side of a product: `[k, n]` row-major, or the transpose of a row-major
/// `[n, k]` matrix (a dense layer's weight in its backward pass).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Rhs<'a> {
    /// Row-major `[k, n]`.
    Plain(&'a [f32]),
    /// Row-major `[n, k]`, used transposed.
    Transposed(&'a [f32]),
}

/// The left-hand side of a product (`matmul::single`): `[m, k]` row-major, or the transpose of a
/// row-major `[k, ·]` matrix (a convolution's weight in its backward pass; a batch of a dense
/// layer's inputs, for its weight gradient).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Lhs<'a> {
    /// Row-major `[m, k]`.
    Plain(&'a [f32]),
    /// `k` rows `stride` values apart (`stride ≥ m`), their first `m` columns used transposed:
    /// a row-major `[k, m]` with `stride = m`, or a block of a wider one's columns, sliced from
    /// its first column.
    Transposed(&'a [f32], usize),
}

impl<'a> Lhs<'a> {
    /// A's rows from `i0` on (`k` columns): a plain A's values from row `i0`, a transposed one's
    /// from column `i0`, with the same stride.
    pub(crate) fn rows_from(self, i0: usize, k: usize) -> Lhs<'a> {
        match self {
            Lhs::Plain(a) => Lhs::Plain(&a[i0 * k..]),
            Lhs::Transposed(a, stride) => Lhs::Transposed(&a[i0..], stride),
        }
    }
}

/// matrixmultiply's block along `k` for f32 (`S_KC`).
const KC: usize = 256;

/// `c = a · b` (row-major `c` `[m, n]`) if this CPU has AVX-512 and FMA; `false`, with `c`
/// untouched, where it does not (then the caller runs matrixmultiply).
pub(crate) fn product(m: usize, k: usize, n: usize, a: Lhs<'_>, b: Rhs<'_>, c: &mut [f32]) -> bool {
    if !wide() {
        return false;
    }
    tiles(m, k, n, a, b, c);
    true
}

/// The tiled product on whatever vectors this CPU has (its chains are matrixmultiply's wherever
/// `mul_add` is a hardware FMA, as matrixmultiply's FMA kernel needs too; [`product`] uses it
/// only where it pays).
fn tiles(m: usize, k: usize, n: usize, a: Lhs<'_>, b: Rhs<'_>, c: &mut [f32]) {
    let c = &mut c[..m * n];
    if k == 0 {
        c.fill(0.0);
        return;
    }
    if m == 0 || n == 0 {
        return;
    }
    let arch = macerator::AutoArch::new();
    PACKED.with_borrow_mut(|packed| {
        if n <= 16 {
            arch.dispatch(Product::<16> {
                m,
                k,
                n,
                a,
                b,
                c,
                packed,
            });
        } else {
            arch.dispatch(Product::<32> {
                m,
                k,
                n,
                a,
                b,
                c,
                packed,
            });
        }
    });
}

/// Whether this CPU runs [`product`]: AVX-512F with FMA and AVX2 (so that matrixmultiply, built
/// without its AVX-512 kernel, runs its FMA kernel, whose sums these are).
pub(crate) fn wide() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("fma")
            && std::arch::is_x86_feature_detected!("avx2")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Rows of the micro-kernel's tile.
const MR: usize = 6;

/// One product, dispatched to the CPU's widest vectors; `NR` columns per tile.
struct Product<'a, const NR: usize> {
    m: usize,
    k: usize,
    n: usize,
    a: Lhs<'a>,
    b: Rhs<'a>,
    c: &'a mut [f32],
    /// The packing buffers ([`PACKED`]).
    packed: &'a mut (Vec<f32>, Vec<f32>),
}

impl<const NR: usize> WithSimd for Product<'_, NR> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self) {
        let Product {
            m,
            k,
            n,
            a,
            b,
            c,
            packed,
        } = self;
        let bp = grown(&mut packed.0, KC.min(k) * NR * n.div_ceil(NR));
        let ap = grown(&mut packed.1, KC.min(k) * MC.min(m.div_ceil(MR) * MR));
        blocks::<NR>(m, k, n, a, b, c, bp, ap);
    }
}

/// Rows of A packed at a time: a block of [`MC`] × [`KC`] values stays in the L2 cache while each
/// panel of B, in L1, meets every tile of the block (BLIS's loop order).
const MC: usize = 144;

thread_local! {
    /// Each thread's packing buffers (B's panels, A's tiles), kept between products: every
    /// value a product reads from them it has packed itself.
    static PACKED: std::cell::RefCell<(Vec<f32>, Vec<f32>)> =
        const { std::cell::RefCell::new((Vec::new(), Vec::new())) };
}

/// The first `len` values of `v`, grown to hold them where it is shorter.
fn grown(v: &mut Vec<f32>, len: usize) -> &mut [f32] {
    if v.len() < len {
        v.resize(len, 0.0);
    }
    &mut v[..len]
}

/// The loops around the micro-kernel: for each block of `k`, B packed into panels of `NR`
/// columns in `bp`; for each block of [`MC`] rows, A packed tile by tile into `ap`, then for each
/// panel every tile of the block multiplied.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn blocks<const NR: usize>(
    m: usize,
    k: usize,
    n: usize,
    a: Lhs<'_>,
    b: Rhs<'_>,
    c: &mut [f32],
    bp: &mut [f32],
    ap: &mut [f32],
) {
    let panels = n.div_ceil(NR);
    for k0 in (0..k).step_by(KC) {
        let kc = KC.min(k - k0);
        let bp = &mut bp[..kc * NR * panels];
        for (q, panel) in bp.chunks_exact_mut(kc * NR).enumerate() {
            pack_b::<NR>(b, k, n, k0, q * NR, panel);
        }
        for ic in (0..m).step_by(MC) {
            let mb = MC.min(m - ic);
            let tiles = mb.div_ceil(MR);
            let ap = &mut ap[..kc * MR * tiles];
            for (t, tile) in ap.chunks_exact_mut(kc * MR).enumerate() {
                let i0 = ic + t * MR;
                let rows = MR.min(m - i0);
                if in_place(a, k, k0, kc, i0, rows).is_none() {
                    pack_a(a, k, k0, i0, rows, tile);
                }
            }
            for (q, panel) in bp.chunks_exact(kc * NR).enumerate() {
                let j0 = q * NR;
                let cols = NR.min(n - j0);
                for (t, tile) in ap.chunks_exact(kc * MR).enumerate() {
                    let i0 = ic + t * MR;
                    let rows = MR.min(m - i0);
                    let acc = match in_place(a, k, k0, kc, i0, rows) {
                        Some(a) => micro_in_place::<NR>(a, panel),
                        None => micro::<NR>(tile, panel),
                    };
                    for (i, acc) in acc.iter().enumerate().take(rows) {
                        let out = &mut c[(i0 + i) * n + j0..(i0 + i) * n + j0 + cols];
                        if k0 == 0 {
                            // matrixmultiply's first block: α·AB + 0 (β = 0), fused: a −0 sum
                            // is +0
                            for (o, &v) in out.iter_mut().zip(&acc[..cols]) {
                                *o = v + 0.0;
                            }
                        } else {
                            // later blocks: α·AB + C, one rounding
                            for (o, &v) in out.iter_mut().zip(&acc[..cols]) {
                                *o += v;
                            }
                        }
                    }
                }
            }
        }
    }
}

/// A's rows `i0..i0 + rows` (at most [`MR`]) over `k0..k0 + kc` into `ap` (`[kc][MR]`, zero
/// beyond `rows`).
#[inline(always)]
fn pack_a(a: Lhs<'_>, k: usize, k0: usize, i0: usize, rows: usize, ap: &mut [f32]) {
    let kc = ap.len() / MR;
    match a {
        Lhs::Plain(a) => {
            let zeros = [0.0f32; KC];
            let src: [&[f32]; MR] = std::array::from_fn(|i| {
                if i < rows {
                    let r = (i0 + i) * k + k0;
                    &a[r..r + kc]
                } else {
                    &zeros[..kc]
                }
            });
            for (p, dst) in ap.chunks_exact_mut(MR).enumerate() {
                for i in 0..MR {
                    dst[i] = src[i][p];
                }
            }
        }
        Lhs::Transposed(a, stride) => {
            // a is [k, stride]: A's row i is a's column i
            for (p, dst) in ap.chunks_exact_mut(MR).enumerate() {
                let row = &a[(k0 + p) * stride + i0..];
                for i in 0..MR {
                    dst[i] = if i < rows { row[i] } else { 0.0 };
                }
            }
        }
    }
}

/// The [`MR`] rows `i0..` of a plain A over `k0..k0 + kc`, which the kernel reads where they lie
/// (each row is contiguous there: packing would only copy them); `None` for a transposed A and
/// for a last tile of fewer rows, which are packed.
#[inline(always)]
fn in_place<'a>(
    a: Lhs<'a>,
    k: usize,
    k0: usize,
    kc: usize,
    i0: usize,
    rows: usize,
) -> Option<[&'a [f32]; MR]> {
    match a {
        Lhs::Plain(a) if rows == MR => Some(std::array::from_fn(|i| {
            let start = (i0 + i) * k + k0;
            &a[start..start + kc]
        })),
        _ => None,
    }
}

/// B's columns `j0..j0 + NR` over rows `k0..k0 + kc` into `panel` (`[kc][NR]`, zero beyond `n`).
#[inline(always)]
fn pack_b<const NR: usize>(
    b: Rhs<'_>,
    k: usize,
    n: usize,
    k0: usize,
    j0: usize,
    panel: &mut [f32],
) {
    let cols = NR.min(n - j0);
    for (p, dst) in panel.chunks_exact_mut(NR).enumerate() {
        match b {
            Rhs::Plain(b) => {
                let row = &b[(k0 + p) * n + j0..(k0 + p) * n + j0 + cols];
                dst[..cols].copy_from_slice(row);
            }
            Rhs::Transposed(b) => {
                // b is [n, k]: B's column j is b's row j
                for (j, d) in dst[..cols].iter_mut().enumerate() {
                    *d = b[(j0 + j) * k + k0 + p];
                }
            }
        }
        dst[cols..].fill(0.0);
    }
}

/// One tile of a plain A read in place ([`in_place`]): the same chains as [`micro`].
#[inline(always)]
fn micro_in_place<const NR: usize>(a: [&[f32]; MR], bp: &[f32]) -> [[f32; NR]; MR] {
    let mut acc = [[0.0f32; NR]; MR];
    let [a0, a1, a2, a3, a4, a5] = a;
    let rows = a0.iter().zip(a1).zip(a2).zip(a3).zip(a4).zip(a5);
    for (r, b) in rows.zip(bp.chunks_exact(NR)) {
        let (((((&v0, &v1), &v2), &v3), &v4), &v5) = r;
        let b: &[f32; NR] = b.try_into().expect("NR values");
        let av = [v0, v1, v2, v3, v4, v5];
        for i in 0..MR {
            for j in 0..NR {
                acc[i][j] = av[i].mul_add(b[j], acc[i][j]);
            }
        }
    }
    acc
}

/// One tile: for each `p` in order, `acc[i][j] = fma(a[p][i], b[p][j], acc[i][j])` from zero.
#[inline(always)]
fn micro<const NR: usize>(ap: &[f32], bp: &[f32]) -> [[f32; NR]; MR] {
    let mut acc = [[0.0f32; NR]; MR];
    for (a, b) in ap.chunks_exact(MR).zip(bp.chunks_exact(NR)) {
        let a: &[f32; MR] = a.try_into().expect("MR values");
        let b: &[f32; NR] = b.try_into().expect("NR values");
        for i in 0..MR {
            for j in 0..NR {
                acc[i][j] = a[i].mul_add(b[j], acc[i][j]);
            }
        }
    }
    acc
}

#[cfg(test)]
pub(crate) mod tests {
    use super::{Lhs, Rhs, product, tiles, wide};
    use ndarray::linalg::general_mat_mul;
    use ndarray::{ArrayView2, ArrayViewMut2};

    /// `len` values in [−0.5, 0.5) from a xorshift state (test inputs; also `matmul`'s).
    pub(crate) fn draw(state: &mut u64, len: usize) -> Vec<f32> {
        (0..len)
            .map(|_| {
                *state ^= *state << 13;
                *state ^= *state >> 7;
                *state ^= *state << 17;
                (*state >> 40) as f32 / (1u64 << 24) as f32 - 0.5
            })
            .collect()
    }

    /// matrixmultiply through ndarray, with the layouts the host chain uses.
    fn reference(
        m: usize,
        k: usize,
        n: usize,
        a: &[f32],
        at: bool,
        b: &[f32],
        bt: bool,
    ) -> Vec<f32> {
        let mut c = vec![0.0f32; m * n];
        let mut cv = ArrayViewMut2::from_shape((m, n), &mut c[..]).expect("c");
        let a_plain = ArrayView2::from_shape((m, k), a);
        let a_t = ArrayView2::from_shape((k, m), a);
        let a = if at {
            a_t.expect("a").reversed_axes()
        } else {
            a_plain.expect("a")
        };
        let b = if bt {
            ArrayView2::from_shape((n, k), b)
                .expect("b")
                .reversed_axes()
        } else {
            ArrayView2::from_shape((k, n), b).expect("b")
        };
        general_mat_mul(1.0, &a, &b, 0.0, &mut cv);
        c
    }

    #[test]
    fn the_wide_product_is_matrixmultiplys_to_the_bit() {
        // the tiles are checked wherever matrixmultiply runs its FMA kernel (AVX2 and FMA), also
        // on CPUs without AVX-512 where `product` leaves the work to matrixmultiply
        #[cfg(target_arch = "x86_64")]
        let fma = std::arch::is_x86_feature_detected!("fma")
            && std::arch::is_x86_feature_detected!("avx2");
        #[cfg(not(target_arch = "x86_64"))]
        let fma = false;
        if !fma {
            eprintln!("no FMA kernel in matrixmultiply here: nothing to compare the tiles with");
            return;
        }
        let mut state = 0x9e3779b97f4a7c15u64;
        // the MLP's products, k across block edges (255, 256, 257, 784), narrow and ragged
        // tiles, k = 1, empty sides
        let shapes = [
            (1000, 784, 128),
            (37, 128, 784),
            (780, 128, 10),
            (5, 257, 33),
            (13, 255, 17),
            (7, 256, 16),
            (6, 1, 32),
            (1, 600, 1),
            (9, 0, 4),
            (0, 5, 3),
        ];
        for (m, k, n) in shapes {
            for (at, bt) in [(false, false), (false, true), (true, false), (true, true)] {
                let a = draw(&mut state, m * k);
                let mut b = draw(&mut state, k * n);
                if !b.is_empty() {
                    b[0] = 0.0;
                }
                let want = reference(m, k, n, &a, at, &b, bt);
                let mut got = vec![f32::NAN; m * n];
                let (la, rb) = (
                    if at {
                        Lhs::Transposed(&a, m)
                    } else {
                        Lhs::Plain(&a)
                    },
                    if bt {
                        Rhs::Transposed(&b)
                    } else {
                        Rhs::Plain(&b)
                    },
                );
                tiles(m, k, n, la, rb, &mut got);
                if wide() {
                    let mut used = vec![f32::NAN; m * n];
                    assert!(product(m, k, n, la, rb, &mut used));
                    assert!(
                        used.iter()
                            .zip(&got)
                            .all(|(u, g)| u.to_bits() == g.to_bits())
                    );
                }
                for (g, w) in got.iter().zip(&want) {
                    assert_eq!(g.to_bits(), w.to_bits(), "{m}x{k}x{n} at={at} bt={bt}");
                }
            }
        }
    }
}
