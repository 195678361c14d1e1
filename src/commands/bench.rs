//! `replay bench [worker|apply|plan|stop|console|rehearse|partitions]`: prints a measurement next to its raw baseline.

use std::process::ExitCode;

use anyhow::Context;

use crate::cli::{BenchArgs, BenchScenario};
use crate::config::Endpoints;

pub async fn run(endpoints: &Endpoints, args: BenchArgs) -> anyhow::Result<ExitCode> {
    let exe = std::env::current_exe().context("locating the replay binary to spawn as the worker")?;
    match args.scenario {
        BenchScenario::Worker => print!(
            "{}",
            crate::bench::worker::run(endpoints, args.events, args.keep, &exe, args.previous_exe.as_deref()).await?
        ),
        BenchScenario::Apply => {
            print!("{}", crate::bench::apply::run(endpoints, args.events, args.keep, &exe).await?)
        }
        BenchScenario::Console => {
            print!("{}", crate::bench::console::run(endpoints, args.rows, args.keep, &exe).await?)
        }
        BenchScenario::Rehearse => {
            print!("{}", crate::bench::rehearse::run(endpoints, args.events, args.keep, &exe).await?)
        }
        BenchScenario::Partitions => {
            print!("{}", crate::bench::partitions::run(endpoints, args.events, args.keep, &exe).await?)
        }
        BenchScenario::Plan => print!("{}", crate::bench::plan::run(endpoints, args.rows, args.keep, &exe).await?),
        BenchScenario::Stop => match args.queued {
            Some(queued) => print!("{}", crate::bench::stop::run_queued(endpoints, queued, args.keep, &exe).await?),
            None => print!("{}", crate::bench::stop::run(endpoints, args.events, args.keep, &exe).await?),
        },
    }
    Ok(ExitCode::SUCCESS)
}
