//! What any token may read: the overview, the ledger's events, the DLQ and
//! the audit log with its chain's verdict.

use axum::extract::{Path, Query, State};
use axum::Json;
use chrono::Utc;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::console::filters::{page_size, EventFilters};
use crate::console::{ApiError, Caller, Console};
use crate::store::audit::{self, Verdict};
use crate::store::{dead_letters, ledger};
use crate::worker::health::SystemView;

/// `GET /overview`: the ledger by status, queue depth, lag, workers, the
/// pause and the DLQ — what `/health/detailed` shows of the whole system.
pub(super) async fn overview(_: Caller, State(console): State<Console>) -> Json<SystemView> {
    Json(SystemView::read(console.pool(), console.endpoints()).await)
}

/// `GET /events`: latest event time first, a keyset page at a time (`next`
/// is the `after` of the following page, `null` on the last).
pub(super) async fn events(
    _: Caller,
    State(console): State<Console>,
    Query(filters): Query<EventFilters>,
) -> Result<Json<Value>, ApiError> {
    let page = filters.page(console.pool()).await?;
    Ok(Json(json!({"events": page.rows, "next": page.next})))
}

/// `GET /events/{event_id}`: every field, and the replay history.
pub(super) async fn event(
    _: Caller,
    State(console): State<Console>,
    Path(event_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let Some(row) = ledger::find(console.pool(), &event_id).await? else {
        return Err(ApiError::not_found(format!(
            "event '{event_id}' is not in the ledger: check the id (GET /api/v1/events lists the ledger)"
        )));
    };
    let history = ledger::history(console.pool(), &event_id).await?;
    Ok(Json(json!({"event": row, "replay_history": history})))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Limit {
    limit: Option<i64>,
}

/// `GET /dlq`: what `replay dlq list --json` prints.
pub(super) async fn dlq(
    _: Caller,
    State(console): State<Console>,
    Query(Limit { limit }): Query<Limit>,
) -> Result<Json<Value>, ApiError> {
    let limit = page_size(limit);
    let pool = console.pool();
    let failed = ledger::unresolved_errors(pool, limit).await?;
    let letters = dead_letters::unresolved(pool, limit).await?;
    let held = ledger::held(pool, limit).await?;
    Ok(Json(json!({"failed_events": failed, "dead_letters": letters, "held_events": held})))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Hours {
    hours: Option<i64>,
}

/// `GET /dlq/groups`: what `replay dlq report --json` prints.
pub(super) async fn dlq_groups(
    _: Caller,
    State(console): State<Console>,
    Query(Hours { hours }): Query<Hours>,
) -> Result<Json<Value>, ApiError> {
    let hours = hours.unwrap_or(24).max(1);
    let since = Utc::now() - chrono::Duration::hours(hours);
    let failed = ledger::error_report(console.pool(), since).await?;
    let letters = dead_letters::report(console.pool(), since).await?;
    let groups: Vec<Value> = failed
        .iter()
        .map(|g| ("failed event", g))
        .chain(letters.iter().map(|g| ("unreadable message", g)))
        .map(|(kind, g)| json!({"kind": kind, "type": g.what, "error": g.why, "count": g.count, "first_seen": g.first_seen, "last_seen": g.last_seen}))
        .collect();
    Ok(Json(json!({"hours": hours, "groups": groups})))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AuditPage {
    limit: Option<i64>,
    after: Option<i64>,
}

/// `GET /audit`: the newest entries, and whether the whole chain verifies.
pub(super) async fn audit(
    _: Caller,
    State(console): State<Console>,
    Query(page): Query<AuditPage>,
) -> Result<Json<Value>, ApiError> {
    let limit = page_size(page.limit);
    let entries = audit::recent(console.pool(), page.after, limit).await?;
    let chain = match audit::verify(console.pool()).await? {
        Verdict::Intact { entries } => json!({"intact": true, "entries": entries}),
        Verdict::Broken { id, problem } => json!({"intact": false, "broken_at": id, "problem": problem}),
    };
    let next = entries.last().filter(|_| entries.len() as i64 == limit).map(|e| e.id);
    Ok(Json(json!({"chain": chain, "entries": entries, "next": next})))
}
