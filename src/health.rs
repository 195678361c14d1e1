//! The worker's HTTP endpoint: `GET /health` answers while the process lives.
//!
//! The caller binds the listener and owns the shutdown token, so tests bind
//! port 0.

use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Serves until `shutdown` is cancelled.
pub async fn serve(listener: TcpListener, shutdown: CancellationToken) -> std::io::Result<()> {
    let app = Router::new().route("/health", get(|| async { "ok\n" }));
    axum::serve(listener, app).with_graceful_shutdown(async move { shutdown.cancelled().await }).await
}
