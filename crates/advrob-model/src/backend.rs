//! Which burn backends this build has, and the one place a backend name becomes a [`Device`].
//!
//! Backends are Cargo features (`ndarray`, `wgpu`, `flex`) that the binaries switch on; feature
//! unification carries their choice down to this crate.

use burn::tensor::{Device, Tensor};

use crate::error::{ModelError, Result};

/// Names of the backends compiled into this build, default first.
pub fn compiled_backends() -> Vec<&'static str> {
    let mut v = Vec::new();
    if cfg!(any(test, feature = "ndarray")) {
        v.push("ndarray");
    }
    if cfg!(feature = "flex") {
        v.push("flex");
    }
    if cfg!(feature = "wgpu") {
        v.push("wgpu");
    }
    v
}

/// The device of backend `name` (one of [`compiled_backends`]); an unknown or not compiled-in name
/// is an error that lists the available ones.
pub fn device(name: &str) -> Result<Device> {
    match name {
        #[cfg(any(test, feature = "ndarray"))]
        // burn 0.22 deprecates ndarray in favour of flex; it stays our default CPU backend until
        // flex has proven itself here (see docs/backends.md)
        #[allow(deprecated)]
        "ndarray" => Ok(Device::ndarray()),
        #[cfg(feature = "flex")]
        "flex" => Ok(Device::flex()),
        #[cfg(feature = "wgpu")]
        "wgpu" => {
            wgpu_adapter()?;
            Ok(Device::wgpu(burn::tensor::DeviceKind::DefaultDevice))
        }
        _ => {
            let known = ["ndarray", "flex", "wgpu"];
            let reason = if known.contains(&name) {
                format!(
                    "{name} is not compiled into this build (enable the Cargo feature `{name}`)"
                )
            } else {
                format!("unknown backend {name:?}")
            };
            Err(ModelError::invalid(
                "backend",
                format!("{reason}; available: {}", compiled_backends().join(", ")),
            ))
        }
    }
}

/// The values of `t` on the host. On burn-ndarray they are copied from where they lie
/// ([`with_host_f32`]: one `memcpy`); other backends read back as they do.
pub fn read_f32<const D: usize>(t: Tensor<D>) -> Option<Vec<f32>> {
    if let Some(v) = with_host_f32(&t, <[f32]>::to_vec) {
        return Some(v);
    }
    t.into_data().try_into_vec_as::<f32>().ok()
}

/// A tensor whose values cannot be read back to the host as the type asked for (what burn said).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("a tensor's values cannot be read back: {0}")]
pub struct Readback(pub String);

/// The values of a float tensor on the host ([`read_f32`]), or why not: the one readback helper
/// the attacks, evaluations and reports use.
pub fn host_f32<const D: usize>(t: Tensor<D>) -> std::result::Result<Vec<f32>, Readback> {
    read_f32(t).ok_or_else(|| Readback("its values are not f32".into()))
}

/// The values of an integer tensor (labels, predictions) on the host, or why not.
pub fn host_i64<const D: usize>(
    t: Tensor<D, burn::tensor::Int>,
) -> std::result::Result<Vec<i64>, Readback> {
    t.into_data()
        .try_into_vec_as::<i64>()
        .map_err(|e| Readback(format!("{e:?}")))
}

/// `f` of the values of `t` on the host: where they lie on burn-ndarray ([`with_host_f32`]),
/// else of a copy ([`read_f32`]); `None` when they are not f32.
pub fn on_host_f32<const D: usize, R>(t: &Tensor<D>, mut f: impl FnMut(&[f32]) -> R) -> Option<R> {
    if let Some(r) = with_host_f32(t, &mut f) {
        return Some(r);
    }
    Some(f(&read_f32(t.clone())?))
}

/// `f` of the values of a plain burn-ndarray f32 tensor where they lie, row-major, without a
/// copy; `None` for any other tensor (another backend, an autodiff tensor, another element type,
/// a view that is not contiguous). burn-ndarray's own readback copies a shared buffer (a clone
/// of the caller's batch) element by element, about 10 ns an element.
pub fn with_host_f32<const D: usize, R>(t: &Tensor<D>, f: impl FnOnce(&[f32]) -> R) -> Option<R> {
    #[cfg(any(test, feature = "ndarray"))]
    #[allow(deprecated)]
    {
        use burn::backend::ndarray::{NdArray, NdArrayTensor};
        if t.is_autodiff() || !is_ndarray(&t.device()) {
            return None;
        }
        match t.clone().try_into_primitive::<NdArray>().ok()? {
            NdArrayTensor::F32(storage) => storage.view().as_slice().map(f),
            _ => None,
        }
    }
    #[cfg(not(any(test, feature = "ndarray")))]
    {
        let _ = (t, f);
        None
    }
}

/// The sum of `xs` in burn-ndarray's order (ndarray's eightfold unrolled fold: eight running
/// sums, paired, then the rest in order; its `sum`, `mean` and `sum_dim` along a contiguous row
/// run it), so that a host loop gives the same f32 as the tensor reduction it replaces.
pub fn sum_f32(xs: &[f32]) -> f32 {
    let mut p = [0.0f32; 8];
    let mut chunks = xs.chunks_exact(8);
    for c in &mut chunks {
        for (acc, v) in p.iter_mut().zip(c) {
            *acc += v;
        }
    }
    let mut acc = 0.0f32;
    for k in 0..4 {
        acc += p[k] + p[k + 4];
    }
    for v in chunks.remainder() {
        acc += v;
    }
    acc
}

/// Whether `device` is burn-ndarray's: where [`Dense`](crate::Dense)'s host chain computes what
/// the tensor path would, to the bit, without its per-operation allocations.
pub fn is_ndarray(device: &Device) -> bool {
    #[cfg(any(test, feature = "ndarray"))]
    {
        #[allow(deprecated)]
        let ndarray = Device::ndarray();
        *device == ndarray
    }
    #[cfg(not(any(test, feature = "ndarray")))]
    {
        let _ = device;
        false
    }
}

/// How backend `name`'s arithmetic is done, for cache keys: the name itself, except ndarray in a
/// build with the `blas` feature, `ndarray+openblas` (OpenBLAS sums products in another order, so
/// its trained weights and figures differ in the last bits and must never be served for a plain
/// ndarray build's, or the other way round).
pub fn numerics(name: &str) -> &str {
    match name {
        #[cfg(feature = "blas")]
        "ndarray" => "ndarray+openblas",
        other => other,
    }
}

/// What runs backend `name`: the CPU for ndarray and flex, the graphics adapter for wgpu (its
/// name, kind and graphics API, e.g. `llvmpipe (LLVM 15.0.6, 256 bits), Cpu, Vulkan` for Mesa's
/// software Vulkan driver). For tables that compare backends.
pub fn describe(name: &str) -> Result<String> {
    device(name)?;
    Ok(match name {
        #[cfg(feature = "wgpu")]
        "wgpu" => wgpu_adapter()?,
        _ => format!(
            "CPU, {} cores{}",
            std::thread::available_parallelism().map_or(1, usize::from),
            if numerics(name) == name {
                ""
            } else {
                ", OpenBLAS"
            }
        ),
    })
}

/// How a CPU backend uses the machine's cores, for `bench-runner backends` and the bench: burn-flex
/// splits its matrix products and kernels over the current rayon pool (all cores; in a run of
/// several jobs each job has a pool of cores ÷ jobs threads, so jobs × threads never exceeds the
/// cores); burn-ndarray computes on the thread that calls it, with SIMD kernels, and the host path
/// (the training of MLPs and of the CNNs built of convolution blocks, the logits and attacks of
/// MLPs and CNNs) splits its work over the current pool. `None` for GPU backends and unknown
/// names.
pub fn threading(name: &str) -> Option<String> {
    match name {
        "ndarray" => Some(format!(
            "burn ops on the calling thread (SIMD kernels{}; CNN convolutions as im2col products); on the host instead: the training, logits and attacks of MLPs, of LeNet and of Madry et al.'s CNN (direct convolutions), the logits and attacks of every CNN, over {} threads{}, kept awake while a run computes",
            if numerics(name) == name {
                ""
            } else {
                ", OpenBLAS products"
            },
            rayon_threads(),
            if crate::gemm::wide() {
                " (AVX-512 tiles, matrixmultiply's sums)"
            } else {
                ""
            }
        )),
        #[cfg(feature = "flex")]
        "flex" => Some(format!(
            "products and kernels over {} threads (SIMD kernels, gemm), kept awake while a run computes",
            rayon_threads()
        )),
        _ => None,
    }
}

/// Runs `work` on a thread of the current rayon pool while one other thread of the pool stays
/// awake, taking the pool's work the moment it is posted instead of sleeping between jobs: the
/// spin-wait that OpenMP (PyTorch's pool) does by default.
///
/// The host path and burn-flex split each product over the pool, a few hundred microseconds of work
/// at a time. A thread that has gone to sleep takes about as long as that to run again on a
/// virtual machine (measured here: a `rayon::join` of two 100 µs tasks took 170–220 µs on average
/// with the second thread asleep between joins, 101 µs with it awake), so without this the second
/// core joins late or not at all (a 2-thread product of the README MLP's first layer: 1.1–1.2× one
/// thread at its median). The awake thread spins only while `work` runs, on a core the pool owns
/// (the pool has a thread per core it was given: jobs × threads never exceed the cores), and runs
/// the pool's work when there is some, so nothing waits on it; with one thread in the pool,
/// `work` just runs. Nested calls run `work` directly.
pub fn keep_awake<R: Send>(work: impl FnOnce() -> R + Send) -> R {
    use std::sync::atomic::{AtomicBool, Ordering};
    thread_local! {
        static AWAKE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    }
    if rayon::current_num_threads() < 2 || AWAKE.with(std::cell::Cell::get) {
        return work();
    }
    /// Marks this thread as keeping the pool awake and, when dropped (also when `work` panics),
    /// lets the spinning thread stop: the scope waits for it.
    struct Awake<'a>(&'a AtomicBool);
    impl Drop for Awake<'_> {
        fn drop(&mut self) {
            AWAKE.with(|a| a.set(false));
            self.0.store(true, Ordering::Release);
        }
    }
    let done = AtomicBool::new(false);
    // on a thread of the pool (rayon::scope moves there from outside it), so that the products
    // `work` splits are taken from its queue by the spinning thread
    rayon::scope(|scope| {
        scope.spawn(|_| {
            while !done.load(Ordering::Acquire) {
                if rayon::yield_now() != Some(rayon::Yield::Executed) {
                    std::hint::spin_loop();
                }
            }
        });
        AWAKE.with(|a| a.set(true));
        let _awake = Awake(&done);
        work()
    })
}

/// The threads of the current rayon pool (what burn-flex and the host path spread over): the
/// machine's cores, or cores ÷ jobs inside a job of a run.
fn rayon_threads() -> usize {
    rayon::current_num_threads()
}

/// The adapter wgpu will run on, probed once per process: an error naming the driver to install
/// when there is none, instead of a panic deep inside the backend at the first tensor operation.
#[cfg(feature = "wgpu")]
fn wgpu_adapter() -> Result<String> {
    static PROBE: std::sync::OnceLock<std::result::Result<String, String>> =
        std::sync::OnceLock::new();
    PROBE
        .get_or_init(|| {
            // Vulkan, Metal, DX12 first, OpenGL only when none of them has an adapter: an
            // instance with OpenGL makes EGL log errors on machines without a display even when
            // Vulkan is there. `WGPU_BACKEND` narrows the choice as it does for burn.
            let adapters_of = |backends: wgpu::Backends| {
                let mut desc = wgpu::InstanceDescriptor::new_without_display_handle_from_env();
                desc.backends &= backends;
                let instance = wgpu::Instance::new(desc);
                futures_lite::future::block_on(instance.enumerate_adapters(wgpu::Backends::all()))
            };
            let mut adapters = adapters_of(wgpu::Backends::PRIMARY);
            if adapters.is_empty() {
                adapters = adapters_of(wgpu::Backends::SECONDARY);
            }
            // burn prefers a real GPU and falls back to any adapter, as this does
            let best = adapters
                .iter()
                .map(wgpu::Adapter::get_info)
                .min_by_key(|i| i.device_type == wgpu::DeviceType::Cpu);
            match best {
                Some(i) => Ok(format!("{}, {:?}, {:?}", i.name, i.device_type, i.backend)),
                None => Err(
                    "no graphics adapter found (Vulkan, Metal, DX12 or OpenGL). Install \
                     your GPU's driver; on a machine without a GPU, a software Vulkan driver \
                     runs wgpu on the CPU (Debian/Ubuntu: `apt-get install mesa-vulkan-drivers`)"
                        .to_string(),
                ),
            }
        })
        .clone()
        .map_err(|reason| ModelError::invalid("backend wgpu", reason))
}

/// The devices tests run on: every compiled-in backend, or those named in the comma-separated
/// environment variable `ADVROB_TEST_BACKENDS`.
///
/// # Panics
///
/// On a name in `ADVROB_TEST_BACKENDS` that is not compiled in: a test run must not silently test
/// less than it was asked to.
pub fn test_devices() -> Vec<Device> {
    test_backend_names()
        .iter()
        .map(|n| match device(n) {
            Ok(d) => d,
            Err(e) => panic!("ADVROB_TEST_BACKENDS: {e}"),
        })
        .collect()
}

/// Runs `test` once on each of [`test_devices`] (the pattern of candle's `test_device!`: one test
/// body, every compiled-in backend). A failure names the backend it happened on.
///
/// # Panics
///
/// When `test` panics on any backend, with the backend's name and the original message.
pub fn on_test_backends(mut test: impl FnMut(&Device)) {
    for (name, device) in test_backend_names().iter().zip(test_devices()) {
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| test(&device)));
        if let Err(payload) = r {
            let msg = payload
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            panic!("on backend {name}: {msg}");
        }
    }
}

/// The names of [`test_devices`]: every compiled-in backend, or those of `ADVROB_TEST_BACKENDS`.
pub fn test_backend_names() -> Vec<String> {
    match std::env::var("ADVROB_TEST_BACKENDS") {
        Ok(v) if !v.trim().is_empty() => v.split(',').map(|s| s.trim().to_string()).collect(),
        _ => compiled_backends().iter().map(|s| s.to_string()).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(threads: usize) -> rayon::ThreadPool {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .expect("pool")
    }

    #[test]
    fn work_kept_awake_computes_what_it_computes_alone_on_every_pool() {
        use rayon::prelude::*;
        let xs: Vec<u64> = (0..100_000).collect();
        let alone: u64 = xs.iter().map(|x| x * x % 7).sum();
        for threads in [1, 2, 3] {
            let (sum, nested, inside) = pool(threads).install(|| {
                keep_awake(|| {
                    let sum: u64 = xs.par_iter().map(|x| x * x % 7).sum();
                    // nested: runs directly, its parallel work still split
                    let nested: u64 = keep_awake(|| xs.par_iter().map(|x| x * x % 7).sum());
                    (sum, nested, rayon::current_thread_index().is_some())
                })
            });
            assert_eq!((sum, nested), (alone, alone), "{threads} threads");
            assert!(inside, "the work runs on a thread of the pool");
        }
        // called from outside any pool, it computes on the global one
        assert_eq!(
            keep_awake(|| xs.par_iter().map(|x| x * x % 7).sum::<u64>()),
            alone
        );
    }

    #[test]
    fn a_panic_in_work_kept_awake_reaches_the_caller_and_stops_the_spinning() {
        let pool = pool(2);
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            pool.install(|| keep_awake(|| panic!("boom")))
        }));
        let message = caught.expect_err("the panic is carried on");
        assert_eq!(message.downcast_ref::<&str>(), Some(&"boom"));
        // the pool is free again: its threads do not spin on for the panicked work
        assert_eq!(pool.install(|| keep_awake(|| 7)), 7);
    }

    #[test]
    fn an_openblas_build_keys_its_ndarray_work_apart() {
        let expected = if cfg!(feature = "blas") {
            "ndarray+openblas"
        } else {
            "ndarray"
        };
        assert_eq!(numerics("ndarray"), expected);
        assert_eq!(numerics("flex"), "flex");
        assert_eq!(numerics("wgpu"), "wgpu");
    }

    #[test]
    fn unknown_backend_lists_the_available_ones() {
        let err = device("cuda-9000").expect_err("unknown");
        let msg = err.to_string();
        assert!(
            msg.contains("cuda-9000") && msg.contains("available: ndarray"),
            "{msg}"
        );
    }

    /// The values read where they lie are the tensor's; every tensor they cannot be read from
    /// in place (another backend, autodiff, a transposed view) still reads back by copy.
    #[test]
    fn values_read_in_place_are_the_tensors() {
        on_test_backends(|d| {
            let v: Vec<f32> = (0..24).map(|i| i as f32 * 0.5 - 3.0).collect();
            let t = Tensor::<3>::from_data(burn::tensor::TensorData::new(v.clone(), [2, 3, 4]), d);
            let shared = t.clone();
            let in_place = with_host_f32(&t, <[f32]>::to_vec);
            assert_eq!(
                in_place.is_some(),
                is_ndarray(d),
                "read in place only on burn-ndarray"
            );
            if let Some(w) = in_place {
                assert_eq!(w, v);
            }
            assert_eq!(read_f32(shared).expect("f32"), v);
            assert!(
                with_host_f32(&t.clone().autodiff(), |_| ()).is_none(),
                "autodiff"
            );
            let transposed = t.swap_dims(1, 2);
            let want: Vec<f32> = transposed
                .clone()
                .into_data()
                .try_into_vec_as::<f32>()
                .expect("f32");
            assert!(
                with_host_f32(&transposed, |_| ()).is_none(),
                "not contiguous"
            );
            assert_eq!(read_f32(transposed).expect("f32"), want);
        });
    }
}
