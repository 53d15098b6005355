//! Property tests of what the experiment library reads from users and from disk: no matrix file
//! and no record log makes it panic; whatever it rejects is an error naming what is wrong.

use advrob_experiment::{Matrix, Registry, RunDir, read_run};
use proptest::prelude::*;

/// Matrix files near valid ones: each line of a real matrix, kept, dropped or replaced.
const LINES: &[&str] = &[
    "name = \"p\"",
    "eps = [0.0, 0.1]",
    "eps = [0.1, 0.1]",
    "eps = [-0.0, 0.0]",
    "eps = [2.0]",
    "seeds = [1, 2]",
    "seeds = []",
    "datasets = [\"mnist\"]",
    "datasets = [\"cifar\"]",
    "backends = [\"ndarray\"]",
    "backends = [\"tpu\"]",
    "[train]",
    "epochs = 0",
    "epochs = 1",
    "batch_size = 0",
    "lr = -1.0",
    "loss = \"mse\"",
    "[eval]",
    "test_limit = 0",
    "test_limit = 5",
    "[[models]]",
    "name = \"a\"",
    "name = \"../a\"",
    "hidden = [8]",
    "hidden = [0]",
    "hidden = [100000000, 100000000]",
    "arch = \"lenet\"",
    "from = \"a\"",
    "teacher = \"a\"",
    "defense = { kind = \"distillation\", temperature = 0.0 }",
    "defense = { kind = \"label-smoothing\", alpha = 0.1 }",
    "defense = { kind = \"adversarial-training\", eps = 0.1 }",
    "[[attacks]]",
    "kind = \"fgsm\"",
    "kind = \"pgd\"",
    "kind = \"ensemble\"",
    "kind = \"nope\"",
    "steps = 0",
    "target = { shift = 10 }",
    "target = { shift = 3 }",
    "eps = [0.3]",
    "attacks = []",
    "= = =",
    "[[",
];

proptest! {
    #[test]
    fn stored_floats_read_back_bit_for_bit(bits in any::<u64>()) {
        let x = f64::from_bits(bits);
        prop_assume!(x.is_finite());
        let text = serde_json::to_string(&x).expect("serialise");
        let back: f64 = serde_json::from_str(&text).expect("parse");
        prop_assert_eq!(back.to_bits(), x.to_bits(), "{}", text);
    }

    #[test]
    fn any_text_is_a_matrix_or_an_error(text in "\\PC{0,200}") {
        if let Ok(m) = Matrix::from_toml(&text) {
            let _ = m.check(&Registry::default());
        }
    }

    #[test]
    fn recombined_matrix_lines_are_a_matrix_or_an_error(
        picks in proptest::collection::vec(0usize..LINES.len(), 0..16)
    ) {
        let text: String = picks.iter().map(|&i| format!("{}\n", LINES[i])).collect();
        if let Ok(m) = Matrix::from_toml(&text) {
            match m.check(&Registry::default()) {
                Ok(()) => {
                    // a valid matrix: every model has a name a directory can take
                    for model in &m.models {
                        prop_assert!(!model.name.contains('/') && !model.name.is_empty());
                    }
                }
                Err(e) => prop_assert!(!e.to_string().is_empty()),
            }
        }
    }

    #[test]
    fn any_record_log_is_read_or_refused_naming_it(
        body in proptest::collection::vec(any::<u8>(), 0..400),
        prefix_fixture in any::<bool>(),
    ) {
        let dir = tempfile::tempdir().expect("temp");
        let run = RunDir::new(dir.path());
        std::fs::create_dir_all(run.record_logs()).expect("dir");
        let log = run.record_logs().join("w.jsonl");
        let mut bytes = Vec::new();
        if prefix_fixture {
            bytes.extend_from_slice(include_str!("fixtures/record.json").replace('\n', "").as_bytes());
            bytes.push(b'\n');
        }
        bytes.extend_from_slice(&body);
        std::fs::write(&log, &bytes).expect("write");
        match read_run(&run) {
            Ok(r) => prop_assert!(r.records.len() <= 1 + bytes.iter().filter(|&&b| b == b'\n').count()),
            Err(e) => prop_assert!(e.to_string().contains("w.jsonl"), "{}", e),
        }
    }
}
