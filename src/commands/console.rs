//! `replay console`: binds, then serves the console until SIGTERM or Ctrl-C.

use std::process::ExitCode;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use crate::cli::ConsoleArgs;
use crate::config::Endpoints;
use crate::console::{self, Console, Settings};
use crate::store::database;

pub async fn run(endpoints: &Endpoints, args: ConsoleArgs) -> anyhow::Result<ExitCode> {
    let pool = database::connect(&endpoints.database_url, 8).await?;
    database::check_migrated(&pool, &endpoints.database_url).await?;
    crate::store::partitioning::check(&pool, endpoints.partitions).await?;
    let listener = tokio::net::TcpListener::bind(args.listen).await.with_context(|| {
        format!("cannot listen on {}: is another process using it? Pass --listen ADDR:PORT", args.listen)
    })?;
    if !args.listen.ip().is_loopback() {
        tracing::warn!(listen = %args.listen, "the console listens beyond loopback: serve it only behind a TLS reverse proxy (README)");
    }
    let shutdown = CancellationToken::new();
    super::spawn_signal_listener(shutdown.clone())?;
    let settings = Settings {
        plan_dir: args.plan_dir,
        backup_dir: args.backup_dir,
        secure_cookies: args.secure_cookies,
        require_approval: args.require_approval,
        require_rehearsal: args.require_rehearsal,
        notify: args.notify,
    };
    eprintln!("console on http://{} (API at /api/v1/); stop with Ctrl-C", listener.local_addr()?);
    console::serve(listener, Console::new(pool, endpoints.clone(), settings, shutdown)).await?;
    Ok(ExitCode::SUCCESS)
}
