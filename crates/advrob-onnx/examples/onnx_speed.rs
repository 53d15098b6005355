//! Times an ONNX model's forward pass and its input gradient on one backend.
//!
//! ```sh
//! cargo run -p advrob-onnx --example onnx_speed -- model.onnx [BATCH] [ROUNDS] [BACKEND]
//! ```
//!
//! BACKEND is `ndarray` (default) or, in a build with the features, `flex` or `wgpu`. Images are
//! `[BATCH, C, H, W]` with the graph's declared C, H and W.

use std::time::Instant;

use advrob_onnx::{OnnxGraph, OnnxNet};
use burn::tensor::{Device, Tensor, TensorData};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let path = args
        .get(1)
        .ok_or("usage: onnx_speed MODEL.onnx [BATCH] [ROUNDS] [BACKEND]")?;
    let batch: usize = args.get(2).map_or(Ok(256), |s| s.parse())?;
    let rounds: usize = args.get(3).map_or(Ok(10), |s| s.parse())?;
    let backend = args.get(4).map_or("ndarray", String::as_str);
    #[allow(deprecated)]
    let device = match backend {
        "ndarray" => Device::ndarray(),
        #[cfg(feature = "flex")]
        "flex" => Device::flex(),
        #[cfg(feature = "wgpu")]
        "wgpu" => Device::wgpu(burn::tensor::DeviceKind::DefaultDevice),
        other => return Err(format!("backend {other} is not in this build").into()),
    };
    let graph = OnnxGraph::load(std::path::Path::new(path))?;
    let dims: Vec<usize> = graph.input_dims()[1..]
        .iter()
        .map(|d| d.ok_or("the image dimensions must be fixed"))
        .collect::<Result<_, _>>()?;
    let [c, h, w] = dims[..] else {
        return Err("the input must be [N, C, H, W]".into());
    };
    let net = OnnxNet::new(graph, &device);
    let x: Vec<f32> = (0..batch * c * h * w)
        .map(|i| (i % 251) as f32 / 251.0)
        .collect();
    let x = Tensor::<4>::from_data(TensorData::new(x, [batch, c, h, w]), &device);
    for phase in ["forward", "gradient"] {
        let mut times = Vec::new();
        for round in 0..=rounds {
            let t = Instant::now();
            if phase == "forward" {
                let y = net.forward(x.clone())?;
                let _ = y.into_data();
            } else {
                let xg = x.clone().autodiff().require_grad();
                let loss = net.forward(xg.clone())?.sum();
                let g = xg.grad(&loss.backward()).ok_or("no gradient")?;
                let _ = g.into_data();
            }
            if round > 0 {
                times.push(t.elapsed().as_secs_f64() * 1e3);
            }
        }
        times.sort_by(f64::total_cmp);
        println!(
            "{backend} {phase} batch {batch}: median {:.2} ms, min {:.2} ms ({} rounds)",
            times[times.len() / 2],
            times[0],
            rounds
        );
    }
    Ok(())
}
