//! The worker's HTTP endpoint: `GET /health` answers while the process
//! lives; `GET /health/ready` answers 200 only while the database answers and
//! the worker holds a consumer on its queue, 503 with the reason otherwise;
//! `GET /health/detailed` is the JSON an on-call engineer reads (database,
//! broker, queue depth, ledger by status, pause, workers, DLQ, lag, the
//! outbox and this worker's relay); `GET /metrics` is Prometheus text, its
//! gauges refreshed at each scrape. Both are built from one [`Snapshot`].
//!
//! The caller binds the listener and owns the shutdown token, so tests bind
//! port 0.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use chrono::{DateTime, Utc};
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::{Liveness, RelayReport};
use crate::store::heartbeats::{self, Heartbeat};
use crate::store::pause::Pause;
use crate::store::{dead_letters, ledger, outbox};

/// How long the readiness probe waits for the database.
const DATABASE_PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// What readiness is judged on, and what the detailed view reads.
#[derive(Clone)]
pub struct Readiness {
    pub pool: PgPool,
    pub liveness: Liveness,
    pub endpoints: crate::config::Endpoints,
    /// The metrics recorder, if this process installed it.
    pub metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
}

/// Serves until `shutdown` is cancelled.
pub async fn serve(listener: TcpListener, readiness: Readiness, shutdown: CancellationToken) -> std::io::Result<()> {
    let app = Router::new()
        .route("/health", get(|| async { "ok\n" }))
        .route("/health/ready", get(ready))
        .route("/health/detailed", get(detailed))
        .route("/metrics", get(prometheus))
        .with_state(readiness);
    axum::serve(listener, app).with_graceful_shutdown(async move { shutdown.cancelled().await }).await
}

async fn ready(State(readiness): State<Readiness>) -> (StatusCode, String) {
    let probe = sqlx::query_scalar::<_, i32>("SELECT 1").fetch_one(&readiness.pool);
    match tokio::time::timeout(DATABASE_PROBE_TIMEOUT, probe).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => return (StatusCode::SERVICE_UNAVAILABLE, format!("database unreachable: {e}\n")),
        Err(_) => {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("database did not answer within {DATABASE_PROBE_TIMEOUT:?}\n"),
            )
        }
    }
    if !readiness.liveness.is_consuming() {
        if !readiness.liveness.is_leading() && matches!(crate::store::pause::current(&readiness.pool).await, Ok(None)) {
            // A hot standby is healthy: it takes over when the leader goes.
            return (
                StatusCode::OK,
                "standby: another worker leads the partition; this one takes over if it goes\n".into(),
            );
        }
        if let Ok(Some(pause)) = crate::store::pause::current(&readiness.pool).await {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "paused since {} by {} ({}): `replay resume --reason ...` lifts it\n",
                    pause.paused_at.to_rfc3339(),
                    pause.operator,
                    pause.reason
                ),
            );
        }
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "not consuming: the broker is unreachable or the consumer is being re-established\n".into(),
        );
    }
    (StatusCode::OK, "ready\n".into())
}

/// What the detailed view shows and the gauges are set from, read once per
/// request. Most reads that fail (the database is away) are `None`: `null`
/// in the JSON, and their gauges keep their last value rather than drop to
/// a 0 that would read as "all clear". The ledger counts show as empty then,
/// and the pause and lag gauges are set only while the database probe
/// answers.
#[derive(Debug, serde::Serialize)]
pub struct Snapshot {
    pub broker: BrokerView,
    #[serde(flatten)]
    pub system: SystemView,
    pub outbox: OutboxView,
}

/// What every process sees the same: the database, the queue, the ledger,
/// the pause, the workers and the DLQ. The worker's detailed view and the
/// console's overview both show it.
#[derive(Debug, serde::Serialize)]
pub struct SystemView {
    pub consumer_lag_seconds: Option<f64>,
    pub database: DatabaseView,
    /// Unresolved failed events plus dead-lettered messages.
    pub dlq: Option<i64>,
    pub last_processed_at: Option<DateTime<Utc>>,
    /// Ledger rows by status (empty when unreadable).
    pub ledger: BTreeMap<String, i64>,
    pub paused: Option<Pause>,
    pub queue_depth: Option<u32>,
    /// Why the queue depth could not be read.
    #[serde(skip)]
    pub queue_error: Option<String>,
    pub replay_rows_waiting: Option<i64>,
    pub workers: Option<Vec<Heartbeat>>,
    pub workers_not_heard_from: Option<Vec<Heartbeat>>,
    /// Events waiting in the outbox, and how long the oldest has waited.
    #[serde(skip)]
    pub outbox_backlog: Option<outbox::Backlog>,
}

impl SystemView {
    /// Reads it once; a read that fails (the database is away) is `None`.
    pub async fn read(pool: &PgPool, endpoints: &crate::config::Endpoints) -> Self {
        let database = match sqlx::query_scalar::<_, i32>("SELECT 1").fetch_one(pool).await {
            Ok(_) => DatabaseView { status: "ok", url: endpoints.database_url.redacted(), error: None },
            Err(e) => DatabaseView {
                status: "unreachable",
                url: endpoints.database_url.redacted(),
                error: Some(e.to_string()),
            },
        };
        let ledger = ledger::count_by_status(pool).await.map(|v| v.into_iter().collect()).unwrap_or_default();
        let paused = crate::store::pause::current(pool).await.ok().flatten();
        let workers = heartbeats::live_and_stale(pool, heartbeats::LIVE_WITHIN).await.ok();
        let dlq = match (ledger::count_unresolved_errors(pool).await, dead_letters::count_unresolved(pool).await) {
            (Ok(failed), Ok(dead)) => Some(failed + dead),
            _ => None,
        };
        let activity = ledger::activity(pool).await.ok();
        let queue = queue_depth(endpoints).await;
        let (workers, workers_not_heard_from) = workers.map_or((None, None), |(live, stale)| (Some(live), Some(stale)));
        Self {
            consumer_lag_seconds: activity.and_then(|a| a.consumer_lag_seconds),
            database,
            dlq,
            last_processed_at: activity.and_then(|a| a.last_processed_at),
            ledger,
            paused,
            queue_error: queue.as_ref().err().map(ToString::to_string),
            queue_depth: queue.ok(),
            replay_rows_waiting: activity.map(|a| a.replay_rows_waiting),
            workers,
            workers_not_heard_from,
            outbox_backlog: outbox::backlog(pool).await.ok(),
        }
    }
}

#[derive(Debug, serde::Serialize)]
pub struct BrokerView {
    pub consuming: bool,
    /// Why the queue depth could not be read.
    pub error: Option<String>,
    pub leading: bool,
    pub queue: String,
    pub url: String,
}

#[derive(Debug, serde::Serialize)]
pub struct DatabaseView {
    /// `ok` or `unreachable`.
    pub status: &'static str,
    pub url: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The outbox as an on-call engineer reads it: what waits (the same on every
/// worker) and what this worker's relay last did.
#[derive(Debug, serde::Serialize)]
pub struct OutboxView {
    /// Events waiting to be relayed.
    pub backlog: Option<i64>,
    /// How long the oldest of them has waited.
    pub oldest_seconds: Option<f64>,
    /// True while the outbox holds events: they are on the fallback path
    /// and have not reached the broker yet (`replay_outbox_fallback_active`).
    pub fallback_active: Option<bool>,
    pub relay: RelayReport,
}

impl Snapshot {
    async fn read(readiness: &Readiness) -> Self {
        let system = SystemView::read(&readiness.pool, &readiness.endpoints).await;
        let endpoints = &readiness.endpoints;
        let backlog = system.outbox_backlog;
        Self {
            broker: BrokerView {
                consuming: readiness.liveness.is_consuming(),
                error: system.queue_error.clone(),
                leading: readiness.liveness.is_leading(),
                queue: endpoints.queue.clone(),
                url: endpoints.amqp_url.redacted(),
            },
            outbox: OutboxView {
                backlog: backlog.map(|b| b.events),
                oldest_seconds: backlog.and_then(|b| b.oldest_seconds),
                fallback_active: backlog.map(|b| b.events > 0),
                relay: readiness.liveness.relay(),
            },
            system,
        }
    }

    /// Sets the gauges refreshed at scrape from what was read.
    fn set_gauges(&self) {
        use crate::telemetry::metrics as m;
        for (status, n) in &self.system.ledger {
            metrics::gauge!(m::LEDGER_ROWS, "status" => status.clone()).set(*n as f64);
        }
        if let Some(depth) = self.system.queue_depth {
            metrics::gauge!(m::QUEUE_DEPTH).set(f64::from(depth));
        }
        if let Some(dlq) = self.system.dlq {
            metrics::gauge!(m::DLQ_SIZE).set(dlq as f64);
        }
        if let Some(waiting) = self.system.replay_rows_waiting {
            metrics::gauge!(m::REPLAY_WAITING).set(waiting as f64);
        }
        // No pause row is no pause, no due row no lag; but an unreachable
        // database is neither, and keeps the last values.
        if self.system.database.error.is_none() {
            metrics::gauge!(m::PAUSED).set(if self.system.paused.is_some() { 1.0 } else { 0.0 });
            metrics::gauge!(m::CONSUMER_LAG).set(self.system.consumer_lag_seconds.unwrap_or(0.0));
        }
        if let Some(events) = self.outbox.backlog {
            metrics::gauge!(m::OUTBOX_BACKLOG).set(events as f64);
            metrics::gauge!(m::OUTBOX_OLDEST).set(self.outbox.oldest_seconds.unwrap_or(0.0));
            metrics::gauge!(m::OUTBOX_FALLBACK).set(if events > 0 { 1.0 } else { 0.0 });
        }
    }
}

async fn queue_depth(endpoints: &crate::config::Endpoints) -> Result<u32, crate::wire::transport::TransportError> {
    let connection = crate::wire::transport::connect(&endpoints.amqp_url, "replay health").await?;
    let channel = crate::wire::transport::channel(&connection).await?;
    let depth = crate::wire::transport::stream_depth(&channel, endpoints).await;
    let _ = crate::wire::transport::answer("close a channel", channel.close(200, "read".into())).await;
    crate::wire::transport::close(&connection, "read").await;
    depth
}

async fn detailed(State(readiness): State<Readiness>) -> axum::Json<Snapshot> {
    axum::Json(Snapshot::read(&readiness).await)
}

async fn prometheus(State(readiness): State<Readiness>) -> (StatusCode, String) {
    let Some(handle) = &readiness.metrics else {
        return (StatusCode::NOT_FOUND, "metrics are not recorded in this process\n".into());
    };
    Snapshot::read(&readiness).await.set_gauges();
    (StatusCode::OK, handle.render())
}
