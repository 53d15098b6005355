//! Fixtures shared by the attacks' unit tests.

use advrob_model::{Classifier, DeployConfig, Deployed, MlpConfig};
use burn::tensor::{Device, Int, Tensor, TensorData};

/// A small MLP deployed behind 16-level input quantisation (a zero input gradient: masked), `n`
/// seeded images `[n, 1, 28, 28]` in [0, 1] with the model's own predictions as labels (every
/// example starts correctly classified), and the images' pixels.
pub(crate) fn quantised_mlp(
    device: &Device,
    n: usize,
) -> (Deployed, Tensor<4>, Tensor<1, Int>, Vec<f32>) {
    let mlp = MlpConfig::new()
        .with_hidden(vec![16])
        .with_seed(4)
        .init(device)
        .expect("init");
    let model = Deployed {
        net: mlp.into(),
        config: DeployConfig::new().with_quantize(Some(16)),
    };
    let x: Vec<f32> = (0..n * 784)
        .map(|i| ((i * 31) % 97) as f32 / 96.0)
        .collect();
    let images = Tensor::<4>::from_data(TensorData::new(x.clone(), [n, 1, 28, 28]), device);
    let labels = model.logits(images.clone()).argmax(1).flatten::<1>(0, 1);
    (model, images, labels, x)
}
