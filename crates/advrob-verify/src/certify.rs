//! Incomplete bounds on a batch: every logit's interval over a box, every margin's lower bound
//! over an L∞ ball.

use advrob_model::backend::host_f32;
use burn::tensor::{Tensor, TensorData};

use crate::bounds::{self, InputBox, Interval, Method};
use crate::error::{Result, VerifyError};
use crate::network::Network;
use crate::optimise::{Problem, solve};

/// Lower and upper bounds of each logit over each box, `[B, classes]` row-major each.
#[derive(Debug, Clone, PartialEq)]
pub struct LogitBounds {
    /// Lower bounds.
    pub lower: Vec<f32>,
    /// Upper bounds.
    pub upper: Vec<f32>,
}

fn check_box(net: &Network, lo: &[f32], hi: &[f32], rows: usize) -> Result<()> {
    if lo.len() != rows * net.inputs() || hi.len() != lo.len() {
        return Err(VerifyError::invalid(
            "box",
            format!(
                "{} lower and {} upper values for {rows} rows of {} pixels",
                lo.len(),
                hi.len(),
                net.inputs()
            ),
        ));
    }
    if let Some(i) = (0..lo.len()).find(|&i| lo[i].is_nan() || hi[i].is_nan() || lo[i] > hi[i]) {
        return Err(VerifyError::invalid(
            "box",
            format!("value {i}: lower {} above upper {}", lo[i], hi[i]),
        ));
    }
    Ok(())
}

/// Bounds of every output of `net`'s last layer over the boxes `[lo, hi]` (pixel space, `[B, n₀]`
/// row-major, before the model's input map): every such output at every point of a box lies
/// within its row's bounds (up to f32 rounding). A deployment's logit scale and log-softmax come
/// after the last layer and are not applied (neither changes a margin's sign).
///
/// # Errors
///
/// [`VerifyError::Invalid`] for boxes of the wrong size or with a lower end above the upper.
pub fn logit_bounds(
    net: &Network,
    lo: Vec<f32>,
    hi: Vec<f32>,
    rows: usize,
    method: Method,
) -> Result<LogitBounds> {
    check_box(net, &lo, &hi, rows)?;
    let input = InputBox::from_host(net, lo, hi, rows);
    let classes = net.classes();
    let (lower, upper) = if method == Method::Ibp {
        let last = bounds::ibp(&net.layers, &input.mapped)
            .pop()
            .expect("a network has at least one layer (Network::new)");
        (last.lower, last.upper)
    } else {
        let eye = Tensor::<2>::eye(classes, net.device());
        let spec = Tensor::cat(vec![eye.clone(), eye.neg()], 0)
            .unsqueeze_dim::<3>(0)
            .expand([rows, 2 * classes, classes]);
        let both = spec_lower(net, &input, spec, method, false);
        (
            both.clone().slice([0..rows, 0..classes]),
            both.slice([0..rows, classes..2 * classes]).neg(),
        )
    };
    Ok(LogitBounds {
        lower: host_f32(lower)?,
        upper: host_f32(upper)?,
    })
}

/// The lower bound of each row of `spec` (`[B, S, classes]`) over `input` by `method`, `[B, S]`;
/// with `with_ibp`, IBP's where it is higher (both are sound).
pub(crate) fn spec_lower(
    net: &Network,
    input: &InputBox,
    spec: Tensor<3>,
    method: Method,
    with_ibp: bool,
) -> Tensor<2> {
    if method == Method::Ibp {
        let last = bounds::ibp(&net.layers, &input.mapped)
            .pop()
            .expect("a network has at least one layer (Network::new)");
        return interval_spec_lower(&last, spec);
    }
    let ibp_lower = {
        let last = bounds::ibp(&net.layers, &input.mapped)
            .pop()
            .expect("a network has at least one layer (Network::new)");
        interval_spec_lower(&last, spec.clone())
    };
    let hidden = bounds::hidden_bounds(net, input, method);
    let iterations = match method {
        Method::AlphaCrown { iterations, .. } => iterations,
        _ => 0,
    };
    let lr = match method {
        Method::AlphaCrown { lr, .. } => lr,
        _ => 0.0,
    };
    let p = Problem {
        net,
        input,
        hidden: &hidden,
        spec,
        signs: None,
        alpha: None,
        beta: None,
    };
    let lower = solve(&p, iterations, lr).lower;
    if with_ibp {
        lower.max_pair(ibp_lower)
    } else {
        lower
    }
}

/// `min C z` over the box of `z`'s bounds (`[B, S]`).
fn interval_spec_lower(z: &Interval, spec: Tensor<3>) -> Tensor<2> {
    let [b, s, _] = spec.dims();
    let lo = z.lower.clone().unsqueeze_dim::<3>(1);
    let hi = z.upper.clone().unsqueeze_dim::<3>(1);
    (spec.clone().clamp_min(0.0) * lo + spec.clamp_max(0.0) * hi)
        .sum_dim(2)
        .reshape([b, s])
}

/// The margin specs `e_y − e_j` for every `j ≠ y`, `[B, classes − 1, classes]`, and the class
/// each row is against.
pub(crate) fn margin_spec(
    labels: &[usize],
    classes: usize,
    device: &burn::tensor::Device,
) -> (Tensor<3>, Vec<Vec<usize>>) {
    let b = labels.len();
    let s = classes - 1;
    let mut c = vec![0f32; b * s * classes];
    let mut against = Vec::with_capacity(b);
    for (i, &y) in labels.iter().enumerate() {
        let others: Vec<usize> = (0..classes).filter(|&j| j != y).collect();
        for (r, &j) in others.iter().enumerate() {
            let row = (i * s + r) * classes;
            c[row + y] = 1.0;
            c[row + j] = -1.0;
        }
        against.push(others);
    }
    (
        Tensor::from_data(TensorData::new(c, [b, s, classes]), device),
        against,
    )
}

/// Lower bounds of every margin `z_y − z_j` of `net` over the L∞ ball of radius `eps` around each
/// image, cut to [0, 1]: `[B, classes]` row-major, `+∞` in each image's own class. An image whose
/// bounds are all positive is certified robust at `eps`.
///
/// # Shapes
///
/// - images: `[B, n₀]` row-major on the host, pixels in [0, 1]; labels: `[B]`
///
/// # Errors
///
/// [`VerifyError::Invalid`] for images of the wrong size, a label out of range, or an `eps` that
/// is negative or not finite.
pub fn margin_bounds(
    net: &Network,
    images: &[f32],
    labels: &[usize],
    eps: f32,
    method: Method,
) -> Result<Vec<f32>> {
    let rows = labels.len();
    check_images(net, images, labels, eps)?;
    let classes = net.classes();
    let input = InputBox::linf(net, images, rows, eps);
    let (spec, against) = margin_spec(labels, classes, net.device());
    let lower = host_f32(spec_lower(net, &input, spec, method, true))?;
    let mut out = vec![f32::INFINITY; rows * classes];
    for (i, js) in against.iter().enumerate() {
        for (r, &j) in js.iter().enumerate() {
            out[i * classes + j] = lower[i * (classes - 1) + r];
        }
    }
    Ok(out)
}

pub(crate) fn check_images(
    net: &Network,
    images: &[f32],
    labels: &[usize],
    eps: f32,
) -> Result<()> {
    if !(eps.is_finite() && eps >= 0.0) {
        return Err(VerifyError::invalid(
            "eps",
            format!("{eps}: must be finite and ≥ 0"),
        ));
    }
    if images.len() != labels.len() * net.inputs() {
        return Err(VerifyError::invalid(
            "images",
            format!(
                "{} values for {} labels of {} pixels",
                images.len(),
                labels.len(),
                net.inputs()
            ),
        ));
    }
    if let Some(&y) = labels.iter().find(|&&y| y >= net.classes()) {
        return Err(VerifyError::invalid(
            "labels",
            format!("label {y} of a {}-class model", net.classes()),
        ));
    }
    Ok(())
}
