//! What the system tells its operators, below everything that reports:
//! Prometheus metric names and the recorder (`metrics`) and, here, logging:
//! human-readable lines on stderr, filtered by `RUST_LOG` (default `info`),
//! so stdout stays for command output. (The worker's HTTP endpoint, which
//! reads the worker's own state, is `worker::health`.)

pub mod metrics;

use tracing_subscriber::EnvFilter;

pub fn init() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
}
