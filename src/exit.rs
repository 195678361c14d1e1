//! Exit codes, documented in the README and mapped in one place.
//!
//! 0 done; 1 runtime failure (database or broker unreachable); 2 bad usage;
//! 3 refused by a safety check; 4 stopped by a pause, an emergency stop or a
//! canary apply's halt.

use std::process::ExitCode;

use crate::replay::apply::ApplyError;

/// A problem with what the user asked for: nothing was changed.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// A safety check refused: nothing was changed.
#[derive(Debug, thiserror::Error)]
#[error("refused: {0}")]
pub struct Refused(pub String);

/// Exit code 3: a safety check refused (or found something wrong).
pub const REFUSED: u8 = 3;
/// Exit code 4: stopped by a pause, an emergency stop or a canary's halt.
pub const STOPPED: u8 = 4;

/// An error chain as one line: each cause once, skipping a cause whose text
/// the message above it already quotes (our errors name their cause inline).
pub fn render(error: &anyhow::Error) -> String {
    let mut message = error.to_string();
    for cause in error.chain().skip(1) {
        let text = cause.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
    }
    message
}

/// A command's outcome as the process's exit code; an error is printed on
/// stderr as one line first.
pub fn report(outcome: anyhow::Result<ExitCode>) -> ExitCode {
    match outcome {
        Ok(code) => code,
        // `replay man | head`: the reader left, nothing went wrong.
        Err(error) if is_broken_pipe(&error) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {}", render(&error));
            code_for(&error)
        }
    }
}

/// Whether the error is stdout closing under us (a pipe into `head`).
pub fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error
        .chain()
        .any(|cause| cause.downcast_ref::<std::io::Error>().is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe))
}

/// The exit code for an error chain.
pub fn code_for(error: &anyhow::Error) -> ExitCode {
    for cause in error.chain() {
        if cause.is::<UsageError>() {
            return ExitCode::from(2);
        }
        if cause.is::<Refused>() {
            return ExitCode::from(REFUSED);
        }
        match cause.downcast_ref::<ApplyError>() {
            Some(ApplyError::Refused(_)) => return ExitCode::from(REFUSED),
            Some(ApplyError::Paused { .. } | ApplyError::Halted { .. }) => return ExitCode::from(STOPPED),
            _ => {}
        }
    }
    ExitCode::from(1)
}
