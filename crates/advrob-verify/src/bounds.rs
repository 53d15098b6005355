//! Interval bound propagation and CROWN's backward linear relaxation, batched on burn tensors.
//!
//! Notation: `z_k = a_{k−1} W_k + b_k` is layer `k`'s pre-activation (`a_{−1}` the mapped input,
//! `a_k = ReLU(z_k)`), a *spec* is a matrix `C` whose rows are linear functions of the last
//! layer's outputs (a margin `z_y − z_j` is the row `e_y − e_j`).
//!
//! **IBP** pushes a box through each layer: centre `c W + b`, radius `r |W|`, ReLU clamps.
//!
//! **CROWN** (Zhang et al. 2018) bounds `C z_L` from below by a linear function of the input,
//! walking back through the layers: through an affine layer `A ← A W_kᵀ` (the bias joins the
//! constant); through a ReLU with pre-activation bounds `l < 0 < u` it picks, per coefficient's
//! sign, the line that keeps the bound valid: a positive coefficient takes the lower line
//! `a ≥ α z` (`α ∈ [0, 1]`; CROWN's default `α = 1` when `u > −l`, else 0), a negative one the
//! upper chord `a ≤ u (z − l)/(u − l)`. A stable ReLU (`l ≥ 0` or `u ≤ 0`) is exact. The linear
//! function is then minimised over the input box in closed form (each input at its lower end
//! where its coefficient is positive, at its upper end where negative), which also gives the
//! box's corner where the bound is attained: a candidate counterexample. Every intermediate
//! layer's bounds come from the same walk with the identity as spec, intersected with IBP's; on a
//! network with a layer wider than [`crate::network::CROWN_INTERMEDIATE_MAX_WIDTH`] (a lowered CNN)
//! they are IBP's alone ([`Intermediate::Ibp`]: CROWN-IBP, Zhang et al. 2020), since each hidden
//! neuron would cost a backward pass.
//!
//! **α-CROWN** (Xu et al. 2021) treats the lower slopes as parameters and raises the bound by
//! gradient ascent; **β-CROWN** (Wang et al. 2021) adds, for a branch that fixes a ReLU's phase
//! (`s z ≥ 0`, `s = ±1`), the term `−β s z` (`β ≥ 0`) to the objective, which can only lower it
//! on the branch, so any `β ≥ 0` gives a sound bound and the best one the branch's LP optimum.

use burn::tensor::{Tensor, TensorData};

use crate::network::{Affine, Intermediate, Network};

/// How bounds are computed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Method {
    /// Interval bound propagation: cheapest, loosest.
    Ibp,
    /// CROWN with its adaptive lower slopes.
    Crown,
    /// CROWN with the lower slopes optimised by `iterations` steps of Adam at learning rate `lr`.
    AlphaCrown {
        /// Gradient steps.
        iterations: usize,
        /// Adam's step size.
        lr: f32,
    },
}

impl Method {
    /// α-CROWN with 20 steps at learning rate 0.5.
    pub fn alpha_crown() -> Self {
        Method::AlphaCrown {
            iterations: 20,
            lr: 0.5,
        }
    }

    /// The method's name, as records and tables write it.
    pub fn name(&self) -> &'static str {
        match self {
            Method::Ibp => "ibp",
            Method::Crown => "crown",
            Method::AlphaCrown { .. } => "alpha-crown",
        }
    }
}

/// Lower and upper bounds of a layer's values, `[B, n]` each.
#[derive(Debug, Clone)]
pub(crate) struct Interval {
    pub lower: Tensor<2>,
    pub upper: Tensor<2>,
}

impl Interval {
    fn intersect(self, other: Interval) -> Interval {
        Interval {
            lower: self.lower.max_pair(other.lower),
            upper: self.upper.min_pair(other.upper),
        }
    }
}

/// The input box in pixel space and after the model's input map, `[B, n₀]` each.
#[derive(Debug, Clone)]
pub(crate) struct InputBox {
    /// Pixel space: the ball intersected with [0, 1].
    pub pixels: Interval,
    /// What the first layer sees.
    pub mapped: Interval,
}

impl InputBox {
    /// The L∞ ball of radius `eps` around each image (`[B, n₀]` row-major on the host), cut to
    /// the pixel box [0, 1].
    pub fn linf(net: &Network, images: &[f32], rows: usize, eps: f32) -> InputBox {
        let lo: Vec<f32> = images.iter().map(|&x| (x - eps).max(0.0)).collect();
        let hi: Vec<f32> = images.iter().map(|&x| (x + eps).min(1.0)).collect();
        Self::from_host(net, lo, hi, rows)
    }

    /// The box `[lo, hi]` (pixel space, `[B, n₀]` row-major on the host).
    pub fn from_host(net: &Network, lo: Vec<f32>, hi: Vec<f32>, rows: usize) -> InputBox {
        let n = net.inputs();
        let d = net.device();
        let map = |v: &[f32]| v.iter().map(|&x| net.map_pixel(x)).collect::<Vec<f32>>();
        let t = |v: Vec<f32>| Tensor::<2>::from_data(TensorData::new(v, [rows, n]), d);
        InputBox {
            mapped: Interval {
                lower: t(map(&lo)),
                upper: t(map(&hi)),
            },
            pixels: Interval {
                lower: t(lo),
                upper: t(hi),
            },
        }
    }

    /// The rows `rows` of the box (repeated where a row is asked for twice).
    pub fn select(&self, rows: &[usize]) -> InputBox {
        let d = self.pixels.lower.device();
        let idx = Tensor::<1, burn::tensor::Int>::from_data(
            TensorData::new(
                rows.iter().map(|&r| r as i64).collect::<Vec<_>>(),
                [rows.len()],
            ),
            &d,
        );
        let s = |t: &Tensor<2>| t.clone().select(0, idx.clone());
        InputBox {
            pixels: Interval {
                lower: s(&self.pixels.lower),
                upper: s(&self.pixels.upper),
            },
            mapped: Interval {
                lower: s(&self.mapped.lower),
                upper: s(&self.mapped.upper),
            },
        }
    }
}

/// Interval bound propagation: the pre-activation bounds of every layer, the last one's (the
/// logits') included.
pub(crate) fn ibp(layers: &[Affine], input: &Interval) -> Vec<Interval> {
    let mut out: Vec<Interval> = Vec::with_capacity(layers.len());
    let (mut lo, mut hi) = (input.lower.clone(), input.upper.clone());
    for (k, layer) in layers.iter().enumerate() {
        if k > 0 {
            lo = lo.clamp_min(0.0);
            hi = hi.clamp_min(0.0);
        }
        let centre = (lo.clone() + hi.clone()) * 0.5;
        let radius = (hi - lo) * 0.5;
        let o = layer.outputs();
        let c = centre.matmul(layer.weight.clone()) + layer.bias.clone().reshape([1, o]);
        let r = radius.matmul(layer.weight_abs.clone());
        let bound = Interval {
            lower: c.clone() - r.clone(),
            upper: c + r,
        };
        lo = bound.lower.clone();
        hi = bound.upper.clone();
        out.push(bound);
    }
    out
}

/// What CROWN may change about the ReLUs of each hidden layer: the lower slopes of its unstable
/// neurons (`[B, S or 1, n]`; `None`: CROWN's adaptive choice) and β-CROWN's multipliers with the
/// split signs (`[B, S or 1, n]`, zero where the neuron is not split; signs `[B, n]`, +1 for a
/// neuron fixed active, −1 fixed inactive, 0 free).
#[derive(Debug, Clone, Default)]
pub(crate) struct Relax {
    pub alpha: Vec<Option<Tensor<3>>>,
    pub beta: Vec<Option<(Tensor<3>, Tensor<2>)>>,
}

/// A linear lower bound `A x + c` of a spec over the mapped input, `A` `[B, S, n₀]`, `c` `[B, S]`;
/// with, per hidden layer, each unstable neuron's loss to the upper chord's intercept (`[B, n]`:
/// how much the bound would gain were the neuron's phase known), for branching.
pub(crate) struct Linear {
    pub a: Tensor<3>,
    pub c: Tensor<2>,
    pub intercept_loss: Vec<Tensor<2>>,
}

/// Adaptive CROWN slope: 1 where `u > −l`, else 0 (`[B, n]`).
pub(crate) fn default_alpha(b: &Interval) -> Tensor<2> {
    b.upper.clone().greater(b.lower.clone().neg()).float()
}

/// CROWN's backward walk from a spec on layer `top`'s pre-activation (`spec` `[B, S, n_top]`),
/// through layers `top, …, 0`, with `hidden[k]` the pre-activation bounds of hidden layer `k`.
pub(crate) fn backward(
    layers: &[Affine],
    spec: Tensor<3>,
    top: usize,
    hidden: &[Interval],
    relax: &Relax,
    want_scores: bool,
) -> Linear {
    let [b, s, _] = spec.dims();
    let device = spec.device();
    let mut a = spec;
    let mut c = Tensor::<2>::zeros([b, s], &device);
    let mut scores = vec![None; top];
    for k in (0..=top).rev() {
        let layer = &layers[k];
        let (n_out, n_in) = (layer.outputs(), layer.inputs());
        c = c
            + (a.clone() * layer.bias.clone().reshape([1, 1, n_out]))
                .sum_dim(2)
                .reshape([b, s]);
        a = a
            .reshape([b * s, n_out])
            .matmul(layer.weight_t.clone())
            .reshape([b, s, n_in]);
        if k == 0 {
            break;
        }
        // the ReLU after layer k − 1
        let h = &hidden[k - 1];
        let active = h.lower.clone().greater_equal_elem(0.0).float();
        let unstable =
            h.lower.clone().lower_elem(0.0).float() * h.upper.clone().greater_elem(0.0).float();
        let width = (h.upper.clone() - h.lower.clone()).clamp_min(1e-12);
        let chord = h.upper.clone() / width * unstable.clone();
        let upper_slope = active.clone() + chord.clone();
        let upper_icpt = (h.lower.clone().neg() * chord).unsqueeze_dim::<3>(1);
        let lower_slope: Tensor<3> = match relax.alpha.get(k - 1).and_then(Option::clone) {
            Some(al) => {
                active.clone().unsqueeze_dim::<3>(1) + al * unstable.clone().unsqueeze_dim::<3>(1)
            }
            None => (active + default_alpha(h) * unstable).unsqueeze_dim::<3>(1),
        };
        let pos = a.clone().clamp_min(0.0);
        let neg = a.clamp_max(0.0);
        let loss = neg.clone() * upper_icpt;
        c = c + loss.clone().sum_dim(2).reshape([b, s]);
        if want_scores {
            scores[k - 1] = Some(loss.sum_dim(1).reshape([b, n_in]).neg());
        }
        a = pos * lower_slope + neg * upper_slope.unsqueeze_dim::<3>(1);
        if let Some(Some((beta, sign))) = relax.beta.get(k - 1) {
            a = a - beta.clone() * sign.clone().unsqueeze_dim::<3>(1);
        }
    }
    Linear {
        a,
        c,
        intercept_loss: scores.into_iter().flatten().collect(),
    }
}

/// The minimum of `A x + c` over the box `[lower, upper]`, `[B, S]`.
pub(crate) fn concretize(lin: &Linear, input: &Interval) -> Tensor<2> {
    let [b, s, _] = lin.a.dims();
    let lo = input.lower.clone().unsqueeze_dim::<3>(1);
    let hi = input.upper.clone().unsqueeze_dim::<3>(1);
    let pos = lin.a.clone().clamp_min(0.0);
    let neg = lin.a.clone().clamp_max(0.0);
    lin.c.clone() + (pos * lo + neg * hi).sum_dim(2).reshape([b, s])
}

/// The corner of the pixel box where `A x + c` is smallest, for spec row `row` of each batch row
/// (`[B, n₀]`): each pixel at its lower end where its coefficient is positive.
pub(crate) fn minimiser(lin: &Linear, pixels: &Interval, row: usize) -> Tensor<2> {
    let [b, _, n] = lin.a.dims();
    let a = lin
        .a
        .clone()
        .slice([0..b, row..row + 1, 0..n])
        .reshape([b, n]);
    let at_lower = a.greater_elem(0.0);
    pixels
        .upper
        .clone()
        .mask_where(at_lower, pixels.lower.clone())
}

/// The pre-activation bounds of every hidden layer over `input`: the first exact (an affine map
/// of a box), each later one CROWN's with the identity as spec, intersected with IBP's; IBP's
/// alone for [`Method::Ibp`] or a network whose intermediate bounds are [`Intermediate::Ibp`].
pub(crate) fn hidden_bounds(net: &Network, input: &InputBox, method: Method) -> Vec<Interval> {
    let layers = &net.layers;
    let ibp_all = ibp(layers, &input.mapped);
    let hidden_count = layers.len() - 1;
    if method == Method::Ibp || net.intermediate() == Intermediate::Ibp {
        return ibp_all.into_iter().take(hidden_count).collect();
    }
    let mut hidden: Vec<Interval> = Vec::with_capacity(hidden_count);
    for (k, ibp_k) in ibp_all.into_iter().take(hidden_count).enumerate() {
        if k == 0 {
            hidden.push(ibp_k);
            continue;
        }
        let n = layers[k].outputs();
        let b = input.mapped.lower.dims()[0];
        let device = input.mapped.lower.device();
        let eye = Tensor::<2>::eye(n, &device);
        let spec = Tensor::cat(vec![eye.clone(), eye.neg()], 0)
            .unsqueeze_dim::<3>(0)
            .expand([b, 2 * n, n]);
        let lin = backward(layers, spec, k, &hidden, &Relax::default(), false);
        let both = concretize(&lin, &input.mapped);
        let lower = both.clone().slice([0..b, 0..n]);
        let upper = both.slice([0..b, n..2 * n]).neg();
        hidden.push(Interval { lower, upper }.intersect(ibp_k));
    }
    hidden
}
