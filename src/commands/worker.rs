//! `replay worker`: runs a worker until SIGTERM or Ctrl-C.

use std::process::ExitCode;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use crate::cli::{HttpListen, WorkerArgs};
use crate::config::Endpoints;
use crate::handlers::Registry;
use crate::store::database;
use crate::worker::health;
use crate::worker::{self, Liveness, WorkerConfig};

pub async fn run(endpoints: &Endpoints, args: WorkerArgs, handlers: Registry) -> anyhow::Result<ExitCode> {
    let mut config = WorkerConfig::new(args.id.unwrap_or_else(worker::default_worker_id));
    config.retry.max_attempts = args.max_attempts;
    config.retry.backoff = args.retry_backoff;
    config.prefetch = args.prefetch;
    config.batch_size = args.batch_size as usize;
    config.lease = args.lease;
    config.poll_interval = args.poll_interval;
    config.max_message_bytes = args.max_message_bytes;
    config.batch_timeout = args.batch_timeout;

    let pool = database::connect(&endpoints.database_url, 8).await?;
    database::check_migrated(&pool, &endpoints.database_url).await?;
    crate::store::partitioning::check(&pool, endpoints.partitions).await?;

    let shutdown = CancellationToken::new();
    let liveness = Liveness::default();
    super::spawn_signal_listener(shutdown.clone())?;
    if let HttpListen::On(addr) = args.http {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr} for --http; pick another address or pass --http off"))?;
        tracing::info!(addr = %listener.local_addr()?, "health endpoint listening");
        let readiness = health::Readiness {
            pool: pool.clone(),
            liveness: liveness.clone(),
            endpoints: endpoints.clone(),
            metrics: crate::telemetry::metrics::handle(),
        };
        tokio::spawn(health::serve(listener, readiness, shutdown.clone()));
    }
    worker::run(config, endpoints.clone(), pool, handlers, liveness, shutdown).await;
    Ok(ExitCode::SUCCESS)
}
