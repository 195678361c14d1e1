//! The worker's HTTP endpoint: `GET /health` answers while the process
//! lives; `GET /health/ready` answers 200 only while the database answers and
//! the worker holds a consumer on its queue, 503 with the reason otherwise;
//! `GET /health/detailed` is the JSON an on-call engineer reads (database,
//! broker, queue depth, ledger by status, pause, workers, DLQ, lag);
//! `GET /metrics` is Prometheus text, its gauges refreshed at each scrape.
//!
//! The caller binds the listener and owns the shutdown token, so tests bind
//! port 0.

use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::worker::Liveness;

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

/// What the detailed view and the gauges are made of.
async fn snapshot(readiness: &Readiness) -> serde_json::Value {
    use serde_json::json;
    let pool = &readiness.pool;
    let database = match sqlx::query_scalar::<_, i32>("SELECT 1").fetch_one(pool).await {
        Ok(_) => json!({"status": "ok", "url": readiness.endpoints.database_url.redacted()}),
        Err(e) => {
            json!({"status": "unreachable", "url": readiness.endpoints.database_url.redacted(), "error": e.to_string()})
        }
    };
    let ledger: std::collections::BTreeMap<String, i64> =
        crate::store::ledger::count_by_status(pool).await.map(|v| v.into_iter().collect()).unwrap_or_default();
    let paused = crate::store::pause::current(pool).await.ok().flatten();
    let workers = crate::store::heartbeats::live_and_stale(pool, crate::control::pause::LIVE_WITHIN).await.ok();
    let dlq = crate::store::ledger::count_unresolved_errors(pool).await.unwrap_or(0)
        + crate::store::dead_letters::count_unresolved(pool).await.unwrap_or(0);
    let activity = crate::store::ledger::activity(pool).await.ok();
    let queue = queue_depth(&readiness.endpoints).await;
    json!({
        "database": database,
        "broker": {
            "url": readiness.endpoints.amqp_url.redacted(),
            "consuming": readiness.liveness.is_consuming(),
            "leading": readiness.liveness.is_leading(),
            "queue": readiness.endpoints.queue,
            "error": queue.as_ref().err().map(ToString::to_string),
        },
        "queue_depth": queue.ok(),
        "ledger": ledger,
        "paused": paused,
        "workers": workers.as_ref().map(|(live, _)| live),
        "workers_not_heard_from": workers.as_ref().map(|(_, stale)| stale),
        "dlq": dlq,
        "last_processed_at": activity.as_ref().and_then(|a| a.0),
        "replay_rows_waiting": activity.as_ref().map(|a| a.2),
        "consumer_lag_seconds": activity.as_ref().and_then(|a| a.1),
    })
}

async fn queue_depth(endpoints: &crate::config::Endpoints) -> Result<u32, crate::wire::transport::TransportError> {
    let connection = crate::wire::transport::connect(&endpoints.amqp_url, "replay health").await?;
    let channel = crate::wire::transport::channel(&connection).await?;
    let depth = crate::wire::transport::queue_depth(&channel, &endpoints.queue).await;
    let _ = crate::wire::transport::answer("close a channel", channel.close(200, "read".into())).await;
    crate::wire::transport::close(&connection, "read").await;
    depth
}

async fn detailed(State(readiness): State<Readiness>) -> axum::Json<serde_json::Value> {
    axum::Json(snapshot(&readiness).await)
}

async fn prometheus(State(readiness): State<Readiness>) -> (StatusCode, String) {
    let Some(handle) = &readiness.metrics else {
        return (StatusCode::NOT_FOUND, "metrics are not recorded in this process\n".into());
    };
    let view = snapshot(&readiness).await;
    for (status, n) in view["ledger"].as_object().into_iter().flatten() {
        metrics::gauge!(crate::telemetry::metrics::LEDGER_ROWS, "status" => status.clone())
            .set(n.as_f64().unwrap_or(0.0));
    }
    if let Some(depth) = view["queue_depth"].as_f64() {
        metrics::gauge!(crate::telemetry::metrics::QUEUE_DEPTH).set(depth);
    }
    metrics::gauge!(crate::telemetry::metrics::DLQ_SIZE).set(view["dlq"].as_f64().unwrap_or(0.0));
    metrics::gauge!(crate::telemetry::metrics::REPLAY_WAITING).set(view["replay_rows_waiting"].as_f64().unwrap_or(0.0));
    metrics::gauge!(crate::telemetry::metrics::PAUSED).set(if view["paused"].is_null() { 0.0 } else { 1.0 });
    metrics::gauge!(crate::telemetry::metrics::CONSUMER_LAG).set(view["consumer_lag_seconds"].as_f64().unwrap_or(0.0));
    (StatusCode::OK, handle.render())
}
