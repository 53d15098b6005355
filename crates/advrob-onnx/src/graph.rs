//! An ONNX file read into a graph this crate can run: nodes in order with their attributes, the
//! initializers on the host, the one image input and the one output, every operator checked
//! against [`crate::SUPPORTED_OPS`] before anything runs.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;

use prost::Message;

use crate::error::{OnnxError, Result};
use crate::proto::{self, data_type};

/// A constant on the host: an initializer, an attribute's tensor, a `Constant` node's value.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct HostTensor {
    pub(crate) dims: Vec<usize>,
    pub(crate) data: HostData,
}

/// The values of a [`HostTensor`]: floats (any float type read as f32; shared with the values
/// built from them, so that weights are held once on the host), integers (any integer type read
/// as i64) or booleans.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum HostData {
    F32(Arc<Vec<f32>>),
    I64(Vec<i64>),
    Bool(Vec<bool>),
}

/// A node's attribute.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Attr {
    Float(f32),
    Int(i64),
    Floats(Vec<f32>),
    Ints(Vec<i64>),
    Str(String),
    Tensor(HostTensor),
}

/// One operator application.
#[derive(Debug, Clone)]
pub(crate) struct Node {
    pub(crate) op: String,
    pub(crate) name: String,
    pub(crate) inputs: Vec<String>,
    pub(crate) outputs: Vec<String>,
    pub(crate) attrs: BTreeMap<String, Attr>,
}

/// An ONNX image classifier read from its file, not yet on a device: build it on one with
/// [`crate::OnnxNet::new`].
#[derive(Debug, Clone)]
pub struct OnnxGraph {
    pub(crate) nodes: Vec<Node>,
    pub(crate) initializers: Vec<(String, HostTensor)>,
    pub(crate) input: String,
    pub(crate) input_dims: Vec<Option<usize>>,
    pub(crate) output: String,
    pub(crate) opset: i64,
    pub(crate) softmax_removed: bool,
    pub(crate) producer: String,
}

impl OnnxGraph {
    /// Reads an ONNX file; errors name the file.
    pub fn load(path: &Path) -> Result<OnnxGraph> {
        let bytes = std::fs::read(path).map_err(|source| OnnxError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        OnnxGraph::from_bytes(&bytes).map_err(|e| e.in_file(path))
    }

    /// Reads an ONNX model from its bytes: decodes it, checks every operator against
    /// [`crate::SUPPORTED_OPS`], finds the one image input (the graph input that is not an
    /// initializer) and the one output. An output computed by a final `Softmax` over the class
    /// axis is replaced by that Softmax's input: attacks get the logits, the predictions are the
    /// same ([`OnnxGraph::softmax_removed`] says so).
    pub fn from_bytes(bytes: &[u8]) -> Result<OnnxGraph> {
        let model =
            proto::ModelProto::decode(bytes).map_err(|e| OnnxError::Decode(e.to_string()))?;
        let graph = model
            .graph
            .ok_or_else(|| OnnxError::Decode("the file holds no graph".into()))?;
        let opset = model
            .opset_import
            .iter()
            .find(|o| matches!(o.domain.as_deref(), None | Some("") | Some("ai.onnx")))
            .and_then(|o| o.version)
            .unwrap_or(1);
        let mut initializers = Vec::with_capacity(graph.initializer.len());
        let mut constant_names = BTreeSet::new();
        for t in &graph.initializer {
            let name = t.name.clone().unwrap_or_default();
            let value = host_tensor(t)
                .map_err(|e| OnnxError::Graph(format!("initializer {name:?}: {e}")))?;
            constant_names.insert(name.clone());
            initializers.push((name, value));
        }
        let mut nodes = Vec::with_capacity(graph.node.len());
        for (i, n) in graph.node.iter().enumerate() {
            nodes.push(node(n, i)?);
        }
        let inputs: Vec<&proto::ValueInfoProto> = graph
            .input
            .iter()
            .filter(|v| !constant_names.contains(v.name.as_deref().unwrap_or_default()))
            .collect();
        let [input] = inputs.as_slice() else {
            let names: Vec<&str> = inputs
                .iter()
                .map(|v| v.name.as_deref().unwrap_or(""))
                .collect();
            return Err(OnnxError::Graph(format!(
                "an image classifier has one input, this graph has {}: {names:?}",
                names.len()
            )));
        };
        let input_name = input.name.clone().unwrap_or_default();
        let input_dims = input
            .r#type
            .as_ref()
            .and_then(|t| t.tensor_type.as_ref())
            .and_then(|t| t.shape.as_ref())
            .map(|s| {
                s.dim
                    .iter()
                    .map(|d| d.dim_value.filter(|v| *v > 0).map(|v| v as usize))
                    .collect()
            })
            .ok_or_else(|| OnnxError::Graph(format!("input {input_name:?} has no shape")))?;
        if let Some(t) = input.r#type.as_ref().and_then(|t| t.tensor_type.as_ref())
            && t.elem_type.unwrap_or(data_type::FLOAT) != data_type::FLOAT
        {
            return Err(OnnxError::Graph(format!(
                "input {input_name:?} is of ONNX type {}, not float",
                t.elem_type.unwrap_or(0)
            )));
        }
        let [output] = graph.output.as_slice() else {
            return Err(OnnxError::Graph(format!(
                "an image classifier has one output (its logits), this graph has {}",
                graph.output.len()
            )));
        };
        let mut output = output.name.clone().unwrap_or_default();
        let mut softmax_removed = false;
        if let Some(last) = nodes
            .iter()
            .rev()
            .find(|n| n.outputs.first() == Some(&output))
            && last.op == "Softmax"
            && softmax_over_last_axis(last, opset)
        {
            output = last.inputs[0].clone();
            softmax_removed = true;
        }
        let graph = OnnxGraph {
            nodes,
            initializers,
            input: input_name,
            input_dims,
            output,
            opset,
            softmax_removed,
            producer: format!(
                "{} {}",
                model.producer_name.unwrap_or_default(),
                model.producer_version.unwrap_or_default()
            )
            .trim()
            .to_string(),
        };
        graph.check_wiring()?;
        Ok(graph)
    }

    /// Every value a node reads is the input, an initializer or an earlier node's output (ONNX
    /// requires the nodes in topological order), and the output is computed.
    fn check_wiring(&self) -> Result<()> {
        let mut known: BTreeSet<&str> = self.initializers.iter().map(|(n, _)| n.as_str()).collect();
        known.insert(&self.input);
        known.insert("");
        for n in &self.nodes {
            for i in &n.inputs {
                if !known.contains(i.as_str()) {
                    return Err(OnnxError::Node {
                        node: n.name.clone(),
                        op: n.op.clone(),
                        reason: format!(
                            "reads {i:?}, which no earlier node, initializer or input defines"
                        ),
                    });
                }
            }
            known.extend(n.outputs.iter().map(String::as_str));
        }
        if !known.contains(self.output.as_str()) {
            return Err(OnnxError::Graph(format!(
                "no node computes the output {:?}",
                self.output
            )));
        }
        Ok(())
    }

    /// The input's name.
    pub fn input_name(&self) -> &str {
        &self.input
    }

    /// The input's declared shape; `None` for a free dimension (the batch).
    pub fn input_dims(&self) -> &[Option<usize>] {
        &self.input_dims
    }

    /// The input shape as the file declares it, free dimensions as `?`: `[?, 1, 28, 28]`.
    pub fn input_shape_text(&self) -> String {
        let dims: Vec<String> = self
            .input_dims
            .iter()
            .map(|d| d.map_or_else(|| "?".to_string(), |v| v.to_string()))
            .collect();
        format!("[{}]", dims.join(", "))
    }

    /// Whether the file's output was a final Softmax that this graph leaves out (its output is
    /// the Softmax's input, the logits).
    pub fn softmax_removed(&self) -> bool {
        self.softmax_removed
    }

    /// The default domain's operator-set version the file was written for.
    pub fn opset(&self) -> i64 {
        self.opset
    }

    /// The program that wrote the file and its version, as the file says (`pytorch 2.9.0`).
    pub fn producer(&self) -> &str {
        &self.producer
    }

    /// The operators the graph uses, sorted.
    pub fn operators(&self) -> Vec<&str> {
        let ops: BTreeSet<&str> = self.nodes.iter().map(|n| n.op.as_str()).collect();
        ops.into_iter().collect()
    }

    /// Number of nodes.
    pub fn num_nodes(&self) -> usize {
        self.nodes.len()
    }

    /// The float initializers (the weights) with their names and dimensions, in the file's order.
    pub fn weights(&self) -> Vec<(&str, &[usize], &[f32])> {
        self.initializers
            .iter()
            .filter_map(|(n, t)| match &t.data {
                HostData::F32(v) => Some((n.as_str(), t.dims.as_slice(), v.as_slice())),
                _ => None,
            })
            .collect()
    }

    /// Number of weights (the elements of the float initializers).
    pub fn num_weights(&self) -> usize {
        self.initializers
            .iter()
            .filter(|(_, t)| matches!(t.data, HostData::F32(_)))
            .map(|(_, t)| t.dims.iter().product::<usize>())
            .sum()
    }
}

/// Whether a Softmax node normalises over the last axis of a `[B, classes]` output (opset 13 and
/// later: `axis` −1 by default; earlier: the axis-1 flattening, the same for rank 2).
fn softmax_over_last_axis(n: &Node, opset: i64) -> bool {
    let axis = match n.attrs.get("axis") {
        Some(Attr::Int(a)) => *a,
        _ if opset >= 13 => -1,
        _ => 1,
    };
    axis == -1 || axis == 1
}

fn node(n: &proto::NodeProto, index: usize) -> Result<Node> {
    let op = n.op_type.clone().unwrap_or_default();
    let name = n
        .name
        .clone()
        .filter(|s| !s.is_empty())
        .or_else(|| n.output.first().cloned())
        .unwrap_or_else(|| format!("#{index}"));
    let domain = n.domain.as_deref().unwrap_or("");
    if !matches!(domain, "" | "ai.onnx") {
        return Err(OnnxError::Unsupported {
            op: format!("{domain}::{op}"),
            node: name,
        });
    }
    if !crate::SUPPORTED_OPS.contains(&op.as_str()) {
        return Err(OnnxError::Unsupported { op, node: name });
    }
    let mut attrs = BTreeMap::new();
    for a in &n.attribute {
        let key = a.name.clone().unwrap_or_default();
        if a.ref_attr_name.is_some() {
            return Err(OnnxError::Node {
                node: name,
                op,
                reason: format!("attribute {key:?} refers to a function's attribute"),
            });
        }
        let value = attr(a).map_err(|reason| OnnxError::Node {
            node: name.clone(),
            op: op.clone(),
            reason: format!("attribute {key:?}: {reason}"),
        })?;
        if let Some(v) = value {
            attrs.insert(key, v);
        }
    }
    Ok(Node {
        op,
        name,
        inputs: n.input.clone(),
        outputs: n.output.clone(),
        attrs,
    })
}

/// `AttributeType` values (onnx.proto).
const A_FLOAT: i32 = 1;
const A_INT: i32 = 2;
const A_STRING: i32 = 3;
const A_TENSOR: i32 = 4;
const A_FLOATS: i32 = 6;
const A_INTS: i32 = 7;

/// An attribute's value by its declared type; `None` for types no supported operator reads
/// (graphs, strings lists): an operator that needs one says so when it runs.
fn attr(a: &proto::AttributeProto) -> std::result::Result<Option<Attr>, String> {
    Ok(match a.r#type {
        Some(A_FLOAT) => Some(Attr::Float(a.f.unwrap_or(0.0))),
        Some(A_INT) => Some(Attr::Int(a.i.unwrap_or(0))),
        Some(A_STRING) => Some(Attr::Str(
            String::from_utf8(a.s.clone().unwrap_or_default()).map_err(|e| e.to_string())?,
        )),
        Some(A_TENSOR) => match &a.t {
            Some(t) => Some(Attr::Tensor(host_tensor(t)?)),
            None => return Err("a tensor attribute without its tensor".into()),
        },
        Some(A_FLOATS) => Some(Attr::Floats(a.floats.clone())),
        Some(A_INTS) => Some(Attr::Ints(a.ints.clone())),
        _ => None,
    })
}

/// A `TensorProto` on the host.
pub(crate) fn host_tensor(t: &proto::TensorProto) -> std::result::Result<HostTensor, String> {
    if t.data_location == Some(1) || !t.external_data.is_empty() {
        return Err(
            "its values are stored outside the file (ONNX external data): export with the weights inside (torch.onnx.export(..., external_data=False)) or onnx.save(model, path, save_as_external_data=False)".into(),
        );
    }
    let dims = t
        .dims
        .iter()
        .map(|&d| usize::try_from(d).map_err(|_| format!("negative dimension {d}")))
        .collect::<std::result::Result<Vec<usize>, String>>()?;
    let n: usize = dims.iter().product();
    let raw = t.raw_data.as_deref().filter(|r| !r.is_empty());
    let data = match t.data_type.unwrap_or(0) {
        data_type::FLOAT => HostData::F32(Arc::new(match raw {
            Some(r) => chunks::<4>(r, n)?.map(f32::from_le_bytes).collect(),
            None => t.float_data.clone(),
        })),
        data_type::DOUBLE => HostData::F32(Arc::new(match raw {
            Some(r) => chunks::<8>(r, n)?
                .map(|b| f64::from_le_bytes(b) as f32)
                .collect(),
            None => t.double_data.iter().map(|&v| v as f32).collect(),
        })),
        data_type::INT64 => HostData::I64(match raw {
            Some(r) => chunks::<8>(r, n)?.map(i64::from_le_bytes).collect(),
            None => t.int64_data.clone(),
        }),
        data_type::INT32 => HostData::I64(match raw {
            Some(r) => chunks::<4>(r, n)?
                .map(|b| i64::from(i32::from_le_bytes(b)))
                .collect(),
            None => t.int32_data.iter().map(|&v| i64::from(v)).collect(),
        }),
        data_type::INT8 => HostData::I64(match raw {
            Some(r) => r.iter().map(|&b| i64::from(b as i8)).collect(),
            None => t.int32_data.iter().map(|&v| i64::from(v)).collect(),
        }),
        data_type::UINT8 => HostData::I64(match raw {
            Some(r) => r.iter().map(|&b| i64::from(b)).collect(),
            None => t.int32_data.iter().map(|&v| i64::from(v)).collect(),
        }),
        data_type::BOOL => HostData::Bool(match raw {
            Some(r) => r.iter().map(|&b| b != 0).collect(),
            None => t.int32_data.iter().map(|&v| v != 0).collect(),
        }),
        other => {
            return Err(format!(
                "ONNX data type {other} is not read (float, double, int8/32/64, uint8, bool are)"
            ));
        }
    };
    let len = match &data {
        HostData::F32(v) => v.len(),
        HostData::I64(v) => v.len(),
        HostData::Bool(v) => v.len(),
    };
    if len != n {
        return Err(format!(
            "{len} values for dimensions {dims:?} ({n} elements)"
        ));
    }
    Ok(HostTensor { dims, data })
}

/// `raw` as `n` little-endian values of `N` bytes each.
fn chunks<const N: usize>(
    raw: &[u8],
    n: usize,
) -> std::result::Result<impl Iterator<Item = [u8; N]> + '_, String> {
    if raw.len() != n * N {
        return Err(format!(
            "{} bytes of raw data for {n} values of {N} bytes",
            raw.len()
        ));
    }
    Ok(raw.chunks_exact(N).map(|c| {
        let mut b = [0u8; N];
        b.copy_from_slice(c);
        b
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{
        GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorShapeProto, TypeProto,
        TypeProtoTensor, ValueInfoProto,
    };

    fn value(name: &str, dims: &[i64]) -> ValueInfoProto {
        ValueInfoProto {
            name: Some(name.into()),
            r#type: Some(TypeProto {
                tensor_type: Some(TypeProtoTensor {
                    elem_type: Some(data_type::FLOAT),
                    shape: Some(TensorShapeProto {
                        dim: dims
                            .iter()
                            .map(|&d| proto::Dimension {
                                dim_value: (d > 0).then_some(d),
                                dim_param: (d <= 0).then(|| "batch".to_string()),
                            })
                            .collect(),
                    }),
                }),
            }),
        }
    }

    fn model(ops: &[(&str, &str)]) -> Vec<u8> {
        model_with_input(ops, &[0, 10])
    }

    fn model_with_input(ops: &[(&str, &str)], input: &[i64]) -> Vec<u8> {
        let mut node = Vec::new();
        let mut prev = "input".to_string();
        for (i, (op, domain)) in ops.iter().enumerate() {
            let out = format!("v{i}");
            node.push(NodeProto {
                input: vec![prev.clone()],
                output: vec![out.clone()],
                name: Some(format!("node{i}")),
                op_type: Some(op.to_string()),
                domain: Some(domain.to_string()),
                attribute: Vec::new(),
            });
            prev = out;
        }
        ModelProto {
            ir_version: Some(8),
            producer_name: Some("test".into()),
            producer_version: None,
            graph: Some(GraphProto {
                node,
                name: Some("g".into()),
                initializer: Vec::new(),
                input: vec![value("input", input)],
                output: vec![value(&prev, input)],
                value_info: Vec::new(),
            }),
            opset_import: vec![OperatorSetIdProto {
                domain: Some(String::new()),
                version: Some(17),
            }],
            functions: Vec::new(),
        }
        .encode_to_vec()
    }

    #[test]
    fn an_unsupported_operator_is_refused_naming_it_its_node_and_the_supported_list() {
        let e = OnnxGraph::from_bytes(&model(&[("Relu", ""), ("Lstm", "")]))
            .expect_err("Lstm")
            .to_string();
        assert!(
            e.contains("Lstm") && e.contains("node1") && e.contains("Conv, Div"),
            "{e}"
        );
        let e = OnnxGraph::from_bytes(&model(&[("Relu", "com.microsoft")]))
            .expect_err("another domain")
            .to_string();
        assert!(e.contains("com.microsoft::Relu"), "{e}");
    }

    #[test]
    fn a_supported_graph_reads_and_a_final_softmax_is_left_out() {
        let g = OnnxGraph::from_bytes(&model(&[("Relu", ""), ("Softmax", "")])).expect("reads");
        assert!(g.softmax_removed());
        assert_eq!(g.output, "v0");
        assert_eq!(g.input_shape_text(), "[?, 10]");
        assert_eq!(g.operators(), vec!["Relu", "Softmax"]);
        let g = OnnxGraph::from_bytes(&model(&[("Softmax", ""), ("Relu", "")])).expect("reads");
        assert!(!g.softmax_removed());
    }

    #[test]
    fn images_reach_an_input_of_rank_two_three_or_four_in_row_major_order() {
        use burn::tensor::{Device, Tensor, TensorData};
        #[allow(deprecated)]
        let device = Device::ndarray();
        let x: Vec<f32> = (0..8).map(|i| i as f32 - 3.5).collect();
        let images = Tensor::<4>::from_data(TensorData::new(x.clone(), [2, 1, 2, 2]), &device);
        let relu: Vec<f32> = x.iter().map(|v| v.max(0.0)).collect();
        for input in [&[0, 4][..], &[0, 2, 2], &[0, 1, 2, 2]] {
            let g =
                OnnxGraph::from_bytes(&model_with_input(&[("Relu", "")], input)).expect("reads");
            let net = crate::OnnxNet::new(g, &device);
            net.check_image([1, 2, 2]).expect("fits");
            let y = net.forward(images.clone()).expect("runs");
            assert_eq!(y.dims(), [2, 4]);
            assert_eq!(
                y.into_data().try_to_vec::<f32>().expect("f32"),
                relu,
                "{input:?}"
            );
            // three channels do not fit a one-channel input of rank 3, nor 5 values a row of 4
            assert!(net.check_image([3, 2, 2]).is_err());
        }
    }

    #[test]
    fn bytes_that_are_not_an_onnx_model_are_refused() {
        assert!(matches!(
            OnnxGraph::from_bytes(b"\xff\xff\xff not protobuf"),
            Err(OnnxError::Decode(_))
        ));
        // a valid protobuf without a graph
        let empty = ModelProto {
            ir_version: Some(8),
            producer_name: None,
            producer_version: None,
            graph: None,
            opset_import: Vec::new(),
            functions: Vec::new(),
        }
        .encode_to_vec();
        let e = OnnxGraph::from_bytes(&empty)
            .expect_err("no graph")
            .to_string();
        assert!(e.contains("no graph"), "{e}");
    }
}
