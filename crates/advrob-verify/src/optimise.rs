//! α- and β-CROWN's optimisation: the lower slopes (`α ∈ [0, 1]`) and the split multipliers
//! (`β ≥ 0`) raised by projected Adam on the sum of the lower bounds, keeping for every bound the
//! parameters of its best step. Every step's bound is sound (any α in [0, 1] and β ≥ 0 gives one),
//! so stopping early loses tightness, never soundness.

use burn::tensor::Tensor;

use crate::bounds::{self, InputBox, Interval, Linear, Relax};
use crate::network::Network;

/// One bounding problem: specs on the last layer over a batch of boxes.
pub(crate) struct Problem<'a> {
    pub net: &'a Network,
    pub input: &'a InputBox,
    /// Each hidden layer's pre-activation bounds, `[B, n]`, splits already applied.
    pub hidden: &'a [Interval],
    /// `[B, S, classes]`.
    pub spec: Tensor<3>,
    /// Per hidden layer, the split signs `[B, n]` (β-CROWN); `None`: no splits.
    pub signs: Option<Vec<Tensor<2>>>,
    /// Where the slopes start, per hidden layer `[B, S, n]`; `None`: CROWN's adaptive slopes.
    pub alpha: Option<Vec<Tensor<3>>>,
    /// Where the multipliers start, per hidden layer `[B, S, n]`; `None`: zero.
    pub beta: Option<Vec<Tensor<3>>>,
}

/// The bound a problem ends with, and the parameters that gave it.
pub(crate) struct Solved {
    /// `[B, S]`.
    pub lower: Tensor<2>,
    /// The linear bound of the best parameters (for the minimiser and the branching scores).
    pub linear: Linear,
    /// Per hidden layer `[B, S, n]`.
    pub alpha: Vec<Tensor<3>>,
    /// Per hidden layer `[B, S, n]` (zero without splits).
    pub beta: Vec<Tensor<3>>,
}

struct Adam {
    m: Vec<Tensor<3>>,
    v: Vec<Tensor<3>>,
    t: i32,
}

impl Adam {
    fn new(params: &[Tensor<3>]) -> Self {
        Adam {
            m: params.iter().map(|p| p.zeros_like()).collect(),
            v: params.iter().map(|p| p.zeros_like()).collect(),
            t: 0,
        }
    }

    /// One ascent step of every parameter along its gradient.
    fn ascend(&mut self, params: &mut [Tensor<3>], grads: Vec<Tensor<3>>, lr: f32) {
        const B1: f32 = 0.9;
        const B2: f32 = 0.999;
        self.t += 1;
        let c1 = 1.0 - B1.powi(self.t);
        let c2 = 1.0 - B2.powi(self.t);
        for (i, g) in grads.into_iter().enumerate() {
            self.m[i] = self.m[i].clone() * B1 + g.clone() * (1.0 - B1);
            self.v[i] = self.v[i].clone() * B2 + g.powi_scalar(2) * (1.0 - B2);
            let step = (self.m[i].clone() / c1) / ((self.v[i].clone() / c2).sqrt() + 1e-8);
            params[i] = params[i].clone() + step * lr;
        }
    }
}

/// The starting slopes: CROWN's adaptive ones, per spec row.
fn start_alpha(hidden: &[Interval], s: usize) -> Vec<Tensor<3>> {
    hidden
        .iter()
        .map(|h| {
            let [b, n] = h.lower.dims();
            bounds::default_alpha(h)
                .unsqueeze_dim::<3>(1)
                .expand([b, s, n])
        })
        .collect()
}

fn relax(alpha: &[Tensor<3>], beta: &[Tensor<3>], signs: Option<&[Tensor<2>]>) -> Relax {
    Relax {
        alpha: alpha.iter().cloned().map(Some).collect(),
        beta: match signs {
            Some(signs) => beta
                .iter()
                .cloned()
                .zip(signs.iter().cloned())
                .map(Some)
                .collect(),
            None => Vec::new(),
        },
    }
}

/// Runs `iterations` projected Adam steps at `lr` (none: plain CROWN with the starting
/// parameters) and returns the best bound of every spec row.
pub(crate) fn solve(p: &Problem<'_>, iterations: usize, lr: f32) -> Solved {
    let [b, s, _] = p.spec.dims();
    let layers = &p.net.layers;
    let top = layers.len() - 1;
    let mut alpha = p.alpha.clone().unwrap_or_else(|| start_alpha(p.hidden, s));
    let mut beta: Vec<Tensor<3>> = p.beta.clone().unwrap_or_else(|| {
        p.hidden
            .iter()
            .map(|h| {
                let [b, n] = h.lower.dims();
                Tensor::<3>::zeros([b, s, n], &h.lower.device())
            })
            .collect()
    });
    let signs = p.signs.as_deref();
    let with_beta = signs.is_some();
    let evaluate = |alpha: &[Tensor<3>], beta: &[Tensor<3>]| {
        let lin = bounds::backward(
            layers,
            p.spec.clone(),
            top,
            p.hidden,
            &relax(alpha, beta, signs),
            true,
        );
        let lower = bounds::concretize(&lin, &p.input.mapped);
        (lin, lower)
    };
    if iterations > 0 && !p.hidden.is_empty() {
        let (_, mut best) = evaluate(&alpha, &beta);
        let mut best_alpha = alpha.clone();
        let mut best_beta = beta.clone();
        let ad_layers = p.net.autodiff_layers();
        let ad_hidden: Vec<Interval> = p
            .hidden
            .iter()
            .map(|h| Interval {
                lower: h.lower.clone().autodiff(),
                upper: h.upper.clone().autodiff(),
            })
            .collect();
        let ad_signs: Option<Vec<Tensor<2>>> =
            signs.map(|v| v.iter().map(|t| t.clone().autodiff()).collect());
        let ad_input = Interval {
            lower: p.input.mapped.lower.clone().autodiff(),
            upper: p.input.mapped.upper.clone().autodiff(),
        };
        let mut params: Vec<Tensor<3>> = alpha.iter().chain(&beta).cloned().collect();
        let mut adam = Adam::new(&params);
        let h = alpha.len();
        for _ in 0..iterations {
            let tracked: Vec<Tensor<3>> = params
                .iter()
                .map(|t| t.clone().autodiff().require_grad())
                .collect();
            let (a_t, b_t) = tracked.split_at(h);
            let lin = bounds::backward(
                &ad_layers,
                p.spec.clone().autodiff(),
                top,
                &ad_hidden,
                &relax(a_t, b_t, ad_signs.as_deref()),
                false,
            );
            let lower = bounds::concretize(&lin, &ad_input);
            let grads = lower.clone().sum().backward();
            let lower = lower.detach().without_autodiff();
            // keep, per spec row, the parameters of its best bound so far
            let better = lower.clone().greater(best.clone());
            best = best.max_pair(lower);
            let keep = |best: &mut Vec<Tensor<3>>, now: &[Tensor<3>]| {
                for (bt, nt) in best.iter_mut().zip(now) {
                    let n = bt.dims()[2];
                    let mask = better.clone().unsqueeze_dim::<3>(2).expand([b, s, n]);
                    *bt = bt
                        .clone()
                        .mask_where(mask, nt.clone().detach().without_autodiff());
                }
            };
            keep(&mut best_alpha, a_t);
            if with_beta {
                keep(&mut best_beta, b_t);
            }
            let g: Vec<Tensor<3>> = tracked
                .iter()
                .map(|t| {
                    t.grad(&grads)
                        .map(|g| g.without_autodiff())
                        .unwrap_or_else(|| t.clone().detach().without_autodiff().zeros_like())
                })
                .collect();
            let mut plain: Vec<Tensor<3>> = tracked
                .into_iter()
                .map(|t| t.detach().without_autodiff())
                .collect();
            adam.ascend(&mut plain, g, lr);
            for (i, t) in plain.iter_mut().enumerate() {
                *t = if i < h {
                    t.clone().clamp(0.0, 1.0)
                } else {
                    t.clone().clamp_min(0.0)
                };
            }
            params = plain;
        }
        alpha = best_alpha;
        beta = best_beta;
    }
    let (linear, lower) = evaluate(&alpha, &beta);
    Solved {
        lower,
        linear,
        alpha,
        beta,
    }
}
