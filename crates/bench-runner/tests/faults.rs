//! The fault suite: the real `bench-runner` on small synthetic data, fed bad input and faults the
//! way a new user (or a cluster) would. Every probe asserts its exact outcome: either the command
//! fails with status 1 and an error that names the file or the field (no panic, no sentence said
//! twice, no record written), or the result is correct.
//!
//! The refusals are a table ([`probes`]); the faults that need a finished run (killed writers,
//! concurrent writers, damaged checkpoints and records, a full disk, a read-only rerun) are tests
//! of their own below.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use advrob_data::{idx, synthetic};
use common::{
    bench_runner, bench_runner_env, complete_lines, lines, logs, records, same_tables, text,
};

/// Training and test examples of the probes' dataset `ds`.
const TRAIN: usize = 60;
const TEST: usize = 20;

/// A directory holding the probes' dataset as `ds`.
fn with_dataset() -> tempfile::TempDir {
    let tmp = tempfile::tempdir().expect("temp");
    synthetic::write_dataset(&tmp.path().join("ds"), TRAIN, TEST, 11).expect("dataset");
    tmp
}

/// The quick run most probes start from (flags a probe changes are left out of it).
fn run_args(extra: &[&'static str]) -> Vec<&'static str> {
    let mut v = vec![
        "run",
        "--dataset-dir",
        "ds",
        "--out",
        "out",
        "--backends",
        "ndarray",
    ];
    v.extend_from_slice(extra);
    v
}

// ---- the table of refusals --------------------------------------------------------------------

/// One bad input: `setup` spoils the directory (which holds `ds`), `args` runs, and the command
/// must fail saying every one of `says`.
struct Probe {
    name: &'static str,
    setup: fn(&Path),
    args: Vec<&'static str>,
    env: &'static [(&'static str, &'static str)],
    says: &'static [&'static str],
}

fn probe(
    name: &'static str,
    setup: fn(&Path),
    args: Vec<&'static str>,
    says: &'static [&'static str],
) -> Probe {
    Probe {
        name,
        setup,
        args,
        env: &[],
        says,
    }
}

fn nothing(_: &Path) {}

/// Rewrites the decompressed bytes of dataset file `name` (gzip again).
fn rewrite(dir: &Path, name: &str, f: impl FnOnce(Vec<u8>) -> Vec<u8>) {
    let p = dir.join("ds").join(format!("{name}.gz"));
    let bytes = idx::read_maybe_gz(&p).expect("read");
    idx::write_file(&p, &f(bytes), true).expect("write");
}

/// Replaces dataset file `name` by `bytes` as they are (no gzip).
fn replace_raw(dir: &Path, name: &str, bytes: &[u8]) {
    std::fs::write(dir.join("ds").join(format!("{name}.gz")), bytes).expect("write");
}

const TRAIN_IMAGES: &str = "train-images-idx3-ubyte";
const TRAIN_LABELS: &str = "train-labels-idx1-ubyte";
const TEST_IMAGES: &str = "t10k-images-idx3-ubyte";
const TEST_LABELS: &str = "t10k-labels-idx1-ubyte";

/// Header field `at` (a big-endian u32) of `bytes` set to `v`.
fn set_u32(mut bytes: Vec<u8>, at: usize, v: u32) -> Vec<u8> {
    bytes[at..at + 4].copy_from_slice(&v.to_be_bytes());
    bytes
}

/// An image file of `n` images of `side`×`side`.
fn images(n: usize, side: usize) -> Vec<u8> {
    idx::encode_images(&idx::IdxImages {
        count: n,
        channels: 1,
        rows: side,
        cols: side,
        pixels: vec![7; n * side * side],
    })
}

fn write_toml(dir: &Path, text: &str) {
    std::fs::write(dir.join("m.toml"), text).expect("matrix");
}

/// A matrix file's quick training section, after which a probe adds its models and attacks.
const QUICK_TRAIN: &str = "eps = [0.0, 0.1]\n[train]\nepochs = 1\nbatch_size = 20\n";

fn toml_run() -> Vec<&'static str> {
    run_args(&["--config", "m.toml"])
}

/// The data probes: every way an IDX directory can be wrong.
fn data_probes() -> Vec<Probe> {
    let quick = || run_args(&["--epochs", "1", "--hidden", "8"]);
    vec![
        probe(
            "idx: not gzip and not IDX",
            |d| replace_raw(d, TRAIN_IMAGES, b"hello, not a dataset"),
            quick(),
            &[
                "ds/train-images-idx3-ubyte.gz: wrong IDX magic number: expected 0x00000803, found 0x68656c6c",
            ],
        ),
        probe(
            "idx: empty file",
            |d| replace_raw(d, TRAIN_IMAGES, b""),
            quick(),
            &[
                "ds/train-images-idx3-ubyte.gz: truncated or oversized IDX file: header promises 16 bytes, found 0",
            ],
        ),
        probe(
            "idx: gzip stream cut in half",
            |d| {
                let p = d.join("ds").join(format!("{TEST_IMAGES}.gz"));
                let b = std::fs::read(&p).expect("read");
                std::fs::write(&p, &b[..b.len() / 2]).expect("write");
            },
            quick(),
            &["ds/t10k-images-idx3-ubyte.gz: not a valid gzip stream"],
        ),
        probe(
            "idx: label magic on an image file",
            |d| rewrite(d, TRAIN_IMAGES, |b| set_u32(b, 0, 0x801)),
            quick(),
            &[
                "ds/train-images-idx3-ubyte.gz: wrong IDX magic number: expected 0x00000803, found 0x00000801",
            ],
        ),
        probe(
            "idx: image magic on a label file",
            |d| rewrite(d, TRAIN_LABELS, |b| set_u32(b, 0, 0x803)),
            quick(),
            &[
                "ds/train-labels-idx1-ubyte.gz: wrong IDX magic number: expected 0x00000801, found 0x00000803",
            ],
        ),
        probe(
            "idx: two-dimensional magic",
            |d| rewrite(d, TEST_IMAGES, |b| set_u32(b, 0, 0x802)),
            quick(),
            &[
                "ds/t10k-images-idx3-ubyte.gz: wrong IDX magic number",
                "found 0x00000802",
            ],
        ),
        probe(
            "idx: pixels missing",
            |d| {
                rewrite(d, TRAIN_IMAGES, |mut b| {
                    b.truncate(b.len() - 100);
                    b
                })
            },
            quick(),
            &[
                "ds/train-images-idx3-ubyte.gz: truncated or oversized IDX file: header promises 47056 bytes, found 46956",
            ],
        ),
        probe(
            "idx: bytes after the pixels",
            |d| {
                rewrite(d, TRAIN_IMAGES, |mut b| {
                    b.extend([1, 2]);
                    b
                })
            },
            quick(),
            &[
                "ds/train-images-idx3-ubyte.gz: truncated or oversized IDX file: header promises 47056 bytes, found 47058",
            ],
        ),
        probe(
            "idx: a count of 2^32-1 images",
            |d| rewrite(d, TRAIN_IMAGES, |b| set_u32(b, 4, u32::MAX)),
            quick(),
            &[
                "ds/train-images-idx3-ubyte.gz: truncated or oversized IDX file: header promises 3367254359296 bytes",
            ],
        ),
        probe(
            "idx: images of 0 rows",
            |d| rewrite(d, TRAIN_IMAGES, |b| set_u32(b, 8, 0)),
            quick(),
            &["ds/train-images-idx3-ubyte.gz: images of 0x28 pixels hold nothing"],
        ),
        probe(
            "idx: labels missing",
            |d| {
                rewrite(d, TRAIN_LABELS, |mut b| {
                    b.truncate(b.len() - 10);
                    b
                })
            },
            quick(),
            &[
                "ds/train-labels-idx1-ubyte.gz: truncated or oversized IDX file: header promises 68 bytes, found 58",
            ],
        ),
        probe(
            "idx: fewer labels than images",
            |d| {
                rewrite(d, TRAIN_LABELS, |b| {
                    let mut b = set_u32(b, 4, 50);
                    b.truncate(58);
                    b
                })
            },
            quick(),
            &[
                "ds/train-images-idx3-ubyte.gz holds 60 images but ds/train-labels-idx1-ubyte.gz holds 50 labels",
            ],
        ),
        probe(
            "idx: label 10",
            |d| {
                rewrite(d, TEST_LABELS, |mut b| {
                    b[8 + 3] = 10;
                    b
                })
            },
            quick(),
            &["ds/t10k-labels-idx1-ubyte.gz: label 10 at index 3 is outside 0..=9"],
        ),
        probe(
            "idx: label 255",
            |d| {
                rewrite(d, TRAIN_LABELS, |mut b| {
                    b[8 + 59] = 255;
                    b
                })
            },
            quick(),
            &["ds/train-labels-idx1-ubyte.gz: label 255 at index 59 is outside 0..=9"],
        ),
        probe(
            "idx: a file missing",
            |d| std::fs::remove_file(d.join("ds").join(format!("{TEST_IMAGES}.gz"))).expect("rm"),
            quick(),
            &[
                "ds: neither t10k-images-idx3-ubyte nor t10k-images-idx3-ubyte.gz is in this directory",
            ],
        ),
        probe(
            "idx: test images of another size than the training images",
            |d| {
                idx::write_file(
                    &d.join("ds").join(format!("{TEST_IMAGES}.gz")),
                    &images(TEST, 20),
                    true,
                )
                .expect("write");
            },
            quick(),
            &["ds/t10k-images-idx3-ubyte.gz: images are 20x20, expected 28x28"],
        ),
        probe(
            "idx: a test split of 0 examples",
            |d| {
                idx::write_file(
                    &d.join("ds").join(format!("{TEST_IMAGES}.gz")),
                    &images(0, 28),
                    true,
                )
                .expect("write");
                idx::write_file(
                    &d.join("ds").join(format!("{TEST_LABELS}.gz")),
                    &idx::encode_labels(&[]),
                    true,
                )
                .expect("write");
            },
            quick(),
            &["invalid data: ds holds no test examples"],
        ),
        probe(
            "idx: a training split of 0 examples",
            |d| {
                idx::write_file(
                    &d.join("ds").join(format!("{TRAIN_IMAGES}.gz")),
                    &images(0, 28),
                    true,
                )
                .expect("write");
                idx::write_file(
                    &d.join("ds").join(format!("{TRAIN_LABELS}.gz")),
                    &idx::encode_labels(&[]),
                    true,
                )
                .expect("write");
            },
            quick(),
            &["invalid data: ds holds no training examples"],
        ),
        probe(
            "data: no such directory",
            nothing,
            vec![
                "run",
                "--dataset-dir",
                "nodir",
                "--out",
                "out",
                "--epochs",
                "1",
            ],
            &[
                "nodir: neither train-images-idx3-ubyte nor train-images-idx3-ubyte.gz is in this directory",
            ],
        ),
        probe(
            "data: an unknown dataset name",
            nothing,
            vec!["run", "--dataset", "cifar", "--out", "out"],
            &["unknown dataset \"cifar\"", "mnist"],
        ),
        probe(
            "data: an unknown dataset name beside a directory",
            nothing,
            run_args(&["--dataset", "cifar"]),
            &["unknown dataset \"cifar\""],
        ),
        probe(
            "download: a mirror holding other data",
            |d| {
                synthetic::write_dataset(&d.join("fake-mirror"), 30, 10, 1).expect("dataset");
            },
            vec!["download", "--data-dir", "data", "--mirror", "fake-mirror"],
            &[
                "fake-mirror",
                "SHA-256 mismatch for train-images-idx3-ubyte",
            ],
        ),
        probe(
            "download: a mirror directory that does not exist",
            nothing,
            vec!["download", "--data-dir", "data", "--mirror", "no/such/dir"],
            &["mirror directory no/such/dir does not exist"],
        ),
        Probe {
            name: "download: an empty entry in ADVROB_MIRROR is no mirror",
            setup: |d| {
                synthetic::write_dataset(&d.join("fake-mirror"), 30, 10, 1).expect("dataset")
            },
            args: vec!["download", "--data-dir", "data"],
            env: &[("ADVROB_MIRROR", ",fake-mirror")],
            says: &["fake-mirror", "SHA-256 mismatch"],
        },
        probe(
            "download: a cached file that is not MNIST",
            |d| {
                synthetic::write_dataset(&d.join("data/mnist"), 30, 10, 1).expect("dataset");
                std::fs::create_dir_all(d.join("empty-mirror")).expect("dir");
            },
            vec![
                "run",
                "--dataset",
                "mnist",
                "--data-dir",
                "data",
                "--mirror",
                "empty-mirror",
                "--out",
                "out",
            ],
            &["train-images-idx3-ubyte", "empty-mirror"],
        ),
    ]
}

fn synthetic_of_side(dir: &Path, side: usize) {
    let split = |n: usize| {
        let (img, labels) = synthetic::make_split(n, 5);
        let pixels: Vec<u8> = (0..n)
            .flat_map(|i| {
                let img = &img.pixels[i * 784..(i + 1) * 784];
                (0..side * side).map(move |j| img[(j / side) * 28 + j % side])
            })
            .collect();
        (
            idx::IdxImages {
                count: n,
                channels: 1,
                rows: side,
                cols: side,
                pixels,
            },
            labels,
        )
    };
    let ds = dir.join("ds");
    for (names, n) in [
        ((TRAIN_IMAGES, TRAIN_LABELS), TRAIN),
        ((TEST_IMAGES, TEST_LABELS), TEST),
    ] {
        let (img, labels) = split(n);
        idx::write_file(
            &ds.join(format!("{}.gz", names.0)),
            &idx::encode_images(&img),
            true,
        )
        .expect("write");
        idx::write_file(
            &ds.join(format!("{}.gz", names.1)),
            &idx::encode_labels(&labels),
            true,
        )
        .expect("write");
    }
}

/// The matrix-file probes: TOML that does not parse and settings outside their domain.
fn toml_probes() -> Vec<Probe> {
    macro_rules! t {
        ($name:expr, $toml:expr, $says:expr) => {
            probe($name, |d| write_toml(d, $toml), toml_run(), $says)
        };
    }
    vec![
        t!(
            "toml: syntax",
            "eps = [0.0, 0.1\n",
            &[
                "m.toml: TOML parse error at line 1, column 16",
                "unclosed array"
            ]
        ),
        t!(
            "toml: unknown key",
            "epz = [0.1]\n",
            &["m.toml", "unknown field `epz`", "expected one of"]
        ),
        t!(
            "toml: wrong type",
            "eps = \"0.1\"\n",
            &[
                "m.toml",
                "invalid type: string \"0.1\", expected a sequence"
            ]
        ),
        t!("toml: not UTF-8", "name = \"\u{0}\"\n", &["m.toml"]),
        t!(
            "toml: unknown attack kind",
            "eps = [0.0]\n[[attacks]]\nkind = \"deepfool\"\n",
            &[
                "unknown attack kind \"deepfool\"; available: apgd, ensemble, fab, fgsm, fmn, pgd, square, transfer"
            ]
        ),
        t!(
            "toml: unknown defense kind",
            "[[models]]\nname = \"a\"\nhidden = [8]\ndefense = { kind = \"magic\" }\n",
            &["model a: unknown defense kind \"magic\"; available: adversarial-retraining"]
        ),
        t!(
            "toml: fine-tuned from an unknown model",
            "[[models]]\nname = \"a\"\nhidden = [8]\nfrom = \"zzz\"\ndefense = { kind = \"adversarial-training\", eps = 0.1 }\n",
            &["model a: invalid from: no model named zzz comes before it"]
        ),
        t!(
            "toml: an unknown teacher",
            "[[models]]\nname = \"a\"\nhidden = [8]\nteacher = \"zz\"\ndefense = { kind = \"distillation\", temperature = 2.0 }\n",
            &["model a: invalid teacher: no model named zz comes before it"]
        ),
        t!(
            "toml: models fine-tuned from each other",
            "[[models]]\nname = \"a\"\nhidden = [8]\nfrom = \"b\"\n[[models]]\nname = \"b\"\nhidden = [8]\nfrom = \"a\"\n",
            &["model a: invalid from: no model named b comes before it"]
        ),
        t!(
            "toml: two models of one name",
            "[[models]]\nname = \"a\"\nhidden = [8]\n[[models]]\nname = \"a\"\nhidden = [8]\n",
            &["invalid models: two models are named a"]
        ),
        t!(
            "toml: a model name that climbs out of the run",
            "[[models]]\nname = \"../../x\"\nhidden = [8]\n",
            &["\"../../x\" is not a plain name"]
        ),
        t!(
            "toml: a model name with a slash",
            "[[models]]\nname = \"a/b\"\nhidden = [8]\n",
            &["\"a/b\" is not a plain name"]
        ),
        t!(
            "toml: an empty model name",
            "[[models]]\nname = \"\"\nhidden = [8]\n",
            &["\"\" is not a plain name"]
        ),
        t!(
            "toml: a target shift of 10 classes",
            "[[attacks]]\nkind = \"fgsm\"\ntarget = { shift = 10 }\n",
            &[
                "invalid target: a shift of 10 is a multiple of the 10 classes: it targets the true label"
            ]
        ),
        t!(
            "toml: a negative PGD step",
            "[[attacks]]\nkind = \"pgd\"\nsteps = 5\nstep_size = -0.1\n",
            &["attack pgd: invalid step_size: -0.1 is not a positive number"]
        ),
        t!(
            "toml: PGD of 0 steps",
            "[[attacks]]\nkind = \"pgd\"\nsteps = 0\n",
            &["attack pgd: invalid steps: must be at least 1"]
        ),
        t!(
            "toml: a misspelt PGD setting",
            "[[attacks]]\nkind = \"pgd\"\nstepz = 3\n",
            &["attack pgd: unknown field `stepz`"]
        ),
        t!(
            "toml: FMN of 0 steps",
            "[[attacks]]\nkind = \"fmn\"\nsteps = 0\n",
            &["attack fmn: invalid steps: must be at least 1"]
        ),
        t!(
            "toml: Square of 0 queries",
            "[[attacks]]\nkind = \"square\"\nqueries = 0\n",
            &["attack square: invalid queries: must be at least 1"]
        ),
        t!(
            "toml: an ensemble without a name",
            "eps = [0.1]\n[[attacks]]\nkind = \"ensemble\"\nattacks = []\n",
            &["attack ensemble", "missing field `name`"]
        ),
        t!(
            "toml: one ε twice for one attack",
            "eps = [0.0]\n[[attacks]]\nkind = \"fgsm\"\neps = [0.5, 0.5]\n",
            &["invalid attacks.eps: 0.5 is given twice"]
        ),
        t!(
            "toml: label smoothing of 1.5",
            "[[models]]\nname = \"a\"\nhidden = [8]\ndefense = { kind = \"label-smoothing\", alpha = 1.5 }\n",
            &["model a: invalid alpha: 1.5 is outside [0, 1)"]
        ),
        t!(
            "toml: distillation at temperature 0",
            "[[models]]\nname = \"t\"\nhidden = [8]\n[[models]]\nname = \"a\"\nhidden = [8]\nteacher = \"t\"\ndefense = { kind = \"distillation\", temperature = 0.0 }\n",
            &["model a: invalid temperature: 0 is not a positive finite number"]
        ),
        t!(
            "toml: quantisation to 1 level",
            "[[models]]\nname = \"a\"\nhidden = [8]\ndefense = { kind = \"gradient-masking\", mechanism = \"quantize\", levels = 1 }\n",
            &["model a: invalid levels: 1 levels: at least 2 are needed"]
        ),
        t!(
            "toml: no attacks",
            "attacks = []\n",
            &["invalid attacks: none given"]
        ),
        t!(
            "toml: no models",
            "models = []\n",
            &["invalid models: none given"]
        ),
        t!(
            "toml: no seeds",
            "seeds = []\n",
            &["invalid seeds: none given"]
        ),
        t!(
            "toml: a negative seed",
            "seeds = [-1]\n",
            &["m.toml", "invalid value: integer `-1`, expected u64"]
        ),
        t!(
            "toml: an empty ε grid",
            "eps = []\n",
            &["invalid eps: the grid is empty"]
        ),
        t!(
            "toml: an unknown dataset",
            "datasets = [\"cifar\"]\n",
            &["unknown dataset \"cifar\""]
        ),
        t!(
            "toml: an unknown architecture",
            "[[models]]\nname = \"a\"\narch = \"resnet\"\n",
            &["m.toml", "unknown variant `resnet`"]
        ),
        t!(
            "toml: a layer of width 0",
            "[[models]]\nname = \"a\"\nhidden = [0]\n",
            &["invalid hidden: layer 0 has width 0"]
        ),
        t!(
            "toml: a negative learning rate",
            "[train]\nlr = -1.0\n",
            &["invalid lr: -1 is not a positive finite number"]
        ),
        t!(
            "toml: an unknown loss",
            "[train]\nloss = \"hinge\"\n",
            &["m.toml", "unknown variant `hinge`"]
        ),
        t!(
            "toml: 0 test examples",
            "[eval]\ntest_limit = 0\n",
            &["invalid eval.test_limit: 0 test examples: nothing to evaluate"]
        ),
        t!(
            "toml: an evaluation batch of 0",
            "[eval]\nbatch_size = 0\n",
            &["invalid eval.batch_size: must be at least 1"]
        ),
        t!(
            "toml: an unknown evaluation key",
            "[eval]\nbogus = 1\n",
            &["m.toml", "unknown field `bogus`"]
        ),
        t!(
            "toml: ε above 1",
            "eps = [0.0, 2.0]\n",
            &["invalid eps: 2 is above 1"]
        ),
        probe(
            "toml: a matrix file that does not exist",
            nothing,
            run_args(&["--config", "nofile.toml"]),
            &["nofile.toml: No such file or directory"],
        ),
        probe(
            "toml: an unknown backend in the file",
            |d| write_toml(d, "backends = [\"tpu\"]\n"),
            vec![
                "run",
                "--config",
                "m.toml",
                "--dataset-dir",
                "ds",
                "--out",
                "out",
            ],
            &["unknown backend \"tpu\"", "available: ndarray"],
        ),
    ]
}

/// The command-line probes: values outside their domain.
fn cli_probes() -> Vec<Probe> {
    let q = |extra: &[&'static str]| {
        let mut v = run_args(&["--epochs", "1", "--hidden", "8"]);
        v.extend_from_slice(extra);
        v
    };
    vec![
        probe(
            "cli: an unknown backend",
            nothing,
            vec![
                "run",
                "--dataset-dir",
                "ds",
                "--out",
                "out",
                "--backends",
                "tpu",
            ],
            &["unknown backend \"tpu\"", "available: ndarray"],
        ),
        probe(
            "cli: a negative ε",
            nothing,
            q(&["--eps", "0.1,-0.2"]),
            &["invalid eps: -0.2"],
        ),
        probe(
            "cli: ε that is no number",
            nothing,
            q(&["--eps", "abc"]),
            &["invalid value 'abc' for '--eps <EPS>'"],
        ),
        probe(
            "cli: ε 0 and -0",
            nothing,
            q(&["--eps", "0,-0"]),
            &["invalid eps: 0 is given twice"],
        ),
        probe(
            "cli: ε twice",
            nothing,
            q(&["--eps", "0.1,0.1"]),
            &["invalid eps: 0.1 is given twice"],
        ),
        probe(
            "cli: ε above 1",
            nothing,
            q(&["--eps", "1.5"]),
            &["invalid eps: 1.5 is above 1"],
        ),
        probe(
            "cli: ε NaN",
            nothing,
            q(&["--eps", "nan"]),
            &["invalid eps: NaN is not a finite number"],
        ),
        probe(
            "cli: 0 test examples",
            nothing,
            q(&["--test-limit", "0"]),
            &["invalid eval.test_limit: 0 test examples"],
        ),
        probe(
            "cli: 0 training examples",
            nothing,
            q(&["--train-limit", "0"]),
            &["invalid train.train_limit: 0 training examples: the models would stay untrained"],
        ),
        probe(
            "cli: a 100M-wide layer",
            nothing,
            run_args(&["--epochs", "1", "--hidden", "100000000"]),
            &[
                "invalid hidden: [100000000] would need",
                "parameters, more than the 1073741824",
            ],
        ),
        probe(
            "cli: a layer of width 0",
            nothing,
            run_args(&["--epochs", "1", "--hidden", "0"]),
            &["invalid hidden: layer 0 has width 0"],
        ),
        probe(
            "cli: a batch of 0",
            nothing,
            q(&["--batch-size", "0"]),
            &["invalid train: epochs and batch_size must be at least 1"],
        ),
        probe(
            "cli: 0 epochs",
            nothing,
            run_args(&["--epochs", "0"]),
            &["invalid train: epochs and batch_size must be at least 1"],
        ),
        probe(
            "cli: an unknown loss",
            nothing,
            q(&["--loss", "hinge"]),
            &["unknown loss \"hinge\": cross-entropy or mse"],
        ),
        probe(
            "cli: an unknown label mode",
            nothing,
            q(&["--attack-labels", "maybe"]),
            &["--attack-labels", "maybe"],
        ),
        probe(
            "cli: 0 seeds",
            nothing,
            q(&["--num-seeds", "0"]),
            &["invalid --num-seeds: must be at least 1"],
        ),
        probe(
            "cli: a seed that is no number",
            nothing,
            q(&["--seeds", "a"]),
            &["invalid value 'a' for '--seeds <SEEDS>'"],
        ),
        probe(
            "cli: shard 3 of 2",
            nothing,
            q(&["--shard", "3/2"]),
            &["invalid shard: \"3/2\" is not i/n with 0 ≤ i < n"],
        ),
        probe(
            "cli: shard of 0",
            nothing,
            q(&["--shard", "0/0"]),
            &["invalid shard: \"0/0\""],
        ),
        probe(
            "cli: a shard that is no fraction",
            nothing,
            q(&["--shard", "x"]),
            &["invalid shard: \"x\""],
        ),
        probe(
            "cli: a Slurm shard outside Slurm",
            nothing,
            q(&["--shard", "slurm"]),
            &["SLURM_ARRAY_TASK_ID"],
        ),
        probe(
            "cli: a run name that climbs out",
            nothing,
            vec![
                "run",
                "--dataset-dir",
                "ds",
                "--name",
                "../x",
                "--epochs",
                "1",
            ],
            &["invalid name: \"../x\" is not a plain name"],
        ),
        probe(
            "cli: an unknown preset",
            nothing,
            run_args(&["--preset", "nope"]),
            &[
                "unknown preset \"nope\"; available: default, seed-000-notebook, seed-004-notebook, cnn",
            ],
        ),
        probe(
            "report: a run directory that does not exist",
            nothing,
            vec!["report", "--run", "nodir", "--reports", "rep"],
            &["nodir: no records here"],
        ),
        probe(
            "report: a damaged record line",
            |d| {
                std::fs::create_dir_all(d.join("out/records")).expect("dir");
                std::fs::write(d.join("out/records/w.jsonl"), "{\"schema\":2, garbage\n")
                    .expect("write");
            },
            vec!["report", "--run", "out", "--reports", "rep"],
            &["out/records/w.jsonl: line 1: not a record"],
        ),
        probe(
            "report: a record line without its key",
            keyless_record,
            vec!["report", "--run", "out", "--reports", "rep"],
            &["out/records.jsonl: line 1: not a record: missing field `key`"],
        ),
        probe(
            "run: into a run directory of an older advrob",
            old_schema_run,
            q(&[]),
            &[
                "out: holds records of an older advrob (schema 1, this one writes 2",
                "run into a new --out, or move out/records.jsonl and out/records aside",
            ],
        ),
        probe(
            "evaluate: weights that do not exist",
            nothing,
            vec![
                "evaluate",
                "--weights",
                "nope.safetensors",
                "--arch",
                "lenet",
                "--dataset-dir",
                "ds",
            ],
            &["nope.safetensors: No such file or directory"],
        ),
        probe(
            "evaluate: weights that are not safetensors",
            |d| std::fs::write(d.join("g.safetensors"), "hello").expect("write"),
            vec![
                "evaluate",
                "--weights",
                "g.safetensors",
                "--arch",
                "lenet",
                "--dataset-dir",
                "ds",
            ],
            &["g.safetensors", "header too small"],
        ),
        probe(
            "evaluate: an unknown architecture",
            nothing,
            vec![
                "evaluate",
                "--weights",
                "w.safetensors",
                "--arch",
                "resnet",
                "--dataset-dir",
                "ds",
            ],
            &["resnet"],
        ),
    ]
}

/// A run directory holding a record line without its key.
fn keyless_record(dir: &Path) {
    std::fs::create_dir_all(dir.join("out")).expect("dir");
    std::fs::write(
        dir.join("out/records.jsonl"),
        "{\"model\":\"baseline\",\"attack\":\"fgsm\",\"eps\":0.1,\"clean_accuracy\":0.9,\"adversarial_accuracy\":0.2}\n",
    )
    .expect("write");
}

/// A run directory holding the single records file of advrob before schema 2 (a record without
/// the `schema` field).
fn old_schema_run(dir: &Path) {
    let fixture = include_str!("../../advrob-experiment/tests/fixtures/record.json");
    let mut v: serde_json::Value = serde_json::from_str(fixture).expect("fixture");
    v.as_object_mut().expect("object").remove("schema");
    std::fs::create_dir_all(dir.join("out")).expect("dir");
    std::fs::write(dir.join("out/records.jsonl"), format!("{v}\n")).expect("write");
}

/// A copy of the LeNet fixture (PyTorch weights) as `lenet.safetensors`.
fn with_lenet(dir: &Path) {
    std::fs::copy(lenet_fixture(), dir.join("lenet.safetensors")).expect("copy");
}

fn lenet_fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../advrob-model/tests/fixtures/lenet.safetensors")
}

/// `evaluate` of `lenet.safetensors` with `extra`.
fn evaluate_lenet(extra: &[&'static str]) -> Vec<&'static str> {
    let mut v = vec![
        "evaluate",
        "--weights",
        "lenet.safetensors",
        "--arch",
        "lenet",
        "--dataset-dir",
        "ds",
        "--out",
        "out",
        "--attack-labels",
        "true",
    ];
    v.extend_from_slice(extra);
    v
}

/// The refusals of settings that used to be accepted, or refused with a message about something
/// else: values that cannot be, and architectures, seeds and names that contradict each other.
fn contradiction_probes() -> Vec<Probe> {
    macro_rules! t {
        ($name:expr, $toml:expr, $says:expr) => {
            probe($name, |d| write_toml(d, $toml), toml_run(), $says)
        };
    }
    vec![
        t!(
            "toml: a fine-tuned model that declares another architecture",
            "eps = [0.0]\n[train]\nepochs = 1\n[[models]]\nname = \"base\"\nhidden = [16]\n[[models]]\nname = \"ft\"\nfrom = \"base\"\narch = \"lenet\"\n",
            &[
                "m.toml",
                "model ft: arch = \"lenet\" contradicts its from = \"base\"",
                "\"mlp\" with hidden [16]"
            ]
        ),
        t!(
            "toml: a fine-tuned model that declares other widths",
            "eps = [0.0]\n[train]\nepochs = 1\n[[models]]\nname = \"base\"\nhidden = [16]\n[[models]]\nname = \"ft\"\nfrom = \"base\"\nhidden = [32]\n",
            &["model ft: hidden = [32] contradicts its from = \"base\""]
        ),
        t!(
            "toml: a step size that is no number",
            "eps = [0.0]\n[[attacks]]\nkind = \"pgd\"\nstep_size = nan\n",
            &["m.toml", "attacks[0].step_size = NaN: not a finite number"]
        ),
        t!(
            "toml: more target classes than there are",
            "eps = [0.0]\n[[attacks]]\nkind = \"apgd\"\nloss = \"targeted-dlr\"\ntarget_classes = 20\n",
            &["invalid target_classes: 20 target classes: with 10 classes there are 9"]
        ),
        t!(
            "toml: adversarial training beyond the pixel range",
            "eps = [0.0]\n[[models]]\nname = \"at\"\ndefense = { kind = \"adversarial-training\", eps = 5.0 }\n",
            &["model at", "invalid eps: 5 is above 1"]
        ),
        probe(
            "cli: a seed TOML cannot hold",
            nothing,
            run_args(&[
                "--epochs",
                "1",
                "--hidden",
                "8",
                "--seeds",
                "18446744073709551615",
            ]),
            &["invalid seeds: 18446744073709551615 is above 9223372036854775807"],
        ),
        probe(
            "cli: more seeds than a study needs",
            nothing,
            run_args(&[
                "--epochs",
                "1",
                "--hidden",
                "8",
                "--num-seeds",
                "100000000000",
            ]),
            &["invalid --num-seeds: 100000000000 is more than 10000"],
        ),
        probe(
            "evaluate: a standardisation that overflows float32",
            with_lenet,
            evaluate_lenet(&["--normalize", "0.1,1e-45"]),
            &["invalid normalize", "overflows float32"],
        ),
        probe(
            "evaluate: a name for a module the architecture lacks",
            with_lenet,
            evaluate_lenet(&["--names", "conv9=conv1"]),
            &[
                "lenet.safetensors",
                "names: conv9 is not a module of the lenet architecture",
            ],
        ),
        probe(
            "evaluate: two modules named to one tensor",
            with_lenet,
            evaluate_lenet(&["--names", "conv1=fc1,conv2=fc1"]),
            &["names: conv1 and conv2 both map to fc1"],
        ),
        probe(
            "evaluate: one module named twice",
            with_lenet,
            evaluate_lenet(&["--names", "conv1=conv1,conv1=conv2"]),
            &["invalid --names: conv1 is mapped twice"],
        ),
        probe(
            "evaluate: weights that hold NaN",
            |d| {
                let mut bytes = std::fs::read(lenet_fixture()).expect("fixture");
                let n = bytes.len();
                // the last float of the file: NaN
                bytes[n - 4..].copy_from_slice(&f32::NAN.to_le_bytes());
                std::fs::write(d.join("lenet.safetensors"), bytes).expect("write");
            },
            evaluate_lenet(&[]),
            &[
                "lenet.safetensors",
                "holds 1 values that are NaN or infinite",
            ],
        ),
    ]
}

fn probes() -> Vec<Probe> {
    let mut all = data_probes();
    all.extend(toml_probes());
    all.extend(cli_probes());
    all.extend(contradiction_probes());
    all
}

/// A sentence (a `: `-separated part of at least 12 characters) that the message says twice.
fn repeated(message: &str) -> Option<&str> {
    let parts: Vec<&str> = message.split(": ").map(str::trim).collect();
    parts
        .iter()
        .enumerate()
        .find(|(i, p)| p.len() >= 12 && parts[i + 1..].contains(p))
        .map(|(_, p)| *p)
}

/// What is wrong with the outcome of `p` (`None`: the probe holds).
fn check(p: &Probe) -> Option<String> {
    let tmp = with_dataset();
    (p.setup)(tmp.path());
    let records_before = lines(&tmp.path().join("out")).len();
    // where a path-like name that climbs out ("../x", "../../x") would land; judged against what
    // was there before, since the shared temporary directory may hold an `x` of its own
    let d = tmp.path();
    let outside = [
        d.join("x"),
        d.join("out").join("x"),
        d.parent().expect("parent").join("x"),
    ];
    let outside_before = outside.each_ref().map(|p| p.exists());
    let o = bench_runner_env(&p.args, tmp.path(), p.env);
    let out = text(&o);
    let stderr = String::from_utf8_lossy(&o.stderr);
    // 1: refused by advrob; 2: refused by the argument parser
    let problem = if !matches!(o.status.code(), Some(1 | 2)) {
        Some(format!("exit status {:?}", o.status.code()))
    } else if out.contains("panicked") {
        Some("a panic".into())
    } else if let Some(missing) = p.says.iter().find(|s| !out.contains(**s)) {
        Some(format!("no {missing:?}"))
    } else if let Some(r) = stderr.lines().find_map(repeated) {
        Some(format!("says {r:?} twice"))
    } else if lines(&tmp.path().join("out")).len() != records_before {
        Some("records were written".into())
    } else {
        outside
            .iter()
            .zip(outside_before)
            .find(|(p, before)| !before && p.exists())
            .map(|(p, _)| format!("wrote {} outside the run directory", p.display()))
    };
    problem.map(|why| {
        format!(
            "{}: {why}\n  {}\n  -> {}",
            p.name,
            p.args.join(" "),
            out.trim().replace('\n', "\n     ")
        )
    })
}

#[test]
fn every_bad_input_is_refused_naming_the_file_or_the_field() {
    let all = probes();
    let names: BTreeSet<&str> = all.iter().map(|p| p.name).collect();
    assert_eq!(names.len(), all.len(), "probe names are unique");
    let failed: Vec<String> = all.iter().filter_map(check).collect();
    assert!(
        failed.is_empty(),
        "{} of {} probes failed:\n{}",
        failed.len(),
        all.len(),
        failed.join("\n")
    );
}

#[test]
fn the_table_holds_at_least_60_probes() {
    // the faults on a finished run, below, come on top
    assert!(probes().len() >= 60, "{}", probes().len());
}

// ---- faults on a finished run -----------------------------------------------------------------

/// A matrix with some work: two models (one fine-tuned from the other), two attacks, three ε.
const MATRIX: &str = r#"
eps = [0.0, 0.1, 0.2]
[train]
epochs = 2
batch_size = 20
[[models]]
name = "base"
hidden = [16]
[[models]]
name = "at"
from = "base"
epochs = 1
defense = { kind = "adversarial-training", eps = 0.1 }
[[models]]
name = "other"
hidden = [12]
[[attacks]]
kind = "fgsm"
[[attacks]]
kind = "pgd"
steps = 3
"#;

/// Records of [`MATRIX`]: 3 models × 2 attacks × 3 ε.
const MATRIX_RECORDS: usize = 18;

/// A directory with a larger dataset `ds` and [`MATRIX`] as `m.toml`.
fn with_matrix() -> tempfile::TempDir {
    let tmp = tempfile::tempdir().expect("temp");
    synthetic::write_dataset(&tmp.path().join("ds"), 600, 100, 3).expect("dataset");
    write_toml(tmp.path(), MATRIX);
    tmp
}

fn matrix_args(out: &'static str) -> Vec<&'static str> {
    vec![
        "run",
        "--config",
        "m.toml",
        "--dataset-dir",
        "ds",
        "--out",
        out,
        "--backends",
        "ndarray",
    ]
}

/// Runs `args` in `dir`; it must succeed and print `summary`.
fn ok(dir: &Path, args: &[&str], summary: &str) -> String {
    let o = bench_runner(args, dir);
    assert!(o.status.success(), "{}: {}", args.join(" "), text(&o));
    assert!(
        text(&o).contains(summary),
        "{}: {}",
        args.join(" "),
        text(&o)
    );
    text(&o)
}

/// Runs `args` in `dir`; it must fail (status 1) saying each of `says`.
fn fails(dir: &Path, args: &[&str], says: &[&str]) -> String {
    let o = bench_runner(args, dir);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(1), "{}: {t}", args.join(" "));
    assert!(!t.contains("panicked"), "{t}");
    for s in says {
        assert!(t.contains(s), "{}: no {s:?} in {t}", args.join(" "));
    }
    t
}

fn report(dir: &Path, run: &str, reports: &str) {
    ok(
        dir,
        &["report", "--run", run, "--reports", reports],
        "aggregated",
    );
}

/// The reference: the whole matrix in one uninterrupted run, reported into `ref-reports`.
fn reference(dir: &Path) {
    ok(
        dir,
        &matrix_args("ref"),
        &format!("{MATRIX_RECORDS} new records, 0 already there; 3 models trained"),
    );
    report(dir, "ref", "ref-reports");
}

/// The record keys of run `run`, each once.
fn keys(run: &Path) -> BTreeSet<String> {
    records(run)
        .iter()
        .map(|r| r["key"].as_str().expect("key").to_string())
        .collect()
}

/// Starts the matrix into `out` without waiting.
fn spawn(dir: &Path, out: &'static str) -> Child {
    Command::new(env!("CARGO_BIN_EXE_bench-runner"))
        .args(matrix_args(out))
        .current_dir(dir)
        .env("RUST_LOG", "off")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn")
}

/// Waits until `ready` holds (or the child ends, or 120 s pass).
fn wait_for(child: &mut Child, ready: impl Fn() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(120) {
        if ready() {
            return true;
        }
        if child.try_wait().expect("wait").is_some() {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    false
}

/// The complete checkpoints (manifest written) under `run/models`.
fn checkpoints(run: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(run.join("models"))
        .map(|d| {
            d.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.join("manifest.json").is_file())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// When to kill: a description, the run directory, and the moment reached.
type KillPoint = (&'static str, &'static str, fn(&Path) -> bool);

#[test]
fn a_run_killed_at_any_point_resumes_to_the_same_tables() {
    let tmp = with_matrix();
    let d = tmp.path();
    reference(d);
    // kill -9: while the first model trains, after the first checkpoint, after the first records
    // of a model, and after all but the last model's records
    let points: [KillPoint; 4] = [
        ("during the first training", "k1", |r| {
            r.join("models").is_dir()
        }),
        ("after the first checkpoint", "k2", |r| {
            !checkpoints(r).is_empty()
        }),
        ("after the first records", "k3", |r| !lines(r).is_empty()),
        ("before the last records", "k4", |r| lines(r).len() >= 12),
    ];
    for (when, out, ready) in points {
        let run = d.join(out);
        let mut child = spawn(d, out);
        let caught = wait_for(&mut child, || ready(&run));
        child.kill().expect("kill -9");
        child.wait().expect("reaped");
        assert!(caught, "{when}: the run ended before the kill point");
        // a kill can land while a record is half written: that line is redone, not counted
        let before = complete_lines(&run);
        assert!(
            before < MATRIX_RECORDS,
            "{when}: killed before the end ({before} records)"
        );
        let t = ok(d, &matrix_args(out), "already there");
        assert!(
            t.contains(&format!("{} new records", MATRIX_RECORDS - before)),
            "{when}: {t}"
        );
        let reports = format!("{out}-reports");
        report(d, out, &reports);
        same_tables(&d.join("ref-reports"), &d.join(&reports));
        assert_eq!(keys(&run), keys(&d.join("ref")), "{when}");
    }
}

#[test]
fn two_concurrent_runs_into_one_directory_keep_every_record() {
    let tmp = with_matrix();
    let d = tmp.path();
    reference(d);
    let a = spawn(d, "both");
    let b = spawn(d, "both");
    for mut c in [a, b] {
        assert!(c.wait().expect("wait").success());
    }
    let run = d.join("both");
    assert_eq!(lines(&run).len(), MATRIX_RECORDS, "each record once");
    assert_eq!(keys(&run), keys(&d.join("ref")));
    // each model trained once: the checkpoints verify, and the tables are the reference's
    ok(
        d,
        &matrix_args("both"),
        &format!("0 new records, {MATRIX_RECORDS} already there; 0 models trained"),
    );
    report(d, "both", "both-reports");
    same_tables(&d.join("ref-reports"), &d.join("both-reports"));
}

#[test]
fn jobs_of_one_run_split_the_models_and_write_each_record_once() {
    let tmp = with_matrix();
    let d = tmp.path();
    reference(d);
    // more jobs than models: the extra ones find nothing left and stop
    let jobs = [matrix_args("jobs"), vec!["--jobs", "4"]].concat();
    ok(
        d,
        &jobs,
        &format!("{MATRIX_RECORDS} new records, 0 already there; 3 models trained"),
    );
    let run = d.join("jobs");
    assert_eq!(lines(&run).len(), MATRIX_RECORDS, "each record once");
    assert_eq!(keys(&run), keys(&d.join("ref")));
    ok(
        d,
        &jobs,
        &format!("0 new records, {MATRIX_RECORDS} already there; 0 models trained"),
    );
    report(d, "jobs", "jobs-reports");
    same_tables(&d.join("ref-reports"), &d.join("jobs-reports"));
}

/// The shell command that runs the matrix into `out` with files limited to `blocks` × 512 bytes:
/// a full disk as the run sees it (writes fail with EFBIG; SIGXFSZ is ignored).
fn on_a_full_disk(out: &str, blocks: usize) -> Command {
    let mut c = Command::new("sh");
    c.arg("-c")
        .arg(format!(
            "trap '' XFSZ; ulimit -f {blocks}; exec \"$0\" {}",
            matrix_args("OUT").join(" ").replace("OUT", out)
        ))
        .arg(env!("CARGO_BIN_EXE_bench-runner"))
        .env("RUST_LOG", "off");
    c
}

#[test]
fn a_full_disk_stops_the_run_with_the_file_named_and_the_rerun_completes_it() {
    let tmp = with_matrix();
    let d = tmp.path();
    reference(d);
    // the weights (~13 KiB for 16 hidden units) do not fit in 16 blocks
    let o = on_a_full_disk("full", 16)
        .current_dir(d)
        .output()
        .expect("sh");
    let t = text(&o);
    assert_eq!(o.status.code(), Some(1), "{t}");
    assert!(
        t.contains("File too large") && t.contains("full/models/base-"),
        "{t}"
    );
    assert_eq!(repeated(t.trim()), None, "{t}");
    assert!(
        checkpoints(&d.join("full")).is_empty(),
        "no checkpoint half-written"
    );
    ok(
        d,
        &matrix_args("full"),
        &format!("{MATRIX_RECORDS} new records"),
    );
    report(d, "full", "full-reports");
    same_tables(&d.join("ref-reports"), &d.join("full-reports"));
}

/// Every file under `dir` with its bytes and modification time.
fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>, std::time::SystemTime)> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(p) = todo.pop() {
        for e in std::fs::read_dir(&p).expect("dir") {
            let path = e.expect("entry").path();
            if path.is_dir() {
                todo.push(path);
            } else {
                let modified = std::fs::metadata(&path)
                    .and_then(|m| m.modified())
                    .expect("mtime");
                out.push((path.clone(), std::fs::read(&path).expect("read"), modified));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn a_finished_run_is_rerun_without_writing_so_a_read_only_one_works() {
    let tmp = with_matrix();
    let d = tmp.path();
    reference(d);
    let before = snapshot(&d.join("ref"));
    ok(
        d,
        &matrix_args("ref"),
        &format!("0 new records, {MATRIX_RECORDS} already there"),
    );
    assert!(
        before == snapshot(&d.join("ref")),
        "nothing in the run directory was written"
    );
    // where permissions bind (not for root), the same on a directory made read-only
    let ro = <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o555);
    std::fs::set_permissions(d.join("ref"), ro).expect("chmod");
    ok(
        d,
        &matrix_args("ref"),
        &format!("0 new records, {MATRIX_RECORDS} already there"),
    );
    let rw = <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o755);
    std::fs::set_permissions(d.join("ref"), rw).expect("chmod");
}

#[test]
fn damaged_checkpoints_are_refused_with_the_way_out() {
    let tmp = with_dataset();
    let d = tmp.path();
    let quick = |eps: &'static str| {
        run_args(&[
            "--epochs",
            "1",
            "--hidden",
            "8",
            "--eps",
            eps,
            "--attack-labels",
            "true",
            "--extend",
        ])
    };
    ok(d, &quick("0"), "1 new records");
    let ckpt = checkpoints(&d.join("out")).pop().expect("checkpoint");
    let pristine = snapshot(&ckpt);
    // another model's weights, for the swap
    let other_args = [
        "run",
        "--dataset-dir",
        "ds",
        "--out",
        "other",
        "--backends",
        "ndarray",
        "--epochs",
        "1",
        "--hidden",
        "8",
        "--eps",
        "0",
        "--attack-labels",
        "true",
        "--seeds",
        "7",
    ];
    ok(d, &other_args, "1 new records");
    let other = checkpoints(&d.join("other"))
        .pop()
        .expect("other checkpoint");
    let restore = || {
        for (p, bytes, _) in &pristine {
            std::fs::write(p, bytes).expect("restore");
        }
    };
    let damage: [(&str, &dyn Fn(), &str); 5] = [
        (
            "the weights of another model",
            &|| {
                std::fs::copy(other.join("model.bpk"), ckpt.join("model.bpk")).expect("copy");
            },
            "holds other weights than its manifest names",
        ),
        (
            "garbage weights",
            &|| std::fs::write(ckpt.join("model.bpk"), "garbage").expect("write"),
            "model.bpk",
        ),
        (
            "a garbage training record",
            &|| std::fs::write(ckpt.join("train.json"), "{").expect("write"),
            "train.json: bad checkpoint: changed since the checkpoint was written",
        ),
        (
            "an edited deployment",
            &|| {
                std::fs::write(
                    ckpt.join("deploy.json"),
                    "{\"logit_scale\":2.0,\"normalize\":null,\"quantize\":null}",
                )
                .expect("write")
            },
            "deploy.json: bad checkpoint: changed since the checkpoint was written",
        ),
        (
            "a missing model config",
            &|| std::fs::remove_file(ckpt.join("model.json")).expect("rm"),
            "model.json: bad checkpoint: missing",
        ),
    ];
    for (what, spoil, says) in damage {
        spoil();
        // a new ε needs the model: it is loaded, and refused
        let t = fails(d, &quick("0,0.1"), &[says]);
        let way_out = format!(
            "delete {} to train it again",
            Path::new("out/models")
                .join(ckpt.file_name().expect("name"))
                .display()
        );
        assert!(t.contains(&way_out), "{what}: {t}");
        assert_eq!(
            lines(&d.join("out")).len(),
            1,
            "{what}: the records made stay"
        );
        restore();
    }
    // the way out works: the model is trained again, to the same weights
    std::fs::remove_dir_all(&ckpt).expect("rm");
    ok(
        d,
        &quick("0,0.1"),
        "1 new records, 1 already there; 1 models trained",
    );
    assert!(
        same_files(&pristine, &ckpt),
        "retrained to the same weights"
    );
    // a checkpoint without its manifest was cut short while saving: it is trained again
    std::fs::remove_file(ckpt.join("manifest.json")).expect("rm");
    ok(
        d,
        &quick("0,0.1,0.2"),
        "1 new records, 2 already there; 1 models trained",
    );
}

/// Whether `dir` holds the weights and configs of `snap` byte for byte (the training record has
/// wall times, the manifest its digest, the burn record random ids).
fn same_files(snap: &[(PathBuf, Vec<u8>, std::time::SystemTime)], dir: &Path) -> bool {
    let now = snapshot(dir);
    ["model.safetensors", "model.json", "deploy.json"]
        .iter()
        .all(|f| {
            let bytes = |s: &[(PathBuf, Vec<u8>, std::time::SystemTime)]| {
                s.iter().find(|e| e.0.ends_with(f)).map(|e| e.1.clone())
            };
            bytes(snap).is_some() && bytes(snap) == bytes(&now)
        })
}

#[test]
fn torn_and_damaged_record_lines() {
    let tmp = with_dataset();
    let d = tmp.path();
    let quick = || {
        run_args(&[
            "--epochs",
            "1",
            "--hidden",
            "8",
            "--eps",
            "0,0.1,0.2",
            "--attack-labels",
            "true",
        ])
    };
    ok(d, &quick(), "3 new records");
    let run = d.join("out");
    let log = logs(&run).pop().expect("log");
    let whole = std::fs::read(&log).expect("read");
    // a writer killed mid-line: the line is ignored, the report says so, the rerun redoes it
    std::fs::write(&log, &whole[..whole.len() - 40]).expect("cut");
    ok(
        d,
        &["report", "--run", "out", "--reports", "rep"],
        "aggregated 2 records",
    );
    let summary = std::fs::read_to_string(d.join("rep/summary.md")).expect("summary");
    assert!(
        summary.contains("**Incomplete run.**")
            && summary.contains(&log.file_name().expect("name").to_string_lossy().to_string()),
        "{summary}"
    );
    let verdict = std::fs::read_to_string(d.join("rep/verdict.md")).expect("verdict");
    assert!(verdict.contains("**Incomplete run.**"), "{verdict}");
    ok(d, &quick(), "1 new records, 2 already there");
    report(d, "out", "rep");
    let summary = std::fs::read_to_string(d.join("rep/summary.md")).expect("summary");
    assert!(!summary.contains("Incomplete run"), "redone: {summary}");
    for p in logs(&run).into_iter().filter(|p| *p != log) {
        std::fs::remove_file(p).expect("rm");
    }
    // a damaged line in the middle: quarantined, named with its file and line at the top of the
    // report; the rest stays readable and the run redoes the lost record
    let mut text = String::from_utf8(whole).expect("utf8");
    text = text.replacen("\"schema\":2", "\"schema\":2,,", 2).replacen(
        "\"schema\":2,,",
        "\"schema\":2",
        1,
    );
    std::fs::write(&log, &text).expect("damage");
    let name = format!(
        "{}: line 2: not a record",
        Path::new("out/records")
            .join(log.file_name().expect("name"))
            .display()
    );
    let summary = |d: &Path| {
        report(d, "out", "rep");
        std::fs::read_to_string(d.join("rep/summary.md")).expect("summary")
    };
    let s = summary(d);
    assert!(
        s.contains("**Quarantined records.**") && s.contains(&name),
        "{s}"
    );
    ok(d, &quick(), "1 new records, 2 already there");
    assert!(summary(d).contains(&name), "still named until removed");
    // a record that parses but lacks a field
    for p in logs(&run).into_iter().filter(|p| *p != log) {
        std::fs::remove_file(p).expect("rm");
    }
    let first = lines(&run)[0].clone();
    let mut v: serde_json::Value = serde_json::from_str(&first).expect("json");
    v.as_object_mut()
        .expect("object")
        .remove("adversarial_accuracy");
    std::fs::write(&log, format!("{v}\n")).expect("write");
    fails(
        d,
        &["report", "--run", "out", "--reports", "rep"],
        &[
            "no records",
            "quarantined",
            "line 1",
            "adversarial_accuracy",
        ],
    );
}

#[test]
fn record_keys_cover_everything_that_changes_the_number() {
    let tmp = with_dataset();
    let d = tmp.path();
    let base = [
        "--epochs",
        "1",
        "--hidden",
        "8",
        "--eps",
        "0,0.1",
        "--attack-labels",
        "true",
    ];
    // each a matrix of its own into one directory
    let with =
        |extra: &[&'static str]| [run_args(&base), extra.to_vec(), vec!["--extend"]].concat();
    ok(
        d,
        &with(&[]),
        "2 new records, 0 already there; 1 models trained",
    );
    ok(d, &with(&[]), "0 new records, 2 already there");
    // another test subset, another evaluation batch: new numbers, from the same model
    ok(
        d,
        &with(&["--test-limit", "10"]),
        "2 new records, 0 already there; 0 models trained, 1 loaded",
    );
    write_toml(d, "[eval]\nbatch_size = 7\n");
    ok(
        d,
        &with(&["--config", "m.toml"]),
        "2 new records, 0 already there; 0 models trained, 1 loaded",
    );
    // another seed: another model
    ok(
        d,
        &with(&["--seeds", "5"]),
        "2 new records, 0 already there; 1 models trained",
    );
    // other training data (same file names): another model and other records
    synthetic::write_dataset(&d.join("ds"), TRAIN, TEST, 99).expect("dataset");
    ok(
        d,
        &with(&[]),
        "2 new records, 0 already there; 1 models trained",
    );
    // two attacks that differ in their step size only: both kept
    write_toml(
        d,
        &format!(
            "{QUICK_TRAIN}[[models]]\nname = \"m\"\nhidden = [8]\n[[attacks]]\nkind = \"pgd\"\nsteps = 2\nstep_size = 0.01\n[[attacks]]\nkind = \"pgd\"\nsteps = 2\nstep_size = 0.05\n"
        ),
    );
    ok(d, &[toml_run(), vec!["--extend"]].concat(), "4 new records");
    let pgd: Vec<_> = records(&d.join("out"))
        .into_iter()
        .filter(|r| r["model"] == "m")
        .collect();
    let steps: BTreeSet<String> = pgd
        .iter()
        .map(|r| r["attack_config"]["step_size"].to_string())
        .collect();
    assert_eq!(steps.len(), 2, "{pgd:?}");
    assert_eq!(keys(&d.join("out")).len(), 14);
}

#[test]
fn reports_mark_missing_attacks_mixed_test_sizes_and_unverified_data() {
    let tmp = with_dataset();
    let d = tmp.path();
    write_toml(
        d,
        &format!(
            "{QUICK_TRAIN}[[models]]\nname = \"m\"\nhidden = [8]\n[[attacks]]\nkind = \"fgsm\"\n[[attacks]]\nkind = \"pgd\"\nsteps = 2\n"
        ),
    );
    ok(d, &toml_run(), "4 new records");
    ok(
        d,
        &[toml_run(), vec!["--test-limit", "10", "--extend"]].concat(),
        "4 new records",
    );
    report(d, "out", "rep");
    let results = std::fs::read_to_string(d.join("rep/results.md")).expect("results");
    // two test sizes: two tables, each marked as unverified data
    assert!(
        results.contains("(20 test examples, unverified data"),
        "{results}"
    );
    assert!(
        results.contains("(10 test examples, unverified data"),
        "{results}"
    );
    let csv = std::fs::read_to_string(d.join("rep/results.csv")).expect("csv");
    assert!(
        csv.lines()
            .next()
            .is_some_and(|h| h.contains("dataset_verified")),
        "{csv}"
    );
    // lose the PGD record at ε = 0.1 of the 20-example run: the worst case there is marked
    let run = d.join("out");
    let kept: Vec<String> = lines(&run)
        .into_iter()
        .filter(|l| {
            let r: serde_json::Value = serde_json::from_str(l).expect("json");
            !(r["attack"] == "pgd-linf-2" && r["eps"] == 0.1 && r["examples"] == 20)
        })
        .collect();
    assert_eq!(kept.len(), 7);
    common::keep_only(&run, &kept);
    report(d, "out", "rep2");
    let verdict = std::fs::read_to_string(d.join("rep2/verdict.md")).expect("verdict");
    assert!(verdict.contains("only 1 of 2 attacks"), "{verdict}");
}

#[test]
fn files_follow_the_umask_and_floats_survive_a_rerun() {
    let tmp = with_dataset();
    let d = tmp.path();
    for (umask, mode, out) in [("022", 0o644, "u022"), ("077", 0o600, "u077")] {
        let o = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "umask {umask}; exec \"$0\" run --dataset-dir ds --out {out} --backends ndarray --epochs 1 --hidden 8 --eps 0,0.1 --attack-labels true"
            ))
            .arg(env!("CARGO_BIN_EXE_bench-runner"))
            .current_dir(d)
            .env("RUST_LOG", "off")
            .output()
            .expect("sh");
        assert!(o.status.success(), "{}", text(&o));
        for (p, _, _) in snapshot(&d.join(out)) {
            let m = std::os::unix::fs::PermissionsExt::mode(
                &std::fs::metadata(&p).expect("meta").permissions(),
            ) & 0o777;
            assert_eq!(m, mode, "{} under umask {umask}", p.display());
        }
    }
    // a new ε loads the model: its stored floats come back bit for bit, so nothing is rewritten
    let ckpt = checkpoints(&d.join("u022")).pop().expect("checkpoint");
    let before = snapshot(&ckpt);
    let o = bench_runner(
        &[
            "run",
            "--dataset-dir",
            "ds",
            "--out",
            "u022",
            "--backends",
            "ndarray",
            "--epochs",
            "1",
            "--hidden",
            "8",
            "--eps",
            "0,0.1,0.2",
            "--attack-labels",
            "true",
            "--extend",
        ],
        d,
    );
    assert!(
        text(&o).contains("1 new records, 2 already there; 0 models trained, 1 loaded"),
        "{}",
        text(&o)
    );
    assert!(before == snapshot(&ckpt), "the checkpoint is untouched");
}

#[test]
fn the_model_input_follows_the_data() {
    let tmp = with_dataset();
    let d = tmp.path();
    synthetic_of_side(d, 20);
    // an MLP takes 20×20 images as 400 inputs
    ok(
        d,
        &run_args(&[
            "--epochs",
            "1",
            "--hidden",
            "8",
            "--eps",
            "0,0.1",
            "--attack-labels",
            "true",
        ]),
        "2 new records",
    );
    let r = &records(&d.join("out"))[0];
    assert_eq!(r["model_config"]["input"], 400, "{r}");
    // so does LeNet (its dense layer is sized from the feature maps the images give)
    write_toml(
        d,
        &format!(
            "{QUICK_TRAIN}[[models]]\nname = \"a\"\narch = \"lenet\"\n[[attacks]]\nkind = \"fgsm\"\n"
        ),
    );
    ok(
        d,
        &[toml_run(), vec!["--extend"]].concat(),
        "2 new records, 0 already there; 1 models trained",
    );
}

// ---- what the report builds on the records ------------------------------------------------------

/// The report of run `run` into `reports` (no data: nothing but the records), read back:
/// `results.md`, `summary.md`, `intervals.csv`.
fn read_report(dir: &Path, run: &str, reports: &str) -> (String, String, String) {
    report(dir, run, reports);
    let read = |f: &str| std::fs::read_to_string(dir.join(reports).join(f)).expect("report file");
    (
        read("results.md"),
        read("summary.md"),
        read("intervals.csv"),
    )
}

/// The rows of the accuracy tables of `results.md` (model, attack) with their clean and ε cells.
fn table_rows(results: &str) -> Vec<Vec<String>> {
    results
        .lines()
        .filter(|l| l.starts_with("| ") && !l.starts_with("| model |"))
        .map(|l| l.split('|').map(|c| c.trim().to_string()).collect())
        .collect()
}

#[test]
fn results_that_share_a_name_are_never_averaged() {
    let tmp = with_dataset();
    let d = tmp.path();
    // two PGD entries that differ in their step size only
    write_toml(
        d,
        &format!(
            "{QUICK_TRAIN}[[models]]\nname = \"m\"\nhidden = [8]\n[[attacks]]\nkind = \"pgd\"\nsteps = 3\nstep_size = 0.001\n[[attacks]]\nkind = \"pgd\"\nsteps = 3\nstep_size = 0.05\n"
        ),
    );
    ok(d, &toml_run(), "4 new records");
    // the same model name with another width, into the same directory
    write_toml(
        d,
        &format!(
            "{QUICK_TRAIN}[[models]]\nname = \"m\"\nhidden = [12]\n[[attacks]]\nkind = \"pgd\"\nsteps = 3\nstep_size = 0.001\n"
        ),
    );
    ok(d, &[toml_run(), vec!["--extend"]].concat(), "2 new records");
    let (results, summary, intervals) = read_report(d, "out", "rep");
    assert!(results.contains("**Rows told apart.**"), "{results}");
    assert!(summary.contains("**Rows told apart.**"), "{summary}");
    let rows = table_rows(&results);
    // m [hidden=[8]] under two PGDs, m [hidden=[12]] under one: three rows, each of one seed
    assert_eq!(rows.len(), 3, "{results}");
    let names: BTreeSet<(String, String)> =
        rows.iter().map(|r| (r[1].clone(), r[3].clone())).collect();
    assert_eq!(names.len(), 3, "{results}");
    assert!(
        names.iter().any(|(_, a)| a.contains("step_size=0.001"))
            && names.iter().any(|(_, a)| a.contains("step_size=0.05")),
        "{names:?}"
    );
    assert!(
        names.iter().any(|(m, _)| m.contains("hidden=[12]")),
        "{names:?}"
    );
    for r in &rows {
        assert_eq!(r[5], "42", "one seed, named: {r:?}");
    }
    // each cell is the record's own number, and intervals.csv says the same
    let recs = records(&d.join("out"));
    for r in &rows {
        let eps_cell = &r[8];
        let want: Vec<String> = recs
            .iter()
            .filter(|x| x["eps"] == 0.1)
            .map(|x| {
                format!(
                    "{:.2}%",
                    100.0 * x["adversarial_accuracy"].as_f64().expect("acc")
                )
            })
            .collect();
        assert!(want.contains(eps_cell), "{eps_cell} in {want:?}");
    }
    for (m, _) in &names {
        assert!(intervals.contains(m.as_str()), "{m} in {intervals}");
    }
}

#[test]
fn retrained_weights_under_the_same_file_name_are_a_model_of_their_own() {
    let tmp = with_dataset();
    let d = tmp.path();
    with_lenet(d);
    let eval = evaluate_lenet(&["--eps", "0,0.1", "--reports", "rep"]);
    ok(d, &eval, "new records");
    // retrained: other weights, the same file name
    let mut bytes = std::fs::read(d.join("lenet.safetensors")).expect("weights");
    let n = bytes.len();
    let last = f32::from_le_bytes(bytes[n - 4..].try_into().expect("4 bytes"));
    bytes[n - 4..].copy_from_slice(&(last + 0.5).to_le_bytes());
    std::fs::write(d.join("lenet.safetensors"), bytes).expect("write");
    ok(d, &eval, "new records");
    let results = std::fs::read_to_string(d.join("rep/results.md")).expect("results");
    let rows = table_rows(&results);
    let models: BTreeSet<&str> = rows.iter().map(|r| r[1].as_str()).collect();
    assert_eq!(models.len(), 2, "{results}");
    assert!(
        models.iter().all(|m| m.starts_with("lenet [model key=")),
        "{models:?}"
    );
    assert!(results.contains("**Rows told apart.**"), "{results}");
}

#[test]
fn an_undefined_figure_leaves_the_run_directory_readable() {
    let tmp = with_dataset();
    let d = tmp.path();
    ok(d, &quick_run(), "3 new records");
    // what serde_json writes for a NaN mean confidence (logits that overflowed)
    let run = d.join("out");
    let kept: Vec<String> = lines(&run)
        .into_iter()
        .map(|l| {
            let mut v: serde_json::Value = serde_json::from_str(&l).expect("json");
            v["mean_confidence"] = serde_json::Value::Null;
            v["stages"][0]["record"]["epochs"][0]["loss"] = serde_json::Value::Null;
            v.to_string()
        })
        .collect();
    common::keep_only(&run, &kept);
    let (results, summary, _) = read_report(d, "out", "rep");
    assert!(!summary.contains("Quarantined"), "{summary}");
    assert_eq!(table_rows(&results).len(), 1, "{results}");
    ok(d, &quick_run(), "0 new records, 3 already there");
}

fn quick_run() -> Vec<&'static str> {
    run_args(&[
        "--epochs",
        "1",
        "--hidden",
        "8",
        "--eps",
        "0,0.1,0.2",
        "--attack-labels",
        "true",
    ])
}

/// The checkpoint directory of model `name` in run `run`.
fn checkpoint_of(run: &Path, name: &str) -> PathBuf {
    checkpoints(run)
        .into_iter()
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(&format!("{name}-")))
        })
        .expect("checkpoint")
}

#[test]
fn swapped_checkpoint_directories_are_refused() {
    let tmp = with_matrix();
    let d = tmp.path();
    ok(d, &matrix_args("out"), "18 new records");
    let run = d.join("out");
    let (a, b) = (checkpoint_of(&run, "base"), checkpoint_of(&run, "other"));
    let parked = run.join("parked");
    std::fs::rename(&a, &parked).expect("a aside");
    std::fs::rename(&b, &a).expect("b to a");
    std::fs::rename(&parked, &b).expect("a to b");
    // one more ε: base must be loaded again, and its directory holds `other`
    let more = [
        matrix_args("out"),
        vec!["--eps", "0,0.1,0.2,0.3", "--extend"],
    ]
    .concat();
    let t = fails(
        d,
        &more,
        &["holds model other", "not base", "moved or swapped"],
    );
    assert!(
        t.contains(&a.file_name().expect("name").to_string_lossy().to_string()),
        "{t}"
    );
    assert_eq!(lines(&run).len(), 18, "nothing written");
    // put back, the run goes on
    std::fs::rename(&a, &parked).expect("a aside");
    std::fs::rename(&b, &a).expect("b to a");
    std::fs::rename(&parked, &b).expect("a to b");
    ok(d, &more, "6 new records");
}

/// Rewrites the first record line of `run` whose key is `key` through `f`.
fn forge(run: &Path, key: &str, f: impl Fn(&mut serde_json::Value)) -> String {
    let mut out = Vec::new();
    let mut forged = String::new();
    for l in lines(run) {
        let mut v: serde_json::Value = serde_json::from_str(&l).expect("json");
        if v["key"] == key && forged.is_empty() {
            f(&mut v);
            forged = v.to_string();
            out.push(forged.clone());
        } else {
            out.push(l);
        }
    }
    common::keep_only(run, &out);
    forged
}

#[test]
fn records_are_checked_when_read() {
    let tmp = with_dataset();
    let d = tmp.path();
    ok(d, &quick_run(), "3 new records");
    let run = d.join("out");
    let all = records(&run);
    let key_of_eps = |e: f64| {
        all.iter()
            .find(|r| r["eps"] == e)
            .and_then(|r| r["key"].as_str())
            .expect("key")
            .to_string()
    };
    let (k1, k2) = (key_of_eps(0.1), key_of_eps(0.2));
    let pristine = lines(&run);
    // each forgery is quarantined with its reason; the rest stays readable, and a rerun redoes
    // the quarantined record
    for (what, says, f) in [
        (
            "an accuracy of 150%",
            "adversarial_accuracy = 1.5: outside [0, 1]",
            Box::new(|v: &mut serde_json::Value| v["adversarial_accuracy"] = 1.5.into())
                as Box<dyn Fn(&mut serde_json::Value)>,
        ),
        (
            "robust above clean",
            "above clean_accuracy",
            Box::new(|v: &mut serde_json::Value| {
                let n = v["examples"].as_u64().expect("n");
                v["clean_correct"] = 0.into();
                v["clean_accuracy"] = 0.0.into();
                v["adversarial_correct"] = 1.into();
                v["adversarial_accuracy"] = (1.0 / n as f64).into();
                v.as_object_mut()
                    .expect("obj")
                    .remove("adversarial_correct_examples");
            }),
        ),
        (
            "a negative norm",
            "mean_l2 = -1: a norm is never negative",
            Box::new(|v: &mut serde_json::Value| v["mean_l2"] = (-1.0).into()),
        ),
        (
            "a key that is not its ε",
            "is not the key of model key",
            Box::new(|v: &mut serde_json::Value| v["eps"] = 0.3.into()),
        ),
        (
            "a schema of the future",
            "schema 9: not a schema this build reads",
            Box::new(|v: &mut serde_json::Value| v["schema"] = 9.into()),
        ),
    ] {
        common::keep_only(&run, &pristine);
        forge(&run, &k1, f);
        let (results, summary, _) = read_report(d, "out", "rep");
        assert!(
            summary.contains("**Quarantined records.**") && summary.contains(says),
            "{what}: {summary}"
        );
        assert!(!results.contains("150.00%"), "{what}: {results}");
        ok(d, &quick_run(), "1 new records, 2 already there");
    }
    // a conflicting duplicate: neither copy is used, whichever file comes first, and no rerun
    // adds a third
    common::keep_only(&run, &pristine);
    let copy = pristine
        .iter()
        .find(|l| l.contains(&k2))
        .expect("line")
        .clone();
    let mut other: serde_json::Value = serde_json::from_str(&copy).expect("json");
    other["checkpoint_sha256"] = "0".repeat(64).into();
    for (first, second) in [
        (copy.clone(), other.to_string()),
        (other.to_string(), copy.clone()),
    ] {
        let mut kept: Vec<String> = pristine
            .iter()
            .filter(|l| !l.contains(&k2))
            .cloned()
            .collect();
        kept.push(first);
        kept.push(second);
        common::keep_only(&run, &kept);
        let (results, summary, _) = read_report(d, "out", "rep");
        assert!(summary.contains("conflicts with"), "{summary}");
        assert!(summary.contains("neither is used"), "{summary}");
        assert!(
            !results.contains("| ε=0.2 |"),
            "the conflicting ε is in no table: {results}"
        );
        ok(d, &quick_run(), "0 new records");
    }
}

#[test]
fn a_run_directory_keeps_the_matrix_it_was_started_with() {
    let tmp = with_dataset();
    let d = tmp.path();
    ok(d, &quick_run(), "3 new records");
    let matrix = std::fs::read_to_string(d.join("out/matrix.toml")).expect("matrix");
    // another grid into the same directory: refused, nothing written
    let other = run_args(&[
        "--epochs",
        "1",
        "--hidden",
        "8",
        "--eps",
        "0,0.3",
        "--attack-labels",
        "true",
    ]);
    fails(
        d,
        &other,
        &[
            "out/matrix.toml: holds another matrix",
            "--extend",
            "new --out",
        ],
    );
    // a refused evaluate does not touch it either
    with_lenet(d);
    fails(
        d,
        &evaluate_lenet(&["--extend", "--names", "conv9=conv1"]),
        &["conv9"],
    );
    assert_eq!(
        std::fs::read_to_string(d.join("out/matrix.toml")).expect("matrix"),
        matrix
    );
    assert_eq!(lines(&d.join("out")).len(), 3);
    // explicitly: added beside it
    ok(
        d,
        &[other.clone(), vec!["--extend"]].concat(),
        "1 new records",
    );
    assert_eq!(
        std::fs::read_to_string(d.join("out/matrix.toml")).expect("matrix"),
        matrix
    );
    let kept = std::fs::read_dir(d.join("out/matrices"))
        .expect("matrices")
        .count();
    assert_eq!(kept, 2);
    // either matrix reruns without --extend, and the report knows both
    ok(d, &quick_run(), "0 new records");
    ok(d, &other, "0 new records");
    let (_, summary, _) = read_report(d, "out", "rep");
    assert!(!summary.contains("Missing results"), "{summary}");
}

#[test]
fn a_model_too_large_for_the_memory_is_an_error_not_an_abort() {
    let tmp = with_dataset();
    let d = tmp.path();
    let exe = env!("CARGO_BIN_EXE_bench-runner");
    let o = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "ulimit -v 4000000 && exec '{exe}' run --dataset-dir ds --out out --backends ndarray --epochs 1 --hidden 1000000 --eps 0 --attack-labels true"
        ))
        .current_dir(d)
        .env("RUST_LOG", "warn")
        .output()
        .expect("sh");
    let t = text(&o);
    assert_eq!(o.status.code(), Some(1), "{t}");
    assert!(
        t.contains("invalid hidden") && t.contains("more than the"),
        "{t}"
    );
    assert!(t.contains("this process can allocate"), "{t}");
}

#[test]
fn a_report_names_what_the_matrix_asked_for_and_no_record_holds() {
    let tmp = with_matrix();
    let d = tmp.path();
    // shards of two different counts: some units done twice, others never
    ok(
        d,
        &[matrix_args("out"), vec!["--shard", "0/2"]].concat(),
        "new records",
    );
    ok(
        d,
        &[matrix_args("out"), vec!["--shard", "1/3"]].concat(),
        "new records",
    );
    let (_, summary, _) = read_report(d, "out", "rep");
    assert!(summary.contains("**Missing results.**"), "{summary}");
    assert!(summary.contains("model `"), "{summary}");
    // a model without any record (its writer killed before the first)
    let run = d.join("out");
    ok(d, &matrix_args("out"), "new records");
    let kept: Vec<String> = lines(&run)
        .into_iter()
        .filter(|l| !l.contains("\"model\":\"other\""))
        .collect();
    common::keep_only(&run, &kept);
    let (_, summary, _) = read_report(d, "out", "rep2");
    assert!(
        summary.contains("model `other`: none of its 6 results (never evaluated)"),
        "{summary}"
    );
    let verdict = std::fs::read_to_string(d.join("rep2/verdict.md")).expect("verdict");
    assert!(verdict.contains("never evaluated"), "{verdict}");
}
