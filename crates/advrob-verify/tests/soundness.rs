//! Soundness and completeness on small networks, on every compiled-in backend: sampled points lie
//! inside the bounds, of MLPs and of CNNs (lowered to affine layers and ReLU); on two-pixel
//! networks, where the exact minimum of every margin over the box is found by enumerating the
//! vertices of the ReLUs' arrangement, what IBP, CROWN and the complete search conclude agrees with
//! it; no PGD breaks an image the search verified.

use advrob_data::rng::SplitMix64;
use advrob_model::backend::on_test_backends;
use advrob_model::{
    Classifier, DeployConfig, Deployed, LenetConfig, MadryCnnConfig, MlpConfig, Net, NetConfig,
    Normalize,
};
use advrob_verify::{
    Intermediate, Method, Network, Status, VerifyError, VerifySettings, logit_bounds,
    margin_bounds, verify,
};
use burn::tensor::{Device, Tensor, TensorData};

fn mlp(inputs: usize, hidden: Vec<usize>, classes: usize, seed: u64, d: &Device) -> Net {
    NetConfig::from(
        MlpConfig::new()
            .with_input(inputs)
            .with_hidden(hidden)
            .with_classes(classes)
            .with_seed(seed),
    )
    .init(d)
    .expect("a small MLP")
}

fn logits(model: &dyn Classifier, x: &[f32], rows: usize, inputs: usize, d: &Device) -> Vec<f32> {
    images_logits(model, x, [rows, 1, 1, inputs], d)
}

fn images_logits(model: &dyn Classifier, x: &[f32], shape: [usize; 4], d: &Device) -> Vec<f32> {
    let t = Tensor::<4>::from_data(TensorData::new(x.to_vec(), shape), d);
    model
        .logits(t)
        .into_data()
        .try_into_vec_as::<f32>()
        .expect("f32 logits")
}

const METHODS: [Method; 3] = [
    Method::Ibp,
    Method::Crown,
    Method::AlphaCrown {
        iterations: 10,
        lr: 0.5,
    },
];

#[test]
fn sampled_points_lie_inside_every_methods_bounds() {
    on_test_backends(|d| {
        let mut rng = SplitMix64::new(7);
        for case in 0..12u64 {
            let (inputs, classes) = (6, 4);
            let hidden = if case % 2 == 0 { vec![8, 7] } else { vec![9] };
            let net = mlp(inputs, hidden, classes, 100 + case, d);
            // every third model behind a standardisation, every fourth behind a quantisation
            let config = DeployConfig::new()
                .with_normalize((case % 3 == 0).then_some(Normalize {
                    mean: 0.3,
                    std: 0.4,
                }))
                .with_quantize((case % 4 == 1).then_some(5));
            let model = Deployed { net, config };
            let network = Network::new(&model, d).expect("an MLP is bounded");
            let rows = 3;
            let mut lo = Vec::new();
            let mut hi = Vec::new();
            for _ in 0..rows * inputs {
                let c = rng.next_f64() as f32;
                let e = 0.3 * rng.next_f64() as f32;
                lo.push((c - e).max(0.0));
                hi.push((c + e).min(1.0));
            }
            for method in METHODS {
                let b =
                    logit_bounds(&network, lo.clone(), hi.clone(), rows, method).expect("bounds");
                // 64 random points and the box's corners along each row
                let mut points = Vec::new();
                for s in 0..80 {
                    for (i, (&l, &h)) in lo.iter().zip(&hi).enumerate() {
                        let t = if s < 64 {
                            rng.next_f64() as f32
                        } else {
                            ((s + i) % 2) as f32
                        };
                        points.push(l + t * (h - l));
                    }
                }
                let z = logits(&model, &points, 80 * rows, inputs, d);
                for (p, zp) in z.chunks(classes * rows).enumerate() {
                    for (k, &v) in zp.iter().enumerate() {
                        assert!(
                            b.lower[k] <= v + 1e-4 && v <= b.upper[k] + 1e-4,
                            "case {case}, {}: sample {p} logit {k} = {v} outside [{}, {}]",
                            method.name(),
                            b.lower[k],
                            b.upper[k]
                        );
                    }
                }
            }
        }
    });
}

/// The exact minimum over the box of every margin `z_y − z_j` (`j ≠ y`) of a one-hidden-layer
/// network with two inputs: the margin is linear on each cell of the arrangement of the lines
/// `w_h · x + b_h = 0` inside the box, so its minimum is at a vertex of that arrangement: a box
/// corner, where a line crosses the box's edge, or where two lines cross inside it.
fn exact_min(model: &Net, lo: [f64; 2], hi: [f64; 2], y: usize) -> f64 {
    let dense = model.dense().expect("an MLP's host chain");
    let (l1, l2) = (&dense.layers[0], &dense.layers[1]);
    let (h, classes) = (l1.outputs(), l2.outputs());
    let w = |i: usize, j: usize| f64::from(l1.weight[i * h + j]);
    let margin = |x: [f64; 2]| {
        let a: Vec<f64> = (0..h)
            .map(|j| (x[0] * w(0, j) + x[1] * w(1, j) + f64::from(l1.bias[j])).max(0.0))
            .collect();
        let z: Vec<f64> = (0..classes)
            .map(|k| {
                (0..h)
                    .map(|j| a[j] * f64::from(l2.weight[j * classes + k]))
                    .sum::<f64>()
                    + f64::from(l2.bias[k])
            })
            .collect();
        (0..classes)
            .filter(|&k| k != y)
            .map(|k| z[y] - z[k])
            .fold(f64::INFINITY, f64::min)
    };
    let inside = |x: [f64; 2]| (0..2).all(|i| x[i] >= lo[i] - 1e-12 && x[i] <= hi[i] + 1e-12);
    let mut points = vec![lo, hi, [lo[0], hi[1]], [hi[0], lo[1]]];
    for j in 0..h {
        let (a, b, c) = (w(0, j), w(1, j), f64::from(l1.bias[j]));
        // the line a x0 + b x1 + c = 0 against the four edges
        for x0 in [lo[0], hi[0]] {
            if b != 0.0 {
                points.push([x0, -(a * x0 + c) / b]);
            }
        }
        for x1 in [lo[1], hi[1]] {
            if a != 0.0 {
                points.push([-(b * x1 + c) / a, x1]);
            }
        }
        for k in 0..j {
            let (d, e, f) = (w(0, k), w(1, k), f64::from(l1.bias[k]));
            let det = a * e - b * d;
            if det != 0.0 {
                points.push([(b * f - c * e) / det, (c * d - a * f) / det]);
            }
        }
    }
    points
        .into_iter()
        .filter(|&p| inside(p))
        .map(margin)
        .fold(f64::INFINITY, f64::min)
}

#[test]
fn two_pixel_networks_agree_with_the_exact_minimum() {
    on_test_backends(|d| {
        let mut rng = SplitMix64::new(11);
        let settings = VerifySettings {
            max_domains: 5000,
            ..VerifySettings::default()
        };
        let (mut decided, mut total) = (0, 0);
        for case in 0..24u64 {
            let model = mlp(2, vec![8], 3, 500 + case, d);
            let network = Network::new(&model, d).expect("an MLP is bounded");
            let rows = 6;
            let x: Vec<f32> = (0..rows * 2).map(|_| rng.next_f64() as f32).collect();
            let eps = 0.05 + 0.25 * rng.next_f64() as f32;
            let clean = logits(&model, &x, rows, 2, d);
            let labels: Vec<usize> = clean
                .chunks(3)
                .map(|z| {
                    (0..3)
                        .max_by(|&a, &b| z[a].total_cmp(&z[b]))
                        .expect("3 classes")
                })
                .collect();
            let mut certified = Vec::new();
            for method in METHODS {
                let m = margin_bounds(&network, &x, &labels, eps, method).expect("bounds");
                certified.push(
                    m.chunks(3)
                        .map(|r| r.iter().all(|&v| v > 1e-4))
                        .collect::<Vec<bool>>(),
                );
            }
            let images = Tensor::<4>::from_data(TensorData::new(x.clone(), [rows, 1, 1, 2]), d);
            let verdict =
                verify(&model, &network, images, &labels, eps, &settings).expect("verify");
            for i in 0..rows {
                let c = [f64::from(x[2 * i]), f64::from(x[2 * i + 1])];
                let e = f64::from(eps);
                let lo = [(c[0] - e).max(0.0), (c[1] - e).max(0.0)];
                let hi = [(c[0] + e).min(1.0), (c[1] + e).min(1.0)];
                let exact = exact_min(&model, lo, hi, labels[i]);
                let what = format!("case {case} image {i}: exact minimum {exact:.6}");
                // IBP ⊆ CROWN ⊆ α-CROWN ⊆ exact in what they certify
                assert!(
                    !certified[0][i] || certified[1][i],
                    "{what}: IBP certifies, CROWN not"
                );
                assert!(
                    !certified[1][i] || certified[2][i],
                    "{what}: CROWN certifies, α not"
                );
                assert!(
                    !certified[2][i] || exact > 0.0,
                    "{what}: certified, not robust"
                );
                let status = verdict[i].status;
                match status {
                    Status::Verified => assert!(exact > 0.0, "{what}: verified, not robust"),
                    Status::Attacked => assert!(exact < 1e-5, "{what}: attacked, yet robust"),
                    Status::Misclassified => unreachable!("labels are the clean predictions"),
                    Status::Unknown => {}
                }
                total += 1;
                if exact.abs() > 1e-3 {
                    assert_ne!(status, Status::Unknown, "{what}: left unknown");
                    decided += 1;
                }
            }
        }
        // most images are clear of the tolerance band, so the comparison has teeth
        assert!(decided * 10 >= total * 9, "{decided} of {total} decided");
    });
}

/// Runs `pgd` (seeded by `case`) on the 3-class `model` at `eps` and asserts that it breaks no
/// image `verdict` says is verified; returns (verified, broken by PGD).
#[allow(clippy::too_many_arguments)]
fn check_against_pgd(
    pgd: &advrob_attack::Pgd,
    model: &dyn Classifier,
    images: Tensor<4>,
    labels: &[usize],
    eps: f32,
    case: u64,
    verdict: &[advrob_verify::ImageResult],
    d: &Device,
) -> (usize, usize) {
    use advrob_attack::Attack;
    let y = Tensor::<1, burn::tensor::Int>::from_data(
        TensorData::new(
            labels.iter().map(|&l| l as i64).collect::<Vec<_>>(),
            [labels.len()],
        ),
        d,
    );
    let adv = pgd
        .perturb_seeded(model, images, y, f64::from(eps), case)
        .expect("PGD");
    let z = model
        .logits(adv)
        .into_data()
        .try_into_vec_as::<f32>()
        .expect("f32");
    let (mut verified, mut attacked) = (0, 0);
    for (i, r) in verdict.iter().enumerate() {
        let row = &z[i * 3..i * 3 + 3];
        let broken = (0..3).any(|k| k != labels[i] && row[k] > row[labels[i]]);
        if r.status == Status::Verified {
            verified += 1;
            assert!(!broken, "case {case} image {i}: verified, yet PGD broke it");
        }
        if broken {
            attacked += 1;
        }
    }
    (verified, attacked)
}

#[test]
fn no_attack_breaks_a_verified_image() {
    use advrob_attack::{AttackLoss, PgdConfig};
    on_test_backends(|d| {
        let mut rng = SplitMix64::new(3);
        let pgd = PgdConfig {
            steps: 50,
            restarts: 4,
            loss: AttackLoss::Margin,
            ..PgdConfig::default()
        }
        .check()
        .expect("PGD's settings");
        let (mut verified, mut attacked) = (0, 0);
        for case in 0..6u64 {
            let model = mlp(16, vec![12, 10], 3, 900 + case, d);
            let network = Network::new(&model, d).expect("an MLP is bounded");
            let rows = 16;
            let x: Vec<f32> = (0..rows * 16).map(|_| rng.next_f64() as f32).collect();
            let clean = logits(&model, &x, rows, 16, d);
            let labels: Vec<usize> = clean
                .chunks(3)
                .map(|z| {
                    (0..3)
                        .max_by(|&a, &b| z[a].total_cmp(&z[b]))
                        .expect("3 classes")
                })
                .collect();
            let images = Tensor::<4>::from_data(TensorData::new(x, [rows, 1, 4, 4]), d);
            let eps = 0.04 + 0.02 * case as f32;
            let verdict = verify(
                &model,
                &network,
                images.clone(),
                &labels,
                eps,
                &VerifySettings::default(),
            )
            .expect("verify");
            let (v, a) = check_against_pgd(&pgd, &model, images, &labels, eps, case, &verdict, d);
            verified += v;
            attacked += a;
        }
        // both kinds occur, so the check has teeth
        assert!(
            verified > 5 && attacked > 5,
            "{verified} verified, {attacked} broken"
        );
    });
}

/// A LeNet-5 of 3 classes on `image`, seeded, behind a standardisation (and a quantisation with
/// `quantize`).
fn small_cnn(image: [usize; 2], seed: u64, quantize: bool, d: &Device) -> Deployed {
    let net = NetConfig::Lenet(
        LenetConfig::new()
            .with_image(image)
            .with_classes(3)
            .with_seed(seed),
    )
    .init(d)
    .expect("a small LeNet");
    let config = DeployConfig::new()
        .with_normalize(Some(Normalize {
            mean: 0.3,
            std: 0.4,
        }))
        .with_quantize(quantize.then_some(8));
    Deployed { net, config }
}

/// Two LeNets on small images, lowered to affine layers and ReLU: on 12×12 with CROWN's
/// intermediate bounds (its default: no hidden layer wider than 1024), on 13×15 (both pools drop a
/// row and a column) behind a quantisation too, with IBP's (CROWN-IBP, a wide network's default);
/// random points of the boxes and corners give logits inside every method's bounds.
#[test]
fn sampled_points_lie_inside_every_methods_bounds_on_a_cnn() {
    on_test_backends(|d| {
        let mut rng = SplitMix64::new(17);
        for (case, image) in [[12, 12], [13, 15]].into_iter().enumerate() {
            let model = small_cnn(image, 40 + case as u64, case == 1, d);
            let inputs = image[0] * image[1];
            let classes = 3;
            let rows = 1;
            let mut lo = Vec::new();
            let mut hi = Vec::new();
            for _ in 0..rows * inputs {
                let c = rng.next_f64() as f32;
                let e = 0.1 * rng.next_f64() as f32;
                lo.push((c - e).max(0.0));
                hi.push((c + e).min(1.0));
            }
            // 24 random points and 8 corners of each box
            let mut points = Vec::new();
            for s in 0..32 {
                for (&l, &h) in lo.iter().zip(&hi) {
                    let t = if s < 24 {
                        rng.next_f64() as f32
                    } else {
                        (rng.next_f64() < 0.5) as u8 as f32
                    };
                    points.push(l + t * (h - l));
                }
            }
            let z = images_logits(&model, &points, [32 * rows, 1, image[0], image[1]], d);
            let intermediate = [Intermediate::Crown, Intermediate::Ibp][case];
            let network = Network::new(&model, d).expect("a small CNN is bounded");
            assert_eq!(network.intermediate(), Intermediate::Crown, "case {case}");
            let network = network.with_intermediate(intermediate);
            // α-CROWN's steps cost most on a software GPU: a few show its bounds sound
            let methods = [
                Method::Ibp,
                Method::Crown,
                Method::AlphaCrown {
                    iterations: 3,
                    lr: 0.5,
                },
            ];
            for method in methods {
                let b =
                    logit_bounds(&network, lo.clone(), hi.clone(), rows, method).expect("bounds");
                for (p, zp) in z.chunks(classes * rows).enumerate() {
                    for (k, &v) in zp.iter().enumerate() {
                        assert!(
                            b.lower[k] <= v + 1e-4 && v <= b.upper[k] + 1e-4,
                            "case {case}, {intermediate:?}, {}: sample {p} logit {k} = {v} \
                                 outside [{}, {}]",
                            method.name(),
                            b.lower[k],
                            b.upper[k]
                        );
                    }
                }
            }
        }
    });
}

/// No PGD breaks an image branch and bound verified on small LeNets: with CROWN's intermediate
/// bounds at ε = 0.005, and with IBP's (CROWN-IBP) at ε = 0.05, where most are left unknown or
/// attacked.
#[test]
fn no_attack_breaks_a_verified_image_of_a_cnn() {
    use advrob_attack::{AttackLoss, PgdConfig};
    on_test_backends(|d| {
        let mut rng = SplitMix64::new(5);
        let pgd = PgdConfig {
            steps: 50,
            restarts: 2,
            loss: AttackLoss::Margin,
            ..PgdConfig::default()
        }
        .check()
        .expect("PGD's settings");
        // a small budget: a software GPU runs the tests too
        let settings = VerifySettings {
            root_iterations: 10,
            pgd_steps: 20,
            max_domains: 10,
            iterations: 5,
            ..VerifySettings::default()
        };
        let (mut verified, mut attacked) = (0, 0);
        for case in 0..2u64 {
            let model = small_cnn([12, 12], 70 + case, false, d);
            let intermediate = [Intermediate::Crown, Intermediate::Ibp][case as usize];
            let network = Network::new(&model, d)
                .expect("a small CNN is bounded")
                .with_intermediate(intermediate);
            // CROWN's intermediate bounds cost a backward pass per neuron and image
            let rows = [3, 8][case as usize];
            let x: Vec<f32> = (0..rows * 144).map(|_| rng.next_f64() as f32).collect();
            let clean = images_logits(&model, &x, [rows, 1, 12, 12], d);
            let labels: Vec<usize> = clean
                .chunks(3)
                .map(|z| {
                    (0..3)
                        .max_by(|&a, &b| z[a].total_cmp(&z[b]))
                        .expect("3 classes")
                })
                .collect();
            let images = Tensor::<4>::from_data(TensorData::new(x, [rows, 1, 12, 12]), d);
            // CROWN's intermediate bounds verify these images at 0.005; at 0.05 PGD breaks most
            // and CROWN-IBP proves none (its intervals widen through the pools' ReLUs), branch
            // and bound runs on the rest
            let eps = [0.005, 0.05][case as usize];
            let verdict =
                verify(&model, &network, images.clone(), &labels, eps, &settings).expect("verify");
            let (v, a) = check_against_pgd(&pgd, &model, images, &labels, eps, case, &verdict, d);
            verified += v;
            attacked += a;
        }
        // both kinds occur, so the check has teeth
        assert!(
            verified > 2 && attacked > 2,
            "{verified} verified, {attacked} broken"
        );
    });
}

/// LeNet-5 on 28×28 is bounded (its lowered hidden layers are wide: IBP's intermediate bounds);
/// the CNN of Madry et al., too big to lower, a bad box and a bad label are refused by name.
#[test]
fn a_cnn_is_bounded_and_what_is_not_is_refused_by_name() {
    let d = advrob_model::backend::device("ndarray").expect("ndarray");
    let lenet = NetConfig::Lenet(LenetConfig::new())
        .init(&d)
        .expect("lenet");
    let net = Network::new(&lenet, &d).expect("a LeNet is bounded");
    assert_eq!(net.inputs(), 784);
    assert_eq!(net.classes(), 10);
    assert_eq!(
        net.hidden_widths(),
        [4704, 4704, 2352, 1600, 1600, 800, 120, 84]
    );
    assert_eq!(net.intermediate(), Intermediate::Ibp);
    let mut rng = SplitMix64::new(9);
    let image: Vec<f32> = (0..784).map(|_| rng.next_f64() as f32).collect();
    let clean = images_logits(&lenet, &image, [1, 1, 28, 28], &d);
    let label = (0..10)
        .max_by(|&a, &b| clean[a].total_cmp(&clean[b]))
        .expect("10 classes");
    let ibp = margin_bounds(&net, &image, &[label], 0.001, Method::Ibp).expect("IBP");
    let crown = margin_bounds(&net, &image, &[label], 0.001, Method::Crown).expect("CROWN");
    for j in (0..10).filter(|&j| j != label) {
        let m = clean[label] - clean[j];
        // CROWN-IBP's bound keeps IBP's where higher; both below the clean margin
        assert!(
            ibp[j] <= crown[j] && crown[j] <= m + 1e-4,
            "class {j}: {ibp:?} {crown:?} {m}"
        );
    }
    let madry = NetConfig::MadryCnn(MadryCnnConfig::new())
        .init(&d)
        .expect("madry");
    let err = Network::new(&madry, &d).expect_err("too big to lower");
    assert!(
        matches!(&err, VerifyError::Unsupported(m) if m.contains("lowered")),
        "{err}"
    );
    let net = Network::new(&mlp(4, vec![3], 2, 1, &d), &d).expect("an MLP");
    assert_eq!(net.intermediate(), Intermediate::Crown);
    let err = logit_bounds(&net, vec![0.5; 4], vec![0.4; 4], 1, Method::Crown)
        .expect_err("lower above upper");
    assert!(err.to_string().contains("box"), "{err}");
    let err = margin_bounds(&net, &[0.5; 4], &[2], 0.1, Method::Ibp).expect_err("label 2 of 2");
    assert!(err.to_string().contains("labels"), "{err}");
}
