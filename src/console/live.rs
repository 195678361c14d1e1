//! A plan's live progress, for the API's status stream and the plan page's
//! alike: `replay::progress::plan_report` with the console's last word on
//! its apply, once, or every second as server-sent events until it settles.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::response::sse::{Event, KeepAlive, Sse};
use futures::Stream;
use serde_json::{json, Value};

use super::{ApiError, Console};
use crate::replay::plan::SealedPlan;
use crate::replay::progress;

/// How often a live status stream sends the report.
const STREAM_EVERY: Duration = Duration::from_secs(1);

/// The plan's report, with the console's last word on its apply, and
/// whether the replay settled.
pub(crate) async fn report(console: &Console, plan: &SealedPlan) -> Result<(Value, bool), ApiError> {
    let progress = progress::plan_report(console.pool(), plan).await?;
    let mut report = progress.report;
    if let Some(ended) = console.apply_ended(plan.header.plan_id) {
        report["console_apply"] = json!(ended);
    }
    Ok((report, progress.settled))
}

/// The report every second as a `progress` event, and a last `settled` one.
pub(crate) fn stream(
    console: Console,
    plan: Arc<SealedPlan>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>> + Send + 'static> {
    let events = futures::stream::unfold(Some((console, plan)), |state| async move {
        let (console, plan) = state?;
        let (report, settled) = match report(&console, &plan).await {
            Ok(read) => read,
            Err(error) => (json!({"error": error.message}), true),
        };
        let event = Event::default().event(if settled { "settled" } else { "progress" }).data(report.to_string());
        // The stream ends when the console stops, so it never holds the
        // graceful shutdown open.
        let next = if settled {
            None
        } else {
            tokio::select! {
                _ = tokio::time::sleep(STREAM_EVERY) => Some((console, plan)),
                _ = console.0.shutdown.cancelled() => None,
            }
        };
        Some((Ok::<_, Infallible>(event), next))
    });
    Sse::new(events).keep_alive(KeepAlive::default())
}
