//! Test support, never shipped: the `replay` binary with every handler
//! wrapped by the tests' effect probe (`tests/common/probe.rs`), so a test
//! can count how many times each event was applied. `cargo test` builds it;
//! the tests find it with `common::probed_replay()`.

#[path = "../tests/common/probe.rs"]
mod probe;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = replay::cli::Cli::parse();
    replay::telemetry::init();
    replay::exit::report(replay::commands::run_with(cli, probe::registry()))
}
