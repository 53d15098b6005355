//! The training loop: Adam, seeded shuffles and dropout, and a per-batch hook through which
//! defenses change the inputs, the targets or the logits the loss sees.

use std::time::Instant;

use advrob_data::rng::SplitMix64;
use advrob_data::{Batcher, Split, to_tensors};
use burn::config::Config;
use burn::module::{Module, Param, ParamId};
use burn::optim::{AdamConfig, GradientsParams, ModuleOptimizer};
use burn::tensor::{Device, Int, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use burn::nn::Linear;
use burn::nn::conv::Conv2d;

use crate::conv_host::{BlockGradient, BlockTrace};
use crate::dense::{ConvBlock, DenseLayer};
use crate::dense_train::LayerGradient;
use crate::error::ModelError;

use crate::loss::{LossKind, Targets, loss};
use crate::network::Net;

/// How a model is trained. Defaults: the README experiment (Adam 1e-3, cross-entropy, 5 epochs,
/// batch 128, seed 42).
#[derive(Config, Debug, PartialEq)]
pub struct TrainConfig {
    /// Passes over the training set.
    #[config(default = 5)]
    pub epochs: usize,
    /// Examples per batch (before a hook extends it).
    #[config(default = 128)]
    pub batch_size: usize,
    /// Adam learning rate.
    #[config(default = 1e-3)]
    pub lr: f64,
    /// Adam's ε (Keras' default, the framework of the study).
    #[config(default = 1e-7)]
    pub adam_epsilon: f32,
    /// Seed of the shuffles and dropout masks.
    #[config(default = 42)]
    pub seed: u64,
    /// Training criterion.
    #[config(default = "LossKind::CrossEntropy")]
    pub loss: LossKind,
}

impl TrainConfig {
    /// Refuses zero epochs or batch size and a learning rate that is not positive and finite.
    pub fn check(&self) -> crate::Result<()> {
        if self.epochs == 0 {
            return Err(ModelError::invalid("epochs", "must be at least 1"));
        }
        if self.batch_size == 0 {
            return Err(ModelError::invalid("batch_size", "must be at least 1"));
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return Err(ModelError::invalid(
                "lr",
                format!("{} is not a positive finite number", self.lr),
            ));
        }
        if !(self.adam_epsilon.is_finite() && self.adam_epsilon > 0.0) {
            return Err(ModelError::invalid("adam_epsilon", "must be positive"));
        }
        Ok(())
    }
}

/// One batch on its way to the loss.
#[derive(Debug, Clone)]
pub struct TrainBatch {
    /// Inputs.
    ///
    /// # Shapes
    ///
    /// `[B, C, H, W]` in [0, 1]
    pub images: Tensor<4>,
    /// What the loss compares the logits with.
    pub targets: Targets,
    /// True class of each example (training accuracy is measured against these).
    ///
    /// # Shapes
    ///
    /// `[B]`
    pub labels: Tensor<1, Int>,
}

/// A per-batch hook: the one place where defenses change training.
///
/// Adversarial training extends the batch with attacked copies (made from the current model);
/// label smoothing replaces the targets; distillation divides the logits by a temperature and
/// trains on soft labels. The defaults change nothing.
pub trait TrainHook {
    /// A short description recorded with the training run.
    fn describe(&self) -> String {
        "plain".to_string()
    }

    /// Changes a batch before the forward pass. `model` is the current model in training mode
    /// (autodiff parameters); call [`Module::valid`] on it for an inference-mode copy.
    fn prepare(&mut self, model: &Net, batch: TrainBatch) -> crate::Result<TrainBatch> {
        let _ = model;
        Ok(batch)
    }

    /// Whether [`prepare`](TrainHook::prepare) reads the model's current weights (attacks it,
    /// say). Where it does not, the host training of an MLP may write its parameters back into
    /// the model once an epoch instead of after every step. The default: it does.
    fn reads_weights(&self) -> bool {
        true
    }

    /// Whether [`logits`](TrainHook::logits) changes the logits. Where it does not, the host
    /// training of an MLP computes a cross-entropy against labels on the host too. The default:
    /// it does.
    fn changes_logits(&self) -> bool {
        true
    }

    /// Changes the logits the loss sees.
    ///
    /// # Shapes
    ///
    /// `[B, classes]` in and out
    fn logits(&self, logits: Tensor<2>) -> Tensor<2> {
        logits
    }
}

/// The hook that changes nothing: plain training.
#[derive(Debug, Clone, Copy, Default)]
pub struct Plain;

impl TrainHook for Plain {
    fn reads_weights(&self) -> bool {
        false
    }

    fn changes_logits(&self) -> bool {
        false
    }
}

/// Statistics of one epoch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochStats {
    /// 1-based epoch number.
    pub epoch: usize,
    /// Mean over batches of the batch loss.
    #[serde(deserialize_with = "advrob_data::floats::null_as_nan")]
    pub loss: f64,
    /// Share of the examples fed to the model (after the hook, so adversarial copies count) whose
    /// training-mode prediction equals their true label.
    #[serde(deserialize_with = "advrob_data::floats::null_as_nan")]
    pub accuracy: f64,
    /// Examples fed, after the hook.
    pub examples: usize,
    /// Wall time of the epoch.
    #[serde(deserialize_with = "advrob_data::floats::null_as_nan")]
    pub seconds: f64,
}

/// What a training run did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainRecord {
    /// One entry per epoch.
    pub epochs: Vec<EpochStats>,
    /// Total wall time.
    pub seconds: f64,
    /// The hook's description.
    pub hook: String,
}

/// Where training is, for progress bars.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    /// 1-based epoch.
    pub epoch: usize,
    /// Number of epochs.
    pub epochs: usize,
    /// Batches done in this epoch.
    pub batch: usize,
    /// Batches per epoch.
    pub batches: usize,
}

/// Trains `model` on `data` and returns it in inference mode with the record of the run.
///
/// Each epoch visits the examples in an order drawn from `config.seed` and the epoch number;
/// dropout masks come from the same seed, so a run is repeatable on a given backend.
pub fn train(
    model: impl Into<Net>,
    data: &Split,
    config: &TrainConfig,
    device: &Device,
    hook: &mut dyn TrainHook,
    on_progress: &mut dyn FnMut(Progress),
) -> crate::Result<(Net, TrainRecord)> {
    config.check()?;
    let model: Net = model.into();
    if matches!(model, Net::Onnx(_)) {
        return Err(ModelError::invalid(
            "model",
            "an ONNX model is evaluated as its file defines it, not trained",
        ));
    }
    let start = Instant::now();
    let mut model: Net = model.to_device(device).train();
    let mut trainer = Trainer {
        config,
        device,
        optim: AdamConfig::new()
            .with_beta_1(BETA_1)
            .with_beta_2(BETA_2)
            .with_epsilon(config.adam_epsilon)
            .init(),
        host: HostTraining::of(&model, config.adam_epsilon),
        dropout_rng: SplitMix64::new(config.seed ^ 0x00D2_0900_u64),
    };
    let mut record = TrainRecord {
        epochs: Vec::with_capacity(config.epochs),
        seconds: 0.0,
        hook: hook.describe(),
    };
    for epoch in 1..=config.epochs {
        let (trained, stats) = trainer.epoch(model, data, epoch, hook, on_progress)?;
        model = trained;
        log::info!(
            "epoch {epoch}/{}: loss {:.4}, train accuracy {:.4}",
            config.epochs,
            stats.loss,
            stats.accuracy
        );
        record.epochs.push(stats);
    }
    record.seconds = start.elapsed().as_secs_f64();
    Ok((model.valid(), record))
}

/// What every batch of a training run uses: the settings, the device, Adam's state and the
/// dropout masks' stream.
struct Trainer<'a> {
    config: &'a TrainConfig,
    device: &'a Device,
    optim: ModuleOptimizer,
    /// An MLP on burn-ndarray: its passes and Adam on the host (`optim` then unused).
    host: Option<HostTraining>,
    dropout_rng: SplitMix64,
}

impl Trainer<'_> {
    /// One training step of `model` on `batch` (which the hook has prepared): the loss, its
    /// gradient and Adam's step; the batch's correct predictions and loss added to the epoch's.
    fn step(
        &mut self,
        model: Net,
        batch: TrainBatch,
        hook: &dyn TrainHook,
        correct: &mut Tensor<1, Int>,
        loss_sum: &mut Tensor<1>,
    ) -> crate::Result<Net> {
        let (config, device) = (self.config, self.device);
        // an MLP on burn-ndarray runs its passes on the host, burn only the loss, unless
        // that is a cross-entropy against labels of logits the hook leaves alone
        if let Some(host) = &mut self.host {
            let pass = host.forward(&batch.images, &mut self.dropout_rng)?;
            let on_host = match (&batch.targets, config.loss, hook.changes_logits()) {
                (Targets::Labels(y), LossKind::CrossEntropy, false) => {
                    let y = y.clone().into_data().try_into_vec_as::<i64>().ok();
                    y.and_then(|y| {
                        let classes = pass.pass.logits.len() / y.len().max(1);
                        crate::dense_train::cross_entropy(&pass.pass.logits, &y, classes)
                    })
                }
                _ => None,
            };
            let labels = match &on_host {
                Some(_) => batch
                    .labels
                    .clone()
                    .into_data()
                    .try_into_vec_as::<i64>()
                    .ok(),
                None => None,
            };
            let dlogits = match on_host.zip(labels) {
                Some((l, labels)) => {
                    // accuracy against the true labels, whatever the targets
                    let right = l
                        .predictions
                        .iter()
                        .zip(&labels)
                        .filter(|(p, y)| p == y)
                        .count();
                    *correct =
                        correct.clone() + Tensor::<1, Int>::from_data([right as i64], device);
                    *loss_sum = loss_sum.clone() + Tensor::<1>::from_data([l.loss], device);
                    l.dlogits
                }
                None => {
                    let leaf = pass.leaf(&host.device);
                    let (l, preds) = burn_loss(
                        config.loss,
                        hook,
                        leaf.clone(),
                        batch.targets,
                        &batch.labels,
                    );
                    *correct = correct.clone() + preds;
                    *loss_sum = loss_sum.clone() + l.clone().without_autodiff();
                    leaf.grad(&l.backward())
                        .and_then(crate::backend::read_f32)
                        .ok_or_else(|| {
                            ModelError::invalid(
                                "loss",
                                "has no gradient with respect to the logits",
                            )
                        })?
                }
            };
            host.step(config.lr, &pass, &dlogits)?;
            if hook.reads_weights() {
                host.model(model)
            } else {
                Ok(model)
            }
        } else {
            let logits = model.forward_train(batch.images, &mut self.dropout_rng);
            let (l, preds) = burn_loss(config.loss, hook, logits, batch.targets, &batch.labels);
            *correct = correct.clone() + preds;
            *loss_sum = loss_sum.clone() + l.clone().without_autodiff();
            let grads = GradientsParams::from_grads(l.backward(), &model);
            Ok(self.optim.step(config.lr, model, grads))
        }
    }

    /// One epoch of `model` over `data`, in the order drawn from the seed and `epoch`, each batch
    /// through `hook`; returns the model after it and the epoch's statistics, or an error when
    /// the mean loss is not finite.
    fn epoch(
        &mut self,
        mut model: Net,
        data: &Split,
        epoch: usize,
        hook: &mut dyn TrainHook,
        on_progress: &mut dyn FnMut(Progress),
    ) -> crate::Result<(Net, EpochStats)> {
        let (config, device) = (self.config, self.device);
        let epoch_start = Instant::now();
        let batcher = Batcher::new(
            data.len(),
            config.batch_size,
            Some(Batcher::epoch_seed(config.seed, epoch)),
        )?;
        let batches = batcher.len();
        let mut loss_sum = Tensor::<1>::zeros([1], device);
        let mut correct = Tensor::<1, Int>::zeros([1], device);
        let mut examples = 0usize;
        // each batch's bytes become tensors on another core while the one before trains
        let order: Vec<&[usize]> = batcher.batches().collect();
        let mut ready = order.first().map(|ix| to_tensors(data, ix, device));
        for i in 0..order.len() {
            let Some((images, labels)) = ready.take() else {
                break;
            };
            let (next, mut following) = (order.get(i + 1).copied(), None);
            model = rayon::in_place_scope(|scope| {
                if let Some(ix) = next {
                    scope.spawn(|_| following = Some(to_tensors(data, ix, device)));
                }
                let batch = hook.prepare(
                    &model,
                    TrainBatch {
                        images,
                        targets: Targets::Labels(labels.clone()),
                        labels,
                    },
                )?;
                examples += batch.labels.dims()[0];
                self.step(model, batch, hook, &mut correct, &mut loss_sum)
            })?;
            ready = following;
            on_progress(Progress {
                epoch,
                epochs: config.epochs,
                batch: i + 1,
                batches,
            });
        }
        if let Some(host) = &self.host {
            model = host.model(model)?;
        }
        let mean_loss = f64::from(loss_sum.into_scalar::<f32>()) / batches.max(1) as f64;
        if !mean_loss.is_finite() {
            return Err(ModelError::Diverged {
                epoch,
                batch: batches,
                loss: mean_loss,
            });
        }
        let correct = correct.into_scalar::<i64>() as f64;
        let stats = EpochStats {
            epoch,
            loss: mean_loss,
            accuracy: correct / examples.max(1) as f64,
            examples,
            seconds: epoch_start.elapsed().as_secs_f64(),
        };
        Ok((model, stats))
    }
}

/// The loss of `logits` through the hook against `targets` in burn (with its graph), and
/// the number of examples whose prediction is their label.
fn burn_loss(
    kind: LossKind,
    hook: &dyn TrainHook,
    logits: Tensor<2>,
    targets: Targets,
    labels: &Tensor<1, Int>,
) -> (Tensor<1>, Tensor<1, Int>) {
    let logits = hook.logits(logits);
    let preds = logits
        .clone()
        .without_autodiff()
        .argmax(1)
        .flatten::<1>(0, 1);
    let correct = preds.equal(labels.clone()).int().sum();
    (loss(kind, logits, targets), correct)
}

/// Adam's β₁ and β₂ (burn's defaults, named so that the host's Adam uses the same).
const BETA_1: f32 = 0.9;
const BETA_2: f32 = 0.999;

/// Training on burn-ndarray with the forward and backward passes and Adam on the host
/// ([`crate::dense_train`]): for an MLP, burn-ndarray's autodiff and Adam's numbers to the bit
/// (tested); for the CNNs built of convolution → ReLU → max-pool blocks and dense layers (LeNet,
/// Madry et al.'s), their gradients to rounding ([`ConvBlock`]'s sums run in their own order;
/// tested), burn-ndarray's own convolution being many times slower. The products run over the
/// rayon pool (burn-ndarray's own on one thread). A cross-entropy against labels of logits the
/// hook leaves alone is computed on the host too; otherwise burn sees the logits as a leaf that
/// requires its gradient, so the loss and the hook's change to the logits are burn's own. The
/// model's parameters are rewritten after every step for hooks that read the weights, else at the
/// end of each epoch ([`TrainHook::reads_weights`]).
struct HostTraining {
    /// The convolutional blocks before the dense layers (none for an MLP), current weights.
    convs: Vec<ConvBlock>,
    /// Each block's weight and bias parameter.
    conv_ids: Vec<(ParamId, ParamId)>,
    /// The current weights.
    layers: Vec<crate::dense::DenseLayer>,
    /// Each layer's weight and bias parameter.
    ids: Vec<(ParamId, ParamId)>,
    dropout: f64,
    /// The parameters' device (with autodiff).
    device: Device,
    adam: crate::dense_train::HostAdam,
}

/// A host forward pass and what its backward pass needs.
struct HostPass {
    /// The images, without autodiff.
    images: Tensor<4>,
    /// Each convolutional block's output and the trace of its pool.
    blocks: Vec<(Vec<f32>, BlockTrace)>,
    pass: crate::dense_train::TrainForward,
}

impl HostPass {
    /// The logits as a leaf of burn's graph on `device` that requires its gradient.
    fn leaf(&self, device: &Device) -> Tensor<2> {
        let rows = self.images.dims()[0];
        let classes = self.pass.logits.len() / rows.max(1);
        let data = TensorData::new(self.pass.logits.clone(), [rows, classes]);
        Tensor::<2>::from_data(data, device).require_grad()
    }
}

/// A layer's weight and bias parameter ids, where it has a bias.
fn linear_ids(layer: &Linear) -> Option<(ParamId, ParamId)> {
    Some((layer.weight.id, layer.bias.as_ref()?.id))
}

/// A convolution's weight and bias parameter ids, where it has a bias.
fn conv_ids(conv: &Conv2d) -> Option<(ParamId, ParamId)> {
    Some((conv.weight.id, conv.bias.as_ref()?.id))
}

impl HostTraining {
    /// Host training for `model` where it is an MLP or a LeNet-like CNN ([`HostTraining`]) with
    /// biases on burn-ndarray (in a build without OpenBLAS, whose sums are not
    /// matrixmultiply's); `None` elsewhere.
    fn of(model: &Net, adam_epsilon: f32) -> Option<HostTraining> {
        let (convs, dense): (Vec<&Conv2d>, Vec<&Linear>) = match model {
            Net::Mlp(mlp) => (Vec::new(), mlp.layers.iter().collect()),
            Net::Lenet(m) => (vec![&m.conv1, &m.conv2], vec![&m.fc1, &m.fc2, &m.fc3]),
            Net::MadryCnn(m) => (vec![&m.conv1, &m.conv2], vec![&m.fc1, &m.fc2]),
            // its training pass drops whole channels: the tensor path
            Net::FgsmTutorial(_) | Net::Onnx(_) => return None,
        };
        let device = dense.first()?.weight.val().device();
        if cfg!(feature = "blas") || !crate::backend::is_ndarray(&device.clone().without_autodiff())
        {
            return None;
        }
        let ids = dense
            .iter()
            .map(|l| linear_ids(l))
            .collect::<Option<Vec<_>>>()?;
        let conv_ids = convs
            .iter()
            .map(|c| conv_ids(c))
            .collect::<Option<Vec<_>>>()?;
        let (convs, layers) = match model {
            Net::Mlp(mlp) => {
                let layers = mlp.layers.iter().map(crate::mlp::host_layer);
                (Vec::new(), layers.collect::<Option<Vec<_>>>()?)
            }
            // the chain of the network's inference pass, which is its training pass
            _ => {
                let chain = crate::Classifier::dense(model)?;
                let plain = chain.pixel == crate::dense::PixelMap::default()
                    && !chain.log_softmax
                    && chain.logit_scale.is_none();
                plain.then_some((chain.convs, chain.layers))?
            }
        };
        let dropout = match model {
            Net::Mlp(mlp) => mlp.dropout,
            _ => 0.0,
        };
        Some(HostTraining {
            convs,
            conv_ids,
            layers,
            ids,
            dropout,
            device,
            adam: crate::dense_train::HostAdam::new(BETA_1, BETA_2, adam_epsilon),
        })
    }

    /// The training-mode forward pass on `images`, dropout masks from `rng` as
    /// [`crate::Mlp::forward_train`] draws them.
    fn forward(&self, images: &Tensor<4>, rng: &mut SplitMix64) -> crate::Result<HostPass> {
        let [b, c, h, w] = images.dims();
        let fits = match self.convs.first() {
            Some(block) => block.input == [h, w] && block.channels == c,
            None => self.layers[0].inputs() == c * h * w,
        };
        if !fits {
            return Err(ModelError::invalid(
                "images",
                format!("{c}×{h}×{w} pixels do not fit the network's first layer"),
            ));
        }
        let images = images.clone().without_autodiff();
        let (blocks, pass) = crate::backend::on_host_f32(&images, |x| {
            let mut blocks: Vec<(Vec<f32>, BlockTrace)> = Vec::with_capacity(self.convs.len());
            for block in &self.convs {
                let input = blocks.last().map_or(x, |(out, _)| out.as_slice());
                let (out, trace) = block.forward(input, b, true);
                blocks.push((out, trace?));
            }
            let input = blocks.last().map_or(x, |(out, _)| out.as_slice());
            let pass = crate::dense_train::forward(&self.layers, input, b, self.dropout, rng);
            Some((blocks, pass))
        })
        .flatten()
        .ok_or_else(|| ModelError::invalid("images", "not readable as f32"))?;
        Ok(HostPass {
            images,
            blocks,
            pass,
        })
    }

    /// The backward pass of `pass` from the loss's gradient with respect to its logits and
    /// Adam's step of the host's parameters ([`HostTraining::model`] writes them back).
    fn step(&mut self, lr: f64, pass: &HostPass, dlogits: &[f32]) -> crate::Result<()> {
        let (convs, dense) = self.gradients(pass, dlogits)?;
        let conv_params = self.convs.iter_mut().zip(&convs).flat_map(|(b, g)| {
            [
                (b.weight.as_mut_slice(), g.weight.as_slice()),
                (b.bias.as_mut_slice(), g.bias.as_slice()),
            ]
        });
        let dense_params = self.layers.iter_mut().zip(&dense).flat_map(|(l, g)| {
            [
                (l.weight.as_mut_slice(), g.weight.as_slice()),
                (l.bias.as_mut_slice(), g.bias.as_slice()),
            ]
        });
        self.adam
            .step(lr, conv_params.chain(dense_params).collect());
        Ok(())
    }

    /// The backward pass of `pass` from the loss's gradient with respect to its logits: each
    /// block's and each dense layer's parameter gradients.
    fn gradients(
        &self,
        pass: &HostPass,
        dlogits: &[f32],
    ) -> crate::Result<(Vec<BlockGradient>, Vec<LayerGradient>)> {
        let rows = pass.images.dims()[0];
        crate::backend::on_host_f32(&pass.images, |x| {
            let input = pass.blocks.last().map_or(x, |(out, _)| out.as_slice());
            let (dense, mut dy) = crate::dense_train::backward(
                &self.layers,
                input,
                &pass.pass,
                dlogits,
                !self.convs.is_empty(),
            );
            let mut convs = Vec::with_capacity(self.convs.len());
            for (i, block) in self.convs.iter().enumerate().rev() {
                let input = if i == 0 { x } else { &pass.blocks[i - 1].0 };
                let mut g = block.backward_train(&pass.blocks[i].1, input, &dy?, rows, i > 0);
                dy = g.input.take();
                convs.push(g);
            }
            convs.reverse();
            Some((convs, dense))
        })
        .flatten()
        .ok_or_else(|| ModelError::invalid("images", "not readable as f32"))
    }

    /// `model` with the host's current parameters.
    fn model(&self, model: Net) -> crate::Result<Net> {
        let device = &self.device;
        let write_dense = |layers: Vec<&mut Linear>| {
            for ((layer, host), ids) in layers.into_iter().zip(&self.layers).zip(&self.ids) {
                write_linear(layer, host, *ids, device);
            }
        };
        let write_convs = |convs: [&mut Conv2d; 2]| {
            for ((conv, host), ids) in convs.into_iter().zip(&self.convs).zip(&self.conv_ids) {
                write_conv(conv, host, *ids, device);
            }
        };
        Ok(match model {
            Net::Mlp(mut mlp) => {
                write_dense(mlp.layers.iter_mut().collect());
                Net::Mlp(mlp)
            }
            Net::Lenet(mut m) => {
                write_convs([&mut m.conv1, &mut m.conv2]);
                write_dense(vec![&mut m.fc1, &mut m.fc2, &mut m.fc3]);
                Net::Lenet(m)
            }
            Net::MadryCnn(mut m) => {
                write_convs([&mut m.conv1, &mut m.conv2]);
                write_dense(vec![&mut m.fc1, &mut m.fc2]);
                Net::MadryCnn(m)
            }
            Net::FgsmTutorial(_) | Net::Onnx(_) => {
                return Err(ModelError::invalid(
                    "model",
                    "host training is for an MLP, LeNet or Madry et al.'s CNN",
                ));
            }
        })
    }
}

/// `layer`'s weight and bias set to the host's `host`, keeping their parameter ids.
fn write_linear(
    layer: &mut Linear,
    host: &DenseLayer,
    (w, b): (ParamId, ParamId),
    device: &Device,
) {
    let shape = [host.inputs(), host.outputs()];
    let weight = TensorData::new(host.weight.clone(), shape);
    layer.weight = Param::initialized(w, Tensor::from_data(weight, device).require_grad());
    let bias = TensorData::new(host.bias.clone(), [shape[1]]);
    layer.bias = Some(Param::initialized(
        b,
        Tensor::from_data(bias, device).require_grad(),
    ));
}

/// `conv`'s weight and bias set to the host block's, keeping their parameter ids.
fn write_conv(conv: &mut Conv2d, host: &ConvBlock, (w, b): (ParamId, ParamId), device: &Device) {
    let shape = [host.outputs(), host.channels, host.kernel, host.kernel];
    let weight = TensorData::new(host.weight.clone(), shape);
    conv.weight = Param::initialized(w, Tensor::from_data(weight, device).require_grad());
    let bias = TensorData::new(host.bias.clone(), [shape[0]]);
    conv.bias = Some(Param::initialized(
        b,
        Tensor::from_data(bias, device).require_grad(),
    ));
}

/// Share of `data` whose inference-mode prediction equals the label, in batches of `batch_size`.
pub fn accuracy(
    model: &dyn crate::Classifier,
    data: &Split,
    batch_size: usize,
    device: &Device,
) -> f64 {
    let mut correct = 0i64;
    for start in (0..data.len()).step_by(batch_size.max(1)) {
        let (x, y) = advrob_data::range_tensors(data, start, batch_size, device);
        let pred = model.logits(x).argmax(1).flatten::<1>(0, 1);
        correct += pred.equal(y).int().sum().into_scalar::<i64>();
    }
    correct as f64 / data.len().max(1) as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::on_test_backends;
    use crate::mlp::MlpConfig;
    use advrob_data::{Dataset, synthetic};

    fn tiny_data() -> Dataset {
        let dir = tempfile::tempdir().expect("temp");
        synthetic::write_dataset(dir.path(), 600, 200, 5).expect("write");
        Dataset::load_dir(dir.path()).expect("load")
    }

    fn weights(m: &Net) -> Vec<f32> {
        let Net::Mlp(m) = m else { panic!("an MLP") };
        m.layers[0]
            .weight
            .val()
            .into_data()
            .try_into_vec_as::<f32>()
            .expect("f32")
    }

    #[test]
    fn learns_the_synthetic_task() {
        let ds = tiny_data();
        on_test_backends(|device| {
            let device = device.clone();
            let cfg = TrainConfig::new().with_epochs(2).with_batch_size(32);
            let model = MlpConfig::new()
                .with_hidden(vec![32])
                .init(&device)
                .expect("init");
            let before = accuracy(&model, &ds.test, 100, &device);
            let (model, rec) =
                train(model, &ds.train, &cfg, &device, &mut Plain, &mut |_| {}).expect("train");
            let after = accuracy(&model, &ds.test, 100, &device);
            assert_eq!(rec.epochs.len(), 2);
            assert!(rec.epochs[1].loss < rec.epochs[0].loss, "{rec:?}");
            assert!(
                after > 0.9 && after > before,
                "before {before}, after {after}"
            );
        });
    }

    #[test]
    fn same_seed_same_weights_after_training() {
        let ds = tiny_data();
        on_test_backends(|device| {
            let device = device.clone();
            let run = |seed| {
                let cfg = TrainConfig::new()
                    .with_epochs(1)
                    .with_batch_size(64)
                    .with_seed(seed);
                let m = MlpConfig::new()
                    .with_hidden(vec![16])
                    .init(&device)
                    .expect("init");
                train(m, &ds.train, &cfg, &device, &mut Plain, &mut |_| {})
                    .expect("train")
                    .0
            };
            assert_eq!(weights(&run(1)), weights(&run(1)));
            assert_ne!(weights(&run(1)), weights(&run(2)));
        });
    }

    #[test]
    fn hook_sees_every_batch_and_can_change_targets() {
        struct Counting(usize);
        impl TrainHook for Counting {
            fn prepare(&mut self, _: &Net, mut b: TrainBatch) -> crate::Result<TrainBatch> {
                self.0 += 1;
                // uniform soft targets: the model should learn nothing useful
                let [n] = b.labels.dims();
                b.targets = Targets::Soft(Tensor::<2>::ones([n, 10], &b.images.device()) / 10.0);
                Ok(b)
            }
        }
        let ds = tiny_data();
        on_test_backends(|device| {
            let cfg = TrainConfig::new().with_epochs(1).with_batch_size(100);
            let m = MlpConfig::new()
                .with_hidden(vec![8])
                .init(device)
                .expect("init");
            let mut hook = Counting(0);
            let (_, rec) =
                train(m, &ds.train, &cfg, device, &mut hook, &mut |_| {}).expect("train");
            assert_eq!(hook.0, 6);
            // cross-entropy against uniform targets is at least log(10) = 2.3026
            assert!(rec.epochs[0].loss >= 2.30, "{rec:?}");
        });
    }

    #[test]
    fn bad_train_config_names_the_field() {
        let err = TrainConfig::new().with_lr(-1.0).check().expect_err("lr");
        assert!(err.to_string().contains("lr"), "{err}");
    }

    /// A hook that trains on soft targets and scales the logits (as distillation does).
    struct SoftScaled;

    impl TrainHook for SoftScaled {
        fn prepare(&mut self, _: &Net, batch: TrainBatch) -> crate::Result<TrainBatch> {
            let soft = batch.labels.clone().one_hot(10).float() * 0.9 + 0.01;
            Ok(TrainBatch {
                targets: Targets::Soft(soft),
                ..batch
            })
        }

        fn logits(&self, logits: Tensor<2>) -> Tensor<2> {
            logits / 3.0
        }
    }

    /// A hook that trains towards the next class (targets that are not the true labels), the
    /// logits left alone.
    struct NextClass;

    impl TrainHook for NextClass {
        fn prepare(&mut self, _: &Net, batch: TrainBatch) -> crate::Result<TrainBatch> {
            let next = (batch.labels.clone() + 1).remainder_scalar(10);
            Ok(TrainBatch {
                targets: Targets::Labels(next),
                ..batch
            })
        }

        fn changes_logits(&self) -> bool {
            false
        }
    }

    /// Host training (passes and Adam on the host) ends in burn-ndarray's tensor path's weights
    /// and statistics to the bit: none, one and two hidden layers, with and without dropout, batches
    /// the pool splits and a last batch of one, plain and soft targets with scaled logits, targets
    /// that are not the labels (the accuracy still counts the labels), both
    /// losses.
    #[test]
    fn host_training_is_the_tensor_paths_to_the_bit() {
        let dir = tempfile::tempdir().expect("temp");
        synthetic::write_dataset(dir.path(), 601, 10, 5).expect("write");
        let ds = Dataset::load_dir(dir.path()).expect("load");
        let device = crate::backend::device("ndarray").expect("ndarray");
        let cases = [
            (vec![32], 0.2, LossKind::CrossEntropy),
            (vec![64, 48], 0.5, LossKind::CrossEntropy),
            (vec![40], 0.0, LossKind::Mse),
            // no hidden layer: one linear map, no dropout mask drawn
            (vec![], 0.2, LossKind::CrossEntropy),
        ];
        for (hidden, dropout, kind) in cases {
            for (h, what_hook) in ["plain", "soft targets, scaled logits", "next class"]
                .iter()
                .enumerate()
            {
                let config = TrainConfig::new()
                    .with_batch_size(200)
                    .with_epochs(2)
                    .with_loss(kind);
                let model: Net = MlpConfig::new()
                    .with_hidden(hidden.clone())
                    .with_dropout(dropout)
                    .init(&device)
                    .expect("init")
                    .into();
                let run = |on_host: bool| {
                    let mut model = model.clone().train();
                    let mut trainer = Trainer {
                        config: &config,
                        device: &device,
                        optim: AdamConfig::new()
                            .with_beta_1(BETA_1)
                            .with_beta_2(BETA_2)
                            .with_epsilon(config.adam_epsilon)
                            .init(),
                        host: if on_host {
                            Some(HostTraining::of(&model, config.adam_epsilon).expect("host"))
                        } else {
                            None
                        },
                        dropout_rng: SplitMix64::new(5),
                    };
                    let mut stats = Vec::new();
                    for epoch in 1..=2 {
                        let hook: &mut dyn TrainHook = match h {
                            0 => &mut Plain,
                            1 => &mut SoftScaled,
                            _ => &mut NextClass,
                        };
                        let (m, s) = trainer
                            .epoch(model, &ds.train, epoch, hook, &mut |_| {})
                            .expect("epoch");
                        model = m;
                        stats.push((s.loss.to_bits(), s.accuracy.to_bits()));
                    }
                    let Net::Mlp(mlp) = model.valid() else {
                        unreachable!()
                    };
                    let bits: Vec<u32> = mlp
                        .layers
                        .iter()
                        .flat_map(|l| {
                            let mut v = crate::backend::read_f32(l.weight.val()).expect("w");
                            v.extend(
                                crate::backend::read_f32(l.bias.as_ref().expect("b").val())
                                    .expect("b"),
                            );
                            v
                        })
                        .map(f32::to_bits)
                        .collect();
                    (bits, stats, trainer.dropout_rng.next_u64())
                };
                let (host, tensor) = (run(true), run(false));
                let what = format!("{hidden:?} p={dropout} {kind:?} {what_hook}");
                assert_eq!(host.2, tensor.2, "the same dropout masks, {what}");
                assert_eq!(host.1, tensor.1, "the same statistics, {what}");
                let differ = host.0.iter().zip(&tensor.0).filter(|(a, b)| a != b).count();
                assert_eq!(differ, 0, "weights differing of {}, {what}", host.0.len());
            }
        }
    }

    /// A parameter's gradient in `grads`, on the host.
    fn grad_f32<const D: usize>(p: &Param<Tensor<D>>, grads: &burn::tensor::Gradients) -> Vec<f32> {
        crate::backend::read_f32(p.grad(grads).expect("grad")).expect("f32")
    }

    /// The host's gradients of a CNN's parameters are burn-ndarray's autodiff's to rounding, on
    /// LeNet (28×28 and odd sides) and Madry et al.'s CNN, and a training step moves the
    /// parameters burn-ndarray's way.
    #[test]
    fn host_gradients_of_a_cnn_are_the_tensor_paths_to_rounding() {
        let device = crate::backend::device("ndarray").expect("ndarray");
        let nets: [(Net, [usize; 2]); 3] = [
            (
                Net::Lenet(
                    crate::LenetConfig::new()
                        .with_seed(3)
                        .init(&device)
                        .expect("init"),
                ),
                [28, 28],
            ),
            (
                Net::Lenet(
                    crate::LenetConfig::new()
                        .with_image([29, 31])
                        .with_seed(4)
                        .init(&device)
                        .expect("init"),
                ),
                [29, 31],
            ),
            (
                Net::MadryCnn(
                    crate::MadryCnnConfig::new()
                        .with_seed(5)
                        .init(&device)
                        .expect("init"),
                ),
                [28, 28],
            ),
        ];
        for (mi, (net, [h, w])) in nets.into_iter().enumerate() {
            let rows = 11;
            let x: Vec<f32> = (0..rows * h * w)
                .map(|i| ((i * 7919) % 1013) as f32 / 1013.0)
                .collect();
            let y: Vec<i64> = (0..rows as i64).map(|i| (i * 3) % 10).collect();
            let images = Tensor::<4>::from_data(TensorData::new(x, [rows, 1, h, w]), &device);
            let labels = Tensor::<1, Int>::from_data(TensorData::new(y.clone(), [rows]), &device);
            let model = net.train();
            // burn: the tensor path's loss and its gradients
            let logits = model.forward_train(images.clone(), &mut SplitMix64::new(1));
            let l = loss(
                LossKind::CrossEntropy,
                logits,
                Targets::Labels(labels.autodiff()),
            );
            let grads = l.backward();
            let (convs, dense): (Vec<&Conv2d>, Vec<&Linear>) = match &model {
                Net::Lenet(m) => (vec![&m.conv1, &m.conv2], vec![&m.fc1, &m.fc2, &m.fc3]),
                Net::MadryCnn(m) => (vec![&m.conv1, &m.conv2], vec![&m.fc1, &m.fc2]),
                _ => unreachable!(),
            };
            let mut want: Vec<Vec<f32>> = Vec::new();
            for c in &convs {
                want.push(grad_f32(&c.weight, &grads));
                want.push(grad_f32(c.bias.as_ref().expect("bias"), &grads));
            }
            for d in &dense {
                want.push(grad_f32(&d.weight, &grads));
                want.push(grad_f32(d.bias.as_ref().expect("bias"), &grads));
            }
            // the host: the same loss's gradient with respect to the logits, then backward
            let host = HostTraining::of(&model, 1e-5).expect("a CNN trains on the host");
            let pass = host
                .forward(&images, &mut SplitMix64::new(1))
                .expect("forward");
            let ce = crate::dense_train::cross_entropy(&pass.pass.logits, &y, 10).expect("ce");
            let (gc, gd) = host.gradients(&pass, &ce.dlogits).expect("gradients");
            let mut got: Vec<Vec<f32>> = Vec::new();
            for g in &gc {
                got.push(g.weight.clone());
                got.push(g.bias.clone());
            }
            for g in &gd {
                got.push(g.weight.clone());
                got.push(g.bias.clone());
            }
            assert_eq!(got.len(), want.len());
            for (p, (a, b)) in got.iter().zip(&want).enumerate() {
                assert_eq!(a.len(), b.len(), "net {mi} parameter {p}");
                let top = b.iter().fold(0f32, |m, v| m.max(v.abs()));
                assert!(top > 0.0, "net {mi} parameter {p} has a gradient");
                for (u, v) in a.iter().zip(b) {
                    assert!(
                        (u - v).abs() <= 1e-4 * top,
                        "net {mi} parameter {p}: host {u} vs burn {v} (largest {top})"
                    );
                }
            }
        }
    }
}
