//! An [`OnnxGraph`] built on a device: its initializers as tensors there, ready to run on batches
//! of images and to be differentiated through (every float operation is a burn operation, so
//! burn's autodiff sees the whole graph).

use std::collections::HashMap;

use burn::tensor::{Device, Tensor};

use crate::error::{OnnxError, Result};
use crate::graph::OnnxGraph;
use crate::ops::{Ctx, run};
use crate::value::{R, Value};

/// An ONNX image classifier on a device.
#[derive(Debug, Clone)]
pub struct OnnxNet {
    graph: OnnxGraph,
    constants: HashMap<String, Value>,
    /// For each node, the values whose last reader it is (dropped after it runs).
    last_use: Vec<Vec<String>>,
    device: Device,
}

impl OnnxNet {
    /// Builds `graph` on `device`: its float initializers become tensors there.
    pub fn new(graph: OnnxGraph, device: &Device) -> OnnxNet {
        let constants = graph
            .initializers
            .iter()
            .map(|(n, t)| (n.clone(), Value::constant(t, device)))
            .collect();
        let mut last = HashMap::new();
        for (i, n) in graph.nodes.iter().enumerate() {
            for input in &n.inputs {
                last.insert(input.clone(), i);
            }
        }
        let mut last_use = vec![Vec::new(); graph.nodes.len()];
        for (name, i) in last {
            if name != graph.output {
                last_use[i].push(name);
            }
        }
        OnnxNet {
            graph,
            constants,
            last_use,
            device: device.clone(),
        }
    }

    /// The graph it runs.
    pub fn graph(&self) -> &OnnxGraph {
        &self.graph
    }

    /// The device its constants are on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Checks that images of `[channels, height, width]` fit the graph's input, which may be
    /// `[N, C, H, W]`, `[N, H, W]` (one channel) or `[N, C·H·W]`: an error names both shapes.
    pub fn check_image(&self, image: [usize; 3]) -> Result<()> {
        self.input_dims(1, image).map(|_| ())
    }

    /// The dimensions the graph's input takes for `batch` images of `image`, or why they do not
    /// fit.
    fn input_dims(&self, batch: usize, image: [usize; 3]) -> Result<Vec<usize>> {
        let [c, h, w] = image;
        let want = self.graph.input_dims();
        let candidate = match want.len() {
            4 => vec![batch, c, h, w],
            3 if c == 1 => vec![batch, h, w],
            2 => vec![batch, c * h * w],
            _ => vec![],
        };
        let fits = candidate.len() == want.len()
            && want
                .iter()
                .zip(&candidate)
                .enumerate()
                .all(|(i, (w, &g))| i == 0 || w.is_none_or(|w| w == g))
            && want[0].is_none_or(|b| b == batch);
        if !fits {
            return Err(OnnxError::InputShape {
                input: self.graph.input_name().to_string(),
                expected: self.graph.input_shape_text(),
                got: format!("[{batch}, {c}, {h}, {w}]"),
            });
        }
        Ok(candidate)
    }

    /// The logits of a batch of images `[B, C, H, W]` in the pixel range the model was exported
    /// for (advrob's images are in [0, 1]): `[B, classes]`.
    pub fn forward(&self, images: Tensor<4>) -> Result<Tensor<2>> {
        let [b, c, h, w] = images.dims();
        let dims = self.input_dims(b, [c, h, w])?;
        let x = images.reshape(crate::value::padded(&dims));
        let mut env: HashMap<&str, Value> = HashMap::new();
        env.insert(self.graph.input.as_str(), Value::float(x, dims.len()));
        for (i, node) in self.graph.nodes.iter().enumerate() {
            let inputs = node
                .inputs
                .iter()
                .map(|name| {
                    if name.is_empty() {
                        None
                    } else {
                        env.get(name.as_str())
                            .or_else(|| self.constants.get(name))
                            .cloned()
                    }
                })
                .collect();
            let outputs = run(Ctx {
                node,
                inputs,
                opset: self.graph.opset,
                device: &self.device,
            })?;
            for (name, v) in node.outputs.iter().zip(outputs) {
                if !name.is_empty() {
                    env.insert(name.as_str(), v);
                }
            }
            for name in &self.last_use[i] {
                env.remove(name.as_str());
            }
        }
        let out = env
            .remove(self.graph.output.as_str())
            .or_else(|| self.constants.get(&self.graph.output).cloned())
            .ok_or_else(|| {
                OnnxError::Graph(format!(
                    "the output {:?} was not computed",
                    self.graph.output
                ))
            })?;
        let Value::Float { t, .. } = out else {
            return Err(OnnxError::Graph("the output is not a float tensor".into()));
        };
        let d = t.dims();
        let rest: usize = d[..R].iter().product::<usize>() / b.max(1);
        if d.iter().product::<usize>() != b * rest {
            return Err(OnnxError::Graph(format!(
                "the output {d:?} does not have one row per image"
            )));
        }
        Ok(t.reshape([b, rest]))
    }
}
