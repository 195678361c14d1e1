//! Plans over the API: made by `replay::planning` (the CLI's `replay plan`),
//! listed from the plan directory, approved by another operator
//! (`control::approvals`, the two-person rule), applied by `replay::apply`
//! (the same checks; a refusal is 409) in a task of the console, and
//! followed by `replay::progress` (JSON, or `text/event-stream` for live
//! progress).

use std::collections::BTreeMap;
use std::path::PathBuf;

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::console::{live, ApiError, Caller, Console, Started};
use crate::control::approvals;

use crate::replay::apply;
use crate::replay::plan::PlanId;
use crate::replay::planning::{self, PlanRequest, Planned};
use crate::replay::selector::SelectorInput;
use crate::store::tokens::Role;
use crate::store::{approvals as approval_rows, runs};

/// The body of `POST /plans`: the selectors of `replay plan`, as JSON.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct PlanBody {
    event_id: Vec<String>,
    #[serde(rename = "type")]
    event_type: Vec<String>,
    status: Vec<String>,
    from: Option<String>,
    to: Option<String>,
    processed_from: Option<String>,
    processed_to: Option<String>,
    /// Payload fields that must match: `{"contribution_id": "c-7"}`.
    payload: BTreeMap<String, Value>,
    limit: Option<i64>,
    /// The whole ledger (nothing else selected).
    all: bool,
    workflow: Option<String>,
    period: Option<String>,
    member: Option<String>,
    force: bool,
    reason: String,
}

impl PlanBody {
    fn request(self, operator: &str, out_dir: PathBuf) -> Result<PlanRequest, ApiError> {
        let payload = self
            .payload
            .iter()
            .map(|(key, value)| match value {
                Value::String(text) => format!("{key}={text}"),
                other => format!("{key}={other}"),
            })
            .collect();
        let input = SelectorInput {
            event_ids: self.event_id,
            types: self.event_type,
            statuses: self.status,
            from: self.from,
            to: self.to,
            processed_from: self.processed_from,
            processed_to: self.processed_to,
            payload,
            limit: self.limit,
            all: self.all,
        };
        let selector = input.selector().map_err(|e| ApiError::bad_request(e.to_string()))?;
        Ok(PlanRequest {
            selector,
            workflow: self.workflow,
            period: self.period,
            member: self.member,
            operator: operator.to_string(),
            reason: self.reason,
            force: self.force,
            rate: None,
            out_dir,
            destination: None,
        })
    }
}

/// `POST /plans` (operator): 201 with the plan's summary and id; 200 with
/// `plan_id: null` when nothing matches (no plan is written).
pub(super) async fn create(
    caller: Caller,
    State(console): State<Console>,
    Json(body): Json<PlanBody>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    caller.require(Role::Operator)?;
    let request = body.request(&caller.name, console.settings().plan_dir.clone())?;
    match planning::make(console.pool(), &request).await? {
        Planned::Nothing => Ok((StatusCode::OK, Json(planning::nothing_json()))),
        Planned::Written(plan) => Ok((StatusCode::CREATED, Json(planning::summary_json(&plan, None)))),
    }
}

/// `GET /plans`: every plan in the plan directory, newest first, with where
/// its run stands.
pub(super) async fn list(_: Caller, State(console): State<Console>) -> Result<Json<Value>, ApiError> {
    let mut plans = Vec::new();
    for plan in console.plans()? {
        let run = runs::find(console.pool(), plan.header.plan_id).await?;
        plans.push(json!({
            "plan_id": plan.header.plan_id,
            "created_at": plan.header.created_at,
            "created_by": plan.header.created_by,
            "reason": plan.header.reason,
            "rows": plan.summary.rows,
            "events": plan.events(),
            "workflow": plan.header.workflow.as_ref().map(|w| &w.name),
            "state": run.as_ref().map_or("not applied", |r| r.shown_state()),
        }));
    }
    Ok(Json(json!({"plans": plans})))
}

/// `GET /plans/{plan_id}`: the plan's summary, its approval (or `null`),
/// whether the console needs one before applying, and its run if applied.
pub(super) async fn show(
    _: Caller,
    State(console): State<Console>,
    Path(plan_id): Path<PlanId>,
) -> Result<Json<Value>, ApiError> {
    let plan = console.plan(plan_id)?;
    let run = runs::find(console.pool(), plan_id).await?;
    let approval = approval_rows::find(console.pool(), plan_id).await?;
    let mut answer = planning::summary_json(&plan, None);
    answer["approval"] = json!(approval);
    answer["requires_approval"] = json!(console.settings().require_approval);
    answer["rehearsal"] = match run {
        None => json!(apply::rehearsal_of(console.pool(), &plan).await?.describe(&plan.path)),
        Some(_) => json!([]),
    };
    answer["run"] = json!(run);
    answer["human"] = json!(planning::human(&plan, None));
    Ok(Json(answer))
}

/// `POST /plans/{plan_id}/approve` (operator, not the plan's maker): 200
/// with the approval, audited as `plan.approve`; the maker's own approval,
/// or a second one, is 409 and changes nothing.
pub(super) async fn approve(
    caller: Caller,
    State(console): State<Console>,
    Path(plan_id): Path<PlanId>,
) -> Result<Json<Value>, ApiError> {
    caller.require(Role::Operator)?;
    let plan = console.plan(plan_id)?;
    let approval = approvals::approve(console.pool(), &plan, &caller.name).await?;
    Ok(Json(json!(approval)))
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct ApplyBody {
    /// Events per second; unpaced when absent.
    rate: Option<u32>,
    allow_external_effects: bool,
    /// `replay apply --canary N`: the first N events settle before the rest.
    canary: Option<u64>,
    /// `--max-failure-rate R` (0 to 1, default 0), with `canary` only.
    max_failure_rate: Option<f64>,
    /// `--canary-wait` ("90s", "5m"; default 60 s), with `canary` only.
    canary_wait: Option<String>,
}

/// `POST /plans/{plan_id}/apply` (operator): every check of `replay apply`
/// now (a refusal is 409 and changes nothing), then 202 while the apply runs
/// in the console; `GET …/status` follows it.
pub(super) async fn apply(
    caller: Caller,
    State(console): State<Console>,
    Path(plan_id): Path<PlanId>,
    body: Option<Json<ApplyBody>>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    caller.require(Role::Operator)?;
    let Json(body) = body.unwrap_or_default();
    let status_url = format!("/api/v1/plans/{plan_id}/status");
    let canary = crate::console::canary_of(body.canary, body.max_failure_rate, body.canary_wait.as_deref())?;
    match console.apply_plan(plan_id, &caller.name, body.rate, body.allow_external_effects, canary).await? {
        Started::AlreadyDone => {
            Ok((StatusCode::OK, Json(json!({"plan_id": plan_id, "already_applied": true, "status_url": status_url}))))
        }
        Started::Running { resumed } => {
            Ok((StatusCode::ACCEPTED, Json(json!({"plan_id": plan_id, "resumed": resumed, "status_url": status_url}))))
        }
    }
}

/// `GET /plans/{plan_id}/status`: `replay status PLAN --json`, with how the
/// console's apply of it ended if it did not finish; with `Accept:
/// text/event-stream`, that report every second until the replay settles.
pub(super) async fn status(
    _: Caller,
    State(console): State<Console>,
    Path(plan_id): Path<PlanId>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let plan = console.plan(plan_id)?;
    let streamed =
        headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).is_some_and(|v| v.contains("text/event-stream"));
    if !streamed {
        return Ok(Json(live::report(&console, &plan).await?.0).into_response());
    }
    Ok(live::stream(console, plan).into_response())
}
