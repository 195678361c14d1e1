//! The `replay` binary: parses the command line and dispatches.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = replay::cli::Cli::parse();
    replay::telemetry::init();
    match replay::commands::run(cli) {
        Ok(code) => code,
        // `replay man | head`: the reader left, nothing went wrong.
        Err(error) if replay::exit::is_broken_pipe(&error) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {}", replay::exit::render(&error));
            replay::exit::code_for(&error)
        }
    }
}
