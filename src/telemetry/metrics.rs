//! Prometheus metrics: the names, in one place, and the recorder the
//! worker's `/metrics` endpoint renders. Counters and histograms are
//! recorded where things happen (after commit); the ledger, queue, DLQ and
//! outbox gauges are refreshed from the tables and the broker at each scrape
//! (`worker::health`).
//!
//! The outbox: `replay publish` and `replay apply` keep there what the broker
//! did not confirm, and every worker's relay publishes it later. An on-call
//! engineer reads
//! - [`OUTBOX_BACKLOG`] / [`OUTBOX_OLDEST`]: what waits, and since when; the
//!   same on every replica (one table);
//! - [`OUTBOX_FALLBACK`]: 1 while the outbox holds events, i.e. while some
//!   published events are on the fallback path and have not reached the
//!   broker yet. Deliberately not "this worker's relay last failed": that is
//!   per replica, and a relay that fails while nothing waits harms nobody;
//!   a relay that fails shows as [`OUTBOX_RELAY_FAILURES`] rising;
//! - [`OUTBOX_RELAYED`] / [`OUTBOX_RELAY_FAILURES`]: this replica's relay,
//!   events it published and forgot, and rounds that failed.

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
pub const OUTBOX_BACKLOG: &str = "replay_outbox_backlog_events";
pub const OUTBOX_OLDEST: &str = "replay_outbox_oldest_event_age_seconds";
pub const OUTBOX_FALLBACK: &str = "replay_outbox_fallback_active";
pub const OUTBOX_RELAYED: &str = "replay_outbox_relayed_total";
pub const OUTBOX_RELAY_FAILURES: &str = "replay_outbox_relay_failures_total";
/// Events that arrived without a partition key, by the partition they
/// landed in (with more than one partition); registered at 0 at start.
pub const UNKEYED_EVENTS: &str = "replay_unkeyed_events_total";

/// Every metric the worker serves, for the checks that the shipped alerts
/// and dashboard name nothing else.
pub const SERVED: [&str; 17] = [
    EVENTS_CONSUMED,
    EVENTS_PROCESSED,
    PROCESSING_SECONDS,
    BATCH_SIZE,
    RETRIES,
    LEDGER_ROWS,
    QUEUE_DEPTH,
    DLQ_SIZE,
    REPLAY_WAITING,
    PAUSED,
    CONSUMER_LAG,
    OUTBOX_BACKLOG,
    OUTBOX_OLDEST,
    OUTBOX_FALLBACK,
    OUTBOX_RELAYED,
    OUTBOX_RELAY_FAILURES,
    UNKEYED_EVENTS,
];

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
            start_at_zero();
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
    metrics::describe_gauge!(OUTBOX_BACKLOG, "Events waiting in the outbox for a relay to publish them.");
    metrics::describe_gauge!(
        OUTBOX_OLDEST,
        metrics::Unit::Seconds,
        "How long the oldest event in the outbox has waited (0 when it is empty)."
    );
    metrics::describe_gauge!(
        OUTBOX_FALLBACK,
        "1 while the outbox holds events: published events on the fallback path, not yet on the broker."
    );
    metrics::describe_counter!(
        OUTBOX_RELAYED,
        "Events this worker's relay published from the outbox (confirmed, then forgotten)."
    );
    metrics::describe_counter!(
        OUTBOX_RELAY_FAILURES,
        "Relay rounds of this worker that failed (broker unreachable or unconfirmed, database error, no answer)."
    );
}

/// Counters exist from the first scrape at 0: `increase()` and `rate()`
/// only see a rise from a sample before it, so a counter first rendered at 1
/// would hide the first relay failure from the alerts.
fn start_at_zero() {
    for counter in [EVENTS_CONSUMED, RETRIES, OUTBOX_RELAYED, OUTBOX_RELAY_FAILURES] {
        metrics::counter!(counter).absolute(0);
    }
}
