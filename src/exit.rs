//! Exit codes, documented in the README and mapped in one place.
//!
//! 0 done; 1 runtime failure (database or broker unreachable); 2 bad usage;
//! 3 refused by a safety check; 4 stopped by an emergency stop.

use std::process::ExitCode;

/// A problem with what the user asked for: nothing was changed.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// The exit code for an error chain.
pub fn code_for(error: &anyhow::Error) -> ExitCode {
    if error.chain().any(|cause| cause.is::<UsageError>()) {
        ExitCode::from(2)
    } else {
        ExitCode::from(1)
    }
}

/// Exit code 3: a safety check refused (or found something wrong).
pub const REFUSED: u8 = 3;
