#![doc = include_str!("../README.md")]

pub mod cli;
pub mod progress;
pub mod slurm;
pub mod smooth;
pub mod verify;

/// The message of an error for the terminal: the error and each cause the message does not already
/// quote (errors that embed their source in their text would otherwise say it twice).
pub fn error_message(e: &anyhow::Error) -> String {
    let mut msg = e.to_string();
    for cause in e.chain().skip(1) {
        let c = cause.to_string();
        if !msg.contains(&c) {
            msg.push_str(": ");
            msg.push_str(&c);
        }
    }
    if let Some(h) = hint(e) {
        msg.push_str("\nhint: ");
        msg.push_str(&h);
    }
    msg
}

/// What to do about `e`, in this binary's flags: the libraries' errors say what is wrong, the
/// command line says what to type.
pub fn hint(e: &anyhow::Error) -> Option<String> {
    use advrob_experiment::ExperimentError as E;
    let experiment = e.chain().find_map(|c| {
        c.downcast_ref::<E>().or_else(|| match c.downcast_ref() {
            Some(advrob_report::ReportError::Experiment(x)) => Some(x),
            _ => None,
        })
    })?;
    let mut x = experiment;
    while let E::InModel { source, .. } = x {
        x = source;
    }
    match x {
        E::NoMirror { dataset, .. } => Some(format!(
            "point --mirror (or ADVROB_MIRROR) at a directory or URL holding the {dataset} .gz files"
        )),
        E::OlderRecords { run, .. } => {
            let dir = advrob_experiment::RunDir::new(run);
            Some(format!(
                "run into a new --out, or move {} and {} aside to recompute them",
                dir.records().display(),
                dir.record_logs().display()
            ))
        }
        E::OtherMatrix { .. } => Some(
            "run into a new --out, or add --extend to run this matrix into the same directory beside it (records stay apart by their keys)".into(),
        ),
        _ => None,
    }
}
