//! One module per subcommand: each turns its arguments into a request and
//! calls the library. `anyhow` lives here and in `main`, not below.

mod apply;
mod audit;
mod backup;
mod bench;
mod console;
mod dlq;
mod emergency_stop;
mod events;
mod ledger;
mod migrate;
mod pause;
mod plan;
mod publish;
mod rehearse;
mod status;
mod token;
mod topology;
mod worker;

use std::process::ExitCode;

use crate::cli::{Cli, Command};
use crate::handlers::Registry;

/// Runs a parsed command line to its exit code, with the reference handlers.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    run_with(cli, Registry::reference())
}

/// Runs a parsed command line; `replay worker` applies `handlers` (the tests
/// pass the reference handlers wrapped by their effect probe).
pub fn run_with(cli: Cli, handlers: Registry) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let endpoints = cli.global.endpoints();
    let outcome = runtime.block_on(async move {
        match cli.command {
            Command::Migrate => migrate::run(&endpoints).await,
            Command::Publish(args) => publish::run(&endpoints, args).await,
            Command::Worker(args) => worker::run(&endpoints, args, handlers).await,
            Command::Bench(args) => bench::run(&endpoints, args).await,
            Command::Plan(args) => plan::run(&endpoints, *args).await,
            Command::Apply(args) => apply::run(&endpoints, *args).await,
            Command::Rehearse(args) => rehearse::run(&endpoints, args, handlers).await,
            Command::Status(args) => status::run(&endpoints, args).await,
            Command::Topology(args) => topology::run(&endpoints, args).await,
            Command::Events(command) => events::run(&endpoints, command).await,
            Command::Pause(args) => pause::pause(&endpoints, args).await,
            Command::Resume(args) => pause::resume(&endpoints, args).await,
            Command::EmergencyStop(args) => emergency_stop::run(&endpoints, args).await,
            Command::Audit(command) => audit::run(&endpoints, command).await,
            Command::Ledger(command) => ledger::run(&endpoints, command).await,
            Command::Dlq(command) => dlq::run(&endpoints, command).await,
            Command::Token(command) => token::run(&endpoints, command).await,
            Command::Console(args) => console::run(&endpoints, args).await,
            Command::Completions { shell } => {
                let mut command = <Cli as clap::CommandFactory>::command();
                clap_complete::generate(shell, &mut command, "replay", &mut std::io::stdout());
                Ok(ExitCode::SUCCESS)
            }
            Command::Man => {
                clap_mangen::Man::new(<Cli as clap::CommandFactory>::command()).render(&mut std::io::stdout())?;
                Ok(ExitCode::SUCCESS)
            }
            Command::Backup(args) => backup::run(&endpoints, args).await,
        }
    });
    // The command is done: a blocking task still running (a DNS lookup, a
    // file read of a dropped connection) must not keep the process alive.
    runtime.shutdown_timeout(RUNTIME_GRACE);
    outcome
}

/// How long a finished command waits for blocking tasks before it exits.
const RUNTIME_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// Asks `question` on the terminal and goes on only on "yes"; with no
/// terminal, refuses and says what flag to pass (`without_terminal`).
fn confirm(question: &str, without_terminal: &str) -> anyhow::Result<()> {
    use std::io::{BufRead, IsTerminal, Write};
    if !std::io::stdin().is_terminal() {
        return Err(crate::exit::Refused(format!("no terminal to confirm on: {without_terminal}")).into());
    }
    eprint!("{question} Type 'yes' to continue: ");
    std::io::stderr().flush()?;
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    if answer.trim() == "yes" {
        Ok(())
    } else {
        Err(crate::exit::Refused("not confirmed: nothing was changed".into()).into())
    }
}

/// The operator's name when none is given: the OS user.
fn os_user() -> String {
    whoami::username().unwrap_or_else(|_| "unknown".to_string())
}

/// Cancels `shutdown` on SIGTERM or SIGINT.
fn spawn_signal_listener(shutdown: tokio_util::sync::CancellationToken) -> anyhow::Result<()> {
    use anyhow::Context;
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: finishing the step in flight, then stopping"),
            _ = int.recv() => tracing::info!("interrupted: finishing the step in flight, then stopping"),
        }
        shutdown.cancel();
    });
    Ok(())
}
