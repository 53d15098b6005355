//! Progress on the terminal: bars with an ETA on a TTY, plain log lines otherwise.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use advrob_experiment::{Event, Matrix, Observer, Registry, RunOptions, RunSummary, run_jobs};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

/// A progress reporter for one phase (training a model, evaluating it).
pub struct Phase {
    bar: Option<ProgressBar>,
    label: String,
    last_log: Instant,
    len: u64,
}

impl Phase {
    /// A phase of `len` steps.
    pub fn new(label: impl Into<String>, len: u64) -> Self {
        Self::within(None, label, len)
    }

    /// A phase of `len` steps whose bar (on a TTY) is one line of `multi`.
    fn within(multi: Option<&MultiProgress>, label: impl Into<String>, len: u64) -> Self {
        let label = label.into();
        let bar = std::io::stderr().is_terminal().then(|| {
            let style = ProgressStyle::with_template(
                "{msg:40} [{bar:30}] {pos}/{len} {elapsed_precise} eta {eta}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
            let b = ProgressBar::new(len).with_style(style);
            b.set_message(label.clone());
            match multi {
                Some(m) => m.add(b),
                None => b,
            }
        });
        if bar.is_none() {
            log::info!("{label}: started ({len} steps)");
        }
        Self {
            bar,
            label,
            last_log: Instant::now(),
            len,
        }
    }

    /// Sets the position and, on a bar, the message suffix.
    pub fn set(&mut self, pos: u64, msg: Option<&str>) {
        match &self.bar {
            Some(b) => {
                b.set_position(pos);
                if let Some(m) = msg {
                    b.set_message(format!("{} {m}", self.label));
                }
            }
            None => {
                if self.last_log.elapsed() > Duration::from_secs(10) {
                    self.last_log = Instant::now();
                    log::info!("{}: {pos}/{}", self.label, self.len);
                }
            }
        }
    }

    /// Ends the phase with a summary line.
    pub fn finish(self, summary: &str) {
        match self.bar {
            Some(b) => b.finish_with_message(format!("{} {summary}", self.label)),
            None => log::info!("{}: {summary}", self.label),
        }
    }
}

/// The run's [`Observer`]: one [`Phase`] per training stage and per evaluation, a bar on a TTY.
#[derive(Default)]
pub struct Bars {
    phase: Option<Phase>,
    multi: Option<MultiProgress>,
}

impl Bars {
    /// Bars drawn as lines of `multi`, beside the bars of the run's other jobs.
    pub fn shared(multi: &MultiProgress) -> Self {
        Self {
            phase: None,
            multi: Some(multi.clone()),
        }
    }

    fn start(&mut self, label: &str, len: u64) {
        if let Some(old) = self.phase.take() {
            old.finish("done");
        }
        self.phase = Some(Phase::within(self.multi.as_ref(), label, len));
    }

    fn finish(&mut self, summary: &str) {
        if let Some(p) = self.phase.take() {
            p.finish(summary);
        }
    }
}

impl Observer for Bars {
    fn event(&mut self, event: Event<'_>) {
        match event {
            Event::StageStarted { label, total } => self.start(label, total),
            Event::StageProgress {
                done,
                epoch,
                epochs,
            } => {
                if let Some(p) = self.phase.as_mut() {
                    p.set(done, Some(&format!("epoch {epoch}/{epochs}")));
                }
            }
            Event::TrainFinished {
                seconds,
                loss,
                accuracy,
            } => self.finish(&format!(
                "done in {seconds:.1}s, loss {loss:.4}, train accuracy {accuracy:.4}"
            )),
            Event::EvalStarted { label, batches } => self.start(label, batches),
            Event::EvalProgress { done } => {
                if let Some(p) = self.phase.as_mut() {
                    p.set(done, None);
                }
            }
            Event::EvalFinished { clean_accuracy } => {
                self.finish(&format!("clean accuracy {clean_accuracy:.4}"))
            }
        }
    }
}

/// Runs `matrix` with `jobs` jobs at once ([`run_jobs`]), each with its bars (one line per job on
/// a TTY).
pub fn run_with_bars(
    matrix: &Matrix,
    opts: &RunOptions,
    registry: &Registry,
    jobs: usize,
) -> advrob_experiment::Result<RunSummary> {
    let multi = MultiProgress::new();
    let mut bars: Vec<Bars> = (0..jobs.max(1)).map(|_| Bars::shared(&multi)).collect();
    let mut observers: Vec<&mut dyn Observer> =
        bars.iter_mut().map(|b| b as &mut dyn Observer).collect();
    run_jobs(matrix, opts, registry, &mut observers)
}
