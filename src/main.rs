//! The `replay` binary: parses the command line and dispatches.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = replay::cli::Cli::parse();
    replay::telemetry::init();
    match replay::commands::run(cli) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            replay::exit::code_for(&error)
        }
    }
}
