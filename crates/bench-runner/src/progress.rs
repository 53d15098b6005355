//! Progress on the terminal: bars with an ETA on a TTY, plain log lines otherwise.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

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
        let label = label.into();
        let bar = std::io::stderr().is_terminal().then(|| {
            let style = ProgressStyle::with_template(
                "{msg:40} [{bar:30}] {pos}/{len} {elapsed_precise} eta {eta}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
            let b = ProgressBar::new(len).with_style(style);
            b.set_message(label.clone());
            b
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
