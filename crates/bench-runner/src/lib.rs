#![doc = include_str!("../README.md")]

pub mod cli;
pub mod progress;
pub mod slurm;

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
    msg
}
