//! What tokens with a role may do: resolve a DLQ entry, pause and resume
//! (`operator`), the emergency stop and tokens (`admin`). Each calls the
//! same `control` function as the CLI, audited under the token's name.

use std::path::PathBuf;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::console::{reason, ApiError, Caller, Console, PAUSE_WAIT};
use crate::control::emergency::{self, Restore};
use crate::control::pause::{self, ResumeError};
use crate::control::resolve::{self, Entry};
use crate::control::tokens as token_control;
use crate::replay::plan::PlanId;
use crate::store::tokens::{self, Role};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Note {
    note: String,
}

/// `POST /dlq/{id}/resolve {note}` (operator).
pub(super) async fn resolve(
    caller: Caller,
    State(console): State<Console>,
    Path(id): Path<String>,
    Json(Note { note }): Json<Note>,
) -> Result<Json<Value>, ApiError> {
    caller.require(Role::Operator)?;
    if note.trim().is_empty() {
        return Err(ApiError::bad_request("note is empty: say what was done about it"));
    }
    if !resolve::resolve(console.pool(), &Entry::parse(&id), &id, &note, &caller.name).await? {
        return Err(ApiError::not_found(format!("{id} is not an unresolved DLQ entry: GET /api/v1/dlq lists them")));
    }
    Ok(Json(json!({"id": id, "resolved": true, "note": note})))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct GroupNote {
    #[serde(rename = "type")]
    event_type: String,
    /// The group's error as `GET /dlq/groups` shows it (ids and numbers blanked).
    error: String,
    note: String,
}

/// `POST /dlq/groups/resolve {type, error, note}` (operator): every
/// unresolved failed event of that group, however many, audited once.
pub(super) async fn resolve_group(
    caller: Caller,
    State(console): State<Console>,
    Json(body): Json<GroupNote>,
) -> Result<Json<Value>, ApiError> {
    caller.require(Role::Operator)?;
    if body.note.trim().is_empty() {
        return Err(ApiError::bad_request("note is empty: say what was done about them"));
    }
    let resolved =
        resolve::resolve_group(console.pool(), &body.event_type, &body.error, body.note.trim(), &caller.name).await?;
    if resolved == 0 {
        return Err(ApiError::not_found(
            "no unresolved failed event is in this group: GET /api/v1/dlq/groups lists them",
        ));
    }
    Ok(Json(json!({"type": body.event_type, "error": body.error, "resolved": resolved})))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct PauseBody {
    reason: String,
    /// Longest wait for every live worker to report paused.
    wait_seconds: Option<u64>,
}

/// `POST /pause {reason}` (operator): answers once every live worker
/// reports paused, or the wait is over (then `workers_still_running` names them).
pub(super) async fn pause(
    caller: Caller,
    State(console): State<Console>,
    Json(body): Json<PauseBody>,
) -> Result<Json<pause::Paused>, ApiError> {
    caller.require(Role::Operator)?;
    let reason = reason(&body.reason, "the workers are paused")?;
    let wait = body.wait_seconds.map_or(PAUSE_WAIT, Duration::from_secs);
    Ok(Json(pause::pause_workers(console.pool(), &caller.name, &reason, wait).await?))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ResumeBody {
    reason: String,
}

/// `POST /resume {reason}` (operator); 409 while an emergency stop has not
/// put back what it saved.
pub(super) async fn resume(
    caller: Caller,
    State(console): State<Console>,
    Json(body): Json<ResumeBody>,
) -> Result<Json<Value>, ApiError> {
    caller.require(Role::Operator)?;
    let reason = reason(&body.reason, "the workers may resume")?;
    match pause::resume_workers(console.pool(), &caller.name, &reason).await {
        Ok(lifted) => Ok(Json(json!({"resumed": lifted.is_some(), "lifted": lifted}))),
        Err(error @ ResumeError::StopUnfinished { .. }) => Err(ApiError::refused(error.to_string())),
        Err(ResumeError::Store(error)) => Err(error.into()),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct StopBody {
    reason: String,
    /// Restore this plan's pre-replay backup.
    plan_id: Option<PlanId>,
    /// Or restore this dump.
    backup: Option<PathBuf>,
    /// Or restore nothing: pause and purge the replays' messages only.
    #[serde(default)]
    no_restore: bool,
    wait_seconds: Option<u64>,
}

/// `POST /emergency-stop {plan_id | backup | no_restore, reason}` (admin):
/// the CLI's stop; 200 when every step passed, 500 with the report when one
/// failed (the pause stays; the same request continues it).
pub(super) async fn emergency_stop(
    caller: Caller,
    State(console): State<Console>,
    Json(body): Json<StopBody>,
) -> Result<(StatusCode, Json<emergency::Report>), ApiError> {
    caller.require(Role::Admin)?;
    let reason = reason(&body.reason, "the replay is stopped")?;
    let restore = match (body.plan_id, body.backup, body.no_restore) {
        (Some(plan_id), None, false) => Restore::of_plan(console.pool(), plan_id)
            .await?
            .ok_or_else(|| ApiError::bad_request(Restore::never_applied(plan_id)))?,
        (None, Some(backup), false) => Restore::Backup(backup),
        (None, None, true) => Restore::Nothing,
        _ => {
            return Err(ApiError::bad_request(
                "say what to restore: exactly one of plan_id, backup or no_restore: true",
            ))
        }
    };
    let request = emergency::Request {
        operator: caller.name.clone(),
        reason,
        restore,
        wait: body.wait_seconds.map_or(PAUSE_WAIT, Duration::from_secs),
        report_dir: None,
    };
    let report = emergency::stop(console.pool(), console.endpoints(), &request).await;
    let status = if report.failed().is_empty() { StatusCode::OK } else { StatusCode::INTERNAL_SERVER_ERROR };
    Ok((status, Json(report)))
}

/// `GET /tokens` (admin): names, roles, who made them; never a token.
pub(super) async fn tokens(caller: Caller, State(console): State<Console>) -> Result<Json<Value>, ApiError> {
    caller.require(Role::Admin)?;
    Ok(Json(json!({"tokens": tokens::list(console.pool()).await?})))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct NewTokenBody {
    name: String,
    role: Role,
}

/// `POST /tokens {name, role}` (admin): 201 with the token, shown this once.
pub(super) async fn create_token(
    caller: Caller,
    State(console): State<Console>,
    Json(body): Json<NewTokenBody>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    caller.require(Role::Admin)?;
    let made = token_control::create(console.pool(), &body.name, body.role, &caller.name).await?;
    let answer = json!({"name": made.name, "role": made.role, "token": made.secret.reveal()});
    Ok((StatusCode::CREATED, Json(answer)))
}

/// `DELETE /tokens/{name}` (admin).
pub(super) async fn revoke_token(
    caller: Caller,
    State(console): State<Console>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    caller.require(Role::Admin)?;
    let revoked = token_control::revoke(console.pool(), &name, &caller.name).await?;
    Ok(Json(json!({"revoked": revoked})))
}
