//! The values a graph computes with: float and boolean tensors on the device, integer tensors
//! (shapes, axes, pads) on the host.
//!
//! burn's tensors have their rank in their type; an ONNX graph's values have theirs at run time.
//! Every device tensor is therefore held at rank [`R`], its logical dimensions at the end and ones
//! in front: ONNX's numpy-style broadcasting aligns shapes at the end, so two such tensors
//! broadcast in burn exactly as their logical shapes do in ONNX.

use std::sync::Arc;

use burn::tensor::{Bool, Device, Tensor, TensorData};

use crate::graph::{HostData, HostTensor};

/// The rank every device tensor is held at; a graph value of higher rank is refused.
pub(crate) const R: usize = 6;

/// A value of the graph.
#[derive(Debug, Clone)]
pub(crate) enum Value {
    /// A float tensor; `host` keeps a constant's values for operators that read them as numbers
    /// (Clip's bounds, a Gather of constants).
    Float {
        t: Tensor<R>,
        rank: usize,
        host: Option<Arc<Vec<f32>>>,
    },
    /// A boolean tensor (a comparison's result).
    Bool { t: Tensor<R, Bool>, rank: usize },
    /// An integer tensor on the host.
    Ints(Ints),
}

/// An integer tensor on the host, row-major.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Ints {
    pub(crate) dims: Vec<usize>,
    pub(crate) data: Vec<i64>,
}

/// `dims` at rank [`R`]: ones in front.
pub(crate) fn padded(dims: &[usize]) -> [usize; R] {
    let mut p = [1; R];
    p[R - dims.len()..].copy_from_slice(dims);
    p
}

impl Value {
    /// A float tensor of logical dimensions `dims` from host values.
    pub(crate) fn float_from(data: Vec<f32>, dims: &[usize], device: &Device) -> Value {
        Value::float_shared(Arc::new(data), dims, device)
    }

    /// A float tensor of logical dimensions `dims` from host values it keeps a handle on.
    fn float_shared(data: Arc<Vec<f32>>, dims: &[usize], device: &Device) -> Value {
        let t = Tensor::from_data(TensorData::new(data.to_vec(), padded(dims)), device);
        Value::Float {
            t,
            rank: dims.len(),
            host: Some(data),
        }
    }

    /// A computed float tensor of logical rank `rank`.
    pub(crate) fn float(t: Tensor<R>, rank: usize) -> Value {
        Value::Float {
            t,
            rank,
            host: None,
        }
    }

    /// A host constant as a value on `device` (integers stay on the host).
    pub(crate) fn constant(c: &HostTensor, device: &Device) -> Value {
        match &c.data {
            HostData::F32(v) => Value::float_shared(Arc::clone(v), &c.dims, device),
            HostData::I64(v) => Value::Ints(Ints {
                dims: c.dims.clone(),
                data: v.clone(),
            }),
            HostData::Bool(v) => Value::Bool {
                t: Tensor::from_data(TensorData::new(v.clone(), padded(&c.dims)), device),
                rank: c.dims.len(),
            },
        }
    }

    /// The logical dimensions.
    pub(crate) fn dims(&self) -> Vec<usize> {
        match self {
            Value::Float { t, rank, .. } => t.dims()[R - rank..].to_vec(),
            Value::Bool { t, rank } => t.dims()[R - rank..].to_vec(),
            Value::Ints(i) => i.dims.clone(),
        }
    }
}

impl Ints {
    /// A rank-1 integer tensor.
    pub(crate) fn vector(data: Vec<i64>) -> Ints {
        Ints {
            dims: vec![data.len()],
            data,
        }
    }

    /// The strides of a row-major layout of `dims`.
    pub(crate) fn strides(dims: &[usize]) -> Vec<usize> {
        let mut s = vec![1; dims.len()];
        for i in (0..dims.len().saturating_sub(1)).rev() {
            s[i] = s[i + 1] * dims[i + 1];
        }
        s
    }

    /// The element at multi-index `idx` broadcast from `out` dims (a dimension of size one
    /// repeats).
    fn at_broadcast(&self, idx: &[usize]) -> i64 {
        let off = idx.len() - self.dims.len();
        let strides = Ints::strides(&self.dims);
        let mut k = 0;
        for (i, (&d, &s)) in self.dims.iter().zip(&strides).enumerate() {
            k += if d == 1 { 0 } else { idx[off + i] * s };
        }
        self.data[k]
    }

    /// `f` elementwise with numpy broadcasting; `None` when the shapes do not broadcast.
    pub(crate) fn broadcast(&self, other: &Ints, f: impl Fn(i64, i64) -> i64) -> Option<Ints> {
        let dims = broadcast_dims(&self.dims, &other.dims)?;
        let n: usize = dims.iter().product();
        let strides = Ints::strides(&dims);
        let mut data = Vec::with_capacity(n);
        let mut idx = vec![0; dims.len()];
        for k in 0..n {
            let mut r = k;
            for (i, s) in strides.iter().enumerate() {
                idx[i] = r / s;
                r %= s;
            }
            data.push(f(self.at_broadcast(&idx), other.at_broadcast(&idx)));
        }
        Some(Ints { dims, data })
    }
}

/// The numpy broadcast of two shapes, or `None`.
pub(crate) fn broadcast_dims(a: &[usize], b: &[usize]) -> Option<Vec<usize>> {
    let n = a.len().max(b.len());
    let mut out = vec![0; n];
    for i in 0..n {
        let da = if i + a.len() >= n {
            a[i + a.len() - n]
        } else {
            1
        };
        let db = if i + b.len() >= n {
            b[i + b.len() - n]
        } else {
            1
        };
        out[i] = match (da, db) {
            (x, y) if x == y => x,
            (1, y) => y,
            (x, 1) => x,
            _ => return None,
        };
    }
    Some(out)
}

/// Whether `device` is burn-ndarray's (with or without autodiff).
pub(crate) fn is_ndarray(device: &Device) -> bool {
    #[cfg(feature = "ndarray")]
    {
        #[allow(deprecated)]
        let ndarray = Device::ndarray();
        device.clone().without_autodiff() == ndarray
    }
    #[cfg(not(feature = "ndarray"))]
    {
        let _ = device;
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_broadcast_as_numpy_does() {
        assert_eq!(broadcast_dims(&[4, 1, 3], &[5, 1]), Some(vec![4, 5, 3]));
        assert_eq!(broadcast_dims(&[], &[2]), Some(vec![2]));
        assert_eq!(broadcast_dims(&[2, 3], &[4, 3]), None);
        let a = Ints {
            dims: vec![2, 1],
            data: vec![10, 20],
        };
        let b = Ints::vector(vec![1, 2, 3]);
        let c = a.broadcast(&b, |x, y| x + y).expect("broadcasts");
        assert_eq!(c.dims, vec![2, 3]);
        assert_eq!(c.data, vec![11, 12, 13, 21, 22, 23]);
    }
}
