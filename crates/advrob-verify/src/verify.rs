//! Complete verification: α-CROWN on every margin, a margin PGD on what it leaves, then branch and
//! bound over the unstable ReLUs with β-CROWN's split constraints, image by image within a budget.
//!
//! A *property* is one margin `z_y − z_j > 0` of one image over its ball; a *domain* is a property
//! with some unstable ReLUs' phases fixed (splits). A domain is closed when its β-CROWN lower bound
//! exceeds the tolerance (the property holds there) and split in two on its most promising unstable
//! ReLU otherwise (the one whose upper chord costs the bound most). Every bounded domain's
//! minimising corner of the box is passed through the model: a corner the model misclassifies is a
//! counterexample, checked by the model's own forward pass, and ends the image as *attacked*. An
//! image is *verified* when every property's domains are closed, *unknown* when its budget of
//! bounded domains is spent first. With every unstable ReLU of a domain fixed the network is
//! linear there and β-CROWN's bound, at its optimum, is the exact minimum over the domain, so the
//! search is complete given budget enough; the budget makes it stop.

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use advrob_model::Classifier;
use advrob_model::backend::host_f32;
use burn::tensor::{Int, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use crate::bounds::{self, InputBox, Interval, Method};
use crate::certify::{check_images, margin_spec};
use crate::error::{Result, VerifyError};
use crate::network::Network;
use crate::optimise::{Problem, solve};

/// What the verification concluded about one image at one ε.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    /// Proven: every point of the ball (within [0, 1]) is classified as the label.
    Verified,
    /// A point of the ball the model misclassifies was found and checked by a forward pass.
    Attacked,
    /// The clean image itself is misclassified.
    Misclassified,
    /// Neither, within the budget.
    Unknown,
}

/// How hard to try.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VerifySettings {
    /// α-CROWN steps on every margin before anything else (0: plain CROWN).
    pub root_iterations: usize,
    /// The margin PGD's steps on the images α-CROWN leaves open (0: no PGD).
    pub pgd_steps: usize,
    /// Branch and bound: domains bounded per image at most (0: no branch and bound; images
    /// α-CROWN and the PGD leave open are unknown).
    pub max_domains: usize,
    /// Domains bounded together in one batch.
    pub batch: usize,
    /// α/β steps per batch of domains.
    pub iterations: usize,
    /// Adam's step size for α and β.
    pub lr: f32,
    /// A margin counts as proven only above `tolerance · (1 + M)`, `M` the largest magnitude of
    /// the image's interval bounds on the last layer: guards the f32 rounding of the bounds and of
    /// the model's own forward pass, which grows with the size of the numbers summed.
    pub tolerance: f32,
}

impl Default for VerifySettings {
    fn default() -> Self {
        VerifySettings {
            root_iterations: 20,
            pgd_steps: 40,
            max_domains: 2000,
            batch: 64,
            iterations: 10,
            lr: 0.5,
            tolerance: 1e-5,
        }
    }
}

impl VerifySettings {
    /// Refuses a zero batch, a step size that is not positive and a negative tolerance.
    pub fn check(&self) -> Result<()> {
        if self.batch == 0 {
            return Err(VerifyError::invalid(
                "batch",
                "0: at least one domain per batch",
            ));
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return Err(VerifyError::invalid(
                "lr",
                format!("{}: must be > 0", self.lr),
            ));
        }
        if !(self.tolerance.is_finite() && self.tolerance >= 0.0) {
            return Err(VerifyError::invalid(
                "tolerance",
                format!("{}: must be ≥ 0", self.tolerance),
            ));
        }
        Ok(())
    }
}

/// One image's verdict.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageResult {
    /// The verdict.
    pub status: Status,
    /// The smallest margin lower bound α-CROWN proved before branching (negative: not certified
    /// by bounds alone).
    pub root_bound: f32,
    /// ReLUs whose phase the ball does not fix (pre-activation bounds straddling 0 before
    /// branching), over all hidden layers.
    pub unstable: usize,
    /// Domains bounded by branch and bound.
    pub domains: usize,
}

/// Verifies each image at `eps`: [`Status`] per image, in order.
///
/// `model` is the deployed classifier `net` was read from: counterexamples are checked with its
/// own forward pass on its device.
///
/// # Shapes
///
/// - images: `[B, C, H, W]` in [0, 1] on the model's device; labels: `[B]`
///
/// # Errors
///
/// [`VerifyError::Invalid`] for bad settings or inputs; [`VerifyError::Readback`] when a tensor
/// cannot be read.
pub fn verify(
    model: &dyn Classifier,
    net: &Network,
    images: Tensor<4>,
    labels: &[usize],
    eps: f32,
    settings: &VerifySettings,
) -> Result<Vec<ImageResult>> {
    settings.check()?;
    let [b, c, h, w] = images.dims();
    if b != labels.len() {
        return Err(VerifyError::invalid(
            "labels",
            format!("{} labels for {b} images", labels.len()),
        ));
    }
    // chunks of images, each verified to the end before the next: the bounds' tensors grow with
    // the batch (α-CROWN keeps a slope per image, margin and neuron)
    let mut out = Vec::with_capacity(b);
    for start in (0..b).step_by(CHUNK) {
        let end = (start + CHUNK).min(b);
        let part = images.clone().slice([start..end, 0..c, 0..h, 0..w]);
        out.extend(verify_chunk(
            model,
            net,
            part,
            &labels[start..end],
            eps,
            settings,
        )?);
    }
    Ok(out)
}

/// Images verified together.
const CHUNK: usize = 256;

fn verify_chunk(
    model: &dyn Classifier,
    net: &Network,
    images: Tensor<4>,
    labels: &[usize],
    eps: f32,
    settings: &VerifySettings,
) -> Result<Vec<ImageResult>> {
    let dims = images.dims();
    let rows = labels.len();
    let host = host_f32(images.clone())?;
    check_images(net, &host, labels, eps)?;
    if dims[0] != rows {
        return Err(VerifyError::invalid(
            "labels",
            format!("{rows} labels for {} images", dims[0]),
        ));
    }
    let started = Instant::now();
    let classes = net.classes();
    let check = Checker {
        model,
        dims,
        labels,
    };
    // clean predictions
    let clean = check.misclassified(images.clone(), &(0..rows).collect::<Vec<_>>())?;
    let input = InputBox::linf(net, &host, rows, eps);
    let hidden = bounds::hidden_bounds(net, &input, Method::Crown);
    let hidden_host: Vec<(Vec<f32>, Vec<f32>)> = hidden
        .iter()
        .map(|h| Ok((host_f32(h.lower.clone())?, host_f32(h.upper.clone())?)))
        .collect::<Result<_>>()?;
    // each image's threshold of proof, scaled by the size of its last layer's values
    let tol: Vec<f32> = {
        let last = bounds::ibp(&net.layers, &input.mapped)
            .pop()
            .expect("a network has at least one layer (Network::new)");
        let (lo, up) = (host_f32(last.lower)?, host_f32(last.upper)?);
        let k = net.classes();
        (0..rows)
            .map(|i| {
                let m = lo[i * k..(i + 1) * k]
                    .iter()
                    .chain(&up[i * k..(i + 1) * k])
                    .fold(0f32, |m, v| m.max(v.abs()));
                settings.tolerance * (1.0 + m)
            })
            .collect()
    };
    let widths = net.hidden_widths();
    let unstable: Vec<usize> = (0..rows)
        .map(|i| {
            hidden_host
                .iter()
                .zip(&widths)
                .map(|((l, u), &n)| {
                    (0..n)
                        .filter(|&j| l[i * n + j] < 0.0 && u[i * n + j] > 0.0)
                        .count()
                })
                .sum()
        })
        .collect();
    let (spec, against) = margin_spec(labels, classes, net.device());
    let root = solve(
        &Problem {
            net,
            input: &input,
            hidden: &hidden,
            spec,
            signs: None,
            alpha: None,
            beta: None,
        },
        settings.root_iterations,
        settings.lr,
    );
    let s = classes - 1;
    let root_lower = host_f32(root.lower.clone())?;
    let mut results: Vec<ImageResult> = (0..rows)
        .map(|i| {
            let bound = root_lower[i * s..(i + 1) * s]
                .iter()
                .copied()
                .fold(f32::INFINITY, f32::min);
            ImageResult {
                status: if clean[i] {
                    Status::Misclassified
                } else if bound > tol[i] {
                    Status::Verified
                } else {
                    Status::Unknown
                },
                root_bound: bound,
                unstable: unstable[i],
                domains: 0,
            }
        })
        .collect();
    let open = |results: &[ImageResult]| -> Vec<usize> {
        (0..rows)
            .filter(|&i| results[i].status == Status::Unknown)
            .collect()
    };
    // the corners α-CROWN's bounds point at, one per open margin
    for r in 0..s {
        let rows_open = open(&results);
        if rows_open.is_empty() {
            break;
        }
        let corner = bounds::minimiser(&root.linear, &input.pixels, r);
        let broken = check.misclassified_flat(corner, &rows_open)?;
        for (&i, b) in rows_open.iter().zip(broken) {
            if b {
                results[i].status = Status::Attacked;
            }
        }
    }
    if settings.pgd_steps > 0 {
        let rows_open = open(&results);
        if !rows_open.is_empty() {
            let broken = pgd(&check, &host, &rows_open, eps, settings.pgd_steps, net)?;
            for (&i, b) in rows_open.iter().zip(broken) {
                if b {
                    results[i].status = Status::Attacked;
                }
            }
        }
    }
    if settings.max_domains > 0 {
        let rows_open = open(&results);
        let root_alpha: Vec<Vec<f32>> = root
            .alpha
            .iter()
            .map(|a| host_f32(a.clone()))
            .collect::<std::result::Result<_, _>>()?;
        let mut bab = Bab {
            net,
            check: &check,
            settings,
            input: &input,
            hidden: &hidden_host,
            widths: &widths,
            tol: &tol,
        };
        let mut domains = Vec::new();
        for &i in &rows_open {
            for (r, &j) in against[i].iter().enumerate() {
                if root_lower[i * s + r] > tol[i] {
                    continue;
                }
                domains.push(Domain {
                    image: i,
                    target: j,
                    splits: Vec::new(),
                    alpha: widths
                        .iter()
                        .zip(&root_alpha)
                        .map(|(&n, a)| a[(i * s + r) * n..(i * s + r + 1) * n].to_vec())
                        .collect(),
                    beta: widths.iter().map(|&n| vec![0.0; n]).collect(),
                    lower: root_lower[i * s + r],
                });
            }
        }
        bab.run(domains, &mut results)?;
    }
    log::debug!(
        "verified {rows} images at eps {eps} in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(results)
}

/// Forward passes through the deployed model.
struct Checker<'a> {
    model: &'a dyn Classifier,
    dims: [usize; 4],
    labels: &'a [usize],
}

impl Checker<'_> {
    /// Whether each of `rows` (image indices of `x`'s rows, in order) is misclassified.
    fn misclassified(&self, x: Tensor<4>, rows: &[usize]) -> Result<Vec<bool>> {
        let pred = self
            .model
            .logits(x)
            .argmax(1)
            .into_data()
            .try_into_vec_as::<i64>()
            .map_err(|e| VerifyError::Readback(format!("{e:?}")))?;
        Ok(rows
            .iter()
            .zip(pred)
            .map(|(&i, p)| p != self.labels[i] as i64)
            .collect())
    }

    /// [`Self::misclassified`] for flat rows `[B, n₀]` of which `rows` are checked.
    fn misclassified_flat(&self, x: Tensor<2>, rows: &[usize]) -> Result<Vec<bool>> {
        let [_, c, h, w] = self.dims;
        let d = x.device();
        let idx = Tensor::<1, Int>::from_data(
            TensorData::new(
                rows.iter().map(|&r| r as i64).collect::<Vec<_>>(),
                [rows.len()],
            ),
            &d,
        );
        let x = x.select(0, idx).reshape([rows.len(), c, h, w]);
        self.misclassified(x, rows)
    }
}

/// A margin PGD (the largest other logit minus the label's, ascended by signed gradient steps of
/// `eps/4`, projected on the ball and [0, 1]) from the clean image; whether each row ended
/// misclassified, checked by a forward pass.
fn pgd(
    check: &Checker<'_>,
    host: &[f32],
    rows: &[usize],
    eps: f32,
    steps: usize,
    net: &Network,
) -> Result<Vec<bool>> {
    let n = net.inputs();
    let [_, c, h, w] = check.dims;
    let b = rows.len();
    let d = net.device().clone();
    let pick: Vec<f32> = rows
        .iter()
        .flat_map(|&i| host[i * n..(i + 1) * n].to_vec())
        .collect();
    let x0 = Tensor::<4>::from_data(TensorData::new(pick, [b, c, h, w]), &d);
    let lo = (x0.clone() - eps).clamp_min(0.0);
    let hi = (x0.clone() + eps).clamp_max(1.0);
    let classes = net.classes();
    let onehot: Vec<f32> = rows
        .iter()
        .flat_map(|&i| (0..classes).map(move |j| if j == check.labels[i] { 1.0 } else { 0.0 }))
        .collect();
    let onehot = Tensor::<2>::from_data(TensorData::new(onehot, [b, classes]), &d);
    let mut x = x0;
    let mut broken = vec![false; b];
    for _ in 0..steps {
        let xt = x.clone().autodiff().require_grad();
        let z = check.model.logits(xt.clone());
        let oh = onehot.clone().autodiff();
        let own = (z.clone() * oh.clone()).sum_dim(1);
        let other = (z - oh * 1e9).max_dim(1);
        let loss = (other - own).sum();
        let Some(g) = xt.grad(&loss.backward()) else {
            break;
        };
        x = (x + g.without_autodiff().sign() * (eps / 4.0))
            .max_pair(lo.clone())
            .min_pair(hi.clone());
        for (k, m) in check
            .misclassified(x.clone(), rows)?
            .into_iter()
            .enumerate()
        {
            broken[k] |= m;
        }
        if broken.iter().all(|&m| m) {
            break;
        }
    }
    Ok(broken)
}

/// One branch of one property.
struct Domain {
    image: usize,
    target: usize,
    /// `(hidden layer, neuron, fixed active)`.
    splits: Vec<(usize, usize, bool)>,
    /// Where its slopes and multipliers start, per hidden layer `[n]`.
    alpha: Vec<Vec<f32>>,
    beta: Vec<Vec<f32>>,
    lower: f32,
}

struct Bab<'a> {
    net: &'a Network,
    check: &'a Checker<'a>,
    settings: &'a VerifySettings,
    input: &'a InputBox,
    /// The ball's pre-activation bounds per hidden layer, `[B, n]` each, on the host.
    hidden: &'a [(Vec<f32>, Vec<f32>)],
    widths: &'a [usize],
    /// Each image's threshold of proof.
    tol: &'a [f32],
}

/// A batch of domains bounded: each one's lower bound, its minimising corner (pixel space,
/// `[m, n₀]`), and per hidden layer its branching scores, slopes and multipliers (`[m·n]` each).
struct Bounded {
    lower: Vec<f32>,
    corner: Tensor<2>,
    scores: Vec<Vec<f32>>,
    alphas: Vec<Vec<f32>>,
    betas: Vec<Vec<f32>>,
}

impl Bab<'_> {
    /// β-CROWN on a batch of domains, `iterations` steps at `lr`.
    fn bound(&self, batch: &[Domain], iterations: usize, lr: f32) -> Result<Bounded> {
        let d = self.net.device().clone();
        let classes = self.net.classes();
        let m = batch.len();
        let rows: Vec<usize> = batch.iter().map(|dm| dm.image).collect();
        let input = self.input.select(&rows);
        let mut hidden = Vec::with_capacity(self.widths.len());
        let mut signs = Vec::with_capacity(self.widths.len());
        let mut alpha = Vec::with_capacity(self.widths.len());
        let mut beta = Vec::with_capacity(self.widths.len());
        for (k, &n) in self.widths.iter().enumerate() {
            let (l, u) = &self.hidden[k];
            let mut lo = Vec::with_capacity(m * n);
            let mut up = Vec::with_capacity(m * n);
            let mut sg = vec![0f32; m * n];
            for (r, dm) in batch.iter().enumerate() {
                lo.extend_from_slice(&l[dm.image * n..(dm.image + 1) * n]);
                up.extend_from_slice(&u[dm.image * n..(dm.image + 1) * n]);
                for &(layer, j, active) in &dm.splits {
                    if layer == k {
                        if active {
                            lo[r * n + j] = 0.0;
                            sg[r * n + j] = 1.0;
                        } else {
                            up[r * n + j] = 0.0;
                            sg[r * n + j] = -1.0;
                        }
                    }
                }
            }
            let t2 = |v: Vec<f32>| Tensor::<2>::from_data(TensorData::new(v, [m, n]), &d);
            let t3 = |v: Vec<f32>| Tensor::<3>::from_data(TensorData::new(v, [m, 1, n]), &d);
            hidden.push(Interval {
                lower: t2(lo),
                upper: t2(up),
            });
            signs.push(t2(sg));
            alpha.push(t3(batch
                .iter()
                .flat_map(|dm| dm.alpha[k].clone())
                .collect()));
            beta.push(t3(batch.iter().flat_map(|dm| dm.beta[k].clone()).collect()));
        }
        let mut spec = vec![0f32; m * classes];
        for (r, dm) in batch.iter().enumerate() {
            spec[r * classes + self.check.labels[dm.image]] = 1.0;
            spec[r * classes + dm.target] = -1.0;
        }
        let spec = Tensor::<3>::from_data(TensorData::new(spec, [m, 1, classes]), &d);
        let solved = solve(
            &Problem {
                net: self.net,
                input: &input,
                hidden: &hidden,
                spec,
                signs: Some(signs),
                alpha: Some(alpha),
                beta: Some(beta),
            },
            iterations,
            lr,
        );
        let host_all = |v: &[Tensor<2>]| -> Result<Vec<Vec<f32>>> {
            v.iter().map(|t| Ok(host_f32(t.clone())?)).collect()
        };
        let flat = |v: &[Tensor<3>]| -> Vec<Tensor<2>> {
            v.iter()
                .map(|t| {
                    let [b, s, n] = t.dims();
                    t.clone().reshape([b * s, n])
                })
                .collect()
        };
        Ok(Bounded {
            lower: host_f32(solved.lower.clone())?,
            corner: bounds::minimiser(&solved.linear, &input.pixels, 0),
            scores: host_all(&solved.linear.intercept_loss)?,
            alphas: host_all(&flat(&solved.alpha))?,
            betas: host_all(&flat(&solved.beta))?,
        })
    }

    /// Whether the model misclassifies the corners of rows `rows` of a bounded batch.
    fn corners_broken(&self, b: &Bounded, batch: &[Domain], rows: &[usize]) -> Result<Vec<bool>> {
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let d = self.net.device().clone();
        let idx = Tensor::<1, Int>::from_data(
            TensorData::new(
                rows.iter().map(|&r| r as i64).collect::<Vec<_>>(),
                [rows.len()],
            ),
            &d,
        );
        let picked = b.corner.clone().select(0, idx);
        let images: Vec<usize> = rows.iter().map(|&r| batch[r].image).collect();
        let [_, c, h, w] = self.check.dims;
        self.check
            .misclassified(picked.reshape([rows.len(), c, h, w]), &images)
    }

    /// A leaf (every ReLU of the domain fixed): its bound is the LP's at β's optimum, which
    /// Adam approaches; more steps at ever smaller rates, each from the best so far. `Some(true)`:
    /// proven, `Some(false)`: a counterexample, `None`: neither.
    fn polish(&self, mut dm: Domain) -> Result<Option<bool>> {
        let mut lr = self.settings.lr;
        for _ in 0..6 {
            lr *= 0.5;
            let b = self.bound(std::slice::from_ref(&dm), 4 * self.settings.iterations, lr)?;
            if b.lower[0] > self.tol[dm.image] {
                return Ok(Some(true));
            }
            if self.corners_broken(&b, std::slice::from_ref(&dm), &[0])?[0] {
                return Ok(Some(false));
            }
            dm.alpha = self.row(&b.alphas, 0);
            dm.beta = self.row(&b.betas, 0);
        }
        Ok(None)
    }

    fn run(&mut self, mut queue: Vec<Domain>, results: &mut [ImageResult]) -> Result<()> {
        // domains not yet closed, per image
        let mut pending: HashMap<usize, usize> = HashMap::new();
        for dm in &queue {
            *pending.entry(dm.image).or_default() += 1;
        }
        // images left unknown: budget spent, or a leaf that would not close
        let mut given_up: HashSet<usize> = HashSet::new();
        loop {
            queue.retain(|dm| {
                results[dm.image].status == Status::Unknown && !given_up.contains(&dm.image)
            });
            if queue.is_empty() {
                break;
            }
            // the worst bounds first, never more domains for an image than its budget has left
            queue.sort_by(|a, b| b.lower.total_cmp(&a.lower));
            let mut batch: Vec<Domain> = Vec::with_capacity(self.settings.batch);
            let mut taken: HashMap<usize, usize> = HashMap::new();
            while batch.len() < self.settings.batch {
                let Some(dm) = queue.pop() else { break };
                let t = taken.entry(dm.image).or_default();
                if results[dm.image].domains + *t >= self.settings.max_domains {
                    // budget spent: the image stays unknown, its other domains are dropped
                    given_up.insert(dm.image);
                    continue;
                }
                *t += 1;
                batch.push(dm);
            }
            if batch.is_empty() {
                continue;
            }
            let b = self.bound(&batch, self.settings.iterations, self.settings.lr)?;
            // counterexamples: every unproven domain's minimising corner through the model
            let open: Vec<usize> = (0..batch.len())
                .filter(|&r| b.lower[r] <= self.tol[batch[r].image])
                .collect();
            for (&r, broken) in open.iter().zip(self.corners_broken(&b, &batch, &open)?) {
                if broken {
                    results[batch[r].image].status = Status::Attacked;
                }
            }
            for (r, dm) in batch.into_iter().enumerate() {
                let img = dm.image;
                results[img].domains += 1;
                if results[img].status != Status::Unknown || given_up.contains(&img) {
                    continue;
                }
                let mut closed = b.lower[r] > self.tol[img];
                if !closed {
                    match self.branch(&dm, &b.scores, r) {
                        Some((layer, j)) => {
                            let alpha = self.row(&b.alphas, r);
                            let beta = self.row(&b.betas, r);
                            *pending.entry(img).or_default() += 1;
                            for active in [true, false] {
                                let mut splits = dm.splits.clone();
                                splits.push((layer, j, active));
                                queue.push(Domain {
                                    image: img,
                                    target: dm.target,
                                    splits,
                                    alpha: alpha.clone(),
                                    beta: beta.clone(),
                                    lower: b.lower[r],
                                });
                            }
                            continue;
                        }
                        None => {
                            let leaf = Domain {
                                alpha: self.row(&b.alphas, r),
                                beta: self.row(&b.betas, r),
                                ..dm
                            };
                            match self.polish(leaf)? {
                                Some(true) => closed = true,
                                Some(false) => {
                                    results[img].status = Status::Attacked;
                                    continue;
                                }
                                None => {
                                    given_up.insert(img);
                                    continue;
                                }
                            }
                        }
                    }
                }
                if closed {
                    let left = pending.entry(img).or_default();
                    *left -= 1;
                    if *left == 0 {
                        // every domain of every open margin closed
                        results[img].status = Status::Verified;
                    }
                }
            }
        }
        Ok(())
    }

    /// Row `r` of each hidden layer's `[m, 1, n]` parameters.
    fn row(&self, params: &[Vec<f32>], r: usize) -> Vec<Vec<f32>> {
        params
            .iter()
            .zip(self.widths)
            .map(|(p, &n)| p[r * n..(r + 1) * n].to_vec())
            .collect()
    }

    /// The unstable, unsplit ReLU whose upper chord costs the domain's bound most (ties: the one
    /// with the widest interval), or `None` when every one is fixed.
    fn branch(&self, dm: &Domain, scores: &[Vec<f32>], r: usize) -> Option<(usize, usize)> {
        let mut best: Option<(f32, f32, usize, usize)> = None;
        for (k, &n) in self.widths.iter().enumerate() {
            let (l, u) = &self.hidden[k];
            for j in 0..n {
                let (lo, up) = (l[dm.image * n + j], u[dm.image * n + j]);
                if !(lo < 0.0 && up > 0.0) || dm.splits.iter().any(|&(a, b, _)| a == k && b == j) {
                    continue;
                }
                let score = scores.get(k).map_or(0.0, |s| s[r * n + j]);
                let width = up.min(-lo);
                if best.is_none_or(|(bs, bw, _, _)| (score, width) > (bs, bw)) {
                    best = Some((score, width, k, j));
                }
            }
        }
        best.map(|(_, _, k, j)| (k, j))
    }
}
