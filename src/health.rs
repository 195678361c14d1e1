//! The worker's HTTP endpoint: `GET /health` answers while the process
//! lives; `GET /health/ready` answers 200 only while the database answers and
//! the worker holds a consumer on its queue, 503 with the reason otherwise.
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

/// What readiness is judged on.
#[derive(Clone)]
pub struct Readiness {
    pub pool: PgPool,
    pub liveness: Liveness,
}

/// Serves until `shutdown` is cancelled.
pub async fn serve(listener: TcpListener, readiness: Readiness, shutdown: CancellationToken) -> std::io::Result<()> {
    let app = Router::new()
        .route("/health", get(|| async { "ok\n" }))
        .route("/health/ready", get(ready))
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
        if let Ok(Some(pause)) = crate::pause::current(&readiness.pool).await {
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
