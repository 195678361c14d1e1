//! `replay bench`: prints the worker's rate next to the raw baseline's.

use std::process::ExitCode;

use anyhow::Context;

use crate::cli::BenchArgs;
use crate::config::Endpoints;

pub async fn run(endpoints: &Endpoints, args: BenchArgs) -> anyhow::Result<ExitCode> {
    let exe = std::env::current_exe().context("locating the replay binary to spawn as the worker")?;
    let report = crate::bench::run(endpoints, args.events, args.keep, &exe).await?;
    print!("{report}");
    Ok(ExitCode::SUCCESS)
}
