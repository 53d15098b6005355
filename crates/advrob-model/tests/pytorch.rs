//! Weights written by PyTorch (`safetensors.torch.save_file(model.state_dict(), ...)`, by
//! `examples/pytorch/make_fixtures.py`) load onto advrob's architectures and give PyTorch's
//! logits: the fixtures hold four inputs and the outputs PyTorch computed for them.

use std::path::PathBuf;

use advrob_model::backend::on_test_backends;
use advrob_model::checkpoint::{NameMap, import_pytorch};
use advrob_model::{FgsmTutorialConfig, LenetConfig, MlpConfig, NetConfig};
use burn::tensor::{Tensor, TensorData};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// The fixture's inputs `[4, 28, 28]` and PyTorch's outputs `[4, 10]`.
fn expected(arch: &str) -> (Vec<f32>, Vec<f32>) {
    let text = std::fs::read_to_string(fixture(&format!("{arch}.json"))).expect("fixture json");
    let v: serde_json::Value = serde_json::from_str(&text).expect("json");
    let flat = |key: &str| -> Vec<f32> {
        v[key]
            .as_array()
            .expect("rows")
            .iter()
            .flat_map(|row| {
                row.as_array()
                    .expect("row")
                    .iter()
                    .map(|x| x.as_f64().expect("number") as f32)
            })
            .collect()
    };
    (flat("inputs"), flat("logits"))
}

fn check(arch: &str, config: NetConfig, names: &NameMap) {
    let (inputs, logits) = expected(arch);
    assert_eq!(inputs.len(), 4 * 784);
    on_test_backends(|device| {
        let net = import_pytorch(
            &fixture(&format!("{arch}.safetensors")),
            &config,
            names,
            device,
        )
        .expect("import");
        let x = Tensor::<4>::from_data(TensorData::new(inputs.clone(), [4, 1, 28, 28]), device);
        let out = net
            .forward(x)
            .into_data()
            .try_into_vec_as::<f32>()
            .expect("f32");
        for (i, (a, b)) in out.iter().zip(&logits).enumerate() {
            assert!(
                (a - b).abs() <= 1e-5,
                "{arch} output {i}: advrob {a}, PyTorch {b}"
            );
        }
    });
}

#[test]
fn lenet_matches_pytorch() {
    check(
        "lenet",
        NetConfig::Lenet(LenetConfig::new()),
        &NameMap::new(),
    );
}

#[test]
fn the_fgsm_tutorial_net_matches_pytorch() {
    check(
        "fgsm-tutorial",
        NetConfig::FgsmTutorial(FgsmTutorialConfig::new()),
        &NameMap::new(),
    );
}

#[test]
fn an_mlp_with_mapped_names_matches_pytorch() {
    let names: NameMap = [("layers.0", "fc1"), ("layers.1", "fc2")]
        .into_iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    check(
        "mlp",
        NetConfig::Mlp(MlpConfig::new().with_hidden(vec![128])),
        &names,
    );
}

#[test]
fn mismatches_are_errors_that_say_what_was_expected_and_found() {
    on_test_backends(|device| {
        // LeNet's weights as an MLP: nothing is called layers.0
        let e = import_pytorch(
            &fixture("lenet.safetensors"),
            &NetConfig::Mlp(MlpConfig::new()),
            &NameMap::new(),
            device,
        )
        .expect_err("wrong architecture")
        .to_string();
        assert!(
            e.contains("no tensor layers.0.weight") && e.contains("conv1.weight"),
            "{e}"
        );
        // the MLP's weights with the wrong hidden width
        let names: NameMap = [("layers.0", "fc1"), ("layers.1", "fc2")]
            .into_iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        let e = import_pytorch(
            &fixture("mlp.safetensors"),
            &NetConfig::Mlp(MlpConfig::new().with_hidden(vec![64])),
            &names,
            device,
        )
        .expect_err("wrong width")
        .to_string();
        assert!(
            e.contains("fc1.weight has shape [128, 784]") && e.contains("[64, 784]"),
            "{e}"
        );
        // the tutorial net's weights as LeNet: fc3 missing, and its shapes differ
        let e = import_pytorch(
            &fixture("fgsm-tutorial.safetensors"),
            &NetConfig::Lenet(LenetConfig::new()),
            &NameMap::new(),
            device,
        )
        .expect_err("wrong net")
        .to_string();
        assert!(e.contains("conv1.weight has shape"), "{e}");
    });
}
