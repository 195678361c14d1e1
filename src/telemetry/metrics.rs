//! Prometheus metrics: the names, in one place, and the recorder the
//! worker's `/metrics` endpoint renders. Counters and histograms are
//! recorded where things happen (after commit); the ledger, queue and DLQ
//! gauges are refreshed from the tables and the broker at each scrape.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

pub const EVENTS_CONSUMED: &str = "replay_events_consumed_total";
pub const EVENTS_PROCESSED: &str = "replay_events_processed_total";
pub const PROCESSING_SECONDS: &str = "replay_batch_processing_seconds";
pub const BATCH_SIZE: &str = "replay_batch_size_events";
pub const RETRIES: &str = "replay_event_retries_total";
pub const LEDGER_ROWS: &str = "replay_ledger_rows";
pub const QUEUE_DEPTH: &str = "replay_queue_depth_messages";
pub const DLQ_SIZE: &str = "replay_dlq_entries";
pub const REPLAY_WAITING: &str = "replay_replay_rows_waiting";
pub const PAUSED: &str = "replay_paused";
pub const CONSUMER_LAG: &str = "replay_consumer_lag_seconds";

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the process-wide recorder once and returns its handle (`None`
/// if another recorder was installed first).
pub fn handle() -> Option<PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    metrics_exporter_prometheus::Matcher::Full(PROCESSING_SECONDS.into()),
                    &[0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0],
                )
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        metrics_exporter_prometheus::Matcher::Full(BATCH_SIZE.into()),
                        &[1.0, 10.0, 50.0, 100.0, 250.0, 500.0, 1000.0],
                    )
                })
                .ok()?
                .build_recorder();
            let handle = recorder.handle();
            metrics::set_global_recorder(recorder).ok()?;
            describe();
            Some(handle)
        })
        .clone()
}

fn describe() {
    metrics::describe_counter!(EVENTS_CONSUMED, "Messages consumed from the queue and committed to the ledger.");
    metrics::describe_counter!(EVENTS_PROCESSED, "Event attempts settled, by event type and outcome.");
    metrics::describe_histogram!(
        PROCESSING_SECONDS,
        metrics::Unit::Seconds,
        "Time to process one batch, commit included."
    );
    metrics::describe_histogram!(BATCH_SIZE, "Events per batch.");
    metrics::describe_counter!(RETRIES, "Failed attempts that will be retried.");
    metrics::describe_gauge!(LEDGER_ROWS, "Ledger rows by status.");
    metrics::describe_gauge!(QUEUE_DEPTH, "Messages ready in the worker queue.");
    metrics::describe_gauge!(DLQ_SIZE, "Unresolved DLQ entries: failed events and dead-lettered messages.");
    metrics::describe_gauge!(REPLAY_WAITING, "Rows reset by a replay still waiting for their message.");
    metrics::describe_gauge!(PAUSED, "1 while workers are paused.");
    metrics::describe_gauge!(
        CONSUMER_LAG,
        metrics::Unit::Seconds,
        "How long the oldest due pending ledger row has waited."
    );
}
