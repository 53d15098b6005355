//! The host loops compiled for the widest vector unit the CPU has, chosen at run time.
//!
//! The workspace builds for the baseline x86-64 (SSE2: four f32 lanes), so that one binary runs on
//! every machine. [`vectorized`] runs a closure in a copy compiled with the features the CPU
//! reports (AVX-512, AVX2 and FMA, SSE4.2 on x86-64; NEON on aarch64), detected once by
//! `macerator`, the dispatcher burn-ndarray's SIMD kernels use.
//!
//! Only the vector width changes, never the arithmetic: Rust does not fuse a multiply and an add
//! into an FMA unless asked, and does not reorder a floating-point sum, so an elementwise loop
//! computes the same IEEE operations per element whatever the width, and its results are the
//! baseline build's to the bit (tested below and by the callers' own tests).

/// Runs `f` compiled for the CPU's widest vector unit. Mark the closure `#[inline(always)]` and
/// keep its loops in it or in functions marked so: only code inlined into the dispatched copy is
/// compiled with its features (a closure left to the optimiser can land in another codegen unit
/// and run at the baseline width).
#[inline(always)]
pub fn vectorized<R>(f: impl FnOnce() -> R) -> R {
    macerator::AutoArch::new().dispatch(f)
}

#[cfg(test)]
mod tests {
    use super::vectorized;

    #[test]
    fn elementwise_loops_keep_their_bits() {
        let a: Vec<f32> = (0..1031)
            .map(|i| ((i * 7919) % 1013) as f32 * 1e-3 - 0.5)
            .collect();
        let b: Vec<f32> = (0..1031)
            .map(|i| ((i * 104729) % 997) as f32 * 1e-3 - 0.5)
            .collect();
        let plain: Vec<f32> = a
            .iter()
            .zip(&b)
            .map(|(x, y)| (x + y * 0.3).clamp(0.0, 1.0) - x * y)
            .collect();
        let wide = vectorized(
            #[inline(always)]
            || {
                a.iter()
                    .zip(&b)
                    .map(|(x, y)| (x + y * 0.3).clamp(0.0, 1.0) - x * y)
                    .collect::<Vec<f32>>()
            },
        );
        assert!(
            plain
                .iter()
                .zip(&wide)
                .all(|(p, w)| p.to_bits() == w.to_bits())
        );
        // a sum is not reassociated either
        let s_plain: f32 = a.iter().sum();
        let s_wide: f32 = vectorized(
            #[inline(always)]
            || a.iter().sum(),
        );
        assert_eq!(s_plain.to_bits(), s_wide.to_bits());
    }
}
