//! What a run tells its caller: the events of its progress, and what it did.

/// What a run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunSummary {
    /// Records written by this invocation.
    pub new_records: usize,
    /// Records already present and skipped.
    pub skipped_records: usize,
    /// Models trained by this invocation.
    pub trained: usize,
    /// Models loaded from checkpoints.
    pub loaded: usize,
}

/// What a run is doing, for a progress display. Labels are ready to show.
#[derive(Debug, Clone, PartialEq)]
pub enum Event<'a> {
    /// A training stage of a model begins: `total` batches in all.
    StageStarted {
        /// `train baseline (ndarray, seed 42)`, with the stage's name when it is not `train`.
        label: &'a str,
        /// Batches of the stage, all epochs.
        total: u64,
    },
    /// A batch of the current stage is done.
    StageProgress {
        /// Batches done in the stage.
        done: u64,
        /// 1-based epoch.
        epoch: usize,
        /// Epochs of the stage.
        epochs: usize,
    },
    /// The model's training is done.
    TrainFinished {
        /// Wall time of all its stages.
        seconds: f64,
        /// Mean loss of the last epoch of the last stage.
        loss: f64,
        /// Training accuracy of that epoch.
        accuracy: f64,
    },
    /// The evaluation of a model under an attack begins.
    EvalStarted {
        /// `baseline vs fgsm (ndarray)`.
        label: &'a str,
        /// Batches of test examples.
        batches: u64,
    },
    /// A batch of the evaluation is done.
    EvalProgress {
        /// Batches done.
        done: u64,
    },
    /// The evaluation is done.
    EvalFinished {
        /// The model's clean accuracy on the evaluated examples.
        clean_accuracy: f64,
    },
}

/// Receives the [`Event`]s of a run, from the thread of the rayon pool the run computes on (see
/// [`run`]), hence `Send`.
pub trait Observer: Send {
    /// One event.
    fn event(&mut self, event: Event<'_>);
}

/// An observer that ignores everything.
#[derive(Debug, Clone, Copy, Default)]
pub struct Quiet;

impl Observer for Quiet {
    fn event(&mut self, _: Event<'_>) {}
}
