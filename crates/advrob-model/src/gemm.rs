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
//! around it), only with more elements at a time: 12 rows × 32 columns in 24 AVX-512 registers
//! (12 × 16 for narrow products), written with macerator's vectors so that the loop is the one
//! a BLIS kernel has (2 loads of B, 12 broadcasts of A, 24 fused multiply-adds a step of `k`).
//! B is packed whole, once a product, into panels aligned to the cache line (a vector load that
//! straddles two lines costs two), and read as vectors; a plain A is read where it lies, 12 rows
//! at a time; a transposed A is packed. Each tile of A meets every panel of B before the next
//! tile (the panels stream from L2, the tile stays in L1), and a block of rows meets every block
//! of `k` before the next block of rows (its sums stay in L2). On an Ice Lake Xeon (one core,
//! best of 50, in turn with the 6 × 32 kernel this replaced, which autovectorised plain loops):
//! the input gradient's 500×128×784 (B transposed) 69–75 → 90–103 GFLOP/s, a weight gradient's
//! 392×128×128 (A transposed) 91–95 → 102–105, the forward 500×784×128 113–117 → 111–120 (the
//! kernel alone, A and B in L1: 152–157 of the chip's 176).
//! The results are matrixmultiply's to the bit (tested), so the host chain still agrees with the
//! tensor path and no record changes; on the README MLP's products it measured 1.2–1.5× faster on
//! one core of an AVX-512 Xeon. On CPUs without AVX-512 (AMD Zen 3) it measured no faster than
//! matrixmultiply's kernel, so it is not used there ([`product`] returns `false`).

use macerator::{Scalar, Simd, Vector, WithSimd};

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
/// the vectors' fused multiply-add is the hardware's, as matrixmultiply's FMA kernel needs too;
/// [`product`] uses it only where it pays).
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
        // 24 accumulators where the vectors allow: rows of a tile × vectors across its NR
        // columns (12 × 2 with AVX-512, 6 × 4 with AVX2); plain loops elsewhere
        match NR / f32::lanes::<S>() {
            1 => self.run::<S, 12, 1>(),
            2 => self.run::<S, 12, 2>(),
            4 => self.run::<S, 6, 4>(),
            _ => self.run::<S, 6, 0>(),
        }
    }
}

impl<const NR: usize> Product<'_, NR> {
    /// The product in tiles of `MR` rows, each row in `V` vectors (`V = 0`: plain loops).
    #[inline(always)]
    fn run<S: Simd, const MR: usize, const V: usize>(self) {
        let Product {
            m,
            k,
            n,
            a,
            b,
            c,
            packed,
        } = self;
        let bp = aligned(&mut packed.0, k * NR * n.div_ceil(NR));
        let ap = aligned(&mut packed.1, KC.min(k) * MC.min(m.div_ceil(MR) * MR));
        blocks::<S, NR, MR, V>(m, k, n, a, b, c, bp, ap);
    }
}

/// Rows of A taken at a time: a block of [`MC`] rows meets every block of `k` before the next,
/// so that its rows of C stay in the L2 cache between them.
const MC: usize = 144;

thread_local! {
    /// Each thread's packing buffers (B's panels, A's tiles), kept between products: every
    /// value a product reads from them it has packed itself.
    static PACKED: std::cell::RefCell<(Vec<f32>, Vec<f32>)> =
        const { std::cell::RefCell::new((Vec::new(), Vec::new())) };
}

/// `len` values of `v` from its first cache line boundary (64 bytes), `v` grown to hold them
/// where it is shorter: a vector load from the packed panels never straddles two lines.
fn aligned(v: &mut Vec<f32>, len: usize) -> &mut [f32] {
    const LINE: usize = 16;
    if v.len() < len + LINE {
        v.resize(len + LINE, 0.0);
    }
    let skip = (v.as_ptr() as usize / 4).wrapping_neg() % LINE;
    &mut v[skip..skip + len]
}

/// The loops around the micro-kernel: B packed whole, block of `k` by block, into panels of
/// `NR` columns; then for each block of [`MC`] rows, for each block of `k` in order, A's tiles
/// that are not read in place packed, and each tile multiplied by every panel.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn blocks<S: Simd, const NR: usize, const MR: usize, const V: usize>(
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
    for (k0, block) in (0..k).step_by(KC).zip(bp.chunks_mut(KC * NR * panels)) {
        let kc = KC.min(k - k0);
        for (q, panel) in block.chunks_exact_mut(kc * NR).enumerate() {
            pack_b::<NR>(b, k, n, k0, q * NR, panel);
        }
    }
    for ic in (0..m).step_by(MC) {
        let tiles = MC.min(m - ic).div_ceil(MR);
        for (k0, block) in (0..k).step_by(KC).zip(bp.chunks(KC * NR * panels)) {
            let kc = KC.min(k - k0);
            let ap = &mut ap[..kc * MR * tiles];
            for (t, tile) in ap.chunks_exact_mut(kc * MR).enumerate() {
                let i0 = ic + t * MR;
                if in_place::<MR>(a, k, k0, kc, i0, MR.min(m - i0)).is_none() {
                    pack_a::<MR>(a, k, k0, i0, MR.min(m - i0), tile);
                }
            }
            for (t, tile) in ap.chunks_exact(kc * MR).enumerate() {
                let i0 = ic + t * MR;
                let rows = MR.min(m - i0);
                let tile = match in_place::<MR>(a, k, k0, kc, i0, rows) {
                    Some(a) => Tile::InPlace(a),
                    None => Tile::Packed(tile),
                };
                for (q, panel) in block.chunks_exact(kc * NR).enumerate() {
                    let j0 = q * NR;
                    let cols = NR.min(n - j0);
                    // the panel as vectors (it is aligned: `None` only without them)
                    let vectors = if V == 0 {
                        None
                    } else {
                        bytemuck::try_cast_slice::<f32, Vector<S, f32>>(panel).ok()
                    };
                    let acc = match vectors {
                        Some(panel) => micro_v::<S, NR, MR, V>(tile, panel, kc),
                        None => micro::<NR, MR>(tile, panel),
                    };
                    for (i, acc) in acc.iter().enumerate().take(rows) {
                        let row = (i0 + i) * n + j0;
                        store::<NR>(&mut c[row..row + cols], acc, k0 == 0);
                    }
                }
            }
        }
    }
}

/// One row of a tile's sums into C: the first block of `k` (`first`) as matrixmultiply's
/// `α·AB + 0` (β = 0, fused: a −0 sum is +0), a later one added to C, one rounding.
#[inline(always)]
fn store<const NR: usize>(out: &mut [f32], acc: &[f32; NR], first: bool) {
    match <&mut [f32; NR]>::try_from(&mut *out) {
        // a whole row of the tile: NR values, in vectors
        Ok(out) => {
            if first {
                for j in 0..NR {
                    out[j] = acc[j] + 0.0;
                }
            } else {
                for j in 0..NR {
                    out[j] += acc[j];
                }
            }
        }
        Err(_) => {
            let cols = out.len();
            if first {
                for (o, &v) in out.iter_mut().zip(&acc[..cols]) {
                    *o = v + 0.0;
                }
            } else {
                for (o, &v) in out.iter_mut().zip(&acc[..cols]) {
                    *o += v;
                }
            }
        }
    }
}

/// A tile's rows of A over one block of `k`: read where they lie (`kc` values each), or packed
/// `[kc][MR]` (zero beyond the rows it has).
#[derive(Clone, Copy)]
enum Tile<'a, const MR: usize> {
    InPlace([&'a [f32]; MR]),
    Packed(&'a [f32]),
}

/// Steps of `k` the in-place kernel takes between bounds checks of its rows.
const STEPS: usize = 16;

/// One tile in vectors: for each `p` in order, `acc[i][v] = fma(a[i][p], b[p][v], acc[i][v])`
/// from zero, `b` the panel as `kc × V` vectors; the sums as `MR` rows of `NR` values.
#[inline(always)]
fn micro_v<S: Simd, const NR: usize, const MR: usize, const V: usize>(
    a: Tile<'_, MR>,
    b: &[Vector<S, f32>],
    kc: usize,
) -> [[f32; NR]; MR] {
    let zero = 0.0f32.splat::<S>();
    let mut acc = [[zero; V]; MR];
    let b = &b[..kc * V];
    match a {
        Tile::InPlace(a) => {
            // STEPS values of each row at a time, so that the loop over them needs no checks
            let full = kc / STEPS * STEPS;
            for (s, b) in b[..full * V].chunks_exact(STEPS * V).enumerate() {
                let rows: [&[f32; STEPS]; MR] = std::array::from_fn(|i| {
                    a[i][s * STEPS..(s + 1) * STEPS]
                        .try_into()
                        .expect("STEPS values")
                });
                for (p, b) in b.chunks_exact(V).enumerate() {
                    for i in 0..MR {
                        let av = rows[i][p].splat::<S>();
                        for v in 0..V {
                            acc[i][v] = av.fma(b[v], acc[i][v]);
                        }
                    }
                }
            }
            for (p, b) in (full..kc).zip(b[full * V..].chunks_exact(V)) {
                for i in 0..MR {
                    let av = a[i][p].splat::<S>();
                    for v in 0..V {
                        acc[i][v] = av.fma(b[v], acc[i][v]);
                    }
                }
            }
        }
        Tile::Packed(ap) => {
            for (a, b) in ap[..kc * MR].chunks_exact(MR).zip(b.chunks_exact(V)) {
                for i in 0..MR {
                    let av = a[i].splat::<S>();
                    for v in 0..V {
                        acc[i][v] = av.fma(b[v], acc[i][v]);
                    }
                }
            }
        }
    }
    // returned by value, not by reference: the accumulators then stay in registers
    bytemuck::cast(acc)
}

/// A's rows `i0..i0 + rows` (at most `MR`) over `k0..k0 + kc` into `ap` (`[kc][MR]`, zero
/// beyond `rows`).
#[inline(always)]
fn pack_a<const MR: usize>(
    a: Lhs<'_>,
    k: usize,
    k0: usize,
    i0: usize,
    rows: usize,
    ap: &mut [f32],
) {
    match a {
        Lhs::Plain(a) => {
            for i in 0..MR {
                if i < rows {
                    let r = (i0 + i) * k + k0;
                    for (dst, &v) in ap.chunks_exact_mut(MR).zip(&a[r..]) {
                        dst[i] = v;
                    }
                } else {
                    for dst in ap.chunks_exact_mut(MR) {
                        dst[i] = 0.0;
                    }
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

/// The `MR` rows `i0..` of a plain A over `k0..k0 + kc`, which the kernel reads where they lie
/// (each row is contiguous there: packing would only copy them); `None` for a transposed A and
/// for a last tile of fewer rows, which are packed.
#[inline(always)]
fn in_place<'a, const MR: usize>(
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

/// One tile in plain loops (CPUs whose vectors do not divide `NR`): the same chains as
/// [`micro_v`].
#[inline(always)]
fn micro<const NR: usize, const MR: usize>(a: Tile<'_, MR>, bp: &[f32]) -> [[f32; NR]; MR] {
    let mut acc = [[0.0f32; NR]; MR];
    for (p, b) in bp.chunks_exact(NR).enumerate() {
        let b: &[f32; NR] = b.try_into().expect("NR values");
        for i in 0..MR {
            let av = match a {
                Tile::InPlace(rows) => rows[i][p],
                Tile::Packed(ap) => ap[p * MR + i],
            };
            for j in 0..NR {
                acc[i][j] = av.mul_add(b[j], acc[i][j]);
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
