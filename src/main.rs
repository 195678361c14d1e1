//! The `replay` binary: parses the command line and dispatches.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = replay::cli::Cli::parse();
    replay::telemetry::init();
    replay::exit::report(replay::commands::run(cli))
}
