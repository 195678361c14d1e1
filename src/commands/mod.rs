//! One module per subcommand: each turns its arguments into a request and
//! calls the library. `anyhow` lives here and in `main`, not below.

mod audit;
mod backup;
mod bench;
mod migrate;
mod plan;
mod publish;
mod worker;

use std::process::ExitCode;

use crate::cli::{Cli, Command};

/// Runs a parsed command line to its exit code.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let endpoints = cli.global.endpoints();
    runtime.block_on(async move {
        match cli.command {
            Command::Migrate => migrate::run(&endpoints).await,
            Command::Publish(args) => publish::run(&endpoints, args).await,
            Command::Worker(args) => worker::run(&endpoints, args).await,
            Command::Bench(args) => bench::run(&endpoints, args).await,
            Command::Plan(args) => plan::run(&endpoints, args).await,
            Command::Audit(command) => audit::run(&endpoints, command).await,
            Command::Backup(args) => backup::run(&endpoints, args).await,
        }
    })
}
