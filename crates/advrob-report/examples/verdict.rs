//! The masking verdict and the per-example worst case of a run directory, from its records alone:
//! `cargo run -p advrob-report --example verdict -- runs/reproduce`.

use std::collections::BTreeMap;

use advrob_experiment::{RunDir, read_records};
use advrob_report::{stats, verdict};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::args()
        .nth(1)
        .ok_or("usage: verdict <run directory>")?;
    let records = read_records(&RunDir::new(dir))?;
    // no checkpoint probes here: the two checks that need a checkpoint say "not run"
    print!(
        "{}",
        verdict::markdown(&verdict::verdicts(&records, &BTreeMap::new()))
    );
    print!("{}", stats::worst_markdown(&stats::worst_case(&records)));
    Ok(())
}
