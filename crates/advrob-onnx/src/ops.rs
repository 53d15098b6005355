//! Each supported operator as burn tensor operations (floats, on the device, differentiable) or
//! host arithmetic (integers: shapes, axes, pads), following the ONNX operator specification.

use burn::tensor::activation::{log_softmax, sigmoid, softmax, softplus};
use burn::tensor::module::{avg_pool2d, conv2d, max_pool2d};
use burn::tensor::ops::{AvgPoolOptions, ConvOptions, MaxPoolOptions, PadMode};
use burn::tensor::{Device, Int, Tensor, TensorData};

use crate::error::{OnnxError, Result};
use crate::graph::{Attr, HostData, Node};
use crate::value::{Ints, R, Value, broadcast_dims, padded};

/// What an operator sees: its node, its inputs (`None` for an omitted optional one), the opset
/// and the device.
pub(crate) struct Ctx<'a> {
    pub(crate) node: &'a Node,
    pub(crate) inputs: Vec<Option<Value>>,
    pub(crate) opset: i64,
    pub(crate) device: &'a Device,
}

impl Ctx<'_> {
    fn fail(&self, reason: impl Into<String>) -> OnnxError {
        OnnxError::Node {
            node: self.node.name.clone(),
            op: self.node.op.clone(),
            reason: reason.into(),
        }
    }

    fn input(&self, i: usize) -> Result<&Value> {
        self.inputs
            .get(i)
            .and_then(Option::as_ref)
            .ok_or_else(|| self.fail(format!("input {i} is missing")))
    }

    fn has(&self, i: usize) -> bool {
        self.inputs.get(i).is_some_and(Option::is_some)
    }

    /// Input `i` as a float tensor and its logical rank (integers are converted).
    fn float(&self, i: usize) -> Result<(Tensor<R>, usize)> {
        match self.input(i)? {
            Value::Float { t, rank, .. } => Ok((t.clone(), *rank)),
            Value::Ints(v) => {
                let data: Vec<f32> = v.data.iter().map(|&x| x as f32).collect();
                Ok((
                    Tensor::from_data(TensorData::new(data, padded(&v.dims)), self.device),
                    v.dims.len(),
                ))
            }
            Value::Bool { t, rank } => Ok((t.clone().float(), *rank)),
        }
    }

    /// Input `i` as a float tensor of logical rank 4 (`[N, C, H, W]`).
    fn float4(&self, i: usize) -> Result<Tensor<4>> {
        let (t, rank) = self.float(i)?;
        if rank != 4 {
            return Err(self.fail(format!(
                "input {i} has rank {rank}; only 2-D images ([N, C, H, W]) are supported"
            )));
        }
        let d = t.dims();
        Ok(t.reshape([d[2], d[3], d[4], d[5]]))
    }

    /// Input `i` as a host integer tensor: it must be known without running the device (a
    /// constant, or computed from shapes).
    fn ints(&self, i: usize) -> Result<Ints> {
        match self.input(i)? {
            Value::Ints(v) => Ok(v.clone()),
            Value::Float {
                host: Some(h),
                rank,
                t,
            } => Ok(Ints {
                dims: t.dims()[R - rank..].to_vec(),
                data: h.iter().map(|&x| x as i64).collect(),
            }),
            _ => Err(self.fail(format!(
                "input {i} must be a constant integer tensor (shapes, axes, pads); here it is computed from the image"
            ))),
        }
    }

    /// Input `i` as one number known on the host (Clip's bounds, Pad's value).
    fn scalar(&self, i: usize) -> Result<f64> {
        match self.input(i)? {
            Value::Float { host: Some(h), .. } if h.len() == 1 => Ok(f64::from(h[0])),
            Value::Ints(v) if v.data.len() == 1 => Ok(v.data[0] as f64),
            _ => Err(self.fail(format!("input {i} must be a constant scalar"))),
        }
    }

    fn attr_int(&self, name: &str, default: i64) -> i64 {
        match self.node.attrs.get(name) {
            Some(Attr::Int(v)) => *v,
            _ => default,
        }
    }

    fn attr_float(&self, name: &str, default: f32) -> f32 {
        match self.node.attrs.get(name) {
            Some(Attr::Float(v)) => *v,
            Some(Attr::Int(v)) => *v as f32,
            _ => default,
        }
    }

    fn attr_ints(&self, name: &str) -> Option<Vec<i64>> {
        match self.node.attrs.get(name) {
            Some(Attr::Ints(v)) => Some(v.clone()),
            Some(Attr::Int(v)) => Some(vec![*v]),
            _ => None,
        }
    }

    fn attr_str(&self, name: &str, default: &str) -> String {
        match self.node.attrs.get(name) {
            Some(Attr::Str(v)) => v.clone(),
            _ => default.to_string(),
        }
    }

    /// A (possibly negative) axis of a rank-`rank` value, as a non-negative one.
    fn axis(&self, axis: i64, rank: usize) -> Result<usize> {
        let a = if axis < 0 { axis + rank as i64 } else { axis };
        if a < 0 || a >= rank as i64 {
            return Err(self.fail(format!("axis {axis} is out of range for rank {rank}")));
        }
        Ok(a as usize)
    }

    /// Axes from an attribute (older opsets) or an optional input (newer ones).
    fn axes(&self, input: usize) -> Result<Option<Vec<i64>>> {
        if let Some(a) = self.attr_ints("axes") {
            return Ok(Some(a));
        }
        if self.has(input) {
            return Ok(Some(self.ints(input)?.data));
        }
        Ok(None)
    }

    fn usize_list(&self, name: &str, v: &[i64]) -> Result<Vec<usize>> {
        v.iter()
            .map(|&x| {
                usize::try_from(x)
                    .map_err(|_| self.fail(format!("{name} {v:?} has a negative entry")))
            })
            .collect()
    }

    /// The spatial attributes of Conv and the pools: kernel, strides, (begin, end) pads and
    /// dilations, with `auto_pad` resolved for the input's height and width.
    fn window(&self, kernel: [usize; 2], hw: [usize; 2]) -> Result<Window> {
        let two = |name: &str, default: usize| -> Result<[usize; 2]> {
            match self.attr_ints(name) {
                None => Ok([default; 2]),
                Some(v) if v.len() == 2 => {
                    let u = self.usize_list(name, &v)?;
                    Ok([u[0], u[1]])
                }
                Some(v) => Err(self.fail(format!("{name} {v:?}: only 2-D windows are supported"))),
            }
        };
        let stride = two("strides", 1)?;
        let dilation = two("dilations", 1)?;
        let auto_pad = self.attr_str("auto_pad", "NOTSET");
        let pads = match auto_pad.as_str() {
            "NOTSET" => match self.attr_ints("pads") {
                None => [(0, 0); 2],
                Some(p) if p.len() == 4 => {
                    let u = self.usize_list("pads", &p)?;
                    [(u[0], u[2]), (u[1], u[3])]
                }
                Some(p) => {
                    return Err(self.fail(format!("pads {p:?}: only 2-D windows are supported")));
                }
            },
            "VALID" => [(0, 0); 2],
            "SAME_UPPER" | "SAME_LOWER" => {
                let mut pads = [(0, 0); 2];
                for a in 0..2 {
                    let out = hw[a].div_ceil(stride[a]);
                    let span = (kernel[a] - 1) * dilation[a] + 1;
                    let total = ((out - 1) * stride[a] + span).saturating_sub(hw[a]);
                    let small = total / 2;
                    pads[a] = if auto_pad == "SAME_UPPER" {
                        (small, total - small)
                    } else {
                        (total - small, small)
                    };
                }
                pads
            }
            other => return Err(self.fail(format!("auto_pad {other:?} is not an ONNX value"))),
        };
        Ok(Window {
            stride,
            pads,
            dilation,
        })
    }
}

struct Window {
    stride: [usize; 2],
    pads: [(usize, usize); 2],
    dilation: [usize; 2],
}

/// A rank-4 result back at rank [`R`].
fn from4(t: Tensor<4>) -> Value {
    let d = t.dims();
    Value::float(t.reshape(padded(&d)), 4)
}

/// Runs one node; returns its outputs in order.
pub(crate) fn run(ctx: Ctx<'_>) -> Result<Vec<Value>> {
    let op = ctx.node.op.as_str();
    let one = |v: Value| Ok(vec![v]);
    match op {
        "Identity" | "Dropout" => one(ctx.input(0)?.clone()),
        "Constant" => one(constant(&ctx)?),
        "Relu" | "Sigmoid" | "Tanh" | "Neg" | "LeakyRelu" | "Elu" | "Softplus" => {
            if let Value::Ints(v) = ctx.input(0)?
                && op == "Neg"
            {
                return one(Value::Ints(Ints {
                    dims: v.dims.clone(),
                    data: v.data.iter().map(|x| -x).collect(),
                }));
            }
            let (x, rank) = ctx.float(0)?;
            let y = match op {
                "Relu" => burn::tensor::activation::relu(x),
                "Sigmoid" => sigmoid(x),
                "Tanh" => x.tanh(),
                "Neg" => x.neg(),
                "LeakyRelu" => burn::tensor::activation::leaky_relu(
                    x,
                    f64::from(ctx.attr_float("alpha", 0.01)),
                ),
                "Elu" => burn::tensor::activation::elu(x, f64::from(ctx.attr_float("alpha", 1.0))),
                _ => softplus(x, 1.0),
            };
            one(Value::float(y, rank))
        }
        "Add" | "Sub" | "Mul" | "Div" => binary(&ctx),
        "Greater" => {
            let (a, ra) = ctx.float(0)?;
            let (b, rb) = ctx.float(1)?;
            let dims = broadcast_dims(&ctx.input(0)?.dims(), &ctx.input(1)?.dims())
                .ok_or_else(|| ctx.fail("the inputs' shapes do not broadcast"))?;
            let p = padded(&dims);
            one(Value::Bool {
                t: a.expand(p).greater(b.expand(p)),
                rank: ra.max(rb),
            })
        }
        "Where" => {
            let Value::Bool { t: cond, .. } = ctx.input(0)? else {
                return Err(ctx.fail("the condition must be a boolean tensor"));
            };
            let (x, _) = ctx.float(1)?;
            let (y, _) = ctx.float(2)?;
            let d0 = ctx.input(0)?.dims();
            let d12 = broadcast_dims(&ctx.input(1)?.dims(), &ctx.input(2)?.dims());
            let dims = d12
                .and_then(|d| broadcast_dims(&d0, &d))
                .ok_or_else(|| ctx.fail("the inputs' shapes do not broadcast"))?;
            let p = padded(&dims);
            one(Value::float(
                y.expand(p).mask_where(cond.clone().expand(p), x.expand(p)),
                dims.len(),
            ))
        }
        "Clip" => {
            let (x, rank) = ctx.float(0)?;
            let (lo, hi) = if ctx.opset >= 11 {
                (
                    if ctx.has(1) {
                        Some(ctx.scalar(1)?)
                    } else {
                        None
                    },
                    if ctx.has(2) {
                        Some(ctx.scalar(2)?)
                    } else {
                        None
                    },
                )
            } else {
                (
                    ctx.node
                        .attrs
                        .get("min")
                        .map(|_| f64::from(ctx.attr_float("min", 0.0))),
                    ctx.node
                        .attrs
                        .get("max")
                        .map(|_| f64::from(ctx.attr_float("max", 0.0))),
                )
            };
            let y = match (lo, hi) {
                (Some(a), Some(b)) => x.clamp(a, b),
                (Some(a), None) => x.clamp_min(a),
                (None, Some(b)) => x.clamp_max(b),
                (None, None) => x,
            };
            one(Value::float(y, rank))
        }
        "Softmax" | "LogSoftmax" => {
            let (x, rank) = ctx.float(0)?;
            let default = if ctx.opset >= 13 { -1 } else { 1 };
            let axis = ctx.axis(ctx.attr_int("axis", default), rank)?;
            let dims = ctx.input(0)?.dims();
            let f = |t: Tensor<R>, d: usize| {
                if op == "Softmax" {
                    softmax(t, d)
                } else {
                    log_softmax(t, d)
                }
            };
            if ctx.opset >= 13 || axis == rank - 1 {
                one(Value::float(f(x, R - rank + axis), rank))
            } else {
                // before opset 13: the input flattened to [prod(dims[..axis]), prod(dims[axis..])]
                let outer: usize = dims[..axis].iter().product();
                let inner: usize = dims[axis..].iter().product();
                let y = f(x.reshape(padded(&[outer, inner])), R - 1);
                one(Value::float(y.reshape(padded(&dims)), rank))
            }
        }
        "Conv" => conv(&ctx),
        "MaxPool" | "AveragePool" => pool(&ctx),
        "GlobalAveragePool" => {
            let x = ctx.float4(0)?;
            one(from4(x.mean_dim(3).mean_dim(2)))
        }
        "ReduceMean" => reduce_mean(&ctx),
        "BatchNormalization" => batch_norm(&ctx),
        "Gemm" => gemm(&ctx),
        "MatMul" => matmul(&ctx),
        "Flatten" => {
            let dims = ctx.input(0)?.dims();
            let axis = ctx.attr_int("axis", 1);
            let axis = if axis == dims.len() as i64 {
                dims.len()
            } else {
                ctx.axis(axis, dims.len())?
            };
            let outer: usize = dims[..axis].iter().product();
            let inner: usize = dims[axis..].iter().product();
            reshape_to(&ctx, vec![outer, inner])
        }
        "Reshape" => {
            let dims = ctx.input(0)?.dims();
            let shape = ctx.ints(1)?.data;
            let allow_zero = ctx.attr_int("allowzero", 0) == 1;
            let total: usize = dims.iter().product();
            let mut out = Vec::with_capacity(shape.len());
            let mut infer = None;
            for (i, &s) in shape.iter().enumerate() {
                match s {
                    0 if !allow_zero => out.push(*dims.get(i).ok_or_else(|| {
                        ctx.fail(format!(
                            "shape {shape:?} copies a dimension the input lacks"
                        ))
                    })?),
                    -1 if infer.is_none() => {
                        infer = Some(i);
                        out.push(1);
                    }
                    s if s >= 0 => out.push(s as usize),
                    _ => return Err(ctx.fail(format!("shape {shape:?} is not a valid target"))),
                }
            }
            if let Some(i) = infer {
                let known: usize = out.iter().product();
                if known == 0 || !total.is_multiple_of(known) {
                    return Err(ctx.fail(format!("cannot reshape {dims:?} to {shape:?}")));
                }
                out[i] = total / known;
            }
            reshape_to(&ctx, out)
        }
        "Squeeze" => {
            let dims = ctx.input(0)?.dims();
            let out = match ctx.axes(1)? {
                Some(axes) => {
                    let axes = axes
                        .iter()
                        .map(|&a| ctx.axis(a, dims.len()))
                        .collect::<Result<Vec<_>>>()?;
                    if let Some(&a) = axes.iter().find(|&&a| dims[a] != 1) {
                        return Err(ctx.fail(format!("axis {a} of {dims:?} is not of size one")));
                    }
                    dims.iter()
                        .enumerate()
                        .filter(|(i, _)| !axes.contains(i))
                        .map(|(_, &d)| d)
                        .collect()
                }
                None => dims.iter().copied().filter(|&d| d != 1).collect(),
            };
            reshape_to(&ctx, out)
        }
        "Unsqueeze" => {
            let mut dims = ctx.input(0)?.dims();
            let axes = ctx.axes(1)?.ok_or_else(|| ctx.fail("no axes"))?;
            let rank = dims.len() + axes.len();
            let mut axes = axes
                .iter()
                .map(|&a| ctx.axis(a, rank))
                .collect::<Result<Vec<_>>>()?;
            axes.sort_unstable();
            for a in axes {
                dims.insert(a, 1);
            }
            reshape_to(&ctx, dims)
        }
        "Transpose" => transpose(&ctx),
        "Concat" => concat(&ctx),
        "Pad" => pad(&ctx),
        "Shape" => {
            let dims = ctx.input(0)?.dims();
            let rank = dims.len() as i64;
            let clampi = |v: i64| (if v < 0 { v + rank } else { v }).clamp(0, rank) as usize;
            let start = clampi(ctx.attr_int("start", 0));
            let end = clampi(ctx.attr_int("end", rank));
            let data = dims[start..end.max(start)]
                .iter()
                .map(|&d| d as i64)
                .collect();
            one(Value::Ints(Ints::vector(data)))
        }
        "Gather" => gather(&ctx),
        "Cast" => cast(&ctx),
        "ConstantOfShape" => {
            let dims = ctx.usize_list("shape", &ctx.ints(0)?.data)?;
            let n: usize = dims.iter().product();
            match ctx.node.attrs.get("value") {
                Some(Attr::Tensor(t)) => match &t.data {
                    HostData::I64(v) => one(Value::Ints(Ints {
                        data: vec![v.first().copied().unwrap_or(0); n],
                        dims,
                    })),
                    HostData::F32(v) => one(Value::float_from(
                        vec![v.first().copied().unwrap_or(0.0); n],
                        &dims,
                        ctx.device,
                    )),
                    HostData::Bool(_) => Err(ctx.fail("a boolean fill value is not supported")),
                },
                _ => one(Value::float_from(vec![0.0; n], &dims, ctx.device)),
            }
        }
        "Slice" => slice(&ctx),
        other => Err(OnnxError::Unsupported {
            op: other.to_string(),
            node: ctx.node.name.clone(),
        }),
    }
}

fn reshape_to(ctx: &Ctx<'_>, dims: Vec<usize>) -> Result<Vec<Value>> {
    if dims.len() > R {
        return Err(ctx.fail(format!(
            "a value of rank {} (at most {R} is supported)",
            dims.len()
        )));
    }
    let have: usize = ctx.input(0)?.dims().iter().product();
    if dims.iter().product::<usize>() != have {
        return Err(ctx.fail(format!(
            "cannot reshape {:?} to {dims:?}",
            ctx.input(0)?.dims()
        )));
    }
    Ok(vec![match ctx.input(0)? {
        Value::Float { t, host, .. } => Value::Float {
            t: t.clone().reshape(padded(&dims)),
            rank: dims.len(),
            host: host.clone(),
        },
        Value::Bool { t, .. } => Value::Bool {
            t: t.clone().reshape(padded(&dims)),
            rank: dims.len(),
        },
        Value::Ints(v) => Value::Ints(Ints {
            dims,
            data: v.data.clone(),
        }),
    }])
}

fn constant(ctx: &Ctx<'_>) -> Result<Value> {
    let a = &ctx.node.attrs;
    Ok(
        match (
            a.get("value"),
            a.get("value_float"),
            a.get("value_floats"),
            a.get("value_int"),
            a.get("value_ints"),
        ) {
            (Some(Attr::Tensor(t)), ..) => Value::constant(t, ctx.device),
            (_, Some(Attr::Float(f)), ..) => Value::float_from(vec![*f], &[], ctx.device),
            (_, _, Some(Attr::Floats(v)), ..) => {
                Value::float_from(v.clone(), &[v.len()], ctx.device)
            }
            (_, _, _, Some(Attr::Int(i)), _) => Value::Ints(Ints {
                dims: vec![],
                data: vec![*i],
            }),
            (_, _, _, _, Some(Attr::Ints(v))) => Value::Ints(Ints::vector(v.clone())),
            _ => return Err(ctx.fail("no value (sparse and string constants are not supported)")),
        },
    )
}

fn binary(ctx: &Ctx<'_>) -> Result<Vec<Value>> {
    let op = ctx.node.op.as_str();
    if let (Value::Ints(a), Value::Ints(b)) = (ctx.input(0)?, ctx.input(1)?) {
        let f = match op {
            "Add" => |x: i64, y: i64| x + y,
            "Sub" => |x: i64, y: i64| x - y,
            "Mul" => |x: i64, y: i64| x * y,
            _ => |x: i64, y: i64| if y == 0 { 0 } else { x.div_euclid(y) },
        };
        let v = a
            .broadcast(b, f)
            .ok_or_else(|| ctx.fail("the inputs' shapes do not broadcast"))?;
        return Ok(vec![Value::Ints(v)]);
    }
    let (a, ra) = ctx.float(0)?;
    let (b, rb) = ctx.float(1)?;
    broadcast_dims(&ctx.input(0)?.dims(), &ctx.input(1)?.dims())
        .ok_or_else(|| ctx.fail("the inputs' shapes do not broadcast"))?;
    let y = match op {
        "Add" => a.add(b),
        "Sub" => a.sub(b),
        "Mul" => a.mul(b),
        _ => a.div(b),
    };
    Ok(vec![Value::float(y, ra.max(rb))])
}

fn conv(ctx: &Ctx<'_>) -> Result<Vec<Value>> {
    let x = ctx.float4(0)?;
    let w = ctx.float4(1)?;
    let [_, _, h, wd] = x.dims();
    let [out_c, _, kh, kw] = w.dims();
    if let Some(k) = ctx.attr_ints("kernel_shape")
        && k != [kh as i64, kw as i64]
    {
        return Err(ctx.fail(format!(
            "kernel_shape {k:?} does not match the weights' [{kh}, {kw}]"
        )));
    }
    let bias = if ctx.has(2) {
        let (b, _) = ctx.float(2)?;
        Some(b.reshape([out_c]))
    } else {
        None
    };
    let win = ctx.window([kh, kw], [h, wd])?;
    let groups =
        usize::try_from(ctx.attr_int("group", 1)).map_err(|_| ctx.fail("negative group"))?;
    // burn-ndarray's convolution backward is a direct loop, 8x slower than the product below on
    // a small CNN's input gradient (2.0 s against 0.26 s for 250 MNIST images); its forward is 2x
    // faster than the product. Other backends have fast convolutions both ways.
    if groups == 1 && x.is_autodiff() && crate::value::is_ndarray(&x.device()) {
        return Ok(vec![from4(conv_as_product(x, w, bias, &win))]);
    }
    let options = ConvOptions {
        stride: win.stride,
        padding: win.pads,
        dilation: win.dilation,
        groups,
    };
    Ok(vec![from4(conv2d(x, w, bias, options))])
}

/// A convolution as one matrix product: the input's windows gathered by strided slices into
/// `[B·OH·OW, C·KH·KW]` (the column layout of the weights `[O, C, KH, KW]`), times the weights
/// transposed. Every step is a burn operation, so autodiff differentiates it as it does conv2d.
fn conv_as_product(x: Tensor<4>, w: Tensor<4>, bias: Option<Tensor<1>>, win: &Window) -> Tensor<4> {
    let [(pt, pb), (pl, pr)] = win.pads;
    let x = if pt + pb + pl + pr > 0 {
        x.pad([(pt, pb), (pl, pr)], PadMode::Constant(0.0))
    } else {
        x
    };
    let [b, c, h, wd] = x.dims();
    let [o, _, kh, kw] = w.dims();
    let [sh, sw] = win.stride;
    let [dh, dw] = win.dilation;
    let oh = (h - ((kh - 1) * dh + 1)) / sh + 1;
    let ow = (wd - ((kw - 1) * dw + 1)) / sw + 1;
    let mut cols = Vec::with_capacity(kh * kw);
    for i in 0..kh {
        for j in 0..kw {
            let rows = burn::tensor::Slice::new(
                (i * dh) as isize,
                Some((i * dh + (oh - 1) * sh + 1) as isize),
                sh as isize,
            );
            let across = burn::tensor::Slice::new(
                (j * dw) as isize,
                Some((j * dw + (ow - 1) * sw + 1) as isize),
                sw as isize,
            );
            cols.push(x.clone().slice_dim(2, rows).slice_dim(3, across));
        }
    }
    // [B, C, KH·KW, OH, OW] -> [B, C·KH·KW, OH·OW]: the weights' column order, no transposition
    let cols = Tensor::stack::<5>(cols, 2).reshape([b, c * kh * kw, oh * ow]);
    let y = w.reshape([1, o, c * kh * kw]).matmul(cols);
    let y = match bias {
        Some(bias) => y.add(bias.reshape([1, o, 1])),
        None => y,
    };
    y.reshape([b, o, oh, ow])
}

fn pool(ctx: &Ctx<'_>) -> Result<Vec<Value>> {
    if ctx.node.outputs.get(1).is_some_and(|o| !o.is_empty()) {
        return Err(ctx.fail("MaxPool's indices output is not supported"));
    }
    let x = ctx.float4(0)?;
    let [_, _, h, w] = x.dims();
    let k = ctx
        .attr_ints("kernel_shape")
        .ok_or_else(|| ctx.fail("no kernel_shape"))?;
    let k = ctx.usize_list("kernel_shape", &k)?;
    let [kh, kw] = k[..] else {
        return Err(ctx.fail(format!(
            "kernel_shape {k:?}: only 2-D windows are supported"
        )));
    };
    let win = ctx.window([kh, kw], [h, w])?;
    let ceil_mode = ctx.attr_int("ceil_mode", 0) == 1;
    let y = if ctx.node.op == "MaxPool" {
        max_pool2d(
            x,
            MaxPoolOptions {
                kernel_size: [kh, kw],
                stride: win.stride,
                padding: win.pads,
                dilation: win.dilation,
                ceil_mode,
            },
        )
    } else {
        if win.dilation != [1, 1] {
            return Err(ctx.fail("a dilated AveragePool is not supported"));
        }
        avg_pool2d(
            x,
            AvgPoolOptions {
                kernel_size: [kh, kw],
                stride: win.stride,
                padding: win.pads,
                count_include_pad: ctx.attr_int("count_include_pad", 0) == 1,
                ceil_mode,
            },
        )
    };
    Ok(vec![from4(y)])
}

fn reduce_mean(ctx: &Ctx<'_>) -> Result<Vec<Value>> {
    let (mut x, rank) = ctx.float(0)?;
    let keep = ctx.attr_int("keepdims", 1) == 1;
    let axes = match ctx.axes(1)? {
        Some(a) if !a.is_empty() => a
            .iter()
            .map(|&a| ctx.axis(a, rank))
            .collect::<Result<Vec<_>>>()?,
        _ if ctx.attr_int("noop_with_empty_axes", 0) == 1 => {
            return Ok(vec![ctx.input(0)?.clone()]);
        }
        _ => (0..rank).collect(),
    };
    for &a in &axes {
        x = x.mean_dim(R - rank + a);
    }
    if keep {
        return Ok(vec![Value::float(x, rank)]);
    }
    let dims: Vec<usize> = ctx
        .input(0)?
        .dims()
        .iter()
        .enumerate()
        .filter(|(i, _)| !axes.contains(i))
        .map(|(_, &d)| d)
        .collect();
    Ok(vec![Value::float(x.reshape(padded(&dims)), dims.len())])
}

fn batch_norm(ctx: &Ctx<'_>) -> Result<Vec<Value>> {
    if ctx.attr_int("training_mode", 0) != 0
        || ctx.node.outputs.iter().skip(1).any(|o| !o.is_empty())
    {
        return Err(ctx.fail("training-mode BatchNormalization (running statistics as outputs) is not supported; export the model in eval() mode"));
    }
    let (x, rank) = ctx.float(0)?;
    if rank < 2 {
        return Err(ctx.fail("the input has no channel axis"));
    }
    let c = ctx.input(0)?.dims()[1];
    let mut per_channel = vec![1; rank];
    per_channel[1] = c;
    let p = padded(&per_channel);
    let vec_of = |i: usize| -> Result<Tensor<R>> {
        let (t, _) = ctx.float(i)?;
        if t.dims().iter().product::<usize>() != c {
            return Err(ctx.fail(format!(
                "input {i} does not have one value per channel ({c})"
            )));
        }
        Ok(t.reshape(p))
    };
    let eps = f64::from(ctx.attr_float("epsilon", 1e-5));
    let (scale, bias, mean, var) = (vec_of(1)?, vec_of(2)?, vec_of(3)?, vec_of(4)?);
    let a = scale.div(var.add_scalar(eps).sqrt());
    let b = bias.sub(mean.mul(a.clone()));
    Ok(vec![Value::float(x.mul(a).add(b), rank)])
}

fn gemm(ctx: &Ctx<'_>) -> Result<Vec<Value>> {
    let two = |i: usize| -> Result<Tensor<2>> {
        let (t, rank) = ctx.float(i)?;
        if rank != 2 {
            return Err(ctx.fail(format!("input {i} has rank {rank}, Gemm takes matrices")));
        }
        let d = t.dims();
        Ok(t.reshape([d[R - 2], d[R - 1]]))
    };
    let mut a = two(0)?;
    let mut b = two(1)?;
    if ctx.attr_int("transA", 0) == 1 {
        a = a.transpose();
    }
    if ctx.attr_int("transB", 0) == 1 {
        b = b.transpose();
    }
    let alpha = f64::from(ctx.attr_float("alpha", 1.0));
    let beta = f64::from(ctx.attr_float("beta", 1.0));
    let mut y = a.matmul(b);
    if alpha != 1.0 {
        y = y.mul_scalar(alpha);
    }
    let [m, n] = y.dims();
    let mut y = y.reshape(padded(&[m, n]));
    if ctx.has(2) {
        let (c, rc) = ctx.float(2)?;
        if rc > 2 {
            return Err(ctx.fail("C has rank above 2"));
        }
        y = y.add(if beta == 1.0 { c } else { c.mul_scalar(beta) });
    }
    Ok(vec![Value::float(y, 2)])
}

fn matmul(ctx: &Ctx<'_>) -> Result<Vec<Value>> {
    let (a, ra) = ctx.float(0)?;
    let (b, rb) = ctx.float(1)?;
    let (da, db) = (ctx.input(0)?.dims(), ctx.input(1)?.dims());
    // numpy's rules: a vector on the left is a row, on the right a column, removed after
    let a_dims = if ra == 1 { vec![1, da[0]] } else { da.clone() };
    let b_dims = if rb == 1 { vec![db[0], 1] } else { db.clone() };
    let batch = broadcast_dims(&a_dims[..a_dims.len() - 2], &b_dims[..b_dims.len() - 2])
        .ok_or_else(|| {
            ctx.fail(format!(
                "batch dimensions of {da:?} and {db:?} do not broadcast"
            ))
        })?;
    if a_dims[a_dims.len() - 1] != b_dims[b_dims.len() - 2] {
        return Err(ctx.fail(format!("cannot multiply {da:?} by {db:?}")));
    }
    let y = a
        .reshape(padded(&a_dims))
        .matmul(b.reshape(padded(&b_dims)));
    let mut out = batch;
    if ra != 1 {
        out.push(a_dims[a_dims.len() - 2]);
    }
    if rb != 1 {
        out.push(b_dims[b_dims.len() - 1]);
    }
    Ok(vec![Value::float(y.reshape(padded(&out)), out.len())])
}

fn transpose(ctx: &Ctx<'_>) -> Result<Vec<Value>> {
    let dims = ctx.input(0)?.dims();
    let rank = dims.len();
    let perm = match ctx.attr_ints("perm") {
        Some(p) => p
            .iter()
            .map(|&a| ctx.axis(a, rank))
            .collect::<Result<Vec<_>>>()?,
        None => (0..rank).rev().collect(),
    };
    let mut sorted = perm.clone();
    sorted.sort_unstable();
    if sorted != (0..rank).collect::<Vec<_>>() {
        return Err(ctx.fail(format!("perm {perm:?} is not a permutation of {rank} axes")));
    }
    let out_dims: Vec<usize> = perm.iter().map(|&p| dims[p]).collect();
    Ok(vec![match ctx.input(0)? {
        Value::Ints(v) => {
            let strides = Ints::strides(&dims);
            let out_strides = Ints::strides(&out_dims);
            let n = v.data.len();
            let mut data = vec![0; n];
            for (k, slot) in data.iter_mut().enumerate() {
                let mut src = 0;
                let mut r = k;
                for (i, s) in out_strides.iter().enumerate() {
                    src += (r / s) * strides[perm[i]];
                    r %= s;
                }
                *slot = v.data[src];
            }
            Value::Ints(Ints {
                dims: out_dims,
                data,
            })
        }
        _ => {
            let (x, _) = ctx.float(0)?;
            let off = R - rank;
            let mut full = [0usize; R];
            for (i, f) in full.iter_mut().enumerate() {
                *f = if i < off { i } else { off + perm[i - off] };
            }
            Value::float(x.permute(full), rank)
        }
    }])
}

fn concat(ctx: &Ctx<'_>) -> Result<Vec<Value>> {
    let present: Vec<&Value> = ctx.inputs.iter().flatten().collect();
    let first = present.first().ok_or_else(|| ctx.fail("no inputs"))?;
    let rank = first.dims().len();
    let axis = ctx.axis(ctx.attr_int("axis", 0), rank)?;
    if present.iter().all(|v| matches!(v, Value::Ints(_))) {
        let parts: Vec<&Ints> = present
            .iter()
            .filter_map(|v| {
                if let Value::Ints(i) = v {
                    Some(i)
                } else {
                    None
                }
            })
            .collect();
        let outer: usize = first.dims()[..axis].iter().product();
        let mut data = Vec::new();
        for o in 0..outer {
            for p in &parts {
                let inner: usize = p.dims[axis..].iter().product();
                data.extend_from_slice(&p.data[o * inner..(o + 1) * inner]);
            }
        }
        let mut dims = first.dims();
        dims[axis] = parts.iter().map(|p| p.dims[axis]).sum();
        return Ok(vec![Value::Ints(Ints { dims, data })]);
    }
    let mut ts = Vec::with_capacity(ctx.inputs.len());
    for i in 0..ctx.inputs.len() {
        if ctx.has(i) {
            let (t, r) = ctx.float(i)?;
            if r != rank {
                return Err(ctx.fail("inputs of different ranks"));
            }
            ts.push(t);
        }
    }
    Ok(vec![Value::float(Tensor::cat(ts, R - rank + axis), rank)])
}

fn pad(ctx: &Ctx<'_>) -> Result<Vec<Value>> {
    let dims = ctx.input(0)?.dims();
    let rank = dims.len();
    let pads = if ctx.opset >= 11 {
        ctx.ints(1)?.data
    } else {
        ctx.attr_ints("pads").unwrap_or_default()
    };
    let axes: Vec<usize> = if ctx.opset >= 18 && ctx.has(3) {
        ctx.ints(3)?
            .data
            .iter()
            .map(|&a| ctx.axis(a, rank))
            .collect::<Result<_>>()?
    } else {
        (0..rank).collect()
    };
    if pads.len() != 2 * axes.len() {
        return Err(ctx.fail(format!("{} pads for {} axes", pads.len(), axes.len())));
    }
    let value = if ctx.opset >= 11 {
        if ctx.has(2) { ctx.scalar(2)? } else { 0.0 }
    } else {
        f64::from(ctx.attr_float("value", 0.0))
    };
    let mode = match ctx.attr_str("mode", "constant").as_str() {
        "constant" => PadMode::Constant(value as f32),
        "reflect" => PadMode::Reflect,
        "edge" => PadMode::Edge,
        other => {
            return Err(ctx.fail(format!(
                "mode {other:?} is not supported (constant, reflect, edge are)"
            )));
        }
    };
    let (mut x, _) = ctx.float(0)?;
    let mut pairs = vec![(0usize, 0usize); rank];
    let n = axes.len();
    for (k, &a) in axes.iter().enumerate() {
        let (begin, end) = (pads[k], pads[k + n]);
        // negative pads crop
        if begin < 0 || end < 0 {
            let d = R - rank + a;
            let len = dims[a] as i64;
            let start = (-begin).max(0);
            let stop = len - (-end).max(0);
            if start > stop {
                return Err(ctx.fail(format!("pads {pads:?} crop more than axis {a} holds")));
            }
            x = x.slice_dim(d, start as usize..stop as usize);
        }
        pairs[a] = (begin.max(0) as usize, end.max(0) as usize);
    }
    Ok(vec![Value::float(x.pad(pairs, mode), rank)])
}

fn gather(ctx: &Ctx<'_>) -> Result<Vec<Value>> {
    let idx = ctx.ints(1)?;
    let data_dims = ctx.input(0)?.dims();
    let rank = data_dims.len();
    let axis = ctx.axis(ctx.attr_int("axis", 0), rank)?;
    let len = data_dims[axis] as i64;
    let indices: Vec<usize> = idx
        .data
        .iter()
        .map(|&i| {
            let j = if i < 0 { i + len } else { i };
            usize::try_from(j)
                .ok()
                .filter(|&j| (j as i64) < len)
                .ok_or_else(|| ctx.fail(format!("index {i} is out of range for {len}")))
        })
        .collect::<Result<_>>()?;
    let mut out_dims = data_dims[..axis].to_vec();
    out_dims.extend_from_slice(&idx.dims);
    out_dims.extend_from_slice(&data_dims[axis + 1..]);
    match ctx.input(0)? {
        Value::Ints(v) => {
            let outer: usize = data_dims[..axis].iter().product();
            let inner: usize = data_dims[axis + 1..].iter().product();
            let mut data = Vec::with_capacity(outer * indices.len() * inner);
            for o in 0..outer {
                for &j in &indices {
                    let start = (o * data_dims[axis] + j) * inner;
                    data.extend_from_slice(&v.data[start..start + inner]);
                }
            }
            Ok(vec![Value::Ints(Ints {
                dims: out_dims,
                data,
            })])
        }
        _ => {
            let (x, _) = ctx.float(0)?;
            let ids: Vec<i64> = indices.iter().map(|&j| j as i64).collect();
            let ids =
                Tensor::<1, Int>::from_data(TensorData::new(ids, [indices.len()]), ctx.device);
            let y = x.select(R - rank + axis, ids);
            if out_dims.len() > R {
                return Err(ctx.fail("the result's rank is too high"));
            }
            Ok(vec![Value::float(
                y.reshape(padded(&out_dims)),
                out_dims.len(),
            )])
        }
    }
}

/// `TensorProto.DataType` of Cast's `to`.
fn cast(ctx: &Ctx<'_>) -> Result<Vec<Value>> {
    let to = ctx.attr_int("to", 0) as i32;
    let is_float = matches!(to, 1 | 10 | 11 | 16);
    let is_int = matches!(to, 2..=7 | 12 | 13);
    Ok(vec![match ctx.input(0)? {
        v @ Value::Float { .. } if is_float => v.clone(),
        v @ Value::Ints(_) if is_int => v.clone(),
        Value::Ints(_) if is_float => {
            let (t, rank) = ctx.float(0)?;
            let host = ctx.ints(0)?.data.iter().map(|&x| x as f32).collect();
            Value::Float {
                t,
                rank,
                host: Some(std::sync::Arc::new(host)),
            }
        }
        Value::Float { host: Some(_), .. } if is_int => Value::Ints(ctx.ints(0)?),
        Value::Bool { t, rank } if is_float => Value::float(t.clone().float(), *rank),
        Value::Float { t, rank, .. } if to == 9 => Value::Bool {
            t: t.clone().not_equal_elem(0.0),
            rank: *rank,
        },
        _ => {
            return Err(ctx.fail(format!(
                "cast to ONNX type {to} of this input is not supported"
            )));
        }
    }])
}

fn slice(ctx: &Ctx<'_>) -> Result<Vec<Value>> {
    let dims = ctx.input(0)?.dims();
    let rank = dims.len();
    let (starts, ends, axes, steps) = if ctx.opset >= 10 {
        (
            ctx.ints(1)?.data,
            ctx.ints(2)?.data,
            if ctx.has(3) {
                Some(ctx.ints(3)?.data)
            } else {
                None
            },
            if ctx.has(4) {
                Some(ctx.ints(4)?.data)
            } else {
                None
            },
        )
    } else {
        (
            ctx.attr_ints("starts").unwrap_or_default(),
            ctx.attr_ints("ends").unwrap_or_default(),
            ctx.attr_ints("axes"),
            None,
        )
    };
    let axes = match axes {
        Some(a) => a
            .iter()
            .map(|&a| ctx.axis(a, rank))
            .collect::<Result<Vec<_>>>()?,
        None => (0..starts.len()).collect(),
    };
    let steps = steps.unwrap_or_else(|| vec![1; axes.len()]);
    if starts.len() != axes.len() || ends.len() != axes.len() || steps.len() != axes.len() {
        return Err(ctx.fail("starts, ends, axes and steps differ in length"));
    }
    // per axis: the indices taken, by ONNX's clamping rules
    let mut picks: Vec<Vec<usize>> = dims.iter().map(|&d| (0..d).collect()).collect();
    for k in 0..axes.len() {
        let a = axes[k];
        let len = dims[a] as i64;
        let step = steps[k];
        if step == 0 {
            return Err(ctx.fail("a step of zero"));
        }
        let norm = |v: i64| if v < 0 { v + len } else { v };
        let (s, e) = (norm(starts[k]), norm(ends[k]));
        let mut idx = Vec::new();
        if step > 0 {
            let (s, e) = (s.clamp(0, len), e.clamp(0, len));
            let mut i = s;
            while i < e {
                idx.push(i as usize);
                i += step;
            }
        } else {
            let (s, e) = (s.clamp(-1, len - 1), e.clamp(-1, len - 1));
            let mut i = s;
            while i > e {
                idx.push(i as usize);
                i += step;
            }
        }
        picks[a] = idx;
    }
    let out_dims: Vec<usize> = picks.iter().map(Vec::len).collect();
    match ctx.input(0)? {
        Value::Ints(v) => {
            let strides = Ints::strides(&dims);
            let out_strides = Ints::strides(&out_dims);
            let n: usize = out_dims.iter().product();
            let mut data = Vec::with_capacity(n);
            for k in 0..n {
                let mut r = k;
                let mut src = 0;
                for (i, s) in out_strides.iter().enumerate() {
                    src += picks[i][r / s] * strides[i];
                    r %= s;
                }
                data.push(v.data[src]);
            }
            Ok(vec![Value::Ints(Ints {
                dims: out_dims,
                data,
            })])
        }
        _ => {
            let (mut x, _) = ctx.float(0)?;
            for (a, p) in picks.iter().enumerate() {
                if p.len() == dims[a] {
                    continue;
                }
                let contiguous = p.windows(2).all(|w| w[1] == w[0] + 1);
                if !contiguous {
                    return Err(ctx.fail("a float Slice with a step other than 1 is not supported"));
                }
                let start = p.first().copied().unwrap_or(0);
                x = x.slice_dim(R - rank + a, start..start + p.len());
            }
            Ok(vec![Value::float(x, rank)])
        }
    }
}
