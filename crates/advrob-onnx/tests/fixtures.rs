//! The PyTorch fixtures (`examples/pytorch/make_onnx_fixtures.py`): for every model, exported by
//! both of PyTorch's ONNX exporters (and some at opset 11), the logits and the input gradient of the summed
//! cross-entropy match PyTorch's within 1e-4, on every backend this build has.

use std::path::PathBuf;

use advrob_onnx::{OnnxGraph, OnnxNet};
use burn::tensor::activation::log_softmax;
use burn::tensor::{Device, Int, Tensor, TensorData};

/// The models also exported at opset 11 (the operator forms of older files).
const OPSET_11: &[&str] = &["mlp_softmax", "lenet", "resblocks", "wide_resnet"];

const MODELS: &[&str] = &[
    "mlp_softmax",
    "lenet",
    "cnn_bn",
    "resblocks",
    "preact_resnet18",
    "wide_resnet",
];

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/pytorch/onnx")
}

fn devices() -> Vec<(&'static str, Device)> {
    #[allow(deprecated, unused_mut)]
    let mut v = vec![("ndarray", Device::ndarray())];
    #[cfg(feature = "flex")]
    v.push(("flex", Device::flex()));
    #[cfg(feature = "wgpu")]
    v.push((
        "wgpu",
        Device::wgpu(burn::tensor::DeviceKind::DefaultDevice),
    ));
    v
}

struct Fixture {
    x: (Vec<f32>, [usize; 4]),
    y: Vec<i64>,
    logits: Vec<f32>,
    grad: Vec<f32>,
}

fn f32s(t: &safetensors::tensor::TensorView<'_>) -> Vec<f32> {
    t.data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

fn fixture(name: &str) -> Fixture {
    let bytes = std::fs::read(dir().join(format!("{name}.safetensors"))).expect("fixture file");
    let st = safetensors::SafeTensors::deserialize(&bytes).expect("safetensors");
    let x = st.tensor("x").expect("x");
    let shape: [usize; 4] = x.shape().try_into().expect("x is [B, C, H, W]");
    let y = st.tensor("y").expect("y");
    let y = y
        .data()
        .chunks_exact(8)
        .map(|b| i64::from_le_bytes(b.try_into().expect("8 bytes")))
        .collect();
    Fixture {
        x: (f32s(&x), shape),
        y,
        logits: f32s(&st.tensor("logits").expect("logits")),
        grad: f32s(&st.tensor("grad").expect("grad")),
    }
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn logits_and_input_gradients_match_pytorch_on_every_backend() {
    for (backend, device) in devices() {
        for model in MODELS {
            let mut files = vec![format!("{model}.onnx"), format!("{model}_legacy.onnx")];
            if OPSET_11.contains(model) {
                files.push(format!("{model}_opset11.onnx"));
            }
            for file in files {
                let graph = OnnxGraph::load(&dir().join(&file)).unwrap_or_else(|e| panic!("{e}"));
                assert_eq!(graph.softmax_removed(), *model == "mlp_softmax", "{file}");
                let net = OnnxNet::new(graph, &device);
                let f = fixture(model);
                let x = Tensor::<4>::from_data(TensorData::new(f.x.0.clone(), f.x.1), &device);
                let logits = net
                    .forward(x.clone())
                    .unwrap_or_else(|e| panic!("{file}: {e}"));
                let got = logits.into_data().try_to_vec::<f32>().expect("f32");
                let d = max_diff(&got, &f.logits);
                assert!(
                    d < 1e-4,
                    "{backend} {file}: logits differ from PyTorch's by {d}"
                );

                let xg = x.autodiff().require_grad();
                let logits = net.forward(xg.clone()).expect("forward");
                let b = f.y.len();
                let y = Tensor::<1, Int>::from_data(TensorData::new(f.y.clone(), [b]), &device)
                    .autodiff();
                let picked = log_softmax(logits, 1).gather(1, y.reshape([b, 1]));
                let loss = picked.sum().neg();
                let grads = loss.backward();
                let g = xg.grad(&grads).expect("a gradient for the input");
                let got = g.into_data().try_to_vec::<f32>().expect("f32");
                let scale = f.grad.iter().fold(0f32, |m, v| m.max(v.abs())).max(1.0);
                let d = max_diff(&got, &f.grad);
                assert!(
                    d < 1e-4 * scale,
                    "{backend} {file}: input gradients differ from PyTorch's by {d} (largest {scale})"
                );
            }
        }
    }
}

#[test]
fn an_image_that_does_not_fit_is_refused_naming_both_shapes() {
    let graph = OnnxGraph::load(&dir().join("lenet.onnx")).expect("lenet");
    #[allow(deprecated)]
    let net = OnnxNet::new(graph, &Device::ndarray());
    let e = net
        .check_image([3, 32, 32])
        .expect_err("CIFAR images into an MNIST model");
    let msg = e.to_string();
    assert!(
        msg.contains("[?, 1, 28, 28]") && msg.contains("[1, 3, 32, 32]"),
        "{msg}"
    );
    net.check_image([1, 28, 28]).expect("MNIST fits");
}
